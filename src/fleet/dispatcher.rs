//! Hands queued jobs to machines that are waiting for work, highest runner
//! priority first (then whoever waited longest).
//!
//! Two kinds of machines wait: long-poll requests (`jobs/request`, GitLab
//! style), and machines that registered the Project-W way and stay
//! "online" while they send heartbeats. One task per instance runs
//! dispatch rounds, serialised, whenever something may have changed: a job
//! was submitted, requeued or finished, a machine started waiting, another
//! instance appended (LISTEN), or once a second as a safety net. Nobody
//! busy-waits. Priority holds across instances too: each round publishes
//! this instance's idle machines in the shared waiting list and leaves a
//! job to a higher-priority machine waiting elsewhere
//! (`fleet::waiting_list`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warden_events::Metadata;

use crate::fleet::jobs::{self, Assignment, JobView, Taker};
use crate::fleet::waiting_list::{self, Entry};
use crate::fleet::Fleet;
use crate::log::event_store::StoreError;

const SAFETY_TICK: Duration = Duration::from_secs(1);
/// Appends that are not known to concern jobs trigger a round at most this
/// often (explicit kicks, e.g. a local submission, trigger one at once).
const APPEND_ROUND_INTERVAL: Duration = Duration::from_millis(10);

/// A machine that can take work, and its place in line.
#[derive(Clone)]
pub struct Candidate {
    pub taker: Taker,
    pub priority: i32,
    pub metadata: Metadata,
}

struct Waiter {
    candidate: Candidate,
    since: Instant,
    deliver: oneshot::Sender<Delivery>,
}

/// What a long-poll waiter receives.
#[derive(Debug)]
pub enum Delivery {
    Job(Box<JobView>),
    /// The machine already runs this job.
    Busy(Uuid),
    RunnerUnavailable,
}

struct Online {
    candidate: Candidate,
    since: Instant,
    last_seen: Instant,
    /// Runs a job: not offered another until a heartbeat says otherwise.
    busy: bool,
}

#[derive(Default)]
pub struct Dispatcher {
    waiting: Mutex<HashMap<u64, Waiter>>,
    online: Mutex<HashMap<Uuid, Online>>,
    next_id: AtomicU64,
    kick: Notify,
    /// What the shared waiting list shows of this instance (rounds only).
    published: tokio::sync::Mutex<waiting_list::Published>,
}

enum Slot {
    Waiting(u64),
    Online(Uuid),
}

impl Dispatcher {
    /// Something may have become assignable: run a dispatch round soon.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Waits up to `timeout` for a job for `candidate` (long poll).
    pub async fn wait_for_job(&self, candidate: Candidate, timeout: Duration) -> Option<Delivery> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (deliver, delivered) = oneshot::channel();
        self.waiting.lock().expect("waiting room").insert(
            id,
            Waiter {
                candidate,
                since: Instant::now(),
                deliver,
            },
        );
        self.kick();
        let mut delivered = delivered;
        match tokio::time::timeout(timeout, &mut delivered).await {
            Ok(delivery) => delivery.ok(),
            Err(_) => {
                let still_waiting = self.waiting.lock().expect("waiting room").remove(&id).is_some();
                if still_waiting {
                    self.kick(); // the shared waiting list drops it
                    None
                } else {
                    // A round took us out of the room just now and is
                    // delivering: take what it hands over.
                    delivered.await.ok()
                }
            }
        }
    }

    /// A machine registered the Project-W way: it waits for work until it
    /// unregisters or stops sending heartbeats.
    pub fn go_online(&self, candidate: Candidate) {
        let now = Instant::now();
        let machine_id = candidate.taker.machine.machine_id;
        self.online
            .lock()
            .expect("online machines")
            .entry(machine_id)
            .and_modify(|online| {
                online.candidate = candidate.clone();
                online.last_seen = now;
            })
            .or_insert(Online {
                candidate,
                since: now,
                last_seen: now,
                busy: false,
            });
        self.kick();
    }

    /// Whether the machine is online here (registered, heartbeats fresh).
    pub fn is_online(&self, machine_id: Uuid) -> bool {
        self.online.lock().expect("online machines").contains_key(&machine_id)
    }

    /// A heartbeat, with whether the machine runs a job now.
    /// A heartbeat: `false` when this instance does not know the machine
    /// as online (it registered at, or went quiet on, another instance).
    pub fn seen(&self, machine_id: Uuid, busy: bool) -> bool {
        let Some(online) = self
            .online
            .lock()
            .expect("online machines")
            .get_mut(&machine_id)
            .map(|online| {
                online.last_seen = Instant::now();
                let freed = online.busy && !busy;
                online.busy = busy;
                freed
            })
        else {
            return false;
        };
        if online {
            self.kick();
        }
        true
    }

    pub fn go_offline(&self, machine_id: Uuid) {
        if self
            .online
            .lock()
            .expect("online machines")
            .remove(&machine_id)
            .is_some()
        {
            self.kick(); // the shared waiting list no longer shows it
        }
    }

    /// Runs dispatch rounds until `cancel` fires.
    pub fn spawn(self: &Arc<Self>, fleet: Arc<Fleet>, cancel: CancellationToken) -> JoinHandle<()> {
        let dispatcher = Arc::clone(self);
        let mut appends = fleet.commands.store().subscribe_appends();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = dispatcher.kick.notified() => {}
                    // Appends here or elsewhere (LISTEN) may have queued
                    // jobs; at most one round per interval for those, but
                    // at once when a kick comes meanwhile (a local
                    // submission appends first and kicks once projected:
                    // waiting out the interval delayed every delivery).
                    _ = appends.changed() => tokio::select! {
                        _ = tokio::time::sleep(APPEND_ROUND_INTERVAL) => {}
                        _ = dispatcher.kick.notified() => {}
                    },
                    _ = tokio::time::sleep(SAFETY_TICK) => {}
                }
                if let Err(error) = dispatcher.round(&fleet).await {
                    tracing::warn!(%error, "job dispatch round failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    }

    /// This instance's idle machines: long polls still open, online
    /// machines heard from within the timeout and not busy (the others
    /// are dropped from the room on the way).
    fn idle_machines(&self, online_timeout: Duration) -> Vec<(i32, Instant, Slot, Candidate)> {
        let mut line = Vec::new();
        let mut waiting = self.waiting.lock().expect("waiting room");
        waiting.retain(|_, waiter| !waiter.deliver.is_closed());
        line.extend(
            waiting
                .iter()
                .map(|(id, w)| (w.candidate.priority, w.since, Slot::Waiting(*id), w.candidate.clone())),
        );
        let mut online = self.online.lock().expect("online machines");
        online.retain(|_, o| o.last_seen.elapsed() < online_timeout);
        line.extend(
            online
                .iter()
                .filter(|(_, o)| !o.busy)
                .map(|(id, o)| (o.candidate.priority, o.since, Slot::Online(*id), o.candidate.clone())),
        );
        line
    }

    /// Offers the queue to every waiting machine once, best first.
    async fn round(&self, fleet: &Fleet) -> Result<(), crate::log::commands::CommandError> {
        let online_timeout = fleet.config.online_timeout;
        let mut line = self.idle_machines(online_timeout);
        let mut published = self.published.lock().await;
        published
            .sync(&fleet.db, fleet.instance.id, waiting_entries(&line))
            .await
            .map_err(StoreError::from)?;
        if line.is_empty() || !queue_has_jobs(fleet).await? {
            return Ok(());
        }
        let elsewhere = waiting_elsewhere(fleet).await?;
        line.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut served = Vec::new();
        for (_, _, slot, candidate) in line {
            let better_placed = better_placed_than(&elsewhere, candidate.priority);
            let outcome = jobs::assign_next(fleet, &candidate.taker, &candidate.metadata, &better_placed).await?;
            let delivery = match outcome {
                Assignment::NoJob => continue,
                Assignment::Assigned(job) => Delivery::Job(job),
                Assignment::Busy(job) => Delivery::Busy(job),
                Assignment::RunnerUnavailable => Delivery::RunnerUnavailable,
            };
            served.push(slot_key(&slot));
            match slot {
                Slot::Waiting(id) => {
                    if let Some(waiter) = self.waiting.lock().expect("waiting room").remove(&id) {
                        // A request that gave up meanwhile loses nothing:
                        // its machine finds the job as its current one.
                        let _ = waiter.deliver.send(delivery);
                    }
                }
                // Online machines learn it from their next heartbeat; until
                // their job is done they are not offered another.
                Slot::Online(id) => match delivery {
                    Delivery::RunnerUnavailable => self.go_offline(id),
                    _ => {
                        if let Some(online) = self.online.lock().expect("online machines").get_mut(&id) {
                            online.busy = true;
                        }
                    }
                },
            }
        }
        if !served.is_empty() {
            // As they are now, after this round served some.
            let mut entries = waiting_entries(&self.idle_machines(online_timeout));
            entries.retain(|key, _| !served.contains(key));
            published
                .sync(&fleet.db, fleet.instance.id, entries)
                .await
                .map_err(StoreError::from)?;
        }
        Ok(())
    }
}

/// Machines waiting on other instances (none read when alone).
pub async fn waiting_elsewhere(fleet: &Fleet) -> Result<Vec<Entry>, StoreError> {
    if fleet.instances_alive() <= 1 {
        return Ok(Vec::new());
    }
    Ok(waiting_list::elsewhere(&fleet.db, fleet.instance.id).await?)
}

/// Of `elsewhere`, the machines a job should be left to rather than given
/// to a machine of `priority`.
pub fn better_placed_than(elsewhere: &[Entry], priority: i32) -> Vec<Entry> {
    elsewhere
        .iter()
        .filter(|other| other.priority > priority)
        .cloned()
        .collect()
}

fn slot_key(slot: &Slot) -> String {
    match slot {
        Slot::Waiting(id) => format!("poll-{id}"),
        Slot::Online(machine) => format!("machine-{machine}"),
    }
}

fn entry(candidate: &Candidate) -> Entry {
    Entry {
        runner_id: candidate.taker.machine.runner_id,
        priority: candidate.priority,
        tags: candidate.taker.tags.clone(),
        kind: candidate.taker.kind,
        scope_id: candidate.taker.scope_id,
    }
}

fn waiting_entries(line: &[(i32, Instant, Slot, Candidate)]) -> HashMap<String, Entry> {
    line.iter()
        .map(|(_, _, slot, candidate)| (slot_key(slot), entry(candidate)))
        .collect()
}

async fn queue_has_jobs(fleet: &Fleet) -> Result<bool, crate::log::commands::CommandError> {
    let connection = fleet
        .db
        .get()
        .await
        .map_err(crate::log::event_store::StoreError::from)?;
    let row = connection
        .query_one("SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued')", &[])
        .await
        .map_err(crate::log::event_store::StoreError::from)?;
    Ok(row.get(0))
}

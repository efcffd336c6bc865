//! Runner machines: hosts that share a runner token, each identified by
//! its persisted `system_id`.
//!
//! Every runner request refreshes the machine's contact time in memory.
//! The log only gets a contact event when the machine is new (to this
//! process or at all), its info or address changed, or the last recorded
//! contact is older than `runners.contact_record_interval` (GitLab's
//! approach): polling does not grow the log. A background task prunes
//! machines whose last recorded contact is older than
//! `runners.machine_retention`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warden_events::machine::MachineInfo;
use warden_events::{Metadata, StreamId};

pub use crate::api::MachineView;
use crate::domain::job::MachineRef;
use crate::domain::machine::{validate_system_id, Contact, Machine, MachineCommand};
use crate::fleet::runners::AuthenticatedRunner;
use crate::fleet::Fleet;
use crate::log::commands::{CommandError, Precondition};
use crate::log::event_store::StoreError;

/// What this process knows about a machine beyond the log.
struct Seen {
    /// Freshest contact (every request).
    contacted_at: DateTime<Utc>,
    /// When this process last made sure the log is recent enough.
    checked_at: DateTime<Utc>,
    info: Option<MachineInfo>,
    ip_address: Option<String>,
}

/// The most machines this process keeps fresh contact times for. Past it,
/// entries whose contact is already in the log (older than
/// `contact_record_interval`) go first, then the oldest: memory stays
/// bounded whatever runners send, and an evicted machine only loses
/// sub-interval freshness.
const MAX_PRESENCE_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct MachinePresence {
    seen: Mutex<HashMap<Uuid, Seen>>,
    /// Contacts not yet written to the shared `machine_contacts`.
    unshared: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

/// Makes room for one more entry in `seen`.
fn make_room(seen: &mut HashMap<Uuid, Seen>, recorded_before: DateTime<Utc>) {
    if seen.len() < MAX_PRESENCE_ENTRIES {
        return;
    }
    seen.retain(|_, entry| entry.contacted_at >= recorded_before);
    if seen.len() >= MAX_PRESENCE_ENTRIES {
        if let Some(oldest) = seen
            .iter()
            .min_by_key(|(_, entry)| entry.contacted_at)
            .map(|(id, _)| *id)
        {
            seen.remove(&oldest);
        }
    }
}

impl MachinePresence {
    /// Writes the contacts seen since the last call to `machine_contacts`
    /// (one statement; ids sorted so that instances writing at once do
    /// not deadlock).
    pub async fn share(&self, db: &crate::platform::db::Database) -> Result<usize, StoreError> {
        let mut contacts: Vec<(Uuid, DateTime<Utc>)> =
            std::mem::take(&mut *self.unshared.lock().expect("unshared contacts"))
                .into_iter()
                .collect();
        if contacts.is_empty() {
            return Ok(0);
        }
        contacts.sort();
        let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = contacts.iter().copied().unzip();
        let connection = db.get().await?;
        let upsert = connection
            .prepare_cached(
                "INSERT INTO machine_contacts (machine_id, contacted_at)
                 SELECT * FROM unnest($1::uuid[], $2::timestamptz[])
                 ON CONFLICT (machine_id) DO UPDATE
                 SET contacted_at = greatest(machine_contacts.contacted_at, EXCLUDED.contacted_at)",
            )
            .await?;
        connection.execute(&upsert, &[&ids, &times]).await?;
        Ok(ids.len())
    }

    /// The freshest contact this process saw, if any.
    pub fn contacted_at(&self, machine_id: Uuid) -> Option<DateTime<Utc>> {
        self.seen
            .lock()
            .expect("presence")
            .get(&machine_id)
            .map(|s| s.contacted_at)
    }
}

/// Records a request of machine `system_id` of `runner`; registers the
/// machine on first contact. Cheap when nothing needs recording.
pub async fn touch(
    fleet: &Fleet,
    runner: &AuthenticatedRunner,
    system_id: &str,
    info: Option<MachineInfo>,
    ip_address: Option<String>,
    metadata: &Metadata,
) -> Result<MachineRef, CommandError> {
    validate_system_id(system_id)?;
    let machine_id = StreamId::machine_id(runner.runner_id, system_id);
    let machine = MachineRef {
        runner_id: runner.runner_id,
        machine_id,
    };
    let now = Utc::now();
    let record_every = fleet.config.contact_record_interval;
    let (due, new_here) = {
        let mut seen = fleet.presence.seen.lock().expect("presence");
        let new_here = !seen.contains_key(&machine_id);
        if new_here {
            make_room(
                &mut seen,
                now - chrono::Duration::from_std(record_every).unwrap_or(chrono::Duration::MAX),
            );
        }
        let entry = seen.entry(machine_id).or_insert_with(|| Seen {
            contacted_at: now,
            checked_at: DateTime::<Utc>::MIN_UTC,
            info: None,
            ip_address: None,
        });
        entry.contacted_at = now;
        fleet
            .presence
            .unshared
            .lock()
            .expect("unshared contacts")
            .insert(machine_id, now);
        let changed = info.as_ref().is_some_and(|i| Some(i) != entry.info.as_ref()) || ip_address != entry.ip_address;
        let due = changed || (now - entry.checked_at).to_std().unwrap_or_default() >= record_every;
        if due {
            // Claimed now, so concurrent requests of this machine do not
            // all load its stream.
            entry.checked_at = now;
            if info.is_some() {
                entry.info = info.clone();
            }
            entry.ip_address = ip_address.clone();
        }
        (due, new_here)
    };
    if due {
        let command = MachineCommand::Contact(Box::new(Contact {
            machine_id,
            runner_id: runner.runner_id,
            system_id: system_id.to_owned(),
            info,
            ip_address,
            at: now,
            record_every: chrono::Duration::from_std(record_every).unwrap_or(chrono::Duration::MAX),
        }));
        let stream = StreamId::runner_machine(machine_id);
        // A machine this process has not seen may be new to the runner:
        // then it registers under the per-token limit.
        let outcome = match new_here {
            true => {
                let limit = MachineLimit {
                    runner_id: runner.runner_id,
                    machine_id,
                    limit: fleet.config.max_machines_per_token,
                    lock_wait: fleet.db.timeouts().lock_wait(),
                };
                let outcome = fleet
                    .commands
                    .execute_guarded::<Machine>(&stream, &command, metadata, &limit)
                    .await;
                if let Err(error) = outcome {
                    // Not registered (refused, or failed): not a machine of
                    // this process either, so the next request goes
                    // through the limit again.
                    fleet.presence.seen.lock().expect("presence").remove(&machine_id);
                    return Err(error);
                }
                outcome
            }
            false => fleet.commands.execute::<Machine>(&stream, &command, metadata).await,
        };
        if let Err(error) = outcome {
            // Try again on the next request.
            if let Some(entry) = fleet.presence.seen.lock().expect("presence").get_mut(&machine_id) {
                entry.checked_at = DateTime::<Utc>::MIN_UTC;
            }
            return Err(error);
        }
    }
    Ok(machine)
}

/// A runner may register at most `limit` machines (not pruned). Checked
/// in the registration's own transaction under a transaction-level lock
/// per runner (every instance), so no two registrations of one runner
/// both see room for one more, and the one holding the lock needs no
/// second connection to finish.
struct MachineLimit {
    runner_id: Uuid,
    machine_id: Uuid,
    limit: u32,
    /// How long the registration waits for its runner's registration lock.
    lock_wait: std::time::Duration,
}

#[async_trait::async_trait]
impl Precondition for MachineLimit {
    async fn check(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), CommandError> {
        let key = crate::log::follower::advisory_key(&format!("machine-registration:{}", self.runner_id));
        crate::platform::db::xact_lock(tx, key, false, self.lock_wait)
            .await
            .map_err(StoreError::from)?;
        let row = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM runner_machines WHERE id = $1 AND pruned_at IS NULL),
                        (SELECT count(*) FROM runner_machines WHERE runner_id = $2 AND pruned_at IS NULL)",
                &[&self.machine_id, &self.runner_id],
            )
            .await
            .map_err(StoreError::from)?;
        let (known, count): (bool, i64) = (row.get(0), row.get(1));
        if !known && count >= i64::from(self.limit) {
            return Err(crate::domain::DomainError::Conflict {
                code: crate::api::ErrorCode::TooManyMachines,
                message: format!(
                    "this runner token has {count} machines, the most allowed (runners.max_machines_per_token); \
                     unused machines are pruned after runners.machine_retention"
                ),
            }
            .into());
        }
        Ok(())
    }
}

/// The priority a machine registered with (Project-W `register`).
pub async fn registered_priority(fleet: &Fleet, machine_id: Uuid) -> Result<Option<i32>, StoreError> {
    let connection = fleet.db.get().await?;
    Ok(connection
        .query_opt("SELECT priority FROM runner_machines WHERE id = $1", &[&machine_id])
        .await?
        .and_then(|row| row.get(0)))
}

/// Machines (not pruned) by runner, optionally of one runner only.
/// Columns that [`machine_view`] reads, in its order.
/// Columns of a `runner_machines` row; the contact time is the freshest of
/// the log's and the one instances share (`machine_contacts`).
pub const MACHINE_COLUMNS: &str = "id, runner_id, system_id, name, runner_version, revision, platform, architecture,
    ip_address, priority, registered_at,
    greatest(runner_machines.contacted_at,
             (SELECT c.contacted_at FROM machine_contacts c WHERE c.machine_id = runner_machines.id))";

/// A `runner_machines` row with the freshest contact this process knows.
pub fn machine_view(presence: &MachinePresence, row: &tokio_postgres::Row) -> MachineView {
    let id: Uuid = row.get(0);
    let recorded: DateTime<Utc> = row.get(11);
    MachineView {
        id,
        runner_id: row.get(1),
        system_id: row.get(2),
        name: row.get(3),
        version: row.get(4),
        revision: row.get(5),
        platform: row.get(6),
        architecture: row.get(7),
        ip_address: row.get(8),
        priority: row.get(9),
        registered_at: row.get(10),
        contacted_at: presence.contacted_at(id).map_or(recorded, |fresh| fresh.max(recorded)),
    }
}

/// Prunes machines whose last recorded contact is older than the
/// retention. Returns how many were pruned.
pub async fn prune_stale(fleet: &Fleet) -> Result<usize, CommandError> {
    let retention = chrono::Duration::from_std(fleet.config.machine_retention).unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now() - retention;
    let connection = fleet.db.get().await.map_err(StoreError::from)?;
    let stale: Vec<Uuid> = connection
        .query(
            "SELECT id FROM runner_machines WHERE pruned_at IS NULL AND contacted_at < $1",
            &[&cutoff],
        )
        .await
        .map_err(StoreError::from)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    drop(connection);
    let metadata = Metadata::system("machine-pruning");
    let mut pruned = 0;
    for machine_id in stale {
        let executed = fleet
            .commands
            .execute::<Machine>(
                &StreamId::runner_machine(machine_id),
                &MachineCommand::Prune { cutoff },
                &metadata,
            )
            .await?;
        if executed.appended.is_some() {
            pruned += 1;
        }
    }
    // Shared contacts of machines gone quiet for the whole retention.
    let connection = fleet.db.get().await.map_err(StoreError::from)?;
    connection
        .execute("DELETE FROM machine_contacts WHERE contacted_at < $1", &[&cutoff])
        .await
        .map_err(StoreError::from)?;
    Ok(pruned)
}

/// Prunes every `runners.prune_check_interval` until `cancel` fires.
pub fn spawn_pruner(fleet: Arc<Fleet>, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = fleet.config.prune_check_interval;
        // One instance prunes; the others stand by.
        let mut leadership = crate::platform::leases::Lease::periodic("machine-pruner", interval);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if !leadership.hold(&fleet.db).await {
                continue;
            }
            match prune_stale(&fleet).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned stale runner machines"),
                Err(error) => tracing::warn!(%error, "pruning runner machines failed"),
            }
        }
    })
}

/// Shares this instance's machine contacts every second until `cancel`
/// fires (and once more then).
pub fn spawn_contact_sharing(fleet: Arc<Fleet>, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stopping = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(CONTACT_SHARING) => false,
            };
            if let Err(error) = fleet.presence.share(&fleet.db).await {
                tracing::debug!(%error, "sharing machine contacts failed");
            }
            if stopping {
                return;
            }
        }
    })
}

/// How often contacts are written to `machine_contacts`.
const CONTACT_SHARING: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn seen_at(contacted_at: DateTime<Utc>) -> Seen {
        Seen {
            contacted_at,
            checked_at: contacted_at,
            info: None,
            ip_address: None,
        }
    }

    #[test]
    fn the_presence_map_stays_bounded() {
        let now = Utc::now();
        let recorded_before = now - chrono::Duration::minutes(5);
        let mut seen = HashMap::new();
        // Full of fresh entries: the oldest one makes room.
        for n in 0..MAX_PRESENCE_ENTRIES {
            seen.insert(
                Uuid::from_u128(n as u128),
                seen_at(now + chrono::Duration::milliseconds(n as i64)),
            );
        }
        make_room(&mut seen, recorded_before);
        assert_eq!(seen.len(), MAX_PRESENCE_ENTRIES - 1);
        assert!(!seen.contains_key(&Uuid::from_u128(0)));
        // Entries whose contact is in the log already go first, all at once.
        for n in 0..1000u128 {
            seen.remove(&Uuid::from_u128(n + 1));
            seen.insert(
                Uuid::from_u128(u128::MAX - n),
                seen_at(now - chrono::Duration::hours(1)),
            );
        }
        seen.insert(Uuid::from_u128(u128::MAX - 5000), seen_at(now));
        make_room(&mut seen, recorded_before);
        assert_eq!(seen.len(), MAX_PRESENCE_ENTRIES - 1000);
    }
}

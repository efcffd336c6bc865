//! Jobs: submitted by users, assigned to one runner machine at a time,
//! reported on and finished by that machine.
//!
//! Assignment guarantees, also under concurrent requests from many
//! machines and instances:
//! - one job never goes to two machines: `JobAssigned` is appended with the
//!   job stream's expected version;
//! - a machine holds at most one job: `JobAssigned` claims the machine's id
//!   (scope `machine_job`) in the same transaction;
//! - no job goes to a paused or invalidated runner: the assignment
//!   transaction holds a shared advisory lock on the runner that the
//!   projection of `RunnerPaused`/`RunnerInvalidated` takes exclusively
//!   (and the admin's command waits for that projection). An assignment
//!   that committed just before an invalidation is put back by the
//!   re-assignment reaction.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use chrono::Utc;
use deadpool_postgres::GenericClient;
use rand::seq::SliceRandom;
use serde::Serialize;
use uuid::Uuid;
use warden_events::job::{FileRef, JobKind, JobOutcome};
use warden_events::{Event, Metadata, StreamId};

pub use crate::api::JobView;
use crate::domain::job::{Job, JobCommand, MachineRef};
use crate::domain::Aggregate as _;
use crate::fleet::waiting_list::Entry;
use crate::fleet::Fleet;
use crate::log::commands::{CommandError, UserLock};
use crate::log::event_store::{self, claims, ExpectedVersion, StoreError};
use warden_projections::runners::assignment_lock_key;

/// Candidates read from the queue per round.
const CANDIDATES: i32 = 16;
/// Rounds of fresh candidates before a contended machine gives up (its
/// long poll, if any, keeps waiting).
const ROUNDS: usize = 4;

pub const JOB_COLUMNS: &str = "id, submitted_by, status, payload, required_tags, priority, runner_id, machine_id,
                           cancel_requested, progress, progress_message, result, requeue_count, submitted_at,
                           assigned_at, finished_at, number, kind, input, retrieved_at, scope_id";

pub fn job_view(row: &tokio_postgres::Row) -> JobView {
    JobView {
        id: row.get(0),
        submitted_by: row.get(1),
        status: row.get(2),
        payload: row.get(3),
        required_tags: row.get(4),
        priority: row.get(5),
        runner_id: row.get(6),
        machine_id: row.get(7),
        cancel_requested: row.get(8),
        progress: row.get(9),
        progress_message: row.get(10),
        result: row.get(11),
        requeue_count: row.get(12),
        submitted_at: row.get(13),
        assigned_at: row.get(14),
        finished_at: row.get(15),
        number: row.get(16),
        kind: row.get(17),
        // Written by the projector from a FileRef, so it reads back as one.
        input: row
            .get::<_, Option<serde_json::Value>>(18)
            .and_then(|file| serde_json::from_value(file).ok()),
        retrieved_at: row.get(19),
        scope_id: row.get(20),
    }
}

/// What a user submits.
pub struct NewJob {
    pub kind: JobKind,
    /// Native jobs: any JSON. Project-W jobs: the job's settings, handed to
    /// the runner exactly as given.
    pub payload: serde_json::Value,
    pub required_tags: Vec<String>,
    pub priority: i32,
    /// An uploaded file of the submitter (required for Project-W jobs).
    pub input: Option<FileRef>,
    /// The project or group it goes to (the submitter's membership is
    /// checked by the caller, `fleet::scopes::destination`); none: the
    /// instance.
    pub scope_id: Option<Uuid>,
}

pub async fn submit(fleet: &Fleet, submitted_by: Uuid, job: NewJob, metadata: &Metadata) -> Result<Uuid, CommandError> {
    let NewJob {
        kind,
        payload,
        required_tags,
        priority,
        input,
        scope_id,
    } = job;
    let job_id = Uuid::now_v7();
    let command = JobCommand::Submit {
        job_id,
        number: Some(fleet.commands.next_number("job_numbers").await?),
        submitted_by,
        payload,
        required_tags,
        priority,
        kind,
        input,
        scope_id,
    };
    // Never after the submitter's deletion, nor beside it: a job either
    // commits before the deletion (which then cancels it) or is refused.
    let submitter = UserLock::active(submitted_by, fleet.db.timeouts().lock_wait());
    fleet
        .commands
        .execute_guarded::<Job>(&StreamId::job(job_id), &command, metadata, &submitter)
        .await?;
    fleet.dispatcher.kick();
    Ok(job_id)
}

pub async fn get(fleet: &Fleet, job_id: Uuid) -> Result<Option<JobView>, StoreError> {
    let connection = fleet.db.get().await?;
    let select = connection
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .await?;
    Ok(connection.query_opt(&select, &[&job_id]).await?.as_ref().map(job_view))
}

/// Jobs, newest first; only `submitted_by`'s when given.
pub async fn list(
    fleet: &Fleet,
    submitted_by: Option<Uuid>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<JobView>, StoreError> {
    let connection = fleet.db.get().await?;
    let rows = connection
        .query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE ($1::uuid IS NULL OR submitted_by = $1) AND ($2::text IS NULL OR status = $2)
                 ORDER BY submitted_at DESC, id DESC LIMIT $3"
            ),
            &[&submitted_by, &status, &limit],
        )
        .await?;
    Ok(rows.iter().map(job_view).collect())
}

pub async fn cancel(
    fleet: &Fleet,
    job_id: Uuid,
    requested_by: Uuid,
    admin: bool,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    fleet
        .commands
        .execute::<Job>(
            &StreamId::job(job_id),
            &JobCommand::Cancel {
                requested_by,
                admin,
                reason: None,
            },
            metadata,
        )
        .await?;
    Ok(())
}

/// The job a machine runs, if any.
pub async fn current_job(fleet: &Fleet, machine_id: Uuid) -> Result<Option<Uuid>, StoreError> {
    let connection = fleet.db.get().await?;
    Ok(
        claims::owner_of(&connection, claims::MACHINE_JOB, &machine_id.to_string())
            .await?
            .and_then(|stream| stream.id()),
    )
}

/// A machine that can take a job.
#[derive(Clone, Debug)]
pub struct Taker {
    pub machine: MachineRef,
    /// The runner's tags: a job's required tags must all be among them.
    pub tags: Vec<String>,
    /// The protocol the machine speaks: it only takes jobs of this kind.
    pub kind: JobKind,
    /// The runner's group or project: it takes only jobs of that scope and
    /// below. None for an instance runner, which takes any job.
    pub scope_id: Option<Uuid>,
}

#[derive(Debug)]
pub enum Assignment {
    Assigned(Box<JobView>),
    /// The machine already runs this job.
    Busy(Uuid),
    NoJob,
    /// Paused or invalidated: it gets nothing.
    RunnerUnavailable,
}

/// Assigns the best queued job the machine can take (highest priority,
/// then oldest), if any. When this returns `Assigned`, the job read model
/// shows it.
///
/// Machines asking at once read the same head of the queue; whoever loses
/// the race for a job tries the other candidates in random order (so the
/// losers spread out instead of colliding again), then re-reads the queue.
///
/// `better_placed` are higher-priority machines waiting on other instances:
/// a job one of them could take is left for it.
pub async fn assign_next(
    fleet: &Fleet,
    taker: &Taker,
    metadata: &Metadata,
    better_placed: &[Entry],
) -> Result<Assignment, CommandError> {
    for round in 0..ROUNDS {
        let connection = fleet.db.get().await.map_err(StoreError::from)?;
        let mut candidates = if round == 0 {
            // The machine's current job and the head of the queue: two
            // reads, one round trip.
            let machine = taker.machine.machine_id.to_string();
            let (current, candidates) = futures_util::future::join(
                claims::owner_of(&connection, claims::MACHINE_JOB, &machine),
                queued_candidates(fleet, &connection, taker),
            )
            .await;
            if let Some(job) = current?.and_then(|stream| stream.id()) {
                return Ok(Assignment::Busy(job));
            }
            candidates?
        } else {
            queued_candidates(fleet, &connection, taker).await?
        };
        drop(connection);
        if !better_placed.is_empty() {
            candidates = leave_to_better_placed(fleet, candidates, taker.kind, better_placed).await?;
        }
        if candidates.is_empty() {
            return Ok(Assignment::NoJob);
        }
        // The best first; the rest only matter after losing a race.
        candidates[1..].shuffle(&mut rand::thread_rng());
        for job_id in candidates {
            match try_assign(fleet, taker, job_id, metadata).await? {
                Attempt::Lost => continue,
                Attempt::Done(assignment) => return Ok(assignment),
            }
        }
    }
    Ok(Assignment::NoJob)
}

async fn queued_candidates(
    fleet: &Fleet,
    connection: &crate::platform::db::Connection,
    taker: &Taker,
) -> Result<Vec<Uuid>, StoreError> {
    let in_flight = fleet.assigning.snapshot();
    let (tags, kind) = (&taker.tags, taker.kind.as_str());
    let rows = match taker.scope_id {
        None => {
            // An ordered walk of the queue index (see migration V4).
            let select = connection.prepare_cached("SELECT queue_head($1, $2, $3, $4)").await?;
            connection
                .query(&select, &[tags, &CANDIDATES, &in_flight, &kind])
                .await?
        }
        Some(scope) => {
            // Only the jobs of the runner's scope and below (V27).
            let select = connection
                .prepare_cached("SELECT scoped_queue_head($1, $2, $3, $4, $5)")
                .await?;
            connection
                .query(&select, &[tags, &CANDIDATES, &in_flight, &kind, &scope])
                .await?
        }
    };
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// `candidates` without the jobs a machine of `better_placed` could take.
async fn leave_to_better_placed(
    fleet: &Fleet,
    candidates: Vec<Uuid>,
    kind: JobKind,
    better_placed: &[Entry],
) -> Result<Vec<Uuid>, StoreError> {
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let connection = fleet.db.get().await?;
    let select = connection
        .prepare_cached(
            "SELECT id, required_tags, coalesce(scope_and_above(scope_id), '{}') FROM jobs WHERE id = ANY($1)",
        )
        .await?;
    let required: HashMap<Uuid, (Vec<String>, Vec<Uuid>)> = connection
        .query(&select, &[&candidates])
        .await?
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    Ok(candidates
        .into_iter()
        .filter(|job| {
            required
                .get(job)
                .is_some_and(|(tags, scopes)| !better_placed.iter().any(|other| other.can_take(tags, kind, scopes)))
        })
        .collect())
}

/// Jobs this instance is assigning right now, until the read model shows
/// the assignment: other machines here skip them instead of racing for
/// them or reading a stale queue.
#[derive(Default)]
pub struct InFlight {
    jobs: Mutex<HashSet<Uuid>>,
}

impl InFlight {
    fn snapshot(&self) -> Vec<Uuid> {
        self.jobs.lock().expect("in-flight jobs").iter().copied().collect()
    }

    /// Marks `job_id` until the returned guard is dropped; `None` if it is
    /// already being assigned here.
    fn mark(&self, job_id: Uuid) -> Option<InFlightGuard<'_>> {
        // The lock is released before a guard exists: dropping a guard
        // takes it again.
        let newly_marked = self.jobs.lock().expect("in-flight jobs").insert(job_id);
        newly_marked.then(|| InFlightGuard { owner: self, job_id })
    }
}

struct InFlightGuard<'a> {
    owner: &'a InFlight,
    job_id: Uuid,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.owner.jobs.lock().expect("in-flight jobs").remove(&self.job_id);
    }
}

enum Attempt {
    /// Someone else got the job first (or the read model was behind).
    Lost,
    Done(Assignment),
}

async fn try_assign(fleet: &Fleet, taker: &Taker, job_id: Uuid, metadata: &Metadata) -> Result<Attempt, CommandError> {
    // Held until the read model shows the outcome (the end of this call).
    let Some(_in_flight) = fleet.assigning.mark(job_id) else {
        return Ok(Attempt::Lost);
    };
    let stream = StreamId::job(job_id);
    let mut connection = fleet.db.get().await.map_err(StoreError::from)?;
    let tx = connection.transaction().await.map_err(StoreError::from)?;
    // Four statements, sent together (one round trip) and run by
    // PostgreSQL one after the other, in this order:
    // 1. Reserve the job like SKIP LOCKED would, but with an advisory lock:
    //    it is not a write, so the transaction still has no id when it
    //    loads the stream (the log's per-stream order relies on that, see
    //    event_store). Whoever holds it is assigning the job right now.
    // 2. The job's stream.
    // 3. The runner's assignment lock, shared with other assignments,
    //    exclusive with the runner projection applying a pause or
    //    invalidation (see warden_projections::runners): once such a change
    //    has answered, no assignment that saw the runner available can
    //    still commit. Not a write either. A statement of its own: a
    //    statement's snapshot is taken before it waits, so reading
    //    `runners` in the same statement could see the runner as it was
    //    before the pause it waited for.
    // 4. Whether the runner is available: a statement that starts once
    //    the lock is granted, so (READ COMMITTED) it sees everything
    //    committed by then.
    // A lost reservation or a job no longer queued makes 2-4 wasted reads
    // (the locks go with the transaction); they are not writes.
    let runner_id = taker.machine.runner_id;
    let (reserve, lock, available) = (
        prepared(&tx, "SELECT pg_try_advisory_xact_lock($1)").await?,
        prepared(&tx, "SELECT pg_advisory_xact_lock_shared($1)").await?,
        prepared(
            &tx,
            "SELECT status = 'active' AND NOT paused FROM runners WHERE id = $1",
        )
        .await?,
    );
    // `join4` polls in order and 1, 3 and 4 are prepared already, so
    // they go out in this order (what matters: 4 after 3). The stream
    // read may go out after them on a cold statement cache; harmless.
    let (reserved, history, locked, runner) = futures_util::future::join4(
        tx.query_one(&reserve, &[&reservation_key(job_id)]),
        event_store::read_stream(&tx, &stream),
        tx.execute(&lock, &[&assignment_lock_key(runner_id)]),
        tx.query_opt(&available, &[&runner_id]),
    )
    .await;
    if !reserved.map_err(StoreError::from)?.get::<_, bool>(0) {
        return Ok(Attempt::Lost);
    }
    let history = history?;
    let expected = ExpectedVersion(history.last().map_or(0, |e| e.stream_version));
    let job = Job::from_history(&history);
    if !matches!(job, Job::Queued(_)) {
        return Ok(Attempt::Lost); // the read model was behind
    }
    let events = job.decide(&JobCommand::Assign(taker.machine, taker.kind))?;
    locked.map_err(StoreError::from)?;
    let runner = runner.map_err(StoreError::from)?;
    if !runner.is_some_and(|row| row.get::<_, bool>(0)) {
        return Ok(Attempt::Done(Assignment::RunnerUnavailable));
    }
    let events: Vec<Event> = events.into_iter().map(Into::into).collect();
    match event_store::append_in(&tx, &stream, expected, events, metadata).await {
        Ok(_) => {
            tx.commit().await.map_err(StoreError::from)?;
            fleet.commands.store().signal_append();
            let view = get(fleet, job_id).await?.expect("assigned job is projected");
            Ok(Attempt::Done(Assignment::Assigned(Box::new(view))))
        }
        Err(StoreError::Conflict { .. }) => Ok(Attempt::Lost),
        Err(StoreError::ClaimTaken { scope }) if scope == claims::MACHINE_JOB => {
            drop(tx);
            Ok(Attempt::Done(
                match current_job(fleet, taker.machine.machine_id).await? {
                    Some(job) => Assignment::Busy(job),
                    None => Assignment::NoJob,
                },
            ))
        }
        Err(error) => Err(error.into()),
    }
}

/// `sql` prepared on `tx` through the connection's statement cache.
async fn prepared(tx: &deadpool_postgres::Transaction<'_>, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
    Ok(tx.prepare_cached(sql).await?)
}

/// Advisory lock key reserving a job during its assignment.
fn reservation_key(job_id: Uuid) -> i64 {
    let (high, low) = job_id.as_u64_pair();
    (high ^ low ^ 0x6a6f_625f_6173_7369) as i64
}

/// Throttles progress reports: one event per job per interval at most
/// (plus the final 100%), the rest are acknowledged and dropped.
#[derive(Default)]
pub struct ProgressThrottle {
    recorded: Mutex<HashMap<Uuid, Instant>>,
}

impl ProgressThrottle {
    fn should_record(&self, job_id: Uuid, progress: f64, interval: std::time::Duration) -> bool {
        let mut recorded = self.recorded.lock().expect("progress throttle");
        let now = Instant::now();
        let due = progress >= 1.0
            || recorded
                .get(&job_id)
                .is_none_or(|at| now.duration_since(*at) >= interval);
        if due {
            recorded.insert(job_id, now);
            // Forget jobs that stopped reporting long ago.
            if recorded.len() > 10_000 {
                recorded.retain(|_, at| now.duration_since(*at) < interval * 10);
            }
        }
        due
    }
}

/// Takes the job's progress-recording slot for this interval, unless
/// another instance took it less than `interval` ago.
async fn progress_slot_free(fleet: &Fleet, job_id: Uuid, interval: std::time::Duration) -> Result<bool, StoreError> {
    let connection = fleet.db.get().await?;
    let claim = connection
        .prepare_cached(
            "INSERT INTO progress_recordings (job_id, recorded_at) VALUES ($1, now())
             ON CONFLICT (job_id) DO UPDATE SET recorded_at = now()
             WHERE progress_recordings.recorded_at <= now() - make_interval(secs => $2)
             RETURNING true",
        )
        .await?;
    Ok(connection
        .query_opt(&claim, &[&job_id, &interval.as_secs_f64()])
        .await?
        .is_some())
}

/// What a machine learns when it reports on its job.
#[derive(Debug, Serialize)]
pub struct ReportAnswer {
    /// The submitter asked to stop the job.
    pub abort: bool,
}

pub async fn report_progress(
    fleet: &Fleet,
    machine: MachineRef,
    job_id: Uuid,
    progress: f64,
    message: Option<String>,
    metadata: &Metadata,
) -> Result<ReportAnswer, CommandError> {
    let stream = StreamId::job(job_id);
    let (job, _) = fleet.commands.load::<Job>(&stream).await?;
    let command = JobCommand::Progress {
        by: machine,
        progress,
        message,
    };
    // Validate (ownership, range) on every report, record only some.
    job.decide(&command)?;
    if matches!(&job, Job::Assigned(_, a) if a.cancel_requested) {
        // Nobody wants it any more (its submitter may be gone): nothing of
        // it is kept, the machine is told to stop.
        return Ok(ReportAnswer { abort: true });
    }
    let abort = false;
    let interval = fleet.config.progress_record_interval;
    // This instance's memory first (no database work for most reports),
    // then the slot shared by all instances.
    if fleet.progress.should_record(job_id, progress, interval)
        && (progress >= 1.0 || progress_slot_free(fleet, job_id, interval).await?)
    {
        fleet.commands.execute::<Job>(&stream, &command, metadata).await?;
    }
    Ok(ReportAnswer { abort })
}

/// What became of a machine's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Recorded as the job's outcome.
    Recorded,
    /// The job's submitter was deleted: nothing of the result is kept, the
    /// job ends as cancelled, and the machine is free.
    SubmitterGone,
}

/// Whether the submitter of `job` was deleted (its jobs are being, or
/// were, cancelled; nothing new may be kept for it).
pub async fn submitter_deleted(fleet: &Fleet, job: &JobView) -> Result<bool, StoreError> {
    let connection = fleet.db.get().await?;
    let deleted: Option<bool> = connection
        .query_opt(
            "SELECT deleted_at IS NOT NULL FROM users WHERE id = $1",
            &[&job.submitted_by],
        )
        .await?
        .map(|row| row.get(0));
    Ok(deleted.unwrap_or(true))
}

pub async fn finish(
    fleet: &Fleet,
    machine: MachineRef,
    job_id: Uuid,
    outcome: JobOutcome,
    result: serde_json::Value,
    metadata: &Metadata,
) -> Result<Finished, CommandError> {
    let job = get(fleet, job_id).await?;
    let gone = match &job {
        Some(job) => submitter_deleted(fleet, job).await?,
        None => false,
    };
    let command = if gone {
        JobCommand::Finish {
            by: machine,
            outcome: JobOutcome::Cancelled,
            result: serde_json::Value::Null,
        }
    } else {
        JobCommand::Finish {
            by: machine,
            outcome,
            result,
        }
    };
    fleet
        .commands
        .execute::<Job>(&StreamId::job(job_id), &command, metadata)
        .await?;
    // The machine is free again.
    fleet.dispatcher.kick();
    Ok(if gone {
        Finished::SubmitterGone
    } else {
        Finished::Recorded
    })
}

/// The machine fetched its job (Project-W's `retrieve_job_info`): it
/// works on it from now on (see `JobCommand::Retrieve`).
pub async fn retrieve(
    fleet: &Fleet,
    machine: MachineRef,
    job_id: Uuid,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    fleet
        .commands
        .execute::<Job>(&StreamId::job(job_id), &JobCommand::Retrieve(machine), metadata)
        .await?;
    Ok(())
}

/// Why a job its machine did not fetch in time went back to the queue.
pub const NOT_RETRIEVED: &str = "not retrieved by its runner machine";

/// Project-W jobs assigned longer than `runners.retrieve_timeout` ago that
/// their machine has not fetched: back to the queue (cancelled, when a
/// cancel is pending), so that a machine that missed its job (a heartbeat
/// answered a moment before the assignment, a runner that restarted)
/// neither holds it nor is held by it. Returns how many.
pub async fn requeue_unretrieved(fleet: &Fleet) -> Result<usize, CommandError> {
    let connection = fleet.db.get().await.map_err(StoreError::from)?;
    let rows = connection
        .query(
            "SELECT id, runner_id, machine_id FROM jobs
             WHERE status = 'assigned' AND retrieved_at IS NULL AND kind = 'project_w'
               AND assigned_at < now() - make_interval(secs => $1)",
            &[&fleet.config.retrieve_timeout.as_secs_f64()],
        )
        .await
        .map_err(StoreError::from)?;
    drop(connection);
    let metadata = Metadata::system("job-retrieval-watch");
    let mut requeued = 0;
    for row in rows {
        let command = JobCommand::RequeueUnretrieved {
            machine: MachineRef {
                runner_id: row.get(1),
                machine_id: row.get(2),
            },
            reason: NOT_RETRIEVED.into(),
        };
        let executed = fleet
            .commands
            .execute::<Job>(&StreamId::job(row.get(0)), &command, &metadata)
            .await?;
        if executed.appended.is_some() {
            requeued += 1;
        }
    }
    if requeued > 0 {
        fleet.dispatcher.kick();
    }
    Ok(requeued)
}

/// Native jobs whose machine has sent nothing for
/// `runners.native_silence_timeout`: its last contact in the log (recorded
/// at least every `contact_record_interval`), in `machine_contacts`
/// (shared by every instance each second) and in this instance's memory
/// are all older.
pub async fn held_by_silent_native_machines(fleet: &Fleet) -> Result<Vec<(Uuid, MachineRef)>, StoreError> {
    let connection = fleet.db.get().await?;
    let timeout = fleet.config.native_silence_timeout;
    let rows = connection
        .query(
            "SELECT j.id, j.runner_id, j.machine_id, m.contacted_at FROM jobs j
             JOIN runner_machines m ON m.id = j.machine_id
             LEFT JOIN machine_contacts c ON c.machine_id = m.id
             WHERE j.status = 'assigned' AND j.kind = 'native'
               AND greatest(m.contacted_at, c.contacted_at) < now() - make_interval(secs => $1)",
            &[&timeout.as_secs_f64()],
        )
        .await?;
    let horizon = Utc::now() - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    Ok(rows
        .iter()
        .filter(|row| {
            let machine: Uuid = row.get(2);
            fleet.presence.contacted_at(machine).is_none_or(|fresh| fresh < horizon)
        })
        .map(|row| {
            let machine = MachineRef {
                runner_id: row.get(1),
                machine_id: row.get(2),
            };
            (row.get(0), machine)
        })
        .collect())
}

/// Why a job taken from a machine that went silent is requeued.
pub const SILENT_MACHINE: &str = "runner machine silent";

/// Puts a machine's job back in the queue (the machine said goodbye).
pub async fn requeue_from(
    fleet: &Fleet,
    machine: MachineRef,
    reason: &str,
    metadata: &Metadata,
) -> Result<Option<Uuid>, CommandError> {
    let Some(job_id) = current_job(fleet, machine.machine_id).await? else {
        return Ok(None);
    };
    let command = JobCommand::Requeue {
        runner_id: machine.runner_id,
        reason: reason.to_owned(),
    };
    fleet
        .commands
        .execute::<Job>(&StreamId::job(job_id), &command, metadata)
        .await?;
    fleet.dispatcher.kick();
    Ok(Some(job_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_marks_are_exclusive_and_released_by_their_own_guard() {
        let in_flight = InFlight::default();
        let job = Uuid::now_v7();
        let first = in_flight.mark(job).expect("first mark");
        // A second mark of the same job is refused and must not release
        // (or deadlock on) the first one.
        assert!(in_flight.mark(job).is_none());
        assert_eq!(in_flight.snapshot(), [job]);
        drop(first);
        assert!(in_flight.snapshot().is_empty());
        assert!(in_flight.mark(job).is_some());
    }
}

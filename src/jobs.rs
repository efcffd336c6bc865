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
//!   transaction holds a share lock on the runner's read-model row, so it
//!   serialises with the projection of `RunnerPaused`/`RunnerInvalidated`
//!   (which the admin's command waits for). An assignment that still slips
//!   in before an invalidation is put back by the re-assignment reaction.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use uuid::Uuid;
use warden_events::job::JobOutcome;
use warden_events::{Metadata, StreamId};

use crate::app::AppState;
use crate::commands::CommandError;
use crate::domain::job::{Job, JobCommand, MachineRef};
use crate::domain::Aggregate;
use crate::event_store::{self, claims, StoreError};

/// Candidates looked at per assignment attempt; more only matter when many
/// instances compete for the same jobs.
const CANDIDATES: i64 = 8;

#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    pub id: Uuid,
    pub submitted_by: Uuid,
    pub status: String,
    pub payload: serde_json::Value,
    pub required_tags: Vec<String>,
    pub priority: i32,
    pub runner_id: Option<Uuid>,
    pub machine_id: Option<Uuid>,
    pub cancel_requested: bool,
    pub progress: Option<f64>,
    pub progress_message: Option<String>,
    pub result: Option<serde_json::Value>,
    pub requeue_count: i32,
    pub submitted_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const JOB_COLUMNS: &str = "id, submitted_by, status, payload, required_tags, priority, runner_id, machine_id,
                           cancel_requested, progress, progress_message, result, requeue_count, submitted_at,
                           assigned_at, finished_at";

fn job_view(row: &tokio_postgres::Row) -> JobView {
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
    }
}

pub async fn submit(
    state: &AppState,
    submitted_by: Uuid,
    payload: serde_json::Value,
    required_tags: Vec<String>,
    priority: i32,
    metadata: &Metadata,
) -> Result<Uuid, CommandError> {
    let job_id = Uuid::now_v7();
    let command = JobCommand::Submit {
        job_id,
        submitted_by,
        payload,
        required_tags,
        priority,
    };
    state
        .commands
        .execute_new::<Job>(&StreamId::job(job_id), &command, metadata)
        .await?;
    state.dispatcher.kick();
    Ok(job_id)
}

pub async fn get(state: &AppState, job_id: Uuid) -> Result<Option<JobView>, StoreError> {
    let connection = state.db.get().await?;
    let select = connection
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .await?;
    Ok(connection.query_opt(&select, &[&job_id]).await?.as_ref().map(job_view))
}

/// Jobs, newest first; only `submitted_by`'s when given.
pub async fn list(
    state: &AppState,
    submitted_by: Option<Uuid>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<JobView>, StoreError> {
    let connection = state.db.get().await?;
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
    state: &AppState,
    job_id: Uuid,
    requested_by: Uuid,
    admin: bool,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    state
        .commands
        .execute::<Job>(
            &StreamId::job(job_id),
            &JobCommand::Cancel { requested_by, admin },
            metadata,
        )
        .await?;
    Ok(())
}

/// The job a machine runs, if any.
pub async fn current_job<C: GenericClient>(client: &C, machine_id: Uuid) -> Result<Option<Uuid>, StoreError> {
    Ok(claims::owner_of(client, claims::MACHINE_JOB, &machine_id.to_string())
        .await?
        .and_then(|stream| stream.id()))
}

/// A machine that can take a job.
#[derive(Clone, Debug)]
pub struct Taker {
    pub machine: MachineRef,
    /// The runner's tags: a job's required tags must all be among them.
    pub tags: Vec<String>,
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
pub async fn assign_next(state: &AppState, taker: &Taker, metadata: &Metadata) -> Result<Assignment, CommandError> {
    let connection = state.db.get().await.map_err(StoreError::from)?;
    if let Some(job) = current_job(&connection, taker.machine.machine_id).await? {
        return Ok(Assignment::Busy(job));
    }
    let select = connection
        .prepare_cached(
            "SELECT id FROM jobs WHERE status = 'queued' AND required_tags <@ $1
             ORDER BY priority DESC, submitted_at, id LIMIT $2",
        )
        .await
        .map_err(StoreError::from)?;
    let candidates: Vec<Uuid> = connection
        .query(&select, &[&taker.tags, &CANDIDATES])
        .await
        .map_err(StoreError::from)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    drop(connection);

    for job_id in candidates {
        let stream = StreamId::job(job_id);
        // Loaded before the assignment transaction's first write: the
        // log's per-stream order relies on it (see event_store).
        let (job, expected) = state.commands.load::<Job>(&stream).await?;
        if !matches!(job, Job::Queued(_)) {
            continue; // the read model was behind
        }
        let events = job.decide(&JobCommand::Assign(taker.machine))?;
        let mut connection = state.db.get().await.map_err(StoreError::from)?;
        let tx = connection.transaction().await.map_err(StoreError::from)?;
        let runner = tx
            .query_opt(
                "SELECT status = 'active' AND NOT paused FROM runners WHERE id = $1 FOR SHARE",
                &[&taker.machine.runner_id],
            )
            .await
            .map_err(StoreError::from)?;
        if !runner.is_some_and(|row| row.get::<_, bool>(0)) {
            return Ok(Assignment::RunnerUnavailable);
        }
        match event_store::append_in(&tx, &stream, expected, events.clone(), metadata).await {
            Ok(appended) => {
                tx.commit().await.map_err(StoreError::from)?;
                state.commands.store().signal_append();
                state
                    .commands
                    .projections()
                    .wait_for_events(appended.cursor, &events, state.config.http.consistency_timeout)
                    .await?;
                let view = get(state, job_id).await?.expect("assigned job is projected");
                return Ok(Assignment::Assigned(Box::new(view)));
            }
            // Taken by another machine meanwhile: try the next one.
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::ClaimTaken { scope }) if scope == claims::MACHINE_JOB => {
                drop(tx);
                let connection = state.db.get().await.map_err(StoreError::from)?;
                return Ok(match current_job(&connection, taker.machine.machine_id).await? {
                    Some(job) => Assignment::Busy(job),
                    None => Assignment::NoJob,
                });
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Assignment::NoJob)
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

/// What a machine learns when it reports on its job.
#[derive(Debug, Serialize)]
pub struct ReportAnswer {
    /// The submitter asked to stop the job.
    pub abort: bool,
}

pub async fn report_progress(
    state: &AppState,
    machine: MachineRef,
    job_id: Uuid,
    progress: f64,
    message: Option<String>,
    metadata: &Metadata,
) -> Result<ReportAnswer, CommandError> {
    let stream = StreamId::job(job_id);
    let (job, _) = state.commands.load::<Job>(&stream).await?;
    let command = JobCommand::Progress {
        by: machine,
        progress,
        message,
    };
    // Validate (ownership, range) on every report, record only some.
    job.decide(&command)?;
    let abort = matches!(&job, Job::Assigned(_, a) if a.cancel_requested);
    let interval = state.config.runners.progress_record_interval;
    if state.progress.should_record(job_id, progress, interval) {
        state.commands.execute::<Job>(&stream, &command, metadata).await?;
    }
    Ok(ReportAnswer { abort })
}

pub async fn finish(
    state: &AppState,
    machine: MachineRef,
    job_id: Uuid,
    outcome: JobOutcome,
    result: serde_json::Value,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    let command = JobCommand::Finish {
        by: machine,
        outcome,
        result,
    };
    state
        .commands
        .execute::<Job>(&StreamId::job(job_id), &command, metadata)
        .await?;
    // The machine is free again.
    state.dispatcher.kick();
    Ok(())
}

/// Puts a machine's job back in the queue (the machine said goodbye).
pub async fn requeue_from(
    state: &AppState,
    machine: MachineRef,
    reason: &str,
    metadata: &Metadata,
) -> Result<Option<Uuid>, CommandError> {
    let connection = state.db.get().await.map_err(StoreError::from)?;
    let Some(job_id) = current_job(&connection, machine.machine_id).await? else {
        return Ok(None);
    };
    drop(connection);
    let command = JobCommand::Requeue {
        runner_id: machine.runner_id,
        reason: reason.to_owned(),
    };
    state
        .commands
        .execute::<Job>(&StreamId::job(job_id), &command, metadata)
        .await?;
    state.dispatcher.kick();
    Ok(Some(job_id))
}

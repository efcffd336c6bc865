//! The job re-assignment reaction: when a runner is invalidated, every job
//! it holds goes back in the queue (`JobRequeued`) for another runner.
//!
//! It follows the log with a checkpoint of its own and keeps its own view
//! of who holds which job (`reassignment_held_jobs`) and which runners are
//! gone (`reassignment_gone_runners`), both exactly as of its checkpoint.
//! Covered in either log order:
//! - `RunnerInvalidated` after `JobAssigned`: the runner's held jobs are
//!   requeued;
//! - `JobAssigned` to a runner already gone (an assignment that raced the
//!   invalidation): that job is requeued.
//!
//! Exactly once in effect: state changes, the `JobRequeued` appends and the
//! checkpoint commit in one transaction. A crash before the commit leaves
//! nothing behind and the batch is handled again; after it, the checkpoint
//! has moved. Running it again over the same events changes nothing: a job
//! is only requeued while its stream says that runner holds it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use uuid::Uuid;
use warden_events::{Event, JobEvent, LogCursor, Metadata, RecordedEvent, RunnerEvent, StreamId};

use crate::domain::job::{Job, JobCommand};
use crate::domain::Aggregate;
use crate::fleet::dispatcher::Dispatcher;
use crate::log::commands::CommandService;
use crate::log::event_store::{self, ExpectedVersion, StoreError};
use crate::log::follower::{save_checkpoint, Fence, LogConsumer};
use crate::platform::db::Connection;

pub const NAME: &str = "reaction:job-reassignment";
pub const REASON: &str = "runner invalidated";

pub struct JobReassignment {
    pub commands: CommandService,
    pub dispatcher: Arc<Dispatcher>,
    /// Commits flushed at once (read replicas are configured).
    pub durable_commits: bool,
}

/// What one batch does to the reaction's state, and what it requeues.
#[derive(Default)]
struct Plan {
    /// job -> Some(runner) now held, None no longer held.
    held: BTreeMap<Uuid, Option<Uuid>>,
    gone: Vec<Uuid>,
    /// job -> (runner to take it from, event that caused it)
    requeue: BTreeMap<Uuid, (Uuid, Uuid)>,
}

impl JobReassignment {
    async fn plan<C: GenericClient>(&self, client: &C, events: &[RecordedEvent]) -> Result<Plan, StoreError> {
        let mut plan = Plan::default();
        let mut gone_in_batch: HashSet<Uuid> = HashSet::new();
        for recorded in events {
            match &recorded.event {
                Event::Job(JobEvent::JobAssigned(e)) => {
                    plan.held.insert(e.job_id, Some(e.runner_id));
                    if gone_in_batch.contains(&e.runner_id) || runner_is_gone(client, e.runner_id).await? {
                        plan.requeue.insert(e.job_id, (e.runner_id, recorded.event_id));
                    }
                }
                Event::Job(JobEvent::JobRequeued(e)) => {
                    plan.held.insert(e.job_id, None);
                }
                Event::Job(JobEvent::JobFinished(e)) => {
                    plan.held.insert(e.job_id, None);
                }
                Event::Job(JobEvent::JobCancelled(e)) => {
                    plan.held.insert(e.job_id, None);
                }
                Event::Runner(RunnerEvent::RunnerInvalidated(e)) => {
                    gone_in_batch.insert(e.runner_id);
                    plan.gone.push(e.runner_id);
                    for job_id in held_by(client, e.runner_id, &plan.held).await? {
                        plan.requeue.insert(job_id, (e.runner_id, recorded.event_id));
                    }
                }
                // Nothing else changes who holds a job or which runners are gone.
                Event::User(_)
                | Event::Machine(_)
                | Event::Scope(_)
                | Event::Runner(
                    RunnerEvent::RunnerCreated(_)
                    | RunnerEvent::RunnerTokenReset(_)
                    | RunnerEvent::RunnerUpdated(_)
                    | RunnerEvent::RunnerPaused(_)
                    | RunnerEvent::RunnerResumed(_),
                )
                | Event::Job(
                    JobEvent::JobSubmitted(_)
                    | JobEvent::JobRetrieved(_)
                    | JobEvent::JobProgressed(_)
                    | JobEvent::JobCancelRequested(_),
                ) => {}
            }
        }
        Ok(plan)
    }
}

async fn runner_is_gone<C: GenericClient>(client: &C, runner_id: Uuid) -> Result<bool, StoreError> {
    let select = client
        .prepare_cached("SELECT 1 FROM reassignment_gone_runners WHERE runner_id = $1")
        .await?;
    Ok(client.query_opt(&select, &[&runner_id]).await?.is_some())
}

/// Jobs `runner_id` holds: the stored state with this batch's changes on top.
async fn held_by<C: GenericClient>(
    client: &C,
    runner_id: Uuid,
    batch: &BTreeMap<Uuid, Option<Uuid>>,
) -> Result<Vec<Uuid>, StoreError> {
    let select = client
        .prepare_cached("SELECT job_id FROM reassignment_held_jobs WHERE runner_id = $1")
        .await?;
    let mut held: HashSet<Uuid> = client
        .query(&select, &[&runner_id])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for (job_id, holder) in batch {
        if *holder == Some(runner_id) {
            held.insert(*job_id);
        } else {
            held.remove(job_id);
        }
    }
    Ok(held.into_iter().collect())
}

#[async_trait]
impl LogConsumer for JobReassignment {
    fn name(&self) -> &'static str {
        NAME
    }

    /// It reacts to runner invalidations and job outcomes.
    fn handles_category(&self, category: &str) -> bool {
        matches!(category, "runner" | "job")
    }

    fn batch_size(&self) -> i64 {
        200
    }

    async fn consume(
        &self,
        connection: &mut Connection,
        events: &[RecordedEvent],
        from: LogCursor,
        through: LogCursor,
    ) -> Result<(), StoreError> {
        let plan = self.plan(&*connection, events).await?;

        // Decide every requeue on the job's current stream, loaded before
        // the transaction writes anything (the log's per-stream order
        // relies on it).
        let mut appends: Vec<(StreamId, ExpectedVersion, Vec<Event>, Metadata)> = Vec::new();
        for (job_id, (runner_id, cause)) in &plan.requeue {
            let stream = StreamId::job(*job_id);
            let (job, expected) = self.commands.load::<Job>(&stream).await?;
            let command = JobCommand::Requeue {
                runner_id: *runner_id,
                reason: REASON.into(),
            };
            let events = job.decide(&command).expect("requeue never fails");
            if !events.is_empty() {
                let mut metadata = Metadata::system("job-reassignment");
                metadata.causation_id = Some(*cause);
                appends.push((stream, expected, events.into_iter().map(Into::into).collect(), metadata));
            }
        }

        let tx = connection.transaction().await?;
        // Asynchronous commit is safe here: requeues, state and checkpoint
        // commit together, so losing this commit in a crash equals crashing
        // before it (the batch is redone), and any later durable commit
        // flushes it (the WAL is sequential).
        if !self.durable_commits {
            tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        }
        for (job_id, holder) in &plan.held {
            match holder {
                Some(runner_id) => {
                    tx.execute(
                        "INSERT INTO reassignment_held_jobs (job_id, runner_id) VALUES ($1, $2)
                         ON CONFLICT (job_id) DO UPDATE SET runner_id = EXCLUDED.runner_id",
                        &[job_id, runner_id],
                    )
                    .await?;
                }
                None => {
                    tx.execute("DELETE FROM reassignment_held_jobs WHERE job_id = $1", &[job_id])
                        .await?;
                }
            }
        }
        for runner_id in &plan.gone {
            tx.execute(
                "INSERT INTO reassignment_gone_runners (runner_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[runner_id],
            )
            .await?;
        }
        let requeued = appends.len();
        for (stream, expected, events, metadata) in appends {
            // A conflict (the job finished meanwhile) aborts the batch; it
            // is offered again and decided on fresh state.
            event_store::append_in(&tx, &stream, expected, events, &metadata).await?;
        }
        // Exactly once: only if no other leader moved it since `from`.
        save_checkpoint(&tx, NAME, through, Fence::Exactly(from)).await?;
        if requeued > 0 {
            crate::platform::failpoint::pause_if_armed("reassignment-before-commit").await;
        }
        tx.commit().await?;
        if requeued > 0 {
            tracing::info!(requeued, "requeued jobs of invalidated runners");
            self.commands.store().signal_append();
            self.dispatcher.kick();
        }
        Ok(())
    }
}

/// Counts `JobRequeued` events per job whose cause was the reaction, for
/// tests and operators: more than one per (job, invalidation) would be a
/// duplicate.
pub async fn requeues_by_job<C: GenericClient>(client: &C) -> Result<HashMap<Uuid, i64>, StoreError> {
    let rows = client
        .query(
            "SELECT (payload->>'job_id')::uuid, count(*) FROM events
             WHERE event_type = 'JobRequeued' AND metadata->'actor'->>'component' = 'job-reassignment'
             GROUP BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

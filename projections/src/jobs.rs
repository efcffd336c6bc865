//! The `jobs` read model: the queue that assignment scans, and what users
//! and admins list.

use crate::{execute, AggregateProjection, ProjectionError, Transaction};
use async_trait::async_trait;
use warden_events::{Event, JobEvent, RecordedEvent};

pub struct JobProjection;

#[async_trait]
impl AggregateProjection for JobProjection {
    type Event = JobEvent;
    const NAME: &'static str = "jobs";
    const CATEGORY: &'static str = "job";
    const TABLES: &'static [&'static str] = &["jobs"];
    const DURABLE_COMMITS: bool = false;

    fn select(event: &Event) -> Option<&JobEvent> {
        event.as_job()
    }

    async fn apply_event(
        &self,
        tx: &Transaction<'_>,
        recorded: &RecordedEvent,
        event: &JobEvent,
    ) -> Result<(), ProjectionError> {
        let version = recorded.stream_version;
        let at = recorded.recorded_at;
        match event {
            JobEvent::JobSubmitted(e) => {
                execute(
                    tx,
                    "INSERT INTO jobs (id, submitted_by, status, payload, required_tags, priority,
                                       submitted_at, updated_at, version, number, kind, input)
                     VALUES ($1, $2, 'queued', $3, $4, $5, $6, $6, $7, $8, $9, $10)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &e.job_id,
                        &e.submitted_by,
                        &e.payload_value(),
                        &e.required_tags,
                        &e.priority,
                        &at,
                        &version,
                        &e.number,
                        &e.kind.as_str(),
                        &e.input_with_name()
                            .map(|file| serde_json::to_value(file).expect("file refs serialise")),
                    ],
                )
                .await?;
            }
            JobEvent::JobAssigned(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET status = 'assigned', runner_id = $2, machine_id = $3, assigned_at = $4,
                                     updated_at = $4, version = $5
                     WHERE id = $1 AND version < $5",
                    &[&e.job_id, &e.runner_id, &e.machine_id, &at, &version],
                )
                .await?;
            }
            JobEvent::JobProgressed(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET progress = $2, progress_message = $3, updated_at = $4, version = $5
                     WHERE id = $1 AND version < $5",
                    &[&e.job_id, &e.progress, &e.message, &at, &version],
                )
                .await?;
            }
            JobEvent::JobRequeued(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET status = 'queued', runner_id = NULL, machine_id = NULL, assigned_at = NULL,
                                     progress = NULL, progress_message = NULL, requeue_count = requeue_count + 1,
                                     updated_at = $2, version = $3
                     WHERE id = $1 AND version < $3",
                    &[&e.job_id, &at, &version],
                )
                .await?;
            }
            JobEvent::JobFinished(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET status = $2, result = $3, finished_at = $4, updated_at = $4, version = $5
                     WHERE id = $1 AND version < $5",
                    &[&e.job_id, &e.outcome.as_str(), &e.result, &at, &version],
                )
                .await?;
            }
            JobEvent::JobCancelRequested(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET cancel_requested = true, updated_at = $2, version = $3
                     WHERE id = $1 AND version < $3",
                    &[&e.job_id, &at, &version],
                )
                .await?;
            }
            JobEvent::JobCancelled(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET status = 'cancelled', finished_at = $2, updated_at = $2, version = $3
                     WHERE id = $1 AND version < $3",
                    &[&e.job_id, &at, &version],
                )
                .await?;
            }
        }
        Ok(())
    }
}

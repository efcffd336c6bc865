//! The `jobs` read model: the queue that assignment scans, and what users
//! and admins list.

use crate::{execute, Projection, ProjectionError, Transaction};
use async_trait::async_trait;
use warden_events::{Event, RecordedEvent};

pub struct JobProjection;

#[async_trait]
impl Projection for JobProjection {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["jobs"]
    }

    fn needs_durable_commits(&self) -> bool {
        false
    }

    fn handles(&self, event: &Event) -> bool {
        matches!(
            event,
            Event::JobSubmitted(_)
                | Event::JobAssigned(_)
                | Event::JobProgressed(_)
                | Event::JobRequeued(_)
                | Event::JobFinished(_)
                | Event::JobCancelRequested(_)
                | Event::JobCancelled(_)
        )
    }

    async fn apply(&self, tx: &Transaction<'_>, recorded: &RecordedEvent) -> Result<(), ProjectionError> {
        let version = recorded.stream_version;
        let at = recorded.recorded_at;
        match &recorded.event {
            Event::JobSubmitted(e) => {
                execute(
                    tx,
                    "INSERT INTO jobs (id, submitted_by, status, payload, required_tags, priority,
                                       submitted_at, updated_at, version)
                     VALUES ($1, $2, 'queued', $3, $4, $5, $6, $6, $7)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &e.job_id,
                        &e.submitted_by,
                        &e.payload,
                        &e.required_tags,
                        &e.priority,
                        &at,
                        &version,
                    ],
                )
                .await?;
            }
            Event::JobAssigned(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET status = 'assigned', runner_id = $2, machine_id = $3, assigned_at = $4,
                                     updated_at = $4, version = $5
                     WHERE id = $1 AND version < $5",
                    &[&e.job_id, &e.runner_id, &e.machine_id, &at, &version],
                )
                .await?;
            }
            Event::JobProgressed(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET progress = $2, progress_message = $3, updated_at = $4, version = $5
                     WHERE id = $1 AND version < $5",
                    &[&e.job_id, &e.progress, &e.message, &at, &version],
                )
                .await?;
            }
            Event::JobRequeued(e) => {
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
            Event::JobFinished(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET status = $2, result = $3, finished_at = $4, updated_at = $4, version = $5
                     WHERE id = $1 AND version < $5",
                    &[&e.job_id, &e.outcome.as_str(), &e.result, &at, &version],
                )
                .await?;
            }
            Event::JobCancelRequested(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET cancel_requested = true, updated_at = $2, version = $3
                     WHERE id = $1 AND version < $3",
                    &[&e.job_id, &at, &version],
                )
                .await?;
            }
            Event::JobCancelled(e) => {
                execute(
                    tx,
                    "UPDATE jobs SET status = 'cancelled', finished_at = $2, updated_at = $2, version = $3
                     WHERE id = $1 AND version < $3",
                    &[&e.job_id, &at, &version],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

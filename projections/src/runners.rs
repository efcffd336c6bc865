//! The `runners` read model, which also answers runner-token checks.

use crate::{execute, Projection, ProjectionError, Transaction};
use async_trait::async_trait;

use warden_events::{Actor, Event, RecordedEvent};

pub struct RunnerProjection;

#[async_trait]
impl Projection for RunnerProjection {
    fn name(&self) -> &'static str {
        "runners"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["runners"]
    }

    fn handles(&self, event: &Event) -> bool {
        matches!(event, Event::RunnerCreated(_) | Event::RunnerInvalidated(_))
    }

    async fn apply(&self, tx: &Transaction<'_>, recorded: &RecordedEvent) -> Result<(), ProjectionError> {
        let version = recorded.stream_version;
        let at = recorded.recorded_at;
        match &recorded.event {
            Event::RunnerCreated(e) => {
                let created_by = match recorded.metadata.actor {
                    Actor::User { user_id } => Some(user_id),
                    _ => None,
                };
                execute(
                    tx,
                    "INSERT INTO runners (id, token_hash, status, description, tags, created_by,
                                          created_at, updated_at, version)
                     VALUES ($1, $2, 'active', $3, $4, $5, $6, $6, $7)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &e.runner_id,
                        &e.token_hash,
                        &e.description,
                        &e.tags,
                        &created_by,
                        &at,
                        &version,
                    ],
                )
                .await?;
            }
            Event::RunnerInvalidated(e) => {
                execute(
                    tx,
                    "UPDATE runners SET status = 'invalidated', invalidated_at = $2,
                                        invalidation_reason = $3, updated_at = $2, version = $4
                     WHERE id = $1 AND version < $4",
                    &[&e.runner_id, &at, &e.reason, &version],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

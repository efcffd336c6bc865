//! The `runners` read model, which also answers runner-token checks.

use crate::{execute, AggregateProjection, ProjectionError, Transaction};
use async_trait::async_trait;
use warden_events::{Actor, Event, RecordedEvent, RunnerEvent};

pub struct RunnerProjection;

#[async_trait]
impl AggregateProjection for RunnerProjection {
    type Event = RunnerEvent;
    const NAME: &'static str = "runners";
    const CATEGORY: &'static str = "runner";
    const TABLES: &'static [&'static str] = &["runners"];
    const DURABLE_COMMITS: bool = true;

    fn select(event: &Event) -> Option<&RunnerEvent> {
        event.as_runner()
    }

    async fn apply_event(
        &self,
        tx: &Transaction<'_>,
        recorded: &RecordedEvent,
        event: &RunnerEvent,
    ) -> Result<(), ProjectionError> {
        let version = recorded.stream_version;
        let at = recorded.recorded_at;
        // A runner that stops taking jobs: wait for assignments in flight
        // (they hold this lock shared), so that none that saw the runner
        // available commits after this change does.
        if let Some(runner_id) = stops_taking_jobs(event) {
            execute(
                tx,
                "SELECT pg_advisory_xact_lock($1)",
                &[&assignment_lock_key(runner_id)],
            )
            .await?;
        }
        match event {
            RunnerEvent::RunnerCreated(e) => {
                let created_by = match recorded.metadata.actor {
                    Actor::User { user_id } => Some(user_id),
                    _ => None,
                };
                execute(
                    tx,
                    "INSERT INTO runners (id, token_hash, status, description, tags, priority, created_by,
                                          created_at, updated_at, version, number)
                     VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $7, $8, $9)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &e.runner_id,
                        &e.token_hash,
                        &e.description,
                        &e.tags,
                        &e.priority,
                        &created_by,
                        &at,
                        &version,
                        &e.number,
                    ],
                )
                .await?;
            }
            RunnerEvent::RunnerInvalidated(e) => {
                // The previous token (grace period) dies with the runner too.
                execute(
                    tx,
                    "UPDATE runners SET status = 'invalidated', invalidated_at = $2, invalidation_reason = $3,
                                        previous_token_hash = NULL, previous_token_valid_until = NULL,
                                        updated_at = $2, version = $4
                     WHERE id = $1 AND version < $4",
                    &[&e.runner_id, &at, &e.reason, &version],
                )
                .await?;
            }
            RunnerEvent::RunnerTokenReset(e) => {
                execute(
                    tx,
                    "UPDATE runners
                     SET previous_token_hash = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE token_hash END,
                         previous_token_valid_until = $3,
                         token_hash = $2, updated_at = $4, version = $5
                     WHERE id = $1 AND version < $5",
                    &[
                        &e.runner_id,
                        &e.token_hash,
                        &e.previous_token_valid_until,
                        &at,
                        &version,
                    ],
                )
                .await?;
            }
            RunnerEvent::RunnerUpdated(e) => {
                execute(
                    tx,
                    "UPDATE runners SET description = $2, tags = $3, priority = $4, updated_at = $5, version = $6
                     WHERE id = $1 AND version < $6",
                    &[&e.runner_id, &e.description, &e.tags, &e.priority, &at, &version],
                )
                .await?;
            }
            RunnerEvent::RunnerPaused(e) => set_paused(tx, e.runner_id, true, recorded).await?,
            RunnerEvent::RunnerResumed(e) => set_paused(tx, e.runner_id, false, recorded).await?,
        }
        Ok(())
    }
}

fn stops_taking_jobs(event: &RunnerEvent) -> Option<uuid::Uuid> {
    match event {
        RunnerEvent::RunnerPaused(e) => Some(e.runner_id),
        RunnerEvent::RunnerInvalidated(e) => Some(e.runner_id),
        RunnerEvent::RunnerCreated(_)
        | RunnerEvent::RunnerTokenReset(_)
        | RunnerEvent::RunnerUpdated(_)
        | RunnerEvent::RunnerResumed(_) => None,
    }
}

/// Advisory lock key that job assignment holds shared, and the runner
/// projection exclusively while a runner stops taking jobs.
pub fn assignment_lock_key(runner_id: uuid::Uuid) -> i64 {
    let (high, low) = runner_id.as_u64_pair();
    (high ^ low ^ 0x7275_6e6e_6572_5f61) as i64
}

async fn set_paused(
    tx: &Transaction<'_>,
    runner_id: uuid::Uuid,
    paused: bool,
    recorded: &RecordedEvent,
) -> Result<(), ProjectionError> {
    execute(
        tx,
        "UPDATE runners SET paused = $2, updated_at = $3, version = $4 WHERE id = $1 AND version < $4",
        &[&runner_id, &paused, &recorded.recorded_at, &recorded.stream_version],
    )
    .await?;
    Ok(())
}

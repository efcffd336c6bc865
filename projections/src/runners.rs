//! The `runners` read model, which also answers runner-token checks.

use crate::change::{Assign, Change, OnConflict, Value};
use crate::AggregateProjection;
use warden_events::{Actor, Event, RecordedEvent, RunnerEvent};

pub struct RunnerProjection;

const TABLE: &str = "runners";

impl AggregateProjection for RunnerProjection {
    type Event = RunnerEvent;
    const NAME: &'static str = "runners";
    const CATEGORY: &'static str = "runner";
    const TABLES: &'static [&'static str] = &[TABLE];
    const DURABLE_COMMITS: bool = true;

    fn select(event: &Event) -> Option<&RunnerEvent> {
        event.as_runner()
    }

    fn changes_of(recorded: &RecordedEvent, event: &RunnerEvent) -> Vec<Change> {
        let at = Value::Time(recorded.recorded_at);
        let update = |runner_id, set| Change::Update {
            table: TABLE,
            key: ("id", runner_id),
            version: recorded.stream_version,
            set,
        };
        let mut changes = Vec::new();
        // A runner that stops taking jobs: wait for assignments in flight
        // (they hold this lock shared), so that none that saw the runner
        // available commits after this change does.
        if let Some(runner_id) = stops_taking_jobs(event) {
            changes.push(Change::Lock(assignment_lock_key(runner_id)));
        }
        changes.push(match event {
            RunnerEvent::RunnerCreated(e) => {
                let created_by = match recorded.metadata.actor {
                    Actor::User { user_id } => Some(user_id),
                    _ => None,
                };
                Change::Insert {
                    table: TABLE,
                    row: vec![
                        ("id", e.runner_id.into()),
                        ("token_hash", (&e.token_hash).into()),
                        ("status", "active".into()),
                        ("description", e.description.as_ref().into()),
                        ("tags", (&e.tags).into()),
                        ("priority", e.priority.into()),
                        ("created_by", created_by.into()),
                        ("created_at", at.clone()),
                        ("updated_at", at),
                        ("version", recorded.stream_version.into()),
                        ("number", e.number.into()),
                        ("scope_id", e.scope_id.into()),
                    ],
                    on_conflict: OnConflict::Keep,
                }
            }
            // The previous token (grace period) dies with the runner too.
            RunnerEvent::RunnerInvalidated(e) => update(
                e.runner_id,
                vec![
                    ("status", Assign::To("invalidated".into())),
                    ("invalidated_at", Assign::To(at.clone())),
                    ("invalidation_reason", Assign::To(e.reason.as_ref().into())),
                    ("previous_token_hash", Assign::To(Value::Null)),
                    ("previous_token_valid_until", Assign::To(Value::Null)),
                    ("updated_at", Assign::To(at)),
                ],
            ),
            RunnerEvent::RunnerTokenReset(e) => update(
                e.runner_id,
                vec![
                    // The old token keeps working only with a grace period.
                    (
                        "previous_token_hash",
                        match e.previous_token_valid_until {
                            Some(_) => Assign::CopyOf("token_hash"),
                            None => Assign::To(Value::Null),
                        },
                    ),
                    (
                        "previous_token_valid_until",
                        Assign::To(e.previous_token_valid_until.into()),
                    ),
                    ("token_hash", Assign::To((&e.token_hash).into())),
                    ("updated_at", Assign::To(at)),
                ],
            ),
            RunnerEvent::RunnerUpdated(e) => update(
                e.runner_id,
                vec![
                    ("description", Assign::To(e.description.as_ref().into())),
                    ("tags", Assign::To((&e.tags).into())),
                    ("priority", Assign::To(e.priority.into())),
                    ("updated_at", Assign::To(at)),
                ],
            ),
            RunnerEvent::RunnerPaused(e) => update(
                e.runner_id,
                vec![("paused", Assign::To(true.into())), ("updated_at", Assign::To(at))],
            ),
            RunnerEvent::RunnerResumed(e) => update(
                e.runner_id,
                vec![("paused", Assign::To(false.into())), ("updated_at", Assign::To(at))],
            ),
        });
        changes
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

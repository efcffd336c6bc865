//! The `jobs` read model: the queue that assignment scans, and what users
//! and admins list.

use crate::change::{Assign, Change, OnConflict, Value};
use crate::AggregateProjection;
use warden_events::{Event, JobEvent, RecordedEvent};

pub struct JobProjection;

const TABLE: &str = "jobs";

impl AggregateProjection for JobProjection {
    type Event = JobEvent;
    const NAME: &'static str = TABLE;
    const CATEGORY: &'static str = "job";
    const TABLES: &'static [&'static str] = &[TABLE];
    const DURABLE_COMMITS: bool = false;

    fn select(event: &Event) -> Option<&JobEvent> {
        event.as_job()
    }

    fn changes_of(recorded: &RecordedEvent, event: &JobEvent) -> Vec<Change> {
        let at = Value::Time(recorded.recorded_at);
        let update = |job_id, mut set: Vec<(&'static str, Assign)>| {
            set.push(("updated_at", Assign::To(at.clone())));
            Change::Update {
                table: TABLE,
                key: ("id", job_id),
                version: recorded.stream_version,
                set,
            }
        };
        vec![match event {
            JobEvent::JobSubmitted(e) => Change::Insert {
                table: TABLE,
                row: vec![
                    ("id", e.job_id.into()),
                    ("submitted_by", e.submitted_by.into()),
                    ("status", "queued".into()),
                    ("payload", e.payload_value().into()),
                    ("required_tags", (&e.required_tags).into()),
                    ("priority", e.priority.into()),
                    ("submitted_at", at.clone()),
                    ("updated_at", at),
                    ("version", recorded.stream_version.into()),
                    ("number", e.number.into()),
                    ("kind", e.kind.as_str().into()),
                    ("scope_id", e.scope_id.into()),
                    (
                        "input",
                        e.input_with_name()
                            .map(|file| serde_json::to_value(file).expect("file refs serialise"))
                            .into(),
                    ),
                ],
                on_conflict: OnConflict::Keep,
            },
            JobEvent::JobAssigned(e) => update(
                e.job_id,
                vec![
                    ("status", Assign::To("assigned".into())),
                    ("runner_id", Assign::To(e.runner_id.into())),
                    ("machine_id", Assign::To(e.machine_id.into())),
                    ("assigned_at", Assign::To(at.clone())),
                ],
            ),
            JobEvent::JobRetrieved(e) => update(e.job_id, vec![("retrieved_at", Assign::To(at.clone()))]),
            JobEvent::JobProgressed(e) => update(
                e.job_id,
                vec![
                    ("progress", Assign::To(e.progress.into())),
                    ("progress_message", Assign::To(e.message_text().into())),
                ],
            ),
            JobEvent::JobRequeued(e) => update(
                e.job_id,
                vec![
                    ("status", Assign::To("queued".into())),
                    ("runner_id", Assign::To(Value::Null)),
                    ("machine_id", Assign::To(Value::Null)),
                    ("assigned_at", Assign::To(Value::Null)),
                    ("retrieved_at", Assign::To(Value::Null)),
                    ("progress", Assign::To(Value::Null)),
                    ("progress_message", Assign::To(Value::Null)),
                    ("requeue_count", Assign::Increment),
                ],
            ),
            JobEvent::JobFinished(e) => update(
                e.job_id,
                vec![
                    ("status", Assign::To(e.outcome.as_str().into())),
                    ("result", Assign::To(e.result_value().into())),
                    ("finished_at", Assign::To(at.clone())),
                ],
            ),
            JobEvent::JobCancelRequested(e) => update(e.job_id, vec![("cancel_requested", Assign::To(true.into()))]),
            JobEvent::JobCancelled(e) => update(
                e.job_id,
                vec![
                    ("status", Assign::To("cancelled".into())),
                    ("finished_at", Assign::To(at.clone())),
                ],
            ),
        }]
    }
}

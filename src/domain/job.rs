//! The job aggregate: submitted by a user, assigned to one runner machine
//! at a time, requeued when its runner goes away, finished once.

use uuid::Uuid;
use warden_events::job::{
    FileRef, JobAssigned, JobCancelRequested, JobCancelled, JobFinished, JobKind, JobOutcome, JobProgressed,
    JobRequeued, JobRetrieved, JobSubmitted,
};
use warden_events::{Event, JobEvent, Pii};

use super::runner::normalise_tags;
use super::{Aggregate, DomainError};
use crate::api::ErrorCode;

#[derive(Clone, Debug, Default, PartialEq)]
pub enum Job {
    #[default]
    Unknown,
    Queued(JobCore),
    Assigned(JobCore, Assignment),
    Finished(JobCore, JobOutcome),
    Cancelled(JobCore),
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobCore {
    pub job_id: Uuid,
    pub submitted_by: Uuid,
    pub required_tags: Vec<String>,
    pub priority: i32,
    pub kind: JobKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub runner_id: Uuid,
    pub machine_id: Uuid,
    pub cancel_requested: bool,
    /// The machine fetched the job and works on it (a native machine gets
    /// it in the answer that assigns it; a Project-W machine fetches it
    /// after a heartbeat told it of the job).
    pub retrieved: bool,
}

/// The machine a runner-side command comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineRef {
    pub runner_id: Uuid,
    pub machine_id: Uuid,
}

#[derive(Clone, Debug)]
pub enum JobCommand {
    Submit {
        job_id: Uuid,
        /// Drawn from the `job_numbers` sequence by the caller.
        number: Option<i64>,
        submitted_by: Uuid,
        payload: serde_json::Value,
        required_tags: Vec<String>,
        priority: i32,
        kind: JobKind,
        input: Option<FileRef>,
        /// The project or group it is submitted to; none: the instance.
        scope_id: Option<Uuid>,
    },
    /// To a machine of a runner protocol: only a job of that kind.
    Assign(MachineRef, JobKind),
    /// The machine fetched its job (Project-W's `retrieve_job_info`).
    Retrieve(MachineRef),
    /// The machine did not fetch its job in time: back to the queue (or
    /// cancelled, if a cancel is pending). Nothing once it was fetched.
    RequeueUnretrieved { machine: MachineRef, reason: String },
    Progress {
        by: MachineRef,
        progress: f64,
        message: Option<String>,
    },
    Finish {
        by: MachineRef,
        outcome: JobOutcome,
        /// `null`: no result.
        result: serde_json::Value,
    },
    /// The runner `runner_id` is gone: put its job back in the queue.
    Requeue { runner_id: Uuid, reason: String },
    Cancel {
        requested_by: Uuid,
        admin: bool,
        /// Why, when not the submitter's own request.
        reason: Option<String>,
    },
}

const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

impl Job {
    pub fn core(&self) -> Option<&JobCore> {
        match self {
            Job::Unknown => None,
            Job::Queued(core) | Job::Assigned(core, _) | Job::Finished(core, _) | Job::Cancelled(core) => Some(core),
        }
    }

    fn not_found() -> DomainError {
        DomainError::NotFound {
            code: ErrorCode::JobNotFound,
            what: "job",
        }
    }

    /// A job taken back from its machine: back in the queue, or cancelled
    /// when a cancel is pending (nobody wants it run any more).
    fn taken_back(core: &JobCore, assignment: &Assignment, reason: &str) -> Vec<JobEvent> {
        if assignment.cancel_requested {
            return vec![JobEvent::JobCancelled(JobCancelled {
                job_id: core.job_id,
                reason: None,
            })];
        }
        vec![JobEvent::JobRequeued(JobRequeued {
            job_id: core.job_id,
            runner_id: assignment.runner_id,
            machine_id: assignment.machine_id,
            reason: reason.to_owned(),
        })]
    }

    fn not_yours() -> DomainError {
        DomainError::Conflict {
            code: ErrorCode::JobNotAssignedToMachine,
            message: "this job is not assigned to this runner machine (any more)".into(),
        }
    }
}

impl Aggregate for Job {
    // Ids, tags, priority, kind: the payload is not part of the state.
    const CACHEABLE: bool = true;
    type Command = JobCommand;
    type Event = JobEvent;

    fn select(event: &Event) -> Option<&JobEvent> {
        event.as_job()
    }

    fn evolve(&mut self, event: &JobEvent) {
        let state = std::mem::take(self);
        // A transition the state does not allow (never: decide checks the
        // stream) leaves the state as it is.
        *self = match event {
            JobEvent::JobSubmitted(e) => Job::Queued(JobCore {
                job_id: e.job_id,
                submitted_by: e.submitted_by,
                required_tags: e.required_tags.clone(),
                priority: e.priority,
                kind: e.kind,
            }),
            JobEvent::JobAssigned(e) => match state {
                Job::Queued(core) => {
                    let retrieved = core.kind.is_native();
                    Job::Assigned(
                        core,
                        Assignment {
                            runner_id: e.runner_id,
                            machine_id: e.machine_id,
                            cancel_requested: false,
                            retrieved,
                        },
                    )
                }
                other => other,
            },
            JobEvent::JobRetrieved(_) => match state {
                Job::Assigned(core, mut assignment) => {
                    assignment.retrieved = true;
                    Job::Assigned(core, assignment)
                }
                other => other,
            },
            JobEvent::JobRequeued(_) => match state {
                Job::Assigned(core, _) => Job::Queued(core),
                other => other,
            },
            JobEvent::JobCancelRequested(_) => match state {
                Job::Assigned(core, mut assignment) => {
                    assignment.cancel_requested = true;
                    Job::Assigned(core, assignment)
                }
                other => other,
            },
            JobEvent::JobFinished(e) => match state {
                Job::Assigned(core, _) => Job::Finished(core, e.outcome),
                other => other,
            },
            JobEvent::JobCancelled(_) => match state {
                Job::Queued(core) | Job::Assigned(core, _) => Job::Cancelled(core),
                other => other,
            },
            // Progress is not part of the decision state.
            JobEvent::JobProgressed(_) => state,
        };
    }

    fn decide(&self, command: &JobCommand) -> Result<Vec<JobEvent>, DomainError> {
        match (self, command) {
            (
                Job::Unknown,
                JobCommand::Submit {
                    job_id,
                    number,
                    submitted_by,
                    payload,
                    required_tags,
                    priority,
                    kind,
                    input,
                    scope_id,
                },
            ) => {
                // The payload is sealed in the log, so PostgreSQL no longer
                // sees it at append time; the read model's jsonb cannot hold
                // NUL, so it is refused here, before anything is written.
                if json_contains_nul(payload) {
                    return Err(DomainError::Invalid {
                        code: ErrorCode::InvalidText,
                        message: "the payload must not contain NUL characters".into(),
                    });
                }
                if !PRIORITY_RANGE.contains(priority) {
                    return Err(DomainError::Invalid {
                        code: ErrorCode::InvalidPriority,
                        message: "priority must be between -1000 and 1000".into(),
                    });
                }
                Ok(vec![JobEvent::JobSubmitted(JobSubmitted {
                    job_id: *job_id,
                    number: *number,
                    submitted_by: *submitted_by,
                    payload: Pii::plain(payload.to_string()),
                    required_tags: normalise_tags(required_tags)?,
                    priority: *priority,
                    kind: *kind,
                    // The name is personal data: sealed apart from the
                    // file's facts.
                    input: input.clone().map(|file| FileRef { name: None, ..file }),
                    input_name: input.as_ref().and_then(|file| file.name.clone()).map(Pii::plain),
                    scope_id: *scope_id,
                })])
            }
            (_, JobCommand::Submit { .. }) => Err(DomainError::Conflict {
                code: ErrorCode::JobExists,
                message: "a job with this id already exists".into(),
            }),
            (Job::Unknown, _) => Err(Job::not_found()),

            (Job::Queued(core), JobCommand::Assign(_, kind)) if core.kind != *kind => Err(DomainError::Conflict {
                code: ErrorCode::JobNotQueued,
                message: format!("this job is for {} runners", core.kind.as_str()),
            }),
            (Job::Queued(core), JobCommand::Assign(machine, _)) => Ok(vec![JobEvent::JobAssigned(JobAssigned {
                job_id: core.job_id,
                runner_id: machine.runner_id,
                machine_id: machine.machine_id,
            })]),
            (_, JobCommand::Assign(..)) => Err(DomainError::Conflict {
                code: ErrorCode::JobNotQueued,
                message: "this job is not waiting in the queue".into(),
            }),

            (Job::Assigned(core, assignment), JobCommand::Progress { by, progress, message })
                if assignment.runner_id == by.runner_id && assignment.machine_id == by.machine_id =>
            {
                if !(0.0..=1.0).contains(progress) {
                    return Err(DomainError::Invalid {
                        code: ErrorCode::InvalidProgress,
                        message: "progress is a number from 0.0 to 1.0".into(),
                    });
                }
                Ok(vec![JobEvent::JobProgressed(JobProgressed {
                    job_id: core.job_id,
                    progress: *progress,
                    message: message.clone().map(Pii::plain),
                    submitted_by: Some(core.submitted_by),
                })])
            }
            (Job::Assigned(core, assignment), JobCommand::Finish { by, outcome, result })
                if assignment.runner_id == by.runner_id && assignment.machine_id == by.machine_id =>
            {
                Ok(vec![JobEvent::JobFinished(JobFinished {
                    job_id: core.job_id,
                    runner_id: by.runner_id,
                    machine_id: by.machine_id,
                    outcome: *outcome,
                    result: (!result.is_null()).then(|| Pii::plain(result.to_string())),
                    submitted_by: Some(core.submitted_by),
                })])
            }
            (Job::Assigned(core, assignment), JobCommand::Retrieve(by))
                if assignment.runner_id == by.runner_id && assignment.machine_id == by.machine_id =>
            {
                if assignment.retrieved {
                    return Ok(Vec::new());
                }
                Ok(vec![JobEvent::JobRetrieved(JobRetrieved {
                    job_id: core.job_id,
                    runner_id: by.runner_id,
                    machine_id: by.machine_id,
                })])
            }
            (_, JobCommand::Progress { .. } | JobCommand::Finish { .. } | JobCommand::Retrieve(_)) => {
                Err(Job::not_yours())
            }

            (Job::Assigned(core, assignment), JobCommand::RequeueUnretrieved { machine, reason })
                if assignment.machine_id == machine.machine_id && !assignment.retrieved =>
            {
                Ok(Job::taken_back(core, assignment, reason))
            }
            // Fetched meanwhile, finished, or already elsewhere.
            (_, JobCommand::RequeueUnretrieved { .. }) => Ok(Vec::new()),

            (Job::Assigned(core, assignment), JobCommand::Requeue { runner_id, reason })
                if assignment.runner_id == *runner_id =>
            {
                Ok(Job::taken_back(core, assignment, reason))
            }
            // Finished, already requeued, or held by another runner by now.
            (_, JobCommand::Requeue { .. }) => Ok(Vec::new()),

            (
                _,
                JobCommand::Cancel {
                    requested_by,
                    admin,
                    reason,
                },
            ) => {
                let core = self.core().expect("known job");
                if !admin && core.submitted_by != *requested_by {
                    // Other users' jobs do not exist for them.
                    return Err(Job::not_found());
                }
                match self {
                    Job::Queued(core) => Ok(vec![JobEvent::JobCancelled(JobCancelled {
                        job_id: core.job_id,
                        reason: reason.clone(),
                    })]),
                    Job::Assigned(_, assignment) if assignment.cancel_requested => Ok(Vec::new()),
                    // Its machine has not fetched it: it never will, and
                    // must not wait for a result of it.
                    Job::Assigned(core, assignment) if !assignment.retrieved => {
                        Ok(vec![JobEvent::JobCancelled(JobCancelled {
                            job_id: core.job_id,
                            reason: reason.clone(),
                        })])
                    }
                    Job::Assigned(core, _) => Ok(vec![JobEvent::JobCancelRequested(JobCancelRequested {
                        job_id: core.job_id,
                        reason: reason.clone(),
                    })]),
                    _ => Err(DomainError::Conflict {
                        code: ErrorCode::JobAlreadyFinished,
                        message: "this job has already finished".into(),
                    }),
                }
            }
        }
    }
}

/// Whether any key or string in `value` holds a NUL character.
fn json_contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_contains_nul),
        serde_json::Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || json_contains_nul(value)),
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::then_err;
    use serde_json::json;

    const OWNER: Uuid = Uuid::from_u128(1);

    fn machine(n: u128) -> MachineRef {
        MachineRef {
            runner_id: Uuid::from_u128(100 + n),
            machine_id: Uuid::from_u128(200 + n),
        }
    }

    fn run(state: &mut Job, command: JobCommand) -> Result<Vec<JobEvent>, DomainError> {
        crate::domain::when(state, command)
    }

    fn queued() -> Job {
        let mut job = Job::Unknown;
        run(
            &mut job,
            JobCommand::Submit {
                job_id: Uuid::from_u128(9),
                number: Some(9),
                submitted_by: OWNER,
                payload: json!({"cmd": "make"}),
                required_tags: vec!["Linux".into()],
                priority: 0,
                kind: JobKind::Native,
                input: None,
                scope_id: None,
            },
        )
        .unwrap();
        job
    }

    #[test]
    fn a_job_is_assigned_once_and_finished_once() {
        let mut job = queued();
        assert!(matches!(&job, Job::Queued(core) if core.required_tags == ["linux"]));
        run(&mut job, JobCommand::Assign(machine(1), JobKind::Native)).unwrap();
        let second = run(&mut job, JobCommand::Assign(machine(2), JobKind::Native));
        then_err(second, "job_not_queued");

        let stranger = JobCommand::Finish {
            by: machine(2),
            outcome: JobOutcome::Succeeded,
            result: json!(null),
        };
        then_err(run(&mut job, stranger), "job_not_assigned_to_machine");
        let done = JobCommand::Finish {
            by: machine(1),
            outcome: JobOutcome::Succeeded,
            result: json!({"ok": true}),
        };
        run(&mut job, done.clone()).unwrap();
        assert!(matches!(job, Job::Finished(_, JobOutcome::Succeeded)));
        then_err(run(&mut job, done), "job_not_assigned_to_machine");
    }

    #[test]
    fn requeue_only_takes_the_job_from_the_runner_holding_it() {
        let mut job = queued();
        run(&mut job, JobCommand::Assign(machine(1), JobKind::Native)).unwrap();
        let other = JobCommand::Requeue {
            runner_id: machine(2).runner_id,
            reason: "gone".into(),
        };
        assert!(run(&mut job, other).unwrap().is_empty());
        let holder = JobCommand::Requeue {
            runner_id: machine(1).runner_id,
            reason: "runner invalidated".into(),
        };
        let events = run(&mut job, holder.clone()).unwrap();
        assert!(matches!(&events[..], [JobEvent::JobRequeued(e)] if e.reason == "runner invalidated"));
        assert!(matches!(job, Job::Queued(_)));
        // Requeueing twice (a handler running again) changes nothing.
        assert!(run(&mut job, holder).unwrap().is_empty());
        // The next machine can take it.
        run(&mut job, JobCommand::Assign(machine(2), JobKind::Native)).unwrap();
    }

    #[test]
    fn cancel_rules() {
        let mut job = queued();
        let stranger = JobCommand::Cancel {
            requested_by: Uuid::from_u128(77),
            admin: false,
            reason: None,
        };
        then_err(run(&mut job, stranger), "job_not_found");

        run(&mut job, JobCommand::Assign(machine(1), JobKind::Native)).unwrap();
        let owner = JobCommand::Cancel {
            requested_by: OWNER,
            admin: false,
            reason: None,
        };
        let events = run(&mut job, owner.clone()).unwrap();
        assert!(matches!(&events[..], [JobEvent::JobCancelRequested(_)]));
        assert!(matches!(&job, Job::Assigned(_, a) if a.cancel_requested));
        assert!(run(&mut job, owner).unwrap().is_empty());
        // Its runner disappears while a cancel is pending: cancelled, not requeued.
        let gone = JobCommand::Requeue {
            runner_id: machine(1).runner_id,
            reason: "runner invalidated".into(),
        };
        assert!(matches!(&run(&mut job, gone).unwrap()[..], [JobEvent::JobCancelled(_)]));
        let admin = JobCommand::Cancel {
            requested_by: Uuid::from_u128(5),
            admin: true,
            reason: None,
        };
        then_err(run(&mut job, admin), "job_already_finished");
    }

    #[test]
    fn a_job_only_goes_to_a_machine_of_its_protocol() {
        let mut job = queued();
        let wrong = run(&mut job, JobCommand::Assign(machine(1), JobKind::ProjectW));
        then_err(wrong, "job_not_queued");
        run(&mut job, JobCommand::Assign(machine(1), JobKind::Native)).unwrap();
    }

    #[test]
    fn progress_is_checked() {
        let mut job = queued();
        run(&mut job, JobCommand::Assign(machine(1), JobKind::Native)).unwrap();
        let too_much = JobCommand::Progress {
            by: machine(1),
            progress: 1.5,
            message: None,
        };
        then_err(run(&mut job, too_much), "invalid_progress");
        let fine = JobCommand::Progress {
            by: machine(1),
            progress: 0.5,
            message: Some("half way".into()),
        };
        assert_eq!(run(&mut job, fine).unwrap().len(), 1);
    }
}

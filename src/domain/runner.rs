//! The runner aggregate: created by an admin with a token, re-configured,
//! paused, its token reset, and finally invalidated for good.

use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_events::runner::{
    RunnerCreated, RunnerInvalidated, RunnerPaused, RunnerResumed, RunnerTokenReset, RunnerUpdated,
};
use warden_events::{Event, RunnerEvent};

use super::{Aggregate, DomainError};
use crate::api::ErrorCode;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Runner {
    #[default]
    Unknown,
    Active(ActiveRunner),
    Invalidated {
        id: Uuid,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveRunner {
    pub id: Uuid,
    pub token_hash: String,
    pub settings: RunnerSettings,
    pub paused: bool,
}

/// What an admin can change about a runner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunnerSettings {
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub priority: i32,
}

/// A change to some of a runner's settings; `None` keeps the current one.
/// Merged by the aggregate, so a caller needs no load of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunnerSettingsChange {
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub priority: Option<i32>,
}

impl RunnerSettingsChange {
    fn applied_to(&self, current: &RunnerSettings) -> RunnerSettings {
        RunnerSettings {
            description: self.description.clone().or_else(|| current.description.clone()),
            tags: self.tags.clone().unwrap_or_else(|| current.tags.clone()),
            priority: self.priority.unwrap_or(current.priority),
        }
    }
}

/// Every setting replaced.
impl From<RunnerSettings> for RunnerSettingsChange {
    fn from(settings: RunnerSettings) -> Self {
        RunnerSettingsChange {
            description: settings.description,
            tags: Some(settings.tags),
            priority: Some(settings.priority),
        }
    }
}

#[derive(Clone, Debug)]
pub enum RunnerCommand {
    Create {
        runner_id: Uuid,
        /// Drawn from the `runner_numbers` sequence by the caller.
        number: Option<i64>,
        /// SHA-256 of the freshly generated token (see `platform::secrets::tokens`).
        token_hash: String,
        settings: RunnerSettings,
        /// The group or project it belongs to; none for an instance runner.
        scope_id: Option<Uuid>,
    },
    Invalidate {
        reason: Option<String>,
    },
    ResetToken {
        token_hash: String,
        previous_token_valid_until: Option<DateTime<Utc>>,
    },
    Update(RunnerSettingsChange),
    Pause,
    Resume,
}

/// Most tags on a runner or job.
pub const MAX_TAGS: usize = 50;
/// What a tag may be (before it is lower-cased).
pub const TAG_PATTERN: &str = "^[A-Za-z0-9_.:/-]{1,64}$";
/// Longest description or reason, in characters.
pub const MAX_TEXT: usize = 1024;
const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

impl Aggregate for Runner {
    // Settings and token hashes only.
    const CACHEABLE: bool = true;
    type Command = RunnerCommand;
    type Event = RunnerEvent;

    fn select(event: &Event) -> Option<&RunnerEvent> {
        event.as_runner()
    }

    fn evolve(&mut self, event: &RunnerEvent) {
        match event {
            RunnerEvent::RunnerCreated(e) => {
                *self = Runner::Active(ActiveRunner {
                    id: e.runner_id,
                    token_hash: e.token_hash.clone(),
                    settings: RunnerSettings {
                        description: e.description.clone(),
                        tags: e.tags.clone(),
                        priority: e.priority,
                    },
                    paused: false,
                })
            }
            RunnerEvent::RunnerTokenReset(e) => {
                if let Runner::Active(runner) = self {
                    runner.token_hash = e.token_hash.clone();
                }
            }
            RunnerEvent::RunnerUpdated(e) => {
                if let Runner::Active(runner) = self {
                    runner.settings = RunnerSettings {
                        description: e.description.clone(),
                        tags: e.tags.clone(),
                        priority: e.priority,
                    }
                }
            }
            RunnerEvent::RunnerPaused(_) | RunnerEvent::RunnerResumed(_) => {
                if let Runner::Active(runner) = self {
                    runner.paused = matches!(event, RunnerEvent::RunnerPaused(_));
                }
            }
            RunnerEvent::RunnerInvalidated(e) => *self = Runner::Invalidated { id: e.runner_id },
        }
    }

    fn decide(&self, command: &RunnerCommand) -> Result<Vec<RunnerEvent>, DomainError> {
        let runner = match (self, command) {
            (
                Runner::Unknown,
                RunnerCommand::Create {
                    runner_id,
                    number,
                    token_hash,
                    settings,
                    scope_id,
                },
            ) => {
                let settings = validate_settings(settings)?;
                return Ok(vec![RunnerEvent::RunnerCreated(RunnerCreated {
                    runner_id: *runner_id,
                    number: *number,
                    token_hash: token_hash.clone(),
                    description: settings.description,
                    tags: settings.tags,
                    priority: settings.priority,
                    scope_id: *scope_id,
                })]);
            }
            (_, RunnerCommand::Create { .. }) => {
                return Err(DomainError::Conflict {
                    code: ErrorCode::RunnerExists,
                    message: "a runner with this id already exists".into(),
                })
            }
            (Runner::Unknown, _) => {
                return Err(DomainError::NotFound {
                    code: ErrorCode::RunnerNotFound,
                    what: "runner",
                })
            }
            (Runner::Invalidated { .. }, _) => {
                return Err(DomainError::Conflict {
                    code: ErrorCode::RunnerAlreadyInvalidated,
                    message: "this runner has already been invalidated".into(),
                })
            }
            (Runner::Active(runner), _) => runner,
        };
        let id = runner.id;
        let event = match command {
            RunnerCommand::Create { .. } => unreachable!("handled above"),
            RunnerCommand::Invalidate { reason } => {
                validate_text(reason.as_deref())?;
                RunnerEvent::RunnerInvalidated(RunnerInvalidated {
                    runner_id: id,
                    reason: reason.clone(),
                })
            }
            RunnerCommand::ResetToken {
                token_hash,
                previous_token_valid_until,
            } => RunnerEvent::RunnerTokenReset(RunnerTokenReset {
                runner_id: id,
                token_hash: token_hash.clone(),
                previous_token_valid_until: *previous_token_valid_until,
            }),
            RunnerCommand::Update(change) => {
                let settings = validate_settings(&change.applied_to(&runner.settings))?;
                if settings == runner.settings {
                    return Ok(Vec::new());
                }
                RunnerEvent::RunnerUpdated(RunnerUpdated {
                    runner_id: id,
                    description: settings.description,
                    tags: settings.tags,
                    priority: settings.priority,
                })
            }
            RunnerCommand::Pause if runner.paused => return Ok(Vec::new()),
            RunnerCommand::Pause => RunnerEvent::RunnerPaused(RunnerPaused { runner_id: id }),
            RunnerCommand::Resume if !runner.paused => return Ok(Vec::new()),
            RunnerCommand::Resume => RunnerEvent::RunnerResumed(RunnerResumed { runner_id: id }),
        };
        Ok(vec![event])
    }
}

fn validate_settings(settings: &RunnerSettings) -> Result<RunnerSettings, DomainError> {
    validate_text(settings.description.as_deref())?;
    if !PRIORITY_RANGE.contains(&settings.priority) {
        return Err(DomainError::Invalid {
            code: ErrorCode::InvalidPriority,
            message: format!(
                "priority must be between {} and {}",
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            ),
        });
    }
    Ok(RunnerSettings {
        description: settings.description.clone(),
        tags: normalise_tags(&settings.tags)?,
        priority: settings.priority,
    })
}

/// Descriptions and reasons: at most [`MAX_TEXT`] characters, no NUL
/// (PostgreSQL text cannot hold it).
pub fn validate_text(text: Option<&str>) -> Result<(), DomainError> {
    match text {
        Some(text) if text.chars().count() > MAX_TEXT => Err(DomainError::Invalid {
            code: ErrorCode::TextTooLong,
            message: format!("descriptions and reasons are limited to {MAX_TEXT} characters"),
        }),
        Some(text) if text.contains('\0') => Err(DomainError::Invalid {
            code: ErrorCode::InvalidText,
            message: "text must not contain NUL characters".into(),
        }),
        _ => Ok(()),
    }
}

/// Tags are short, lower-case, unique and sorted so that equal sets
/// compare equal. Jobs use the same rules for their required tags.
pub fn normalise_tags(tags: &[String]) -> Result<Vec<String>, DomainError> {
    if tags.len() > MAX_TAGS {
        return Err(DomainError::Invalid {
            code: ErrorCode::TooManyTags,
            message: format!("at most {MAX_TAGS} tags"),
        });
    }
    let mut normalised = Vec::with_capacity(tags.len());
    for tag in tags {
        // TAG_PATTERN, checked by hand.
        let valid =
            !tag.is_empty() && tag.len() <= 64 && tag.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
        let tag = tag.to_lowercase();
        if !valid {
            return Err(DomainError::Invalid {
                code: ErrorCode::InvalidTag,
                message: "tags are 1 to 64 characters of a-z, 0-9 and - _ . : /".into(),
            });
        }
        normalised.push(tag);
    }
    normalised.sort();
    normalised.dedup();
    Ok(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::then_err;

    fn create(id: Uuid) -> RunnerCommand {
        RunnerCommand::Create {
            runner_id: id,
            number: Some(1),
            token_hash: "ab".repeat(32),
            settings: RunnerSettings {
                description: None,
                tags: vec!["GPU".into(), "linux".into(), "gpu".into()],
                priority: 0,
            },
            scope_id: None,
        }
    }

    fn fold(events: &[RunnerEvent]) -> Runner {
        crate::domain::given(events)
    }

    fn active(id: Uuid) -> (Runner, Vec<RunnerEvent>) {
        let created = Runner::Unknown.decide(&create(id)).unwrap();
        (fold(&created), created)
    }

    #[test]
    fn create_then_invalidate() {
        let id = Uuid::now_v7();
        let (state, created) = active(id);
        assert!(matches!(&created[..], [RunnerEvent::RunnerCreated(e)] if e.tags == ["gpu", "linux"]));
        assert!(matches!(&state, Runner::Active(r) if r.id == id && !r.paused));

        let invalidated = state.decide(&RunnerCommand::Invalidate { reason: None }).unwrap();
        assert!(matches!(&invalidated[..], [RunnerEvent::RunnerInvalidated(e)] if e.runner_id == id));
        assert_eq!(fold(&[created, invalidated].concat()), Runner::Invalidated { id });
    }

    #[test]
    fn refusals_carry_stable_codes() {
        let id = Uuid::now_v7();
        let unknown = Runner::Unknown.decide(&RunnerCommand::Invalidate { reason: None });
        then_err(unknown, "runner_not_found");
        then_err(Runner::Unknown.decide(&RunnerCommand::Pause), "runner_not_found");

        let (active, _) = active(id);
        then_err(active.decide(&create(id)), "runner_exists");

        let invalidated = Runner::Invalidated { id };
        for command in [
            RunnerCommand::Invalidate { reason: None },
            RunnerCommand::Pause,
            RunnerCommand::ResetToken {
                token_hash: String::new(),
                previous_token_valid_until: None,
            },
        ] {
            then_err(invalidated.decide(&command), "runner_already_invalidated");
        }
    }

    #[test]
    fn pause_resume_and_updates_are_idempotent() {
        let (state, created) = active(Uuid::now_v7());
        assert!(state.decide(&RunnerCommand::Resume).unwrap().is_empty());
        let paused = state.decide(&RunnerCommand::Pause).unwrap();
        let state = fold(&[created.clone(), paused.clone()].concat());
        assert!(matches!(&state, Runner::Active(r) if r.paused));
        assert!(state.decide(&RunnerCommand::Pause).unwrap().is_empty());

        let same = RunnerSettings {
            description: None,
            tags: vec!["linux".into(), "gpu".into()],
            priority: 0,
        };
        assert!(state.decide(&RunnerCommand::Update(same.into())).unwrap().is_empty());
        let more = RunnerSettings {
            description: Some("big box".into()),
            tags: vec!["gpu".into()],
            priority: 5,
        };
        let updated = state.decide(&RunnerCommand::Update(more.into())).unwrap();
        let state = fold(&[created, paused, updated].concat());
        assert!(matches!(&state, Runner::Active(r) if r.settings.priority == 5 && r.settings.tags == ["gpu"]));
    }

    #[test]
    fn a_partial_change_keeps_the_settings_it_does_not_name() {
        let (state, created) = active(Uuid::now_v7());
        let Runner::Active(before) = &state else {
            panic!("not active")
        };
        let only_priority = RunnerSettingsChange {
            priority: Some(7),
            ..Default::default()
        };
        let changed = state.decide(&RunnerCommand::Update(only_priority)).unwrap();
        let state = fold(&[created, changed].concat());
        let Runner::Active(after) = &state else {
            panic!("not active")
        };
        assert_eq!(after.settings.priority, 7);
        assert_eq!(after.settings.tags, before.settings.tags);
        assert_eq!(after.settings.description, before.settings.description);
        assert!(state
            .decide(&RunnerCommand::Update(RunnerSettingsChange::default()))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn token_reset_replaces_the_hash() {
        let (state, created) = active(Uuid::now_v7());
        let reset = state
            .decide(&RunnerCommand::ResetToken {
                token_hash: "cd".repeat(32),
                previous_token_valid_until: None,
            })
            .unwrap();
        let state = fold(&[created, reset].concat());
        assert!(matches!(&state, Runner::Active(r) if r.token_hash == "cd".repeat(32)));
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad_tag = RunnerSettings {
            tags: vec!["has space".into()],
            ..Default::default()
        };
        let command = RunnerCommand::Create {
            runner_id: Uuid::now_v7(),
            number: None,
            token_hash: String::new(),
            settings: bad_tag,
            scope_id: None,
        };
        then_err(Runner::Unknown.decide(&command), "invalid_tag");
        let (state, _) = active(Uuid::now_v7());
        let extreme = RunnerSettings {
            priority: 5000,
            ..Default::default()
        };
        then_err(state.decide(&RunnerCommand::Update(extreme.into())), "invalid_priority");
    }
}

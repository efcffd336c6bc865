//! The runner aggregate: created by an admin, invalidated for good.

use uuid::Uuid;
use warden_events::runner::{RunnerCreated, RunnerInvalidated};
use warden_events::Event;

use super::{Aggregate, DomainError};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Runner {
    #[default]
    Unknown,
    Active {
        id: Uuid,
        token_hash: String,
    },
    Invalidated {
        id: Uuid,
    },
}

#[derive(Clone, Debug)]
pub enum RunnerCommand {
    Create {
        runner_id: Uuid,
        /// SHA-256 of the freshly generated token (see `crate::secrets`).
        token_hash: String,
        description: Option<String>,
        tags: Vec<String>,
    },
    Invalidate {
        reason: Option<String>,
    },
}

const MAX_TAGS: usize = 50;
const MAX_TEXT: usize = 1024;

impl Aggregate for Runner {
    type Command = RunnerCommand;

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::RunnerCreated(e) => {
                *self = Runner::Active {
                    id: e.runner_id,
                    token_hash: e.token_hash.clone(),
                }
            }
            Event::RunnerInvalidated(e) => *self = Runner::Invalidated { id: e.runner_id },
            _ => {}
        }
    }

    fn decide(&self, command: &RunnerCommand) -> Result<Vec<Event>, DomainError> {
        match (self, command) {
            (
                Runner::Unknown,
                RunnerCommand::Create {
                    runner_id,
                    token_hash,
                    description,
                    tags,
                },
            ) => {
                validate_description(description.as_deref())?;
                let tags = normalise_tags(tags)?;
                Ok(vec![Event::RunnerCreated(RunnerCreated {
                    runner_id: *runner_id,
                    token_hash: token_hash.clone(),
                    description: description.clone(),
                    tags,
                })])
            }
            (_, RunnerCommand::Create { .. }) => Err(DomainError::Conflict {
                code: "runner_exists",
                message: "a runner with this id already exists".into(),
            }),
            (Runner::Active { id, .. }, RunnerCommand::Invalidate { reason }) => {
                validate_description(reason.as_deref())?;
                Ok(vec![Event::RunnerInvalidated(RunnerInvalidated {
                    runner_id: *id,
                    reason: reason.clone(),
                })])
            }
            (Runner::Invalidated { .. }, RunnerCommand::Invalidate { .. }) => Err(DomainError::Conflict {
                code: "runner_already_invalidated",
                message: "this runner has already been invalidated".into(),
            }),
            (Runner::Unknown, RunnerCommand::Invalidate { .. }) => Err(DomainError::NotFound {
                code: "runner_not_found",
                what: "runner",
            }),
        }
    }
}

fn validate_description(text: Option<&str>) -> Result<(), DomainError> {
    match text {
        Some(text) if text.len() > MAX_TEXT => Err(DomainError::Invalid {
            code: "text_too_long",
            message: format!("descriptions and reasons are limited to {MAX_TEXT} bytes"),
        }),
        _ => Ok(()),
    }
}

/// Tags are short, lower-case, unique and sorted so that equal sets
/// compare equal.
fn normalise_tags(tags: &[String]) -> Result<Vec<String>, DomainError> {
    if tags.len() > MAX_TAGS {
        return Err(DomainError::Invalid {
            code: "too_many_tags",
            message: format!("a runner has at most {MAX_TAGS} tags"),
        });
    }
    let mut normalised = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.trim().to_lowercase();
        let valid =
            !tag.is_empty() && tag.len() <= 64 && tag.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
        if !valid {
            return Err(DomainError::Invalid {
                code: "invalid_tag",
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

    fn create(id: Uuid) -> RunnerCommand {
        RunnerCommand::Create {
            runner_id: id,
            token_hash: "ab".repeat(32),
            description: None,
            tags: vec!["GPU".into(), "linux".into(), "gpu".into()],
        }
    }

    fn fold(events: &[Event]) -> Runner {
        let mut state = Runner::default();
        events.iter().for_each(|e| state.evolve(e));
        state
    }

    #[test]
    fn create_then_invalidate() {
        let id = Uuid::now_v7();
        let created = Runner::Unknown.decide(&create(id)).unwrap();
        assert!(matches!(&created[..], [Event::RunnerCreated(e)] if e.tags == ["gpu", "linux"]));
        let state = fold(&created);
        assert!(matches!(state, Runner::Active { id: got, .. } if got == id));

        let invalidated = state.decide(&RunnerCommand::Invalidate { reason: None }).unwrap();
        assert!(matches!(&invalidated[..], [Event::RunnerInvalidated(e)] if e.runner_id == id));
        let state = fold(&[created, invalidated].concat());
        assert_eq!(state, Runner::Invalidated { id });
    }

    #[test]
    fn refusals_carry_stable_codes() {
        let id = Uuid::now_v7();
        let unknown = Runner::Unknown.decide(&RunnerCommand::Invalidate { reason: None });
        assert_eq!(unknown.unwrap_err().code(), "runner_not_found");

        let active = fold(&Runner::Unknown.decide(&create(id)).unwrap());
        assert_eq!(active.decide(&create(id)).unwrap_err().code(), "runner_exists");

        let invalidated = Runner::Invalidated { id };
        let again = invalidated.decide(&RunnerCommand::Invalidate { reason: None });
        assert_eq!(again.unwrap_err().code(), "runner_already_invalidated");
    }

    #[test]
    fn bad_tags_are_refused() {
        let command = RunnerCommand::Create {
            runner_id: Uuid::now_v7(),
            token_hash: String::new(),
            description: None,
            tags: vec!["has space".into()],
        };
        assert_eq!(Runner::Unknown.decide(&command).unwrap_err().code(), "invalid_tag");
    }
}

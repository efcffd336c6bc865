//! Pure decision logic: `decide(state, command) -> events` and
//! `evolve(state, event) -> state`, one aggregate per stream. No IO here;
//! anything that needs randomness or a clock (ids, password hashes) is
//! computed by the caller and passed in the command.

pub mod job;
pub mod machine;
pub mod runner;
pub mod scope;
pub mod user;

use warden_events::{Event, RecordedEvent};

use crate::api::ErrorCode;

/// Why a command was refused. `code` values are part of the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{what} not found")]
    NotFound { code: ErrorCode, what: &'static str },
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
}

impl DomainError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::NotFound { code, .. }
            | DomainError::Conflict { code, .. }
            | DomainError::Invalid { code, .. } => *code,
        }
    }
}

/// State of one stream, folded from its events. Only the aggregate's own
/// event enum goes in or out, and `evolve` matches it exhaustively.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    type Command: Send + Sync;
    /// The aggregate's events (e.g. `RunnerEvent`).
    type Event: Clone + Into<Event> + Send + Sync;

    /// Whether commands may keep this aggregate's folded state in memory
    /// between commands (`log::state_cache`). Only for state without
    /// personal data: erasure must not leave any behind in a cache.
    const CACHEABLE: bool;

    /// This aggregate's event, if `event` is one.
    fn select(event: &Event) -> Option<&Self::Event>;

    fn evolve(&mut self, event: &Self::Event);

    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError>;

    /// Folds a stream read from the log (a stream holds only its
    /// aggregate's events).
    fn from_history(history: &[RecordedEvent]) -> Self {
        let mut state = Self::default();
        for event in history.iter().filter_map(|recorded| Self::select(&recorded.event)) {
            state.evolve(event);
        }
        state
    }
}

/// Given/when/then for domain tests: the state after `given`, and what
/// `when` decides on it.
#[cfg(test)]
pub fn given<A: Aggregate>(given: &[A::Event]) -> A {
    let mut state = A::default();
    given.iter().for_each(|event| state.evolve(event));
    state
}

/// Runs `command` on `state` (the "when"), applying what it decided, and
/// returns the events (the "then").
#[cfg(test)]
pub fn when<A: Aggregate>(state: &mut A, command: A::Command) -> Result<Vec<A::Event>, DomainError> {
    let events = state.decide(&command)?;
    events.iter().for_each(|event| state.evolve(event));
    Ok(events)
}

/// The "then" of an accepted command: it decided exactly `expected`.
#[cfg(test)]
#[track_caller]
pub fn then<E: PartialEq + std::fmt::Debug>(outcome: Result<Vec<E>, DomainError>, expected: &[E]) -> Vec<E> {
    match outcome {
        Ok(events) => {
            assert_eq!(events, expected, "the command decided other events");
            events
        }
        Err(error) => panic!("the command was refused ({}): {error}", error.code().as_str()),
    }
}

/// The "then" of a refused command: refused with `code`, nothing decided.
#[cfg(test)]
#[track_caller]
pub fn then_err<E: std::fmt::Debug>(outcome: Result<Vec<E>, DomainError>, code: &str) -> DomainError {
    match outcome {
        Ok(events) => panic!("the command was accepted, not refused with {code}: {events:?}"),
        Err(error) => {
            assert_eq!(error.code(), code, "refused with another code: {error}");
            error
        }
    }
}

//! Pure decision logic: `decide(state, command) -> events` and
//! `evolve(state, event) -> state`, one aggregate per stream. No IO here;
//! anything that needs randomness or a clock (ids, password hashes) is
//! computed by the caller and passed in the command.

pub mod job;
pub mod machine;
pub mod runner;
pub mod user;

use warden_events::{Event, RecordedEvent};

/// Why a command was refused. `code` values are part of the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{what} not found")]
    NotFound { code: &'static str, what: &'static str },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
}

impl DomainError {
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::NotFound { code, .. }
            | DomainError::Conflict { code, .. }
            | DomainError::Invalid { code, .. } => code,
        }
    }
}

/// State of one stream, folded from its events.
pub trait Aggregate: Default + Send + Sync {
    type Command: Send + Sync;

    fn evolve(&mut self, event: &Event);

    fn decide(&self, command: &Self::Command) -> Result<Vec<Event>, DomainError>;

    /// Folds a stream read from the log.
    fn from_history(history: &[RecordedEvent]) -> Self {
        let mut state = Self::default();
        for recorded in history {
            state.evolve(&recorded.event);
        }
        state
    }
}

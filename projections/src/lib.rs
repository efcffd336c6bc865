//! Projectors: fold events into PostgreSQL read models.
//!
//! A projector owns some tables. It says what an event changes as data
//! ([`change::Change`], computed by a pure function); the changes are
//! applied as SQL inside a transaction that the caller also uses to move
//! the projector's checkpoint, or folded in memory by a rebuild
//! ([`fold`]). Every projector is idempotent on its own: each row
//! remembers the stream version that last changed it and ignores anything
//! not newer, so applying an event twice (a crash between apply and
//! checkpoint, a replay over live tables) changes nothing.

pub mod change;
pub mod fold;
pub mod jobs;
pub mod machines;
pub mod runners;
pub mod scopes;
pub mod users;

use async_trait::async_trait;
use change::{apply_changes, Change};
pub use deadpool_postgres::Transaction;
use warden_events::{Event, RecordedEvent};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error in projection: {0}")]
    Database(#[from] tokio_postgres::Error),
}

#[async_trait]
pub trait Projection: Send + Sync {
    /// Stable name: the key of this projector's checkpoint.
    fn name(&self) -> &'static str;

    /// The read-model tables this projector writes, for rebuild and verify.
    fn tables(&self) -> &'static [&'static str];

    /// The stream category (`user`, `runner`, `machine`, `job`) whose
    /// events this projector folds: an event there it cannot read (from a
    /// newer release) must stop it, elsewhere it may pass it by.
    fn category(&self) -> &'static str;

    /// Whether `event` changes this projector's tables (an append projects
    /// inline only through the projectors its events concern).
    fn handles(&self, event: &Event) -> bool;

    /// Whether the projector's own commits (behind the appends) must be
    /// flushed. Read models that decide who may do what (users, runners)
    /// must; the others may commit asynchronously: one lost in a
    /// PostgreSQL crash is re-projected from the log, which is always
    /// durable, before warden serves again.
    fn needs_durable_commits(&self) -> bool;

    /// What one event changes; nothing for events this projector does not
    /// handle. Only rows of the event's own stream (its user, runner,
    /// machine or job) may change: a rebuild folds each stream on its own.
    /// It must not use the event's `position` or `transaction_id`: inline
    /// projection applies the event while the statement appending it runs,
    /// before they are known (it passes 0).
    fn changes(&self, event: &RecordedEvent) -> Vec<Change>;

    /// Applies one event's [`Self::changes`] to the tables `tx` sees.
    async fn apply(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        apply_changes(tx, &self.changes(event)).await
    }
}

/// A projector of one aggregate's events. [`Self::select`] is the one
/// declaration of what it handles ([`Projection::handles`] is derived from
/// it), and [`Self::changes_of`] matches the aggregate's event enum
/// exhaustively: a new event type does not compile until every projector
/// of its aggregate says what it does with it.
pub trait AggregateProjection: Send + Sync {
    /// The aggregate's event enum (e.g. `UserEvent`).
    type Event: Sync;
    /// The stream category of `Self::Event`'s aggregate.
    const CATEGORY: &'static str;
    /// Stable name: the key of this projector's checkpoint.
    const NAME: &'static str;
    /// The read-model tables this projector writes.
    const TABLES: &'static [&'static str];
    /// See [`Projection::needs_durable_commits`].
    const DURABLE_COMMITS: bool;

    fn select(event: &Event) -> Option<&Self::Event>;

    /// What `event` (recorded as `recorded`) changes in the read model.
    fn changes_of(recorded: &RecordedEvent, event: &Self::Event) -> Vec<Change>;
}

#[async_trait]
impl<P: AggregateProjection> Projection for P {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        P::TABLES
    }

    fn category(&self) -> &'static str {
        P::CATEGORY
    }

    fn handles(&self, event: &Event) -> bool {
        P::select(event).is_some()
    }

    fn needs_durable_commits(&self) -> bool {
        P::DURABLE_COMMITS
    }

    fn changes(&self, recorded: &RecordedEvent) -> Vec<Change> {
        match P::select(&recorded.event) {
            Some(event) => P::changes_of(recorded, event),
            None => Vec::new(),
        }
    }
}

/// Every projector, in the order they are applied.
static PROJECTORS: [&dyn Projection; 5] = [
    &users::UserProjection,
    &scopes::ScopeProjection,
    &runners::RunnerProjection,
    &machines::MachineProjection,
    &jobs::JobProjection,
];

/// What `event` changes in every read model that handles it, in the order
/// the projectors are applied. The append applies these inside the
/// transaction that appends the event (inline projection): the read
/// models then change atomically with the log, and whoever appended reads
/// its own write without waiting for a projector.
pub fn inline_changes(event: &RecordedEvent) -> Vec<Change> {
    PROJECTORS
        .iter()
        .flat_map(|projection| projection.changes(event))
        .collect()
}

/// Every projector warden runs, in the order they are applied.
pub fn all() -> &'static [&'static dyn Projection] {
    &PROJECTORS
}

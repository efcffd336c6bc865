//! The event log on PostgreSQL: append with optimistic concurrency, read a
//! stream, and follow the whole log without ever skipping an event.
//!
//! Delivery order and the no-skip guarantee: positions come from an
//! identity sequence and are handed out before commit, so position order
//! is not commit order. Each row also records the id of the transaction
//! that wrote it (plus the log clock's offset, see `log/clock.rs`), and a
//! reader only reads rows whose transaction id is below `log_horizon()`
//! (`pg_snapshot_xmin(pg_current_snapshot())` plus the same offset): every
//! transaction older than that has finished, so no row it wrote can still
//! appear. Rows are delivered ordered by `(transaction_id, position)`
//! ([`LogCursor`]).
//!
//! Per-stream order under that delivery order needs one rule from writers:
//! a transaction decides the expected version of every stream it appends
//! to *before* its first write (so before it gets a transaction id). Every
//! append path here loads state first and appends afterwards.

mod append;
pub mod chain;
pub mod claims;
mod listen;
mod pii;
mod read;

use std::sync::Arc;

use tokio::sync::watch;
use uuid::Uuid;
use warden_events::codec::DecodeError;
use warden_events::StreamId;

use crate::platform::db::{Database, DbError};

pub use append::{append_in, Appended, ExpectedVersion};
pub use listen::{APPEND_CHANNEL, CHECKPOINT_CHANNEL};
pub use read::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream} was changed concurrently (expected version {expected})")]
    Conflict { stream: StreamId, expected: i64 },
    #[error("this {scope} is already in use")]
    ClaimTaken { scope: &'static str },
    #[error("personal data of subject {0} has been forgotten; nothing new can be recorded for it")]
    SubjectForgotten(Uuid),
    #[error("event at position {position} cannot be read: {source}")]
    Decode { position: i64, source: DecodeError },
    #[error(
        "{consumer} stops at an event this release cannot read ({} v{} at position {}): {}; \
         a release that knows it will go on",
        .event.event_type, .event.schema_version, .event.cursor.position, .event.reason
    )]
    Unreadable {
        consumer: &'static str,
        event: Box<UnreadableEvent>,
    },
    #[error("event at position {position} cannot be read from its row: {source}")]
    Column {
        position: i64,
        source: tokio_postgres::Error,
    },
    #[error("event at position {position} has unreadable metadata: {source}")]
    Metadata { position: i64, source: serde_json::Error },
    #[error("sealed personal data at position {position} does not decrypt: the log or the key was altered")]
    CorruptPii { position: i64 },
    #[error("the lease {0} ran out before the work under it ended; another instance may lead now")]
    LeaseLost(String),
    #[error("the checkpoint of {0} was moved by another leader; this one stops")]
    Fenced(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Db(DbError::Postgres(error))
    }
}

impl From<warden_projections::ProjectionError> for StoreError {
    fn from(error: warden_projections::ProjectionError) -> Self {
        match error {
            warden_projections::ProjectionError::Database(error) => error.into(),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::Db(DbError::Pool(error))
    }
}

/// The event log of one database, with an in-process signal that fires on
/// every local append (projectors wait on it instead of polling).
#[derive(Clone)]
pub struct EventStore {
    db: Database,
    /// Any append, local or announced by another instance.
    appended: Arc<watch::Sender<u64>>,
    /// Appends by this process only (what the notifier announces).
    appended_here: Arc<watch::Sender<u64>>,
    /// Checkpoints moved by a projector another instance leads.
    checkpoints_elsewhere: Arc<watch::Sender<u64>>,
}

impl EventStore {
    pub fn new(db: Database) -> Self {
        EventStore {
            db,
            appended: Arc::new(watch::channel(0).0),
            appended_here: Arc::new(watch::channel(0).0),
            checkpoints_elsewhere: Arc::new(watch::channel(0).0),
        }
    }

    /// Fires when a projector led by any instance announces progress.
    pub fn subscribe_checkpoints(&self) -> watch::Receiver<u64> {
        self.checkpoints_elsewhere.subscribe()
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Fires after appends by this process and, via LISTEN, by others.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// To be called after committing an append made with [`append_in`].
    pub fn signal_append(&self) {
        self.appended_here.send_modify(|count| *count = count.wrapping_add(1));
        self.signal_remote_append();
    }

    fn signal_remote_append(&self) {
        self.appended.send_modify(|count| *count = count.wrapping_add(1));
    }
}

//! Projectors: fold events into PostgreSQL read models.
//!
//! A projector owns some tables and applies events to them inside a
//! transaction that the caller also uses to move the projector's checkpoint.
//! Every projector is idempotent on its own: each row remembers the stream
//! version that last changed it and ignores anything not newer, so applying
//! an event twice (a crash between apply and checkpoint, a replay over live
//! tables) changes nothing.

pub mod jobs;
pub mod machines;
pub mod runners;
pub mod users;

use async_trait::async_trait;
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

    /// Whether `event` changes this projector's tables; commands only wait
    /// for the projectors their events concern.
    fn handles(&self, event: &Event) -> bool;

    /// Whether commits of this read model must be flushed before a command
    /// that waits for it answers. Read models that decide who may do what
    /// (users, runners) must; the others may commit asynchronously: one
    /// lost in a PostgreSQL crash is re-projected from the log, which is
    /// always durable, before warden serves again.
    fn needs_durable_commits(&self) -> bool {
        true
    }

    /// Applies one event; events a projector does not care about are no-ops.
    /// It may change only rows of the event's own stream (its user, runner,
    /// machine or job): a rebuild applies different streams concurrently.
    async fn apply(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ProjectionError>;
}

/// Runs `sql` on `tx` through the connection's statement cache: one round
/// trip per event instead of a prepare plus an execute.
pub async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, ProjectionError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

/// Every projector warden runs, in the order they are applied.
pub fn all() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(users::UserProjection),
        Box::new(runners::RunnerProjection),
        Box::new(machines::MachineProjection),
        Box::new(jobs::JobProjection),
    ]
}

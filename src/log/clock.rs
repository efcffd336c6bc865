//! The log clock: keeps event ids ordered after the database moved to
//! another PostgreSQL cluster.
//!
//! `events.transaction_id` is the writing transaction's id plus the offset
//! in `log_clock` (migration V14), and readers read below `log_horizon()`,
//! the oldest running transaction plus the same offset. Transaction ids
//! are one cluster's own: a `pg_dump`/`pg_restore` (or logical
//! replication) into a fresh cluster brings ids that can be far ahead of
//! the new cluster's counter. Left alone, the restored events stay above
//! the horizon (unreadable) and new events get smaller ids than old ones.
//!
//! [`align`] runs at start-up, before anything is served: if the largest
//! stored id is not below the ids this cluster now hands out, it raises the
//! offset so that every new id is above every stored one. Everything stored
//! then is committed (a restore copies only committed rows; the check runs
//! under an exclusive lock on `events`, so no append is in flight), so it
//! is below the new horizon, in its old order; new events follow it.
//! Cursors and checkpoints keep their meaning (stored ids never change).

use deadpool_postgres::GenericClient;

use crate::log::event_store::StoreError;
use crate::platform::db::Database;

/// Migrates the database, then [`align`]s the log clock: what every
/// command does before it reads or writes the log.
pub async fn migrate_and_align(db: &Database) -> anyhow::Result<Vec<String>> {
    let applied = db.migrate().await?;
    align(db).await?;
    Ok(applied)
}

/// What [`align`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Alignment {
    /// Stored ids are below this cluster's: nothing to do.
    InOrder,
    /// The offset was raised by this much (the log came from another
    /// cluster).
    Raised { by: i64, offset: i64 },
}

/// Raises the offset when stored ids are ahead of this cluster's (see the
/// module docs). Safe to run from many instances at once.
pub async fn align(db: &Database) -> Result<Alignment, StoreError> {
    let mut connection = db.get().await?;
    let tx = connection.transaction().await?;
    // No append runs meanwhile (they take ROW EXCLUSIVE), and a second
    // instance aligning at the same time waits and then finds order.
    tx.batch_execute("LOCK TABLE events IN EXCLUSIVE MODE").await?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(transaction_id), 0), log_transaction_id(), (SELECT xid_offset FROM log_clock)
             FROM events",
            &[],
        )
        .await?;
    let (newest_stored, next_id, offset): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let alignment = raise_needed(newest_stored, next_id, offset);
    if let Alignment::Raised { offset, .. } = alignment {
        tx.execute("UPDATE log_clock SET xid_offset = $1, changed_at = now()", &[&offset])
            .await?;
        tracing::warn!(
            newest_stored,
            next_id,
            offset,
            "the event log came from another PostgreSQL cluster (restore or replication): \
             its transaction ids are ahead of this cluster's; new events now follow it"
        );
    }
    tx.commit().await?;
    Ok(alignment)
}

/// The new offset when `newest_stored` is not below `next_id` (this
/// transaction's log id under `offset`). A margin keeps the next
/// transactions (already running ones included) above it too.
fn raise_needed(newest_stored: i64, next_id: i64, offset: i64) -> Alignment {
    if newest_stored < next_id {
        return Alignment::InOrder;
    }
    let by = newest_stored - next_id + 1 + MARGIN;
    Alignment::Raised {
        by,
        offset: offset + by,
    }
}

/// Extra distance above the newest stored id, so transactions that got
/// their id before this one (they cannot have written events: the table
/// is locked) still land above it.
const MARGIN: i64 = 1_000_000;

/// The current offset (for diagnostics).
pub async fn offset<C: GenericClient>(client: &C) -> Result<i64, StoreError> {
    Ok(client.query_one("SELECT xid_offset FROM log_clock", &[]).await?.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_rises_only_when_stored_ids_are_ahead() {
        assert_eq!(raise_needed(500, 900, 0), Alignment::InOrder);
        let Alignment::Raised { by, offset } = raise_needed(5_000_000, 900, 0) else {
            panic!("not raised")
        };
        assert!(900 + by > 5_000_000 + MARGIN - 1);
        assert_eq!(offset, by);
        // Equal counts as ahead: a new event must never share an id.
        assert!(matches!(raise_needed(900, 900, 7), Alignment::Raised { offset, .. } if offset > 7));
    }
}

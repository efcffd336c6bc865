//! `warden replay`: rebuild every read model from the log, then swap the
//! rebuilt rows in without downtime for readers; `--verify`: rebuild into
//! scratch tables and report every difference from the live read models.
//!
//! 1. Scratch tables (unlogged copies of the read-model tables with only
//!    their primary keys) in a schema of their own; the projectors' own
//!    code folds the whole log into them, in large transactions on a
//!    connection whose search path starts with that schema (its statement
//!    cache is emptied first, so no cached plan points at the live tables),
//!    the streams of a batch pipelined.
//! 2. The live read models are frozen: their tables are locked in EXCLUSIVE
//!    mode (plain reads go on; appends, which project inline, and the live
//!    projectors wait) and the projectors' checkpoints locked. The scratch
//!    tables catch up to every event committed by then: the live tables
//!    show exactly those (inline projection), also the ones a transaction
//!    still open keeps above the log horizon.
//! 3. Replay: in the same transaction the live rows are replaced by the
//!    rebuilt ones and the checkpoints set to the log horizon the rebuild
//!    reached (the projectors re-apply what follows: no-ops);
//!    readers see the old rows until the commit, then the new ones. Verify:
//!    both sides are compared row by row.
//!
//! Reactions keep their own state and checkpoint and are not replayed.

use std::collections::HashMap;
use std::time::Instant;

use deadpool_postgres::GenericClient;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use warden_events::{LogCursor, RecordedEvent};
use warden_projections::Projection;

use crate::log::event_store::{self, Reach, StoreError};
use crate::log::follower::save_checkpoint;
use crate::platform::db::{Connection, Database};

const BATCH: i64 = 5000;

#[derive(Debug, Serialize)]
pub struct TableDifference {
    pub table: String,
    /// Rows in the live table that the rebuild does not have.
    pub only_live: i64,
    /// Rows the rebuild has that the live table does not.
    pub only_rebuilt: i64,
    /// A few differing rows, as JSON.
    pub examples: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Verify: every difference; replay: empty.
    pub differences: Vec<TableDifference>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("read-model table {0} has no primary key, which the rebuild needs")]
    NoPrimaryKey(String),
}

/// The scratch tables and the connection that owns them.
struct Scratch {
    connection: Option<Connection>,
    schema: String,
}

impl Scratch {
    async fn create(db: &Database, projections: &[Box<dyn Projection>]) -> Result<Scratch, ReplayError> {
        let connection = db.get().await.map_err(StoreError::from)?;
        // Statements cached under another search path would still write to
        // the tables they were prepared for.
        connection.statement_cache.clear();
        let schema = format!("replay_{}", uuid::Uuid::now_v7().simple());
        let mut sql = format!("CREATE SCHEMA {schema};");
        for projection in projections {
            for table in projection.tables() {
                // Unlogged and with only the primary key (the projectors
                // find rows by it): no WAL and no index upkeep per event. A
                // rebuild lost in a crash is started again; the live
                // tables' other indexes and unique constraints are
                // enforced when the rows are copied in.
                let primary_key = primary_key_columns(&connection, table).await?;
                sql.push_str(&format!(
                    "CREATE UNLOGGED TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL EXCLUDING INDEXES);
                     ALTER TABLE {schema}.{table} ADD PRIMARY KEY ({primary_key});"
                ));
            }
        }
        sql.push_str(&format!("SET search_path = {schema}, public;"));
        connection.batch_execute(&sql).await?;
        Ok(Scratch {
            connection: Some(connection),
            schema,
        })
    }

    fn connection(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("present until dropped")
    }

    async fn drop_schema(mut self) -> Result<(), ReplayError> {
        let connection = self.connection.take().expect("present until dropped");
        let outcome = connection
            .batch_execute(&format!("RESET search_path; DROP SCHEMA {} CASCADE;", self.schema))
            .await;
        // Its session state and cache belong to the scratch schema.
        crate::platform::db::discard(connection);
        Ok(outcome?)
    }
}

/// Sends the log batch by batch, up to the end it finds, then an empty
/// batch; stops early if the receiver is gone.
async fn read_ahead(db: Database, batches: tokio::sync::mpsc::Sender<Result<Vec<RecordedEvent>, StoreError>>) {
    let connection = match db.get().await {
        Ok(connection) => connection,
        Err(error) => {
            let _ = batches.send(Err(error.into())).await;
            return;
        }
    };
    let mut cursor = LogCursor::START;
    loop {
        let batch = event_store::read_after(&connection, cursor, BATCH).await;
        if let Ok(events) = &batch {
            match events.last() {
                Some(last) => cursor = last.cursor(),
                None => {
                    let _ = batches.send(batch).await;
                    return;
                }
            }
        }
        let failed = batch.is_err();
        if batches.send(batch).await.is_err() || failed {
            return;
        }
    }
}

/// `a, b` of `public.table`'s primary key.
async fn primary_key_columns<C: GenericClient>(client: &C, table: &str) -> Result<String, ReplayError> {
    let row = client
        .query_one(
            "SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY array_position(i.indkey::int2[], a.attnum))
             FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = ('public.' || quote_ident($1))::regclass AND i.indisprimary",
            &[&table],
        )
        .await?;
    let columns: Option<String> = row.get(0);
    columns.ok_or_else(|| ReplayError::NoPrimaryKey(table.to_owned()))
}

/// Applies the next batch after `after` to `projections` in `tx`; returns
/// where it ended and how many events it applied, or `None` when there was
/// nothing left.
async fn apply_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    projections: &[&dyn Projection],
    after: LogCursor,
    reach: Reach,
) -> Result<Option<(LogCursor, u64)>, ReplayError> {
    let batch = event_store::read_reaching(tx, after, BATCH, reach).await?;
    let Some(last) = batch.last().map(|e| e.cursor()) else {
        return Ok(None);
    };
    apply_pipelined(tx, projections, &batch).await?;
    Ok(Some((last, batch.len() as u64)))
}

/// Applies `events` with their statements pipelined: an event changes only
/// rows of its own stream (the projectors' contract), so the streams of a
/// batch are applied concurrently on the one connection, where
/// tokio-postgres sends their statements without waiting for each answer;
/// each stream's events stay in order. One round trip per event was the
/// bottleneck of a rebuild (see docs/performance.md).
async fn apply_pipelined(
    tx: &deadpool_postgres::Transaction<'_>,
    projections: &[&dyn Projection],
    events: &[RecordedEvent],
) -> Result<(), ReplayError> {
    let mut streams: Vec<Vec<&RecordedEvent>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for event in events {
        let slot = *index.entry(event.stream_id.as_str()).or_insert_with(|| {
            streams.push(Vec::new());
            streams.len() - 1
        });
        streams[slot].push(event);
    }
    let appliers = streams.iter().map(|stream_events| async move {
        for event in stream_events {
            for projection in projections {
                projection.apply(tx, event).await?;
            }
        }
        Ok::<_, warden_projections::ProjectionError>(())
    });
    futures_util::future::try_join_all(appliers)
        .await
        .map_err(StoreError::from)?;
    Ok(())
}

/// Applies everything after `from` that `reach` covers inside `tx`.
async fn catch_up(
    tx: &deadpool_postgres::Transaction<'_>,
    projections: &[&dyn Projection],
    from: LogCursor,
    reach: Reach,
    events: &mut u64,
) -> Result<LogCursor, ReplayError> {
    let mut cursor = from;
    while let Some((last, applied)) = apply_batch(tx, projections, cursor, reach).await? {
        cursor = last;
        *events += applied;
    }
    Ok(cursor)
}

fn progress_bar(total: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {human_pos}/{human_len} events, {per_sec}, ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Rebuilds every read model; swaps the result in, or (`verify`) compares.
pub async fn run(db: &Database, verify: bool, show_progress: bool) -> Result<ReplayReport, ReplayError> {
    let projections = warden_projections::all();
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let all: Vec<&dyn Projection> = projections.iter().map(|p| p.as_ref()).collect();
    let started = Instant::now();
    let mut scratch = Scratch::create(db, &projections).await?;
    let outcome = async {
        let total: i64 = scratch
            .connection()
            .query_one("SELECT count(*) FROM events", &[])
            .await?
            .get(0);
        let progress = progress_bar(total as u64, show_progress);
        // A reader on its own connection reads and decodes the next batch
        // while this one is applied.
        let (batches, mut next_batch) = tokio::sync::mpsc::channel(2);
        let reader = tokio::spawn(read_ahead(db.clone(), batches));
        let mut rebuilt_to = LogCursor::START;
        let mut events = 0;
        while let Some(batch) = next_batch.recv().await {
            let batch = batch?;
            let Some(last) = batch.last().map(RecordedEvent::cursor) else {
                break;
            };
            let tx = scratch.connection().transaction().await?;
            // A rebuild lost in a crash is simply started again.
            tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
            apply_pipelined(&tx, &all, &batch).await?;
            tx.commit().await?;
            rebuilt_to = last;
            events += batch.len() as u64;
            progress.inc(batch.len() as u64);
        }
        drop(next_batch);
        reader.await.expect("the log reader does not panic");

        let schema = scratch.schema.clone();
        let connection = scratch.connection();
        let tx = connection.transaction().await?;
        let tables: Vec<String> = projections
            .iter()
            .flat_map(|p| p.tables().iter().map(|t| format!("public.{t}")))
            .collect();
        tx.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", tables.join(", ")))
            .await?;
        tx.execute(
            "SELECT name FROM public.projection_checkpoints WHERE name = ANY($1) FOR UPDATE",
            &[&names],
        )
        .await?;
        let mut differences = Vec::new();
        // Up to the horizon: where the projectors' checkpoints may be set.
        let end = catch_up(&tx, &all, rebuilt_to, Reach::Horizon, &mut events).await?;
        // Then what the live tables also show: every committed event.
        catch_up(&tx, &all, end, Reach::Committed, &mut events).await?;
        if verify {
            for projection in &projections {
                for table in projection.tables() {
                    if let Some(difference) = compare(&tx, &schema, table).await? {
                        differences.push(difference);
                    }
                }
            }
            tx.rollback().await?;
        } else {
            for projection in &projections {
                for table in projection.tables() {
                    tx.batch_execute(&format!(
                        "DELETE FROM public.{table}; INSERT INTO public.{table} SELECT * FROM {schema}.{table};"
                    ))
                    .await?;
                }
                save_checkpoint(&tx, projection.name(), end).await?;
            }
            tx.commit().await?;
        }
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        Ok::<_, ReplayError>(ReplayReport {
            events,
            seconds,
            events_per_second: events as f64 / seconds.max(1e-9),
            differences,
        })
    }
    .await;
    scratch.drop_schema().await?;
    outcome
}

/// Rows that differ between the live table and its rebuilt twin.
async fn compare<C: GenericClient>(
    client: &C,
    schema: &str,
    table: &str,
) -> Result<Option<TableDifference>, ReplayError> {
    let count = |from: &str, minus: &str| {
        format!("SELECT count(*) FROM (SELECT * FROM {from} EXCEPT ALL SELECT * FROM {minus}) d")
    };
    let live = format!("public.{table}");
    let rebuilt = format!("{schema}.{table}");
    let only_live: i64 = client.query_one(&count(&live, &rebuilt), &[]).await?.get(0);
    let only_rebuilt: i64 = client.query_one(&count(&rebuilt, &live), &[]).await?.get(0);
    if only_live == 0 && only_rebuilt == 0 {
        return Ok(None);
    }
    let examples = client
        .query(
            &format!(
                "(SELECT 'live: ' || row_to_json(d)::text FROM (SELECT * FROM {live} EXCEPT ALL SELECT * FROM {rebuilt}) d LIMIT 3)
                 UNION ALL
                 (SELECT 'rebuilt: ' || row_to_json(d)::text FROM (SELECT * FROM {rebuilt} EXCEPT ALL SELECT * FROM {live}) d LIMIT 3)"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(Some(TableDifference {
        table: table.to_owned(),
        only_live,
        only_rebuilt,
        examples,
    }))
}

//! `warden replay`: rebuild every read model from the log, then swap the
//! rebuilt rows in without downtime for readers; `--verify`: rebuild into
//! scratch tables and report every difference from the live read models.
//!
//! 1. Scratch tables: unlogged copies of the read-model tables, without
//!    indexes, in a schema of their own.
//! 2. Fold: the log below the horizon, read in stream order, is folded in
//!    memory stream by stream (`warden_projections::fold`, the projectors'
//!    own changes: one implementation for live and rebuild), and the final
//!    rows are written with `COPY`. A second connection reads and decodes
//!    the next page meanwhile. Then the primary keys are built.
//! 3. The live read models are frozen: their tables are locked in EXCLUSIVE
//!    mode (plain reads go on; appends, which project inline, and the live
//!    projectors wait) and the projectors' checkpoints locked. The scratch
//!    tables catch up, through the projectors' SQL on a connection whose
//!    search path starts with the scratch schema, to every event committed
//!    by then: the live tables show exactly those (inline projection), also
//!    the ones a transaction still open keeps above the log horizon.
//! 4. Replay: in the same transaction the live rows are replaced by the
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
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use warden_events::{LogCursor, RecordedEvent};
use warden_projections::change::Value;
use warden_projections::fold::{FoldError, StreamFold, TableShape};
use warden_projections::Projection;

use crate::log::event_store::{self, Reach, StoreError, StreamCursor};
use crate::log::follower::{save_checkpoint, Fence};
use crate::platform::db::{Connection, Database};

/// Events per page read, and per catch-up batch.
const BATCH: i64 = 5000;
/// Rebuilt rows of one table written per `COPY`.
const COPY_ROWS: usize = 20_000;

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
    /// Seconds each step took, in order (fold, primary keys, catch-up,
    /// swap or compare).
    pub steps: Vec<(&'static str, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("read-model table {0} has no primary key, which the rebuild needs")]
    NoPrimaryKey(String),
    #[error("folding event {position}: {source}")]
    Fold { position: i64, source: FoldError },
}

/// The scratch tables and the connection that owns them.
struct Scratch {
    connection: Option<Connection>,
    schema: String,
    tables: Vec<&'static str>,
}

impl Scratch {
    async fn create(db: &Database, projections: &[&dyn Projection]) -> Result<Scratch, ReplayError> {
        let connection = db.get().await.map_err(StoreError::from)?;
        // Statements cached under another search path would still write to
        // the tables they were prepared for.
        connection.statement_cache.clear();
        let schema = format!("replay_{}", uuid::Uuid::now_v7().simple());
        let tables: Vec<&'static str> = projections.iter().flat_map(|p| p.tables().iter().copied()).collect();
        let mut sql = format!("CREATE SCHEMA {schema};");
        for table in &tables {
            // Unlogged and without indexes while the rows are copied in: no
            // WAL and no index upkeep per row. A rebuild lost in a crash is
            // started again; the live tables' other indexes and unique
            // constraints are enforced when the rows are copied over.
            sql.push_str(&format!(
                "CREATE UNLOGGED TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL EXCLUDING INDEXES);"
            ));
        }
        sql.push_str(&format!("SET search_path = {schema}, public;"));
        connection.batch_execute(&sql).await?;
        Ok(Scratch {
            connection: Some(connection),
            schema,
            tables,
        })
    }

    fn connection(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("present until dropped")
    }

    /// Each table's columns and defaults, as the fold needs them, and in
    /// the same order their columns' types, as `COPY` writes them.
    async fn shapes(&mut self) -> Result<(Vec<TableShape>, Vec<Vec<Type>>), ReplayError> {
        let schema = self.schema.clone();
        let (mut shapes, mut column_types) = (Vec::new(), Vec::new());
        for table in self.tables.clone() {
            let columns = self
                .connection()
                .query(
                    "SELECT a.attname::text, pg_get_expr(d.adbin, d.adrelid)
                     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                     WHERE a.attrelid = ('public.' || quote_ident($1))::regclass AND a.attnum > 0
                       AND NOT a.attisdropped
                     ORDER BY a.attnum",
                    &[&table],
                )
                .await?;
            let names: Vec<String> = columns.iter().map(|row| row.get(0)).collect();
            let quoted: Vec<String> = names.iter().map(|name| format!("\"{name}\"")).collect();
            let connection = self.connection();
            let typed = connection
                .prepare(&format!("SELECT {} FROM {schema}.{table}", quoted.join(", ")))
                .await?;
            let types: Vec<Type> = typed.columns().iter().map(|c| c.type_().clone()).collect();
            // The defaults, evaluated once in their columns' types.
            let casts: Vec<String> = columns
                .iter()
                .zip(&types)
                .map(|(row, ty)| {
                    let default: Option<String> = row.get(1);
                    format!("CAST({} AS {})", default.as_deref().unwrap_or("NULL"), ty.name())
                })
                .collect();
            let row = connection
                .query_one(&format!("SELECT {}", casts.join(", ")), &[])
                .await?;
            let defaults = (0..names.len())
                .map(|i| row.try_get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()?;
            shapes.push(TableShape {
                name: table.to_owned(),
                columns: names,
                defaults,
            });
            column_types.push(types);
        }
        Ok((shapes, column_types))
    }

    /// The primary keys, built once the rows are in (the catch-up and
    /// the swap find rows by them).
    async fn add_primary_keys(&mut self) -> Result<(), ReplayError> {
        let schema = self.schema.clone();
        let mut sql = String::new();
        for table in self.tables.clone() {
            let primary_key = primary_key_columns(self.connection(), table).await?;
            sql.push_str(&format!(
                "ALTER TABLE {schema}.{table} ADD PRIMARY KEY ({primary_key});"
            ));
        }
        self.connection().batch_execute(&sql).await?;
        Ok(())
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

/// A page of the log being decoded on a task of its own.
type Decoding = tokio::task::JoinHandle<Result<Vec<RecordedEvent>, StoreError>>;

/// Sends the log below `horizon` page by page in stream order, then an
/// empty page; stops early if the receiver is gone. Each page is decoded
/// on a task of its own while the next one is fetched, so pages decode on
/// every core; the receiver awaits them in order.
async fn read_ahead(db: Database, horizon: i64, pages: tokio::sync::mpsc::Sender<Decoding>) {
    let ready = |outcome| tokio::spawn(async move { outcome });
    let connection = match db.get().await {
        Ok(connection) => std::sync::Arc::new(connection),
        Err(error) => {
            let _ = pages.send(ready(Err(error.into()))).await;
            return;
        }
    };
    let mut after = StreamCursor::default();
    loop {
        let page = match event_store::rows_in_stream_order(&*connection, &after, horizon, BATCH).await {
            Ok(page) => page,
            Err(error) => {
                let _ = pages.send(ready(Err(error))).await;
                return;
            }
        };
        let Some(last) = page.last.clone() else {
            let _ = pages.send(ready(Ok(Vec::new()))).await;
            return;
        };
        after = last;
        // Decoding reads the personal-data keys on the same connection.
        let decoding = {
            let connection = connection.clone();
            tokio::spawn(async move { page.decode(&*connection).await })
        };
        if pages.send(decoding).await.is_err() {
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

/// Rebuilt rows waiting for their `COPY`, per table; full batches go to a
/// copier on a connection of its own, so folding goes on meanwhile.
struct CopyBuffers {
    rows: Vec<Vec<Vec<Value>>>,
    copier: tokio::sync::mpsc::Sender<(usize, Vec<Vec<Value>>)>,
}

impl CopyBuffers {
    /// Stops at the first failed `COPY` (the handle returns it).
    fn start(
        db: &Database,
        schema: String,
        shapes: std::sync::Arc<[TableShape]>,
        column_types: Vec<Vec<Type>>,
    ) -> (Self, tokio::task::JoinHandle<Result<(), ReplayError>>) {
        let rows = shapes.iter().map(|_| Vec::new()).collect();
        let (copier, mut batches) = tokio::sync::mpsc::channel::<(usize, Vec<Vec<Value>>)>(2);
        let db = db.clone();
        let handle = tokio::spawn(async move {
            let mut connection = db.get().await.map_err(StoreError::from)?;
            while let Some((table, rows)) = batches.recv().await {
                copy_in(&mut connection, &schema, &shapes[table], &column_types[table], &rows).await?;
            }
            Ok(())
        });
        (CopyBuffers { rows, copier }, handle)
    }

    /// Takes the folded stream's final rows, leaving the fold empty.
    fn take_from(&mut self, fold: &mut StreamFold<'_>) {
        for (table, row) in fold.finish() {
            self.rows[table].push(row);
        }
    }

    /// Hands over the tables with at least `at_least` rows waiting; false
    /// if the copier stopped (its handle says why).
    async fn flush(&mut self, at_least: usize) -> bool {
        for (table, rows) in self.rows.iter_mut().enumerate() {
            if !rows.is_empty() && rows.len() >= at_least {
                let batch = std::mem::take(rows);
                if self.copier.send((table, batch)).await.is_err() {
                    return false;
                }
            }
        }
        true
    }
}

/// Writes `rows` into the scratch copy of `shape`'s table.
async fn copy_in(
    connection: &mut Connection,
    schema: &str,
    shape: &TableShape,
    types: &[Type],
    rows: &[Vec<Value>],
) -> Result<(), ReplayError> {
    let columns: Vec<String> = shape.columns.iter().map(|name| format!("\"{name}\"")).collect();
    let tx = connection.transaction().await?;
    // A rebuild lost in a crash is simply started again.
    tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
    let sink = tx
        .copy_in(&format!(
            "COPY {schema}.{} ({}) FROM STDIN (FORMAT binary)",
            shape.name,
            columns.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    futures_util::pin_mut!(writer);
    let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(types.len());
    for row in rows {
        values.clear();
        values.extend(row.iter().map(|value| value as &(dyn ToSql + Sync)));
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await?;
    tx.commit().await?;
    Ok(())
}

/// Folds the log below `horizon` into the scratch tables; returns where
/// it ended in delivery order and how many events it folded.
async fn fold_log(
    db: &Database,
    scratch: &mut Scratch,
    projections: &[&dyn Projection],
    horizon: i64,
    progress: &ProgressBar,
    steps: &mut Vec<(&'static str, f64)>,
) -> Result<(LogCursor, u64), ReplayError> {
    let (shapes, column_types) = scratch.shapes().await?;
    let shapes: std::sync::Arc<[TableShape]> = shapes.into();
    let (mut buffers, copier) = CopyBuffers::start(db, scratch.schema.clone(), shapes.clone(), column_types);
    let mut fold = StreamFold::new(&shapes);
    let (pages, mut next_page) = tokio::sync::mpsc::channel(2);
    let reader = tokio::spawn(read_ahead(db.clone(), horizon, pages));
    let mut stream: Option<String> = None;
    let mut rebuilt_to = LogCursor::START;
    let mut events = 0;
    // Where the time goes: waiting for decoded pages, folding, copying.
    let (mut waiting, mut folding, mut copying) = (0.0, 0.0, 0.0);
    let mut clock = Instant::now();
    let mut lap = |total: &mut f64| {
        *total += clock.elapsed().as_secs_f64();
        clock = Instant::now();
    };
    while let Some(decoding) = next_page.recv().await {
        let page = decoding.await.expect("decoding a page does not panic");
        lap(&mut waiting);
        let page = page?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            if stream.as_deref() != Some(event.stream_id.as_str()) {
                // The previous stream's rows are final.
                buffers.take_from(&mut fold);
                stream = Some(event.stream_id.as_str().to_owned());
            }
            for projection in projections {
                for change in projection.changes(event) {
                    fold.apply(change).map_err(|source| ReplayError::Fold {
                        position: event.position,
                        source,
                    })?;
                }
            }
            rebuilt_to = rebuilt_to.max(event.cursor());
        }
        events += page.len() as u64;
        progress.inc(page.len() as u64);
        lap(&mut folding);
        if !buffers.flush(COPY_ROWS).await {
            break;
        }
        lap(&mut copying);
    }
    drop(next_page);
    reader.await.expect("the log reader does not panic");
    buffers.take_from(&mut fold);
    buffers.flush(1).await;
    drop(buffers);
    copier.await.expect("the copier does not panic")?;
    lap(&mut copying);
    steps.extend([
        ("fold: waiting for the log", waiting),
        ("fold: folding", folding),
        ("fold: handing rows to the copier, the last copy", copying),
    ]);
    Ok((rebuilt_to, events))
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
/// each stream's events stay in order.
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

/// How long each step of a rebuild took.
struct Steps {
    list: Vec<(&'static str, f64)>,
    started: Instant,
}

impl Steps {
    fn start() -> Self {
        Steps {
            list: Vec::new(),
            started: Instant::now(),
        }
    }

    fn done(&mut self, name: &'static str) {
        self.list.push((name, self.started.elapsed().as_secs_f64()));
        self.started = Instant::now();
    }
}

/// Rebuilds every read model; swaps the result in, or (`verify`) compares.
pub async fn run(db: &Database, verify: bool, show_progress: bool) -> Result<ReplayReport, ReplayError> {
    let projections = warden_projections::all();
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let started = Instant::now();
    let mut scratch = Scratch::create(db, projections).await?;
    let outcome = async {
        let total: i64 = scratch
            .connection()
            .query_one("SELECT count(*) FROM events", &[])
            .await?
            .get(0);
        let progress = progress_bar(total as u64, show_progress);
        let horizon = event_store::log_horizon(scratch.connection()).await?;
        let mut steps = Steps::start();
        let (rebuilt_to, mut events) =
            fold_log(db, &mut scratch, projections, horizon, &progress, &mut steps.list).await?;
        steps.done("fold and copy");
        scratch.add_primary_keys().await?;
        steps.done("primary keys");

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
        let end = catch_up(&tx, projections, rebuilt_to, Reach::Horizon, &mut events).await?;
        // Then what the live tables also show: every committed event.
        catch_up(&tx, projections, end, Reach::Committed, &mut events).await?;
        steps.done("lock and catch up");
        if verify {
            for projection in projections {
                for table in projection.tables() {
                    if let Some(difference) = compare(&tx, &schema, table).await? {
                        differences.push(difference);
                    }
                }
            }
            tx.rollback().await?;
            steps.done("compare");
        } else {
            for projection in projections {
                for table in projection.tables() {
                    swap_in(&tx, &schema, table).await?;
                }
                save_checkpoint(&tx, projection.name(), end, Fence::Unconditional).await?;
            }
            tx.commit().await?;
            steps.done("swap");
        }
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        Ok::<_, ReplayError>(ReplayReport {
            events,
            seconds,
            events_per_second: events as f64 / seconds.max(1e-9),
            differences,
            steps: steps.list,
        })
    }
    .await;
    scratch.drop_schema().await?;
    outcome
}

/// Makes the live `table` equal its rebuilt twin, writing only the rows
/// that differ: a live table that was right (the usual case) is not
/// rewritten, its indexes not touched, and it does not bloat. Live rows
/// the rebuild does not have exactly are deleted first, so a value moving
/// between rows (a token hash) meets no unique index on the way in.
async fn swap_in<C: GenericClient>(client: &C, schema: &str, table: &str) -> Result<(), ReplayError> {
    let live_is_empty: bool = client
        .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM public.{table})"), &[])
        .await?
        .get(0);
    if live_is_empty {
        return fill_empty(client, schema, table).await;
    }
    client
        .batch_execute(&format!(
            "DELETE FROM public.{table} l WHERE NOT EXISTS (
                 SELECT 1 FROM {schema}.{table} r WHERE r.id = l.id AND ROW(r.*) IS NOT DISTINCT FROM ROW(l.*));
             INSERT INTO public.{table} SELECT r.* FROM {schema}.{table} r
                 WHERE NOT EXISTS (SELECT 1 FROM public.{table} l WHERE l.id = r.id);"
        ))
        .await?;
    Ok(())
}

/// Fills the empty live `table` with its rebuilt twin, building its
/// secondary indexes once after the rows instead of row by row (the
/// swap's cost in a replay into empty read models: a restore, a reset).
/// Indexes that back a constraint stay; the others are dropped and made
/// again from their own definitions, in this transaction (a failure rolls
/// the drop back too). Takes the table's ACCESS EXCLUSIVE lock: its
/// readers, who would have found it empty, wait for the commit instead.
async fn fill_empty<C: GenericClient>(client: &C, schema: &str, table: &str) -> Result<(), ReplayError> {
    let indexes = client
        .query(
            "SELECT 'public.' || quote_ident(c.relname), pg_get_indexdef(i.indexrelid)
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = $1::text::regclass
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            &[&format!("public.{table}")],
        )
        .await?;
    for index in &indexes {
        client
            .batch_execute(&format!("DROP INDEX {}", index.get::<_, &str>(0)))
            .await?;
    }
    client
        .batch_execute(&format!(
            "INSERT INTO public.{table} SELECT r.* FROM {schema}.{table} r"
        ))
        .await?;
    for index in &indexes {
        client.batch_execute(index.get::<_, &str>(1)).await?;
    }
    Ok(())
}

/// Rows that differ between the live table and its rebuilt twin: one
/// full join on the primary key (`id`), rows compared whole.
async fn compare<C: GenericClient>(
    client: &C,
    schema: &str,
    table: &str,
) -> Result<Option<TableDifference>, ReplayError> {
    let differing = format!(
        "FROM public.{table} l FULL JOIN {schema}.{table} r ON l.id = r.id
         WHERE l.id IS NULL OR r.id IS NULL OR ROW(l.*) IS DISTINCT FROM ROW(r.*)"
    );
    let counts = client
        .query_one(&format!("SELECT count(l.id), count(r.id) {differing}"), &[])
        .await?;
    let (only_live, only_rebuilt): (i64, i64) = (counts.get(0), counts.get(1));
    if only_live == 0 && only_rebuilt == 0 {
        return Ok(None);
    }
    let examples = client
        .query(
            &format!(
                "SELECT e FROM (SELECT l, r {differing} LIMIT 3) d,
                 LATERAL (VALUES ('live: ' || row_to_json(d.l)::text), ('rebuilt: ' || row_to_json(d.r)::text)) v (e)
                 WHERE e IS NOT NULL"
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

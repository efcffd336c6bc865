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

pub mod chain;
pub mod claims;
mod pii;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warden_events::codec::{self, DecodeError};
use warden_events::{Event, LogCursor, Metadata, RecordedEvent, StreamId};

use crate::platform::db::{self, Connection, Database, DbError};

/// Channel on which instances tell each other about appends.
pub const APPEND_CHANNEL: &str = "warden_events";
/// Channel a leading projector notifies after moving its checkpoint, so
/// that commands waiting on other instances wake at once.
pub const CHECKPOINT_CHANNEL: &str = "warden_checkpoints";
/// Shortest pause between two notifications from one instance.
const NOTIFY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

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

/// The version a stream must be at for an append to succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedVersion(pub i64);

impl ExpectedVersion {
    /// The stream must not exist yet.
    pub const NO_STREAM: ExpectedVersion = ExpectedVersion(0);
}

/// What an append wrote.
#[derive(Clone, Debug)]
pub struct Appended {
    pub stream_id: StreamId,
    /// Version of the stream after the append.
    pub version: i64,
    /// Delivery-order position of the last event written; projections
    /// that reached it have seen every event of this append.
    pub cursor: LogCursor,
    pub event_ids: Vec<Uuid>,
}

/// Appends `events` to `stream` inside the caller's transaction, and
/// applies them to the read models in the same transaction (inline
/// projection, `warden_projections::inline_changes`): once it commits,
/// every read model shows the change, on every instance reading this
/// database.
///
/// The caller commits, then calls [`EventStore::signal_append`]. `expected`
/// must come from state loaded before the transaction's first write (see
/// the module docs). Fails with [`StoreError::Conflict`] when the stream is
/// not at `expected`; the transaction is then aborted and must be rolled
/// back.
pub async fn append_in<C: GenericClient>(
    tx: &C,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<Event>,
    metadata: &Metadata,
) -> Result<Appended, StoreError> {
    let staged = StagedAppend::stage(tx, stream, expected, events, metadata).await?;
    staged.write(tx, Finish::LeaveOpen).await
}

/// A pooled connection in a transaction begun with a plain `BEGIN`.
/// Dropped before [`Self::ended`] (an error that left the transaction in
/// an unknown state, or a caller that stopped waiting, such as an HTTP
/// client that went away), the connection is closed, which aborts the
/// transaction, instead of going back to the pool with it open.
struct OpenedByHand(Option<Connection>);

impl OpenedByHand {
    fn client(&self) -> &Connection {
        self.0.as_ref().expect("present until dropped")
    }

    /// The transaction is over: the connection may serve others.
    fn ended(mut self) {
        drop(self.0.take());
    }
}

impl Drop for OpenedByHand {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            drop(deadpool_postgres::Object::take(connection));
        }
    }
}

/// How [`StagedAppend::write`] ends the transaction it writes in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// The caller goes on in the transaction and commits it.
    LeaveOpen,
    /// `COMMIT` goes out right behind the writes, in the same round trip.
    /// Safe because every failure aborts the transaction in PostgreSQL
    /// (the version guard raises instead of inserting nothing), so the
    /// COMMIT then only rolls it back.
    CommitBehind,
}

/// An append with everything that needs an answer from the database done
/// (claims taken, personal data sealed, statements prepared): what is
/// left are writes that can all be sent at once.
struct StagedAppend {
    stream: StreamId,
    expected: ExpectedVersion,
    event_ids: Vec<Uuid>,
    types: Vec<&'static str>,
    versions: Vec<i32>,
    payloads: Vec<serde_json::Value>,
    content_hashes: Vec<Vec<u8>>,
    metadata_json: serde_json::Value,
    recorded_at: DateTime<Utc>,
    /// The events as the read models get them (in clear).
    projected: Vec<RecordedEvent>,
    /// Subjects whose key the append destroys.
    forgotten: Vec<Uuid>,
    insert: tokio_postgres::Statement,
    destroy_key: Option<tokio_postgres::Statement>,
}

impl StagedAppend {
    async fn stage<C: GenericClient>(
        tx: &C,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<Event>,
        metadata: &Metadata,
    ) -> Result<StagedAppend, StoreError> {
        assert!(!events.is_empty(), "appending no events is a caller bug");
        // `kept`: the metadata as a reader of the log will see it (unsealed).
        let (metadata_json, kept) = match pii::address_subject(metadata, &events) {
            Some(subject) => match pii::key_for_sealing(tx, subject).await {
                Ok(key) => (
                    serde_json::to_value(pii::seal_address(metadata, subject, &key)),
                    metadata.clone(),
                ),
                // The acting user was just deleted (e.g. the cancellations of
                // their own deletion): their address is not to be kept at all.
                Err(StoreError::SubjectForgotten(_)) => {
                    let kept = Metadata {
                        source_ip: None,
                        ..metadata.clone()
                    };
                    (serde_json::to_value(&kept), kept)
                }
                Err(other) => return Err(other),
            },
            None => (serde_json::to_value(metadata), metadata.clone()),
        };
        let metadata_json = metadata_json.expect("metadata always serialises");
        let mut event_ids = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        let mut versions = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        let mut content_hashes: Vec<Vec<u8>> = Vec::with_capacity(events.len());
        let mut forgotten = Vec::new();
        let recorded_at = chain::storable_now();
        let mut projected = Vec::with_capacity(events.len());
        for event in events {
            claims::apply(tx, stream, &event).await?;
            // The log keeps the sealed copy; the read models get the clear
            // one, as a reader of the log would unseal it.
            let sealed = match event.pii_subject() {
                Some(subject) => {
                    let key = pii::key_for_sealing(tx, subject).await?;
                    let mut sealed = event.clone();
                    pii::seal(&mut sealed, subject, &key);
                    Some(sealed)
                }
                None => None,
            };
            if let Some(subject) = event.forgets_subject() {
                forgotten.push(subject);
            }
            let encoded = codec::encode(sealed.as_ref().unwrap_or(&event));
            let event_id = Uuid::now_v7();
            let stream_version = expected.0 + event_ids.len() as i64 + 1;
            content_hashes.push(
                chain::content_hash(
                    stream.as_str(),
                    stream_version,
                    event_id,
                    encoded.event_type,
                    encoded.schema_version as i32,
                    &encoded.payload,
                    &metadata_json,
                    recorded_at,
                )
                .to_vec(),
            );
            event_ids.push(event_id);
            types.push(encoded.event_type);
            versions.push(encoded.schema_version as i32);
            payloads.push(encoded.payload);
            // Positions are not known yet; projectors do not use them (see
            // `Projection::changes`).
            projected.push(RecordedEvent {
                position: 0,
                transaction_id: 0,
                stream_id: stream.clone(),
                stream_version,
                event_id,
                recorded_at,
                metadata: kept.clone(),
                event,
            });
        }

        // The unique (stream_id, stream_version) constraint refuses a
        // concurrent or stale writer; the guard refuses gaps (expected
        // ahead of the stream) by raising, so that no failure leaves the
        // transaction able to commit. `chain` links each event's hash to
        // the one before it in the stream (see chain.rs), inside this one
        // statement.
        let insert = tx
            .prepare_cached(
                "WITH RECURSIVE input AS (
                     SELECT * FROM unnest($3::uuid[], $4::text[], $5::int4[], $6::jsonb[], $8::bytea[])
                         WITH ORDINALITY AS e(id, typ, ver, payload, content, ord)
                 ), chain (ord, hash) AS (
                     SELECT i.ord, sha256(coalesce(
                                (SELECT hash FROM events WHERE stream_id = $1 AND stream_version = $2), ''::bytea)
                            || i.content)
                     FROM input i WHERE i.ord = 1
                     UNION ALL
                     SELECT i.ord, sha256(c.hash || i.content)
                     FROM chain c JOIN input i ON i.ord = c.ord + 1
                 )
                 INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata,
                                     recorded_at, hash)
                 SELECT $1, $2 + i.ord, i.id, i.typ, i.ver, i.payload, $7, $9, c.hash
                 FROM input i JOIN chain c ON c.ord = i.ord
                 WHERE CASE WHEN (SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1) = $2
                            THEN true
                            ELSE warden_refuse_append($1, $2) END
                 ORDER BY i.ord
                 RETURNING position, transaction_id",
            )
            .await?;
        let destroy_key = match forgotten.is_empty() {
            true => None,
            false => Some(tx.prepare_cached(pii::DESTROY_KEY).await?),
        };
        Ok(StagedAppend {
            stream: stream.clone(),
            expected,
            event_ids,
            types,
            versions,
            payloads,
            content_hashes,
            metadata_json,
            recorded_at,
            projected,
            forgotten,
            insert,
            destroy_key,
        })
    }

    /// Sends the INSERT, the read models' changes and the key destructions
    /// (and, with [`Finish::CommitBehind`], COMMIT) together: one round
    /// trip once the connection has prepared these statements before.
    async fn write<C: GenericClient>(self, tx: &C, finish: Finish) -> Result<Appended, StoreError> {
        let changes: Vec<warden_projections::change::Change> = self
            .projected
            .iter()
            .flat_map(warden_projections::inline_changes)
            .collect();
        let prepared = warden_projections::change::prepare_changes(tx, &changes).await?;
        let stream = &self.stream;
        let expected = self.expected;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
            &stream.as_str(),
            &expected.0,
            &self.event_ids,
            &self.types,
            &self.versions,
            &self.payloads,
            &self.metadata_json,
            &self.content_hashes,
            &self.recorded_at,
        ];
        let insert = async {
            tx.query(&self.insert, &params)
                .await
                .map_err(|error| conflict_or(error, stream, expected))
        };
        let project = async { Ok(warden_projections::change::execute_prepared(tx, &prepared).await?) };
        let destroy_keys = async {
            let Some(destroy) = &self.destroy_key else {
                return Ok(());
            };
            futures_util::future::try_join_all(self.forgotten.iter().map(|subject| async move {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [subject];
                tx.execute(destroy, &params).await
            }))
            .await?;
            Ok::<_, StoreError>(())
        };
        // Every one of these futures sends its statements on its first
        // poll, in this order; an encoding error shows on that poll too.
        let mut writes = std::pin::pin!(futures_util::future::try_join3(insert, project, destroy_keys));
        let written = match finish {
            Finish::LeaveOpen => writes.await,
            Finish::CommitBehind => match futures_util::poll!(writes.as_mut()) {
                // Not sent in full: no COMMIT.
                std::task::Poll::Ready(Err(error)) => {
                    tx.batch_execute("ROLLBACK").await?;
                    return Err(error);
                }
                std::task::Poll::Ready(Ok(written)) => {
                    tx.batch_execute("COMMIT").await?;
                    Ok(written)
                }
                std::task::Poll::Pending => {
                    let (written, committed) = futures_util::future::join(writes, tx.batch_execute("COMMIT")).await;
                    // A failed write aborted the transaction: COMMIT rolled it back.
                    let written = written?;
                    committed?;
                    Ok(written)
                }
            },
        };
        let (rows, (), ()) = written?;
        if rows.len() != self.event_ids.len() {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected: expected.0,
            });
        }
        let last = rows
            .iter()
            .map(|row| LogCursor {
                position: row.get(0),
                transaction_id: row.get(1),
            })
            .max()
            .expect("one row per event");
        Ok(Appended {
            stream_id: stream.clone(),
            version: expected.0 + self.event_ids.len() as i64,
            cursor: last,
            event_ids: self.event_ids.clone(),
        })
    }
}

/// The SQLSTATE of `warden_refuse_append` (migration V18): the stream is
/// not at the expected version.
const APPEND_REFUSED: &str = "WA409";

fn conflict_or(error: tokio_postgres::Error, stream: &StreamId, expected: ExpectedVersion) -> StoreError {
    let is_version_clash = error.as_db_error().is_some_and(|db| {
        (db.code() == &SqlState::UNIQUE_VIOLATION && db.constraint() == Some("events_stream_version_unique"))
            || db.code().code() == APPEND_REFUSED
    });
    if is_version_clash {
        StoreError::Conflict {
            stream: stream.clone(),
            expected: expected.0,
        }
    } else {
        error.into()
    }
}

pub(crate) const SELECT_EVENTS: &str = "SELECT position, transaction_id, stream_id, stream_version, event_id,
                                    event_type, schema_version, payload, metadata, recorded_at
                             FROM events";

/// Every event of one stream, oldest first.
pub async fn read_stream<C: GenericClient>(client: &C, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
    read_stream_after(client, stream, 0).await
}

/// The events of one stream after its version `after`, oldest first.
pub async fn read_stream_after<C: GenericClient>(
    client: &C,
    stream: &StreamId,
    after: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let select = client
        .prepare_cached(&format!(
            "{SELECT_EVENTS} WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version"
        ))
        .await?;
    let rows = client.query(&select, &[&stream.as_str(), &after]).await?;
    decode_rows(client, rows).await
}

/// Up to `limit` events after `after` in delivery order, only from
/// transactions that can no longer add events before them.
pub async fn read_after<C: GenericClient>(
    client: &C,
    after: LogCursor,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    read_reaching(client, after, limit, Reach::Horizon).await
}

/// Where a read in stream order stopped: the last stream and its version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamCursor {
    pub stream_id: String,
    pub stream_version: i64,
}

/// Stored rows of the log, not decoded yet, and where they end.
pub struct StoredPage {
    rows: Vec<Row>,
    pub last: Option<StreamCursor>,
}

impl StoredPage {
    pub async fn decode<C: GenericClient>(self, client: &C) -> Result<Vec<RecordedEvent>, StoreError> {
        decode_rows(client, self.rows).await
    }
}

/// Up to `limit` events after `after` in stream order (each stream's
/// events together, oldest first), only from transactions below
/// `horizon` (a [`log_horizon`] value: all of them committed). A rebuild
/// reads this way because each stream then folds into its final rows on
/// its own; pages are keyed, so no transaction stays open between them.
/// The page is decoded separately ([`StoredPage::decode`]): a reader can
/// ask for the next page first.
pub async fn rows_in_stream_order<C: GenericClient>(
    client: &C,
    after: &StreamCursor,
    horizon: i64,
    limit: i64,
) -> Result<StoredPage, StoreError> {
    let select = client
        .prepare_cached(&format!(
            "{SELECT_EVENTS}
             WHERE (stream_id, stream_version) > ($1, $2) AND transaction_id < $3
             ORDER BY stream_id, stream_version
             LIMIT $4"
        ))
        .await?;
    let rows = client
        .query(&select, &[&after.stream_id, &after.stream_version, &horizon, &limit])
        .await?;
    let last = rows.last().map(|row| StreamCursor {
        stream_id: row.get("stream_id"),
        stream_version: row.get("stream_version"),
    });
    Ok(StoredPage { rows, last })
}

/// The log horizon now: every event of a transaction below it has
/// committed, and none can still be added there.
pub async fn log_horizon<C: GenericClient>(client: &C) -> Result<i64, StoreError> {
    Ok(client.query_one("SELECT log_horizon()", &[]).await?.get(0))
}

/// Which events a reader reads.
#[derive(Clone, Copy)]
pub enum Reach {
    /// Only from transactions below the log horizon: nothing can still
    /// commit before them (what every follower and checkpoint needs).
    Horizon,
    /// Every event committed now, also those of transactions above the
    /// horizon. Events still to commit below the last one read are then
    /// not read later by a cursor that moved past them: only for a reader
    /// that knows they are projected without it (the replay's swap, which
    /// holds the read-model tables locked: such appends project themselves
    /// inline once it commits).
    Committed,
}

/// [`read_after`], or with [`Reach::Committed`] every committed event.
pub async fn read_reaching<C: GenericClient>(
    client: &C,
    after: LogCursor,
    limit: i64,
    reach: Reach,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = rows_after(client, after, limit, reach).await?;
    decode_rows(client, rows).await
}

/// The stored rows [`read_after`], [`read_entries_after`] and
/// [`read_reaching`] decode.
async fn rows_after<C: GenericClient>(
    client: &C,
    after: LogCursor,
    limit: i64,
    reach: Reach,
) -> Result<Vec<Row>, StoreError> {
    let horizon = match reach {
        Reach::Horizon => "AND transaction_id < log_horizon()",
        Reach::Committed => "",
    };
    let select = client
        .prepare_cached(&format!(
            "{SELECT_EVENTS}
             WHERE (transaction_id, position) > ($1, $2) {horizon}
             ORDER BY transaction_id, position
             LIMIT $3"
        ))
        .await?;
    let rows = client
        .query(&select, &[&after.transaction_id, &after.position, &limit])
        .await?;
    Ok(rows)
}

/// An event of the log this release cannot decode: a type it does not
/// know, or a schema version newer than it knows (written by a newer
/// release during a rolling upgrade).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UnreadableEvent {
    pub cursor: LogCursor,
    pub stream_category: String,
    pub event_type: String,
    pub schema_version: i32,
    pub reason: String,
}

/// One entry of the log in delivery order: an event, or one this release
/// cannot read.
#[derive(Clone, Debug)]
// Events are the common case and live only for one batch: boxing them to
// shrink the rare unreadable variant would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum LogEntry {
    Event(RecordedEvent),
    Unreadable(UnreadableEvent),
}

impl LogEntry {
    pub fn cursor(&self) -> LogCursor {
        match self {
            LogEntry::Event(event) => event.cursor(),
            LogEntry::Unreadable(unreadable) => unreadable.cursor,
        }
    }
}

/// As [`read_after`], but an event this release cannot decode comes back
/// as [`LogEntry::Unreadable`] instead of failing the whole read: each
/// consumer decides whether it may pass it by.
pub async fn read_entries_after<C: GenericClient>(
    client: &C,
    after: LogCursor,
    limit: i64,
) -> Result<Vec<LogEntry>, StoreError> {
    let rows = rows_after(client, after, limit, Reach::Horizon).await?;
    let mut entries = Vec::with_capacity(rows.len());
    let mut readable = Vec::new();
    for row in rows {
        match decode_row(&row) {
            Ok(event) => {
                entries.push(None);
                readable.push(event);
            }
            Err(StoreError::Decode { position, source }) => {
                let stream: String = row.get("stream_id");
                entries.push(Some(UnreadableEvent {
                    cursor: LogCursor {
                        transaction_id: row.get("transaction_id"),
                        position,
                    },
                    stream_category: StreamId::from_stored(stream).category().to_owned(),
                    event_type: row.get("event_type"),
                    schema_version: row.get("schema_version"),
                    reason: source.to_string(),
                }))
            }
            Err(other) => return Err(other),
        }
    }
    let mut readable = unseal_all(client, readable).await?.into_iter();
    Ok(entries
        .into_iter()
        .map(|entry| match entry {
            Some(unreadable) => LogEntry::Unreadable(unreadable),
            None => LogEntry::Event(readable.next().expect("one decoded event per readable row")),
        })
        .collect())
}

pub(crate) async fn decode_rows<C: GenericClient>(
    client: &C,
    rows: Vec<Row>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let events = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
    unseal_all(client, events).await
}

/// Opens the sealed personal data of `events` with their subjects' keys.
async fn unseal_all<C: GenericClient>(
    client: &C,
    mut events: Vec<RecordedEvent>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let subjects: Vec<Uuid> = events
        .iter()
        .flat_map(|e| [e.event.pii_subject(), pii::sealed_address_subject(&e.metadata)])
        .flatten()
        .collect();
    let keys = pii::keys_for_reading(client, subjects).await?;
    for recorded in &mut events {
        pii::unseal_address(&mut recorded.metadata, &keys);
        if !pii::unseal(&mut recorded.event, &keys) {
            return Err(StoreError::CorruptPii {
                position: recorded.position,
            });
        }
    }
    Ok(events)
}

fn decode_row(row: &Row) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.get("position");
    let event_type: &str = row.get("event_type");
    let schema_version: i32 = row.get("schema_version");
    let recorded_at: DateTime<Utc> = row.get("recorded_at");
    let stored = warden_events::upcasters::Stored { recorded_at };
    // A stored value the JSON reader cannot take is an error, never a panic.
    let column = |name: &str| {
        row.try_get::<_, JsonText>(name)
            .map_err(|source| StoreError::Column { position, source })
    };
    let event = codec::decode_json(event_type, schema_version as u32, column("payload")?.0, stored)
        .map_err(|source| StoreError::Decode { position, source })?;
    let metadata: Metadata =
        serde_json::from_slice(column("metadata")?.0).map_err(|source| StoreError::Metadata { position, source })?;
    Ok(RecordedEvent {
        position,
        transaction_id: row.get("transaction_id"),
        stream_id: StreamId::from_stored(row.get("stream_id")),
        stream_version: row.get("stream_version"),
        event_id: row.get("event_id"),
        recorded_at,
        metadata,
        event,
    })
}

/// The JSON text of a `json` or `jsonb` column, borrowed from its row:
/// events decode straight from it (no `serde_json::Value` in between).
struct JsonText<'a>(&'a [u8]);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText<'a> {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == tokio_postgres::types::Type::JSON {
            return Ok(JsonText(raw));
        }
        // jsonb's binary form: a format version (1), then the text.
        match raw.split_first() {
            Some((1, text)) => Ok(JsonText(text)),
            _ => Err("unsupported jsonb format version".into()),
        }
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(
            *ty,
            tokio_postgres::types::Type::JSON | tokio_postgres::types::Type::JSONB
        )
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

    /// Appends in a transaction of its own and commits. BEGIN goes out
    /// with the first statement and COMMIT right behind the writes: one
    /// round trip once the connection has prepared the statements, two
    /// when personal data is sealed (its key must be read first).
    pub async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<Event>,
        metadata: &Metadata,
    ) -> Result<Appended, StoreError> {
        let connection = OpenedByHand(Some(self.db.get().await?));
        let client = connection.client();
        let append = async {
            match StagedAppend::stage(client, stream, expected, events, metadata).await {
                Ok(staged) => (staged.write(client, Finish::CommitBehind).await, true),
                // Still open: roll back. A failed ROLLBACK leaves it open
                // and the connection is closed instead.
                Err(error) => (Err(error), client.batch_execute("ROLLBACK").await.is_ok()),
            }
        };
        // `join` polls BEGIN first: it goes out first.
        let (begun, (appended, ended)) = futures_util::future::join(client.batch_execute("BEGIN"), append).await;
        if ended && begun.is_ok() {
            connection.ended();
        }
        begun?;
        let appended = appended?;
        self.signal_append();
        Ok(appended)
    }

    pub async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream_after(stream, 0).await
    }

    pub async fn read_stream_after(&self, stream: &StreamId, after: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        let connection = self.db.get().await?;
        read_stream_after(&connection, stream, after).await
    }

    /// Tells other instances about this process's appends with `NOTIFY`,
    /// at most once per [`NOTIFY_INTERVAL`]. Not done inside the append:
    /// PostgreSQL serialises the commits of notifying transactions, which
    /// would cost group commit (measured: half the append rate).
    pub fn spawn_append_notifier(&self, cancel: CancellationToken) -> JoinHandle<()> {
        let store = self.clone();
        let mut appends = self.appended_here.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = appends.changed() => if changed.is_err() { return },
                }
                match store.db.get().await {
                    Ok(connection) => {
                        if let Err(error) = connection.batch_execute(&format!("NOTIFY {APPEND_CHANNEL}")).await {
                            tracing::warn!(%error, "could not notify other instances of appends");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not notify other instances of appends"),
                }
                tokio::time::sleep(NOTIFY_INTERVAL).await;
            }
        })
    }

    /// Forwards other instances' append notifications to
    /// [`Self::subscribe_appends`] until `cancel` fires.
    pub fn spawn_append_listener(&self, cancel: CancellationToken) -> JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    outcome = store.listen_for_appends() => if let Err(error) = outcome {
                        tracing::warn!(%error, "lost the append notification channel; retrying");
                    },
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        })
    }

    async fn listen_for_appends(&self) -> Result<(), tokio_postgres::Error> {
        use futures_util::StreamExt;
        let channels = [APPEND_CHANNEL, CHECKPOINT_CHANNEL];
        let Some(db::Listener { client, mut messages }) = self.db.listen(&channels).await? else {
            return Ok(());
        };
        // A question now and then, so that a server that stopped answering
        // fails this connection (and it is made again, to whichever host
        // serves then) instead of leaving it waiting for notifications.
        let mut keepalive = tokio::time::interval(db::LISTENER_KEEPALIVE);
        let mut asking = None;
        loop {
            tokio::select! {
                _ = keepalive.tick(), if asking.is_none() => asking = Some(Box::pin(client.simple_query(""))),
                answer = async { asking.as_mut().expect("asked").await }, if asking.is_some() => {
                    asking = None;
                    answer?;
                }
                message = messages.next() => match message {
                    Some(message) => {
                        if let tokio_postgres::AsyncMessage::Notification(notification) = message? {
                            if notification.channel() == CHECKPOINT_CHANNEL {
                                self.checkpoints_elsewhere
                                    .send_modify(|count| *count = count.wrapping_add(1));
                            } else {
                                self.signal_remote_append();
                            }
                        }
                    }
                    None => return Ok(()),
                },
            }
        }
    }
}

//! Reading: one stream, or the whole log after a cursor without ever
//! skipping an event (the horizon rule in the parent module), unsealing
//! personal data on the way.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;
use warden_events::codec::{self};
use warden_events::{LogCursor, Metadata, RecordedEvent, StreamId};

use super::*;

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

impl EventStore {
    pub async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream_after(stream, 0).await
    }

    pub async fn read_stream_after(&self, stream: &StreamId, after: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        let connection = self.db.get().await?;
        read_stream_after(&connection, stream, after).await
    }
}

//! Appending: optimistic concurrency per stream, inline projection in the
//! append's own transaction, and the hash chain (see the parent module
//! for the ordering rule every append path follows).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::error::SqlState;
use uuid::Uuid;
use warden_events::codec::{self};
use warden_events::{Event, LogCursor, Metadata, RecordedEvent, StreamId};

use crate::platform::db::Connection;

use super::*;

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

impl EventStore {
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
}

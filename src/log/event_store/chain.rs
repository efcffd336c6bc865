//! Tamper evidence: a SHA-256 hash chain per stream.
//!
//! `content` = SHA-256 of an event's canonical bytes (stream, version, id,
//! type, schema version, payload and metadata as canonical JSON, recorded
//! time); `hash` = SHA-256(previous event's hash || content), the first
//! event of a stream having no previous hash. warden computes `content`,
//! PostgreSQL chains it inside the appending INSERT (so it is atomic with
//! the append), and `warden audit verify` recomputes everything from the
//! stored rows, without trusting any stored hash but the one it compares.
//!
//! Limits (see docs/operations.md): someone who can write the table and
//! knows this scheme can recompute every chain after a change; the chain
//! proves consistency, not authenticity. Removing the newest events of a
//! stream, or a whole stream, leaves consistent chains: the anchor (a digest
//! of every stream's head up to a position, kept outside the database)
//! catches that.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::StoreError;

pub type Hash = [u8; 32];

/// The canonical bytes of an event, hashed.
#[allow(clippy::too_many_arguments)]
pub fn content_hash(
    stream_id: &str,
    stream_version: i64,
    event_id: Uuid,
    event_type: &str,
    schema_version: i32,
    payload: &serde_json::Value,
    metadata: &serde_json::Value,
    recorded_at: DateTime<Utc>,
) -> Hash {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(stream_id.as_bytes());
    field(&stream_version.to_be_bytes());
    field(event_id.as_bytes());
    field(event_type.as_bytes());
    field(&schema_version.to_be_bytes());
    // serde_json's maps are sorted: the same value always gives the same
    // bytes, also after a round trip through jsonb.
    field(&serde_json::to_vec(payload).expect("JSON values serialise"));
    field(&serde_json::to_vec(metadata).expect("JSON values serialise"));
    field(&recorded_at.timestamp_micros().to_be_bytes());
    hasher.finalize().into()
}

/// The link: SHA-256(previous || content), as PostgreSQL's `sha256()`
/// computes it in the append.
pub fn link(previous: Option<&[u8]>, content: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    if let Some(previous) = previous {
        hasher.update(previous);
    }
    hasher.update(content);
    hasher.finalize().into()
}

/// Times are stored with microsecond precision; hash what is stored.
pub fn storable_now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).expect("now is representable")
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The stored hash does not match: this event was altered, or one
    /// before it in the stream was altered, removed or reordered.
    HashMismatch {
        stream_id: String,
        stream_version: i64,
        position: i64,
    },
    /// Versions jump: events were removed.
    Gap {
        stream_id: String,
        expected_version: i64,
        found_version: i64,
    },
    /// The anchor taken earlier does not match the log up to its position:
    /// events at the end of a stream, or whole streams, are gone or changed.
    AnchorMismatch { position: i64 },
}

#[derive(Debug, Default, Serialize)]
pub struct Verification {
    pub events: u64,
    pub streams: u64,
    /// Events from before hashing existed (no hash to check).
    pub unhashed: u64,
    pub problems: Vec<Problem>,
    /// `<position>:<hex>` over every stream's head up to `position`.
    pub anchor: String,
}

/// Checks every stream's chain; with `anchor` (as printed by an earlier
/// run), also checks the log up to the anchor's position against it.
pub async fn verify<C: GenericClient>(client: &C, anchor: Option<&str>) -> Result<Verification, StoreError> {
    let anchor_position = match anchor {
        Some(anchor) => Some(parse_anchor(anchor).ok_or_else(|| {
            StoreError::Db(crate::platform::db::DbError::Config(format!(
                "malformed anchor `{anchor}`, expected <position>:<hex>"
            )))
        })?),
        None => None,
    };
    let head_position: i64 = client
        .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
        .await?
        .get(0);
    let mut report = Verification::default();
    // Stream heads for the anchors: (stream, version, hash) at or below a position.
    let mut heads_now: Vec<(String, i64, Vec<u8>)> = Vec::new();
    let mut heads_at_anchor: Vec<(String, i64, Vec<u8>)> = Vec::new();
    let select = client
        .prepare_cached(
            "SELECT stream_id, stream_version, event_id, event_type, schema_version, payload, metadata,
                    recorded_at, hash, position
             FROM events
             WHERE (stream_id, stream_version) > ($1, $2) AND position <= $3
             ORDER BY stream_id, stream_version
             LIMIT 5000",
        )
        .await?;
    let mut after: (String, i64) = (String::new(), 0);
    let mut current: Option<(String, i64, Option<Vec<u8>>)> = None; // stream, version, previous hash
    loop {
        let rows = client.query(&select, &[&after.0, &after.1, &head_position]).await?;
        let Some(last) = rows.last() else { break };
        after = (last.get(0), last.get(1));
        for row in &rows {
            let stream_id: String = row.get(0);
            let version: i64 = row.get(1);
            let position: i64 = row.get(9);
            let stored: Option<Vec<u8>> = row.get(8);
            report.events += 1;
            let new_stream = current.as_ref().is_none_or(|(s, _, _)| *s != stream_id);
            if new_stream {
                report.streams += 1;
                current = Some((stream_id.clone(), 0, None));
            }
            let (_, last_version, previous) = current.as_mut().expect("set above");
            if version != *last_version + 1 {
                report.problems.push(Problem::Gap {
                    stream_id: stream_id.clone(),
                    expected_version: *last_version + 1,
                    found_version: version,
                });
            }
            match &stored {
                None => report.unhashed += 1,
                Some(stored_hash) => {
                    let content = content_hash(
                        &stream_id,
                        version,
                        row.get(2),
                        row.get(3),
                        row.get(4),
                        &row.get(5),
                        &row.get(6),
                        row.get(7),
                    );
                    let expected = link(previous.as_deref(), &content);
                    if stored_hash.as_slice() != expected {
                        report.problems.push(Problem::HashMismatch {
                            stream_id: stream_id.clone(),
                            stream_version: version,
                            position,
                        });
                    }
                }
            }
            *last_version = version;
            *previous = stored.clone();
            let head = (stream_id.clone(), version, stored.clone().unwrap_or_default());
            push_head(&mut heads_now, &head);
            if anchor_position.as_ref().is_some_and(|(p, _)| position <= *p) {
                push_head(&mut heads_at_anchor, &head);
            }
        }
    }
    report.anchor = format!("{head_position}:{}", hex::encode(digest_heads(&heads_now)));
    if let Some((position, expected)) = anchor_position {
        if digest_heads(&heads_at_anchor).as_slice() != expected.as_slice() {
            report.problems.push(Problem::AnchorMismatch { position });
        }
    }
    Ok(report)
}

/// Keeps the newest head per stream (rows arrive ordered by stream, version).
fn push_head(heads: &mut Vec<(String, i64, Vec<u8>)>, head: &(String, i64, Vec<u8>)) {
    match heads.last_mut() {
        Some(last) if last.0 == head.0 => *last = head.clone(),
        _ => heads.push(head.clone()),
    }
}

fn digest_heads(heads: &[(String, i64, Vec<u8>)]) -> Hash {
    let mut hasher = Sha256::new();
    for (stream, version, hash) in heads {
        hasher.update((stream.len() as u64).to_be_bytes());
        hasher.update(stream.as_bytes());
        hasher.update(version.to_be_bytes());
        hasher.update(hash);
    }
    hasher.finalize().into()
}

fn parse_anchor(anchor: &str) -> Option<(i64, Vec<u8>)> {
    let (position, digest) = anchor.split_once(':')?;
    Some((position.parse().ok()?, hex::decode(digest).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_hash_covers_every_field_and_is_canonical() {
        let at = storable_now();
        let id = Uuid::now_v7();
        let base = content_hash(
            "runner-1",
            1,
            id,
            "RunnerCreated",
            1,
            &json!({"b": 1, "a": 2}),
            &json!({}),
            at,
        );
        // Key order does not matter (canonical), values do.
        let reordered: serde_json::Value = serde_json::from_str(r#"{"a": 2, "b": 1}"#).unwrap();
        assert_eq!(
            base,
            content_hash("runner-1", 1, id, "RunnerCreated", 1, &reordered, &json!({}), at)
        );
        assert_ne!(
            base,
            content_hash(
                "runner-1",
                2,
                id,
                "RunnerCreated",
                1,
                &json!({"b": 1, "a": 2}),
                &json!({}),
                at
            )
        );
        assert_ne!(
            base,
            content_hash(
                "runner-1",
                1,
                id,
                "RunnerCreated",
                1,
                &json!({"b": 1, "a": 3}),
                &json!({}),
                at
            )
        );
        assert_ne!(
            base,
            content_hash(
                "runner-1",
                1,
                id,
                "RunnerCreated",
                1,
                &json!({"b": 1, "a": 2}),
                &json!({"x": 1}),
                at
            )
        );
        // Length prefixes: moving bytes between fields changes the hash.
        assert_ne!(
            content_hash("ab", 1, id, "c", 1, &json!(null), &json!(null), at),
            content_hash("a", 1, id, "bc", 1, &json!(null), &json!(null), at)
        );
    }

    #[test]
    fn anchors_parse() {
        assert_eq!(parse_anchor("12:00ff"), Some((12, vec![0, 255])));
        assert_eq!(parse_anchor("nope"), None);
    }
}

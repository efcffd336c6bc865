//! The audit trail: who did what, when, from where and why, read straight
//! from the log; and the state of one runner or user as of a moment
//! ("time travel", folding its stream up to that moment).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use warden_events::{Actor, Pii, RecordedEvent, StreamId};

use crate::domain::runner::Runner;
use crate::domain::user::{Account, User};
use crate::domain::Aggregate;
use crate::log::event_store::{self, StoreError};

/// Fields never shown in the audit trail, even as hashes.
const REDACTED: [&str; 2] = ["password_hash", "token_hash"];
pub const MAX_PAGE: i64 = 1000;

/// Filters of an audit query; all optional, combined with AND.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// A user or runner id, or a system component name.
    pub actor: Option<String>,
    /// A stream (`runner-<id>`) or a bare id (any stream with that id).
    pub stream: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Position to continue after (exclusive), from a previous page.
    pub cursor: Option<i64>,
    pub oldest_first: bool,
    pub limit: i64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub position: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    /// Who.
    pub actor: Actor,
    /// From where.
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    /// Why: the event that caused this one, and the request it belongs to.
    pub causation_id: Option<Uuid>,
    pub correlation_id: Uuid,
    /// What (secrets' hashes redacted; forgotten personal data stays so).
    pub data: Value,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<i64>,
}

/// Streams a `stream` filter may mean.
fn stream_candidates(stream: &str) -> Vec<String> {
    match Uuid::parse_str(stream) {
        Ok(id) => vec![
            StreamId::user(id).to_string(),
            StreamId::runner(id).to_string(),
            StreamId::runner_machine(id).to_string(),
            StreamId::job(id).to_string(),
        ],
        Err(_) => vec![stream.to_owned()],
    }
}

pub async fn query<C: GenericClient>(client: &C, query: &AuditQuery) -> Result<AuditPage, StoreError> {
    let limit = query.limit.clamp(1, MAX_PAGE);
    let streams = query.stream.as_deref().map(stream_candidates);
    let (comparison, order) = if query.oldest_first {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    let sql = format!(
        "{select}
         WHERE ($1::text IS NULL OR coalesce(metadata->'actor'->>'user_id', metadata->'actor'->>'runner_id',
                                             metadata->'actor'->>'component') = $1)
           AND ($2::text[] IS NULL OR stream_id = ANY($2))
           AND ($3::text IS NULL OR event_type = $3)
           AND ($4::timestamptz IS NULL OR recorded_at >= $4)
           AND ($5::timestamptz IS NULL OR recorded_at < $5)
           AND ($6::bigint IS NULL OR position {comparison} $6)
         ORDER BY position {order}
         LIMIT $7",
        select = event_store::SELECT_EVENTS
    );
    let statement = client.prepare_cached(&sql).await?;
    let rows = client
        .query(
            &statement,
            &[
                &query.actor,
                &streams,
                &query.event_type,
                &query.since,
                &query.until,
                &query.cursor,
                &(limit + 1),
            ],
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let rows = rows.into_iter().take(limit as usize).collect();
    let events = event_store::decode_rows(client, rows).await?;
    let next_cursor = more.then(|| events.last().map(|e| e.position)).flatten();
    Ok(AuditPage {
        entries: events.into_iter().map(entry).collect(),
        next_cursor,
    })
}

fn entry(recorded: RecordedEvent) -> AuditEntry {
    let mut data = recorded.event.payload();
    redact(&mut data);
    AuditEntry {
        position: recorded.position,
        event_id: recorded.event_id,
        recorded_at: recorded.recorded_at,
        stream_id: recorded.stream_id.to_string(),
        stream_version: recorded.stream_version,
        event_type: recorded.event.event_type().to_owned(),
        actor: recorded.metadata.actor,
        request_id: recorded.metadata.request_id,
        source_ip: recorded.metadata.source_ip,
        causation_id: recorded.metadata.causation_id,
        correlation_id: recorded.metadata.correlation_id,
        data,
    }
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if REDACTED.contains(&key.as_str()) {
                    *item = Value::String("[redacted]".into());
                } else {
                    redact(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The state of a stream as of `at`.
#[derive(Clone, Debug, Serialize)]
pub struct StateAt {
    pub stream_id: String,
    pub as_of: DateTime<Utc>,
    /// Version of the last event folded in (0: the stream did not exist yet).
    pub version: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    pub state: Value,
}

/// Folds `stream` (a runner or a user) up to and including `at`.
pub async fn state_at<C: GenericClient>(
    client: &C,
    stream: &StreamId,
    at: DateTime<Utc>,
) -> Result<StateAt, StoreError> {
    let history: Vec<RecordedEvent> = event_store::read_stream(client, stream)
        .await?
        .into_iter()
        .filter(|e| e.recorded_at <= at)
        .collect();
    let state = match stream.category() {
        "runner" => runner_view(&Runner::from_history(&history)),
        "user" => user_view(&User::from_history(&history)),
        other => json!({ "error": format!("no time travel for {other} streams") }),
    };
    Ok(StateAt {
        stream_id: stream.to_string(),
        as_of: at,
        version: history.last().map_or(0, |e| e.stream_version),
        last_event_at: history.last().map(|e| e.recorded_at),
        state,
    })
}

fn runner_view(runner: &Runner) -> Value {
    match runner {
        Runner::Unknown => json!({ "status": "unknown" }),
        Runner::Active(r) => json!({
            "status": "active",
            "id": r.id,
            "paused": r.paused,
            "description": r.settings.description,
            "tags": r.settings.tags,
            "priority": r.settings.priority,
        }),
        Runner::Invalidated { id } => json!({ "status": "invalidated", "id": id }),
    }
}

fn user_view(user: &User) -> Value {
    match user {
        User::Unknown => json!({ "status": "unknown" }),
        User::Active(u) => json!({
            "status": "active",
            "id": u.id,
            "email": match &u.email { Pii::Plain(email) => Value::String(email.clone()), _ => Value::String("[forgotten]".into()) },
            "role": u.role.as_str(),
            "account": match &u.account {
                Account::Local { origin, .. } => json!({ "kind": "local", "origin": origin }),
                Account::Ldap { provider } => json!({ "kind": "ldap", "provider": provider }),
                Account::Oidc { provider } => json!({ "kind": "oidc", "provider": provider }),
            },
            "api_tokens": u.api_tokens.len(),
        }),
        User::Deleted { id } => json!({ "status": "deleted", "id": id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hashes_are_redacted_anywhere() {
        let mut value = json!({"token_hash": "ab", "nested": [{"password_hash": "$argon2"}], "keep": 1});
        redact(&mut value);
        assert_eq!(
            value,
            json!({"token_hash": "[redacted]", "nested": [{"password_hash": "[redacted]"}], "keep": 1})
        );
    }

    #[test]
    fn a_bare_id_matches_every_kind_of_stream() {
        let id = Uuid::nil();
        assert_eq!(stream_candidates(&id.to_string()).len(), 4);
        assert_eq!(stream_candidates("runner-x"), ["runner-x"]);
    }
}

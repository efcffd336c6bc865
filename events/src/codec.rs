//! Turning events into stored rows and back, upcasting old payloads.
//!
//! Stored rows are never rewritten; old versions are upcast every time they
//! are read (the upcasters and the rule for changing an event are in
//! `upcasters.rs`).

use crate::upcasters::{upcast_once, Stored};
use crate::{current_schema_version, Event};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("`{event_type}` v{version} is newer than this build understands (v{current})")]
    FromTheFuture {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("no upcaster for `{event_type}` from v{version}")]
    NoUpcaster { event_type: String, version: u32 },
    #[error("`{event_type}` payload does not match its schema: {source}")]
    BadPayload {
        event_type: String,
        source: serde_json::Error,
    },
}

/// An event in its stored form.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedEvent {
    pub event_type: &'static str,
    pub schema_version: u32,
    pub payload: Value,
}

pub fn encode(event: &Event) -> EncodedEvent {
    // The type name goes into a column of its own; the payload is the
    // event's fields.
    EncodedEvent {
        event_type: event.event_type(),
        schema_version: event.schema_version(),
        payload: event.payload(),
    }
}

/// The current-version event of a stored row; `stored` gives upcasters the
/// envelope facts they may need.
pub fn decode(event_type: &str, schema_version: u32, payload: Value, stored: Stored) -> Result<Event, DecodeError> {
    let current = current_schema_version(event_type).ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
    if schema_version > current {
        return Err(DecodeError::FromTheFuture {
            event_type: event_type.to_owned(),
            version: schema_version,
            current,
        });
    }
    let mut payload = payload;
    let mut version = schema_version;
    while version < current {
        payload = upcast_once(event_type, version, payload, stored)?;
        version += 1;
    }
    Event::from_payload(event_type, payload)
        .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?
        .map_err(|source| DecodeError::BadPayload {
            event_type: event_type.to_owned(),
            source,
        })
}

/// [`decode`] from the payload's JSON text: a payload in the current
/// version is read straight into its event (the common case, and twice as
/// fast as through a `Value`); an older one is upcast as in [`decode`].
pub fn decode_json(
    event_type: &str,
    schema_version: u32,
    payload: &[u8],
    stored: Stored,
) -> Result<Event, DecodeError> {
    let current = current_schema_version(event_type).ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
    let bad_payload = |source| DecodeError::BadPayload {
        event_type: event_type.to_owned(),
        source,
    };
    if schema_version == current {
        return Event::from_payload_json(event_type, payload)
            .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?
            .map_err(bad_payload);
    }
    let value = serde_json::from_slice(payload).map_err(bad_payload)?;
    decode(event_type, schema_version, value, stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RunnerCreated;
    use serde_json::json;
    use uuid::Uuid;

    fn stored() -> Stored {
        Stored {
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let event: Event = crate::RunnerEvent::from(RunnerCreated {
            runner_id: Uuid::now_v7(),
            number: None,
            token_hash: "ab".repeat(32),
            description: Some("gpu box".into()),
            tags: vec!["gpu".into()],
            priority: 0,
            scope_id: None,
        })
        .into();
        let stored = encode(&event);
        assert_eq!(stored.event_type, "RunnerCreated");
        assert!(stored.payload.get("type").is_none(), "tag lives in its own column");
        let text = serde_json::to_vec(&stored.payload).unwrap();
        let back = decode(stored.event_type, stored.schema_version, stored.payload, self::stored()).unwrap();
        assert_eq!(back, event);
        let from_text = decode_json(stored.event_type, stored.schema_version, &text, self::stored()).unwrap();
        assert_eq!(from_text, event);
        // Only space may follow the payload, as with serde_json::from_slice.
        let padded = [&text[..], b" \n"].concat();
        assert!(decode_json(stored.event_type, stored.schema_version, &padded, self::stored()).is_ok());
        let trailing = [&text[..], b" x"].concat();
        assert!(decode_json(stored.event_type, stored.schema_version, &trailing, self::stored()).is_err());
    }

    #[test]
    fn unknown_and_future_events_are_errors_not_panics() {
        assert!(matches!(
            decode("Nope", 1, json!({}), stored()),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            decode("RunnerCreated", 9, json!({}), stored()),
            Err(DecodeError::FromTheFuture { .. })
        ));
        assert!(matches!(
            decode("RunnerCreated", 1, json!({"runner_id": 5}), stored()),
            Err(DecodeError::BadPayload { .. })
        ));
        for (event_type, version, text) in [
            ("Nope", 1, &b"{}"[..]),
            ("RunnerCreated", 9, b"{}"),
            ("RunnerCreated", 1, br#"{"runner_id": 5}"#),
            ("RunnerCreated", 1, b"{not json"),
        ] {
            assert!(decode_json(event_type, version, text, stored()).is_err());
        }
    }
}

//! What surrounds an event in the log: stream ids, positions, metadata.

use crate::Event;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Namespace of machine ids (a fixed random UUID).
const MACHINE_NAMESPACE: Uuid = Uuid::from_u128(0x6c1e_9a4e_2b7d_4f0c_9d3a_51f8_0e2b_7c44);

/// Name of one stream (one aggregate instance): `<category>-<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn user(user_id: Uuid) -> Self {
        StreamId(format!("user-{user_id}"))
    }
    pub fn runner(runner_id: Uuid) -> Self {
        StreamId(format!("runner-{runner_id}"))
    }
    pub fn runner_machine(machine_id: Uuid) -> Self {
        StreamId(format!("machine-{machine_id}"))
    }
    /// The id of the machine `system_id` of runner `runner_id`: a name-based
    /// UUID (v5), so every instance derives the same id without a lookup.
    pub fn machine_id(runner_id: Uuid, system_id: &str) -> Uuid {
        let mut name = runner_id.as_bytes().to_vec();
        name.extend_from_slice(system_id.as_bytes());
        Uuid::new_v5(&MACHINE_NAMESPACE, &name)
    }
    pub fn job(job_id: Uuid) -> Self {
        StreamId(format!("job-{job_id}"))
    }
    /// A group's or project's stream.
    pub fn scope(scope_id: Uuid) -> Self {
        StreamId(format!("scope-{scope_id}"))
    }
    /// Wraps a stream name read back from the log.
    pub fn from_stored(name: String) -> Self {
        StreamId(name)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The id after the category, when it is a UUID.
    pub fn id(&self) -> Option<Uuid> {
        self.0.split_once('-').and_then(|(_, id)| Uuid::parse_str(id).ok())
    }
    /// The part before the first `-`: `user`, `runner`, `machine`, `job`.
    pub fn category(&self) -> &str {
        self.0.split_once('-').map_or(&self.0, |(category, _)| category)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in the log's delivery order.
///
/// Events are delivered ordered by the id of the transaction that wrote
/// them, then by position. A reader only reads events whose transaction is
/// older than every transaction still in flight, so an event that commits
/// late can never be overtaken (see docs/architecture.md). Field order
/// matters: the derived `Ord` compares `transaction_id` first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogCursor {
    pub transaction_id: i64,
    pub position: i64,
}

impl LogCursor {
    /// Before the first event.
    pub const START: LogCursor = LogCursor {
        transaction_id: 0,
        position: 0,
    };
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    User {
        user_id: Uuid,
    },
    Runner {
        runner_id: Uuid,
    },
    /// warden itself, e.g. `config-provisioning` or `job-reassignment`.
    System {
        component: String,
    },
    /// An operator at the `warden` command line.
    CommandLine {
        os_user: Option<String>,
    },
}

/// Why and from where an event was appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub actor: Actor,
    /// Groups every event caused by one outside request.
    pub correlation_id: Uuid,
    /// The event or command that caused this one, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
}

impl Metadata {
    /// Metadata for work that warden starts by itself.
    pub fn system(component: &str) -> Self {
        Metadata {
            actor: Actor::System {
                component: component.to_owned(),
            },
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            request_id: None,
            source_ip: None,
        }
    }
}

/// An event as read back from the log.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
    pub transaction_id: i64,
    pub stream_id: StreamId,
    /// 1 for the first event of a stream.
    pub stream_version: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub metadata: Metadata,
    pub event: Event,
}

impl RecordedEvent {
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_orders_by_transaction_before_position() {
        let early_tx_late_position = LogCursor {
            transaction_id: 10,
            position: 99,
        };
        let late_tx_early_position = LogCursor {
            transaction_id: 11,
            position: 5,
        };
        assert!(early_tx_late_position < late_tx_early_position);
    }

    #[test]
    fn stream_category_is_the_prefix() {
        let id = Uuid::nil();
        assert_eq!(StreamId::runner(id).category(), "runner");
        assert_eq!(StreamId::runner_machine(id).category(), "machine");
        let user = Uuid::now_v7();
        assert_eq!(StreamId::user(user).id(), Some(user));
    }
}

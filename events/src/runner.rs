//! Events of the `runner-<id>` streams.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerCreated {
    pub runner_id: Uuid,
    /// The runner's integer number (the Project-W protocol's id); runners
    /// created before numbers existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    /// Hex SHA-256 of the runner token; the token itself is shown once.
    pub token_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Higher runs first when several machines wait for work.
    #[serde(default)]
    pub priority: i32,
    /// The group or project the runner belongs to; none for an instance
    /// runner (every runner created before scopes existed is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInvalidated {
    pub runner_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A new token replaced the old one, which stays valid until
/// `previous_token_valid_until` (never, when `None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerTokenReset {
    pub runner_id: Uuid,
    pub token_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_token_valid_until: Option<DateTime<Utc>>,
}

/// New settings (the whole set, not a patch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerUpdated {
    pub runner_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub priority: i32,
}

/// No new jobs for a paused runner; running ones continue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerPaused {
    pub runner_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerResumed {
    pub runner_id: Uuid,
}

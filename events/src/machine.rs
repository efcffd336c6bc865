//! Events of the `machine-<id>` streams: hosts that share a runner token.
//!
//! A machine's id is derived from its runner and its persisted `system_id`
//! (see `StreamId::machine_id`), so concurrent first contacts of one host
//! meet on one stream.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a machine says about itself (GitLab's runner info, Project-W's
/// register call).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_code_url: Option<String>,
    /// Project-W's runner priority; `None` means the runner's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// First contact of a host with a runner token (or the first after it was
/// pruned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerMachineRegistered {
    pub machine_id: Uuid,
    pub runner_id: Uuid,
    pub system_id: String,
    #[serde(default)]
    pub info: MachineInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    pub contacted_at: DateTime<Utc>,
}

/// A throttled record of contact: written when the machine's info changed
/// or the last record is older than the persist interval, never per
/// heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerMachineContacted {
    pub machine_id: Uuid,
    pub runner_id: Uuid,
    pub contacted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub info: MachineInfo,
}

/// A machine not seen for longer than the configured retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerMachinePruned {
    pub machine_id: Uuid,
    pub runner_id: Uuid,
    pub last_contacted_at: DateTime<Utc>,
}

//! Events of the `machine-<id>` streams: hosts that share a runner token.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// First contact of a host (identified by its persisted `system_id`) with a
/// runner token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerMachineRegistered {
    pub machine_id: Uuid,
    pub runner_id: Uuid,
    pub system_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

/// A machine not seen for longer than the configured retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerMachinePruned {
    pub machine_id: Uuid,
    pub runner_id: Uuid,
}

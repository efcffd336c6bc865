//! Events of the `job-<id>` streams.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSubmitted {
    pub job_id: Uuid,
    pub submitted_by: Uuid,
    pub payload: serde_json::Value,
    #[serde(default)]
    pub required_tags: Vec<String>,
    #[serde(default)]
    pub priority: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAssigned {
    pub job_id: Uuid,
    pub runner_id: Uuid,
    pub machine_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequeued {
    pub job_id: Uuid,
    pub runner_id: Uuid,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFinished {
    pub job_id: Uuid,
    pub runner_id: Uuid,
    pub outcome: JobOutcome,
    #[serde(default)]
    pub result: serde_json::Value,
}

//! Events of the `job-<id>` streams.

use crate::Pii;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which runner protocol a job is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// warden's native protocol: any JSON payload.
    #[default]
    Native,
    /// The Project-W protocol: the payload is the job's Project-W settings.
    ProjectW,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Native => "native",
            JobKind::ProjectW => "project_w",
        }
    }

    pub fn is_native(&self) -> bool {
        *self == JobKind::Native
    }
}

/// A file of a job (its input, or a result), as the log records it: where
/// it is kept and what it is, never its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileRef {
    pub file_id: Uuid,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    pub size: i64,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSubmitted {
    pub job_id: Uuid,
    /// The job's integer number (the Project-W protocol's id); jobs
    /// submitted before numbers existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    pub submitted_by: Uuid,
    /// The job's settings as JSON text, sealed under the submitter's key
    /// (v2): payloads hold whatever users put in them, addresses included,
    /// and are forgotten with the user.
    pub payload: Pii,
    /// A job only goes to runners that have all of these tags.
    #[serde(default)]
    pub required_tags: Vec<String>,
    /// Higher goes first; equal priorities go oldest first.
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "JobKind::is_native")]
    pub kind: JobKind,
    /// The job's input file (a Project-W job's audio or video); its `name`
    /// is kept in `input_name` (v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<FileRef>,
    /// The input file's name as uploaded, sealed like the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_name: Option<Pii>,
    /// The project or group the job was submitted to: only runners of it,
    /// of the groups above it, and instance runners take it. None for an
    /// instance job (every job submitted before scopes existed is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_id: Option<Uuid>,
}

impl JobSubmitted {
    /// The payload as JSON; `null` once forgotten.
    pub fn payload_value(&self) -> serde_json::Value {
        self.payload
            .as_plain()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The input file with its name, while the name is known.
    pub fn input_with_name(&self) -> Option<FileRef> {
        self.input.clone().map(|mut file| {
            file.name = self.input_name.as_ref().and_then(Pii::as_plain).map(str::to_owned);
            file
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAssigned {
    pub job_id: Uuid,
    pub runner_id: Uuid,
    pub machine_id: Uuid,
}

/// The machine the job was assigned to fetched it (Project-W's
/// `retrieve_job_info`): it works on it from now on. A native machine gets
/// its job in the answer that assigns it, so native jobs have no such event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRetrieved {
    pub job_id: Uuid,
    pub runner_id: Uuid,
    pub machine_id: Uuid,
}

/// Progress reported by the machine running the job (throttled).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobProgressed {
    pub job_id: Uuid,
    /// 0.0 to 1.0.
    pub progress: f64,
    /// What the runner says of its work: it may quote the submitter's
    /// data, so it is sealed under the submitter's key (v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Pii>,
    /// The submitter, whose key seals `message` (v2; v1 has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<Uuid>,
}

impl JobProgressed {
    /// The message while it is readable.
    pub fn message_text(&self) -> Option<&str> {
        self.message.as_ref().and_then(Pii::as_plain)
    }
}

/// Back in the queue, taken from `runner_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequeued {
    pub job_id: Uuid,
    pub runner_id: Uuid,
    pub machine_id: Uuid,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Succeeded,
    Failed,
    /// Stopped by the runner after a cancel request.
    Aborted,
    /// The runner reported a failure after it was told to abort (Project-W):
    /// the job ends as cancelled.
    Cancelled,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Aborted => "aborted",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFinished {
    pub job_id: Uuid,
    pub runner_id: Uuid,
    pub machine_id: Uuid,
    pub outcome: JobOutcome,
    /// The runner's result as JSON text, sealed under the submitter's key
    /// (v2: results hold whatever the job was about, and are forgotten
    /// with the submitter); none when there is no result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Pii>,
    /// The submitter, whose key seals `result` (v2; v1 has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<Uuid>,
}

impl JobFinished {
    /// The result as JSON; `null` when there is none or it is forgotten.
    pub fn result_value(&self) -> serde_json::Value {
        self.result
            .as_ref()
            .and_then(Pii::as_plain)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// The submitter (or an admin) asked to stop a running job; the machine
/// learns it from its next heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCancelRequested {
    pub job_id: Uuid,
    /// Why, when it was not the submitter's own request (e.g. the
    /// submitter was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A job that will never run (cancelled while queued, or its runner went
/// away while a cancel was pending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCancelled {
    pub job_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

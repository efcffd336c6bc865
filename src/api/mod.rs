//! The HTTP API's request and answer types, shared by the handlers that
//! produce them, `warden runner reconcile` (a client of the API), and the
//! integration tests. Plain serde types: this module uses nothing else of
//! warden's but event types, so any layer may.

mod error_code;

pub use error_code::ErrorCode;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A page of an admin list; pass `next_cursor` as `cursor` for the next.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunnerView {
    pub id: Uuid,
    /// The runner's integer id (Project-W protocol); none for runners
    /// created before numbers existed.
    pub number: Option<i64>,
    pub status: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub priority: i32,
    pub paused: bool,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub invalidated_at: Option<DateTime<Utc>>,
    /// Freshest contact of any of its machines; `None` if it has none.
    pub last_contact_at: Option<DateTime<Utc>>,
    pub machines: Vec<MachineView>,
    /// The group or project it belongs to; none for an instance runner.
    #[serde(default)]
    pub scope_id: Option<Uuid>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MachineView {
    pub id: Uuid,
    pub runner_id: Uuid,
    pub system_id: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub revision: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub ip_address: Option<String>,
    pub priority: Option<i32>,
    pub registered_at: DateTime<Utc>,
    /// The freshest contact known: this process's memory or the log.
    pub contacted_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub submitted_by: Uuid,
    pub status: String,
    pub payload: serde_json::Value,
    pub required_tags: Vec<String>,
    pub priority: i32,
    pub runner_id: Option<Uuid>,
    pub machine_id: Option<Uuid>,
    pub cancel_requested: bool,
    pub progress: Option<f64>,
    pub progress_message: Option<String>,
    pub result: Option<serde_json::Value>,
    pub requeue_count: i32,
    pub submitted_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The job's integer id (Project-W protocol); none for jobs submitted
    /// before numbers existed.
    pub number: Option<i64>,
    /// `native` or `project_w`.
    pub kind: String,
    /// The job's input file, if it has one.
    pub input: Option<warden_events::job::FileRef>,
    /// When its machine fetched it (Project-W jobs; a native machine gets
    /// its job with the assignment).
    #[serde(default)]
    pub retrieved_at: Option<DateTime<Utc>>,
    /// The project or group it was submitted to; none: the instance.
    #[serde(default)]
    pub scope_id: Option<Uuid>,
}

/// The answer of a login: an access token (Project-W's shape).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
}

/// `POST /api/admins/create_runner`: the runner and its token, shown only here.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedRunner {
    pub id: Uuid,
    pub token: String,
}

/// `POST /api/admins/reset_runner_token`: the new token, shown only here.
pub type NewRunnerToken = CreatedRunner;

/// `DELETE /api/admins/invalidate_runner`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunnerInvalidated {
    pub id: Uuid,
    /// Always `invalidated`.
    pub status: String,
}

/// `POST /api/jobs`: the job is in the queue.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobAccepted {
    pub id: Uuid,
    /// Always `queued`.
    pub status: String,
}

/// Project-W `register`: the session.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// The runner's integer id (0 for a runner created before numbers).
    pub id: i64,
    /// Names this session in every later call (`?session_token=`).
    pub session_token: String,
}

/// Project-W `heartbeat`: what the machine is to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// Stop the current job (then `job_assigned` is false).
    pub abort: bool,
    /// A job waits for this machine (retrieve it).
    pub job_assigned: bool,
}

/// Project-W `retrieve_job_info`: the job a runner is told about.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobInfo {
    /// The job's integer id.
    pub id: i64,
    /// The job's Project-W settings, exactly as submitted.
    pub settings: serde_json::Value,
}

/// Native `verify`: the runner token is valid.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunnerVerified {
    pub runner_id: Uuid,
    /// Always `active` (an invalidated runner's token is refused).
    pub status: String,
    pub paused: bool,
    /// The machine named by `system_id`, when one was named.
    pub machine_id: Option<Uuid>,
}

/// Native `jobs/request`: the job a machine is to run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobForRunner {
    pub id: Uuid,
    pub payload: serde_json::Value,
    pub required_tags: Vec<String>,
    pub priority: i32,
    pub submitted_at: DateTime<Utc>,
    /// The submitter asked to stop it.
    pub abort: bool,
}

/// Native `jobs/{id}/progress`: whether to stop.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
pub struct ProgressAnswer {
    /// The submitter asked to stop the job.
    pub abort: bool,
}

/// Native `jobs/{id}/result`: the job's outcome is recorded.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ResultRecorded {
    pub id: Uuid,
    /// The outcome: `succeeded`, `failed`, `aborted` or `cancelled`.
    pub status: String,
}

/// An object and what became of it (`deleted`, `revoked`): the answer of
/// deletions and revocations.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Outcome {
    pub id: Uuid,
    pub status: String,
}

impl Outcome {
    pub fn new(id: Uuid, status: &str) -> Outcome {
        Outcome {
            id,
            status: status.to_owned(),
        }
    }
}

/// `GET /api/users/me`: who the token belongs to.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    /// None for a user whose provider gave no address.
    pub email: Option<String>,
    /// `user`, `support` or `admin`.
    pub role: String,
    /// The token was issued with `scope=admin` (and the user is an admin).
    pub admin_scope: bool,
}

/// `POST /api/admins/users/{id}/role`: the user's role now.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleSet {
    pub id: Uuid,
    /// `user`, `support` or `admin`.
    pub role: String,
}

/// `POST /api/local-account/signup`: the new account (log in next).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SignedUp {
    pub id: Uuid,
    pub email: String,
}

/// `POST /api/auth/logout`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LoggedOut {
    /// Always `logged_out`.
    pub status: String,
}

/// A runner as an admin call names it: by its UUID, or by its integer
/// number (the id Project-W shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerRef {
    Id(Uuid),
    Number(i64),
}

/// A `runner_id` that is neither a UUID nor a positive number.
#[derive(Debug, thiserror::Error)]
#[error("runner_id must be a runner's UUID or number")]
pub struct NotARunnerRef;

impl std::str::FromStr for RunnerRef {
    type Err = NotARunnerRef;

    fn from_str(raw: &str) -> Result<RunnerRef, NotARunnerRef> {
        let raw = raw.trim();
        if let Ok(id) = Uuid::parse_str(raw) {
            return Ok(RunnerRef::Id(id));
        }
        raw.parse()
            .ok()
            .filter(|number| *number > 0)
            .map(RunnerRef::Number)
            .ok_or(NotARunnerRef)
    }
}

/// Where a runner or job belongs, as calls name it: `instance`,
/// `group:<path>` or `project:<path>`, a path being group names from the
/// top joined by `/` (`physics/lattice-qcd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeRef {
    Instance,
    Group(Vec<String>),
    Project(Vec<String>),
}

/// A `scope` that is none of the three forms.
#[derive(Debug, thiserror::Error)]
#[error("scope must be `instance`, `group:<path>` or `project:<path>` (e.g. `project:physics/lattice-qcd`)")]
pub struct NotAScopeRef;

impl std::str::FromStr for ScopeRef {
    type Err = NotAScopeRef;

    fn from_str(raw: &str) -> Result<ScopeRef, NotAScopeRef> {
        let raw = raw.trim();
        if raw == "instance" {
            return Ok(ScopeRef::Instance);
        }
        let (kind, path) = raw.split_once(':').ok_or(NotAScopeRef)?;
        let segments: Vec<String> = path.split('/').map(|segment| segment.trim().to_lowercase()).collect();
        // Depth is bounded so that a path costs a bounded number of look-ups.
        if segments.is_empty() || segments.len() > 20 || segments.iter().any(String::is_empty) {
            return Err(NotAScopeRef);
        }
        match kind {
            "group" => Ok(ScopeRef::Group(segments)),
            "project" if segments.len() >= 2 => Ok(ScopeRef::Project(segments)),
            _ => Err(NotAScopeRef),
        }
    }
}

impl std::fmt::Display for ScopeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScopeRef::Instance => f.write_str("instance"),
            ScopeRef::Group(path) => write!(f, "group:{}", path.join("/")),
            ScopeRef::Project(path) => write!(f, "project:{}", path.join("/")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_is_named_by_uuid_or_positive_number() {
        let id = Uuid::now_v7();
        assert_eq!(id.to_string().parse::<RunnerRef>().unwrap(), RunnerRef::Id(id));
        assert_eq!(" 7 ".parse::<RunnerRef>().unwrap(), RunnerRef::Number(7));
        for bad in ["0", "-3", "", "abc", "7.5", "99999999999999999999"] {
            assert!(bad.parse::<RunnerRef>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_scope_is_the_instance_a_group_path_or_a_project_path() {
        assert_eq!("instance".parse::<ScopeRef>().unwrap(), ScopeRef::Instance);
        assert_eq!(
            "project:Physics/lattice-qcd".parse::<ScopeRef>().unwrap(),
            ScopeRef::Project(vec!["physics".into(), "lattice-qcd".into()])
        );
        assert_eq!("group:a/b".parse::<ScopeRef>().unwrap().to_string(), "group:a/b");
        for bad in ["", "group:", "group:a//b", "project:a", "team:a", "a/b"] {
            assert!(bad.parse::<ScopeRef>().is_err(), "{bad:?}");
        }
    }
}

//! The runner protocols: `/api/runners/*`, runner tokens only.
//!
//! Two dialects over one model, each in a file of its own: warden's
//! native protocol (GitLab style, [`native`]) and Project-W's
//! ([`project_w`]). This file holds what both share: naming the machine,
//! recording its contact, and what a machine is told about its job.

pub mod native;
pub mod project_w;

use utoipa::ToSchema;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warden_events::machine::MachineInfo;
use warden_events::{Actor, Metadata};

use crate::app::AppState;
use crate::domain::job::MachineRef;
use crate::domain::ErrorCode;
use crate::fleet::jobs::{self, JobView};
use crate::fleet::machines;
use crate::http::auth::Runner;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;

const SYSTEM_ID_HEADER: &str = "x-runner-system-id";

/// Where a request of the native protocol names its machine: body, then
/// header, then query. System ids beginning with `pw-` name the machines
/// of Project-W sessions and are refused here: a native call must not act
/// as (or take jobs for) a Project-W machine.
pub(super) fn system_id(request: &HttpRequest, from_body: Option<String>) -> Result<Option<String>, ApiError> {
    let named = from_body
        .or_else(|| {
            request
                .headers()
                .get(SYSTEM_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .or_else(|| {
            web::Query::<SystemIdQuery>::from_query(request.query_string())
                .ok()
                .and_then(|q| q.into_inner().system_id)
        });
    if named
        .as_deref()
        .is_some_and(|id| id.starts_with(crate::fleet::sessions::SYSTEM_ID_PREFIX))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidSystemId,
            "system ids beginning with pw- belong to Project-W sessions",
        ));
    }
    Ok(named)
}

#[derive(Deserialize)]
struct SystemIdQuery {
    system_id: Option<String>,
}

pub(super) fn required_system_id(request: &HttpRequest, from_body: Option<String>) -> Result<String, ApiError> {
    system_id(request, from_body)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingSystemId,
            "name the runner machine: `system_id` in the body, the X-Runner-System-Id header or the query",
        )
    })
}

pub(super) fn metadata(runner: &Runner, context: &RequestContext) -> Metadata {
    context.metadata(Actor::Runner {
        runner_id: runner.0.runner_id,
    })
}

/// Records the machine's contact and returns it.
pub(super) async fn machine(
    state: &AppState,
    runner: &Runner,
    context: &RequestContext,
    system_id: &str,
    info: Option<MachineInfo>,
) -> Result<MachineRef, ApiError> {
    let metadata = metadata(runner, context);
    Ok(machines::touch(
        &state.fleet,
        &runner.0,
        system_id,
        info,
        context.source_ip.clone(),
        &metadata,
    )
    .await?)
}

/// What a machine says about itself (the native protocol's `info`).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineInfoBody {
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    version: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    revision: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    platform: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    architecture: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    source_code_url: Option<String>,
    #[serde(default, deserialize_with = "crate::http::params::optional_integer")]
    priority: Option<i32>,
}

impl From<MachineInfoBody> for MachineInfo {
    fn from(body: MachineInfoBody) -> MachineInfo {
        MachineInfo {
            name: body.name,
            version: body.version,
            revision: body.revision,
            platform: body.platform,
            architecture: body.architecture,
            source_code_url: body.source_code_url,
            priority: body.priority,
        }
    }
}

/// What a machine is told about its job.
#[derive(Serialize, ToSchema)]
pub(super) struct JobForRunner {
    id: Uuid,
    payload: serde_json::Value,
    required_tags: Vec<String>,
    priority: i32,
    submitted_at: chrono::DateTime<chrono::Utc>,
    /// The submitter asked to stop it.
    abort: bool,
}

impl From<JobView> for JobForRunner {
    fn from(job: JobView) -> Self {
        JobForRunner {
            id: job.id,
            payload: job.payload,
            required_tags: job.required_tags,
            priority: job.priority,
            submitted_at: job.submitted_at,
            abort: job.cancel_requested,
        }
    }
}

pub(super) async fn job_for_runner(state: &AppState, job_id: Uuid) -> Result<HttpResponse, ApiError> {
    let job = jobs::get(&state.fleet, job_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::JobNotFound, "job not found"))?;
    Ok(HttpResponse::Ok().json(JobForRunner::from(job)))
}

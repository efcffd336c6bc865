//! Project-W's runner protocol: `register`, `heartbeat`
//! (`{abort, job_assigned}`), `retrieve_job_info`, `submit_job_result`,
//! `unregister`.

use utoipa::ToSchema;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use warden_events::job::JobOutcome;
use warden_events::machine::MachineInfo;

use crate::app::AppState;
use crate::domain::ErrorCode;
use crate::fleet::dispatcher::Candidate;
use crate::fleet::jobs::{self, Taker};
use crate::http::auth::Runner;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json::Json;
use crate::http::params;
use crate::http::routes::optional_json;

use super::{job_for_runner, machine, metadata, system_id, JobForRunner, DEFAULT_SYSTEM_ID};

#[derive(Default, Deserialize, ToSchema)]
pub struct RegisterBody {
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    system_id: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    version: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    git_hash: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    source_code_url: Option<String>,
    #[serde(default, deserialize_with = "params::optional_integer")]
    priority: Option<i32>,
}

fn project_w_system_id(request: &HttpRequest, from_body: Option<String>) -> String {
    system_id(request, from_body).unwrap_or_else(|| DEFAULT_SYSTEM_ID.to_owned())
}

/// Project-W: a machine comes online and can get jobs.
///
/// Machine defaults to `default`.
#[utoipa::path(
    post,
    path = "/api/runners/register",
    tag = "runners (Project-W)",
    request_body(content = Option<RegisterBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "registered", body = serde_json::Value, example = json!({"runner_id": "0194...", "machine_id": "0194...", "system_id": "default"})),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn register(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: RegisterBody = optional_json(&request, &body)?.unwrap_or_default();
    let system_id = project_w_system_id(&request, body.system_id);
    let priority = body.priority.unwrap_or(runner.0.priority);
    let info = MachineInfo {
        name: body.name,
        version: body.version,
        revision: body.git_hash,
        source_code_url: body.source_code_url,
        priority: body.priority,
        ..Default::default()
    };
    let machine = machine(&state, &runner, &context, &system_id, Some(info)).await?;
    state.fleet.dispatcher.go_online(Candidate {
        taker: Taker {
            machine,
            tags: runner.0.tags.clone(),
        },
        priority,
        metadata: metadata(&runner, &context),
    });
    Ok(HttpResponse::Ok().json(json!({
        "runner_id": runner.0.runner_id,
        "machine_id": machine.machine_id,
        "system_id": system_id,
    })))
}

#[derive(Default, Deserialize, ToSchema)]
pub struct MachineBody {
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    system_id: Option<String>,
}

/// Project-W: a machine goes offline; its job goes back to the queue.
#[utoipa::path(
    post,
    path = "/api/runners/unregister",
    tag = "runners (Project-W)",
    request_body(content = Option<MachineBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "unregistered", body = serde_json::Value, example = json!({"machine_id": "0194...", "requeued_job": null})),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn unregister(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: MachineBody = optional_json(&request, &body)?.unwrap_or_default();
    let system_id = project_w_system_id(&request, body.system_id);
    let machine = machine(&state, &runner, &context, &system_id, None).await?;
    state.fleet.dispatcher.go_offline(machine.machine_id);
    let metadata = metadata(&runner, &context);
    let requeued = jobs::requeue_from(&state.fleet, machine, "runner machine unregistered", &metadata).await?;
    Ok(HttpResponse::Ok().json(json!({ "machine_id": machine.machine_id, "requeued_job": requeued })))
}

#[derive(Default, Deserialize, ToSchema)]
pub struct HeartbeatBody {
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    system_id: Option<String>,
    /// Progress of the current job, 0.0 to 1.0.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    progress: Option<f64>,
}

/// Project-W: keeps a machine online; says whether it has a job and must abort it.
///
/// Heartbeats do not append to the log.
#[utoipa::path(
    post,
    path = "/api/runners/heartbeat",
    tag = "runners (Project-W)",
    request_body(content = Option<HeartbeatBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "what to do", body = serde_json::Value, example = json!({"abort": false, "job_assigned": true})),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 409, description = "the machine is not registered", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn heartbeat(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: HeartbeatBody = optional_json(&request, &body)?.unwrap_or_default();
    let system_id = project_w_system_id(&request, body.system_id);
    let machine = machine(&state, &runner, &context, &system_id, None).await?;
    if !state.fleet.dispatcher.is_online(machine.machine_id) {
        return Err(ApiError::new(
            ErrorCode::MachineNotRegistered,
            "this runner machine is not registered (any more); call /api/runners/register first",
        ));
    }
    let current = jobs::current_job(&state.fleet, machine.machine_id).await?;
    state.fleet.dispatcher.seen(machine.machine_id, current.is_some());
    let Some(job_id) = current else {
        return Ok(HttpResponse::Ok().json(json!({ "abort": false, "job_assigned": false })));
    };
    let abort = match body.progress {
        Some(progress) => {
            let metadata = metadata(&runner, &context);
            jobs::report_progress(&state.fleet, machine, job_id, progress, None, &metadata)
                .await?
                .abort
        }
        None => jobs::get(&state.fleet, job_id)
            .await?
            .is_some_and(|job| job.cancel_requested),
    };
    Ok(HttpResponse::Ok().json(json!({ "abort": abort, "job_assigned": true })))
}

/// Project-W: the machine's current job.
#[utoipa::path(
    get,
    path = "/api/runners/retrieve_job_info",
    tag = "runners (Project-W)",
    responses(
        (status = 200, description = "the job", body = JobForRunner),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no job is assigned", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn retrieve_job_info(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let system_id = project_w_system_id(&request, None);
    let machine = machine(&state, &runner, &context, &system_id, None).await?;
    let current = jobs::current_job(&state.fleet, machine.machine_id).await?;
    match current {
        Some(job_id) => job_for_runner(&state, job_id).await,
        None => Err(ApiError::new(
            ErrorCode::NoJobAssigned,
            "no job is assigned to this runner machine",
        )),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct ProjectWResultBody {
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    system_id: Option<String>,
    #[serde(default)]
    outcome: Option<JobOutcome>,
    #[serde(default)]
    result: serde_json::Value,
    /// Project-W's failure report.
    #[serde(default)]
    #[schema(pattern = "^[^\\x00]*$")]
    error_msg: Option<String>,
}

/// Project-W: finishes the machine's current job (`error_msg` means failed).
#[utoipa::path(
    post,
    path = "/api/runners/submit_job_result",
    tag = "runners (Project-W)",
    request_body = ProjectWResultBody,
    responses(
        (status = 200, description = "finished", body = serde_json::Value, example = json!({"id": "0194...", "status": "succeeded"})),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no job is assigned", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn submit_job_result(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    body: Json<ProjectWResultBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let system_id = project_w_system_id(&request, body.system_id);
    let machine = machine(&state, &runner, &context, &system_id, None).await?;
    let current = jobs::current_job(&state.fleet, machine.machine_id).await?;
    let job_id =
        current.ok_or_else(|| ApiError::new(ErrorCode::NoJobAssigned, "no job is assigned to this runner machine"))?;
    let (outcome, result) = match body.error_msg {
        Some(error) => (JobOutcome::Failed, json!({ "error_msg": error })),
        None => (body.outcome.unwrap_or(JobOutcome::Succeeded), body.result),
    };
    let metadata = metadata(&runner, &context);
    jobs::finish(&state.fleet, machine, job_id, outcome, result, &metadata).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": job_id, "status": outcome.as_str() })))
}

//! The runner protocol: `/api/runners/*`, runner tokens only.
//!
//! Two dialects over one model. GitLab style: `verify`, then
//! `jobs/request` (long poll), `jobs/{id}/progress`, `jobs/{id}/result`,
//! each naming the machine by `system_id`. Project-W style: `register`,
//! `heartbeat` (`{abort, job_assigned}`), `retrieve_job_info`,
//! `submit_job_result`, `unregister`. The machine is named by the body's
//! `system_id`, else the `X-Runner-System-Id` header, else the
//! `system_id` query parameter; Project-W calls default to `default`.

use std::time::Duration;
use utoipa::ToSchema;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use warden_events::job::JobOutcome;
use warden_events::machine::MachineInfo;
use warden_events::{Actor, Metadata};

use super::optional_json;
use crate::app::AppState;
use crate::domain::job::MachineRef;
use crate::fleet::dispatcher::{Candidate, Delivery};
use crate::fleet::jobs::{self, Assignment, JobView, Taker};
use crate::fleet::machines;
use crate::http::auth::Runner;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;

const SYSTEM_ID_HEADER: &str = "x-runner-system-id";
/// The machine of Project-W runners that do not name one.
const DEFAULT_SYSTEM_ID: &str = "default";

/// Where a request names its machine: body, then header, then query.
fn system_id(request: &HttpRequest, from_body: Option<String>) -> Option<String> {
    from_body
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
        })
}

#[derive(Deserialize)]
struct SystemIdQuery {
    system_id: Option<String>,
}

fn required_system_id(request: &HttpRequest, from_body: Option<String>) -> Result<String, ApiError> {
    system_id(request, from_body).ok_or_else(|| {
        ApiError::unprocessable(
            "missing_system_id",
            "name the runner machine: `system_id` in the body, the X-Runner-System-Id header or the query",
        )
    })
}

fn metadata(runner: &Runner, context: &RequestContext) -> Metadata {
    context.metadata(Actor::Runner {
        runner_id: runner.0.runner_id,
    })
}

/// Records the machine's contact and returns it.
async fn machine(
    state: &AppState,
    runner: &Runner,
    context: &RequestContext,
    system_id: &str,
    info: Option<MachineInfo>,
) -> Result<MachineRef, ApiError> {
    let metadata = metadata(runner, context);
    Ok(machines::touch(state, &runner.0, system_id, info, context.source_ip.clone(), &metadata).await?)
}

/// What a machine is told about its job.
#[derive(Serialize, ToSchema)]
struct JobForRunner {
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

async fn job_for_runner(state: &AppState, job_id: Uuid) -> Result<HttpResponse, ApiError> {
    let job = jobs::get(state, job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("job_not_found", "job not found"))?;
    Ok(HttpResponse::Ok().json(JobForRunner::from(job)))
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    #[serde(default)]
    system_id: Option<String>,
    #[serde(default)]
    info: Option<MachineInfo>,
}

/// Checks a runner token; with a `system_id`, registers the machine.
///
/// Machine named by the body's `system_id`, else the `X-Runner-System-Id` header, else the `system_id` query parameter.
#[utoipa::path(
    post,
    path = "/api/runners/verify",
    tag = "runners",
    request_body(content = Option<VerifyBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "the token is valid", body = serde_json::Value, example = json!({"runner_id": "0194...", "status": "active", "paused": false, "machine_id": "0194..."})),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the runner was invalidated", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn verify(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: VerifyBody = optional_json(&request, &body)?.unwrap_or_default();
    let machine_id = match system_id(&request, body.system_id) {
        Some(system_id) => Some(
            machine(&state, &runner, &context, &system_id, body.info)
                .await?
                .machine_id,
        ),
        None => None,
    };
    Ok(HttpResponse::Ok().json(json!({
        "runner_id": runner.0.runner_id,
        "status": "active",
        "paused": runner.0.paused,
        "machine_id": machine_id,
    })))
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequestBody {
    #[serde(default)]
    system_id: Option<String>,
    #[serde(default)]
    info: Option<MachineInfo>,
    /// Long poll: wait up to this long for a job (capped by
    /// `runners.long_poll_max`); 0 answers at once.
    #[serde(default)]
    wait_seconds: u64,
}

/// Asks for a job, waiting up to `wait_seconds` (long poll).
///
/// Machine named by the body's `system_id`, else the `X-Runner-System-Id` header, else the `system_id` query parameter.
#[utoipa::path(
    post,
    path = "/api/runners/jobs/request",
    tag = "runners",
    request_body(content = Option<JobRequestBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "the job to run (also the one already running)", body = JobForRunner),
        (status = 204, description = "no job within the wait"),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn request_job(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: JobRequestBody = optional_json(&request, &body)?.unwrap_or_default();
    let system_id = required_system_id(&request, body.system_id)?;
    let machine = machine(&state, &runner, &context, &system_id, body.info).await?;
    let wait = Duration::from_secs(body.wait_seconds).min(state.config.runners.long_poll_max);
    if runner.0.paused {
        // Nothing for a paused runner; answer at the end of the wait so a
        // polling runner does not spin.
        tokio::time::sleep(wait).await;
        return Ok(HttpResponse::NoContent().finish());
    }
    let current = jobs::current_job(&state, machine.machine_id).await?;
    if let Some(job_id) = current {
        return job_for_runner(&state, job_id).await;
    }
    let candidate = Candidate {
        taker: Taker {
            machine,
            tags: runner.0.tags.clone(),
        },
        priority: runner.0.priority,
        metadata: metadata(&runner, &context),
    };
    if wait.is_zero() {
        // No wait wanted: one attempt now, outside the waiting room.
        return match jobs::assign_next(&state, &candidate.taker, &candidate.metadata).await? {
            Assignment::Assigned(job) => Ok(HttpResponse::Ok().json(JobForRunner::from(*job))),
            Assignment::Busy(job_id) => job_for_runner(&state, job_id).await,
            Assignment::NoJob | Assignment::RunnerUnavailable => Ok(HttpResponse::NoContent().finish()),
        };
    }
    match state.dispatcher.wait_for_job(candidate, wait).await {
        Some(Delivery::Job(job)) => Ok(HttpResponse::Ok().json(JobForRunner::from(*job))),
        Some(Delivery::Busy(job_id)) => job_for_runner(&state, job_id).await,
        Some(Delivery::RunnerUnavailable) | None => Ok(HttpResponse::NoContent().finish()),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    #[serde(default)]
    system_id: Option<String>,
    progress: f64,
    #[serde(default)]
    message: Option<String>,
}

/// Reports progress of the running job; answers whether to abort.
///
/// Machine named by the body's `system_id`, else the `X-Runner-System-Id` header, else the `system_id` query parameter.
#[utoipa::path(
    post,
    path = "/api/runners/jobs/{id}/progress",
    tag = "runners",
    params(("id" = Uuid, Path, description = "job id")),
    request_body = ProgressBody,
    responses(
        (status = 200, description = "whether to abort", body = serde_json::Value, example = json!({"abort": false})),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody),
        (status = 409, description = "conflicts with the current state", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn report_progress(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    job_id: web::Path<Uuid>,
    body: web::Json<ProgressBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let system_id = required_system_id(&request, body.system_id)?;
    let machine = machine(&state, &runner, &context, &system_id, None).await?;
    let metadata = metadata(&runner, &context);
    let answer = jobs::report_progress(&state, machine, *job_id, body.progress, body.message, &metadata).await?;
    Ok(HttpResponse::Ok().json(answer))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultBody {
    #[serde(default)]
    system_id: Option<String>,
    outcome: JobOutcome,
    #[serde(default)]
    result: serde_json::Value,
}

/// Finishes the running job.
///
/// Machine named by the body's `system_id`, else the `X-Runner-System-Id` header, else the `system_id` query parameter.
#[utoipa::path(
    post,
    path = "/api/runners/jobs/{id}/result",
    tag = "runners",
    params(("id" = Uuid, Path, description = "job id")),
    request_body = ResultBody,
    responses(
        (status = 200, description = "finished", body = serde_json::Value, example = json!({"id": "0194...", "status": "succeeded"})),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody),
        (status = 409, description = "conflicts with the current state", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn submit_result(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    job_id: web::Path<Uuid>,
    body: web::Json<ResultBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let system_id = required_system_id(&request, body.system_id)?;
    let machine = machine(&state, &runner, &context, &system_id, None).await?;
    let metadata = metadata(&runner, &context);
    jobs::finish(&state, machine, *job_id, body.outcome, body.result, &metadata).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": *job_id, "status": body.outcome.as_str() })))
}

// ---- Project-W dialect ------------------------------------------------

#[derive(Default, Deserialize, ToSchema)]
pub struct RegisterBody {
    #[serde(default)]
    system_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    git_hash: Option<String>,
    #[serde(default)]
    source_code_url: Option<String>,
    #[serde(default)]
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
    state.dispatcher.go_online(Candidate {
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
    state.dispatcher.go_offline(machine.machine_id);
    let metadata = metadata(&runner, &context);
    let requeued = jobs::requeue_from(&state, machine, "runner machine unregistered", &metadata).await?;
    Ok(HttpResponse::Ok().json(json!({ "machine_id": machine.machine_id, "requeued_job": requeued })))
}

#[derive(Default, Deserialize, ToSchema)]
pub struct HeartbeatBody {
    #[serde(default)]
    system_id: Option<String>,
    /// Progress of the current job, 0.0 to 1.0.
    #[serde(default)]
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
    if !state.dispatcher.is_online(machine.machine_id) {
        return Err(ApiError::conflict(
            "machine_not_registered",
            "this runner machine is not registered (any more); call /api/runners/register first",
        ));
    }
    let current = jobs::current_job(&state, machine.machine_id).await?;
    state.dispatcher.seen(machine.machine_id, current.is_some());
    let Some(job_id) = current else {
        return Ok(HttpResponse::Ok().json(json!({ "abort": false, "job_assigned": false })));
    };
    let abort = match body.progress {
        Some(progress) => {
            let metadata = metadata(&runner, &context);
            jobs::report_progress(&state, machine, job_id, progress, None, &metadata)
                .await?
                .abort
        }
        None => jobs::get(&state, job_id).await?.is_some_and(|job| job.cancel_requested),
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
    let current = jobs::current_job(&state, machine.machine_id).await?;
    match current {
        Some(job_id) => job_for_runner(&state, job_id).await,
        None => Err(ApiError::not_found(
            "no_job_assigned",
            "no job is assigned to this runner machine",
        )),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct ProjectWResultBody {
    #[serde(default)]
    system_id: Option<String>,
    #[serde(default)]
    outcome: Option<JobOutcome>,
    #[serde(default)]
    result: serde_json::Value,
    /// Project-W's failure report.
    #[serde(default)]
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
    body: web::Json<ProjectWResultBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let system_id = project_w_system_id(&request, body.system_id);
    let machine = machine(&state, &runner, &context, &system_id, None).await?;
    let current = jobs::current_job(&state, machine.machine_id).await?;
    let job_id =
        current.ok_or_else(|| ApiError::not_found("no_job_assigned", "no job is assigned to this runner machine"))?;
    let (outcome, result) = match body.error_msg {
        Some(error) => (JobOutcome::Failed, json!({ "error_msg": error })),
        None => (body.outcome.unwrap_or(JobOutcome::Succeeded), body.result),
    };
    let metadata = metadata(&runner, &context);
    jobs::finish(&state, machine, job_id, outcome, result, &metadata).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": job_id, "status": outcome.as_str() })))
}

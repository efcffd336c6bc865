//! warden's native runner protocol (GitLab style): `verify`, then
//! `jobs/request` (long poll), `jobs/{id}/progress`, `jobs/{id}/result`,
//! each naming the machine by `system_id`.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;
use warden_events::job::JobOutcome;
use warden_events::machine::MachineInfo;

use super::{required_system_id, system_id, MachineInfoBody};
use crate::api::{JobForRunner, ProgressAnswer, ResultRecorded, RunnerVerified};
use crate::app::AppState;
use crate::fleet::native;
use crate::http::auth::Runner;
use crate::http::context::RequestContext;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::Json;
use crate::http::params;
use crate::http::routes::optional_json;

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The machine; not beginning with `pw-` (Project-W sessions' machines).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    system_id: Option<String>,
    #[serde(default, deserialize_with = "params::optional_object")]
    info: Option<MachineInfoBody>,
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
        (status = 200, description = "the token is valid", body = RunnerVerified),
        (status = 403, description = "the runner was invalidated", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn verify(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<web::Json<RunnerVerified>, ApiError> {
    let body: VerifyBody = optional_json(&request, &body)?.unwrap_or_default();
    let system_id = system_id(&request, body.system_id)?;
    let info = body.info.map(MachineInfo::from);
    let verified = native::verify(&state.fleet, &runner.0, system_id.as_deref(), info, &context.origin).await?;
    Ok(web::Json(verified))
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequestBody {
    /// The machine; not beginning with `pw-` (Project-W sessions' machines).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    system_id: Option<String>,
    #[serde(default, deserialize_with = "params::optional_object")]
    info: Option<MachineInfoBody>,
    /// Long poll: wait up to this long for a job (capped by
    /// `runners.long_poll_max`); 0 answers at once.
    #[serde(default, deserialize_with = "params::integer")]
    #[schema(minimum = 0)]
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
        (status = 422, description = "a field has a wrong value", body = ErrorBody)
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
    let call = native::MachineCall {
        runner: &runner.0,
        system_id: &system_id,
        origin: &context.origin,
    };
    let info = body.info.map(MachineInfo::from);
    let wait = Duration::from_secs(body.wait_seconds);
    Ok(match native::request_job(&state.fleet, call, info, wait).await? {
        Some(job) => HttpResponse::Ok().json(job),
        None => HttpResponse::NoContent().finish(),
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    /// The machine; not beginning with `pw-` (Project-W sessions' machines).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    system_id: Option<String>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    progress: f64,
    #[serde(default)]
    #[schema(pattern = "^[^\\x00]*$")]
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
        (status = 200, description = "whether to abort", body = ProgressAnswer),
        (status = 404, description = "no such object", body = ErrorBody),
        (status = 409, description = "conflicts with the current state", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn report_progress(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    job_id: web::Path<Uuid>,
    body: Json<ProgressBody>,
) -> Result<web::Json<ProgressAnswer>, ApiError> {
    let body = body.into_inner();
    let system_id = required_system_id(&request, body.system_id)?;
    let call = native::MachineCall {
        runner: &runner.0,
        system_id: &system_id,
        origin: &context.origin,
    };
    let answer = native::report_progress(&state.fleet, call, *job_id, body.progress, body.message).await?;
    Ok(web::Json(answer))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultBody {
    /// The machine; not beginning with `pw-` (Project-W sessions' machines).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
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
        (status = 200, description = "finished", body = ResultRecorded),
        (status = 404, description = "no such object", body = ErrorBody),
        (status = 409, description = "conflicts with the current state", body = ErrorBody),
        (status = 410, description = "the job's submitter was deleted: the result is not kept, the job is cancelled", body = ErrorBody),
        (status = 422, description = "a field has a wrong value, or the result names files not stored for this job", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn submit_result(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    request: HttpRequest,
    job_id: web::Path<Uuid>,
    body: Json<ResultBody>,
) -> Result<web::Json<ResultRecorded>, ApiError> {
    let body = body.into_inner();
    let system_id = required_system_id(&request, body.system_id)?;
    let call = native::MachineCall {
        runner: &runner.0,
        system_id: &system_id,
        origin: &context.origin,
    };
    let recorded = native::submit_result(&state.fleet, call, *job_id, body.outcome, body.result).await?;
    Ok(web::Json(recorded))
}

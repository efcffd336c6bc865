//! warden's native runner protocol (GitLab style): `verify`, then
//! `jobs/request` (long poll), `jobs/{id}/progress`, `jobs/{id}/result`,
//! each naming the machine by `system_id`.

use std::time::Duration;
use utoipa::ToSchema;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use warden_events::job::JobOutcome;
use warden_events::machine::MachineInfo;

use crate::app::AppState;
use crate::domain::ErrorCode;
use crate::fleet::dispatcher::{self, Candidate, Delivery};
use crate::fleet::jobs::{self, Assignment, Taker};
use crate::http::auth::Runner;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json::Json;
use crate::http::routes::optional_json;

use super::{job_for_runner, machine, metadata, required_system_id, system_id, JobForRunner, MachineInfoBody};
use crate::http::params;
use warden_events::job::JobKind;

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
    let machine_id = match system_id(&request, body.system_id)? {
        Some(system_id) => Some(
            machine(&state, &runner, &context, &system_id, body.info.map(MachineInfo::from))
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
    let machine = machine(&state, &runner, &context, &system_id, body.info.map(MachineInfo::from)).await?;
    let wait = Duration::from_secs(body.wait_seconds).min(state.config.runners.long_poll_max);
    if runner.0.paused {
        // Nothing for a paused runner; answer at the end of the wait so a
        // polling runner does not spin.
        tokio::time::sleep(wait).await;
        return Ok(HttpResponse::NoContent().finish());
    }
    let current = jobs::current_job(&state.fleet, machine.machine_id).await?;
    if let Some(job_id) = current {
        return job_for_runner(&state, job_id).await;
    }
    let candidate = Candidate {
        taker: Taker {
            machine,
            tags: runner.0.tags.clone(),
            kind: JobKind::Native,
        },
        priority: runner.0.priority,
        metadata: metadata(&runner, &context),
    };
    if wait.is_zero() {
        // No wait wanted: one attempt now, outside the waiting room.
        let elsewhere = dispatcher::waiting_elsewhere(&state.fleet).await?;
        let better_placed = dispatcher::better_placed_than(&elsewhere, candidate.priority);
        return match jobs::assign_next(&state.fleet, &candidate.taker, &candidate.metadata, &better_placed).await? {
            Assignment::Assigned(job) => Ok(HttpResponse::Ok().json(JobForRunner::from(*job))),
            Assignment::Busy(job_id) => job_for_runner(&state, job_id).await,
            Assignment::NoJob | Assignment::RunnerUnavailable => Ok(HttpResponse::NoContent().finish()),
        };
    }
    match state.fleet.dispatcher.wait_for_job(candidate, wait).await {
        Some(Delivery::Job(job)) => Ok(HttpResponse::Ok().json(JobForRunner::from(*job))),
        Some(Delivery::Busy(job_id)) => job_for_runner(&state, job_id).await,
        Some(Delivery::RunnerUnavailable) | None => Ok(HttpResponse::NoContent().finish()),
    }
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
    body: Json<ProgressBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let system_id = required_system_id(&request, body.system_id)?;
    let machine = machine(&state, &runner, &context, &system_id, None).await?;
    let metadata = metadata(&runner, &context);
    let answer = jobs::report_progress(&state.fleet, machine, *job_id, body.progress, body.message, &metadata).await?;
    Ok(HttpResponse::Ok().json(answer))
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
        (status = 200, description = "finished", body = serde_json::Value, example = json!({"id": "0194...", "status": "succeeded"})),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody),
        (status = 409, description = "conflicts with the current state", body = ErrorBody),
        (status = 410, description = "the job's submitter was deleted: the result is not kept, the job is cancelled", body = ErrorBody),
        (status = 422, description = "a field has a wrong value, or the result names files not stored for this job", body = ErrorBody),
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
    body: Json<ResultBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let system_id = required_system_id(&request, body.system_id)?;
    let machine = machine(&state, &runner, &context, &system_id, None).await?;
    let metadata = metadata(&runner, &context);
    let foreign = crate::fleet::files::foreign_references(&state.db, *job_id, machine, &body.result).await?;
    if !foreign.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ForeignFileReference,
            "the result names files that were not stored for this job by this runner machine",
        ));
    }
    match jobs::finish(&state.fleet, machine, *job_id, body.outcome, body.result, &metadata).await? {
        jobs::Finished::Recorded => {
            Ok(HttpResponse::Ok().json(json!({ "id": *job_id, "status": body.outcome.as_str() })))
        }
        jobs::Finished::SubmitterGone => Err(ApiError::new(
            ErrorCode::UserDeleted,
            "the job's submitter was deleted: the result is not kept, and the job is cancelled",
        )),
    }
}

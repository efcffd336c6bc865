//! Jobs for users: submit, list one's own, look at one, cancel.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::queries::{check_limit, JobStatus};
use crate::api::JobAccepted;
use crate::app::AppState;
use crate::domain::ErrorCode;
use crate::fleet::jobs;
use crate::fleet::jobs::JobView;
use crate::http::auth::AuthenticatedUser;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json::Json;
use crate::http::params::{self, TagList};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    payload: serde_json::Value,
    #[serde(default)]
    #[schema(value_type = TagList)]
    required_tags: Vec<String>,
    #[serde(default, deserialize_with = "params::integer")]
    #[schema(minimum = -1000, maximum = 1000)]
    priority: i32,
}

/// Submits a job to the queue.
#[utoipa::path(
    post,
    path = "/api/jobs",
    tag = "jobs",
    request_body = SubmitBody,
    responses(
        (status = 201, description = "queued", body = JobAccepted, example = json!({"id": "0194...", "status": "queued"})),
        (status = 400, description = "malformed query or body", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn submit(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<SubmitBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let metadata = context.metadata(user.actor());
    let id = jobs::submit(
        &state.fleet,
        user.user_id,
        body.payload,
        body.required_tags,
        body.priority,
        &metadata,
    )
    .await?;
    Ok(HttpResponse::Created().json(JobAccepted {
        id,
        status: "queued".into(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    #[param(inline)]
    pub status: Option<JobStatus>,
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: i64,
}

fn default_limit() -> i64 {
    100
}

impl ListQuery {
    pub fn validated(self) -> Result<(Option<String>, i64), ApiError> {
        Ok((self.status.map(super::queries::word), check_limit(self.limit)?))
    }
}

/// The caller's own jobs, newest first.
#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "jobs", body = Vec<JobView>),
        (status = 400, description = "malformed query or body", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn list_own(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (status, limit) = query.into_inner().validated()?;
    let jobs = jobs::list(&state.fleet, Some(user.user_id), status.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(jobs))
}

/// One job.
///
/// The submitter's own, or any with an admin-scoped token.
#[utoipa::path(
    get,
    path = "/api/jobs/{id}",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "job id")),
    responses(
        (status = 200, description = "the job", body = JobView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    job_id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    match jobs::get(&state.fleet, *job_id).await? {
        Some(job) if job.submitted_by == user.user_id || user.admin_scope => Ok(HttpResponse::Ok().json(job)),
        _ => Err(ApiError::new(ErrorCode::JobNotFound, "job not found")),
    }
}

/// Cancels a job.
///
/// A queued job is cancelled at once; a running one is told to abort.
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "job id")),
    responses(
        (status = 200, description = "the job after the request", body = JobView),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody),
        (status = 409, description = "conflicts with the current state", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn cancel(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    job_id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let metadata = context.metadata(user.actor());
    jobs::cancel(&state.fleet, *job_id, user.user_id, user.admin_scope, &metadata).await?;
    let job = jobs::get(&state.fleet, *job_id).await?;
    Ok(HttpResponse::Ok().json(job))
}

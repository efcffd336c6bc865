//! Jobs for users: submit, list one's own, look at one, cancel.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::queries::{check_limit, JobStatus};
use crate::api::ErrorCode;
use crate::api::JobAccepted;
use crate::app::AppState;
use crate::fleet::jobs::JobView;
use crate::fleet::{files, jobs};
use crate::http::auth::AuthenticatedUser;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json::Json;
use crate::http::params::{self, TagList};
use warden_events::job::{FileRef, JobKind};

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
    /// A file the caller uploaded (`POST /api/files`), handed to the runner.
    #[serde(default)]
    input_file: Option<Uuid>,
    /// Where the job goes: `instance` (the default: any instance runner),
    /// or a `project:<path>` or `group:<path>` the caller is a member of
    /// (its runners, those of the groups above it, and instance runners).
    #[serde(default)]
    #[schema(
        pattern = "^(instance|group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}|project:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){1,19})$"
    )]
    scope: Option<String>,
}

/// A job for a Project-W runner: its settings and its audio or video.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectWJobBody {
    /// Project-W's job settings, handed to the runner exactly as given.
    #[schema(value_type = Object)]
    settings: serde_json::Map<String, serde_json::Value>,
    /// An `audio/*` or `video/*` file the caller uploaded (`POST /api/files`).
    input_file: Uuid,
    #[serde(default)]
    #[schema(value_type = TagList)]
    required_tags: Vec<String>,
    #[serde(default, deserialize_with = "params::integer")]
    #[schema(minimum = -1000, maximum = 1000)]
    priority: i32,
    /// Where the job goes (as for `POST /api/jobs`).
    #[serde(default)]
    #[schema(
        pattern = "^(instance|group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}|project:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){1,19})$"
    )]
    scope: Option<String>,
}

/// The scope a job goes to, if `user` may submit there; none for the
/// instance.
async fn destination(
    state: &AppState,
    user: &AuthenticatedUser,
    scope: Option<&str>,
) -> Result<Option<Uuid>, ApiError> {
    let reference: crate::api::ScopeRef = match scope {
        Some(raw) => raw.parse()?,
        None => return Ok(None),
    };
    let scope = crate::scopes::destination(&state.db, user.caller(), &reference, false).await?;
    Ok(scope.map(|scope| scope.id))
}

/// The caller's own uploaded file.
async fn own_file(state: &AppState, user: &AuthenticatedUser, file_id: Uuid) -> Result<FileRef, ApiError> {
    match files::find(&state.db, file_id).await? {
        Some(file) if file.owner_id == user.user_id => Ok(file.reference),
        _ => Err(ApiError::new(ErrorCode::FileNotFound, "no such file of yours")),
    }
}

/// Submits a job for a Project-W runner (only those get it).
#[utoipa::path(
    post,
    path = "/api/jobs/project_w",
    tag = "jobs",
    request_body = ProjectWJobBody,
    responses(
        (status = 201, description = "queued", body = JobAccepted, example = json!({"id": "0194...", "status": "queued"})),
        (status = 403, description = "the caller is no member of the scope", body = ErrorBody),
        (status = 404, description = "input_file is no file of yours", body = ErrorBody),
        (status = 409, description = "the scope is archived", body = ErrorBody),
        (status = 422, description = "a field has a wrong value, or the file is not audio/* or video/*", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn submit_project_w(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<ProjectWJobBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let scope_id = destination(&state, &user, body.scope.as_deref()).await?;
    let input = own_file(&state, &user, body.input_file).await?;
    if !(input.media_type.starts_with("audio/") || input.media_type.starts_with("video/")) {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "a Project-W job's input_file must be audio/* or video/*",
        ));
    }
    let job = jobs::NewJob {
        kind: JobKind::ProjectW,
        payload: serde_json::Value::Object(body.settings),
        required_tags: body.required_tags,
        priority: body.priority,
        input: Some(input),
        scope_id,
    };
    queue(&state, &user, &context, job).await
}

/// Submits `job` for `user`: 201 with its id.
async fn queue(
    state: &AppState,
    user: &AuthenticatedUser,
    context: &RequestContext,
    job: jobs::NewJob,
) -> Result<HttpResponse, ApiError> {
    let metadata = context.metadata(user.actor());
    let id = jobs::submit(&state.fleet, user.user_id, job, &metadata).await?;
    Ok(HttpResponse::Created().json(JobAccepted {
        id,
        status: "queued".into(),
    }))
}

/// Submits a job for a runner of warden's native protocol.
#[utoipa::path(
    post,
    path = "/api/jobs",
    tag = "jobs",
    request_body = SubmitBody,
    responses(
        (status = 201, description = "queued", body = JobAccepted, example = json!({"id": "0194...", "status": "queued"})),
        (status = 403, description = "the caller is no member of the scope", body = ErrorBody),
        (status = 404, description = "input_file is no file of yours", body = ErrorBody),
        (status = 409, description = "the scope is archived", body = ErrorBody),
        (status = 400, description = "malformed query or body", body = ErrorBody),
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
    let scope_id = destination(&state, &user, body.scope.as_deref()).await?;
    let input = match body.input_file {
        None => None,
        Some(file_id) => Some(own_file(&state, &user, file_id).await?),
    };
    let job = jobs::NewJob {
        kind: JobKind::Native,
        payload: body.payload,
        required_tags: body.required_tags,
        priority: body.priority,
        input,
        scope_id,
    };
    queue(&state, &user, &context, job).await
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
        (status = 400, description = "malformed query or body", body = ErrorBody)
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

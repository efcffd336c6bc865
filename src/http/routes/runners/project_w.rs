//! Project-W's runner protocol, wire-exact (../shared/project-w-runner-protocol.md):
//! `register` opens a session and answers `{id, session_token}`; every
//! later call names the session with `?session_token=`; `heartbeat`
//! (progress in percent) answers `{abort, job_assigned}`;
//! `retrieve_job_info` answers `{id, settings}`; `retrieve_job_audio`
//! streams the job's file; `submit_job_result` takes an error or a
//! transcript; `unregister` ends the session. Ids are the integer numbers
//! of runners and jobs. Only Project-W jobs go to these machines.

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::api::{HeartbeatAnswer, JobInfo, Registered};
use crate::app::AppState;
use crate::fleet::project_w;
use crate::http::auth::{runner_token, Runner};
use crate::http::context::RequestContext;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::Json;
use crate::http::params;

/// What a Project-W runner says about itself when it registers.
#[derive(Deserialize, ToSchema)]
pub struct RegisterBody {
    #[schema(max_length = 40, pattern = "^[^\\x00]*$")]
    name: String,
    #[serde(deserialize_with = "params::integer")]
    #[schema(minimum = 1, maximum = 1000)]
    priority: i32,
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    version: String,
    #[schema(max_length = 40, pattern = "^[^\\x00]*$")]
    git_hash: String,
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    source_code_url: String,
}

/// Project-W: a runner machine starts a session; it gets jobs from now on.
///
/// Each registration is a session and a machine of its own: one runner token may serve many machines.
#[utoipa::path(
    post,
    path = "/api/runners/register",
    tag = "runners (Project-W)",
    request_body = RegisterBody,
    responses(
        (status = 200, description = "the session", body = Registered)
    ),
    security(("runner_token" = []))
)]
pub async fn register(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    body: Json<RegisterBody>,
) -> Result<web::Json<Registered>, ApiError> {
    let body = body.into_inner();
    let registration = project_w::Registration {
        name: body.name,
        priority: body.priority,
        version: body.version,
        git_hash: body.git_hash,
        source_code_url: body.source_code_url,
    };
    Ok(web::Json(
        project_w::register(&state.fleet, &runner.0, registration, &context.origin).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionParams {
    /// The session token `register` answered.
    #[param(pattern = "^wdst_[A-Za-z0-9_-]{43}$")]
    session_token: String,
}

/// A Project-W call: the runner token and the session it names, checked
/// (`fleet::project_w::authenticate`).
pub struct SessionCall(project_w::Call);

fn app_state(request: &HttpRequest) -> &AppState {
    request
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered on every app")
}

fn credentials(request: &HttpRequest) -> Result<project_w::Credentials, ApiError> {
    let runner_token = runner_token(request)?;
    let session_token = web::Query::<SessionParams>::from_query(request.query_string())
        .map_err(|_| ApiError::from(project_w::ProtocolError::InvalidSession))?
        .into_inner()
        .session_token;
    Ok(project_w::Credentials {
        runner_token,
        session_token,
    })
}

/// Checks a call's credentials: in the database, or for a heartbeat from
/// the heartbeat cache when it can be.
async fn authenticated(request: &HttpRequest, heartbeat: bool) -> Result<project_w::Call, actix_web::Error> {
    let credentials = credentials(request)?;
    let origin = RequestContext::extract(request).await?.origin;
    let fleet = &app_state(request).fleet;
    let call = if heartbeat {
        project_w::authenticate_heartbeat(fleet, &credentials, &origin).await
    } else {
        project_w::authenticate(fleet, &credentials, &origin).await
    };
    Ok(call.map_err(ApiError::from)?)
}

impl FromRequest for SessionCall {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { Ok(SessionCall(authenticated(&request, false).await?)) })
    }
}

/// A heartbeat's call: from the heartbeat cache when it can be
/// (`fleet::project_w::authenticate_heartbeat`).
pub struct HeartbeatCall(project_w::Call);

impl FromRequest for HeartbeatCall {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { Ok(HeartbeatCall(authenticated(&request, true).await?)) })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// Progress of the current job in percent (0 while idle).
    #[schema(minimum = 0.0, maximum = 100.0)]
    progress: f64,
}

/// Project-W: keeps the session alive (every 10 s); says whether a job waits and whether to abort it.
///
/// Heartbeats do not append to the log (progress is recorded at most every runners.progress_record_interval).
#[utoipa::path(
    post,
    path = "/api/runners/heartbeat",
    tag = "runners (Project-W)",
    params(SessionParams),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "what to do", body = HeartbeatAnswer),
        (status = 403, description = "no open session with this token", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn heartbeat(
    state: web::Data<AppState>,
    HeartbeatCall(call): HeartbeatCall,
    context: RequestContext,
    body: Json<HeartbeatBody>,
) -> Result<web::Json<HeartbeatAnswer>, ApiError> {
    let answer = project_w::heartbeat(&state.fleet, &call, body.progress, &context.origin).await?;
    Ok(web::Json(answer))
}

/// Project-W: the machine's job and its settings.
#[utoipa::path(
    get,
    path = "/api/runners/retrieve_job_info",
    tag = "runners (Project-W)",
    params(SessionParams),
    responses(
        (status = 200, description = "the job", body = JobInfo),
        (status = 400, description = "no job is assigned", body = ErrorBody),
        (status = 403, description = "no open session with this token", body = ErrorBody),
        (status = 405, description = "the job was aborted", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn retrieve_job_info(
    state: web::Data<AppState>,
    SessionCall(call): SessionCall,
    context: RequestContext,
) -> Result<web::Json<JobInfo>, ApiError> {
    Ok(web::Json(
        project_w::retrieve_job_info(&state.fleet, &call, &context.origin).await?,
    ))
}

/// Project-W: the job's audio or video file, streamed.
#[utoipa::path(
    post,
    path = "/api/runners/retrieve_job_audio",
    tag = "runners (Project-W)",
    params(SessionParams),
    responses(
        (status = 200, description = "the file's bytes, with its audio/* or video/* media type", body = Vec<u8>, content_type = "audio/mpeg"),
        (status = 400, description = "no job is assigned", body = ErrorBody),
        (status = 403, description = "no open session with this token", body = ErrorBody),
        (status = 405, description = "the job was aborted", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn retrieve_job_audio(
    state: web::Data<AppState>,
    SessionCall(call): SessionCall,
    context: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let input = project_w::retrieve_job_audio(&state.fleet, &call, &context.origin).await?;
    Ok(super::super::files::stream_file(&state, &input))
}

/// A Project-W transcript in all its formats. (The OpenAPI description
/// of the body: `fleet::transcripts` reads it as it streams in.)
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transcript {
    as_txt: String,
    as_srt: String,
    as_tsv: String,
    as_vtt: String,
    as_json: serde_json::Value,
}

/// Exactly one of `error_msg` and `transcript`.
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectWResultBody {
    #[serde(default)]
    #[schema(pattern = "^[^\\x00]*$")]
    error_msg: Option<String>,
    #[serde(default)]
    transcript: Option<Transcript>,
}

/// Project-W: the job's result: a transcript, or an error message.
///
/// After an abort, an error message ends the job as cancelled; otherwise as failed. Body up to jobs.max_result_bytes.
#[utoipa::path(
    post,
    path = "/api/runners/submit_job_result",
    tag = "runners (Project-W)",
    params(SessionParams),
    request_body = ProjectWResultBody,
    responses(
        (status = 200, description = "recorded (a JSON string)", body = String, content_type = "application/json", example = json!("Success")),
        (status = 400, description = "no job is assigned", body = ErrorBody),
        (status = 403, description = "no open session with this token", body = ErrorBody),
        (status = 413, description = "larger than jobs.max_result_bytes", body = ErrorBody),
        (status = 422, description = "neither or both of error_msg and transcript", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn submit_job_result(
    state: web::Data<AppState>,
    SessionCall(call): SessionCall,
    context: RequestContext,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<&'static str>, ApiError> {
    let declared_length = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let submitted =
        project_w::submit_job_result(&state.fleet, &call, &context.origin, declared_length, payload).await?;
    Ok(web::Json(match submitted {
        project_w::Submitted::Recorded => "Success",
        // Any error would stop the real runner: a 200 that says so.
        project_w::Submitted::Discarded => "Discarded: the job's submitter was deleted; nothing of the result is kept",
    }))
}

/// Project-W: the session ends; a job it held goes back to the queue.
#[utoipa::path(
    post,
    path = "/api/runners/unregister",
    tag = "runners (Project-W)",
    params(SessionParams),
    responses(
        (status = 200, description = "unregistered (a JSON string)", body = String, content_type = "application/json", example = json!("Success")),
        (status = 403, description = "no open session with this token", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn unregister(
    state: web::Data<AppState>,
    SessionCall(call): SessionCall,
    context: RequestContext,
) -> Result<web::Json<&'static str>, ApiError> {
    // The session token is refused everywhere once this answers.
    project_w::unregister(&state.fleet, &call, &context.origin).await?;
    Ok(web::Json("Success"))
}

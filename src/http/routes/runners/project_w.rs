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
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use warden_events::job::{FileRef, JobKind, JobOutcome};
use warden_events::machine::MachineInfo;

use super::{machine, metadata};
use crate::app::AppState;
use crate::domain::job::MachineRef;
use crate::domain::ErrorCode;
use crate::fleet::dispatcher::Candidate;
use crate::fleet::jobs::{self, JobView, Taker};
use crate::fleet::transcripts::{self, ProjectWResult, ResultError};
use crate::fleet::{files, heartbeat_cache, machines, runners as fleet_runners, sessions};
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

/// The answer to `register`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// The runner's integer id (0 for a runner created before numbers).
    pub id: i64,
    /// Names this session in every later call (`?session_token=`).
    pub session_token: String,
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
        (status = 200, description = "the session", body = Registered),
        (status = 401, description = "no valid runner token", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn register(
    state: web::Data<AppState>,
    runner: Runner,
    context: RequestContext,
    body: Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    // As declared: what the real runner's own models allow.
    if !(1..=1000).contains(&body.priority) {
        return Err(ApiError::new(ErrorCode::InvalidPriority, "priority is 1 to 1000"));
    }
    let fits = |text: &str, most: usize| text.chars().count() <= most && !text.contains('\0');
    if !(fits(&body.name, 40)
        && fits(&body.git_hash, 40)
        && fits(&body.version, 256)
        && fits(&body.source_code_url, 256))
    {
        return Err(ApiError::new(
            ErrorCode::TextTooLong,
            "name and git_hash are at most 40 characters, version and source_code_url 256",
        ));
    }
    let session_id = Uuid::now_v7();
    let info = MachineInfo {
        name: Some(body.name),
        version: Some(body.version),
        revision: Some(body.git_hash),
        source_code_url: Some(body.source_code_url),
        priority: Some(body.priority),
        ..Default::default()
    };
    let system_id = sessions::Session::system_id(session_id);
    let machine = machine(&state, &runner, &context, &system_id, Some(info)).await?;
    let session_token = sessions::open(&state.db, session_id, runner.0.runner_id, machine.machine_id).await?;
    state.fleet.dispatcher.go_online(Candidate {
        taker: Taker {
            machine,
            tags: runner.0.tags.clone(),
            kind: JobKind::ProjectW,
        },
        priority: body.priority,
        metadata: metadata(&runner, &context),
    });
    Ok(HttpResponse::Ok().json(Registered {
        id: runner.0.number.unwrap_or(0),
        session_token,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionParams {
    /// The session token `register` answered.
    #[param(pattern = "^wdst_[A-Za-z0-9_-]{43}$")]
    session_token: String,
}

/// A Project-W call: the runner token and the session it names.
pub struct SessionCall {
    runner: Runner,
    session: sessions::Session,
    /// The machine's current job as the session's authentication read it.
    current_job: Option<Uuid>,
}

impl SessionCall {
    fn machine(&self) -> MachineRef {
        MachineRef {
            runner_id: self.session.runner_id,
            machine_id: self.session.machine_id,
        }
    }

    /// Checks the runner token and the session in the database. A
    /// heartbeat (`remember`) keeps what it found in the heartbeat cache
    /// when the machine has no job and the token is the runner's current one.
    async fn authenticate(request: &HttpRequest, remember: bool) -> Result<SessionCall, actix_web::Error> {
        let runner_token = runner_token(request)?;
        let session_token = session_token(request)?;
        let state = app_state(request);
        let timeout = state.config.runners.online_timeout;
        let cache = &state.fleet.heartbeat_cache;
        let epoch = cache.epoch();
        // Both statements go out together on one connection (one
        // round trip); the runner's answer is judged first, so an
        // unknown or invalidated runner token gets its own error
        // whatever the session lookup found.
        let connection = state.db.get().await.map_err(ApiError::from)?;
        let (runner, session) = tokio::join!(
            fleet_runners::authenticate(&connection, &runner_token),
            sessions::look_up(&connection, &session_token, timeout)
        );
        drop(connection);
        let runner = Runner::admit(state, runner)?;
        let sessions::SessionWithJob { session, current_job } = session
            .and_then(|found| found.for_runner(runner.0.runner_id))
            .map_err(|error| match error {
                sessions::SessionError::Invalid => invalid_session(),
                sessions::SessionError::Store(error) => error.into(),
            })?;
        if remember && current_job.is_none() && !runner.0.through_previous_token {
            cache.remember(epoch, &runner_token, &session_token, &runner.0, session);
        }
        let call = SessionCall {
            runner,
            session,
            current_job,
        };
        call.contact(state, request).await?;
        Ok(call)
    }

    /// Every call is a sign of life of the session and a contact of its machine.
    async fn contact(&self, state: &AppState, request: &HttpRequest) -> Result<(), actix_web::Error> {
        let timeout = state.config.runners.online_timeout;
        sessions::seen(&state.fleet.seen, self.session.id, timeout);
        let context = RequestContext::extract(request).await?;
        let system_id = sessions::Session::system_id(self.session.id);
        machine(state, &self.runner, &context, &system_id, None).await?;
        Ok(())
    }
}

fn app_state(request: &HttpRequest) -> &AppState {
    request
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered on every app")
}

fn invalid_session() -> ApiError {
    ApiError::new(ErrorCode::InvalidSession, sessions::SessionError::Invalid.to_string())
}

fn session_token(request: &HttpRequest) -> Result<String, ApiError> {
    Ok(web::Query::<SessionParams>::from_query(request.query_string())
        .map_err(|_| invalid_session())?
        .into_inner()
        .session_token)
}

impl FromRequest for SessionCall {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { SessionCall::authenticate(&request, false).await })
    }
}

/// A heartbeat's call: from the heartbeat cache when this instance checked
/// the same runner token and idle session recently and no change was
/// notified since (`fleet/heartbeat_cache.rs`), else as [`SessionCall`].
pub struct HeartbeatCall(SessionCall);

impl FromRequest for HeartbeatCall {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let state = app_state(&request);
            let cached = state
                .fleet
                .heartbeat_cache
                .get(&runner_token(&request)?, &session_token(&request)?);
            let Some((runner, session)) = cached else {
                return Ok(HeartbeatCall(SessionCall::authenticate(&request, true).await?));
            };
            let call = SessionCall {
                runner: Runner::admit(state, Ok(runner))?,
                session,
                current_job: None,
            };
            call.contact(state, &request).await?;
            Ok(HeartbeatCall(call))
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// Progress of the current job in percent (0 while idle).
    #[schema(minimum = 0.0, maximum = 100.0)]
    progress: f64,
}

/// The answer to a heartbeat.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// Stop the current job (then `job_assigned` is false).
    pub abort: bool,
    /// A job waits for this machine (retrieve it).
    pub job_assigned: bool,
}

/// The machine's current job, if any (only ever a Project-W job).
async fn current_job(state: &AppState, call: &SessionCall) -> Result<Option<JobView>, ApiError> {
    match call.current_job {
        Some(job_id) => Ok(jobs::get(&state.fleet, job_id)
            .await?
            .filter(|job| job.kind == JobKind::ProjectW.as_str())),
        None => Ok(None),
    }
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
        (status = 401, description = "no valid runner token", body = ErrorBody),
        (status = 403, description = "no open session with this token", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn heartbeat(
    state: web::Data<AppState>,
    HeartbeatCall(call): HeartbeatCall,
    context: RequestContext,
    body: Json<HeartbeatBody>,
) -> Result<HttpResponse, ApiError> {
    let progress = body.progress;
    if !(0.0..=100.0).contains(&progress) {
        return Err(ApiError::new(
            ErrorCode::InvalidProgress,
            "progress is a percentage, 0 to 100",
        ));
    }
    let job = current_job(&state, &call).await?;
    if !state.fleet.dispatcher.seen(call.session.machine_id, job.is_some()) {
        // Registered through another instance (the session is shared in
        // the database): this one offers it work from now on too.
        let priority = machines::registered_priority(&state.fleet, call.session.machine_id)
            .await?
            .unwrap_or(0);
        state.fleet.dispatcher.go_online(Candidate {
            taker: Taker {
                machine: call.machine(),
                tags: call.runner.0.tags.clone(),
                kind: JobKind::ProjectW,
            },
            priority,
            metadata: metadata(&call.runner, &context),
        });
        state.fleet.dispatcher.seen(call.session.machine_id, job.is_some());
    }
    let Some(job) = job else {
        return Ok(HttpResponse::Ok().json(HeartbeatAnswer {
            abort: false,
            job_assigned: false,
        }));
    };
    if job.retrieved_at.is_none() {
        // Not fetched yet: the machine is idle and must fetch it. It is
        // never told to abort (an idle runner ignores that; a job
        // cancelled before its machine fetched it ends at once).
        return Ok(HttpResponse::Ok().json(HeartbeatAnswer {
            abort: false,
            job_assigned: true,
        }));
    }
    // One scale inside: 0.0 to 1.0.
    let metadata = metadata(&call.runner, &context);
    let answer = jobs::report_progress(&state.fleet, call.machine(), job.id, progress / 100.0, None, &metadata).await?;
    Ok(HttpResponse::Ok().json(HeartbeatAnswer {
        abort: answer.abort,
        job_assigned: !answer.abort,
    }))
}

/// The job a Project-W runner is told about.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct JobInfo {
    /// The job's integer id.
    pub id: i64,
    /// The job's Project-W settings, exactly as submitted.
    pub settings: serde_json::Value,
}

fn no_job_assigned() -> ApiError {
    ApiError::new(ErrorCode::NoJobAssigned, "no job is assigned to this runner machine")
}

/// The machine's job, unless it has none (400) or it was aborted (405),
/// recorded as fetched: the machine works on it from now on.
async fn assigned_job(state: &AppState, call: &SessionCall, context: &RequestContext) -> Result<JobView, ApiError> {
    let job = current_job(state, call).await?.ok_or_else(no_job_assigned)?;
    if job.cancel_requested {
        return Err(ApiError::new(
            ErrorCode::JobAborted,
            "the job was aborted; submit its result with an error_msg",
        ));
    }
    if job.retrieved_at.is_none() {
        let metadata = metadata(&call.runner, context);
        match jobs::retrieve(&state.fleet, call.machine(), job.id, &metadata).await {
            Ok(()) => {}
            // Cancelled or taken back a moment ago.
            Err(crate::log::commands::CommandError::Domain(_)) => return Err(no_job_assigned()),
            Err(other) => return Err(other.into()),
        }
    }
    Ok(job)
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
        (status = 401, description = "no valid runner token", body = ErrorBody),
        (status = 403, description = "no open session with this token", body = ErrorBody),
        (status = 405, description = "the job was aborted", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn retrieve_job_info(
    state: web::Data<AppState>,
    call: SessionCall,
    context: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let job = assigned_job(&state, &call, &context).await?;
    Ok(HttpResponse::Ok().json(JobInfo {
        id: job.number.unwrap_or(0),
        settings: job.payload,
    }))
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
        (status = 401, description = "no valid runner token", body = ErrorBody),
        (status = 403, description = "no open session with this token", body = ErrorBody),
        (status = 405, description = "the job was aborted", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn retrieve_job_audio(
    state: web::Data<AppState>,
    call: SessionCall,
    context: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let job = assigned_job(&state, &call, &context).await?;
    let input: FileRef = job
        .input
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::FileNotFound, "this job has no input file"))?;
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
        (status = 401, description = "no valid runner token", body = ErrorBody),
        (status = 403, description = "no open session with this token", body = ErrorBody),
        (status = 413, description = "larger than jobs.max_result_bytes", body = ErrorBody),
        (status = 422, description = "neither or both of error_msg and transcript", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn submit_job_result(
    state: web::Data<AppState>,
    call: SessionCall,
    context: RequestContext,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Everything that can refuse the result is decided before a byte of
    // its body is read.
    let job = current_job(&state, &call).await?.ok_or_else(no_job_assigned)?;
    let metadata = metadata(&call.runner, &context);
    if jobs::submitter_deleted(&state.fleet, &job).await? {
        // Nothing of it is kept: the job ends cancelled and the machine is
        // free. The runner gets a 200 (any error would stop the real
        // runner), saying so.
        jobs::finish(
            &state.fleet,
            call.machine(),
            job.id,
            JobOutcome::Cancelled,
            serde_json::Value::Null,
            &metadata,
        )
        .await?;
        return Ok(HttpResponse::Ok().json("Discarded: the job's submitter was deleted; nothing of the result is kept"));
    }
    let max_bytes = state.config.jobs.max_result_bytes;
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_bytes as u64) {
        return Err(result_error(ResultError::TooLarge(max_bytes)));
    }
    let limits = files::Limits::of(&state.config.jobs);
    let result = transcripts::read(&state.db, &job, call.machine(), payload, limits, max_bytes)
        .await
        .map_err(result_error)?;
    let (outcome, recorded) = match result {
        ProjectWResult::Failed { error_msg } => {
            let outcome = if job.cancel_requested {
                JobOutcome::Cancelled
            } else {
                JobOutcome::Failed
            };
            (outcome, json!({ "error_msg": error_msg }))
        }
        ProjectWResult::Transcript { files: stored } => {
            let formats: serde_json::Map<String, serde_json::Value> = stored
                .into_iter()
                .map(|(key, file)| (key.to_owned(), serde_json::to_value(file).expect("file refs serialise")))
                .collect();
            (JobOutcome::Succeeded, json!({ "transcript": formats }))
        }
    };
    if let Err(error) = jobs::finish(
        &state.fleet,
        call.machine(),
        job.id,
        outcome,
        recorded.clone(),
        &metadata,
    )
    .await
    {
        // Not this machine's job any more (taken back while the result
        // streamed in): its files go, nothing refers to them.
        for file in recorded["transcript"]
            .as_object()
            .into_iter()
            .flat_map(|formats| formats.values())
        {
            if let Some(file_id) = file["file_id"].as_str().and_then(|id| id.parse().ok()) {
                files::remove_file(&state.db, file_id).await;
            }
        }
        return Err(error.into());
    }
    Ok(HttpResponse::Ok().json("Success"))
}

fn result_error(error: ResultError) -> ApiError {
    match error {
        ResultError::TooLarge(_) => ApiError::new(ErrorCode::PayloadTooLarge, error.to_string()),
        ResultError::Malformed(_) => ApiError::new(ErrorCode::MalformedJson, error.to_string()),
        ResultError::Invalid(_) => ApiError::new(ErrorCode::InvalidField, error.to_string()),
        ResultError::File(error) => super::super::files::file_error(error),
    }
}

/// Project-W: the session ends; a job it held goes back to the queue.
#[utoipa::path(
    post,
    path = "/api/runners/unregister",
    tag = "runners (Project-W)",
    params(SessionParams),
    responses(
        (status = 200, description = "unregistered (a JSON string)", body = String, content_type = "application/json", example = json!("Success")),
        (status = 401, description = "no valid runner token", body = ErrorBody),
        (status = 403, description = "no open session with this token", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody)
    ),
    security(("runner_token" = []))
)]
pub async fn unregister(
    state: web::Data<AppState>,
    call: SessionCall,
    context: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let connection = state.db.get().await?;
    sessions::close(&connection, call.session.id, "unregistered").await?;
    drop(connection);
    state.fleet.dispatcher.go_offline(call.session.machine_id);
    let metadata = metadata(&call.runner, &context);
    jobs::requeue_from(&state.fleet, call.machine(), "runner machine unregistered", &metadata).await?;
    // The session token is refused everywhere once this answers.
    heartbeat_cache::wait_out_cached_answers().await;
    Ok(HttpResponse::Ok().json("Success"))
}

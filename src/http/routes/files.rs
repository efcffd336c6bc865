//! Job files for users: upload an input file (streamed, never held whole
//! in memory), download one's own files and a job's results.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;
use warden_events::job::FileRef;

use crate::api::ErrorCode;
use crate::app::AppState;
use crate::fleet::files;
use crate::fleet::jobs;
use crate::http::auth::AuthenticatedUser;
use crate::http::error::{ApiError, ErrorBody};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The file's name with its extension (e.g. `talk.mp3`), given back on download.
    #[serde(default)]
    #[param(max_length = 255, pattern = "^[^/\\x00-\\x1f\\x7f]*\\.[A-Za-z][A-Za-z0-9]{0,9}$")]
    name: Option<String>,
}

/// The media type a request body declares, as `type/subtype`.
fn media_type(request: &HttpRequest) -> Result<String, ApiError> {
    let unsupported = || {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the file as the raw body with its Content-Type, e.g. audio/mpeg",
        )
    };
    let value = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unsupported)?;
    let mime: mime::Mime = value.parse().map_err(|_| unsupported())?;
    Ok(mime.essence_str().to_owned())
}

/// Uploads a file (the raw body, with its media type as Content-Type) for a
/// job to use as its input; streamed into storage.
///
/// At most `jobs.max_file_bytes` (1 GiB by default); a user's files take at most `jobs.max_user_bytes`, and at most `jobs.max_concurrent_uploads` of a user's uploads run at once. An upload that sends nothing for `jobs.upload_idle_timeout`, or takes longer than `jobs.upload_deadline`, is given up.
#[utoipa::path(
    post,
    path = "/api/files",
    tag = "jobs",
    params(UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file's bytes; Content-Type is the file's media type (e.g. audio/mpeg)"),
    responses(
        (status = 201, description = "stored: pass `file_id` as a job's `input_file`", body = FileRef),
        (status = 408, description = "the body stalled or took too long", body = ErrorBody),
        (status = 413, description = "larger than jobs.max_file_bytes, or past the user's jobs.max_user_bytes", body = ErrorBody),
        (status = 415, description = "no media type", body = ErrorBody),
        (status = 429, description = "too many uploads of this user in progress; see Retry-After", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn upload(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    request: HttpRequest,
    params: web::Query<UploadParams>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let media_type = media_type(&request)?;
    let name = params.into_inner().name;
    if let Some(name) = &name {
        if !valid_file_name(name) {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "name is up to 255 characters without '/' or control characters, ending in an extension like .mp3",
            ));
        }
    }
    // The size a client declares is checked before a byte is read.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let stored = files::store(
        &state.db,
        user.user_id,
        name,
        &media_type,
        body,
        files::Limits::of(&state.config.jobs),
        declared,
    )
    .await?;
    Ok(HttpResponse::Created().json(stored))
}

/// As declared: at most 255 characters, no '/' or control characters,
/// and an extension (a letter, then up to 9 letters or digits).
fn valid_file_name(name: &str) -> bool {
    let Some((_, extension)) = name.rsplit_once('.') else {
        return false;
    };
    let extension_ok = extension.len() <= 10
        && extension.starts_with(|c: char| c.is_ascii_alphabetic())
        && extension.chars().all(|c| c.is_ascii_alphanumeric());
    extension_ok
        && name.chars().count() <= 255
        && !name
            .chars()
            .any(|c| c == '/' || ('\0'..='\x1f').contains(&c) || c == '\x7f')
}

/// The bytes of a stored file as an answer, streamed chunk by chunk.
pub fn stream_file(state: &AppState, file: &FileRef) -> HttpResponse {
    let body = files::read(state.db.clone(), file.file_id)
        .map(|chunk| chunk.map_err(actix_web::error::ErrorInternalServerError));
    let mut response = HttpResponse::Ok();
    response.insert_header((header::CONTENT_TYPE, file.media_type.clone()));
    if let Some(name) = &file.name {
        response.insert_header(attachment(name));
    }
    response.no_chunking(file.size as u64).streaming(body)
}

/// `Content-Disposition: attachment` naming the file; a name that is not
/// plain ASCII goes in `filename*` (RFC 6266), as a header must be ASCII.
fn attachment(name: &str) -> header::ContentDisposition {
    use header::{Charset, DispositionParam, DispositionType, ExtendedValue};
    let plain = name.chars().all(|c| c.is_ascii_graphic() || c == ' ') && !name.contains(['"', '\\']);
    let parameter = if plain {
        DispositionParam::Filename(name.to_owned())
    } else {
        DispositionParam::FilenameExt(ExtendedValue {
            charset: Charset::Ext("UTF-8".into()),
            language_tag: None,
            value: name.as_bytes().to_vec(),
        })
    };
    header::ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![parameter],
    }
}

/// Downloads one of the caller's files (admins: any).
#[utoipa::path(
    get,
    path = "/api/files/{id}",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "file id")),
    responses(
        (status = 200, description = "the file's bytes, with its media type", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 404, description = "no such file of yours", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn download(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    file_id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    match files::find(&state.db, *file_id).await? {
        Some(file) if file.owner_id == user.user_id || user.admin_scope => Ok(stream_file(&state, &file.reference)),
        _ => Err(ApiError::new(ErrorCode::FileNotFound, "no such file of yours")),
    }
}

/// Deletes one of the caller's files (admins: any), unless an unfinished
/// job uses it as its input: frees room under `jobs.max_user_bytes`.
#[utoipa::path(
    delete,
    path = "/api/files/{id}",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "file id")),
    responses(
        (status = 200, description = "deleted", body = crate::api::Outcome),
        (status = 404, description = "no such file of yours", body = ErrorBody),
        (status = 409, description = "an unfinished job uses it", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    file_id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    match files::delete(&state.db, *file_id, user.user_id, user.admin_scope).await {
        Ok(()) => Ok(HttpResponse::Ok().json(crate::api::Outcome::new(*file_id, "deleted"))),
        Err(files::DeleteError::NotFound) => Err(ApiError::new(ErrorCode::FileNotFound, "no such file of yours")),
        Err(error @ files::DeleteError::InUse) => Err(ApiError::new(ErrorCode::FileInUse, error.to_string())),
        Err(files::DeleteError::Store(error)) => Err(error.into()),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultParams {
    /// A Project-W transcript format.
    #[param(pattern = "^(txt|srt|tsv|vtt|json)$")]
    format: String,
}

/// Downloads a format of a job's transcript (the submitter's, or any with
/// an admin-scoped token).
#[utoipa::path(
    get,
    path = "/api/jobs/{id}/result",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "job id"), ResultParams),
    responses(
        (status = 200, description = "the transcript in that format", body = String, content_type = "text/plain"),
        (status = 404, description = "no such job, or no result in that format", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn job_result(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    job_id: web::Path<Uuid>,
    params: web::Query<ResultParams>,
) -> Result<HttpResponse, ApiError> {
    let job = match jobs::get(&state.fleet, *job_id).await? {
        Some(job) if job.submitted_by == user.user_id || user.admin_scope => job,
        _ => return Err(ApiError::new(ErrorCode::JobNotFound, "job not found")),
    };
    let none = || {
        ApiError::new(
            ErrorCode::ResultNotFound,
            format!("this job has no {} transcript", params.format),
        )
    };
    let Some(named) = transcript_file(&job, &params.format) else {
        return Err(none());
    };
    // Only a file stored for this job, by the machine that finished it,
    // for its submitter: a result cannot make another file readable.
    match files::find(&state.db, named.file_id).await? {
        Some(file) if stored_for(&file, &job) => Ok(stream_file(&state, &file.reference)),
        _ => Err(none()),
    }
}

/// The file a job's result names for a transcript format, if any.
fn transcript_file(job: &jobs::JobView, format: &str) -> Option<FileRef> {
    let file = job.result.as_ref()?.get("transcript")?.get(format!("as_{format}"))?;
    serde_json::from_value(file.clone()).ok()
}

/// Whether `file` is a result stored for `job` by the machine that ran it.
pub fn stored_for(file: &files::StoredFile, job: &jobs::JobView) -> bool {
    file.job_id == Some(job.id)
        && file.machine_id.is_some()
        && file.machine_id == job.machine_id
        && file.owner_id == job.submitted_by
}

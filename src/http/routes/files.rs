//! Job files for users: upload an input file (streamed, never held whole
//! in memory), download one's own files and a job's results.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;
use warden_events::job::FileRef;

use crate::app::AppState;
use crate::domain::ErrorCode;
use crate::fleet::files::{self, FileError};
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
/// At most `jobs.max_file_bytes` (1 GiB by default).
#[utoipa::path(
    post,
    path = "/api/files",
    tag = "jobs",
    params(UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file's bytes; Content-Type is the file's media type (e.g. audio/mpeg)"),
    responses(
        (status = 201, description = "stored: pass `file_id` as a job's `input_file`", body = FileRef),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 413, description = "larger than jobs.max_file_bytes", body = ErrorBody),
        (status = 415, description = "no media type", body = ErrorBody)
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
    let stored = files::store(
        &state.db,
        user.user_id,
        name,
        &media_type,
        body,
        state.config.jobs.max_file_bytes,
    )
    .await
    .map_err(file_error)?;
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

pub fn file_error(error: FileError) -> ApiError {
    match error {
        FileError::TooLarge(_) => ApiError::new(ErrorCode::PayloadTooLarge, error.to_string()),
        FileError::Upload(_) => ApiError::new(ErrorCode::MalformedRequest, error.to_string()),
        FileError::Store(error) => error.into(),
    }
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
        (status = 401, description = "no valid token", body = ErrorBody),
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
        (status = 401, description = "no valid token", body = ErrorBody),
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
    let key = format!("as_{}", params.format);
    let file: Option<FileRef> = job
        .result
        .as_ref()
        .and_then(|result| result.get("transcript"))
        .and_then(|transcript| transcript.get(&key))
        .and_then(|file| serde_json::from_value(file.clone()).ok());
    match file {
        Some(file) => Ok(stream_file(&state, &file)),
        None => Err(ApiError::new(
            ErrorCode::ResultNotFound,
            format!("this job has no {} transcript", params.format),
        )),
    }
}

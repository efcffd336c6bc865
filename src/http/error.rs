//! Every failure answers `{"code": ..., "message": ...}` with the right
//! status. Codes are stable API; messages are for humans.

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, QueryPayloadError, UrlencodedError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::ErrorCode;
use crate::domain::DomainError;
use crate::fleet::files::FileError;
use crate::fleet::native::NativeError;
use crate::fleet::project_w::ProtocolError;
use crate::fleet::runners::RunnerAuthError;
use crate::fleet::transcripts::ResultError;
use crate::identity::accounts::LoginError;
use crate::identity::ldap::LdapLoginError;
use crate::identity::oidc::OidcError;
use crate::log::commands::CommandError;
use crate::log::event_store::{claims, StoreError};
use warden_events::codec::DecodeError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after_seconds: Option<u64>,
}

/// Every error answer: a stable `code` (see the `ErrorCode` schema and
/// docs/errors.md) and a message for humans.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    #[schema(value_type = ErrorCode)]
    pub code: &'a str,
    pub message: &'a str,
}

/// The catalogue as a string enum in the OpenAPI description.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        codes.dedup();
        let described: String = ErrorCode::ALL
            .iter()
            .map(|code| format!("- `{}` ({}): {}\n", code.as_str(), code.status(), code.description()))
            .collect();
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(codes))
            .description(Some(format!("Stable error codes:\n{described}")))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

impl ApiError {
    /// An error answer with `code`'s status from the catalogue.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    /// The stable error code.
    pub fn code_str(&self) -> &'static str {
        self.code.as_str()
    }

    /// The message for humans.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 429 with a `Retry-After` the client should honour.
    pub fn too_many_requests(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        ApiError {
            retry_after_seconds: Some(seconds),
            ..Self::new(
                ErrorCode::RateLimited,
                format!("too many requests for this runner token; retry in {seconds}s"),
            )
        }
    }

    /// The same error with a `Retry-After` of `wait`.
    pub fn with_retry_after(self, wait: std::time::Duration) -> Self {
        ApiError {
            retry_after_seconds: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..self
        }
    }

    /// 429 for a login locked out by the brute-force throttle.
    pub fn login_throttled(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        ApiError {
            retry_after_seconds: Some(seconds),
            ..Self::new(
                ErrorCode::TooManyLoginAttempts,
                format!("too many failed logins; try again in {seconds}s"),
            )
        }
    }

    /// A failure that is our fault: logged in full, answered vaguely.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(ErrorCode::InternalError, "internal error; see the server log")
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(seconds) = self.retry_after_seconds {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(ErrorBody {
            code: self.code.as_str(),
            message: &self.message,
        })
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        ApiError::new(error.code(), error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { .. } => ApiError::new(
                ErrorCode::ConcurrentModification,
                "the same object was changed concurrently too often; try again",
            ),
            StoreError::ClaimTaken { scope } if scope == claims::EMAIL => {
                ApiError::new(ErrorCode::EmailTaken, "an account with this email already exists")
            }
            StoreError::ClaimTaken { scope } if scope == claims::SCOPE_NAME => ApiError::new(
                ErrorCode::ScopeExists,
                "a group or project of this name already exists in the same place",
            ),
            StoreError::ClaimTaken { .. } => ApiError::new(ErrorCode::AlreadyTaken, error.to_string()),
            StoreError::SubjectForgotten(_) => ApiError::new(ErrorCode::UserDeleted, "this user has been deleted"),
            // A stream with an event of a newer release (during a rolling
            // upgrade): this release cannot decide on it; the newer can.
            StoreError::Decode {
                source: DecodeError::UnknownType(_) | DecodeError::FromTheFuture { .. },
                ..
            } => {
                tracing::warn!(%error, "refusing a change to an object a newer release wrote");
                ApiError::new(ErrorCode::WrittenByNewerRelease, error.to_string())
            }
            // PostgreSQL text and jsonb cannot hold NUL: input that carries
            // one is refused by the database, and that is the client's
            // input, not a server failure.
            StoreError::Db(crate::platform::db::DbError::Postgres(ref db_error))
                if db_error.code().is_some_and(|code| {
                    *code == tokio_postgres::error::SqlState::CHARACTER_NOT_IN_REPERTOIRE
                        || *code == tokio_postgres::error::SqlState::UNTRANSLATABLE_CHARACTER
                }) =>
            {
                ApiError::new(ErrorCode::InvalidText, "text must not contain NUL characters")
            }
            // A time or number beyond what PostgreSQL stores (e.g. the year
            // -100000) is the client's value, not a server failure.
            StoreError::Db(crate::platform::db::DbError::Postgres(ref db_error))
                if db_error.code().is_some_and(|code| {
                    *code == tokio_postgres::error::SqlState::DATETIME_FIELD_OVERFLOW
                        || *code == tokio_postgres::error::SqlState::NUMERIC_VALUE_OUT_OF_RANGE
                }) =>
            {
                ApiError::new(
                    ErrorCode::ValueOutOfRange,
                    "a time or number is out of the range warden stores",
                )
            }
            StoreError::Db(crate::platform::db::DbError::Postgres(ref db_error)) if database_unavailable(db_error) => {
                tracing::error!(error = crate::platform::db::describe(&error), "database unavailable");
                ApiError::new(ErrorCode::DatabaseUnavailable, "the database is unavailable; try again")
            }
            StoreError::Db(crate::platform::db::DbError::LockTimedOut(_)) => {
                ApiError::new(ErrorCode::ConcurrentModification, error.to_string())
            }
            StoreError::Db(crate::platform::db::DbError::Pool(_) | crate::platform::db::DbError::TimedOut(_)) => {
                tracing::error!(error = crate::platform::db::describe(&error), "database unavailable");
                ApiError::new(ErrorCode::DatabaseUnavailable, "the database is unavailable; try again")
            }
            other => ApiError::internal(&other),
        }
    }
}

/// Whether a failed statement says the database cannot serve now (the
/// connection broke, the server is out of connections or shutting down,
/// a failover), not that the statement was wrong: 503, try again.
fn database_unavailable(error: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    if error.is_closed() || error.source().is_some_and(|source| source.is::<std::io::Error>()) {
        return true;
    }
    // SQLSTATE classes 08 (connection exception), 53 (insufficient
    // resources, e.g. too many connections), 57 (operator intervention:
    // shutdown, cannot connect now).
    error
        .code()
        .is_some_and(|code| matches!(&code.code()[..2], "08" | "53" | "57"))
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Domain(e) => e.into(),
            CommandError::Store(e) => e.into(),
        }
    }
}

impl From<crate::platform::db::DbError> for ApiError {
    fn from(error: crate::platform::db::DbError) -> Self {
        StoreError::Db(error).into()
    }
}

/// A failed password login answers the same for every provider.
impl From<LoginError> for ApiError {
    fn from(error: LoginError) -> Self {
        match error {
            LoginError::LocalLoginDisabled => ApiError::new(ErrorCode::LocalLoginDisabled, error.to_string()),
            LoginError::InvalidCredentials => ApiError::new(ErrorCode::InvalidCredentials, error.to_string()),
            LoginError::AdminScopeDenied => ApiError::new(ErrorCode::AdminScopeDenied, error.to_string()),
            LoginError::ServiceAccount => ApiError::new(ErrorCode::ServiceAccountCannotLogIn, error.to_string()),
            LoginError::Throttled(wait) => ApiError::login_throttled(wait),
            LoginError::Store(error) => error.into(),
        }
    }
}

impl From<LdapLoginError> for ApiError {
    fn from(error: LdapLoginError) -> Self {
        match error {
            LdapLoginError::UnknownProvider(_) => ApiError::new(ErrorCode::UnknownProvider, error.to_string()),
            LdapLoginError::NotSynced => ApiError::new(ErrorCode::UserNotSynced, error.to_string()),
            LdapLoginError::Login(error) => error.into(),
            LdapLoginError::Directory(error) => {
                tracing::warn!(%error, "LDAP login failed on the directory side");
                ApiError::new(
                    ErrorCode::LdapUnavailable,
                    "the LDAP directory could not be reached or refused the query; try again later",
                )
            }
            LdapLoginError::Command(error) => error.into(),
        }
    }
}

/// Every OIDC failure, on login and bearer-token paths alike.
impl From<OidcError> for ApiError {
    fn from(error: OidcError) -> Self {
        match error {
            OidcError::UnknownProvider(_) => ApiError::new(ErrorCode::UnknownProvider, error.to_string()),
            OidcError::Unavailable(_) => {
                tracing::warn!(%error, "OIDC provider unavailable");
                ApiError::new(ErrorCode::OidcUnavailable, error.to_string())
            }
            OidcError::UnknownState => ApiError::new(ErrorCode::InvalidState, error.to_string()),
            OidcError::IdTokenExpired => ApiError::new(ErrorCode::TokenExpired, error.to_string()),
            OidcError::Refused(_) | OidcError::InvalidIdToken(_) => {
                ApiError::new(ErrorCode::OidcLoginFailed, error.to_string())
            }
            OidcError::RoleMissing => ApiError::new(ErrorCode::RoleMissing, error.to_string()),
            OidcError::AdminScopeDenied => ApiError::new(ErrorCode::AdminScopeDenied, error.to_string()),
            OidcError::NoEmail => ApiError::new(ErrorCode::NoEmail, error.to_string()),
            OidcError::EmailNotVerified => ApiError::new(ErrorCode::EmailNotVerified, error.to_string()),
            OidcError::EmailTaken => ApiError::new(ErrorCode::EmailTaken, error.to_string()),
            OidcError::Revoked => ApiError::new(ErrorCode::SessionRevoked, error.to_string()),
            OidcError::Store(error) => error.into(),
            OidcError::Command(error) => error.into(),
        }
    }
}

impl From<crate::api::NotARunnerRef> for ApiError {
    fn from(error: crate::api::NotARunnerRef) -> Self {
        ApiError::new(ErrorCode::InvalidRunnerId, error.to_string())
    }
}

impl From<RunnerAuthError> for ApiError {
    fn from(error: RunnerAuthError) -> Self {
        match error {
            RunnerAuthError::Unknown => ApiError::new(ErrorCode::InvalidRunnerToken, "not a valid runner token"),
            RunnerAuthError::Invalidated => {
                ApiError::new(ErrorCode::RunnerInvalidated, "this runner has been invalidated")
            }
            RunnerAuthError::RateLimited(wait) => ApiError::too_many_requests(wait),
            RunnerAuthError::Store(error) => error.into(),
        }
    }
}

impl From<crate::scopes::ScopeError> for ApiError {
    fn from(error: crate::scopes::ScopeError) -> Self {
        use crate::scopes::ScopeError;
        let message = error.to_string();
        let code = match error {
            ScopeError::Command(error) => return error.into(),
            ScopeError::NotFound(_) => ErrorCode::ScopeNotFound,
            ScopeError::ManagerRequired(_) => ErrorCode::ManagerRequired,
            ScopeError::MembershipRequired(_) => ErrorCode::MembershipRequired,
            ScopeError::Archived(_) => ErrorCode::ScopeArchived,
            ScopeError::AdminRequired(_) => ErrorCode::AdminScopeRequired,
        };
        ApiError::new(code, message)
    }
}

impl From<crate::api::NotAScopeRef> for ApiError {
    fn from(error: crate::api::NotAScopeRef) -> Self {
        ApiError::new(ErrorCode::InvalidScope, error.to_string())
    }
}

impl From<FileError> for ApiError {
    fn from(error: FileError) -> Self {
        match error {
            FileError::TooLarge(_) => ApiError::new(ErrorCode::PayloadTooLarge, error.to_string()),
            FileError::Upload(_) => ApiError::new(ErrorCode::MalformedRequest, error.to_string()),
            FileError::Idle(_) | FileError::Deadline(_) => ApiError::new(ErrorCode::UploadTimedOut, error.to_string()),
            FileError::TooManyUploads(_) => ApiError::new(ErrorCode::TooManyUploads, error.to_string())
                .with_retry_after(std::time::Duration::from_secs(5)),
            FileError::QuotaExceeded(_) => ApiError::new(ErrorCode::StorageQuotaExceeded, error.to_string()),
            FileError::Store(error) => error.into(),
        }
    }
}

impl From<ResultError> for ApiError {
    fn from(error: ResultError) -> Self {
        match error {
            ResultError::TooLarge(_) => ApiError::new(ErrorCode::PayloadTooLarge, error.to_string()),
            ResultError::Malformed(_) => ApiError::new(ErrorCode::MalformedJson, error.to_string()),
            ResultError::Invalid(_) => ApiError::new(ErrorCode::InvalidField, error.to_string()),
            ResultError::File(error) => error.into(),
        }
    }
}

impl From<NativeError> for ApiError {
    fn from(error: NativeError) -> Self {
        let message = error.to_string();
        let code = match error {
            NativeError::Store(error) => return error.into(),
            NativeError::Command(error) => return error.into(),
            NativeError::JobNotFound => ErrorCode::JobNotFound,
            NativeError::ForeignFileReference => ErrorCode::ForeignFileReference,
            NativeError::SubmitterGone => ErrorCode::UserDeleted,
        };
        ApiError::new(code, message)
    }
}

impl From<ProtocolError> for ApiError {
    fn from(error: ProtocolError) -> Self {
        let message = error.to_string();
        let code = match error {
            ProtocolError::Runner(error) => return error.into(),
            ProtocolError::Result(error) => return error.into(),
            ProtocolError::Store(error) => return error.into(),
            ProtocolError::Command(error) => return error.into(),
            ProtocolError::InvalidSession => ErrorCode::InvalidSession,
            ProtocolError::InvalidPriority => ErrorCode::InvalidPriority,
            ProtocolError::TextTooLong => ErrorCode::TextTooLong,
            ProtocolError::InvalidProgress => ErrorCode::InvalidProgress,
            ProtocolError::NoJobAssigned => ErrorCode::NoJobAssigned,
            ProtocolError::JobAborted => ErrorCode::JobAborted,
            ProtocolError::NoInputFile => ErrorCode::FileNotFound,
        };
        ApiError::new(code, message)
    }
}

pub fn json_error(error: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match error {
        JsonPayloadError::ContentType => unsupported_media_type("application/json"),
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => payload_too_large(),
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::new(ErrorCode::InvalidField, e.to_string()),
        JsonPayloadError::Deserialize(e) => ApiError::new(ErrorCode::MalformedJson, e.to_string()),
        other => ApiError::new(ErrorCode::MalformedRequest, other.to_string()),
    }
    .into()
}

pub fn form_error(error: UrlencodedError, _req: &HttpRequest) -> actix_web::Error {
    match error {
        UrlencodedError::ContentType => unsupported_media_type("application/x-www-form-urlencoded"),
        UrlencodedError::Overflow { .. } => payload_too_large(),
        UrlencodedError::Parse(_) => ApiError::new(
            ErrorCode::InvalidForm,
            "the form is missing a required field or has a malformed one",
        ),
        other => ApiError::new(ErrorCode::MalformedRequest, other.to_string()),
    }
    .into()
}

pub fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(ErrorCode::InvalidQuery, error.to_string()).into()
}

pub fn path_error(error: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(ErrorCode::InvalidPath, format!("malformed path parameter: {error}")).into()
}

fn unsupported_media_type(expected: &str) -> ApiError {
    ApiError::new(ErrorCode::UnsupportedMediaType, format!("send the body as {expected}"))
}

fn payload_too_large() -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
}

/// Gives error responses produced outside our handlers (unknown routes,
/// wrong methods, oversized raw bodies) the same JSON shape.
pub fn json_for_any_error<B>(response: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = response
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(response.map_into_left_body()));
    }
    let status = response.status();
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::InternalError,
    };
    let message = status.canonical_reason().unwrap_or("error").to_owned();
    let (request, mut original) = response.into_parts();
    // The status stays what actix answered (a 408 stays a 408).
    let mut replacement = ApiError {
        status,
        ..ApiError::new(code, message)
    }
    .error_response();
    // Keep headers such as Allow on 405.
    for (name, value) in original.headers_mut().drain() {
        if let Some(name) = name {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                replacement.headers_mut().insert(name, value);
            }
        }
    }
    replacement
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let response: ServiceResponse<EitherBody<B, BoxBody>> =
        ServiceResponse::new(request, replacement).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(response))
}

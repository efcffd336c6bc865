//! Admin read-model queries (admins and the read-only support role):
//! filtered, cursor-paginated lists answering `{items, next_cursor}`, and
//! dashboard counts. The SQL lives in `crate::queries`.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::ErrorCode;
use crate::app::AppState;
use crate::fleet::jobs::JobView;
use crate::fleet::machines::MachineView;
use crate::http::auth::AdminReader;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::params;
use crate::platform::replicas::ReadSource;
use crate::queries::{self, JobFilter, MachineFilter, PageCursor, RunnerFilter, UserFilter};
use crate::queries::{Dashboard, Page, RunnerView, UserSummary};

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    User,
    Support,
    Admin,
    /// A service account.
    Api,
}

/// A runner's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunnerStatus {
    Active,
    Invalidated,
}

/// A job's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Assigned,
    Succeeded,
    Failed,
    Aborted,
    Cancelled,
}

/// The word the API and the read models use for a value of these enums.
pub fn word<T: serde::Serialize + Copy>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn default_limit() -> i64 {
    100
}

// The paging fields are repeated in each query struct rather than
// `#[serde(flatten)]`ed: flatten breaks both `deny_unknown_fields` and
// numbers in query strings.
pub fn paging(cursor: &Option<String>, limit: i64) -> Result<(Option<PageCursor>, i64), ApiError> {
    check_limit(limit)?;
    let cursor = match cursor {
        None => None,
        Some(text) => Some(PageCursor::decode(text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidCursor,
                "cursor must be a next_cursor this API returned",
            )
        })?),
    };
    Ok((cursor, limit))
}

/// A page size within 1..=MAX_PAGE (the `limit` parameters declare the
/// same range).
pub fn check_limit(limit: i64) -> Result<i64, ApiError> {
    if !(1..=queries::MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("limit must be from 1 to {}", queries::MAX_PAGE),
        ));
    }
    Ok(limit)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserParams {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    #[param(inline)]
    role: Option<UserRole>,
    #[serde(default)]
    include_deleted: bool,
    /// A `next_cursor` this API returned.
    #[serde(default)]
    #[param(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    cursor: Option<String>,
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
}

/// Users, newest first, filtered and paginated.
#[utoipa::path(
    get,
    path = "/api/admins/users",
    tag = "admin: queries",
    params(UserParams),
    responses(
        (status = 200, description = "a page of users", body = Page<UserSummary>),
        (status = 400, description = "malformed query or body", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn users(
    state: web::Data<AppState>,
    _reader: AdminReader,
    params: web::Query<UserParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (cursor, limit) = paging(&params.cursor, params.limit)?;
    let filter = UserFilter {
        provider: params.provider,
        role: params.role.map(word),
        include_deleted: params.include_deleted,
    };
    let (connection, source) = read_connection(&state).await?;
    Ok(HttpResponse::Ok()
        .insert_header(source)
        .json(queries::users(&connection, filter, cursor, limit).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunnerParams {
    #[serde(default)]
    #[param(inline)]
    status: Option<RunnerStatus>,
    #[serde(default)]
    paused: Option<bool>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    contacted_since: Option<DateTime<Utc>>,
    #[serde(default)]
    not_contacted_since: Option<DateTime<Utc>>,
    /// A `next_cursor` this API returned.
    #[serde(default)]
    #[param(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    cursor: Option<String>,
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
}

/// Runners with their machines, newest first, filtered and paginated.
#[utoipa::path(
    get,
    path = "/api/admins/runners",
    tag = "admin: queries",
    params(RunnerParams),
    responses(
        (status = 200, description = "a page of runners", body = Page<RunnerView>),
        (status = 400, description = "malformed query or body", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn runners(
    state: web::Data<AppState>,
    _reader: AdminReader,
    params: web::Query<RunnerParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (cursor, limit) = paging(&params.cursor, params.limit)?;
    let filter = RunnerFilter {
        id: None,
        status: params.status.map(word),
        paused: params.paused,
        tag: params.tag,
        contacted_since: params.contacted_since,
        not_contacted_since: params.not_contacted_since,
        scope_and_below: None,
    };
    let (connection, source) = read_connection(&state).await?;
    Ok(HttpResponse::Ok()
        .insert_header(source)
        .json(queries::runners(&state.fleet, &connection, filter, cursor, limit).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MachineParams {
    #[serde(default)]
    runner_id: Option<Uuid>,
    #[serde(default)]
    contacted_since: Option<DateTime<Utc>>,
    #[serde(default)]
    not_contacted_since: Option<DateTime<Utc>>,
    /// A `next_cursor` this API returned.
    #[serde(default)]
    #[param(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    cursor: Option<String>,
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
}

/// Runner machines, newest registration first, filtered and paginated.
#[utoipa::path(
    get,
    path = "/api/admins/machines",
    tag = "admin: queries",
    params(MachineParams),
    responses(
        (status = 200, description = "a page of machines", body = Page<MachineView>),
        (status = 400, description = "malformed query or body", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn machines(
    state: web::Data<AppState>,
    _reader: AdminReader,
    params: web::Query<MachineParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (cursor, limit) = paging(&params.cursor, params.limit)?;
    let filter = MachineFilter {
        runner_id: params.runner_id,
        contacted_since: params.contacted_since,
        not_contacted_since: params.not_contacted_since,
    };
    let (connection, source) = read_connection(&state).await?;
    Ok(HttpResponse::Ok()
        .insert_header(source)
        .json(queries::machines(&state.fleet, &connection, filter, cursor, limit).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobParams {
    #[serde(default)]
    #[param(inline)]
    status: Option<JobStatus>,
    #[serde(default)]
    runner_id: Option<Uuid>,
    #[serde(default)]
    submitted_by: Option<Uuid>,
    /// A `next_cursor` this API returned.
    #[serde(default)]
    #[param(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    cursor: Option<String>,
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
}

/// All jobs, newest first, filtered and paginated.
#[utoipa::path(
    get,
    path = "/api/admins/jobs",
    tag = "admin: queries",
    params(JobParams),
    responses(
        (status = 200, description = "a page of jobs", body = Page<JobView>),
        (status = 400, description = "malformed query or body", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn jobs(
    state: web::Data<AppState>,
    _reader: AdminReader,
    params: web::Query<JobParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (cursor, limit) = paging(&params.cursor, params.limit)?;
    let filter = JobFilter {
        status: params.status.map(word),
        runner_id: params.runner_id,
        submitted_by: params.submitted_by,
        scope_and_below: None,
    };
    let (connection, source) = read_connection(&state).await?;
    Ok(HttpResponse::Ok()
        .insert_header(source)
        .json(queries::jobs(&connection, filter, cursor, limit).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DashboardParams {
    /// A machine counts as active if in contact within this, e.g. `1h` (default).
    #[serde(default)]
    #[param(pattern = "^[0-9]{1,6}(s|m|h|d)$")]
    active_within: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivityParams {
    /// How far back, in minutes (default 180, at most 1440).
    #[serde(default = "default_activity_minutes")]
    #[param(minimum = 1, maximum = 1440)]
    minutes: i64,
}

fn default_activity_minutes() -> i64 {
    180
}

/// Jobs submitted, assigned and finished per minute, and the queue's
/// depth, over the last hours (for the dashboard's charts).
#[utoipa::path(
    get,
    path = "/api/admins/activity",
    tag = "admin: queries",
    params(ActivityParams),
    responses(
        (status = 200, description = "one value per minute, oldest first", body = queries::Activity),
        (status = 400, description = "malformed query", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn activity(
    state: web::Data<AppState>,
    _reader: AdminReader,
    params: web::Query<ActivityParams>,
) -> Result<HttpResponse, ApiError> {
    if !(1..=1440).contains(&params.minutes) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "minutes must be between 1 and 1440",
        ));
    }
    let (connection, source) = read_connection(&state).await?;
    Ok(HttpResponse::Ok().insert_header(source).json(
        queries::activity(
            &connection,
            params.minutes,
            state.config.runners.contact_record_interval,
        )
        .await?,
    ))
}

/// Counts for a dashboard.
#[utoipa::path(
    get,
    path = "/api/admins/dashboard",
    tag = "admin: queries",
    params(DashboardParams),
    responses(
        (status = 200, description = "counts", body = Dashboard),
        (status = 400, description = "malformed query or body", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn dashboard(
    state: web::Data<AppState>,
    _reader: AdminReader,
    params: web::Query<DashboardParams>,
) -> Result<HttpResponse, ApiError> {
    let active_within = match &params.active_within {
        None => std::time::Duration::from_secs(3600),
        Some(text) => params::duration("active_within", text, ErrorCode::InvalidQuery)?,
    };
    let active_within = chrono::Duration::from_std(active_within)
        .map_err(|_| ApiError::new(ErrorCode::InvalidQuery, "active_within is too long"))?;
    let (connection, source) = read_connection(&state).await?;
    Ok(HttpResponse::Ok()
        .insert_header(source)
        .json(queries::dashboard(&connection, active_within).await?))
}

/// Response header naming where an admin read went: `primary` or `replica`.
pub const READ_SOURCE_HEADER: &str = "warden-read-source";

/// A connection for an admin or audit read (a caught-up replica when one
/// is configured, see `platform::replicas`) and the header saying which.
pub async fn read_connection(
    state: &AppState,
) -> Result<(crate::platform::db::Connection, (&'static str, &'static str)), ApiError> {
    let (connection, source) = state.reads.get().await?;
    let source = match source {
        ReadSource::Primary => "primary",
        ReadSource::Replica(_) => "replica",
    };
    Ok((connection, (READ_SOURCE_HEADER, source)))
}

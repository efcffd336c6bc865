//! The audit trail and time travel, for admins and the support role.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;
use warden_events::StreamId;

use super::queries::read_connection;
use crate::api::ErrorCode;
use crate::app::AppState;
use crate::http::auth::AdminReader;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::log::audit::AuditPage;
use crate::log::audit::{self, AuditQuery};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default, rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    #[serde(default)]
    cursor: Option<i64>,
    /// `newest` (default) or `oldest` first.
    #[serde(default)]
    #[param(inline)]
    order: Option<Order>,
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
}

/// Which entries come first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    Newest,
    Oldest,
}

fn default_limit() -> i64 {
    100
}

/// The audit trail: who did what, when, from where and why.
///
/// Newest first unless `order=oldest`; page with `cursor`.
#[utoipa::path(
    get,
    path = "/api/admins/audit",
    tag = "admin: audit",
    params(AuditParams),
    responses(
        (status = 200, description = "a page of log entries", body = AuditPage),
        (status = 400, description = "malformed query or body", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn log(
    state: web::Data<AppState>,
    _reader: AdminReader,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let oldest_first = params.order == Some(Order::Oldest);
    if !(1..=audit::MAX_PAGE).contains(&params.limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("limit must be from 1 to {}", audit::MAX_PAGE),
        ));
    }
    let query = AuditQuery {
        actor: params.actor,
        stream: params.stream,
        event_type: params.event_type,
        since: params.since,
        until: params.until,
        cursor: params.cursor,
        oldest_first,
        limit: params.limit,
    };
    let (connection, source) = read_connection(&state).await?;
    Ok(HttpResponse::Ok()
        .insert_header(source)
        .json(audit::query(&connection, &query).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AtParams {
    /// RFC 3339 time; default: now.
    #[serde(default)]
    at: Option<DateTime<Utc>>,
}

async fn state_at(state: &AppState, stream: StreamId, at: Option<DateTime<Utc>>) -> Result<HttpResponse, ApiError> {
    let (connection, source) = read_connection(state).await?;
    let view = audit::state_at(&connection, &stream, at.unwrap_or_else(Utc::now)).await?;
    if view.version == 0 && at.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no stream {stream}")));
    }
    Ok(HttpResponse::Ok().insert_header(source).json(view))
}

/// A runner as it was at `at` (its stream folded up to then).
#[utoipa::path(
    get,
    path = "/api/admins/runners/{id}/state",
    tag = "admin: audit",
    params(("id" = Uuid, Path, description = "runner id"), AtParams),
    responses(
        (status = 200, description = "the state", body = serde_json::Value),
        (status = 400, description = "malformed query or body", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn runner_at(
    state: web::Data<AppState>,
    _reader: AdminReader,
    id: web::Path<Uuid>,
    params: web::Query<AtParams>,
) -> Result<HttpResponse, ApiError> {
    state_at(&state, StreamId::runner(*id), params.at).await
}

/// A user as they were at `at` (their stream folded up to then).
#[utoipa::path(
    get,
    path = "/api/admins/users/{id}/state",
    tag = "admin: audit",
    params(("id" = Uuid, Path, description = "user id"), AtParams),
    responses(
        (status = 200, description = "the state", body = serde_json::Value),
        (status = 400, description = "malformed query or body", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn user_at(
    state: web::Data<AppState>,
    _reader: AdminReader,
    id: web::Path<Uuid>,
    params: web::Query<AtParams>,
) -> Result<HttpResponse, ApiError> {
    state_at(&state, StreamId::user(*id), params.at).await
}

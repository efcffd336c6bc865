//! Admin calls that change things (admin-scoped tokens only): runners.
//! The read-only admin views are in `queries` and `audit`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::optional_json;
use super::queries::UserRole;
use crate::api::ErrorCode;
use crate::api::{CreatedRunner, NewRunnerToken, RunnerInvalidated};
use crate::app::AppState;
use crate::domain::runner::{RunnerCommand, RunnerSettings, RunnerSettingsChange};
use crate::fleet::runners;
use crate::http::auth::Admin;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json::Json;
use crate::http::params::{self, TagList};
use crate::queries;
use crate::queries::RunnerView;
use warden_events::user::Role;

/// Optional body of `create_runner`; the seed's call sends none.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunnerBody {
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    description: Option<String>,
    #[serde(default)]
    #[schema(value_type = TagList)]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "params::integer")]
    #[schema(minimum = -1000, maximum = 1000)]
    priority: i32,
    /// `instance` (the default), `group:<path>` or `project:<path>`.
    #[serde(default)]
    #[schema(
        pattern = "^(instance|group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}|project:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){1,19})$"
    )]
    scope: Option<String>,
}

/// Creates a runner; its token is shown only in this answer.
///
/// The body is optional.
#[utoipa::path(
    post,
    path = "/api/admins/create_runner",
    tag = "admin: runners",
    request_body(content = Option<CreateRunnerBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "the runner and its token", body = CreatedRunner, example = json!({"id": "0194...", "token": "wdrt_..."})),
        (status = 404, description = "no such group or project", body = ErrorBody),
        (status = 409, description = "the scope is archived or has as many runners as it may", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]))
)]
pub async fn create_runner(
    state: web::Data<AppState>,
    admin: Admin,
    context: RequestContext,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: CreateRunnerBody = optional_json(&request, &body)?.unwrap_or_default();
    let metadata = context.metadata(admin.0.actor());
    let settings = RunnerSettings {
        description: body.description,
        tags: body.tags,
        priority: body.priority,
    };
    let reference: crate::api::ScopeRef = match body.scope.as_deref() {
        Some(raw) => raw.parse()?,
        None => crate::api::ScopeRef::Instance,
    };
    let scope = crate::scopes::destination(&state.db, admin.0.caller(), &reference, true).await?;
    let created = runners::create_runner(&state.fleet, settings, scope.map(|s| s.id), &metadata).await?;
    Ok(HttpResponse::Created().json(CreatedRunner {
        id: created.id,
        token: created.token,
    }))
}

/// The runner `raw` names, by UUID or number (`fleet::runners::resolve`).
async fn resolve_runner_id(state: &AppState, raw: &str) -> Result<Uuid, ApiError> {
    let reference: crate::api::RunnerRef = raw.parse()?;
    runners::resolve(&state.fleet, reference).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::RunnerNotFound,
            format!("no runner has the number {}", raw.trim()),
        )
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvalidateQuery {
    /// The runner's UUID, or its integer number.
    #[param(
        pattern = "^([1-9][0-9]{0,17}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    )]
    runner_id: String,
    #[serde(default)]
    #[param(max_length = 1024, pattern = "^[^\\x00]*$")]
    reason: Option<String>,
}

/// Invalidates a runner: its token stops working at once.
///
/// Its jobs go back to the queue (the re-assignment reaction).
#[utoipa::path(
    delete,
    path = "/api/admins/invalidate_runner",
    tag = "admin: runners",
    params(InvalidateQuery),
    responses(
        (status = 200, description = "invalidated", body = RunnerInvalidated, example = json!({"id": "0194...", "status": "invalidated"})),
        (status = 400, description = "malformed query or body", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody),
        (status = 409, description = "conflicts with the current state", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]))
)]
pub async fn invalidate_runner(
    state: web::Data<AppState>,
    admin: Admin,
    context: RequestContext,
    query: web::Query<InvalidateQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let runner_id = resolve_runner_id(&state, &query.runner_id).await?;
    let metadata = context.metadata(admin.0.actor());
    let command = RunnerCommand::Invalidate { reason: query.reason };
    runners::change_runner(&state.commands, runner_id, command, &metadata).await?;
    Ok(HttpResponse::Ok().json(RunnerInvalidated {
        id: runner_id,
        status: "invalidated".into(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResetTokenQuery {
    /// The runner's UUID, or its integer number.
    #[param(
        pattern = "^([1-9][0-9]{0,17}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    )]
    runner_id: String,
    /// How long the old token keeps working, e.g. `10m`; default: not at all.
    #[serde(default)]
    #[param(pattern = "^[0-9]{1,6}(s|m|h|d)$")]
    grace_period: Option<String>,
}

/// Gives a runner a new token.
///
/// The old token stops at once or after `grace_period`.
#[utoipa::path(
    post,
    path = "/api/admins/reset_runner_token",
    tag = "admin: runners",
    params(ResetTokenQuery),
    responses(
        (status = 200, description = "the new token, shown only here", body = NewRunnerToken, example = json!({"id": "0194...", "token": "wdrt_..."})),
        (status = 400, description = "malformed query or body", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody),
        (status = 409, description = "conflicts with the current state", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]))
)]
pub async fn reset_runner_token(
    state: web::Data<AppState>,
    admin: Admin,
    context: RequestContext,
    query: web::Query<ResetTokenQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let runner_id = resolve_runner_id(&state, &query.runner_id).await?;
    let grace = match &query.grace_period {
        None => None,
        Some(text) => {
            let grace = params::duration("grace_period", text, ErrorCode::MalformedGracePeriod)?;
            if grace > state.config.runners.max_token_grace {
                return Err(ApiError::new(
                    ErrorCode::InvalidGracePeriod,
                    format!(
                        "grace_period may be at most {}",
                        humantime::format_duration(state.config.runners.max_token_grace)
                    ),
                ));
            }
            Some(grace)
        }
    };
    let metadata = context.metadata(admin.0.actor());
    let token = runners::reset_token(&state.commands, runner_id, grace, &metadata).await?;
    Ok(HttpResponse::Ok().json(NewRunnerToken { id: runner_id, token }))
}

/// Fields to change; absent ones stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRunnerBody {
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<TagList>)]
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "params::optional_integer")]
    #[schema(minimum = -1000, maximum = 1000)]
    priority: Option<i32>,
    #[serde(default)]
    paused: Option<bool>,
}

/// Changes a runner's settings, pauses or resumes it.
///
/// Absent fields stay as they are.
#[utoipa::path(
    patch,
    path = "/api/admins/runners/{id}",
    tag = "admin: runners",
    params(("id" = Uuid, Path, description = "runner id")),
    request_body = UpdateRunnerBody,
    responses(
        (status = 200, description = "the runner", body = RunnerView),
        (status = 400, description = "malformed query or body", body = ErrorBody),
        (status = 404, description = "no such object", body = ErrorBody),
        (status = 409, description = "conflicts with the current state", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]))
)]
pub async fn update_runner(
    state: web::Data<AppState>,
    admin: Admin,
    context: RequestContext,
    runner_id: web::Path<Uuid>,
    body: Json<UpdateRunnerBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let runner_id = *runner_id;
    let metadata = context.metadata(admin.0.actor());
    // The aggregate merges the change into the current settings (and says
    // why not: not found, invalidated): no load of the runner here.
    let change = RunnerSettingsChange {
        description: body.description,
        tags: body.tags,
        priority: body.priority,
    };
    runners::change_runner(&state.commands, runner_id, RunnerCommand::Update(change), &metadata).await?;
    match body.paused {
        Some(true) => runners::change_runner(&state.commands, runner_id, RunnerCommand::Pause, &metadata).await?,
        Some(false) => {
            runners::change_runner(&state.commands, runner_id, RunnerCommand::Resume, &metadata).await?;
            state.fleet.dispatcher.kick();
        }
        None => {}
    }
    let view = queries::runner(&state.fleet, runner_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::RunnerNotFound, "runner not found"))?;
    Ok(HttpResponse::Ok().json(view))
}

/// Deletes a user at once: every token of theirs stops working and their
/// personal data in the log becomes unreadable.
#[utoipa::path(
    delete,
    path = "/api/admins/users/{id}",
    tag = "admin: users",
    params(("id" = Uuid, Path, description = "user id")),
    responses(
        (status = 200, description = "deleted", body = crate::api::Outcome),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 409, description = "the only admin cannot delete themselves", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]))
)]
pub async fn delete_user(
    state: web::Data<AppState>,
    admin: Admin,
    context: RequestContext,
    user_id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let user_id = *user_id;
    let metadata = context.metadata(admin.0.actor());
    crate::identity::accounts::delete_user_keeping_an_admin(&state.identity, user_id, &metadata).await?;
    Ok(HttpResponse::Ok().json(crate::api::Outcome::new(user_id, "deleted")))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    #[schema(inline, value_type = UserRole)]
    role: String,
}

/// Promotes or demotes a local account (`user`, `support`, `admin`).
///
/// LDAP and OIDC users get their role from the directory or provider.
#[utoipa::path(
    put,
    path = "/api/admins/users/{id}/role",
    tag = "admin: users",
    params(("id" = Uuid, Path, description = "user id")),
    request_body = RoleBody,
    responses(
        (status = 200, description = "the role now", body = crate::api::RoleSet),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 409, description = "the last admin cannot be demoted", body = ErrorBody),
        (status = 422, description = "unknown role, or not a local account", body = ErrorBody)
    ),
    security(("user_token" = ["admin"]))
)]
pub async fn set_role(
    state: web::Data<AppState>,
    admin: Admin,
    context: RequestContext,
    user_id: web::Path<Uuid>,
    body: Json<RoleBody>,
) -> Result<HttpResponse, ApiError> {
    let role = match body.role.as_str() {
        "user" => Role::User,
        "support" => Role::Support,
        "admin" => Role::Admin,
        "api" => Role::Api,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRole,
                "role must be one of user, support, admin, api",
            ))
        }
    };
    let metadata = context.metadata(admin.0.actor());
    crate::identity::accounts::change_role(&state.identity, *user_id, role, &metadata).await?;
    Ok(HttpResponse::Ok().json(crate::api::RoleSet {
        id: *user_id,
        role: role.as_str().to_owned(),
    }))
}

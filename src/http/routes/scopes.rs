//! Groups and projects: creating and archiving them, their members, and
//! the runners and jobs of a scope for its managers (`fleet::scopes` has
//! the rules; every handler here parses, calls it, and answers).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use warden_events::scope::{MembershipSource, ScopeRole};

use super::queries::paging;
use crate::api::{CreatedRunner, ErrorCode, JobView, Page, RunnerView, ScopeRef};
use crate::app::AppState;
use crate::domain::runner::{RunnerCommand, RunnerSettings};
use crate::domain::scope::{ScopeCommand, ScopeKind};
use crate::fleet::runners;
use crate::http::auth::AuthenticatedUser;
use crate::http::context::RequestContext;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::Json;
use crate::http::params::{self, TagList};
use crate::identity::accounts;
use crate::queries;
use crate::scopes::{self, ScopeRecord};

fn parse_scope(raw: &str) -> Result<ScopeRef, ApiError> {
    Ok(raw.parse()?)
}

/// A group or project.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScopeAnswer {
    pub id: Uuid,
    /// `group` or `project`.
    pub kind: String,
    /// Names from the top, joined by `/`.
    pub path: String,
    /// How calls name it: `group:<path>` or `project:<path>`.
    pub scope: String,
    pub archived: bool,
    /// Its own limit of active runners; none: `runners.scope_runner_limit`.
    pub runner_limit: Option<i64>,
    /// The caller's role there (or in a group above); none for admins and
    /// support users who are not members.
    #[serde(default)]
    pub role: Option<ScopeRole>,
}

impl ScopeAnswer {
    fn of(scope: ScopeRecord, role: Option<ScopeRole>) -> ScopeAnswer {
        ScopeAnswer {
            id: scope.id,
            kind: scope.kind.as_str().into(),
            scope: scope.reference(),
            path: scope.path,
            archived: scope.archived,
            runner_limit: scope.runner_limit,
            role,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroupBody {
    /// 1 to 64 of a-z 0-9 _ . - (upper case is folded).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    name: String,
    /// The group to nest it in (`group:<path>`); none: a top-level group
    /// (admins only).
    #[serde(default)]
    #[schema(pattern = "^group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}$")]
    parent: Option<String>,
}

/// Creates a group, at the top (admins) or in a group the caller manages.
#[utoipa::path(
    post,
    path = "/api/scopes/groups",
    tag = "scopes",
    request_body = NewGroupBody,
    responses(
        (status = 201, description = "the group", body = ScopeAnswer),
        (status = 403, description = "the caller may not create it there", body = ErrorBody),
        (status = 404, description = "no such parent group (or none the caller may see)", body = ErrorBody),
        (status = 409, description = "the name is taken there, or the parent is archived", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn create_group(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<NewGroupBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let parent = body.parent.as_deref().map(parse_scope).transpose()?;
    let metadata = context.metadata(user.actor());
    let created = scopes::create(
        &state.commands,
        &state.db,
        user.caller(),
        ScopeKind::Group,
        &body.name,
        parent.as_ref(),
        &metadata,
    )
    .await?;
    Ok(HttpResponse::Created().json(ScopeAnswer::of(created, None)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProjectBody {
    /// 1 to 64 of a-z 0-9 _ . - (upper case is folded).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    name: String,
    /// The group it belongs to (`group:<path>`).
    #[schema(pattern = "^group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}$")]
    group: String,
}

/// Creates a project in a group the caller manages.
#[utoipa::path(
    post,
    path = "/api/scopes/projects",
    tag = "scopes",
    request_body = NewProjectBody,
    responses(
        (status = 201, description = "the project", body = ScopeAnswer),
        (status = 403, description = "the caller does not manage the group", body = ErrorBody),
        (status = 404, description = "no such group (or none the caller may see)", body = ErrorBody),
        (status = 409, description = "the name is taken there, or the group is archived", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn create_project(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<NewProjectBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let group = parse_scope(&body.group)?;
    let metadata = context.metadata(user.actor());
    let created = scopes::create(
        &state.commands,
        &state.db,
        user.caller(),
        ScopeKind::Project,
        &body.name,
        Some(&group),
        &metadata,
    )
    .await?;
    Ok(HttpResponse::Created().json(ScopeAnswer::of(created, None)))
}

/// The groups and projects the caller is a member of, and those below
/// them; every one for admins and support users.
#[utoipa::path(
    get,
    path = "/api/scopes",
    tag = "scopes",
    responses((status = 200, description = "by path", body = Vec<ScopeAnswer>)),
    security(("user_token" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
) -> Result<web::Json<Vec<ScopeAnswer>>, ApiError> {
    let everything = user.admin_scope || user.role == warden_events::user::Role::Support;
    let visible = scopes::visible(&state.db, user.user_id, everything).await?;
    Ok(web::Json(
        visible
            .into_iter()
            .map(|visible| ScopeAnswer::of(visible.scope, visible.role))
            .collect(),
    ))
}

/// Changes to a scope, made in this order: `rename`, `move_to`, `archive`,
/// `runner_limit` or `default_runner_limit` (admins); none: the scope as it
/// is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeScopeBody {
    #[schema(
        pattern = "^(group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}|project:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){1,19})$"
    )]
    scope: String,
    /// A new name in the same place.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    rename: Option<String>,
    /// Into another group the caller manages (`group:<path>`): runners,
    /// jobs, members and the scopes below come along.
    #[serde(default)]
    #[schema(pattern = "^group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}$")]
    move_to: Option<String>,
    /// No new runners, jobs or members from now on.
    #[serde(default)]
    archive: bool,
    /// The scope's own limit of active runners.
    #[serde(default, deserialize_with = "crate::http::params::optional_integer")]
    #[schema(minimum = 0, maximum = 100000)]
    runner_limit: Option<i64>,
    /// Back to the configured limit (`runners.scope_runner_limit`).
    #[serde(default)]
    default_runner_limit: bool,
}

/// Renames or archives a scope the caller manages, or (admins) sets its
/// runner limit.
#[utoipa::path(
    post,
    path = "/api/scopes/change",
    tag = "scopes",
    request_body = ChangeScopeBody,
    responses(
        (status = 200, description = "the scope as it is now", body = ScopeAnswer),
        (status = 403, description = "the caller does not manage it (or is no admin, for a limit)", body = ErrorBody),
        (status = 404, description = "no such scope (or none the caller may see)", body = ErrorBody),
        (status = 409, description = "the new name is taken there, the group moved into is archived, or is the scope itself or below it", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn change(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<ChangeScopeBody>,
) -> Result<web::Json<ScopeAnswer>, ApiError> {
    let ChangeScopeBody {
        scope,
        rename,
        move_to,
        archive,
        runner_limit,
        default_runner_limit,
    } = body.into_inner();
    let caller = user.caller();
    let metadata = context.metadata(user.actor());
    let mut scope = parse_scope(&scope)?;
    let move_to = move_to.as_deref().map(parse_scope).transpose()?;
    let mut current = scopes::managed(&state.db, caller, &scope).await?;
    // A rename or a move changes the path: later changes name it anew.
    if let Some(name) = rename {
        let command = ScopeCommand::Rename { name };
        current = scopes::change(&state.commands, &state.db, caller, &scope, command, &metadata).await?;
        scope = current.reference().parse()?;
    }
    if let Some(to) = &move_to {
        current = scopes::move_scope(&state.commands, &state.db, caller, &scope, to, &metadata).await?;
        scope = current.reference().parse()?;
    }
    let mut commands = Vec::new();
    if archive {
        commands.push(ScopeCommand::Archive);
    }
    if default_runner_limit {
        commands.push(ScopeCommand::SetRunnerLimit { limit: None });
    } else if let Some(limit) = runner_limit {
        commands.push(ScopeCommand::SetRunnerLimit { limit: Some(limit) });
    }
    for command in commands {
        current = scopes::change(&state.commands, &state.db, caller, &scope, command, &metadata).await?;
    }
    Ok(web::Json(ScopeAnswer::of(current, None)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    /// `group:<path>` or `project:<path>`.
    #[param(
        pattern = "^(group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}|project:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){1,19})$"
    )]
    scope: String,
}

/// A member of a scope.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberAnswer {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub role: ScopeRole,
    /// `api` (granted by an admin or manager) or `mapping` (from a
    /// directory or provider group).
    pub source: MembershipSource,
}

/// The members of a scope the caller manages.
#[utoipa::path(
    get,
    path = "/api/scopes/members",
    tag = "scopes",
    params(ScopeQuery),
    responses(
        (status = 200, description = "by email", body = Vec<MemberAnswer>),
        (status = 403, description = "the caller does not manage it", body = ErrorBody),
        (status = 404, description = "no such scope (or none the caller may see)", body = ErrorBody),
        (status = 422, description = "scope is not a scope reference", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn members(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    query: web::Query<ScopeQuery>,
) -> Result<web::Json<Vec<MemberAnswer>>, ApiError> {
    let scope = parse_scope(&query.scope)?;
    let members = scopes::members(&state.db, user.caller(), &scope).await?;
    Ok(web::Json(
        members
            .into_iter()
            .map(|member| MemberAnswer {
                user_id: member.user_id,
                email: member.email,
                role: member.role,
                source: member.source,
            })
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    #[schema(
        pattern = "^(group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}|project:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){1,19})$"
    )]
    scope: String,
    /// The user's email address or id.
    #[schema(max_length = 320)]
    user: String,
    /// Their role; none removes them from the scope.
    #[serde(default)]
    role: Option<ScopeRole>,
}

/// Adds a user to a scope the caller manages, changes their role there,
/// or (`role` null) removes them. Takes effect with the next request.
#[utoipa::path(
    put,
    path = "/api/scopes/members",
    tag = "scopes",
    request_body = MemberBody,
    responses(
        (status = 200, description = "the scope's members now", body = Vec<MemberAnswer>),
        (status = 403, description = "the caller does not manage it", body = ErrorBody),
        (status = 404, description = "no such scope or user", body = ErrorBody),
        (status = 409, description = "the scope is archived", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn set_member(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<MemberBody>,
) -> Result<web::Json<Vec<MemberAnswer>>, ApiError> {
    let body = body.into_inner();
    let scope = parse_scope(&body.scope)?;
    let member = accounts::find_user_by_email_or_id(&state.db.get().await?, &body.user)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, "no user has this email address or id"))?
        .id;
    let metadata = context.metadata(user.actor());
    let command = match body.role {
        Some(role) => ScopeCommand::AddMember {
            user_id: member,
            role,
            source: MembershipSource::Api,
        },
        None => ScopeCommand::RemoveMember {
            user_id: member,
            only_from: None,
        },
    };
    scopes::change(&state.commands, &state.db, user.caller(), &scope, command, &metadata).await?;
    members(state, user, web::Query(ScopeQuery { scope: body.scope })).await
}

/// Optional settings of a scope's new runner.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScopedRunnerBody {
    /// `group:<path>` or `project:<path>` (instance runners:
    /// `POST /api/admins/create_runner`).
    #[schema(
        pattern = "^(group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}|project:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){1,19})$"
    )]
    scope: String,
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    description: Option<String>,
    #[serde(default)]
    #[schema(value_type = TagList)]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "params::integer")]
    #[schema(minimum = -1000, maximum = 1000)]
    priority: i32,
}

/// Creates a runner of a group or project the caller manages; its token
/// is shown only in this answer. It takes only jobs of that scope and
/// below, within the scope's runner limit.
#[utoipa::path(
    post,
    path = "/api/scopes/runners",
    tag = "scopes",
    request_body = NewScopedRunnerBody,
    responses(
        (status = 201, description = "the runner and its token", body = CreatedRunner),
        (status = 403, description = "the caller does not manage the scope", body = ErrorBody),
        (status = 404, description = "no such scope (or none the caller may see)", body = ErrorBody),
        (status = 409, description = "the scope is archived or has as many runners as it may", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn create_runner(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<NewScopedRunnerBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let reference = parse_scope(&body.scope)?;
    let scope = scopes::destination(&state.db, user.caller(), &reference, true).await?;
    let settings = RunnerSettings {
        description: body.description,
        tags: body.tags,
        priority: body.priority,
    };
    let metadata = context.metadata(user.actor());
    let created = runners::create_runner(&state.fleet, settings, scope.map(|s| s.id), &metadata).await?;
    Ok(HttpResponse::Created().json(CreatedRunner {
        id: created.id,
        token: created.token,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScopeListQuery {
    /// `group:<path>` or `project:<path>`.
    #[param(
        pattern = "^(group:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,19}|project:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){1,19})$"
    )]
    scope: String,
    /// A `next_cursor` this API returned.
    #[serde(default)]
    #[param(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    cursor: Option<String>,
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

impl ScopeListQuery {
    fn page(&self) -> Result<(Option<queries::PageCursor>, i64), ApiError> {
        paging(&self.cursor, self.limit)
    }
}

/// The runners of a scope the caller manages, and of every scope below.
#[utoipa::path(
    get,
    path = "/api/scopes/runners",
    tag = "scopes",
    params(ScopeListQuery),
    responses(
        (status = 200, description = "newest first", body = Page<RunnerView>),
        (status = 403, description = "the caller does not manage the scope", body = ErrorBody),
        (status = 404, description = "no such scope (or none the caller may see)", body = ErrorBody),
        (status = 422, description = "scope is not a scope reference", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn runners_of(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    query: web::Query<ScopeListQuery>,
) -> Result<web::Json<Page<RunnerView>>, ApiError> {
    let (cursor, limit) = query.page()?;
    let scope = scopes::managed(&state.db, user.caller(), &parse_scope(&query.scope)?).await?;
    let filter = queries::RunnerFilter {
        scope_and_below: Some(scope.id),
        ..Default::default()
    };
    let connection = state.db.get().await?;
    Ok(web::Json(
        queries::runners(&state.fleet, &connection, filter, cursor, limit).await?,
    ))
}

/// The jobs submitted to a scope the caller manages, and to every scope
/// below.
#[utoipa::path(
    get,
    path = "/api/scopes/jobs",
    tag = "scopes",
    params(ScopeListQuery),
    responses(
        (status = 200, description = "newest first", body = Page<JobView>),
        (status = 403, description = "the caller does not manage the scope", body = ErrorBody),
        (status = 404, description = "no such scope (or none the caller may see)", body = ErrorBody),
        (status = 422, description = "scope is not a scope reference", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn jobs_of(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    query: web::Query<ScopeListQuery>,
) -> Result<web::Json<Page<JobView>>, ApiError> {
    let (cursor, limit) = query.page()?;
    let scope = scopes::managed(&state.db, user.caller(), &parse_scope(&query.scope)?).await?;
    let filter = queries::JobFilter {
        scope_and_below: Some(scope.id),
        ..Default::default()
    };
    let connection = state.db.get().await?;
    Ok(web::Json(queries::jobs(&connection, filter, cursor, limit).await?))
}

/// What a manager may do to one of their scope's runners.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunnerAction {
    Pause,
    Resume,
    /// For good: its token stops working at once, its jobs are requeued.
    Invalidate,
    /// A new token, shown only in the answer; the old one stops at once.
    ResetToken,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerActionBody {
    /// The runner's UUID, or its integer number.
    #[schema(
        pattern = "^([1-9][0-9]{0,17}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    )]
    runner_id: String,
    action: RunnerAction,
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    reason: Option<String>,
}

/// What became of the runner.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunnerActionAnswer {
    pub id: Uuid,
    /// The new token (reset_token only), shown only here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Pauses, resumes, invalidates or resets the token of a runner of a
/// scope the caller manages (instance runners: the admin routes).
#[utoipa::path(
    post,
    path = "/api/scopes/runners/action",
    tag = "scopes",
    request_body = RunnerActionBody,
    responses(
        (status = 200, description = "done", body = RunnerActionAnswer),
        (status = 403, description = "the caller does not manage the runner's scope", body = ErrorBody),
        (status = 404, description = "no such runner (or none the caller may see)", body = ErrorBody),
        (status = 409, description = "the runner is invalidated", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn runner_action(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<RunnerActionBody>,
) -> Result<web::Json<RunnerActionAnswer>, ApiError> {
    let body = body.into_inner();
    let not_found = || ApiError::new(ErrorCode::RunnerNotFound, "no such runner of a scope you manage");
    let reference: crate::api::RunnerRef = body.runner_id.parse()?;
    let runner_id = runners::resolve(&state.fleet, reference).await?.ok_or_else(not_found)?;
    let runner = queries::runner(&state.fleet, runner_id).await?.ok_or_else(not_found)?;
    // Instance runners, and runners of scopes the caller has no role in,
    // do not exist for this route.
    let scope_id = runner.scope_id.ok_or_else(not_found)?;
    {
        let connection = state.db.get().await?;
        let scope = scopes::by_id(&connection, scope_id).await?.ok_or_else(not_found)?;
        scopes::require_manager(&connection, user.caller(), &scope)
            .await
            .map_err(|error| match error {
                scopes::ScopeError::NotFound(_) => not_found(),
                other => other.into(),
            })?;
    }
    let metadata = context.metadata(user.actor());
    let command = match body.action {
        RunnerAction::ResetToken => {
            let token = runners::reset_token(&state.commands, runner_id, None, &metadata).await?;
            return Ok(web::Json(RunnerActionAnswer {
                id: runner_id,
                token: Some(token),
            }));
        }
        RunnerAction::Pause => RunnerCommand::Pause,
        RunnerAction::Resume => RunnerCommand::Resume,
        RunnerAction::Invalidate => RunnerCommand::Invalidate { reason: body.reason },
    };
    runners::change_runner(&state.commands, runner_id, command, &metadata).await?;
    Ok(web::Json(RunnerActionAnswer {
        id: runner_id,
        token: None,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountTokenBody {
    /// The service account's email address or id (role `api`).
    #[schema(max_length = 320)]
    account: String,
    /// What the token is for: 1 to 100 printable characters.
    #[schema(
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: String,
    /// Days until the token stops working by itself; default and maximum:
    /// `security.api_tokens.max_lifetime`.
    #[schema(minimum = 1, maximum = 36500)]
    #[serde(default, deserialize_with = "crate::http::params::optional_integer")]
    expires_in_days: Option<u32>,
}

/// Issues an API token to a service account (cc-backend's `api` role),
/// which never logs in: by an admin, or by a manager of a scope the
/// account is a member of. Shown only in this answer; the account acts
/// within its memberships.
#[utoipa::path(
    post,
    path = "/api/scopes/service_accounts/api_tokens",
    tag = "scopes",
    request_body = ServiceAccountTokenBody,
    responses(
        (status = 201, description = "the token", body = crate::identity::api_tokens::CreatedApiToken),
        (status = 403, description = "called with an API token, or the caller manages no scope of the account", body = ErrorBody),
        (status = 404, description = "no such service account", body = ErrorBody),
        (status = 409, description = "the account has too many tokens", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn service_account_token(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<ServiceAccountTokenBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    user.require_login("API tokens are issued")?;
    let not_found = || {
        ApiError::new(
            ErrorCode::UserNotFound,
            "no service account has this email address or id",
        )
    };
    let connection = state.db.get().await?;
    let account = accounts::find_user_by_email_or_id(&connection, &body.account)
        .await?
        .filter(|account| account.role == warden_events::user::Role::Api)
        .ok_or_else(not_found)?;
    if !scopes::may_manage_account(&connection, user.caller(), account.id).await? {
        // Managers see only the accounts of their scopes.
        return Err(not_found());
    }
    drop(connection);
    let expires_at = crate::identity::api_tokens::expiry(
        &state.config.security.api_tokens,
        body.expires_in_days,
        chrono::Utc::now(),
    )?;
    let metadata = context.metadata(user.actor());
    let created =
        crate::identity::api_tokens::create(&state.commands, account.id, &body.name, expires_at, &metadata).await?;
    Ok(HttpResponse::Created().json(created))
}

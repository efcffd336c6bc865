//! The caller's own account: who am I, API tokens, deleting oneself.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::http::auth::AuthenticatedUser;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json::Json;
use crate::http::session::cleared_cookie;
use crate::identity::api_tokens::{self, ApiTokenView, CreatedApiToken};

/// Who the access token belongs to.
#[utoipa::path(
    get,
    path = "/api/users/me",
    tag = "accounts",
    responses(
        (status = 200, description = "the user", body = crate::api::Me)
    ),
    security(("user_token" = []))
)]
pub async fn me(user: AuthenticatedUser) -> Result<web::Json<crate::api::Me>, ApiError> {
    Ok(web::Json(crate::api::Me {
        id: user.user_id,
        email: user.email,
        role: user.role.as_str().to_owned(),
        admin_scope: user.admin_scope,
    }))
}

/// Deletes the caller's own account, at once: every token stops working and
/// the personal data in the log becomes unreadable.
#[utoipa::path(
    delete,
    path = "/api/users/me",
    tag = "accounts",
    responses(
        (status = 200, description = "deleted", body = crate::api::Outcome),
        (status = 409, description = "the last admin cannot delete themselves", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn delete_me(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let metadata = context.metadata(user.actor());
    crate::identity::accounts::delete_user_keeping_an_admin(&state.identity, user.user_id, &metadata).await?;
    Ok(HttpResponse::Ok()
        .cookie(cleared_cookie(&state))
        .json(crate::api::Outcome::new(user.user_id, "deleted")))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiTokenBody {
    /// What the token is for, e.g. "laptop script": 1 to 100 printable characters.
    #[schema(
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: String,
    /// Days until the token stops working by itself; default and maximum:
    /// `security.api_tokens.max_lifetime` (90 days unless configured).
    #[schema(minimum = 1, maximum = 36500)]
    #[serde(default, deserialize_with = "crate::http::params::optional_integer")]
    expires_in_days: Option<u32>,
}

/// Creates a long-lived API token (never admin-scoped); it is shown only in this answer.
///
/// Needs a log-in's token: an API token cannot create API tokens (a token about to expire could otherwise renew itself, and outlive its revocation through its children).
#[utoipa::path(
    post,
    path = "/api/users/api_tokens",
    tag = "accounts",
    request_body = NewApiTokenBody,
    responses(
        (status = 201, description = "the token", body = CreatedApiToken),
        (status = 403, description = "called with an API token", body = ErrorBody),
        (status = 409, description = "too many tokens", body = ErrorBody),
        (status = 422, description = "bad name", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn create_api_token(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<NewApiTokenBody>,
) -> Result<HttpResponse, ApiError> {
    user.require_login("API tokens are created")?;
    let metadata = context.metadata(user.actor());
    let expires_at = api_tokens::expiry(
        &state.config.security.api_tokens,
        body.expires_in_days,
        chrono::Utc::now(),
    )?;
    let created = api_tokens::create(&state.commands, user.user_id, &body.name, expires_at, &metadata).await?;
    Ok(HttpResponse::Created().json(created))
}

/// The caller's API tokens, newest first (revoked ones marked).
#[utoipa::path(
    get,
    path = "/api/users/api_tokens",
    tag = "accounts",
    responses(
        (status = 200, description = "the tokens (never their secrets)", body = Vec<ApiTokenView>)
    ),
    security(("user_token" = []))
)]
pub async fn list_api_tokens(state: web::Data<AppState>, user: AuthenticatedUser) -> Result<HttpResponse, ApiError> {
    let connection = state.db.get().await?;
    Ok(HttpResponse::Ok().json(api_tokens::list(&connection, user.user_id).await?))
}

/// Revokes one of the caller's API tokens; it stops working at once.
#[utoipa::path(
    delete,
    path = "/api/users/api_tokens/{id}",
    tag = "accounts",
    params(("id" = Uuid, Path, description = "API token id")),
    responses(
        (status = 200, description = "revoked", body = crate::api::Outcome),
        (status = 404, description = "no such live token of this user", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn revoke_api_token(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    token_id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let metadata = context.metadata(user.actor());
    api_tokens::revoke(&state.commands, user.user_id, *token_id, &metadata).await?;
    Ok(HttpResponse::Ok().json(crate::api::Outcome::new(*token_id, "revoked")))
}

//! Local accounts: password login (Project-W's form), self sign-up,
//! password change.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::ErrorCode;
use crate::app::AppState;
use crate::http::auth::{AuthenticatedUser, NotCrossSite};
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json::Json;
use crate::http::session::{login_response, wants_admin, TokenResponse};
use crate::identity::accounts;
use crate::platform::secrets::Secret;

/// OAuth2 password-grant form, as Project-W's clients send it.
#[derive(Deserialize, ToSchema)]
pub struct LoginForm {
    /// `password`, or empty.
    #[serde(default)]
    #[schema(pattern = "^(password)?$")]
    pub grant_type: String,
    /// `admin` to ask for admin rights (space-separated OAuth2 scopes).
    #[serde(default)]
    #[schema(pattern = "^[ ]*(admin([ ]+admin)*[ ]*)?$")]
    pub scope: String,
    #[schema(min_length = 1)]
    pub username: String,
    #[schema(min_length = 1)]
    pub password: String,
}

impl LoginForm {
    /// Checks the form's shape; returns whether admin rights were asked.
    pub fn validated(&self) -> Result<bool, ApiError> {
        if !self.grant_type.is_empty() && self.grant_type != "password" {
            return Err(ApiError::new(
                ErrorCode::UnsupportedGrantType,
                "only grant_type=password is supported here",
            ));
        }
        if self.username.is_empty() || self.password.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidForm,
                "username and password must not be empty",
            ));
        }
        wants_admin(Some(&self.scope))
    }
}

/// Local account login (OAuth2 password grant form).
///
/// `scope=admin` is granted only to admins; the token carries it. Also sets
/// the session cookie (never admin-scoped).
#[utoipa::path(
    post,
    path = "/api/local-account/login",
    tag = "accounts",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "an access token (and the session cookie)", body = TokenResponse),
        (status = 401, description = "wrong email or password", body = ErrorBody),
        (status = 403, description = "admin scope asked by a non-admin, local accounts disabled, or sent from another site's page", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody),
        (status = 429, description = "too many failed logins; see Retry-After", body = ErrorBody)
    )
)]
pub async fn login(
    _: NotCrossSite,
    state: web::Data<AppState>,
    context: RequestContext,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, ApiError> {
    let form = form.into_inner();
    let want_admin = form.validated()?;
    let user_id = accounts::password_login(
        &state.identity,
        &form.username,
        &form.password,
        want_admin,
        context.origin.source_ip.as_deref(),
    )
    .await?;
    Ok(login_response(&state, user_id, want_admin))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUpBody {
    #[schema(
        max_length = 254,
        pattern = "^[^@\\s\\x00-\\x1f\\x7f-\\x9f]+@[^@\\s\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    email: String,
    #[schema(min_length = 12, max_length = 1024)]
    password: String,
}

/// Self sign-up of a local account (only when `security.local_account.mode` is `enabled`).
#[utoipa::path(
    post,
    path = "/api/local-account/signup",
    tag = "accounts",
    request_body = SignUpBody,
    responses(
        (status = 201, description = "the account; log in next", body = crate::api::SignedUp),
        (status = 403, description = "sign-up is disabled, or sent from another site's page", body = ErrorBody),
        (status = 409, description = "the email is taken", body = ErrorBody),
        (status = 422, description = "invalid email or weak password", body = ErrorBody)
    )
)]
pub async fn signup(
    _: NotCrossSite,
    state: web::Data<AppState>,
    context: RequestContext,
    body: Json<SignUpBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let metadata = context.metadata(warden_events::Actor::System {
        component: "sign-up".into(),
    });
    // As the API declares it: the address as sent, no surrounding spaces.
    if body.email.trim() != body.email {
        return Err(ApiError::new(
            ErrorCode::InvalidEmail,
            "the email address must not start or end with spaces",
        ));
    }
    let user_id = accounts::sign_up(&state.identity, &body.email, &Secret::new(body.password), &metadata).await?;
    Ok(HttpResponse::Created().json(crate::api::SignedUp {
        id: user_id,
        email: body.email.trim().to_owned(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    #[schema(min_length = 1, max_length = 1024)]
    current_password: String,
    #[schema(min_length = 12, max_length = 1024)]
    new_password: String,
}

/// Changes the caller's local password; every other session ends and a fresh token is returned.
#[utoipa::path(
    post,
    path = "/api/local-account/change_password",
    tag = "accounts",
    request_body = ChangePasswordBody,
    responses(
        (status = 200, description = "a fresh access token (the old ones stop working)", body = TokenResponse),
        (status = 422, description = "wrong current password, weak new one, or not a local account", body = ErrorBody),
        (status = 429, description = "too many wrong current passwords; see Retry-After", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn change_password(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
    body: Json<ChangePasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let metadata = context.metadata(user.actor());
    accounts::change_password(
        &state.identity,
        user.user_id,
        &Secret::new(body.current_password),
        &Secret::new(body.new_password),
        &metadata,
    )
    .await
    .map_err(|error| match error {
        accounts::ChangePasswordError::Throttled(wait) => ApiError::login_throttled(wait),
        accounts::ChangePasswordError::Command(error) => error.into(),
    })?;
    Ok(login_response(&state, user.user_id, false))
}

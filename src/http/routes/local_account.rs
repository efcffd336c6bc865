use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::{self, LoginError};
use crate::app::AppState;
use crate::auth::access_tokens::ADMIN_SCOPE;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;

/// OAuth2 password-grant form, as Project-W's clients send it.
#[derive(Deserialize, ToSchema)]
pub struct LoginForm {
    #[serde(default)]
    grant_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
}

/// Parses the space-separated `scope`; only `admin` is known.
pub fn wants_admin(scope: Option<&str>) -> Result<bool, ApiError> {
    let mut admin = false;
    for requested in scope.unwrap_or_default().split_whitespace() {
        if requested == ADMIN_SCOPE {
            admin = true;
        } else {
            return Err(ApiError::unprocessable(
                "unknown_scope",
                format!("unknown scope `{requested}`; only `admin` exists"),
            ));
        }
    }
    Ok(admin)
}

/// Local account login (OAuth2 password grant form).
///
/// `scope=admin` is granted only to admins; the token carries it.
#[utoipa::path(
    post,
    path = "/api/local-account/login",
    tag = "accounts",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "an access token", body = TokenResponse),
        (status = 401, description = "wrong email or password", body = ErrorBody),
        (status = 403, description = "admin scope asked by a non-admin", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody)
    )
)]
pub async fn login(state: web::Data<AppState>, form: web::Form<LoginForm>) -> Result<HttpResponse, ApiError> {
    let form = form.into_inner();
    if form.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Err(ApiError::unprocessable(
            "unsupported_grant_type",
            "only grant_type=password is supported here",
        ));
    }
    if form.username.is_empty() || form.password.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_form",
            "username and password must not be empty",
        ));
    }
    let want_admin = wants_admin(form.scope.as_deref())?;
    let user_id = accounts::password_login(&state, &form.username, &form.password, want_admin)
        .await
        .map_err(|error| match error {
            LoginError::LocalLoginDisabled => ApiError::forbidden("local_login_disabled", error.to_string()),
            LoginError::InvalidCredentials => ApiError::unauthorized("invalid_credentials", error.to_string()),
            LoginError::AdminScopeDenied => ApiError::forbidden("admin_scope_denied", error.to_string()),
            LoginError::Store(error) => error.into(),
        })?;
    let issued = state.access_tokens.issue(user_id, want_admin);
    Ok(HttpResponse::Ok().json(TokenResponse {
        access_token: issued.token,
        token_type: "bearer",
        expires_in: issued.expires_in,
        scope: issued.scope,
    }))
}

//! Login options and log-out, for any provider.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::path_segment;
use crate::app::AppState;
use crate::http::auth::AuthenticatedUser;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::http::session::cleared_cookie;
use crate::platform::config::LocalAccountMode;

#[derive(Serialize, ToSchema)]
pub struct LoginOptions {
    /// `None` when local accounts are disabled or hidden.
    pub local: Option<LocalLogin>,
    pub ldap: Vec<ProviderOption>,
    pub oidc: Vec<ProviderOption>,
}

#[derive(Serialize, ToSchema)]
pub struct LocalLogin {
    pub login_url: String,
    /// `None` when sign-up is off.
    pub signup_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderOption {
    pub name: String,
    pub icon_url: Option<String>,
    pub login_url: String,
}

/// The login options a frontend should show (hidden providers left out).
#[utoipa::path(
    get,
    path = "/api/auth/providers",
    tag = "accounts",
    responses((status = 200, description = "login options", body = LoginOptions))
)]
pub async fn providers(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mode = state.config.security.local_account.mode;
    let local = match mode {
        LocalAccountMode::Disabled | LocalAccountMode::NoSignupHidden => None,
        LocalAccountMode::Enabled | LocalAccountMode::NoSignup => Some(LocalLogin {
            login_url: "/api/local-account/login".into(),
            signup_url: (mode == LocalAccountMode::Enabled).then(|| "/api/local-account/signup".into()),
        }),
    };
    let ldap = state
        .config
        .ldap_providers
        .iter()
        .filter(|(_, provider)| !provider.hidden)
        .map(|(name, provider)| ProviderOption {
            name: name.clone(),
            icon_url: provider.icon_url.clone(),
            login_url: format!("/api/ldap/login/{}", path_segment(name)),
        })
        .collect();
    let oidc = state
        .identity
        .oidc
        .visible()
        .map(|(name, icon_url)| ProviderOption {
            name: name.clone(),
            icon_url: icon_url.cloned(),
            login_url: format!("/api/oidc/login/{}", path_segment(name)),
        })
        .collect();
    Ok(HttpResponse::Ok().json(LoginOptions { local, ldap, oidc }))
}

/// Logs out everywhere: every access token and session cookie of the
/// caller issued until now stops working; the cookie is cleared.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "accounts",
    responses(
        (status = 200, description = "logged out", body = crate::api::LoggedOut)
    ),
    security(("user_token" = []))
)]
pub async fn logout(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    context: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let metadata = context.metadata(user.actor());
    crate::identity::accounts::revoke_sessions(&state.commands, user.user_id, &metadata).await?;
    Ok(HttpResponse::Ok()
        .cookie(cleared_cookie(&state))
        .json(crate::api::LoggedOut {
            status: "logged_out".to_owned(),
        }))
}

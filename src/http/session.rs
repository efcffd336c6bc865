//! Answers of a successful login: the access token as JSON (Project-W's
//! shape) and a session cookie (seed 003), both for the same user. The
//! cookie never carries admin rights: those need the explicitly requested
//! bearer token.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::HttpResponse;
use uuid::Uuid;

use crate::api::ErrorCode;
pub use crate::api::TokenResponse;
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::identity::access_tokens::ADMIN_SCOPE;
use crate::platform::config;

pub const SESSION_COOKIE: &str = "warden_session";

/// 200 with the access token, and the session cookie set.
pub fn login_response(state: &AppState, user_id: Uuid, admin: bool) -> HttpResponse {
    let issued = state.access_tokens.issue(user_id, admin);
    HttpResponse::Ok()
        .cookie(session_cookie(state, user_id))
        .json(TokenResponse {
            access_token: issued.token,
            token_type: "bearer".into(),
            expires_in: issued.expires_in,
            scope: issued.scope,
        })
}

fn session_cookie(state: &AppState, user_id: Uuid) -> Cookie<'static> {
    let settings = &state.config.security.session;
    let unlimited = settings.max_age.is_zero();
    let issued = state
        .access_tokens
        .issue_session(user_id, (!unlimited).then_some(settings.max_age));
    let mut cookie = base_cookie(state, issued.token);
    if !unlimited {
        cookie.set_max_age(actix_web::cookie::time::Duration::seconds(
            settings.max_age.as_secs() as i64
        ));
    }
    cookie
}

/// A `Set-Cookie` that removes the session cookie.
pub fn cleared_cookie(state: &AppState) -> Cookie<'static> {
    let mut cookie = base_cookie(state, String::new());
    cookie.make_removal();
    cookie
}

fn base_cookie(state: &AppState, value: String) -> Cookie<'static> {
    let settings = &state.config.security.session;
    Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .secure(settings.cookie_secure)
        .same_site(match settings.same_site {
            config::SameSite::Strict => SameSite::Strict,
            config::SameSite::Lax => SameSite::Lax,
        })
        .finish()
}

/// Parses the space-separated `scope`; only `admin` is known.
pub fn wants_admin(scope: Option<&str>) -> Result<bool, ApiError> {
    let mut admin = false;
    for requested in scope.unwrap_or_default().split_whitespace() {
        if requested == ADMIN_SCOPE {
            admin = true;
        } else {
            return Err(ApiError::new(
                ErrorCode::UnknownScope,
                format!("unknown scope `{requested}`; only `admin` exists"),
            ));
        }
    }
    Ok(admin)
}

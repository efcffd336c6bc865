//! OIDC login: `GET /api/oidc/login/<provider>` sends the browser to the
//! provider; the provider sends it back to `/api/oidc/callback/<provider>`,
//! which answers like a password login (token and session cookie).

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::ErrorCode;
use crate::app::AppState;
use crate::http::context::RequestContext;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::session::{login_response, TokenResponse};
use crate::platform::secrets::tokens::hashes_match;

/// Ties the callback to the browser that started the login.
const STATE_COOKIE: &str = "warden_oidc_state";

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LoginParams {
    /// `admin` to ask for admin rights (granted only with the admin role).
    #[serde(default)]
    #[param(pattern = "^[ ]*(admin([ ]+admin)*[ ]*)?$")]
    scope: Option<String>,
    /// `true`: the callback sends the browser back to the admin console
    /// (`/admin`) with the access token in the URL fragment (or the error
    /// code), instead of answering JSON.
    #[serde(default)]
    console: bool,
}

/// Remembers, between login and callback, that the admin console asked.
const CONSOLE_COOKIE: &str = "warden_oidc_console";

fn callback_url(state: &AppState, request: &HttpRequest, provider: &str) -> String {
    let base = match &state.config.http.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        // Forwarded host and scheme only from a trusted proxy: anyone else
        // could point the provider's redirect at a host of their choice.
        None if crate::http::context::via_trusted_proxy(request, &state.config.http.trusted_proxies) => {
            let info = request.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
        None => {
            let host = request
                .headers()
                .get(actix_web::http::header::HOST)
                .and_then(|host| host.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| state.config.http.listen.clone());
            // warden itself serves plain HTTP; HTTPS is a proxy's job.
            format!("http://{host}")
        }
    };
    format!("{base}/api/oidc/callback/{}", super::path_segment(provider))
}

/// Starts an OIDC login (authorization code flow with PKCE): redirects to the provider.
#[utoipa::path(
    get,
    path = "/api/oidc/login/{provider}",
    tag = "accounts",
    params(("provider" = String, Path, description = "the provider's name in oidc_providers"), LoginParams),
    responses(
        (status = 302, description = "to the provider's login page"),
        (status = 404, description = "no such OIDC provider", body = ErrorBody),
        (status = 422, description = "unknown scope", body = ErrorBody),
        (status = 503, description = "the provider is unreachable", body = ErrorBody)
    )
)]
pub async fn login(
    state: web::Data<AppState>,
    request: HttpRequest,
    provider: web::Path<String>,
    params: web::Query<LoginParams>,
) -> Result<HttpResponse, ApiError> {
    let want_admin = crate::http::session::wants_admin(params.scope.as_deref())?;
    let redirect_uri = callback_url(&state, &request, &provider);
    let (url, csrf_state) = state
        .identity
        .oidc
        .begin_login(&state.identity, &provider, &redirect_uri, want_admin)
        .await
        .map_err(ApiError::from)?;
    let cookie = Cookie::build(STATE_COOKIE, csrf_state)
        .path("/api/oidc")
        .http_only(true)
        .secure(state.config.security.session.cookie_secure)
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::minutes(10))
        .finish();
    let mut answer = HttpResponse::Found();
    answer.insert_header((header::LOCATION, url)).cookie(cookie);
    if params.console {
        answer.cookie(
            Cookie::build(CONSOLE_COOKIE, "1")
                .path("/api/oidc")
                .http_only(true)
                .secure(state.config.security.session.cookie_secure)
                .same_site(SameSite::Lax)
                .max_age(actix_web::cookie::time::Duration::minutes(10))
                .finish(),
        );
    }
    Ok(answer.finish())
}

/// The console's end of an OIDC login: back to `/admin` with the token or
/// the error in the fragment (never sent to a server; the console removes
/// it from the address bar at once).
fn back_to_console(outcome: Result<(String, bool), ApiError>) -> HttpResponse {
    let encode = |value: &str| url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>();
    let fragment = match outcome {
        Ok((token, admin)) => format!("oidc_token={}&admin={admin}", encode(&token)),
        Err(error) => format!(
            "oidc_error={}&message={}",
            encode(error.code_str()),
            encode(error.message())
        ),
    };
    let mut cleared = Cookie::build(CONSOLE_COOKIE, "").path("/api/oidc").finish();
    cleared.make_removal();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/admin#{fragment}")))
        .cookie(cleared)
        .finish()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    /// Set by the provider when the user or the provider refused.
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Where the provider sends the browser back; completes the login.
#[utoipa::path(
    get,
    path = "/api/oidc/callback/{provider}",
    tag = "accounts",
    params(("provider" = String, Path, description = "the provider's name in oidc_providers"), CallbackParams),
    responses(
        (status = 200, description = "an access token (and the session cookie)", body = TokenResponse),
        (status = 400, description = "missing or unknown state or code", body = ErrorBody),
        (status = 401, description = "the provider refused, or its ID token is not valid", body = ErrorBody),
        (status = 403, description = "role missing, or admin scope asked without the admin role", body = ErrorBody),
        (status = 503, description = "the provider is unreachable", body = ErrorBody)
    )
)]
pub async fn callback(
    state: web::Data<AppState>,
    request: HttpRequest,
    context: RequestContext,
    provider: web::Path<String>,
    params: web::Query<CallbackParams>,
) -> Result<HttpResponse, ApiError> {
    if request.cookie(CONSOLE_COOKIE).is_some() {
        let outcome = finish_callback(&state, &request, context, &provider, params.into_inner())
            .await
            .map(|(user_id, admin)| (state.access_tokens.issue(user_id, admin).token, admin));
        return Ok(back_to_console(outcome));
    }
    let (user_id, admin) = finish_callback(&state, &request, context, &provider, params.into_inner()).await?;
    let mut response = login_response(&state, user_id, admin);
    let mut cleared = Cookie::build(STATE_COOKIE, "").path("/api/oidc").finish();
    cleared.make_removal();
    response
        .add_cookie(&cleared)
        .map_err(|e| ApiError::new(ErrorCode::InvalidState, e.to_string()))?;
    Ok(response)
}

/// Checks the provider's answer and logs the user in: `(user, admin)`.
async fn finish_callback(
    state: &AppState,
    request: &HttpRequest,
    context: RequestContext,
    provider: &str,
    params: CallbackParams,
) -> Result<(uuid::Uuid, bool), ApiError> {
    if let Some(error) = params.error {
        let detail = params.error_description.unwrap_or_default();
        return Err(ApiError::new(
            ErrorCode::OidcLoginFailed,
            format!("the provider refused the login: {error} {detail}"),
        ));
    }
    let (Some(code), Some(returned_state)) = (params.code, params.state) else {
        return Err(ApiError::new(ErrorCode::InvalidState, "code and state are required"));
    };
    let from_this_browser = request
        .cookie(STATE_COOKIE)
        .is_some_and(|cookie| hashes_match(cookie.value(), &returned_state));
    if !from_this_browser {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "this login was not started in this browser (state cookie missing or different)",
        ));
    }
    let redirect_uri = callback_url(state, request, provider);
    let metadata = context.metadata(warden_events::Actor::System {
        component: format!("oidc-login:{provider}"),
    });
    state
        .identity
        .oidc
        .finish_login(
            &state.identity,
            provider,
            &redirect_uri,
            &code,
            &returned_state,
            &metadata,
        )
        .await
        .map_err(ApiError::from)
}

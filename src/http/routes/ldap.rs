//! LDAP login: `POST /api/ldap/login/<provider name>` with the same form as
//! local login (seed 000).

use actix_web::{web, HttpResponse};
use warden_events::Actor;

use super::local_account::LoginForm;
use crate::app::AppState;
use crate::http::auth::NotCrossSite;
use crate::http::context::RequestContext;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::session::{login_response, TokenResponse};
use crate::identity::ldap;

/// Login with an LDAP directory user (OAuth2 password grant form).
///
/// `username` may be any of the provider's `username_attributes`;
/// `scope=admin` is granted only to users its `admin_query` returns.
#[utoipa::path(
    post,
    path = "/api/ldap/login/{provider}",
    tag = "accounts",
    params(("provider" = String, Path, description = "the provider's name in ldap_providers")),
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "an access token (and the session cookie)", body = TokenResponse),
        (status = 401, description = "wrong username or password, or not synchronised yet", body = ErrorBody),
        (status = 403, description = "admin scope asked by a non-admin, or sent from another site's page", body = ErrorBody),
        (status = 404, description = "no such LDAP provider", body = ErrorBody),
        (status = 422, description = "a field has a wrong value", body = ErrorBody),
        (status = 429, description = "too many failed logins; see Retry-After", body = ErrorBody),
        (status = 503, description = "the directory is unreachable", body = ErrorBody)
    )
)]
pub async fn login(
    _: NotCrossSite,
    state: web::Data<AppState>,
    context: RequestContext,
    provider: web::Path<String>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, ApiError> {
    let form = form.into_inner();
    let want_admin = form.validated()?;
    let metadata = context.metadata(Actor::System {
        component: format!("ldap-login:{provider}"),
    });
    let user_id = ldap::login(
        &state.identity,
        &provider,
        &form.username,
        &form.password,
        want_admin,
        &metadata,
    )
    .await?;
    Ok(login_response(&state, user_id, want_admin))
}

//! Extractors that authenticate a request: a user (access token in the
//! `Authorization` header or the session cookie, or an API token), an admin
//! (access token with scope=admin of a current admin), or a runner (runner
//! token). Runner tokens are refused on user routes and vice versa.

use std::sync::Arc;

use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use uuid::Uuid;
use warden_events::user::Role;
use warden_events::Actor;

use super::error::ApiError;
use crate::api::ErrorCode;
use crate::app::AppState;
use crate::fleet::runners::{self, AuthenticatedRunner};
use crate::http::session::SESSION_COOKIE;
use crate::identity::access_tokens::{AccessTokens, TokenError};
use crate::identity::accounts;
use crate::identity::api_tokens;
use crate::platform::secrets::tokens::{API_TOKEN_PREFIX, RUNNER_TOKEN_PREFIX};

/// A user authenticated by an access token.
pub struct AuthenticatedUser {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub role: Role,
    /// The token was issued with scope=admin and the user is still admin.
    pub admin_scope: bool,
    /// What the request authenticated with.
    pub credential: Credential,
}

/// The kind of credential a user request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A warden access token (header or session cookie), or an OIDC
    /// provider's ID token: issued by a log-in.
    Login,
    /// A long-lived API token.
    ApiToken,
}

impl AuthenticatedUser {
    /// `user` as of the read model; admin rights only if the credential
    /// asked for them and the user is an admin now.
    fn of(user: accounts::UserRecord, credential_is_admin: bool, credential: Credential) -> Self {
        AuthenticatedUser {
            admin_scope: credential_is_admin && user.role == Role::Admin,
            user_id: user.id,
            email: user.email,
            role: user.role,
            credential,
        }
    }

    pub fn actor(&self) -> Actor {
        Actor::User { user_id: self.user_id }
    }

    /// Who asks, for the rules of groups and projects.
    pub fn caller(&self) -> crate::scopes::Caller {
        crate::scopes::Caller {
            user_id: self.user_id,
            admin: self.admin_scope,
        }
    }

    /// Refuses an API token where `what` needs a log-in's token (an API
    /// token that issued tokens could outlive its revocation through them).
    pub fn require_login(&self, what: &str) -> Result<(), ApiError> {
        if self.credential == Credential::ApiToken {
            return Err(ApiError::new(
                ErrorCode::LoginRequired,
                format!("{what} with a log-in's token, not with an API token"),
            ));
        }
        Ok(())
    }
}

/// An admin with an admin-scoped token.
pub struct Admin(pub AuthenticatedUser);

/// May read admin views (audit log, read-model queries): an admin with an
/// admin-scoped token, or a user with the read-only `support` role.
pub struct AdminReader(pub AuthenticatedUser);

impl FromRequest for AdminReader {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let user = authenticate_user(request).await?;
            if !(user.admin_scope || user.role == Role::Support) {
                return Err(ApiError::new(
                    ErrorCode::AdminReadRequired,
                    "this view needs an admin-scoped token of an admin, or the support role",
                ));
            }
            Ok(AdminReader(user))
        })
    }
}

/// A runner authenticated by its runner token (and within its rate limit).
pub struct Runner(pub AuthenticatedRunner);

fn state(request: &HttpRequest) -> Arc<AppState> {
    request
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered on every app")
        .clone()
        .into_inner()
}

fn bearer_token(request: &HttpRequest) -> Result<String, ApiError> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::new(ErrorCode::MissingToken, "send `Authorization: Bearer <token>`"))?;
    let value = value.to_str().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidAuthorizationHeader,
            "the Authorization header is not valid text",
        )
    })?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim().to_owned())
        }
        _ => Err(ApiError::new(
            ErrorCode::InvalidAuthorizationHeader,
            "expected `Authorization: Bearer <token>`",
        )),
    }
}

/// The user's credential: the `Authorization: Bearer` header, else the
/// session cookie.
fn user_credential(request: &HttpRequest) -> Result<String, ApiError> {
    if request.headers().contains_key(header::AUTHORIZATION) {
        return bearer_token(request);
    }
    match request.cookie(SESSION_COOKIE) {
        Some(cookie) if !cookie.value().is_empty() => {
            refuse_cross_site_writes(request)?;
            Ok(cookie.value().to_owned())
        }
        _ => Err(ApiError::new(
            ErrorCode::MissingToken,
            "send `Authorization: Bearer <token>` or log in for a session cookie",
        )),
    }
}

/// Refuses a request from another site's page (log-in CSRF: another site
/// must not log a visitor's browser in to an account of its choosing,
/// whose session cookie the visitor would then use unawares). For the
/// routes that set the session cookie: password log-ins and sign-up.
pub struct NotCrossSite;

impl FromRequest for NotCrossSite {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(refuse_cross_site_writes(request).map(|()| NotCrossSite))
    }
}

/// CSRF defence for cookie-authenticated requests (a browser sends the
/// cookie along with any site's form): a state-changing method must come
/// from warden's own origin. Browsers say where a request comes from in
/// `Sec-Fetch-Site` (all current ones) or `Origin`; a request with neither
/// is not from a browser page and is let through. Bearer-token requests
/// never get here: another site cannot make a browser add that header.
fn refuse_cross_site_writes(request: &HttpRequest) -> Result<(), ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let refuse = || {
        Err(ApiError::new(
            ErrorCode::CrossSiteRequest,
            "a log-in, or a cookie-authenticated change, must come from this server's own pages; other clients \
             send no Origin (or `Authorization: Bearer`)",
        ))
    };
    if let Some(site) = header("sec-fetch-site") {
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => refuse(),
        };
    }
    let Some(origin) = header("origin") else {
        return Ok(());
    };
    let state = state(request);
    let own_origin = match &state.config.http.public_url {
        Some(url) => url::Url::parse(url).ok().map(|url| url.origin().ascii_serialization()),
        None => None,
    };
    let host = if crate::http::context::via_trusted_proxy(request, &state.config.http.trusted_proxies) {
        Some(request.connection_info().host().to_owned())
    } else {
        header("host").map(str::to_owned)
    };
    let origin_host = url::Url::parse(origin).ok().map(|url| {
        let host = url.host_str().unwrap_or_default().to_owned();
        match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    });
    if own_origin.as_deref() == Some(origin) || (origin_host.is_some() && origin_host == host) {
        Ok(())
    } else {
        refuse()
    }
}

async fn authenticate_user(request: HttpRequest) -> Result<AuthenticatedUser, ApiError> {
    let token = user_credential(&request)?;
    if token.starts_with(RUNNER_TOKEN_PREFIX) {
        return Err(ApiError::new(
            ErrorCode::RunnerTokenNotAccepted,
            "runner tokens are only accepted on /api/runners/* routes; log in for a user token",
        ));
    }
    let state = state(&request);
    if token.starts_with(API_TOKEN_PREFIX) {
        return authenticate_api_token(&state, &token).await;
    }
    let claims = match state.access_tokens.verify(&token) {
        Ok(claims) => claims,
        Err(TokenError::Expired) => {
            return Err(ApiError::new(
                ErrorCode::TokenExpired,
                "the access token has expired; log in again",
            ))
        }
        Err(TokenError::Invalid) => return authenticate_provider_id_token(&state, &token).await,
    };
    // Checked on every request, so deletion, demotion and log-out apply at
    // once.
    let connection = state.db.get().await?;
    let user = accounts::find_user(&connection, claims.sub)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserOfTokenGone, "the user of this token no longer exists"))?;
    if user
        .sessions_revoked_at
        .is_some_and(|revoked| claims.issued_at() < revoked)
    {
        return Err(ApiError::new(
            ErrorCode::SessionRevoked,
            "this token was issued before a log-out or password change; log in again",
        ));
    }
    if user.role == Role::Api {
        // Made a service account after this log-in: its sessions end.
        return Err(ApiError::new(
            ErrorCode::ServiceAccountCannotLogIn,
            "this is a service account: it acts with API tokens only",
        ));
    }
    Ok(AuthenticatedUser::of(user, claims.has_admin_scope(), Credential::Login))
}

/// An OIDC provider's ID token (seed 000: admins use it for admin calls):
/// admin rights if it carries the provider's admin role.
async fn authenticate_provider_id_token(state: &AppState, token: &str) -> Result<AuthenticatedUser, ApiError> {
    let invalid = || ApiError::new(ErrorCode::InvalidToken, "the access token is not valid");
    if state.identity.oidc.is_empty() || !AccessTokens::looks_like_jwt(token) {
        return Err(invalid());
    }
    use crate::identity::oidc::OidcError;
    let found = match state.identity.oidc.verify_bearer_id_token(&state.identity, token).await {
        Ok(found) => found,
        Err(error @ (OidcError::Unavailable(_) | OidcError::IdTokenExpired | OidcError::Revoked)) => {
            return Err(ApiError::from(error))
        }
        Err(_) => return Err(invalid()),
    };
    let (user_id, admin_role) = found.ok_or_else(invalid)?;
    let connection = state.db.get().await?;
    let user = accounts::find_user(&connection, user_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserOfTokenGone, "the user of this token no longer exists"))?;
    Ok(AuthenticatedUser::of(user, admin_role, Credential::Login))
}

/// API tokens act for their user but never with admin rights.
async fn authenticate_api_token(state: &AppState, token: &str) -> Result<AuthenticatedUser, ApiError> {
    let connection = state.db.get().await?;
    let user_id = api_tokens::authenticate(&connection, token)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidApiToken, "not a valid API token, or it was revoked"))?;
    let user = accounts::find_user(&connection, user_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserOfTokenGone, "the user of this token no longer exists"))?;
    Ok(AuthenticatedUser::of(user, false, Credential::ApiToken))
}

impl FromRequest for AuthenticatedUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        Box::pin(authenticate_user(request.clone()))
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let user = authenticate_user(request).await?;
            if !user.admin_scope {
                return Err(ApiError::new(
                    ErrorCode::AdminScopeRequired,
                    "this call needs an access token issued with scope=admin to an admin user",
                ));
            }
            Ok(Admin(user))
        })
    }
}

impl FromRequest for Runner {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let token = runner_token(&request)?;
            let state = state(&request);
            let connection = state.db.get().await?;
            let outcome = runners::authenticate(&connection, &token).await;
            drop(connection);
            Ok(Runner(runners::admit(&state.fleet, outcome)?))
        })
    }
}

/// The runner token of a request to a `/api/runners/*` route.
pub fn runner_token(request: &HttpRequest) -> Result<String, ApiError> {
    let token = bearer_token(request)?;
    if AccessTokens::looks_like_jwt(&token) {
        return Err(ApiError::new(
            ErrorCode::UserTokenNotAccepted,
            "/api/runners/* routes need a runner token, not a user token",
        ));
    }
    Ok(token)
}

//! OpenID Connect providers (`oidc_providers.<name>`, openidconnect crate).
//!
//! Login is the authorization-code flow with PKCE (S256): `begin_login`
//! stores the verifier and nonce under the hash of a random `state` and
//! sends the browser to the provider; `finish_login` takes them back (once,
//! within 10 minutes), exchanges the code with the client secret, verifies
//! the ID token (signature against the provider's keys, issuer, audience,
//! expiry, nonce) and links or updates the warden user. Roles come from a
//! claim (`user_role`, `admin_role`) that may be a string or a list.
//!
//! As seed 000 describes, an ID token of the provider is also accepted as a
//! bearer token (`verify_bearer_id_token`): same checks but the nonce, and
//! admin rights if its `admin_role` claim says so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope,
};
use serde_json::Value;
use tokio::sync::RwLock;
use uuid::Uuid;
use warden_events::user::Role;
use warden_events::Metadata;

use crate::domain::user::ExternalKind;
use crate::identity::Identity;
use crate::log::commands::CommandError;
use crate::log::event_store::{claims, StoreError};
use crate::platform::config::{Config, OidcProviderConfig, OidcRole};
use crate::platform::secrets::tokens;

/// How long a started login may take.
const LOGIN_TIMEOUT_MINUTES: i32 = 10;
/// How long discovered metadata (endpoints, signing keys) is trusted.
const METADATA_TTL: Duration = Duration::from_secs(600);
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("no OIDC provider named `{0}`")]
    UnknownProvider(String),
    #[error("the OIDC provider could not be reached or answered nonsense: {0}")]
    Unavailable(String),
    #[error("this login was not started here, has expired, or was already used")]
    UnknownState,
    #[error("the provider refused the login: {0}")]
    Refused(String),
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
    #[error("the ID token has expired")]
    IdTokenExpired,
    #[error("the provider says this user may not use warden (user_role missing)")]
    RoleMissing,
    #[error("admin rights were requested (scope=admin) but this user does not have the admin role")]
    AdminScopeDenied,
    #[error("the provider sent no usable email claim")]
    NoEmail,
    #[error("the provider does not say this user's email address is verified")]
    EmailNotVerified,
    #[error("another warden user already has this email address")]
    EmailTaken,
    #[error("this ID token was issued before a log-out or password change; log in again")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Command(#[from] CommandError),
}

struct Provider {
    config: OidcProviderConfig,
    /// Discovered lazily and refreshed after `METADATA_TTL`.
    metadata: RwLock<Option<(CoreProviderMetadata, Instant)>>,
}

/// The configured providers, by name.
pub struct OidcProviders {
    providers: BTreeMap<String, Provider>,
    http: openidconnect::reqwest::Client,
}

/// What the provider says about a user, verified.
#[derive(Debug)]
pub struct OidcIdentity {
    pub subject: String,
    pub email: String,
    pub admin: bool,
    pub issued_at: chrono::DateTime<chrono::Utc>,
    /// The provider's `scope_mappings` whose claim the token holds, by index.
    pub mappings: Vec<usize>,
}

/// The only algorithms an ID token presented as a bearer token may be
/// signed with: public-key signatures checked against the provider's JWKS.
/// An HMAC (HS*) token is keyed with the client secret, which warden
/// itself holds: accepting one would let anyone with warden's config mint
/// admin credentials.
const BEARER_ID_TOKEN_ALGORITHMS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

impl OidcProviders {
    pub fn from_config(config: &Config) -> anyhow::Result<OidcProviders> {
        let providers = config
            .oidc_providers
            .iter()
            .map(|(name, config)| {
                (
                    name.clone(),
                    Provider {
                        config: config.clone(),
                        metadata: RwLock::new(None),
                    },
                )
            })
            .collect();
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would open the client to SSRF.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(OidcProviders { providers, http })
    }

    fn provider(&self, name: &str) -> Result<&Provider, OidcError> {
        self.providers
            .get(name)
            .ok_or_else(|| OidcError::UnknownProvider(name.to_owned()))
    }

    /// `refresh` asks for fresh keys, but at most once a minute, so forged
    /// tokens cannot make warden hammer the provider.
    async fn metadata(&self, provider: &Provider, refresh: bool) -> Result<CoreProviderMetadata, OidcError> {
        if let Some((metadata, at)) = &*provider.metadata.read().await {
            let max_age = if refresh { MIN_REFRESH_INTERVAL } else { METADATA_TTL };
            if at.elapsed() < max_age {
                return Ok(metadata.clone());
            }
        }
        let issuer = IssuerUrl::new(provider.config.base_url.trim_end_matches('/').to_owned())
            .map_err(|e| OidcError::Unavailable(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Unavailable(format!("discovery failed: {e}")))?;
        *provider.metadata.write().await = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    /// Starts a login: returns the provider URL to send the browser to and
    /// the `state` the callback must bring back.
    pub async fn begin_login(
        &self,
        identity: &Identity,
        name: &str,
        redirect_uri: &str,
        want_admin: bool,
    ) -> Result<(String, String), OidcError> {
        let provider = self.provider(name)?;
        let metadata = self.metadata(provider, false).await?;
        let client = client(provider, metadata, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, csrf, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        let connection = identity.db.get().await.map_err(StoreError::from)?;
        connection
            .execute(
                "DELETE FROM oidc_logins WHERE created_at < now() - make_interval(mins => $1)",
                &[&LOGIN_TIMEOUT_MINUTES],
            )
            .await
            .map_err(StoreError::from)?;
        connection
            .execute(
                "INSERT INTO oidc_logins (state_hash, provider, pkce_verifier, nonce, want_admin)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &tokens::hash(csrf.secret()),
                    &name,
                    verifier.secret(),
                    nonce.secret(),
                    &want_admin,
                ],
            )
            .await
            .map_err(StoreError::from)?;
        Ok((url.to_string(), csrf.secret().clone()))
    }

    /// Completes a login from the provider's redirect; returns the warden
    /// user and whether admin rights were asked for (and granted). Link and
    /// sync events record `request_metadata` (the callback request).
    pub async fn finish_login(
        &self,
        identity: &Identity,
        name: &str,
        redirect_uri: &str,
        code: &str,
        returned_state: &str,
        request_metadata: &Metadata,
    ) -> Result<(Uuid, bool), OidcError> {
        let provider = self.provider(name)?;
        let connection = identity.db.get().await.map_err(StoreError::from)?;
        // Taken at most once, and only for this provider, while fresh.
        let pending = connection
            .query_opt(
                "DELETE FROM oidc_logins
                 WHERE state_hash = $1 AND provider = $2 AND created_at >= now() - make_interval(mins => $3)
                 RETURNING pkce_verifier, nonce, want_admin",
                &[&tokens::hash(returned_state), &name, &LOGIN_TIMEOUT_MINUTES],
            )
            .await
            .map_err(StoreError::from)?
            .ok_or(OidcError::UnknownState)?;
        drop(connection);
        let (verifier, nonce, want_admin): (String, String, bool) = (pending.get(0), pending.get(1), pending.get(2));

        let metadata = self.metadata(provider, false).await?;
        let client = client(provider, metadata, redirect_uri)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Unavailable(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Refused(format!("code exchange: {e}")))?;
        let id_token = openidconnect::TokenResponse::id_token(&response)
            .ok_or_else(|| OidcError::InvalidIdToken("the provider sent no ID token".into()))?;
        let nonce = Nonce::new(nonce);
        let verified = identify(provider, id_token, &client.id_token_verifier(), &nonce)?;
        if want_admin && !verified.admin {
            return Err(OidcError::AdminScopeDenied);
        }
        let user_id = link_or_update(identity, name, &verified, request_metadata).await?;
        Ok((user_id, want_admin))
    }

    /// A provider's ID token used as a bearer token: the linked user, and
    /// whether the token carries the admin role. `None` when no provider
    /// issued it.
    pub async fn verify_bearer_id_token(
        &self,
        identity: &Identity,
        token: &str,
    ) -> Result<Option<(Uuid, bool)>, OidcError> {
        // Which provider: by the (not yet trusted) issuer.
        let Some(issuer) = unverified_claims(token).and_then(|c| c["iss"].as_str().map(str::to_owned)) else {
            return Ok(None);
        };
        let Some((name, provider)) = self
            .providers
            .iter()
            .find(|(_, p)| p.config.base_url.trim_end_matches('/') == issuer.trim_end_matches('/'))
        else {
            return Ok(None);
        };
        let id_token: CoreIdToken = serde_json::from_value(Value::String(token.to_owned()))
            .map_err(|e| OidcError::InvalidIdToken(e.to_string()))?;
        let mut verified = None;
        // Once more with fresh keys, in case the provider rotated them.
        for refresh in [false, true] {
            let metadata = self.metadata(provider, refresh).await?;
            let client = client(provider, metadata, "http://127.0.0.1/unused")?;
            // No nonce: this token was not requested by warden.
            let verifier = client.id_token_verifier().set_allowed_algs(BEARER_ID_TOKEN_ALGORITHMS);
            let outcome = identify(provider, &id_token, &verifier, |_: Option<&Nonce>| Ok(()));
            match outcome {
                Ok(found) => {
                    verified = Some(found);
                    break;
                }
                Err(error) if refresh => return Err(error),
                Err(_) => continue,
            }
        }
        let verified = verified.expect("set or returned above");
        let Some(user_id) =
            crate::identity::accounts::find_external_user(identity, ExternalKind::Oidc, name, &verified.subject)
                .await?
        else {
            return Ok(None);
        };
        // A log-out ends this user's ID tokens issued until then, as it
        // ends warden's own tokens (`iat` has whole seconds: one issued in
        // the second of the log-out counts as before it).
        let connection = identity.db.get().await.map_err(StoreError::from)?;
        let revoked_at = crate::identity::accounts::find_user(&connection, user_id)
            .await?
            .and_then(|user| user.sessions_revoked_at);
        if revoked_at.is_some_and(|revoked| verified.issued_at < revoked) {
            return Err(OidcError::Revoked);
        }
        Ok(Some((user_id, verified.admin)))
    }

    /// Login options to advertise: (name, icon) of providers not hidden.
    pub fn visible(&self) -> impl Iterator<Item = (&String, Option<&String>)> {
        self.providers
            .iter()
            .filter(|(_, p)| !p.config.hidden)
            .map(|(name, p)| (name, p.config.icon_url.as_ref()))
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

type DiscoveredClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

fn client(
    provider: &Provider,
    metadata: CoreProviderMetadata,
    redirect_uri: &str,
) -> Result<DiscoveredClient, OidcError> {
    let redirect = RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| OidcError::Unavailable(e.to_string()))?;
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(provider.config.client_id.clone()),
        Some(ClientSecret::new(provider.config.client_secret.expose().to_owned())),
    )
    .set_redirect_uri(redirect))
}

/// Verifies `id_token` and reads who it is about.
fn identify<N: openidconnect::NonceVerifier>(
    provider: &Provider,
    id_token: &CoreIdToken,
    verifier: &openidconnect::core::CoreIdTokenVerifier,
    nonce: N,
) -> Result<OidcIdentity, OidcError> {
    let verified = id_token.claims(verifier, nonce).map_err(|error| match error {
        openidconnect::ClaimsVerificationError::Expired(_) => OidcError::IdTokenExpired,
        other => OidcError::InvalidIdToken(other.to_string()),
    })?;
    // Role claims are not standard claims: read them from the token's
    // payload, whose signature and claims were verified just above.
    let raw = unverified_claims(&id_token.to_string()).unwrap_or(Value::Null);
    let config = &provider.config;
    let has = |role: &Option<OidcRole>| role.as_ref().is_some_and(|role| claim_contains(&raw, role));
    let admin = has(&config.admin_role);
    if config.user_role.is_some() && !has(&config.user_role) && !admin {
        return Err(OidcError::RoleMissing);
    }
    let email = verified
        .email()
        .map(|e| e.as_str().to_owned())
        .filter(|e| !e.is_empty())
        .ok_or(OidcError::NoEmail)?;
    // An unverified address is whatever the user typed at the provider:
    // it must not become their identity here.
    if config.require_verified_email && verified.email_verified() != Some(true) {
        return Err(OidcError::EmailNotVerified);
    }
    Ok(OidcIdentity {
        subject: verified.subject().as_str().to_owned(),
        email,
        admin,
        issued_at: verified.issue_time(),
        mappings: (0..config.scope_mappings.len())
            .filter(|n| claim_contains(&raw, &config.scope_mappings[*n].claim))
            .collect(),
    })
}

/// Whether claim `role.field_name` is `role.name` or a list holding it.
fn claim_contains(claims: &Value, role: &OidcRole) -> bool {
    match &claims[&role.field_name] {
        Value::String(value) => value == &role.name,
        Value::Array(values) => values.iter().any(|v| v.as_str() == Some(role.name.as_str())),
        _ => false,
    }
}

/// The payload of a JWT, not verified.
fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

async fn link_or_update(
    identity: &Identity,
    name: &str,
    verified: &OidcIdentity,
    metadata: &Metadata,
) -> Result<Uuid, OidcError> {
    // Never an address another user has: the provider's user would be
    // mistaken for (or receive the mail of) that account's owner.
    // (The address is claimed in the append's own transaction, for every
    // origin; see `claims::EMAIL`.)
    let external = crate::identity::accounts::ExternalIdentity {
        kind: ExternalKind::Oidc,
        provider: name,
        external_id: &verified.subject,
        email: &verified.email,
        role: if verified.admin { Role::Admin } else { Role::User },
    };
    match crate::identity::accounts::link_or_sync_external(identity, &external, metadata).await {
        Ok(linked) => {
            let mappings: Vec<(String, warden_events::scope::ScopeRole)> = identity
                .oidc
                .provider(name)
                .ok()
                .map(|provider| {
                    provider
                        .config
                        .scope_mappings
                        .iter()
                        .map(|mapping| (mapping.scope.clone(), mapping.role))
                        .collect()
                })
                .unwrap_or_default();
            if !mappings.is_empty() {
                crate::scopes::apply_mappings(
                    &identity.commands,
                    &identity.db,
                    linked.user_id(),
                    &mappings,
                    &verified.mappings,
                    metadata,
                )
                .await?;
            }
            Ok(linked.user_id())
        }
        Err(CommandError::Store(StoreError::ClaimTaken { scope })) if scope == claims::EMAIL => {
            Err(OidcError::EmailTaken)
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn role_claims_may_be_strings_or_lists() {
        let role = OidcRole {
            field_name: "roles".into(),
            name: "warden-admin".into(),
        };
        assert!(claim_contains(&json!({"roles": "warden-admin"}), &role));
        assert!(claim_contains(&json!({"roles": ["x", "warden-admin"]}), &role));
        assert!(!claim_contains(&json!({"roles": ["warden-admin-not"]}), &role));
        assert!(!claim_contains(&json!({"roles": 5}), &role));
        assert!(!claim_contains(&json!({}), &role));
    }
}

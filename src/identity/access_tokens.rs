//! Short-lived access tokens (JWT, HS256) for users.
//!
//! The algorithm is pinned (a token claiming any other `alg`, `none`
//! included, is refused), issuer and audience are checked, and `exp` is
//! required. Admin rights travel as `scope = "admin"`, which is only put
//! into tokens of admins who asked for it; every request re-checks the
//! user in the read model, so deletion and demotion apply at once.
//!
//! Tokens name their key (`kid`): after a rotation the new key signs and
//! the previous ones still verify (`platform::server_secrets`). Tokens
//! without `kid` (issued before keys had ids) are tried with every key.

use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::platform::server_secrets::ServerSecrets;

pub const ISSUER: &str = "warden";
pub const AUDIENCE: &str = "warden-api";
pub const ADMIN_SCOPE: &str = "admin";
const LEEWAY_SECONDS: u64 = 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    pub iat: u64,
    pub exp: u64,
    pub jti: Uuid,
    /// Space-separated scopes; only `admin` means anything today.
    #[serde(default)]
    pub scope: String,
}

impl AccessClaims {
    pub fn has_admin_scope(&self) -> bool {
        self.scope.split(' ').any(|s| s == ADMIN_SCOPE)
    }

    /// When the token was issued, to the millisecond (from the UUIDv7
    /// `jti`; `iat` has only seconds), for session revocation.
    pub fn issued_at(&self) -> chrono::DateTime<chrono::Utc> {
        let from_jti = self.jti.get_timestamp().and_then(|t| {
            let (seconds, nanos) = t.to_unix();
            chrono::DateTime::from_timestamp(seconds as i64, nanos)
        });
        from_jti.unwrap_or_else(|| chrono::DateTime::from_timestamp(self.iat as i64, 0).unwrap_or_default())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid")]
    Invalid,
}

/// Issues access tokens with the signing key and checks them with any of
/// the keys.
pub struct AccessTokens {
    keys: RwLock<Keys>,
    validation: Validation,
    lifetime: Duration,
}

struct Keys {
    signing_id: Option<String>,
    encoding: EncodingKey,
    /// The signing key's first.
    decoding: Vec<(Option<String>, DecodingKey)>,
}

impl Keys {
    fn of(secrets: &ServerSecrets) -> Keys {
        Keys {
            signing_id: Some(secrets.signing.id.clone()),
            encoding: EncodingKey::from_secret(&secrets.signing.key),
            decoding: secrets
                .all_keys()
                .map(|key| (Some(key.id.clone()), DecodingKey::from_secret(&key.key)))
                .collect(),
        }
    }
}

/// A token as handed to a client.
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub scope: String,
}

impl AccessTokens {
    /// With one key and no key ids (tests).
    pub fn new(key: &[u8], lifetime: Duration) -> Self {
        Self::with_keys(
            Keys {
                signing_id: None,
                encoding: EncodingKey::from_secret(key),
                decoding: vec![(None, DecodingKey::from_secret(key))],
            },
            lifetime,
        )
    }

    /// With the server's keys.
    pub fn from_secrets(secrets: &ServerSecrets, lifetime: Duration) -> Self {
        Self::with_keys(Keys::of(secrets), lifetime)
    }

    fn with_keys(keys: Keys, lifetime: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        AccessTokens {
            keys: RwLock::new(keys),
            validation,
            lifetime,
        }
    }

    /// Takes the keys of `secrets` (a rotation) for every later token.
    pub fn replace_keys(&self, secrets: &ServerSecrets) {
        *self.keys.write().expect("token keys") = Keys::of(secrets);
    }

    pub fn issue(&self, user_id: Uuid, admin: bool) -> IssuedToken {
        self.issue_for(user_id, admin, self.lifetime)
    }

    /// A session cookie's token: never admin-scoped, valid for `lifetime`
    /// (`None`: until revoked; the JWT then expires in 100 years).
    pub fn issue_session(&self, user_id: Uuid, lifetime: Option<Duration>) -> IssuedToken {
        let lifetime = lifetime.unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600));
        self.issue_for(user_id, false, lifetime)
    }

    fn issue_for(&self, user_id: Uuid, admin: bool, lifetime: Duration) -> IssuedToken {
        let now = unix_now();
        let scope = if admin { ADMIN_SCOPE } else { "" }.to_owned();
        let claims = AccessClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user_id,
            iat: now,
            exp: now + lifetime.as_secs(),
            jti: Uuid::now_v7(),
            scope: scope.clone(),
        };
        let keys = self.keys.read().expect("token keys");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = keys.signing_id.clone();
        let token = encode(&header, &claims, &keys.encoding).expect("HS256 signing cannot fail");
        IssuedToken {
            token,
            expires_in: lifetime.as_secs(),
            scope,
        }
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let kid = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?.kid;
        let keys = self.keys.read().expect("token keys");
        let mut outcome = Err(TokenError::Invalid);
        // The key the token names; without a name, each key in turn.
        for (_, key) in keys.decoding.iter().filter(|(id, _)| kid.is_none() || *id == kid) {
            outcome = decode::<AccessClaims>(token, key, &self.validation)
                .map(|data| data.claims)
                .map_err(|error| match error.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                });
            if outcome != Err(TokenError::Invalid) {
                break;
            }
        }
        outcome
    }

    /// Whether a bearer value looks like a JWT at all (three dot-separated
    /// base64url parts), to tell clients they sent the wrong kind of token.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.starts_with("eyJ")
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn tokens() -> AccessTokens {
        AccessTokens::new(&[42u8; 32], Duration::from_secs(600))
    }

    #[test]
    fn issued_tokens_verify_and_carry_scope() {
        let user = Uuid::now_v7();
        let admin = tokens().issue(user, true);
        let claims = tokens().verify(&admin.token).unwrap();
        assert_eq!(claims.sub, user);
        assert!(claims.has_admin_scope());
        let plain = tokens().issue(user, false);
        assert!(!tokens().verify(&plain.token).unwrap().has_admin_scope());
    }

    #[test]
    fn forged_tokens_are_refused() {
        let user = Uuid::now_v7();
        let other_key = AccessTokens::new(&[7u8; 32], Duration::from_secs(600));
        assert_eq!(
            tokens().verify(&other_key.issue(user, true).token),
            Err(TokenError::Invalid)
        );

        // alg=none with the same claims.
        let genuine = tokens().issue(user, true).token;
        let claims = genuine.split('.').nth(1).unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            tokens().verify(&format!("{header}.{claims}.")),
            Err(TokenError::Invalid)
        );

        // HS512 with the right key is still refused: the algorithm is pinned.
        let now = unix_now();
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &AccessClaims {
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
                sub: user,
                iat: now,
                exp: now + 60,
                jti: Uuid::now_v7(),
                scope: "admin".into(),
            },
            &EncodingKey::from_secret(&[42u8; 32]),
        )
        .unwrap();
        assert_eq!(tokens().verify(&hs512), Err(TokenError::Invalid));
    }

    #[test]
    fn wrong_audience_and_expiry_are_refused() {
        let now = unix_now();
        let sign = |aud: &str, exp: u64| {
            encode(
                &Header::new(Algorithm::HS256),
                &AccessClaims {
                    iss: ISSUER.into(),
                    aud: aud.into(),
                    sub: Uuid::now_v7(),
                    iat: now,
                    exp,
                    jti: Uuid::now_v7(),
                    scope: String::new(),
                },
                &EncodingKey::from_secret(&[42u8; 32]),
            )
            .unwrap()
        };
        assert_eq!(
            tokens().verify(&sign("someone-else", now + 60)),
            Err(TokenError::Invalid)
        );
        assert_eq!(tokens().verify(&sign(AUDIENCE, now - 3600)), Err(TokenError::Expired));
    }
}

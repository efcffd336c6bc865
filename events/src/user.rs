//! Events of the `user-<id>` streams.

use crate::Pii;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a user may do. Admin rights still need an admin-scoped token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    /// Reads admin read models, changes nothing.
    Support,
    Admin,
    /// A service account (cc-backend's `api` role): never logs in, acts
    /// only through API tokens an admin or a manager issues.
    Api,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Support => "support",
            Role::Admin => "admin",
            Role::Api => "api",
        }
    }
}

/// How a local account came to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UserOrigin {
    /// From `security.local_account.user_provisioning.<id>` in the config.
    Provisioned { provisioning_id: String },
    /// `warden user add`.
    CommandLine,
    /// Self sign-up.
    SignUp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalUserCreated {
    pub user_id: Uuid,
    pub email: Pii,
    /// argon2id PHC string, sealed (v2): the password itself never enters
    /// the log, and its hash is forgotten with the user (no offline
    /// cracking from old logs or backups).
    pub password_hash: Pii,
    pub role: Role,
    pub origin: UserOrigin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEmailChanged {
    pub user_id: Uuid,
    pub email: Pii,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPasswordChanged {
    pub user_id: Uuid,
    /// Sealed since v2, as in `LocalUserCreated`.
    pub password_hash: Pii,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRoleChanged {
    pub user_id: Uuid,
    pub role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user_id: Uuid,
}

/// A user of an LDAP directory, linked on first login or by a sync. The
/// provider is the config's `ldap_providers.<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LdapUserLinked {
    pub user_id: Uuid,
    pub provider: String,
    /// The `uid_attribute` value: stable per directory user.
    pub uid: Pii,
    pub email: Pii,
    pub role: Role,
}

/// A user of an OIDC provider, linked on first login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcUserLinked {
    pub user_id: Uuid,
    pub provider: String,
    /// The provider's `sub` claim.
    pub subject: Pii,
    pub email: Pii,
    pub role: Role,
}

/// What the directory or identity provider now says about a linked user
/// (on login or an LDAP sync), when it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalUserSynced {
    pub user_id: Uuid,
    pub email: Pii,
    pub role: Role,
}

/// A long-lived API token the user created; only its hash is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenCreated {
    pub user_id: Uuid,
    pub token_id: Uuid,
    /// What the user called it (sealed since v2: names say things about
    /// people).
    pub name: Pii,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// When it stops working by itself; none: when revoked (tokens made
    /// before expiry existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRevoked {
    pub user_id: Uuid,
    pub token_id: Uuid,
}

/// Every access token and session cookie issued before `before` stops
/// working (log-out, password change). The time is the issuing servers'
/// clock, the one tokens are stamped with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSessionsRevoked {
    pub user_id: Uuid,
    pub before: chrono::DateTime<chrono::Utc>,
}

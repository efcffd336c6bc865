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
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Support => "support",
            Role::Admin => "admin",
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
    /// argon2id PHC string; the password itself never enters the log.
    pub password_hash: String,
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
    pub password_hash: String,
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

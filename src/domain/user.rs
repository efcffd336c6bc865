//! The user aggregate: local accounts (provisioned from the config, added
//! on the command line, or signed up), users linked from LDAP directories
//! and OIDC providers, their API tokens and sessions, and their deletion.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_events::user::{
    ApiTokenCreated, ApiTokenRevoked, ExternalUserSynced, LdapUserLinked, LocalUserCreated, OidcUserLinked, Role,
    UserDeleted, UserEmailChanged, UserOrigin, UserPasswordChanged, UserRoleChanged, UserSessionsRevoked,
};
use warden_events::{Event, Pii, UserEvent};

use super::{Aggregate, DomainError};
use crate::api::ErrorCode;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum User {
    #[default]
    Unknown,
    Active(ActiveUser),
    Deleted {
        id: Uuid,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveUser {
    pub id: Uuid,
    /// `Forgotten` only when read after the key was destroyed.
    pub email: Pii,
    pub role: Role,
    pub account: Account,
    /// API tokens not revoked.
    pub api_tokens: BTreeSet<Uuid>,
}

/// Where the user's identity lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Account {
    Local {
        password_hash: String,
        origin: UserOrigin,
    },
    /// `ldap_providers.<provider>`; the directory decides email and role.
    Ldap {
        provider: String,
    },
    /// `oidc_providers.<provider>`; the provider decides email and role.
    Oidc {
        provider: String,
    },
}

/// At most this many live API tokens per user.
pub const MAX_API_TOKENS: usize = 50;

/// Which kind of external identity a link command is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalKind {
    Ldap,
    Oidc,
}

/// A password given from outside, already compared with the current hash
/// by the caller (argon2 is too slow and random to belong in `decide`).
#[derive(Clone, Debug)]
pub enum PasswordInput {
    MatchesCurrent,
    NewHash(String),
}

#[derive(Clone, Debug)]
pub enum UserCommand {
    /// Make an account from `security.local_account.user_provisioning`
    /// match the config, creating it if needed. The config names only
    /// whether the user is an admin: `admin: false` demotes an admin to
    /// `user` and leaves a `support` user as it is (support is not admin).
    Provision {
        user_id: Uuid,
        provisioning_id: String,
        email: String,
        admin: bool,
        password: PasswordInput,
    },
    /// A new local account (command line, sign-up).
    Create {
        user_id: Uuid,
        email: String,
        password_hash: String,
        role: Role,
        origin: UserOrigin,
    },
    /// First login (or LDAP sync) of a directory or OIDC user.
    LinkExternal {
        user_id: Uuid,
        kind: ExternalKind,
        provider: String,
        external_id: String,
        email: String,
        role: Role,
    },
    /// What the directory or provider says now; appends only changes.
    SyncExternal {
        email: String,
        role: Role,
    },
    /// A local account's new password; ends every session issued before
    /// `at`.
    ChangePassword {
        new_hash: String,
        at: DateTime<Utc>,
        /// Also revoke every API token of the user.
        revoke_api_tokens: bool,
    },
    /// Promote or demote a local account.
    ChangeRole {
        role: Role,
    },
    CreateApiToken {
        token_id: Uuid,
        name: String,
        token_hash: String,
        expires_at: Option<DateTime<Utc>>,
    },
    RevokeApiToken {
        token_id: Uuid,
    },
    /// Log out everywhere: every access token and session cookie issued
    /// before `at` stops working.
    RevokeSessions {
        at: DateTime<Utc>,
    },
    Delete,
}

impl Aggregate for User {
    // Emails and password hashes are personal data.
    const CACHEABLE: bool = false;
    type Command = UserCommand;
    type Event = UserEvent;

    fn select(event: &Event) -> Option<&UserEvent> {
        event.as_user()
    }

    fn evolve(&mut self, event: &UserEvent) {
        // Changes of a user that is not active (never: the log is checked
        // by decide) leave the state as it is.
        let active = match self {
            User::Active(user) => Some(user),
            User::Unknown | User::Deleted { .. } => None,
        };
        match event {
            UserEvent::LocalUserCreated(e) => {
                *self = User::Active(ActiveUser {
                    id: e.user_id,
                    email: e.email.clone(),
                    role: e.role,
                    account: Account::Local {
                        password_hash: readable(&e.password_hash),
                        origin: e.origin.clone(),
                    },
                    api_tokens: BTreeSet::new(),
                })
            }
            UserEvent::LdapUserLinked(e) => {
                *self = User::Active(ActiveUser {
                    id: e.user_id,
                    email: e.email.clone(),
                    role: e.role,
                    account: Account::Ldap {
                        provider: e.provider.clone(),
                    },
                    api_tokens: BTreeSet::new(),
                })
            }
            UserEvent::OidcUserLinked(e) => {
                *self = User::Active(ActiveUser {
                    id: e.user_id,
                    email: e.email.clone(),
                    role: e.role,
                    account: Account::Oidc {
                        provider: e.provider.clone(),
                    },
                    api_tokens: BTreeSet::new(),
                })
            }
            UserEvent::UserEmailChanged(e) => {
                if let Some(user) = active {
                    user.email = e.email.clone()
                }
            }
            UserEvent::UserPasswordChanged(e) => {
                if let Some(user) = active {
                    if let Account::Local { password_hash, .. } = &mut user.account {
                        *password_hash = readable(&e.password_hash);
                    }
                }
            }
            UserEvent::UserRoleChanged(e) => {
                if let Some(user) = active {
                    user.role = e.role
                }
            }
            UserEvent::ExternalUserSynced(e) => {
                if let Some(user) = active {
                    user.email = e.email.clone();
                    user.role = e.role;
                }
            }
            UserEvent::ApiTokenCreated(e) => {
                if let Some(user) = active {
                    user.api_tokens.insert(e.token_id);
                }
            }
            UserEvent::ApiTokenRevoked(e) => {
                if let Some(user) = active {
                    user.api_tokens.remove(&e.token_id);
                }
            }
            UserEvent::UserDeleted(e) => *self = User::Deleted { id: e.user_id },
            UserEvent::UserSessionsRevoked(_) => {}
        }
    }

    fn decide(&self, command: &UserCommand) -> Result<Vec<UserEvent>, DomainError> {
        match (self, command) {
            (
                User::Unknown,
                UserCommand::Provision {
                    user_id,
                    provisioning_id,
                    email,
                    admin,
                    password,
                },
            ) => {
                let PasswordInput::NewHash(password_hash) = password else {
                    return Err(DomainError::Invalid {
                        code: ErrorCode::PasswordRequired,
                        message: "a new account needs a password".into(),
                    });
                };
                created(
                    *user_id,
                    email,
                    password_hash,
                    if *admin { Role::Admin } else { Role::User },
                    UserOrigin::Provisioned {
                        provisioning_id: provisioning_id.clone(),
                    },
                )
            }
            (
                User::Active(
                    user @ ActiveUser {
                        account: Account::Local { .. },
                        ..
                    },
                ),
                UserCommand::Provision {
                    email, admin, password, ..
                },
            ) => {
                validate_email(email)?;
                let mut events = Vec::new();
                if user.email.as_plain() != Some(email.trim()) {
                    events.push(UserEvent::UserEmailChanged(UserEmailChanged {
                        user_id: user.id,
                        email: Pii::plain(email.trim()),
                    }));
                }
                if let PasswordInput::NewHash(hash) = password {
                    events.push(UserEvent::UserPasswordChanged(UserPasswordChanged {
                        user_id: user.id,
                        password_hash: Pii::plain(hash),
                    }));
                }
                // Only what the config names: whether the user is an admin.
                let role = match (*admin, user.role) {
                    (true, _) => Role::Admin,
                    (false, Role::Admin) => Role::User,
                    (false, other) => other,
                };
                if user.role != role {
                    events.push(UserEvent::UserRoleChanged(UserRoleChanged { user_id: user.id, role }));
                }
                Ok(events)
            }
            (
                User::Unknown,
                UserCommand::Create {
                    user_id,
                    email,
                    password_hash,
                    role,
                    origin,
                },
            ) => created(*user_id, email, password_hash, *role, origin.clone()),
            (User::Active(_), UserCommand::Create { .. }) | (User::Deleted { .. }, UserCommand::Create { .. }) => {
                Err(DomainError::Conflict {
                    code: ErrorCode::UserExists,
                    message: "a user with this id already exists".into(),
                })
            }
            (User::Active(user), UserCommand::Delete) => {
                Ok(vec![UserEvent::UserDeleted(UserDeleted { user_id: user.id })])
            }
            (
                User::Unknown,
                UserCommand::LinkExternal {
                    user_id,
                    kind,
                    provider,
                    external_id,
                    email,
                    role,
                },
            ) => {
                validate_email(email)?;
                let (email, external_id) = (Pii::plain(email.trim()), Pii::plain(external_id.clone()));
                Ok(vec![match kind {
                    ExternalKind::Ldap => UserEvent::LdapUserLinked(LdapUserLinked {
                        user_id: *user_id,
                        provider: provider.clone(),
                        uid: external_id,
                        email,
                        role: *role,
                    }),
                    ExternalKind::Oidc => UserEvent::OidcUserLinked(OidcUserLinked {
                        user_id: *user_id,
                        provider: provider.clone(),
                        subject: external_id,
                        email,
                        role: *role,
                    }),
                }])
            }
            (_, UserCommand::LinkExternal { .. }) => Err(DomainError::Conflict {
                code: ErrorCode::UserExists,
                message: "a user with this id already exists".into(),
            }),
            (User::Active(user), UserCommand::SyncExternal { email, role }) => {
                if matches!(user.account, Account::Local { .. }) {
                    return Err(local_only_refused("a local account is not synchronised from outside"));
                }
                validate_email(email)?;
                if user.email.as_plain() == Some(email.trim()) && user.role == *role {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::ExternalUserSynced(ExternalUserSynced {
                    user_id: user.id,
                    email: Pii::plain(email.trim()),
                    role: *role,
                })])
            }
            (
                User::Active(user),
                UserCommand::ChangePassword {
                    new_hash,
                    at,
                    revoke_api_tokens,
                },
            ) => {
                let Account::Local { .. } = user.account else {
                    return Err(external_refused(
                        "the password of this user is kept by its directory or provider",
                    ));
                };
                let mut events = vec![
                    UserEvent::UserPasswordChanged(UserPasswordChanged {
                        user_id: user.id,
                        password_hash: Pii::plain(new_hash),
                    }),
                    UserEvent::UserSessionsRevoked(UserSessionsRevoked {
                        user_id: user.id,
                        before: *at,
                    }),
                ];
                // Whoever knew the old password may have made tokens with it.
                if *revoke_api_tokens {
                    events.extend(user.api_tokens.iter().map(|token_id| {
                        UserEvent::ApiTokenRevoked(ApiTokenRevoked {
                            user_id: user.id,
                            token_id: *token_id,
                        })
                    }));
                }
                Ok(events)
            }
            (User::Active(user), UserCommand::ChangeRole { role }) => {
                let Account::Local { .. } = user.account else {
                    return Err(external_refused(
                        "the role of this user comes from its directory or provider (admin_query, admin_role)",
                    ));
                };
                if user.role == *role {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::UserRoleChanged(UserRoleChanged {
                    user_id: user.id,
                    role: *role,
                })])
            }
            (
                User::Active(user),
                UserCommand::CreateApiToken {
                    token_id,
                    name,
                    token_hash,
                    expires_at,
                },
            ) => {
                // As the API declares it: at most 100 characters as sent, no
                // control characters, something besides spaces.
                let too_long = name.chars().count() > 100;
                let name = name.trim();
                if name.is_empty() || too_long || name.chars().any(char::is_control) {
                    return Err(DomainError::Invalid {
                        code: ErrorCode::InvalidTokenName,
                        message: "an API token needs a name of 1 to 100 printable characters".into(),
                    });
                }
                if user.api_tokens.len() >= MAX_API_TOKENS {
                    return Err(DomainError::Conflict {
                        code: ErrorCode::TooManyApiTokens,
                        message: format!("a user may have at most {MAX_API_TOKENS} API tokens; revoke one first"),
                    });
                }
                Ok(vec![UserEvent::ApiTokenCreated(ApiTokenCreated {
                    user_id: user.id,
                    token_id: *token_id,
                    name: Pii::plain(name),
                    token_hash: token_hash.clone(),
                    expires_at: *expires_at,
                })])
            }
            (User::Active(user), UserCommand::RevokeApiToken { token_id }) => {
                if !user.api_tokens.contains(token_id) {
                    return Err(DomainError::NotFound {
                        code: ErrorCode::ApiTokenNotFound,
                        what: "API token",
                    });
                }
                Ok(vec![UserEvent::ApiTokenRevoked(ApiTokenRevoked {
                    user_id: user.id,
                    token_id: *token_id,
                })])
            }
            (User::Active(user), UserCommand::RevokeSessions { at }) => {
                Ok(vec![UserEvent::UserSessionsRevoked(UserSessionsRevoked {
                    user_id: user.id,
                    before: *at,
                })])
            }
            (User::Active(_), UserCommand::Provision { .. }) => Err(external_refused(
                "this provisioning id belongs to a user that is not a local account",
            )),
            (
                _,
                UserCommand::Provision { .. }
                | UserCommand::Delete
                | UserCommand::SyncExternal { .. }
                | UserCommand::ChangePassword { .. }
                | UserCommand::ChangeRole { .. }
                | UserCommand::CreateApiToken { .. }
                | UserCommand::RevokeApiToken { .. }
                | UserCommand::RevokeSessions { .. },
            ) => Err(DomainError::NotFound {
                code: ErrorCode::UserNotFound,
                what: "user",
            }),
        }
    }
}

fn external_refused(message: &str) -> DomainError {
    DomainError::Invalid {
        code: ErrorCode::ManagedExternally,
        message: message.into(),
    }
}

fn local_only_refused(message: &str) -> DomainError {
    DomainError::Invalid {
        code: ErrorCode::NotExternal,
        message: message.into(),
    }
}

fn created(
    user_id: Uuid,
    email: &str,
    password_hash: &str,
    role: Role,
    origin: UserOrigin,
) -> Result<Vec<UserEvent>, DomainError> {
    validate_email(email)?;
    Ok(vec![UserEvent::LocalUserCreated(LocalUserCreated {
        user_id,
        email: Pii::plain(email.trim()),
        password_hash: Pii::plain(password_hash),
        role,
        origin,
    })])
}

/// A sealed hash as the aggregate keeps it; a forgotten one (its user is
/// deleted) is empty, which never verifies.
fn readable(hash: &Pii) -> String {
    hash.as_plain().unwrap_or_default().to_owned()
}

/// Emails compare case-insensitively and without surrounding spaces.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Deliberately loose: one `@` with text on both sides, no spaces. The
/// address is an account name here, not something warden mails to.
pub fn validate_email(email: &str) -> Result<(), DomainError> {
    let email = email.trim();
    let valid = email.chars().count() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid {
        Ok(())
    } else {
        Err(DomainError::Invalid {
            code: ErrorCode::InvalidEmail,
            message: "not a valid email address".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{then, then_err, when};

    fn provision(email: &str, role: Role, password: PasswordInput) -> UserCommand {
        UserCommand::Provision {
            user_id: Uuid::nil(),
            provisioning_id: "0".into(),
            email: email.into(),
            admin: role == Role::Admin,
            password,
        }
    }

    fn provisioned_admin() -> User {
        let mut user = User::default();
        let provision_admin = provision("root@example.org", Role::Admin, PasswordInput::NewHash("h1".into()));
        when(&mut user, provision_admin).unwrap();
        user
    }

    #[test]
    fn provisioning_creates_then_is_idempotent() {
        let user = provisioned_admin();
        assert!(matches!(&user, User::Active(u) if u.role == Role::Admin
            && matches!(&u.account, Account::Local { password_hash, .. } if password_hash == "h1")));
        // The same configuration again appends nothing.
        then(
            user.decide(&provision(
                "root@example.org",
                Role::Admin,
                PasswordInput::MatchesCurrent,
            )),
            &[],
        );
    }

    #[test]
    fn provisioning_changes_only_what_differs() {
        let user = provisioned_admin();
        let events = user
            .decide(&provision(
                "boss@example.org",
                Role::User,
                PasswordInput::MatchesCurrent,
            ))
            .unwrap();
        let types: Vec<_> = events.iter().map(UserEvent::event_type).collect();
        assert_eq!(types, ["UserEmailChanged", "UserRoleChanged"]);

        let events = user
            .decide(&provision(
                "root@example.org",
                Role::Admin,
                PasswordInput::NewHash("h2".into()),
            ))
            .unwrap();
        assert!(matches!(&events[..], [UserEvent::UserPasswordChanged(e)] if e.password_hash == Pii::plain("h2")));
    }

    #[test]
    fn provisioning_without_admin_leaves_a_support_user_support() {
        let mut user = provisioned_admin();
        when(&mut user, UserCommand::ChangeRole { role: Role::Support }).unwrap();
        // is_admin: false leaves a support user as it is.
        then(
            user.decide(&provision(
                "root@example.org",
                Role::User,
                PasswordInput::MatchesCurrent,
            )),
            &[],
        );
        let promoted = user
            .decide(&provision(
                "root@example.org",
                Role::Admin,
                PasswordInput::MatchesCurrent,
            ))
            .unwrap();
        assert!(matches!(&promoted[..], [UserEvent::UserRoleChanged(e)] if e.role == Role::Admin));
    }

    #[test]
    fn a_new_account_needs_a_password_and_a_valid_email() {
        then_err(
            User::Unknown.decide(&provision("a@b", Role::User, PasswordInput::MatchesCurrent)),
            "password_required",
        );
        for bad in ["", "no-at-sign", "@example.org", "a@", "a b@example.org", "a@b@c"] {
            let refused = User::Unknown.decide(&provision(bad, Role::User, PasswordInput::NewHash("h".into())));
            assert_eq!(then_err(refused, "invalid_email").code(), "invalid_email", "{bad:?}");
        }
    }

    #[test]
    fn deletion_is_final() {
        let mut user = provisioned_admin();
        let events = when(&mut user, UserCommand::Delete).unwrap();
        assert!(matches!(&events[..], [UserEvent::UserDeleted(_)]));
        assert!(matches!(user, User::Deleted { .. }));
        then_err(user.decide(&UserCommand::Delete), "user_not_found");
        let revive = provision("x@example.org", Role::User, PasswordInput::NewHash("h".into()));
        then_err(user.decide(&revive), "user_not_found");
    }
}

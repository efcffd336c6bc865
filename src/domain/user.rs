//! The user aggregate: local accounts (provisioned from the config, added
//! on the command line, or signed up) and their deletion.

use uuid::Uuid;
use warden_events::user::{
    LocalUserCreated, Role, UserDeleted, UserEmailChanged, UserOrigin, UserPasswordChanged, UserRoleChanged,
};
use warden_events::{Event, Pii};

use super::{Aggregate, DomainError};

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
    pub password_hash: String,
    pub role: Role,
    pub origin: UserOrigin,
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
    /// match the config, creating it if needed.
    Provision {
        user_id: Uuid,
        provisioning_id: String,
        email: String,
        role: Role,
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
    Delete,
}

impl Aggregate for User {
    type Command = UserCommand;

    fn evolve(&mut self, event: &Event) {
        match (&mut *self, event) {
            (_, Event::LocalUserCreated(e)) => {
                *self = User::Active(ActiveUser {
                    id: e.user_id,
                    email: e.email.clone(),
                    password_hash: e.password_hash.clone(),
                    role: e.role,
                    origin: e.origin.clone(),
                })
            }
            (User::Active(user), Event::UserEmailChanged(e)) => user.email = e.email.clone(),
            (User::Active(user), Event::UserPasswordChanged(e)) => user.password_hash = e.password_hash.clone(),
            (User::Active(user), Event::UserRoleChanged(e)) => user.role = e.role,
            (_, Event::UserDeleted(e)) => *self = User::Deleted { id: e.user_id },
            _ => {}
        }
    }

    fn decide(&self, command: &UserCommand) -> Result<Vec<Event>, DomainError> {
        match (self, command) {
            (
                User::Unknown,
                UserCommand::Provision {
                    user_id,
                    provisioning_id,
                    email,
                    role,
                    password,
                },
            ) => {
                let PasswordInput::NewHash(password_hash) = password else {
                    return Err(DomainError::Invalid {
                        code: "password_required",
                        message: "a new account needs a password".into(),
                    });
                };
                created(
                    *user_id,
                    email,
                    password_hash,
                    *role,
                    UserOrigin::Provisioned {
                        provisioning_id: provisioning_id.clone(),
                    },
                )
            }
            (
                User::Active(user),
                UserCommand::Provision {
                    email, role, password, ..
                },
            ) => {
                validate_email(email)?;
                let mut events = Vec::new();
                if user.email.as_plain() != Some(email.trim()) {
                    events.push(Event::UserEmailChanged(UserEmailChanged {
                        user_id: user.id,
                        email: Pii::plain(email.trim()),
                    }));
                }
                if let PasswordInput::NewHash(hash) = password {
                    events.push(Event::UserPasswordChanged(UserPasswordChanged {
                        user_id: user.id,
                        password_hash: hash.clone(),
                    }));
                }
                if user.role != *role {
                    events.push(Event::UserRoleChanged(UserRoleChanged {
                        user_id: user.id,
                        role: *role,
                    }));
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
                    code: "user_exists",
                    message: "a user with this id already exists".into(),
                })
            }
            (User::Active(user), UserCommand::Delete) => Ok(vec![Event::UserDeleted(UserDeleted { user_id: user.id })]),
            (User::Deleted { .. }, UserCommand::Provision { .. }) | (_, UserCommand::Delete) => {
                Err(DomainError::NotFound {
                    code: "user_not_found",
                    what: "user",
                })
            }
        }
    }
}

fn created(
    user_id: Uuid,
    email: &str,
    password_hash: &str,
    role: Role,
    origin: UserOrigin,
) -> Result<Vec<Event>, DomainError> {
    validate_email(email)?;
    Ok(vec![Event::LocalUserCreated(LocalUserCreated {
        user_id,
        email: Pii::plain(email.trim()),
        password_hash: password_hash.to_owned(),
        role,
        origin,
    })])
}

/// Deliberately loose: one `@` with text on both sides, no spaces. The
/// address is an account name here, not something warden mails to.
pub fn validate_email(email: &str) -> Result<(), DomainError> {
    let email = email.trim();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid {
        Ok(())
    } else {
        Err(DomainError::Invalid {
            code: "invalid_email",
            message: "not a valid email address".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provision(email: &str, role: Role, password: PasswordInput) -> UserCommand {
        UserCommand::Provision {
            user_id: Uuid::nil(),
            provisioning_id: "0".into(),
            email: email.into(),
            role,
            password,
        }
    }

    fn provisioned_admin() -> User {
        let mut user = User::default();
        let events = user
            .decide(&provision(
                "root@example.org",
                Role::Admin,
                PasswordInput::NewHash("h1".into()),
            ))
            .unwrap();
        events.iter().for_each(|e| user.evolve(e));
        user
    }

    #[test]
    fn provisioning_creates_then_is_idempotent() {
        let user = provisioned_admin();
        assert!(matches!(&user, User::Active(u) if u.role == Role::Admin && u.password_hash == "h1"));
        let again = user
            .decide(&provision(
                "root@example.org",
                Role::Admin,
                PasswordInput::MatchesCurrent,
            ))
            .unwrap();
        assert!(again.is_empty(), "same config must append nothing: {again:?}");
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
        let types: Vec<_> = events.iter().map(Event::event_type).collect();
        assert_eq!(types, ["UserEmailChanged", "UserRoleChanged"]);

        let events = user
            .decide(&provision(
                "root@example.org",
                Role::Admin,
                PasswordInput::NewHash("h2".into()),
            ))
            .unwrap();
        assert!(matches!(&events[..], [Event::UserPasswordChanged(e)] if e.password_hash == "h2"));
    }

    #[test]
    fn a_new_account_needs_a_password_and_a_valid_email() {
        let refused = User::Unknown.decide(&provision("a@b", Role::User, PasswordInput::MatchesCurrent));
        assert_eq!(refused.unwrap_err().code(), "password_required");
        for bad in ["", "no-at-sign", "@example.org", "a@", "a b@example.org", "a@b@c"] {
            let refused = User::Unknown.decide(&provision(bad, Role::User, PasswordInput::NewHash("h".into())));
            assert_eq!(refused.unwrap_err().code(), "invalid_email", "{bad:?}");
        }
    }

    #[test]
    fn deletion_is_final() {
        let mut user = provisioned_admin();
        let events = user.decide(&UserCommand::Delete).unwrap();
        assert!(matches!(&events[..], [Event::UserDeleted(_)]));
        events.iter().for_each(|e| user.evolve(e));
        assert!(matches!(user, User::Deleted { .. }));
        assert_eq!(user.decide(&UserCommand::Delete).unwrap_err().code(), "user_not_found");
        let revive = user.decide(&provision(
            "x@example.org",
            Role::User,
            PasswordInput::NewHash("h".into()),
        ));
        assert_eq!(revive.unwrap_err().code(), "user_not_found");
    }
}

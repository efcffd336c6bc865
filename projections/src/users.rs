//! The `users` read model: one row per user, a tombstone once deleted.

use crate::change::{Assign, Change, OnConflict, Value};
use crate::AggregateProjection;

use warden_events::user::{Role, UserOrigin};
use warden_events::{Event, Pii, RecordedEvent, UserEvent};

pub struct UserProjection;

impl AggregateProjection for UserProjection {
    type Event = UserEvent;
    const NAME: &'static str = "users";
    const CATEGORY: &'static str = "user";
    const TABLES: &'static [&'static str] = &["users", "api_tokens"];
    const DURABLE_COMMITS: bool = true;

    fn select(event: &Event) -> Option<&UserEvent> {
        event.as_user()
    }

    fn changes_of(recorded: &RecordedEvent, event: &UserEvent) -> Vec<Change> {
        let at = Value::Time(recorded.recorded_at);
        let update = |table, key, set| Change::Update {
            table,
            key,
            version: recorded.stream_version,
            set,
        };
        let user = |user_id, mut set: Vec<(&'static str, Assign)>| {
            set.push(("updated_at", Assign::To(at.clone())));
            update("users", ("id", user_id), set)
        };
        match event {
            UserEvent::LocalUserCreated(e) => {
                let (origin, provisioning_id) = match &e.origin {
                    UserOrigin::Provisioned { provisioning_id } => ("provisioned", Some(provisioning_id.as_str())),
                    UserOrigin::CommandLine => ("command_line", None),
                    UserOrigin::SignUp => ("sign_up", None),
                };
                vec![Change::Insert {
                    table: "users",
                    row: vec![
                        ("id", e.user_id.into()),
                        ("provider", "local".into()),
                        ("email", readable(&e.email)),
                        ("password_hash", readable(&e.password_hash)),
                        ("role", e.role.as_str().into()),
                        ("origin", origin.into()),
                        ("provisioning_id", provisioning_id.into()),
                        ("created_at", at.clone()),
                        ("updated_at", at),
                        ("version", recorded.stream_version.into()),
                    ],
                    on_conflict: OnConflict::Keep,
                }]
            }
            UserEvent::UserEmailChanged(e) => vec![user(e.user_id, vec![("email", Assign::To(readable(&e.email)))])],
            UserEvent::UserPasswordChanged(e) => vec![user(
                e.user_id,
                vec![("password_hash", Assign::To(readable(&e.password_hash)))],
            )],
            UserEvent::UserRoleChanged(e) => vec![user(e.user_id, vec![("role", Assign::To(e.role.as_str().into()))])],
            // Keep a tombstone so a redelivered creation cannot revive the
            // row; drop everything personal or secret.
            UserEvent::UserDeleted(e) => vec![
                user(
                    e.user_id,
                    vec![
                        ("email", Assign::To(Value::Null)),
                        ("password_hash", Assign::To(Value::Null)),
                        ("external_id", Assign::To(Value::Null)),
                        ("deleted_at", Assign::To(at.clone())),
                    ],
                ),
                update(
                    "api_tokens",
                    ("user_id", e.user_id),
                    vec![
                        ("revoked_at", Assign::IfNull(at.clone())),
                        ("name", Assign::To("".into())),
                    ],
                ),
            ],
            UserEvent::LdapUserLinked(e) => vec![insert_external(
                e.user_id,
                format!("ldap:{}", e.provider),
                "ldap",
                &e.uid,
                &e.email,
                e.role,
                recorded,
            )],
            UserEvent::OidcUserLinked(e) => vec![insert_external(
                e.user_id,
                format!("oidc:{}", e.provider),
                "oidc",
                &e.subject,
                &e.email,
                e.role,
                recorded,
            )],
            UserEvent::ExternalUserSynced(e) => vec![user(
                e.user_id,
                vec![
                    ("email", Assign::To(readable(&e.email))),
                    ("role", Assign::To(e.role.as_str().into())),
                ],
            )],
            UserEvent::ApiTokenCreated(e) => vec![Change::Insert {
                table: "api_tokens",
                row: vec![
                    ("id", e.token_id.into()),
                    ("user_id", e.user_id.into()),
                    // Forgotten with its user: an empty name.
                    ("name", e.name.as_plain().unwrap_or_default().into()),
                    ("token_hash", (&e.token_hash).into()),
                    ("created_at", at),
                    ("version", recorded.stream_version.into()),
                    ("expires_at", e.expires_at.into()),
                ],
                on_conflict: OnConflict::Keep,
            }],
            UserEvent::ApiTokenRevoked(e) => vec![update(
                "api_tokens",
                ("id", e.token_id),
                vec![("revoked_at", Assign::To(at))],
            )],
            UserEvent::UserSessionsRevoked(e) => vec![user(
                e.user_id,
                vec![("sessions_revoked_at", Assign::To(e.before.into()))],
            )],
        }
    }
}

/// The row of a user linked from a directory or identity provider.
fn insert_external(
    user_id: uuid::Uuid,
    provider: String,
    origin: &str,
    external_id: &Pii,
    email: &Pii,
    role: Role,
    recorded: &RecordedEvent,
) -> Change {
    let at = Value::Time(recorded.recorded_at);
    Change::Insert {
        table: "users",
        row: vec![
            ("id", user_id.into()),
            ("provider", provider.into()),
            ("email", readable(email)),
            ("external_id", readable(external_id)),
            ("role", role.as_str().into()),
            ("origin", origin.into()),
            ("created_at", at.clone()),
            ("updated_at", at),
            ("version", recorded.stream_version.into()),
        ],
        on_conflict: OnConflict::Keep,
    }
}

/// A forgotten value is stored as NULL, never as a placeholder string.
fn readable(pii: &Pii) -> Value {
    pii.as_plain().into()
}

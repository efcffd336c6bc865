//! The `users` read model: one row per user, a tombstone once deleted.

use crate::{execute, AggregateProjection, ProjectionError, Transaction};
use async_trait::async_trait;

use warden_events::user::{Role, UserOrigin};
use warden_events::{Event, Pii, RecordedEvent, UserEvent};

pub struct UserProjection;

#[async_trait]
impl AggregateProjection for UserProjection {
    type Event = UserEvent;
    const NAME: &'static str = "users";
    const CATEGORY: &'static str = "user";
    const TABLES: &'static [&'static str] = &["users", "api_tokens"];
    const DURABLE_COMMITS: bool = true;

    fn select(event: &Event) -> Option<&UserEvent> {
        event.as_user()
    }

    async fn apply_event(
        &self,
        tx: &Transaction<'_>,
        recorded: &RecordedEvent,
        event: &UserEvent,
    ) -> Result<(), ProjectionError> {
        let version = recorded.stream_version;
        let at = recorded.recorded_at;
        match event {
            UserEvent::LocalUserCreated(e) => {
                let (origin, provisioning_id) = match &e.origin {
                    UserOrigin::Provisioned { provisioning_id } => ("provisioned", Some(provisioning_id.as_str())),
                    UserOrigin::CommandLine => ("command_line", None),
                    UserOrigin::SignUp => ("sign_up", None),
                };
                execute(
                    tx,
                    "INSERT INTO users (id, provider, email, password_hash, role, origin, provisioning_id,
                                        created_at, updated_at, version)
                     VALUES ($1, 'local', $2, $3, $4, $5, $6, $7, $7, $8)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &e.user_id,
                        &readable(&e.email),
                        &readable(&e.password_hash),
                        &e.role.as_str(),
                        &origin,
                        &provisioning_id,
                        &at,
                        &version,
                    ],
                )
                .await?;
            }
            UserEvent::UserEmailChanged(e) => {
                execute(
                    tx,
                    "UPDATE users SET email = $2, updated_at = $3, version = $4
                     WHERE id = $1 AND version < $4",
                    &[&e.user_id, &readable(&e.email), &at, &version],
                )
                .await?;
            }
            UserEvent::UserPasswordChanged(e) => {
                execute(
                    tx,
                    "UPDATE users SET password_hash = $2, updated_at = $3, version = $4
                     WHERE id = $1 AND version < $4",
                    &[&e.user_id, &readable(&e.password_hash), &at, &version],
                )
                .await?;
            }
            UserEvent::UserRoleChanged(e) => {
                execute(
                    tx,
                    "UPDATE users SET role = $2, updated_at = $3, version = $4
                     WHERE id = $1 AND version < $4",
                    &[&e.user_id, &e.role.as_str(), &at, &version],
                )
                .await?;
            }
            UserEvent::UserDeleted(e) => {
                // Keep a tombstone so a redelivered creation cannot revive
                // the row; drop everything personal or secret.
                execute(
                    tx,
                    "UPDATE users SET email = NULL, password_hash = NULL, external_id = NULL, deleted_at = $2,
                                      updated_at = $2, version = $3
                     WHERE id = $1 AND version < $3",
                    &[&e.user_id, &at, &version],
                )
                .await?;
                execute(
                    tx,
                    "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2), name = '', version = $3
                     WHERE user_id = $1 AND version < $3",
                    &[&e.user_id, &at, &version],
                )
                .await?;
            }
            UserEvent::LdapUserLinked(e) => {
                let provider = format!("ldap:{}", e.provider);
                insert_external(tx, e.user_id, &provider, "ldap", &e.uid, &e.email, e.role, recorded).await?;
            }
            UserEvent::OidcUserLinked(e) => {
                let provider = format!("oidc:{}", e.provider);
                insert_external(tx, e.user_id, &provider, "oidc", &e.subject, &e.email, e.role, recorded).await?;
            }
            UserEvent::ExternalUserSynced(e) => {
                execute(
                    tx,
                    "UPDATE users SET email = $2, role = $3, updated_at = $4, version = $5
                     WHERE id = $1 AND version < $5",
                    &[&e.user_id, &readable(&e.email), &e.role.as_str(), &at, &version],
                )
                .await?;
            }
            UserEvent::ApiTokenCreated(e) => {
                execute(
                    tx,
                    "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, version, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &e.token_id,
                        &e.user_id,
                        // Forgotten with its user: an empty name.
                        &readable(&e.name).unwrap_or_default(),
                        &e.token_hash,
                        &at,
                        &version,
                        &e.expires_at,
                    ],
                )
                .await?;
            }
            UserEvent::ApiTokenRevoked(e) => {
                execute(
                    tx,
                    "UPDATE api_tokens SET revoked_at = $2, version = $3
                     WHERE id = $1 AND version < $3",
                    &[&e.token_id, &at, &version],
                )
                .await?;
            }
            UserEvent::UserSessionsRevoked(e) => {
                execute(
                    tx,
                    "UPDATE users SET sessions_revoked_at = $2, updated_at = $3, version = $4
                     WHERE id = $1 AND version < $4",
                    &[&e.user_id, &e.before, &at, &version],
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The row of a user linked from a directory or identity provider.
#[allow(clippy::too_many_arguments)]
async fn insert_external(
    tx: &Transaction<'_>,
    user_id: uuid::Uuid,
    provider: &str,
    origin: &str,
    external_id: &Pii,
    email: &Pii,
    role: Role,
    recorded: &RecordedEvent,
) -> Result<(), ProjectionError> {
    execute(
        tx,
        "INSERT INTO users (id, provider, email, external_id, role, origin, created_at, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)
         ON CONFLICT (id) DO NOTHING",
        &[
            &user_id,
            &provider,
            &readable(email),
            &readable(external_id),
            &role.as_str(),
            &origin,
            &recorded.recorded_at,
            &recorded.stream_version,
        ],
    )
    .await?;
    Ok(())
}

/// A forgotten value is stored as NULL, never as a placeholder string.
fn readable(pii: &Pii) -> Option<&str> {
    pii.as_plain()
}

//! Long-lived API tokens that users create, list and revoke (seed 000:
//! never admin-scoped). A token is `wdat_` + 256 random bits, shown once;
//! the log and the read model keep only its SHA-256.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use warden_events::{Metadata, StreamId};

use crate::domain::user::{User, UserCommand};
use crate::log::commands::{CommandError, CommandService};
use crate::log::event_store::StoreError;
use crate::platform::secrets::tokens::{self, API_TOKEN_PREFIX};

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiToken {
    pub id: Uuid,
    pub name: String,
    /// Shown only here.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiTokenView {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn create(
    commands: &CommandService,
    user_id: Uuid,
    name: &str,
    metadata: &Metadata,
) -> Result<CreatedApiToken, CommandError> {
    let generated = tokens::generate(API_TOKEN_PREFIX);
    let token_id = Uuid::now_v7();
    let command = UserCommand::CreateApiToken {
        token_id,
        name: name.to_owned(),
        token_hash: generated.hash,
    };
    commands
        .execute::<User>(&StreamId::user(user_id), &command, metadata)
        .await?;
    Ok(CreatedApiToken {
        id: token_id,
        name: name.trim().to_owned(),
        token: generated.plain,
    })
}

pub async fn revoke(
    commands: &CommandService,
    user_id: Uuid,
    token_id: Uuid,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    commands
        .execute::<User>(
            &StreamId::user(user_id),
            &UserCommand::RevokeApiToken { token_id },
            metadata,
        )
        .await?;
    Ok(())
}

/// The user's tokens, newest first (revoked ones too, marked).
pub async fn list<C: GenericClient>(client: &C, user_id: Uuid) -> Result<Vec<ApiTokenView>, StoreError> {
    let rows = client
        .query(
            "SELECT id, name, created_at, revoked_at FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC",
            &[&user_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ApiTokenView {
            id: row.get(0),
            name: row.get(1),
            created_at: row.get(2),
            revoked_at: row.get(3),
        })
        .collect())
}

/// The owner of a live API token of a live user, if `token` is one.
pub async fn authenticate<C: GenericClient>(client: &C, token: &str) -> Result<Option<Uuid>, StoreError> {
    if !tokens::is_well_formed(token, API_TOKEN_PREFIX) {
        return Ok(None);
    }
    let hash = tokens::hash(token);
    let select = client
        .prepare_cached(
            "SELECT t.user_id, t.token_hash FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.deleted_at IS NULL",
        )
        .await?;
    let row = client.query_opt(&select, &[&hash]).await?;
    // The index finds the row; the comparison that decides is constant-time.
    Ok(row
        .filter(|row| tokens::hashes_match(row.get(1), &hash))
        .map(|row| row.get(0)))
}

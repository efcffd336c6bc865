//! Long-lived API tokens that users create, list and revoke (seed 000:
//! never admin-scoped). A token is `wdat_` + 256 random bits, shown once;
//! the log and the read model keep only its SHA-256.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use warden_events::{Metadata, StreamId};

use crate::api::ErrorCode;
use crate::domain::user::{User, UserCommand};
use crate::domain::DomainError;
use crate::log::commands::{CommandError, CommandService};
use crate::log::event_store::StoreError;
use crate::platform::config::ApiTokensConfig;
use crate::platform::secrets::tokens::{self, API_TOKEN_PREFIX};

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiToken {
    pub id: Uuid,
    pub name: String,
    /// Shown only here.
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// When a new token expires: `requested` (days) if given, else the
/// configured maximum; never later than the maximum (`0s`: no maximum):
/// a longer request is cut to it.
pub fn expiry(
    config: &ApiTokensConfig,
    requested_days: Option<u32>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, DomainError> {
    if requested_days.is_some_and(|days| !(1..=36500).contains(&days)) {
        return Err(DomainError::Invalid {
            code: ErrorCode::ValueOutOfRange,
            message: "expires_in_days: from 1 to 36500".into(),
        });
    }
    let max = (!config.max_lifetime.is_zero()).then_some(config.max_lifetime);
    let requested = requested_days.map(|days| std::time::Duration::from_secs(u64::from(days) * 24 * 3600));
    // Asking for more than the server allows gets the most it allows (the
    // answer says when): the maximum is configuration the client cannot
    // know from the API description.
    let lifetime = match (requested, max) {
        (Some(requested), Some(max)) => Some(requested.min(max)),
        (Some(requested), None) => Some(requested),
        (None, max) => max,
    };
    // To the microsecond, as PostgreSQL keeps it: the answer, the event and
    // the read model say the same.
    let Some(lifetime) = lifetime else {
        return Ok(None);
    };
    let expires_at = chrono::Duration::from_std(lifetime)
        .ok()
        .and_then(|lifetime| now.checked_add_signed(lifetime))
        .ok_or_else(|| DomainError::Invalid {
            code: ErrorCode::ValueOutOfRange,
            message: "expires_in_days: too far in the future".into(),
        })?;
    Ok(Some(chrono::SubsecRound::trunc_subsecs(expires_at, 6)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiTokenView {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it stops working by itself; none: only when revoked.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last use, to the minute; none: never used.
    pub last_used_at: Option<DateTime<Utc>>,
}

pub async fn create(
    commands: &CommandService,
    user_id: Uuid,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
    metadata: &Metadata,
) -> Result<CreatedApiToken, CommandError> {
    let generated = tokens::generate(API_TOKEN_PREFIX);
    let token_id = Uuid::now_v7();
    let command = UserCommand::CreateApiToken {
        token_id,
        name: name.to_owned(),
        token_hash: generated.hash,
        expires_at,
    };
    commands
        .execute::<User>(&StreamId::user(user_id), &command, metadata)
        .await?;
    Ok(CreatedApiToken {
        id: token_id,
        name: name.trim().to_owned(),
        token: generated.plain,
        expires_at,
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
            "SELECT t.id, t.name, t.created_at, t.revoked_at, t.expires_at, u.last_used_at
             FROM api_tokens t LEFT JOIN api_token_usage u ON u.token_id = t.id
             WHERE t.user_id = $1 ORDER BY t.created_at DESC",
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
            expires_at: row.get(4),
            last_used_at: row.get(5),
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
            "SELECT t.user_id, t.token_hash, t.id FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.deleted_at IS NULL
               AND (t.expires_at IS NULL OR t.expires_at > now())",
        )
        .await?;
    let row = client.query_opt(&select, &[&hash]).await?;
    // The index finds the row; the comparison that decides is constant-time.
    let Some(row) = row.filter(|row| tokens::hashes_match(row.get(1), &hash)) else {
        return Ok(None);
    };
    // Last use to the minute: at most one write per token and minute.
    let used = client
        .prepare_cached(
            "INSERT INTO api_token_usage AS u (token_id, last_used_at) VALUES ($1, now())
             ON CONFLICT (token_id) DO UPDATE SET last_used_at = now()
             WHERE u.last_used_at < now() - interval '1 minute'",
        )
        .await?;
    let token_id: Uuid = row.get(2);
    client.execute(&used, &[&token_id]).await?;
    Ok(Some(row.get(0)))
}

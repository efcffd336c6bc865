//! Runners: creation (with a token shown once), invalidation, and the
//! token check every runner request goes through.

use deadpool_postgres::GenericClient;
use uuid::Uuid;
use warden_events::{Metadata, StreamId};

use crate::app::AppState;
use crate::commands::CommandError;
use crate::domain::runner::{Runner, RunnerCommand};
use crate::event_store::StoreError;
use crate::secrets::tokens::{self, RUNNER_TOKEN_PREFIX};

pub struct CreatedRunner {
    pub id: Uuid,
    /// The only time the token exists outside the runner's config.
    pub token: String,
}

pub async fn create_runner(
    state: &AppState,
    description: Option<String>,
    tags: Vec<String>,
    metadata: &Metadata,
) -> Result<CreatedRunner, CommandError> {
    let runner_id = Uuid::now_v7();
    let token = tokens::generate(RUNNER_TOKEN_PREFIX);
    let command = RunnerCommand::Create {
        runner_id,
        token_hash: token.hash,
        description,
        tags,
    };
    state
        .commands
        .execute_new::<Runner>(&StreamId::runner(runner_id), &command, metadata)
        .await?;
    Ok(CreatedRunner {
        id: runner_id,
        token: token.plain,
    })
}

/// Invalidates a runner; when this returns, its token is refused.
pub async fn invalidate_runner(
    state: &AppState,
    runner_id: Uuid,
    reason: Option<String>,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    state
        .commands
        .execute::<Runner>(
            &StreamId::runner(runner_id),
            &RunnerCommand::Invalidate { reason },
            metadata,
        )
        .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerAuthError {
    #[error("not a valid runner token")]
    Unknown,
    #[error("this runner has been invalidated")]
    Invalidated,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct AuthenticatedRunner {
    pub runner_id: Uuid,
}

/// Looks a runner token up by its hash in the runner read model.
pub async fn authenticate<C: GenericClient>(client: &C, token: &str) -> Result<AuthenticatedRunner, RunnerAuthError> {
    if !tokens::is_well_formed(token, RUNNER_TOKEN_PREFIX) {
        return Err(RunnerAuthError::Unknown);
    }
    let presented = tokens::hash(token);
    let select = client
        .prepare_cached("SELECT id, token_hash, status FROM runners WHERE token_hash = $1")
        .await
        .map_err(StoreError::from)?;
    let row = client
        .query_opt(&select, &[&presented])
        .await
        .map_err(StoreError::from)?
        .ok_or(RunnerAuthError::Unknown)?;
    let stored: &str = row.get(1);
    if !tokens::hashes_match(stored, &presented) {
        return Err(RunnerAuthError::Unknown);
    }
    if row.get::<_, &str>(2) != "active" {
        return Err(RunnerAuthError::Invalidated);
    }
    Ok(AuthenticatedRunner { runner_id: row.get(0) })
}

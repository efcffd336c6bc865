//! Runners: creation (with a token shown once), settings, pause, token
//! reset, invalidation, and the token check every runner request goes
//! through.

use chrono::Utc;
use deadpool_postgres::GenericClient;
use uuid::Uuid;
use warden_events::{Metadata, StreamId};

use super::heartbeat_cache;
use crate::domain::runner::{Runner, RunnerCommand, RunnerSettings};
use crate::log::commands::{CommandError, CommandService};
use crate::log::event_store::StoreError;
use crate::platform::secrets::tokens::{self, RUNNER_TOKEN_PREFIX};

pub struct CreatedRunner {
    pub id: Uuid,
    /// The only time the token exists outside the runner's config.
    pub token: String,
}

/// Creates a runner: an instance runner, or one of a group or project
/// (`scope`, whose managers the caller checked), within the scope's
/// runner limit.
pub async fn create_runner(
    fleet: &super::Fleet,
    settings: RunnerSettings,
    scope: Option<Uuid>,
    metadata: &Metadata,
) -> Result<CreatedRunner, CommandError> {
    let commands = &fleet.commands;
    let runner_id = Uuid::now_v7();
    let token = tokens::generate(RUNNER_TOKEN_PREFIX);
    let command = RunnerCommand::Create {
        runner_id,
        number: Some(commands.next_number("runner_numbers").await?),
        token_hash: token.hash,
        settings,
        scope_id: scope,
    };
    let stream = StreamId::runner(runner_id);
    match scope {
        None => commands.execute_new::<Runner>(&stream, &command, metadata).await?,
        Some(scope_id) => {
            let limit = crate::scopes::RunnerLimit {
                scope_id,
                default_limit: fleet.config.scope_runner_limit,
                lock_wait: fleet.db.timeouts().lock_wait(),
            };
            commands
                .execute_guarded::<Runner>(&stream, &command, metadata, &limit)
                .await?
        }
    };
    Ok(CreatedRunner {
        id: runner_id,
        token: token.plain,
    })
}

/// Runs an admin command on a runner; when this returns, token checks and
/// assignment see the change, on every instance (a command that takes
/// a token's access away also waits out the heartbeat caches).
pub async fn change_runner(
    commands: &CommandService,
    runner_id: Uuid,
    command: RunnerCommand,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    commands
        .execute::<Runner>(&StreamId::runner(runner_id), &command, metadata)
        .await?;
    // A pause needs no wait: cached heartbeats decide nothing by it
    // (assignment reads it from the database).
    if matches!(
        command,
        RunnerCommand::Invalidate { .. } | RunnerCommand::ResetToken { .. }
    ) {
        heartbeat_cache::wait_out_cached_answers().await;
    }
    Ok(())
}

/// A fresh token for the runner; the old one stops at once, or at the end
/// of `grace`.
pub async fn reset_token(
    commands: &CommandService,
    runner_id: Uuid,
    grace: Option<std::time::Duration>,
    metadata: &Metadata,
) -> Result<String, CommandError> {
    let token = tokens::generate(RUNNER_TOKEN_PREFIX);
    let previous_token_valid_until =
        grace.map(|grace| Utc::now() + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::zero()));
    let command = RunnerCommand::ResetToken {
        token_hash: token.hash,
        previous_token_valid_until,
    };
    change_runner(commands, runner_id, command, metadata).await?;
    Ok(token.plain)
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerAuthError {
    #[error("not a valid runner token")]
    Unknown,
    #[error("this runner has been invalidated")]
    Invalidated,
    /// Beyond the token's share of `runners.rate_limit`: try again after this.
    #[error("too many requests for this runner token")]
    RateLimited(std::time::Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A runner as its token check sees it.
#[derive(Clone, Debug)]
pub struct AuthenticatedRunner {
    pub runner_id: Uuid,
    /// The runner's integer id, if it has one.
    pub number: Option<i64>,
    pub tags: Vec<String>,
    pub priority: i32,
    pub paused: bool,
    /// Accepted through the previous token during its grace period (such
    /// a check expires with time, so it is never cached).
    pub through_previous_token: bool,
    /// The runner's group or project; none for an instance runner.
    pub scope_id: Option<Uuid>,
}

/// Looks a runner token up by its hash in the runner read model: the
/// current token, or the previous one during its grace period.
pub async fn authenticate<C: GenericClient>(client: &C, token: &str) -> Result<AuthenticatedRunner, RunnerAuthError> {
    if !tokens::is_well_formed(token, RUNNER_TOKEN_PREFIX) {
        return Err(RunnerAuthError::Unknown);
    }
    let presented = tokens::hash(token);
    let select = client
        .prepare_cached(
            "SELECT id, token_hash, status, tags, priority, paused, number, false, scope_id FROM runners
             WHERE token_hash = $1
             UNION ALL
             SELECT id, previous_token_hash, status, tags, priority, paused, number, true, scope_id FROM runners
             WHERE previous_token_hash = $1 AND previous_token_valid_until > now()
             LIMIT 1",
        )
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
    Ok(AuthenticatedRunner {
        runner_id: row.get(0),
        number: row.get(6),
        tags: row.get(3),
        priority: row.get(4),
        paused: row.get(5),
        through_previous_token: row.get(7),
        scope_id: row.get(8),
    })
}

/// The runner of a token check's `outcome`, within its rate limit (every
/// call of either runner protocol passes here).
pub fn admit(
    fleet: &super::Fleet,
    outcome: Result<AuthenticatedRunner, RunnerAuthError>,
) -> Result<AuthenticatedRunner, RunnerAuthError> {
    let runner = outcome?;
    fleet
        .rate_limit
        .check(runner.runner_id)
        .map_err(RunnerAuthError::RateLimited)?;
    Ok(runner)
}

/// The id of the runner `reference` names; `None` when no runner has that
/// number (a UUID is taken as it is: the command on it says whether it
/// exists).
pub async fn resolve(fleet: &super::Fleet, reference: crate::api::RunnerRef) -> Result<Option<Uuid>, StoreError> {
    match reference {
        crate::api::RunnerRef::Id(id) => Ok(Some(id)),
        crate::api::RunnerRef::Number(number) => {
            let connection = fleet.db.get().await?;
            let row = connection
                .query_opt("SELECT id FROM runners WHERE number = $1", &[&number])
                .await?;
            Ok(row.map(|row| row.get(0)))
        }
    }
}

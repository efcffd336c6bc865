//! Sessions of Project-W runner machines. `register` opens one: a random
//! session token (`wdst_`, kept only as SHA-256) and a runner machine of
//! its own, so one runner token serves many machines. Every later call
//! names its session; a closed or expired session, or one of another
//! runner, is refused. A session ends on `unregister`, when its runner is
//! invalidated, or when it has sent nothing for `runners.online_timeout`
//! ([`close_silent`]; its job then goes back to the queue).
//!
//! Sessions live in PostgreSQL (`runner_sessions`), so every instance
//! knows them. A heartbeat refreshes `last_seen_at` at most every
//! [`seen_write_interval`], batched with other sessions' refreshes every
//! [`seen_flush_interval`] (no request waits for it): silence is measured
//! in tens of seconds.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::GenericClient;
use uuid::Uuid;
use warden_events::StreamId;

use crate::log::event_store::{claims, StoreError};
use crate::platform::db::Database;
use crate::platform::secrets::tokens;

/// Prefix of Project-W session tokens ("warden session token").
pub const SESSION_TOKEN_PREFIX: &str = "wdst_";
/// How often a session's `last_seen_at` is written at most: every 5 s, or
/// a quarter of the timeout when that is shorter (a busy session must
/// never look silent).
pub fn seen_write_interval(online_timeout: Duration) -> Duration {
    (online_timeout / 4).min(Duration::from_secs(5))
}

/// An open session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub runner_id: Uuid,
    pub machine_id: Uuid,
}

impl Session {
    /// The `system_id` of the machine a session opens.
    pub fn system_id(id: Uuid) -> String {
        format!("{SYSTEM_ID_PREFIX}{}", id.simple())
    }
}

/// The start of the system ids of Project-W sessions' machines (reserved:
/// the native protocol refuses them).
pub const SYSTEM_ID_PREFIX: &str = "pw-";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no open session of this runner has this session token (closed, expired, or never opened)")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records a new session of `machine_id` for `runner_id`; returns the
/// session token, shown only to the machine.
pub async fn open(db: &Database, session_id: Uuid, runner_id: Uuid, machine_id: Uuid) -> Result<String, StoreError> {
    let token = tokens::generate(SESSION_TOKEN_PREFIX);
    let connection = db.get().await?;
    connection
        .execute(
            "INSERT INTO runner_sessions (id, runner_id, machine_id, token_hash) VALUES ($1, $2, $3, $4)",
            &[&session_id, &runner_id, &machine_id, &token.hash],
        )
        .await?;
    Ok(token.plain)
}

/// An authenticated session and its machine's current job (read in the
/// same statement: every Project-W call needs both).
pub struct SessionWithJob {
    pub session: Session,
    pub current_job: Option<Uuid>,
}

/// A session row found by its token hash, not yet checked: only
/// [`SessionLookup::for_runner`] turns it into a [`SessionWithJob`].
pub struct SessionLookup {
    presented: String,
    stored: String,
    found: SessionWithJob,
}

impl SessionLookup {
    /// The session, if it belongs to `runner_id` (the runner whose token
    /// came with the call) and its stored hash matches in constant time.
    pub fn for_runner(self, runner_id: Uuid) -> Result<SessionWithJob, SessionError> {
        // The index found the row; the comparison that decides is constant-time.
        if !tokens::hashes_match(&self.stored, &self.presented) || self.found.session.runner_id != runner_id {
            return Err(SessionError::Invalid);
        }
        Ok(self.found)
    }
}

/// Finds the open, unexpired session that `token` names, on `client`. A
/// Project-W call sends this statement together with its runner-token
/// check on one connection (tokio-postgres pipelines them: one round trip
/// for both), then checks it with [`SessionLookup::for_runner`].
pub async fn look_up<C: GenericClient>(
    client: &C,
    token: &str,
    online_timeout: Duration,
) -> Result<SessionLookup, SessionError> {
    if !tokens::is_well_formed(token, SESSION_TOKEN_PREFIX) {
        return Err(SessionError::Invalid);
    }
    let presented = tokens::hash(token);
    let select = client
        .prepare_cached(
            "SELECT s.id, s.runner_id, s.machine_id, s.token_hash,
                    (SELECT c.owner_stream FROM unique_claims c
                     WHERE c.scope = $3 AND c.value = s.machine_id::text)
             FROM runner_sessions s
             WHERE s.token_hash = $1 AND s.closed_at IS NULL
               AND s.last_seen_at > now() - make_interval(secs => $2)",
        )
        .await
        .map_err(StoreError::from)?;
    let row = client
        .query_opt(
            &select,
            &[&presented, &online_timeout.as_secs_f64(), &claims::MACHINE_JOB],
        )
        .await
        .map_err(StoreError::from)?
        .ok_or(SessionError::Invalid)?;
    Ok(SessionLookup {
        presented,
        stored: row.get(3),
        found: SessionWithJob {
            session: Session {
                id: row.get(0),
                runner_id: row.get(1),
                machine_id: row.get(2),
            },
            current_job: row
                .get::<_, Option<String>>(4)
                .and_then(|owner| StreamId::from_stored(owner).id()),
        },
    })
}

/// When each session's `last_seen_at` was last queued for a write by this
/// instance, and the sessions whose write is waiting for the next flush.
#[derive(Default)]
pub struct SeenWrites {
    written: Mutex<HashMap<Uuid, Instant>>,
    pending: Mutex<HashSet<Uuid>>,
}

impl SeenWrites {
    /// Whether `session` is due a write now (and marks it written).
    fn due(&self, session: Uuid, interval: Duration) -> bool {
        let mut written = self.written.lock().expect("seen writes");
        let now = Instant::now();
        let due = written
            .get(&session)
            .is_none_or(|at| now.duration_since(*at) >= interval);
        if due {
            written.insert(session, now);
            if written.len() > 10_000 {
                written.retain(|_, at| now.duration_since(*at) < interval * 4);
            }
        }
        due
    }

    fn take_pending(&self) -> Vec<Uuid> {
        self.pending.lock().expect("seen writes").drain().collect()
    }

    fn put_back(&self, sessions: Vec<Uuid>) {
        self.pending.lock().expect("seen writes").extend(sessions);
    }
}

/// How long a due `last_seen_at` write may wait to be batched with
/// others: an eighth of the timeout, at most a second. With the write
/// interval (at most a quarter) a busy session's row is never older than
/// three eighths of the timeout.
pub fn seen_flush_interval(online_timeout: Duration) -> Duration {
    (online_timeout / 8).min(Duration::from_secs(1))
}

/// A sign of life of `session`: queued for the next batched write (no
/// database round trip in the request).
pub fn seen(writes: &SeenWrites, session: Uuid, online_timeout: Duration) {
    if writes.due(session, seen_write_interval(online_timeout)) {
        writes.pending.lock().expect("seen writes").insert(session);
    }
}

/// Writes the queued signs of life in one statement.
pub async fn flush_seen(db: &Database, writes: &SeenWrites) -> Result<(), StoreError> {
    let sessions = writes.take_pending();
    if sessions.is_empty() {
        return Ok(());
    }
    let written = async {
        let connection = db.get().await?;
        connection
            .execute(
                "UPDATE runner_sessions SET last_seen_at = now() WHERE id = ANY($1) AND closed_at IS NULL",
                &[&sessions],
            )
            .await?;
        Ok::<_, StoreError>(())
    }
    .await;
    if written.is_err() {
        // Kept for the next flush: a session must not look silent
        // because the database was briefly away.
        writes.put_back(sessions);
    }
    written
}

/// Flushes the queued signs of life every [`seen_flush_interval`] until
/// `cancel` fires, then once more.
pub fn spawn_seen_flusher(
    fleet: std::sync::Arc<super::Fleet>,
    cancel: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(seen_flush_interval(fleet.config.online_timeout));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if let Err(error) = flush_seen(&fleet.db, &fleet.seen).await {
                tracing::warn!(%error, "could not record Project-W sessions' signs of life; retrying");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), flush_seen(&fleet.db, &fleet.seen)).await;
    })
}

/// Ends `session`; false if it had ended already.
pub async fn close<C: GenericClient>(client: &C, session: Uuid, reason: &str) -> Result<bool, StoreError> {
    Ok(client
        .execute(
            "UPDATE runner_sessions SET closed_at = now(), close_reason = $2 WHERE id = $1 AND closed_at IS NULL",
            &[&session, &reason],
        )
        .await?
        == 1)
}

/// Ends every session silent for longer than `online_timeout`; returns
/// them (each ended by exactly one caller, also across instances).
pub async fn close_silent(db: &Database, online_timeout: Duration) -> Result<Vec<Session>, StoreError> {
    let connection = db.get().await?;
    let rows = connection
        .query(
            "UPDATE runner_sessions SET closed_at = now(), close_reason = 'silent'
             WHERE closed_at IS NULL AND last_seen_at < now() - make_interval(secs => $1)
             RETURNING id, runner_id, machine_id",
            &[&online_timeout.as_secs_f64()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Session {
            id: row.get(0),
            runner_id: row.get(1),
            machine_id: row.get(2),
        })
        .collect())
}

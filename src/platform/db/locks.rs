//! Session advisory locks: serialising a check and the change it guards
//! across instances.

use std::time::Duration;

use super::{discard, Connection, Database, DbError};

/// A session advisory lock on a pooled connection of its own, held until
/// dropped (the connection is then closed, not pooled): serialises a check
/// and the change it guards on every instance (e.g. "is this the last
/// admin?" and the demotion, held until the demotion is in the read
/// model, so the next check sees it).
///
/// Not for leadership: a lock lives as long as its server session, and a
/// session can outlive its holder (a frozen backend, a proxy that keeps
/// the server side open); see `platform::leases`.
pub struct SessionLock(Option<Connection>);

/// How long [`SessionLock::take`] waits before it gives up.
const SESSION_LOCK_WAIT: Duration = Duration::from_secs(10);
/// The longest one attempt may take (a connection to a frozen server
/// would otherwise hold it until the answer deadline).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

impl SessionLock {
    /// Waits for the lock without holding a pooled connection meanwhile:
    /// whoever holds it may need one more connection to finish (measured
    /// when machine registrations still used this lock: a burst larger than
    /// the pool stalled for the whole lock timeout when waiters held
    /// theirs). A check that can run inside the change's own transaction
    /// is better off with `commands::Precondition`.
    pub async fn take(db: &Database, key: i64) -> Result<SessionLock, DbError> {
        let deadline = tokio::time::Instant::now() + SESSION_LOCK_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(lock) = Self::try_take(db, key).await? {
                return Ok(lock);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(DbError::LockTimedOut(SESSION_LOCK_WAIT));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The lock if it is free now, else `None` (never waits for it). An
    /// attempt that gets no answer in [`ATTEMPT_TIMEOUT`] fails, and its
    /// connection is closed (it may hold the lock once the server wakes).
    pub async fn try_take(db: &Database, key: i64) -> Result<Option<SessionLock>, DbError> {
        let connection = db.get().await?;
        let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&key];
        let attempt = connection.query_one("SELECT pg_try_advisory_lock($1)", &parameters);
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(row) => {
                let taken: bool = row?.get(0);
                if taken {
                    Ok(Some(SessionLock(Some(connection))))
                } else {
                    Ok(None)
                }
            }
            Err(_) => {
                discard(connection);
                Err(DbError::TimedOut(ATTEMPT_TIMEOUT))
            }
        }
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        // Closing the session releases the lock, whatever happened.
        if let Some(connection) = self.0.take() {
            discard(connection);
        }
    }
}

/// Stable 64-bit advisory lock key for `name` (FNV-1a). Unchanged since
/// the first release: instances of different releases must agree on it.
pub fn advisory_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"warden-projection:".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Takes the transaction-level advisory lock `key` in `tx` (shared or
/// exclusive), waiting at most `wait`: a clear `LockTimedOut` rather than
/// the statement timeout's error. Held until `tx` ends.
pub async fn xact_lock(
    tx: &deadpool_postgres::Transaction<'_>,
    key: i64,
    shared: bool,
    wait: Duration,
) -> Result<(), DbError> {
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {}", wait.as_millis()))
        .await?;
    let lock = if shared {
        "SELECT pg_advisory_xact_lock_shared($1)"
    } else {
        "SELECT pg_advisory_xact_lock($1)"
    };
    match tx.execute(lock, &[&key]).await {
        Ok(_) => Ok(()),
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            Err(DbError::LockTimedOut(wait))
        }
        Err(error) => Err(error.into()),
    }
}

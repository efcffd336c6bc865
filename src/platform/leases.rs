//! Leadership by lease: which instance runs a task that must run once,
//! not once per instance (a log consumer, the machine pruner, an LDAP
//! sync).
//!
//! A lease is a row of `leases`: its holder and when it expires, by the
//! database's clock. The holder renews it every [`RENEW_EVERY`]; anyone
//! may take it once it has expired. Unlike a session advisory lock
//! (which is held as long as the server session that took it lives, and a
//! session can outlive its instance: a frozen backend, a proxy that keeps
//! the server side open after warden is gone), a lease ends [`TTL`] after
//! its last renewal whatever became of its holder.
//!
//! The holder counts its lease as valid until `sent + TTL - SAFETY`,
//! where `sent` is when it sent the renewal that succeeded: the server
//! computed the expiry from a later moment, so the holder stops before
//! any other instance can take over (clocks need not agree; only their
//! rates must, which [`SAFETY`] covers). Work done under a lease must
//! still be safe if it commits late (a statement stuck in a frozen
//! connection): log consumers fence their commits with their checkpoint
//! (`log::follower::save_checkpoint`).

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::platform::db::{Database, DbError};

/// How long a lease lasts after its last renewal.
pub const TTL: Duration = Duration::from_secs(3);
/// How often the holder renews it (and how often others try to take it).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How much earlier than the server the holder counts it as ended.
const SAFETY: Duration = Duration::from_millis(500);
/// The longest one attempt to take or renew may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// One candidate's claim to a named lease.
pub struct Lease {
    name: String,
    /// Unique to this claim (not to the instance: one process may run two
    /// candidates, as tests do).
    holder: Uuid,
    ttl: Duration,
    renew_every: Duration,
    valid_until: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl Lease {
    /// A lease for continuous work (a log consumer): [`TTL`], renewed
    /// every [`RENEW_EVERY`].
    pub fn new(name: impl Into<String>) -> Lease {
        Self::with_terms(name.into(), TTL, RENEW_EVERY)
    }

    /// A lease for a task that runs every `period` (and tries the lease
    /// then): held across two periods, so that the leader keeps it from
    /// one run to the next; another instance takes over at most two
    /// periods after the leader's last run.
    pub fn periodic(name: impl Into<String>, period: Duration) -> Lease {
        Self::with_terms(name.into(), period * 2 + TTL, period)
    }

    fn with_terms(name: String, ttl: Duration, renew_every: Duration) -> Lease {
        Lease {
            name,
            holder: Uuid::now_v7(),
            ttl,
            renew_every,
            valid_until: None,
            last_attempt: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Until when this candidate counts the lease as its own, if it ever
    /// held it since it last ran out.
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }

    /// Whether this candidate holds the lease now, by its own clock.
    pub fn is_held(&self) -> bool {
        self.valid_until.is_some_and(|until| Instant::now() < until)
    }

    /// Renews the lease (or tries to take it) when an attempt is due, then
    /// says whether it is held. Waits at most [`ATTEMPT_TIMEOUT`]; an
    /// attempt that fails leaves the lease to run out.
    pub async fn hold(&mut self, db: &Database) -> bool {
        let due = self
            .last_attempt
            .is_none_or(|last| last.elapsed() >= self.renew_every || !self.is_held());
        if !due {
            return self.is_held();
        }
        let sent = Instant::now();
        self.last_attempt = Some(sent);
        match tokio::time::timeout(ATTEMPT_TIMEOUT, take_or_renew(db, &self.name, self.holder, self.ttl)).await {
            Ok(Ok(true)) => self.valid_until = Some(sent + self.ttl - SAFETY),
            Ok(Ok(false)) => self.valid_until = None,
            Ok(Err(error)) => tracing::debug!(lease = %self.name, %error, "could not renew a lease"),
            Err(_) => tracing::debug!(lease = %self.name, "no answer while renewing a lease"),
        }
        self.is_held()
    }

    /// Gives the lease up (a clean stop), so another instance need not
    /// wait for it to run out.
    pub async fn release(&mut self, db: &Database) {
        if self.valid_until.take().is_none() {
            return;
        }
        let release = async {
            db.get()
                .await?
                .execute(
                    "DELETE FROM leases WHERE name = $1 AND holder = $2",
                    &[&self.name, &self.holder],
                )
                .await?;
            Ok::<_, DbError>(())
        };
        if let Ok(Err(error)) = tokio::time::timeout(ATTEMPT_TIMEOUT, release).await {
            tracing::debug!(lease = %self.name, %error, "could not release a lease");
        }
    }
}

async fn take_or_renew(db: &Database, name: &str, holder: Uuid, ttl: Duration) -> Result<bool, DbError> {
    let connection = db.get().await?;
    let statement = connection
        .prepare_cached(
            "INSERT INTO leases AS l (name, holder, expires_at) VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
             WHERE l.holder = EXCLUDED.holder OR l.expires_at < clock_timestamp()
             RETURNING true",
        )
        .await?;
    let ttl_ms = ttl.as_millis() as f64;
    Ok(connection
        .query_opt(&statement, &[&name, &holder, &ttl_ms])
        .await?
        .is_some())
}

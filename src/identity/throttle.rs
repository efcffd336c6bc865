//! Brute-force protection of password logins (local accounts and LDAP).
//!
//! Failures are counted in PostgreSQL, so every instance sees the same
//! numbers, under two keys: the account *at one source address*, and the
//! source address alone. Too many failures within the window lock that key
//! for `lockout`. Because the account key includes the address, an
//! attacker elsewhere cannot lock an admin out of their own address; and
//! every lock-out ends. A locked key is refused before the password is
//! checked, so a locked-out guesser learns nothing and costs no argon2 run.
//! A successful login clears its account key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use crate::log::event_store::StoreError;
use crate::platform::config::LoginThrottleConfig;

/// Which login form: the keys of different providers never mix.
pub struct Attempt<'a> {
    /// `local`, `ldap:<name>`.
    pub provider: &'a str,
    /// As typed (normalised here).
    pub username: &'a str,
    /// The client's address; `None` counts as one shared "unknown" address.
    pub source_ip: Option<&'a str>,
}

impl Attempt<'_> {
    fn address_key(&self) -> String {
        format!("addr:{}", self.source_ip.unwrap_or("unknown"))
    }

    /// The username only as a hash: this table must not become a list of
    /// people's emails (it outlives a user's deletion by up to a window).
    fn account_key(&self) -> String {
        let account = crate::platform::secrets::tokens::hash(&format!(
            "{}\n{}",
            self.provider,
            self.username.trim().to_lowercase()
        ));
        format!("acct:{account}@{}", self.source_ip.unwrap_or("unknown"))
    }
}

/// How long until a locked attempt may be tried again, if it is locked.
pub async fn locked_for<C: GenericClient>(client: &C, attempt: &Attempt<'_>) -> Result<Option<Duration>, StoreError> {
    let select = client
        .prepare_cached("SELECT max(locked_until) FROM login_failures WHERE key = ANY($1) AND locked_until > now()")
        .await?;
    let keys = vec![attempt.account_key(), attempt.address_key()];
    let until: Option<DateTime<Utc>> = client.query_one(&select, &[&keys]).await?.get(0);
    Ok(until.map(|until| (until - Utc::now()).to_std().unwrap_or_default()))
}

/// Counts a failed login under both keys, locking those over the limit.
pub async fn record_failure<C: GenericClient>(
    client: &C,
    config: &LoginThrottleConfig,
    attempt: &Attempt<'_>,
) -> Result<(), StoreError> {
    // A window that ended starts over; a key over its limit gets locked.
    let upsert = client
        .prepare_cached(
            "INSERT INTO login_failures AS f (key, failures, window_start)
             VALUES ($1, 1, now())
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN f.window_start < now() - $2::text::interval THEN 1 ELSE f.failures + 1 END,
                 window_start = CASE WHEN f.window_start < now() - $2::text::interval THEN now() ELSE f.window_start END
             RETURNING failures",
        )
        .await?;
    let lock = client
        .prepare_cached(
            "UPDATE login_failures SET locked_until = now() + $2::text::interval, failures = 0, window_start = now()
             WHERE key = $1",
        )
        .await?;
    let window = interval(config.window);
    let lockout = interval(config.lockout);
    for (key, limit) in [
        (attempt.account_key(), config.max_failures_per_account),
        (attempt.address_key(), config.max_failures_per_address),
    ] {
        let failures: i32 = client.query_one(&upsert, &[&key, &window]).await?.get(0);
        if failures as u32 >= limit {
            client.execute(&lock, &[&key, &lockout]).await?;
        }
    }
    Ok(())
}

/// A successful login forgets the account's failures at that address.
pub async fn record_success<C: GenericClient>(client: &C, attempt: &Attempt<'_>) -> Result<(), StoreError> {
    let delete = client
        .prepare_cached("DELETE FROM login_failures WHERE key = $1 AND (locked_until IS NULL OR locked_until <= now())")
        .await?;
    client.execute(&delete, &[&attempt.account_key()]).await?;
    Ok(())
}

fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

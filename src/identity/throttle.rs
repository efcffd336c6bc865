//! Brute-force protection of password logins (local accounts and LDAP).
//!
//! Failures are counted in PostgreSQL, so every instance sees the same
//! numbers, under two keys: the account *at one source address*, and the
//! source address alone. Every attempt is counted *before* its password is
//! checked, in one statement per key, so parallel guesses cannot slip past
//! the limit; a successful login takes its count back. Past the limit
//! within the window a key is locked for `lockout`, and a locked attempt is
//! refused before the password is checked (a locked-out guesser learns
//! nothing and costs no argon2 run). Because the account key includes the
//! address, an attacker elsewhere cannot lock an admin out of their own
//! address; and every lock-out ends.

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

/// Counts `attempt` before its password is checked, atomically under both
/// keys; `Some(wait)` when it is over the limit (locked), and then it must
/// not be checked at all. Counting first is what makes parallel guesses
/// fail: each guess takes its number in one statement, so no more than the
/// limit ever reach the password check within a window, however many are
/// sent at once. A successful login takes its count back
/// ([`record_success`]).
pub async fn begin<C: GenericClient>(
    client: &C,
    config: &LoginThrottleConfig,
    attempt: &Attempt<'_>,
) -> Result<Option<Duration>, StoreError> {
    let count = client
        .prepare_cached(
            // A count starts over when its window has passed or its lock
            // has ended; locked_until is set once, by the first attempt over
            // the limit.
            "INSERT INTO login_failures AS f (key, failures, window_start)
             VALUES ($1, 1, now())
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN ((f.locked_until IS NOT NULL AND f.locked_until <= now()) OR (f.locked_until IS NULL AND f.window_start < now() - $2::text::interval)) THEN 1 ELSE f.failures + 1 END,
                 window_start = CASE WHEN ((f.locked_until IS NOT NULL AND f.locked_until <= now()) OR (f.locked_until IS NULL AND f.window_start < now() - $2::text::interval)) THEN now() ELSE f.window_start END,
                 locked_until = CASE
                     WHEN f.locked_until > now() THEN f.locked_until
                     WHEN (CASE WHEN ((f.locked_until IS NOT NULL AND f.locked_until <= now()) OR (f.locked_until IS NULL AND f.window_start < now() - $2::text::interval)) THEN 1 ELSE f.failures + 1 END) > $3 THEN now() + $4::text::interval
                     ELSE NULL END
             RETURNING locked_until",
        )
        .await?;
    let window = interval(config.window);
    let lockout = interval(config.lockout);
    // The account first: an attempt at a locked account is refused without
    // counting against the address too.
    for (key, limit) in [
        (attempt.account_key(), config.max_failures_per_account),
        (attempt.address_key(), config.max_failures_per_address),
    ] {
        let until: Option<DateTime<Utc>> = client
            .query_one(&count, &[&key, &window, &(limit as i32), &lockout])
            .await?
            .get(0);
        if let Some(until) = until.filter(|until| *until > Utc::now()) {
            return Ok(Some((until - Utc::now()).to_std().unwrap_or_default()));
        }
    }
    Ok(None)
}

/// A successful login: the account's count at that address is forgotten,
/// and the address's count takes this attempt back.
pub async fn record_success<C: GenericClient>(client: &C, attempt: &Attempt<'_>) -> Result<(), StoreError> {
    let forget = client
        .prepare_cached("DELETE FROM login_failures WHERE key = $1 AND (locked_until IS NULL OR locked_until <= now())")
        .await?;
    client.execute(&forget, &[&attempt.account_key()]).await?;
    let take_back = client
        .prepare_cached(
            "UPDATE login_failures SET failures = greatest(failures - 1, 0)
             WHERE key = $1 AND (locked_until IS NULL OR locked_until <= now())",
        )
        .await?;
    client.execute(&take_back, &[&attempt.address_key()]).await?;
    Ok(())
}

/// Takes an attempt's count back under both keys (the check could not be
/// made, e.g. the directory was unreachable).
pub async fn take_back<C: GenericClient>(client: &C, attempt: &Attempt<'_>) -> Result<(), StoreError> {
    let take_back = client
        .prepare_cached(
            "UPDATE login_failures SET failures = greatest(failures - 1, 0)
             WHERE key = ANY($1) AND (locked_until IS NULL OR locked_until <= now())",
        )
        .await?;
    client
        .execute(&take_back, &[&vec![attempt.account_key(), attempt.address_key()]])
        .await?;
    Ok(())
}

fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

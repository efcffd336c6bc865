//! Brute-force protection of password checks (local and LDAP logins, and
//! `change_password`).
//!
//! Attempts are counted in PostgreSQL, so every instance sees the same
//! numbers, under three keys:
//! - the account *at one source network* (IPv4 address or IPv6 /64): hard
//!   lock-out for `lockout` past `max_failures_per_account`;
//! - the source network alone: hard lock-out past `max_failures_per_address`;
//! - the account from *anywhere*: past `slow_down_after` failures each
//!   further attempt must wait twice as long as the one before (from 1 s up
//!   to `max_slow_down`). A delay, never a lock: an attacker with many
//!   addresses is slowed to one guess per `max_slow_down`, and the owner is
//!   never locked out for longer than that.
//!
//! Every attempt is counted *before* its password is checked, in one
//! statement per key, so parallel guesses cannot slip past a limit; a
//! refused attempt costs no argon2 run. Keys are HMAC-SHA-256 under a
//! server secret: the table is not a list of people's emails and addresses
//! that anyone with the database could reverse by guessing.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::log::event_store::StoreError;
use crate::platform::config::LoginThrottleConfig;

/// One password check about to be made.
pub struct Attempt<'a> {
    /// `local`, `ldap:<name>`, `password-change`: keys of different
    /// providers never mix.
    pub provider: &'a str,
    /// As typed (normalised here).
    pub username: &'a str,
    /// The client's address; `None` counts as one shared "unknown" address.
    pub source_ip: Option<&'a str>,
}

/// The throttle's limits and its key secret.
#[derive(Clone)]
pub struct Throttle {
    config: LoginThrottleConfig,
    key_secret: Vec<u8>,
}

struct Keys {
    pair: String,
    network: String,
    account: String,
}

/// The network an address is counted under: IPv6 hands every subscriber a
/// /64, so one address there means nothing.
pub fn network_of(source_ip: Option<&str>) -> String {
    match source_ip.map(str::parse::<IpAddr>) {
        Some(Ok(IpAddr::V6(v6))) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let segments = v6.segments();
                format!(
                    "{:x}:{:x}:{:x}:{:x}::/64",
                    segments[0], segments[1], segments[2], segments[3]
                )
            }
        },
        Some(Ok(IpAddr::V4(v4))) => v4.to_string(),
        Some(Err(_)) | None => "unknown".to_owned(),
    }
}

impl Throttle {
    /// Keys are keyed hashes under `key_secret` (the server secret kept
    /// outside the database: see `platform::server_secrets`).
    pub fn new(config: LoginThrottleConfig, key_secret: Vec<u8>) -> Self {
        Throttle { config, key_secret }
    }

    fn mac(&self, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key_secret).expect("HMAC takes keys of any length");
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn keys(&self, attempt: &Attempt<'_>) -> Keys {
        let account = self.mac(&format!(
            "{}\n{}",
            attempt.provider,
            attempt.username.trim().to_lowercase()
        ));
        let network = self.mac(&network_of(attempt.source_ip));
        Keys {
            pair: format!("pair:{account}@{network}"),
            network: format!("addr:{network}"),
            account: format!("acct:{account}"),
        }
    }

    /// Counts `attempt` before its password is checked, atomically under
    /// every key; `Some(wait)` when it is refused, and then it must not be
    /// checked at all. Counting first is what makes parallel guesses fail:
    /// each guess takes its number in one statement, so no more than the
    /// limits ever reach the password check, however many are sent at
    /// once.
    pub async fn begin<C: GenericClient>(
        &self,
        client: &C,
        attempt: &Attempt<'_>,
    ) -> Result<Option<Duration>, StoreError> {
        let refused = self.count(client, attempt).await?;
        if refused.is_some() {
            crate::platform::metrics::global()
                .logins_throttled
                .get_or_create(&metric_labels(attempt))
                .inc();
        }
        Ok(refused)
    }

    /// A wrong password (already counted by [`Self::begin`]): for the
    /// metrics only.
    pub fn record_failure(&self, attempt: &Attempt<'_>) {
        crate::platform::metrics::global()
            .login_failures
            .get_or_create(&metric_labels(attempt))
            .inc();
    }

    async fn count<C: GenericClient>(&self, client: &C, attempt: &Attempt<'_>) -> Result<Option<Duration>, StoreError> {
        let keys = self.keys(attempt);
        let config = &self.config;
        for (key, limit) in [
            (&keys.pair, config.max_failures_per_account),
            (&keys.network, config.max_failures_per_address),
        ] {
            if let Some(wait) = count_with_lockout(client, key, limit, config).await? {
                return Ok(Some(wait));
            }
        }
        count_with_slow_down(client, &keys.account, config).await
    }

    /// A successful check: the account's count at that network is
    /// forgotten; the network's and the account-wide counts take this
    /// attempt back (a success must not hand a guesser elsewhere a fresh
    /// budget).
    pub async fn record_success<C: GenericClient>(&self, client: &C, attempt: &Attempt<'_>) -> Result<(), StoreError> {
        let keys = self.keys(attempt);
        let forget = client
            .prepare_cached(
                "DELETE FROM login_failures WHERE key = $1 AND (locked_until IS NULL OR locked_until <= now())",
            )
            .await?;
        client.execute(&forget, &[&keys.pair]).await?;
        take_back_counts(client, &[keys.network, keys.account]).await
    }

    /// Takes an attempt's count back under every key (the check could not
    /// be made, e.g. the directory was unreachable).
    pub async fn take_back<C: GenericClient>(&self, client: &C, attempt: &Attempt<'_>) -> Result<(), StoreError> {
        let keys = self.keys(attempt);
        take_back_counts(client, &[keys.pair, keys.network, keys.account]).await
    }
}

/// `provider` of the metrics: `local`, `ldap`, `password-change` (never
/// a directory's name or a user).
fn metric_labels(attempt: &Attempt<'_>) -> crate::platform::metrics::Labels {
    let provider = attempt.provider.split(':').next().unwrap_or("local");
    crate::platform::metrics::labels([("provider", provider)])
}

/// Counts one attempt under `key`; past `limit` within the window the key
/// is locked for `lockout`, and attempts while locked are refused.
async fn count_with_lockout<C: GenericClient>(
    client: &C,
    key: &str,
    limit: u32,
    config: &LoginThrottleConfig,
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
    let until: Option<DateTime<Utc>> = client
        .query_one(
            &count,
            &[
                &key,
                &interval(config.window),
                &(limit as i32),
                &interval(config.lockout),
            ],
        )
        .await?
        .get(0);
    Ok(until.filter(|until| *until > Utc::now()).map(wait_until))
}

/// Counts one attempt under the account-wide `key` unless it is still
/// waiting out its delay (then refused, and not counted). The count starts
/// over only after a quiet `window`; each attempt past `slow_down_after`
/// sets the next allowed moment 1 s, 2 s, 4 s … (at most `max_slow_down`)
/// ahead.
async fn count_with_slow_down<C: GenericClient>(
    client: &C,
    key: &str,
    config: &LoginThrottleConfig,
) -> Result<Option<Duration>, StoreError> {
    let count = client
        .prepare_cached(
            "INSERT INTO login_failures AS f (key, failures, window_start)
             VALUES ($1, 1, now())
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN f.window_start < now() - $2::text::interval THEN 1 ELSE f.failures + 1 END,
                 window_start = now(),
                 locked_until = CASE
                     WHEN f.window_start >= now() - $2::text::interval AND f.failures + 1 > $3
                     THEN now() + least(interval '1 second' * power(2, least(f.failures - $3, 30)), $4::text::interval)
                     ELSE NULL END
             WHERE f.locked_until IS NULL OR f.locked_until <= now()
             RETURNING failures",
        )
        .await?;
    let counted = client
        .query_opt(
            &count,
            &[
                &key,
                &interval(config.window),
                &(config.slow_down_after as i32),
                &interval(config.max_slow_down),
            ],
        )
        .await?;
    if counted.is_some() {
        return Ok(None);
    }
    let waiting = client
        .prepare_cached("SELECT locked_until FROM login_failures WHERE key = $1")
        .await?;
    let until: Option<DateTime<Utc>> = client.query_opt(&waiting, &[&key]).await?.and_then(|row| row.get(0));
    // The delay may have just ended; the client still has to try again.
    Ok(Some(
        until
            .map_or(Duration::from_secs(1), wait_until)
            .max(Duration::from_secs(1)),
    ))
}

async fn take_back_counts<C: GenericClient>(client: &C, keys: &[String]) -> Result<(), StoreError> {
    let take_back = client
        .prepare_cached(
            "UPDATE login_failures SET failures = greatest(failures - 1, 0)
             WHERE key = ANY($1) AND (locked_until IS NULL OR locked_until <= now() OR key LIKE 'acct:%')",
        )
        .await?;
    client.execute(&take_back, &[&keys]).await?;
    Ok(())
}

fn wait_until(until: DateTime<Utc>) -> Duration {
    (until - Utc::now()).to_std().unwrap_or_default()
}

fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            network_of(Some("2001:db8:1:2:aaaa::1")),
            network_of(Some("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_ne!(network_of(Some("2001:db8:1:2::1")), network_of(Some("2001:db8:1:3::1")));
        assert_eq!(network_of(Some("::ffff:192.0.2.7")), "192.0.2.7");
        assert_ne!(network_of(Some("192.0.2.7")), network_of(Some("192.0.2.8")));
        assert_eq!(network_of(None), network_of(Some("not an address")));
    }

    #[test]
    fn keys_are_keyed_hashes_that_name_no_one() {
        let throttle = |secret: &[u8]| Throttle {
            config: LoginThrottleConfig::default(),
            key_secret: secret.to_vec(),
        };
        let attempt = Attempt {
            provider: "local",
            username: " Alice@Example.org",
            source_ip: Some("192.0.2.7"),
        };
        let keys = throttle(b"one").keys(&attempt);
        for key in [&keys.pair, &keys.network, &keys.account] {
            assert!(!key.contains("alice") && !key.contains("192.0.2.7"), "{key}");
        }
        // The same person is the same key (normalised), under one secret only.
        let same = throttle(b"one").keys(&Attempt {
            username: "alice@example.org",
            ..attempt
        });
        assert_eq!(keys.account, same.account);
        assert_ne!(keys.account, throttle(b"two").keys(&attempt).account);
        let plain = crate::platform::secrets::tokens::hash("local\nalice@example.org");
        assert!(!keys.account.contains(&plain));
    }
}

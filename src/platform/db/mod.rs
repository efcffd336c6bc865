//! The PostgreSQL connection pool, schema migrations, and the deadlines
//! that keep every wait on the database bounded:
//! - opening a connection: a deadline per host of the URL, hosts tried
//!   so that a hung one cannot hold up the others (`connect`);
//! - every statement: the server's `statement_timeout`, and on the
//!   client side a connection that owes an answer and hears nothing for
//!   `statement + ANSWER_MARGIN` fails (`answer_deadline`): a frozen
//!   server never applies its own timeout;
//! - a free pooled connection: `pool_wait`;
//! - a reused connection: checked with a round trip under
//!   [`VERIFY_TIMEOUT`] after a pause, and replaced without a check once
//!   another connection of its pool went silent (its host may be frozen).

mod answer_deadline;
mod connect;
mod listen;
mod locks;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use answer_deadline::OnSilence;
pub use connect::{describe, Deadlines, PgConnection, PostgresTls};
pub use listen::{Listener, LISTENER_KEEPALIVE};
pub use locks::{advisory_key, xact_lock, SessionLock};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The version of the newest migration this release has.
pub fn newest_known_migration() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|migration| migration.version())
        .max()
        .unwrap_or(0)
}

/// Advisory lock key that serialises migrations across instances.
const MIGRATION_LOCK: i64 = 0x7761_7264_656e_0001;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    #[error(
        "this database was migrated by a newer warden release (its migration {0} is unknown to this \
         one); run that release or a newer one, never an older one, against it"
    )]
    NewerSchema(String),
    #[error("invalid database settings: {0}")]
    Config(String),
    #[error("the database did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("waited {0:?} for a lock that another request holds; try again")]
    LockTimedOut(Duration),
}

/// How long warden waits on the database, by kind of wait
/// (`database.*_timeout` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The server's `statement_timeout`; the client gives a connection
    /// that owes an answer [`ANSWER_MARGIN`] more before it fails it.
    pub statement: Duration,
    /// One host of the URL: connect, TLS, start-up, read-write check.
    pub connect: Duration,
    /// A free connection of the pool.
    pub pool_wait: Duration,
    /// The statement timeout of work that legitimately runs long:
    /// migrations, the rewrite after a user's deletion, and one-shot
    /// commands (replay, audit verify).
    pub maintenance: Duration,
}

/// What the client adds to the server's statement timeout: a statement
/// the server cancels in time is answered with its error, not cut off.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(2);

impl Timeouts {
    /// The defaults for requests (the `database` section's defaults).
    pub const REQUESTS: Timeouts = Timeouts {
        statement: Duration::from_secs(10),
        connect: Duration::from_secs(3),
        pool_wait: Duration::from_secs(5),
        maintenance: Duration::from_secs(3600),
    };

    /// How long a statement may wait for a lock (`SET LOCAL
    /// lock_timeout`) and still answer with a clear conflict before the
    /// statement timeout cuts it off: half of it, at most 10 s.
    pub fn lock_wait(&self) -> Duration {
        (self.statement / 2).min(Duration::from_secs(10))
    }

    /// How long a session may sit inside a transaction without sending
    /// anything before the server ends it (`idle_in_transaction_session_timeout`):
    /// half the statement timeout. A client that froze mid-transaction
    /// (a stopped process, a proxy that forwards nothing) would otherwise
    /// hold its row locks for ever, and a log consumer's new leader would
    /// wait on the checkpoint row the old one had updated. warden never
    /// waits for anything else inside a transaction (uploads write each
    /// chunk in a transaction of its own).
    pub fn idle_in_transaction(&self) -> Duration {
        self.statement / 2
    }

    /// These timeouts with the maintenance statement timeout for every
    /// statement.
    pub fn for_maintenance(&self) -> Timeouts {
        Timeouts {
            statement: self.maintenance,
            ..*self
        }
    }

    fn deadlines(&self) -> Deadlines {
        Deadlines {
            per_host: self.connect,
            answer_within: self.statement + ANSWER_MARGIN,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::REQUESTS
    }
}

/// How long a connection may wait for TCP acknowledgements (and keepalive
/// probes) before the kernel counts it as dead.
const DEAD_CONNECTION: Duration = Duration::from_secs(15);

/// A pooled connection not used for this long is checked with a round
/// trip before it is handed out again.
const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(1);
/// The longest that check may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(1);

/// TCP settings that notice a dead peer in seconds (keepalives,
/// `tcp_user_timeout`: a black-holed peer is noticed in seconds, not after
/// the kernel's ~15 minutes of retransmissions), and only a writable
/// server (after a failover the old primary is refused). Settings already
/// in the URL win.
fn fail_fast(mut config: tokio_postgres::Config, writable: bool) -> tokio_postgres::Config {
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(DEAD_CONNECTION);
    if writable && config.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::Any {
        config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    config
}

/// `config` with the server-side settings of `timeouts`: its statement
/// timeout, and the server's own keepalives (its default, 2 hours, would
/// keep a vanished client's session and locks that long). Options in the
/// URL replace these.
fn with_server_settings(config: &tokio_postgres::Config, timeouts: &Timeouts) -> tokio_postgres::Config {
    let mut config = config.clone();
    if config.get_options().is_none() {
        config.options(format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={} -c tcp_keepalives_idle=5 \
             -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 -c tcp_user_timeout={}",
            timeouts.statement.as_millis(),
            timeouts.idle_in_transaction().as_millis(),
            DEAD_CONNECTION.as_millis()
        ));
    }
    config
}

/// Whether a connection of a pool went silent, and when: connections made
/// before then may be to the same frozen host.
#[derive(Default)]
struct PoolHealth {
    silence_seen_at: Mutex<Option<Instant>>,
}

impl PoolHealth {
    fn silence_seen(&self) {
        *self.silence_seen_at.lock().expect("pool health") = Some(Instant::now());
    }

    fn made_before_a_silence(&self, created: Instant) -> bool {
        self.silence_seen_at
            .lock()
            .expect("pool health")
            .is_some_and(|seen| created < seen)
    }

    fn on_silence(self: &Arc<Self>) -> OnSilence {
        let health = Arc::clone(self);
        Arc::new(move || health.silence_seen())
    }
}

/// The pool's way of opening a connection (see `connect`).
struct WardenConnect {
    config: tokio_postgres::Config,
    tls: PostgresTls,
    deadlines: Deadlines,
    health: Arc<PoolHealth>,
}

impl deadpool_postgres::Connect for WardenConnect {
    fn connect(
        &self,
        _: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        Box::pin(async move {
            let (client, connection) =
                connect::connect(&self.config, &self.tls, &self.deadlines, Some(self.health.on_silence())).await?;
            let driver = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "database connection ended");
                }
            });
            Ok((client, driver))
        })
    }
}

/// Shared handle to warden's database.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    /// The URL's settings with warden's TCP settings, without the
    /// server-side ones (which depend on the timeouts).
    config: tokio_postgres::Config,
    tls: PostgresTls,
    timeouts: Timeouts,
    health: Arc<PoolHealth>,
}

pub type Connection = deadpool_postgres::Object;

impl Database {
    /// Over TCP, TLS as the connection's `sslmode` says (`prefer` when
    /// unset), verified against the system's trust store; unix sockets
    /// never use TLS. Request timeouts.
    pub fn new(config: tokio_postgres::Config, max_connections: usize) -> Result<Self, DbError> {
        Self::build(config, max_connections, None, true, Timeouts::REQUESTS)
    }

    /// As [`Database::new`] with other timeouts.
    pub fn with_timeouts(
        config: tokio_postgres::Config,
        max_connections: usize,
        timeouts: Timeouts,
    ) -> Result<Self, DbError> {
        Self::build(config, max_connections, None, true, timeouts)
    }

    /// Parses a `postgres://` URL or a `key=value` connection string
    /// (`sslmode=require` for TLS, verified against the CA certificates in
    /// `ca_file` (PEM) or the system's). Several hosts may be listed: the
    /// first writable one that answers in time serves.
    pub fn from_url(
        url: &str,
        max_connections: usize,
        ca_file: Option<&Path>,
        timeouts: Timeouts,
    ) -> Result<Self, DbError> {
        Self::build(parse_url(url)?, max_connections, ca_file, true, timeouts)
    }

    /// A pool for a read replica (a hot standby: read-only, so not
    /// required to be writable).
    pub fn replica_from_url(
        url: &str,
        max_connections: usize,
        ca_file: Option<&Path>,
        timeouts: Timeouts,
    ) -> Result<Self, DbError> {
        Self::build(parse_url(url)?, max_connections, ca_file, false, timeouts)
    }

    fn build(
        config: tokio_postgres::Config,
        max_connections: usize,
        ca_file: Option<&Path>,
        writable: bool,
        timeouts: Timeouts,
    ) -> Result<Self, DbError> {
        let tls = PostgresTls::new(MakeRustlsConnect::new(
            crate::platform::tls::client_config(ca_file).map_err(DbError::Config)?,
        ));
        let config = fail_fast(config, writable);
        let health = Arc::new(PoolHealth::default());
        let connect = WardenConnect {
            config: with_server_settings(&config, &timeouts),
            tls: tls.clone(),
            deadlines: timeouts.deadlines(),
            health: Arc::clone(&health),
        };
        let manager = Manager::from_connect(
            config.clone(),
            connect,
            ManagerConfig {
                // Closed connections are always dropped; the round trip
                // that proves a connection alive is the hook below's.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let hosts = config.get_hosts().len().max(config.get_hostaddrs().len()).max(1);
        let hook_health = Arc::clone(&health);
        let pool = Pool::builder(manager)
            .pre_recycle(Hook::async_fn(move |client, metrics| {
                let health = Arc::clone(&hook_health);
                Box::pin(async move {
                    if health.made_before_a_silence(metrics.created) {
                        return Err(HookError::message("made before a connection of its pool went silent"));
                    }
                    // A connection handed out again after a pause is
                    // checked first: one that died meanwhile (failover,
                    // cable) is replaced instead of failing a request. One
                    // in steady use just answered: a check would double
                    // the round trips of every request.
                    if metrics.last_used() < VERIFY_AFTER_IDLE {
                        return Ok(());
                    }
                    match tokio::time::timeout(VERIFY_TIMEOUT, client.simple_query("")).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(error)) => Err(HookError::Backend(error)),
                        Err(_) => {
                            health.silence_seen();
                            Err(HookError::message("no answer to the check"))
                        }
                    }
                })
            }))
            .max_size(max_connections)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeouts.pool_wait))
            // Every host may be tried, each started a stagger after the
            // one before, each within its own deadline.
            .create_timeout(Some(
                timeouts.connect + connect::STAGGER * hosts as u32 + Duration::from_secs(1),
            ))
            .recycle_timeout(Some(VERIFY_TIMEOUT))
            .build()
            .map_err(|e| DbError::Config(e.to_string()))?;
        Ok(Database {
            pool,
            config,
            tls,
            timeouts,
            health,
        })
    }

    /// The TLS connector of the pool, for connections outside it.
    pub fn tls(&self) -> PostgresTls {
        self.tls.clone()
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The URL's settings (hosts, user, ...) as warden connects with them.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Whether a connection to a host other than a unix socket or loopback
    /// may travel unencrypted (`sslmode` other than `require`).
    pub fn may_travel_in_clear(&self) -> bool {
        use tokio_postgres::config::{Host, SslMode};
        let remote = self.config.get_hosts().iter().any(|host| match host {
            Host::Tcp(name) => !matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1"),
            Host::Unix(_) => false,
        });
        remote && self.config.get_ssl_mode() != SslMode::Require
    }

    pub async fn get(&self) -> Result<Connection, DbError> {
        Ok(self.pool.get().await?)
    }

    /// A connection outside the pool with its own `timeouts` (driven by a
    /// task of its own; closed when dropped): for work longer than a
    /// request's statements may take, and for session state.
    pub async fn dedicated(&self, timeouts: Timeouts) -> Result<DedicatedConnection, DbError> {
        let config = with_server_settings(&self.config, &timeouts);
        let (client, connection) = connect::connect(
            &config,
            &self.tls,
            &timeouts.deadlines(),
            Some(self.health.on_silence()),
        )
        .await?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "dedicated database connection ended");
            }
        });
        Ok(DedicatedConnection { client, driver })
    }

    /// Applies pending migrations from `migrations/`; safe to run from
    /// many instances at once. On a connection with the maintenance
    /// statement timeout (a migration may rewrite a big table).
    pub async fn migrate(&self) -> Result<Vec<String>, DbError> {
        let mut connection = self.dedicated(self.timeouts.for_maintenance()).await?;
        connection
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        // A migration in the database this release does not have means a
        // newer release ran here: its schema may mean things this one
        // would get wrong.
        let result = embedded::migrations::runner()
            .set_abort_missing(true)
            .run_async(&mut connection.client)
            .await;
        connection
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        let report = result.map_err(|error| match error.kind() {
            refinery::error::Kind::MissingVersion(migration) => DbError::NewerSchema(migration.to_string()),
            _ => DbError::Migration(error),
        })?;
        Ok(report.applied_migrations().iter().map(|m| m.to_string()).collect())
    }

    /// Connects outside the pool and runs `LISTEN` on each of `channels`
    /// (see [`Listener`]); `None` if the server closed the connection first.
    pub async fn listen(&self, channels: &[&str]) -> Result<Option<Listener>, tokio_postgres::Error> {
        let config = with_server_settings(&self.config, &self.timeouts);
        // A silent listener speaks for its host like a pooled connection.
        let on_silence = Some(self.health.on_silence());
        let (client, connection) = connect::connect(&config, &self.tls, &self.timeouts.deadlines(), on_silence).await?;
        listen::listen(client, connection, channels).await
    }

    pub fn status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, DbError> {
    url.parse()
        .map_err(|e: tokio_postgres::Error| DbError::Config(e.to_string()))
}

/// A connection outside the pool (see [`Database::dedicated`]).
pub struct DedicatedConnection {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for DedicatedConnection {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for DedicatedConnection {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.client
    }
}

impl Drop for DedicatedConnection {
    fn drop(&mut self) {
        // The client's end closes the connection; the driver would end by
        // itself, but a silent server must not keep it.
        self.driver.abort();
    }
}

/// Detaches a pooled connection so it is closed instead of reused: its
/// session state (advisory locks, an abandoned transaction) dies with it.
pub fn discard(connection: Connection) {
    drop(deadpool_postgres::Object::take(connection));
}

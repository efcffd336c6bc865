//! The PostgreSQL connection pool and schema migrations.

use std::path::Path;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

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
    TimedOut(std::time::Duration),
    #[error("waited {0:?} for a lock that another request holds; try again")]
    LockTimedOut(std::time::Duration),
}

/// How long a statement of warden's may run, server side.
const STATEMENT_TIMEOUT: &str = "60s";
/// How long a connection may wait for TCP acknowledgements (and keepalive
/// probes) before it counts as dead.
const DEAD_CONNECTION: std::time::Duration = std::time::Duration::from_secs(15);

/// Connection settings that fail fast instead of hanging: TCP keepalives
/// and `tcp_user_timeout` (a black-holed peer is noticed in seconds, not
/// after the kernel's ~15 minutes of retransmissions), a connect timeout, a
/// server-side statement timeout, and only a writable server (after a
/// failover, the old primary is refused). Settings already in the URL win.
fn fail_fast(mut config: tokio_postgres::Config, writable: bool) -> tokio_postgres::Config {
    config
        .keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(5))
        .keepalives_interval(std::time::Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(DEAD_CONNECTION);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    if config.get_options().is_none() {
        // The server gives up on a vanished client too (its TCP keepalives
        // default to 2 hours): a black-holed instance's sessions, and the
        // leader locks they hold, end within seconds.
        config.options(format!(
            "-c statement_timeout={STATEMENT_TIMEOUT} -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 \
             -c tcp_keepalives_count=3 -c tcp_user_timeout={}",
            DEAD_CONNECTION.as_millis()
        ));
    }
    if writable && config.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::Any {
        config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    config
}

/// rustls for tokio-postgres. tokio-postgres asks for a connector for
/// every host, unix sockets too (with an empty host name, which is no valid
/// TLS server name); it never starts TLS on a unix socket, so any valid
/// name serves there.
#[derive(Clone)]
pub struct PostgresTls(MakeRustlsConnect);

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for PostgresTls
where
    MakeRustlsConnect: tokio_postgres::tls::MakeTlsConnect<S>,
{
    type Stream = <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        let domain = if domain.is_empty() { "localhost" } else { domain };
        self.0.make_tls_connect(domain)
    }
}

/// A pooled connection not used for this long is checked with a round
/// trip before it is handed out again.
const VERIFY_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Shared handle to warden's database.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: PostgresTls,
}

pub type Connection = deadpool_postgres::Object;

impl Database {
    /// Over TCP, TLS as the connection's `sslmode` says (`prefer` when
    /// unset), verified against the system's trust store; unix sockets
    /// never use TLS.
    pub fn new(config: tokio_postgres::Config, max_connections: usize) -> Result<Self, DbError> {
        Self::with_tls(config, max_connections, None)
    }

    /// As [`Database::new`], trusting the CA certificates in `ca_file`
    /// (PEM) instead of the system's.
    pub fn with_tls(
        config: tokio_postgres::Config,
        max_connections: usize,
        ca_file: Option<&Path>,
    ) -> Result<Self, DbError> {
        Self::build(config, max_connections, ca_file, true)
    }

    /// A pool for a read replica (a hot standby: read-only, so not
    /// required to be writable).
    pub fn replica_from_url(url: &str, max_connections: usize, ca_file: Option<&Path>) -> Result<Self, DbError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| DbError::Config(e.to_string()))?;
        Self::build(config, max_connections, ca_file, false)
    }

    fn build(
        config: tokio_postgres::Config,
        max_connections: usize,
        ca_file: Option<&Path>,
        writable: bool,
    ) -> Result<Self, DbError> {
        let tls = PostgresTls(MakeRustlsConnect::new(
            crate::platform::tls::client_config(ca_file).map_err(DbError::Config)?,
        ));
        let config = fail_fast(config, writable);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                // Closed connections are always dropped; the round trip
                // that proves a connection alive is the hook below's.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .pre_recycle(Hook::async_fn(|client, metrics| {
                Box::pin(async move {
                    // A connection handed out again after a pause is checked
                    // with a round trip first: one that died meanwhile
                    // (failover, cable) is replaced instead of failing a
                    // request. One in steady use just answered: a check
                    // would double the round trips of every request.
                    if metrics.last_used() < VERIFY_AFTER_IDLE {
                        return Ok(());
                    }
                    client.simple_query("").await.map(|_| ()).map_err(HookError::Backend)
                })
            }))
            .max_size(max_connections)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            // The verification round trip of a reused connection.
            .recycle_timeout(Some(std::time::Duration::from_secs(5)))
            .build()
            .map_err(|e| DbError::Config(e.to_string()))?;
        Ok(Database { pool, config, tls })
    }

    /// Parses a `postgres://` URL or a `key=value` connection string
    /// (`sslmode=require` for TLS; see [`Database::with_tls`]).
    pub fn from_url(url: &str, max_connections: usize, ca_file: Option<&Path>) -> Result<Self, DbError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| DbError::Config(e.to_string()))?;
        Self::with_tls(config, max_connections, ca_file)
    }

    /// The TLS connector of the pool, for connections outside it.
    pub fn tls(&self) -> PostgresTls {
        self.tls.clone()
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

    /// Applies pending migrations from `migrations/`; safe to run from
    /// many instances at once.
    pub async fn migrate(&self) -> Result<Vec<String>, DbError> {
        let mut connection = self.get().await?;
        // Migrations may rewrite big tables: no statement timeout here.
        connection.batch_execute("SET statement_timeout = 0").await?;
        connection
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let client: &mut tokio_postgres::Client = &mut connection;
        // A migration in the database this release does not have means a
        // newer release ran here: its schema may mean things this one
        // would get wrong.
        let result = embedded::migrations::runner()
            .set_abort_missing(true)
            .run_async(client)
            .await;
        connection
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        connection.batch_execute("RESET statement_timeout").await?;
        let report = result.map_err(|error| match error.kind() {
            refinery::error::Kind::MissingVersion(migration) => DbError::NewerSchema(migration.to_string()),
            _ => DbError::Migration(error),
        })?;
        Ok(report.applied_migrations().iter().map(|m| m.to_string()).collect())
    }

    /// Settings for connections outside the pool (LISTEN).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub fn status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }
}

/// A connection outside the pool listening on some channels: its client
/// (keep it: dropping it closes the connection; it may send statements)
/// and its messages, notifications among them.
pub struct Listener {
    pub client: tokio_postgres::Client,
    pub messages: futures_util::stream::BoxStream<'static, Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>,
}

/// Connects with `config` and runs `LISTEN` on each of `channels`, driving
/// the connection meanwhile; `None` if the server closed it first. Every
/// notification committed after this returns is delivered.
pub async fn listen(
    config: &tokio_postgres::Config,
    tls: PostgresTls,
    channels: &[&str],
) -> Result<Option<Listener>, tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(tls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed();
    let statement: String = channels.iter().map(|channel| format!("LISTEN {channel};")).collect();
    {
        let listen = client.batch_execute(&statement);
        tokio::pin!(listen);
        // The connection must be driven while LISTEN runs.
        loop {
            tokio::select! {
                result = &mut listen => { result?; break; }
                message = messages.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                    None => return Ok(None),
                },
            }
        }
    }
    Ok(Some(Listener { client, messages }))
}

/// Detaches a pooled connection so it is closed instead of reused: its
/// session state (advisory locks) dies with it.
pub fn discard(connection: Connection) {
    drop(deadpool_postgres::Object::take(connection));
}

/// A session advisory lock on a connection of its own, held until dropped:
/// serialises a check and the change it guards on every instance (e.g. "is
/// this the last admin?" and the demotion, held until the demotion is in
/// the read model, so the next check sees it).
pub struct SessionLock(Option<Connection>);

/// How long [`SessionLock::take`] waits before it gives up.
const SESSION_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl SessionLock {
    /// Waits for the lock without holding a pooled connection meanwhile:
    /// whoever holds it may need one more connection to finish (measured
    /// when machine registrations still used this lock: a burst larger than
    /// the pool stalled for the whole lock timeout when waiters held
    /// theirs). A check that can run inside the change's own transaction
    /// is better off with `commands::Precondition`.
    pub async fn take(db: &Database, key: i64) -> Result<SessionLock, DbError> {
        let deadline = tokio::time::Instant::now() + SESSION_LOCK_WAIT;
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            if let Some(lock) = Self::try_take(db, key).await? {
                return Ok(lock);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(DbError::LockTimedOut(SESSION_LOCK_WAIT));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
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

impl SessionLock {
    /// The lock if it is free now, else `None` (never waits).
    pub async fn try_take(db: &Database, key: i64) -> Result<Option<SessionLock>, DbError> {
        let connection = db.get().await?;
        let taken: bool = connection
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?
            .get(0);
        Ok(taken.then(|| SessionLock(Some(connection))))
    }

    /// Whether the session (and so the lock) is still there.
    async fn alive(&self) -> bool {
        let Some(connection) = &self.0 else { return false };
        let check = connection.simple_query("");
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), check).await,
            Ok(Ok(_))
        )
    }
}

/// Which instance runs a periodic job that must run once per period, not
/// once per instance (the machine pruner, the LDAP sync): the holder of a
/// session advisory lock, kept while its session lives; the others try to
/// take it at each of their turns.
pub struct Leadership {
    key: i64,
    held: Option<SessionLock>,
}

impl Leadership {
    pub fn new(name: &str) -> Leadership {
        Leadership {
            key: advisory_key(name),
            held: None,
        }
    }

    /// Whether this instance leads now (taking the lead when it is free).
    pub async fn is_mine(&mut self, db: &Database) -> bool {
        if let Some(lock) = &self.held {
            if lock.alive().await {
                return true;
            }
            self.held = None;
        }
        match SessionLock::try_take(db, self.key).await {
            Ok(lock) => {
                self.held = lock;
                self.held.is_some()
            }
            Err(_) => false,
        }
    }
}

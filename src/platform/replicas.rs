//! Read replicas: where admin read-model queries, audit queries and time
//! travel go when `database.replica_urls` lists streaming replicas.
//!
//! A replica is used only once it has replayed everything the primary had
//! when the query started (see [`Position`]): a query on a replica sees
//! every command that answered before it, as on the primary
//! (read-your-writes). A replica that does not get there within
//! `database.replica_max_wait`, or cannot be reached, is passed over and
//! the query goes to the primary. Token checks, commands and anything
//! that must see the newest state never come here: they use the primary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use crate::platform::db::{Connection, Database, DbError};
use crate::platform::metrics;

/// How often a lagging replica is asked again how far it is.
const POLL: Duration = Duration::from_millis(2);

struct Replica {
    /// Host, port and database: never the password.
    name: String,
    db: Database,
}

/// The primary and the replicas that may serve reads.
pub struct ReadPools {
    primary: Database,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    max_wait: Duration,
}

/// Where a read went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadSource {
    Primary,
    Replica(String),
}

/// One replica as `/api/health` shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ReplicaStatus {
    pub name: String,
    pub reachable: bool,
    /// WAL bytes the replica has still to replay of what the primary has
    /// flushed (absent when unreachable).
    pub replay_lag_bytes: Option<i64>,
}

impl ReadPools {
    /// Only the primary: every read goes there.
    pub fn primary_only(primary: Database) -> ReadPools {
        ReadPools::new(primary, Vec::new(), Duration::ZERO)
    }

    /// `replicas` are `(name, pool)` pairs.
    pub fn new(primary: Database, replicas: Vec<(String, Database)>, max_wait: Duration) -> ReadPools {
        ReadPools {
            primary,
            replicas: replicas.into_iter().map(|(name, db)| Replica { name, db }).collect(),
            next: AtomicUsize::new(0),
            max_wait,
        }
    }

    /// Opens a pool per URL of `database.replica_urls`.
    pub fn from_urls(
        primary: Database,
        urls: &[String],
        max_connections: usize,
        ca_file: Option<&std::path::Path>,
        max_wait: Duration,
    ) -> Result<ReadPools, DbError> {
        let mut replicas = Vec::new();
        for url in urls {
            let db = Database::replica_from_url(url, max_connections, ca_file, primary.timeouts())?;
            replicas.push((describe(db.config()), db));
        }
        Ok(ReadPools::new(primary, replicas, max_wait))
    }

    pub fn has_replicas(&self) -> bool {
        !self.replicas.is_empty()
    }

    /// A connection for a read that must see every command that answered
    /// before now: a caught-up replica if there is one, else the primary.
    pub async fn get(&self) -> Result<(Connection, ReadSource), DbError> {
        if self.replicas.is_empty() {
            return Ok((self.primary.get().await?, ReadSource::Primary));
        }
        let started = Instant::now();
        let wanted = Position::now(&self.primary).await?;
        let deadline = started + self.max_wait;
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.replicas.len() {
            let replica = &self.replicas[(first + offset) % self.replicas.len()];
            match caught_up(&replica.db, &wanted, deadline).await {
                Ok(Some(connection)) => {
                    record(&replica.name, started.elapsed());
                    return Ok((connection, ReadSource::Replica(replica.name.clone())));
                }
                Ok(None) => tracing::debug!(replica = %replica.name, "replica behind; reading elsewhere"),
                Err(error) => tracing::warn!(replica = %replica.name, %error, "replica unreachable; reading elsewhere"),
            }
        }
        record("primary", started.elapsed());
        Ok((self.primary.get().await?, ReadSource::Primary))
    }

    /// How far each replica is behind the primary now.
    pub async fn status(&self) -> Vec<ReplicaStatus> {
        let flushed: Option<String> = match self.primary.get().await {
            Ok(primary) => primary
                .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
                .await
                .ok()
                .map(|row| row.get(0)),
            Err(_) => None,
        };
        let mut out = Vec::new();
        for replica in &self.replicas {
            let lag = match (&flushed, replica.db.get().await) {
                (Some(flushed), Ok(connection)) => connection
                    .query_one(
                        "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())::bigint",
                        &[flushed],
                    )
                    .await
                    .ok()
                    .and_then(|row| row.get::<_, Option<i64>>(0)),
                _ => None,
            };
            out.push(ReplicaStatus {
                name: replica.name.clone(),
                reachable: lag.is_some(),
                replay_lag_bytes: lag.map(|bytes| bytes.max(0)),
            });
        }
        out
    }
}

/// What a replica must have replayed to show every change that answered
/// before now: every transaction the primary had completed, as its
/// snapshot (`pg_current_snapshot()`) says. Commands update the read
/// models in the transaction that appends their events (inline
/// projection), so a command that answered is one such completed
/// transaction, read models included.
///
/// A replica has them all when its own snapshot shows none of them still
/// running and it has heard of the newest (its `xmax` is not below the
/// primary's). WAL positions alone do not work: an idle primary may have
/// flushed part of a record the replica cannot replay until more comes.
struct Position {
    snapshot: String,
}

impl Position {
    async fn now(primary: &Database) -> Result<Position, DbError> {
        let connection = primary.get().await?;
        let select = connection.prepare_cached("SELECT pg_current_snapshot()::text").await?;
        Ok(Position {
            snapshot: connection.query_one(&select, &[]).await?.get(0),
        })
    }
}

/// A connection to `replica` once it has replayed `wanted`, or `None` if
/// it has not by `deadline` (asked at least once).
async fn caught_up(replica: &Database, wanted: &Position, deadline: Instant) -> Result<Option<Connection>, DbError> {
    let connection = tokio::time::timeout_at(deadline.into(), replica.get())
        .await
        .map_err(|_| DbError::Config("no replica connection in time".into()))??;
    // `pg_visible_in_snapshot(x, primary)`: x had completed on the primary.
    let check = connection
        .prepare_cached(
            "WITH s AS (SELECT pg_current_snapshot() AS here, $1::text::pg_snapshot AS primary_snapshot)
             SELECT pg_snapshot_xmax(here) >= pg_snapshot_xmax(primary_snapshot)
                    AND NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(here) AS running(xid)
                                    WHERE pg_visible_in_snapshot(running.xid, primary_snapshot))
             FROM s",
        )
        .await?;
    loop {
        if connection
            .query_one(&check, &[&wanted.snapshot])
            .await?
            .get::<_, bool>(0)
        {
            return Ok(Some(connection));
        }
        if Instant::now() + POLL > deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn record(source: &str, waited: Duration) {
    let labels = metrics::labels([("source", source)]);
    let metrics = metrics::global();
    metrics.reads.get_or_create(&labels).inc();
    metrics.read_wait.get_or_create(&labels).observe(waited.as_secs_f64());
}

/// `host:port/dbname` of a connection configuration.
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

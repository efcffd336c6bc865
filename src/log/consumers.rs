//! Where every log consumer stands, from the shared checkpoint table (not
//! one instance's memory): for readiness, metrics and the stall watch.

use deadpool_postgres::GenericClient;

use crate::log::event_store::StoreError;

/// The projectors' names (the reactions add their own).
pub fn projector_names() -> Vec<&'static str> {
    warden_projections::all().iter().map(|p| p.name()).collect()
}

/// How far behind one consumer is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConsumerLag {
    pub name: &'static str,
    pub position: i64,
    /// Committed events after its checkpoint (counted up to 100,000),
    /// also those a stalled horizon keeps from it.
    pub events: i64,
    /// Age of the oldest of them; 0 when none.
    pub seconds: f64,
}

/// Largest backlog counted exactly.
const COUNT_CAP: i64 = 100_000;

pub async fn lags<C: GenericClient>(client: &C, names: &[&'static str]) -> Result<Vec<ConsumerLag>, StoreError> {
    let select = client
        .prepare_cached(
            "SELECT coalesce(c.transaction_id, 0), coalesce(c.position, 0),
                    (SELECT count(*) FROM (SELECT 1 FROM events e
                         WHERE (e.transaction_id, e.position) > (coalesce(c.transaction_id, 0), coalesce(c.position, 0))
                         LIMIT $2) backlog),
                    coalesce((SELECT extract(epoch FROM now() - e.recorded_at)::float8 FROM events e
                         WHERE (e.transaction_id, e.position) > (coalesce(c.transaction_id, 0), coalesce(c.position, 0))
                         ORDER BY e.transaction_id, e.position LIMIT 1), 0)
             FROM (SELECT $1::text AS name) n LEFT JOIN projection_checkpoints c ON c.name = n.name",
        )
        .await?;
    let mut lags = Vec::new();
    for &name in names {
        let row = client.query_one(&select, &[&name, &COUNT_CAP]).await?;
        lags.push(ConsumerLag {
            name,
            position: row.get(1),
            events: row.get(2),
            seconds: row.get::<_, f64>(3).max(0.0),
        });
    }
    Ok(lags)
}

/// The oldest transaction in the cluster that holds a transaction id: it
/// holds the log horizon (and so every consumer) back while it runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HorizonHolder {
    pub pid: i32,
    pub database: Option<String>,
    pub seconds: f64,
    pub query_start: Option<chrono::DateTime<chrono::Utc>>,
    pub state: Option<String>,
}

pub async fn horizon_holder<C: GenericClient>(client: &C) -> Result<Option<HorizonHolder>, StoreError> {
    let select = client
        .prepare_cached(
            "SELECT pid, datname::text, extract(epoch FROM now() - xact_start)::float8, query_start, state
             FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
             ORDER BY age(backend_xid) DESC LIMIT 1",
        )
        .await?;
    Ok(client.query_opt(&select, &[]).await?.map(|row| HorizonHolder {
        pid: row.get(0),
        database: row.get(1),
        seconds: row.get::<_, Option<f64>>(2).unwrap_or_default(),
        query_start: row.get(3),
        state: row.get(4),
    }))
}

/// Every few seconds: when events wait above the log horizon and the
/// transaction holding it has run longer than `threshold`, a warning names
/// it (pid, database, age, query start, state), so an operator can end it.
/// The same facts are in `/metrics` (`warden_log_horizon_holder_*`).
pub fn spawn_stall_watch(
    db: crate::platform::db::Database,
    threshold: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = (threshold / 2).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if let Err(error) = check_for_stall(&db, threshold).await {
                tracing::debug!(%error, "stall watch: database not reachable");
            }
        }
    })
}

/// One look of the stall watch: the transaction it warned about, if any.
pub async fn check_for_stall(
    db: &crate::platform::db::Database,
    threshold: std::time::Duration,
) -> Result<Option<HorizonHolder>, StoreError> {
    let connection = db.get().await?;
    let waiting: bool = connection
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM events WHERE transaction_id >= log_horizon())",
            &[],
        )
        .await?
        .get(0);
    if !waiting {
        return Ok(None);
    }
    let holder = horizon_holder(&connection).await?;
    if let Some(holder) = &holder {
        if holder.seconds >= threshold.as_secs_f64() {
            tracing::warn!(
                pid = holder.pid,
                database = holder.database.as_deref().unwrap_or("?"),
                seconds = holder.seconds,
                query_start = ?holder.query_start,
                state = holder.state.as_deref().unwrap_or("?"),
                "the event log is stalled: a transaction holds every projector back; \
                 end it (SELECT pg_terminate_backend(pid)) if it should not run this long"
            );
            return Ok(Some(holder.clone()));
        }
    }
    Ok(None)
}

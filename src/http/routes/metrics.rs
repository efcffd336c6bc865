//! `GET /metrics`: the Prometheus scrape. Counters are bumped where things
//! happen; the gauges are refreshed here from the database, so every
//! instance reports the shared state (checkpoints, queue, horizon) plus its
//! own (leadership, pool).

use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::http::error::{ApiError, ErrorBody};
use crate::log::consumers;
use crate::platform::metrics::{self, labels};

/// Every consumer: the projectors and the re-assignment reaction.
pub fn consumer_names() -> Vec<&'static str> {
    let mut names = consumers::projector_names();
    names.push(crate::fleet::reactions::NAME);
    names
}

/// Metrics in the Prometheus text format (requests, appends, logins,
/// consumer lag, the log horizon, the queue, machines, the pool).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 503, description = "the database is unreachable", body = ErrorBody)
    )
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    refresh(&state).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics::global().render()))
}

async fn refresh(state: &AppState) -> Result<(), ApiError> {
    let m = metrics::global();
    let connection = state.db.get().await?;
    let here = state.consumers.projections().status();
    for lag in consumers::lags(&connection, &consumer_names()).await? {
        let consumer = labels([("consumer", lag.name)]);
        m.consumer_position.get_or_create(&consumer).set(lag.position);
        m.consumer_lag_events.get_or_create(&consumer).set(lag.events);
        m.consumer_lag_seconds.get_or_create(&consumer).set(lag.seconds);
        let status = here.iter().find(|p| p.name == lag.name);
        m.consumer_leading
            .get_or_create(&consumer)
            .set(i64::from(status.is_some_and(|p| p.leading_here)));
        m.consumer_stuck
            .get_or_create(&consumer)
            .set(i64::from(status.is_some_and(|p| p.stuck_on.is_some())));
    }
    let holder = consumers::horizon_holder(&connection).await?;
    m.horizon_holder_age_seconds
        .set(holder.as_ref().map_or(0.0, |h| h.seconds));
    m.horizon_holder_pid.set(holder.map_or(0, |h| i64::from(h.pid)));
    let db = |error: tokio_postgres::Error| ApiError::from(crate::platform::db::DbError::from(error));
    let queue = connection
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(submitted_at))::float8, 0)
             FROM jobs WHERE status = 'queued'",
            &[],
        )
        .await
        .map_err(db)?;
    m.jobs_queued.set(queue.get(0));
    m.oldest_queued_job_seconds.set(queue.get(1));
    let online = format!("{} milliseconds", state.config.runners.online_timeout.as_millis());
    let recorded = format!(
        "{} milliseconds",
        (state.config.runners.online_timeout + state.config.runners.contact_record_interval).as_millis()
    );
    let machines = connection
        .query_one(
            "SELECT (SELECT count(*) FROM runner_sessions
                     WHERE closed_at IS NULL AND last_seen_at > now() - $1::text::interval),
                    (SELECT count(*) FROM runner_machines m
                     WHERE pruned_at IS NULL AND contacted_at > now() - $2::text::interval
                       AND NOT EXISTS (SELECT 1 FROM runner_sessions s WHERE s.machine_id = m.id))",
            &[&online, &recorded],
        )
        .await
        .map_err(db)?;
    m.machines_online
        .get_or_create(&labels([("protocol", "project_w")]))
        .set(machines.get(0));
    m.machines_online
        .get_or_create(&labels([("protocol", "native")]))
        .set(machines.get(1));
    let pool = state.db.status();
    m.pool_connections
        .get_or_create(&labels([("state", "open")]))
        .set(pool.size as i64);
    m.pool_connections
        .get_or_create(&labels([("state", "idle")]))
        .set(pool.available as i64);
    Ok(())
}

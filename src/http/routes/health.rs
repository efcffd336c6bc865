use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;

/// Readiness, and how far each projector has read the log: 503 when the
/// database is unreachable or a projector stopped at an event this release
/// cannot read (a newer release wrote it; `stuck_on` says which), unless
/// another instance has since read past it (the shared checkpoint).
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    responses(
        (status = 200, description = "up; projector positions", body = serde_json::Value, example = json!({"status": "ok", "projectors": {}})),
        (status = 503, description = "the database is unreachable (ErrorBody), or a projector is stuck (`status: not_ready`)", body = ErrorBody)
    )
)]
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    within_ready_timeout(&state, health_report(&state)).await
}

/// `probe`'s answer, or `503 not_ready` once `http.ready_timeout` has
/// passed: a probe must answer in time whatever the database does (a load
/// balancer that gets no answer cannot tell "not ready" from "slow").
async fn within_ready_timeout(
    state: &AppState,
    probe: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let deadline = state.config.http.ready_timeout;
    match tokio::time::timeout(deadline, probe).await {
        Ok(answer) => answer,
        Err(_) => Ok(HttpResponse::ServiceUnavailable().json(json!({
            "status": "not_ready",
            "reasons": [format!("the database did not answer within {deadline:?}")],
        }))),
    }
}

async fn health_report(state: &AppState) -> Result<HttpResponse, ApiError> {
    let connection = state.db.get().await?;
    let mut projectors = state.consumers.projections().status();
    for projector in &mut projectors {
        // Led elsewhere: this instance's memory knows nothing; the shared
        // checkpoint does.
        if !projector.leading_here {
            projector.checkpoint = crate::log::follower::load_checkpoint(&connection, projector.name).await?;
        }
        let Some(stuck) = &projector.stuck_on else { continue };
        // Read past it elsewhere (an instance of a newer release): resolved.
        let passed: bool = connection
            .query_one(
                "SELECT coalesce((SELECT (transaction_id, position) >= ($2, $3)
                                  FROM projection_checkpoints WHERE name = $1), false)",
                &[&projector.name, &stuck.cursor.transaction_id, &stuck.cursor.position],
            )
            .await
            .map_err(crate::platform::db::DbError::from)?
            .get(0);
        if passed {
            projector.stuck_on = None;
        }
    }
    let stuck = projectors.iter().any(|p| p.stuck_on.is_some());
    let mut body = json!({
        "status": if stuck { "not_ready" } else { "ok" },
        "projectors": projectors,
    });
    if state.reads.has_replicas() {
        // A replica behind or down slows admin reads, it does not make
        // the instance unready: reads then go to the primary.
        body["replicas"] = json!(state.reads.status().await);
    }
    Ok(if stuck {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// Liveness for load balancers and Kubernetes `livenessProbe`: the process
/// answers HTTP. It does not touch the database (a database outage must
/// not get every instance restarted).
#[utoipa::path(
    get,
    path = "/api/health/live",
    tag = "health",
    responses((status = 200, description = "the process answers", body = serde_json::Value, example = json!({"status": "live"})))
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "live"}))
}

/// Readiness for load balancers and Kubernetes `readinessProbe`: the
/// database answers, its schema is one this release knows, and every
/// consumer (projectors, reaction) is within `http.ready_max_lag` by the
/// shared checkpoint table and not stopped at an event it cannot read.
/// 503 with the reasons otherwise, and within `http.ready_timeout`
/// whatever the database does.
#[utoipa::path(
    get,
    path = "/api/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "ready; consumer lags", body = serde_json::Value, example = json!({"status": "ready", "consumers": []})),
        (status = 503, description = "not ready: `reasons` says why (or the database is unreachable: ErrorBody)", body = ErrorBody)
    )
)]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    within_ready_timeout(&state, readiness(&state)).await
}

async fn readiness(state: &AppState) -> Result<HttpResponse, ApiError> {
    let connection = state.db.get().await?;
    let mut reasons = Vec::new();
    let newest_migration: Option<i32> = connection
        .query_one("SELECT max(version) FROM refinery_schema_history", &[])
        .await
        .map_err(crate::platform::db::DbError::from)?
        .get(0);
    if newest_migration.unwrap_or(0) > crate::platform::db::newest_known_migration() {
        reasons.push("the database schema is newer than this release".to_owned());
    }
    let lags = crate::log::consumers::lags(&connection, &crate::http::routes::metrics::consumer_names()).await?;
    let max_lag = state.config.http.ready_max_lag.as_secs_f64();
    for lag in &lags {
        if lag.seconds > max_lag {
            reasons.push(format!("{} is {:.1}s behind the log", lag.name, lag.seconds));
        }
    }
    for projector in state.consumers.projections().status() {
        if let Some(stuck) = &projector.stuck_on {
            reasons.push(format!(
                "{} stopped at {} v{} (position {}), unreadable to this release",
                projector.name, stuck.event_type, stuck.schema_version, stuck.cursor.position
            ));
        }
    }
    let body = json!({
        "status": if reasons.is_empty() { "ready" } else { "not_ready" },
        "reasons": reasons,
        "consumers": lags,
    });
    Ok(if reasons.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    })
}

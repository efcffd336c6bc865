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
    let connection = state.db.get().await?;
    let mut projectors = state.commands.projections().status();
    for projector in &mut projectors {
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
    let body = json!({
        "status": if stuck { "not_ready" } else { "ok" },
        "projectors": projectors,
    });
    Ok(if stuck {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

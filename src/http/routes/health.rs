use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;

/// Liveness, and how far each projector has read the log.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    responses(
        (status = 200, description = "up; projector positions", body = serde_json::Value, example = json!({"status": "ok", "projectors": {}})),
        (status = 503, description = "the database is unreachable", body = ErrorBody)
    )
)]
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let connection = state.db.get().await?;
    connection
        .query_one("SELECT 1", &[])
        .await
        .map_err(crate::platform::db::DbError::from)?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "projectors": state.commands.projections().status(),
    })))
}

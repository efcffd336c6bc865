use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::http::error::ApiError;

/// Liveness plus how far each projector has read the log.
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let connection = state.db.get().await?;
    connection
        .query_one("SELECT 1", &[])
        .await
        .map_err(crate::db::DbError::from)?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "projectors": state.commands.projections().status(),
    })))
}

use actix_web::HttpResponse;
use serde_json::json;

use crate::http::auth::Runner;
use crate::http::error::ApiError;

/// Lets a runner check its token (and learn its id).
pub async fn verify(runner: Runner) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "runner_id": runner.runner_id, "status": "active" })))
}

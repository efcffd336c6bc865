use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::optional_json;
use crate::app::AppState;
use crate::http::auth::Admin;
use crate::http::context::RequestContext;
use crate::http::error::ApiError;
use crate::runners;

/// Optional body of `create_runner`; the seed's call sends none.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRunnerBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

pub async fn create_runner(
    state: web::Data<AppState>,
    admin: Admin,
    context: RequestContext,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: CreateRunnerBody = optional_json(&request, &body)?.unwrap_or_default();
    let metadata = context.metadata(admin.0.actor());
    let created = runners::create_runner(&state, body.description, body.tags, &metadata).await?;
    Ok(HttpResponse::Created().json(json!({ "id": created.id, "token": created.token })))
}

#[derive(Deserialize)]
pub struct InvalidateQuery {
    runner_id: String,
    #[serde(default)]
    reason: Option<String>,
}

pub async fn invalidate_runner(
    state: web::Data<AppState>,
    admin: Admin,
    context: RequestContext,
    query: web::Query<InvalidateQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let runner_id = Uuid::parse_str(query.runner_id.trim())
        .map_err(|_| ApiError::bad_request("invalid_runner_id", "runner_id must be a runner's UUID"))?;
    let metadata = context.metadata(admin.0.actor());
    runners::invalidate_runner(&state, runner_id, query.reason, &metadata).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": runner_id, "status": "invalidated" })))
}

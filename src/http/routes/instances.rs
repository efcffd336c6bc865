//! `GET /api/admins/instances`: the instance registry, for admins.

use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::http::auth::AdminReader;
use crate::http::error::ApiError;
use crate::platform::instances::{self, InstanceView};

/// The warden instances alive now (heard of within 20 s), with their
/// release and what each leads.
#[utoipa::path(
    get,
    path = "/api/admins/instances",
    tag = "admin: queries",
    responses(
        (status = 200, description = "instances, oldest first", body = Vec<InstanceView>)
    ),
    security(("user_token" = ["admin"]), ("user_token" = []))
)]
pub async fn list_instances(state: web::Data<AppState>, _reader: AdminReader) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(instances::alive(&state.db).await?))
}

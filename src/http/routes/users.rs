use actix_web::HttpResponse;
use serde_json::json;

use crate::http::auth::AuthenticatedUser;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;

/// Who the access token belongs to.
#[utoipa::path(
    get,
    path = "/api/users/me",
    tag = "accounts",
    responses(
        (status = 200, description = "the user", body = serde_json::Value, example = json!({"id": "0194...", "email": "user@example.org", "role": "user", "admin_scope": false})),
        (status = 401, description = "no valid token", body = ErrorBody)
    ),
    security(("user_token" = []))
)]
pub async fn me(user: AuthenticatedUser) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({
        "id": user.user_id,
        "email": user.email,
        "role": user.role.as_str(),
        "admin_scope": user.admin_scope,
    })))
}

use actix_web::HttpResponse;
use serde_json::json;

use crate::http::auth::AuthenticatedUser;
use crate::http::error::ApiError;

/// Who the access token belongs to.
pub async fn me(user: AuthenticatedUser) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({
        "id": user.user_id,
        "email": user.email,
        "role": user.role.as_str(),
        "admin_scope": user.admin_scope,
    })))
}

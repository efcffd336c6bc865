//! Route table. Paths of seed 000 (Project-W) are kept verbatim.

pub mod admins;
pub mod audit;
pub mod auth;
pub mod health;
pub mod jobs;
pub mod ldap;
pub mod local_account;
pub mod oidc;
pub mod queries;
pub mod runners;
pub mod users;

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::domain::ErrorCode;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/health").route(web::get().to(health::health)))
        // Accounts and sessions.
        .service(resource("/api/auth/providers").route(web::get().to(auth::providers)))
        .service(resource("/api/auth/logout").route(web::post().to(auth::logout)))
        .service(resource("/api/local-account/login").route(web::post().to(local_account::login)))
        .service(resource("/api/ldap/login/{provider}").route(web::post().to(ldap::login)))
        .service(resource("/api/oidc/login/{provider}").route(web::get().to(oidc::login)))
        .service(resource("/api/oidc/callback/{provider}").route(web::get().to(oidc::callback)))
        .service(resource("/api/local-account/signup").route(web::post().to(local_account::signup)))
        .service(resource("/api/local-account/change_password").route(web::post().to(local_account::change_password)))
        .service(
            resource("/api/users/me")
                .route(web::get().to(users::me))
                .route(web::delete().to(users::delete_me)),
        )
        .service(
            resource("/api/users/api_tokens")
                .route(web::post().to(users::create_api_token))
                .route(web::get().to(users::list_api_tokens)),
        )
        .service(resource("/api/users/api_tokens/{id}").route(web::delete().to(users::revoke_api_token)))
        // Jobs, for users.
        .service(
            resource("/api/jobs")
                .route(web::post().to(jobs::submit))
                .route(web::get().to(jobs::list_own)),
        )
        .service(resource("/api/jobs/{id}").route(web::get().to(jobs::get)))
        .service(resource("/api/jobs/{id}/cancel").route(web::post().to(jobs::cancel)))
        // Admins (Project-W paths kept verbatim).
        .service(resource("/api/admins/create_runner").route(web::post().to(admins::create_runner)))
        .service(resource("/api/admins/invalidate_runner").route(web::delete().to(admins::invalidate_runner)))
        .service(resource("/api/admins/reset_runner_token").route(web::post().to(admins::reset_runner_token)))
        .service(resource("/api/admins/runners/{id}").route(web::patch().to(admins::update_runner)))
        .service(resource("/api/admins/users/{id}").route(web::delete().to(admins::delete_user)))
        .service(resource("/api/admins/users/{id}/role").route(web::put().to(admins::set_role)))
        // Read-model queries (admins, support role).
        .service(resource("/api/admins/users").route(web::get().to(queries::users)))
        .service(resource("/api/admins/runners").route(web::get().to(queries::runners)))
        .service(resource("/api/admins/machines").route(web::get().to(queries::machines)))
        .service(resource("/api/admins/jobs").route(web::get().to(queries::jobs)))
        .service(resource("/api/admins/dashboard").route(web::get().to(queries::dashboard)))
        // Audit trail and time travel (admins, support role).
        .service(resource("/api/admins/audit").route(web::get().to(audit::log)))
        .service(resource("/api/admins/runners/{id}/state").route(web::get().to(audit::runner_at)))
        .service(resource("/api/admins/users/{id}/state").route(web::get().to(audit::user_at)))
        // Runners: GitLab-style machine protocol ...
        .service(resource("/api/runners/verify").route(web::post().to(runners::native::verify)))
        .service(resource("/api/runners/jobs/request").route(web::post().to(runners::native::request_job)))
        .service(resource("/api/runners/jobs/{id}/progress").route(web::post().to(runners::native::report_progress)))
        .service(resource("/api/runners/jobs/{id}/result").route(web::post().to(runners::native::submit_result)))
        // ... and Project-W's.
        .service(resource("/api/runners/register").route(web::post().to(runners::project_w::register)))
        .service(resource("/api/runners/unregister").route(web::post().to(runners::project_w::unregister)))
        .service(resource("/api/runners/heartbeat").route(web::post().to(runners::project_w::heartbeat)))
        .service(resource("/api/runners/retrieve_job_info").route(web::get().to(runners::project_w::retrieve_job_info)))
        .service(
            resource("/api/runners/submit_job_result").route(web::post().to(runners::project_w::submit_job_result)),
        );
}

/// A resource whose wrong-method answer is a JSON 405.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "this path does not accept this HTTP method",
        ))
    }))
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::NotFound, "no such API route"))
}

/// `text` escaped as one URL path segment (provider names may hold spaces).
pub fn path_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// An optional JSON body: empty means `None`; anything else must be JSON
/// of the right shape (a malformed body is an error, never ignored).
pub fn optional_json<T: serde::de::DeserializeOwned>(
    request: &actix_web::HttpRequest,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let is_json = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as application/json",
        ));
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        if e.is_data() {
            ApiError::new(ErrorCode::InvalidField, e.to_string())
        } else {
            ApiError::new(ErrorCode::MalformedJson, e.to_string())
        }
    })
}

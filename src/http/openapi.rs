//! The OpenAPI description of every route (from the handlers'
//! `#[utoipa::path]` annotations), served at `/openapi.json`, with a
//! Swagger UI at `/docs` whose assets are compiled in (no CDN).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::routes::{admins, audit, auth, health, jobs, ldap, local_account, oidc, queries, runners, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "warden",
        description = "Who may do what for a fleet of job runners: accounts, runners, runner machines, jobs, \
                       and the audit trail of the event log behind them. Errors are `{code, message}` with a \
                       stable `code`."
    ),
    paths(
        health::health,
        auth::providers,
        auth::logout,
        local_account::login,
        local_account::signup,
        ldap::login,
        oidc::login,
        oidc::callback,
        local_account::change_password,
        users::me,
        users::delete_me,
        users::create_api_token,
        users::list_api_tokens,
        users::revoke_api_token,
        jobs::submit,
        jobs::list_own,
        jobs::get,
        jobs::cancel,
        admins::create_runner,
        admins::invalidate_runner,
        admins::reset_runner_token,
        admins::update_runner,
        admins::delete_user,
        admins::set_role,
        queries::users,
        queries::runners,
        queries::machines,
        queries::jobs,
        queries::dashboard,
        audit::log,
        audit::runner_at,
        audit::user_at,
        runners::native::verify,
        runners::native::request_job,
        runners::native::report_progress,
        runners::native::submit_result,
        runners::project_w::register,
        runners::project_w::unregister,
        runners::project_w::heartbeat,
        runners::project_w::retrieve_job_info,
        runners::project_w::submit_job_result,
    ),
    modifiers(&BearerTokens)
)]
pub struct ApiDoc;

/// The two kinds of bearer token the API takes.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "user_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Access token from a login; admin calls need one issued with scope=admin \
                         (read-only admin views also take the support role's token).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "runner_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A runner's secret token (`wdrt_...`), shown once at creation."))
                    .build(),
            ),
        );
    }
}

/// `/openapi.json` and the UI under `/docs`.
pub fn service() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}

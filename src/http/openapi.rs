//! The OpenAPI description of every route (declared with the route table
//! in `routes/mod.rs`, from the handlers' `#[utoipa::path]` annotations),
//! served at `/openapi.json`, with a Swagger UI at `/docs` whose assets
//! are compiled in (no CDN).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::Modify;
use utoipa_swagger_ui::SwaggerUi;

/// The two kinds of bearer token the API takes.
pub struct BearerTokens;

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
pub fn service(description: utoipa::openapi::OpenApi) -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", description)
}

/// The answers every operation of a given shape can give, added where an
/// operation does not describe them itself: the server gives them from
/// shared code paths (extractors, body limits, the pool), not per handler.
/// The token answers follow from the operation's security: a user token's
/// 401 (and 403 under `/api/admins/`), a runner token's 401 and 429.
pub struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let has_body = operation.request_body.is_some();
                let schemes = security_schemes(operation.security.as_deref().unwrap_or_default());
                let admin_only = path.starts_with("/api/admins/");
                let mut add = |status: &str, description: &str| {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_answer(description));
                };
                if has_parameters || has_body {
                    add("400", "a malformed path, query or body");
                }
                if has_body {
                    add("413", "the body is larger than this route accepts");
                    add("415", "the body's Content-Type is not the one this route takes");
                    add("422", "a field has a wrong value");
                }
                if schemes.iter().any(|scheme| scheme == "user_token") {
                    add("401", "no valid token");
                    if admin_only {
                        add("403", "the token may not do this");
                    }
                }
                if schemes.iter().any(|scheme| scheme == "runner_token") {
                    add("401", "no valid runner token");
                    add("429", "rate limited; see Retry-After");
                }
                add(
                    "503",
                    "the database is unavailable, or read models lag; see Retry-After",
                );
            }
        }
    }
}

/// The names of the security schemes an operation takes.
fn security_schemes(requirements: &[utoipa::openapi::security::SecurityRequirement]) -> Vec<String> {
    requirements
        .iter()
        .filter_map(|requirement| serde_json::to_value(requirement).ok())
        .filter_map(|value| value.as_object().map(|names| names.keys().cloned().collect::<Vec<_>>()))
        .flatten()
        .collect()
}

fn error_answer(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

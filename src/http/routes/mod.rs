//! The route table and the OpenAPI description, from one list. Paths of
//! seed 000 (Project-W) are kept verbatim.

pub mod admins;
pub mod audit;
pub mod auth;
pub mod files;
pub mod health;
pub mod instances;
pub mod jobs;
pub mod ldap;
pub mod local_account;
pub mod metrics;
pub mod oidc;
pub mod queries;
pub mod runners;
pub mod scopes;
pub mod users;

use actix_web::http::Method;
use actix_web::{web, HttpResponse, ResponseError, Route};

use super::error::ApiError;
use crate::api::ErrorCode;
use crate::http::openapi::{BearerTokens, CommonAnswers};

/// The API, declared once: every operation's path and methods come from
/// its `#[utoipa::path]` annotation, and both the router ([`configure`])
/// and the OpenAPI description ([`ApiDoc`]) are built from this one list,
/// so neither can have a route the other lacks.
macro_rules! api {
    ($($($module:ident)::+ => $handler:ident),* $(,)?) => {
        /// The OpenAPI description of every operation in the list.
        #[derive(utoipa::OpenApi)]
        #[openapi(
            info(
                title = "warden",
                description = "Who may do what for a fleet of job runners: accounts, runners, runner machines, jobs, \
                               and the audit trail of the event log behind them. Errors are `{code, message}` with a \
                               stable `code` (the `ErrorCode` schema, docs/errors.md)."
            ),
            paths($($($module)::+ :: $handler),*),
            components(schemas(ErrorCode)),
            modifiers(&BearerTokens, &CommonAnswers)
        )]
        pub struct ApiDoc;

        /// Every operation: its path, methods and handler.
        fn operations() -> Vec<Operation> {
            vec![$(
                paste::paste! {
                    Operation::new::<$($module)::+ :: [<__path_ $handler>]>(
                        |route: Route| route.to($($module)::+ :: $handler),
                    )
                }
            ),*]
        }
    };
}

api! {
    health => health,
    health => live,
    health => ready,
    metrics => metrics,
    instances => list_instances,
    auth => providers,
    auth => logout,
    local_account => login,
    local_account => signup,
    ldap => login,
    oidc => login,
    oidc => callback,
    local_account => change_password,
    users => me,
    users => delete_me,
    users => create_api_token,
    users => list_api_tokens,
    users => revoke_api_token,
    jobs => submit,
    jobs => submit_project_w,
    jobs => list_own,
    jobs => get,
    jobs => cancel,
    files => upload,
    files => download,
    files => delete,
    files => job_result,
    admins => create_runner,
    admins => invalidate_runner,
    admins => reset_runner_token,
    admins => update_runner,
    admins => delete_user,
    admins => set_role,
    scopes => list,
    scopes => create_group,
    scopes => create_project,
    scopes => change,
    scopes => members,
    scopes => set_member,
    scopes => create_runner,
    scopes => runners_of,
    scopes => runner_action,
    scopes => jobs_of,
    scopes => service_account_token,
    queries => users,
    queries => runners,
    queries => machines,
    queries => jobs,
    queries => dashboard,
    queries => activity,
    audit => log,
    audit => runner_at,
    audit => user_at,
    runners::native => verify,
    runners::native => request_job,
    runners::native => report_progress,
    runners::native => submit_result,
    runners::project_w => register,
    runners::project_w => unregister,
    runners::project_w => heartbeat,
    runners::project_w => retrieve_job_info,
    runners::project_w => retrieve_job_audio,
    runners::project_w => submit_job_result,
}

/// Attaches an operation's handler to a route.
type Attach = fn(Route) -> Route;

/// One operation of the API: where it is and what answers it.
struct Operation {
    path: String,
    methods: Vec<Method>,
    route: Attach,
}

impl Operation {
    fn new<P: utoipa::Path>(route: Attach) -> Operation {
        Operation {
            path: P::path(),
            methods: P::methods().iter().map(actix_method).collect(),
            route,
        }
    }
}

fn actix_method(method: &utoipa::openapi::path::HttpMethod) -> Method {
    use utoipa::openapi::path::HttpMethod;
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

/// The route table: one resource per path with a route per method; any
/// other method answers 405 with `Allow` listing the methods it takes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<(String, Vec<(Method, Attach)>)> = Vec::new();
    for operation in operations() {
        let index = match paths.iter().position(|(path, _)| *path == operation.path) {
            Some(index) => index,
            None => {
                paths.push((operation.path.clone(), Vec::new()));
                paths.len() - 1
            }
        };
        for method in operation.methods {
            paths[index].1.push((method, operation.route));
        }
    }
    in_matching_order(&mut paths);
    for (path, routes) in paths {
        let allow: Vec<String> = routes.iter().map(|(method, _)| method.to_string()).collect();
        let allow = allow.join(", ");
        let mut resource = web::resource(path.as_str());
        for (method, route) in routes {
            resource = resource.route(route(web::method(method)));
        }
        cfg.service(resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        })));
    }
}

/// Paths without parameters first: actix tries resources in order, and
/// each parameterised one costs a regex match (perf: 8 % of all CPU in
/// the heartbeat benchmark, with the runner routes registered last). A
/// fixed path matches only itself, so this changes no route's handler
/// (`moving_fixed_paths_first_changes_no_route`).
fn in_matching_order<T>(paths: &mut [(String, T)]) {
    paths.sort_by_key(|(path, _)| path.contains('{'));
}

fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this path does not accept this HTTP method",
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
        response.headers_mut().insert(actix_web::http::header::ALLOW, value);
    }
    response
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

/// An optional JSON body: empty or `null` means `None`; anything else must
/// be JSON of the right shape (a malformed body is an error, never ignored).
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
    // `null` is no body, as the spec's optional body says.
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::new(ErrorCode::MalformedJson, e.to_string()))?;
    if value.is_null() {
        return Ok(None);
    }
    crate::http::json::from_object(value).map(Some)
}

#[cfg(test)]
mod tests {
    use actix_web::dev::ResourceDef;

    use super::*;

    /// The first resource of `paths` that matches `path`.
    fn handler_of(paths: &[(String, ())], path: &str) -> Option<String> {
        paths
            .iter()
            .find(|(pattern, _)| ResourceDef::new(pattern.as_str()).is_match(path))
            .map(|(pattern, _)| pattern.clone())
    }

    #[test]
    fn moving_fixed_paths_first_changes_no_route() {
        let mut registered: Vec<(String, ())> = Vec::new();
        for operation in operations() {
            if !registered.iter().any(|(path, _)| *path == operation.path) {
                registered.push((operation.path, ()));
            }
        }
        let mut reordered = registered.clone();
        in_matching_order(&mut reordered);
        assert_ne!(
            registered, reordered,
            "the table has parameterised paths before fixed ones"
        );
        // Every registered path, and each parameterised one with a value
        // that spells a fixed path's last segment.
        let mut probes: Vec<String> = registered.iter().map(|(path, _)| path.clone()).collect();
        for (pattern, _) in &registered {
            for (fixed, _) in registered.iter().filter(|(path, _)| !path.contains('{')) {
                let last = fixed.rsplit('/').next().unwrap_or_default();
                probes.push(
                    pattern
                        .split('/')
                        .map(|segment| if segment.starts_with('{') { last } else { segment })
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
        for probe in probes {
            assert_eq!(
                handler_of(&registered, &probe),
                handler_of(&reordered, &probe),
                "{probe}"
            );
        }
    }
}

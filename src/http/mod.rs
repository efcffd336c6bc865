//! The HTTP API (actix-web): thin handlers over the use-case modules.

pub mod auth;
pub mod console;
pub mod context;
pub mod error;
pub mod json;
pub mod openapi;
pub mod params;
pub mod routes;
pub mod session;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::middleware::{ErrorHandlers, Logger};
use actix_web::{web, App, HttpServer};
use utoipa::OpenApi;

use crate::app::AppState;

/// Largest login form; a password form has no business being bigger.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A serving instance, built the one way `warden serve` and the tests
/// share: the core and the serve-only tasks started, users provisioned
/// from the configuration, and the HTTP server on `listener` (not yet
/// running: the caller awaits `server`, after setting up its signals).
pub struct Application {
    pub state: Arc<AppState>,
    pub server: actix_web::dev::Server,
    pub background: crate::app::Background,
}

impl Application {
    pub async fn build(
        config: crate::platform::config::Config,
        db: crate::platform::db::Database,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        let (state, background) = AppState::start(config, db).await?;
        let ready = async {
            let changed = crate::identity::accounts::provision_from_config(&state.identity).await?;
            if !changed.is_empty() {
                tracing::info!(ids = ?changed, "provisioned users from the config");
            }
            anyhow::Ok(server(Arc::clone(&state), listener)?)
        };
        match ready.await {
            Ok(server) => Ok(Application {
                state,
                server,
                background,
            }),
            Err(error) => {
                background.stop().await;
                Err(error)
            }
        }
    }
}

/// Builds the server on an already bound listener (port 0 in tests).
/// Signals are the caller's business (see `cli::serve`), so that their
/// handling is in place before the server announces itself.
pub fn server(state: Arc<AppState>, listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    let workers = state
        .config
        .http
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let max_body = state.config.http.max_body_bytes;
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(max_body)
                    .error_handler(error::json_error),
            )
            .app_data(
                web::FormConfig::default()
                    .limit(MAX_FORM_BYTES.min(max_body))
                    .error_handler(error::form_error),
            )
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .app_data(web::PayloadConfig::new(max_body))
            .wrap(ErrorHandlers::new().default_handler(error::json_for_any_error))
            // Method and path, never the query string: OIDC callbacks carry
            // the authorization code and state there. The request id comes
            // from the request: the header is only added outside this layer.
            .wrap(
                Logger::new("%{request_id}xi %a \"%{method}xi %U\" %s %b %Dms")
                    .custom_request_replace("request_id", context::request_id_of)
                    .custom_request_replace("method", |request| request.method().to_string()),
            )
            .wrap_fn(context::observe)
            .wrap_fn(context::assign_request_id)
            .wrap_fn(context::security_headers)
            .configure(routes::configure)
            .configure(console::configure)
            .service(openapi::service(routes::ApiDoc::openapi()))
            .default_service(web::to(routes::not_found))
    })
    .workers(workers)
    .shutdown_timeout(10)
    .listen(listener)?;
    Ok(server.disable_signals().run())
}

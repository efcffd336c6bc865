//! The admin console at `/admin` (issue 15): a page, a script and a style
//! sheet compiled into the binary, served with a strict
//! Content-Security-Policy (scripts and styles from warden itself only, no
//! inline code, no other site). The page signs in through the API and
//! calls it with the admin-scoped access token; see docs/console.md.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Only warden's own script, style and API; nothing inline; no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        // A new release must not run an old script against a new API.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// `/admin` (and `/admin/`), `/admin/console.js`, `/admin/console.css`.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/admin", web::get().to(index))
        .route("/admin/", web::get().to(index))
        .route("/admin/console.js", web::get().to(script))
        .route("/admin/console.css", web::get().to(style));
}

//! Per-request context: a request id (echoed as `x-request-id`) and the
//! caller's address, both recorded in event metadata.

use std::future::{ready, Ready};
use std::net::IpAddr;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use uuid::Uuid;
use warden_events::{Actor, Metadata};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
struct RequestId(String);

/// Accepts a caller's request id when it is short and plain, so ids can
/// be followed across services; otherwise makes one.
fn request_id_for(request: &ServiceRequest) -> String {
    request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

/// The id `assign_request_id` gave this request ("-" before it ran), for
/// the access log.
pub fn request_id_of(request: &ServiceRequest) -> String {
    request
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| "-".to_owned(), |id| id.0.clone())
}

/// Middleware body (used with `App::wrap_fn`).
pub fn assign_request_id<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let id = request_id_for(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let response = service.call(request);
    async move {
        let mut response = response.await?;
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        Ok(response)
    }
}

/// Middleware body (used with `App::wrap_fn`, inside `assign_request_id`):
/// every log line of the request carries its id (a tracing span), and the
/// request is counted in the metrics by route pattern (never the raw path:
/// ids in paths would make a series per request), method and status.
pub fn observe<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    use tracing::Instrument;
    let span = tracing::info_span!("request", request_id = %request_id_of(&request));
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let response = span.in_scope(|| service.call(request));
    async move {
        let response = response.await?;
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let status = response.status().as_u16().to_string();
        let metrics = crate::platform::metrics::global();
        metrics
            .http_requests
            .get_or_create(&crate::platform::metrics::labels([
                ("route", &route),
                ("method", &method),
                ("status", &status),
            ]))
            .inc();
        metrics
            .http_duration
            .get_or_create(&crate::platform::metrics::labels([("route", &route)]))
            .observe(started.elapsed().as_secs_f64());
        Ok(response)
    }
    .instrument(span)
}

/// Where a request came from, for event metadata.
pub struct RequestContext {
    pub origin: crate::fleet::Origin,
}

impl RequestContext {
    pub fn metadata(&self, actor: Actor) -> Metadata {
        self.origin.metadata_of(actor)
    }
}

impl FromRequest for RequestContext {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let trusted = request
            .app_data::<actix_web::web::Data<crate::app::AppState>>()
            .map(|state| state.config.http.trusted_proxies.as_slice())
            .unwrap_or_default();
        ready(Ok(RequestContext {
            origin: crate::fleet::Origin {
                request_id: request.extensions().get::<RequestId>().map(|id| id.0.clone()),
                source_ip: client_address(request, trusted).map(|ip| ip.to_string()),
            },
        }))
    }
}

/// Whether the request came through a proxy in `http.trusted_proxies`
/// (only then do its forwarding headers mean anything).
pub fn via_trusted_proxy(request: &HttpRequest, trusted: &[ipnet::IpNet]) -> bool {
    request
        .peer_addr()
        .is_some_and(|peer| trusted.iter().any(|net| net.contains(&peer.ip())))
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy;
/// then the rightmost `X-Forwarded-For` entry that is not a trusted proxy
/// (entries left of it are written by the client and proves nothing).
fn client_address(request: &HttpRequest, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = request.peer_addr()?.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = request
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|entry| entry.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        // A malformed header: trust none of it.
        .unwrap_or_default();
    Some(forwarded.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer))
}

/// Middleware body (used with `App::wrap_fn`): headers every answer gets.
/// API answers may carry secrets (tokens, shown once) and are never to be
/// cached or framed; the Swagger UI under /docs needs its scripts, so only
/// API answers get the strict Content-Security-Policy.
pub fn security_headers<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let path = request.path();
    // JSON and text answers (the API, its description, the metrics): no
    // caching, nothing to run.
    let api = path.starts_with("/api/") || path == "/openapi.json" || path == "/metrics";
    // The Swagger UI: its own scripts and styles only (it sets inline
    // styles and uses data: images), and it may call the API.
    let docs = path == "/docs" || path.starts_with("/docs/");
    let response = service.call(request);
    async move {
        let mut response = response.await?;
        let headers = response.headers_mut();
        let mut set = |name: &'static str, value: &'static str| {
            let name = HeaderName::from_static(name);
            if !headers.contains_key(&name) {
                headers.insert(name, HeaderValue::from_static(value));
            }
        };
        set("x-content-type-options", "nosniff");
        set("x-frame-options", "DENY");
        set("referrer-policy", "no-referrer");
        if api {
            set("cache-control", "no-store");
            set("content-security-policy", "default-src 'none'; frame-ancestors 'none'");
        } else if docs {
            set("cache-control", "no-store");
            set(
                "content-security-policy",
                "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            );
        }
        Ok(response)
    }
}

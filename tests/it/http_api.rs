//! The HTTP API through the real actix server on a loopback port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_login_create_verify_invalidate() {
    let app = TestApp::start().await;
    // curl -X POST .../api/local-account/login -d "grant_type=password&scope=admin&username=..&password=.."
    let login = app.login(ADMIN_EMAIL, ADMIN_PASSWORD, true).await;
    assert_eq!(login.status(), StatusCode::OK);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["scope"], "admin");
    let admin = body["access_token"].as_str().unwrap().to_owned();

    // curl -X POST -H "Authorization: Bearer $TOKEN" .../api/admins/create_runner
    let (runner_id, runner_token) = app.create_runner(&admin).await;
    assert!(runner_token.starts_with("wdrt_"));

    let verified = app.verify_runner(&runner_token).await;
    assert_eq!(verified.status(), StatusCode::OK);
    assert_eq!(verified.json::<Value>().await.unwrap()["runner_id"], runner_id.as_str());

    // curl -X DELETE -H "Authorization: Bearer $TOKEN" ".../api/admins/invalidate_runner?runner_id=<id>"
    let invalidated = app.invalidate_runner(&admin, &runner_id).await;
    assert_eq!(invalidated.status(), StatusCode::OK);

    assert_error(
        app.verify_runner(&runner_token).await,
        StatusCode::UNAUTHORIZED,
        "runner_invalidated",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rights_need_an_admin_and_an_explicit_scope() {
    let app = TestApp::start().await;
    // A normal user asking for scope=admin is refused outright.
    assert_error(
        app.login(USER_EMAIL, USER_PASSWORD, true).await,
        StatusCode::FORBIDDEN,
        "admin_scope_denied",
    )
    .await;

    // An admin logging in without scope=admin gets a token without rights.
    let plain_admin = app.token(ADMIN_EMAIL, ADMIN_PASSWORD, false).await;
    let me: Value = app
        .http
        .get(app.url("/api/users/me"))
        .bearer_auth(&plain_admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["admin_scope"], false);
    let refused = app
        .http
        .post(app.url("/api/admins/create_runner"))
        .bearer_auth(&plain_admin)
        .send()
        .await
        .unwrap();
    assert_error(refused, StatusCode::FORBIDDEN, "admin_scope_required").await;

    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let refused = app
        .http
        .post(app.url("/api/admins/create_runner"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_error(refused, StatusCode::FORBIDDEN, "admin_scope_required").await;

    assert_error(
        app.login(ADMIN_EMAIL, "not the admin password", true).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_error(
        app.login("nobody@example.org", ADMIN_PASSWORD, false).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_tokens_and_user_tokens_only_work_on_their_own_routes() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (_, runner_token) = app.create_runner(&admin).await;

    let user_route = app
        .http
        .get(app.url("/api/users/me"))
        .bearer_auth(&runner_token)
        .send()
        .await
        .unwrap();
    assert_error(user_route, StatusCode::UNAUTHORIZED, "runner_token_not_accepted").await;
    let admin_route = app
        .http
        .post(app.url("/api/admins/create_runner"))
        .bearer_auth(&runner_token)
        .send()
        .await
        .unwrap();
    assert_error(admin_route, StatusCode::UNAUTHORIZED, "runner_token_not_accepted").await;
    assert_error(
        app.verify_runner(&admin).await,
        StatusCode::UNAUTHORIZED,
        "user_token_not_accepted",
    )
    .await;

    // A well-formed but unknown runner token, and garbage.
    let unknown = format!("wdrt_{}", "A".repeat(43));
    assert_error(
        app.verify_runner(&unknown).await,
        StatusCode::UNAUTHORIZED,
        "invalid_runner_token",
    )
    .await;
    assert_error(
        app.verify_runner("garbage").await,
        StatusCode::UNAUTHORIZED,
        "invalid_runner_token",
    )
    .await;
    app.stop().await;
}

/// Read-your-writes: once invalidate_runner has answered 2xx, not a single
/// request with that token succeeds, while other clients hammer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalidated_token_is_refused_as_soon_as_invalidation_answers() {
    let app = Arc::new(TestApp::start().await);
    let admin = app.admin_token().await;
    for _ in 0..15 {
        let (runner_id, runner_token) = app.create_runner(&admin).await;
        let stop = Arc::new(AtomicBool::new(false));
        let hammers: Vec<_> = (0..4)
            .map(|_| {
                let app = Arc::clone(&app);
                let token = runner_token.clone();
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let status = app.verify_runner(&token).await.status();
                        assert!(
                            status == StatusCode::OK || status == StatusCode::UNAUTHORIZED,
                            "{status}"
                        );
                    }
                })
            })
            .collect();
        assert_eq!(app.invalidate_runner(&admin, &runner_id).await.status(), StatusCode::OK);
        // Straight after the 2xx: refused, every time.
        for _ in 0..3 {
            assert_error(
                app.verify_runner(&runner_token).await,
                StatusCode::UNAUTHORIZED,
                "runner_invalidated",
            )
            .await;
        }
        stop.store(true, Ordering::SeqCst);
        for hammer in hammers {
            hammer.await.unwrap();
        }
    }
    Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_revokes_their_tokens_at_once() {
    let app = TestApp::start().await;
    let token = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let me = app
        .http
        .get(app.url("/api/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let user_id = me.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    warden::identity::accounts::delete_user(&app.state.commands, user_id, &warden::events::Metadata::system("test"))
        .await
        .unwrap();
    let after = app
        .http
        .get(app.url("/api/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_error(after, StatusCode::UNAUTHORIZED, "user_not_found").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_never_a_500() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let login = app.url("/api/local-account/login");
    let form = "application/x-www-form-urlencoded";

    // Login: missing field, wrong content type, huge body, bad grant, bad scope.
    let missing = app
        .http
        .post(&login)
        .header("content-type", form)
        .body("username=a%40b.c")
        .send()
        .await
        .unwrap();
    assert_error(missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_form").await;
    let json_body = app
        .http
        .post(&login)
        .json(&json!({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_error(json_body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    let huge = format!("username=a&password={}", "x".repeat(2 * 1024 * 1024));
    let huge = app
        .http
        .post(&login)
        .header("content-type", form)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_error(huge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let grant = app
        .http
        .post(&login)
        .header("content-type", form)
        .body("grant_type=client_credentials&username=a&password=b")
        .send()
        .await
        .unwrap();
    assert_error(grant, StatusCode::UNPROCESSABLE_ENTITY, "unsupported_grant_type").await;
    let scope = app
        .http
        .post(&login)
        .header("content-type", form)
        .body(format!("scope=root&username={}&password=x", urlencode(ADMIN_EMAIL)))
        .send()
        .await
        .unwrap();
    assert_error(scope, StatusCode::UNPROCESSABLE_ENTITY, "unknown_scope").await;

    // Invalidation: malformed id, unknown id, missing id, twice.
    let malformed = app.invalidate_runner(&admin, "not-a-uuid").await;
    assert_error(malformed, StatusCode::BAD_REQUEST, "invalid_runner_id").await;
    let unknown = app.invalidate_runner(&admin, &uuid::Uuid::now_v7().to_string()).await;
    assert_error(unknown, StatusCode::NOT_FOUND, "runner_not_found").await;
    let no_id = app
        .http
        .delete(app.url("/api/admins/invalidate_runner"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_error(no_id, StatusCode::BAD_REQUEST, "invalid_query").await;
    let (runner_id, _) = app.create_runner(&admin).await;
    assert_eq!(app.invalidate_runner(&admin, &runner_id).await.status(), StatusCode::OK);
    let twice = app.invalidate_runner(&admin, &runner_id).await;
    assert_error(twice, StatusCode::CONFLICT, "runner_already_invalidated").await;

    // create_runner: optional body must be well-formed JSON of the right shape.
    let create = app.url("/api/admins/create_runner");
    let broken = app
        .http
        .post(&create)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(broken, StatusCode::BAD_REQUEST, "malformed_json").await;
    let unknown_field = app
        .http
        .post(&create)
        .bearer_auth(&admin)
        .json(&json!({"colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_error(unknown_field, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    let bad_tag = app
        .http
        .post(&create)
        .bearer_auth(&admin)
        .json(&json!({"tags": ["no spaces please"]}))
        .send()
        .await
        .unwrap();
    assert_error(bad_tag, StatusCode::UNPROCESSABLE_ENTITY, "invalid_tag").await;
    let text = app
        .http
        .post(&create)
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_error(text, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    let huge = app
        .http
        .post(&create)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(format!("{{\"description\": \"{}\"}}", "x".repeat(2 * 1024 * 1024)))
        .send()
        .await
        .unwrap();
    assert_error(huge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let described = app
        .http
        .post(&create)
        .bearer_auth(&admin)
        .json(&json!({"description": "gpu box", "tags": ["GPU", "linux"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(described.status(), StatusCode::CREATED);

    // Authentication: none, wrong scheme, garbage JWT.
    let none = app.http.post(&create).send().await.unwrap();
    assert_error(none, StatusCode::UNAUTHORIZED, "missing_token").await;
    let basic = app
        .http
        .post(&create)
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_error(basic, StatusCode::UNAUTHORIZED, "invalid_authorization_header").await;
    let garbage = app
        .http
        .post(&create)
        .bearer_auth("eyJhbGciOiJub25lIn0.e30.")
        .send()
        .await
        .unwrap();
    assert_error(garbage, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // Routing: unknown path, wrong method.
    let missing_route = app.http.get(app.url("/api/nothing-here")).send().await.unwrap();
    assert_error(missing_route, StatusCode::NOT_FOUND, "not_found").await;
    let wrong_method = app.http.get(&create).bearer_auth(&admin).send().await.unwrap();
    assert_error(wrong_method, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let app = TestApp::start().await;
    let response = app.http.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let echoed = app
        .http
        .get(app.url("/api/health"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-abc-123");
    app.stop().await;
}

/// Answers that carry secrets are never cached, and every answer has the
/// standard security headers (API answers a strict CSP too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_not_cached_and_answers_carry_security_headers() {
    let app = TestApp::start().await;
    let login = app.login(ADMIN_EMAIL, ADMIN_PASSWORD, true).await;
    assert_eq!(login.headers()["cache-control"], "no-store");
    let admin = login.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = app
        .http
        .post(app.url("/api/admins/create_runner"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let headers = created.headers();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    // Errors too; the Swagger UI keeps its own scripts, no others.
    let error = app.http.get(app.url("/api/users/me")).send().await.unwrap();
    assert_eq!(error.headers()["cache-control"], "no-store");
    let docs = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.headers()["x-content-type-options"], "nosniff");
    let policy = docs.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    app.stop().await;
}

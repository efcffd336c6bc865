//! OIDC providers against a real provider process (npm oidc-provider): the
//! full authorization-code flow with PKCE through warden, roles from a
//! string or list claim, hidden providers, state checks, and the
//! provider's ID token as a bearer token (audience, signature).

use reqwest::StatusCode;
use serde_json::{json, Value};
use warden::platform::config::{OidcProviderConfig, OidcRole};
use warden::platform::secrets::Secret;

use crate::harness::*;
use crate::oidc_server::{browser, free_port, id_token_for, log_in_at_provider, OidcServer, CLIENT_ID, CLIENT_SECRET};

pub fn provider(issuer: &str, hidden: bool) -> OidcProviderConfig {
    OidcProviderConfig {
        base_url: issuer.to_owned(),
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(CLIENT_SECRET),
        user_role: Some(OidcRole {
            field_name: "roles".into(),
            name: "warden-user".into(),
        }),
        admin_role: Some(OidcRole {
            field_name: "roles".into(),
            name: "warden-admin".into(),
        }),
        hidden,
        icon_url: None,
        require_verified_email: true,
        scope_mappings: Vec::new(),
    }
}

/// warden with providers `corp` and `staff` (hidden) on one OIDC provider.
pub async fn start() -> (TestApp, OidcServer) {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut config = test_config();
    config.oidc_providers.insert("corp".into(), provider(&issuer, false));
    config.oidc_providers.insert("staff".into(), provider(&issuer, true));
    let app = TestApp::start_with(config).await;
    let callbacks = ["corp", "staff"].map(|name| app.url(&format!("/api/oidc/callback/{name}")));
    let server = OidcServer::start(port, &callbacks);
    (app, server)
}

/// The whole browser flow through warden; returns the callback's answer.
pub async fn oidc_login(
    app: &TestApp,
    server: &OidcServer,
    name: &str,
    account: &str,
    admin: bool,
) -> reqwest::Response {
    let browser = browser();
    let scope = if admin { "?scope=admin" } else { "" };
    let start = browser
        .get(app.url(&format!("/api/oidc/login/{name}{scope}")))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::FOUND);
    let authorize = start.headers()["location"].to_str().unwrap().to_owned();
    let params: Vec<(String, String)> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert!(param("nonce").is_some() && param("state").is_some());
    let back = log_in_at_provider(&browser, &server.issuer, &authorize, account).await;
    assert!(
        back.starts_with(&app.url(&format!("/api/oidc/callback/{name}"))),
        "{back}"
    );
    browser.get(back).send().await.unwrap()
}

pub async fn token_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_json(token, "/api/users/me").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_code_flow_links_users_and_grants_admin_only_with_the_admin_role() {
    let (app, server) = start().await;
    let options: Value = app
        .http
        .get(app.url("/api/auth/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        options["oidc"],
        json!([{"name": "corp", "icon_url": null, "login_url": "/api/oidc/login/corp"}])
    );

    let alice = token_of(oidc_login(&app, &server, "corp", "alice", false).await).await;
    let alice_me: Value = me(&app, &alice).await.json().await.unwrap();
    assert_eq!(alice_me["email"], "alice@oidc.example.org");
    assert_eq!(alice_me["role"], "user");
    // Logging in again finds the same user.
    let again = token_of(oidc_login(&app, &server, "corp", "alice", false).await).await;
    assert_eq!(
        me(&app, &again).await.json::<Value>().await.unwrap()["id"],
        alice_me["id"]
    );
    assert_error(
        oidc_login(&app, &server, "corp", "alice", true).await,
        StatusCode::FORBIDDEN,
        "admin_scope_denied",
    )
    .await;

    // The admin role as a list and as a plain string.
    for account in ["root", "solo"] {
        let admin = token_of(oidc_login(&app, &server, "corp", account, true).await).await;
        assert_eq!(
            me(&app, &admin).await.json::<Value>().await.unwrap()["admin_scope"],
            true
        );
        assert_eq!(
            app.post_json(&admin, "/api/admins/create_runner", json!({}))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    // Without the user role (or the admin role) nobody gets in.
    assert_error(
        oidc_login(&app, &server, "corp", "outsider", false).await,
        StatusCode::FORBIDDEN,
        "role_missing",
    )
    .await;
    // The hidden provider works when used directly.
    token_of(oidc_login(&app, &server, "staff", "bob", false).await).await;
    // Through another provider, alice's address belongs to another warden
    // user (the corp one): never linked twice.
    assert_error(
        oidc_login(&app, &server, "staff", "alice", false).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_error(
        browser().get(app.url("/api/oidc/login/nope")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "unknown_provider",
    )
    .await;

    let admin = app.admin_token().await;
    let users = app.get_items(&admin, "/api/admins/users?provider=oidc:corp").await;
    assert_eq!(users.len(), 3, "{users:?}");
    let log = app.db.dump("events", "position").await.join("\n");
    assert!(log.contains("OidcUserLinked") && !log.contains("alice@oidc.example.org"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_need_the_state_of_this_browser_and_work_once() {
    let (app, server) = start().await;
    let browser = browser();
    let start = browser.get(app.url("/api/oidc/login/corp")).send().await.unwrap();
    let authorize = start.headers()["location"].to_str().unwrap().to_owned();
    let back = log_in_at_provider(&browser, &server.issuer, &authorize, "alice").await;

    // Another browser (no state cookie) cannot use this callback.
    assert_error(
        super::oidc_server::browser().get(&back).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_state",
    )
    .await;
    assert_eq!(browser.get(&back).send().await.unwrap().status(), StatusCode::OK);
    // Used once: the same callback again is refused.
    assert_error(
        browser.get(&back).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_state",
    )
    .await;
    // A tampered state.
    let tampered = back.replace("state=", "state=x");
    assert_error(
        browser.get(&tampered).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_state",
    )
    .await;
    // The provider reports a refusal.
    assert_error(
        browser
            .get(app.url("/api/oidc/callback/corp?error=access_denied&error_description=no"))
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "oidc_login_failed",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_id_token_works_as_a_bearer_token_for_admins() {
    let (app, server) = start().await;
    // Users are linked at their first login through warden.
    token_of(oidc_login(&app, &server, "corp", "root", false).await).await;
    token_of(oidc_login(&app, &server, "corp", "alice", false).await).await;

    let root_id_token = id_token_for(&server.issuer, CLIENT_ID, "root").await;
    let who: Value = me(&app, &root_id_token).await.json().await.unwrap();
    assert_eq!(who["email"], "root@oidc.example.org");
    assert_eq!(who["admin_scope"], true);
    assert_eq!(
        app.post_json(&root_id_token, "/api/admins/create_runner", json!({}))
            .await
            .status(),
        StatusCode::CREATED
    );
    let alice_id_token = id_token_for(&server.issuer, CLIENT_ID, "alice").await;
    assert_error(
        app.post_json(&alice_id_token, "/api/admins/create_runner", json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "admin_scope_required",
    )
    .await;

    // Meant for another application: wrong audience.
    let other = id_token_for(&server.issuer, "other", "root").await;
    assert_error(me(&app, &other).await, StatusCode::UNAUTHORIZED, "invalid_token").await;
    // A changed payload breaks the signature.
    let parts: Vec<&str> = root_id_token.split('.').collect();
    let payload: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1]).unwrap(),
    )
    .unwrap();
    let mut forged_payload = payload.clone();
    forged_payload["sub"] = json!("alice");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            forged_payload.to_string()
        ),
        parts[2]
    );
    assert_error(me(&app, &forged).await, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // Deleting the user ends their provider tokens in warden too.
    let admin = app.admin_token().await;
    let root_id = who["id"].as_str().unwrap();
    let deleted = app
        .http
        .delete(app.url(&format!("/api/admins/users/{root_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_error(
        me(&app, &root_id_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    app.stop().await;
}

/// Issue 26: a group claim maps to a warden scope role at log-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_claim_gives_a_scope_role_at_log_in() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut corp = provider(&issuer, false);
    corp.scope_mappings = vec![warden::platform::config::OidcScopeMapping {
        claim: OidcRole {
            field_name: "roles".into(),
            name: "warden-admin".into(),
        },
        scope: "project:physics/lattice-qcd".into(),
        role: warden::events::scope::ScopeRole::Manager,
    }];
    let mut config = test_config();
    config.oidc_providers.insert("corp".into(), corp);
    let app = TestApp::start_with(config).await;
    let server = OidcServer::start(port, &[app.url("/api/oidc/callback/corp")]);
    let admin = app.admin_token().await;
    for (path, body) in [
        ("/api/scopes/groups", serde_json::json!({"name": "physics"})),
        (
            "/api/scopes/projects",
            serde_json::json!({"name": "lattice-qcd", "group": "group:physics"}),
        ),
    ] {
        assert_eq!(app.post_json(&admin, path, body).await.status(), StatusCode::CREATED);
    }
    let new_runner = serde_json::json!({"scope": "project:physics/lattice-qcd"});
    // root's roles claim holds warden-admin: a manager of the project.
    let root = token_of(oidc_login(&app, &server, "corp", "root", false).await).await;
    let response = app.post_json(&root, "/api/scopes/runners", new_runner.clone()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    // alice's does not.
    let alice = token_of(oidc_login(&app, &server, "corp", "alice", false).await).await;
    assert_error(
        app.post_json(&alice, "/api/scopes/runners", new_runner).await,
        StatusCode::NOT_FOUND,
        "scope_not_found",
    )
    .await;
}

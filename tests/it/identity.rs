//! Accounts and sessions over HTTP: sign-up modes, login options, API
//! tokens, session cookies and log-out, password change, roles, user
//! deletion with crypto-shredding, forged tokens, brute-force protection.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use warden::platform::config::LocalAccountMode;

use crate::harness::*;

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_json(token, "/api/users/me").await
}

async fn user_id(app: &TestApp, token: &str) -> String {
    me(app, token).await.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn signup(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/api/local-account/signup"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_follows_the_local_account_mode_and_login_options_hide_what_is_hidden() {
    let app = TestApp::start().await;
    let options: Value = app
        .http
        .get(app.url("/api/auth/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(options["local"]["signup_url"], "/api/local-account/signup");

    let created = signup(&app, "New.Person@example.org", "a long enough password").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let token = app
        .token("new.person@example.org", "a long enough password", false)
        .await;
    assert_eq!(me(&app, &token).await.status(), StatusCode::OK);
    assert_error(
        signup(&app, "new.person@EXAMPLE.org", "another long password").await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_error(
        signup(&app, "short@example.org", "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "weak_password",
    )
    .await;
    assert_error(
        app.login("new.person@example.org", "a long enough password", true)
            .await,
        StatusCode::FORBIDDEN,
        "admin_scope_denied",
    )
    .await;
    let db = app.stop().await;

    for (mode, shown, signup_shown) in [
        (LocalAccountMode::NoSignup, true, false),
        (LocalAccountMode::NoSignupHidden, false, false),
        (LocalAccountMode::Disabled, false, false),
    ] {
        let mut config = test_config();
        config.security.local_account.mode = mode;
        let app = TestApp::start_on(db.reconnect(), config).await;
        let options: Value = app
            .http
            .get(app.url("/api/auth/providers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(options["local"].is_object(), shown, "{mode:?}: {options}");
        assert_eq!(options["local"]["signup_url"].is_string(), signup_shown, "{mode:?}");
        assert_error(
            signup(&app, "another@example.org", "a long enough password").await,
            StatusCode::FORBIDDEN,
            "signup_disabled",
        )
        .await;
        if mode == LocalAccountMode::Disabled {
            assert_error(
                app.login(USER_EMAIL, USER_PASSWORD, false).await,
                StatusCode::FORBIDDEN,
                "local_login_disabled",
            )
            .await;
        } else {
            // Hidden is not a security option: login still works.
            assert_eq!(
                app.login(USER_EMAIL, USER_PASSWORD, false).await.status(),
                StatusCode::OK
            );
        }
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_are_never_admin_and_stop_at_once_when_revoked() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let created = app
        .post_json(&admin, "/api/users/api_tokens", json!({"name": "nightly script"}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("wdat_"));

    let who: Value = me(&app, &token).await.json().await.unwrap();
    assert_eq!(who["role"], "admin");
    assert_eq!(who["admin_scope"], false, "API tokens never carry admin rights");
    assert_error(
        app.post_json(&token, "/api/admins/create_runner", json!({})).await,
        StatusCode::FORBIDDEN,
        "admin_scope_required",
    )
    .await;

    let listed: Vec<Value> = app
        .get_json(&admin, "/api/users/api_tokens")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "nightly script");
    assert!(
        !listed[0].to_string().contains(&token[5..]),
        "the secret is never listed"
    );

    // Neither the log nor the read model holds the token itself.
    let dump = app.db.dump_everything().await;
    assert!(!dump.contains(&token[5..]), "token found in the database");

    let id = created["id"].as_str().unwrap();
    let revoked = app
        .http
        .delete(app.url(&format!("/api/users/api_tokens/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_error(me(&app, &token).await, StatusCode::UNAUTHORIZED, "invalid_api_token").await;
    let again = app
        .http
        .delete(app.url(&format!("/api/users/api_tokens/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_error(again, StatusCode::NOT_FOUND, "api_token_not_found").await;
    // A well-formed token nobody issued.
    assert_error(
        me(&app, &format!("wdat_{}", "A".repeat(43))).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_token",
    )
    .await;
    assert_error(
        app.post_json(&admin, "/api/users/api_tokens", json!({"name": " "}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_token_name",
    )
    .await;
    app.stop().await;
}

pub fn session_cookie(response: &reqwest::Response) -> String {
    let set_cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("warden_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=604800"] {
        assert!(set_cookie.contains(attribute), "{attribute} missing: {set_cookie}");
    }
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn me_with_cookie(app: &TestApp, cookie: &str) -> reqwest::Response {
    app.http
        .get(app.url("/api/users/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_work_and_logout_or_a_password_change_ends_every_session() {
    let app = TestApp::start().await;
    let login = app.login(USER_EMAIL, USER_PASSWORD, false).await;
    let cookie = session_cookie(&login);
    let bearer = login.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me_with_cookie(&app, &cookie).await.status(), StatusCode::OK);

    // The admin's cookie is not admin-scoped, even after an admin login.
    let admin_login = app.login(ADMIN_EMAIL, ADMIN_PASSWORD, true).await;
    let admin_cookie = session_cookie(&admin_login);
    let who: Value = me_with_cookie(&app, &admin_cookie).await.json().await.unwrap();
    assert_eq!(who["admin_scope"], false);

    let logout = app
        .http
        .post(app.url("/api/auth/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    assert!(logout
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_error(
        me_with_cookie(&app, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;
    assert_error(me(&app, &bearer).await, StatusCode::UNAUTHORIZED, "session_revoked").await;
    let fresh = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    assert_eq!(
        me(&app, &fresh).await.status(),
        StatusCode::OK,
        "logging in again works"
    );

    // Password change: wrong current password refused; then old tokens end.
    let change = |token: String, current: &str, new: &str| {
        let request = app
            .http
            .post(app.url("/api/local-account/change_password"))
            .bearer_auth(token)
            .json(&json!({"current_password": current, "new_password": new}));
        async move { request.send().await.unwrap() }
    };
    assert_error(
        change(fresh.clone(), "not the password", "a brand new password").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "wrong_password",
    )
    .await;
    let changed = change(fresh.clone(), USER_PASSWORD, "a brand new password").await;
    assert_eq!(changed.status(), StatusCode::OK);
    let newest = changed.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(me(&app, &fresh).await, StatusCode::UNAUTHORIZED, "session_revoked").await;
    assert_eq!(me(&app, &newest).await.status(), StatusCode::OK);
    assert_error(
        app.login(USER_EMAIL, USER_PASSWORD, false).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.login(USER_EMAIL, "a brand new password", false).await.status(),
        StatusCode::OK
    );
    app.stop().await;

    // max_age 0: unlimited, so the cookie has no Max-Age (it still ends at
    // log-out).
    let mut config = test_config();
    config.security.session.max_age = Duration::ZERO;
    let app = TestApp::start_with(config).await;
    let login = app.login(ADMIN_EMAIL, ADMIN_PASSWORD, false).await;
    let set_cookie = login.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(!set_cookie.contains("Max-Age"), "{set_cookie}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_expired_tokens_are_refused() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let app = TestApp::start().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let sub = user_id(&app, &user).await;
    let now = chrono::Utc::now().timestamp();
    let claims = |aud: &str, exp: i64| json!({"iss": "warden", "aud": aud, "sub": sub, "iat": now, "exp": exp, "jti": uuid::Uuid::now_v7(), "scope": "admin"});
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    // alg none with admin scope.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims("warden-api", now + 600))
    );
    // Signed with a key warden does not have.
    let wrong_key = encode(
        &Header::new(Algorithm::HS256),
        &claims("warden-api", now + 600),
        &EncodingKey::from_secret(&[7u8; 32]),
    )
    .unwrap();
    // The real key, the wrong audience / long expired: take the real key
    // from the server's secrets file, as only warden itself could.
    let file: Value = serde_json::from_slice(&std::fs::read(secrets_file()).unwrap()).unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(file["signing_keys"][0]["key"].as_str().unwrap())
        .unwrap();
    let real =
        |claims: Value| encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&key)).unwrap();
    assert_eq!(
        me(&app, &real(claims("warden-api", now + 600))).await.status(),
        StatusCode::OK,
        "the forging method itself is right"
    );
    for (token, code) in [
        (none, "invalid_token"),
        (wrong_key, "invalid_token"),
        (real(claims("someone-else", now + 600)), "invalid_token"),
        (real(claims("warden-api", now - 3600)), "token_expired"),
        ("eyJhbGciOi.garbage.x".to_owned(), "invalid_token"),
    ] {
        assert_error(me(&app, &token).await, StatusCode::UNAUTHORIZED, code).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_changed_by_admins_and_the_last_admin_stays() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (user_id, admin_id) = (user_id(&app, &user).await, user_id(&app, &admin).await);
    let set_role = |token: &str, id: &str, role: &str| {
        let request = app
            .http
            .put(app.url(&format!("/api/admins/users/{id}/role")))
            .bearer_auth(token)
            .json(&json!({ "role": role }));
        async move { request.send().await.unwrap() }
    };
    assert_error(
        set_role(&user, &user_id, "admin").await,
        StatusCode::FORBIDDEN,
        "admin_scope_required",
    )
    .await;
    assert_error(
        app.get_json(&user, "/api/admins/users").await,
        StatusCode::FORBIDDEN,
        "admin_read_required",
    )
    .await;
    assert_eq!(set_role(&admin, &user_id, "support").await.status(), StatusCode::OK);
    // Effective at once, with the token the user already has.
    assert_eq!(app.get_json(&user, "/api/admins/users").await.status(), StatusCode::OK);
    assert_error(
        set_role(&admin, &user_id, "root").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_role",
    )
    .await;
    assert_error(
        set_role(&admin, &admin_id, "user").await,
        StatusCode::CONFLICT,
        "last_admin",
    )
    .await;
    assert_eq!(set_role(&admin, &user_id, "admin").await.status(), StatusCode::OK);
    assert_eq!(
        set_role(&admin, &admin_id, "user").await.status(),
        StatusCode::OK,
        "no longer the last"
    );
    assert_error(
        app.get_json(&admin, "/api/admins/users").await,
        StatusCode::FORBIDDEN,
        "admin_read_required",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_users_are_gone_at_once_and_their_personal_data_unreadable() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    assert_eq!(
        signup(&app, "leaving@example.org", "a long enough password")
            .await
            .status(),
        StatusCode::CREATED
    );
    let leaving = app.token("leaving@example.org", "a long enough password", false).await;
    let api_token: Value = app
        .post_json(&leaving, "/api/users/api_tokens", json!({"name": "x"}))
        .await
        .json()
        .await
        .unwrap();
    let leaving_id = user_id(&app, &leaving).await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let user_id = user_id(&app, &user).await;

    // The user deletes themselves; the admin deletes another.
    let deleted = app
        .http
        .delete(app.url("/api/users/me"))
        .bearer_auth(&leaving)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_error(me(&app, &leaving).await, StatusCode::UNAUTHORIZED, "user_not_found").await;
    assert_error(
        me(&app, api_token["token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_token",
    )
    .await;
    let by_admin = app
        .http
        .delete(app.url(&format!("/api/admins/users/{user_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(by_admin.status(), StatusCode::OK);
    assert_error(me(&app, &user).await, StatusCode::UNAUTHORIZED, "user_not_found").await;
    assert_error(
        app.login(USER_EMAIL, USER_PASSWORD, false).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;

    // The log is unchanged, but nothing in the database reads as the
    // emails any more, and the keys that sealed them are gone.
    let dump = app.db.dump_everything().await;
    for email in ["leaving@example.org", USER_EMAIL] {
        assert!(!dump.contains(email), "{email} still readable");
    }
    let client = app.db.client().await;
    for id in [&leaving_id, &user_id] {
        let id: uuid::Uuid = id.parse().unwrap();
        let key: Option<Vec<u8>> = client
            .query_one("SELECT key FROM pii_keys WHERE subject_id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert!(key.is_none(), "the key of {id} survived");
    }
    // The email can be used again; replay still works on this log.
    assert_eq!(
        signup(&app, "leaving@example.org", "a long enough password")
            .await
            .status(),
        StatusCode::CREATED
    );
    let report = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    // An admin cannot delete themselves while they are the only admin.
    let admin_id = self::user_id(&app, &admin).await;
    let myself = app
        .http
        .delete(app.url(&format!("/api/admins/users/{admin_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_error(myself, StatusCode::CONFLICT, "last_admin").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_throttled_without_locking_the_owner_out() {
    let mut config = test_config();
    config.security.login_throttle.max_failures_per_account = 3;
    config.security.login_throttle.max_failures_per_address = 6;
    config.security.login_throttle.lockout = Duration::from_secs(2);
    let app = TestApp::start_with(config).await;
    let attacker = client_from("127.0.0.2");
    let owner = client_from("127.0.0.3");
    for _ in 0..3 {
        assert_error(
            password_login(&attacker, &app.base_url, ADMIN_EMAIL, "guess", true).await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
    }
    // Locked: even the right password is refused from there, before any
    // password check, with a Retry-After.
    let locked = password_login(&attacker, &app.base_url, ADMIN_EMAIL, ADMIN_PASSWORD, true).await;
    let retry_after: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_error(locked, StatusCode::TOO_MANY_REQUESTS, "too_many_login_attempts").await;
    // The owner, from their own address, is not locked out.
    assert_eq!(
        password_login(&owner, &app.base_url, ADMIN_EMAIL, ADMIN_PASSWORD, true)
            .await
            .status(),
        StatusCode::OK
    );
    // Guessing other accounts from the same address hits the address limit.
    for n in 0..3 {
        let account = format!("nobody{n}@example.org");
        let response = password_login(&attacker, &app.base_url, &account, "guess", false).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_error(
        password_login(&attacker, &app.base_url, USER_EMAIL, USER_PASSWORD, false).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_login_attempts",
    )
    .await;
    // Every lock-out ends.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        password_login(&attacker, &app.base_url, ADMIN_EMAIL, ADMIN_PASSWORD, true)
            .await
            .status(),
        StatusCode::OK
    );
    app.stop().await;
}

async fn login_via(app: &TestApp, forwarded_for: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/api/local-account/login"))
        .header("x-forwarded-for", forwarded_for)
        .form(&[
            ("grant_type", "password"),
            ("username", USER_EMAIL),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    // Without trusted proxies the header is the client's word: ignored.
    let mut config = test_config();
    config.security.login_throttle.max_failures_per_account = 2;
    let app = TestApp::start_with(config.clone()).await;
    for fake in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(login_via(&app, fake, "wrong").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_error(
        login_via(&app, "203.0.113.3", USER_PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_login_attempts",
    )
    .await;
    app.stop().await;

    // Behind a trusted proxy (loopback here) the forwarded client counts.
    config.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let app = TestApp::start_with(config).await;
    for _ in 0..2 {
        assert_eq!(
            login_via(&app, "203.0.113.7", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Prepending a fake address does not escape: the rightmost untrusted
    // entry is the client.
    assert_error(
        login_via(&app, "198.51.100.1, 203.0.113.7", USER_PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_login_attempts",
    )
    .await;
    assert_eq!(
        login_via(&app, "198.51.100.9", USER_PASSWORD).await.status(),
        StatusCode::OK
    );
    // The address lands in the audit trail too.
    let token = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let changed = app
        .http
        .post(app.url("/api/users/api_tokens"))
        .bearer_auth(&token)
        .header("x-forwarded-for", "198.51.100.9")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::CREATED);
    let admin = app.admin_token().await;
    let audit: Value = app
        .get_json(&admin, "/api/admins/audit?type=ApiTokenCreated")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["source_ip"], "198.51.100.9");
    app.stop().await;
}

/// Parallel guessing cannot beat the throttle: 120 guesses at once from one
/// address, the right password among them; every attempt is counted before
/// its password is checked, so at most the limit (5) reach the check, and
/// the rest are refused without one. (Before, the lock-out check ran before
/// argon2 and the failure was counted after it: 60 parallel guesses got
/// 58 x 401, 1 x 429 and 1 x 200.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_do_not_beat_the_throttle() {
    let app = std::sync::Arc::new(TestApp::start().await);
    let limit = app.state.config.security.login_throttle.max_failures_per_account as usize;
    let attacker = client_from("127.0.0.4");
    let guesses: Vec<_> = (0..120)
        .map(|n| {
            let (app, attacker) = (std::sync::Arc::clone(&app), attacker.clone());
            let password = if n == 60 {
                ADMIN_PASSWORD.to_owned()
            } else {
                format!("guess number {n}")
            };
            tokio::spawn(async move {
                password_login(&attacker, &app.base_url, ADMIN_EMAIL, &password, true)
                    .await
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s != StatusCode::TOO_MANY_REQUESTS).count();
    let found = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(
        checked <= limit,
        "{checked} attempts reached the password check (limit {limit}): {statuses:?}"
    );
    assert!(found <= 1);
    assert!(statuses
        .iter()
        .all(|s| [StatusCode::OK, StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(s)));
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

/// The last admin stays: they cannot delete themselves (not even with a
/// token without admin scope), and two admins demoting each other at the
/// same moment leave one admin (the changes are serialised).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_stays_on_every_path_and_under_concurrency() {
    let app = TestApp::start().await;
    let plain = app.token(ADMIN_EMAIL, ADMIN_PASSWORD, false).await;
    let response = app
        .http
        .delete(app.url("/api/users/me"))
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::CONFLICT, "last_admin").await;

    let admin = app.admin_token().await;
    warden::identity::accounts::add_local_user(
        &app.state.commands,
        "second@example.org",
        &warden::platform::secrets::Secret::new("second admin password"),
        warden::events::user::Role::Admin,
        warden::events::user::UserOrigin::CommandLine,
        &warden::events::Metadata::system("test"),
    )
    .await
    .unwrap();
    let second = app.token("second@example.org", "second admin password", true).await;
    let id_of = |token: String| {
        let app = &app;
        async move {
            app.get_json(&token, "/api/users/me")
                .await
                .json::<Value>()
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (first_id, second_id) = (id_of(admin.clone()).await, id_of(second.clone()).await);
    let demote = |token: String, target: String| {
        let (http, url) = (app.http.clone(), app.url(&format!("/api/admins/users/{target}/role")));
        tokio::spawn(async move {
            http.put(url)
                .bearer_auth(token)
                .json(&json!({"role": "user"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let a = demote(admin.clone(), second_id.clone());
    let b = demote(second.clone(), first_id.clone());
    let outcomes = [a.await.unwrap(), b.await.unwrap()];
    let admins: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM users WHERE role = 'admin' AND deleted_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(admins, 1, "one admin is left: {outcomes:?}");
    assert!(outcomes.contains(&StatusCode::OK), "{outcomes:?}");
    app.stop().await;
}

/// A stolen token is no way to guess the password online: wrong current
/// passwords at change_password are throttled like logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_guessing_is_throttled() {
    let app = TestApp::start().await;
    let limit = app.state.config.security.login_throttle.max_failures_per_account;
    let token = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let change = |current: &str| {
        app.post_json(
            &token,
            "/api/local-account/change_password",
            json!({"current_password": current, "new_password": "a brand new password"}),
        )
    };
    for n in 0..limit {
        assert_error(
            change(&format!("guess {n}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_password",
        )
        .await;
    }
    // Over the limit: refused before any check, even the right password.
    let locked = change(USER_PASSWORD).await;
    assert!(locked.headers().contains_key("retry-after"));
    assert_error(locked, StatusCode::TOO_MANY_REQUESTS, "too_many_login_attempts").await;
    app.stop().await;
}

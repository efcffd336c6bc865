//! Attacks on a running warden over real HTTP (issue 11): each test does
//! what an attacker would and asserts that it fails. Older attacks are
//! tested next to their feature (see docs/security.md for the full map).

use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::*;

/// Many addresses do not multiply the guesses at one account: past
/// `slow_down_after` failures from anywhere, each attempt must wait
/// (1 s, 2 s, ... at most `max_slow_down`), and the owner gets in once the
/// delay has passed (never a lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_from_many_addresses_are_slowed_per_account() {
    let mut config = test_config();
    config.security.login_throttle.max_slow_down = Duration::from_secs(2);
    let after = config.security.login_throttle.slow_down_after as usize;
    let app = TestApp::start_with(config).await;
    let mut checked = 0;
    // 10 addresses x 5 guesses (each pair stays under its own limit of 5).
    for address in 10..20 {
        let attacker = client_from(&format!("127.0.0.{address}"));
        for guess in 0..5 {
            let status = password_login(&attacker, &app.base_url, ADMIN_EMAIL, &format!("guess {guess}"), true)
                .await
                .status();
            match status {
                StatusCode::UNAUTHORIZED => checked += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("unexpected {other}"),
            }
        }
    }
    // A few more may slip in as 1 s and 2 s delays pass during the run.
    assert!(
        checked >= after && checked <= after + 4,
        "{checked} of 50 guesses were checked"
    );
    // The owner, from their own address, waits at most max_slow_down.
    let owner = client_from("127.0.0.2");
    let refused = password_login(&owner, &app.base_url, ADMIN_EMAIL, ADMIN_PASSWORD, true).await;
    if refused.status() == StatusCode::TOO_MANY_REQUESTS {
        let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(wait <= 2, "retry after {wait}s");
        tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    }
    assert_eq!(
        password_login(&owner, &app.base_url, ADMIN_EMAIL, ADMIN_PASSWORD, true)
            .await
            .status(),
        StatusCode::OK
    );
    app.stop().await;
}

/// IPv6 clients are counted per /64: changing the interface identifier
/// (every subscriber has 2^64 of them) does not reset the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_guessers_are_counted_per_64() {
    let mut config = test_config();
    config.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let limit = config.security.login_throttle.max_failures_per_account;
    let app = TestApp::start_with(config).await;
    let login_from = |address: String| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/api/local-account/login"))
                .header("x-forwarded-for", address)
                .form(&[
                    ("grant_type", "password"),
                    ("username", USER_EMAIL),
                    ("password", "not the password"),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for host in 1..=limit {
        assert_eq!(
            login_from(format!("2001:db8:7:7::{host:x}")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_from("2001:db8:7:7:ffff::1".into()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another /64 is another network.
    assert_eq!(login_from("2001:db8:7:8::1".into()).await, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// An ID token HS256-signed with warden's own client secret (the provider
/// advertises HS256) is no bearer token: only public-key signatures from
/// the provider's JWKS are. Before, this minted admin rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_signed_with_the_client_secret_are_refused() {
    let (app, server) = crate::oidc::start().await;
    crate::oidc::token_of(crate::oidc::oidc_login(&app, &server, "corp", "root", false).await).await;
    let discovery: serde_json::Value = reqwest::get(format!("{}/.well-known/openid-configuration", server.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        discovery["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("HS256")),
        "the test provider must advertise HS256 for this attack"
    );
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": server.issuer, "aud": crate::oidc_server::CLIENT_ID, "sub": "root",
        "email": "root@oidc.example.org", "email_verified": true,
        "roles": ["warden-user", "warden-admin"], "iat": now, "exp": now + 600,
    });
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::oidc_server::CLIENT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_error(
        app.post_json(&forged, "/api/admins/create_runner", serde_json::json!({}))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    // The provider's real (RS256) token still works.
    let real = crate::oidc_server::id_token_for(&server.issuer, crate::oidc_server::CLIENT_ID, "root").await;
    assert_eq!(crate::oidc::me(&app, &real).await.status(), StatusCode::OK);
    app.stop().await;
}

/// A log-out ends the provider's ID tokens issued until then, like
/// warden's own tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_ends_the_providers_id_tokens_too() {
    let (app, server) = crate::oidc::start().await;
    crate::oidc::token_of(crate::oidc::oidc_login(&app, &server, "corp", "alice", false).await).await;
    let id_token = crate::oidc_server::id_token_for(&server.issuer, crate::oidc_server::CLIENT_ID, "alice").await;
    assert_eq!(crate::oidc::me(&app, &id_token).await.status(), StatusCode::OK);
    let logout = app
        .http
        .post(app.url("/api/auth/logout"))
        .bearer_auth(&id_token)
        .send()
        .await
        .unwrap();
    assert!(logout.status().is_success(), "{}", logout.status());
    assert_error(
        crate::oidc::me(&app, &id_token).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;
    app.stop().await;
}

/// Unverified addresses and addresses of other users are refused; the
/// provider's redirect goes only where warden's own address says, never
/// where a client's X-Forwarded-Host points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_logins_take_no_unverified_or_foreign_address_and_no_forged_redirect() {
    let (app, server) = crate::oidc::start().await;
    assert_error(
        crate::oidc::oidc_login(&app, &server, "corp", "unverified", false).await,
        StatusCode::FORBIDDEN,
        "email_not_verified",
    )
    .await;
    // `copycat` claims the local admin's address (in other case).
    assert_error(
        crate::oidc::oidc_login(&app, &server, "corp", "copycat", false).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    let admin = app.admin_token().await;
    let users = app.get_items(&admin, "/api/admins/users").await;
    assert!(
        users.iter().all(|u| u["email"] != "unverified@oidc.example.org"
            && u["email"].as_str().unwrap().to_lowercase() != "admin@example.org"
            || u["email"] == ADMIN_EMAIL),
        "{users:?}"
    );

    let start = crate::oidc_server::browser()
        .get(app.url("/api/oidc/login/corp"))
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let authorize = url::Url::parse(start.headers()["location"].to_str().unwrap()).unwrap();
    let redirect = authorize
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(redirect, app.url("/api/oidc/callback/corp"));
    app.stop().await;
}

/// A page of another site cannot use a logged-in browser's session cookie
/// to change anything (a form POST carries the cookie under SameSite=Lax
/// in some browsers, and always from sibling subdomains): cookie-
/// authenticated writes must come from warden's own origin. Bearer tokens
/// and reads are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_authenticated_writes_from_other_sites_are_refused() {
    let app = TestApp::start().await;
    let login = app.login(USER_EMAIL, USER_PASSWORD, false).await;
    let cookie = crate::identity::session_cookie(&login);
    let token = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let job = app.submit_job(&token, serde_json::json!({"n": 1}), &[], 0).await;
    let cancel = |headers: &'static [(&'static str, &'static str)], bearer: bool| {
        let mut request = app.http.post(app.url(&format!("/api/jobs/{job}/cancel")));
        request = if bearer {
            request.bearer_auth(&token)
        } else {
            request.header("cookie", &cookie)
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap() }
    };
    for attack in [
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")][..],
        &[("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")][..],
        // A sibling subdomain is same-site, not same-origin.
        &[("sec-fetch-site", "same-site")][..],
    ] {
        assert_error(cancel(attack, false).await, StatusCode::FORBIDDEN, "cross_site_request").await;
    }
    // Reads with the cookie still work from anywhere (they change nothing).
    let read = app
        .http
        .get(app.url(&format!("/api/jobs/{job}")))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(app.job(&token, &job).await["status"], "queued");
    // Bearer requests are not affected by Origin.
    let own_origin: &'static str = Box::leak(app.base_url.clone().into_boxed_str());
    let bearer = cancel(&[("origin", "https://evil.example")], true).await;
    assert!(bearer.status().is_success(), "{}", bearer.status());
    // warden's own pages may.
    let job = app.submit_job(&token, serde_json::json!({"n": 2}), &[], 0).await;
    let own = app
        .http
        .post(app.url(&format!("/api/jobs/{job}/cancel")))
        .header("cookie", &cookie)
        .header("origin", own_origin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert!(own.status().is_success(), "{}", own.status());
    app.stop().await;
}

async fn new_api_token(app: &TestApp, token: &str, body: serde_json::Value) -> reqwest::Response {
    app.post_json(token, "/api/users/api_tokens", body).await
}

/// API tokens expire (at most `max_lifetime` after creation, also when a
/// 1-hour access token makes them), a password change revokes them, and
/// their list shows when each was last used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_expire_end_with_a_password_change_and_show_their_last_use() {
    let mut config = test_config();
    config.security.api_tokens.max_lifetime = Duration::from_secs(3);
    let app = TestApp::start_with(config).await;
    let access = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    // No endless token from a short-lived one: at most the maximum.
    let forever: serde_json::Value = new_api_token(
        &app,
        &access,
        serde_json::json!({"name": "forever", "expires_in_days": 36500}),
    )
    .await
    .json()
    .await
    .unwrap();
    let cut = chrono::DateTime::parse_from_rfc3339(forever["expires_at"].as_str().unwrap()).unwrap();
    assert!(cut <= chrono::Utc::now() + chrono::Duration::seconds(4), "{forever}");
    assert_error(
        new_api_token(
            &app,
            &access,
            serde_json::json!({"name": "never", "expires_in_days": 0}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "value_out_of_range",
    )
    .await;
    let created: serde_json::Value = new_api_token(&app, &access, serde_json::json!({"name": "script"}))
        .await
        .json()
        .await
        .unwrap();
    let expires_at = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    assert!(expires_at <= chrono::Utc::now() + chrono::Duration::seconds(4));
    let api_token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(app.get_json(&api_token, "/api/users/me").await.status(), StatusCode::OK);
    let listed = app
        .get_json(&access, "/api/users/api_tokens")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert!(listed[0]["last_used_at"].is_string(), "{listed}");
    assert_eq!(listed[0]["expires_at"], created["expires_at"]);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_error(
        app.get_json(&api_token, "/api/users/me").await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_token",
    )
    .await;
    app.stop().await;

    // A password change revokes every API token (the default).
    let app = TestApp::start().await;
    let access = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let created: serde_json::Value = new_api_token(
        &app,
        &access,
        serde_json::json!({"name": "stolen", "expires_in_days": 7}),
    )
    .await
    .json()
    .await
    .unwrap();
    let api_token = created["token"].as_str().unwrap().to_owned();
    let changed = app
        .post_json(
            &access,
            "/api/local-account/change_password",
            serde_json::json!({"current_password": USER_PASSWORD, "new_password": "a brand new password"}),
        )
        .await;
    assert!(changed.status().is_success(), "{}", changed.status());
    assert_error(
        app.get_json(&api_token, "/api/users/me").await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_token",
    )
    .await;
    app.stop().await;
}

/// After a user's deletion and a checkpoint, nothing in the database files
/// (heap, indexes, TOAST, dead tuples of every table) gives back their key
/// or their personal data: email, password hash, API token name, source
/// address, job payload, file name. The log keeps only sealed values, and
/// the tables that held readable ones are rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_users_key_and_personal_data_are_gone_from_the_database_files() {
    let app = TestApp::start().await;
    let victim = client_from("127.0.0.77");
    let login: serde_json::Value = password_login(&victim, &app.base_url, USER_EMAIL, USER_PASSWORD, false)
        .await
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let post = |path: &str, body: serde_json::Value| victim.post(app.url(path)).bearer_auth(&token).json(&body).send();
    let created = post(
        "/api/users/api_tokens",
        serde_json::json!({"name": "zebra-laptop-of-victim"}),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let job = post(
        "/api/jobs",
        serde_json::json!({"payload": {"notify": "payload-victim@example.org"}}),
    )
    .await
    .unwrap();
    assert_eq!(job.status(), StatusCode::CREATED);
    let db = app.db.client().await;
    let user_id: uuid::Uuid = db
        .query_one("SELECT id FROM users WHERE email = $1", &[&USER_EMAIL])
        .await
        .unwrap()
        .get(0);
    let password_hash: String = db
        .query_one("SELECT password_hash FROM users WHERE id = $1", &[&user_id])
        .await
        .unwrap()
        .get(0);
    let key: Vec<u8> = db
        .query_one("SELECT key FROM pii_keys WHERE subject_id = $1", &[&user_id])
        .await
        .unwrap()
        .get(0);
    let deleted = victim
        .delete(app.url("/api/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    db.batch_execute("CHECKPOINT").await.unwrap();

    // Every file of every relation of this database (tables, indexes,
    // TOAST), as PostgreSQL itself reads them.
    let files = db
        .query(
            "SELECT c.relname, pg_read_binary_file(pg_relation_filepath(c.oid))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'i', 't', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND pg_relation_filepath(c.oid) IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert!(files.len() > 20, "only {} relations read", files.len());
    let secrets: [(&str, Vec<u8>); 7] = [
        ("the key", key),
        ("the email", USER_EMAIL.as_bytes().to_vec()),
        ("the password hash", password_hash.as_bytes().to_vec()),
        ("the token name", b"zebra-laptop-of-victim".to_vec()),
        ("the source address", b"127.0.0.77".to_vec()),
        ("the job payload", b"payload-victim@example.org".to_vec()),
        // The hash's salt and digest alone, in case the prefix is split.
        (
            "the password digest",
            password_hash.rsplit('$').next().unwrap().as_bytes().to_vec(),
        ),
    ];
    for row in &files {
        let (relation, bytes): (String, Vec<u8>) = (row.get(0), row.get(1));
        for (what, secret) in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|window| window == secret.as_slice()),
                "{what} is still readable in the files of `{relation}`"
            );
        }
    }
    // The audit trail still answers, without the address.
    let admin = app.admin_token().await;
    let audit: serde_json::Value = app
        .get_json(&admin, &format!("/api/admins/audit?stream=user-{user_id}"))
        .await
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "{audit}");
    assert!(entries.iter().all(|e| e["source_ip"].is_null()), "{audit}");
    app.stop().await;
}

/// NUL bytes and values beyond range, wherever a client can put them,
/// answer 4xx with a code (never 500, never a dropped connection), and a
/// refused NUL never reaches the log, where it would stop a projector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_and_extreme_values_are_refused_not_failed() {
    use serde_json::json;
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;

    // Unauthenticated: a NUL in the username.
    let login = app
        .http
        .post(app.url("/api/local-account/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=a%00b&password=whatever-it-is")
        .send()
        .await
        .unwrap();
    assert!(login.status().is_client_error(), "{}", login.status());

    let refused = |response: reqwest::Response| async move {
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_client_error(), "{status}: {body}");
        body
    };
    // Job payloads: in a nested value and in a key.
    for payload in [json!({"deep": [{"text": "a\u{0}b"}]}), json!({"key\u{0}": 1})] {
        let body = refused(app.post_json(&user, "/api/jobs", json!({"payload": payload})).await).await;
        assert!(body.contains("invalid_text"), "{body}");
    }
    // Filters and queries.
    for path in [
        "/api/admins/audit?type=a%00b",
        "/api/admins/audit?since=-100000-01-01T00:00:00Z",
        "/api/admins/runners?contacted_since=-100000-01-01T00:00:00Z",
        "/api/admins/dashboard?active_within=1000000years",
        "/api/admins/dashboard?active_within=18446744073709551615s",
    ] {
        refused(app.get_json(&admin, path).await).await;
    }
    // A runner's description, machine info, progress message and result.
    let description = app
        .post_json(&admin, "/api/admins/create_runner", json!({"description": "a\u{0}b"}))
        .await;
    let body = refused(description).await;
    assert!(body.contains("invalid_text"), "{body}");
    let (_, runner_token) = app.create_runner(&admin).await;
    let info = app
        .post_json(
            &runner_token,
            "/api/runners/verify",
            json!({"system_id": "s_nul", "info": {"name": "a\u{0}b"}}),
        )
        .await;
    refused(info).await;
    let job_id = app.submit_job(&user, json!({"n": 1}), &[], 0).await;
    let job = app.request_job(&runner_token, "s_nul", 0).await.expect("a job");
    assert_eq!(job["id"], job_id.as_str());
    let progress = app
        .post_json(
            &runner_token,
            &format!("/api/runners/jobs/{job_id}/progress"),
            json!({"system_id": "s_nul", "progress": 0.5, "message": "a\u{0}b"}),
        )
        .await;
    refused(progress).await;
    let result = app
        .post_json(
            &runner_token,
            &format!("/api/runners/jobs/{job_id}/result"),
            json!({"system_id": "s_nul", "outcome": "failed", "result": {"error": "a\u{0}b"}}),
        )
        .await;
    refused(result).await;

    // Nothing of it stopped the read models: new work still shows up.
    let after = app.submit_job(&user, json!({"still": "working"}), &[], 0).await;
    assert_eq!(app.job(&user, &after).await["status"], "queued");
    let health = app.http.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    app.stop().await;
}

/// Registers every `(runner token, system id)` at once; each must answer
/// 200, and all of them within 5 s.
async fn register_all_at_once(app: &std::sync::Arc<TestApp>, machines: Vec<(String, String)>) {
    let count = machines.len();
    let started = std::time::Instant::now();
    let attempts: Vec<_> = machines
        .into_iter()
        .map(|(token, system_id)| {
            let app = app.clone();
            tokio::spawn(async move {
                app.post_json(
                    &token,
                    "/api/runners/verify",
                    serde_json::json!({"system_id": system_id}),
                )
                .await
                .status()
            })
        })
        .collect();
    for attempt in attempts {
        assert_eq!(attempt.await.unwrap(), StatusCode::OK);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{count} registrations took {took:?}");
}

/// Many machines of one token registering at once, more than the pool has
/// connections: registrations take turns on the token's lock, waiting on
/// the connections they hold, so the one holding it must finish on its
/// own connection, or all of them stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_registrations_larger_than_the_pool_goes_through() {
    // The test pool has 24 connections.
    const BURST: usize = 40;
    let mut config = test_config();
    config.runners.max_machines_per_token = BURST as u32;
    let app = std::sync::Arc::new(TestApp::start_with(config).await);
    let admin = app.admin_token().await;
    let (_, token) = app.create_runner(&admin).await;
    let machines = (0..BURST).map(|n| (token.clone(), format!("s_burst_{n}"))).collect();
    register_all_at_once(&app, machines).await;
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

/// As many runners as the pool has connections, and more, each
/// registering its first machine at once: a registration must finish on
/// the one connection it holds while it checks the runner's machine
/// limit, or every one of them waits for a second connection that
/// nobody returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_registrations_of_more_runners_than_the_pool_go_through() {
    // The test pool has 24 connections.
    const RUNNERS: usize = 40;
    let app = std::sync::Arc::new(TestApp::start().await);
    let admin = app.admin_token().await;
    let mut machines = Vec::new();
    for n in 0..RUNNERS {
        machines.push((app.create_runner(&admin).await.1, format!("s_first_{n}")));
    }
    register_all_at_once(&app, machines).await;
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

/// A first registration that cannot get its runner's registration lock in
/// time (held elsewhere, here by hand) answers a clear 409, not a 500, and
/// goes through once the lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_that_waits_too_long_for_its_lock_answers_409() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (runner_id, token) = app.create_runner(&admin).await;
    let key = warden::log::follower::advisory_key(&format!("machine-registration:{runner_id}"));
    let holder = app.db.client().await;
    holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap();
    let verify = || {
        app.post_json(
            &token,
            "/api/runners/verify",
            serde_json::json!({"system_id": "s_locked"}),
        )
    };
    assert_error(verify().await, StatusCode::CONFLICT, "concurrent_modification").await;
    holder.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.unwrap();
    assert_eq!(verify().await.status(), StatusCode::OK);
    drop(holder);
    app.stop().await;
}

/// One runner token cannot register unlimited machines, not even with
/// many registrations at once; known machines keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_token_registers_at_most_its_machine_limit() {
    let mut config = test_config();
    config.runners.max_machines_per_token = 3;
    let app = std::sync::Arc::new(TestApp::start_with(config).await);
    let admin = app.admin_token().await;
    let (_, token) = app.create_runner(&admin).await;
    let verify = |app: std::sync::Arc<TestApp>, token: String, system_id: String| async move {
        app.post_json(
            &token,
            "/api/runners/verify",
            serde_json::json!({"system_id": system_id}),
        )
        .await
    };
    let attempts: Vec<_> = (0..12)
        .map(|n| tokio::spawn(verify(app.clone(), token.clone(), format!("s_parallel_{n}"))))
        .collect();
    let mut registered = Vec::new();
    for (n, attempt) in attempts.into_iter().enumerate() {
        let response = attempt.await.unwrap();
        match response.status() {
            StatusCode::OK => registered.push(n),
            StatusCode::CONFLICT => {
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["code"], "too_many_machines");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(registered.len(), 3, "registered: {registered:?}");
    // A registered machine still works; another new one is still refused.
    let known = verify(app.clone(), token.clone(), format!("s_parallel_{}", registered[0])).await;
    assert_eq!(known.status(), StatusCode::OK);
    assert_error(
        verify(app.clone(), token.clone(), "s_one_more".into()).await,
        StatusCode::CONFLICT,
        "too_many_machines",
    )
    .await;
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

/// An external PostgreSQL is reached over TLS when the URL asks for it
/// (`sslmode=require`), with the server's certificate verified: against
/// `database.ca_file`, else the system's trust store, which does not know
/// a self-signed server and so refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_database_is_reached_over_verified_tls() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    use warden::platform::db::Database;
    use warden::platform::embedded_pg::{ClusterOptions, EmbeddedCluster};

    let dir = std::env::temp_dir().join(format!("warden-tls-{}", uuid::Uuid::new_v4().simple()));
    let start = |options: ClusterOptions| std::thread::spawn(move || EmbeddedCluster::start(&options).unwrap());
    // Once without TLS, to learn which OS user runs the server (it must
    // own its key file).
    let mut plain = start(ClusterOptions::throwaway(&dir)).join().unwrap();
    let owner = std::fs::metadata(dir.join("pgdata")).unwrap();
    plain.stop();
    // A test CA and a server certificate it signed (for 127.0.0.1).
    let (ca, cert, key) = (dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key"));
    let extensions = dir.join("server.ext");
    std::fs::write(&extensions, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    let openssl = |args: &[&str]| {
        let made = std::process::Command::new("openssl")
            .current_dir(&dir)
            .args(args)
            .output()
            .expect("openssl must be installed (.ci/install-deps)");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=warden test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    for file in [&cert, &key] {
        chown(file, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let port = crate::oidc_server::free_port();
    let mut options = ClusterOptions::throwaway(&dir);
    for (name, value) in [
        ("ssl", "on".to_owned()),
        ("ssl_cert_file", cert.display().to_string()),
        ("ssl_key_file", key.display().to_string()),
        ("listen_addresses", "127.0.0.1".to_owned()),
        ("port", port.to_string()),
    ] {
        options.settings.push((name.into(), value));
    }
    let mut cluster = start(options).join().unwrap();
    let url = format!(
        "host=127.0.0.1 port={port} user=warden password={} dbname=postgres sslmode=require",
        cluster.password().unwrap()
    );
    let uses_tls = |db: Database| async move {
        let client = db.get().await?;
        let row = client
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .map_err(warden::platform::db::DbError::from)?;
        Ok::<bool, warden::platform::db::DbError>(row.get(0))
    };
    let trusted = Database::from_url(&url, 1, Some(&ca), warden::platform::db::Timeouts::REQUESTS).unwrap();
    assert!(uses_tls(trusted).await.unwrap(), "the connection is not encrypted");
    let untrusted = Database::from_url(&url, 1, None, warden::platform::db::Timeouts::REQUESTS).unwrap();
    let refused = uses_tls(untrusted).await.expect_err("a self-signed server was trusted");
    assert!(
        format!("{refused:?}").to_lowercase().contains("certificate"),
        "{refused:?}"
    );
    // A remote database without sslmode=require is what start-up warns about.
    assert!(Database::from_url(
        "host=db.example.org user=w",
        1,
        None,
        warden::platform::db::Timeouts::REQUESTS
    )
    .unwrap()
    .may_travel_in_clear());
    assert!(!Database::from_url(
        "host=db.example.org user=w sslmode=require",
        1,
        None,
        warden::platform::db::Timeouts::REQUESTS
    )
    .unwrap()
    .may_travel_in_clear());
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The embedded cluster is no one else's: it runs as its own OS user
/// (never `nobody`), answers only to its password (kept 0600 by warden),
/// listens in a private socket folder, and a cluster an older release made
/// with `trust` is moved to the password on its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_cluster_answers_only_to_its_password_and_runs_as_its_own_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use warden::platform::embedded_pg::{ClusterOptions, EmbeddedCluster, DEDICATED_OS_USER};

    let dir = std::env::temp_dir().join(format!("warden-own-{}", uuid::Uuid::new_v4().simple()));
    let start = |dir: std::path::PathBuf| {
        std::thread::spawn(move || EmbeddedCluster::start(&ClusterOptions::throwaway(&dir)).unwrap())
            .join()
            .unwrap()
    };
    let try_connect = |cluster: &EmbeddedCluster, password: Option<&str>| {
        let mut config = cluster.connect_config("postgres");
        match password {
            Some(password) => config.password(password),
            None => config.password(""),
        };
        async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.simple_query("SELECT 1").await.map(|_| ())
        }
    };
    let mut cluster = start(dir.clone());
    let password_file = dir.join("pg-password");
    let mode = std::fs::metadata(&password_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the password file is readable by others");
    let socket_mode = std::fs::metadata(cluster.socket_dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(socket_mode, 0o700);
    let password = cluster.password().unwrap().to_owned();
    assert_eq!(std::fs::read_to_string(&password_file).unwrap().trim(), password);
    try_connect(&cluster, Some(&password)).await.unwrap();
    for wrong in [None, Some("guess")] {
        let refused = try_connect(&cluster, wrong)
            .await
            .expect_err("connected without the password");
        assert!(format!("{refused:?}").contains("password"), "{refused:?}");
    }
    if nix::unistd::Uid::effective().is_root() {
        let server_user = nix::unistd::User::from_name(DEDICATED_OS_USER)
            .unwrap()
            .expect("the dedicated user");
        let pgdata = std::fs::metadata(dir.join("pgdata")).unwrap();
        assert_eq!(
            pgdata.uid(),
            server_user.uid.as_raw(),
            "the cluster is not run by {DEDICATED_OS_USER}"
        );
        // The server's user cannot read the password: only warden can.
        assert_ne!(
            std::fs::metadata(&password_file).unwrap().uid(),
            server_user.uid.as_raw()
        );
    }
    cluster.stop();

    // As an older release left it: trusting local connections, no file.
    std::fs::write(dir.join("pgdata/pg_hba.conf"), "local all all trust\n").unwrap();
    std::fs::remove_file(&password_file).unwrap();
    let mut upgraded = start(dir.clone());
    let new_password = upgraded.password().unwrap().to_owned();
    assert_ne!(new_password, password);
    try_connect(&upgraded, Some(&new_password)).await.unwrap();
    try_connect(&upgraded, Some("guess"))
        .await
        .expect_err("still trusting after the upgrade");
    upgraded.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 7 of the bounded-resources issue: an API token cannot renew
/// itself. Before, a token with a day left made a 90-day child through
/// `POST /api/users/api_tokens`, which revoking the parent and logging out
/// left working; now only a log-in's token creates API tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_cannot_create_api_tokens() {
    let app = TestApp::start().await;
    let access = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let parent: serde_json::Value = new_api_token(
        &app,
        &access,
        serde_json::json!({"name": "short", "expires_in_days": 1}),
    )
    .await
    .json()
    .await
    .unwrap();
    let parent_token = parent["token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get_json(&parent_token, "/api/users/me").await.status(),
        StatusCode::OK
    );
    assert_error(
        new_api_token(&app, &parent_token, serde_json::json!({"name": "child"})).await,
        StatusCode::FORBIDDEN,
        "login_required",
    )
    .await;
    let listed = app
        .get_json(&access, "/api/users/api_tokens")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "a child was made: {listed}");
    // A log-in's access token still creates them.
    assert_eq!(
        new_api_token(&app, &access, serde_json::json!({"name": "second"}))
            .await
            .status(),
        StatusCode::CREATED
    );
    app.stop().await;
}

/// Item 8: provisioning changes only what the config names. A provisioned
/// user an admin made `support` stays support at the next start
/// (`is_admin: false` means "not an admin"); before, every restart turned
/// them back into `user`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_leaves_a_support_user_support() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let me: serde_json::Value = app.get_json(&user, "/api/users/me").await.json().await.unwrap();
    let id = me["id"].as_str().unwrap().to_owned();
    let response = app
        .http
        .put(app.url(&format!("/api/admins/users/{id}/role")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"role": "support"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // What every start does.
    warden::identity::accounts::provision_from_config(&app.state.identity)
        .await
        .unwrap();
    let me: serde_json::Value = app.get_json(&user, "/api/users/me").await.json().await.unwrap();
    assert_eq!(me["role"], "support", "{me}");
    app.stop().await;
}

/// Item 8: log-in CSRF. Another site's page cannot log a visitor's browser
/// in (the answer sets the session cookie: the visitor would then act in
/// the attacker's account unawares). Browsers say where a request comes
/// from; clients that are not browsers send neither header and log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_from_other_sites_pages_are_refused() {
    let app = TestApp::start().await;
    let form = format!(
        "grant_type=password&username={}&password={}",
        urlencode(USER_EMAIL),
        urlencode(USER_PASSWORD)
    );
    let login = |headers: &[(&str, String)]| {
        let mut request = app
            .http
            .post(app.url("/api/local-account/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone());
        for (name, value) in headers {
            request = request.header(*name, value.clone());
        }
        request.send()
    };
    assert_error(
        login(&[("sec-fetch-site", "cross-site".into())]).await.unwrap(),
        StatusCode::FORBIDDEN,
        "cross_site_request",
    )
    .await;
    assert_error(
        login(&[("origin", "https://attacker.example".into())]).await.unwrap(),
        StatusCode::FORBIDDEN,
        "cross_site_request",
    )
    .await;
    let own = app.base_url.clone();
    for headers in [
        vec![],
        vec![("sec-fetch-site", "same-origin".to_owned())],
        vec![("origin", own)],
    ] {
        let response = login(&headers).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{headers:?}");
        assert!(response.headers().get("set-cookie").is_some());
    }
    app.stop().await;
}

/// Item 8: `/metrics` and `/docs` carry the API's `no-store` and a CSP
/// (the docs' own allows only its own scripts and styles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_docs_are_not_cached_and_have_a_content_security_policy() {
    let app = TestApp::start().await;
    for path in ["/metrics", "/docs/", "/docs/swagger-ui.css"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("cache-control"), "no-store", "{path}");
        let policy = header("content-security-policy");
        assert!(policy.starts_with("default-src 'none'"), "{path}: {policy}");
        assert!(!policy.contains("script-src 'unsafe"), "{path}: {policy}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }
    app.stop().await;
}

/// Item 6: one normalisation of addresses for every origin, and one owner
/// per address. An OIDC address with a trailing space is the local user's
/// address (it made a second account before); a sign-up cannot take an
/// OIDC user's address (it did, and locked the OIDC user out with
/// `409 email_taken`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_belongs_to_one_user_whatever_its_origin() {
    let (app, server) = crate::oidc::start().await;
    assert_error(
        crate::oidc::oidc_login(&app, &server, "corp", "spacey", false).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_eq!(
        crate::oidc::oidc_login(&app, &server, "corp", "alice", false)
            .await
            .status(),
        StatusCode::OK
    );
    let signup = |email: &'static str| {
        app.http
            .post(app.url("/api/local-account/signup"))
            .json(&serde_json::json!({"email": email, "password": "a long enough password"}))
            .send()
    };
    for taken in ["alice@oidc.example.org", "Alice@OIDC.example.org"] {
        assert_error(signup(taken).await.unwrap(), StatusCode::CONFLICT, "email_taken").await;
    }
    assert_eq!(
        crate::oidc::oidc_login(&app, &server, "corp", "alice", false)
            .await
            .status(),
        StatusCode::OK,
        "the OIDC user was locked out"
    );
    let admin = app.admin_token().await;
    let users = app.get_items(&admin, "/api/admins/users").await;
    let mut addresses: Vec<String> = users
        .iter()
        .map(|user| user["email"].as_str().unwrap().trim().to_lowercase())
        .collect();
    let count = addresses.len();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), count, "two users share an address: {users:?}");
    assert_eq!(
        signup("someone.new@example.org").await.unwrap().status(),
        StatusCode::CREATED
    );
    app.stop().await;
}

/// Every file of every relation of `db`'s database, as PostgreSQL reads
/// them (after a checkpoint), for "this secret is nowhere" checks.
async fn relation_files(db: &warden::platform::db::Connection) -> Vec<(String, Vec<u8>)> {
    db.batch_execute("CHECKPOINT").await.unwrap();
    db.query(
        "SELECT c.relname, pg_read_binary_file(pg_relation_filepath(c.oid))
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'i', 't', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND pg_relation_filepath(c.oid) IS NOT NULL",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

/// Item 1: no secret that grants access lives in the database. An
/// installation of an older release kept the token signing key and the
/// throttle key in `server_secrets` (whoever read the database or a
/// backup could sign an admin token that created runners); at its first
/// start this release moves them into the secrets file (0600), deletes
/// the rows and rewrites the table, and tokens signed before the upgrade
/// still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_secrets_leave_the_database_and_tokens_survive_the_move() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let db = TestDb::new().await;
    let (signing, throttle) = (vec![0x5au8; 64], vec![0xa5u8; 64]);
    db.client()
        .await
        .execute(
            "INSERT INTO server_secrets (name, value) VALUES ('access_token_signing_key', $1), ('login_throttle_key', $2)",
            &[&signing, &throttle],
        )
        .await
        .unwrap();
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("secrets.json");
    let mut config = test_config();
    config.security.secrets_file = Some(path.clone());
    let app = TestApp::start_on(db, config).await;

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        b64.decode(file["signing_keys"][0]["key"].as_str().unwrap()).unwrap(),
        signing
    );
    assert_eq!(b64.decode(file["throttle_key"].as_str().unwrap()).unwrap(), throttle);

    let client = app.db.client().await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM server_secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    for (relation, bytes) in relation_files(&client).await {
        for (what, secret) in [("the signing key", &signing), ("the throttle key", &throttle)] {
            assert!(
                !bytes.windows(secret.len()).any(|window| window == secret.as_slice()),
                "{what} is still in the files of `{relation}`"
            );
        }
    }
    // A token signed with the key before the upgrade (no key id) works.
    let me: serde_json::Value = app
        .get_json(&app.token(USER_EMAIL, USER_PASSWORD, false).await, "/api/users/me")
        .await
        .json()
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = serde_json::json!({
        "iss": "warden", "aud": "warden-api", "sub": me["id"], "iat": now, "exp": now + 600,
        "jti": uuid::Uuid::now_v7(), "scope": ""
    });
    let old = encode(&Header::default(), &claims, &EncodingKey::from_secret(&signing)).unwrap();
    assert_eq!(app.get_json(&old, "/api/users/me").await.status(), StatusCode::OK);
    drop(client);
    app.stop().await;
}

/// Item 1: instances of one database need one set of secrets. A second
/// instance with its own secrets file (another host, nothing copied)
/// refuses to start, naming the fix, instead of refusing the first one's
/// tokens; and once the secrets have left the database, an instance
/// without the file cannot make new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_other_secrets_refuse_to_start() {
    let db = TestDb::new().await;
    let first = TestApp::start_on(db.reconnect(), test_config()).await;
    let folder = tempfile::tempdir().unwrap();
    for (file, expected) in [
        (
            Some(folder.path().join("missing.json")),
            "copy that instance's secrets file",
        ),
        (None, "differs"),
    ] {
        let mut config = test_config();
        config.security.secrets_file = file;
        if config.security.secrets_file.is_none() {
            // Another host's own file: made, then found to differ.
            let other = folder.path().join("other.json");
            std::fs::write(
                &other,
                serde_json::json!({
                    "signing_keys": [{"key": base64_of(&[1u8; 64]), "created_at": "2026-01-01T00:00:00Z"}],
                    "throttle_key": base64_of(&[2u8; 64]),
                })
                .to_string(),
            )
            .unwrap();
            config.security.secrets_file = Some(other);
        }
        let error = warden::app::AppState::start(config, db.reconnect().db)
            .await
            .err()
            .expect("an instance with other secrets started");
        let message = format!("{error:#}");
        assert!(message.contains(expected), "{message}");
    }
    first.stop().await;
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Item 1: `warden keys rotate`. A new key signs from then on (the
/// serving instance takes the rotated file without a restart), tokens of
/// the previous key still verify; a staged key verifies before it signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_signs_and_the_previous_one_still_verifies() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("secrets.json");
    let mut config = test_config();
    config.security.secrets_file = Some(path.clone());
    let app = TestApp::start_with(config).await;
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let before = app.token(USER_EMAIL, USER_PASSWORD, false).await;

    let rotate = |stage: bool| {
        let mut command = warden_command();
        command
            .env("WARDEN_SECURITY__SECRETS_FILE", &path)
            .args(["--database-url", &app.db.url(), "keys", "rotate"]);
        if stage {
            command.arg("--stage");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let staged = rotate(true);
    assert_eq!(staged["signing"], kid(&before), "{staged}");
    let rotated = rotate(false);
    assert_eq!(rotated["signing"], staged["staged"], "the staged key signs: {rotated}");
    assert_eq!(rotated["retired"][0], kid(&before), "{rotated}");

    let deadline = std::time::Instant::now() + warden::platform::server_secrets::RELOAD_EVERY * 3;
    let after = loop {
        let token = app.token(USER_EMAIL, USER_PASSWORD, false).await;
        if kid(&token) == rotated["signing"] {
            break token;
        }
        assert!(std::time::Instant::now() < deadline, "the new key does not sign");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for token in [&before, &after] {
        assert_eq!(app.get_json(token, "/api/users/me").await.status(), StatusCode::OK);
    }
    app.stop().await;
}

/// A new local account (sign-up) and its access token.
async fn new_user(app: &TestApp, email: &str) -> String {
    let password = "a long enough password";
    let response = app
        .http
        .post(app.url("/api/local-account/signup"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "sign-up of {email}");
    app.token(email, password, false).await
}

/// Item 5: deletion fences submission. Thirty jobs submitted in parallel
/// with the submitter's `DELETE /api/users/me` left 1-3 jobs queued (later
/// handed to a runner with `payload: null`); now each is refused or
/// cancelled with the rest, in every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_submitted_during_their_submitters_deletion_do_not_outlive_it() {
    let app = std::sync::Arc::new(TestApp::start().await);
    let admin = app.admin_token().await;
    for round in 0..3 {
        let token = new_user(&app, &format!("racer{round}@example.org")).await;
        let me: serde_json::Value = app.get_json(&token, "/api/users/me").await.json().await.unwrap();
        let user_id: uuid::Uuid = me["id"].as_str().unwrap().parse().unwrap();
        let submissions: Vec<_> = (0..30)
            .map(|n| {
                let (app, token) = (app.clone(), token.clone());
                tokio::spawn(async move {
                    app.post_json(&token, "/api/jobs", serde_json::json!({"payload": {"n": n}}))
                        .await
                        .status()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let deleted = app
            .http
            .delete(app.url("/api/users/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::OK);
        for submission in submissions {
            let status = submission.await.unwrap();
            assert!(
                status == StatusCode::CREATED || status.is_client_error(),
                "a submission answered {status}"
            );
        }
        let jobs = app
            .get_items(&admin, &format!("/api/admins/jobs?submitted_by={user_id}"))
            .await;
        let alive: Vec<&serde_json::Value> = jobs
            .iter()
            .filter(|job| job["status"] == "queued" || job["status"] == "assigned")
            .collect();
        assert!(alive.is_empty(), "round {round}: jobs outlived the deletion: {alive:?}");
    }
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

/// Items 3 and 5: a runner's result may name only files stored for its
/// job by its machine (a native result naming another user's file made it
/// readable by the job's submitter); a result for a deleted submitter's
/// job is not kept (the job is cancelled, the machine free); native
/// results and progress messages are sealed in the log under the
/// submitter's key and gone from the read models with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_name_only_their_own_files_and_die_with_their_submitter() {
    let mut config = test_config();
    config.runners.progress_record_interval = Duration::ZERO;
    let app = TestApp::start_with(config).await;
    let admin = app.admin_token().await;
    let victim = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let thief = new_user(&app, "thief@example.org").await;
    let secret_file = app
        .http
        .post(app.url("/api/files?name=secret.txt"))
        .bearer_auth(&victim)
        .header("content-type", "text/plain")
        .body("the victim's secret")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let (_, runner) = app.create_runner(&admin).await;
    let job = app
        .submit_job(&thief, serde_json::json!({"task": "steal"}), &[], 0)
        .await;
    assert!(app.request_job(&runner, "m_thief_0001", 0).await.is_some());
    let forged = serde_json::json!({"transcript": {"as_txt": secret_file}});
    assert_error(
        app.post_json(
            &runner,
            &format!("/api/runners/jobs/{job}/result"),
            serde_json::json!({"system_id": "m_thief_0001", "outcome": "succeeded", "result": forged}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "foreign_file_reference",
    )
    .await;
    // A forged reference already in the read model (an older release let
    // it in) is not followed either.
    app.db
        .client()
        .await
        .execute(
            "UPDATE jobs SET result = $2 WHERE id = $1",
            &[&job.parse::<uuid::Uuid>().unwrap(), &forged],
        )
        .await
        .unwrap();
    assert_error(
        app.get_json(&thief, &format!("/api/jobs/{job}/result?format=txt"))
            .await,
        StatusCode::NOT_FOUND,
        "result_not_found",
    )
    .await;

    // Progress and result of the thief's job, then the thief is deleted.
    let progress = app
        .post_json(
            &runner,
            &format!("/api/runners/jobs/{job}/progress"),
            serde_json::json!({"system_id": "m_thief_0001", "progress": 0.5, "message": "progress-of-the-thief"}),
        )
        .await;
    assert_eq!(progress.status(), StatusCode::OK);
    let finished = app
        .post_json(
            &runner,
            &format!("/api/runners/jobs/{job}/result"),
            serde_json::json!({"system_id": "m_thief_0001", "outcome": "succeeded",
                               "result": {"found": "result-of-the-thief"}}),
        )
        .await;
    assert_eq!(finished.status(), StatusCode::OK);
    let in_log = app.db.dump("events", "position").await.join("\n");
    for secret in ["progress-of-the-thief", "result-of-the-thief"] {
        assert!(!in_log.contains(secret), "{secret} is readable in the log");
    }
    let view = app.job(&thief, &job).await;
    assert_eq!(view["result"]["found"], "result-of-the-thief");

    // A job of the thief is running when they are deleted: its result is
    // refused, nothing is kept, the machine is free.
    let running = app
        .submit_job(&thief, serde_json::json!({"task": "again"}), &[], 0)
        .await;
    assert!(app.request_job(&runner, "m_thief_0001", 0).await.is_some());
    let deleted = app
        .http
        .delete(app.url("/api/users/me"))
        .bearer_auth(&thief)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_error(
        app.post_json(
            &runner,
            &format!("/api/runners/jobs/{running}/result"),
            serde_json::json!({"system_id": "m_thief_0001", "outcome": "succeeded", "result": {"late": "result"}}),
        )
        .await,
        StatusCode::GONE,
        "user_deleted",
    )
    .await;
    assert_eq!(app.job(&admin, &running).await["status"], "cancelled");
    let everything = app.db.dump_everything().await;
    for secret in ["progress-of-the-thief", "result-of-the-thief", "\"late\""] {
        assert!(!everything.contains(secret), "{secret} outlived its submitter");
    }
    assert!(
        app.request_job(&runner, "m_thief_0001", 0).await.is_none(),
        "the machine is free"
    );
    app.stop().await;
}

/// An upload that sends its headers and a few bytes of a body it says is
/// big, then nothing: a client that keeps the connection open and stalls.
async fn stalled_upload(app: &TestApp, token: &str, declared: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address = app.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /api/files?name=slow.mp3 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: audio/mpeg\r\nContent-Length: {declared}\r\n\r\nID3"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// The status line of what the server answered on `stream`, if anything.
async fn answer_of(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, stream.read(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    Some(text)
}

/// Item 2: an upload holds no database connection while it waits for its
/// client. Thirty stalled uploads (more than the pool's connections) used
/// to make `/api/users/me`, log-ins and readiness answer `503` until they
/// closed; now the service answers, and each stalled upload is given up
/// with `408` after `jobs.upload_idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_hold_no_connection_and_are_given_up() {
    let mut config = test_config();
    config.jobs.upload_idle_timeout = Duration::from_secs(3);
    config.jobs.max_concurrent_uploads = 100;
    let app = TestApp::start_with(config).await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let mut stalled = Vec::new();
    for _ in 0..30 {
        stalled.push(stalled_upload(&app, &user, 5 * 1024 * 1024).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    assert_eq!(app.get_json(&user, "/api/users/me").await.status(), StatusCode::OK);
    assert_eq!(
        app.login(USER_EMAIL, USER_PASSWORD, false).await.status(),
        StatusCode::OK
    );
    let ready = app.http.get(app.url("/api/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answers took {:?}",
        started.elapsed()
    );
    for stream in &mut stalled {
        let answer = answer_of(stream, Duration::from_secs(10)).await.unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 408"), "a stalled upload got: {answer:?}");
        assert!(answer.contains("upload_timed_out"), "{answer}");
    }
    let left: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM files", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "given-up uploads left files behind");
    app.stop().await;
}

/// Item 2: a user's uploads are bounded (twenty 5 MiB uploads of one user
/// were all accepted): at most `jobs.max_concurrent_uploads` at once
/// (429, with Retry-After) and `jobs.max_user_bytes` in all (413, checked
/// against the declared size before a byte is read, and as the bytes
/// arrive when none is declared). Deleting a file makes room; another
/// user is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_uploads_are_bounded_in_number_and_bytes() {
    let mut config = test_config();
    config.jobs.max_concurrent_uploads = 2;
    config.jobs.max_user_bytes = 3 * 1024 * 1024;
    config.jobs.upload_idle_timeout = Duration::from_secs(5);
    let app = TestApp::start_with(config).await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let admin = app.token(ADMIN_EMAIL, ADMIN_PASSWORD, false).await;
    let upload = |token: &str, bytes: Vec<u8>, chunked: bool| {
        let body = if chunked {
            let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
                bytes.chunks(256 * 1024).map(|piece| Ok(piece.to_vec())).collect();
            reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
        } else {
            reqwest::Body::from(bytes)
        };
        app.http
            .post(app.url("/api/files?name=talk.mp3"))
            .bearer_auth(token)
            .header("content-type", "audio/mpeg")
            .body(body)
            .send()
    };
    let mut first = stalled_upload(&app, &user, 1024).await;
    let mut second = stalled_upload(&app, &user, 1024).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = upload(&user, vec![1u8; 1024], false).await.unwrap();
    assert_eq!(
        third
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("5".into())
    );
    assert_error(third, StatusCode::TOO_MANY_REQUESTS, "too_many_uploads").await;
    // Another user uploads meanwhile.
    assert_eq!(
        upload(&admin, vec![1u8; 1024], false).await.unwrap().status(),
        StatusCode::CREATED
    );
    for stream in [&mut first, &mut second] {
        let answer = answer_of(stream, Duration::from_secs(10)).await.unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }

    let two_mib = vec![7u8; 2 * 1024 * 1024];
    let kept: serde_json::Value = upload(&user, two_mib.clone(), false)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_error(
        upload(&user, two_mib.clone(), false).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "storage_quota_exceeded",
    )
    .await;
    assert_error(
        upload(&user, two_mib.clone(), true).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "storage_quota_exceeded",
    )
    .await;
    let deleted = app
        .http
        .delete(app.url(&format!("/api/files/{}", kept["file_id"].as_str().unwrap())))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        upload(&user, two_mib, true).await.unwrap().status(),
        StatusCode::CREATED
    );
    app.stop().await;
}

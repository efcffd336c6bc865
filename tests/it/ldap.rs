//! LDAP providers against a real slapd: logins by any username attribute,
//! admin rights from admin_query, hidden providers, filter injection,
//! sync (on login, CLI, periodic, deletion of users gone from the
//! directory).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use warden::platform::config::{Config, LdapProviderConfig, LdapQuery, LdapServiceAccount};
use warden::platform::secrets::Secret;

use crate::harness::*;
use crate::ldap_server::{LdapServer, SERVICE_DN, SERVICE_PASSWORD};

const PEOPLE: &str = "ou=people,dc=example,dc=org";

fn provider(url: &str) -> LdapProviderConfig {
    LdapProviderConfig {
        server_address: url.to_owned(),
        starttls: false,
        ca_file: None,
        service_account_auth: LdapServiceAccount {
            user: SERVICE_DN.into(),
            password: Secret::new(SERVICE_PASSWORD),
        },
        username_attributes: vec!["uid".into(), "mail".into()],
        uid_attribute: "uid".into(),
        mail_attribute: "mail".into(),
        user_query: LdapQuery {
            base_dn: PEOPLE.into(),
            filter: "(objectClass=inetOrgPerson)".into(),
        },
        admin_query: Some(LdapQuery {
            base_dn: PEOPLE.into(),
            filter: "(memberOf=cn=admins,ou=groups,dc=example,dc=org)".into(),
        }),
        scope_mappings: Vec::new(),
        hidden: false,
        icon_url: Some("https://example.org/ldap.svg".into()),
        sync_interval: Duration::ZERO,
        sync_del_old_users: false,
        sync_user_on_login: true,
        timeout: Duration::from_secs(5),
    }
}

fn config_with(providers: Vec<(&str, LdapProviderConfig)>) -> Config {
    let mut config = test_config();
    for (name, provider) in providers {
        config.ldap_providers.insert(name.to_owned(), provider);
    }
    config
}

async fn ldap_login(app: &TestApp, provider: &str, username: &str, password: &str, admin: bool) -> reqwest::Response {
    let scope = if admin { "&scope=admin" } else { "" };
    app.http
        .post(app.url(&format!("/api/ldap/login/{}", urlencode(provider).replace('+', "%20"))))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password{scope}&username={}&password={}",
            urlencode(username),
            urlencode(password)
        ))
        .send()
        .await
        .unwrap()
}

async fn ldap_token(app: &TestApp, provider: &str, username: &str, password: &str, admin: bool) -> String {
    let response = ldap_login(app, provider, username, password, admin).await;
    assert_eq!(response.status(), StatusCode::OK, "LDAP login of {username}");
    response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn me(app: &TestApp, token: &str) -> Value {
    app.get_json(token, "/api/users/me").await.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_logins_grant_admin_only_to_admins_and_resist_filter_injection() {
    let directory = LdapServer::start();
    let mut hidden = provider(&directory.url);
    hidden.hidden = true;
    let app = TestApp::start_with(config_with(vec![
        ("corp", provider(&directory.url)),
        ("corp admins", hidden),
    ]))
    .await;

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
        options["ldap"],
        json!([{"name": "corp", "icon_url": "https://example.org/ldap.svg", "login_url": "/api/ldap/login/corp"}])
    );

    // A normal user, by uid or by mail: the same warden user.
    let alice = ldap_token(&app, "corp", "alice", "alice-password", false).await;
    let alice_me = me(&app, &alice).await;
    assert_eq!(alice_me["email"], "alice@example.org");
    assert_eq!(alice_me["role"], "user");
    let by_mail = ldap_token(&app, "corp", "Alice@Example.org", "alice-password", false).await;
    assert_eq!(me(&app, &by_mail).await["id"], alice_me["id"]);
    assert_error(
        ldap_login(&app, "corp", "alice", "alice-password", true).await,
        StatusCode::FORBIDDEN,
        "admin_scope_denied",
    )
    .await;
    assert_error(
        ldap_login(&app, "corp", "alice", "wrong", false).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;

    // An admin (member of the admins group) asks for and gets admin rights.
    let bob = ldap_token(&app, "corp", "bob", "bob-password", true).await;
    assert_eq!(me(&app, &bob).await["admin_scope"], true);
    assert_eq!(
        app.post_json(&bob, "/api/admins/create_runner", json!({}))
            .await
            .status(),
        StatusCode::CREATED
    );
    // The hidden provider is not advertised, but works: it checks the
    // password; bob through it is another identity, whose address is
    // already bob's through `corp` (an address belongs to one user).
    assert_error(
        ldap_login(&app, "corp admins", "bob", "wrong", true).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_error(
        ldap_login(&app, "corp admins", "bob", "bob-password", true).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    // Special characters in the uid and the DN.
    let zoe = ldap_token(&app, "corp", "zoe+o'neil", "zoe-password", false).await;
    assert_eq!(me(&app, &zoe).await["email"], "zoe.oneil@example.org");

    // Filter injection: typed text is escaped, so these match nobody.
    for username in ["*", "*)(uid=*", "alice)(|(uid=*", "a*", "mall*", "*)(|(objectClass=*"] {
        for password in ["alice-password", "mallory-password", "x"] {
            let response = ldap_login(&app, "corp", username, password, false).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{username:?} / {password:?}"
            );
        }
    }
    // A uid that really contains `*` matches only itself.
    ldap_token(&app, "corp", "mallory*", "mallory-password", false).await;

    assert_error(
        ldap_login(&app, "nope", "alice", "alice-password", false).await,
        StatusCode::NOT_FOUND,
        "unknown_provider",
    )
    .await;

    // Directory users are users of the log, their personal data sealed.
    let users = app.get_items(&bob, "/api/admins/users?provider=ldap:corp").await;
    assert_eq!(users.len(), 4, "{users:?}");
    // The audit trail says from where each link came (the login request).
    let audit: Value = app
        .get_json(&bob, "/api/admins/audit?type=LdapUserLinked")
        .await
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    // Four users of `corp`; bob through the hidden provider was not linked
    // (his address is taken).
    assert_eq!(entries.len(), 4);
    for entry in entries {
        assert_eq!(entry["source_ip"], "127.0.0.1", "{entry}");
        assert!(entry["request_id"].is_string(), "{entry}");
        assert!(
            entry["actor"]["component"].as_str().unwrap().starts_with("ldap-login:"),
            "{entry}"
        );
    }
    let events = app.db.dump("events", "position").await.join("\n");
    assert!(events.contains("LdapUserLinked"));
    for secret in ["alice@example.org", "alice-password", SERVICE_PASSWORD] {
        assert!(!events.contains(secret), "{secret} in the log");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_sync_links_updates_and_deletes_users() {
    let directory = LdapServer::start();
    let mut corp = provider(&directory.url);
    corp.sync_user_on_login = false;
    corp.sync_del_old_users = true;
    let app = TestApp::start_with(config_with(vec![("corp", corp)])).await;

    assert_error(
        ldap_login(&app, "corp", "alice", "alice-password", false).await,
        StatusCode::UNAUTHORIZED,
        "user_not_synced",
    )
    .await;
    let report = warden::identity::ldap::sync(&app.state.identity, "corp").await.unwrap();
    assert_eq!((report.linked, report.updated, report.deleted), (4, 0, 0), "{report:?}");
    let alice = ldap_token(&app, "corp", "alice", "alice-password", false).await;
    let mallory = ldap_token(&app, "corp", "mallory*", "mallory-password", false).await;
    ldap_token(&app, "corp", "bob", "bob-password", true).await;

    // The directory changes: a new email, an admin leaves the group, a
    // user leaves.
    directory.modify(
        "dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: mail\nmail: alice.new@example.org\n\n\
         dn: cn=admins,ou=groups,dc=example,dc=org\nchangetype: modify\nreplace: member\nmember: uid=zoe\\+o'neil,ou=people,dc=example,dc=org\n",
    );
    directory.delete("uid=mallory*,ou=people,dc=example,dc=org");
    let report = warden::identity::ldap::sync(&app.state.identity, "corp").await.unwrap();
    assert_eq!((report.linked, report.updated, report.deleted), (0, 3, 1), "{report:?}");
    assert_eq!(me(&app, &alice).await["email"], "alice.new@example.org");
    assert_error(
        ldap_login(&app, "corp", "bob", "bob-password", true).await,
        StatusCode::FORBIDDEN,
        "admin_scope_denied",
    )
    .await;
    ldap_token(&app, "corp", "zoe+o'neil", "zoe-password", true).await;
    assert_error(
        app.get_json(&mallory, "/api/users/me").await,
        StatusCode::UNAUTHORIZED,
        "user_not_found",
    )
    .await;
    let again = warden::identity::ldap::sync(&app.state.identity, "corp").await.unwrap();
    assert_eq!(
        (again.linked, again.updated, again.deleted, again.unchanged),
        (0, 0, 0, 3),
        "{again:?}"
    );

    // `warden ldap sync` on the command line, with a config file.
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("warden.yaml");
    std::fs::write(
        &config_file,
        format!(
            "ldap_providers:\n  corp:\n    server_address: {}\n    service_account_auth:\n      user: {SERVICE_DN}\n      password: ${{LDAP_SERVICE_PASSWORD}}\n    username_attributes: [uid, mail]\n    uid_attribute: uid\n    mail_attribute: mail\n    user_query:\n      base_dn: {PEOPLE}\n      filter: (objectClass=inetOrgPerson)\n",
            directory.url
        ),
    )
    .unwrap();
    let output = warden_command()
        .args([
            "--config",
            config_file.to_str().unwrap(),
            "--database-url",
            &app.db.url(),
            "ldap",
            "sync",
        ])
        .env("LDAP_SERVICE_PASSWORD", SERVICE_PASSWORD)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["provider"], "corp");
    assert_eq!(printed["linked"], 0);
    // The read models rebuilt from this log equal the live ones.
    let report = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_ldap_sync_and_an_unreachable_directory() {
    let directory = LdapServer::start();
    let mut corp = provider(&directory.url);
    corp.sync_interval = Duration::from_millis(500);
    let gone = provider("ldap://127.0.0.1:1");
    let app = TestApp::start_with(config_with(vec![("corp", corp), ("gone", gone)])).await;
    let admin = app.admin_token().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app
        .get_items(&admin, "/api/admins/users?provider=ldap:corp")
        .await
        .len()
        < 4
    {
        assert!(std::time::Instant::now() < deadline, "the periodic sync never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_error(
        ldap_login(&app, "gone", "alice", "alice-password", false).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "ldap_unavailable",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_and_starttls_check_the_servers_certificate() {
    let directory = LdapServer::start_with_tls();
    let ca = directory.ca_file.clone().unwrap();
    let tls_url = directory.tls_url.clone().unwrap();
    let mut ldaps = provider(&tls_url);
    ldaps.ca_file = Some(ca.clone());
    let mut starttls = provider(&directory.url);
    starttls.starttls = true;
    starttls.ca_file = Some(ca);
    // The test CA is not in the system's trust store.
    let untrusted = provider(&tls_url);
    let app = TestApp::start_with(config_with(vec![
        ("ldaps", ldaps),
        ("starttls", starttls),
        ("untrusted", untrusted),
    ]))
    .await;
    // Two users: one address belongs to one warden user, and each
    // provider is another identity.
    ldap_token(&app, "ldaps", "alice", "alice-password", false).await;
    ldap_token(&app, "starttls", "zoe+o'neil", "zoe-password", false).await;
    assert_error(
        ldap_login(&app, "untrusted", "alice", "alice-password", false).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "ldap_unavailable",
    )
    .await;
    app.stop().await;
}

/// Issue 26: a directory group maps to a warden scope role, given at
/// log-in and kept in step by the sync; a grant made through the API is
/// left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_groups_give_scope_roles_at_login_and_the_sync_takes_them_back() {
    let directory = LdapServer::start();
    let mut corp = provider(&directory.url);
    corp.scope_mappings = vec![warden::platform::config::LdapScopeMapping {
        query: LdapQuery {
            base_dn: PEOPLE.into(),
            filter: "(memberOf=cn=physics-leads,ou=groups,dc=example,dc=org)".into(),
        },
        scope: "group:physics".into(),
        role: warden::events::scope::ScopeRole::Manager,
    }];
    let app = TestApp::start_with(config_with(vec![("corp", corp)])).await;
    let admin = app.admin_token().await;
    let created = app
        .post_json(&admin, "/api/scopes/groups", json!({"name": "physics"}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let new_runner = json!({"scope": "group:physics"});

    // alice is in the directory group: a manager from her first log-in.
    let alice = ldap_token(&app, "corp", "alice", "alice-password", false).await;
    let response = app.post_json(&alice, "/api/scopes/runners", new_runner.clone()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    // bob is not; an admin makes him a member by hand.
    let bob = ldap_token(&app, "corp", "bob", "bob-password", false).await;
    assert_error(
        app.post_json(&bob, "/api/scopes/runners", new_runner.clone()).await,
        StatusCode::NOT_FOUND,
        "scope_not_found",
    )
    .await;
    let bob_id = me(&app, &bob).await["id"].as_str().unwrap().to_owned();
    let granted = app
        .http
        .put(app.url("/api/scopes/members"))
        .bearer_auth(&admin)
        .json(&json!({"scope": "group:physics", "user": bob_id, "role": "member"}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), StatusCode::OK);

    // The group now holds bob instead of alice: the next sync ends alice's
    // managing, and leaves bob's grant as the admin made it.
    directory.modify(
        "dn: cn=physics-leads,ou=groups,dc=example,dc=org\nchangetype: modify\nreplace: member\nmember: uid=bob,ou=people,dc=example,dc=org\n",
    );
    warden::identity::ldap::sync(&app.state.identity, "corp").await.unwrap();
    assert_error(
        app.post_json(&alice, "/api/scopes/runners", new_runner.clone()).await,
        StatusCode::NOT_FOUND,
        "scope_not_found",
    )
    .await;
    let members: Vec<Value> = app
        .get_json(&admin, "/api/scopes/members?scope=group:physics")
        .await
        .json()
        .await
        .unwrap();
    let members: Vec<(&str, &str, &str)> = members
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap(),
                m["role"].as_str().unwrap(),
                m["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(members, [("bob@example.org", "member", "api")]);
    app.stop().await;
}

/// Issue 26's scenario (docs/scopes.md, step by step): two teams, each
/// with a manager from an LDAP group, their own runners, and a shared
/// instance runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_teams_with_managers_from_ldap_groups_share_an_instance_runner() {
    let directory = LdapServer::start();
    let mut corp = provider(&directory.url);
    let lead_of = |group: &str, scope: &str| warden::platform::config::LdapScopeMapping {
        query: LdapQuery {
            base_dn: PEOPLE.into(),
            filter: format!("(memberOf=cn={group},ou=groups,dc=example,dc=org)"),
        },
        scope: scope.into(),
        role: warden::events::scope::ScopeRole::Manager,
    };
    corp.scope_mappings = vec![
        lead_of("physics-leads", "group:physics"),
        lead_of("chem-leads", "group:chem"),
    ];
    let app = TestApp::start_with(config_with(vec![("corp", corp)])).await;
    // 1. An admin makes the groups and the shared instance runner.
    let admin = app.admin_token().await;
    for name in ["physics", "chem"] {
        let created = app.post_json(&admin, "/api/scopes/groups", json!({"name": name})).await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let (_, shared) = app.create_runner(&admin).await;
    // 2. The leads log in through LDAP: managers by their directory group.
    let alice = ldap_token(&app, "corp", "alice", "alice-password", false).await;
    let bob = ldap_token(&app, "corp", "bob", "bob-password", false).await;
    let runner_of = |token: String, scope: &'static str| {
        let app = &app;
        async move {
            let response = app
                .post_json(&token, "/api/scopes/runners", json!({"scope": scope}))
                .await;
            assert_eq!(response.status(), StatusCode::CREATED, "{scope}");
            response.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let physics = runner_of(alice.clone(), "group:physics").await;
    let chem = runner_of(bob.clone(), "group:chem").await;
    // Neither manages the other team.
    assert_error(
        app.post_json(&alice, "/api/scopes/runners", json!({"scope": "group:chem"}))
            .await,
        StatusCode::NOT_FOUND,
        "scope_not_found",
    )
    .await;
    // 3. Jobs of each team go to its runner or the shared one, never to the
    // other team's.
    assert_eq!(submit_to(&app, &alice, "group:physics").await, StatusCode::CREATED);
    assert!(
        app.request_job(&chem, "chem-1", 0).await.is_none(),
        "chem's runner leaves physics' job"
    );
    let taken = app
        .request_job(&physics, "physics-1", 0)
        .await
        .expect("physics' runner takes it");
    assert_eq!(taken["payload"]["team"], "group:physics");
    assert_eq!(submit_to(&app, &bob, "group:chem").await, StatusCode::CREATED);
    assert!(
        app.request_job(&physics, "physics-2", 0).await.is_none(),
        "physics' runner leaves chem's job"
    );
    let taken = app
        .request_job(&shared, "shared-1", 0)
        .await
        .expect("the shared runner takes it");
    assert_eq!(taken["payload"]["team"], "group:chem");
    app.stop().await;
}

async fn submit_to(app: &TestApp, token: &str, scope: &str) -> StatusCode {
    let body = json!({"payload": {"team": scope}, "scope": scope});
    app.post_json(token, "/api/jobs", body).await.status()
}

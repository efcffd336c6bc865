//! Login and token-validation latency, against real peers: local accounts
//! (argon2id, m = 19456 KiB, t = 2, p = 1), a real slapd (LDAP login), a
//! real OIDC provider (ID token validation), next to `GET /api/health` in
//! the same run as the baseline. 2 concurrent clients (the machine has 2
//! cores).
//!
//!     cargo bench --bench login                 # 15 s per row
//!     BENCH_SECONDS=5 cargo bench --bench login
#![allow(clippy::unwrap_used)] // a benchmark that fails may panic

mod common;

#[path = "../tests/it/ldap_server.rs"]
#[allow(dead_code)]
mod ldap_server;
#[path = "../tests/it/oidc_server.rs"]
#[allow(dead_code)]
mod oidc_server;

use std::time::Duration;

use common::{report, run_clients, Warden};
use reqwest::StatusCode;
use warden::platform::config::{LdapProviderConfig, LdapQuery, LdapServiceAccount, OidcProviderConfig, OidcRole};
use warden::platform::secrets::Secret;

const CLIENTS: usize = 2;

fn ldap_provider(url: &str) -> LdapProviderConfig {
    LdapProviderConfig {
        server_address: url.to_owned(),
        starttls: false,
        ca_file: None,
        service_account_auth: LdapServiceAccount {
            user: ldap_server::SERVICE_DN.into(),
            password: Secret::new(ldap_server::SERVICE_PASSWORD),
        },
        username_attributes: vec!["uid".into(), "mail".into()],
        uid_attribute: "uid".into(),
        mail_attribute: "mail".into(),
        user_query: LdapQuery {
            base_dn: "ou=people,dc=example,dc=org".into(),
            filter: "(objectClass=inetOrgPerson)".into(),
        },
        admin_query: Some(LdapQuery {
            base_dn: "ou=people,dc=example,dc=org".into(),
            filter: "(memberOf=cn=admins,ou=groups,dc=example,dc=org)".into(),
        }),
        scope_mappings: Vec::new(),
        hidden: false,
        icon_url: None,
        sync_interval: Duration::ZERO,
        sync_del_old_users: false,
        sync_user_on_login: true,
        timeout: Duration::from_secs(5),
    }
}

fn main() {
    common::block_on(async {
        let duration = common::duration();
        let (_dir, cluster) = common::cluster().await;
        let directory = ldap_server::LdapServer::start();
        let oidc_port = oidc_server::free_port();
        let issuer = format!("http://127.0.0.1:{oidc_port}");
        let ldap_url = directory.url.clone();
        let oidc_issuer = issuer.clone();
        let warden = Warden::start_with(&cluster, CLIENTS, move |config| {
            config.ldap_providers.insert("corp".into(), ldap_provider(&ldap_url));
            config.oidc_providers.insert(
                "sso".into(),
                OidcProviderConfig {
                    base_url: oidc_issuer,
                    client_id: oidc_server::CLIENT_ID.into(),
                    client_secret: Secret::new(oidc_server::CLIENT_SECRET),
                    user_role: None,
                    admin_role: Some(OidcRole {
                        field_name: "roles".into(),
                        name: "warden-admin".into(),
                    }),
                    hidden: false,
                    icon_url: None,
                    require_verified_email: true,
                    scope_mappings: Vec::new(),
                },
            );
            // The benchmark logs in thousands of times from one address.
            config.security.login_throttle.max_failures_per_address = 1_000_000;
        })
        .await;
        let oidc = oidc_server::OidcServer::start(oidc_port, &[format!("{}/api/oidc/callback/sso", warden.base)]);

        // An OIDC user linked through warden's own code flow, then the
        // provider's ID token for them.
        let browser = oidc_server::browser();
        let start = browser
            .get(format!("{}/api/oidc/login/sso", warden.base))
            .send()
            .await
            .unwrap();
        let authorize = start.headers()["location"].to_str().unwrap().to_owned();
        let back = oidc_server::log_in_at_provider(&browser, &oidc.issuer, &authorize, "root").await;
        assert_eq!(browser.get(back).send().await.unwrap().status(), StatusCode::OK);
        let id_token = oidc_server::id_token_for(&oidc.issuer, oidc_server::CLIENT_ID, "root").await;

        let base = warden.base.clone();
        let http = warden.http.clone();
        let user_token = warden.admin.clone();
        let get = |path: &'static str, token: Option<String>| {
            let (http, url) = (http.clone(), format!("{base}{path}"));
            move |_| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                async move {
                    let mut request = http.get(&url);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    assert_eq!(request.send().await.unwrap().status(), StatusCode::OK);
                }
            }
        };
        let login = |path: String, username: &'static str, password: &'static str| {
            let http = http.clone();
            move |_| {
                let (http, url) = (http.clone(), path.clone());
                async move {
                    let response = http
                        .post(&url)
                        .form(&[
                            ("grant_type", "password"),
                            ("username", username),
                            ("password", password),
                        ])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                }
            }
        };
        let results = vec![
            run_clients(
                "GET /api/health (baseline)",
                CLIENTS,
                duration,
                get("/api/health", None),
            )
            .await,
            run_clients(
                "warden access token check (GET /api/users/me)",
                CLIENTS,
                duration,
                get("/api/users/me", Some(user_token)),
            )
            .await,
            run_clients(
                "OIDC ID token check, RS256 (GET /api/users/me)",
                CLIENTS,
                duration,
                get("/api/users/me", Some(id_token)),
            )
            .await,
            run_clients(
                "local login, argon2id m=19456 KiB t=2 p=1",
                CLIENTS,
                duration,
                login(
                    format!("{base}/api/local-account/login"),
                    "bench-admin@example.org",
                    common::ADMIN_PASSWORD,
                ),
            )
            .await,
            run_clients(
                "LDAP login (slapd: service bind, 2 searches, user bind)",
                CLIENTS,
                duration,
                login(format!("{base}/api/ldap/login/corp"), "bob", "bob-password"),
            )
            .await,
            run_clients(
                "GET /api/health (baseline, after)",
                CLIENTS,
                duration,
                get("/api/health", None),
            )
            .await,
        ];
        report("Login and token validation (2 concurrent clients)", &results, &[0, 5]);
        drop(oidc);
        drop(directory);
        warden.stop().await;
    });
}

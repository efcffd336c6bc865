//! A real OpenID Connect provider (npm `oidc-provider`, tests/oidc/) on a
//! private loopback port, plus a browser-like client that walks its
//! authorization-code flow. Stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Digest;

pub const CLIENT_ID: &str = "warden";
pub const CLIENT_SECRET: &str = "warden-client-secret";
/// A redirect URI the provider accepts that the tests' own client uses.
pub const TEST_CLIENT_REDIRECT: &str = "http://127.0.0.1:9/test-client";

pub struct OidcServer {
    pub issuer: String,
    child: Child,
}

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// A free loopback port, for configuring warden before the provider runs.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl OidcServer {
    pub fn start(port: u16, warden_callbacks: &[String]) -> OidcServer {
        assert!(
            folder().join("node_modules/oidc-provider").exists(),
            "tests/oidc/node_modules is missing: run .ci/install-deps (npm ci in tests/oidc)"
        );
        let mut redirects: Vec<String> = warden_callbacks.to_vec();
        redirects.push(TEST_CLIENT_REDIRECT.into());
        let mut child = Command::new("node")
            .arg(folder().join("provider.mjs"))
            .env("PORT", port.to_string())
            .env("REDIRECT_URIS", serde_json::to_string(&redirects).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node must be installed for the OIDC tests");
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the OIDC provider did not start");
        // Keep draining: a closed pipe would kill node at its next log line.
        std::thread::spawn(move || std::io::copy(&mut output, &mut std::io::sink()));
        OidcServer {
            issuer: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser: keeps cookies, does not follow redirects by itself.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    assert!(
        response.status().is_redirection(),
        "expected a redirect, got {}",
        response.status()
    );
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// From the provider's authorization URL to the redirect back to the
/// client: the provider's login (as `account`) and consent.
pub async fn log_in_at_provider(browser: &reqwest::Client, issuer: &str, authorize_url: &str, account: &str) -> String {
    let to_interaction = browser.get(authorize_url).send().await.unwrap();
    let interaction = location(&to_interaction);
    let interaction = if interaction.starts_with('/') {
        format!("{issuer}{interaction}")
    } else {
        interaction
    };
    let finished = browser
        .get(format!("{interaction}/login?account={account}"))
        .send()
        .await
        .unwrap();
    let resume = location(&finished);
    let back = browser.get(resume).send().await.unwrap();
    location(&back)
}

/// An ID token issued by the provider to `client_id` for `account`,
/// obtained as an ordinary OIDC client would (code flow with PKCE).
pub async fn id_token_for(issuer: &str, client_id: &str, account: &str) -> String {
    let browser = browser();
    let verifier = "a-test-client-pkce-verifier-that-is-long-enough-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier));
    let authorize = format!(
        "{issuer}/auth?client_id={client_id}&response_type=code&scope=openid%20email%20profile\
         &redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&nonce=n0nce&state=st4te",
        url::form_urlencoded::byte_serialize(TEST_CLIENT_REDIRECT.as_bytes()).collect::<String>()
    );
    let back = log_in_at_provider(&browser, issuer, &authorize, account).await;
    let code = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    let response = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(client_id, Some(format!("{client_id}-client-secret")))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", TEST_CLIENT_REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["id_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

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

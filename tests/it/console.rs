//! The admin console in a real browser: Debian's chromium, headless,
//! driven by tests/console/e2e.mjs (npm playwright-core) through a real
//! warden.

use std::process::Command;

use crate::harness::*;

/// Runs `script` (in tests/console) against `app` with chromium; panics
/// with its output unless it met all its expectations.
async fn run_in_browser(app: &TestApp, script: &str) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    assert!(
        std::path::Path::new(&chromium).exists() && folder.join("node_modules/playwright-core").is_dir(),
        "chromium ({chromium}) or tests/console/node_modules is missing: run .ci/install-deps"
    );
    let run = {
        let mut command = Command::new("node");
        command
            .arg(script)
            .current_dir(&folder)
            .env("WARDEN_URL", &app.base_url)
            .env("ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("USER_EMAIL", USER_EMAIL)
            .env("USER_PASSWORD", USER_PASSWORD)
            .env("CHROMIUM", &chromium);
        tokio::task::spawn_blocking(move || command.output())
    };
    let output = tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .expect("the browser run ended within 3 minutes")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all expectations met"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser_for_admins_support_and_users() {
    let app = TestApp::start().await;
    run_in_browser(&app, "e2e.mjs").await;
    app.stop().await;
}

/// Single sign-on through a real OIDC provider: its admin gets the
/// console, its user asking for admin rights is told why not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_through_an_oidc_provider() {
    let (app, _provider) = crate::oidc::start().await;
    run_in_browser(&app, "e2e-oidc.mjs").await;
    app.stop().await;
}

//! schemathesis (`st run /openapi.json --checks all`) against a real warden:
//! every operation fuzzed with the kind of token it is for (admin, user,
//! runner, and a user of its own for log-out and self-deletion), every
//! check on. The suite fails on any failure. Configuration and the reasons
//! for its few allowances: tests/schemathesis/schemathesis.toml.
//!
//! The module is named to sort first: libtest starts tests in name order,
//! and this is the suite's longest test (about two minutes). Started last,
//! it was the whole suite's tail; started first, the others run beside it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use warden::events::user::{Role, UserOrigin};
use warden::events::Metadata;
use warden::platform::secrets::Secret;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_holds_under_schemathesis() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let st = folder.join(".venv/bin/st");
    assert!(
        st.is_file(),
        "schemathesis is not installed: run .ci/install-deps (it makes {})",
        st.display()
    );
    let mut config = test_config();
    // Long polls answer within a second: the fuzzer asks for long waits.
    config.runners.long_poll_max = Duration::from_secs(1);
    let app = TestApp::start_with(config).await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let password = "disposable user password";
    warden::identity::accounts::add_local_user(
        &app.state.commands,
        "disposable@example.org",
        &Secret::new(password),
        Role::User,
        UserOrigin::CommandLine,
        &Metadata::system("test"),
    )
    .await
    .unwrap();
    let disposable = app.token("disposable@example.org", password, false).await;
    let (_, runner) = app.create_runner(&admin).await;

    let output = Command::new(&st)
        .current_dir(&folder)
        .args([
            "run",
            &app.url("/openapi.json"),
            "--checks",
            "all",
            "--seed",
            "1",
            "--no-color",
        ])
        .env("WARDEN_ADMIN_TOKEN", &admin)
        .env("WARDEN_USER_TOKEN", &user)
        .env("WARDEN_DISPOSABLE_TOKEN", &disposable)
        .env("WARDEN_RUNNER_TOKEN", &runner)
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    let summary: String = report
        .lines()
        .rev()
        .take(25)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains(" passed"), "{summary}");
    eprintln!("{summary}");
    app.stop().await;
}

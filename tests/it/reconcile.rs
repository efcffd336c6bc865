//! `warden runner reconcile` against a running warden, stateful and
//! stateless, and its exit codes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use reqwest::StatusCode;

use crate::harness::*;

const TEMPLATE: &str = "concurrent = 2\n\n[[runners]]\nname = \"{hostname}-shell\"\ntoken = \"{shell}\"\n\n[[runners]]\nname = \"{hostname}-batch\"\ntoken = \"{batch}\"\n";

fn prefix_with_credentials(password: &str) -> tempfile::TempDir {
    let prefix = tempfile::tempdir().unwrap();
    std::fs::write(prefix.path().join("config.template"), TEMPLATE).unwrap();
    std::fs::write(
        prefix.path().join("admin-credentials"),
        format!("{ADMIN_EMAIL}\n{password}\n"),
    )
    .unwrap();
    prefix
}

fn reconcile(app_url: &str, prefix: &Path, extra: &[&str]) -> Output {
    warden_command()
        .args(["runner", "reconcile", "--api-url", app_url, "--prefix"])
        .arg(prefix)
        .args(["--hostname", "build-host-1"])
        .args(extra)
        .env_remove("WARDEN_CONFIG")
        .output()
        .unwrap()
}

fn runner_data(prefix: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    serde_json::from_slice(&std::fs::read(prefix.join("runner-data.json")).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_reconcile_keeps_valid_tokens_and_replaces_dead_ones() {
    let app = TestApp::start().await;
    let prefix = prefix_with_credentials(ADMIN_PASSWORD);

    let first = reconcile(&app.base_url, prefix.path(), &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("shell: created a new runner") && stdout.contains("batch: created a new runner"),
        "{stdout}"
    );
    let data = runner_data(prefix.path());
    let config = std::fs::read_to_string(prefix.path().join("config.toml")).unwrap();
    for runner_type in ["shell", "batch"] {
        let token = &data[runner_type]["token"];
        assert!(config.contains(&format!("token = \"{token}\"")), "{config}");
        assert_eq!(app.verify_runner(token).await.status(), StatusCode::OK);
    }
    assert!(config.contains("name = \"build-host-1-shell\""));
    assert_eq!(mode(&prefix.path().join("config.toml")), 0o600);
    assert_eq!(mode(&prefix.path().join("runner-data.json")), 0o600);

    // Nothing wrong: nothing changes.
    let second = reconcile(&app.base_url, prefix.path(), &[]);
    assert!(second.status.success());
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        stdout.contains("shell: token valid") && stdout.contains("config.toml unchanged"),
        "{stdout}"
    );
    assert_eq!(runner_data(prefix.path()), data);

    // The shell runner is invalidated: only it is replaced.
    let admin = app.admin_token().await;
    assert_eq!(
        app.invalidate_runner(&admin, &data["shell"]["id"]).await.status(),
        StatusCode::OK
    );
    let third = reconcile(&app.base_url, prefix.path(), &[]);
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    let stdout = String::from_utf8_lossy(&third.stdout);
    assert!(
        stdout.contains("shell: created a new runner") && stdout.contains("batch: token valid"),
        "{stdout}"
    );
    let renewed = runner_data(prefix.path());
    assert_ne!(renewed["shell"]["token"], data["shell"]["token"]);
    assert_eq!(renewed["batch"], data["batch"]);
    assert_eq!(
        app.verify_runner(&renewed["shell"]["token"]).await.status(),
        StatusCode::OK
    );
    assert!(std::fs::read_to_string(prefix.path().join("config.toml"))
        .unwrap()
        .contains(&renewed["shell"]["token"]));

    // The new runners carry the host and type tags.
    let runners = app.get_items(&admin, "/api/admins/runners").await;
    let shell = runners
        .iter()
        .find(|r| r["id"] == renewed["shell"]["id"].as_str())
        .unwrap();
    assert_eq!(shell["tags"], serde_json::json!(["build-host-1", "shell"]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_reconcile_finds_runners_by_host_tag() {
    let app = TestApp::start().await;
    let prefix = prefix_with_credentials(ADMIN_PASSWORD);

    let first = reconcile(&app.base_url, prefix.path(), &["--stateless"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(
        !prefix.path().join("runner-data.json").exists(),
        "stateless keeps no state file"
    );
    let config = std::fs::read_to_string(prefix.path().join("config.toml")).unwrap();
    let tokens: Vec<&str> = config
        .lines()
        .filter_map(|l| l.strip_prefix("token = \"").and_then(|t| t.strip_suffix('"')))
        .collect();
    assert_eq!(tokens.len(), 2);

    // Again: the same two runners are found and get fresh tokens.
    let second = reconcile(&app.base_url, prefix.path(), &["--stateless"]);
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("shell: reset the token"));
    let admin = app.admin_token().await;
    let runners = app.get_items(&admin, "/api/admins/runners").await;
    assert_eq!(runners.len(), 2, "no duplicate runners");
    for old in &tokens {
        assert_error(
            app.verify_runner(old).await,
            StatusCode::UNAUTHORIZED,
            "invalid_runner_token",
        )
        .await;
    }
    let config = std::fs::read_to_string(prefix.path().join("config.toml")).unwrap();
    for line in config
        .lines()
        .filter_map(|l| l.strip_prefix("token = \"").and_then(|t| t.strip_suffix('"')))
    {
        assert_eq!(app.verify_runner(line).await.status(), StatusCode::OK);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_exit_codes_say_what_is_wrong() {
    let app = TestApp::start().await;
    // Wrong admin password: 4.
    let prefix = prefix_with_credentials("not the admin password");
    let refused = reconcile(&app.base_url, prefix.path(), &[]);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).starts_with("warden-reconcile: "));
    // No admin access at all when a runner is needed: 2.
    std::fs::remove_file(prefix.path().join("admin-credentials")).unwrap();
    let missing = reconcile(&app.base_url, prefix.path(), &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("admin-token"));
    // A broken template: 2.
    let broken = prefix_with_credentials(ADMIN_PASSWORD);
    std::fs::write(broken.path().join("config.template"), "token = \"{shell\"").unwrap();
    assert_eq!(reconcile(&app.base_url, broken.path(), &[]).status.code(), Some(2));
    app.stop().await;
    // Nobody listening: 3.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let fine = prefix_with_credentials(ADMIN_PASSWORD);
    assert_eq!(reconcile(&dead, fine.path(), &[]).status.code(), Some(3));
}

/// Symbolic links planted where the temporary files used to be (a
/// predictable name) do not receive the tokens; world-readable admin
/// credentials are warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_follows_no_planted_link_and_warns_about_readable_credentials() {
    let app = TestApp::start().await;
    let prefix = prefix_with_credentials(ADMIN_PASSWORD);
    std::fs::set_permissions(
        prefix.path().join("admin-credentials"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let trap = tempfile::NamedTempFile::new().unwrap();
    for planted in [
        "config.tmp",
        "runner-data.tmp",
        ".config.toml.tmp",
        ".runner-data.json.tmp",
    ] {
        std::os::unix::fs::symlink(trap.path(), prefix.path().join(planted)).unwrap();
    }
    let output = reconcile(&app.base_url, prefix.path(), &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        std::fs::read(trap.path()).unwrap(),
        b"",
        "tokens reached a planted link"
    );
    let config = std::fs::read_to_string(prefix.path().join("config.toml")).unwrap();
    assert!(config.contains("wdrt_"));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("readable by other users"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    app.stop().await;
}

/// Issue 26: `--scope` creates and finds the host's runners in a project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_makes_and_finds_the_runners_of_a_scope() {
    let app = TestApp::start().await;
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
    let prefix = prefix_with_credentials(ADMIN_PASSWORD);
    let scoped = ["--stateless", "--scope", "project:physics/lattice-qcd"];
    // Instance runners of this host with the same tags are not the
    // project's.
    let instance = reconcile(&app.base_url, prefix.path(), &["--stateless"]);
    assert!(
        instance.status.success(),
        "{}",
        String::from_utf8_lossy(&instance.stderr)
    );
    for round in 0..2 {
        let output = reconcile(&app.base_url, prefix.path(), &scoped);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8_lossy(&output.stdout);
        if round == 1 {
            assert!(stdout.contains("shell: reset the token"), "{stdout}");
        }
    }
    let runners = app
        .get_items(&admin, "/api/scopes/runners?scope=project:physics/lattice-qcd")
        .await;
    assert_eq!(
        runners.len(),
        2,
        "one runner per type in the project, found again the second time"
    );
    let all = app.get_items(&admin, "/api/admins/runners").await;
    assert_eq!(all.len(), 4, "and the two instance runners beside them");
    let unknown = reconcile(
        &app.base_url,
        prefix.path(),
        &["--stateless", "--scope", "project:physics/nope"],
    );
    assert!(!unknown.status.success());
    app.stop().await;
}

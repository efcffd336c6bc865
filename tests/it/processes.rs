//! The real `warden` binary: embedded default, secrets at rest and in
//! logs, the command line, configuration errors.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::*;

/// A `warden serve` child process with its log captured.
pub(crate) struct Serve {
    child: Child,
    pub(crate) base_url: String,
    log: Arc<Mutex<String>>,
}

impl Serve {
    pub(crate) fn start(args: &[&str], envs: &[(&str, &str)]) -> Serve {
        let mut command = warden_command();
        command
            .args(args)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("WARDEN_DATABASE_URL")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn warden");
        let log = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            let url_tx = url_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(at) = line.find("warden listening on http://") {
                        let url = line[at + "warden listening on ".len()..].trim().to_owned();
                        let _ = url_tx.send(url);
                    }
                    log.lock().unwrap().push_str(&line);
                    log.lock().unwrap().push('\n');
                }
            });
        }
        let base_url = match url_rx.recv_timeout(Duration::from_secs(90)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("warden did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Serve { child, base_url, log }
    }

    /// Waits until the log shows `text`.
    fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log.lock().unwrap().contains(text) {
            assert!(
                Instant::now() < deadline,
                "`{text}` never appeared in the log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown of any kind.
    pub(crate) fn kill(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL).unwrap();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status and the whole log.
    pub(crate) fn stop(mut self) -> (bool, String) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "warden did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        (status.success(), log)
    }
}

pub(crate) fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("warden.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

const CONFIG: &str = "security:\n  local_account:\n    mode: no_signup_hidden\n    user_provisioning:\n      0:\n        email: admin@example.org\n        password: ${WARDEN_TEST_ADMIN_PASSWORD}\n        is_admin: true\n";
pub(crate) const PASSWORD: &str = "process test admin password";

pub(crate) async fn login(http: &reqwest::Client, base: &str) -> String {
    let response = password_login(http, base, "admin@example.org", PASSWORD, true).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A folder the cluster's unprivileged OS user can use when tests run as root.
pub(crate) fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("warden-it-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_on_its_embedded_default_and_keeps_data_across_restarts() {
    let dir = shared_tempdir();
    let config = write_config(dir.path(), CONFIG);
    let data_dir = dir.path().join("data");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let envs = [("WARDEN_TEST_ADMIN_PASSWORD", PASSWORD)];
    let http = reqwest::Client::new();

    let serve = Serve::start(&args, &envs);
    let health = http.get(format!("{}/api/health", serve.base_url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let token = login(&http, &serve.base_url).await;
    let created: Value = http
        .post(format!("{}/api/admins/create_runner", serve.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runner_token = created["token"].as_str().unwrap().to_owned();
    let pid_file = data_dir.join("pgdata/postmaster.pid");
    let postgres_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (clean, log) = serve.stop();
    assert!(clean, "unclean exit; log:\n{log}");
    assert!(!pid_file.exists(), "PostgreSQL was not shut down");
    assert!(
        kill(Pid::from_raw(postgres_pid), None).is_err(),
        "postgres still running"
    );

    // The same data folder again: the runner is still known.
    let serve = Serve::start(&args, &envs);
    let verified = http
        .post(format!("{}/api/runners/verify", serve.base_url))
        .bearer_auth(&runner_token)
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), StatusCode::OK);
    let (clean, log) = serve.stop();
    assert!(clean, "unclean exit; log:\n{log}");
}

/// No password, runner token or access token in plain text in the log
/// output, the events table or any read model; no email in the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_events_or_read_models() {
    let db = TestDb::new().await;
    let dir = shared_tempdir();
    let config = write_config(dir.path(), CONFIG);
    let url = db.url();
    let serve = Serve::start(
        &["--config", config.to_str().unwrap(), "--database-url", &url],
        &[("WARDEN_TEST_ADMIN_PASSWORD", PASSWORD)],
    );
    let http = reqwest::Client::new();
    let base = serve.base_url.clone();
    let admin = login(&http, &base).await;
    let created: Value = http
        .post(format!("{base}/api/admins/create_runner"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runner_token = created["token"].as_str().unwrap().to_owned();
    let runner_id = created["id"].as_str().unwrap().to_owned();
    let verify = |token: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            http.post(format!("{base}/api/runners/verify"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(verify(runner_token.clone()).await, StatusCode::OK);
    let invalidated = http
        .delete(format!("{base}/api/admins/invalidate_runner?runner_id={runner_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(invalidated.status(), StatusCode::OK);
    assert_eq!(verify(runner_token.clone()).await, StatusCode::UNAUTHORIZED);
    let wrong = http
        .post(format!("{base}/api/local-account/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=admin%40example.org&password=wrong-guess-password")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let (_, log) = serve.stop();
    assert!(log.contains("create_runner"), "the log should show the requests: {log}");

    let secrets = [
        ("admin password", PASSWORD.to_owned()),
        ("wrong password", "wrong-guess-password".to_owned()),
        ("runner token", runner_token.clone()),
        ("runner token body", runner_token["wdrt_".len()..].to_owned()),
        ("access token signature", admin.rsplit('.').next().unwrap().to_owned()),
    ];
    for (what, secret) in &secrets {
        assert!(!log.contains(secret.as_str()), "{what} found in the log");
    }

    let client = db.client().await;
    let tables: Vec<String> = client
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(tables.contains(&"events".to_owned()) && tables.contains(&"runners".to_owned()));
    for table in &tables {
        let dump = db.dump(table, "1").await.join("\n");
        for (what, secret) in &secrets {
            assert!(!dump.contains(secret.as_str()), "{what} found in table {table}");
        }
    }
    let events = db.dump("events", "position").await.join("\n");
    assert!(
        !events.contains("admin@example.org"),
        "an email in plain text in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_adds_and_deletes_users_while_a_server_runs() {
    let app = TestApp::start().await;
    let url = app.db.url();
    let add = warden_command()
        .args([
            "--database-url",
            &url,
            "user",
            "add",
            "cli@example.org",
            "--role",
            "admin",
        ])
        .env("WARDEN_USER_PASSWORD", "cli user password long")
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    assert!(String::from_utf8_lossy(&add.stdout).starts_with("added user "));
    // The server (another instance) sees the user at once.
    assert_eq!(
        app.login("cli@example.org", "cli user password long", true)
            .await
            .status(),
        StatusCode::OK
    );

    let duplicate = warden_command()
        .args(["--database-url", &url, "user", "add", "CLI@example.org"])
        .env("WARDEN_USER_PASSWORD", "cli user password long")
        .output()
        .unwrap();
    assert!(!duplicate.status.success());
    assert!(
        String::from_utf8_lossy(&duplicate.stderr).contains("already in use"),
        "{}",
        String::from_utf8_lossy(&duplicate.stderr)
    );

    let weak = warden_command()
        .args(["--database-url", &url, "user", "add", "weak@example.org"])
        .env("WARDEN_USER_PASSWORD", "short")
        .output()
        .unwrap();
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 12"));

    let del = warden_command()
        .args(["--database-url", &url, "user", "del", "cli@example.org"])
        .output()
        .unwrap();
    assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
    assert_eq!(
        app.login("cli@example.org", "cli user password long", false)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let migrate = warden_command()
        .args(["--database-url", &url, "migrate"])
        .output()
        .unwrap();
    assert!(migrate.status.success());
    assert_eq!(
        String::from_utf8_lossy(&migrate.stdout).trim(),
        "applied 0 migration(s)"
    );
    app.stop().await;
}

#[test]
fn a_bad_config_stops_start_up_naming_the_field() {
    let dir = shared_tempdir();
    let config = write_config(
        dir.path(),
        "security:\n  local_account:\n    user_provisioning:\n      0:\n        email: admin@example.org\n        password: ${WARDEN_SURELY_UNSET_VARIABLE}\n",
    );
    let output = warden_command()
        .args(["--config", config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("security.local_account.user_provisioning.0.password"),
        "{stderr}"
    );
    assert!(stderr.contains("WARDEN_SURELY_UNSET_VARIABLE"), "{stderr}");
}

/// One-shot commands start only the core: `user add` with an LDAP
/// provider that syncs every second never contacts the directory (a
/// listener stands in for it and must see no connection), and `replay
/// --verify` with the README's example config runs without the admin
/// password it does not use, while `serve` still refuses without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_start_no_serve_only_task_and_need_only_their_config() {
    let db = TestDb::new().await;
    let url = db.url();
    let directory = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    directory.set_nonblocking(true).unwrap();
    let dir = shared_tempdir();
    let config = write_config(
        dir.path(),
        &format!(
            "ldap_providers:\n  corp:\n    server_address: ldap://{}\n    service_account_auth:\n      user: cn=svc,dc=example,dc=org\n      password: secret\n    username_attributes: [uid]\n    uid_attribute: uid\n    mail_attribute: mail\n    user_query:\n      base_dn: dc=example,dc=org\n      filter: (objectClass=inetOrgPerson)\n    sync_interval: 1s\n    sync_del_old_users: true\n    timeout: 2s\n",
            directory.local_addr().unwrap()
        ),
    );
    let add = warden_command()
        .args(["--config", config.to_str().unwrap(), "--database-url", &url])
        .args(["user", "add", "oneshot@example.org"])
        .env("WARDEN_USER_PASSWORD", "one shot password long")
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    std::thread::sleep(Duration::from_millis(200));
    match directory.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("`warden user add` contacted the LDAP directory: {other:?}"),
    }

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("warden.example.yaml");
    let replay = warden_command()
        .args(["--config", example.to_str().unwrap(), "--database-url", &url])
        .args(["replay", "--verify"])
        .env_remove("WARDEN_ADMIN_PASSWORD")
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let serve = warden_command()
        .args(["--config", example.to_str().unwrap(), "--database-url", &url])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("WARDEN_ADMIN_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(
        stderr.contains("security.local_account.user_provisioning.0.password")
            && stderr.contains("WARDEN_ADMIN_PASSWORD"),
        "{stderr}"
    );
}

/// The log without debug noise, for failure messages.
pub(crate) fn important_lines(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.starts_with("error"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn job_counts(db: &TestDb) -> (i64, i64) {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE event_type = 'JobRequeued'),
                    (SELECT count(*) FROM jobs WHERE status = 'queued')
             FROM events",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn wait_for_queued(db: &TestDb, queued: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while job_counts(db).await.1 != queued {
        assert!(
            Instant::now() < deadline,
            "jobs were not requeued: {:?}",
            job_counts(db).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The process dies between the invalidation and the re-assignment (inside
/// the reaction's transaction); after restarts and even a replay of the
/// reaction from scratch, every job was requeued exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassignment_is_exactly_once_across_a_crash() {
    let db = TestDb::new().await;
    let dir = shared_tempdir();
    let config = write_config(dir.path(), CONFIG);
    let url = db.url();
    let args = ["--config", config.to_str().unwrap(), "--database-url", &url];
    let password = ("WARDEN_TEST_ADMIN_PASSWORD", PASSWORD);
    let http = reqwest::Client::new();

    let serve = Serve::start(&args, &[password, ("WARDEN_FAILPOINT", "reassignment-before-commit")]);
    let base = serve.base_url.clone();
    let admin = login(&http, &base).await;
    let created: Value = http
        .post(format!("{base}/api/admins/create_runner"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (runner_id, runner_token) = (created["id"].as_str().unwrap(), created["token"].as_str().unwrap());
    for n in 0..2 {
        let submitted = http
            .post(format!("{base}/api/jobs"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"payload": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(submitted.status(), StatusCode::CREATED);
        let taken = http
            .post(format!("{base}/api/runners/jobs/request"))
            .bearer_auth(runner_token)
            .json(&serde_json::json!({"system_id": format!("r_crash{n:07}"), "wait_seconds": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(taken.status(), StatusCode::OK);
    }
    let invalidated = http
        .delete(format!("{base}/api/admins/invalidate_runner?runner_id={runner_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(invalidated.status(), StatusCode::OK);

    // The reaction has written its requeues but not committed: kill -9.
    serve.wait_for_log("failpoint reached", Duration::from_secs(30));
    serve.kill();
    assert_eq!(
        job_counts(&db).await,
        (0, 0),
        "nothing of the interrupted reaction may remain"
    );

    // Restart: the reaction redoes the batch, once.
    let serve = Serve::start(&args, &[password]);
    wait_for_queued(&db, 2).await;
    assert_eq!(job_counts(&db).await, (2, 2));
    let (clean, log) = serve.stop();
    assert!(clean, "{}", important_lines(&log));

    // Running it again, even from the start of the log, changes nothing.
    let serve = Serve::start(&args, &[password]);
    let (clean, log) = serve.stop();
    assert!(clean, "{}", important_lines(&log));
    db.client()
        .await
        .execute(
            "DELETE FROM projection_checkpoints WHERE name = 'reaction:job-reassignment'",
            &[],
        )
        .await
        .unwrap();
    let serve = Serve::start(&args, &[password]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let caught_up: bool = db
            .client()
            .await
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE name = 'reaction:job-reassignment')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the reaction did not run again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (clean, log) = serve.stop();
    assert!(clean, "{}", important_lines(&log));
    assert_eq!(job_counts(&db).await, (2, 2));
    let requeues = warden::fleet::reactions::requeues_by_job(&db.client().await)
        .await
        .unwrap();
    assert_eq!(requeues.len(), 2);
    assert!(requeues.values().all(|n| *n == 1), "{requeues:?}");
}

/// SIGTERM ends the process within `http.shutdown_timeout` even when the
/// database has stopped answering (before, it waited for every task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_on_time_when_the_database_hangs() {
    let db = TestDb::new().await;
    let proxy = BlackHoleProxy::start().await;
    let dir = shared_tempdir();
    let config = write_config(dir.path(), CONFIG);
    let url = proxy.url(&db.name);
    let mut serve = Serve::start(
        &["--config", config.to_str().unwrap(), "--database-url", &url],
        &[
            ("WARDEN_TEST_ADMIN_PASSWORD", PASSWORD),
            ("WARDEN_HTTP__SHUTDOWN_TIMEOUT", "3s"),
        ],
    );
    proxy.black_hole();
    // A request that now hangs on the database, in flight at SIGTERM.
    let base = serve.base_url.clone();
    let in_flight = tokio::spawn(async move { reqwest::get(format!("{base}/api/health")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    kill(Pid::from_raw(serve.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(8),
            "still running {:?} after SIGTERM:\n{}",
            asked.elapsed(),
            serve.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("exited {:?} after SIGTERM ({status})", asked.elapsed());
    in_flight.abort();
    assert!(serve.log.lock().unwrap().contains("SIGTERM"));
}

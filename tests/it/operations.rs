//! Day-2 operations against real clusters (issue 12): backups restored
//! into another cluster.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use warden::platform::db::Database;
use warden::platform::embedded_pg::{ClusterOptions, EmbeddedCluster, PgBinaries};

use crate::harness::*;

/// Runs a PostgreSQL client program against `cluster`'s socket.
fn run_pg_tool(tool: &str, socket: &std::path::Path, password: &str, args: &[&str]) {
    let output = std::process::Command::new(PgBinaries::locate().unwrap().tool(tool))
        .arg("--host")
        .arg(socket)
        .args(["--port", "5432", "--username", "warden"])
        .args(args)
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `pg_dump` of a running warden restored into a fresh cluster (its own
/// initdb, so its transaction ids are far below the dumped ones): every
/// event is read, the read models rebuild equal, and new commands are
/// projected at once. (Before, warden read 10 of 4,138 events and new
/// commands never reached the read models.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_restored_into_a_fresh_cluster_is_read_whole() {
    let app = TestApp::start().await;
    // Push the source cluster's transaction ids far ahead of a fresh one's.
    app.db
        .client()
        .await
        .batch_execute("DO $$ BEGIN FOR i IN 1..30000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$")
        .await
        .unwrap();
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (runner_id, runner_token) = app.create_runner(&admin).await;
    let first = app.submit_job(&user, json!({"n": 1}), &[], 0).await;
    app.submit_job(&user, json!({"n": 2}), &[], 0).await;
    let job = app.request_job(&runner_token, "s_restore", 0).await.expect("a job");
    assert_eq!(job["id"], first.as_str());
    let api_token = app
        .post_json(&user, "/api/users/api_tokens", json!({"name": "backup test"}))
        .await;
    assert_eq!(api_token.status(), StatusCode::CREATED);
    let source = app.stop().await;
    source.settle_log().await;
    let events = source.count_events().await;
    let read_models = source.snapshot_read_models().await;

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("warden.dump");
    let (socket, password) = with_cluster(|c| (c.socket_dir().to_path_buf(), c.password().unwrap().to_owned()));
    run_pg_tool(
        "pg_dump",
        &socket,
        &password,
        &["--format=custom", "--file", dump.to_str().unwrap(), &source.name],
    );

    let data_dir = dir.path().join("fresh");
    let mut fresh = std::thread::spawn(move || EmbeddedCluster::start(&ClusterOptions::throwaway(&data_dir)).unwrap())
        .join()
        .unwrap();
    warden::platform::database_setup::create_database_if_missing(&fresh.connect_config("postgres"), "restored")
        .await
        .unwrap();
    run_pg_tool(
        "pg_restore",
        fresh.socket_dir(),
        fresh.password().unwrap(),
        &["--no-owner", "--dbname", "restored", dump.to_str().unwrap()],
    );
    let restored = TestDb {
        name: "restored".into(),
        db: Database::new(fresh.connect_config("restored"), 16).unwrap(),
    };
    let client = restored.db.get().await.unwrap();
    let ahead: bool = client
        .query_one(
            "SELECT max(transaction_id) > pg_current_xact_id()::text::bigint FROM events",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ahead, "the test needs restored ids ahead of the fresh cluster's");
    drop(client);

    let app = TestApp::start_on(restored, test_config()).await;
    let db = app.state.db.clone();
    // Every event is read, in order, by a reader from the start.
    let mut cursor = warden::events::LogCursor::START;
    let mut read = 0;
    loop {
        let client = db.get().await.unwrap();
        let batch = warden::log::event_store::read_after(&client, cursor, 1000)
            .await
            .unwrap();
        let Some(last) = batch.last().map(|e| e.cursor()) else {
            break;
        };
        read += batch.len() as i64;
        cursor = last;
    }
    assert_eq!(read, events, "events read after the restore");
    // The live read models are what the source had, and a rebuild equals them.
    let live: Vec<Vec<String>> = {
        let mut tables = Vec::new();
        let client = db.get().await.unwrap();
        for projection in warden::projections::all() {
            for table in projection.tables() {
                let rows = client
                    .query(&format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY id"), &[])
                    .await
                    .unwrap();
                tables.push(rows.iter().map(|r| r.get::<_, String>(0)).collect());
            }
        }
        tables
    };
    assert_eq!(live, read_models);
    let report = warden::log::replay::run(&db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    assert_eq!(report.events as i64, events);
    // New commands reach the read models at once (they wait for them).
    let admin = app.admin_token().await;
    let invalidated = app.invalidate_runner(&admin, &runner_id).await;
    assert_eq!(invalidated.status(), StatusCode::OK);
    assert_error(
        app.verify_runner(&runner_token).await,
        StatusCode::UNAUTHORIZED,
        "runner_invalidated",
    )
    .await;
    let (_, new_token) = app.create_runner(&admin).await;
    assert_eq!(app.verify_runner(&new_token).await.status(), StatusCode::OK);
    let offset = warden::log::clock::offset(&db.get().await.unwrap()).await.unwrap();
    assert!(offset > 0, "the log clock was not moved");
    tokio::time::timeout(Duration::from_secs(30), app.stop()).await.unwrap();
    fresh.stop();
}

/// Events a newer release wrote during a rolling upgrade (an unknown type,
/// a future schema version of a known one) stop only the consumers whose
/// streams they are in; the others go on, and readiness names the stuck
/// ones with the event. A release older than the database's schema
/// refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_newer_release_stop_only_the_consumers_they_concern() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (runner_id, runner_token) = app.create_runner(&admin).await;
    let client = app.db.client().await;
    for (stream, version, event_type, schema_version) in [
        (format!("runner-{runner_id}"), 2i64, "RunnerRetired", 1i32),
        (format!("job-{}", uuid::Uuid::now_v7()), 1, "JobSubmitted", 99),
    ] {
        client
            .execute(
                "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
                 VALUES ($1, $2, $3, $4, $5, '{\"from\": \"the future\"}', '{\"actor\": {\"kind\": \"system\", \"component\": \"v9\"}, \"correlation_id\": \"00000000-0000-0000-0000-000000000000\"}')",
                &[&stream, &version, &uuid::Uuid::now_v7(), &event_type, &schema_version],
            )
            .await
            .unwrap();
    }
    // Readiness names the stuck projectors and the events, within seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let health = loop {
        let response = app.http.get(app.url("/api/health")).send().await.unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: serde_json::Value = response.json().await.unwrap();
            let stuck = body["projectors"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| !p["stuck_on"].is_null())
                .count();
            if stuck == 2 {
                break body;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness did not report the stuck projectors"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health["status"], "not_ready");
    for projector in health["projectors"].as_array().unwrap() {
        match projector["name"].as_str().unwrap() {
            "runners" => assert_eq!(projector["stuck_on"]["event_type"], "RunnerRetired", "{health}"),
            "jobs" => assert_eq!(projector["stuck_on"]["schema_version"], 99, "{health}"),
            _ => assert!(projector["stuck_on"].is_null(), "{health}"),
        }
    }
    // The stuck projector hands its leadership over, so an instance of a
    // release that knows the event can take it and go on.
    let newer_release = app.db.client().await;
    let key = warden::platform::db::advisory_key("runners");
    let waited = std::time::Instant::now();
    loop {
        let taken: bool = newer_release
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .unwrap()
            .get(0);
        if taken {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "the stuck projector kept its leadership"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    newer_release
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap();
    drop(newer_release);
    // The others go on: users (an API token), machines (a new machine).
    let token = app
        .post_json(&user, "/api/users/api_tokens", json!({"name": "during the upgrade"}))
        .await;
    assert_eq!(token.status(), StatusCode::CREATED);
    assert_eq!(
        app.post_json(&runner_token, "/api/runners/verify", json!({"system_id": "s_upgrade"}))
            .await
            .status(),
        StatusCode::OK
    );
    // Commands on other runners go on: each updates its read-model rows in
    // its own transaction, so a new runner's token works at once although
    // the runners projector is stuck.
    let (_, new_token) = app.create_runner(&admin).await;
    assert_eq!(app.verify_runner(&new_token).await.status(), StatusCode::OK);
    // A change to the runner with the newer event is refused, saying why:
    // this release cannot decide on a stream it cannot read.
    assert_error(
        app.invalidate_runner(&admin, &runner_id).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "written_by_newer_release",
    )
    .await;

    // A schema newer than this release knows: it refuses to start.
    client
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             SELECT 9999, 'from_the_future', applied_on, '0' FROM refinery_schema_history LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let refused = app.state.db.migrate().await.expect_err("migrated a newer schema");
    assert!(refused.to_string().contains("newer warden release"), "{refused}");
    drop(client);
    app.stop().await;
}

/// An instance whose database connections are black-holed (no reset, no
/// answer) loses its leadership to a healthy instance within seconds, which
/// then carries on; the black-holed one reports not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_instance_hands_its_leadership_to_a_healthy_one() {
    let db = TestDb::new().await;
    let proxy = BlackHoleProxy::start().await;
    let cut_off = TestApp::start_on(proxy.in_front_of(&db), test_config()).await;
    let healthy = TestApp::start_on(db, test_config()).await;
    let leading = |app: &TestApp| {
        app.state
            .consumers
            .projections()
            .status()
            .iter()
            .all(|projector| projector.leading_here)
    };
    assert!(leading(&cut_off), "the first instance leads");
    assert!(!leading(&healthy));

    proxy.black_hole();
    let cut_at = std::time::Instant::now();
    while !leading(&healthy) {
        assert!(cut_at.elapsed() < Duration::from_secs(40), "leadership did not move");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved_after = cut_at.elapsed();
    let admin = healthy.admin_token().await;
    let (_, runner_token) = healthy.create_runner(&admin).await;
    assert_eq!(healthy.verify_runner(&runner_token).await.status(), StatusCode::OK);
    // The cut-off instance does not claim to be ready.
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let health = probe.get(cut_off.url("/api/health")).send().await;
    assert!(
        health.as_ref().map_or(true, |r| r.status() != StatusCode::OK),
        "a black-holed instance answered ready"
    );
    let detected_after = cut_at.elapsed();
    eprintln!("leadership moved after {moved_after:?}; readiness failed after {detected_after:?}");
    let _ = tokio::time::timeout(Duration::from_secs(30), cut_off.stop()).await;
    healthy.stop().await;
}

/// `/metrics` is valid for Prometheus (`promtool check metrics`) and has
/// the series operators alert on; liveness and readiness answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_health_probes_answer() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    app.create_runner(&admin).await;
    app.submit_job(&user, json!({"n": 1}), &[], 0).await;
    password_login(&app.http, &app.base_url, USER_EMAIL, "not the password", false).await;
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for series in [
        "warden_http_requests_total{",
        "warden_http_request_duration_seconds_bucket{",
        "warden_appends_total{aggregate=\"runner\"}",
        "warden_login_failures_total{provider=\"local\"}",
        "warden_consumer_lag_events{consumer=\"jobs\"}",
        "warden_consumer_lag_seconds{consumer=\"reaction:job-reassignment\"}",
        "warden_consumer_leading{consumer=\"users\"} 1",
        "warden_log_horizon_holder_age_seconds",
        "warden_jobs_queued 1",
        "warden_machines_online{protocol=\"native\"}",
        "warden_db_pool_connections{state=\"open\"}",
        "warden_heartbeat_cache_hits_total",
    ] {
        assert!(text.contains(series), "`{series}` missing from:\n{text}");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (.ci/install-deps)");
    use std::io::Write;
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let live = app.http.get(app.url("/api/health/live")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let ready = app.http.get(app.url("/api/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "{}", ready.text().await.unwrap());
    app.stop().await;
}

/// A writing transaction left open anywhere in the cluster holds every
/// projector back: the metrics and the stall watch name it, readiness
/// fails; when it ends, everything goes on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_writing_transaction_is_named_and_readiness_fails_until_it_ends() {
    let mut config = test_config();
    config.http.ready_max_lag = Duration::from_secs(1);
    let app = TestApp::start_with(config).await;
    let admin = app.admin_token().await;
    let mut blocker = app.db.client().await;
    let open = blocker.transaction().await.unwrap();
    // A transaction id: it now holds the horizon.
    open.batch_execute("SELECT pg_current_xact_id()").await.unwrap();
    let pid: i32 = open.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let started = std::time::Instant::now();
    // Commands do not wait behind it: a change updates the read models in
    // its own transaction, so it answers, and its token works, at once.
    let (_, token) = app.create_runner(&admin).await;
    assert_eq!(app.verify_runner(&token).await.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a command waited behind the stall"
    );
    let named = loop {
        if let Some(holder) = warden::log::consumers::check_for_stall(&app.state.db, Duration::from_secs(1))
            .await
            .unwrap()
        {
            break holder;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the stall was not named");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(named.pid, pid);
    let detected_after = started.elapsed();
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("warden_log_horizon_holder_pid {pid}")),
        "{metrics}"
    );
    let ready = app.http.get(app.url("/api/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    open.commit().await.unwrap();
    let ended = std::time::Instant::now();
    loop {
        let ready = app.http.get(app.url("/api/health/ready")).send().await.unwrap();
        if ready.status() == StatusCode::OK {
            break;
        }
        assert!(ended.elapsed() < Duration::from_secs(10), "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "stall named after {detected_after:?}; ready again {:?} after it ended",
        ended.elapsed()
    );
    app.create_runner(&admin).await;
    drop(blocker);
    app.stop().await;
}

/// The shipped systemd unit passes `systemd-analyze verify` (with the
/// built binary in place of the installed one) and the alert rules pass
/// `promtool check rules`; every alert has a runbook entry.
#[test]
fn the_systemd_unit_and_the_alert_rules_pass_their_checkers() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy");
    let unit = std::fs::read_to_string(deploy.join("warden.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/warden "),
        "the unit runs the installed binary"
    );
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("warden.service");
    std::fs::write(
        &here,
        unit.replace("/usr/local/bin/warden", warden_binary().to_str().unwrap()),
    )
    .unwrap();
    let verified = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&here)
        .output()
        .expect("systemd-analyze must be installed (.ci/install-deps)");
    let complaints = String::from_utf8_lossy(&verified.stderr);
    assert!(
        verified.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );

    let rules = deploy.join("warden-alerts.yml");
    let checked = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool must be installed (.ci/install-deps)");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let runbook =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md")).unwrap();
    for line in std::fs::read_to_string(&rules).unwrap().lines() {
        if let Some(alert) = line.trim().strip_prefix("- alert: ") {
            assert!(
                runbook.contains(&format!("**{alert}**")),
                "no runbook entry for {alert}"
            );
        }
    }
}

/// Work that must run once (log consumers, the machine pruner, each LDAP
/// sync) has one leader across instances; another takes over at once when
/// the leader gives its lease up, and within the lease's term when the
/// leader just stops renewing (a frozen or vanished instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_have_one_holder_across_instances_and_run_out() {
    use warden::platform::leases::{Lease, TTL};
    let db = TestDb::new().await;
    let other_instance = db.reconnect();
    let mut first = Lease::new("machine-pruner");
    let mut second = Lease::new("machine-pruner");
    assert!(first.hold(&db.db).await);
    for _ in 0..3 {
        assert!(!second.hold(&other_instance.db).await, "two leaders");
        assert!(first.hold(&db.db).await, "the leader lost its lead");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // Another lease is held independently.
    assert!(Lease::new("ldap-sync:corp").hold(&other_instance.db).await);
    // Released: taken at once.
    first.release(&db.db).await;
    assert!(second.hold(&other_instance.db).await, "a released lease was not free");
    // Not renewed (its holder froze): taken once it ran out, not before.
    let mut third = Lease::new("machine-pruner");
    let frozen_at = std::time::Instant::now();
    while !third.hold(&db.db).await {
        assert!(frozen_at.elapsed() < TTL + Duration::from_secs(2), "nobody took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        frozen_at.elapsed() > TTL - Duration::from_millis(1500),
        "taken over after {:?}, before the lease ran out",
        frozen_at.elapsed()
    );
    assert!(
        !second.hold(&other_instance.db).await,
        "the old holder still counts itself the leader"
    );
}

/// Admins see which instances are alive, their release and what each
/// leads: every log consumer led by exactly one of them; a stopped
/// instance leaves the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_the_instances_and_what_each_leads() {
    let (first, second) = TestApp::start_two(test_config()).await;
    let admin = first.admin_token().await;
    let instances = || async {
        first
            .get_json(&admin, "/api/admins/instances")
            .await
            .json::<Vec<serde_json::Value>>()
            .await
            .unwrap()
    };
    let leads_of = |listed: &[serde_json::Value]| -> Vec<String> {
        listed
            .iter()
            .flat_map(|i| i["leads"].as_array().unwrap().iter())
            .map(|l| l.as_str().unwrap().to_owned())
            .collect()
    };
    let consumers = 6; // five projectors and the re-assignment reaction
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let listed = loop {
        let listed = instances().await;
        if listed.len() == 2 && leads_of(&listed).len() == consumers {
            break listed;
        }
        assert!(std::time::Instant::now() < deadline, "instances: {listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut leads = leads_of(&listed);
    leads.sort();
    leads.dedup();
    assert_eq!(leads.len(), consumers, "a consumer led twice: {listed:?}");
    assert_eq!(listed[0]["version"], env!("CARGO_PKG_VERSION"));
    second.stop().await;
    let after = instances().await;
    assert_eq!(after.len(), 1, "{after:?}");
    first.stop().await;
}

/// The runner rate limit holds across instances: with two alive, each
/// enforces half, so requests spread over both get the configured burst,
/// not twice it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_rate_limit_holds_across_instances() {
    let mut config = test_config();
    config.runners.rate_limit.per_second = 1;
    config.runners.rate_limit.burst = 20;
    let (first, second) = TestApp::start_two(config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while first.state.fleet.rate_limit.instances() != 2 || second.state.fleet.rate_limit.instances() != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the instances never learned of each other"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = first.admin_token().await;
    let (_, token) = first.create_runner(&admin).await;
    let mut allowed = 0;
    for n in 0..60 {
        let app = if n % 2 == 0 { &first } else { &second };
        match app.verify_runner(&token).await.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    // 20 configured; a second of refill may add one per instance.
    assert!((18..=22).contains(&allowed), "{allowed} of 60 allowed");
    second.stop().await;
    first.stop().await;
}

/// A command on an instance that does not lead the projectors learns of
/// their progress by notification from the leading instance (no 10 ms
/// polling of the checkpoint table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_leading_instance_is_told_of_projector_progress() {
    let (leader, follower) = TestApp::start_two(test_config()).await;
    assert!(follower
        .state
        .consumers
        .projections()
        .status()
        .iter()
        .all(|p| !p.leading_here));
    let announcements = follower.state.commands.store().subscribe_checkpoints();
    let before = *announcements.borrow();
    let admin = follower.admin_token().await;
    let mut latencies = Vec::new();
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let (_, token) = follower.create_runner(&admin).await;
        latencies.push(started.elapsed());
        // Read-your-writes on the non-leading instance.
        assert_eq!(follower.verify_runner(&token).await.status(), StatusCode::OK);
    }
    assert!(
        *announcements.borrow() > before,
        "no checkpoint announcement reached the non-leading instance"
    );
    latencies.sort();
    eprintln!("create_runner on a non-leading instance: median {:?}", latencies[5]);
    // Its health page shows the shared checkpoints, not (0, 0).
    let health: serde_json::Value = follower
        .http
        .get(follower.url("/api/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runners = health["projectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "runners")
        .unwrap();
    assert!(runners["checkpoint"]["position"].as_i64().unwrap() > 0, "{health}");
    follower.stop().await;
    leader.stop().await;
}

/// During a rolling upgrade an older release appends without inline
/// projection: its events reach the read models only through the
/// projectors. A change this release makes after such an event (in the
/// same stream), projected inline onto a row that was not there yet,
/// changes nothing there; the projectors, which apply every event again,
/// bring it in. (Why projectors do not skip inline-projected events: this
/// test, and `projections::projectors_rebuild_from_the_log_after_a_reset`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_after_an_older_releases_event_reaches_the_read_model() {
    use warden::domain::runner::{RunnerCommand, RunnerSettings};
    use warden::events::runner::RunnerCreated;
    use warden::events::{Event, Metadata, RunnerEvent};

    let app = TestApp::start().await;
    // Hold the log horizon, so the projectors cannot reach the older
    // release's event before this release changes its runner.
    let mut blocker = app.db.client().await;
    let open = blocker.transaction().await.unwrap();
    open.batch_execute("SELECT pg_current_xact_id()").await.unwrap();

    let runner_id = uuid::Uuid::now_v7();
    let created = warden::events::codec::encode(&Event::Runner(RunnerEvent::RunnerCreated(RunnerCreated {
        runner_id,
        number: None,
        token_hash: runner_id.simple().to_string().repeat(2),
        description: Some("from the older release".into()),
        tags: vec![],
        priority: 0,
        scope_id: None,
    })));
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
             VALUES ($1, 1, $2, $3, $4, $5, $6)",
            &[
                &format!("runner-{runner_id}"),
                &uuid::Uuid::now_v7(),
                &created.event_type,
                &(created.schema_version as i32),
                &created.payload,
                &serde_json::to_value(Metadata::system("older-release")).unwrap(),
            ],
        )
        .await
        .unwrap();
    let settings = RunnerSettings {
        description: Some("changed by this release".into()),
        tags: vec![],
        priority: 0,
    };
    warden::fleet::runners::change_runner(
        &app.state.commands,
        runner_id,
        RunnerCommand::Update(settings.into()),
        &Metadata::system("test"),
    )
    .await
    .unwrap();
    open.rollback().await.unwrap();

    let client = app.db.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let description: Option<String> = client
            .query_opt("SELECT description FROM runners WHERE id = $1", &[&runner_id])
            .await
            .unwrap()
            .and_then(|row| row.get(0));
        if description.as_deref() == Some("changed by this release") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the read model shows {description:?}, not the change after the older release's event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

//! `warden replay` and `replay --verify` on a log from the runner, job and
//! account features, with the server running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

/// A log with every kind of read-model change: users (one deleted),
/// runners (paused, invalidated, token reset), machines, jobs in several
/// states.
async fn busy_app() -> TestApp {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let metadata = warden::events::Metadata::system("test");
    let gone = warden::identity::accounts::add_local_user(
        &app.state.commands,
        "gone@example.org",
        &warden::platform::secrets::Secret::new("a password long enough"),
        warden::events::user::Role::User,
        warden::events::user::UserOrigin::CommandLine,
        &metadata,
    )
    .await
    .unwrap();
    warden::identity::accounts::delete_user(&app.state.commands, gone, &metadata)
        .await
        .unwrap();
    let (runner_a, token_a) = app.create_runner(&admin).await;
    let (runner_b, token_b) = app.create_runner(&admin).await;
    for n in 0..6 {
        app.submit_job(&user, json!({"n": n}), &[], n % 3).await;
    }
    for (token, system_id) in [(&token_a, "r_replay00001"), (&token_b, "r_replay00002")] {
        let job = app.request_job(token, system_id, 2).await.unwrap();
        let id = job["id"].as_str().unwrap();
        let done = app
            .post_json(
                token,
                &format!("/api/runners/jobs/{id}/result"),
                json!({"system_id": system_id, "outcome": "succeeded"}),
            )
            .await;
        assert_eq!(done.status(), StatusCode::OK);
    }
    let held = app.request_job(&token_a, "r_replay00001", 2).await.unwrap();
    let paused = app
        .http
        .patch(app.url(&format!("/api/admins/runners/{runner_b}")))
        .bearer_auth(&admin)
        .json(&json!({"paused": true, "tags": ["gpu"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    app.invalidate_runner(&admin, &runner_a).await;
    // The reaction handler requeues runner A's job after the invalidation
    // answers; wait for it so the log is complete before a replay reads it.
    let held = held["id"].as_str().unwrap();
    app.wait_until_queued(&user, held, Duration::from_secs(30), "the held job was not requeued")
        .await;
    app.db.settle_log().await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_real_log_and_catches_a_corrupted_read_model() {
    let app = busy_app().await;
    let logged = app.db.count_events().await;
    let report = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    assert!(report.events as i64 >= logged, "{report:?}, {logged} events in the log");

    // Hand-corrupt two read models.
    app.db
        .client()
        .await
        .batch_execute(
            "UPDATE jobs SET status = 'failed' WHERE id = (SELECT id FROM jobs WHERE status = 'succeeded' LIMIT 1);
             DELETE FROM runners WHERE paused;",
        )
        .await
        .unwrap();
    let report = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    let mut tables: Vec<(&str, i64, i64)> = report
        .differences
        .iter()
        .map(|d| (d.table.as_str(), d.only_live, d.only_rebuilt))
        .collect();
    tables.sort();
    assert_eq!(tables, [("jobs", 1, 1), ("runners", 0, 1)], "{report:?}");
    assert!(report.differences.iter().all(|d| !d.examples.is_empty()));

    let output = warden_command()
        .args(["--database-url", &app.db.url(), "replay", "--verify"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["differences"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_swaps_rebuilt_read_models_in_while_serving() {
    let app = Arc::new(busy_app().await);
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    app.db
        .client()
        .await
        .batch_execute(
            "DELETE FROM jobs; UPDATE runners SET tags = '{corrupt}';
             INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, version)
             VALUES (gen_random_uuid(), gen_random_uuid(), 'not in the log', 'ghost', now(), 1);",
        )
        .await
        .unwrap();

    // Readers keep working all through the replay.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (app, user, stop) = (Arc::clone(&app), user.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                assert_eq!(app.get_json(&user, "/api/jobs").await.status(), StatusCode::OK);
                reads += 1;
            }
            reads
        })
    };
    let output = warden_command()
        .args(["--database-url", &app.db.url(), "replay"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    assert!(reader.await.unwrap() > 0);

    // Repaired, and still equal to the log.
    let own: Vec<serde_json::Value> = app.get_json(&user, "/api/jobs").await.json().await.unwrap();
    assert_eq!(own.len(), 6);
    let report = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    // The live projectors carry on on the swapped-in rows.
    let (_, token) = app.create_runner(&admin).await;
    assert_eq!(app.verify_runner(&token).await.status(), StatusCode::OK);
    assert_eq!(
        warden::log::replay::run(&app.db.db, true, false)
            .await
            .unwrap()
            .differences
            .len(),
        0
    );
    Arc::into_inner(app).unwrap().stop().await;
}

/// A log written by the first release holds `RunnerMachineRegistered` v1
/// (flat, no contact time); today's projector and replay read it as v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_release_events_are_upcast_by_projectors_and_replay() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (runner_id, _) = app.create_runner(&admin).await;
    let runner_id: uuid::Uuid = runner_id.parse().unwrap();
    let machine_id = warden::events::StreamId::machine_id(runner_id, "r_first_release");
    let v1 = serde_json::json!({
        "machine_id": machine_id,
        "runner_id": runner_id,
        "system_id": "r_first_release",
        "version": "16.5.0",
        "platform": "linux",
        "ip_address": "10.0.0.7",
    });
    // Appended as that release did: no hash column yet, schema version 1.
    let recorded_at: chrono::DateTime<chrono::Utc> = app
        .db
        .client()
        .await
        .query_one(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
             VALUES ($1, 1, $2, 'RunnerMachineRegistered', 1, $3, $4)
             RETURNING recorded_at",
            &[
                &format!("machine-{machine_id}"),
                &uuid::Uuid::now_v7(),
                &v1,
                &serde_json::to_value(warden::events::Metadata::system("first-release")).unwrap(),
            ],
        )
        .await
        .unwrap()
        .get(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let machines = loop {
        let machines = app
            .get_items(&admin, &format!("/api/admins/machines?runner_id={runner_id}"))
            .await;
        if !machines.is_empty() {
            break machines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the live projector never read the v1 event"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(machines[0]["version"], "16.5.0");
    assert_eq!(machines[0]["platform"], "linux");
    let contacted: chrono::DateTime<chrono::Utc> = machines[0]["contacted_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(contacted, recorded_at, "v1 registration time is its contact time");

    let report = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    app.stop().await;
}

/// Appends project inline, so the live read models show changes that the
/// projectors cannot reach yet (a writing transaction left open holds the
/// log horizon back). A replay run then must keep them: its rebuild takes
/// every committed event, not only those below the horizon, or a runner
/// invalidated just before would get its token back until the open
/// transaction ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_keeps_changes_committed_above_the_log_horizon() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (doomed_id, doomed_token) = app.create_runner(&admin).await;
    let mut blocker = app.db.client().await;
    let open = blocker.transaction().await.unwrap();
    open.batch_execute("SELECT pg_current_xact_id()").await.unwrap();

    let (kept_id, kept_token) = app.create_runner(&admin).await;
    assert_eq!(app.invalidate_runner(&admin, &doomed_id).await.status(), StatusCode::OK);
    let report = warden::log::replay::run(&app.db.db, false, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    let verify = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    assert!(verify.differences.is_empty(), "{verify:?}");

    assert_eq!(
        app.verify_runner(&kept_token).await.status(),
        StatusCode::OK,
        "the new runner {kept_id} was lost"
    );
    assert_eq!(
        app.verify_runner(&doomed_token).await.status(),
        StatusCode::UNAUTHORIZED,
        "the invalidated runner's token works again"
    );
    open.rollback().await.unwrap();
    app.stop().await;
}

/// A log holding an event of a newer release (a rolling upgrade not
/// finished): replay refuses with the event's position and type, leaves
/// the live read models as they were, and leaves no scratch schema behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_a_log_it_cannot_read_and_changes_nothing() {
    let app = busy_app().await;
    let client = app.db.client().await;
    client
        .execute(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
             VALUES ($1, 1, $2, 'RunnerRetired', 1, '{\"from\": \"the future\"}',
                     '{\"actor\": {\"kind\": \"system\", \"component\": \"v9\"}, \"correlation_id\": \"00000000-0000-0000-0000-000000000000\"}')",
            &[&format!("runner-{}", uuid::Uuid::now_v7()), &uuid::Uuid::now_v7()],
        )
        .await
        .unwrap();
    let snapshot = "SELECT (SELECT count(*) FROM runners), (SELECT count(*) FROM jobs), (SELECT count(*) FROM users)";
    let before: (i64, i64, i64) = {
        let row = client.query_one(snapshot, &[]).await.unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    for verify in [false, true] {
        let error = warden::log::replay::run(&app.db.db, verify, false)
            .await
            .expect_err("a log with an unknown event type cannot be replayed");
        assert!(error.to_string().contains("RunnerRetired"), "{error}");
    }
    let after: (i64, i64, i64) = {
        let row = client.query_one(snapshot, &[]).await.unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(after, before);
    let scratch: i64 = client
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'replay\\_%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(scratch, 0, "the scratch schema is dropped on failure");
    drop(client);
    app.stop().await;
}

/// A replay into emptied read models (a restore, a reset) fills them with
/// their indexes built after the rows: afterwards every index is there
/// with its own definition, every row as before, and the token checks and
/// projectors work on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_into_empty_read_models_keeps_every_index_and_row() {
    let app = busy_app().await;
    let admin = app.admin_token().await;
    app.db.settle_log().await;
    let indexes = || async {
        app.db
            .client()
            .await
            .query(
                "SELECT tablename || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let indexes_before = indexes().await;
    let rows_before = app.db.snapshot_read_models().await;
    let tables: Vec<&str> = warden::projections::all()
        .iter()
        .flat_map(|projection| projection.tables().iter().copied())
        .collect();
    app.db
        .client()
        .await
        .batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
        .await
        .unwrap();

    let report = warden::log::replay::run(&app.db.db, false, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    assert_eq!(indexes().await, indexes_before);
    assert_eq!(app.db.snapshot_read_models().await, rows_before);
    let (_, token) = app.create_runner(&admin).await;
    assert_eq!(app.verify_runner(&token).await.status(), StatusCode::OK);
    let report = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    app.stop().await;
}

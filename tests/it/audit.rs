//! The audit trail, time travel and tamper evidence.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use warden::events::user::{Role, UserOrigin};
use warden::events::Metadata;
use warden::log::event_store::chain::{self, Problem};
use warden::platform::secrets::Secret;

use crate::harness::*;

const SUPPORT_EMAIL: &str = "support@example.org";
const SUPPORT_PASSWORD: &str = "support password long";

/// A log with runners, jobs, machines and a deleted user.
async fn busy_app() -> (TestApp, String, String) {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let metadata = Metadata::system("test");
    warden::identity::accounts::add_local_user(
        &app.state.commands,
        SUPPORT_EMAIL,
        &Secret::new(SUPPORT_PASSWORD),
        Role::Support,
        UserOrigin::CommandLine,
        &metadata,
    )
    .await
    .unwrap();
    let gone = warden::identity::accounts::add_local_user(
        &app.state.commands,
        "gone@example.org",
        &Secret::new("a password long enough"),
        Role::User,
        UserOrigin::CommandLine,
        &metadata,
    )
    .await
    .unwrap();
    warden::identity::accounts::delete_user(&app.state.commands, gone, &metadata)
        .await
        .unwrap();
    let (runner_id, token) = app.create_runner(&admin).await;
    let job = app.submit_job(&user, json!({"n": 1}), &[], 0).await;
    let taken = app.request_job(&token, "r_audit0000000", 2).await.unwrap();
    assert_eq!(taken["id"], job.as_str());
    app.invalidate_runner(&admin, &runner_id).await;
    // The reaction requeues the job asynchronously: wait for it.
    app.wait_until_queued(
        &user,
        &job,
        std::time::Duration::from_secs(10),
        "the job was never requeued",
    )
    .await;
    (app, admin, runner_id)
}

async fn audit(app: &TestApp, token: &str, query: &str) -> Value {
    let response = app.get_json(token, &format!("/api/admins/audit?{query}")).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

fn types(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_filters_pages_and_redacts() {
    let (app, admin, runner_id) = busy_app().await;

    // One runner's story, oldest first, with who, from where and why.
    let story = audit(&app, &admin, &format!("stream={runner_id}&order=oldest")).await;
    assert_eq!(types(&story), ["RunnerCreated", "RunnerInvalidated"]);
    let created = &story["entries"][0];
    assert_eq!(created["actor"]["kind"], "user");
    assert_eq!(created["source_ip"], "127.0.0.1");
    assert!(created["request_id"].is_string());
    assert_eq!(created["data"]["token_hash"], "[redacted]");

    // The reaction's requeue names its cause: the invalidation event.
    let requeue = audit(&app, &admin, "type=JobRequeued").await;
    let requeue = &requeue["entries"][0];
    assert_eq!(
        requeue["actor"],
        json!({"kind": "system", "component": "job-reassignment"})
    );
    assert_eq!(requeue["causation_id"], story["entries"][1]["event_id"]);

    // By actor, by type, by time.
    let by_actor = audit(&app, &admin, "actor=job-reassignment").await;
    assert_eq!(types(&by_actor), ["JobRequeued"]);
    let users = audit(&app, &admin, "type=LocalUserCreated&order=oldest").await;
    let emails: Vec<&Value> = users["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"]["email"])
        .collect();
    assert_eq!(emails[0], &json!({"plain": ADMIN_EMAIL}));
    assert!(
        emails.contains(&&json!("forgotten")),
        "a deleted user's email is forgotten: {emails:?}"
    );
    assert!(users["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["data"]["password_hash"] == "[redacted]"));
    let future = audit(&app, &admin, "since=2999-01-01T00:00:00Z").await;
    assert!(future["entries"].as_array().unwrap().is_empty());

    // Paging through everything, 3 at a time, newest first: every event once.
    let total = app.db.count_events().await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = audit(&app, &admin, &format!("limit=3{cursor}")).await;
        seen.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["position"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_i64() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, total);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());

    // The support role reads; a plain user and a runner token do not.
    let support = app.token(SUPPORT_EMAIL, SUPPORT_PASSWORD, false).await;
    assert_eq!(
        app.get_json(&support, "/api/admins/audit").await.status(),
        StatusCode::OK
    );
    let plain = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    assert_error(
        app.get_json(&plain, "/api/admins/audit").await,
        StatusCode::FORBIDDEN,
        "admin_read_required",
    )
    .await;
    assert_error(
        app.get_json(&admin, "/api/admins/audit?order=sideways").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    assert_error(
        app.get_json(&admin, "/api/admins/audit?since=yesterday").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;

    // The command line gives the same entries as JSON lines.
    let output = warden_command()
        .args(["--database-url", &app.db.url(), "audit", "--type", "LocalUserCreated"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), users["entries"].as_array().unwrap().len());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_shows_a_runner_as_it_was() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (runner_id, _) = app.create_runner(&admin).await;
    let patch = |body: Value| {
        let request = app
            .http
            .patch(app.url(&format!("/api/admins/runners/{runner_id}")))
            .bearer_auth(&admin)
            .json(&body);
        async move { assert_eq!(request.send().await.unwrap().status(), StatusCode::OK) }
    };
    patch(json!({"tags": ["gpu"]})).await;
    patch(json!({"paused": true})).await;
    app.invalidate_runner(&admin, &runner_id).await;

    let story = audit(&app, &admin, &format!("stream=runner-{runner_id}&order=oldest")).await;
    let times: Vec<String> = story["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["recorded_at"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(times.len(), 4);
    let at = |time: &str| {
        let url = format!("/api/admins/runners/{runner_id}/state?at={}", urlencode(time));
        let app = &app;
        let admin = admin.clone();
        async move { app.get_json(&admin, &url).await.json::<Value>().await.unwrap() }
    };
    let before = at("2000-01-01T00:00:00Z").await;
    assert_eq!(before["version"], 0);
    assert_eq!(before["state"]["status"], "unknown");
    let created = at(&times[0]).await;
    assert_eq!(
        created["state"],
        json!({"status": "active", "id": runner_id, "paused": false, "description": null, "tags": [], "priority": 0})
    );
    assert_eq!(at(&times[1]).await["state"]["tags"], json!(["gpu"]));
    let paused = at(&times[2]).await;
    assert_eq!(
        (paused["version"].clone(), paused["state"]["paused"].clone()),
        (json!(3), json!(true))
    );
    assert_eq!(at(&times[3]).await["state"]["status"], "invalidated");

    let output = warden_command()
        .args([
            "--database-url",
            &app.db.url(),
            "audit",
            "state",
            "--stream",
            &format!("runner-{runner_id}"),
            "--at",
            &times[1],
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let state: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(state["state"]["tags"], json!(["gpu"]));
    assert_error(
        app.get_json(&admin, &format!("/api/admins/users/{}/state", uuid::Uuid::now_v7()))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    app.stop().await;
}

/// Runs `sql` with the append-only trigger off, as an attacker with
/// superuser access would.
async fn tamper(db: &TestDb, sql: &str) {
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE events DISABLE TRIGGER events_append_only; {sql}; ALTER TABLE events ENABLE TRIGGER events_append_only;"
        ))
        .await
        .unwrap();
}

async fn verify(db: &TestDb, anchor: Option<&str>) -> chain::Verification {
    chain::verify(&db.client().await, anchor).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_changed_removed_and_reordered_events() {
    let (app, _, runner_id) = busy_app().await;
    let db = app.stop().await;
    let clean = verify(&db, None).await;
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert_eq!(clean.unhashed, 0);
    assert_eq!(clean.events as i64, db.count_events().await);
    let anchor = clean.anchor.clone();

    // Changed: one payload edited.
    tamper(&db, &format!("UPDATE events SET payload = jsonb_set(payload, '{{tags}}', '[\"evil\"]') WHERE stream_id = 'runner-{runner_id}' AND stream_version = 1")).await;
    let report = verify(&db, None).await;
    assert!(
        matches!(
            &report.problems[..],
            [Problem::HashMismatch { stream_version: 1, .. }, ..]
        ),
        "{:?}",
        report.problems
    );
    let output = warden_command()
        .args(["--database-url", &db.url(), "audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "the command line says so too");
    tamper(&db, &format!("UPDATE events SET payload = jsonb_set(payload, '{{tags}}', '[]') WHERE stream_id = 'runner-{runner_id}' AND stream_version = 1")).await;
    assert!(
        verify(&db, None).await.problems.is_empty(),
        "restored exactly, verified again"
    );

    // Reordered: two events of a job swap places.
    let job_stream: String = db
        .client()
        .await
        .query_one("SELECT stream_id FROM events WHERE stream_id LIKE 'job-%' LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    tamper(&db, &format!(
        "UPDATE events SET stream_version = stream_version + 1000 WHERE stream_id = '{job_stream}' AND stream_version IN (1, 2);
         UPDATE events SET stream_version = 1003 - stream_version WHERE stream_id = '{job_stream}' AND stream_version IN (1001, 1002)"
    ))
    .await;
    let report = verify(&db, None).await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::HashMismatch { stream_id, .. } if *stream_id == job_stream)),
        "{:?}",
        report.problems
    );

    // Removed from the middle of a stream: a gap and a broken link.
    let (app2, _, runner2) = busy_app().await;
    let db2 = app2.stop().await;
    tamper(
        &db2,
        &format!("DELETE FROM events WHERE stream_id = 'runner-{runner2}' AND stream_version = 1"),
    )
    .await;
    let report = verify(&db2, None).await;
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            Problem::Gap {
                expected_version: 1,
                found_version: 2,
                ..
            }
        )),
        "{:?}",
        report.problems
    );

    // Removed from the end of a stream: consistent chains, caught by the anchor.
    let (app3, _, runner3) = busy_app().await;
    let db3 = app3.stop().await;
    let anchor3 = verify(&db3, None).await.anchor;
    tamper(
        &db3,
        &format!("DELETE FROM events WHERE stream_id = 'runner-{runner3}' AND stream_version = 2"),
    )
    .await;
    assert!(
        verify(&db3, None).await.problems.is_empty(),
        "the chain alone cannot see a cut tail"
    );
    let report = verify(&db3, Some(&anchor3)).await;
    assert!(
        matches!(&report.problems[..], [Problem::AnchorMismatch { .. }]),
        "{:?}",
        report.problems
    );
    // An anchor still holds when events are appended after it.
    assert!(anchor.contains(':'));
}

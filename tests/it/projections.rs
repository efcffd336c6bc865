//! Read models: idempotent projectors, and a rebuild from the log equals
//! the live tables.

use reqwest::StatusCode;
use warden::events::LogCursor;
use warden::log::event_store;
use warden::projections;

use crate::harness::*;

async fn snapshot(db: &TestDb) -> Vec<Vec<String>> {
    db.snapshot_read_models().await
}

/// Produces a log with every event type the projectors handle so far.
async fn busy_app() -> TestApp {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    for i in 0..3 {
        let (id, _) = app.create_runner(&admin).await;
        if i != 1 {
            assert_eq!(app.invalidate_runner(&admin, &id).await.status(), StatusCode::OK);
        }
    }
    let metadata = warden::events::Metadata::system("test");
    let extra = warden::identity::accounts::add_local_user(
        &app.state.commands,
        "temp@example.org",
        &warden::platform::secrets::Secret::new("a temporary password"),
        warden::events::user::Role::User,
        warden::events::user::UserOrigin::CommandLine,
        &metadata,
    )
    .await
    .unwrap();
    warden::identity::accounts::delete_user(&app.state.commands, extra, &metadata)
        .await
        .unwrap();
    app
}

async fn clear_read_models(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "TRUNCATE users, runners, runner_machines, jobs;
             DELETE FROM projection_checkpoints WHERE name NOT LIKE 'reaction:%';",
        )
        .await
        .unwrap();
}

/// Applies every event of the log `times` times, in one transaction.
async fn apply_log(db: &TestDb, times: usize) {
    db.settle_log().await;
    let mut client = db.client().await;
    let events = event_store::read_after(&client, LogCursor::START, 10_000)
        .await
        .unwrap();
    assert_eq!(
        events.len() as i64,
        db.count_events().await,
        "the whole log must be read"
    );
    let types: std::collections::BTreeSet<&str> = events.iter().map(|e| e.event.event_type()).collect();
    assert_eq!(types.len(), 4, "every projected event type should occur: {types:?}");
    let tx = client.transaction().await.unwrap();
    for _ in 0..times {
        for event in &events {
            for projection in projections::all() {
                projection.apply(&tx, event).await.unwrap();
            }
        }
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_events_twice_changes_nothing() {
    let db = busy_app().await.stop().await;
    let live = snapshot(&db).await;

    clear_read_models(&db).await;
    apply_log(&db, 1).await;
    let once = snapshot(&db).await;
    assert_eq!(
        once, live,
        "one application of the log must rebuild the live read models"
    );

    // Every event applied again after the whole log (a redelivery after a
    // crash between apply and checkpoint).
    apply_log(&db, 1).await;
    assert_eq!(snapshot(&db).await, live);

    // And each event applied twice in a row.
    clear_read_models(&db).await;
    db.settle_log().await;
    let mut client = db.client().await;
    let events = event_store::read_after(&client, LogCursor::START, 10_000)
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    for event in &events {
        for projection in projections::all() {
            projection.apply(&tx, event).await.unwrap();
            projection.apply(&tx, event).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    assert_eq!(snapshot(&db).await, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_rebuild_from_the_log_after_a_reset() {
    let db = busy_app().await.stop().await;
    let live = snapshot(&db).await;
    clear_read_models(&db).await;
    assert!(snapshot(&db).await.iter().all(Vec::is_empty));

    // A restart finds no checkpoints and folds the whole log again.
    let app = TestApp::start_on(db, test_config()).await;
    let admin = app.admin_token().await; // waits for nothing: just proves users are back
    assert!(!admin.is_empty());
    let target = {
        let client = app.db.client().await;
        let row = client
            .query_one(
                "SELECT transaction_id, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        LogCursor {
            transaction_id: row.get(0),
            position: row.get(1),
        }
    };
    app.state
        .consumers
        .projections()
        .wait_for(target, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let db = app.stop().await;
    assert_eq!(snapshot(&db).await, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_record_who_and_from_which_request() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let response = app
        .http
        .post(app.url("/api/admins/create_runner"))
        .bearer_auth(&admin)
        .header("x-request-id", "req-create-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let client = app.db.client().await;
    let row = client
        .query_one("SELECT metadata FROM events WHERE event_type = 'RunnerCreated'", &[])
        .await
        .unwrap();
    let metadata: serde_json::Value = row.get(0);
    assert_eq!(metadata["actor"]["kind"], "user");
    assert_eq!(metadata["request_id"], "req-create-1");
    // A user's address is their personal data: sealed under their key in
    // the log, readable through the audit trail while they exist.
    let stored = metadata["source_ip"].as_str().unwrap();
    assert!(
        stored.starts_with("sealed:") && !stored.contains("127.0.0.1"),
        "{stored}"
    );
    drop(client);
    let audit: serde_json::Value = app
        .get_json(&admin, "/api/admins/audit?type=RunnerCreated")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["source_ip"], "127.0.0.1");
    app.stop().await;
}

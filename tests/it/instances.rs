//! Several instances on one database (issue 13): what a machine or client
//! sees does not depend on which instance answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

/// Waits until every instance counts `n` live instances.
async fn until_instances_see_each_other(apps: &[&TestApp], n: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while apps.iter().any(|app| app.state.fleet.instances_alive() != n) {
        assert!(Instant::now() < deadline, "the instances never learned of each other");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn runner_with_priority(app: &TestApp, admin: &str, priority: i32) -> (String, String) {
    let response = app
        .post_json(admin, "/api/admins/create_runner", json!({"priority": priority}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: serde_json::Value = response.json().await.unwrap();
    (
        body["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

/// A machine that asks for work in a loop through `app` and finishes what
/// it gets at once, recording the job ids, until `stop`.
fn working_machine(
    app: Arc<TestApp>,
    token: String,
    system_id: &'static str,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&got);
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            if let Some(job) = app.request_job(&token, system_id, 2).await {
                let id = job["id"].as_str().unwrap().to_owned();
                record.lock().unwrap().push(id.clone());
                let done = app
                    .post_json(
                        &token,
                        &format!("/api/runners/jobs/{id}/result"),
                        json!({"system_id": system_id, "outcome": "succeeded"}),
                    )
                    .await;
                assert_eq!(done.status(), StatusCode::OK);
            }
        }
    });
    (got, task)
}

/// Runner priority holds across instances: a high-priority machine waiting
/// on one instance gets every job submitted on another, where a
/// low-priority machine waits too (before the shared waiting list, the
/// local low-priority machine got 3 of 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_priority_holds_across_instances() {
    let (first, second) = TestApp::start_two(test_config()).await;
    until_instances_see_each_other(&[&first, &second], 2).await;
    let (first, second) = (Arc::new(first), Arc::new(second));
    let admin = first.admin_token().await;
    let user = first.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (low_id, low) = runner_with_priority(&first, &admin, 1).await;
    let (high_id, high) = runner_with_priority(&first, &admin, 10).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (low_got, low_task) = working_machine(Arc::clone(&first), low, "r_low00000000", Arc::clone(&stop));
    let (high_got, high_task) = working_machine(Arc::clone(&second), high, "r_high0000000", Arc::clone(&stop));
    let db = first.db.client().await;
    let waiting = |runner: String| {
        let db = &db;
        async move {
            let runner: uuid::Uuid = runner.parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let n: i64 = db
                    .query_one("SELECT count(*) FROM dispatch_waiters WHERE runner_id = $1", &[&runner])
                    .await
                    .unwrap()
                    .get(0);
                if n > 0 {
                    return;
                }
                assert!(Instant::now() < deadline, "runner {runner} never waited");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let mut submitted = Vec::new();
    for n in 0..10 {
        waiting(high_id.clone()).await;
        waiting(low_id.clone()).await;
        let job = first.submit_job(&user, json!(n), &[], 0).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while first.job(&user, &job).await["status"] == "queued" {
            assert!(Instant::now() < deadline, "job {n} was never assigned");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        submitted.push(job);
    }
    stop.store(true, Ordering::SeqCst);
    low_task.await.unwrap();
    high_task.await.unwrap();
    let low_got = low_got.lock().unwrap().clone();
    let high_got = high_got.lock().unwrap().clone();
    assert!(
        low_got.is_empty(),
        "the low-priority machine got {} of 10",
        low_got.len()
    );
    assert_eq!(high_got, submitted);
    drop(db);
    Arc::into_inner(second).unwrap().stop().await;
    Arc::into_inner(first).unwrap().stop().await;
}

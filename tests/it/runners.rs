//! Runner machines, the runner protocols (GitLab style and Project-W),
//! jobs, and runner administration, through the real HTTP server.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

async fn machine_events(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM events WHERE stream_id LIKE 'machine-%'", &[])
        .await
        .unwrap()
        .get(0)
}

async fn admin_runners(app: &TestApp, admin: &str) -> Vec<Value> {
    app.get_items(admin, "/api/admins/runners").await
}

async fn create_runner_with(app: &TestApp, admin: &str, body: Value) -> (String, String) {
    let response = app.post_json(admin, "/api/admins/create_runner", body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    (
        body["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_serves_many_machines_each_registered_once() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (runner_id, token) = app.create_runner(&admin).await;
    for (system_id, version) in [
        ("r_aaaaaaaaaaaa", "17.1"),
        ("r_bbbbbbbbbbbb", "17.2"),
        ("s_cccccccccccc", "17.2"),
    ] {
        for _ in 0..3 {
            let response = app
                .post_json(
                    &token,
                    "/api/runners/verify",
                    json!({"system_id": system_id, "info": {"version": version, "platform": "linux"}}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            assert!(response.json::<Value>().await.unwrap()["machine_id"].is_string());
        }
    }
    // Three machines, one registration each; repeats recorded nothing.
    assert_eq!(machine_events(&app.db).await, 3);
    let runners = admin_runners(&app, &admin).await;
    let runner = runners.iter().find(|r| r["id"] == runner_id.as_str()).unwrap();
    let machines = runner["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 3);
    assert!(machines
        .iter()
        .all(|m| m["platform"] == "linux" && m["ip_address"] == "127.0.0.1"));

    // A new version is recorded at once (info changed).
    let response = app
        .post_json(
            &token,
            "/api/runners/verify",
            json!({"system_id": "r_aaaaaaaaaaaa", "info": {"version": "18.0", "platform": "linux"}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(machine_events(&app.db).await, 4);

    // system_id from the header works too; a malformed one is refused.
    let header = app
        .http
        .post(app.url("/api/runners/verify"))
        .bearer_auth(&token)
        .header("x-runner-system-id", "r_dddddddddddd")
        .send()
        .await
        .unwrap();
    assert_eq!(header.status(), StatusCode::OK);
    let bad = app
        .post_json(&token, "/api/runners/verify", json!({"system_id": "not ok!"}))
        .await;
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_system_id").await;
    app.stop().await;
}

/// 10,000 heartbeats from one machine append a handful of events at most,
/// while its freshest contact time is still known.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_do_not_grow_the_log() {
    let app = std::sync::Arc::new(TestApp::start().await);
    let admin = app.admin_token().await;
    let (runner_id, token) = app.create_runner(&admin).await;
    let register = app
        .post_json(
            &token,
            "/api/runners/register",
            json!({"name": "hb", "priority": 1, "version": "0.6", "git_hash": "x", "source_code_url": "https://example.org"}),
        )
        .await;
    assert_eq!(register.status(), StatusCode::OK);
    let session: Value = register.json().await.unwrap();
    let heartbeat = format!(
        "/api/runners/heartbeat?session_token={}",
        session["session_token"].as_str().unwrap()
    );
    let before = app.db.count_events().await;
    let started = chrono::Utc::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let app = std::sync::Arc::clone(&app);
            let (token, heartbeat) = (token.clone(), heartbeat.clone());
            tokio::spawn(async move {
                for _ in 0..625 {
                    let response = app.post_json(&token, &heartbeat, json!({"progress": 0.0})).await;
                    assert_eq!(response.status(), StatusCode::OK);
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body, json!({"abort": false, "job_assigned": false}));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let appended = app.db.count_events().await - before;
    assert!(appended <= 3, "10,000 heartbeats appended {appended} events");
    let runners = admin_runners(&app, &admin).await;
    let runner = runners.iter().find(|r| r["id"] == runner_id.as_str()).unwrap();
    let contacted: chrono::DateTime<chrono::Utc> =
        runner["machines"][0]["contacted_at"].as_str().unwrap().parse().unwrap();
    assert!(contacted >= started, "the freshest contact comes from memory");
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_through_its_whole_life() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (runner_id, token) = app.create_runner(&admin).await;
    let job_id = app.submit_job(&user, json!({"script": "make test"}), &[], 0).await;
    assert_eq!(app.job(&user, &job_id).await["status"], "queued");

    let job = app.request_job(&token, "r_lifecycle00", 5).await.expect("a job");
    assert_eq!(job["id"], job_id.as_str());
    assert_eq!(job["payload"], json!({"script": "make test"}));
    // Asking again while it runs returns the same job, never a second one.
    let again = app.request_job(&token, "r_lifecycle00", 0).await.expect("its job");
    assert_eq!(again["id"], job_id.as_str());

    let progress = app
        .post_json(
            &token,
            &format!("/api/runners/jobs/{job_id}/progress"),
            json!({"system_id": "r_lifecycle00", "progress": 0.5, "message": "half"}),
        )
        .await;
    assert_eq!(progress.status(), StatusCode::OK);
    assert_eq!(progress.json::<Value>().await.unwrap()["abort"], false);
    let seen = app.job(&user, &job_id).await;
    assert_eq!(seen["status"], "assigned");
    assert_eq!(seen["runner_id"], runner_id.as_str());
    assert_eq!(seen["progress"], 0.5);

    // Another machine of the same runner cannot report on it.
    let stranger = app
        .post_json(
            &token,
            &format!("/api/runners/jobs/{job_id}/result"),
            json!({"system_id": "r_other000000", "outcome": "succeeded"}),
        )
        .await;
    assert_error(stranger, StatusCode::CONFLICT, "job_not_assigned_to_machine").await;
    let done = app
        .post_json(
            &token,
            &format!("/api/runners/jobs/{job_id}/result"),
            json!({"system_id": "r_lifecycle00", "outcome": "succeeded", "result": {"passed": 42}}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let finished = app.job(&user, &job_id).await;
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["result"], json!({"passed": 42}));
    let twice = app
        .post_json(
            &token,
            &format!("/api/runners/jobs/{job_id}/result"),
            json!({"system_id": "r_lifecycle00", "outcome": "failed"}),
        )
        .await;
    assert_error(twice, StatusCode::CONFLICT, "job_not_assigned_to_machine").await;

    // Users only see their own jobs; admins see all.
    let own: Vec<Value> = app.get_json(&user, "/api/jobs").await.json().await.unwrap();
    assert_eq!(own.len(), 1);
    let other = app.token(ADMIN_EMAIL, ADMIN_PASSWORD, false).await;
    assert_error(
        app.get_json(&other, &format!("/api/jobs/{job_id}")).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    )
    .await;
    let all = app.get_items(&admin, "/api/admins/jobs?status=succeeded").await;
    assert_eq!(all.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_waits_quietly_and_wakes_when_a_job_arrives() {
    let app = std::sync::Arc::new(TestApp::start().await);
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, token) = app.create_runner(&admin).await;

    let started = Instant::now();
    assert!(app.request_job(&token, "r_poller000000", 1).await.is_none());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    let poll = {
        let app = std::sync::Arc::clone(&app);
        let token = token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let job = app.request_job(&token, "r_poller000000", 20).await;
            (job, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job_id = app.submit_job(&user, json!({"n": 1}), &[], 0).await;
    let (job, waited) = poll.await.unwrap();
    assert_eq!(job.unwrap()["id"], job_id.as_str());
    assert!(
        waited < Duration::from_secs(3),
        "woken by the submission, not a timeout: {waited:?}"
    );
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_order_priority_and_tags() {
    let app = std::sync::Arc::new(TestApp::start().await);
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, plain) = app.create_runner(&admin).await;
    let (_, gpu) = create_runner_with(&app, &admin, json!({"tags": ["gpu"]})).await;

    let old = app.submit_job(&user, json!("old"), &[], 0).await;
    let urgent = app.submit_job(&user, json!("urgent"), &[], 5).await;
    let newer = app.submit_job(&user, json!("newer"), &[], 0).await;
    let gpu_job = app.submit_job(&user, json!("gpu"), &["gpu"], 9).await;

    // The plain runner never gets the GPU job, whatever its priority.
    let mut order = Vec::new();
    for _ in 0..3 {
        let job = app.request_job(&plain, "r_plain0000000", 2).await.unwrap();
        let id = job["id"].as_str().unwrap().to_owned();
        let done = app
            .post_json(
                &plain,
                &format!("/api/runners/jobs/{id}/result"),
                json!({"system_id": "r_plain0000000", "outcome": "succeeded"}),
            )
            .await;
        assert_eq!(done.status(), StatusCode::OK);
        order.push(id);
    }
    assert_eq!(order, [urgent, old, newer], "priority first, then oldest first");
    assert!(app.request_job(&plain, "r_plain0000000", 0).await.is_none());
    assert_eq!(
        app.request_job(&gpu, "r_gpu000000000", 2).await.unwrap()["id"],
        gpu_job.as_str()
    );

    // Two runners waiting for the same job: the higher priority wins.
    let (_, low) = create_runner_with(&app, &admin, json!({"priority": 1})).await;
    let (_, high) = create_runner_with(&app, &admin, json!({"priority": 10})).await;
    let waiting: Vec<_> = [(low.clone(), "r_low00000000"), (high.clone(), "r_high0000000")]
        .into_iter()
        .map(|(token, system_id)| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move { (token.clone(), app.request_job(&token, system_id, 3).await) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let contested = app.submit_job(&user, json!("contested"), &[], 0).await;
    for waiter in waiting {
        let (token, job) = waiter.await.unwrap();
        if token == high {
            assert_eq!(job.unwrap()["id"], contested.as_str());
        } else {
            assert!(job.is_none(), "the low-priority runner got {job:?}");
        }
    }
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_runners_get_nothing_until_resumed() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (runner_id, token) = create_runner_with(&app, &admin, json!({"description": "box"})).await;
    let paused = app
        .http
        .patch(app.url(&format!("/api/admins/runners/{runner_id}")))
        .bearer_auth(&admin)
        .json(&json!({"paused": true, "tags": ["Linux"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    let view: Value = paused.json().await.unwrap();
    assert_eq!(view["paused"], true);
    assert_eq!(view["tags"], json!(["linux"]));
    assert_eq!(view["description"], "box");

    let job_id = app.submit_job(&user, json!("wait"), &[], 0).await;
    assert!(app.request_job(&token, "r_paused000000", 1).await.is_none());
    let resumed = app
        .http
        .patch(app.url(&format!("/api/admins/runners/{runner_id}")))
        .bearer_auth(&admin)
        .json(&json!({"paused": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::OK);
    assert_eq!(
        app.request_job(&token, "r_paused000000", 2).await.unwrap()["id"],
        job_id.as_str()
    );

    let unknown = app
        .http
        .patch(app.url(&format!("/api/admins/runners/{}", uuid::Uuid::now_v7())))
        .bearer_auth(&admin)
        .json(&json!({"paused": true}))
        .send()
        .await
        .unwrap();
    assert_error(unknown, StatusCode::NOT_FOUND, "runner_not_found").await;
    let garbage = app
        .http
        .patch(app.url("/api/admins/runners/not-a-uuid"))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(garbage, StatusCode::BAD_REQUEST, "invalid_path").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reset_with_and_without_grace() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (runner_id, first) = app.create_runner(&admin).await;
    let reset = |grace: &'static str| {
        let url = app.url(&format!("/api/admins/reset_runner_token?runner_id={runner_id}{grace}"));
        let http = app.http.clone();
        let admin = admin.clone();
        async move {
            let response = http.post(url).bearer_auth(admin).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let second = reset("").await;
    assert_error(
        app.verify_runner(&first).await,
        StatusCode::UNAUTHORIZED,
        "invalid_runner_token",
    )
    .await;
    assert_eq!(app.verify_runner(&second).await.status(), StatusCode::OK);

    let third = reset("&grace_period=1h").await;
    assert_eq!(
        app.verify_runner(&second).await.status(),
        StatusCode::OK,
        "old token within its grace"
    );
    assert_eq!(app.verify_runner(&third).await.status(), StatusCode::OK);

    let too_long = app
        .http
        .post(app.url(&format!(
            "/api/admins/reset_runner_token?runner_id={runner_id}&grace_period=400d"
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_error(too_long, StatusCode::UNPROCESSABLE_ENTITY, "invalid_grace_period").await;

    // Invalidation ends both tokens at once (the grace token is wiped).
    assert_eq!(app.invalidate_runner(&admin, &runner_id).await.status(), StatusCode::OK);
    assert_error(
        app.verify_runner(&third).await,
        StatusCode::UNAUTHORIZED,
        "runner_invalidated",
    )
    .await;
    assert_error(
        app.verify_runner(&second).await,
        StatusCode::UNAUTHORIZED,
        "invalid_runner_token",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_runners_jobs_go_to_another_runner() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (doomed_id, doomed) = app.create_runner(&admin).await;
    let (_, healthy) = app.create_runner(&admin).await;
    let first = app.submit_job(&user, json!(1), &[], 0).await;
    let second = app.submit_job(&user, json!(2), &[], 0).await;
    let a = app.request_job(&doomed, "r_doomed00001", 2).await.unwrap();
    let b = app.request_job(&doomed, "r_doomed00002", 2).await.unwrap();
    let mut held = vec![
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    ];
    held.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(held, expected);

    assert_eq!(app.invalidate_runner(&admin, &doomed_id).await.status(), StatusCode::OK);
    // The doomed runner cannot report any more ...
    let late = app
        .post_json(
            &doomed,
            &format!("/api/runners/jobs/{first}/result"),
            json!({"system_id": "r_doomed00001", "outcome": "succeeded"}),
        )
        .await;
    assert_error(late, StatusCode::UNAUTHORIZED, "runner_invalidated").await;
    // ... and the reaction puts both jobs back for the healthy one.
    let mut finished = Vec::new();
    for system_id in ["r_healthy0001", "r_healthy0002"] {
        let job = app.request_job(&healthy, system_id, 10).await.expect("requeued job");
        let id = job["id"].as_str().unwrap().to_owned();
        let done = app
            .post_json(
                &healthy,
                &format!("/api/runners/jobs/{id}/result"),
                json!({"system_id": system_id, "outcome": "succeeded"}),
            )
            .await;
        assert_eq!(done.status(), StatusCode::OK);
        finished.push(id);
    }
    finished.sort();
    assert_eq!(finished, expected);
    for id in &expected {
        let job = app.job(&user, id).await;
        assert_eq!(job["status"], "succeeded");
        assert_eq!(job["requeue_count"], 1);
    }
    let requeues = warden::fleet::reactions::requeues_by_job(&app.db.client().await)
        .await
        .unwrap();
    assert_eq!(requeues.len(), 2);
    assert!(requeues.values().all(|n| *n == 1), "{requeues:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_requests_are_rate_limited_per_token() {
    let mut config = test_config();
    config.runners.rate_limit.per_second = 1;
    config.runners.rate_limit.burst = 3;
    let app = TestApp::start_with(config).await;
    let admin = app.admin_token().await;
    let (_, limited) = app.create_runner(&admin).await;
    let (_, other) = app.create_runner(&admin).await;
    for _ in 0..3 {
        assert_eq!(app.verify_runner(&limited).await.status(), StatusCode::OK);
    }
    let refused = app.verify_runner(&limited).await;
    assert!(refused.headers().get("retry-after").is_some());
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(app.verify_runner(&other).await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_machines_are_pruned_and_can_come_back() {
    let mut config = test_config();
    config.runners.contact_record_interval = Duration::from_millis(200);
    config.runners.machine_retention = Duration::from_millis(800);
    let app = TestApp::start_with(config).await;
    let admin = app.admin_token().await;
    let (runner_id, token) = app.create_runner(&admin).await;
    for system_id in ["r_stale0000000", "r_fresh0000000"] {
        let response = app
            .post_json(&token, "/api/runners/verify", json!({"system_id": system_id}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Keep one machine in contact past the other's retention.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        app.post_json(&token, "/api/runners/verify", json!({"system_id": "r_fresh0000000"}))
            .await;
    }
    let pruned = warden::fleet::machines::prune_stale(&app.state.fleet).await.unwrap();
    assert_eq!(pruned, 1);
    let machines = |runners: Vec<Value>| -> Vec<String> {
        let runner = runners.into_iter().find(|r| r["id"] == runner_id.as_str()).unwrap();
        runner["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["system_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(machines(admin_runners(&app, &admin).await), ["r_fresh0000000"]);
    let back = app
        .post_json(&token, "/api/runners/verify", json!({"system_id": "r_stale0000000"}))
        .await;
    assert_eq!(back.status(), StatusCode::OK);
    let mut systems = machines(admin_runners(&app, &admin).await);
    systems.sort();
    assert_eq!(systems, ["r_fresh0000000", "r_stale0000000"]);
    let db = app.stop().await;
    let live = db.snapshot_read_models().await;
    db.rebuild_read_models().await;
    assert_eq!(db.snapshot_read_models().await, live, "machines rebuild from the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runner_and_job_input_gets_clear_errors() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, token) = app.create_runner(&admin).await;
    let no_system = app.post_json(&token, "/api/runners/jobs/request", json!({})).await;
    assert_error(no_system, StatusCode::UNPROCESSABLE_ENTITY, "missing_system_id").await;
    let unknown_field = app
        .post_json(
            &token,
            "/api/runners/jobs/request",
            json!({"system_id": "r_x", "colour": 1}),
        )
        .await;
    assert_error(unknown_field, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    let bad_progress = app
        .post_json(
            &token,
            &format!("/api/runners/jobs/{}/progress", uuid::Uuid::now_v7()),
            json!({"system_id": "r_x", "progress": 0.1}),
        )
        .await;
    assert_error(bad_progress, StatusCode::NOT_FOUND, "job_not_found").await;
    let bad_path = app
        .post_json(
            &token,
            "/api/runners/jobs/123/result",
            json!({"system_id": "r_x", "outcome": "succeeded"}),
        )
        .await;
    assert_error(bad_path, StatusCode::BAD_REQUEST, "invalid_path").await;
    let bad_outcome = app
        .post_json(
            &token,
            &format!("/api/runners/jobs/{}/result", uuid::Uuid::now_v7()),
            json!({"system_id": "r_x", "outcome": "maybe"}),
        )
        .await;
    assert_error(bad_outcome, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    // Users' job calls refuse runner tokens and vice versa.
    let runner_as_user = app.post_json(&token, "/api/jobs", json!({"payload": 1})).await;
    assert_error(runner_as_user, StatusCode::UNAUTHORIZED, "runner_token_not_accepted").await;
    let user_as_runner = app
        .post_json(&user, "/api/runners/jobs/request", json!({"system_id": "r_x"}))
        .await;
    assert_error(user_as_runner, StatusCode::UNAUTHORIZED, "user_token_not_accepted").await;
    let no_payload = app.post_json(&user, "/api/jobs", json!({"priority": 1})).await;
    assert_error(no_payload, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    let bad_tags = app
        .post_json(&user, "/api/jobs", json!({"payload": 1, "required_tags": ["a b"]}))
        .await;
    assert_error(bad_tags, StatusCode::UNPROCESSABLE_ENTITY, "invalid_tag").await;
    let bad_status = app.get_json(&user, "/api/jobs?status=weird").await;
    assert_error(bad_status, StatusCode::BAD_REQUEST, "invalid_query").await;
    let job_id = app.submit_job(&user, json!(1), &[], 0).await;
    let cancelled = app
        .post_json(&user, &format!("/api/jobs/{job_id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.json::<Value>().await.unwrap()["status"], "cancelled");
    let again = app
        .post_json(&user, &format!("/api/jobs/{job_id}/cancel"), json!({}))
        .await;
    assert_error(again, StatusCode::CONFLICT, "job_already_finished").await;
    app.stop().await;
}

/// Runners and jobs get stable positive integer numbers (the Project-W
/// protocol's ids): recorded in their creation events, shown next to the
/// UUIDs, the same after a rebuild from the log; invalidate_runner takes
/// either id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_and_jobs_have_stable_integer_numbers() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (first_id, _) = app.create_runner(&admin).await;
    let (second_id, second_token) = app.create_runner(&admin).await;
    let runners = app.get_items(&admin, "/api/admins/runners").await;
    let number_of = |id: &str| {
        runners.iter().find(|r| r["id"] == id).unwrap()["number"]
            .as_i64()
            .unwrap()
    };
    let (first, second) = (number_of(&first_id), number_of(&second_id));
    assert!(first > 0 && second > first, "{first} {second}");
    let job_a = app.submit_job(&user, json!(1), &[], 0).await;
    let job_b = app.submit_job(&user, json!(2), &[], 0).await;
    let (a, b) = (
        app.job(&user, &job_a).await["number"].as_i64().unwrap(),
        app.job(&user, &job_b).await["number"].as_i64().unwrap(),
    );
    assert!(a > 0 && b > a, "{a} {b}");

    // Invalidation by number.
    let by_number = app.invalidate_runner(&admin, &second.to_string()).await;
    assert_eq!(by_number.status(), StatusCode::OK);
    assert_eq!(
        app.verify_runner(&second_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_error(
        app.invalidate_runner(&admin, "999999999").await,
        StatusCode::NOT_FOUND,
        "runner_not_found",
    )
    .await;
    assert_error(
        app.invalidate_runner(&admin, "-3").await,
        StatusCode::BAD_REQUEST,
        "invalid_runner_id",
    )
    .await;

    // The numbers come from the log: a rebuild gives the same ones.
    let db = app.stop().await;
    let before = db.snapshot_read_models().await;
    db.rebuild_read_models().await;
    assert_eq!(db.snapshot_read_models().await, before);
}

/// A native machine that holds a job and goes silent loses it after
/// `runners.native_silence_timeout`; one that keeps reporting keeps its job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_native_machine_loses_its_job() {
    let mut config = test_config();
    config.runners.contact_record_interval = Duration::from_secs(1);
    config.runners.native_silence_timeout = Duration::from_secs(2);
    config.runners.online_timeout = Duration::from_secs(2); // the sweeper then runs every second
    let app = TestApp::start_with(config).await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, token) = app.create_runner(&admin).await;
    let silent_job = app.submit_job(&user, json!("silent"), &[], 0).await;
    let busy_job = app.submit_job(&user, json!("busy"), &[], 0).await;
    let first = app.request_job(&token, "r_silent000001", 0).await.unwrap();
    let second = app.request_job(&token, "r_busy00000001", 0).await.unwrap();
    assert_eq!(
        [first["id"].as_str().unwrap(), second["id"].as_str().unwrap()],
        [silent_job.as_str(), busy_job.as_str()]
    );

    // The busy machine reports progress; the silent one sends nothing.
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.job(&user, &silent_job).await["status"] != "queued" {
        assert!(Instant::now() < deadline, "the silent machine kept its job");
        let progress = app
            .post_json(
                &token,
                &format!("/api/runners/jobs/{busy_job}/progress"),
                json!({"system_id": "r_busy00000001", "progress": 0.5}),
            )
            .await;
        assert_eq!(progress.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(app.job(&user, &busy_job).await["status"], "assigned");
    let audit: Value = app
        .get_json(
            &admin,
            &format!("/api/admins/audit?stream=job-{silent_job}&type=JobRequeued"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        audit["entries"][0]["data"]["reason"], "runner machine silent",
        "{audit}"
    );
    app.stop().await;
}

/// A deleted user's jobs are not run any more: a queued one is cancelled
/// (never handed out), a running one told to abort; both with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_users_jobs_are_cancelled() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, token) = app.create_runner(&admin).await;
    let running = app.submit_job(&user, json!("running"), &[], 0).await;
    let taken = app.request_job(&token, "r_deleted00001", 0).await.unwrap();
    assert_eq!(taken["id"], running.as_str());
    let queued = app.submit_job(&user, json!("queued"), &[], 0).await;

    let me: Value = app.get_json(&user, "/api/users/me").await.json().await.unwrap();
    let deleted = app
        .http
        .delete(app.url(&format!("/api/admins/users/{}", me["id"].as_str().unwrap())))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);

    let job = |id: &str| {
        let (app, admin, id) = (&app, admin.clone(), id.to_owned());
        async move { app.job(&admin, &id).await }
    };
    assert_eq!(job(&queued).await["status"], "cancelled");
    assert_eq!(job(&running).await["cancel_requested"], true);
    assert!(
        app.request_job(&token, "r_deleted00002", 0).await.is_none(),
        "nothing is handed out"
    );
    let progress = app
        .post_json(
            &token,
            &format!("/api/runners/jobs/{running}/progress"),
            json!({"system_id": "r_deleted00001", "progress": 0.5}),
        )
        .await;
    assert_eq!(progress.json::<Value>().await.unwrap()["abort"], true);
    let audit: Value = app
        .get_json(
            &admin,
            &format!("/api/admins/audit?stream=job-{queued}&type=JobCancelled"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["data"]["reason"], "submitter deleted", "{audit}");
    app.stop().await;
}

/// The assignment race, made deterministic: a pause is being applied (the
/// runner projection holds the runner's assignment lock and has updated
/// the row) while a machine asks for a job. The assignment waits for the
/// lock and must then see the pause. (Reading the runner in the statement
/// that waited for the lock used the snapshot from before the wait: the
/// job was assigned to the paused runner.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_waiting_for_a_pause_sees_it() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (runner_id, runner_token) = app.create_runner(&admin).await;
    // The machine is known before the race (registration is not the point).
    assert!(app.request_job(&runner_token, "s_race", 0).await.is_none());
    let job_id = app.submit_job(&user, json!({"n": 1}), &[], 0).await;
    let runner_uuid: uuid::Uuid = runner_id.parse().unwrap();

    // What the runner projection does when it applies a pause, held open.
    let mut projection = app.db.client().await;
    let pausing = projection.transaction().await.unwrap();
    pausing
        .execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&warden::projections::runners::assignment_lock_key(runner_uuid)],
        )
        .await
        .unwrap();
    pausing
        .execute("UPDATE runners SET paused = true WHERE id = $1", &[&runner_uuid])
        .await
        .unwrap();
    let asking = {
        let (http, url, token) = (
            app.http.clone(),
            app.url("/api/runners/jobs/request"),
            runner_token.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"system_id": "s_race", "wait_seconds": 0}))
                .send()
                .await
                .unwrap()
        })
    };
    // Until the assignment waits on the lock.
    let observer = app.db.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the assignment never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pausing.commit().await.unwrap();
    let answer = asking.await.unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    assert!(
        !body.contains(&job_id),
        "the job went to a runner paused while it was being assigned: {status} {body}"
    );
    assert_eq!(app.job(&user, &job_id).await["status"], "queued");
    app.stop().await;
}

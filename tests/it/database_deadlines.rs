//! A database that hangs instead of failing (a frozen host: TCP open,
//! nothing answered) costs a bounded wait, never an endless one: requests
//! answer `503 database_unavailable`, probes answer in time, leadership
//! moves, and a multi-host URL gets past a hung host.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use warden::platform::db::{Database, Timeouts};

use crate::harness::*;

/// Short deadlines, so that the tests wait seconds, not minutes.
const TIMEOUTS: Timeouts = Timeouts {
    statement: Duration::from_secs(1),
    connect: Duration::from_secs(1),
    pool_wait: Duration::from_secs(1),
    maintenance: Duration::from_secs(60),
};

fn config() -> warden::platform::config::Config {
    let mut config = test_config();
    config.database.statement_timeout = TIMEOUTS.statement;
    config.database.connect_timeout = TIMEOUTS.connect;
    config.database.pool_wait_timeout = TIMEOUTS.pool_wait;
    config.http.ready_timeout = Duration::from_secs(2);
    config
}

/// The longest a request may take against a frozen database: a pooled
/// connection (wait, check), a statement that gets no answer, a new
/// connection's attempt; with room for a loaded machine.
const REQUEST_BOUND: Duration = Duration::from_secs(10);

/// Item 9 of the bounded-resources issue: eight requests in flight when
/// the database froze, and readiness, all answer in time (with the
/// database frozen, 7 of 8 used to hang for the client's 150 s, and
/// readiness timed out instead of answering 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_frozen_database_answer_503_in_time() {
    let db = TestDb::new().await;
    let proxy = FreezingProxy::start().await;
    let app = std::sync::Arc::new(TestApp::start_on(proxy.in_front_of(&db, TIMEOUTS), config()).await);
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    // Warm connections: the ones a frozen server leaves hanging.
    for _ in 0..4 {
        assert_eq!(app.get_json(&user, "/api/users/me").await.status(), StatusCode::OK);
    }

    proxy.freeze();
    let frozen_at = Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|n| {
            let (app, admin, user) = (app.clone(), admin.clone(), user.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let response = match n % 4 {
                    0 => app.get_json(&user, "/api/users/me").await,
                    1 => app.post_json(&admin, "/api/admins/create_runner", json!({})).await,
                    2 => app.login(USER_EMAIL, USER_PASSWORD, false).await,
                    _ => app.post_json(&user, "/api/jobs", json!({"payload": {"n": n}})).await,
                };
                (n, started.elapsed(), response)
            })
        })
        .collect();
    for call in calls {
        let (n, took, response) = call.await.unwrap();
        assert!(took < REQUEST_BOUND, "call {n} took {took:?}");
        assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
    }
    let started = Instant::now();
    let ready = app.http.get(app.url("/api/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "readiness took {:?}",
        started.elapsed()
    );
    eprintln!(
        "every request answered 503 within {:?} of the freeze",
        frozen_at.elapsed()
    );

    // Thawed: served again, on connections made since (the ones that were
    // silent are gone).
    proxy.thaw();
    let thawed_at = Instant::now();
    loop {
        let response = app.get_json(&user, "/api/users/me").await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(thawed_at.elapsed() < REQUEST_BOUND, "not served after the thaw");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app = std::sync::Arc::into_inner(app).expect("no call holds the app");
    app.stop().await;
}

/// Item 10: the instance leading every log consumer freezes (its
/// connections answer nothing, the server keeps their sessions): the
/// other takes every consumer within 5 s, and re-assigns the job of a
/// runner invalidated meanwhile. When the frozen one wakes, its late work
/// changes nothing (fenced checkpoints): the job was requeued once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_hands_every_consumer_over_within_five_seconds() {
    let db = TestDb::new().await;
    let proxy = FreezingProxy::start().await;
    let frozen = TestApp::start_on(proxy.in_front_of(&db, TIMEOUTS), config()).await;
    let healthy = TestApp::start_on(db.reconnect(), config()).await;
    // Four projectors and the re-assignment reaction.
    let leading = |app: &TestApp| app.state.consumers.led_here().len();
    let wait_until = Instant::now() + Duration::from_secs(10);
    while leading(&frozen) < 5 {
        assert!(Instant::now() < wait_until, "the first instance does not lead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = healthy.admin_token().await;
    let user = healthy.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (runner_id, runner_token) = healthy.create_runner(&admin).await;
    let job = healthy.submit_job(&user, json!({"n": 1}), &[], 0).await;
    assert!(healthy.request_job(&runner_token, "m1", 0).await.is_some());

    proxy.freeze();
    let frozen_at = Instant::now();
    while leading(&healthy) < 5 {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(5),
            "after {:?} the healthy instance leads {} consumers",
            frozen_at.elapsed(),
            leading(&healthy)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("every consumer moved after {:?}", frozen_at.elapsed());
    assert!(healthy
        .invalidate_runner(&admin, &runner_id)
        .await
        .status()
        .is_success());
    healthy
        .wait_until_queued(&user, &job, Duration::from_secs(10), "the job was not requeued")
        .await;

    proxy.thaw();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let client = healthy.db.client().await;
    let requeues = warden::fleet::reactions::requeues_by_job(&client).await.unwrap();
    assert_eq!(requeues.values().sum::<i64>(), 1, "{requeues:?}");
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(30), frozen.stop()).await;
    healthy.stop().await;
}

/// A client that freezes inside a transaction (a stopped instance, a
/// proxy that forwards nothing) holds its locks for half its statement
/// timeout at most: the server ends the session
/// (`idle_in_transaction_session_timeout`). Without it, the new leader of
/// a log consumer waited on the checkpoint row the frozen one had updated
/// until its own statement timed out, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_frozen_inside_a_transaction_holds_its_locks_for_a_bounded_time() {
    let db = TestDb::new().await;
    let proxy = FreezingProxy::start().await;
    let through_proxy = proxy.in_front_of(&db, TIMEOUTS);
    let mut holder = through_proxy.db.get().await.unwrap();
    let transaction = holder.transaction().await.unwrap();
    transaction
        .execute("SELECT pg_advisory_xact_lock(4242)", &[])
        .await
        .unwrap();
    proxy.freeze();
    let frozen_at = Instant::now();
    // Another client, with the request timeouts (10 s statements).
    let other = db.db.get().await.unwrap();
    other
        .execute("SELECT pg_advisory_xact_lock(4242)", &[])
        .await
        .expect("the frozen client's lock is released before this statement times out");
    let waited = frozen_at.elapsed();
    assert!(
        waited < TIMEOUTS.statement + Duration::from_secs(1),
        "waited {waited:?} for the frozen client's lock"
    );
    eprintln!("a frozen client's lock was released {waited:?} after the freeze");
    drop(other);
    std::mem::forget(transaction);
    drop(holder);
}

/// Item 11: a multi-host URL whose first host hangs (accepts TCP, answers
/// nothing) does not block the others: connections are made through the
/// second host from the start, and when the host in use freezes, requests
/// are served through the other within the answer deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_host_of_a_multi_host_url_blocks_no_other() {
    let db = TestDb::new().await;
    let first = FreezingProxy::start().await;
    let second = FreezingProxy::start().await;
    let password = with_cluster(|c| c.password().unwrap_or_default().to_owned());
    let url = |a: &FreezingProxy, b: &FreezingProxy| {
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=warden password={password} dbname={} sslmode=disable",
            a.port, b.port, db.name
        )
    };

    // The first host is frozen from the start.
    first.freeze();
    let pool = Database::from_url(&url(&first, &second), 4, None, TIMEOUTS).unwrap();
    let started = Instant::now();
    let connection = pool.get().await.expect("the second host serves");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "waited {:?} for the hung first host",
        started.elapsed()
    );
    drop(connection);
    first.thaw();

    // The host in use freezes under a running app.
    let app = TestApp::start_on(
        TestDb {
            name: db.name.clone(),
            db: Database::from_url(&url(&first, &second), 16, None, TIMEOUTS).unwrap(),
        },
        config(),
    )
    .await;
    let admin = app.admin_token().await;
    first.freeze();
    let frozen_at = Instant::now();
    loop {
        let response = app.post_json(&admin, "/api/admins/create_runner", json!({})).await;
        if response.status() == StatusCode::CREATED {
            break;
        }
        assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
        assert!(frozen_at.elapsed() < REQUEST_BOUND, "no write through the other host");
    }
    eprintln!("writes came back {:?} after the host in use froze", frozen_at.elapsed());
    first.thaw();
    app.stop().await;
}

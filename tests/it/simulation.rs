//! Many simulated runner machines on several tokens poll concurrently
//! while jobs are submitted and runners are invalidated at random.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

const JOBS: usize = 80;
/// The runners invalidated while they work.
const INVALIDATED: [usize; 2] = [1, 3];

/// A runner-side request that succeeded, and when it was sent.
struct Success {
    runner: usize,
    sent: Instant,
}

#[derive(Default)]
struct Record {
    successes: Vec<Success>,
    /// When the invalidation of a runner was answered with a 2xx.
    invalidated: HashMap<usize, Instant>,
}

async fn machine_loop(
    app: Arc<TestApp>,
    runner: usize,
    token: String,
    system_id: String,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
) {
    let succeeded = |sent: Instant| record.lock().unwrap().successes.push(Success { runner, sent });
    while !stop.load(Ordering::SeqCst) {
        let sent = Instant::now();
        let response = app
            .post_json(
                &token,
                "/api/runners/jobs/request",
                json!({"system_id": system_id, "wait_seconds": 1}),
            )
            .await;
        let job: Value = match response.status() {
            StatusCode::OK => response.json().await.unwrap(),
            StatusCode::NO_CONTENT => continue,
            StatusCode::UNAUTHORIZED => return, // invalidated: this machine is done
            other => panic!("job request answered {other}"),
        };
        succeeded(sent);
        let job_id = job["id"].as_str().unwrap().to_owned();
        // Runners that get invalidated work slowly, so they hold jobs then
        // (long enough for the invalidation to land on a loaded machine).
        let work = if INVALIDATED.contains(&runner) {
            rand::thread_rng().gen_range(300..500)
        } else {
            rand::thread_rng().gen_range(0..25)
        };
        tokio::time::sleep(Duration::from_millis(work)).await;

        let sent = Instant::now();
        let progress = app
            .post_json(
                &token,
                &format!("/api/runners/jobs/{job_id}/progress"),
                json!({"system_id": system_id, "progress": 0.5}),
            )
            .await;
        match progress.status() {
            StatusCode::OK => succeeded(sent),
            StatusCode::UNAUTHORIZED => return,
            StatusCode::CONFLICT => continue, // taken back meanwhile
            other => panic!("progress answered {other}"),
        }
        let sent = Instant::now();
        let result = app
            .post_json(
                &token,
                &format!("/api/runners/jobs/{job_id}/result"),
                json!({"system_id": system_id, "outcome": "succeeded", "result": {"by": runner}}),
            )
            .await;
        match result.status() {
            StatusCode::OK => succeeded(sent),
            StatusCode::UNAUTHORIZED => return,
            StatusCode::CONFLICT => continue,
            other => panic!("result answered {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_job_finishes_exactly_once_while_runners_are_invalidated() {
    let app = Arc::new(TestApp::start().await);
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;

    // Runner 0's token is shared by six machines; runners 1 to 3 have two
    // each. Two of the latter are invalidated while jobs run.
    let machines_per_runner = [6, 2, 2, 2];
    let mut runners = Vec::new();
    for _ in machines_per_runner {
        runners.push(app.create_runner(&admin).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let record = Arc::new(Mutex::new(Record::default()));
    let mut machines = Vec::new();
    for (runner, count) in machines_per_runner.into_iter().enumerate() {
        for machine in 0..count {
            machines.push(tokio::spawn(machine_loop(
                Arc::clone(&app),
                runner,
                runners[runner].1.clone(),
                format!("r_sim{runner}x{machine:07}"),
                Arc::clone(&stop),
                Arc::clone(&record),
            )));
        }
    }

    let submitter = {
        let app = Arc::clone(&app);
        let user = user.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..JOBS {
                ids.push(app.submit_job(&user, json!({"n": n}), &[], 0).await);
                let pause = rand::thread_rng().gen_range(0..15);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            ids
        })
    };
    let invalidator = {
        let app = Arc::clone(&app);
        let admin = admin.clone();
        let targets: Vec<(usize, String)> = INVALIDATED.iter().map(|r| (*r, runners[*r].0.clone())).collect();
        let record = Arc::clone(&record);
        tokio::spawn(async move {
            for (runner, id) in targets {
                // Strike while the runner holds a job, so it has to move.
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let held = app
                        .get_items(
                            &admin,
                            &format!("/api/admins/jobs?status=assigned&runner_id={id}&limit=1"),
                        )
                        .await;
                    if !held.is_empty() {
                        break;
                    }
                    assert!(Instant::now() < deadline, "runner {runner} never got a job");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let response = app.invalidate_runner(&admin, &id).await;
                assert_eq!(response.status(), StatusCode::OK);
                record.lock().unwrap().invalidated.insert(runner, Instant::now());
            }
        })
    };
    let job_ids = submitter.await.unwrap();
    invalidator.await.unwrap();

    // Wait for every job to finish.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = app
            .get_items(&admin, "/api/admins/jobs?status=succeeded&limit=1000")
            .await;
        if done.len() == JOBS {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of {JOBS} jobs finished", done.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for machine in machines {
        machine.await.unwrap();
    }

    // Exactly one finish per job, in the log itself.
    let client = app.db.client().await;
    let finishes: HashMap<String, i64> = client
        .query(
            "SELECT payload->>'job_id', count(*) FROM events WHERE event_type = 'JobFinished' GROUP BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    drop(client);
    assert_eq!(finishes.len(), JOBS);
    for id in &job_ids {
        assert_eq!(
            finishes.get(id),
            Some(&1),
            "job {id} finished {:?} times",
            finishes.get(id)
        );
    }

    // No runner request succeeded that was sent after its runner's
    // invalidation had been answered.
    {
        let record = record.lock().unwrap();
        assert_eq!(record.invalidated.len(), 2);
        for success in &record.successes {
            if let Some(answered) = record.invalidated.get(&success.runner) {
                assert!(
                    success.sent < *answered,
                    "runner {} was served after its invalidation",
                    success.runner
                );
            }
        }
        assert!(
            record.successes.iter().any(|s| s.runner == 0),
            "the shared token did work"
        );
    }

    // Exactly once in effect, per assignment: every assignment of a job
    // ended in exactly one requeue or in its one finish.
    let client = app.db.client().await;
    let per_job = client
        .query(
            "SELECT payload->>'job_id',
                    count(*) FILTER (WHERE event_type = 'JobAssigned'),
                    count(*) FILTER (WHERE event_type = 'JobRequeued'),
                    count(*) FILTER (WHERE event_type = 'JobFinished')
             FROM events WHERE stream_id LIKE 'job-%' GROUP BY 1",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let mut requeues = 0;
    for row in &per_job {
        let (job, assigned, requeued, finished): (String, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(finished, 1, "job {job}");
        assert_eq!(
            assigned,
            requeued + 1,
            "job {job}: {assigned} assignments, {requeued} requeues"
        );
        requeues += requeued;
    }
    assert!(
        requeues >= 2,
        "each invalidation should have moved a job, {requeues} requeues"
    );

    // The job read model equals a replay of the log.
    let app = Arc::into_inner(app).unwrap();
    let db = app.stop().await;
    // warden replay --verify agrees on this log, too.
    let report = warden::log::replay::run(&db.db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    let live = db.snapshot_read_models().await;
    db.rebuild_read_models().await;
    assert_eq!(db.snapshot_read_models().await, live);
}

//! warden as 1 and as 3 instances on the same cluster, in one run
//! (issue 13). Instances run in this process, each with its own HTTP
//! server, pool and background tasks, like `TestApp::start_two`; clients
//! spread their requests round robin over them. Rows:
//! - heartbeats: 64 Project-W machines of one token, each heartbeat to the
//!   next instance; baseline pgbench (64 clients) doing the token-hash
//!   lookup a heartbeat needs; the one-instance row also with the
//!   heartbeat cache off (`runners.heartbeat_cache: false`).
//! - job assignments: 16 machines taking jobs from a full queue
//!   (`jobs/request` + `result`), each request to the next instance;
//!   baseline pgbench single-row INSERTs (16 clients).
//! - delivery: 4 machines long-polling (machine m on instance m mod N), a
//!   job submitted over HTTP to instance i mod N, one at a time; latency
//!   from sending the submission to the machine holding the job.
//!
//!     cargo bench --bench instances               # BENCH_SECONDS per row (15)
#![allow(clippy::unwrap_used)] // a benchmark that fails may panic

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    pgbench, register_project_w, report, run_clients, submit_jobs, take_and_finish_job, Measurement, Warden,
    INSERT_SCRIPT, INSERT_SETUP, LOOKUP_SCRIPT, LOOKUP_SETUP,
};
use serde_json::json;

const HEARTBEAT_CLIENTS: usize = 64;
const ASSIGN_CLIENTS: usize = 16;
const LONG_POLLERS: usize = 4;
const DELIVERIES: usize = 200;

/// Delivery latencies of one configuration, split by whether the machine
/// waited on the instance that took the submission.
struct Deliveries {
    same: Vec<Duration>,
    across: Vec<Duration>,
}

fn main() {
    common::block_on(async {
        let duration = common::duration();
        let (_dir, cluster) = common::cluster().await;
        let mut heartbeats = vec![pgbench(
            &cluster,
            "pgbench token-hash lookup (baseline)",
            HEARTBEAT_CLIENTS,
            duration,
            LOOKUP_SETUP,
            LOOKUP_SCRIPT,
        )];
        let mut assignments = vec![pgbench(
            &cluster,
            "pgbench INSERT (baseline)",
            ASSIGN_CLIENTS,
            duration,
            INSERT_SETUP,
            INSERT_SCRIPT,
        )];
        let mut deliveries = Vec::new();
        // The same one-instance row with the heartbeat cache off: what
        // the cache changes, measured in this run.
        let uncached = Arc::new(vec![
            Warden::start_on(&cluster, "warden_uncached", HEARTBEAT_CLIENTS, |config| {
                config.database.max_connections = 24;
                config.runners.heartbeat_cache = false;
            })
            .await,
        ]);
        heartbeats.push(heartbeat_rate(&uncached, 1, duration, "Project-W heartbeat, cache off").await);
        Arc::into_inner(uncached).unwrap().pop().unwrap().stop().await;
        for count in [1, 3] {
            let dbname = format!("warden_{count}");
            let mut instances = Vec::new();
            for _ in 0..count {
                // The cluster allows 100 connections: 3 x 24 fit.
                instances.push(
                    Warden::start_on(&cluster, &dbname, HEARTBEAT_CLIENTS, |config| {
                        config.database.max_connections = 24;
                    })
                    .await,
                );
            }
            if count > 1 {
                // Each instance counts the others on its next registry
                // heartbeat: measure the multi-instance paths, not a start.
                tokio::time::sleep(warden::platform::instances::HEARTBEAT + Duration::from_secs(1)).await;
            }
            let instances = Arc::new(instances);
            heartbeats.push(heartbeat_rate(&instances, count, duration, "Project-W heartbeat").await);
            assignments.push(assignment_rate(&instances, count, duration).await);
            deliveries.push((count, delivery_latency(&instances).await));
            for instance in Arc::into_inner(instances).unwrap() {
                instance.stop().await;
            }
        }
        heartbeats.push(pgbench(
            &cluster,
            "pgbench token-hash lookup (baseline, after)",
            HEARTBEAT_CLIENTS,
            duration,
            LOOKUP_SETUP,
            LOOKUP_SCRIPT,
        ));
        report(
            &format!(
                "Heartbeats: {HEARTBEAT_CLIENTS} machines, round robin over the instances, {} s per row \
                 (the heartbeat cache on, unless the row says off).",
                duration.as_secs()
            ),
            &heartbeats,
            &[0, heartbeats.len() - 1],
        );
        report(
            &format!(
                "Job assignments: {ASSIGN_CLIENTS} machines, round robin, {} s per row (request + result).",
                duration.as_secs()
            ),
            &assignments,
            &[0],
        );
        println!(
            "\nDelivery to a waiting long poll: {DELIVERIES} jobs, one at a time, {LONG_POLLERS} machines waiting.\n"
        );
        println!("| instances | submitted to | jobs | p50 ms | p99 ms |");
        println!("| ---: | --- | ---: | ---: | ---: |");
        for (count, measured) in &deliveries {
            for (label, latencies) in [
                ("the machine's instance", &measured.same),
                ("another instance", &measured.across),
            ] {
                if latencies.is_empty() {
                    continue;
                }
                let (p50, p99) = percentiles(latencies);
                println!("| {count} | {label} | {} | {p50:.1} | {p99:.1} |", latencies.len());
            }
        }
    });
}

fn percentiles(latencies: &[Duration]) -> (f64, f64) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let at = |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

fn label(count: usize, what: &str) -> &'static str {
    Box::leak(format!("warden, {count} instance{}: {what}", if count == 1 { "" } else { "s" }).into_boxed_str())
}

async fn heartbeat_rate(instances: &Arc<Vec<Warden>>, count: usize, duration: Duration, what: &str) -> Measurement {
    let first = &instances[0];
    let (_, token) = first.create_runner().await;
    let mut sessions = Vec::new();
    for machine in 0..HEARTBEAT_CLIENTS {
        let base = &instances[machine % count].base;
        sessions.push(register_project_w(&first.http, base, &token, &format!("bench-{machine}")).await);
    }
    let sessions = Arc::new(sessions);
    let bases: Arc<Vec<String>> = Arc::new(instances.iter().map(|w| w.base.clone()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let http = first.http.clone();
    let hits_before: u64 = instances.iter().map(|w| w.state.fleet.heartbeat_cache.hits()).sum();
    eprintln!("{} starts at {}", label(count, what), chrono::Utc::now());
    let measured = run_clients(label(count, what), HEARTBEAT_CLIENTS, duration, {
        let token = token.clone();
        let sessions = Arc::clone(&sessions);
        move |client| {
            let base = &bases[next.fetch_add(1, Ordering::Relaxed) % bases.len()];
            let url = format!("{base}/api/runners/heartbeat?session_token={}", sessions[client]);
            let (http, token) = (http.clone(), token.clone());
            async move {
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"progress": 0.0}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                assert!(
                    status.is_success(),
                    "{status}: {}",
                    response.text().await.unwrap_or_default()
                );
            }
        }
    })
    .await;
    let hits: u64 = instances
        .iter()
        .map(|w| w.state.fleet.heartbeat_cache.hits())
        .sum::<u64>()
        - hits_before;
    // Counted from the start of the warm-up to the end of the row.
    eprintln!(
        "{}: ends at {}; {:.0} heartbeats/s answered from the cache ({:.0}/s measured)",
        measured.name,
        chrono::Utc::now(),
        hits as f64 / (duration + common::WARM_UP).as_secs_f64(),
        measured.per_second
    );
    // Offline again, or they would compete for the next rows' jobs (all
    // at once: each answers only when no heartbeat cache holds it).
    futures_util::future::join_all(sessions.iter().map(|session| {
        let unregister = first
            .http
            .post(format!("{}/api/runners/unregister?session_token={session}", first.base))
            .bearer_auth(&token)
            .send();
        async move {
            let gone = unregister.await.unwrap();
            assert!(gone.status().is_success(), "{}", gone.status());
        }
    }))
    .await;
    measured
}

async fn assignment_rate(instances: &Arc<Vec<Warden>>, count: usize, duration: Duration) -> Measurement {
    let jobs = 1500 * (duration.as_secs() as usize + 5);
    submit_jobs(&instances[0], jobs).await;
    let (_, token) = instances[0].create_runner().await;
    let bases: Arc<Vec<String>> = Arc::new(instances.iter().map(|w| w.base.clone()).collect());
    let http = instances[0].http.clone();
    let measured = run_clients(label(count, "job assignment"), ASSIGN_CLIENTS, duration, {
        let next = Arc::new(AtomicUsize::new(0));
        move |client| {
            let (http, token, bases) = (http.clone(), token.clone(), Arc::clone(&bases));
            let turn = next.fetch_add(2, Ordering::Relaxed);
            async move {
                let system_id = format!("r_assign{client:06}");
                let (request_base, result_base) = (&bases[turn % bases.len()], &bases[(turn + 1) % bases.len()]);
                take_and_finish_job(&http, request_base, result_base, &token, &system_id).await;
            }
        }
    })
    .await;
    // Empty the queue for the delivery row.
    instances[0]
        .state
        .db
        .get()
        .await
        .unwrap()
        .execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'queued'", &[])
        .await
        .unwrap();
    measured
}

async fn delivery_latency(instances: &Arc<Vec<Warden>>) -> Deliveries {
    let count = instances.len();
    let (_, token) = instances[0].create_runner().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (received, mut receipts) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut machines = Vec::new();
    for machine in 0..LONG_POLLERS {
        let (http, base, token, stop, received) = (
            instances[0].http.clone(),
            instances[machine % count].base.clone(),
            token.clone(),
            Arc::clone(&stop),
            received.clone(),
        );
        machines.push(tokio::spawn(async move {
            let system_id = format!("r_poll{machine:07}");
            while !stop.load(Ordering::Relaxed) {
                let response = http
                    .post(format!("{base}/api/runners/jobs/request"))
                    .bearer_auth(&token)
                    .json(&json!({"system_id": system_id, "wait_seconds": 2}))
                    .send()
                    .await
                    .unwrap();
                if response.status() != reqwest::StatusCode::OK {
                    continue;
                }
                let at = Instant::now();
                let job: serde_json::Value = response.json().await.unwrap();
                let _ = received.send((machine % count, at));
                let id = job["id"].as_str().unwrap();
                let done = http
                    .post(format!("{base}/api/runners/jobs/{id}/result"))
                    .bearer_auth(&token)
                    .json(&json!({"system_id": system_id, "outcome": "succeeded"}))
                    .send()
                    .await
                    .unwrap();
                assert!(done.status().is_success());
            }
        }));
    }
    // Let every machine start waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut measured = Deliveries {
        same: Vec::new(),
        across: Vec::new(),
    };
    for n in 0..DELIVERIES {
        let submit_to = n % count;
        let sent = Instant::now();
        let submitted = instances[0]
            .http
            .post(format!("{}/api/jobs", instances[submit_to].base))
            .bearer_auth(&instances[0].admin)
            .json(&json!({"payload": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(submitted.status(), reqwest::StatusCode::CREATED);
        let (waited_on, at) = tokio::time::timeout(Duration::from_secs(10), receipts.recv())
            .await
            .expect("a job was not delivered within 10 s")
            .unwrap();
        let latency = at - sent;
        if waited_on == submit_to {
            measured.same.push(latency);
        } else {
            measured.across.push(latency);
        }
        // The machine finishes and waits again before the next job.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for machine in machines {
        machine.await.unwrap();
    }
    measured
}

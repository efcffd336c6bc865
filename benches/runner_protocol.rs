//! The runner side under load, each number next to a pgbench baseline run
//! on the same cluster in the same run:
//! - heartbeats: 64 concurrent connections, each a runner machine of one
//!   token, `POST /api/runners/heartbeat`; baseline: pgbench with 64
//!   clients doing the indexed token-hash lookup every heartbeat needs;
//!   also warden's own `GET /api/health` (HTTP plus one query).
//! - job assignments: 16 machines taking jobs from a full queue
//!   (`jobs/request`, then `result`); baseline: pgbench single-row INSERTs
//!   with 16 clients.
//!
//!     cargo bench --bench runner_protocol          # 15 s per measurement
#![allow(clippy::unwrap_used)] // a benchmark that fails may panic

mod common;

use common::{
    pgbench, register_project_w, report, run_clients, submit_jobs, take_and_finish_job, Warden, INSERT_SCRIPT,
    INSERT_SETUP, LOOKUP_SCRIPT, LOOKUP_SETUP,
};
use serde_json::json;

const HEARTBEAT_CLIENTS: usize = 64;
const ASSIGN_CLIENTS: usize = 16;

fn main() {
    common::block_on(async {
        let duration = common::duration();
        let (_dir, cluster) = common::cluster().await;

        // Heartbeats.
        let mut heartbeats = vec![pgbench(
            &cluster,
            "pgbench token-hash lookup (baseline, before)",
            HEARTBEAT_CLIENTS,
            duration,
            LOOKUP_SETUP,
            LOOKUP_SCRIPT,
        )];
        let warden = Warden::start(&cluster, HEARTBEAT_CLIENTS).await;
        let (_, token) = warden.create_runner().await;
        // One Project-W session (and machine) per client.
        let mut sessions = Vec::new();
        for machine in 0..HEARTBEAT_CLIENTS {
            sessions.push(register_project_w(&warden.http, &warden.base, &token, &format!("bench-{machine}")).await);
        }
        let sessions = std::sync::Arc::new(sessions);
        let sessions_to_end = std::sync::Arc::clone(&sessions);
        let (http, base) = (warden.http.clone(), warden.base.clone());
        heartbeats.push(
            run_clients(
                "warden GET /api/health (HTTP + one query)",
                HEARTBEAT_CLIENTS,
                duration,
                move |_| {
                    let (http, url) = (http.clone(), format!("{base}/api/health"));
                    async move {
                        assert!(http.get(&url).send().await.unwrap().status().is_success());
                    }
                },
            )
            .await,
        );
        let events_before = event_count(&warden).await;
        let (http, base, heartbeat_token) = (warden.http.clone(), warden.base.clone(), token.clone());
        heartbeats.push(
            run_clients(
                "warden Project-W heartbeat (64 machines, one token)",
                HEARTBEAT_CLIENTS,
                duration,
                move |client| {
                    let (http, url, token) = (
                        http.clone(),
                        format!("{base}/api/runners/heartbeat?session_token={}", sessions[client]),
                        heartbeat_token.clone(),
                    );
                    async move {
                        let response = http
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({"progress": 0.0}))
                            .send()
                            .await
                            .unwrap();
                        assert!(response.status().is_success());
                    }
                },
            )
            .await,
        );
        let heartbeat_events = event_count(&warden).await - events_before;
        // Take the heartbeat machines offline, or they would compete for
        // the jobs of the next measurement.
        for session in sessions_to_end.iter() {
            let gone = warden
                .http
                .post(format!(
                    "{}/api/runners/unregister?session_token={session}",
                    warden.base
                ))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert!(gone.status().is_success(), "{}", gone.status());
        }

        // Job assignments from a queue that never runs dry.
        let jobs = 1500 * (duration.as_secs() as usize + 5);
        submit_jobs(&warden, jobs).await;
        let (_, token) = warden.create_runner().await;
        let (http, base) = (warden.http.clone(), warden.base.clone());
        let assignments = run_clients(
            "warden job assignment (jobs/request + result)",
            ASSIGN_CLIENTS,
            duration,
            move |client| {
                let (http, base, token) = (http.clone(), base.clone(), token.clone());
                async move {
                    let system_id = format!("r_assign{client:06}");
                    take_and_finish_job(&http, &base, &base, &token, &system_id).await;
                }
            },
        )
        .await;
        warden.stop().await;

        heartbeats.push(pgbench(
            &cluster,
            "pgbench token-hash lookup (baseline, after)",
            HEARTBEAT_CLIENTS,
            duration,
            LOOKUP_SETUP,
            LOOKUP_SCRIPT,
        ));
        let mut assigning = vec![pgbench(
            &cluster,
            "pgbench INSERT (baseline)",
            ASSIGN_CLIENTS,
            duration,
            INSERT_SETUP,
            INSERT_SCRIPT,
        )];
        assigning.push(assignments);

        report(
            &format!(
                "Heartbeats: {HEARTBEAT_CLIENTS} concurrent connections, {} s per row.",
                duration.as_secs()
            ),
            &heartbeats,
            &[0, heartbeats.len() - 1],
        );
        println!("Events appended during the heartbeat run: {heartbeat_events}");
        report(
            &format!(
                "Job assignments: {ASSIGN_CLIENTS} machines, {} s; each assignment is followed by its result.",
                duration.as_secs()
            ),
            &assigning,
            &[0],
        );
    });
}

async fn event_count(warden: &Warden) -> i64 {
    let connection = warden.state.db.get().await.unwrap();
    connection
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0)
}

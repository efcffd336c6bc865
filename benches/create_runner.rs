//! Appends per second of CreateRunner through the HTTP API with 16
//! concurrent clients, next to raw `pgbench` single-row INSERTs on the same
//! PostgreSQL cluster in the same run (the baseline for the ratio).
//!
//!     cargo bench --bench create_runner            # 15 s per measurement
//!     BENCH_SECONDS=30 cargo bench --bench create_runner
//!
//! `BENCH_ONLY=append` (or `http-create`, `http-patch`, `command`) runs
//! only that warden row between the two baselines: for profiling one row.
//!
//! Order: pgbench, warden (HTTP create, HTTP update of an existing runner,
//! command path, raw append), pgbench again,
//! so drift on a shared machine shows up as a gap between the baselines.
#![allow(clippy::unwrap_used)] // a benchmark that fails may panic

mod common;

use std::sync::Arc;

use common::{pgbench, report, run_clients, Measurement, Warden};
use uuid::Uuid;
use warden::events::runner::RunnerCreated;
use warden::events::{Event, Metadata, RunnerEvent, StreamId};
use warden::log::event_store::{EventStore, ExpectedVersion};

const CLIENTS: usize = 16;
const SETUP: &str = "CREATE TABLE IF NOT EXISTS bench_insert (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())";

fn main() {
    common::block_on(async {
        let duration = common::duration();
        let (_dir, cluster) = common::cluster().await;
        // A row of about the size of a RunnerCreated event.
        let payload = format!(
            r#"{{"runner_id": "{}", "token_hash": "{}", "tags": []}}"#,
            Uuid::nil(),
            "ab".repeat(32)
        );
        let script = format!("INSERT INTO bench_insert (payload) VALUES ('{payload}');\n");
        let mut results = vec![pgbench(
            &cluster,
            "pgbench INSERT (baseline, before)",
            CLIENTS,
            duration,
            SETUP,
            &script,
        )];

        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let wanted = |row: &str| only.is_empty() || only == row;
        let warden = Warden::start(&cluster, CLIENTS).await;
        let mut work = Vec::new();
        let (http, base, admin) = (warden.http.clone(), warden.base.clone(), warden.admin.clone());
        if wanted("http-create") {
            measure_with_work(
                &warden.state.db,
                &mut results,
                &mut work,
                run_clients(
                    "warden CreateRunner over HTTP (append + projection + read-your-writes)",
                    CLIENTS,
                    duration,
                    move |_| {
                        let (http, url, admin) =
                            (http.clone(), format!("{base}/api/admins/create_runner"), admin.clone());
                        async move {
                            let response = http.post(&url).bearer_auth(&admin).send().await.unwrap();
                            assert_eq!(response.status(), reqwest::StatusCode::CREATED);
                        }
                    },
                ),
            )
            .await;
        }
        // A command on an existing stream: each client changes its own
        // runner's description (load the stream, decide, append).
        let mut runners = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            runners.push(warden.create_runner().await.0);
        }
        let (http, base, admin) = (warden.http.clone(), warden.base.clone(), warden.admin.clone());
        let runners = Arc::new(runners);
        let changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        if wanted("http-patch") {
            measure_with_work(
                &warden.state.db,
                &mut results,
                &mut work,
                run_clients(
                    "warden PATCH a runner over HTTP (load + append + projection)",
                    CLIENTS,
                    duration,
                    move |client| {
                        let url = format!("{base}/api/admins/runners/{}", runners[client]);
                        let (http, admin, changes) = (http.clone(), admin.clone(), Arc::clone(&changes));
                        async move {
                            let n = changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let response = http
                                .patch(&url)
                                .bearer_auth(&admin)
                                .json(&serde_json::json!({ "description": format!("change {n}") }))
                                .send()
                                .await
                                .unwrap();
                            assert_eq!(response.status(), reqwest::StatusCode::OK);
                        }
                    },
                ),
            )
            .await;
        }
        let state = Arc::clone(&warden.state);
        if wanted("command") {
            measure_with_work(
                &warden.state.db,
                &mut results,
                &mut work,
                run_clients("warden CreateRunner command, no HTTP", CLIENTS, duration, move |_| {
                    let state = Arc::clone(&state);
                    async move {
                        warden::fleet::runners::create_runner(
                            &state.fleet,
                            Default::default(),
                            None,
                            &Metadata::system("bench"),
                        )
                        .await
                        .unwrap();
                    }
                }),
            )
            .await;
        }
        let store = EventStore::new(warden.state.db.clone());
        if wanted("append") {
            measure_with_work(
                &warden.state.db,
                &mut results,
                &mut work,
                run_clients("warden raw append (event store only)", CLIENTS, duration, move |_| {
                    let store = store.clone();
                    async move {
                        let runner_id = Uuid::now_v7();
                        let event = Event::Runner(RunnerEvent::RunnerCreated(RunnerCreated {
                            runner_id,
                            number: None,
                            // Unique like a real one: the runners read model refuses duplicates.
                            token_hash: runner_id.simple().to_string().repeat(2),
                            description: None,
                            tags: Vec::new(),
                            priority: 0,
                            scope_id: None,
                        }));
                        store
                            .append(
                                &StreamId::runner(runner_id),
                                ExpectedVersion::NO_STREAM,
                                vec![event],
                                &Metadata::system("bench"),
                            )
                            .await
                            .unwrap();
                    }
                }),
            )
            .await;
        }
        warden.stop().await;
        results.push(pgbench(
            &cluster,
            "pgbench INSERT (baseline, after)",
            CLIENTS,
            duration,
            SETUP,
            &script,
        ));
        report(
            &format!(
                "{CLIENTS} concurrent clients, {} s per row, same durable cluster (fsync on).",
                duration.as_secs()
            ),
            &results,
            &[0, results.len() - 1],
        );
        println!("\nWhat the database did per appended event, during each row (warm-up included):\n");
        println!("| measurement | commits per event |");
        println!("| --- | ---: |");
        for line in work {
            println!("{line}");
        }
    });
}

/// Runs one warden row and records, beside it, what the database did
/// per appended event meanwhile.
async fn measure_with_work(
    db: &warden::platform::db::Database,
    results: &mut Vec<Measurement>,
    work: &mut Vec<String>,
    row: impl std::future::Future<Output = Measurement>,
) {
    let before = DbWork::read(db).await;
    let measured = row.await;
    work.push(DbWork::read(db).await.since(&before, measured.name));
    results.push(measured);
}

/// Counters of the warden database: to say how much work one command
/// costs PostgreSQL, the inline projection's and the followers' included.
struct DbWork {
    commits: i64,
    events: i64,
}

impl DbWork {
    async fn read(db: &warden::platform::db::Database) -> DbWork {
        let client = db.get().await.unwrap();
        // Statistics reach pg_stat_database up to a second late; over a
        // row of several seconds that is noise.
        let row = client
            .query_one(
                "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
                        (SELECT count(*) FROM events)",
                &[],
            )
            .await
            .unwrap();
        DbWork {
            commits: row.get(0),
            events: row.get(1),
        }
    }

    /// A table row: commits per event appended since `before`.
    fn since(&self, before: &DbWork, name: &str) -> String {
        let events = (self.events - before.events).max(1);
        format!(
            "| {name} | {:.2} |",
            (self.commits - before.commits) as f64 / events as f64
        )
    }
}

//! Appends per second of CreateRunner through the HTTP API with 16
//! concurrent clients, next to raw `pgbench` single-row INSERTs on the same
//! PostgreSQL cluster in the same run (the baseline for the ratio).
//!
//!     cargo bench --bench create_runner            # 15 s per measurement
//!     BENCH_SECONDS=30 cargo bench --bench create_runner
//!
//! The cluster is durable (fsync on), like `warden serve`'s embedded one.
//! Order: pgbench, warden (HTTP, command path, raw append), pgbench again,
//! so drift on a shared machine shows up as a gap between the two baselines.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use warden::app::AppState;
use warden::config::{Config, ProvisionedUser};
use warden::database_setup::create_database_if_missing;
use warden::db::Database;
use warden::embedded_pg::{ClusterOptions, EmbeddedCluster, PgBinaries};
use warden::event_store::{EventStore, ExpectedVersion};
use warden::events::runner::RunnerCreated;
use warden::events::{Event, Metadata, StreamId};
use warden::secrets::Secret;

const CLIENTS: usize = 16;
const WARM_UP: Duration = Duration::from_secs(2);
const ADMIN_EMAIL: &str = "bench-admin@example.org";
const ADMIN_PASSWORD: &str = "bench admin password";

struct Measurement {
    name: &'static str,
    per_second: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let dir = tempfile::Builder::new().prefix("warden-bench-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = EmbeddedCluster::start(&ClusterOptions::durable(dir.path().join("data"))).expect("start PostgreSQL");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let duration = Duration::from_secs(seconds);

    let mut results = Vec::new();
    runtime.block_on(async {
        create_database_if_missing(&cluster.connect_config("postgres"), "warden")
            .await
            .unwrap();
        create_database_if_missing(&cluster.connect_config("postgres"), "baseline")
            .await
            .unwrap();
        results.push(pgbench(&cluster, duration, "pgbench INSERT (baseline, before)"));
        let db = Database::new(cluster.connect_config("warden"), 40).unwrap();
        results.extend(measure_warden(db, duration).await);
        results.push(pgbench(&cluster, duration, "pgbench INSERT (baseline, after)"));
    });
    drop(runtime);
    report(&results, seconds);
}

fn pgbench(cluster: &EmbeddedCluster, duration: Duration, name: &'static str) -> Measurement {
    let pgbench = PgBinaries::locate().unwrap().tool("pgbench");
    let script = tempfile::NamedTempFile::new().unwrap();
    // A row of about the size of a RunnerCreated event.
    let payload = format!(
        r#"{{"runner_id": "{}", "token_hash": "{}", "tags": []}}"#,
        Uuid::nil(),
        "ab".repeat(32)
    );
    std::fs::write(
        script.path(),
        format!("INSERT INTO bench_insert (payload) VALUES ('{payload}');\n"),
    )
    .unwrap();
    let psql = |sql: &str| {
        let status = Command::new(PgBinaries::locate().unwrap().tool("psql"))
            .args(["-q", "-h"])
            .arg(cluster.socket_dir())
            .args(["-U", "warden", "-d", "baseline", "-c", sql])
            .status()
            .unwrap();
        assert!(status.success());
    };
    psql("CREATE TABLE IF NOT EXISTS bench_insert (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())");
    let output = Command::new(pgbench)
        .args(["-n", "-h"])
        .arg(cluster.socket_dir())
        .args(["-p", &cluster.port().to_string(), "-U", "warden"])
        .args([
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &duration.as_secs().to_string(),
            "-f",
        ])
        .arg(script.path())
        .arg("baseline")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tps = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .expect("pgbench printed no tps");
    let latency = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("latency average = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    Measurement {
        name,
        per_second: tps,
        p50_ms: latency,
        p99_ms: None,
    }
}

async fn measure_warden(db: Database, duration: Duration) -> Vec<Measurement> {
    let mut config = Config::default();
    config.http.workers = Some(2);
    config.security.local_account.user_provisioning.insert(
        "0".into(),
        ProvisionedUser {
            email: ADMIN_EMAIL.into(),
            password: Secret::new(ADMIN_PASSWORD),
            is_admin: true,
        },
    );
    let (state, background) = AppState::start(config, db.clone()).await.unwrap();
    warden::accounts::provision_from_config(&state).await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = warden::http::server(Arc::clone(&state), listener).unwrap();
    let handle = server.handle();
    tokio::spawn(server);

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let login: serde_json::Value = http
        .post(format!("{base}/api/local-account/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&scope=admin&username=bench-admin%40example.org&password={}",
            ADMIN_PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();

    let over_http = {
        let http = http.clone();
        let url = format!("{base}/api/admins/create_runner");
        run_clients(
            "warden CreateRunner over HTTP (append + projection + read-your-writes)",
            duration,
            move || {
                let http = http.clone();
                let url = url.clone();
                let token = token.clone();
                async move {
                    let response = http.post(&url).bearer_auth(&token).send().await.unwrap();
                    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
                }
            },
        )
        .await
    };

    let command_path = {
        let state = Arc::clone(&state);
        run_clients("warden CreateRunner command, no HTTP", duration, move || {
            let state = Arc::clone(&state);
            async move {
                warden::runners::create_runner(&state, Default::default(), &Metadata::system("bench"))
                    .await
                    .unwrap();
            }
        })
        .await
    };

    let raw_append = {
        let store = EventStore::new(db.clone());
        run_clients("warden raw append (event store only)", duration, move || {
            let store = store.clone();
            async move {
                let runner_id = Uuid::now_v7();
                let event = Event::RunnerCreated(RunnerCreated {
                    runner_id,
                    token_hash: "ab".repeat(32),
                    description: None,
                    tags: Vec::new(),
                    priority: 0,
                });
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
        })
        .await
    };

    handle.stop(true).await;
    background.stop().await;
    vec![over_http, command_path, raw_append]
}

/// Runs `operation` from CLIENTS concurrent loops: a warm-up, then counts
/// completions and latencies for `duration`.
async fn run_clients<F, Fut>(name: &'static str, duration: Duration, operation: F) -> Measurement
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let operation = operation.clone();
            let measuring = Arc::clone(&measuring);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    operation().await;
                    if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        latencies.push(started.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    Measurement {
        name,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: Some(percentile(0.50)),
        p99_ms: Some(percentile(0.99)),
    }
}

fn report(results: &[Measurement], seconds: u64) {
    let baseline = (results[0].per_second + results[results.len() - 1].per_second) / 2.0;
    println!("\n{CLIENTS} concurrent clients, {seconds} s per row, same durable cluster (fsync on).");
    println!("Baseline = mean of the two pgbench rows = {baseline:.0}/s.\n");
    println!("| measurement | per second | ratio to baseline | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for m in results {
        let ms = |v: Option<f64>| v.map_or("".to_owned(), |v| format!("{v:.1}"));
        println!(
            "| {} | {:.0} | {:.2} | {} | {} |",
            m.name,
            m.per_second,
            m.per_second / baseline,
            ms(m.p50_ms),
            ms(m.p99_ms)
        );
    }
    println!("\n(pgbench rows show its average latency in the p50 column.)");
}

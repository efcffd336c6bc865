//! Shared by the benchmarks: a durable throwaway cluster, warden on it,
//! the pgbench baseline, concurrent load loops with latency percentiles,
//! and the report table.

#![allow(dead_code)] // each bench uses a part

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden::app::{AppState, Background};
use warden::platform::config::{Config, ProvisionedUser};
use warden::platform::db::Database;
use warden::platform::embedded_pg::{ClusterOptions, EmbeddedCluster, PgBinaries};
use warden::platform::secrets::Secret;

/// The allocator the `warden` binary uses (src/main.rs), so that what is
/// measured in process is what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub const WARM_UP: Duration = Duration::from_secs(2);
pub const ADMIN_PASSWORD: &str = "bench admin password";

/// Runs a benchmark's body on a multi-threaded tokio runtime.
pub fn block_on<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(body)
}

/// Seconds per measurement: `BENCH_SECONDS`, default 15.
pub fn duration() -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15),
    )
}

/// A durable cluster (fsync on, like `warden serve`'s) in a fresh folder,
/// with the databases `warden` and `baseline`.
pub async fn cluster() -> (tempfile::TempDir, EmbeddedCluster) {
    let dir = tempfile::Builder::new().prefix("warden-bench-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let options = ClusterOptions::durable(dir.path().join("data"));
    let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options))
        .await
        .unwrap()
        .expect("start PostgreSQL");
    for name in ["warden", "baseline"] {
        warden::platform::database_setup::create_database_if_missing(&cluster.connect_config("postgres"), name)
            .await
            .unwrap();
    }
    (dir, cluster)
}

/// warden on the cluster's `warden` database, serving HTTP on loopback,
/// with an admin provisioned and no rate limit in the way.
pub struct Warden {
    pub state: Arc<AppState>,
    pub base: String,
    pub http: reqwest::Client,
    pub admin: String,
    background: Background,
    server: actix_web::dev::ServerHandle,
}

impl Warden {
    pub async fn start(cluster: &EmbeddedCluster, connections: usize) -> Warden {
        Self::start_with(cluster, connections, |_| {}).await
    }

    /// Like `start`, with the config changed by `configure` first.
    pub async fn start_with(
        cluster: &EmbeddedCluster,
        connections: usize,
        configure: impl FnOnce(&mut Config),
    ) -> Warden {
        Self::start_on(cluster, "warden", connections, configure).await
    }

    /// Like `start_with`, on the database `dbname` (created if missing).
    pub async fn start_on(
        cluster: &EmbeddedCluster,
        dbname: &str,
        connections: usize,
        configure: impl FnOnce(&mut Config),
    ) -> Warden {
        warden::platform::database_setup::create_database_if_missing(&cluster.connect_config("postgres"), dbname)
            .await
            .unwrap();
        let mut config = Config::default();
        config.database.max_connections = 48;
        config.http.workers = Some(2);
        config.runners.rate_limit.per_second = 1_000_000;
        config.runners.rate_limit.burst = 1_000_000;
        config.security.local_account.user_provisioning.insert(
            "0".into(),
            ProvisionedUser {
                email: "bench-admin@example.org".into(),
                password: Secret::new(ADMIN_PASSWORD),
                is_admin: true,
            },
        );
        configure(&mut config);
        let db = Database::new(cluster.connect_config(dbname), config.database.max_connections).unwrap();
        let (state, background) = AppState::start(config, db).await.unwrap();
        warden::identity::accounts::provision_from_config(&state.identity)
            .await
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = warden::http::server(Arc::clone(&state), listener).unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .build()
            .unwrap();
        let login: serde_json::Value = http
            .post(format!("{base}/api/local-account/login"))
            .form(&[
                ("grant_type", "password"),
                ("scope", "admin"),
                ("username", "bench-admin@example.org"),
                ("password", ADMIN_PASSWORD),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Warden {
            state,
            base,
            http,
            admin: login["access_token"].as_str().unwrap().to_owned(),
            background,
            server: handle,
        }
    }

    /// A new runner's (id, token).
    pub async fn create_runner(&self) -> (String, String) {
        let created: serde_json::Value = self
            .http
            .post(format!("{}/api/admins/create_runner", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            created["id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn stop(self) {
        self.server.stop(true).await;
        self.background.stop().await;
    }
}

pub struct Measurement {
    pub name: &'static str,
    pub per_second: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Runs `pgbench` with `clients` clients and `script` against the
/// `baseline` database, after running `setup` there.
pub fn pgbench(
    cluster: &EmbeddedCluster,
    name: &'static str,
    clients: usize,
    duration: Duration,
    setup: &str,
    script: &str,
) -> Measurement {
    let binaries = PgBinaries::locate().unwrap();
    // The embedded cluster asks every client for its password.
    let password = cluster.password().unwrap_or_default().to_owned();
    let status = Command::new(binaries.tool("psql"))
        .env("PGPASSWORD", &password)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(cluster.socket_dir())
        .args([
            "-p",
            &cluster.port().to_string(),
            "-U",
            "warden",
            "-d",
            "baseline",
            "-c",
            setup,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "baseline set-up failed");
    let script_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script_file.path(), script).unwrap();
    let output = Command::new(binaries.tool("pgbench"))
        .env("PGPASSWORD", &password)
        .args(["-n", "-h"])
        .arg(cluster.socket_dir())
        .args(["-p", &cluster.port().to_string(), "-U", "warden"])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &duration.as_secs().to_string(),
            "-f",
        ])
        .arg(script_file.path())
        .arg("baseline")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let number_after = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    Measurement {
        name,
        per_second: number_after("tps = ").expect("pgbench printed no tps"),
        // pgbench reports the average latency.
        p50_ms: number_after("latency average = "),
        p99_ms: None,
    }
}

/// Runs `operation` from `clients` concurrent loops: a warm-up, then
/// counts completions and latencies for `duration`.
pub async fn run_clients<F, Fut>(name: &'static str, clients: usize, duration: Duration, operation: F) -> Measurement
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..clients)
        .map(|client| {
            let operation = operation.clone();
            let measuring = Arc::clone(&measuring);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    operation(client).await;
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
    for task in loops {
        latencies.extend(task.await.unwrap());
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

/// Prints a Markdown table; ratios are against the mean of the rows at
/// `baselines`.
pub fn report(title: &str, results: &[Measurement], baselines: &[usize]) {
    let baseline = baselines.iter().map(|i| results[*i].per_second).sum::<f64>() / baselines.len() as f64;
    println!("\n{title}");
    println!("Baseline = mean of rows {baselines:?} = {baseline:.0}/s.\n");
    println!("| measurement | per second | ratio to baseline | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for m in results {
        let ms = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
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

/// pgbench baselines: the indexed token-hash lookup a runner request needs,
/// and a single-row INSERT of a job-sized row.
pub const LOOKUP_SETUP: &str = "CREATE TABLE IF NOT EXISTS lookup (id BIGINT PRIMARY KEY, token_hash TEXT NOT NULL);
     CREATE UNIQUE INDEX IF NOT EXISTS lookup_hash ON lookup (token_hash);
     INSERT INTO lookup SELECT n, md5(n::text) FROM generate_series(1, 1000) n ON CONFLICT DO NOTHING;";
pub const LOOKUP_SCRIPT: &str = "\\set n random(1, 1000)\nSELECT id FROM lookup WHERE token_hash = md5(:n::text);\n";
pub const INSERT_SETUP: &str = "CREATE TABLE IF NOT EXISTS bench_insert (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())";
pub const INSERT_SCRIPT: &str = "INSERT INTO bench_insert (payload) VALUES ('{\"job\": 1, \"runner\": \"00000000-0000-0000-0000-000000000000\"}');\n";

/// Fills the queue (through the command path, 16 at a time).
pub async fn submit_jobs(warden: &Warden, count: usize) {
    let user = uuid::Uuid::now_v7();
    let tasks: Vec<_> = (0..16)
        .map(|worker| {
            let state = Arc::clone(&warden.state);
            tokio::spawn(async move {
                for n in (worker..count).step_by(16) {
                    let job = warden::fleet::jobs::NewJob {
                        kind: Default::default(),
                        payload: serde_json::json!({"n": n}),
                        required_tags: Vec::new(),
                        priority: 0,
                        input: None,
                        scope_id: None,
                    };
                    warden::fleet::jobs::submit(&state.fleet, user, job, &warden::events::Metadata::system("bench"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Registers a Project-W machine named `name` at `base` with runner
/// `token`; its session token.
pub async fn register_project_w(http: &reqwest::Client, base: &str, token: &str, name: &str) -> String {
    let registered = http
        .post(format!("{base}/api/runners/register"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": name, "priority": 1, "version": "0.6",
                                  "git_hash": "bench", "source_code_url": "https://example.org"}))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success());
    let body: serde_json::Value = registered.json().await.unwrap();
    body["session_token"].as_str().unwrap().to_owned()
}

/// One assignment cycle of machine `system_id`: take a job from the queue
/// at `request_base` (it must not be empty), post its result at
/// `result_base`.
pub async fn take_and_finish_job(
    http: &reqwest::Client,
    request_base: &str,
    result_base: &str,
    token: &str,
    system_id: &str,
) {
    let response = http
        .post(format!("{request_base}/api/runners/jobs/request"))
        .bearer_auth(token)
        .json(&serde_json::json!({"system_id": system_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK, "the queue ran dry");
    let job: serde_json::Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    let done = http
        .post(format!("{result_base}/api/runners/jobs/{id}/result"))
        .bearer_auth(token)
        .json(&serde_json::json!({"system_id": system_id, "outcome": "succeeded"}))
        .send()
        .await
        .unwrap();
    assert!(done.status().is_success());
}

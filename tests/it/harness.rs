//! Test harness: a real, throwaway PostgreSQL cluster per test process
//! (started on first use from the installed binaries, as an unprivileged
//! user when running as root), a migrated template database, and for each
//! test its own database plus, when asked, the real HTTP server on a
//! random loopback port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;
use warden::api::{CreatedRunner, JobAccepted, TokenResponse};
use warden::app::{AppState, Background};
use warden::platform::config::{Config, ProvisionedUser};
use warden::platform::db::{Database, Timeouts};
use warden::platform::embedded_pg::{ClusterOptions, EmbeddedCluster};
use warden::platform::secrets::Secret;

pub const ADMIN_EMAIL: &str = "admin@example.org";
pub const ADMIN_PASSWORD: &str = "admin password that is long";
pub const USER_EMAIL: &str = "user@example.org";
pub const USER_PASSWORD: &str = "user password that is long";
const TEMPLATE: &str = "warden_template";

struct SharedCluster {
    cluster: Mutex<Option<EmbeddedCluster>>,
    data_dir: PathBuf,
}

static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();

extern "C" fn stop_cluster_at_exit() {
    if let Some(shared) = CLUSTER.get() {
        if let Some(mut cluster) = shared.cluster.lock().ok().and_then(|mut c| c.take()) {
            cluster.stop();
        }
        let _ = std::fs::remove_dir_all(&shared.data_dir);
    }
}

fn shared() -> &'static SharedCluster {
    CLUSTER.get_or_init(|| {
        let data_dir = std::env::temp_dir().join(format!(
            "warden-test-{}-{}",
            std::process::id(),
            Uuid::new_v4().simple()
        ));
        // Started from a thread of its own: it may be first used inside a
        // test's runtime, where blocking on another runtime is not allowed.
        let dir = data_dir.clone();
        let cluster = std::thread::spawn(move || {
            let mut options = ClusterOptions::throwaway(&dir);
            // Tests compare when transactions committed (pg_xact_commit_timestamp).
            options.settings.push(("track_commit_timestamp".into(), "on".into()));
            let cluster = EmbeddedCluster::start(&options).expect("start test PostgreSQL");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(create_template(&cluster));
            cluster
        })
        .join()
        .expect("cluster start-up thread");
        unsafe {
            libc::atexit(stop_cluster_at_exit);
        }
        SharedCluster {
            cluster: Mutex::new(Some(cluster)),
            data_dir,
        }
    })
}

async fn create_template(cluster: &EmbeddedCluster) {
    warden::platform::database_setup::create_database_if_missing(&cluster.connect_config("postgres"), TEMPLATE)
        .await
        .unwrap();
    let db = Database::new(cluster.connect_config(TEMPLATE), 2).unwrap();
    db.migrate().await.expect("migrate template");
}

/// The server secrets file of this test process.
pub fn secrets_file() -> PathBuf {
    shared().data_dir.join("secrets.json")
}

pub fn with_cluster<T>(f: impl FnOnce(&EmbeddedCluster) -> T) -> T {
    let guard = shared().cluster.lock().unwrap();
    f(guard.as_ref().expect("cluster running"))
}

pub fn socket_dir() -> PathBuf {
    with_cluster(|c| c.socket_dir().to_path_buf())
}

/// A database of its own for one test, copied from the migrated template.
pub struct TestDb {
    pub name: String,
    pub db: Database,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("t_{}", Uuid::new_v4().simple());
        let maintenance = with_cluster(|c| c.connect_config("postgres"));
        let (client, connection) = maintenance.connect(tokio_postgres::NoTls).await.unwrap();
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .await
            .unwrap();
        drop(client);
        let _ = driver.await;
        let db = Database::new(with_cluster(|c| c.connect_config(&name)), 24).unwrap();
        TestDb { name, db }
    }

    /// The same database through a new connection pool.
    pub fn reconnect(&self) -> TestDb {
        TestDb {
            name: self.name.clone(),
            db: Database::new(with_cluster(|c| c.connect_config(&self.name)), 24).unwrap(),
        }
    }

    /// `key=value` connection string for a warden subprocess.
    pub fn url(&self) -> String {
        format!(
            "host={} port=5432 user=warden password={} dbname={}",
            socket_dir().display(),
            with_cluster(|c| c.password().unwrap_or_default().to_owned()),
            self.name
        )
    }

    pub async fn client(&self) -> warden::platform::db::Connection {
        self.db.get().await.unwrap()
    }

    /// Every row of `table` as JSON text, ordered, for comparisons.
    pub async fn dump(&self, table: &str, order_by: &str) -> Vec<String> {
        let client = self.client().await;
        client
            .query(
                &format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY {order_by}"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Every row of every table, as text: for "this secret is nowhere"
    /// checks.
    pub async fn dump_everything(&self) -> String {
        let client = self.client().await;
        let tables: Vec<String> = client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut all = String::new();
        for table in tables {
            for row in self.dump(&table, "1").await {
                all.push_str(&row);
                all.push('\n');
            }
        }
        all
    }

    /// Waits until every transaction that wrote to the log has finished,
    /// so a reader from the start sees the whole log. (The safe point is
    /// cluster-wide: another test's transaction can hold it back briefly.)
    pub async fn settle_log(&self) {
        let client = self.client().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let settled: bool = client
                .query_one(
                    "SELECT log_horizon() > coalesce(max(transaction_id), 0) FROM events",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if settled {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the log did not settle");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every read model, ordered, for equality checks.
    pub async fn snapshot_read_models(&self) -> Vec<Vec<String>> {
        let mut tables = Vec::new();
        for projection in warden::projections::all() {
            for table in projection.tables() {
                tables.push(self.dump(table, "id").await);
            }
        }
        tables
    }

    /// Empties the read models and folds the whole log into them again,
    /// with the projectors' own code (what a replay does).
    pub async fn rebuild_read_models(&self) {
        self.settle_log().await;
        let mut client = self.client().await;
        let projections = warden::projections::all();
        let tx = client.transaction().await.unwrap();
        for projection in projections {
            for table in projection.tables() {
                tx.batch_execute(&format!("TRUNCATE {table}")).await.unwrap();
            }
        }
        let mut cursor = warden::events::LogCursor::START;
        loop {
            let batch = warden::log::event_store::read_after(&tx, cursor, 1000).await.unwrap();
            let Some(last) = batch.last().map(|e| e.cursor()) else {
                break;
            };
            for event in &batch {
                for projection in projections {
                    projection.apply(&tx, event).await.unwrap();
                }
            }
            cursor = last;
        }
        tx.commit().await.unwrap();
    }

    pub async fn count_events(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// The configuration tests run with: an admin and a normal user provisioned.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.http.workers = Some(2);
    config.security.secrets_file = Some(secrets_file());
    // Tests hammer the runner routes; the limiter has a test of its own.
    config.runners.rate_limit.per_second = 1_000_000;
    config.runners.rate_limit.burst = 1_000_000;
    let provisioning = &mut config.security.local_account.user_provisioning;
    provisioning.insert(
        "0".into(),
        ProvisionedUser {
            email: ADMIN_EMAIL.into(),
            password: Secret::new(ADMIN_PASSWORD),
            is_admin: true,
        },
    );
    provisioning.insert(
        "1".into(),
        ProvisionedUser {
            email: USER_EMAIL.into(),
            password: Secret::new(USER_PASSWORD),
            is_admin: false,
        },
    );
    config
}

/// A running warden: its own database, projectors, and HTTP server.
pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    pub state: Arc<AppState>,
    pub db: TestDb,
    server: actix_web::dev::ServerHandle,
    background: Option<Background>,
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> TestApp {
        let db = TestDb::new().await;
        Self::start_on(db, config).await
    }

    pub async fn start_on(db: TestDb, mut config: Config) -> TestApp {
        // The server secrets file: one per test process (every test
        // database records its fingerprints), gone with the test cluster.
        if config.security.secrets_file.is_none() {
            config.security.secrets_file = Some(secrets_file());
        }
        // `RUST_LOG=warden=debug cargo test ... -- --nocapture` shows the
        // server's log; silent otherwise.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let warden::http::Application {
            state,
            server,
            background,
        } = warden::http::Application::build(config, db.db.clone(), listener)
            .await
            .expect("app start");
        let handle = server.handle();
        tokio::spawn(server);
        TestApp {
            base_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            state,
            db,
            server: handle,
            background: Some(background),
        }
    }

    /// Two instances on one new database, started in that order (so the
    /// first leads the log consumers).
    pub async fn start_two(config: Config) -> (TestApp, TestApp) {
        let db = TestDb::new().await;
        let second_db = db.reconnect();
        let first = TestApp::start_on(db, config.clone()).await;
        let second = TestApp::start_on(second_db, config).await;
        (first, second)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The seed's login call: a form-encoded password grant.
    pub async fn login(&self, email: &str, password: &str, admin: bool) -> reqwest::Response {
        password_login(&self.http, &self.base_url, email, password, admin).await
    }

    pub async fn token(&self, email: &str, password: &str, admin: bool) -> String {
        let response = self.login(email, password, admin).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {email} failed");
        response.json::<TokenResponse>().await.unwrap().access_token
    }

    pub async fn admin_token(&self) -> String {
        self.token(ADMIN_EMAIL, ADMIN_PASSWORD, true).await
    }

    /// Creates a runner the way seed 000 does; returns (id, token).
    pub async fn create_runner(&self, admin_token: &str) -> (String, String) {
        let response = self
            .http
            .post(self.url("/api/admins/create_runner"))
            .bearer_auth(admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: CreatedRunner = response.json().await.unwrap();
        (created.id.to_string(), created.token)
    }

    pub async fn invalidate_runner(&self, admin_token: &str, runner_id: &str) -> reqwest::Response {
        self.http
            .delete(self.url(&format!("/api/admins/invalidate_runner?runner_id={runner_id}")))
            .bearer_auth(admin_token)
            .send()
            .await
            .unwrap()
    }

    pub async fn verify_runner(&self, runner_token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/runners/verify"))
            .bearer_auth(runner_token)
            .send()
            .await
            .unwrap()
    }

    /// POST with a bearer token and a JSON body.
    pub async fn post_json(&self, token: &str, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, token: &str, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    /// The `items` of one page of an admin list; fails unless 200.
    pub async fn get_items(&self, token: &str, path: &str) -> Vec<Value> {
        let response = self.get_json(token, path).await;
        assert_eq!(response.status(), reqwest::StatusCode::OK, "GET {path}");
        let body: Value = response.json().await.unwrap();
        body["items"].as_array().cloned().expect("a page has items")
    }

    /// Submits a job as the user of `token`; returns its id.
    pub async fn submit_job(&self, token: &str, payload: Value, tags: &[&str], priority: i32) -> String {
        let response = self
            .post_json(
                token,
                "/api/jobs",
                serde_json::json!({"payload": payload, "required_tags": tags, "priority": priority}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<JobAccepted>().await.unwrap().id.to_string()
    }

    /// Asks for a job as machine `system_id`, waiting up to `wait_seconds`.
    pub async fn request_job(&self, runner_token: &str, system_id: &str, wait_seconds: u64) -> Option<Value> {
        let response = self
            .post_json(
                runner_token,
                "/api/runners/jobs/request",
                serde_json::json!({"system_id": system_id, "wait_seconds": wait_seconds}),
            )
            .await;
        match response.status() {
            StatusCode::OK => Some(response.json().await.unwrap()),
            StatusCode::NO_CONTENT => None,
            other => panic!("job request answered {other}: {}", response.text().await.unwrap()),
        }
    }

    pub async fn job(&self, token: &str, job_id: &str) -> Value {
        let response = self.get_json(token, &format!("/api/jobs/{job_id}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Waits until the job is back in the queue (requeues happen in the
    /// background after the request that causes them answers); fails with
    /// `why` once `within` has passed.
    pub async fn wait_until_queued(&self, token: &str, job_id: &str, within: Duration, why: &str) {
        let deadline = std::time::Instant::now() + within;
        while self.job(token, job_id).await["status"] != "queued" {
            assert!(std::time::Instant::now() < deadline, "{why}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server and background tasks. The returned database has a
    /// fresh pool: connections made on the HTTP workers' runtimes end with
    /// those workers.
    pub async fn stop(mut self) -> TestDb {
        self.server.stop(true).await;
        if let Some(background) = self.background.take() {
            background.stop().await;
        }
        self.db.reconnect()
    }
}

/// A client whose connections come from `source` (any 127.x address
/// reaches the server on loopback).
pub fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The seed's login call against any warden at `base_url`.
pub async fn password_login(
    http: &reqwest::Client,
    base_url: &str,
    email: &str,
    password: &str,
    admin: bool,
) -> reqwest::Response {
    let scope = if admin { "&scope=admin" } else { "" };
    let body = format!(
        "grant_type=password{scope}&username={}&password={}",
        urlencode(email),
        urlencode(password)
    );
    http.post(format!("{base_url}/api/local-account/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

pub fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Asserts an error response: status and stable code.
pub async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str) {
    let got = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "unexpected status, body {body}");
    assert_eq!(body["code"], code, "unexpected code, body {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
}

/// Path of the warden binary built for these tests.
pub fn warden_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_warden"))
}

/// The warden binary as a command, with this test process's server
/// secrets (test databases record their fingerprints).
pub fn warden_command() -> std::process::Command {
    let mut command = std::process::Command::new(warden_binary());
    command.env("WARDEN_SECURITY__SECRETS_FILE", secrets_file());
    command
}

/// A TCP proxy in front of the shared cluster's unix socket that can be
/// black-holed: from then on it forwards nothing, new connections hang,
/// and existing ones stay open toward warden but silent (no reset), while
/// the server side is closed (as the server's own keepalives end a
/// session whose client vanished).
pub struct BlackHoleProxy {
    pub port: u16,
    black_hole: Arc<std::sync::atomic::AtomicBool>,
}

impl BlackHoleProxy {
    pub async fn start() -> BlackHoleProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let black_hole = Arc::new(AtomicBool::new(false));
        let socket = socket_dir().join(".s.PGSQL.5432");
        let flag = Arc::clone(&black_hole);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = Arc::clone(&flag);
                let socket = socket.clone();
                tokio::spawn(async move {
                    // Silent forever once black-holed: read and drop.
                    let swallow = |mut half: tokio::net::tcp::OwnedReadHalf| async move {
                        let mut buf = [0u8; 8192];
                        while matches!(half.read(&mut buf).await, Ok(n) if n > 0) {}
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    if flag.load(Ordering::SeqCst) {
                        swallow(from_client).await;
                        drop(to_client);
                        return;
                    }
                    let server = tokio::net::UnixStream::connect(&socket).await.unwrap();
                    let (mut from_server, mut to_server) = server.into_split();
                    let down_flag = Arc::clone(&flag);
                    let down = tokio::spawn(async move {
                        let mut buf = [0u8; 8192];
                        loop {
                            let n = match from_server.read(&mut buf).await {
                                Ok(n) if n > 0 => n,
                                _ => return to_client,
                            };
                            if down_flag.load(Ordering::SeqCst) || to_client.write_all(&buf[..n]).await.is_err() {
                                return to_client;
                            }
                        }
                    });
                    let mut buf = [0u8; 8192];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(n) if n > 0 => n,
                            _ => break,
                        };
                        if flag.load(Ordering::SeqCst) {
                            // Close the server side; keep warden's side open
                            // and silent.
                            drop(to_server);
                            down.abort();
                            swallow(from_client).await;
                            return;
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        BlackHoleProxy { port, black_hole }
    }

    pub fn black_hole(&self) {
        self.black_hole.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The database of `db` reached through this proxy (a pool of its own).
    pub fn in_front_of(&self, db: &TestDb) -> TestDb {
        TestDb {
            name: db.name.clone(),
            db: Database::from_url(&self.url(&db.name), 16, None, Timeouts::REQUESTS).unwrap(),
        }
    }

    /// `key=value` connection string of database `name` through the proxy.
    pub fn url(&self, name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=warden password={} dbname={name} sslmode=disable",
            self.port,
            with_cluster(|c| c.password().unwrap_or_default().to_owned()),
        )
    }
}

/// A TCP proxy in front of the shared cluster's unix socket that can
/// freeze like a SIGSTOPped host: from then on it forwards nothing and
/// reads nothing in either direction (the kernel's buffers fill, TCP
/// stays open and acknowledged on both sides, nobody is reset), and new
/// connections are accepted but never answered. Unlike
/// [`BlackHoleProxy`], the server keeps its side (sessions, their locks)
/// for as long as the proxy is frozen. `thaw` lets everything through
/// again, late.
pub struct FreezingProxy {
    pub port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone)]
enum ProxyTarget {
    Unix(PathBuf),
    Tcp(u16),
}

impl FreezingProxy {
    /// In front of the shared test cluster.
    pub async fn start() -> FreezingProxy {
        Self::to(ProxyTarget::Unix(socket_dir().join(".s.PGSQL.5432"))).await
    }

    /// In front of a server listening on loopback port `port`.
    pub async fn to_port(port: u16) -> FreezingProxy {
        Self::to(ProxyTarget::Tcp(port)).await
    }

    async fn to(target: ProxyTarget) -> FreezingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, _) = tokio::sync::watch::channel(false);
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut thawed = flag.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    if thawed.wait_for(|frozen| !frozen).await.is_err() {
                        return;
                    }
                    let (from_client, to_client) = client.into_split();
                    match target {
                        ProxyTarget::Unix(socket) => {
                            let Ok(server) = tokio::net::UnixStream::connect(&socket).await else {
                                return;
                            };
                            let (from_server, to_server) = server.into_split();
                            let up = tokio::spawn(Self::copy(from_client, to_server, thawed.clone()));
                            Self::copy(from_server, to_client, thawed).await;
                            let _ = up.await;
                        }
                        ProxyTarget::Tcp(port) => {
                            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                                return;
                            };
                            let (from_server, to_server) = server.into_split();
                            let up = tokio::spawn(Self::copy(from_client, to_server, thawed.clone()));
                            Self::copy(from_server, to_client, thawed).await;
                            let _ = up.await;
                        }
                    }
                });
            }
        });
        FreezingProxy { port, frozen }
    }

    /// Copies until either side closes, never while frozen.
    async fn copy(
        mut from: impl tokio::io::AsyncRead + Unpin,
        mut to: impl tokio::io::AsyncWrite + Unpin,
        mut thawed: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if thawed.wait_for(|frozen| !frozen).await.is_err() {
                return;
            }
            let n = match from.read(&mut buf).await {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            if thawed.wait_for(|frozen| !frozen).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// The database of `db` reached through this proxy (a pool of its
    /// own) with `timeouts`.
    pub fn in_front_of(&self, db: &TestDb, timeouts: Timeouts) -> TestDb {
        TestDb {
            name: db.name.clone(),
            db: Database::from_url(&self.url(&db.name), 16, None, timeouts).unwrap(),
        }
    }

    /// `key=value` connection string of database `name` through the proxy.
    pub fn url(&self, name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=warden password={} dbname={name} sslmode=disable",
            self.port,
            with_cluster(|c| c.password().unwrap_or_default().to_owned()),
        )
    }
}

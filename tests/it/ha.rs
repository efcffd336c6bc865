//! Real high availability on loopback: etcd and three PostgreSQL nodes
//! managed by Patroni (Debian's `patroni` and `etcd-server`,
//! `synchronous_mode: true`), warden connected with a multi-host URL and
//! its default database deadlines. One test runs the three scenarios in
//! turn on one cluster (bootstrapping it is most of the cost):
//! - a frozen follower connection: the instance leading every log
//!   consumer freezes; the other takes every consumer within 5 s;
//! - kill -9 of the primary's postmaster under write load: no
//!   acknowledged write lost, writes back within 5 s of the primary's
//!   return, the job of a runner invalidated just before the kill requeued
//!   exactly once, `replay --verify` equal;
//! - a frozen first host (SIGSTOP of Patroni, the postmaster and every
//!   backend of the primary listed first): writes back within 3 s of
//!   Patroni's promotion of another node.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::{json, Value};
use warden::platform::db::{Database, Timeouts};

use crate::harness::*;

const PASSWORD: &str = "patroni-test-password";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The unprivileged user PostgreSQL (and so Patroni) runs as when the
/// tests run as root.
fn postgres_user() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    // The shared test cluster made it.
    with_cluster(|_| ());
    let user = nix::unistd::User::from_name(warden::platform::embedded_pg::DEDICATED_OS_USER)
        .unwrap()
        .expect("the test cluster's OS user");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn own(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// A process group of its own, killed with it.
struct Process {
    child: Child,
}

impl Process {
    fn spawn(mut command: Command, log: &Path) -> Process {
        let out = std::fs::File::create(log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        Process {
            child: command.spawn().unwrap_or_else(|e| panic!("{command:?}: {e}")),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

struct Node {
    name: String,
    pg_port: u16,
    rest_port: u16,
    data_dir: PathBuf,
    patroni: Option<Process>,
}

impl Node {
    /// The postmaster's pid.
    fn postmaster(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Signals Patroni and every PostgreSQL process of the node: the
    /// postmaster first (it forks no one after), then each of its children
    /// (every backend is a session of its own, so no process group holds
    /// them all).
    fn signal(&self, signal: Signal) {
        if let Some(patroni) = &self.patroni {
            let _ = kill(Pid::from_raw(-patroni.pid()), signal);
        }
        let Some(postmaster) = self.postmaster() else { return };
        if signal == Signal::SIGKILL {
            // The children first: a dead postmaster's children are
            // adopted by init and no longer found by their parent.
            for child in children_of(postmaster) {
                let _ = kill(Pid::from_raw(child), signal);
            }
            let _ = kill(Pid::from_raw(postmaster), signal);
        } else {
            // The postmaster first: stopped, it forks no one after.
            let _ = kill(Pid::from_raw(postmaster), signal);
            for child in children_of(postmaster) {
                let _ = kill(Pid::from_raw(child), signal);
            }
        }
    }
}

/// The processes whose parent is `parent` (from /proc).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid ...`; comm may hold spaces: after the
            // last ')'.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.to_owned()))
                .and_then(|rest| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(parent)
        })
        .collect()
}

struct Cluster {
    dir: tempfile::TempDir,
    /// Patroni's scope, also PostgreSQL's `cluster_name`.
    scope: String,
    _etcd: Process,
    nodes: Vec<Node>,
    http: reqwest::Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.signal(Signal::SIGKILL);
            node.patroni.take();
        }
        // Whatever is left of the cluster (PostgreSQL processes name their
        // cluster, which is the scope; Patroni's its configuration's path).
        let marks = [self.scope.clone(), self.dir.path().display().to_string()];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for pid in entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            {
                let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let command = String::from_utf8_lossy(&command);
                if marks.iter().any(|mark| command.contains(mark.as_str())) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let user = postgres_user();
        let dir = tempfile::Builder::new().prefix("warden-ha-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let mut etcd = Command::new("etcd");
        etcd.args(["--name", "ha", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client_port}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client_port}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args(["--initial-cluster", &format!("ha=http://127.0.0.1:{peer_port}")]);
        let etcd = Process::spawn(etcd, &dir.path().join("etcd.log"));
        let bin_dir = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .find(|bin| bin.join("initdb").exists())
            .expect("PostgreSQL server binaries");
        let scope = format!("warden-ha-{}", uuid::Uuid::new_v4().simple());
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let name = format!("node{i}");
            let (pg_port, rest_port) = (free_port(), free_port());
            let home = dir.path().join(&name);
            std::fs::create_dir(&home).unwrap();
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
            own(&home, user);
            let data_dir = home.join("data");
            let config = format!(
                r#"scope: {scope}
name: {name}
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:{rest_port}
  connect_address: 127.0.0.1:{rest_port}
etcd3:
  hosts: 127.0.0.1:{client_port}
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 200
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
    - encoding: UTF8
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {data_dir}
  bin_dir: {bin_dir}
  pgpass: {home}/pgpass
  authentication:
    superuser:
      username: postgres
      password: {PASSWORD}
    replication:
      username: replicator
      password: {PASSWORD}
  parameters:
    unix_socket_directories: {home}
"#,
                data_dir = data_dir.display(),
                bin_dir = bin_dir.display(),
                home = home.display(),
            );
            let config_path = home.join("patroni.yml");
            std::fs::write(&config_path, config).unwrap();
            own(&config_path, user);
            nodes.push(Node {
                name,
                pg_port,
                rest_port,
                data_dir,
                patroni: None,
            });
        }
        let mut cluster = Cluster {
            dir,
            scope: scope.clone(),
            _etcd: etcd,
            nodes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        };
        for node in &mut cluster.nodes {
            let home = cluster.dir.path().join(&node.name);
            let mut patroni = Command::new("patroni");
            patroni.arg(home.join("patroni.yml")).env("HOME", &home);
            if let Some((uid, gid)) = user {
                patroni.uid(uid).gid(gid);
            }
            node.patroni = Some(Process::spawn(patroni, &home.join("patroni.log")));
            // The first one bootstraps alone; the others copy it.
            if node.name == "node1" {
                cluster_wait(&cluster.http, node.rest_port, "primary", Duration::from_secs(90), &home).await;
            }
        }
        cluster.wait_until_whole(Duration::from_secs(120)).await;
        cluster
    }

    /// Until every node runs (the primary, two streaming standbys) and one
    /// standby is synchronous: only then may Patroni (synchronous_mode)
    /// promote another node if the primary fails.
    async fn wait_until_whole(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let members = self.members().await;
            let running = members
                .iter()
                .filter(|m| m["state"] == "streaming" || m["state"] == "running")
                .count();
            let sync = members.iter().any(|m| m["role"] == "sync_standby");
            if running == 3 && sync {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster is not whole: {members:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn members(&self) -> Vec<Value> {
        for node in &self.nodes {
            let url = format!("http://127.0.0.1:{}/cluster", node.rest_port);
            if let Ok(response) = self.http.get(url).send().await {
                if let Ok(body) = response.json::<Value>().await {
                    return body["members"].as_array().cloned().unwrap_or_default();
                }
            }
        }
        Vec::new()
    }

    /// The node that answers as primary now, if one does.
    async fn primary(&self, among: &[usize]) -> Option<usize> {
        for &i in among {
            let url = format!("http://127.0.0.1:{}/primary", self.nodes[i].rest_port);
            if let Ok(response) = self.http.get(url).send().await {
                if response.status() == StatusCode::OK {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Whether node `i`'s PostgreSQL accepts writes now (promoted, not
    /// only named primary by Patroni).
    async fn writable(&self, i: usize) -> bool {
        let url = format!(
            "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname=postgres sslmode=disable connect_timeout=1",
            self.nodes[i].pg_port
        );
        let check = async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.ok()?;
            let driver = tokio::spawn(connection);
            let rows = client.simple_query("SHOW transaction_read_only").await.ok()?;
            driver.abort();
            rows.iter().find_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|value| value == "off"),
                _ => None,
            })
        };
        tokio::time::timeout(Duration::from_secs(1), check)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// `order` first, then the others: a multi-host URL of database `name`.
    fn url(&self, order: &[usize], name: &str) -> String {
        let ports: Vec<String> = order.iter().map(|&i| self.nodes[i].pg_port.to_string()).collect();
        let hosts = vec!["127.0.0.1"; order.len()].join(",");
        format!(
            "host={hosts} port={} user=postgres password={PASSWORD} dbname={name} sslmode=disable target_session_attrs=read-write",
            ports.join(",")
        )
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for name in [
            "etcd.log",
            "node1/patroni.log",
            "node2/patroni.log",
            "node3/patroni.log",
        ] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            all.push_str(&format!(
                "--- {name}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        all
    }
}

async fn cluster_wait(http: &reqwest::Client, rest_port: u16, role: &str, within: Duration, home: &Path) {
    let deadline = Instant::now() + within;
    loop {
        let url = format!("http://127.0.0.1:{rest_port}/{role}");
        if let Ok(response) = http.get(url).send().await {
            if response.status() == StatusCode::OK {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {role} on :{rest_port}: {}",
            std::fs::read_to_string(home.join("patroni.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runners created every few milliseconds through `app`, each creation
/// recorded when acknowledged (201), with every failure's time.
struct WriteLoad {
    acknowledged: Arc<Mutex<Vec<(Instant, String)>>>,
    /// When each refused write was sent and answered, and why.
    failed: Arc<Mutex<Vec<(Instant, Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteLoad {
    fn start(app: &TestApp, admin: &str) -> WriteLoad {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (url, admin) = (app.url("/api/admins/create_runner"), admin.to_owned());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let (done, errors) = (acknowledged.clone(), failed.clone());
        let task = tokio::spawn(async move {
            loop {
                let sent = Instant::now();
                let answer = http.post(&url).bearer_auth(&admin).send().await;
                match answer {
                    Ok(response) if response.status() == StatusCode::CREATED => {
                        let body: Value = response.json().await.unwrap_or_default();
                        let id = body["id"].as_str().unwrap_or_default().to_owned();
                        done.lock().unwrap().push((Instant::now(), id));
                    }
                    Ok(response) => {
                        let why = format!("{} {}", response.status(), response.text().await.unwrap_or_default());
                        errors.lock().unwrap().push((sent, Instant::now(), why));
                    }
                    Err(error) => errors.lock().unwrap().push((sent, Instant::now(), error.to_string())),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        WriteLoad {
            acknowledged,
            failed,
            task,
        }
    }

    /// When the first write acknowledged after `moment` was.
    fn first_after(&self, moment: Instant) -> Option<Instant> {
        self.acknowledged
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .find(|at| *at > moment)
    }

    async fn wait_for_write_after(&self, moment: Instant, within: Duration, why: &str) -> Instant {
        let deadline = moment.max(Instant::now()) + within;
        loop {
            if let Some(at) = self.first_after(moment) {
                return at;
            }
            if Instant::now() >= deadline {
                let failures: Vec<String> = self
                    .failed
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(6)
                    .map(|(sent, answered, why)| {
                        let at = |t: &Instant| {
                            t.checked_duration_since(moment)
                                .map_or_else(|| format!("-{:?}", moment.duration_since(*t)), |d| format!("+{d:?}"))
                        };
                        format!("sent {} answered {}: {why}", at(sent), at(answered))
                    })
                    .collect();
                panic!("{why}; the last refusals, from that moment: {failures:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(self) -> (Vec<String>, usize) {
        self.task.abort();
        let ids = self
            .acknowledged
            .lock()
            .unwrap()
            .iter()
            .map(|(_, id)| id.clone())
            .collect();
        let failures = self.failed.lock().unwrap().len();
        (ids, failures)
    }
}

fn ha_config() -> warden::platform::config::Config {
    // The defaults of the database deadlines, as shipped.
    test_config()
}

async fn start_app(url: &str) -> TestApp {
    TestApp::start_on(
        TestDb {
            name: "warden".into(),
            db: Database::from_url(url, 16, None, Timeouts::REQUESTS).unwrap(),
        },
        ha_config(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_failures_lose_no_write_and_keep_every_wait_bounded() {
    let cluster = Cluster::start().await;
    let started = Instant::now();
    let leader = cluster.primary(&[0, 1, 2]).await.expect("a primary");
    let order: Vec<usize> = std::iter::once(leader).chain((0..3).filter(|&i| i != leader)).collect();
    {
        let (client, connection) = tokio_postgres::connect(&cluster.url(&order, "postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        client.batch_execute("CREATE DATABASE warden").await.unwrap();
        drop(client);
        let _ = driver.await;
    }

    // 1. A frozen follower connection: the instance that leads every log
    //    consumer reaches the primary through a proxy that freezes.
    let proxy = FreezingProxy::to_port(cluster.nodes[leader].pg_port).await;
    let frozen_url = format!(
        "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname=warden sslmode=disable",
        proxy.port
    );
    let first = start_app(&frozen_url).await;
    let second = start_app(&cluster.url(&order, "warden")).await;
    let led = |app: &TestApp| app.state.consumers.led_here().len();
    let deadline = Instant::now() + Duration::from_secs(15);
    while led(&first) < 5 {
        assert!(Instant::now() < deadline, "the first instance does not lead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.freeze();
    let frozen_at = Instant::now();
    while led(&second) < 5 {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(5),
            "after {:?} the other instance leads {} of 5 consumers",
            frozen_at.elapsed(),
            led(&second)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handover = frozen_at.elapsed();
    // Gone for good (its stop would wait for the frozen connections).
    std::mem::forget(first);

    // 2. kill -9 of the primary's postmaster under write load, a runner
    //    invalidated just before.
    let app = second;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (runner_id, runner_token) = app.create_runner(&admin).await;
    let job = app.submit_job(&user, json!({"n": 1}), &[], 0).await;
    assert!(app.request_job(&runner_token, "ha-machine", 0).await.is_some());
    let load = WriteLoad::start(&app, &admin);
    load.wait_for_write_after(Instant::now(), Duration::from_secs(10), "no write before the kill")
        .await;
    assert!(app.invalidate_runner(&admin, &runner_id).await.status().is_success());
    let postmaster = cluster.nodes[leader].postmaster().expect("the primary's postmaster");
    kill(Pid::from_raw(postmaster), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    // Back: a node's PostgreSQL accepts writes again (Patroni restarts
    // the postmaster, or promotes another node).
    let primary_back = 'back: loop {
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "no primary after the kill\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..3 {
            if cluster.writable(i).await {
                break 'back Instant::now();
            }
        }
    };
    let written = load
        .wait_for_write_after(
            primary_back,
            Duration::from_secs(5),
            "no write within 5 s of the primary's return",
        )
        .await;
    let kill_outage = written.duration_since(killed_at);
    let after_primary = written.saturating_duration_since(primary_back);
    app.wait_until_queued(
        &user,
        &job,
        Duration::from_secs(20),
        "the invalidated runner's job was not requeued",
    )
    .await;

    // A planned switchover to the synchronous standby, under the load.
    cluster.wait_until_whole(Duration::from_secs(60)).await;
    let members = cluster.members().await;
    let leader_name = members.iter().find(|m| m["role"] == "leader").expect("a leader")["name"].clone();
    let candidate = members
        .iter()
        .find(|m| m["role"] == "sync_standby")
        .expect("a sync standby")["name"]
        .clone();
    let switched_at = Instant::now();
    let response = cluster
        .http
        .post(format!("http://127.0.0.1:{}/switchover", cluster.nodes[0].rest_port))
        .timeout(Duration::from_secs(30))
        .json(&json!({"leader": leader_name, "candidate": candidate}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
    let written = load
        .wait_for_write_after(Instant::now(), Duration::from_secs(10), "no write after the switchover")
        .await;
    let switchover_outage = written.duration_since(switched_at);

    // 3. The primary, listed first, freezes: Patroni promotes another
    //    node; writes must be back within 3 s of that.
    cluster.wait_until_whole(Duration::from_secs(60)).await;
    let leader = cluster.primary(&[0, 1, 2]).await.expect("a primary");
    let order: Vec<usize> = std::iter::once(leader).chain((0..3).filter(|&i| i != leader)).collect();
    let third = start_app(&cluster.url(&order, "warden")).await;
    let (mut acknowledged, _) = load.stop();
    let load = WriteLoad::start(&third, &admin);
    load.wait_for_write_after(Instant::now(), Duration::from_secs(10), "no write before the freeze")
        .await;
    cluster.nodes[leader].signal(Signal::SIGSTOP);
    let frozen_at = Instant::now();
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // Promoted: another node's PostgreSQL accepts writes (Patroni names
    // it primary a moment before).
    let promoted = 'promoted: loop {
        if frozen_at.elapsed() > Duration::from_secs(60) {
            panic!(
                "no promotion after the freeze: {:?}\n{}",
                cluster.members().await,
                cluster.logs()
            );
        }
        for &i in &others {
            if cluster.writable(i).await {
                break 'promoted Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let written = load
        .wait_for_write_after(promoted, Duration::from_secs(3), "no write within 3 s of the promotion")
        .await;
    let freeze_outage = written.duration_since(frozen_at);
    let after_promotion = written.saturating_duration_since(promoted);
    let promotion_delay = promoted.duration_since(frozen_at);
    let (later, failures) = load.stop();
    acknowledged.extend(later);
    cluster.nodes[leader].signal(Signal::SIGKILL);

    // No acknowledged write lost, the job requeued once, the read models
    // equal to a rebuild from the log.
    let db = Database::from_url(
        &cluster.url(&others, "warden"),
        4,
        None,
        Timeouts::REQUESTS.for_maintenance(),
    )
    .unwrap();
    let client = match db.get().await {
        Ok(client) => client,
        Err(error) => panic!(
            "{}: {:?}\n{}",
            warden::platform::db::describe(&error),
            cluster.members().await,
            cluster.logs()
        ),
    };
    let stored: BTreeSet<String> = client
        .query("SELECT id::text FROM runners", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());
    let requeues = warden::fleet::reactions::requeues_by_job(&client).await.unwrap();
    let job_id: uuid::Uuid = job.parse().unwrap();
    assert_eq!(requeues.get(&job_id), Some(&1), "{requeues:?}");
    drop(client);
    let report = warden::log::replay::run(&db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    eprintln!(
        "HA on loopback (bootstrap excluded, {:?}): consumers moved {handover:?} after their leader froze; \
         kill -9 of the primary's postmaster: writes back {kill_outage:?} after the kill, {after_primary:?} after \
         the primary's return; switchover: writes back {switchover_outage:?} after it was asked for; frozen \
         first host: Patroni promoted after {promotion_delay:?}, writes back \
         {after_promotion:?} after the promotion ({freeze_outage:?} after the freeze); {} writes acknowledged, \
         {failures} refused meanwhile, none lost",
        started.elapsed(),
        acknowledged.len()
    );
    std::mem::forget(third);
    std::mem::forget(app);
}

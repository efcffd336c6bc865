//! A private PostgreSQL cluster started from the installed server binaries.
//!
//! `warden serve` uses it when no database URL is configured, and the test
//! harness uses it for throwaway clusters. The cluster listens on a unix
//! socket only (no TCP), in a directory only its owner can enter, and
//! every connection must give the superuser's password (SCRAM-SHA-256): a
//! random one, generated with the cluster and kept in
//! `<data_dir>/pg-password` (mode 0600, owned by warden's OS user, not the
//! server's). A cluster an older release made with `trust` is moved to the
//! password on its next start. The postmaster is a child of a supervisor
//! thread and is told to shut down (SIGINT, "fast") when that thread dies,
//! so it never outlives the process that started it.
//!
//! PostgreSQL refuses to run as root. When warden runs as root, the cluster
//! runs as a dedicated unprivileged OS user (`WARDEN_PG_OS_USER`, else
//! `warden-pg`, created if missing; never `nobody`, whose processes are
//! everyone's) who owns the database folder.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Gid, Pid, Uid, User};

/// Superuser role created in every embedded cluster.
pub const SUPERUSER: &str = "warden";
/// Only names the socket file; the cluster has no TCP listener.
pub const DEFAULT_PORT: u16 = 5432;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found; looked in {searched}.\n\
         Install them (Debian/Ubuntu: `sudo apt-get install postgresql`), set WARDEN_PG_BINDIR \
         to their folder, or configure `database.url` to use an existing server."
    )]
    BinariesNotFound { searched: String },
    #[error(
        "warden runs as root and PostgreSQL refuses to; no unprivileged OS user to run it as \
             (tried {tried}). Create one or set WARDEN_PG_OS_USER."
    )]
    NoUnprivilegedUser { tried: String },
    #[error("{action} failed: {detail}")]
    Command { action: String, detail: String },
    #[error("PostgreSQL did not become ready within {seconds}s; its log ({log}) ends with:\n{tail}")]
    NotReady { seconds: u64, log: String, tail: String },
    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where the PostgreSQL server programs live.
#[derive(Clone, Debug)]
pub struct PgBinaries {
    bindir: PathBuf,
}

impl PgBinaries {
    /// Finds `initdb` and `postgres`: `WARDEN_PG_BINDIR`, then
    /// `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`,
    /// then `PATH`.
    pub fn locate() -> Result<Self, EmbeddedError> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os("WARDEN_PG_BINDIR") {
            candidates.push(dir.into());
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
            }
        }
        let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .collect();
        versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        candidates.extend(versioned.into_iter().map(|(_, dir)| dir));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path));
        }
        Self::locate_in(candidates)
    }

    /// The first folder of `candidates` holding both server programs.
    pub fn locate_in(candidates: Vec<PathBuf>) -> Result<Self, EmbeddedError> {
        let searched = candidates
            .iter()
            .map(|dir| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        candidates
            .into_iter()
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
            .map(|bindir| PgBinaries { bindir })
            .ok_or(EmbeddedError::BinariesNotFound { searched })
    }

    pub fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// The OS identity the cluster's processes run as.
#[derive(Clone, Copy, Debug)]
struct OsIdentity {
    uid: Uid,
    gid: Gid,
}

impl OsIdentity {
    /// `None` when warden is not root: PostgreSQL runs as warden's user.
    fn for_postgres() -> Result<Option<Self>, EmbeddedError> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let configured = std::env::var("WARDEN_PG_OS_USER").ok();
        let name = configured.clone().unwrap_or_else(|| DEDICATED_OS_USER.to_owned());
        if name == "nobody" {
            return Err(EmbeddedError::NoUnprivilegedUser {
                tried: "nobody (refused: its processes belong to everyone)".into(),
            });
        }
        if configured.is_none() {
            // One creation at a time in this process: two concurrent
            // useradd runs can each write /etc/passwd (seen in tests).
            static CREATING: Mutex<()> = Mutex::new(());
            let _one_at_a_time = CREATING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if matches!(User::from_name(&name), Ok(None)) {
                create_os_user(&name)?;
            }
        }
        match User::from_name(&name) {
            Ok(Some(user)) if !user.uid.is_root() => Ok(Some(OsIdentity {
                uid: user.uid,
                gid: user.gid,
            })),
            _ => Err(EmbeddedError::NoUnprivilegedUser { tried: name }),
        }
    }

    fn apply(self, command: &mut Command) {
        // std also drops root's supplementary groups when uid is set.
        command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
    }

    fn own(self, path: &Path) -> Result<(), EmbeddedError> {
        chown(path, Some(self.uid), Some(self.gid)).map_err(|errno| EmbeddedError::Io {
            path: path.display().to_string(),
            source: errno.into(),
        })
    }

    /// Makes `dir` and everything in it this identity's, when it is not yet
    /// (a cluster made by an older release ran as `postgres` or `nobody`).
    fn own_all(self, dir: &Path) -> Result<(), EmbeddedError> {
        use std::os::unix::fs::MetadataExt;
        let metadata = fs::symlink_metadata(dir).map_err(io_error(dir))?;
        if metadata.uid() == self.uid.as_raw() {
            return Ok(());
        }
        tracing::info!(folder = %dir.display(), "handing the PostgreSQL folder to its dedicated OS user");
        let mut pending = vec![dir.to_path_buf()];
        while let Some(path) = pending.pop() {
            let metadata = fs::symlink_metadata(&path).map_err(io_error(&path))?;
            // Links are re-owned themselves, never followed.
            std::os::unix::fs::lchown(&path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
                .map_err(io_error(&path))?;
            if metadata.is_dir() {
                for entry in fs::read_dir(&path).map_err(io_error(&path))? {
                    pending.push(entry.map_err(io_error(&path))?.path());
                }
            }
        }
        Ok(())
    }
}

/// The OS user the cluster runs as when warden runs as root.
pub const DEDICATED_OS_USER: &str = "warden-pg";

/// A system account with no home and no login shell, only for PostgreSQL.
fn create_os_user(name: &str) -> Result<(), EmbeddedError> {
    let output = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
        ])
        .args(["--shell", "/usr/sbin/nologin", name])
        .output()
        .map_err(|source| EmbeddedError::Command {
            action: format!("creating the OS user {name} (useradd)"),
            detail: source.to_string(),
        })?;
    // Another warden may have created it at the same moment.
    if output.status.success() || matches!(User::from_name(name), Ok(Some(_))) {
        tracing::info!(user = name, "created the OS user the embedded PostgreSQL runs as");
        return Ok(());
    }
    Err(EmbeddedError::Command {
        action: format!("creating the OS user {name} (useradd)"),
        detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// The superuser's password, next to (not inside) the database folder.
const PASSWORD_FILE: &str = "pg-password";

/// The only client authentication the cluster accepts (unix socket, and
/// loopback TCP should someone turn it on).
const HBA: &str = "# Written by warden: every connection needs the password (SCRAM-SHA-256).
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
";

/// The password in `path`, if the file is there.
fn read_password(path: &Path) -> Result<Option<String>, EmbeddedError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(path)(error)),
    }
}

/// A fresh random password, written to `path` with mode 0600.
fn create_password(path: &Path) -> Result<String, EmbeddedError> {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    write_private_file(path, &password)?;
    Ok(password)
}

/// Writes `contents` to a new file at `path` that only its owner may read
/// (created exclusively: an existing file or a planted link is never
/// written through).
fn write_private_file(path: &Path, contents: &str) -> Result<(), EmbeddedError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents.as_bytes()).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Replaces the cluster's `pg_hba.conf` with [`HBA`].
fn write_hba(pgdata: &Path, identity: Option<OsIdentity>) -> Result<(), EmbeddedError> {
    let path = pgdata.join("pg_hba.conf");
    fs::write(&path, HBA).map_err(io_error(&path))?;
    if let Some(identity) = identity {
        identity.own(&path)?;
    }
    Ok(())
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Holds `pgdata/`, the socket folder and `postgres.log`.
    pub data_dir: PathBuf,
    /// `false` turns fsync off: fast, and only for throwaway clusters.
    pub durable: bool,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
}

impl ClusterOptions {
    pub fn durable(data_dir: impl Into<PathBuf>) -> Self {
        ClusterOptions {
            data_dir: data_dir.into(),
            durable: true,
            settings: Vec::new(),
        }
    }

    pub fn throwaway(data_dir: impl Into<PathBuf>) -> Self {
        ClusterOptions {
            data_dir: data_dir.into(),
            durable: false,
            settings: vec![
                ("max_connections".into(), "400".into()),
                ("shared_buffers".into(), "64MB".into()),
            ],
        }
    }
}

/// Exit status of the postmaster, filled in by its supervisor thread.
type ExitSlot = Arc<(Mutex<Option<io::Result<ExitStatus>>>, Condvar)>;

/// A postmaster this process started.
struct OwnedServer {
    pid: Pid,
    exit: ExitSlot,
}

/// A running cluster: started here, or found already running on the same
/// data folder (then it is left running when this handle is dropped).
pub struct EmbeddedCluster {
    data_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    /// The superuser's password; `None` only when attached to a cluster
    /// of an older release that still trusts local connections.
    password: Option<String>,
    server: Option<OwnedServer>,
}

impl EmbeddedCluster {
    /// Initialises the cluster if needed and starts it, or attaches to the
    /// postmaster already serving this data folder. Blocking.
    pub fn start(options: &ClusterOptions) -> Result<Self, EmbeddedError> {
        let binaries = PgBinaries::locate()?;
        let data_dir = absolute(&options.data_dir)?;
        let pgdata = data_dir.join("pgdata");
        let password_file = data_dir.join(PASSWORD_FILE);

        fs::create_dir_all(&data_dir).map_err(io_error(&data_dir))?;
        if let Some(running) = Self::attach(&data_dir, &pgdata, &password_file)? {
            tracing::info!(data_dir = %data_dir.display(), "using the PostgreSQL already running on this data folder");
            return Ok(running);
        }
        let identity = OsIdentity::for_postgres()?;
        let socket_dir = prepare_socket_dir(&data_dir, identity)?;
        let fresh = !pgdata.join("PG_VERSION").is_file();
        let password = match read_password(&password_file)? {
            Some(password) if !fresh => password,
            // A new cluster gets a new password (a file left by a deleted
            // cluster is replaced).
            _ => {
                let _ = fs::remove_file(&password_file);
                create_password(&password_file)?
            }
        };
        if fresh {
            initdb(&binaries, &pgdata, identity, options.durable, &password)?;
        } else if let Some(identity) = identity {
            identity.own_all(&pgdata)?;
        }
        let log_path = data_dir.join("postgres.log");
        let server = spawn_postmaster(&binaries, &pgdata, &socket_dir, &log_path, identity, options)?;
        let cluster = EmbeddedCluster {
            data_dir,
            pgdata,
            socket_dir,
            port: DEFAULT_PORT,
            password: Some(password),
            server: Some(server),
        };
        cluster.wait_ready(&log_path)?;
        cluster.require_password(identity)?;
        Ok(cluster)
    }

    /// A postmaster that is alive and ready on this data folder, if any
    /// (its socket folder is in its pid file).
    fn attach(data_dir: &Path, pgdata: &Path, password_file: &Path) -> Result<Option<Self>, EmbeddedError> {
        let Some(pid_file) = PidFile::read(pgdata) else {
            return Ok(None);
        };
        if !pid_file.ready || !process_alive(pid_file.pid) {
            return Ok(None);
        }
        Ok(Some(EmbeddedCluster {
            data_dir: data_dir.to_path_buf(),
            pgdata: pgdata.to_path_buf(),
            socket_dir: pid_file.socket_dir,
            port: pid_file.port,
            password: read_password(password_file)?,
            server: None,
        }))
    }

    /// Moves a cluster that still trusts local connections (made by an
    /// older release) to the password: sets it on the superuser, then
    /// replaces `pg_hba.conf` and reloads. A cluster whose `pg_hba.conf` is
    /// warden's already is left alone.
    fn require_password(&self, identity: Option<OsIdentity>) -> Result<(), EmbeddedError> {
        let hba_path = self.pgdata.join("pg_hba.conf");
        if fs::read_to_string(&hba_path).map_err(io_error(&hba_path))? == HBA {
            return Ok(());
        }
        let password = self.password.clone().unwrap_or_default();
        let config = self.connect_config("postgres");
        // Its own thread and runtime: this may run on a blocking thread of
        // the caller's runtime, where blocking on another is not allowed.
        let outcome = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                // The password is ours (URL-safe base64): no quoting issue.
                client
                    .batch_execute(&format!("ALTER ROLE \"{SUPERUSER}\" PASSWORD '{password}'"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the password set-up thread panicked".into()));
        outcome.map_err(|detail| EmbeddedError::Command {
            action: "setting the superuser's password".into(),
            detail,
        })?;
        write_hba(&self.pgdata, identity)?;
        // SIGHUP: the postmaster re-reads pg_hba.conf.
        if let Some(server) = &self.server {
            kill(server.pid, Signal::SIGHUP).map_err(|errno| EmbeddedError::Io {
                path: hba_path.display().to_string(),
                source: errno.into(),
            })?;
        }
        tracing::info!("the embedded PostgreSQL now requires its password (it trusted local connections before)");
        Ok(())
    }

    fn wait_ready(&self, log_path: &Path) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let server = self.server.as_ref().expect("only called on a server started here");
        loop {
            if let Some(pid_file) = PidFile::read(&self.pgdata) {
                if pid_file.ready && pid_file.pid == server.pid {
                    return Ok(());
                }
            }
            let exited = server.exit.0.lock().expect("exit slot").is_some();
            if exited || Instant::now() > deadline {
                return Err(EmbeddedError::NotReady {
                    seconds: READY_TIMEOUT.as_secs(),
                    log: log_path.display().to_string(),
                    tail: tail_of(log_path, 2000),
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Connection settings for one database of this cluster.
    pub fn connect_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(dbname)
            .application_name("warden");
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }

    /// The superuser's password (kept in `<data_dir>/pg-password`).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether this handle started the postmaster (and will stop it).
    pub fn owns_server(&self) -> bool {
        self.server.is_some()
    }

    /// Fast shutdown of a postmaster started here; waits for it to exit.
    pub fn stop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        self.stop_server(&server);
        // A random socket folder under /tmp is this start's alone.
        if !self.socket_dir.starts_with(&self.data_dir) {
            let _ = fs::remove_dir_all(&self.socket_dir);
        }
    }

    fn stop_server(&self, server: &OwnedServer) {
        for (signal, patience) in [
            (Signal::SIGINT, STOP_TIMEOUT),
            (Signal::SIGQUIT, Duration::from_secs(5)),
            (Signal::SIGKILL, Duration::from_secs(5)),
        ] {
            let (slot, exited) = &*server.exit;
            let guard = slot.lock().expect("exit slot");
            if guard.is_some() {
                return;
            }
            let _ = kill(server.pid, signal);
            let (guard, _) = exited
                .wait_timeout_while(guard, patience, |status| status.is_none())
                .expect("exit slot");
            if guard.is_some() {
                return;
            }
            tracing::warn!(?signal, "PostgreSQL did not stop in time; escalating");
        }
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(io_error(path))
}

/// The socket folder, created private to the cluster's OS user: `run/` in
/// the data folder, or, when that path is too long for a unix socket
/// (~107 bytes), a new folder under /tmp with a random name. That one is
/// created exclusively: a folder someone planted there is never taken over
/// (nor chowned); a second process finds the socket in the pid file.
fn prepare_socket_dir(data_dir: &Path, identity: Option<OsIdentity>) -> Result<PathBuf, EmbeddedError> {
    let inside = data_dir.join("run");
    if fits_a_socket(&inside) {
        prepare_private_dir(&inside, identity)?;
        return Ok(inside);
    }
    loop {
        let candidate = random_tmp_socket_dir();
        match fs::DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => {
                if let Some(identity) = identity {
                    identity.own(&candidate)?;
                }
                return Ok(candidate);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(io_error(&candidate)(error)),
        }
    }
}

fn fits_a_socket(dir: &Path) -> bool {
    dir.as_os_str().len() + "/.s.PGSQL.65535".len() < 100
}

/// `/tmp/warden-pg-<128 random bits>`: nobody can guess it in advance.
fn random_tmp_socket_dir() -> PathBuf {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    PathBuf::from(format!("/tmp/warden-pg-{}", hex::encode(bytes)))
}

/// A folder of warden's data folder only the cluster's OS user may enter.
fn prepare_private_dir(dir: &Path, identity: Option<OsIdentity>) -> Result<(), EmbeddedError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))?;
    if let Some(identity) = identity {
        identity.own(dir)?;
    }
    Ok(())
}

fn initdb(
    binaries: &PgBinaries,
    pgdata: &Path,
    identity: Option<OsIdentity>,
    durable: bool,
    password: &str,
) -> Result<(), EmbeddedError> {
    prepare_private_dir(pgdata, identity)?;
    // initdb runs as the cluster's user and reads the password from a
    // file: a copy only that user may read, next to the database folder
    // (which initdb wants empty), removed right after.
    let password_copy = pgdata.with_file_name(".initdb-password");
    let _ = fs::remove_file(&password_copy);
    write_private_file(&password_copy, password)?;
    if let Some(identity) = identity {
        identity.own(&password_copy)?;
    }
    let outcome = run_initdb(binaries, pgdata, identity, durable, &password_copy);
    let _ = fs::remove_file(&password_copy);
    outcome?;
    write_hba(pgdata, identity)
}

fn run_initdb(
    binaries: &PgBinaries,
    pgdata: &Path,
    identity: Option<OsIdentity>,
    durable: bool,
    password_file: &Path,
) -> Result<(), EmbeddedError> {
    let mut command = Command::new(binaries.tool("initdb"));
    command
        .arg("--pgdata")
        .arg(pgdata)
        .args([
            "--username",
            SUPERUSER,
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", password_file.display()))
        .arg("--no-instructions")
        // initdb complains when it cannot read its working directory.
        .current_dir(pgdata);
    if !durable {
        command.arg("--no-sync");
    }
    if let Some(identity) = identity {
        identity.apply(&mut command);
    }
    let output = command.output().map_err(|source| EmbeddedError::Command {
        action: format!("running {}", binaries.tool("initdb").display()),
        detail: source.to_string(),
    })?;
    if !output.status.success() {
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if identity.is_some() && detail.contains("ermission denied") {
            detail.push_str(
                "\nhint: warden runs as root, so PostgreSQL runs as an unprivileged user who must be \
                 able to reach the data folder; pick one outside /root (for example with --data-dir).",
            );
        }
        return Err(EmbeddedError::Command {
            action: format!("initdb of {}", pgdata.display()),
            detail,
        });
    }
    Ok(())
}

fn spawn_postmaster(
    binaries: &PgBinaries,
    pgdata: &Path,
    socket_dir: &Path,
    log_path: &Path,
    identity: Option<OsIdentity>,
    options: &ClusterOptions,
) -> Result<OwnedServer, EmbeddedError> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(io_error(log_path))?;
    let log_err = log.try_clone().map_err(io_error(log_path))?;

    let mut command = Command::new(binaries.tool("postgres"));
    command
        .arg("-D")
        .arg(pgdata)
        .arg("-k")
        .arg(socket_dir)
        .args(["-p", &DEFAULT_PORT.to_string()])
        .args(["-c", "listen_addresses="])
        .current_dir(pgdata)
        // Its own process group: a terminal's Ctrl-C reaches warden only,
        // and warden stops PostgreSQL after draining its requests.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if !options.durable {
        command.args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    }
    for (name, value) in &options.settings {
        command.arg("-c").arg(format!("{name}={value}"));
    }
    if let Some(identity) = identity {
        identity.apply(&mut command);
    }
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }

    // The supervisor thread spawns and waits for the postmaster. It lives
    // exactly as long as the postmaster, which is what PR_SET_PDEATHSIG
    // (tied to the spawning thread, not the process) needs.
    let exit: ExitSlot = Arc::new((Mutex::new(None), Condvar::new()));
    let (pid_tx, pid_rx) = mpsc::channel();
    let exit_for_thread = Arc::clone(&exit);
    thread::Builder::new()
        .name("postgres-supervisor".into())
        .spawn(move || {
            let status = match command.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(Pid::from_raw(child.id() as i32)));
                    child.wait()
                }
                Err(error) => {
                    let _ = pid_tx.send(Err(error.to_string()));
                    return;
                }
            };
            let (slot, exited) = &*exit_for_thread;
            *slot.lock().expect("exit slot") = Some(status);
            exited.notify_all();
        })
        .map_err(io_error(pgdata))?;
    let pid = pid_rx
        .recv()
        .map_err(|_| EmbeddedError::Command {
            action: "starting postgres".into(),
            detail: "supervisor thread ended before starting it".into(),
        })?
        .map_err(|detail| EmbeddedError::Command {
            action: format!("starting {}", binaries.tool("postgres").display()),
            detail,
        })?;
    Ok(OwnedServer { pid, exit })
}

/// The parts of `postmaster.pid` we need (see PostgreSQL's pidfile.h).
struct PidFile {
    pid: Pid,
    port: u16,
    socket_dir: PathBuf,
    ready: bool,
}

impl PidFile {
    fn read(pgdata: &Path) -> Option<Self> {
        let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        Some(PidFile {
            pid: Pid::from_raw(lines.first()?.trim().parse().ok()?),
            port: lines.get(3)?.trim().parse().ok()?,
            socket_dir: PathBuf::from(lines.get(4)?.trim()),
            // A hot standby (a replica) says "standby" once it accepts reads.
            ready: lines
                .get(7)
                .is_some_and(|status| matches!(status.trim(), "ready" | "standby")),
        })
    }
}

fn process_alive(pid: Pid) -> bool {
    match kill(pid, None) {
        Ok(()) => true,
        // Alive, but owned by another user (the cluster's OS user).
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn tail_of(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return "(no log)".into();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut tail = String::new();
    let _ = file.read_to_string(&mut tail);
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_data_folders_get_an_unguessable_private_socket_folder() {
        assert!(fits_a_socket(Path::new("/srv/warden/run")));
        let long = tempfile::tempdir().unwrap().path().join("x".repeat(120));
        let socket_dir = prepare_socket_dir(&long, None).unwrap();
        assert!(
            socket_dir.to_str().unwrap().starts_with("/tmp/warden-pg-"),
            "{socket_dir:?}"
        );
        assert!(socket_dir.as_os_str().len() < 60);
        assert_eq!(fs::metadata(&socket_dir).unwrap().permissions().mode() & 0o777, 0o700);
        // Another start gets another name: nothing to plant in advance.
        let again = prepare_socket_dir(&long, None).unwrap();
        assert_ne!(socket_dir, again);
        for dir in [socket_dir, again] {
            fs::remove_dir(dir).unwrap();
        }
    }

    #[test]
    fn missing_binaries_say_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let message = PgBinaries::locate_in(vec![empty.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains(&empty.path().display().to_string()), "{message}");
    }

    #[test]
    fn pid_file_status_line_decides_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let body = "4242\n/d\n1700000000\n5432\n/run\n\n  1234  5678\nready   \n";
        fs::write(dir.path().join("postmaster.pid"), body).unwrap();
        let pid_file = PidFile::read(dir.path()).unwrap();
        assert_eq!(pid_file.pid, Pid::from_raw(4242));
        assert_eq!(pid_file.port, 5432);
        assert_eq!(pid_file.socket_dir, Path::new("/run"));
        assert!(pid_file.ready);
        fs::write(dir.path().join("postmaster.pid"), body.replace("ready", "starting")).unwrap();
        assert!(!PidFile::read(dir.path()).unwrap().ready);
    }
}

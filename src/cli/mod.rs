//! The `warden` command line.

mod reconcile;

use std::io::BufRead;
use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;
use warden_events::user::{Role, UserOrigin};
use warden_events::{Actor, Metadata};

use crate::app::Core;
use crate::identity::accounts;
use crate::platform::config::Config;
use crate::platform::database_setup::{DatabaseHandle, Purpose};
use crate::platform::secrets::Secret;

#[derive(Parser)]
#[command(name = "warden", version, about = "Who may do what for a fleet of job runners")]
pub struct Cli {
    /// YAML config file [default: ./warden.yaml when it exists]
    #[arg(long, short, global = true, env = "WARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL (overrides database.url). Without any, warden runs
    /// its own PostgreSQL cluster in the data folder.
    #[arg(long, global = true, env = "WARDEN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Folder of the embedded PostgreSQL cluster (overrides database.data_dir).
    #[arg(long, global = true, env = "WARDEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP API (migrates and provisions users first).
    Serve {
        /// Address to listen on (overrides http.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage local accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Runner-host tools.
    #[command(subcommand)]
    Runner(RunnerCommand),
    /// Rebuild every read model from the log and swap it in; with
    /// --verify, rebuild aside and report differences (exit 1 if any).
    Replay {
        #[arg(long)]
        verify: bool,
    },
    /// Print the OpenAPI description of the HTTP API (JSON) and exit.
    Openapi,
    /// The warden instances alive now, their release and what each leads
    /// (JSON lines).
    Status,
    /// Groups and projects (docs/scopes.md), acting as an admin.
    #[command(subcommand)]
    Scope(ScopeCommand),
    /// LDAP directories.
    #[command(subcommand)]
    Ldap(LdapCommand),
    /// The server's own secrets.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit trail as JSON lines (filters combine), or a subcommand.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        #[command(flatten)]
        filters: AuditFilters,
    },
}

#[derive(clap::Args, Default)]
pub struct AuditFilters {
    /// A user or runner id, or a system component (e.g. job-reassignment).
    #[arg(long)]
    actor: Option<String>,
    /// A stream (runner-<id>) or a bare id.
    #[arg(long)]
    stream: Option<String>,
    /// An event type, e.g. RunnerInvalidated.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// From this time on (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Before this time (RFC 3339).
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Oldest first (default: newest first).
    #[arg(long)]
    oldest_first: bool,
    /// At most this many entries [default: all].
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Check every stream's hash chain; with --anchor, also the log up to an
    /// earlier anchor. Prints a JSON report, exits 1 when something is wrong.
    Verify {
        /// `<position>:<hex>` printed by an earlier verify, kept elsewhere.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// The state of a runner or user stream as of a time (time travel).
    State {
        /// runner-<id> or user-<id>
        #[arg(long)]
        stream: String,
        /// RFC 3339 time [default: now]
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// A new key signs access tokens from now on; the previous one still
    /// verifies the tokens it signed until they expire (JSON report).
    /// Serving instances take the rotated file within seconds. With
    /// several instances: `--stage` first, give every instance the file,
    /// then rotate.
    Rotate {
        /// Add the new key for verification only (it signs after the next
        /// `warden keys rotate`).
        #[arg(long)]
        stage: bool,
    },
}

#[derive(Subcommand)]
pub enum ScopeCommand {
    /// Every group and project (JSON lines).
    List,
    /// Create a group: `physics`, or `physics/theory` inside group physics.
    AddGroup { path: String },
    /// Create a project inside a group: `physics/lattice-qcd`.
    AddProject { path: String },
    /// Give a user a role in a scope (`group:<path>` or `project:<path>`).
    AddMember {
        scope: String,
        email: String,
        #[arg(long, value_enum, default_value_t = ScopeRoleArg::Member)]
        role: ScopeRoleArg,
    },
    /// Take a user's membership in a scope away.
    RemoveMember { scope: String, email: String },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ScopeRoleArg {
    Member,
    Manager,
}

#[derive(Subcommand)]
pub enum LdapCommand {
    /// Bring warden's users of the LDAP providers in line with their
    /// directories now (JSON report per provider).
    Sync {
        /// Only this provider [default: all].
        #[arg(long)]
        provider: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RunnerCommand {
    /// Make sure a runner host's config holds valid runner tokens (for
    /// systemd ExecStartPre). Exit codes: 0 done, 2 local set-up problem,
    /// 3 warden unreachable, 4 admin credentials refused, 1 other.
    Reconcile {
        /// warden's base URL, e.g. https://warden.example.org
        #[arg(long)]
        api_url: String,
        /// Folder with config.template, admin-token or admin-credentials,
        /// and runner-data.json (stateful mode).
        #[arg(long)]
        prefix: PathBuf,
        /// Keep no runner-data.json: find runners by host-name tag.
        #[arg(long)]
        stateless: bool,
        /// Runner types [default: runner-data.json's, else the template's fields]
        #[arg(long, value_delimiter = ',')]
        types: Option<Vec<String>>,
        /// Host name for tags and the template [default: this host's]
        #[arg(long)]
        hostname: Option<String>,
        /// Create the runners in a group or project (`group:<path>`,
        /// `project:<path>`) instead of as instance runners
        #[arg(long)]
        scope: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a local account. The password is read from WARDEN_USER_PASSWORD,
    /// or else from the first line of standard input.
    Add {
        email: String,
        #[arg(long, value_enum, default_value_t = RoleArg::User)]
        role: RoleArg,
    },
    /// Delete a user (their personal data becomes unreadable).
    Del { email: String },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    User,
    Support,
    Admin,
    /// A service account: no password, acts with API tokens only.
    Api,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::User => Role::User,
            RoleArg::Support => Role::Support,
            RoleArg::Admin => Role::Admin,
            RoleArg::Api => Role::Api,
        }
    }
}

impl Cli {
    fn load_config(&self) -> anyhow::Result<Config> {
        let default_file = PathBuf::from("warden.yaml");
        let path = self
            .config
            .clone()
            .or_else(|| default_file.is_file().then_some(default_file));
        let mut config = Config::load(path.as_deref())?;
        if let Some(url) = &self.database_url {
            config.database.url = Some(Secret::new(url.clone()));
            config.unresolved.retain(|u| u.field != "database.url");
        }
        if let Some(dir) = &self.data_dir {
            config.database.data_dir = dir.clone();
            config.unresolved.retain(|u| u.field != "database.data_dir");
        }
        // Each command needs only the configuration it uses: `serve` all
        // of it, `replay` only the database (not the admin's password).
        let needed: &[&str] = match &self.command {
            Command::Serve { .. } => &[""],
            Command::Ldap(_) => &["database", "ldap_providers"],
            _ => &["database"],
        };
        config.require(needed)?;
        Ok(config)
    }

    /// Runs the command; returns the process exit code.
    pub async fn run(self) -> anyhow::Result<u8> {
        if let Command::Runner(RunnerCommand::Reconcile { .. }) = &self.command {
            // A runner host's tool: no warden config or database needed.
            return Ok(self.reconcile().await);
        }
        if let Command::Openapi = &self.command {
            use utoipa::OpenApi;
            println!("{}", crate::http::routes::ApiDoc::openapi().to_pretty_json()?);
            return Ok(0);
        }
        let mut config = self.load_config()?;
        match self.command {
            Command::Serve { listen } => {
                if let Some(listen) = listen {
                    config.http.listen = listen;
                }
                serve(config).await?;
            }
            Command::Migrate => {
                let handle = DatabaseHandle::open(&config, Purpose::Maintenance).await?;
                let applied = crate::log::clock::migrate_and_align(&handle.db).await?;
                println!("applied {} migration(s)", applied.len());
                handle.close().await;
            }
            Command::User(command) => with_core(config, |core| user_command(core, command)).await?,
            Command::Scope(command) => with_core(config, |core| scope_command(core, command)).await?,
            Command::Ldap(LdapCommand::Sync { provider }) => {
                with_core(config, |core| async move {
                    let names: Vec<String> = match provider {
                        Some(name) => vec![name],
                        None => core.identity.ldap.names().cloned().collect(),
                    };
                    if names.is_empty() {
                        anyhow::bail!("no ldap_providers are configured");
                    }
                    for name in names {
                        let report = crate::identity::ldap::sync(&core.identity, &name).await?;
                        println!("{}", serde_json::to_string(&report)?);
                    }
                    Ok(())
                })
                .await?
            }
            Command::Runner(_) | Command::Openapi => unreachable!("handled above"),
            Command::Audit { action, filters } => return audit_command(config, action, filters).await,
            Command::Keys(KeysCommand::Rotate { stage }) => {
                if config.security.secret_key.is_some() {
                    bail!(
                        "the signing key comes from security.secret_key: set the new key there and the old one in \
                         security.previous_secret_keys until its tokens have expired"
                    );
                }
                let handle = DatabaseHandle::open(&config, Purpose::Maintenance).await?;
                crate::log::clock::migrate_and_align(&handle.db).await?;
                let session = config.security.session.max_age;
                // Retired keys go once every token they signed has expired:
                // access tokens, and session cookies (which may never expire).
                let longest = (!session.is_zero()).then(|| session.max(config.security.access_token_lifetime));
                let path = crate::platform::server_secrets::secrets_path(&config);
                let rotation = crate::platform::server_secrets::rotate(&handle.db, &path, stage, longest).await;
                handle.close().await;
                println!("{}", serde_json::to_string_pretty(&rotation?)?);
            }
            Command::Status => {
                let handle = DatabaseHandle::open(&config, Purpose::Maintenance).await?;
                let alive = crate::platform::instances::alive(&handle.db).await;
                handle.close().await;
                for instance in alive? {
                    println!("{}", serde_json::to_string(&instance)?);
                }
            }
            Command::Replay { verify } => {
                let handle = DatabaseHandle::open(&config, Purpose::Maintenance).await?;
                crate::log::clock::migrate_and_align(&handle.db).await?;
                let show_progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let report = crate::log::replay::run(&handle.db, verify, show_progress).await;
                handle.close().await;
                let report = report?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                let clean = report.differences.is_empty();
                return Ok(u8::from(!clean));
            }
        }
        Ok(0)
    }

    async fn reconcile(self) -> u8 {
        let Command::Runner(RunnerCommand::Reconcile {
            api_url,
            prefix,
            stateless,
            types,
            hostname,
            scope,
        }) = self.command
        else {
            unreachable!("only called for reconcile")
        };
        let hostname = hostname.unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        });
        let options = reconcile::Options {
            api_url,
            prefix,
            stateless,
            types,
            hostname,
            scope,
        };
        match reconcile::reconcile(&options).await {
            Ok(report) => {
                for (runner_type, (outcome, id)) in &report.outcomes {
                    let what = match outcome {
                        reconcile::Outcome::Valid => "token valid",
                        reconcile::Outcome::Created => "created a new runner",
                        reconcile::Outcome::TokenReset => "reset the token",
                    };
                    println!("{runner_type}: {what} (runner {id})");
                }
                let config = if report.config_written {
                    "rewritten"
                } else {
                    "unchanged"
                };
                println!("config.toml {config}");
                0
            }
            Err(error) => {
                eprintln!("warden-reconcile: {error}");
                error.exit_code()
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.http.listen.clone();
    let shutdown_timeout = config.http.shutdown_timeout;
    let listener = TcpListener::bind(&listen).with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let handle = DatabaseHandle::open(&config, Purpose::Serve).await?;
    let crate::http::Application { server, background, .. } =
        match crate::http::Application::build(config, handle.db.clone(), listener).await {
            Ok(application) => application,
            Err(error) => {
                handle.close().await;
                return Err(error);
            }
        };
    // Our own signal handling, in place before we say we are listening:
    // a SIGTERM right after start-up must still shut down gracefully.
    let stopper = server.handle();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let deadline = shutdown_timeout;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        // Whatever hangs (a database that does not answer), the process
        // ends by the deadline; the embedded PostgreSQL stops with it.
        std::thread::spawn(move || {
            std::thread::sleep(deadline);
            tracing::error!(
                ?deadline,
                "shutdown took longer than http.shutdown_timeout; exiting now"
            );
            std::process::exit(1);
        });
        stopper.stop(true).await;
    });
    tracing::info!("warden listening on http://{address}");
    let outcome = server.await;
    background.stop().await;
    handle.close().await;
    outcome.context("HTTP server failed")
}

/// Runs a one-off operation on the core (projectors running, so its
/// effects reach the read models before the process exits), never with a
/// serve-only background task.
async fn with_core<F, Fut>(config: Config, operation: F) -> anyhow::Result<()>
where
    F: FnOnce(Core) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let handle = DatabaseHandle::open(&config, Purpose::Maintenance).await?;
    let (core, background) = Core::start(config, handle.db.clone()).await?;
    let outcome = operation(core).await;
    background.stop().await;
    handle.close().await;
    outcome
}

fn operator_metadata() -> Metadata {
    Metadata {
        actor: Actor::CommandLine {
            os_user: std::env::var("USER").ok(),
        },
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        request_id: None,
        source_ip: None,
    }
}

/// The command line acts as an admin would (it holds the database).
async fn scope_command(core: Core, command: ScopeCommand) -> anyhow::Result<()> {
    use crate::domain::scope::{ScopeCommand as Change, ScopeKind};
    use crate::scopes::{self, Caller};
    let admin = Caller {
        user_id: Uuid::nil(),
        admin: true,
    };
    let metadata = operator_metadata();
    // `physics/lattice-qcd`: the last name, and the group it goes in.
    let split = |path: &str| -> anyhow::Result<(Option<crate::api::ScopeRef>, String)> {
        let path = path.trim().trim_matches('/');
        Ok(match path.rsplit_once('/') {
            Some((parent, name)) => (Some(format!("group:{parent}").parse()?), name.to_owned()),
            None => (None, path.to_owned()),
        })
    };
    let user = |email: String| {
        let core = &core;
        async move {
            let connection = core.db.get().await?;
            accounts::find_user_id_by_email(&connection, &email)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user has the address {email}"))
        }
    };
    let print = |scope: scopes::ScopeRecord| println!("{}", scope.reference());
    match command {
        ScopeCommand::List => {
            for listed in scopes::visible(&core.db, Uuid::nil(), true).await? {
                let scope = listed.scope;
                println!(
                    "{}",
                    serde_json::json!({"id": scope.id, "scope": scope.reference(), "archived": scope.archived, "runner_limit": scope.runner_limit})
                );
            }
        }
        ScopeCommand::AddGroup { path } => {
            let (parent, name) = split(&path)?;
            print(
                scopes::create(
                    &core.commands,
                    &core.db,
                    admin,
                    ScopeKind::Group,
                    &name,
                    parent.as_ref(),
                    &metadata,
                )
                .await?,
            );
        }
        ScopeCommand::AddProject { path } => {
            let (group, name) = split(&path)?;
            print(
                scopes::create(
                    &core.commands,
                    &core.db,
                    admin,
                    ScopeKind::Project,
                    &name,
                    group.as_ref(),
                    &metadata,
                )
                .await?,
            );
        }
        ScopeCommand::AddMember { scope, email, role } => {
            let role = match role {
                ScopeRoleArg::Member => warden_events::scope::ScopeRole::Member,
                ScopeRoleArg::Manager => warden_events::scope::ScopeRole::Manager,
            };
            let user_id = user(email).await?;
            print(
                scopes::add_member(
                    &core.commands,
                    &core.db,
                    admin,
                    &scope.parse()?,
                    user_id,
                    role,
                    &metadata,
                )
                .await?,
            );
        }
        ScopeCommand::RemoveMember { scope, email } => {
            let user_id = user(email).await?;
            let change = Change::RemoveMember {
                user_id,
                only_from: None,
            };
            print(scopes::change(&core.commands, &core.db, admin, &scope.parse()?, change, &metadata).await?);
        }
    }
    Ok(())
}

async fn user_command(core: Core, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { email, role } => {
            // A service account never logs in: its password is random and
            // shown to nobody.
            let password = match role {
                RoleArg::Api => {
                    crate::platform::secrets::Secret::new(crate::platform::secrets::tokens::generate("wdsa_").plain)
                }
                _ => read_password()?,
            };
            let id = accounts::add_local_user(
                &core.commands,
                &email,
                &password,
                role.into(),
                UserOrigin::CommandLine,
                &operator_metadata(),
            )
            .await?;
            println!("added user {id}");
        }
        UserCommand::Del { email } => {
            let connection = core.db.get().await?;
            let Some(id) = accounts::find_user_id_by_email(&connection, &email).await? else {
                bail!("no user has the email {email}");
            };
            drop(connection);
            accounts::delete_user_keeping_an_admin(&core.identity, id, &operator_metadata()).await?;
            println!("deleted user {id}");
        }
    }
    Ok(())
}

fn read_password() -> anyhow::Result<Secret> {
    if let Ok(password) = std::env::var("WARDEN_USER_PASSWORD") {
        return Ok(Secret::new(password));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password given: set WARDEN_USER_PASSWORD or pipe it on standard input");
    }
    Ok(Secret::new(password))
}

/// `warden audit ...`: reads the log only, needs no running projectors.
async fn audit_command(config: Config, action: Option<AuditAction>, filters: AuditFilters) -> anyhow::Result<u8> {
    let handle = DatabaseHandle::open(&config, Purpose::Maintenance).await?;
    crate::log::clock::migrate_and_align(&handle.db).await?;
    let connection = handle.db.get().await?;
    let code = match action {
        Some(AuditAction::Verify { anchor }) => {
            let report = crate::log::event_store::chain::verify(&connection, anchor.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            u8::from(!report.problems.is_empty())
        }
        Some(AuditAction::State { stream, at }) => {
            let stream = warden_events::StreamId::from_stored(stream);
            let at = at.unwrap_or_else(chrono::Utc::now);
            let state = crate::log::audit::state_at(&connection, &stream, at).await?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            0
        }
        None => {
            let mut query = crate::log::audit::AuditQuery {
                actor: filters.actor,
                stream: filters.stream,
                event_type: filters.event_type,
                since: filters.since,
                until: filters.until,
                cursor: None,
                oldest_first: filters.oldest_first,
                limit: crate::log::audit::MAX_PAGE,
            };
            let mut left = filters.limit.unwrap_or(u64::MAX);
            let mut out = std::io::stdout().lock();
            'pages: loop {
                let page = crate::log::audit::query(&connection, &query).await?;
                for entry in &page.entries {
                    if left == 0 {
                        break 'pages;
                    }
                    use std::io::Write;
                    writeln!(out, "{}", serde_json::to_string(entry)?)?;
                    left -= 1;
                }
                match page.next_cursor {
                    Some(cursor) => query.cursor = Some(cursor),
                    None => break,
                }
            }
            0
        }
    };
    drop(connection);
    handle.close().await;
    Ok(code)
}

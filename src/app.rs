//! The composition root: the one place that builds warden from its parts.
//!
//! Start-up has two stages:
//! - [`Core::start`]: what every command needs, one-shot CLI commands
//!   included: migrations, the event store, the projectors (so a command's
//!   effects reach the read models before the process exits), the command
//!   service, and the identity and fleet services (which start nothing).
//! - [`AppState::serve`]: what only `warden serve` runs on top: the token
//!   signing key, and the background tasks that act on their own (job
//!   dispatcher, re-assignment reaction, machine pruner, silent-session
//!   sweeper, periodic LDAP sync). A one-shot command never starts one of them.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fleet::reactions::JobReassignment;
use crate::fleet::Fleet;
use crate::identity::access_tokens::AccessTokens;
use crate::identity::ldap::LdapProviders;
use crate::identity::oidc::OidcProviders;
use crate::identity::throttle::Throttle;
use crate::identity::Identity;
use crate::log::commands::CommandService;
use crate::log::event_store::EventStore;
use crate::log::follower::{self, FollowerProgress, LogConsumer};
use crate::log::projection_runner::ProjectionRunner;
use crate::platform::config::Config;
use crate::platform::db::Database;
use crate::platform::replicas::ReadPools;
use crate::platform::server_secrets::{self, ServerSecrets};

/// How long start-up waits for the projectors to reach the end of the log.
const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Background tasks of a running instance.
pub struct Background {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Stops every task (projectors after their current batch).
    pub async fn stop(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What every command needs: the log, its projectors, and the services.
pub struct Core {
    pub config: Config,
    pub db: Database,
    /// The server's secrets (token keys, throttle key), from outside the
    /// database.
    pub secrets: ServerSecrets,
    pub commands: CommandService,
    /// The projectors following the log (behind the appends, which
    /// project their own events inline).
    pub projections: Arc<ProjectionRunner>,
    pub identity: Arc<Identity>,
    pub fleet: Arc<Fleet>,
}

impl Core {
    /// Migrates the database, starts the projectors and the append
    /// listener, and waits until the read models include the whole log.
    pub async fn start(config: Config, db: Database) -> anyhow::Result<(Core, Background)> {
        let applied = crate::log::clock::migrate_and_align(&db).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied database migrations");
        }
        if config.http.consistency_timeout.is_some() {
            tracing::warn!(
                "http.consistency_timeout is no longer used (commands update the read models in their own \
                 transaction); remove it from the configuration"
            );
        }
        // Before anything that needs them (the throttle here, token keys
        // when serving); moves them out of the database on first start.
        let secrets = ServerSecrets::load(&db, &config).await?;
        let store = EventStore::new(db.clone());
        // Read replicas see a commit once it is flushed, and a read on a
        // replica waits for every transaction the primary had completed
        // (see platform::replicas): with replicas, the projectors' commits
        // are flushed at once so that none keeps such a read waiting.
        let durable_commits = !config.database.replica_urls.is_empty();
        let projections = ProjectionRunner::new(store.clone(), warden_projections::all(), durable_commits);
        let cancel = CancellationToken::new();
        let mut tasks = projections.start(cancel.clone());
        tasks.push(store.spawn_append_listener(cancel.clone()));
        tasks.push(store.spawn_append_notifier(cancel.clone()));
        let background = Background { cancel, tasks };
        // Read models must not lag the log when the first request arrives
        // (after a crash the last projector batches may be missing).
        if let Err(error) = projections.catch_up(CATCH_UP_TIMEOUT).await {
            background.stop().await;
            return Err(error.into());
        }
        let commands = CommandService::new(store);
        let identity = Arc::new(Identity {
            db: db.clone(),
            commands: commands.clone(),
            security: config.security.clone(),
            ldap: LdapProviders::from_config(&config)?,
            oidc: OidcProviders::from_config(&config)?,
            throttle: Throttle::new(config.security.login_throttle.clone(), secrets.throttle_key.clone()),
        });
        let fleet = Arc::new(Fleet::new(
            db.clone(),
            commands.clone(),
            config.runners.clone(),
            config.jobs.clone(),
        ));
        let core = Core {
            config,
            db,
            secrets,
            commands,
            projections,
            identity,
            fleet,
        };
        Ok((core, background))
    }
}

/// Everything a serving instance needs (HTTP handlers take this).
pub struct AppState {
    pub config: Config,
    pub db: Database,
    pub commands: CommandService,
    pub identity: Arc<Identity>,
    pub fleet: Arc<Fleet>,
    pub access_tokens: Arc<AccessTokens>,
    /// Where admin, audit and time-travel reads go (replicas if any).
    pub reads: ReadPools,
    /// The log consumers this instance may lead.
    pub consumers: Consumers,
}

/// The log consumers of a serving instance: the projectors and the
/// re-assignment reaction.
#[derive(Clone)]
pub struct Consumers {
    projections: Arc<ProjectionRunner>,
    reaction: Arc<FollowerProgress>,
}

impl Consumers {
    /// The projectors, with their progress.
    pub fn projections(&self) -> &ProjectionRunner {
        &self.projections
    }

    /// The names of those this instance leads now.
    pub fn led_here(&self) -> Vec<String> {
        let mut leads: Vec<String> = self
            .projections
            .status()
            .into_iter()
            .filter(|projector| projector.leading_here)
            .map(|projector| projector.name.to_owned())
            .collect();
        if self.reaction.leading.load(std::sync::atomic::Ordering::SeqCst) {
            leads.push(crate::fleet::reactions::NAME.to_owned());
        }
        leads
    }
}

impl AppState {
    /// Loads the token signing key and starts the serve-only background
    /// tasks on top of `core`.
    pub async fn serve(core: Core, background: &mut Background) -> anyhow::Result<Arc<AppState>> {
        let access_tokens = Arc::new(AccessTokens::from_secrets(
            &core.secrets,
            core.config.security.access_token_lifetime,
        ));
        if let Some(path) = core.secrets.file.clone() {
            background.tasks.push(spawn_secrets_reload(
                path,
                Arc::clone(&access_tokens),
                background.cancel.clone(),
            ));
        }
        let database = &core.config.database;
        let replica_urls: Vec<String> = database
            .replica_urls
            .iter()
            .map(|url| url.expose().to_owned())
            .collect();
        let reads = ReadPools::from_urls(
            core.db.clone(),
            &replica_urls,
            database.max_connections,
            database.ca_file.as_deref(),
            database.replica_max_wait,
        )?;
        let cancel = background.cancel.clone();
        let fleet = &core.fleet;
        let reassignment: Arc<dyn LogConsumer> = Arc::new(JobReassignment {
            commands: core.commands.clone(),
            dispatcher: Arc::clone(&fleet.dispatcher),
            durable_commits: !core.config.database.replica_urls.is_empty(),
        });
        let reaction_progress = Arc::new(FollowerProgress::new());
        background.tasks.push(tokio::spawn(follower::follow(
            core.commands.store().clone(),
            reassignment,
            Arc::clone(&reaction_progress),
            cancel.clone(),
        )));
        let consumers = Consumers {
            projections: Arc::clone(&core.projections),
            reaction: reaction_progress,
        };
        background.tasks.push(spawn_instance_heartbeat(
            Arc::clone(fleet),
            consumers.clone(),
            cancel.clone(),
        ));
        background
            .tasks
            .push(fleet.dispatcher.spawn(Arc::clone(fleet), cancel.clone()));
        background
            .tasks
            .extend(Arc::clone(&fleet.heartbeat_cache).spawn_listener(core.db.clone(), cancel.clone()));
        background.tasks.push(crate::fleet::sessions::spawn_seen_flusher(
            Arc::clone(fleet),
            cancel.clone(),
        ));
        background
            .tasks
            .push(crate::fleet::machines::spawn_pruner(Arc::clone(fleet), cancel.clone()));
        background
            .tasks
            .push(crate::fleet::sweeper::spawn(Arc::clone(fleet), cancel.clone()));
        background.tasks.push(crate::fleet::machines::spawn_contact_sharing(
            Arc::clone(fleet),
            cancel.clone(),
        ));
        background.tasks.push(crate::log::consumers::spawn_stall_watch(
            core.db.clone(),
            core.config.http.stall_warning,
            cancel.clone(),
        ));
        background.tasks.extend(crate::identity::ldap::spawn_periodic_sync(
            Arc::clone(&core.identity),
            cancel,
        ));
        Ok(Arc::new(AppState {
            config: core.config,
            db: core.db,
            commands: core.commands,
            identity: core.identity,
            fleet: core.fleet,
            access_tokens,
            reads,
            consumers,
        }))
    }

    /// Core and serve-only tasks together: a serving instance.
    pub async fn start(config: Config, db: Database) -> anyhow::Result<(Arc<AppState>, Background)> {
        let (core, mut background) = Core::start(config, db).await?;
        match AppState::serve(core, &mut background).await {
            Ok(state) => Ok((state, background)),
            Err(error) => {
                background.stop().await;
                Err(error)
            }
        }
    }
}

/// Takes a rotated token key from the secrets file within
/// `server_secrets::RELOAD_EVERY`, without a restart.
fn spawn_secrets_reload(
    path: std::path::PathBuf,
    tokens: Arc<AccessTokens>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(server_secrets::RELOAD_EVERY) => {}
            }
            if let Some(secrets) = server_secrets::reload_if_changed(&path, &mut seen) {
                tokens.replace_keys(&secrets);
                tracing::info!(signing = %secrets.signing.id, "took the token keys of the rotated secrets file");
            }
        }
    })
}

/// Reports this instance to the registry (`platform::instances`) at once
/// and every few seconds, with the log consumers it leads, and gives the
/// runner rate limit this instance's share; removes it on a clean stop.
fn spawn_instance_heartbeat(fleet: Arc<Fleet>, consumers: Consumers, cancel: CancellationToken) -> JoinHandle<()> {
    use crate::platform::instances;
    tokio::spawn(async move {
        let db = fleet.db.clone();
        let me = fleet.instance.clone();
        loop {
            let leads = consumers.led_here();
            if let Err(error) = instances::heartbeat(&db, &me, &leads).await {
                tracing::debug!(%error, "instance heartbeat failed");
            }
            if let Ok(alive) = instances::alive(&db).await {
                fleet.set_instances_alive(alive.len().try_into().unwrap_or(u32::MAX));
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(instances::HEARTBEAT) => {}
            }
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let _ = crate::fleet::waiting_list::leave(&db, me.id).await;
            instances::leave(&db, &me).await
        })
        .await;
    })
}

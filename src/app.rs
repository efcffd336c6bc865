//! Everything a running warden needs, wired together once at start-up.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fleet::dispatcher::Dispatcher;
use crate::fleet::jobs::{InFlight, ProgressThrottle};
use crate::fleet::machines::MachinePresence;
use crate::fleet::rate_limit::RunnerRateLimit;
use crate::fleet::reactions::JobReassignment;
use crate::identity::access_tokens::AccessTokens;
use crate::identity::signing_key;
use crate::log::commands::CommandService;
use crate::log::event_store::EventStore;
use crate::log::follower::{self, FollowerProgress, LogConsumer};
use crate::log::projection_runner::ProjectionRunner;
use crate::platform::config::Config;
use crate::platform::db::Database;

/// How long start-up waits for the projectors to reach the end of the log.
const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

pub struct AppState {
    pub config: Config,
    pub db: Database,
    pub commands: CommandService,
    pub access_tokens: AccessTokens,
    pub dispatcher: Arc<Dispatcher>,
    pub presence: MachinePresence,
    pub progress: ProgressThrottle,
    pub assigning: InFlight,
    pub runner_rate_limit: RunnerRateLimit,
    pub ldap: crate::identity::ldap::LdapProviders,
    pub oidc: crate::identity::oidc::OidcProviders,
}

/// Background tasks of a running instance.
pub struct Background {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Stops the projectors after their current batch.
    pub async fn stop(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl AppState {
    /// Migrates the database, starts the projectors and the append
    /// listener, and loads the token signing key.
    pub async fn start(config: Config, db: Database) -> anyhow::Result<(Arc<AppState>, Background)> {
        let applied = db.migrate().await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied database migrations");
        }
        let store = EventStore::new(db.clone());
        let projections = ProjectionRunner::new(store.clone(), warden_projections::all());
        let cancel = CancellationToken::new();
        let mut tasks = projections.start(cancel.clone());
        tasks.push(store.spawn_append_listener(db.config().clone(), cancel.clone()));
        tasks.push(store.spawn_append_notifier(cancel.clone()));
        // Read models must not lag the log when the first request arrives
        // (after a crash the last projector batches may be missing).
        projections.catch_up(CATCH_UP_TIMEOUT).await?;
        let commands = CommandService::new(store.clone(), projections, config.http.consistency_timeout);
        let key = signing_key::load_or_create(&db, config.security.secret_key.as_ref().map(|k| k.expose())).await?;
        let access_tokens = AccessTokens::new(&key, config.security.access_token_lifetime);
        let dispatcher = Arc::new(Dispatcher::default());
        let reassignment: Arc<dyn LogConsumer> = Arc::new(JobReassignment {
            commands: commands.clone(),
            dispatcher: Arc::clone(&dispatcher),
        });
        tasks.push(tokio::spawn(follower::follow(
            store,
            reassignment,
            Arc::new(FollowerProgress::new()),
            cancel.clone(),
        )));
        let ldap = crate::identity::ldap::LdapProviders::from_config(&config)?;
        let state = Arc::new(AppState {
            runner_rate_limit: RunnerRateLimit::new(&config.runners.rate_limit),
            ldap,
            oidc: crate::identity::oidc::OidcProviders::from_config(&config)?,
            config,
            db,
            commands,
            access_tokens,
            dispatcher: Arc::clone(&dispatcher),
            presence: MachinePresence::default(),
            progress: ProgressThrottle::default(),
            assigning: InFlight::default(),
        });
        tasks.push(dispatcher.spawn(Arc::clone(&state), cancel.clone()));
        tasks.push(crate::fleet::machines::spawn_pruner(Arc::clone(&state), cancel.clone()));
        tasks.extend(crate::identity::ldap::spawn_periodic_sync(
            Arc::clone(&state),
            cancel.clone(),
        ));
        Ok((state, Background { cancel, tasks }))
    }
}

//! The runner fleet: runners and their tokens, runner machines, jobs and
//! their assignment, the two runner protocols (`project_w`, `native`), the
//! dispatcher, the re-assignment reaction, rate limits and the sweeper.
//! Uses `api`, `platform`, `domain` and `log`.

pub mod dispatcher;
pub mod files;
pub mod heartbeat_cache;
pub mod jobs;
pub mod machines;
pub mod native;
pub mod project_w;
pub mod rate_limit;
pub mod reactions;
pub mod runners;
pub mod sessions;
pub mod sweeper;
pub mod transcripts;
pub mod waiting_list;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::log::commands::CommandService;
use crate::platform::config::{JobsConfig, RunnersConfig};
use crate::platform::db::Database;
use crate::platform::instances::ThisInstance;

/// Where a call came from, as its transport saw it (request id, source
/// address): recorded in the metadata of the events the call causes.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
}

impl Origin {
    /// Metadata of an event caused by this call, made by `actor`.
    pub fn metadata_of(&self, actor: warden_events::Actor) -> warden_events::Metadata {
        warden_events::Metadata {
            actor,
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            request_id: self.request_id.clone(),
            source_ip: self.source_ip.clone(),
        }
    }

    /// Metadata of an event caused by this call of runner `runner_id`.
    pub fn metadata(&self, runner_id: uuid::Uuid) -> warden_events::Metadata {
        self.metadata_of(warden_events::Actor::Runner { runner_id })
    }
}

/// What the fleet's use cases work with: the database, the command
/// service, the runner settings, and this instance's in-memory state of
/// machines and assignments. Built once by the composition root
/// (`app.rs`); its background tasks are started only by `serve`.
pub struct Fleet {
    pub db: Database,
    pub commands: CommandService,
    pub config: RunnersConfig,
    pub jobs: JobsConfig,
    pub dispatcher: Arc<dispatcher::Dispatcher>,
    pub presence: machines::MachinePresence,
    pub progress: jobs::ProgressThrottle,
    pub assigning: jobs::InFlight,
    pub rate_limit: rate_limit::RunnerRateLimit,
    pub seen: sessions::SeenWrites,
    pub heartbeat_cache: Arc<heartbeat_cache::HeartbeatCache>,
    /// This process in the instance registry.
    pub instance: ThisInstance,
    /// Live instances, as the registry last said (1 until it has).
    alive_instances: AtomicU32,
}

impl Fleet {
    pub fn new(db: Database, commands: CommandService, config: RunnersConfig, jobs: JobsConfig) -> Fleet {
        Fleet {
            jobs,
            seen: sessions::SeenWrites::default(),
            heartbeat_cache: Arc::new(heartbeat_cache::HeartbeatCache::new(config.heartbeat_cache)),
            rate_limit: rate_limit::RunnerRateLimit::new(&config.rate_limit),
            db,
            commands,
            config,
            dispatcher: Arc::new(dispatcher::Dispatcher::default()),
            presence: machines::MachinePresence::default(),
            progress: jobs::ProgressThrottle::default(),
            assigning: jobs::InFlight::default(),
            instance: ThisInstance::new(),
            alive_instances: AtomicU32::new(1),
        }
    }

    /// How many instances serve (at least this one).
    pub fn instances_alive(&self) -> u32 {
        self.alive_instances.load(Ordering::Relaxed)
    }

    /// The registry counted `alive` instances: rate-limit shares follow.
    pub fn set_instances_alive(&self, alive: u32) {
        let alive = alive.max(1);
        self.alive_instances.store(alive, Ordering::Relaxed);
        self.rate_limit.set_instances(alive);
    }
}

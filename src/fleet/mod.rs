//! The runner fleet: runners and their tokens, runner machines, jobs and
//! their assignment, the dispatcher, the re-assignment reaction, rate
//! limits, and the runner-host tool `warden runner reconcile`. Uses
//! `platform`, `domain` and `log`.

pub mod dispatcher;
pub mod jobs;
pub mod machines;
pub mod rate_limit;
pub mod reactions;
pub mod reconcile;
pub mod runners;

use std::sync::Arc;

use crate::log::commands::CommandService;
use crate::platform::config::RunnersConfig;
use crate::platform::db::Database;

/// What the fleet's use cases work with: the database, the command
/// service, the runner settings, and this instance's in-memory state of
/// machines and assignments. Built once by the composition root
/// (`app.rs`); its background tasks are started only by `serve`.
pub struct Fleet {
    pub db: Database,
    pub commands: CommandService,
    pub config: RunnersConfig,
    pub dispatcher: Arc<dispatcher::Dispatcher>,
    pub presence: machines::MachinePresence,
    pub progress: jobs::ProgressThrottle,
    pub assigning: jobs::InFlight,
    pub rate_limit: rate_limit::RunnerRateLimit,
}

impl Fleet {
    pub fn new(db: Database, commands: CommandService, config: RunnersConfig) -> Fleet {
        Fleet {
            rate_limit: rate_limit::RunnerRateLimit::new(&config.rate_limit),
            db,
            commands,
            config,
            dispatcher: Arc::new(dispatcher::Dispatcher::default()),
            presence: machines::MachinePresence::default(),
            progress: jobs::ProgressThrottle::default(),
            assigning: jobs::InFlight::default(),
        }
    }
}

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

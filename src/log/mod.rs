//! The event log and what follows it: the store (append, read, no-skip
//! reader, hash chain, personal-data sealing, claims), the command service,
//! log followers and the projection runner, replay, and the audit trail.
//! Uses `platform` and `domain`.

pub mod audit;
pub mod clock;
pub mod commands;
pub mod consumers;
pub mod event_store;
pub mod follower;
pub mod projection_runner;
pub mod replay;
pub mod state_cache;

//! warden: decides who may do what for a fleet of job runners.
//!
//! An event-sourced service: commands ([`log::commands`]) are decided by
//! pure domain logic ([`domain`]), appended to the log
//! ([`log::event_store`]), and folded into read models by projectors
//! ([`log::projection_runner`], `warden-projections`). See
//! docs/architecture.md for the map of the folders and which may use which.

pub mod api;
pub mod app;
pub mod cli;
pub mod domain;
pub mod fleet;
pub mod http;
pub mod identity;
pub mod log;
pub mod platform;
pub mod queries;
pub mod scopes;

pub use warden_events as events;
pub use warden_projections as projections;

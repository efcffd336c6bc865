//! warden: decides who may do what for a fleet of job runners.
//!
//! An event-sourced service: commands ([`commands`]) are decided by pure
//! domain logic ([`domain`]), appended to the log ([`event_store`]), and
//! folded into read models by projectors ([`projection_runner`],
//! `warden-projections`). See docs/architecture.md for the map.

pub mod accounts;
pub mod admin_queries;
pub mod api_tokens;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod database_setup;
pub mod db;
pub mod dispatcher;
pub mod domain;
pub mod embedded_pg;
pub mod event_store;
pub mod failpoint;
pub mod http;
pub mod jobs;
pub mod ldap;
pub mod log_follower;
pub mod login_throttle;
pub mod machines;
pub mod oidc;
pub mod projection_runner;
pub mod rate_limit;
pub mod reactions;
pub mod reconcile;
pub mod replay;
pub mod runners;
pub mod secrets;

pub use warden_events as events;
pub use warden_projections as projections;

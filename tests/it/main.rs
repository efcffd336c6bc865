//! Integration tests: real PostgreSQL, real HTTP server, real binary.
#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod harness;

mod api_fuzzing;
mod audit;
mod console;
mod database_deadlines;
mod event_store;
mod ha;
mod http_api;
mod identity;
mod instances;
mod layering;
mod ldap;
mod ldap_server;
mod oidc;
mod oidc_server;
mod openapi;
mod operations;
mod processes;
mod project_w;
mod projections;
mod provisioning;
mod queries;
mod reconcile;
mod replay;
mod runners;
mod scopes;
mod security;
mod simulation;
mod three_instances;

//! What everything else stands on: configuration, the database pool and
//! migrations, the embedded PostgreSQL cluster, secrets, failpoints. Uses
//! nothing of warden's but the pure `domain`.

pub mod config;
pub mod database_setup;
pub mod db;
pub mod embedded_pg;
pub mod failpoint;
pub mod instances;
pub mod leases;
pub mod metrics;
pub mod replicas;
pub mod secrets;
pub mod server_secrets;
pub mod tls;

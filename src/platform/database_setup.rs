//! Picks the database: the configured URL, or warden's own embedded
//! PostgreSQL cluster under `database.data_dir`.

use crate::platform::config::Config;
use crate::platform::db::Database;
use crate::platform::embedded_pg::{ClusterOptions, EmbeddedCluster};

/// Name of warden's database inside an embedded cluster.
pub const EMBEDDED_DATABASE: &str = "warden";

/// The database, and the embedded cluster behind it if there is one
/// (stopped when this is dropped, if this process started it).
pub struct DatabaseHandle {
    pub db: Database,
    cluster: Option<EmbeddedCluster>,
}

/// What the database is opened for: its statement timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `warden serve`: requests' statement timeout.
    Serve,
    /// A one-shot command (replay, audit verify, ...): every statement
    /// with the maintenance timeout.
    Maintenance,
}

impl DatabaseHandle {
    pub async fn open(config: &Config, purpose: Purpose) -> anyhow::Result<Self> {
        let timeouts = match purpose {
            Purpose::Serve => config.database.timeouts(),
            Purpose::Maintenance => config.database.timeouts().for_maintenance(),
        };
        if let Some(url) = &config.database.url {
            let db = Database::from_url(
                url.expose(),
                config.database.max_connections,
                config.database.ca_file.as_deref(),
                timeouts,
            )?;
            if db.may_travel_in_clear() {
                tracing::warn!(
                    "database.url reaches PostgreSQL over the network without sslmode=require: \
                     passwords and personal data may travel unencrypted"
                );
            }
            return Ok(DatabaseHandle { db, cluster: None });
        }
        let options = ClusterOptions::durable(&config.database.data_dir);
        let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options)).await??;
        tracing::info!(
            data_dir = %cluster.data_dir().display(),
            socket = %cluster.socket_dir().display(),
            started_here = cluster.owns_server(),
            "using the embedded PostgreSQL cluster"
        );
        create_database_if_missing(&cluster.connect_config("postgres"), EMBEDDED_DATABASE).await?;
        let db = Database::with_timeouts(
            cluster.connect_config(EMBEDDED_DATABASE),
            config.database.max_connections,
            timeouts,
        )?;
        Ok(DatabaseHandle {
            db,
            cluster: Some(cluster),
        })
    }

    /// Stops an embedded cluster this process started (fast shutdown).
    pub async fn close(mut self) {
        if let Some(mut cluster) = self.cluster.take() {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
        }
    }
}

/// How long creating the embedded database may take.
const CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn create_database_if_missing(maintenance: &tokio_postgres::Config, name: &str) -> anyhow::Result<()> {
    tokio::time::timeout(CREATE_TIMEOUT, create(maintenance, name))
        .await
        .map_err(|_| anyhow::anyhow!("the database server did not create database {name} within {CREATE_TIMEOUT:?}"))?
}

async fn create(maintenance: &tokio_postgres::Config, name: &str) -> anyhow::Result<()> {
    let (client, connection) = maintenance.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        // Identifiers cannot be bound parameters; `name` is ours, not input.
        client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await?;
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

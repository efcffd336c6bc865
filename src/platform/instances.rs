//! The instance registry: every serving instance says every few seconds
//! that it is alive, which release it runs and what it leads; admins list
//! them (`GET /api/admins/instances`, `warden status`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::platform::db::{Database, DbError};

/// How often an instance reports itself.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
/// An instance not heard of for this long is gone (rows are removed after
/// an hour).
pub const ALIVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// This process, as the registry knows it.
#[derive(Clone, Debug)]
pub struct ThisInstance {
    pub id: Uuid,
    pub hostname: String,
    pub started_at: DateTime<Utc>,
}

impl ThisInstance {
    pub fn new() -> ThisInstance {
        ThisInstance {
            id: Uuid::now_v7(),
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|name| name.into_string().ok())
                .unwrap_or_else(|| "unknown".into()),
            started_at: Utc::now(),
        }
    }
}

impl Default for ThisInstance {
    fn default() -> Self {
        Self::new()
    }
}

/// One instance, for admins.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub id: Uuid,
    pub hostname: String,
    pub pid: i32,
    /// warden's version.
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Log consumers and periodic jobs this instance leads.
    pub leads: Vec<String>,
}

/// Records that `me` is alive and leads `leads`.
pub async fn heartbeat(db: &Database, me: &ThisInstance, leads: &[String]) -> Result<(), DbError> {
    let connection = db.get().await?;
    let upsert = connection
        .prepare_cached(
            "INSERT INTO instances (id, hostname, pid, version, started_at, last_seen_at, leads)
             VALUES ($1, $2, $3, $4, $5, now(), $6)
             ON CONFLICT (id) DO UPDATE SET last_seen_at = now(), leads = $6",
        )
        .await?;
    connection
        .execute(
            &upsert,
            &[
                &me.id,
                &me.hostname,
                &(std::process::id() as i32),
                &env!("CARGO_PKG_VERSION"),
                &me.started_at,
                &leads,
            ],
        )
        .await?;
    connection
        .execute(
            "DELETE FROM instances WHERE last_seen_at < now() - interval '1 hour'",
            &[],
        )
        .await?;
    Ok(())
}

/// Removes `me` (a clean stop).
pub async fn leave(db: &Database, me: &ThisInstance) -> Result<(), DbError> {
    db.get()
        .await?
        .execute("DELETE FROM instances WHERE id = $1", &[&me.id])
        .await?;
    Ok(())
}

/// The instances heard of within [`ALIVE_WITHIN`], oldest first.
pub async fn alive(db: &Database) -> Result<Vec<InstanceView>, DbError> {
    let connection = db.get().await?;
    let within = format!("{} seconds", ALIVE_WITHIN.as_secs());
    let rows = connection
        .query(
            "SELECT id, hostname, pid, version, started_at, last_seen_at, leads FROM instances
             WHERE last_seen_at > now() - $1::text::interval ORDER BY started_at, id",
            &[&within],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| InstanceView {
            id: row.get(0),
            hostname: row.get(1),
            pid: row.get(2),
            version: row.get(3),
            started_at: row.get(4),
            last_seen_at: row.get(5),
            leads: row.get(6),
        })
        .collect())
}

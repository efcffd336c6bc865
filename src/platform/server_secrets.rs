//! Random keys the server generates once and keeps in the database
//! (`server_secrets`), so every instance and every restart agrees on them.

use deadpool_postgres::GenericClient;
use rand::RngCore;

use crate::platform::db::{Database, DbError};

/// The 64-byte secret called `name`: created by the first instance that
/// asks (first writer wins), read by every later one.
pub async fn load_or_create(db: &Database, name: &str) -> Result<Vec<u8>, DbError> {
    let connection = db.get().await?;
    let mut fresh = vec![0u8; 64];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    connection
        .execute(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &fresh],
        )
        .await?;
    let row = connection
        .query_one("SELECT value FROM server_secrets WHERE name = $1", &[&name])
        .await?;
    Ok(row.get(0))
}

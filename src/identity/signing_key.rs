//! The key that signs access tokens: from the config, or generated once
//! and kept in the database so every instance (and every restart) agrees.

use deadpool_postgres::GenericClient;
use rand::RngCore;

use crate::platform::db::{Database, DbError};

const NAME: &str = "access_token_signing_key";

pub async fn load_or_create(db: &Database, configured: Option<&str>) -> Result<Vec<u8>, DbError> {
    if let Some(key) = configured {
        return Ok(key.as_bytes().to_vec());
    }
    let connection = db.get().await?;
    let mut fresh = vec![0u8; 64];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    // First writer wins; everyone then reads the same key.
    connection
        .execute(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&NAME, &fresh],
        )
        .await?;
    let row = connection
        .query_one("SELECT value FROM server_secrets WHERE name = $1", &[&NAME])
        .await?;
    Ok(row.get(0))
}

//! The key that signs access tokens: from the config, or generated once
//! and kept in the database so every instance (and every restart) agrees.

use crate::platform::db::{Database, DbError};
use crate::platform::server_secrets;

pub async fn load_or_create(db: &Database, configured: Option<&str>) -> Result<Vec<u8>, DbError> {
    match configured {
        Some(key) => Ok(key.as_bytes().to_vec()),
        None => server_secrets::load_or_create(db, "access_token_signing_key").await,
    }
}

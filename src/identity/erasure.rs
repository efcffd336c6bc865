//! What a user's deletion leaves in the database files, removed.
//!
//! Deleting a user destroys their key (crypto-shredding: everything sealed
//! in the log is unreadable from then on) and blanks their rows in the
//! read models. But PostgreSQL keeps the old row versions (dead tuples) and
//! index entries in its files until they are overwritten; a plain VACUUM
//! only marks that space free, it does not clear it. So right after a
//! deletion the small identity tables that held the key or readable
//! personal data are rewritten (`VACUUM FULL`: new files; the old ones are
//! truncated and unlinked), and the user's job payloads and file names in
//! the jobs read model are blanked. What remains in WAL and backups is
//! stated in docs/security.md.

use uuid::Uuid;

use crate::log::event_store::StoreError;
use crate::platform::db::Database;

/// Tables that held the user's key or readable personal data, rewritten
/// after a deletion. Each rewrite holds the table's exclusive lock for as
/// long as it copies the live rows: milliseconds for the identity tables,
/// longer for a big `jobs` table (dispatch waits meanwhile; deletions are
/// rare). `file_chunks` (file contents) is not rewritten: see
/// docs/security.md.
pub const REWRITTEN_TABLES: [&str; 6] = ["pii_keys", "users", "api_tokens", "unique_claims", "files", "jobs"];

/// Blanks the deleted `user_id`'s personal data in the jobs read model
/// (what a rebuild would write: their sealed payloads, file names, results
/// and progress messages are forgotten), then rewrites [`REWRITTEN_TABLES`] so no dead row keeps a
/// copy.
pub async fn scrub_after_deletion(db: &Database, user_id: Uuid) -> Result<(), StoreError> {
    let connection = db.get().await?;
    connection
        .execute(
            "UPDATE jobs SET payload = 'null'::jsonb, input = input - 'name', result = 'null'::jsonb, progress_message = NULL
             WHERE submitted_by = $1",
            &[&user_id],
        )
        .await?;
    drop(connection);
    // Never inside a transaction; two deletions at once simply rewrite
    // twice. A big jobs table may take longer than a request's statement
    // timeout: a connection of its own with the maintenance timeout.
    // (One statement per call: several would run as one transaction.)
    let maintenance = db.dedicated(db.timeouts().for_maintenance()).await?;
    maintenance
        .batch_execute(&format!("VACUUM (FULL) {}", REWRITTEN_TABLES.join(", ")))
        .await
        .map_err(crate::platform::db::DbError::from)?;
    Ok(())
}

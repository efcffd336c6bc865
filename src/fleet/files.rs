//! Job files: a user's uploaded input (a Project-W job's audio or video)
//! and a job's results (transcripts), kept in PostgreSQL in chunks of
//! [`CHUNK`] bytes, streamed in and out (never held whole in memory). The
//! log records only a [`FileRef`]: id, SHA-256, size, media type and name.
//!
//! Every chunk is written in a transaction of its own: a long upload must
//! not hold a writing transaction open (that would hold the log's safe
//! point, and every projector, back). A file becomes visible when its last
//! chunk is in (`complete`); uploads that never finish are removed by
//! [`remove_abandoned`].

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warden_events::job::FileRef;

use crate::log::event_store::StoreError;
use crate::platform::db::Database;

/// Bytes per stored chunk.
pub const CHUNK: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the upload broke off: {0}")]
    Upload(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for FileError {
    fn from(error: tokio_postgres::Error) -> Self {
        FileError::Store(error.into())
    }
}

/// A stored file as `files` knows it.
#[derive(Clone, Debug)]
pub struct StoredFile {
    pub owner_id: Uuid,
    pub reference: FileRef,
}

/// Stores what `body` yields as a file of `owner`, at most `max_bytes`.
pub async fn store<S, E>(
    db: &Database,
    owner_id: Uuid,
    name: Option<String>,
    media_type: &str,
    mut body: S,
    max_bytes: u64,
) -> Result<FileRef, FileError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let file_id = Uuid::now_v7();
    let connection = db.get().await.map_err(StoreError::from)?;
    connection
        .execute(
            "INSERT INTO files (id, owner_id, name, media_type, size, sha256) VALUES ($1, $2, $3, $4, 0, '')",
            &[&file_id, &owner_id, &name, &media_type],
        )
        .await?;
    let insert = connection
        .prepare_cached("INSERT INTO file_chunks (file_id, seq, data) VALUES ($1, $2, $3)")
        .await?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut seq: i32 = 0;
    let mut pending = BytesMut::with_capacity(CHUNK);
    let outcome: Result<(), FileError> = async {
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| FileError::Upload(e.to_string()))?;
            size += piece.len() as u64;
            if size > max_bytes {
                return Err(FileError::TooLarge(max_bytes));
            }
            hasher.update(&piece);
            pending.extend_from_slice(&piece);
            while pending.len() >= CHUNK {
                let chunk = pending.split_to(CHUNK);
                connection.execute(&insert, &[&file_id, &seq, &chunk.as_ref()]).await?;
                seq += 1;
            }
        }
        if !pending.is_empty() || seq == 0 {
            connection
                .execute(&insert, &[&file_id, &seq, &pending.as_ref()])
                .await?;
        }
        Ok(())
    }
    .await;
    if let Err(error) = outcome {
        // Nothing of a broken or refused upload stays behind.
        connection
            .execute("DELETE FROM files WHERE id = $1", &[&file_id])
            .await?;
        return Err(error);
    }
    let sha256 = hex::encode(hasher.finalize());
    let size = size as i64;
    connection
        .execute(
            "UPDATE files SET size = $2, sha256 = $3, complete = true WHERE id = $1",
            &[&file_id, &size, &sha256],
        )
        .await?;
    Ok(FileRef {
        file_id,
        sha256,
        size,
        media_type: media_type.to_owned(),
        name,
    })
}

/// Stores bytes already in memory (results a runner sent).
pub async fn store_bytes(
    db: &Database,
    owner_id: Uuid,
    name: Option<String>,
    media_type: &str,
    bytes: Bytes,
) -> Result<FileRef, FileError> {
    let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
    store(db, owner_id, name, media_type, body, u64::MAX).await
}

/// A complete file, if it exists.
pub async fn find(db: &Database, file_id: Uuid) -> Result<Option<StoredFile>, StoreError> {
    let connection = db.get().await?;
    let row = connection
        .query_opt(
            "SELECT owner_id, sha256, size, media_type, name FROM files WHERE id = $1 AND complete",
            &[&file_id],
        )
        .await?;
    Ok(row.map(|row| StoredFile {
        owner_id: row.get(0),
        reference: FileRef {
            file_id,
            sha256: row.get(1),
            size: row.get(2),
            media_type: row.get(3),
            name: row.get(4),
        },
    }))
}

/// The file's bytes, chunk by chunk (one chunk in memory at a time).
pub fn read(db: Database, file_id: Uuid) -> impl Stream<Item = Result<Bytes, StoreError>> {
    futures_util::stream::try_unfold((db, 0i32), move |(db, seq)| async move {
        let connection = db.get().await?;
        let select = connection
            .prepare_cached("SELECT data FROM file_chunks WHERE file_id = $1 AND seq = $2")
            .await?;
        let row = connection.query_opt(&select, &[&file_id, &seq]).await?;
        drop(connection);
        Ok(row.map(|row| (Bytes::from(row.get::<_, Vec<u8>>(0)), (db, seq + 1))))
    })
}

/// Removes uploads that never finished (older than an hour).
pub async fn remove_abandoned(db: &Database) -> Result<u64, StoreError> {
    let connection = db.get().await?;
    Ok(connection
        .execute(
            "DELETE FROM files WHERE NOT complete AND created_at < now() - interval '1 hour'",
            &[],
        )
        .await?)
}

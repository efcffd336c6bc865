//! Job files: a user's uploaded input (a Project-W job's audio or video)
//! and a job's results (transcripts), kept in PostgreSQL in chunks of
//! [`CHUNK`] bytes, streamed in and out (never held whole in memory). The
//! log records only a [`FileRef`]: id, SHA-256, size, media type and name.
//!
//! No pooled connection waits for a client: a file's bytes are buffered
//! up to a chunk, and each chunk is written in a short transaction of its
//! own (a long upload must not hold a connection, nor a writing
//! transaction, which would hold the log's safe point back). A file
//! becomes visible when its last chunk is in (`complete`).
//!
//! Limits, checked before the work they guard: a user's uploads in
//! progress (`jobs.max_concurrent_uploads`) and stored bytes
//! (`jobs.max_user_bytes`, results included: they are the user's too, but
//! a runner's result is never refused for it), a file's size, and how
//! long a client may keep an upload open without sending
//! (`jobs.upload_idle_timeout`) or in all (`jobs.upload_deadline`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warden_events::job::FileRef;

use crate::domain::job::MachineRef;
use crate::log::event_store::StoreError;
use crate::platform::config::JobsConfig;
use crate::platform::db::{advisory_key, Database, DbError};

/// Bytes per stored chunk.
pub const CHUNK: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the upload broke off: {0}")]
    Upload(String),
    #[error("nothing arrived for {0:?}; the upload is given up")]
    Idle(Duration),
    #[error("the upload took longer than {0:?}")]
    Deadline(Duration),
    #[error("at most {0} uploads of one user may be in progress at once; finish or cancel one first")]
    TooManyUploads(u32),
    #[error("the files of this user would take more than jobs.max_user_bytes ({0} bytes); delete some first")]
    QuotaExceeded(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for FileError {
    fn from(error: tokio_postgres::Error) -> Self {
        FileError::Store(error.into())
    }
}

impl From<DbError> for FileError {
    fn from(error: DbError) -> Self {
        FileError::Store(error.into())
    }
}

/// A stored file as `files` knows it.
#[derive(Clone, Debug)]
pub struct StoredFile {
    pub owner_id: Uuid,
    /// For a job's result: the job and the machine that stored it.
    pub job_id: Option<Uuid>,
    pub machine_id: Option<Uuid>,
    pub reference: FileRef,
}

/// What a new file is.
#[derive(Clone, Copy, Debug)]
pub enum Origin {
    /// A user's upload, within the user's limits.
    Upload,
    /// A result a machine sent for a job (stored for the job's submitter).
    Result { job_id: Uuid, machine: MachineRef },
}

/// The upload limits (`jobs.*`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_user_bytes: u64,
    pub max_concurrent_uploads: u32,
    pub idle_timeout: Duration,
    pub deadline: Duration,
}

impl Limits {
    pub fn of(config: &JobsConfig) -> Limits {
        Limits {
            max_file_bytes: config.max_file_bytes,
            max_user_bytes: config.max_user_bytes,
            max_concurrent_uploads: config.max_concurrent_uploads,
            idle_timeout: config.upload_idle_timeout,
            deadline: config.upload_deadline,
        }
    }
}

/// Serialises the checks and writes of one user's files (the limits hold
/// under parallel uploads, on every instance).
fn user_key(owner_id: Uuid) -> i64 {
    advisory_key(&format!("files:{owner_id}"))
}

/// A file being written: bytes go in with [`NewFile::write`], and out to
/// the database a chunk at a time.
pub struct NewFile {
    db: Database,
    id: Uuid,
    owner_id: Uuid,
    name: Option<String>,
    media_type: String,
    origin: Origin,
    limits: Limits,
    hasher: Sha256,
    size: u64,
    seq: i32,
    pending: BytesMut,
}

impl NewFile {
    /// Registers a new file, unless it would break the owner's limits: too
    /// many uploads in progress, or (with its `declared` size, when known)
    /// more stored bytes than allowed. Uploads abandoned longer than the
    /// idle timeout ago do not count.
    pub async fn begin(
        db: &Database,
        owner_id: Uuid,
        name: Option<String>,
        media_type: &str,
        origin: Origin,
        limits: Limits,
        declared: Option<u64>,
    ) -> Result<NewFile, FileError> {
        if declared.is_some_and(|size| size > limits.max_file_bytes) {
            return Err(FileError::TooLarge(limits.max_file_bytes));
        }
        let id = Uuid::now_v7();
        let (job_id, machine_id) = match origin {
            Origin::Upload => (None, None),
            Origin::Result { job_id, machine } => (Some(job_id), Some(machine.machine_id)),
        };
        let mut connection = db.get().await?;
        let tx = connection.transaction().await?;
        if let Origin::Upload = origin {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&user_key(owner_id)])
                .await?;
            let row = tx
                .query_one(
                    "SELECT count(*) FILTER (WHERE NOT complete AND job_id IS NULL),
                            coalesce(sum(size), 0)::bigint
                     FROM files
                     WHERE owner_id = $1 AND (complete OR last_written_at > now() - make_interval(secs => $2))",
                    &[&owner_id, &limits.idle_timeout.as_secs_f64()],
                )
                .await?;
            let (in_progress, stored): (i64, i64) = (row.get(0), row.get(1));
            if in_progress >= i64::from(limits.max_concurrent_uploads) {
                return Err(FileError::TooManyUploads(limits.max_concurrent_uploads));
            }
            let stored = stored.max(0) as u64;
            if stored + declared.unwrap_or(0) > limits.max_user_bytes || stored >= limits.max_user_bytes {
                return Err(FileError::QuotaExceeded(limits.max_user_bytes));
            }
        }
        tx.execute(
            "INSERT INTO files (id, owner_id, name, media_type, size, sha256, job_id, machine_id)
             VALUES ($1, $2, $3, $4, 0, '', $5, $6)",
            &[&id, &owner_id, &name, &media_type, &job_id, &machine_id],
        )
        .await?;
        tx.commit().await?;
        Ok(NewFile {
            db: db.clone(),
            id,
            owner_id,
            name,
            media_type: media_type.to_owned(),
            origin,
            limits,
            hasher: Sha256::new(),
            size: 0,
            seq: 0,
            pending: BytesMut::with_capacity(CHUNK),
        })
    }

    /// Takes `bytes`; every full chunk is written out.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        let max = match self.origin {
            Origin::Upload => self.limits.max_file_bytes,
            Origin::Result { .. } => u64::MAX,
        };
        self.size += bytes.len() as u64;
        if self.size > max {
            return Err(FileError::TooLarge(max));
        }
        self.hasher.update(bytes);
        self.pending.extend_from_slice(bytes);
        while self.pending.len() >= CHUNK {
            let chunk = self.pending.split_to(CHUNK).freeze();
            self.store_chunk(chunk, false).await?;
        }
        Ok(())
    }

    /// One chunk in a short transaction of its own (the user's lock, the
    /// quota, the chunk, the file's size); `last` also completes the file.
    async fn store_chunk(&mut self, chunk: Bytes, last: bool) -> Result<(), FileError> {
        let mut connection = self.db.get().await?;
        let tx = connection.transaction().await?;
        if let Origin::Upload = self.origin {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&user_key(self.owner_id)])
                .await?;
            let stored: i64 = tx
                .query_one(
                    "SELECT coalesce(sum(size), 0)::bigint FROM files
                     WHERE owner_id = $1 AND (complete OR last_written_at > now() - make_interval(secs => $2))",
                    &[&self.owner_id, &self.limits.idle_timeout.as_secs_f64()],
                )
                .await?
                .get(0);
            if stored.max(0) as u64 + chunk.len() as u64 > self.limits.max_user_bytes {
                return Err(FileError::QuotaExceeded(self.limits.max_user_bytes));
            }
        }
        // An empty last chunk only for an empty file.
        if !chunk.is_empty() || self.seq == 0 {
            let insert = tx
                .prepare_cached("INSERT INTO file_chunks (file_id, seq, data) VALUES ($1, $2, $3)")
                .await?;
            tx.execute(&insert, &[&self.id, &self.seq, &chunk.as_ref()]).await?;
        }
        let length = chunk.len() as i64;
        if last {
            let sha256 = hex::encode(self.hasher.clone().finalize());
            tx.execute(
                "UPDATE files SET size = size + $2, sha256 = $3, complete = true, last_written_at = now() WHERE id = $1",
                &[&self.id, &length, &sha256],
            )
            .await?;
        } else {
            tx.execute(
                "UPDATE files SET size = size + $2, last_written_at = now() WHERE id = $1",
                &[&self.id, &length],
            )
            .await?;
        }
        tx.commit().await?;
        self.seq += 1;
        Ok(())
    }

    /// Writes what is left and makes the file visible.
    pub async fn finish(mut self) -> Result<FileRef, FileError> {
        let rest = std::mem::take(&mut self.pending).freeze();
        self.store_chunk(rest, true).await?;
        Ok(FileRef {
            file_id: self.id,
            sha256: hex::encode(self.hasher.finalize()),
            size: self.size as i64,
            media_type: self.media_type,
            name: self.name,
        })
    }

    /// Removes what was written (a broken or refused upload leaves
    /// nothing behind; if even that fails, the sweeper removes it).
    pub async fn abandon(self) {
        remove_file(&self.db, self.id).await;
    }

    pub fn id(&self) -> Uuid {
        self.id
    }
}

/// Removes a file (best effort: what is left unfinished, the sweeper
/// removes).
pub async fn remove_file(db: &Database, file_id: Uuid) {
    let removed = async {
        db.get()
            .await?
            .execute("DELETE FROM files WHERE id = $1", &[&file_id])
            .await?;
        Ok::<_, FileError>(())
    };
    if let Err(error) = removed.await {
        tracing::warn!(%error, %file_id, "could not remove an unfinished file; the sweeper will");
    }
}

/// Reads `body` within the idle timeout and the deadline of `limits`.
pub struct TimedBody<S> {
    body: S,
    idle: Duration,
    deadline: tokio::time::Instant,
    overall: Duration,
}

impl<S, E> TimedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(body: S, limits: &Limits) -> Self {
        TimedBody {
            body,
            idle: limits.idle_timeout,
            deadline: tokio::time::Instant::now() + limits.deadline,
            overall: limits.deadline,
        }
    }

    /// The next piece of the body, `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FileError> {
        let wait = self
            .idle
            .min(self.deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, self.body.next()).await {
            Ok(Some(Ok(piece))) => Ok(Some(piece)),
            Ok(Some(Err(error))) => Err(FileError::Upload(error.to_string())),
            Ok(None) => Ok(None),
            Err(_) if tokio::time::Instant::now() >= self.deadline => Err(FileError::Deadline(self.overall)),
            Err(_) => Err(FileError::Idle(self.idle)),
        }
    }
}

/// Stores what `body` yields as a file of `owner` (see the module).
#[allow(clippy::too_many_arguments)]
pub async fn store<S, E>(
    db: &Database,
    owner_id: Uuid,
    name: Option<String>,
    media_type: &str,
    body: S,
    limits: Limits,
    declared: Option<u64>,
) -> Result<FileRef, FileError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut file = NewFile::begin(db, owner_id, name, media_type, Origin::Upload, limits, declared).await?;
    let mut body = TimedBody::new(body, &limits);
    let written = async {
        while let Some(piece) = body.next().await? {
            file.write(&piece).await?;
        }
        Ok::<_, FileError>(())
    }
    .await;
    match written {
        Ok(()) => match file.finish().await {
            Ok(stored) => Ok(stored),
            Err(error) => Err(error),
        },
        Err(error) => {
            file.abandon().await;
            Err(error)
        }
    }
}

/// A complete file, if it exists.
pub async fn find(db: &Database, file_id: Uuid) -> Result<Option<StoredFile>, StoreError> {
    let connection = db.get().await?;
    let row = connection
        .query_opt(
            "SELECT owner_id, sha256, size, media_type, name, job_id, machine_id FROM files WHERE id = $1 AND complete",
            &[&file_id],
        )
        .await?;
    Ok(row.map(|row| StoredFile {
        owner_id: row.get(0),
        job_id: row.get(5),
        machine_id: row.get(6),
        reference: FileRef {
            file_id,
            sha256: row.get(1),
            size: row.get(2),
            media_type: row.get(3),
            name: row.get(4),
        },
    }))
}

/// The files a result names (`transcript.<format>.file_id`, what
/// downloads follow) that were not stored for `job_id` by `machine`: a
/// result may name only its own job's files.
pub async fn foreign_references(
    db: &Database,
    job_id: Uuid,
    machine: MachineRef,
    result: &serde_json::Value,
) -> Result<Vec<Uuid>, StoreError> {
    let named: Vec<Uuid> = result
        .get("transcript")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flat_map(|formats| formats.values())
        .filter_map(|file| file.get("file_id"))
        .filter_map(|id| id.as_str().and_then(|id| id.parse().ok()))
        .collect();
    let mut foreign = Vec::new();
    for file_id in named {
        match find(db, file_id).await? {
            Some(file) if file.job_id == Some(job_id) && file.machine_id == Some(machine.machine_id) => {}
            _ => foreign.push(file_id),
        }
    }
    Ok(foreign)
}

/// Why a file was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("no such file of yours")]
    NotFound,
    #[error("a job that is not finished uses this file")]
    InUse,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Deletes a file of `owner_id` (any, for an admin), unless an unfinished
/// job uses it as its input.
pub async fn delete(db: &Database, file_id: Uuid, owner_id: Uuid, admin: bool) -> Result<(), DeleteError> {
    let connection = db.get().await.map_err(StoreError::from)?;
    let row = connection
        .query_opt(
            "SELECT owner_id, EXISTS (SELECT 1 FROM jobs WHERE input->>'file_id' = $2
                                      AND status IN ('queued', 'assigned'))
             FROM files WHERE id = $1",
            &[&file_id, &file_id.to_string()],
        )
        .await
        .map_err(StoreError::from)?;
    let Some(row) = row else {
        return Err(DeleteError::NotFound);
    };
    let (owner, in_use): (Uuid, bool) = (row.get(0), row.get(1));
    if owner != owner_id && !admin {
        return Err(DeleteError::NotFound);
    }
    if in_use {
        return Err(DeleteError::InUse);
    }
    connection
        .execute("DELETE FROM files WHERE id = $1", &[&file_id])
        .await
        .map_err(StoreError::from)?;
    Ok(())
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

/// Removes files never finished whose writer has sent nothing for an hour
/// (a crashed instance, an upload given up without clean-up).
pub async fn remove_abandoned(db: &Database) -> Result<u64, StoreError> {
    let connection = db.get().await?;
    Ok(connection
        .execute(
            "DELETE FROM files WHERE NOT complete AND last_written_at < now() - interval '1 hour'",
            &[],
        )
        .await?)
}

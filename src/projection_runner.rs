//! Runs the projectors: follows the log, applies events to the read
//! models and moves each projector's checkpoint in the same transaction.
//!
//! Each projector runs in at most one instance at a time: its task holds a
//! session-level advisory lock on a connection of its own, and other
//! instances retry until the holder goes away. Commands wait on
//! [`ProjectionRunner::wait_for`] until every projector has passed their
//! events, which makes reads (token checks above all) read-your-writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use warden_events::{Event, LogCursor};
use warden_projections::Projection;

use crate::db::Connection;
use crate::event_store::{self, EventStore, StoreError};

const BATCH_SIZE: i64 = 500;
/// Upper bound of the idle poll; appends by this process wake the
/// projectors at once, other instances' appends arrive through LISTEN.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// First retry after a wake-up that found nothing readable yet (an older
/// transaction still in flight holds the safe point back).
const BLOCKED_POLL: Duration = Duration::from_millis(2);
const LEADER_RETRY: Duration = Duration::from_secs(1);
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("read models did not catch up within {waited:?} (projector `{projection}` is behind); the change is recorded and will apply once it does")]
pub struct ProjectionLag {
    pub projection: &'static str,
    pub waited: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lag(#[from] ProjectionLag),
}

struct Projector {
    projection: Box<dyn Projection>,
    progress: watch::Sender<LogCursor>,
    leading: AtomicBool,
}

/// Progress of one projector, for health checks.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProjectorStatus {
    pub name: &'static str,
    pub checkpoint: LogCursor,
    pub leading_here: bool,
}

pub struct ProjectionRunner {
    store: EventStore,
    projectors: Vec<Arc<Projector>>,
}

impl ProjectionRunner {
    pub fn new(store: EventStore, projections: Vec<Box<dyn Projection>>) -> Arc<Self> {
        let projectors = projections
            .into_iter()
            .map(|projection| {
                Arc::new(Projector {
                    projection,
                    progress: watch::channel(LogCursor::START).0,
                    leading: AtomicBool::new(false),
                })
            })
            .collect();
        Arc::new(ProjectionRunner { store, projectors })
    }

    /// Starts one task per projector; they stop when `cancel` fires.
    pub fn start(self: &Arc<Self>, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        self.projectors
            .iter()
            .map(|projector| {
                let runner = Arc::clone(self);
                let projector = Arc::clone(projector);
                let cancel = cancel.clone();
                tokio::spawn(async move { runner.run(projector, cancel).await })
            })
            .collect()
    }

    async fn run(&self, projector: Arc<Projector>, cancel: CancellationToken) {
        let name = projector.projection.name();
        while !cancel.is_cancelled() {
            let outcome = self.lead(&projector, &cancel).await;
            projector.leading.store(false, Ordering::SeqCst);
            if let Err(error) = outcome {
                tracing::error!(projection = name, %error, "projector failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = sleep(ERROR_BACKOFF) => {}
                }
            }
        }
    }

    /// Becomes the leader of `projector` and projects until cancelled or
    /// an error; the lock dies with the connection either way.
    async fn lead(&self, projector: &Projector, cancel: &CancellationToken) -> Result<(), StoreError> {
        let name = projector.projection.name();
        let mut connection = SessionConnection(Some(self.store.database().get().await?));
        let key = advisory_key(name);
        loop {
            let row = connection
                .get()
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await?;
            if row.get::<_, bool>(0) {
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = sleep(LEADER_RETRY) => {}
            }
        }
        let mut cursor = load_checkpoint(connection.get(), name).await?;
        projector.progress.send_replace(cursor);
        projector.leading.store(true, Ordering::SeqCst);
        tracing::debug!(projection = name, ?cursor, "projector leading");

        let mut appends = self.store.subscribe_appends();
        let mut idle_poll = BLOCKED_POLL;
        loop {
            if let Some(next) = apply_batch(connection.get_mut(), projector.projection.as_ref(), cursor).await? {
                cursor = next;
                projector.progress.send_replace(cursor);
                idle_poll = BLOCKED_POLL;
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = appends.changed() => idle_poll = BLOCKED_POLL,
                _ = sleep(idle_poll) => idle_poll = (idle_poll * 2).min(IDLE_POLL),
            }
        }
    }

    /// Waits until every projector has applied everything up to `target`.
    pub async fn wait_for(&self, target: LogCursor, timeout: Duration) -> Result<(), ProjectionLag> {
        self.wait_for_projectors(target, timeout, |_| true).await
    }

    /// Waits until the projectors that handle any of `events` have applied
    /// everything up to `target` (read-your-writes for those read models).
    pub async fn wait_for_events(
        &self,
        target: LogCursor,
        events: &[Event],
        timeout: Duration,
    ) -> Result<(), ProjectionLag> {
        self.wait_for_projectors(target, timeout, |projection| {
            events.iter().any(|e| projection.handles(e))
        })
        .await
    }

    async fn wait_for_projectors(
        &self,
        target: LogCursor,
        timeout: Duration,
        concerned: impl Fn(&dyn Projection) -> bool,
    ) -> Result<(), ProjectionLag> {
        let deadline = Instant::now() + timeout;
        for projector in self.projectors.iter().filter(|p| concerned(p.projection.as_ref())) {
            let mut progress = projector.progress.subscribe();
            loop {
                if *progress.borrow_and_update() >= target {
                    break;
                }
                // Led by another instance: its progress is only in the table.
                if !projector.leading.load(Ordering::SeqCst) {
                    if let Ok(connection) = self.store.database().get().await {
                        let name = projector.projection.name();
                        if load_checkpoint(&connection, name).await.is_ok_and(|c| c >= target) {
                            break;
                        }
                    }
                }
                let lag = ProjectionLag {
                    projection: projector.projection.name(),
                    waited: timeout,
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return Err(lag),
                    _ = progress.changed() => {}
                    _ = sleep(Duration::from_millis(10)) => {}
                }
            }
        }
        Ok(())
    }

    /// Waits until every projector has reached the end of the log as it
    /// is now. Run before serving, so that after a crash no request is
    /// answered from read models that lag the log.
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), CatchUpError> {
        let connection = self.store.database().get().await.map_err(StoreError::from)?;
        let head = connection
            .query_opt(
                "SELECT transaction_id, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(StoreError::from)?;
        drop(connection);
        let Some(head) = head else { return Ok(()) };
        let head = LogCursor {
            transaction_id: head.get(0),
            position: head.get(1),
        };
        Ok(self.wait_for(head, timeout).await?)
    }

    pub fn status(&self) -> Vec<ProjectorStatus> {
        self.projectors
            .iter()
            .map(|p| ProjectorStatus {
                name: p.projection.name(),
                checkpoint: *p.progress.borrow(),
                leading_here: p.leading.load(Ordering::SeqCst),
            })
            .collect()
    }
}

/// Applies the next batch in one transaction with the checkpoint; returns
/// the new checkpoint, or `None` when nothing was readable.
async fn apply_batch(
    connection: &mut Connection,
    projection: &dyn Projection,
    cursor: LogCursor,
) -> Result<Option<LogCursor>, StoreError> {
    let events = event_store::read_after(&*connection, cursor, BATCH_SIZE).await?;
    let Some(last) = events.last().map(|e| e.cursor()) else {
        return Ok(None);
    };
    let tx = connection.transaction().await?;
    for event in &events {
        projection
            .apply(&tx, event)
            .await
            .map_err(|warden_projections::ProjectionError::Database(e)| StoreError::from(e))?;
    }
    save_checkpoint(&tx, projection.name(), last).await?;
    tx.commit().await?;
    Ok(Some(last))
}

pub async fn load_checkpoint<C: GenericClient>(client: &C, name: &str) -> Result<LogCursor, StoreError> {
    let select = client
        .prepare_cached("SELECT transaction_id, position FROM projection_checkpoints WHERE name = $1")
        .await?;
    Ok(client
        .query_opt(&select, &[&name])
        .await?
        .map_or(LogCursor::START, |row| LogCursor {
            transaction_id: row.get(0),
            position: row.get(1),
        }))
}

pub async fn save_checkpoint<C: GenericClient>(client: &C, name: &str, cursor: LogCursor) -> Result<(), StoreError> {
    let upsert = client
        .prepare_cached(
            "INSERT INTO projection_checkpoints (name, transaction_id, position, updated_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (name) DO UPDATE
             SET transaction_id = EXCLUDED.transaction_id, position = EXCLUDED.position, updated_at = now()",
        )
        .await?;
    client
        .execute(&upsert, &[&name, &cursor.transaction_id, &cursor.position])
        .await?;
    Ok(())
}

/// Stable 64-bit advisory lock key for a projector (FNV-1a of its name).
pub fn advisory_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"warden-projection:".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// A pooled connection used for session state (an advisory lock). It is
/// closed rather than returned to the pool, so the lock dies with it.
struct SessionConnection(Option<Connection>);

impl SessionConnection {
    fn get(&self) -> &Connection {
        self.0.as_ref().expect("present until dropped")
    }
    fn get_mut(&mut self) -> &mut Connection {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for SessionConnection {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            crate::db::discard(connection);
        }
    }
}

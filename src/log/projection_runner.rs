//! Runs the projectors: each follows the log ([`crate::log::follower`]) and
//! applies events to its read models, moving its checkpoint in the same
//! transaction.
//!
//! Appends already apply their events to the read models in their own
//! transaction (`warden_projections::inline_changes`), which is what makes
//! reads read-your-writes. The projectors behind them apply every event
//! once more (a no-op: the stream-version guard) and are what makes the
//! read models whole in every other case: events appended by a release
//! without inline projection (a rolling upgrade), read models of a
//! restored database, the catch-up before serving.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use warden_events::{LogCursor, RecordedEvent};
use warden_projections::Projection;

use crate::log::event_store::{EventStore, StoreError, CHECKPOINT_CHANNEL};
use crate::log::follower::{self, load_checkpoint, save_checkpoint, Fence, FollowerProgress, LogConsumer};
use crate::platform::db::Connection;

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

/// How often a projector that had nothing to apply still saves its
/// checkpoint (it only spares re-reading ignored events after a restart).
const IDLE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// A projector as a log consumer: apply the batch, then the checkpoint.
struct Projector {
    projection: &'static dyn Projection,
    /// Every commit flushed (read replicas are configured: they see a
    /// commit only once it is flushed), not only the projection's own.
    durable: bool,
    /// The checkpoint last written to the table, and when.
    saved: std::sync::Mutex<Option<(LogCursor, Instant)>>,
}

impl Projector {
    fn mark_saved(&self, cursor: LogCursor) {
        *self.saved.lock().expect("checkpoint record") = Some((cursor, Instant::now()));
    }
}

#[async_trait]
impl LogConsumer for Projector {
    fn name(&self) -> &'static str {
        self.projection.name()
    }

    fn handles_category(&self, category: &str) -> bool {
        self.projection.category() == category
    }

    async fn consume(
        &self,
        connection: &mut Connection,
        events: &[RecordedEvent],
        _from: LogCursor,
        through: LogCursor,
    ) -> Result<(), StoreError> {
        let name = self.projection.name();
        if !events.iter().any(|e| self.projection.handles(&e.event)) {
            // Nothing for this read model: no transaction, and the
            // checkpoint only now and then while busy (commands never wait
            // for a projector their events do not concern); `idle` writes
            // it once the log is quiet.
            let due = self
                .saved
                .lock()
                .expect("checkpoint record")
                .is_none_or(|(_, at)| at.elapsed() >= IDLE_CHECKPOINT_INTERVAL);
            if due {
                save_checkpoint(&*connection, name, through, Fence::Forward).await?;
                self.mark_saved(through);
                announce(connection, name).await;
            }
            return Ok(());
        }
        let tx = connection.transaction().await?;
        if !self.durable && !self.projection.needs_durable_commits() {
            tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        }
        for event in events {
            self.projection.apply(&tx, event).await?;
        }
        save_checkpoint(&tx, name, through, Fence::Forward).await?;
        tx.commit().await?;
        self.mark_saved(through);
        announce(connection, name).await;
        Ok(())
    }

    /// Caught up: write a checkpoint deferred above, so that instances
    /// waiting on the table see this projector at the end of the log.
    async fn idle(&self, connection: &mut Connection, through: LogCursor) -> Result<(), StoreError> {
        let behind = self
            .saved
            .lock()
            .expect("checkpoint record")
            .is_none_or(|(saved, _)| saved < through);
        if behind && through > LogCursor::START {
            save_checkpoint(&*connection, self.projection.name(), through, Fence::Forward).await?;
            self.mark_saved(through);
            announce(connection, self.projection.name()).await;
        }
        Ok(())
    }
}

/// Tells other instances that `name`'s checkpoint moved (their catch-up
/// and health views see it at once). After the commit, in a statement of
/// its own: a notifying transaction serialises with every other one at
/// commit. Best effort: waiters also look every 250 ms.
async fn announce(connection: &Connection, name: &str) {
    if let Err(error) = connection
        .execute("SELECT pg_notify($1, $2)", &[&CHECKPOINT_CHANNEL, &name])
        .await
    {
        tracing::debug!(%error, "could not announce a checkpoint");
    }
}

/// Progress of one projector, for health checks.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProjectorStatus {
    pub name: &'static str,
    pub checkpoint: LogCursor,
    pub leading_here: bool,
    /// The event it stopped at, unreadable to this release (a newer
    /// release wrote it); none while it follows the log.
    pub stuck_on: Option<crate::log::event_store::UnreadableEvent>,
}

pub struct ProjectionRunner {
    store: EventStore,
    projectors: Vec<(Arc<Projector>, Arc<FollowerProgress>)>,
}

impl ProjectionRunner {
    /// `durable_commits`: every projector flushes its commits (for read
    /// replicas, see `platform::replicas`).
    pub fn new(store: EventStore, projections: &[&'static dyn Projection], durable_commits: bool) -> Arc<Self> {
        let projectors = projections
            .iter()
            .map(|&projection| {
                let projector = Projector {
                    projection,
                    durable: durable_commits,
                    saved: std::sync::Mutex::new(None),
                };
                (Arc::new(projector), Arc::new(FollowerProgress::new()))
            })
            .collect();
        Arc::new(ProjectionRunner { store, projectors })
    }

    /// Starts one follower per projector; they stop when `cancel` fires.
    pub fn start(self: &Arc<Self>, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        self.projectors
            .iter()
            .map(|(projector, progress)| {
                let consumer: Arc<dyn LogConsumer> = projector.clone();
                tokio::spawn(follower::follow(
                    self.store.clone(),
                    consumer,
                    Arc::clone(progress),
                    cancel.clone(),
                ))
            })
            .collect()
    }

    /// Waits until every projector has applied everything up to `target`.
    pub async fn wait_for(&self, target: LogCursor, timeout: Duration) -> Result<(), ProjectionLag> {
        let deadline = Instant::now() + timeout;
        let mut elsewhere = self.store.subscribe_checkpoints();
        for (projector, progress) in &self.projectors {
            let name = projector.projection.name();
            let mut checkpoint = progress.checkpoint.subscribe();
            loop {
                if *checkpoint.borrow_and_update() >= target {
                    break;
                }
                // Led by another instance: its progress is only in the table.
                if !progress.leading.load(Ordering::SeqCst) {
                    if let Ok(connection) = self.store.database().get().await {
                        if load_checkpoint(&connection, name).await.is_ok_and(|c| c >= target) {
                            break;
                        }
                    }
                }
                // Progress here, or announced by the leading instance; the
                // timer only covers a lost notification.
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return Err(ProjectionLag { projection: name, waited: timeout }),
                    _ = checkpoint.changed() => {}
                    _ = elsewhere.changed() => {}
                    _ = sleep(Duration::from_millis(250)) => {}
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
            .map(|(projector, progress)| ProjectorStatus {
                name: projector.projection.name(),
                checkpoint: *progress.checkpoint.borrow(),
                leading_here: progress.leading.load(Ordering::SeqCst),
                stuck_on: progress.stuck_on.lock().expect("stuck_on").clone(),
            })
            .collect()
    }
}

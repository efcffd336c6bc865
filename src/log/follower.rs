//! Follows the log for a consumer (a projector, a reaction): at most one
//! instance at a time per consumer, from its durable checkpoint, in
//! delivery order, never skipping an event.
//!
//! Leadership is a session-level advisory lock on a connection of the
//! follower's own; other instances retry every second and take over when
//! the holder's session ends. The consumer moves its checkpoint in the
//! same transaction as its effects (see [`LogConsumer::consume`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use warden_events::{LogCursor, RecordedEvent};

use crate::log::event_store::{self, EventStore, LogEntry, StoreError, UnreadableEvent};
use crate::platform::db::Connection;

/// Upper bound of the idle poll; appends by this process wake followers
/// at once, other instances' appends arrive through LISTEN.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// First retry after a wake-up that found nothing readable yet (an older
/// transaction still in flight holds the safe point back).
const BLOCKED_POLL: Duration = Duration::from_millis(2);
/// Shortest time between two reads of the log, unless the last one read
/// a full batch (a backlog): appends coming faster than this are read as
/// one batch, instead of costing every follower a read and a commit each
/// (measured: 10 to 15 database commits per appended event at 470
/// commands/s, see docs/performance.md). Nothing answers a request only
/// after a follower: commands project inline.
const ROUND_INTERVAL: Duration = Duration::from_millis(10);
const LEADER_RETRY: Duration = Duration::from_secs(1);
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait for one read of the log: past it the leader gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after stopping at an unreadable event: long enough for an
/// instance of a newer release to take the lead.
const STUCK_BACKOFF: Duration = Duration::from_secs(5);

#[async_trait]
pub trait LogConsumer: Send + Sync {
    /// Stable name: the key of the checkpoint and of the leader lock.
    fn name(&self) -> &'static str;

    /// Whether events of streams of `category` may concern this consumer.
    /// One there it cannot read (from a newer release) stops it; one
    /// elsewhere it passes by.
    fn handles_category(&self, category: &str) -> bool;

    /// Largest batch handed to [`Self::consume`].
    fn batch_size(&self) -> i64 {
        500
    }

    /// Handles `events` (in delivery order, after the checkpoint) and saves
    /// the checkpoint `through` in the same transaction, so effects and
    /// progress commit together. An error leaves both untouched; the same
    /// batch is offered again.
    async fn consume(
        &self,
        connection: &mut Connection,
        events: &[RecordedEvent],
        through: LogCursor,
    ) -> Result<(), StoreError>;

    /// Called when the follower has read everything readable, at `through`:
    /// the moment to persist progress a consumer deferred.
    async fn idle(&self, _connection: &mut Connection, _through: LogCursor) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Where a follower is; shared with whoever waits for it.
pub struct FollowerProgress {
    pub checkpoint: watch::Sender<LogCursor>,
    pub leading: AtomicBool,
    /// The event this consumer stopped at, unreadable to this release.
    pub stuck_on: std::sync::Mutex<Option<UnreadableEvent>>,
}

impl FollowerProgress {
    pub fn new() -> Self {
        FollowerProgress {
            checkpoint: watch::channel(LogCursor::START).0,
            leading: AtomicBool::new(false),
            stuck_on: std::sync::Mutex::new(None),
        }
    }
}

impl Default for FollowerProgress {
    fn default() -> Self {
        Self::new()
    }
}

/// Follows the log for `consumer` until `cancel` fires.
pub async fn follow(
    store: EventStore,
    consumer: Arc<dyn LogConsumer>,
    progress: Arc<FollowerProgress>,
    cancel: CancellationToken,
) {
    let name = consumer.name();
    while !cancel.is_cancelled() {
        let outcome = lead(&store, consumer.as_ref(), &progress, &cancel).await;
        progress.leading.store(false, Ordering::SeqCst);
        if let Err(error) = outcome {
            tracing::error!(consumer = name, %error, "log follower failed; retrying");
            // Stuck at an event of a newer release: leadership is free now
            // for an instance of that release; try again later.
            let backoff = match error {
                StoreError::Unreadable { .. } => STUCK_BACKOFF,
                _ => ERROR_BACKOFF,
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = sleep(backoff) => {}
            }
        }
    }
}

/// Becomes the leader for `consumer` and follows until cancelled or an
/// error; the lock dies with the connection either way.
async fn lead(
    store: &EventStore,
    consumer: &dyn LogConsumer,
    progress: &FollowerProgress,
    cancel: &CancellationToken,
) -> Result<(), StoreError> {
    let name = consumer.name();
    let mut connection = SessionConnection(Some(store.database().get().await?));
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
    progress.checkpoint.send_replace(cursor);
    progress.leading.store(true, Ordering::SeqCst);
    tracing::debug!(consumer = name, ?cursor, "following the log");

    let mut appends = store.subscribe_appends();
    let mut idle_poll = BLOCKED_POLL;
    let mut last_read: Option<Instant> = None;
    let mut backlog = false;
    loop {
        if let (Some(last_read), false) = (last_read, backlog) {
            sleep_until(last_read + ROUND_INTERVAL).await;
        }
        last_read = Some(Instant::now());
        // A database that stopped answering (black-holed connection) ends
        // this leadership; the lock dies with the connection.
        let read = event_store::read_entries_after(connection.get(), cursor, consumer.batch_size());
        let entries = tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| StoreError::Db(crate::platform::db::DbError::TimedOut(READ_TIMEOUT)))??;
        backlog = entries.len() as i64 >= consumer.batch_size();
        if !entries.is_empty() {
            let (events, through, blocked) = deliverable(consumer, entries, cursor);
            if through > cursor {
                consumer.consume(connection.get_mut(), &events, through).await?;
                cursor = through;
                progress.checkpoint.send_replace(cursor);
                *progress.stuck_on.lock().expect("stuck_on") = None;
            }
            if let Some(event) = blocked {
                *progress.stuck_on.lock().expect("stuck_on") = Some(event.clone());
                return Err(StoreError::Unreadable {
                    consumer: name,
                    event: Box::new(event),
                });
            }
            idle_poll = BLOCKED_POLL;
            continue;
        }
        consumer.idle(connection.get_mut(), cursor).await?;
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = appends.changed() => idle_poll = BLOCKED_POLL,
            _ = sleep(idle_poll) => idle_poll = (idle_poll * 2).min(IDLE_POLL),
        }
    }
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

/// The events of `entries` this consumer gets now: up to the first one it
/// cannot read and must not pass (returned third), with unreadable events
/// of other categories passed by. The second value is the cursor to save.
fn deliverable(
    consumer: &dyn LogConsumer,
    entries: Vec<LogEntry>,
    from: LogCursor,
) -> (Vec<RecordedEvent>, LogCursor, Option<UnreadableEvent>) {
    let mut events = Vec::with_capacity(entries.len());
    let mut through = from;
    for entry in entries {
        match entry {
            LogEntry::Event(event) => {
                through = event.cursor();
                events.push(event);
            }
            LogEntry::Unreadable(unreadable) if consumer.handles_category(&unreadable.stream_category) => {
                return (events, through, Some(unreadable));
            }
            LogEntry::Unreadable(unreadable) => {
                tracing::debug!(
                    consumer = consumer.name(),
                    event_type = %unreadable.event_type,
                    "passing by an event of a newer release that does not concern this consumer"
                );
                through = unreadable.cursor;
            }
        }
    }
    (events, through, None)
}

pub use crate::platform::db::advisory_key;

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
            crate::platform::db::discard(connection);
        }
    }
}

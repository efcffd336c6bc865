//! Follows the log for a consumer (a projector, a reaction): at most one
//! instance at a time per consumer, from its durable checkpoint, in
//! delivery order, never skipping an event.
//!
//! Leadership is a lease (`platform::leases`): the leader renews it every
//! second between rounds, other instances try to take it every second and
//! do once it has run out (3 s after its last renewal, whatever became of
//! the leader: a frozen host, a connection that answers nothing). Every
//! read and every batch of a round must end before the lease does, or the
//! round is abandoned (its connection closed). The consumer moves its
//! checkpoint in the same transaction as its effects, fenced
//! ([`save_checkpoint`]): a late commit of a leader that lost its lease
//! meanwhile cannot move the checkpoint back or apply a batch twice.

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
use crate::platform::db::{Connection, Database};
use crate::platform::leases::{self, Lease};

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
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
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

    /// Handles `events` (in delivery order, after the checkpoint `from`)
    /// and saves the checkpoint `through` in the same transaction, so
    /// effects and progress commit together, fenced ([`save_checkpoint`]).
    /// An error leaves both untouched; the same batch is offered again.
    async fn consume(
        &self,
        connection: &mut Connection,
        events: &[RecordedEvent],
        from: LogCursor,
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
    let mut lease = Lease::new(format!("consumer:{name}"));
    while !cancel.is_cancelled() {
        let outcome = lead(&store, consumer.as_ref(), &progress, &cancel, &mut lease).await;
        progress.leading.store(false, Ordering::SeqCst);
        if let Err(error) = outcome {
            tracing::error!(consumer = name, %error, "log follower failed; retrying");
            // Stuck at an event of a newer release: leadership is free now
            // for an instance of that release; try again later.
            let backoff = match error {
                StoreError::Unreadable { .. } => STUCK_BACKOFF,
                _ => ERROR_BACKOFF,
            };
            // Give the lease up: an instance of a newer release, or one
            // whose database connection works, may take over at once.
            lease.release(store.database()).await;
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = sleep(backoff) => {}
            }
        }
    }
    lease.release(store.database()).await;
}

/// A leader's round abandoned because its lease ran out first.
fn lease_ran_out(lease: &Lease) -> StoreError {
    StoreError::LeaseLost(lease.name().to_owned())
}

/// Becomes the leader for `consumer` (waiting for the lease) and follows
/// until cancelled, an error, or the lease is lost.
async fn lead(
    store: &EventStore,
    consumer: &dyn LogConsumer,
    progress: &FollowerProgress,
    cancel: &CancellationToken,
    lease: &mut Lease,
) -> Result<(), StoreError> {
    let name = consumer.name();
    let db = store.database();
    while !lease.hold(db).await {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = sleep(leases::RENEW_EVERY) => {}
        }
    }
    // Closed, not pooled, when this term ends: a round abandoned half-way
    // must not leave a transaction behind.
    let mut connection = SessionConnection(Some(
        within_lease(lease, db, db.get()).await?.map_err(StoreError::from)?,
    ));
    let mut cursor = within_lease(lease, db, load_checkpoint(connection.get(), name)).await??;
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
        if !lease.hold(db).await {
            tracing::info!(consumer = name, "lost the lease; another instance leads");
            return Ok(());
        }
        last_read = Some(Instant::now());
        let read = event_store::read_entries_after(connection.get(), cursor, consumer.batch_size());
        let entries = within_lease(lease, db, read).await??;
        backlog = entries.len() as i64 >= consumer.batch_size();
        if !entries.is_empty() {
            let (events, through, blocked) = deliverable(consumer, entries, cursor);
            if through > cursor {
                within_lease(
                    lease,
                    db,
                    consumer.consume(connection.get_mut(), &events, cursor, through),
                )
                .await??;
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
        within_lease(lease, db, consumer.idle(connection.get_mut(), cursor)).await??;
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

/// What must hold for a checkpoint to move (see [`save_checkpoint`]).
#[derive(Clone, Copy, Debug)]
pub enum Fence {
    /// The stored checkpoint is exactly this one: nobody else moved it
    /// since this leader loaded it (a consumer whose effects must apply
    /// exactly once).
    Exactly(LogCursor),
    /// The checkpoint never moves back (a consumer whose effects are
    /// idempotent and that saves only now and then).
    Forward,
    /// Set it whatever it was (replay, which holds every writer off).
    Unconditional,
}

/// Saves `name`'s checkpoint `cursor` if `fence` holds, else fails with
/// [`StoreError::Fenced`] (another leader moved it: this one lost its
/// lease), and the caller's transaction rolls back with it.
pub async fn save_checkpoint<C: GenericClient>(
    client: &C,
    name: &str,
    cursor: LogCursor,
    fence: Fence,
) -> Result<(), StoreError> {
    let (condition, expected) = match fence {
        Fence::Exactly(expected) => ("(c.transaction_id, c.position) = ($4, $5)", Some(expected)),
        Fence::Forward => (
            "(c.transaction_id, c.position) <= (EXCLUDED.transaction_id, EXCLUDED.position)",
            None,
        ),
        Fence::Unconditional => ("true", None),
    };
    let upsert = client
        .prepare_cached(&format!(
            "INSERT INTO projection_checkpoints AS c (name, transaction_id, position, updated_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (name) DO UPDATE
             SET transaction_id = EXCLUDED.transaction_id, position = EXCLUDED.position, updated_at = now()
             WHERE {condition}"
        ))
        .await?;
    let saved = match expected {
        Some(expected) => {
            client
                .execute(
                    &upsert,
                    &[
                        &name,
                        &cursor.transaction_id,
                        &cursor.position,
                        &expected.transaction_id,
                        &expected.position,
                    ],
                )
                .await?
        }
        None => {
            client
                .execute(&upsert, &[&name, &cursor.transaction_id, &cursor.position])
                .await?
        }
    };
    if saved == 0 {
        return Err(StoreError::Fenced(name.to_owned()));
    }
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

/// `work`, unless the lease runs out first. The lease is renewed while
/// the work goes on (a slow database is no reason to hand over; one that
/// stopped answering cannot renew it).
async fn within_lease<T>(
    lease: &mut Lease,
    db: &Database,
    work: impl std::future::Future<Output = T>,
) -> Result<T, StoreError> {
    tokio::pin!(work);
    loop {
        let Some(until) = lease.valid_until() else {
            return Err(lease_ran_out(lease));
        };
        tokio::select! {
            done = &mut work => return Ok(done),
            _ = tokio::time::sleep_until(until) => return Err(lease_ran_out(lease)),
            _ = sleep(leases::RENEW_EVERY) => {
                lease.hold(db).await;
            }
        }
    }
}

pub use crate::platform::db::advisory_key;

/// A leader's pooled connection: closed rather than returned to the pool,
/// so a round abandoned half-way leaves nothing behind.
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

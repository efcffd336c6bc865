//! Executes commands: load the stream, decide, append with optimistic
//! concurrency (retrying a bounded number of times on conflict). The append
//! updates the read models in its own transaction (inline projection), so
//! a command that answered is visible to every read at once: nothing to
//! wait for.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use rand::Rng;
use warden_events::{Event, Metadata, RecordedEvent, StreamId};

use crate::domain::{Aggregate, DomainError};
use crate::log::event_store::{self, Appended, EventStore, ExpectedVersion, StoreError};
use crate::log::state_cache::StateCache;

/// Attempts per command before a conflict is reported to the caller.
const MAX_ATTEMPTS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A condition beyond the stream that must still hold when a command's
/// events commit (e.g. a runner's machine limit), checked in the append's
/// own transaction, typically under a transaction-level advisory lock: the
/// check, the load and the append then share one connection, so those
/// waiting for the lock cannot starve its holder of connections.
#[async_trait]
pub trait Precondition: Sync {
    async fn check(&self, tx: &Transaction<'_>) -> Result<(), CommandError>;
}

/// Serialises a user's deletion with the commands that must not outlive
/// it (a job's submission): each such command holds the user's lock
/// shared in its append's transaction and finds the user not deleted; the
/// deletion holds it exclusively in its own. So a command either commits
/// before the deletion (and the deletion's clean-up, which reads after its
/// commit, sees what it did) or finds the user deleted.
pub struct UserLock {
    user_id: uuid::Uuid,
    exclusive: bool,
    /// How long to wait for the lock (below the statement timeout, so the
    /// answer is a clear conflict).
    wait: Duration,
}

impl UserLock {
    /// For a command on behalf of `user_id`: refused once it is deleted.
    pub fn active(user_id: uuid::Uuid, wait: Duration) -> UserLock {
        UserLock {
            user_id,
            exclusive: false,
            wait,
        }
    }

    /// For `user_id`'s deletion.
    pub fn deletion(user_id: uuid::Uuid, wait: Duration) -> UserLock {
        UserLock {
            user_id,
            exclusive: true,
            wait,
        }
    }

    fn key(&self) -> i64 {
        crate::platform::db::advisory_key(&format!("user-commands:{}", self.user_id))
    }
}

#[async_trait]
impl Precondition for UserLock {
    async fn check(&self, tx: &Transaction<'_>) -> Result<(), CommandError> {
        crate::platform::db::xact_lock(tx, self.key(), !self.exclusive, self.wait)
            .await
            .map_err(StoreError::from)?;
        if self.exclusive {
            return Ok(());
        }
        // A statement of its own, after the lock: it sees a deletion that
        // committed while this waited.
        let active: Option<bool> = tx
            .query_opt("SELECT deleted_at IS NULL FROM users WHERE id = $1", &[&self.user_id])
            .await
            .map_err(StoreError::from)?
            .map(|row| row.get(0));
        if active != Some(true) {
            return Err(DomainError::Conflict {
                code: crate::api::ErrorCode::UserDeleted,
                message: "this user has been deleted".into(),
            }
            .into());
        }
        Ok(())
    }
}

/// The result of a command that was accepted.
pub struct Executed<A: Aggregate> {
    /// State of the stream after the command.
    pub state: A,
    /// What was appended; `None` when the command changed nothing.
    pub appended: Option<Appended>,
    pub events: Vec<A::Event>,
}

impl<A: Aggregate> Executed<A> {
    /// A command that changed nothing (it decided on no events).
    fn unchanged(state: A) -> Self {
        Executed {
            state,
            appended: None,
            events: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub struct CommandService {
    store: EventStore,
    states: Arc<StateCache>,
}

impl CommandService {
    pub fn new(store: EventStore) -> Self {
        CommandService {
            store,
            states: Arc::default(),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The next number of a sequence (`runner_numbers`, `job_numbers`): the
    /// integer ids recorded in creation events.
    pub async fn next_number(&self, sequence: &'static str) -> Result<i64, StoreError> {
        let connection = self.store.database().get().await?;
        let select = connection.prepare_cached("SELECT nextval($1::text::regclass)").await?;
        Ok(connection.query_one(&select, &[&sequence]).await?.get(0))
    }

    /// Loads the current state of `stream`: the state kept from an
    /// earlier command plus the events appended since, or the whole
    /// stream.
    pub async fn load<A: Aggregate>(&self, stream: &StreamId) -> Result<(A, ExpectedVersion), StoreError> {
        let (state, version) = self.states.get::<A>(stream).unwrap_or_default();
        let newer = self.store.read_stream_after(stream, version).await?;
        Ok(self.fold_newer(stream, state, version, &newer))
    }

    /// The kept `state` at `version` brought up to date with `newer`.
    fn fold_newer<A: Aggregate>(
        &self,
        stream: &StreamId,
        mut state: A,
        mut version: i64,
        newer: &[RecordedEvent],
    ) -> (A, ExpectedVersion) {
        for recorded in newer {
            if let Some(event) = A::select(&recorded.event) {
                state.evolve(event);
            }
            version = recorded.stream_version;
        }
        self.states.put(stream, &state, version);
        (state, ExpectedVersion(version))
    }

    /// Like [`Self::execute`], in one transaction that first checks
    /// `precondition`, then loads the stream, decides and appends.
    pub async fn execute_guarded<A: Aggregate>(
        &self,
        stream: &StreamId,
        command: &A::Command,
        metadata: &Metadata,
        precondition: &dyn Precondition,
    ) -> Result<Executed<A>, CommandError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut connection = self.store.database().get().await.map_err(StoreError::from)?;
            let tx = connection.transaction().await.map_err(StoreError::from)?;
            precondition.check(&tx).await?;
            let (kept, version) = self.states.get::<A>(stream).unwrap_or_default();
            let newer = event_store::read_stream_after(&tx, stream, version).await?;
            let (state, expected) = self.fold_newer(stream, kept, version, &newer);
            let events = state.decide(command)?;
            if events.is_empty() {
                return Ok(Executed::unchanged(state));
            }
            let logged: Vec<Event> = events.iter().cloned().map(Into::into).collect();
            let appended = match event_store::append_in(&tx, stream, expected, logged, metadata).await {
                Ok(appended) => {
                    tx.commit().await.map_err(StoreError::from)?;
                    self.store.signal_append();
                    Ok(appended)
                }
                Err(error) => {
                    // Not held over the pause before the next attempt.
                    drop(tx);
                    Err(error)
                }
            };
            drop(connection);
            if let Some(executed) = self.settle(stream, state, events, appended, attempt).await? {
                return Ok(executed);
            }
        }
    }

    /// After an append: the executed command, or `None` to decide again
    /// (a conflict, with attempts left, after a short jittered pause).
    async fn settle<A: Aggregate>(
        &self,
        stream: &StreamId,
        mut state: A,
        events: Vec<A::Event>,
        appended: Result<Appended, StoreError>,
        attempt: u32,
    ) -> Result<Option<Executed<A>>, CommandError> {
        let aggregate = crate::platform::metrics::labels([("aggregate", stream.category())]);
        let metrics = crate::platform::metrics::global();
        match appended {
            Ok(appended) => {
                metrics.appends.get_or_create(&aggregate).inc();
                events.iter().for_each(|event| state.evolve(event));
                self.states.put(stream, &state, appended.version);
                Ok(Some(Executed {
                    state,
                    appended: Some(appended),
                    events,
                }))
            }
            Err(StoreError::Conflict { .. }) if attempt < MAX_ATTEMPTS => {
                metrics.append_conflicts.get_or_create(&aggregate).inc();
                self.states.forget(stream);
                // Someone else wrote this stream in between: decide again
                // on fresh state.
                let pause = rand::thread_rng().gen_range(1..=(5 * attempt as u64));
                tokio::time::sleep(Duration::from_millis(pause)).await;
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Runs `command` against `stream`.
    pub async fn execute<A: Aggregate>(
        &self,
        stream: &StreamId,
        command: &A::Command,
        metadata: &Metadata,
    ) -> Result<Executed<A>, CommandError> {
        self.run(stream, command, metadata, false).await
    }

    /// Like [`Self::execute`] for a stream id that was just generated: the
    /// first attempt skips loading (the stream cannot exist yet; if it
    /// does, the append's expected version refuses and we load and retry).
    pub async fn execute_new<A: Aggregate>(
        &self,
        stream: &StreamId,
        command: &A::Command,
        metadata: &Metadata,
    ) -> Result<Executed<A>, CommandError> {
        self.run(stream, command, metadata, true).await
    }

    async fn run<A: Aggregate>(
        &self,
        stream: &StreamId,
        command: &A::Command,
        metadata: &Metadata,
        fresh_stream: bool,
    ) -> Result<Executed<A>, CommandError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (state, expected) = if fresh_stream && attempt == 1 {
                (A::default(), ExpectedVersion::NO_STREAM)
            } else {
                self.load::<A>(stream).await?
            };
            let events = state.decide(command)?;
            if events.is_empty() {
                return Ok(Executed::unchanged(state));
            }
            let logged: Vec<Event> = events.iter().cloned().map(Into::into).collect();
            let appended = self.store.append(stream, expected, logged, metadata).await;
            if let Some(executed) = self.settle(stream, state, events, appended, attempt).await? {
                return Ok(executed);
            }
        }
    }
}

//! The heartbeat cache: a Project-W heartbeat of an idle machine whose
//! runner token and session this instance checked recently is answered
//! without a database round trip. Only heartbeats use it; every other
//! Project-W call reads the database (and refreshes the cache).
//!
//! Why a cached answer is never wrong once a change that takes access
//! away has been answered (read-your-writes for token checks, on every
//! instance):
//! - Triggers (migration V21) `NOTIFY` [`CHANNEL`] inside the transaction
//!   of every change that could make an entry wrong: a runner's token,
//!   status, pause, tags or priority (`r:<runner>`), the end of a session
//!   (`s:<session>`), a job claim of a machine (`m:<machine>`).
//!   PostgreSQL delivers notifications in commit order.
//! - Every instance pings itself on the same channel every [`PING_EVERY`];
//!   it uses its entries only while the newest ping it has received was
//!   sent less than [`LEASE`] ago. A ping sent after a change committed
//!   arrives after that change's notification, so [`LEASE`] after a commit
//!   every instance has dropped the entries it affects, or stopped using
//!   its cache (listener slow, connection lost, database down).
//! - Commands that take a token's access away (invalidation, token reset,
//!   unregister) answer only [`LEASE`] after their commit
//!   ([`wait_out_cached_answers`]). A pause does not wait: a cached
//!   heartbeat decides nothing by it (assignment reads it from the
//!   database); tags and priority are notified so that a machine put
//!   online from a cached answer gets the current ones.
//! - A database read that began before a notification was handled is not
//!   remembered (the cache's epoch moved on), so a stale read cannot
//!   outlive the notification that should have dropped it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::runners::AuthenticatedRunner;
use super::sessions::Session;
use crate::platform::db::{Database, Listener};
use crate::platform::secrets::tokens;

/// The channel the triggers of migration V21 and the pings use.
pub const CHANNEL: &str = "warden_heartbeat_cache";
/// How long a ping keeps this instance's entries usable, and how long a
/// command that takes access away waits after its commit.
pub const LEASE: Duration = Duration::from_millis(300);
/// How often an instance pings itself (a few pings per lease, so one slow
/// ping does not switch the cache off).
pub const PING_EVERY: Duration = Duration::from_millis(60);
/// An entry is read from the database again after this long, whatever
/// the notifications said (a bound, not what keeps entries right).
const MAX_AGE: Duration = Duration::from_secs(60);
/// Most entries kept (one per idle Project-W session heartbeating here).
const MAX_ENTRIES: usize = 100_000;

/// Waits until no instance can answer a heartbeat from an entry that a
/// change committed before this call should have dropped.
pub async fn wait_out_cached_answers() {
    tokio::time::sleep(LEASE).await;
}

/// What a notification on [`CHANNEL`] says.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    Runner(Uuid),
    Session(Uuid),
    Machine(Uuid),
    Ping { from: Uuid, number: u64 },
}

impl Notice {
    fn parse(payload: &str) -> Option<Notice> {
        let (kind, rest) = payload.split_once(':')?;
        match kind {
            "r" => Uuid::parse_str(rest).ok().map(Notice::Runner),
            "s" => Uuid::parse_str(rest).ok().map(Notice::Session),
            "m" => Uuid::parse_str(rest).ok().map(Notice::Machine),
            "p" => {
                let (from, number) = rest.split_once(':')?;
                Some(Notice::Ping {
                    from: Uuid::parse_str(from).ok()?,
                    number: number.parse().ok()?,
                })
            }
            _ => None,
        }
    }
}

/// A checked runner token and idle session.
struct Entry {
    runner_token_hash: String,
    runner: AuthenticatedRunner,
    session: Session,
    stored_at: Instant,
}

#[derive(Default)]
struct State {
    /// By the session token's hash.
    entries: HashMap<String, Entry>,
    /// Moves on with every handled notification except pings.
    epoch: u64,
    /// Until when entries may be used (the newest received ping's send
    /// time plus [`LEASE`]); `None` while not listening.
    usable_until: Option<Instant>,
    /// Pings sent and not received yet: number and send time.
    pings_in_flight: VecDeque<(u64, Instant)>,
    next_ping: u64,
}

/// One instance's heartbeat cache.
pub struct HeartbeatCache {
    enabled: bool,
    /// Names this process's pings.
    me: Uuid,
    state: Mutex<State>,
    hits: AtomicU64,
}

impl HeartbeatCache {
    pub fn new(enabled: bool) -> HeartbeatCache {
        HeartbeatCache {
            enabled,
            me: Uuid::new_v4(),
            state: Mutex::new(State::default()),
            hits: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("heartbeat cache")
    }

    /// Heartbeats this instance answered from its cache so far (the
    /// metric counts the whole process, where tests run several).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Taken before a database read whose result may be remembered.
    pub fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// The runner and idle session these tokens were found to name, if
    /// that is still known to be true.
    pub fn get(&self, runner_token: &str, session_token: &str) -> Option<(AuthenticatedRunner, Session)> {
        self.get_at(runner_token, session_token, Instant::now())
    }

    fn get_at(&self, runner_token: &str, session_token: &str, now: Instant) -> Option<(AuthenticatedRunner, Session)> {
        if !self.enabled {
            return None;
        }
        let session_hash = tokens::hash(session_token);
        let runner_hash = tokens::hash(runner_token);
        let mut state = self.state();
        if state.usable_until.is_none_or(|until| now >= until) {
            return None;
        }
        let entry = state.entries.get(&session_hash)?;
        if now.duration_since(entry.stored_at) >= MAX_AGE {
            state.entries.remove(&session_hash);
            return None;
        }
        // The same constant-time comparison as the database path.
        if !tokens::hashes_match(&entry.runner_token_hash, &runner_hash) {
            return None;
        }
        let found = (entry.runner.clone(), entry.session);
        drop(state);
        self.hits.fetch_add(1, Ordering::Relaxed);
        crate::platform::metrics::global().heartbeat_cache_hits.inc();
        Some(found)
    }

    /// Remembers what a database read begun at `epoch` found: `runner`
    /// (through its current token) and `session` (with no job). Nothing
    /// is kept if a notification was handled since the read began.
    pub fn remember(
        &self,
        epoch: u64,
        runner_token: &str,
        session_token: &str,
        runner: &AuthenticatedRunner,
        session: Session,
    ) {
        if !self.enabled {
            return;
        }
        let session_hash = tokens::hash(session_token);
        let runner_token_hash = tokens::hash(runner_token);
        let now = Instant::now();
        let mut state = self.state();
        if state.epoch != epoch {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES && !state.entries.contains_key(&session_hash) {
            state
                .entries
                .retain(|_, entry| now.duration_since(entry.stored_at) < MAX_AGE);
            if state.entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        state.entries.insert(
            session_hash,
            Entry {
                runner_token_hash,
                runner: runner.clone(),
                session,
                stored_at: now,
            },
        );
    }

    /// Acts on one notification received at `now`.
    fn handle(&self, notice: Notice, now: Instant) {
        let mut state = self.state();
        match notice {
            Notice::Ping { from, number } => {
                if from != self.me {
                    return;
                }
                while let Some(&(sent_number, sent_at)) = state.pings_in_flight.front() {
                    if sent_number > number {
                        break;
                    }
                    state.pings_in_flight.pop_front();
                    if sent_number == number {
                        let until = sent_at + LEASE;
                        if until > now {
                            state.usable_until = Some(until);
                        }
                    }
                }
            }
            Notice::Runner(id) => {
                state.epoch += 1;
                state.entries.retain(|_, entry| entry.runner.runner_id != id);
            }
            Notice::Session(id) => {
                state.epoch += 1;
                state.entries.retain(|_, entry| entry.session.id != id);
            }
            Notice::Machine(id) => {
                state.epoch += 1;
                state.entries.retain(|_, entry| entry.session.machine_id != id);
            }
        }
    }

    /// Forgets everything and stops using entries until a ping arrives
    /// (not listening, or just started listening: changes may have been
    /// missed before); reads begun before are not remembered.
    fn reset(&self) {
        let mut state = self.state();
        state.epoch += 1;
        state.entries.clear();
        state.usable_until = None;
        state.pings_in_flight.clear();
    }

    /// Records a ping about to be sent at `now`; its payload.
    fn ping_sent(&self, now: Instant) -> String {
        let mut state = self.state();
        let number = state.next_ping;
        state.next_ping += 1;
        state.pings_in_flight.push_back((number, now));
        // Pings lost with a connection are forgotten by `reset`; this
        // bounds the queue if the channel drops them silently.
        if state.pings_in_flight.len() > 1_000 {
            state.pings_in_flight.pop_front();
        }
        format!("p:{}:{number}", self.me)
    }

    /// Listens on [`CHANNEL`] and pings itself until `cancel` fires;
    /// reconnects after a lost connection. Does nothing when disabled.
    pub fn spawn_listener(
        self: std::sync::Arc<Self>,
        db: Database,
        cancel: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        if !self.enabled {
            return None;
        }
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    outcome = self.listen(&db) => if let Err(error) = outcome {
                        tracing::warn!(%error, "lost the heartbeat cache's notification channel; heartbeats read the database until it is back");
                    },
                }
                self.reset();
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            self.reset();
        }))
    }

    async fn listen(&self, db: &Database) -> Result<(), tokio_postgres::Error> {
        use futures_util::future::BoxFuture;
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let Some(Listener { client, mut messages }) = db.listen(&[CHANNEL]).await? else {
            return Ok(());
        };
        let client = &client;
        let send = |statement: String| -> BoxFuture<'_, Result<(), tokio_postgres::Error>> {
            Box::pin(async move { client.batch_execute(&statement).await })
        };
        // Only now is every later change notified here: a read that began
        // before this (its change perhaps committed before LISTEN took
        // effect, unnotified) must not be remembered, so the epoch moves.
        self.reset();
        let mut requests = FuturesUnordered::new();
        let mut ticks = tokio::time::interval(PING_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let payload = self.ping_sent(Instant::now());
                    requests.push(send(format!("NOTIFY {CHANNEL}, '{payload}'")));
                }
                Some(done) = requests.next() => done?,
                message = messages.next() => match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(notification))) => {
                        if let Some(notice) = Notice::parse(notification.payload()) {
                            self.handle(notice, Instant::now());
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                    None => return Ok(()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNER_TOKEN: &str = "wdrt_runner";
    const SESSION_TOKEN: &str = "wdst_session";

    fn runner(id: Uuid) -> AuthenticatedRunner {
        AuthenticatedRunner {
            runner_id: id,
            number: Some(1),
            tags: Vec::new(),
            priority: 0,
            paused: false,
            through_previous_token: false,
            scope_id: None,
        }
    }

    fn session(runner_id: Uuid) -> Session {
        Session {
            id: Uuid::new_v4(),
            runner_id,
            machine_id: Uuid::new_v4(),
        }
    }

    /// A cache with one entry and a ping received at `at`.
    fn warm(at: Instant) -> (HeartbeatCache, Session) {
        let cache = HeartbeatCache::new(true);
        let runner_id = Uuid::new_v4();
        let session = session(runner_id);
        cache.remember(cache.epoch(), RUNNER_TOKEN, SESSION_TOKEN, &runner(runner_id), session);
        let payload = cache.ping_sent(at);
        cache.handle(Notice::parse(&payload).unwrap(), at);
        (cache, session)
    }

    #[test]
    fn an_entry_serves_only_while_a_recent_ping_vouches_for_the_channel() {
        let start = Instant::now();
        let (cache, session) = warm(start);
        let found = cache.get_at(RUNNER_TOKEN, SESSION_TOKEN, start + LEASE / 2);
        assert_eq!(found.map(|(_, s)| s), Some(session));
        // No ping since: a notification may be stuck behind the last one.
        assert!(cache.get_at(RUNNER_TOKEN, SESSION_TOKEN, start + LEASE).is_none());
        // A ping that arrives late vouches only for LEASE after it was sent.
        let late = cache.ping_sent(start + LEASE / 2);
        cache.handle(Notice::parse(&late).unwrap(), start + LEASE * 2);
        assert!(cache.get_at(RUNNER_TOKEN, SESSION_TOKEN, start + LEASE * 2).is_none());
    }

    #[test]
    fn another_runner_token_or_session_token_finds_nothing() {
        let start = Instant::now();
        let (cache, _) = warm(start);
        assert!(cache.get_at("wdrt_other", SESSION_TOKEN, start).is_none());
        assert!(cache.get_at(RUNNER_TOKEN, "wdst_other", start).is_none());
        assert_eq!(cache.hits(), 0);
    }

    #[test]
    fn notifications_drop_the_entries_they_name() {
        let start = Instant::now();
        for notice in [
            |s: &Session| Notice::Runner(s.runner_id),
            |s: &Session| Notice::Session(s.id),
            |s: &Session| Notice::Machine(s.machine_id),
        ] {
            let (cache, session) = warm(start);
            cache.handle(Notice::Machine(Uuid::new_v4()), start);
            assert!(cache.get_at(RUNNER_TOKEN, SESSION_TOKEN, start).is_some());
            cache.handle(notice(&session), start);
            assert!(cache.get_at(RUNNER_TOKEN, SESSION_TOKEN, start).is_none());
        }
    }

    #[test]
    fn a_read_that_began_before_a_notification_is_not_remembered() {
        let start = Instant::now();
        let (cache, _) = warm(start);
        let runner_id = Uuid::new_v4();
        let began = cache.epoch();
        cache.handle(Notice::Runner(runner_id), start);
        cache.remember(
            began,
            RUNNER_TOKEN,
            "wdst_second",
            &runner(runner_id),
            session(runner_id),
        );
        assert!(cache.get_at(RUNNER_TOKEN, "wdst_second", start).is_none());
    }

    #[test]
    fn a_read_begun_before_listening_started_is_not_remembered() {
        let start = Instant::now();
        let cache = HeartbeatCache::new(true);
        let runner_id = Uuid::new_v4();
        let began = cache.epoch();
        // LISTEN took effect: a change committed before it was not notified.
        cache.reset();
        cache.remember(
            began,
            RUNNER_TOKEN,
            SESSION_TOKEN,
            &runner(runner_id),
            session(runner_id),
        );
        let payload = cache.ping_sent(start);
        cache.handle(Notice::parse(&payload).unwrap(), start);
        assert!(cache.get_at(RUNNER_TOKEN, SESSION_TOKEN, start).is_none());
    }

    #[test]
    fn a_reconnect_forgets_everything_until_the_next_ping() {
        let start = Instant::now();
        let (cache, _) = warm(start);
        cache.reset();
        assert!(cache.get_at(RUNNER_TOKEN, SESSION_TOKEN, start).is_none());
    }

    #[test]
    fn other_instances_pings_vouch_for_nothing_here() {
        let start = Instant::now();
        let (cache, _) = warm(start);
        let other = HeartbeatCache::new(true);
        let payload = other.ping_sent(start + LEASE);
        cache.handle(Notice::parse(&payload).unwrap(), start + LEASE);
        assert!(cache.get_at(RUNNER_TOKEN, SESSION_TOKEN, start + LEASE).is_none());
    }

    #[test]
    fn payloads_parse_and_garbage_is_ignored() {
        let id = Uuid::new_v4();
        assert_eq!(Notice::parse(&format!("r:{id}")), Some(Notice::Runner(id)));
        assert_eq!(
            Notice::parse(&format!("p:{id}:7")),
            Some(Notice::Ping { from: id, number: 7 })
        );
        assert_eq!(Notice::parse("x:1"), None);
        assert_eq!(Notice::parse("r:not-a-uuid"), None);
    }
}

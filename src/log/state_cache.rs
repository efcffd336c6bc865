//! Folded state of recently used streams, kept between commands: a command
//! then reads only the events appended to its stream since (usually none)
//! instead of the whole stream, so its cost no longer grows with the
//! stream (a runner changed a thousand times, a machine whose contacts are
//! recorded for months, a long job reporting progress).
//!
//! Always correct, also with several instances: an entry is the fold of the
//! stream's first `version` events, and events are never changed or
//! removed, so folding what follows `version` gives the current state.
//! Only aggregates whose state holds no personal data are kept
//! ([`Aggregate::CACHEABLE`]), so erasure leaves nothing behind here.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

use warden_events::StreamId;

use crate::domain::Aggregate;

/// Streams kept at most; when full, the cache starts over (cheap, rare:
/// an entry only saves reading a stream's older events once more).
const CAPACITY: usize = 20_000;

#[derive(Default)]
pub struct StateCache {
    entries: Mutex<HashMap<StreamId, Entry>>,
}

struct Entry {
    version: i64,
    state: Box<dyn Any + Send + Sync>,
}

impl StateCache {
    /// The state of `stream` as of some version, if kept.
    pub fn get<A: Aggregate>(&self, stream: &StreamId) -> Option<(A, i64)> {
        if !A::CACHEABLE {
            return None;
        }
        let entries = self.entries.lock().expect("state cache");
        let entry = entries.get(stream)?;
        let state = entry.state.downcast_ref::<A>()?;
        Some((state.clone(), entry.version))
    }

    /// Keeps `state`, the fold of `stream`'s first `version` events,
    /// unless a newer one is kept already.
    pub fn put<A: Aggregate>(&self, stream: &StreamId, state: &A, version: i64) {
        if !A::CACHEABLE || version == 0 {
            return;
        }
        let mut entries = self.entries.lock().expect("state cache");
        if entries.get(stream).is_some_and(|entry| entry.version >= version) {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            stream.clone(),
            Entry {
                version,
                state: Box::new(state.clone()),
            },
        );
    }

    /// Drops what is kept of `stream`: after a conflict the next load
    /// reads it whole (a kept version ahead of the log, say after the
    /// database was restored under a running server, would otherwise
    /// conflict forever).
    pub fn forget(&self, stream: &StreamId) {
        self.entries.lock().expect("state cache").remove(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::runner::Runner;
    use crate::domain::user::User;
    use uuid::Uuid;

    #[test]
    fn keeps_the_newest_state_of_cacheable_aggregates_only_until_forgotten() {
        let cache = StateCache::default();
        let stream = StreamId::runner(Uuid::nil());
        assert!(cache.get::<Runner>(&stream).is_none());
        cache.put(&stream, &Runner::default(), 3);
        cache.put(&stream, &Runner::default(), 2);
        assert_eq!(cache.get::<Runner>(&stream).map(|(_, version)| version), Some(3));
        cache.forget(&stream);
        assert!(cache.get::<Runner>(&stream).is_none());

        let user = StreamId::user(Uuid::nil());
        cache.put(&user, &User::default(), 1);
        assert!(cache.get::<User>(&user).is_none(), "user state holds personal data");
    }
}

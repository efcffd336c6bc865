//! The event log on a real PostgreSQL: optimistic concurrency, append-only
//! enforcement, personal data sealing, and the no-skip reader.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use uuid::Uuid;
use warden::events::runner::{RunnerCreated, RunnerInvalidated};
use warden::events::user::{LocalUserCreated, Role, UserDeleted, UserOrigin};
use warden::events::{Event, LogCursor, Metadata, Pii, RunnerEvent, StreamId, UserEvent};
use warden::log::event_store::{self, EventStore, ExpectedVersion, StoreError};

use crate::harness::TestDb;

fn created(runner_id: Uuid) -> Event {
    Event::Runner(RunnerEvent::RunnerCreated(RunnerCreated {
        runner_id,
        number: None,
        // Unique like a real one: the runners read model refuses duplicates.
        token_hash: runner_id.simple().to_string().repeat(2),
        description: None,
        tags: vec![],
        priority: 0,
        scope_id: None,
    }))
}

fn invalidated(runner_id: Uuid) -> Event {
    Event::Runner(RunnerEvent::RunnerInvalidated(RunnerInvalidated {
        runner_id,
        reason: None,
    }))
}

fn meta() -> Metadata {
    Metadata::system("test")
}

/// Numbers in user JSON (job payloads) come back from jsonb as the same
/// numbers, so the log stays readable and its hash chain verifiable. jsonb
/// prints exact decimals: without exact float parsing, f64::MIN came back as
/// an unreadable event that stopped every projector (found by schemathesis),
/// and 1.7e308 came back as 1.7000000000000001e308.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_numbers_in_payloads_round_trip_through_the_log() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let job_id = Uuid::now_v7();
    let stream = StreamId::job(job_id);
    let payload = serde_json::json!({
        "min": f64::MIN, "max": f64::MAX, "big": 1.7e308, "tiny": 5e-324,
        "third": 1.0 / 3.0, "whole": 1.0, "int": i64::MIN, "uint": u64::MAX,
    });
    let submitted: Event = warden::events::JobEvent::from(warden::events::job::JobSubmitted {
        job_id,
        number: None,
        submitted_by: Uuid::now_v7(),
        payload: Pii::plain(payload.to_string()),
        required_tags: vec![],
        priority: 0,
        kind: Default::default(),
        input: None,
        input_name: None,
        scope_id: None,
    })
    .into();
    store
        .append(&stream, ExpectedVersion::NO_STREAM, vec![submitted.clone()], &meta())
        .await
        .unwrap();
    let history = store.read_stream(&stream).await.unwrap();
    assert_eq!(history[0].event, submitted);
    let Event::Job(warden::events::JobEvent::JobSubmitted(read)) = &history[0].event else {
        panic!("not a JobSubmitted");
    };
    assert_eq!(read.payload_value(), payload);
    let client = db.client().await;
    let report = warden::log::event_store::chain::verify(&client, None).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_reads_back_a_stream() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let id = Uuid::now_v7();
    let stream = StreamId::runner(id);
    let first = store
        .append(&stream, ExpectedVersion::NO_STREAM, vec![created(id)], &meta())
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    let second = store
        .append(&stream, ExpectedVersion(1), vec![invalidated(id)], &meta())
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    assert!(second.cursor > first.cursor);

    let history = store.read_stream(&stream).await.unwrap();
    let versions: Vec<i64> = history.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(history[0].event, created(id));
    assert_eq!(history[1].event, invalidated(id));
    assert_eq!(history[0].metadata.actor, meta().actor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_or_future_expected_versions_are_conflicts() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let id = Uuid::now_v7();
    let stream = StreamId::runner(id);
    store
        .append(&stream, ExpectedVersion::NO_STREAM, vec![created(id)], &meta())
        .await
        .unwrap();

    let stale = store
        .append(&stream, ExpectedVersion::NO_STREAM, vec![created(id)], &meta())
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { expected: 0, .. })),
        "{stale:?}"
    );
    let ahead = store
        .append(&stream, ExpectedVersion(5), vec![invalidated(id)], &meta())
        .await;
    assert!(
        matches!(ahead, Err(StoreError::Conflict { expected: 5, .. })),
        "{ahead:?}"
    );
    assert_eq!(db.count_events().await, 1, "refused appends leave nothing behind");
}

/// An append sends COMMIT right behind its INSERT and read-model changes.
/// A gap (expected version ahead of the stream) must therefore abort the
/// transaction in PostgreSQL: had the guard just inserted no event, the
/// runners row of this RunnerCreated would have been committed without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_finds_a_gap_commits_nothing() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let id = Uuid::now_v7();
    let stream = StreamId::runner(id);
    let gap = store
        .append(&stream, ExpectedVersion(3), vec![created(id)], &meta())
        .await;
    assert!(matches!(gap, Err(StoreError::Conflict { expected: 3, .. })), "{gap:?}");
    let client = db.client().await;
    let runners: i64 = client
        .query_one("SELECT count(*) FROM runners WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runners, 0, "the read model changed without its event");
    assert_eq!(db.count_events().await, 0);
    // The connection went back to the pool usable: the right append works.
    store
        .append(&stream, ExpectedVersion::NO_STREAM, vec![created(id)], &meta())
        .await
        .unwrap();
    assert_eq!(db.count_events().await, 1);
}

/// An append whose caller stops waiting (an HTTP client that went away)
/// while its hand-opened transaction is open must not return the
/// connection to the pool inside that transaction: the next command on it
/// would run in, and commit, someone else's half-done transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_append_leaves_no_open_transaction_in_the_pool() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let actor = Uuid::now_v7();
    // A key for the actor inserted but not committed: the append's key
    // statement waits for it, with its BEGIN already through.
    let mut blocker = db.client().await;
    let blocking = blocker.transaction().await.unwrap();
    blocking
        .execute(
            "INSERT INTO pii_keys (subject_id, key) VALUES ($1, $2)",
            &[&actor, &vec![7u8; 32]],
        )
        .await
        .unwrap();
    let id = Uuid::now_v7();
    let metadata = Metadata {
        actor: warden::events::Actor::User { user_id: actor },
        source_ip: Some("192.0.2.7".to_owned()),
        ..meta()
    };
    let abandoned = tokio::time::timeout(
        Duration::from_millis(300),
        store.append(
            &StreamId::runner(id),
            ExpectedVersion::NO_STREAM,
            vec![created(id)],
            &metadata,
        ),
    )
    .await;
    assert!(abandoned.is_err(), "the append should still be waiting: {abandoned:?}");
    blocking.rollback().await.unwrap();
    drop(blocker);

    let client = db.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let open: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} connection(s) left idle in a transaction"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(db.count_events().await, 0, "the abandoned append committed");
    // The pool still serves appends that commit.
    for _ in 0..30 {
        let id = Uuid::now_v7();
        store
            .append(
                &StreamId::runner(id),
                ExpectedVersion::NO_STREAM,
                vec![created(id)],
                &metadata,
            )
            .await
            .unwrap();
    }
    assert_eq!(db.count_events().await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_stream_get_exactly_one_success() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let id = Uuid::now_v7();
    let stream = StreamId::runner(id);
    store
        .append(&stream, ExpectedVersion::NO_STREAM, vec![created(id)], &meta())
        .await
        .unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                store
                    .append(&stream, ExpectedVersion(1), vec![invalidated(id)], &meta())
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(db.count_events().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_refuses_update_delete_and_truncate() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let id = Uuid::now_v7();
    store
        .append(
            &StreamId::runner(id),
            ExpectedVersion::NO_STREAM,
            vec![created(id)],
            &meta(),
        )
        .await
        .unwrap();
    let client = db.client().await;
    for statement in [
        "UPDATE events SET event_type = 'Forged'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let error = client.batch_execute(statement).await.unwrap_err();
        assert!(
            error.as_db_error().is_some_and(|e| e.message().contains("append-only")),
            "{statement}: {error}"
        );
    }
    assert_eq!(db.count_events().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_sealed_and_forgotten_with_its_key() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let user = Uuid::now_v7();
    let stream = StreamId::user(user);
    let email = "erin.private@example.org";
    store
        .append(
            &stream,
            ExpectedVersion::NO_STREAM,
            vec![Event::User(UserEvent::LocalUserCreated(LocalUserCreated {
                user_id: user,
                email: Pii::plain(email),
                password_hash: Pii::plain("$argon2id$placeholder"),
                role: Role::User,
                origin: UserOrigin::CommandLine,
            }))],
            &meta(),
        )
        .await
        .unwrap();
    let stored = db.dump("events", "position").await.join("\n");
    assert!(!stored.contains("erin.private"), "email in the log: {stored}");
    let history = store.read_stream(&stream).await.unwrap();
    assert!(
        matches!(&history[0].event, Event::User(UserEvent::LocalUserCreated(e)) if e.email.as_plain() == Some(email))
    );

    store
        .append(
            &stream,
            ExpectedVersion(1),
            vec![Event::User(UserEvent::UserDeleted(UserDeleted { user_id: user }))],
            &meta(),
        )
        .await
        .unwrap();
    let history = store.read_stream(&stream).await.unwrap();
    assert!(matches!(&history[0].event, Event::User(UserEvent::LocalUserCreated(e)) if e.email == Pii::Forgotten));
    assert_eq!(history.len(), 2, "the log itself is untouched");
}

/// A transaction that took its position first but commits last: the
/// situation that makes position-ordered readers skip events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_commits_late_is_not_skipped() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let slow_id = Uuid::now_v7();
    let fast_id = Uuid::now_v7();

    // 1. A slow writer inserts (taking the lower position) but holds its
    //    transaction open.
    let mut slow_connection = db.client().await;
    let slow_tx = slow_connection.transaction().await.unwrap();
    let slow = event_store::append_in(
        &slow_tx,
        &StreamId::runner(slow_id),
        ExpectedVersion::NO_STREAM,
        vec![created(slow_id)],
        &meta(),
    )
    .await
    .unwrap();
    // 2. A fast writer commits after it, with a higher position.
    let fast = store
        .append(
            &StreamId::runner(fast_id),
            ExpectedVersion::NO_STREAM,
            vec![created(fast_id)],
            &meta(),
        )
        .await
        .unwrap();
    assert!(fast.cursor.position > slow.cursor.position);

    // 3. Both readers look now.
    let reader = db.client().await;
    let naive_first = naive_read_after(&reader, 0).await;
    assert_eq!(
        naive_first,
        [fast.cursor.position],
        "a position reader sees the fast event"
    );
    let safe_first = event_store::read_after(&reader, LogCursor::START, 100).await.unwrap();
    assert!(safe_first.is_empty(), "the safe reader waits for the older transaction");

    // 4. The slow writer commits; both readers continue from where they were.
    slow_tx.commit().await.unwrap();
    db.settle_log().await;
    let naive_next = naive_read_after(&reader, *naive_first.last().unwrap()).await;
    assert!(
        naive_next.is_empty(),
        "the naive reader has skipped the late event for good"
    );
    let safe_all = event_store::read_after(&reader, LogCursor::START, 100).await.unwrap();
    let positions: HashSet<i64> = safe_all.iter().map(|e| e.position).collect();
    assert_eq!(positions, HashSet::from([slow.cursor.position, fast.cursor.position]));
}

async fn log_settled(client: &warden::platform::db::Connection) -> bool {
    client
        .query_one(
            "SELECT log_horizon() > coalesce(max(transaction_id), 0) FROM events",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn naive_read_after(client: &warden::platform::db::Connection, after: i64) -> Vec<i64> {
    client
        .query(
            "SELECT position FROM events WHERE position > $1 ORDER BY position",
            &[&after],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Many appenders, some holding their transaction open for a while, and a
/// reader following the log at the same time: every event is delivered
/// exactly once and every stream in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_and_a_reader_see_every_event_exactly_once() {
    const WRITERS: usize = 16;
    const STREAMS_PER_WRITER: usize = 12;
    let db = TestDb::new().await;
    let store = EventStore::new(db.db.clone());
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let db = db.db.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let client = db.get().await.unwrap();
            let mut cursor = LogCursor::START;
            let mut seen = Vec::new();
            loop {
                // Caught up only when the writers are done and every
                // writing transaction is over (checked before reading; other
                // tests' transactions can hold the safe point back a while).
                let settled = done.load(Ordering::SeqCst) && log_settled(&client).await;
                let batch = event_store::read_after(&client, cursor, 50).await.unwrap();
                if batch.is_empty() {
                    if settled {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                for event in batch {
                    assert!(event.cursor() > cursor, "delivery order went backwards");
                    cursor = event.cursor();
                    seen.push(event);
                }
            }
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            let db = db.db.clone();
            tokio::spawn(async move {
                let mut written = Vec::new();
                for _ in 0..STREAMS_PER_WRITER {
                    let id = Uuid::now_v7();
                    let stream = StreamId::runner(id);
                    for (version, event) in [created(id), invalidated(id)].into_iter().enumerate() {
                        let expected = ExpectedVersion(version as i64);
                        let appended = if writer % 2 == 0 {
                            // Slow writers keep their transaction open after
                            // taking positions, so commits land out of order.
                            let mut connection = db.get().await.unwrap();
                            let tx = connection.transaction().await.unwrap();
                            let appended = event_store::append_in(&tx, &stream, expected, vec![event], &meta())
                                .await
                                .unwrap();
                            let pause = rand::thread_rng().gen_range(0..8);
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                            tx.commit().await.unwrap();
                            appended
                        } else {
                            store.append(&stream, expected, vec![event], &meta()).await.unwrap()
                        };
                        written.push(appended.event_ids[0]);
                    }
                }
                written
            })
        })
        .collect();

    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();

    let seen_ids: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(seen_ids.len(), unique.len(), "an event was delivered twice");
    assert_eq!(unique, written, "the reader missed events");
    assert_eq!(written.len(), WRITERS * STREAMS_PER_WRITER * 2);

    let mut last_version: HashMap<&StreamId, i64> = HashMap::new();
    for event in &seen {
        let previous = last_version.insert(&event.stream_id, event.stream_version).unwrap_or(0);
        assert_eq!(
            event.stream_version,
            previous + 1,
            "stream {} out of order",
            event.stream_id
        );
    }
}

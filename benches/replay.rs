//! Replay: rebuilding every read model from one million generated events,
//! next to a raw copy of the same log on the same cluster in the same run.
//!
//!     cargo bench --bench replay                     # 1,000,000 events
//!     REPLAY_EVENTS=200000 cargo bench --bench replay
//!
//! The log is generated with the real event types and codec and bulk-loaded
//! with a valid hash chain: 5% runners (RunnerCreated), 5% machines
//! (RunnerMachineRegistered), the rest jobs (JobSubmitted, JobAssigned,
//! JobFinished). Measured, in this order:
//!
//! 1. baseline: `CREATE TABLE .. AS SELECT * FROM events`, PostgreSQL
//!    reading and writing every event once with no decoding at all;
//! 2. reading and decoding the log alone (no writes): events/s;
//! 3. `warden replay` (rebuild into scratch tables, swap in; the live read
//!    models start empty, so every row is written): events/s;
//! 4. `warden replay` again, the live read models already right (the swap
//!    writes only rows that differ): events/s;
//! 5. `warden replay --verify` (rebuild aside, compare row by row): events/s;
//! 6. `warden audit verify` (recompute the hash chain): events/s;
//! 7. the baseline again, so drift shows as a gap between the two.
#![allow(clippy::unwrap_used)] // a benchmark that fails may panic

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{report, Measurement};
use serde_json::{json, Value};
use uuid::Uuid;
use warden::events::codec;
use warden::events::job::{JobAssigned, JobFinished, JobOutcome, JobSubmitted};
use warden::events::machine::{MachineInfo, RunnerMachineRegistered};
use warden::events::runner::RunnerCreated;
use warden::events::{Event, JobEvent, MachineEvent, Metadata, Pii, RunnerEvent, StreamId};
use warden::log::event_store::chain;
use warden::platform::db::Database;

const LOAD_BATCH: usize = 5000;

/// One stored row, as the event store would have written it.
struct Row {
    stream_id: String,
    stream_version: i64,
    event_id: Uuid,
    event_type: &'static str,
    schema_version: i32,
    payload: Value,
    metadata: Value,
    recorded_at: DateTime<Utc>,
    hash: Vec<u8>,
}

/// Generates the log in stream order: each stream's events follow each
/// other, so each chain is built as it goes.
struct LogGenerator {
    start: DateTime<Utc>,
    emitted: i64,
    metadata: Value,
}

impl LogGenerator {
    fn row(&mut self, stream: &StreamId, version: i64, previous: Option<&[u8]>, event: &Event) -> Row {
        let encoded = codec::encode(event);
        let recorded_at = self.start + chrono::Duration::microseconds(self.emitted);
        self.emitted += 1;
        let event_id = Uuid::now_v7();
        let content = chain::content_hash(
            stream.as_str(),
            version,
            event_id,
            encoded.event_type,
            encoded.schema_version as i32,
            &encoded.payload,
            &self.metadata,
            recorded_at,
        );
        Row {
            stream_id: stream.to_string(),
            stream_version: version,
            event_id,
            event_type: encoded.event_type,
            schema_version: encoded.schema_version as i32,
            payload: encoded.payload,
            metadata: self.metadata.clone(),
            recorded_at,
            hash: chain::link(previous, &content).to_vec(),
        }
    }

    fn runner(&mut self, n: usize) -> (Uuid, Uuid, Vec<Row>) {
        let runner_id = Uuid::now_v7();
        let stream = StreamId::runner(runner_id);
        let created = self.row(
            &stream,
            1,
            None,
            &Event::Runner(RunnerEvent::RunnerCreated(RunnerCreated {
                runner_id,
                number: None,
                token_hash: hex(&sha(&runner_id.to_string())),
                description: Some(format!("bench runner {n}")),
                tags: vec!["linux".into(), if n % 2 == 0 { "gpu" } else { "cpu" }.into()],
                priority: (n % 3) as i32,
                scope_id: None,
            })),
        );
        let system_id = format!("r_bench{n:08}");
        let machine_id = StreamId::machine_id(runner_id, &system_id);
        let machine = self.row(
            &StreamId::runner_machine(machine_id),
            1,
            None,
            &Event::Machine(MachineEvent::RunnerMachineRegistered(RunnerMachineRegistered {
                machine_id,
                runner_id,
                system_id,
                info: MachineInfo {
                    version: Some("16.5.0".into()),
                    platform: Some("linux".into()),
                    architecture: Some("amd64".into()),
                    ..MachineInfo::default()
                },
                ip_address: Some("10.0.0.1".into()),
                contacted_at: created.recorded_at,
            })),
        );
        (runner_id, machine_id, vec![created, machine])
    }

    fn job(&mut self, n: usize, runner_id: Uuid, machine_id: Uuid) -> Vec<Row> {
        let job_id = Uuid::now_v7();
        let stream = StreamId::job(job_id);
        let submitted = self.row(
            &stream,
            1,
            None,
            &Event::Job(JobEvent::JobSubmitted(JobSubmitted {
                job_id,
                number: None,
                submitted_by: Uuid::from_u128(n as u128 % 1000),
                // Bulk-loaded past the store, so not sealed: the replay
                // benchmark measures decoding and projecting, not AES.
                payload: Pii::plain(json!({"file": format!("recording-{n}.wav"), "model": "large"}).to_string()),
                required_tags: vec!["linux".into()],
                priority: 0,
                kind: Default::default(),
                input: None,
                input_name: None,
                scope_id: None,
            })),
        );
        let assigned = self.row(
            &stream,
            2,
            Some(&submitted.hash),
            &Event::Job(JobEvent::JobAssigned(JobAssigned {
                job_id,
                runner_id,
                machine_id,
            })),
        );
        let finished = self.row(
            &stream,
            3,
            Some(&assigned.hash),
            &Event::Job(JobEvent::JobFinished(JobFinished {
                job_id,
                runner_id,
                machine_id,
                outcome: JobOutcome::Succeeded,
                // Not sealed either (see the payload above).
                result: Some(Pii::plain(json!({"words": n % 5000}).to_string())),
                submitted_by: Some(Uuid::from_u128(n as u128 % 1000)),
            })),
        );
        vec![submitted, assigned, finished]
    }
}

fn sha(text: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn load(db: &Database, rows: &[Row]) {
    let connection = db.get().await.unwrap();
    let insert = connection
        .prepare(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata,
                                 recorded_at, hash)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::int[], $6::jsonb[],
                                  $7::jsonb[], $8::timestamptz[], $9::bytea[])",
        )
        .await
        .unwrap();
    for chunk in rows.chunks(LOAD_BATCH) {
        let stream_ids: Vec<&str> = chunk.iter().map(|r| r.stream_id.as_str()).collect();
        let versions: Vec<i64> = chunk.iter().map(|r| r.stream_version).collect();
        let ids: Vec<Uuid> = chunk.iter().map(|r| r.event_id).collect();
        let types: Vec<&str> = chunk.iter().map(|r| r.event_type).collect();
        let schema_versions: Vec<i32> = chunk.iter().map(|r| r.schema_version).collect();
        let payloads: Vec<&Value> = chunk.iter().map(|r| &r.payload).collect();
        let metadata: Vec<&Value> = chunk.iter().map(|r| &r.metadata).collect();
        let times: Vec<DateTime<Utc>> = chunk.iter().map(|r| r.recorded_at).collect();
        let hashes: Vec<&[u8]> = chunk.iter().map(|r| r.hash.as_slice()).collect();
        connection
            .execute(
                &insert,
                &[
                    &stream_ids,
                    &versions,
                    &ids,
                    &types,
                    &schema_versions,
                    &payloads,
                    &metadata,
                    &times,
                    &hashes,
                ],
            )
            .await
            .unwrap();
    }
}

async fn raw_copy(db: &Database, events: u64, name: &'static str) -> Measurement {
    let connection = db.get().await.unwrap();
    connection
        .batch_execute("DROP TABLE IF EXISTS events_copy")
        .await
        .unwrap();
    let started = Instant::now();
    connection
        .batch_execute("CREATE TABLE events_copy AS SELECT * FROM events")
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    connection.batch_execute("DROP TABLE events_copy").await.unwrap();
    println!("{name}: {seconds:.1} s");
    Measurement {
        name,
        per_second: events as f64 / seconds,
        p50_ms: None,
        p99_ms: None,
    }
}

fn main() {
    common::block_on(async {
        let total: usize = std::env::var("REPLAY_EVENTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        let (_dir, cluster) = common::cluster().await;
        let db = Database::new(cluster.connect_config("warden"), 8).unwrap();
        db.migrate().await.unwrap();

        let generated = Instant::now();
        let mut generator = LogGenerator {
            start: Utc::now() - chrono::Duration::days(30),
            emitted: 0,
            metadata: serde_json::to_value(Metadata::system("bench")).unwrap(),
        };
        let runners = (total / 20).max(1);
        let jobs = (total - 2 * runners) / 3;
        let mut rows = Vec::with_capacity(total);
        let mut machines = Vec::with_capacity(runners);
        for n in 0..runners {
            let (runner_id, machine_id, mut events) = generator.runner(n);
            machines.push((runner_id, machine_id));
            rows.append(&mut events);
        }
        for n in 0..jobs {
            let (runner_id, machine_id) = machines[n % machines.len()];
            rows.append(&mut generator.job(n, runner_id, machine_id));
        }
        load(&db, &rows).await;
        let events = rows.len() as u64;
        drop(rows);
        // Settled as a long-lived log would be: hint bits set, dirty
        // pages written, so no measurement pays for the load.
        let connection = db.get().await.unwrap();
        for settle in ["VACUUM ANALYZE events", "CHECKPOINT"] {
            connection.batch_execute(settle).await.unwrap();
        }
        drop(connection);
        println!(
            "generated and loaded {events} events ({runners} runners and machines, {jobs} jobs) in {:.0} s",
            generated.elapsed().as_secs_f64()
        );

        let mut results = vec![raw_copy(&db, events, "raw copy of the log (baseline, before)").await];

        let report_of = |name: &'static str, events: u64, took: Duration| {
            println!("{name}: {:.1} s", took.as_secs_f64());
            Measurement {
                name,
                per_second: events as f64 / took.as_secs_f64(),
                p50_ms: None,
                p99_ms: None,
            }
        };
        // Where a rebuild's time goes: reading and decoding alone.
        let started = Instant::now();
        let connection = db.get().await.unwrap();
        let (mut cursor, mut read) = (warden::events::LogCursor::START, 0u64);
        loop {
            let batch = warden::log::event_store::read_after(&connection, cursor, 5000)
                .await
                .unwrap();
            let Some(last) = batch.last() else { break };
            cursor = last.cursor();
            read += batch.len() as u64;
        }
        drop(connection);
        assert_eq!(read, events);
        results.push(report_of(
            "warden read + decode the log (no writes)",
            events,
            started.elapsed(),
        ));

        let started = Instant::now();
        let replayed = warden::log::replay::run(&db, false, false).await.unwrap();
        assert_eq!(replayed.events, events);
        println!("  steps: {:?} (inside run: {:.2} s)", replayed.steps, replayed.seconds);
        results.push(report_of("warden replay (rebuild + swap)", events, started.elapsed()));

        // Again, with the read models already right: the swap writes
        // only rows that differ.
        let started = Instant::now();
        let again = warden::log::replay::run(&db, false, false).await.unwrap();
        println!("  steps: {:?}", again.steps);
        results.push(report_of(
            "warden replay again (read models already right)",
            events,
            started.elapsed(),
        ));

        let started = Instant::now();
        let verified = warden::log::replay::run(&db, true, false).await.unwrap();
        assert!(verified.differences.is_empty(), "{verified:?}");
        println!("  steps: {:?}", verified.steps);
        results.push(report_of(
            "warden replay --verify (rebuild aside + compare)",
            events,
            started.elapsed(),
        ));

        let started = Instant::now();
        let chain = chain::verify(&db.get().await.unwrap(), None).await.unwrap();
        assert!(chain.problems.is_empty() && chain.unhashed == 0);
        assert_eq!(chain.events, events);
        results.push(report_of("warden audit verify (hash chain)", events, started.elapsed()));

        results.push(raw_copy(&db, events, "raw copy of the log (baseline, after)").await);
        let counts = db
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT (SELECT count(*) FROM runners), (SELECT count(*) FROM runner_machines),
                        (SELECT count(*) FROM jobs WHERE status = 'succeeded')",
                &[],
            )
            .await
            .unwrap();
        let (r, m, j): (i64, i64, i64) = (counts.get(0), counts.get(1), counts.get(2));
        assert_eq!((r as usize, m as usize, j as usize), (runners, runners, jobs));
        report(
            &format!("Replay of {events} events (events per second)"),
            &results,
            &[0, results.len() - 1],
        );
    });
}

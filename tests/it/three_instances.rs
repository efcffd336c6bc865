//! Three real `warden serve` processes on one PostgreSQL cluster, with
//! clients that spread their requests round robin over them (issue 13):
//! what a client sees does not depend on which instance answers.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;
use crate::processes::{important_lines, login, shared_tempdir, write_config, Serve, PASSWORD};

const MEMBER: &str = "member@example.org";

/// Three instances on one new database.
struct Three {
    serves: Vec<Option<Serve>>,
    urls: Vec<String>,
    db: TestDb,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Three {
    /// `runners` is YAML for the `runners:` section.
    async fn start(runners: &str) -> Three {
        let db = TestDb::new().await;
        let dir = shared_tempdir();
        let config = write_config(
            dir.path(),
            &format!(
                "security:\n  local_account:\n    mode: no_signup_hidden\n    user_provisioning:\n      \
                 0:\n        email: admin@example.org\n        password: ${{WARDEN_TEST_ADMIN_PASSWORD}}\n        \
                 is_admin: true\n      1:\n        email: {MEMBER}\n        password: ${{WARDEN_TEST_ADMIN_PASSWORD}}\n\
                 runners:\n{runners}"
            ),
        );
        let url = db.url();
        let args = ["--config", config.to_str().unwrap(), "--database-url", &url];
        let envs = [
            ("WARDEN_TEST_ADMIN_PASSWORD", PASSWORD),
            ("RUST_LOG", "warn,warden::cli=info"),
        ];
        let serves: Vec<Serve> = (0..3).map(|_| Serve::start(&args, &envs)).collect();
        Three {
            urls: serves.iter().map(|s| s.base_url.clone()).collect(),
            serves: serves.into_iter().map(Some).collect(),
            db,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    async fn call(
        &self,
        instance: usize,
        method: Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let request = self
            .http
            .request(method, format!("{}{path}", self.urls[instance % 3]))
            .bearer_auth(token);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
        .unwrap()
    }

    async fn verify(&self, instance: usize, runner_token: &str) -> StatusCode {
        self.call(instance, Method::POST, runner_token, "/api/runners/verify", None)
            .await
            .status()
    }

    async fn member_token(&self, instance: usize, admin: bool) -> reqwest::Response {
        password_login(&self.http, &self.urls[instance % 3], MEMBER, PASSWORD, admin).await
    }

    /// The instance registry as the first instance lists it.
    async fn instances(&self, admin: &str) -> Value {
        self.call(0, Method::GET, admin, "/api/admins/instances", None)
            .await
            .json()
            .await
            .unwrap()
    }

    /// Waits until every instance counts three live instances (each
    /// learns it on its own registry heartbeat, every 5 s).
    async fn until_all_see_three(&self, admin: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listed = self.instances(admin).await;
            if listed.as_array().is_some_and(|all| all.len() == 3) {
                break;
            }
            assert!(Instant::now() < deadline, "instances: {listed}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every instance has counted them at its next heartbeat.
        tokio::time::sleep(warden::platform::instances::HEARTBEAT + Duration::from_millis(500)).await;
    }

    /// Stops each instance with SIGTERM (it must end cleanly), except
    /// those already killed, which are only reaped.
    fn stop(mut self, killed: &[usize]) {
        for (n, serve) in self.serves.iter_mut().enumerate() {
            let Some(serve) = serve.take() else { continue };
            if killed.contains(&n) {
                serve.kill();
                continue;
            }
            let (clean, log) = serve.stop();
            assert!(clean, "{}", important_lines(&log));
        }
    }
}

async fn json_of(response: reqwest::Response, what: &str) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{what}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// Read-your-writes for every admin change on every instance, a Project-W
/// machine working through all three, and the runner rate limit holding
/// across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_agree_on_every_change_and_share_machines_and_limits() {
    let three = Three::start("  rate_limit:\n    per_second: 1\n    burst: 60\n").await;
    let admin = login(&three.http, &three.urls[0]).await;

    // Runners: each change through one instance, seen at once by all.
    for k in 0..6 {
        let created = json_of(
            three
                .call(k, Method::POST, &admin, "/api/admins/create_runner", Some(json!({})))
                .await,
            "create",
        )
        .await;
        let (id, token) = (created["id"].as_str().unwrap(), created["token"].as_str().unwrap());
        for j in 0..3 {
            assert_eq!(
                three.verify(j, token).await,
                StatusCode::OK,
                "created on {k}, verified on {j}"
            );
        }
        let paused = three
            .call(
                k + 1,
                Method::PATCH,
                &admin,
                &format!("/api/admins/runners/{id}"),
                Some(json!({"paused": true})),
            )
            .await;
        assert_eq!(paused.status(), StatusCode::OK);
        for j in 0..3 {
            let listed = json_of(
                three
                    .call(
                        j,
                        Method::GET,
                        &admin,
                        "/api/admins/runners?paused=true&limit=1000",
                        None,
                    )
                    .await,
                "list",
            )
            .await;
            assert!(
                listed["items"].as_array().unwrap().iter().any(|r| r["id"] == id),
                "paused on {}, not shown paused on {j}",
                (k + 1) % 3
            );
        }
        let reset = json_of(
            three
                .call(
                    k + 2,
                    Method::POST,
                    &admin,
                    &format!("/api/admins/reset_runner_token?runner_id={id}"),
                    None,
                )
                .await,
            "reset",
        )
        .await;
        let new_token = reset["token"].as_str().unwrap();
        for j in 0..3 {
            assert_eq!(
                three.verify(j, token).await,
                StatusCode::UNAUTHORIZED,
                "old token on {j}"
            );
            assert_eq!(three.verify(j, new_token).await, StatusCode::OK, "new token on {j}");
        }
        let invalidated = three
            .call(
                k,
                Method::DELETE,
                &admin,
                &format!("/api/admins/invalidate_runner?runner_id={id}"),
                None,
            )
            .await;
        assert_eq!(invalidated.status(), StatusCode::OK);
        for j in 0..3 {
            assert_eq!(
                three.verify(j, new_token).await,
                StatusCode::UNAUTHORIZED,
                "invalidated, on {j}"
            );
        }
    }

    // A Project-W machine: registered on one instance, heartbeats, job,
    // audio and result each through the next.
    let member = json_of(three.member_token(0, false).await, "member login").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = json_of(
        three
            .call(0, Method::POST, &admin, "/api/admins/create_runner", Some(json!({})))
            .await,
        "create",
    )
    .await;
    let runner_token = created["token"].as_str().unwrap().to_owned();
    let registered = json_of(
        three
            .call(
                0,
                Method::POST,
                &runner_token,
                "/api/runners/register",
                Some(
                    json!({"name": "whisper", "priority": 1, "version": "0.6.0", "git_hash": "0123abcd",
                            "source_code_url": "https://github.com/JulianFP/project-W"}),
                ),
            )
            .await,
        "register",
    )
    .await;
    let session = registered["session_token"].as_str().unwrap().to_owned();
    let runner_call = |call: &str| format!("/api/runners/{call}?session_token={session}");
    let audio: Vec<u8> = (0..256 * 1024).map(|i: usize| (i * 7 + i / 251) as u8).collect();
    let file = json_of(
        three
            .http
            .post(format!("{}/api/files?name=talk.mp3", three.urls[1]))
            .bearer_auth(&member)
            .header("content-type", "audio/mpeg")
            .body(audio.clone())
            .send()
            .await
            .unwrap(),
        "upload",
    )
    .await;
    let job = json_of(
        three
            .call(
                2,
                Method::POST,
                &member,
                "/api/jobs/project_w",
                Some(json!({"settings": {"task": "transcribe", "model": "large"}, "input_file": file["file_id"]})),
            )
            .await,
        "submit",
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut beat = 1;
    loop {
        let answer = json_of(
            three
                .call(
                    beat,
                    Method::POST,
                    &runner_token,
                    &runner_call("heartbeat"),
                    Some(json!({"progress": 0.0})),
                )
                .await,
            "heartbeat",
        )
        .await;
        beat += 1;
        if answer["job_assigned"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no job reached the machine: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = json_of(
        three
            .call(
                beat,
                Method::GET,
                &runner_token,
                &runner_call("retrieve_job_info"),
                None,
            )
            .await,
        "job info",
    )
    .await;
    assert!(info["id"].is_i64(), "{info}");
    let fetched = three
        .call(
            beat + 1,
            Method::POST,
            &runner_token,
            &runner_call("retrieve_job_audio"),
            None,
        )
        .await;
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), audio.as_slice());
    let done = json_of(
        three
            .call(
                beat + 2,
                Method::POST,
                &runner_token,
                &runner_call("submit_job_result"),
                Some(
                    json!({"error_msg": null, "transcript": {"as_txt": "hello", "as_srt": "", "as_tsv": "",
                            "as_vtt": "", "as_json": {"segments": []}}}),
                ),
            )
            .await,
        "result",
    )
    .await;
    assert_eq!(done, json!("Success"));
    for j in 0..3 {
        let seen = json_of(
            three
                .call(j, Method::GET, &member, &format!("/api/jobs/{job}"), None)
                .await,
            "job",
        )
        .await;
        assert_eq!(seen["status"], "succeeded", "on {j}");
    }

    // Roles and deletion, each seen at once by every instance.
    let me = json_of(three.call(0, Method::GET, &member, "/api/users/me", None).await, "me").await;
    let member_id = me["id"].as_str().unwrap().to_owned();
    let role = |role: &'static str, on: usize| {
        let three = &three;
        let admin = &admin;
        let path = format!("/api/admins/users/{member_id}/role");
        async move {
            let answer = three
                .call(on, Method::PUT, admin, &path, Some(json!({"role": role})))
                .await;
            assert_eq!(answer.status(), StatusCode::OK, "{role} on {on}");
        }
    };
    role("admin", 0).await;
    for j in 0..3 {
        assert_eq!(
            three.member_token(j, true).await.status(),
            StatusCode::OK,
            "promoted, admin log-in on {j}"
        );
    }
    role("user", 1).await;
    for j in 0..3 {
        assert_eq!(
            three.member_token(j, true).await.status(),
            StatusCode::FORBIDDEN,
            "demoted, admin log-in on {j}"
        );
    }
    let deleted = three
        .call(
            2,
            Method::DELETE,
            &admin,
            &format!("/api/admins/users/{member_id}"),
            None,
        )
        .await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    for j in 0..3 {
        let me = three.call(j, Method::GET, &member, "/api/users/me", None).await;
        assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "deleted user's token on {j}");
    }

    // The rate limit (burst 60, 1/s) holds across the three: each enforces
    // a third, and requests spread round robin get the configured burst.
    three.until_all_see_three(&admin).await;
    let created = json_of(
        three
            .call(0, Method::POST, &admin, "/api/admins/create_runner", Some(json!({})))
            .await,
        "create",
    )
    .await;
    let token = created["token"].as_str().unwrap();
    let started = Instant::now();
    let mut allowed = 0;
    for n in 0..180 {
        match three.verify(n, token).await {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    let refill = started.elapsed().as_secs_f64().ceil() as i32;
    eprintln!("rate limit across three instances: {allowed} of 180 allowed (burst 60, {refill} s of refill)");
    assert!(
        (54..=66 + refill).contains(&allowed),
        "{allowed} allowed; configured 60 (±10%) + {refill} refill"
    );
    three.stop(&[]);
}

/// What the machines, the submitter and the admin saw during the load.
#[derive(Default)]
struct Observed {
    /// Jobs whose submission answered 201.
    acknowledged: Vec<String>,
    /// Job ids whose result a machine delivered successfully.
    finished: Vec<String>,
    /// (runner, paused answered at, resume sent at).
    paused: Vec<(String, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
    /// (runner, invalidation answered at).
    invalidated: Vec<(String, chrono::DateTime<chrono::Utc>)>,
}

/// Hundreds of jobs through three instances while machines on all of them
/// work, an admin pauses, resumes and invalidates runners, and the leading
/// instance is killed (-9) half-way: every acknowledged job is done exactly
/// once, no assignment committed after a pause or invalidation answered,
/// and another instance leads within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_under_load_assign_each_job_once_and_survive_the_leaders_kill() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    const JOBS: usize = 300;
    const SLOTS: usize = 4;

    let three = Arc::new(Three::start("  rate_limit:\n    per_second: 100000\n    burst: 100000\n").await);
    let admin = login(&three.http, &three.urls[0]).await;
    let member = json_of(three.member_token(0, false).await, "member login").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let killed = Arc::new(AtomicUsize::new(usize::MAX));
    // Round robin over the instances still running.
    let pick = {
        let killed = Arc::clone(&killed);
        move |n: usize| {
            let n = n % 3;
            if n == killed.load(Ordering::SeqCst) {
                (n + 1) % 3
            } else {
                n
            }
        }
    };
    let create = |on: usize| {
        let three = Arc::clone(&three);
        let admin = admin.clone();
        async move {
            let created = json_of(
                three
                    .call(on, Method::POST, &admin, "/api/admins/create_runner", Some(json!({})))
                    .await,
                "create",
            )
            .await;
            (
                created["id"].as_str().unwrap().to_owned(),
                created["token"].as_str().unwrap().to_owned(),
            )
        }
    };
    let mut slots = Vec::new();
    for slot in 0..SLOTS {
        slots.push(create(slot).await);
    }
    let slots = Arc::new(Mutex::new(slots));
    let observed = Arc::new(Mutex::new(Observed::default()));
    let stop = Arc::new(AtomicBool::new(false));

    // Two machines per runner slot, each request on the next instance.
    let mut machines = Vec::new();
    for machine in 0..SLOTS * 2 {
        let (three, slots, observed, stop, pick) = (
            Arc::clone(&three),
            Arc::clone(&slots),
            Arc::clone(&observed),
            Arc::clone(&stop),
            pick.clone(),
        );
        machines.push(tokio::spawn(async move {
            let system_id = format!("r_load{machine:07}");
            let mut n = machine;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let token = slots.lock().unwrap()[machine % SLOTS].1.clone();
                let asked = three
                    .http
                    .post(format!("{}/api/runners/jobs/request", three.urls[pick(n)]))
                    .bearer_auth(&token)
                    .json(&json!({"system_id": system_id, "wait_seconds": 1}))
                    .send()
                    .await;
                let Ok(asked) = asked else { continue }; // a killed instance
                if asked.status() != StatusCode::OK {
                    // 204 nothing, 401 invalidated (the slot gets a new runner)
                    if asked.status() == StatusCode::UNAUTHORIZED {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    continue;
                }
                let Ok(job) = asked.json::<Value>().await else { continue };
                let id = job["id"].as_str().unwrap().to_owned();
                // Deliver the result, through the next instance (again on
                // another if that one was just killed).
                for attempt in 1..=3 {
                    let done = three
                        .http
                        .post(format!(
                            "{}/api/runners/jobs/{id}/result",
                            three.urls[pick(n + attempt)]
                        ))
                        .bearer_auth(&token)
                        .json(&json!({"system_id": system_id, "outcome": "succeeded"}))
                        .send()
                        .await;
                    match done {
                        Ok(done) if done.status() == StatusCode::OK => {
                            observed.lock().unwrap().finished.push(id.clone());
                            break;
                        }
                        Ok(_) => break, // requeued or runner gone meanwhile
                        Err(_) => continue,
                    }
                }
            }
        }));
    }

    // The admin: pauses and resumes runners, invalidates and replaces one
    // every 100 submissions.
    let chaos = {
        let (three, slots, observed, stop, admin, pick) = (
            Arc::clone(&three),
            Arc::clone(&slots),
            Arc::clone(&observed),
            Arc::clone(&stop),
            admin.clone(),
            pick.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let runner = slots.lock().unwrap()[n % SLOTS].0.clone();
                let path = format!("/api/admins/runners/{runner}");
                let Ok(paused) = three
                    .http
                    .patch(format!("{}{path}", three.urls[pick(n)]))
                    .bearer_auth(&admin)
                    .json(&json!({"paused": true}))
                    .send()
                    .await
                else {
                    continue;
                };
                if paused.status() != StatusCode::OK {
                    continue; // invalidated meanwhile
                }
                let paused_at = chrono::Utc::now();
                tokio::time::sleep(Duration::from_millis(60)).await;
                let resume_sent = chrono::Utc::now();
                observed
                    .lock()
                    .unwrap()
                    .paused
                    .push((runner.clone(), paused_at, resume_sent));
                for attempt in 1..=3 {
                    let resumed = three
                        .http
                        .patch(format!("{}{path}", three.urls[pick(n + attempt)]))
                        .bearer_auth(&admin)
                        .json(&json!({"paused": false}))
                        .send()
                        .await;
                    if resumed.is_ok() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    // The submitter; the leader dies half-way.
    let mut kill_report = None;
    for n in 0..JOBS {
        if n > 0 && n % 100 == 0 {
            let slot = n / 100 % SLOTS;
            let old = slots.lock().unwrap()[slot].0.clone();
            let invalidated = three
                .call(
                    pick(n),
                    Method::DELETE,
                    &admin,
                    &format!("/api/admins/invalidate_runner?runner_id={old}"),
                    None,
                )
                .await;
            assert_eq!(invalidated.status(), StatusCode::OK);
            observed.lock().unwrap().invalidated.push((old, chrono::Utc::now()));
            let replacement = create(pick(n + 1)).await;
            slots.lock().unwrap()[slot] = replacement;
        }
        if n == JOBS / 2 {
            kill_report = Some(kill_the_leader(&three, &admin, &killed).await);
        }
        let submitted = three
            .call(pick(n), Method::POST, &member, "/api/jobs", Some(json!({"payload": n})))
            .await;
        assert_eq!(submitted.status(), StatusCode::CREATED);
        let id = submitted.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        observed.lock().unwrap().acknowledged.push(id);
    }

    // Every acknowledged job gets done.
    let client = three.db.client().await;
    let acknowledged: Vec<uuid::Uuid> = observed
        .lock()
        .unwrap()
        .acknowledged
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = count(
            &client,
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'succeeded'",
            &[&acknowledged],
        )
        .await;
        if done == JOBS as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {JOBS} jobs done");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    chaos.await.unwrap();
    for machine in machines {
        machine.await.unwrap();
    }
    let observed = std::mem::take(&mut *observed.lock().unwrap());

    // Each job delivered once.
    let mut finished = observed.finished.clone();
    finished.sort();
    let before = finished.len();
    finished.dedup();
    assert_eq!(before, finished.len(), "a job's result was accepted twice");
    // (A result whose answer died with the killed instance is accepted
    // but not seen by its machine: the log says what was accepted.)
    assert!(finished.len() <= JOBS);
    let finished_once = count(
        &client,
        "SELECT count(*) FROM (
             SELECT stream_id FROM events WHERE event_type = 'JobFinished'
             GROUP BY stream_id HAVING count(*) = 1
         ) AS once",
        &[],
    )
    .await;
    let finished_events = count(
        &client,
        "SELECT count(*) FROM events WHERE event_type = 'JobFinished'",
        &[],
    )
    .await;
    assert_eq!(
        (finished_once, finished_events),
        (JOBS as i64, JOBS as i64),
        "each job finished once in the log"
    );

    // One assignment per job, plus one per requeue.
    let doubles = count(
        &client,
        "SELECT count(*) FROM (
             SELECT stream_id FROM events
             WHERE stream_id IN (SELECT stream_id FROM events WHERE event_type = 'JobSubmitted')
             GROUP BY stream_id
             HAVING count(*) FILTER (WHERE event_type = 'JobAssigned')
                    <> 1 + count(*) FILTER (WHERE event_type = 'JobRequeued')
         ) AS odd",
        &[],
    )
    .await;
    let assignments = count(
        &client,
        "SELECT count(*) FROM events WHERE event_type = 'JobAssigned'",
        &[],
    )
    .await;
    assert!(assignments >= JOBS as i64);
    assert_eq!(doubles, 0, "jobs assigned more often than requeued + 1");

    // No assignment committed after a pause or invalidation answered.
    let rows = client
        .query(
            "SELECT payload->>'runner_id', pg_xact_commit_timestamp(xmin) FROM events WHERE event_type = 'JobAssigned'",
            &[],
        )
        .await
        .unwrap();
    let mut checked = 0;
    for row in &rows {
        let runner: String = row.get(0);
        let committed: chrono::DateTime<chrono::Utc> = row.get(1);
        for (paused, answered, resume_sent) in &observed.paused {
            assert!(
                !(paused == &runner && committed > *answered && committed < *resume_sent),
                "runner {runner} got a job committed at {committed}, after its pause answered at {answered}"
            );
        }
        for (gone, answered) in &observed.invalidated {
            assert!(
                !(gone == &runner && committed > *answered),
                "runner {runner} got a job committed at {committed}, after its invalidation answered at {answered}"
            );
        }
        checked += 1;
    }
    let (took, leader) = kill_report.unwrap();
    eprintln!(
        "{JOBS} jobs, {assignments} assignments ({checked} checked against {} pauses and {} invalidations); \
         killed instance {leader}, a survivor led after {took:?}",
        observed.paused.len(),
        observed.invalidated.len()
    );
    assert!(
        observed.paused.len() >= 10,
        "too few pauses raced: {}",
        observed.paused.len()
    );
    assert!(took < Duration::from_secs(2), "leadership took {took:?} to move");
    drop(client);
    Arc::into_inner(three).unwrap().stop(&[leader]);
}

/// The one number `sql` counts.
async fn count(
    client: &warden::platform::db::Connection,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    client.query_one(sql, params).await.unwrap().get(0)
}

/// Kills (-9) the instance that leads the projectors; returns how long
/// after the kill a command on a survivor answered (it waits for the
/// projectors, so someone leads them again), and which instance died.
async fn kill_the_leader(
    three: &std::sync::Arc<Three>,
    admin: &str,
    killed: &std::sync::atomic::AtomicUsize,
) -> (Duration, usize) {
    // The registry learns what each instance leads on its heartbeat
    // (every 5 s): wait until one lists the projectors.
    let deadline = Instant::now() + Duration::from_secs(15);
    let leader_pid = loop {
        let listed = three.instances(admin).await;
        let leader = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["leads"].as_array().unwrap().iter().any(|l| l == "runners"))
            .map(|i| i["pid"].as_i64().unwrap());
        if let Some(pid) = leader {
            break pid;
        }
        assert!(Instant::now() < deadline, "no leader listed: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leader = three
        .serves
        .iter()
        .position(|s| s.as_ref().is_some_and(|s| s.pid() as i64 == leader_pid))
        .expect("the leader is one of ours");
    // Shared behind an Arc: kill through the pid; the Serve reaps it at stop.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed_at = Instant::now();
    killed.store(leader, std::sync::atomic::Ordering::SeqCst);
    let survivor = (leader + 1) % 3;
    let created = three
        .call(
            survivor,
            Method::POST,
            admin,
            "/api/admins/create_runner",
            Some(json!({})),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let took = killed_at.elapsed();
    let token = created.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_survivor = 3 - leader - survivor;
    assert_eq!(three.verify(other_survivor, &token).await, StatusCode::OK);
    (took, leader)
}

//! The Project-W runner protocol, driven by a client written from
//! ../shared/project-w-runner-protocol.md that validates every answer as
//! strictly as the real runner's pydantic models do: status 200, the exact
//! `Content-Type: application/json`, every required field with its JSON
//! type (integer ids, booleans), the audio's media type.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

/// Project-W's own default settings (the protocol page's example).
fn settings() -> Value {
    json!({
        "email_notification": false,
        "task": "transcribe",
        "model": "large",
        "language": null,
        "alignment": {
            "processing": {"highlight_words": false, "max_line_count": null, "max_line_width": null},
            "return_char_alignments": false,
            "interpolate_method": "nearest"
        },
        "diarization": null,
        "vad_settings": {"vad_onset": 0.5, "vad_offset": 0.363, "chunk_size": 30},
        "asr_settings": {
            "beam_size": 5, "patience": 1.0, "length_penalty": 1.0, "temperature": 0.0,
            "temperature_increment_on_fallback": 0.2, "compression_ratio_threshold": 2.4,
            "log_prob_threshold": -1.0, "no_speech_threshold": 0.6,
            "initial_prompt": null, "suppress_tokens": [-1], "suppress_numerals": false
        }
    })
}

/// A runner machine that speaks the protocol and checks answers like the
/// real runner.
struct Runner<'a> {
    app: &'a TestApp,
    token: String,
    session: String,
}

/// The JSON of an answer, as the runner accepts it: 200 and the exact
/// content type.
async fn strict_json(response: reqwest::Response, call: &str) -> Value {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{call}: {text}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{call}: content type"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{call}: not JSON ({e}): {text}"))
}

impl<'a> Runner<'a> {
    async fn register(app: &'a TestApp, token: &str, name: &str) -> Runner<'a> {
        let response = app
            .post_json(
                token,
                "/api/runners/register",
                json!({"name": name, "priority": 1, "version": "0.6.0", "git_hash": "0123abcd",
                       "source_code_url": "https://github.com/JulianFP/project-W"}),
            )
            .await;
        let body = strict_json(response, "register").await;
        assert!(body["id"].is_i64(), "register: id must be an integer: {body}");
        let session = body["session_token"]
            .as_str()
            .unwrap_or_else(|| panic!("register: session_token must be a string: {body}"))
            .to_owned();
        Runner {
            app,
            token: token.to_owned(),
            session,
        }
    }

    /// The same machine (runner token and session) talking to `app`.
    fn through<'b>(&self, app: &'b TestApp) -> Runner<'b> {
        Runner {
            app,
            token: self.token.clone(),
            session: self.session.clone(),
        }
    }

    fn url(&self, call: &str) -> String {
        self.app
            .url(&format!("/api/runners/{call}?session_token={}", self.session))
    }

    async fn post(&self, call: &str, body: Option<Value>) -> reqwest::Response {
        let request = self.app.http.post(self.url(call)).bearer_auth(&self.token);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
        .unwrap()
    }

    /// `(abort, job_assigned)`; both must be booleans.
    async fn heartbeat(&self, progress: f64) -> (bool, bool) {
        let body = strict_json(
            self.post("heartbeat", Some(json!({ "progress": progress }))).await,
            "heartbeat",
        )
        .await;
        let abort = body["abort"]
            .as_bool()
            .unwrap_or_else(|| panic!("heartbeat: abort: {body}"));
        let assigned = body["job_assigned"]
            .as_bool()
            .unwrap_or_else(|| panic!("heartbeat: job_assigned: {body}"));
        assert!(!(abort && assigned), "abort comes with job_assigned false: {body}");
        (abort, assigned)
    }

    async fn wait_for_job(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.heartbeat(0.0).await.1 {
            assert!(Instant::now() < deadline, "no job reached the machine");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `{id, settings}`: an integer id and every required settings key.
    async fn job_info(&self) -> (i64, Value) {
        let response = self
            .app
            .http
            .get(self.url("retrieve_job_info"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let body = strict_json(response, "retrieve_job_info").await;
        let id = body["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("job id must be an integer: {body}"));
        let settings = body["settings"].clone();
        for key in [
            "email_notification",
            "task",
            "model",
            "language",
            "alignment",
            "diarization",
            "vad_settings",
            "asr_settings",
        ] {
            assert!(settings.get(key).is_some(), "settings lack {key}: {settings}");
        }
        (id, settings)
    }

    async fn audio(&self) -> (String, Vec<u8>) {
        let response = self.post("retrieve_job_audio", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let media_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            media_type.starts_with("audio/") || media_type.starts_with("video/"),
            "{media_type}"
        );
        (media_type, response.bytes().await.unwrap().to_vec())
    }

    async fn submit(&self, body: Value) {
        let answer = strict_json(self.post("submit_job_result", Some(body)).await, "submit_job_result").await;
        assert_eq!(answer, json!("Success"));
    }
}

/// Uploads `bytes` as the user's file; returns its id.
async fn upload(app: &TestApp, user: &str, bytes: Vec<u8>, media_type: &str) -> String {
    let response = app
        .http
        .post(app.url("/api/files?name=talk.mp3"))
        .bearer_auth(user)
        .header("content-type", media_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["file_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn submit_project_w_job(app: &TestApp, user: &str, file_id: &str) -> String {
    let response = app
        .post_json(
            user,
            "/api/jobs/project_w",
            json!({"settings": settings(), "input_file": file_id}),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        response.text().await.unwrap()
    );
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Bytes that are not all alike (a few MB).
fn audio_bytes(megabytes: usize) -> Vec<u8> {
    (0..megabytes * 1024 * 1024).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_w_runner_does_a_job_from_register_to_transcript() {
    let mut config = test_config();
    // Every progress report is recorded (none throttled): the scale shows.
    config.runners.progress_record_interval = Duration::ZERO;
    let app = TestApp::start_with(config).await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, token) = app.create_runner(&admin).await;
    let runner = Runner::register(&app, &token, "whisper-1").await;
    assert_eq!(runner.heartbeat(0.0).await, (false, false));
    let no_job = app
        .http
        .get(runner.url("retrieve_job_info"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_error(no_job, StatusCode::BAD_REQUEST, "no_job_assigned").await;

    // A native job never goes to a Project-W machine.
    let native = app.submit_job(&user, json!({"cmd": "make"}), &[], 0).await;

    let audio = audio_bytes(3);
    let file = upload(&app, &user, audio.clone(), "audio/mpeg").await;
    let job = submit_project_w_job(&app, &user, &file).await;
    runner.wait_for_job().await;
    let (number, got_settings) = runner.job_info().await;
    assert_eq!(got_settings, settings(), "settings come back exactly as submitted");
    assert_eq!(number, app.job(&user, &job).await["number"].as_i64().unwrap());
    let (media_type, bytes) = runner.audio().await;
    assert_eq!(media_type, "audio/mpeg");
    assert!(bytes == audio, "the audio's bytes ({} of {})", bytes.len(), audio.len());
    assert_eq!(runner.heartbeat(42.5).await, (false, true));
    assert!((app.job(&user, &job).await["progress"].as_f64().unwrap() - 0.425).abs() < 1e-9);
    assert_eq!(app.job(&user, &native).await["status"], "queued");

    // A transcript of several MB in all five formats.
    let long = "word ".repeat(300_000);
    runner
        .submit(json!({"error_msg": null, "transcript": {
            "as_txt": long, "as_srt": format!("1\n00:00:00,000 --> 00:00:01,000\n{long}"),
            "as_tsv": "start\tend\ttext\n0\t1000\thello", "as_vtt": "WEBVTT\n\n00:00.000 --> 00:01.000\nhello",
            "as_json": {"segments": [{"start": 0.0, "end": 1.0, "text": "hello"}]}}}))
        .await;
    assert_eq!(app.job(&user, &job).await["status"], "succeeded");
    for (format, expected) in [
        ("txt", Some(long.as_str())),
        ("tsv", Some("start\tend\ttext\n0\t1000\thello")),
        ("json", None),
    ] {
        let response = app
            .get_json(&user, &format!("/api/jobs/{job}/result?format={format}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{format}");
        let text = response.text().await.unwrap();
        match expected {
            Some(expected) => assert_eq!(text, expected, "{format}"),
            None => assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap()["segments"][0]["text"],
                "hello"
            ),
        }
    }
    // Only the submitter (or an admin) reads results and files.
    let (_, other) = (
        (),
        app.token(ADMIN_EMAIL, ADMIN_PASSWORD, false).await, // an admin without admin scope is a user
    );
    assert_error(
        app.get_json(&other, &format!("/api/jobs/{job}/result?format=txt"))
            .await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    )
    .await;
    assert_error(
        app.get_json(&other, &format!("/api/files/{file}")).await,
        StatusCode::NOT_FOUND,
        "file_not_found",
    )
    .await;
    let own = app.get_json(&user, &format!("/api/files/{file}")).await;
    assert_eq!(own.status(), StatusCode::OK);
    assert!(own.bytes().await.unwrap().to_vec() == audio);

    // Deleting a user deletes their files (inputs and results).
    let me = app
        .get_json(&user, "/api/users/me")
        .await
        .json::<Value>()
        .await
        .unwrap();
    let user_id: uuid::Uuid = me["id"].as_str().unwrap().parse().unwrap();
    warden::identity::accounts::delete_user(&app.state.commands, user_id, &warden::events::Metadata::system("test"))
        .await
        .unwrap();
    let left: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM files WHERE owner_id = $1", &[&user_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the deleted user's files are gone");

    // Unregistering ends the session: the next call is refused.
    assert_eq!(runner.post("unregister", None).await.status(), StatusCode::OK);
    let after = runner.post("heartbeat", Some(json!({"progress": 0.0}))).await;
    assert_error(after, StatusCode::FORBIDDEN, "invalid_session").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_cancel_invalidation_and_foreign_sessions() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (runner_id, token) = app.create_runner(&admin).await;
    let (_, other_token) = app.create_runner(&admin).await;
    let first = Runner::register(&app, &token, "one").await;
    let second = Runner::register(&app, &token, "two").await;

    // A session token of another runner is refused.
    let stolen = Runner {
        app: &app,
        token: other_token.clone(),
        session: first.session.clone(),
    };
    let refused = stolen.post("heartbeat", Some(json!({"progress": 0.0}))).await;
    assert_error(refused, StatusCode::FORBIDDEN, "invalid_session").await;
    // A valid session with a wrong runner token: the runner token's error,
    // although both are checked in one round trip.
    let forged = Runner {
        app: &app,
        token: format!(
            "{}{}",
            &token[..token.len() - 1],
            if token.ends_with('x') { 'y' } else { 'x' }
        ),
        session: first.session.clone(),
    };
    let refused = forged.post("heartbeat", Some(json!({"progress": 0.0}))).await;
    assert_error(refused, StatusCode::UNAUTHORIZED, "invalid_runner_token").await;
    let garbage = Runner {
        app: &app,
        token: token.clone(),
        session: "wdst_nope".into(),
    };
    let refused = garbage.post("heartbeat", Some(json!({"progress": 0.0}))).await;
    assert_error(refused, StatusCode::FORBIDDEN, "invalid_session").await;
    let out_of_range = first.post("heartbeat", Some(json!({"progress": 100.5}))).await;
    assert_eq!(out_of_range.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Two sessions of one token never hold the same job.
    let file = upload(&app, &user, audio_bytes(1), "audio/wav").await;
    let a = submit_project_w_job(&app, &user, &file).await;
    let b = submit_project_w_job(&app, &user, &file).await;
    first.wait_for_job().await;
    second.wait_for_job().await;
    let (one, _) = first.job_info().await;
    let (two, _) = second.job_info().await;
    assert_ne!(one, two);
    let numbers = [
        app.job(&user, &a).await["number"].as_i64().unwrap(),
        app.job(&user, &b).await["number"].as_i64().unwrap(),
    ];
    assert!(numbers.contains(&one) && numbers.contains(&two));

    // Cancel during work: the heartbeat says abort, job info answers 405,
    // and an error message then ends the job as cancelled.
    let job_of_first = if numbers[0] == one { &a } else { &b };
    let cancel = app
        .post_json(&user, &format!("/api/jobs/{job_of_first}/cancel"), json!({}))
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    assert_eq!(first.heartbeat(10.0).await, (true, false));
    let info = app
        .http
        .get(first.url("retrieve_job_info"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_error(info, StatusCode::METHOD_NOT_ALLOWED, "job_aborted").await;
    first
        .submit(json!({"error_msg": "job was aborted", "transcript": null}))
        .await;
    assert_eq!(app.job(&user, job_of_first).await["status"], "cancelled");

    // Invalidation during work: the job goes back to the queue and the
    // old session is refused (the token is).
    let job_of_second = if numbers[0] == two { &a } else { &b };
    assert_eq!(app.invalidate_runner(&admin, &runner_id).await.status(), StatusCode::OK);
    app.wait_until_queued(
        &user,
        job_of_second,
        Duration::from_secs(10),
        "the job was not requeued",
    )
    .await;
    let gone = second.post("heartbeat", Some(json!({"progress": 0.0}))).await;
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// A machine that stops sending heartbeats loses its session and its job
/// after `runners.online_timeout`; the job goes to another machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_machine_loses_its_session_and_its_job() {
    let mut config = test_config();
    config.runners.online_timeout = Duration::from_secs(2);
    let app = TestApp::start_with(config).await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, token) = app.create_runner(&admin).await;
    let silent = Runner::register(&app, &token, "silent").await;
    let file = upload(&app, &user, audio_bytes(1), "audio/wav").await;
    let job = submit_project_w_job(&app, &user, &file).await;
    silent.wait_for_job().await;
    assert_eq!(app.job(&user, &job).await["status"], "assigned");

    // Silence: the sweeper ends the session and requeues the job.
    app.wait_until_queued(&user, &job, Duration::from_secs(15), "the silent machine kept its job")
        .await;
    let later = silent.post("heartbeat", Some(json!({"progress": 0.0}))).await;
    assert_error(later, StatusCode::FORBIDDEN, "invalid_session").await;
    let audit: Value = app
        .get_json(&admin, &format!("/api/admins/audit?stream=job-{job}&type=JobRequeued"))
        .await
        .json()
        .await
        .unwrap();
    let requeue = &audit["entries"][0];
    assert_eq!(requeue["data"]["reason"], "runner machine silent", "{audit}");
    assert_eq!(requeue["actor"]["component"], "silent-machines", "{audit}");

    // A machine that registers again gets it.
    let back = Runner::register(&app, &token, "back").await;
    back.wait_for_job().await;
    assert_eq!(app.job(&user, &job).await["status"], "assigned");
    app.stop().await;
}

/// A Project-W machine that registered through one instance and then
/// talks to another (a load balancer without sticky sessions) gets its
/// job there: the session is shared, and the second instance puts the
/// machine online on its first heartbeat. (Before, only the registering
/// instance offered it work, and not at all once its heartbeats went
/// elsewhere.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_registered_on_one_instance_works_through_another() {
    let mut config = test_config();
    config.runners.online_timeout = Duration::from_secs(1);
    let (first, second) = TestApp::start_two(config).await;
    let admin = first.admin_token().await;
    let user = second.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, token) = first.create_runner(&admin).await;
    let registered = Runner::register(&first, &token, "whisper-elsewhere").await;
    let elsewhere = registered.through(&second);
    // Only the second instance hears from it: the first forgets it.
    for _ in 0..8 {
        assert_eq!(elsewhere.heartbeat(0.0).await, (false, false));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let file = upload(&second, &user, audio_bytes(1), "audio/mpeg").await;
    let job = submit_project_w_job(&second, &user, &file).await;
    elsewhere.wait_for_job().await;
    let (number, _) = elsewhere.job_info().await;
    assert_eq!(number, second.job(&user, &job).await["number"].as_i64().unwrap());
    second.stop().await;
    first.stop().await;
}

/// 64 machines of one token sending heartbeats at once, for a few
/// seconds: every heartbeat answers 200 (before, some answered 503
/// `database_unavailable` and one 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_machines_heartbeating_at_once_all_get_answers() {
    let mut config = test_config();
    config.runners.rate_limit.per_second = 1_000_000;
    config.runners.rate_limit.burst = 1_000_000;
    let app = std::sync::Arc::new(TestApp::start_with(config).await);
    let admin = app.admin_token().await;
    let (_, token) = app.create_runner(&admin).await;
    let mut sessions = Vec::new();
    for n in 0..64 {
        sessions.push(Runner::register(&app, &token, &format!("busy-{n}")).await.session);
    }
    let deadline = Instant::now() + Duration::from_secs(4);
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|session| {
            let (app, token) = (std::sync::Arc::clone(&app), token.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut answered = 0;
                while Instant::now() < deadline {
                    let response = app
                        .http
                        .post(app.url(&format!("/api/runners/heartbeat?session_token={session}")))
                        .bearer_auth(&token)
                        .json(&json!({"progress": 0.0}))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    if status != StatusCode::OK {
                        failures.push(format!("{status}: {}", response.text().await.unwrap()));
                    }
                    answered += 1;
                }
                (answered, failures)
            })
        })
        .collect();
    let mut answered = 0;
    let mut failures = Vec::new();
    for task in tasks {
        let (n, failed) = task.await.unwrap();
        answered += n;
        failures.extend(failed);
    }
    eprintln!("{answered} heartbeats in 4 s");
    assert!(
        failures.is_empty(),
        "{} of {answered} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

/// Heartbeats of an idle machine until one is answered from the second
/// instance's heartbeat cache (the cache is usable once its first ping
/// came back).
async fn until_cached(machine: &Runner<'_>) {
    let cache = &machine.app.state.fleet.heartbeat_cache;
    let before = cache.hits();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.hits() == before {
        assert!(Instant::now() < deadline, "no heartbeat was answered from the cache");
        assert_eq!(machine.heartbeat(0.0).await, (false, false));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Idle heartbeats answered from one instance's cache still see, at once,
/// what another instance changed: a job for the machine, its runner's
/// invalidation or token reset, the end of its session. (Each step fails
/// without the trigger that notifies it: the cached answer would be 200
/// with no job for a minute.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_heartbeats_see_changes_made_through_another_instance() {
    let (first, second) = TestApp::start_two(test_config()).await;
    let admin = first.admin_token().await;
    let user = second.token(USER_EMAIL, USER_PASSWORD, false).await;

    // A job submitted through the first instance.
    let (runner_id, token) = first.create_runner(&admin).await;
    let working = Runner::register(&first, &token, "working").await.through(&second);
    until_cached(&working).await;
    let file = upload(&first, &user, audio_bytes(1), "audio/wav").await;
    let job = submit_project_w_job(&first, &user, &file).await;
    working.wait_for_job().await;
    let (number, _) = working.job_info().await;
    assert_eq!(number, first.job(&user, &job).await["number"].as_i64().unwrap());
    // Ended, so the invalidation below has no job to requeue.
    working
        .submit(json!({"error_msg": "stopped by the test", "transcript": null}))
        .await;

    // The runner invalidated through the first instance.
    let idle = Runner::register(&first, &token, "idle").await.through(&second);
    until_cached(&idle).await;
    assert_eq!(
        first.invalidate_runner(&admin, &runner_id).await.status(),
        StatusCode::OK
    );
    let refused = idle.post("heartbeat", Some(json!({"progress": 0.0}))).await;
    assert_error(refused, StatusCode::UNAUTHORIZED, "runner_invalidated").await;

    // The token reset through the first instance: the old token stops.
    let (runner_id, token) = first.create_runner(&admin).await;
    let idle = Runner::register(&first, &token, "reset").await.through(&second);
    until_cached(&idle).await;
    let reset = first
        .post_json(
            &admin,
            &format!("/api/admins/reset_runner_token?runner_id={runner_id}"),
            json!({}),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::OK);
    let refused = idle.post("heartbeat", Some(json!({"progress": 0.0}))).await;
    assert_error(refused, StatusCode::UNAUTHORIZED, "invalid_runner_token").await;

    // The session ended through the first instance.
    let (_, token) = first.create_runner(&admin).await;
    let registered = Runner::register(&first, &token, "leaving").await;
    let idle = registered.through(&second);
    until_cached(&idle).await;
    let gone = strict_json(registered.post("unregister", None).await, "unregister").await;
    assert_eq!(gone, json!("Success"));
    let refused = idle.post("heartbeat", Some(json!({"progress": 0.0}))).await;
    assert_error(refused, StatusCode::FORBIDDEN, "invalid_session").await;

    second.stop().await;
    first.stop().await;
}

/// An instance cut off from the database (no reset, no answer) stops
/// answering heartbeats from its cache before an invalidation made through
/// another instance answers: its own pings no longer come back, and the
/// invalidation answers only after they would have had to. (Without that
/// wait the cut-off instance answered 200 for the invalidated runner.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_instance_answers_no_cached_heartbeat_after_an_invalidation() {
    let db = TestDb::new().await;
    let proxy = BlackHoleProxy::start().await;
    let cut_off = TestApp::start_on(proxy.in_front_of(&db), test_config()).await;
    let healthy = TestApp::start_on(db, test_config()).await;
    let admin = healthy.admin_token().await;
    let (runner_id, token) = healthy.create_runner(&admin).await;
    let registered = Runner::register(&healthy, &token, "behind-the-cut").await;
    let cached = registered.through(&cut_off);
    until_cached(&cached).await;

    proxy.black_hole();
    assert_eq!(
        healthy.invalidate_runner(&admin, &runner_id).await.status(),
        StatusCode::OK
    );
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let answer = probe
        .post(cached.url("heartbeat"))
        .bearer_auth(&cached.token)
        .json(&json!({"progress": 0.0}))
        .send()
        .await;
    assert!(
        answer.as_ref().map_or(true, |r| r.status() != StatusCode::OK),
        "a cut-off instance answered a heartbeat of an invalidated runner"
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), cut_off.stop()).await;
    healthy.stop().await;
}

/// Waits until `check` holds for the job's view.
async fn wait_for_job_state(
    app: &TestApp,
    user: &str,
    job: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view = app.job(user, job).await;
        if check(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "the job never got there: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 12 of the bounded-resources issue, replayed with the strict
/// client: a job reaches a machine (assigned) that has not fetched it, and
/// its submitter cancels it. It used to stay `assigned` with
/// `cancel_requested`, every heartbeat answering `{abort: true,
/// job_assigned: false}` to a runner that ignores abort when idle: the
/// machine never got another job. Now the job ends cancelled at once,
/// the machine is never told to abort, and takes the next job. A job the
/// machine does not fetch in time goes back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_before_its_machine_fetched_it_frees_the_machine() {
    let mut config = test_config();
    config.runners.retrieve_timeout = Duration::from_secs(2);
    // The sweeper runs every quarter of this (at least every second).
    config.runners.online_timeout = Duration::from_secs(4);
    let app = TestApp::start_with(config).await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, token) = app.create_runner(&admin).await;
    let machine = Runner::register(&app, &token, "whisper-1").await;
    assert_eq!(machine.heartbeat(0.0).await, (false, false));

    let file = upload(&app, &user, audio_bytes(1), "audio/mpeg").await;
    let first = submit_project_w_job(&app, &user, &file).await;
    wait_for_job_state(&app, &user, &first, Duration::from_secs(3), |job| {
        job["status"] == "assigned"
    })
    .await;
    let cancel = app
        .post_json(&user, &format!("/api/jobs/{first}/cancel"), json!({}))
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    assert_eq!(app.job(&user, &first).await["status"], "cancelled", "ended at once");
    for _ in 0..3 {
        assert_eq!(
            machine.heartbeat(0.0).await,
            (false, false),
            "abort said to an idle machine"
        );
    }

    // The machine is free: the next job reaches it and is done.
    let second = submit_project_w_job(&app, &user, &file).await;
    machine.wait_for_job().await;
    let (number, _) = machine.job_info().await;
    assert_eq!(number, app.job(&user, &second).await["number"].as_i64().unwrap());
    machine.audio().await;
    machine
        .submit(json!({"error_msg": null, "transcript": {
            "as_txt": "hi", "as_srt": "1", "as_tsv": "t", "as_vtt": "WEBVTT", "as_json": {"text": "hi"}}}))
        .await;
    assert_eq!(app.job(&user, &second).await["status"], "succeeded");

    // Assigned, never fetched (a runner that restarted between the
    // heartbeat and its fetch, say; it keeps its session alive): back to
    // the queue within the bound, then fetched and done.
    let third = submit_project_w_job(&app, &user, &file).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.job(&user, &third).await["status"] != "assigned" {
        assert!(Instant::now() < deadline, "never assigned");
        machine.heartbeat(0.0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let assigned_at = Instant::now();
    while app.job(&user, &third).await["requeue_count"].as_i64().unwrap_or(0) < 1 {
        assert!(assigned_at.elapsed() < Duration::from_secs(10), "never taken back");
        machine.heartbeat(0.0).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        assigned_at.elapsed() >= Duration::from_millis(1500),
        "taken back before the bound"
    );
    machine.wait_for_job().await;
    let (number, _) = machine.job_info().await;
    assert_eq!(number, app.job(&user, &third).await["number"].as_i64().unwrap());
    machine
        .submit(json!({"error_msg": "model missing", "transcript": null}))
        .await;
    assert_eq!(app.job(&user, &third).await["status"], "failed");
    app.stop().await;
}

/// Resident memory of process `pid` in bytes (`VmRSS`).
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A Project-W result of `size` bytes whose `as_json` is an array of
/// zeros, streamed a MiB at a time (never whole in this process either).
fn zeros_result(size: usize) -> reqwest::Body {
    let head = br#"{"error_msg":null,"transcript":{"as_txt":"","as_srt":"","as_tsv":"","as_vtt":"","as_json":[0"#;
    let tail = b"]}}";
    let zeros = bytes::Bytes::from(",0".repeat(512 * 1024));
    let mut left = (size - head.len() - tail.len()) / 2;
    let mut pieces: Vec<bytes::Bytes> = vec![bytes::Bytes::from_static(head)];
    while left > 0 {
        let take = left.min(zeros.len() / 2);
        pieces.push(zeros.slice(..take * 2));
        left -= take;
    }
    pieces.push(bytes::Bytes::from_static(tail));
    reqwest::Body::wrap_stream(futures_util::stream::iter(
        pieces.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

/// Item 4 of the bounded-resources issue, on a separate `warden serve`:
/// results are read with bounded memory. One 64 MiB `as_json` of zeros
/// took the server from 55 MB to 3.1 GB resident; now eight at once, each
/// stored as its job's transcript, raise it by less than 150 MB. And a
/// machine without a job is answered before its body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_large_results_at_once_take_bounded_memory() {
    const MACHINES: usize = 8;
    const SIZE: usize = 64 * 1024 * 1024 - 1024;
    // Users, a runner and the jobs, made through an in-process instance
    // that is stopped before the measured server starts.
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, token) = app.create_runner(&admin).await;
    let file = upload(&app, &user, audio_bytes(1), "audio/mpeg").await;
    let mut jobs = Vec::new();
    for _ in 0..MACHINES {
        jobs.push(submit_project_w_job(&app, &user, &file).await);
    }
    let db = app.stop().await;
    let serve = crate::processes::Serve::start(&["--database-url", &db.url()], &[("RUST_LOG", "info")]);
    let base = serve.base_url.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let call = |path: &str, session: &str| format!("{base}/api/runners/{path}?session_token={session}");

    let mut sessions = Vec::new();
    for n in 0..=MACHINES {
        let registered: Value = http
            .post(format!("{base}/api/runners/register"))
            .bearer_auth(&token)
            .json(
                &json!({"name": format!("m{n}"), "priority": 1, "version": "0.6.0", "git_hash": "0",
                          "source_code_url": "https://github.com/JulianFP/project-W"}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = registered["session_token"].as_str().unwrap().to_owned();
        if n == MACHINES {
            // The ninth machine has no job: answered before its body is read.
            let started = Instant::now();
            let refused = http
                .post(call("submit_job_result", &session))
                .bearer_auth(&token)
                .body(zeros_result(SIZE))
                .send()
                .await;
            if let Ok(refused) = refused {
                assert_error(refused, StatusCode::BAD_REQUEST, "no_job_assigned").await;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
            break;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let beat: Value = http
                .post(call("heartbeat", &session))
                .bearer_auth(&token)
                .json(&json!({"progress": 0.0}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if beat["job_assigned"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "no job reached machine {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let info = http
            .get(call("retrieve_job_info", &session))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(info.status(), StatusCode::OK);
        sessions.push(session);
    }

    let pid = serve.pid();
    let baseline = resident_bytes(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                peak.fetch_max(resident_bytes(pid), std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Like the real runner, the machines keep heartbeating while they
    // send (a session silent for runners.online_timeout loses its job).
    let heartbeats: Vec<_> = sessions
        .iter()
        .map(|session| {
            let (http, url, token) = (http.clone(), call("heartbeat", session), token.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let _ = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"progress": 99.0}))
                        .send()
                        .await;
                }
            })
        })
        .collect();
    let started = Instant::now();
    let submissions: Vec<_> = sessions
        .iter()
        .map(|session| {
            let request = http
                .post(call("submit_job_result", session))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(zeros_result(SIZE));
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    for submission in submissions {
        let answer = submission.await.unwrap().unwrap();
        let status = answer.status();
        assert_eq!(status, StatusCode::OK, "{}", answer.text().await.unwrap());
    }
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    sampler.join().unwrap();
    heartbeats.iter().for_each(|heartbeat| heartbeat.abort());
    let grew = peak.load(std::sync::atomic::Ordering::SeqCst).saturating_sub(baseline);
    eprintln!(
        "8 x 64 MiB results in {:?}: resident memory {} MB before, +{} MB at the peak",
        started.elapsed(),
        baseline / 1_000_000,
        grew / 1_000_000
    );
    assert!(grew < 150_000_000, "resident memory grew by {} MB", grew / 1_000_000);
    let client = db.client().await;
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM files WHERE job_id IS NOT NULL AND complete AND size > 60000000",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, MACHINES as i64, "each result's as_json is stored whole");
    drop(client);
    serve.kill();
}

/// The protocol below HTTP: the calls the routes make, driven directly
/// (as benches and tests of session and dispatch state can now), with
/// typed answers and errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_runs_without_http() {
    use warden::fleet::project_w::{self, Credentials, ProtocolError, Registration, Submitted};
    use warden::fleet::{runners, Origin};

    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, runner_token) = app.create_runner(&admin).await;
    let fleet = &app.state.fleet;
    let origin = Origin::default();
    let connection = fleet.db.get().await.unwrap();
    let runner = runners::authenticate(&connection, &runner_token).await.unwrap();
    drop(connection);
    let registration = |priority| Registration {
        name: "direct".into(),
        priority,
        version: "0.6.0".into(),
        git_hash: "abc".into(),
        source_code_url: "https://example.org".into(),
    };
    assert!(matches!(
        project_w::register(fleet, &runner, registration(0), &origin).await,
        Err(ProtocolError::InvalidPriority)
    ));
    let registered = project_w::register(fleet, &runner, registration(1), &origin)
        .await
        .unwrap();
    let credentials = Credentials {
        runner_token: runner_token.clone(),
        session_token: registered.session_token,
    };
    let call = project_w::authenticate_heartbeat(fleet, &credentials, &origin)
        .await
        .unwrap();
    let idle = project_w::heartbeat(fleet, &call, 0.0, &origin).await.unwrap();
    assert!(!idle.abort && !idle.job_assigned);
    assert!(matches!(
        project_w::heartbeat(fleet, &call, 100.5, &origin).await,
        Err(ProtocolError::InvalidProgress)
    ));
    assert!(matches!(
        project_w::retrieve_job_info(fleet, &call, &origin).await,
        Err(ProtocolError::NoJobAssigned)
    ));

    let file = upload(&app, &user, audio_bytes(1), "audio/mpeg").await;
    let job = submit_project_w_job(&app, &user, &file).await;
    let assigned_by = Instant::now() + Duration::from_secs(10);
    let call = loop {
        let call = project_w::authenticate(fleet, &credentials, &origin).await.unwrap();
        if project_w::heartbeat(fleet, &call, 0.0, &origin)
            .await
            .unwrap()
            .job_assigned
        {
            break call;
        }
        assert!(Instant::now() < assigned_by, "no job assigned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let info = project_w::retrieve_job_info(fleet, &call, &origin).await.unwrap();
    assert_eq!(info.settings, settings());
    let audio = project_w::retrieve_job_audio(fleet, &call, &origin).await.unwrap();
    assert_eq!(audio.file_id.to_string(), file);
    let result = json!({"error_msg": null, "transcript": {
        "as_txt": "hi", "as_srt": "1", "as_tsv": "t", "as_vtt": "WEBVTT", "as_json": {"text": "hi"}}});
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(result.to_string()))]);
    let submitted = project_w::submit_job_result(fleet, &call, &origin, None, body)
        .await
        .unwrap();
    assert_eq!(submitted, Submitted::Recorded);
    wait_for_job_state(&app, &user, &job, Duration::from_secs(10), |view| {
        view["status"] == "succeeded"
    })
    .await;

    project_w::unregister(fleet, &call, &origin).await.unwrap();
    assert!(matches!(
        project_w::authenticate(fleet, &credentials, &origin).await,
        Err(ProtocolError::InvalidSession)
    ));
    app.stop().await;
}

//! Project-W's runner protocol below HTTP
//! (../shared/project-w-runner-protocol.md). Each call of the protocol is
//! one function here; the routes (`http/routes/runners/project_w.rs`)
//! parse a request, call one of them and map the answer.
//!
//! `register` opens a session (a machine of its own: one runner token
//! serves many) for a runner already admitted; every later call names its
//! session and is first checked by [`authenticate`] (or, for heartbeats,
//! [`authenticate_heartbeat`], which may answer from the heartbeat cache).
//! Every call is a sign of life of its session and a contact of its
//! machine. Only Project-W jobs go to these machines.

use bytes::Bytes;
use futures_util::Stream;
use serde_json::json;
use uuid::Uuid;
use warden_events::job::{FileRef, JobKind, JobOutcome};
use warden_events::machine::MachineInfo;

use super::dispatcher::Candidate;
use super::jobs::{self, JobView, Taker};
use super::runners::{self, AuthenticatedRunner, RunnerAuthError};
use super::sessions::{self, Session, SessionError};
use super::transcripts::{self, ProjectWResult, ResultError};
use super::{files, heartbeat_cache, machines, Fleet, Origin};
use crate::api::{HeartbeatAnswer, JobInfo, Registered};
use crate::domain::job::MachineRef;
use crate::log::commands::CommandError;
use crate::log::event_store::StoreError;

/// What names a call after `register`: the runner token and the session
/// token.
pub struct Credentials {
    pub runner_token: String,
    pub session_token: String,
}

/// Why a call is refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Runner(#[from] RunnerAuthError),
    #[error("{}", SessionError::Invalid)]
    InvalidSession,
    #[error("priority is 1 to 1000")]
    InvalidPriority,
    #[error("name and git_hash are at most 40 characters, version and source_code_url 256")]
    TextTooLong,
    #[error("progress is a percentage, 0 to 100")]
    InvalidProgress,
    #[error("no job is assigned to this runner machine")]
    NoJobAssigned,
    #[error("the job was aborted; submit its result with an error_msg")]
    JobAborted,
    #[error("this job has no input file")]
    NoInputFile,
    #[error(transparent)]
    Result(#[from] ResultError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl From<SessionError> for ProtocolError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Invalid => ProtocolError::InvalidSession,
            SessionError::Store(error) => ProtocolError::Store(error),
        }
    }
}

/// What a Project-W runner says about itself when it registers.
pub struct Registration {
    pub name: String,
    pub priority: i32,
    pub version: String,
    pub git_hash: String,
    pub source_code_url: String,
}

/// An authenticated call of an open session.
pub struct Call {
    pub runner: AuthenticatedRunner,
    pub session: Session,
    /// The machine's current job as the authentication read it.
    current_job: Option<Uuid>,
}

impl Call {
    pub fn machine(&self) -> MachineRef {
        MachineRef {
            runner_id: self.session.runner_id,
            machine_id: self.session.machine_id,
        }
    }

    /// Every call is a sign of life of the session and a contact of its machine.
    async fn contact(&self, fleet: &Fleet, origin: &Origin) -> Result<(), ProtocolError> {
        sessions::seen(&fleet.seen, self.session.id, fleet.config.online_timeout);
        let system_id = Session::system_id(self.session.id);
        let metadata = origin.metadata(self.runner.runner_id);
        machines::touch(
            fleet,
            &self.runner,
            &system_id,
            None,
            origin.source_ip.clone(),
            &metadata,
        )
        .await?;
        Ok(())
    }

    /// The machine's current job, if any (only ever a Project-W job).
    async fn current_job(&self, fleet: &Fleet) -> Result<Option<JobView>, ProtocolError> {
        match self.current_job {
            Some(job_id) => Ok(jobs::get(fleet, job_id)
                .await?
                .filter(|job| job.kind == JobKind::ProjectW.as_str())),
            None => Ok(None),
        }
    }

    /// The machine's job, unless it has none or it was aborted, recorded
    /// as fetched: the machine works on it from now on.
    async fn fetch_job(&self, fleet: &Fleet, origin: &Origin) -> Result<JobView, ProtocolError> {
        let job = self.current_job(fleet).await?.ok_or(ProtocolError::NoJobAssigned)?;
        if job.cancel_requested {
            return Err(ProtocolError::JobAborted);
        }
        if job.retrieved_at.is_none() {
            let metadata = origin.metadata(self.runner.runner_id);
            match jobs::retrieve(fleet, self.machine(), job.id, &metadata).await {
                Ok(()) => {}
                // Cancelled or taken back a moment ago.
                Err(CommandError::Domain(_)) => return Err(ProtocolError::NoJobAssigned),
                Err(other) => return Err(other.into()),
            }
        }
        Ok(job)
    }
}

/// `register`: a machine of `runner` starts a session; it is offered jobs
/// from now on.
pub async fn register(
    fleet: &Fleet,
    runner: &AuthenticatedRunner,
    registration: Registration,
    origin: &Origin,
) -> Result<Registered, ProtocolError> {
    // As declared: what the real runner's own models allow.
    if !(1..=1000).contains(&registration.priority) {
        return Err(ProtocolError::InvalidPriority);
    }
    let fits = |text: &str, most: usize| text.chars().count() <= most && !text.contains('\0');
    if !(fits(&registration.name, 40)
        && fits(&registration.git_hash, 40)
        && fits(&registration.version, 256)
        && fits(&registration.source_code_url, 256))
    {
        return Err(ProtocolError::TextTooLong);
    }
    let session_id = Uuid::now_v7();
    let info = MachineInfo {
        name: Some(registration.name),
        version: Some(registration.version),
        revision: Some(registration.git_hash),
        source_code_url: Some(registration.source_code_url),
        priority: Some(registration.priority),
        ..Default::default()
    };
    let system_id = Session::system_id(session_id);
    let metadata = origin.metadata(runner.runner_id);
    let machine = machines::touch(
        fleet,
        runner,
        &system_id,
        Some(info),
        origin.source_ip.clone(),
        &metadata,
    )
    .await?;
    let session_token = sessions::open(&fleet.db, session_id, runner.runner_id, machine.machine_id).await?;
    fleet.dispatcher.go_online(Candidate {
        taker: Taker {
            machine,
            tags: runner.tags.clone(),
            kind: JobKind::ProjectW,
            scope_id: runner.scope_id,
        },
        priority: registration.priority,
        metadata,
    });
    Ok(Registered {
        id: runner.number.unwrap_or(0),
        session_token,
    })
}

/// Checks the runner token and the session in the database (both
/// statements go out together: one round trip), within the runner's rate
/// limit, and records the contact.
pub async fn authenticate(fleet: &Fleet, credentials: &Credentials, origin: &Origin) -> Result<Call, ProtocolError> {
    authenticate_in_database(fleet, credentials, origin, false).await
}

/// As [`authenticate`], but from the heartbeat cache when this instance
/// checked the same runner token and idle session recently and no change
/// was notified since (`fleet/heartbeat_cache.rs`); a check in the
/// database fills the cache when the machine has no job and the token is
/// the runner's current one.
pub async fn authenticate_heartbeat(
    fleet: &Fleet,
    credentials: &Credentials,
    origin: &Origin,
) -> Result<Call, ProtocolError> {
    let cached = fleet
        .heartbeat_cache
        .get(&credentials.runner_token, &credentials.session_token);
    let Some((runner, session)) = cached else {
        return authenticate_in_database(fleet, credentials, origin, true).await;
    };
    let call = Call {
        runner: runners::admit(fleet, Ok(runner))?,
        session,
        current_job: None,
    };
    call.contact(fleet, origin).await?;
    Ok(call)
}

async fn authenticate_in_database(
    fleet: &Fleet,
    credentials: &Credentials,
    origin: &Origin,
    remember: bool,
) -> Result<Call, ProtocolError> {
    let timeout = fleet.config.online_timeout;
    let cache = &fleet.heartbeat_cache;
    let epoch = cache.epoch();
    // The runner's answer is judged first, so an unknown or invalidated
    // runner token gets its own error whatever the session lookup found.
    let connection = fleet.db.get().await.map_err(StoreError::from)?;
    let (runner, session) = tokio::join!(
        runners::authenticate(&connection, &credentials.runner_token),
        sessions::look_up(&connection, &credentials.session_token, timeout)
    );
    drop(connection);
    let runner = runners::admit(fleet, runner)?;
    let sessions::SessionWithJob { session, current_job } = session?.for_runner(runner.runner_id)?;
    if remember && current_job.is_none() && !runner.through_previous_token {
        cache.remember(
            epoch,
            &credentials.runner_token,
            &credentials.session_token,
            &runner,
            session,
        );
    }
    let call = Call {
        runner,
        session,
        current_job,
    };
    call.contact(fleet, origin).await?;
    Ok(call)
}

/// `heartbeat` (every 10 s): keeps the session alive, records the current
/// job's progress (a percentage), and says whether a job waits and
/// whether to abort it.
pub async fn heartbeat(
    fleet: &Fleet,
    call: &Call,
    progress: f64,
    origin: &Origin,
) -> Result<HeartbeatAnswer, ProtocolError> {
    if !(0.0..=100.0).contains(&progress) {
        return Err(ProtocolError::InvalidProgress);
    }
    let job = call.current_job(fleet).await?;
    let machine_id = call.session.machine_id;
    if !fleet.dispatcher.seen(machine_id, job.is_some()) {
        // Registered through another instance (the session is shared in
        // the database): this one offers it work from now on too.
        let priority = machines::registered_priority(fleet, machine_id).await?.unwrap_or(0);
        fleet.dispatcher.go_online(Candidate {
            taker: Taker {
                machine: call.machine(),
                tags: call.runner.tags.clone(),
                kind: JobKind::ProjectW,
                scope_id: call.runner.scope_id,
            },
            priority,
            metadata: origin.metadata(call.runner.runner_id),
        });
        fleet.dispatcher.seen(machine_id, job.is_some());
    }
    let Some(job) = job else {
        return Ok(HeartbeatAnswer {
            abort: false,
            job_assigned: false,
        });
    };
    if job.retrieved_at.is_none() {
        // Not fetched yet: the machine is idle and must fetch it. It is
        // never told to abort (an idle runner ignores that; a job
        // cancelled before its machine fetched it ends at once).
        return Ok(HeartbeatAnswer {
            abort: false,
            job_assigned: true,
        });
    }
    // One scale inside: 0.0 to 1.0.
    let metadata = origin.metadata(call.runner.runner_id);
    let answer = jobs::report_progress(fleet, call.machine(), job.id, progress / 100.0, None, &metadata).await?;
    Ok(HeartbeatAnswer {
        abort: answer.abort,
        job_assigned: !answer.abort,
    })
}

/// `retrieve_job_info`: the machine's job and its settings, recorded as
/// fetched.
pub async fn retrieve_job_info(fleet: &Fleet, call: &Call, origin: &Origin) -> Result<JobInfo, ProtocolError> {
    let job = call.fetch_job(fleet, origin).await?;
    Ok(JobInfo {
        id: job.number.unwrap_or(0),
        settings: job.payload,
    })
}

/// `retrieve_job_audio`: the stored file of the machine's job (the route
/// streams its bytes).
pub async fn retrieve_job_audio(fleet: &Fleet, call: &Call, origin: &Origin) -> Result<FileRef, ProtocolError> {
    let job = call.fetch_job(fleet, origin).await?;
    job.input.ok_or(ProtocolError::NoInputFile)
}

/// What became of a submitted result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Recorded as the job's outcome.
    Recorded,
    /// The job's submitter was deleted: nothing of it was kept, the job
    /// ended cancelled and the machine is free.
    Discarded,
}

/// `submit_job_result`: a transcript in all its formats, or an error
/// message (after an abort it ends the job as cancelled, else as failed).
/// Everything that can refuse the result is decided before a byte of
/// `body` is read; `declared_length` is the length the caller announced.
pub async fn submit_job_result<S, E>(
    fleet: &Fleet,
    call: &Call,
    origin: &Origin,
    declared_length: Option<u64>,
    body: S,
) -> Result<Submitted, ProtocolError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let job = call.current_job(fleet).await?.ok_or(ProtocolError::NoJobAssigned)?;
    let metadata = origin.metadata(call.runner.runner_id);
    if jobs::submitter_deleted(fleet, &job).await? {
        jobs::finish(
            fleet,
            call.machine(),
            job.id,
            JobOutcome::Cancelled,
            serde_json::Value::Null,
            &metadata,
        )
        .await?;
        return Ok(Submitted::Discarded);
    }
    let max_bytes = fleet.jobs.max_result_bytes;
    if declared_length.is_some_and(|length| length > max_bytes as u64) {
        return Err(ResultError::TooLarge(max_bytes).into());
    }
    let limits = files::Limits::of(&fleet.jobs);
    let result = transcripts::read(&fleet.db, &job, call.machine(), body, limits, max_bytes).await?;
    let (outcome, recorded) = match result {
        ProjectWResult::Failed { error_msg } => {
            let outcome = if job.cancel_requested {
                JobOutcome::Cancelled
            } else {
                JobOutcome::Failed
            };
            (outcome, json!({ "error_msg": error_msg }))
        }
        ProjectWResult::Transcript { files: stored } => {
            let formats: serde_json::Map<String, serde_json::Value> = stored
                .into_iter()
                .map(|(key, file)| (key.to_owned(), serde_json::to_value(file).expect("file refs serialise")))
                .collect();
            (JobOutcome::Succeeded, json!({ "transcript": formats }))
        }
    };
    if let Err(error) = jobs::finish(fleet, call.machine(), job.id, outcome, recorded.clone(), &metadata).await {
        // Not this machine's job any more (taken back while the result
        // streamed in): its files go, nothing refers to them.
        for file in recorded["transcript"]
            .as_object()
            .into_iter()
            .flat_map(|formats| formats.values())
        {
            if let Some(file_id) = file["file_id"].as_str().and_then(|id| id.parse().ok()) {
                files::remove_file(&fleet.db, file_id).await;
            }
        }
        return Err(error.into());
    }
    Ok(Submitted::Recorded)
}

/// `unregister`: the session ends and a job it held goes back to the
/// queue. Returns once no instance can still answer for the session from
/// its heartbeat cache.
pub async fn unregister(fleet: &Fleet, call: &Call, origin: &Origin) -> Result<(), ProtocolError> {
    let connection = fleet.db.get().await.map_err(StoreError::from)?;
    sessions::close(&connection, call.session.id, "unregistered").await?;
    drop(connection);
    fleet.dispatcher.go_offline(call.session.machine_id);
    let metadata = origin.metadata(call.runner.runner_id);
    jobs::requeue_from(fleet, call.machine(), "runner machine unregistered", &metadata).await?;
    heartbeat_cache::wait_out_cached_answers().await;
    Ok(())
}

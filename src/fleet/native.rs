//! warden's native runner protocol (GitLab style) below HTTP: `verify`,
//! then `jobs/request` (long poll), `jobs/{id}/progress`,
//! `jobs/{id}/result`, each naming its machine by `system_id`. Each call
//! is one function here; the routes (`http/routes/runners/native.rs`)
//! parse a request, call one of them and map the answer. Every call is a
//! contact of its machine; only native jobs go to these machines.

use std::time::Duration;

use uuid::Uuid;
use warden_events::job::{JobKind, JobOutcome};
use warden_events::machine::MachineInfo;

use super::dispatcher::{self, Candidate, Delivery};
use super::jobs::{self, Assignment, JobView, Taker};
use super::runners::AuthenticatedRunner;
use super::{files, machines, Fleet, Origin};
use crate::api::{JobForRunner, ProgressAnswer, ResultRecorded, RunnerVerified};
use crate::domain::job::MachineRef;
use crate::log::commands::CommandError;
use crate::log::event_store::StoreError;

/// Why a call is refused.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("job not found")]
    JobNotFound,
    #[error("the result names files that were not stored for this job by this runner machine")]
    ForeignFileReference,
    #[error("the job's submitter was deleted: the result is not kept, and the job is cancelled")]
    SubmitterGone,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// A machine of an admitted runner, as a call names it.
pub struct MachineCall<'a> {
    pub runner: &'a AuthenticatedRunner,
    pub system_id: &'a str,
    pub origin: &'a Origin,
}

impl MachineCall<'_> {
    /// Records the machine's contact (and what it says about itself).
    async fn touch(&self, fleet: &Fleet, info: Option<MachineInfo>) -> Result<MachineRef, CommandError> {
        let metadata = self.origin.metadata(self.runner.runner_id);
        machines::touch(
            fleet,
            self.runner,
            self.system_id,
            info,
            self.origin.source_ip.clone(),
            &metadata,
        )
        .await
    }
}

impl From<JobView> for JobForRunner {
    fn from(job: JobView) -> Self {
        JobForRunner {
            id: job.id,
            payload: job.payload,
            required_tags: job.required_tags,
            priority: job.priority,
            submitted_at: job.submitted_at,
            abort: job.cancel_requested,
        }
    }
}

async fn job_for_runner(fleet: &Fleet, job_id: Uuid) -> Result<JobForRunner, NativeError> {
    let job = jobs::get(fleet, job_id).await?.ok_or(NativeError::JobNotFound)?;
    Ok(job.into())
}

/// `verify`: the token is valid; the machine, when one is named, is
/// recorded.
pub async fn verify(
    fleet: &Fleet,
    runner: &AuthenticatedRunner,
    system_id: Option<&str>,
    info: Option<MachineInfo>,
    origin: &Origin,
) -> Result<RunnerVerified, NativeError> {
    let machine_id = match system_id {
        Some(system_id) => Some(
            MachineCall {
                runner,
                system_id,
                origin,
            }
            .touch(fleet, info)
            .await?
            .machine_id,
        ),
        None => None,
    };
    Ok(RunnerVerified {
        runner_id: runner.runner_id,
        status: "active".to_owned(),
        paused: runner.paused,
        machine_id,
    })
}

/// `jobs/request`: the machine's job (the one it runs already, else the
/// next for it), waiting up to `wait` (at most `runners.long_poll_max`)
/// for one; `None` when none came.
pub async fn request_job(
    fleet: &Fleet,
    call: MachineCall<'_>,
    info: Option<MachineInfo>,
    wait: Duration,
) -> Result<Option<JobForRunner>, NativeError> {
    let machine = call.touch(fleet, info).await?;
    let wait = wait.min(fleet.config.long_poll_max);
    if call.runner.paused {
        // Nothing for a paused runner; answer at the end of the wait so a
        // polling runner does not spin.
        tokio::time::sleep(wait).await;
        return Ok(None);
    }
    if let Some(job_id) = jobs::current_job(fleet, machine.machine_id).await? {
        return Ok(Some(job_for_runner(fleet, job_id).await?));
    }
    let candidate = Candidate {
        taker: Taker {
            machine,
            tags: call.runner.tags.clone(),
            kind: JobKind::Native,
            scope_id: call.runner.scope_id,
        },
        priority: call.runner.priority,
        metadata: call.origin.metadata(call.runner.runner_id),
    };
    if wait.is_zero() {
        // No wait wanted: one attempt now, outside the waiting room.
        let elsewhere = dispatcher::waiting_elsewhere(fleet).await?;
        let better_placed = dispatcher::better_placed_than(&elsewhere, candidate.priority);
        return match jobs::assign_next(fleet, &candidate.taker, &candidate.metadata, &better_placed).await? {
            Assignment::Assigned(job) => Ok(Some((*job).into())),
            Assignment::Busy(job_id) => Ok(Some(job_for_runner(fleet, job_id).await?)),
            Assignment::NoJob | Assignment::RunnerUnavailable => Ok(None),
        };
    }
    match fleet.dispatcher.wait_for_job(candidate, wait).await {
        Some(Delivery::Job(job)) => Ok(Some((*job).into())),
        Some(Delivery::Busy(job_id)) => Ok(Some(job_for_runner(fleet, job_id).await?)),
        Some(Delivery::RunnerUnavailable) | None => Ok(None),
    }
}

/// `jobs/{id}/progress`: records the job's progress (0.0 to 1.0, at most
/// every `runners.progress_record_interval`) and says whether to stop.
pub async fn report_progress(
    fleet: &Fleet,
    call: MachineCall<'_>,
    job_id: Uuid,
    progress: f64,
    message: Option<String>,
) -> Result<ProgressAnswer, NativeError> {
    let machine = call.touch(fleet, None).await?;
    let metadata = call.origin.metadata(call.runner.runner_id);
    let answer = jobs::report_progress(fleet, machine, job_id, progress, message, &metadata).await?;
    Ok(ProgressAnswer { abort: answer.abort })
}

/// `jobs/{id}/result`: the job's outcome. The result may name only files
/// stored for this job by this machine.
pub async fn submit_result(
    fleet: &Fleet,
    call: MachineCall<'_>,
    job_id: Uuid,
    outcome: JobOutcome,
    result: serde_json::Value,
) -> Result<ResultRecorded, NativeError> {
    let machine = call.touch(fleet, None).await?;
    let metadata = call.origin.metadata(call.runner.runner_id);
    let foreign = files::foreign_references(&fleet.db, job_id, machine, &result).await?;
    if !foreign.is_empty() {
        return Err(NativeError::ForeignFileReference);
    }
    match jobs::finish(fleet, machine, job_id, outcome, result, &metadata).await? {
        jobs::Finished::Recorded => Ok(ResultRecorded {
            id: job_id,
            status: outcome.as_str().to_owned(),
        }),
        jobs::Finished::SubmitterGone => Err(NativeError::SubmitterGone),
    }
}

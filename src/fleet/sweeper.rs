//! The sweeper: what must happen when nothing is said. It ends Project-W
//! sessions silent for longer than `runners.online_timeout` and puts their
//! jobs back in the queue, likewise the jobs of native machines silent for
//! `runners.native_silence_timeout` and the Project-W jobs not fetched
//! within `runners.retrieve_timeout`; it removes abandoned uploads and old
//! progress slots.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{files, jobs, sessions, Fleet};
use crate::domain::job::MachineRef;
use crate::log::commands::CommandError;
use crate::log::event_store::StoreError;

/// Sweeps every quarter of `runners.online_timeout` (1 to 15 s) until
/// `cancel` fires.
pub fn spawn(fleet: Arc<Fleet>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let timeout = fleet.config.online_timeout;
        let every = (timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(15));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(error) = sweep(&fleet).await {
                tracing::warn!(%error, "sweeping silent runner sessions failed");
            }
        }
    })
}

async fn sweep(fleet: &Fleet) -> Result<(), CommandError> {
    let metadata = warden_events::Metadata::system("silent-machines");
    for session in sessions::close_silent(&fleet.db, fleet.config.online_timeout).await? {
        fleet.dispatcher.go_offline(session.machine_id);
        let machine = MachineRef {
            runner_id: session.runner_id,
            machine_id: session.machine_id,
        };
        if let Some(job) = jobs::requeue_from(fleet, machine, jobs::SILENT_MACHINE, &metadata).await? {
            tracing::info!(%job, session = %session.id, "requeued the job of a silent runner machine");
        }
    }
    let unretrieved = jobs::requeue_unretrieved(fleet).await?;
    if unretrieved > 0 {
        tracing::info!(
            jobs = unretrieved,
            "requeued jobs their runner machines did not fetch in time"
        );
    }
    for (job, machine) in jobs::held_by_silent_native_machines(fleet).await? {
        if jobs::requeue_from(fleet, machine, jobs::SILENT_MACHINE, &metadata)
            .await?
            .is_some()
        {
            tracing::info!(%job, machine = %machine.machine_id, "requeued the job of a silent runner machine");
        }
    }
    files::remove_abandoned(&fleet.db).await?;
    // Progress slots of jobs that stopped reporting a day ago.
    fleet
        .db
        .get()
        .await
        .map_err(StoreError::from)?
        .execute(
            "DELETE FROM progress_recordings WHERE recorded_at < now() - interval '1 day'",
            &[],
        )
        .await
        .map_err(StoreError::from)?;
    Ok(())
}

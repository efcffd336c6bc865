//! The `runner_machines` read model: hosts per runner token, with the
//! last recorded contact (the freshest one lives in memory, see
//! `src/machines.rs`).

use crate::{execute, AggregateProjection, ProjectionError, Transaction};
use async_trait::async_trait;
use warden_events::{Event, MachineEvent, RecordedEvent};

pub struct MachineProjection;

#[async_trait]
impl AggregateProjection for MachineProjection {
    type Event = MachineEvent;
    const NAME: &'static str = "runner_machines";
    const CATEGORY: &'static str = "machine";
    const TABLES: &'static [&'static str] = &["runner_machines"];
    const DURABLE_COMMITS: bool = false;

    fn select(event: &Event) -> Option<&MachineEvent> {
        event.as_machine()
    }

    async fn apply_event(
        &self,
        tx: &Transaction<'_>,
        recorded: &RecordedEvent,
        event: &MachineEvent,
    ) -> Result<(), ProjectionError> {
        let version = recorded.stream_version;
        match event {
            MachineEvent::RunnerMachineRegistered(e) => {
                // Also revives a pruned machine that came back.
                execute(
                    tx,
                    "INSERT INTO runner_machines (id, runner_id, system_id, name, runner_version, revision, platform,
                                                  architecture, source_code_url, priority, ip_address,
                                                  registered_at, contacted_at, pruned_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, NULL, $13)
                     ON CONFLICT (id) DO UPDATE SET
                         name = EXCLUDED.name, runner_version = EXCLUDED.runner_version,
                         revision = EXCLUDED.revision, platform = EXCLUDED.platform,
                         architecture = EXCLUDED.architecture, source_code_url = EXCLUDED.source_code_url,
                         priority = EXCLUDED.priority, ip_address = EXCLUDED.ip_address,
                         registered_at = EXCLUDED.registered_at, contacted_at = EXCLUDED.contacted_at,
                         pruned_at = NULL, version = EXCLUDED.version
                     WHERE runner_machines.version < EXCLUDED.version",
                    &[
                        &e.machine_id,
                        &e.runner_id,
                        &e.system_id,
                        &e.info.name,
                        &e.info.version,
                        &e.info.revision,
                        &e.info.platform,
                        &e.info.architecture,
                        &e.info.source_code_url,
                        &e.info.priority,
                        &e.ip_address,
                        &e.contacted_at,
                        &version,
                    ],
                )
                .await?;
            }
            MachineEvent::RunnerMachineContacted(e) => {
                execute(
                    tx,
                    "UPDATE runner_machines SET name = $2, runner_version = $3, revision = $4, platform = $5,
                            architecture = $6, source_code_url = $7, priority = $8, ip_address = $9,
                            contacted_at = $10, version = $11
                     WHERE id = $1 AND version < $11",
                    &[
                        &e.machine_id,
                        &e.info.name,
                        &e.info.version,
                        &e.info.revision,
                        &e.info.platform,
                        &e.info.architecture,
                        &e.info.source_code_url,
                        &e.info.priority,
                        &e.ip_address,
                        &e.contacted_at,
                        &version,
                    ],
                )
                .await?;
            }
            MachineEvent::RunnerMachinePruned(e) => {
                execute(
                    tx,
                    "UPDATE runner_machines SET pruned_at = $2, version = $3 WHERE id = $1 AND version < $3",
                    &[&e.machine_id, &recorded.recorded_at, &version],
                )
                .await?;
            }
        }
        Ok(())
    }
}

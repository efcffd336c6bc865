//! The `runner_machines` read model: hosts per runner token, with the
//! last recorded contact (the freshest one lives in memory, see
//! `src/machines.rs`).

use crate::change::{Assign, Change, OnConflict, Value};
use crate::AggregateProjection;
use warden_events::machine::MachineInfo;
use warden_events::{Event, MachineEvent, RecordedEvent};

pub struct MachineProjection;

const TABLE: &str = "runner_machines";

impl AggregateProjection for MachineProjection {
    type Event = MachineEvent;
    const NAME: &'static str = TABLE;
    const CATEGORY: &'static str = "machine";
    const TABLES: &'static [&'static str] = &[TABLE];
    const DURABLE_COMMITS: bool = false;

    fn select(event: &Event) -> Option<&MachineEvent> {
        event.as_machine()
    }

    fn changes_of(recorded: &RecordedEvent, event: &MachineEvent) -> Vec<Change> {
        let version = recorded.stream_version;
        vec![match event {
            // Also revives a pruned machine that came back.
            MachineEvent::RunnerMachineRegistered(e) => {
                let mut row = vec![
                    ("id", e.machine_id.into()),
                    ("runner_id", e.runner_id.into()),
                    ("system_id", (&e.system_id).into()),
                ];
                row.extend(described(&e.info, &e.ip_address));
                row.extend([
                    ("registered_at", e.contacted_at.into()),
                    ("contacted_at", e.contacted_at.into()),
                    ("pruned_at", Value::Null),
                    ("version", version.into()),
                ]);
                Change::Insert {
                    table: TABLE,
                    row,
                    on_conflict: OnConflict::ReplaceOlder,
                }
            }
            MachineEvent::RunnerMachineContacted(e) => {
                let mut set: Vec<(&'static str, Assign)> = described(&e.info, &e.ip_address)
                    .into_iter()
                    .map(|(column, value)| (column, Assign::To(value)))
                    .collect();
                set.push(("contacted_at", Assign::To(e.contacted_at.into())));
                Change::Update {
                    table: TABLE,
                    key: ("id", e.machine_id),
                    version,
                    set,
                }
            }
            MachineEvent::RunnerMachinePruned(e) => Change::Update {
                table: TABLE,
                key: ("id", e.machine_id),
                version,
                set: vec![("pruned_at", Assign::To(recorded.recorded_at.into()))],
            },
        }]
    }
}

/// The columns a machine describes itself with, at registration and at
/// every recorded contact.
fn described(info: &MachineInfo, ip_address: &Option<String>) -> [(&'static str, Value); 8] {
    [
        ("name", info.name.as_ref().into()),
        ("runner_version", info.version.as_ref().into()),
        ("revision", info.revision.as_ref().into()),
        ("platform", info.platform.as_ref().into()),
        ("architecture", info.architecture.as_ref().into()),
        ("source_code_url", info.source_code_url.as_ref().into()),
        ("priority", info.priority.into()),
        ("ip_address", ip_address.as_ref().into()),
    ]
}

//! The runner-machine aggregate: one host using a runner token.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;
use warden_events::machine::{MachineInfo, RunnerMachineContacted, RunnerMachinePruned, RunnerMachineRegistered};
use warden_events::{Event, MachineEvent};

use super::{Aggregate, DomainError};
use crate::api::ErrorCode;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Machine {
    #[default]
    Unknown,
    Active(Box<ActiveMachine>),
    Pruned,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveMachine {
    pub machine_id: Uuid,
    pub runner_id: Uuid,
    pub info: MachineInfo,
    pub ip_address: Option<String>,
    /// The last contact written to the log (not every contact is).
    pub recorded_contact: DateTime<Utc>,
}

/// A request of the machine at `at`.
#[derive(Clone, Debug)]
pub struct Contact {
    pub machine_id: Uuid,
    pub runner_id: Uuid,
    pub system_id: String,
    /// `None`: the request said nothing about the machine.
    pub info: Option<MachineInfo>,
    pub ip_address: Option<String>,
    pub at: DateTime<Utc>,
    /// Contacts closer than this to the recorded one are not recorded.
    pub record_every: Duration,
}

#[derive(Clone, Debug)]
pub enum MachineCommand {
    Contact(Box<Contact>),
    /// Remove the machine if its last recorded contact is before `cutoff`.
    Prune {
        cutoff: DateTime<Utc>,
    },
}

impl Aggregate for Machine {
    // A runner machine's data, no user's personal data.
    const CACHEABLE: bool = true;
    type Command = MachineCommand;
    type Event = MachineEvent;

    fn select(event: &Event) -> Option<&MachineEvent> {
        event.as_machine()
    }

    fn evolve(&mut self, event: &MachineEvent) {
        match event {
            MachineEvent::RunnerMachineRegistered(e) => {
                *self = Machine::Active(Box::new(ActiveMachine {
                    machine_id: e.machine_id,
                    runner_id: e.runner_id,
                    info: e.info.clone(),
                    ip_address: e.ip_address.clone(),
                    recorded_contact: e.contacted_at,
                }))
            }
            MachineEvent::RunnerMachineContacted(e) => {
                if let Machine::Active(machine) = self {
                    machine.info = e.info.clone();
                    machine.ip_address = e.ip_address.clone();
                    machine.recorded_contact = e.contacted_at;
                }
            }
            MachineEvent::RunnerMachinePruned(_) => *self = Machine::Pruned,
        }
    }

    fn decide(&self, command: &MachineCommand) -> Result<Vec<MachineEvent>, DomainError> {
        match (self, command) {
            (Machine::Unknown | Machine::Pruned, MachineCommand::Contact(contact)) => {
                validate_system_id(&contact.system_id)?;
                Ok(vec![MachineEvent::RunnerMachineRegistered(RunnerMachineRegistered {
                    machine_id: contact.machine_id,
                    runner_id: contact.runner_id,
                    system_id: contact.system_id.clone(),
                    info: validate_info(contact.info.clone().unwrap_or_default())?,
                    ip_address: contact.ip_address.clone(),
                    contacted_at: contact.at,
                })])
            }
            (Machine::Active(machine), MachineCommand::Contact(contact)) => {
                let info = match &contact.info {
                    Some(info) => validate_info(info.clone())?,
                    None => machine.info.clone(),
                };
                let changed = info != machine.info || contact.ip_address != machine.ip_address;
                let due = contact.at - machine.recorded_contact >= contact.record_every;
                if !changed && !due {
                    return Ok(Vec::new());
                }
                Ok(vec![MachineEvent::RunnerMachineContacted(RunnerMachineContacted {
                    machine_id: machine.machine_id,
                    runner_id: machine.runner_id,
                    contacted_at: contact.at,
                    ip_address: contact.ip_address.clone(),
                    info,
                })])
            }
            (Machine::Active(machine), MachineCommand::Prune { cutoff }) if machine.recorded_contact < *cutoff => {
                Ok(vec![MachineEvent::RunnerMachinePruned(RunnerMachinePruned {
                    machine_id: machine.machine_id,
                    runner_id: machine.runner_id,
                    last_contacted_at: machine.recorded_contact,
                })])
            }
            (_, MachineCommand::Prune { .. }) => Ok(Vec::new()),
        }
    }
}

/// What a system id may be (the API declares the same pattern).
pub const SYSTEM_ID_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,64}$";

/// GitLab's system ids look like `r_0123456789ab` or `s_...`; accept any
/// short token of safe characters ([`SYSTEM_ID_PATTERN`], checked by hand).
pub fn validate_system_id(system_id: &str) -> Result<(), DomainError> {
    let valid = !system_id.is_empty()
        && system_id.len() <= 64
        && system_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(DomainError::Invalid {
            code: ErrorCode::InvalidSystemId,
            message: "system_id must be 1 to 64 characters of A-Z, a-z, 0-9 and - _ . :".into(),
        })
    }
}

fn validate_info(info: MachineInfo) -> Result<MachineInfo, DomainError> {
    let texts = [
        &info.name,
        &info.version,
        &info.revision,
        &info.platform,
        &info.architecture,
        &info.source_code_url,
    ];
    if texts
        .iter()
        .any(|t| t.as_ref().is_some_and(|t| t.chars().count() > 256))
    {
        return Err(DomainError::Invalid {
            code: ErrorCode::TextTooLong,
            message: "machine information fields are limited to 256 characters".into(),
        });
    }
    for text in texts.iter().filter_map(|t| t.as_deref()) {
        super::runner::validate_text(Some(text))?;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::then_err;

    fn contact(at: DateTime<Utc>, info: Option<MachineInfo>) -> MachineCommand {
        MachineCommand::Contact(Box::new(Contact {
            machine_id: Uuid::nil(),
            runner_id: Uuid::nil(),
            system_id: "r_0123456789ab".into(),
            info,
            ip_address: Some("10.0.0.1".into()),
            at,
            record_every: Duration::minutes(5),
        }))
    }

    fn apply(state: &mut Machine, command: &MachineCommand) -> Vec<MachineEvent> {
        crate::domain::when(state, command.clone()).unwrap()
    }

    #[test]
    fn contacts_are_recorded_only_when_due_or_changed() {
        let start = Utc::now();
        let mut machine = Machine::Unknown;
        let first = apply(&mut machine, &contact(start, None));
        assert!(matches!(&first[..], [MachineEvent::RunnerMachineRegistered(_)]));
        // A minute later, nothing new: nothing recorded.
        assert!(apply(&mut machine, &contact(start + Duration::minutes(1), None)).is_empty());
        // New version reported: recorded at once.
        let info = MachineInfo {
            version: Some("17.0".into()),
            ..Default::default()
        };
        let changed = apply(&mut machine, &contact(start + Duration::minutes(2), Some(info.clone())));
        assert!(matches!(&changed[..], [MachineEvent::RunnerMachineContacted(e)] if e.info == info));
        // Silence about info keeps it; five minutes later the contact is due.
        assert!(apply(&mut machine, &contact(start + Duration::minutes(3), None)).is_empty());
        let due = apply(&mut machine, &contact(start + Duration::minutes(7), None));
        assert!(matches!(&due[..], [MachineEvent::RunnerMachineContacted(e)] if e.info == info));
    }

    #[test]
    fn pruning_only_takes_stale_machines_and_they_can_come_back() {
        let start = Utc::now();
        let mut machine = Machine::Unknown;
        apply(&mut machine, &contact(start, None));
        let fresh_cutoff = MachineCommand::Prune {
            cutoff: start - Duration::days(1),
        };
        assert!(apply(&mut machine, &fresh_cutoff).is_empty());
        let stale_cutoff = MachineCommand::Prune {
            cutoff: start + Duration::days(1),
        };
        assert!(matches!(
            &apply(&mut machine, &stale_cutoff)[..],
            [MachineEvent::RunnerMachinePruned(_)]
        ));
        assert_eq!(machine, Machine::Pruned);
        let back = apply(&mut machine, &contact(start + Duration::days(2), None));
        assert!(matches!(&back[..], [MachineEvent::RunnerMachineRegistered(_)]));
    }

    #[test]
    fn bad_system_ids_are_refused() {
        for bad in ["", "has space", &"x".repeat(65), "semi;colon"] {
            let command = MachineCommand::Contact(Box::new(Contact {
                machine_id: Uuid::nil(),
                runner_id: Uuid::nil(),
                system_id: bad.into(),
                info: None,
                ip_address: None,
                at: Utc::now(),
                record_every: Duration::minutes(5),
            }));
            then_err(Machine::Unknown.decide(&command), "invalid_system_id");
        }
    }
}

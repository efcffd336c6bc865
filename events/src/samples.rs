//! One sample of every event type, for tests that must cover them all
//! (personal-data sealing, encoding). `every_event_type_has_a_sample`
//! fails when a new event type has none.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::job::*;
use crate::machine::*;
use crate::runner::*;
use crate::scope::*;
use crate::user::*;
use crate::{Event, JobEvent, MachineEvent, Pii, RunnerEvent, ScopeEvent, UserEvent};

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a valid time")
}

/// Every personal value a sample holds, in plain form.
pub const PLAIN_PERSONAL_VALUE: &str = "personal@example.org";

fn personal() -> Pii {
    Pii::plain(PLAIN_PERSONAL_VALUE)
}

/// A sample of every event type, with plain personal values.
pub fn all() -> Vec<Event> {
    let user = id(1);
    let runner = id(2);
    let machine = id(3);
    let job = id(4);
    let info = MachineInfo {
        name: Some("host".into()),
        ..MachineInfo::default()
    };
    let users: Vec<UserEvent> = vec![
        LocalUserCreated {
            user_id: user,
            email: personal(),
            password_hash: personal(),
            role: Role::User,
            origin: UserOrigin::SignUp,
        }
        .into(),
        UserEmailChanged {
            user_id: user,
            email: personal(),
        }
        .into(),
        UserPasswordChanged {
            user_id: user,
            password_hash: personal(),
        }
        .into(),
        UserRoleChanged {
            user_id: user,
            role: Role::Admin,
        }
        .into(),
        UserDeleted { user_id: user }.into(),
        LdapUserLinked {
            user_id: user,
            provider: "corp".into(),
            uid: personal(),
            email: personal(),
            role: Role::User,
        }
        .into(),
        OidcUserLinked {
            user_id: user,
            provider: "sso".into(),
            subject: personal(),
            email: personal(),
            role: Role::User,
        }
        .into(),
        ExternalUserSynced {
            user_id: user,
            email: personal(),
            role: Role::User,
        }
        .into(),
        ApiTokenCreated {
            user_id: user,
            token_id: id(5),
            name: personal(),
            token_hash: "00".repeat(32),
            expires_at: Some(at()),
        }
        .into(),
        ApiTokenRevoked {
            user_id: user,
            token_id: id(5),
        }
        .into(),
        UserSessionsRevoked {
            user_id: user,
            before: at(),
        }
        .into(),
    ];
    let runners: Vec<RunnerEvent> = vec![
        RunnerCreated {
            runner_id: runner,
            number: Some(7),
            token_hash: "00".repeat(32),
            description: Some("gpu box".into()),
            tags: vec!["gpu".into()],
            priority: 1,
            scope_id: Some(id(8)),
        }
        .into(),
        RunnerInvalidated {
            runner_id: runner,
            reason: Some("retired".into()),
        }
        .into(),
        RunnerTokenReset {
            runner_id: runner,
            token_hash: "11".repeat(32),
            previous_token_valid_until: Some(at()),
        }
        .into(),
        RunnerUpdated {
            runner_id: runner,
            description: None,
            tags: vec![],
            priority: 0,
        }
        .into(),
        RunnerPaused { runner_id: runner }.into(),
        RunnerResumed { runner_id: runner }.into(),
    ];
    let machines: Vec<MachineEvent> = vec![
        RunnerMachineRegistered {
            machine_id: machine,
            runner_id: runner,
            system_id: "r_0123456789ab".into(),
            info: info.clone(),
            ip_address: Some("10.0.0.1".into()),
            contacted_at: at(),
        }
        .into(),
        RunnerMachineContacted {
            machine_id: machine,
            runner_id: runner,
            contacted_at: at(),
            ip_address: None,
            info,
        }
        .into(),
        RunnerMachinePruned {
            machine_id: machine,
            runner_id: runner,
            last_contacted_at: at(),
        }
        .into(),
    ];
    let jobs: Vec<JobEvent> = vec![
        JobSubmitted {
            job_id: job,
            number: Some(42),
            submitted_by: user,
            payload: Pii::plain(json!({"cmd": "make", "mail_to": PLAIN_PERSONAL_VALUE}).to_string()),
            required_tags: vec![],
            priority: 0,
            kind: JobKind::ProjectW,
            input: Some(FileRef {
                file_id: id(6),
                sha256: "00".repeat(32),
                size: 3,
                media_type: "audio/mpeg".into(),
                name: None,
            }),
            input_name: Some(personal()),
            scope_id: Some(id(8)),
        }
        .into(),
        JobAssigned {
            job_id: job,
            runner_id: runner,
            machine_id: machine,
        }
        .into(),
        JobRetrieved {
            job_id: job,
            runner_id: runner,
            machine_id: machine,
        }
        .into(),
        JobProgressed {
            job_id: job,
            progress: 0.5,
            message: Some(personal()),
            submitted_by: Some(user),
        }
        .into(),
        JobRequeued {
            job_id: job,
            runner_id: runner,
            machine_id: machine,
            reason: "runner invalidated".into(),
        }
        .into(),
        JobFinished {
            job_id: job,
            runner_id: runner,
            machine_id: machine,
            outcome: JobOutcome::Succeeded,
            result: Some(Pii::plain(json!({"ok": true, "to": PLAIN_PERSONAL_VALUE}).to_string())),
            submitted_by: Some(user),
        }
        .into(),
        JobCancelRequested {
            job_id: job,
            reason: Some("submitter deleted".into()),
        }
        .into(),
        JobCancelled {
            job_id: job,
            reason: None,
        }
        .into(),
    ];
    let group = id(7);
    let project = id(8);
    let scopes: Vec<ScopeEvent> = vec![
        GroupCreated {
            group_id: group,
            name: "physics".into(),
            parent_id: None,
        }
        .into(),
        ProjectCreated {
            project_id: project,
            name: "lattice-qcd".into(),
            group_id: group,
        }
        .into(),
        ScopeRenamed {
            scope_id: project,
            name: "lqcd".into(),
            parent_id: Some(group),
        }
        .into(),
        ScopeMoved {
            scope_id: project,
            parent_id: group,
            name: "lqcd".into(),
        }
        .into(),
        ScopeArchived { scope_id: project }.into(),
        ScopeRunnerLimitSet {
            scope_id: group,
            limit: Some(5),
        }
        .into(),
        MemberAdded {
            scope_id: group,
            user_id: user,
            role: ScopeRole::Manager,
            source: MembershipSource::Mapping,
        }
        .into(),
        MemberRemoved {
            scope_id: group,
            user_id: user,
        }
        .into(),
    ];
    users
        .into_iter()
        .map(Event::from)
        .chain(runners.into_iter().map(Event::from))
        .chain(machines.into_iter().map(Event::from))
        .chain(jobs.into_iter().map(Event::from))
        .chain(scopes.into_iter().map(Event::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_a_sample() {
        let sampled: Vec<&str> = all().iter().map(Event::event_type).collect();
        assert_eq!(sampled, crate::EVENT_TYPES, "add a sample for each new event type");
    }

    #[test]
    fn every_sample_round_trips_through_the_codec() {
        for event in all() {
            let encoded = crate::codec::encode(&event);
            let stored = crate::upcasters::Stored { recorded_at: at() };
            let decoded = crate::codec::decode(encoded.event_type, encoded.schema_version, encoded.payload, stored);
            let decoded = decoded.unwrap_or_else(|error| panic!("{}: {error}", event.event_type()));
            assert_eq!(decoded, event);
        }
    }
}

//! warden's events: the facts its log is made of.
//!
//! Pure data (serde), no IO. Every event type has a schema version; stored
//! payloads of older versions are upcast to the current shape when read
//! ([`codec::decode`]). Secrets only appear as hashes; personal data only
//! as [`Pii`], which the event store seals before writing.

pub mod codec;
pub mod envelope;
pub mod job;
pub mod machine;
pub mod pii;
pub mod runner;
pub mod upcasters;
pub mod user;

pub use envelope::{Actor, LogCursor, Metadata, RecordedEvent, StreamId};
pub use pii::Pii;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Declares [`Event`] with one variant per event type, each with the
/// schema version its current Rust type writes.
macro_rules! events {
    ($($variant:ident($ty:path) = version $version:literal),* $(,)?) => {
        /// Every kind of fact warden records.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data")]
        pub enum Event {
            $($variant($ty)),*
        }

        impl Event {
            /// The name stored in the log's `event_type` column.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Event::$variant(_) => stringify!($variant)),*
                }
            }

            /// The payload shape this code writes for this event type.
            pub fn schema_version(&self) -> u32 {
                match self {
                    $(Event::$variant(_) => $version),*
                }
            }
        }

        /// Current schema version of an event type, `None` if unknown.
        pub fn current_schema_version(event_type: &str) -> Option<u32> {
            match event_type {
                $(stringify!($variant) => Some($version),)*
                _ => None,
            }
        }
    };
}

events! {
    LocalUserCreated(user::LocalUserCreated) = version 1,
    UserEmailChanged(user::UserEmailChanged) = version 1,
    UserPasswordChanged(user::UserPasswordChanged) = version 1,
    UserRoleChanged(user::UserRoleChanged) = version 1,
    UserDeleted(user::UserDeleted) = version 1,
    LdapUserLinked(user::LdapUserLinked) = version 1,
    OidcUserLinked(user::OidcUserLinked) = version 1,
    ExternalUserSynced(user::ExternalUserSynced) = version 1,
    ApiTokenCreated(user::ApiTokenCreated) = version 1,
    ApiTokenRevoked(user::ApiTokenRevoked) = version 1,
    UserSessionsRevoked(user::UserSessionsRevoked) = version 1,
    RunnerCreated(runner::RunnerCreated) = version 1,
    RunnerInvalidated(runner::RunnerInvalidated) = version 1,
    RunnerTokenReset(runner::RunnerTokenReset) = version 1,
    RunnerUpdated(runner::RunnerUpdated) = version 1,
    RunnerPaused(runner::RunnerPaused) = version 1,
    RunnerResumed(runner::RunnerResumed) = version 1,
    RunnerMachineRegistered(machine::RunnerMachineRegistered) = version 2,
    RunnerMachineContacted(machine::RunnerMachineContacted) = version 1,
    RunnerMachinePruned(machine::RunnerMachinePruned) = version 1,
    JobSubmitted(job::JobSubmitted) = version 1,
    JobAssigned(job::JobAssigned) = version 1,
    JobProgressed(job::JobProgressed) = version 1,
    JobRequeued(job::JobRequeued) = version 1,
    JobFinished(job::JobFinished) = version 1,
    JobCancelRequested(job::JobCancelRequested) = version 1,
    JobCancelled(job::JobCancelled) = version 1,
}

impl Event {
    /// The subject whose key seals this event's personal data.
    pub fn pii_subject(&self) -> Option<Uuid> {
        match self {
            Event::LocalUserCreated(e) => Some(e.user_id),
            Event::UserEmailChanged(e) => Some(e.user_id),
            Event::LdapUserLinked(e) => Some(e.user_id),
            Event::OidcUserLinked(e) => Some(e.user_id),
            Event::ExternalUserSynced(e) => Some(e.user_id),
            _ => None,
        }
    }

    /// Every personal value in this event, for sealing and unsealing.
    pub fn pii_fields_mut(&mut self) -> Vec<&mut Pii> {
        match self {
            Event::LocalUserCreated(e) => vec![&mut e.email],
            Event::UserEmailChanged(e) => vec![&mut e.email],
            Event::LdapUserLinked(e) => vec![&mut e.uid, &mut e.email],
            Event::OidcUserLinked(e) => vec![&mut e.subject, &mut e.email],
            Event::ExternalUserSynced(e) => vec![&mut e.email],
            _ => Vec::new(),
        }
    }

    /// The subject whose personal data must be forgotten once this event
    /// is recorded.
    pub fn forgets_subject(&self) -> Option<Uuid> {
        match self {
            Event::UserDeleted(e) => Some(e.user_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_and_versions_come_from_the_declaration() {
        let event = Event::RunnerInvalidated(runner::RunnerInvalidated {
            runner_id: Uuid::nil(),
            reason: None,
        });
        assert_eq!(event.event_type(), "RunnerInvalidated");
        assert_eq!(event.schema_version(), 1);
        assert_eq!(current_schema_version("RunnerInvalidated"), Some(1));
        assert_eq!(current_schema_version("NoSuchEvent"), None);
    }

    #[test]
    fn only_user_events_carry_personal_data() {
        let mut created = Event::LocalUserCreated(user::LocalUserCreated {
            user_id: Uuid::nil(),
            email: Pii::plain("a@example.org"),
            password_hash: "$argon2id$...".into(),
            role: user::Role::User,
            origin: user::UserOrigin::CommandLine,
        });
        assert_eq!(created.pii_subject(), Some(Uuid::nil()));
        assert_eq!(created.pii_fields_mut().len(), 1);
        let mut runner = Event::RunnerCreated(runner::RunnerCreated {
            runner_id: Uuid::nil(),
            token_hash: "00".into(),
            description: None,
            tags: vec![],
            priority: 0,
        });
        assert!(runner.pii_fields_mut().is_empty());
    }
}

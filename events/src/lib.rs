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
#[cfg(any(test, feature = "samples"))]
pub mod samples;
pub mod scope;
pub mod upcasters;
pub mod user;

pub use envelope::{Actor, LogCursor, Metadata, RecordedEvent, StreamId};
pub use pii::Pii;

use uuid::Uuid;

/// Declares [`Event`]: one enum per aggregate (the events of its streams),
/// each event type with the schema version its current Rust type writes.
/// Code that handles an aggregate's events matches its enum exhaustively,
/// so a new event type cannot be silently ignored anywhere.
macro_rules! events {
    ($(
        $(#[$group_doc:meta])*
        $group:ident($group_enum:ident) {
            $($variant:ident($ty:path) = version $version:literal),* $(,)?
        }
    ),* $(,)?) => {
        $(
            $(#[$group_doc])*
            #[derive(Clone, Debug, PartialEq)]
            pub enum $group_enum {
                $($variant($ty)),*
            }

            impl From<$group_enum> for Event {
                fn from(event: $group_enum) -> Event {
                    Event::$group(event)
                }
            }

            impl $group_enum {
                /// The name stored in the log's `event_type` column.
                pub fn event_type(&self) -> &'static str {
                    match self {
                        $($group_enum::$variant(_) => stringify!($variant),)*
                    }
                }
            }

            $(
                impl From<$ty> for $group_enum {
                    fn from(event: $ty) -> $group_enum {
                        $group_enum::$variant(event)
                    }
                }
            )*
        )*

        /// Every kind of fact warden records, by aggregate.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Event {
            $($group($group_enum)),*
        }

        impl Event {
            /// The name stored in the log's `event_type` column.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $($(Event::$group($group_enum::$variant(_)) => stringify!($variant),)*)*
                }
            }

            /// The payload shape this code writes for this event type.
            pub fn schema_version(&self) -> u32 {
                match self {
                    $($(Event::$group($group_enum::$variant(_)) => $version,)*)*
                }
            }

            /// The event's fields as stored in the log's `payload` column.
            pub fn payload(&self) -> serde_json::Value {
                match self {
                    $($(Event::$group($group_enum::$variant(e)) => serde_json::to_value(e),)*)*
                }
                .expect("event types always serialise")
            }

            /// The event of type `event_type` from its current-version
            /// payload; `None` for a type this build does not know.
            pub fn from_payload(
                event_type: &str,
                payload: serde_json::Value,
            ) -> Option<Result<Event, serde_json::Error>> {
                Self::deserialize_payload(event_type, payload)
            }

            /// [`Event::from_payload`] straight from the payload's JSON
            /// text, without building a `serde_json::Value` first.
            pub fn from_payload_json(
                event_type: &str,
                payload: &[u8],
            ) -> Option<Result<Event, serde_json::Error>> {
                let mut text = serde_json::Deserializer::from_slice(payload);
                let event = Self::deserialize_payload(event_type, &mut text)?;
                // As `serde_json::from_slice`: nothing but space may follow.
                Some(event.and_then(|event| text.end().map(|()| event)))
            }

            /// The event of type `event_type` from any serde source of its
            /// current-version payload.
            fn deserialize_payload<'de, D: serde::Deserializer<'de>>(
                event_type: &str,
                payload: D,
            ) -> Option<Result<Event, D::Error>> {
                match event_type {
                    $($(stringify!($variant) => Some(
                        <$ty as serde::Deserialize>::deserialize(payload)
                            .map(|e| Event::$group($group_enum::$variant(e))),
                    ),)*)*
                    _ => None,
                }
            }
        }

        /// Current schema version of an event type, `None` if unknown.
        pub fn current_schema_version(event_type: &str) -> Option<u32> {
            match event_type {
                $($(stringify!($variant) => Some($version),)*)*
                _ => None,
            }
        }

        /// Every event type this build knows, in declaration order.
        pub const EVENT_TYPES: &[&str] = &[$($(stringify!($variant)),*),*];
    };
}

events! {
    /// Events of `user-<id>` streams.
    User(UserEvent) {
        LocalUserCreated(user::LocalUserCreated) = version 2,
        UserEmailChanged(user::UserEmailChanged) = version 1,
        UserPasswordChanged(user::UserPasswordChanged) = version 2,
        UserRoleChanged(user::UserRoleChanged) = version 1,
        UserDeleted(user::UserDeleted) = version 1,
        LdapUserLinked(user::LdapUserLinked) = version 1,
        OidcUserLinked(user::OidcUserLinked) = version 1,
        ExternalUserSynced(user::ExternalUserSynced) = version 1,
        ApiTokenCreated(user::ApiTokenCreated) = version 2,
        ApiTokenRevoked(user::ApiTokenRevoked) = version 1,
        UserSessionsRevoked(user::UserSessionsRevoked) = version 1,
    },
    /// Events of `runner-<id>` streams.
    Runner(RunnerEvent) {
        RunnerCreated(runner::RunnerCreated) = version 1,
        RunnerInvalidated(runner::RunnerInvalidated) = version 1,
        RunnerTokenReset(runner::RunnerTokenReset) = version 1,
        RunnerUpdated(runner::RunnerUpdated) = version 1,
        RunnerPaused(runner::RunnerPaused) = version 1,
        RunnerResumed(runner::RunnerResumed) = version 1,
    },
    /// Events of `machine-<id>` streams.
    Machine(MachineEvent) {
        RunnerMachineRegistered(machine::RunnerMachineRegistered) = version 2,
        RunnerMachineContacted(machine::RunnerMachineContacted) = version 1,
        RunnerMachinePruned(machine::RunnerMachinePruned) = version 1,
    },
    /// Events of `job-<id>` streams.
    Job(JobEvent) {
        JobSubmitted(job::JobSubmitted) = version 2,
        JobAssigned(job::JobAssigned) = version 1,
        JobRetrieved(job::JobRetrieved) = version 1,
        JobProgressed(job::JobProgressed) = version 2,
        JobRequeued(job::JobRequeued) = version 1,
        JobFinished(job::JobFinished) = version 2,
        JobCancelRequested(job::JobCancelRequested) = version 1,
        JobCancelled(job::JobCancelled) = version 1,
    },
    /// Events of `scope-<id>` streams (groups and projects).
    Scope(ScopeEvent) {
        GroupCreated(scope::GroupCreated) = version 1,
        ProjectCreated(scope::ProjectCreated) = version 1,
        ScopeRenamed(scope::ScopeRenamed) = version 1,
        ScopeMoved(scope::ScopeMoved) = version 1,
        ScopeArchived(scope::ScopeArchived) = version 1,
        ScopeRunnerLimitSet(scope::ScopeRunnerLimitSet) = version 1,
        MemberAdded(scope::MemberAdded) = version 1,
        MemberRemoved(scope::MemberRemoved) = version 1,
    },
}

impl Event {
    /// The subject whose key seals this event's personal data.
    pub fn pii_subject(&self) -> Option<Uuid> {
        match self {
            Event::User(e) => e.pii_subject(),
            Event::Runner(e) => e.pii_subject(),
            Event::Machine(e) => e.pii_subject(),
            Event::Job(e) => e.pii_subject(),
            Event::Scope(e) => e.pii_subject(),
        }
    }

    /// Every personal value in this event, for sealing and unsealing.
    pub fn pii_fields_mut(&mut self) -> Vec<&mut Pii> {
        match self {
            Event::User(e) => e.pii_fields_mut(),
            Event::Runner(e) => e.pii_fields_mut(),
            Event::Machine(e) => e.pii_fields_mut(),
            Event::Job(e) => e.pii_fields_mut(),
            Event::Scope(e) => e.pii_fields_mut(),
        }
    }

    /// The subject whose personal data must be forgotten once this event
    /// is recorded.
    pub fn forgets_subject(&self) -> Option<Uuid> {
        match self {
            Event::User(UserEvent::UserDeleted(e)) => Some(e.user_id),
            Event::User(_) | Event::Runner(_) | Event::Machine(_) | Event::Job(_) | Event::Scope(_) => None,
        }
    }

    pub fn as_user(&self) -> Option<&UserEvent> {
        match self {
            Event::User(e) => Some(e),
            Event::Runner(_) | Event::Machine(_) | Event::Job(_) | Event::Scope(_) => None,
        }
    }

    pub fn as_runner(&self) -> Option<&RunnerEvent> {
        match self {
            Event::Runner(e) => Some(e),
            Event::User(_) | Event::Machine(_) | Event::Job(_) | Event::Scope(_) => None,
        }
    }

    pub fn as_machine(&self) -> Option<&MachineEvent> {
        match self {
            Event::Machine(e) => Some(e),
            Event::User(_) | Event::Runner(_) | Event::Job(_) | Event::Scope(_) => None,
        }
    }

    pub fn as_job(&self) -> Option<&JobEvent> {
        match self {
            Event::Job(e) => Some(e),
            Event::User(_) | Event::Runner(_) | Event::Machine(_) | Event::Scope(_) => None,
        }
    }

    pub fn as_scope(&self) -> Option<&ScopeEvent> {
        match self {
            Event::Scope(e) => Some(e),
            Event::User(_) | Event::Runner(_) | Event::Machine(_) | Event::Job(_) => None,
        }
    }
}

// Where each event type keeps personal data. Every event type answers
// (exhaustive matches), so a new one cannot be appended unsealed by
// omission; `pii_sealing_covers_every_event_type` in the event store
// checks the answers against a sample of every type.

impl UserEvent {
    pub fn pii_subject(&self) -> Option<Uuid> {
        match self {
            UserEvent::LocalUserCreated(e) => Some(e.user_id),
            UserEvent::UserEmailChanged(e) => Some(e.user_id),
            UserEvent::LdapUserLinked(e) => Some(e.user_id),
            UserEvent::OidcUserLinked(e) => Some(e.user_id),
            UserEvent::ExternalUserSynced(e) => Some(e.user_id),
            UserEvent::UserPasswordChanged(e) => Some(e.user_id),
            UserEvent::ApiTokenCreated(e) => Some(e.user_id),
            UserEvent::UserRoleChanged(_)
            | UserEvent::UserDeleted(_)
            | UserEvent::ApiTokenRevoked(_)
            | UserEvent::UserSessionsRevoked(_) => None,
        }
    }

    pub fn pii_fields_mut(&mut self) -> Vec<&mut Pii> {
        match self {
            UserEvent::LocalUserCreated(e) => vec![&mut e.email, &mut e.password_hash],
            UserEvent::UserEmailChanged(e) => vec![&mut e.email],
            UserEvent::LdapUserLinked(e) => vec![&mut e.uid, &mut e.email],
            UserEvent::OidcUserLinked(e) => vec![&mut e.subject, &mut e.email],
            UserEvent::ExternalUserSynced(e) => vec![&mut e.email],
            UserEvent::UserPasswordChanged(e) => vec![&mut e.password_hash],
            UserEvent::ApiTokenCreated(e) => vec![&mut e.name],
            UserEvent::UserRoleChanged(_)
            | UserEvent::UserDeleted(_)
            | UserEvent::ApiTokenRevoked(_)
            | UserEvent::UserSessionsRevoked(_) => Vec::new(),
        }
    }
}

impl RunnerEvent {
    pub fn pii_subject(&self) -> Option<Uuid> {
        match self {
            RunnerEvent::RunnerCreated(_)
            | RunnerEvent::RunnerInvalidated(_)
            | RunnerEvent::RunnerTokenReset(_)
            | RunnerEvent::RunnerUpdated(_)
            | RunnerEvent::RunnerPaused(_)
            | RunnerEvent::RunnerResumed(_) => None,
        }
    }

    pub fn pii_fields_mut(&mut self) -> Vec<&mut Pii> {
        match self {
            RunnerEvent::RunnerCreated(_)
            | RunnerEvent::RunnerInvalidated(_)
            | RunnerEvent::RunnerTokenReset(_)
            | RunnerEvent::RunnerUpdated(_)
            | RunnerEvent::RunnerPaused(_)
            | RunnerEvent::RunnerResumed(_) => Vec::new(),
        }
    }
}

impl MachineEvent {
    pub fn pii_subject(&self) -> Option<Uuid> {
        match self {
            MachineEvent::RunnerMachineRegistered(_)
            | MachineEvent::RunnerMachineContacted(_)
            | MachineEvent::RunnerMachinePruned(_) => None,
        }
    }

    pub fn pii_fields_mut(&mut self) -> Vec<&mut Pii> {
        match self {
            MachineEvent::RunnerMachineRegistered(_)
            | MachineEvent::RunnerMachineContacted(_)
            | MachineEvent::RunnerMachinePruned(_) => Vec::new(),
        }
    }
}

impl JobEvent {
    /// Progress and results name their subject only when they carry a
    /// value to seal: a job of a deleted user can still be finished or
    /// cancelled, without keeping anything of it.
    pub fn pii_subject(&self) -> Option<Uuid> {
        match self {
            JobEvent::JobSubmitted(e) => Some(e.submitted_by),
            JobEvent::JobProgressed(e) => e.submitted_by.filter(|_| e.message.is_some()),
            JobEvent::JobFinished(e) => e.submitted_by.filter(|_| e.result.is_some()),
            JobEvent::JobAssigned(_)
            | JobEvent::JobRetrieved(_)
            | JobEvent::JobRequeued(_)
            | JobEvent::JobCancelRequested(_)
            | JobEvent::JobCancelled(_) => None,
        }
    }

    pub fn pii_fields_mut(&mut self) -> Vec<&mut Pii> {
        match self {
            JobEvent::JobSubmitted(e) => std::iter::once(&mut e.payload).chain(e.input_name.as_mut()).collect(),
            JobEvent::JobProgressed(e) => e.message.as_mut().into_iter().collect(),
            JobEvent::JobFinished(e) => e.result.as_mut().into_iter().collect(),
            JobEvent::JobAssigned(_)
            | JobEvent::JobRetrieved(_)
            | JobEvent::JobRequeued(_)
            | JobEvent::JobCancelRequested(_)
            | JobEvent::JobCancelled(_) => Vec::new(),
        }
    }
}

/// Groups, projects and memberships hold names and user ids only.
impl ScopeEvent {
    pub fn pii_subject(&self) -> Option<Uuid> {
        None
    }

    pub fn pii_fields_mut(&mut self) -> Vec<&mut Pii> {
        match self {
            ScopeEvent::GroupCreated(_)
            | ScopeEvent::ProjectCreated(_)
            | ScopeEvent::ScopeRenamed(_)
            | ScopeEvent::ScopeMoved(_)
            | ScopeEvent::ScopeArchived(_)
            | ScopeEvent::ScopeRunnerLimitSet(_)
            | ScopeEvent::MemberAdded(_)
            | ScopeEvent::MemberRemoved(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_and_versions_come_from_the_declaration() {
        let event: Event = RunnerEvent::from(runner::RunnerInvalidated {
            runner_id: Uuid::nil(),
            reason: None,
        })
        .into();
        assert_eq!(event.event_type(), "RunnerInvalidated");
        assert_eq!(event.schema_version(), 1);
        assert_eq!(current_schema_version("RunnerInvalidated"), Some(1));
        assert_eq!(current_schema_version("NoSuchEvent"), None);
    }

    #[test]
    fn only_user_events_carry_personal_data() {
        let mut created: Event = UserEvent::from(user::LocalUserCreated {
            user_id: Uuid::nil(),
            email: Pii::plain("a@example.org"),
            password_hash: Pii::plain("$argon2id$..."),
            role: user::Role::User,
            origin: user::UserOrigin::CommandLine,
        })
        .into();
        assert_eq!(created.pii_subject(), Some(Uuid::nil()));
        assert_eq!(created.pii_fields_mut().len(), 2, "email and password hash");
        let mut runner: Event = RunnerEvent::from(runner::RunnerCreated {
            runner_id: Uuid::nil(),
            number: None,
            token_hash: "00".into(),
            description: None,
            tags: vec![],
            priority: 0,
            scope_id: None,
        })
        .into();
        assert!(runner.pii_fields_mut().is_empty());
    }
}

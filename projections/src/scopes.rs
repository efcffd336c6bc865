//! The `scopes` (groups and projects) and `scope_members` read models.
//!
//! A membership row's id is derived from its scope and user
//! ([`membership_id`]), so adding a member again, or changing their role,
//! rewrites the same row; a removed member's row stays, marked inactive,
//! which keeps every change version-guarded like any other row.

use crate::change::{Assign, Change, OnConflict, Value};
use crate::AggregateProjection;
use uuid::Uuid;
use warden_events::{Event, RecordedEvent, ScopeEvent};

pub struct ScopeProjection;

const SCOPES: &str = "scopes";
const MEMBERS: &str = "scope_members";

/// Namespace of membership row ids (name-based UUIDs, v5).
const MEMBERSHIP_NAMESPACE: Uuid = Uuid::from_u128(0x6d2f_4b1e_8c57_4e0a_9a51_3c2d_7b1f_0e44);

/// The id of `user_id`'s membership row in `scope_id`.
pub fn membership_id(scope_id: Uuid, user_id: Uuid) -> Uuid {
    let mut name = scope_id.as_bytes().to_vec();
    name.extend_from_slice(user_id.as_bytes());
    Uuid::new_v5(&MEMBERSHIP_NAMESPACE, &name)
}

impl AggregateProjection for ScopeProjection {
    type Event = ScopeEvent;
    const NAME: &'static str = "scopes";
    const CATEGORY: &'static str = "scope";
    const TABLES: &'static [&'static str] = &[SCOPES, MEMBERS];
    // Memberships decide who may do what.
    const DURABLE_COMMITS: bool = true;

    fn select(event: &Event) -> Option<&ScopeEvent> {
        event.as_scope()
    }

    fn changes_of(recorded: &RecordedEvent, event: &ScopeEvent) -> Vec<Change> {
        let at = Value::Time(recorded.recorded_at);
        let version = recorded.stream_version;
        let created = |id: Uuid, kind: &str, name: &str, parent_id: Option<Uuid>| Change::Insert {
            table: SCOPES,
            row: vec![
                ("id", id.into()),
                ("kind", kind.into()),
                ("name", name.into()),
                ("parent_id", parent_id.into()),
                ("archived", Value::Bool(false)),
                ("created_at", at.clone()),
                ("updated_at", at.clone()),
                ("version", version.into()),
            ],
            on_conflict: OnConflict::Keep,
        };
        let update = |scope_id, mut set: Vec<(&'static str, Assign)>| {
            set.push(("updated_at", Assign::To(at.clone())));
            Change::Update {
                table: SCOPES,
                key: ("id", scope_id),
                version,
                set,
            }
        };
        let membership = |scope_id: Uuid, user_id: Uuid, role: Value, source: Value, active: bool| Change::Insert {
            table: MEMBERS,
            row: vec![
                ("id", membership_id(scope_id, user_id).into()),
                ("scope_id", scope_id.into()),
                ("user_id", user_id.into()),
                ("role", role),
                ("source", source),
                ("active", Value::Bool(active)),
                ("updated_at", at.clone()),
                ("version", version.into()),
            ],
            on_conflict: OnConflict::ReplaceOlder,
        };
        vec![match event {
            ScopeEvent::GroupCreated(e) => created(e.group_id, "group", &e.name, e.parent_id),
            ScopeEvent::ProjectCreated(e) => created(e.project_id, "project", &e.name, Some(e.group_id)),
            ScopeEvent::ScopeRenamed(e) => update(e.scope_id, vec![("name", Assign::To((&e.name).into()))]),
            ScopeEvent::ScopeMoved(e) => update(e.scope_id, vec![("parent_id", Assign::To(e.parent_id.into()))]),
            ScopeEvent::ScopeArchived(e) => update(e.scope_id, vec![("archived", Assign::To(Value::Bool(true)))]),
            ScopeEvent::ScopeRunnerLimitSet(e) => {
                update(e.scope_id, vec![("runner_limit", Assign::To(e.limit.into()))])
            }
            ScopeEvent::MemberAdded(e) => membership(
                e.scope_id,
                e.user_id,
                e.role.as_str().into(),
                source_name(&e.source).into(),
                true,
            ),
            ScopeEvent::MemberRemoved(e) => membership(e.scope_id, e.user_id, Value::Null, Value::Null, false),
        }]
    }
}

fn source_name(source: &warden_events::scope::MembershipSource) -> &'static str {
    match source {
        warden_events::scope::MembershipSource::Api => "api",
        warden_events::scope::MembershipSource::Mapping => "mapping",
    }
}

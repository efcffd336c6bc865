//! Events of the `scope-<id>` streams: groups, projects and their members.
//!
//! Groups nest; a project belongs to one group. Together they are the
//! scopes runners and jobs belong to (GitLab's instance/group/project
//! runners). A scope's members are recorded on its own stream.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a member may do in a scope (and every scope below it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ScopeRole {
    /// Submits jobs to the scope and sees their own.
    Member,
    /// Manages the scope's runners and members, sees every job and machine.
    Manager,
}

impl ScopeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeRole::Member => "member",
            ScopeRole::Manager => "manager",
        }
    }
}

/// Where a membership comes from: granted through the API (by an admin or
/// a manager), or mapped from an identity provider's group (and then kept
/// in step with it at each log-in and sync).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MembershipSource {
    #[default]
    Api,
    /// A configured mapping (`scopes.mappings`) from a directory or
    /// provider group.
    Mapping,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCreated {
    pub group_id: Uuid,
    pub name: String,
    /// The group it is nested in; none for a top-level group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectCreated {
    pub project_id: Uuid,
    pub name: String,
    pub group_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRenamed {
    pub scope_id: Uuid,
    pub name: String,
    /// The group the scope sits in (none for a top-level group): names
    /// are unique among siblings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<Uuid>,
}

/// The scope now sits in another group; its runners, jobs and the
/// scopes below it come along (they name it by id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeMoved {
    pub scope_id: Uuid,
    /// The group it sits in now.
    pub parent_id: Uuid,
    /// Its name, which must be free in the new group.
    pub name: String,
}

/// Archived: no new runners, jobs or members; what exists stays readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeArchived {
    pub scope_id: Uuid,
}

/// How many active runners the scope may have; `None` returns to the
/// configured default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRunnerLimitSet {
    pub scope_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// A user became a member of the scope, or their role there changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAdded {
    pub scope_id: Uuid,
    pub user_id: Uuid,
    pub role: ScopeRole,
    #[serde(default)]
    pub source: MembershipSource,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoved {
    pub scope_id: Uuid,
    pub user_id: Uuid,
}

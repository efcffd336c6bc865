//! The scope aggregate: a group (which may be nested in another) or a
//! project (in one group), its name, runner limit and members.
//!
//! Where a scope sits (its parent exists, is a group, is not archived) and
//! that its name is free among its siblings are checked outside: the first
//! by the caller from the read model, the second by the event store's
//! claim on `<parent>/<name>`, taken in the append's transaction.

use std::collections::BTreeMap;

use uuid::Uuid;
use warden_events::scope::{
    GroupCreated, MemberAdded, MemberRemoved, MembershipSource, ProjectCreated, ScopeArchived, ScopeMoved,
    ScopeRenamed, ScopeRole, ScopeRunnerLimitSet,
};
use warden_events::{Event, ScopeEvent};

use super::{Aggregate, DomainError};
use crate::api::ErrorCode;

/// What a scope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    Group,
    Project,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Group => "group",
            ScopeKind::Project => "project",
        }
    }
}

/// The most runners a scope may be given as its own limit.
pub const MAX_RUNNER_LIMIT: i64 = 100_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Unknown,
    Existing(ExistingScope),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingScope {
    pub id: Uuid,
    pub kind: ScopeKind,
    pub name: String,
    /// The group it sits in; none for a top-level group.
    pub parent_id: Option<Uuid>,
    pub archived: bool,
    pub runner_limit: Option<i64>,
    pub members: BTreeMap<Uuid, (ScopeRole, MembershipSource)>,
}

#[derive(Clone, Debug)]
pub enum ScopeCommand {
    CreateGroup {
        group_id: Uuid,
        name: String,
        parent_id: Option<Uuid>,
    },
    CreateProject {
        project_id: Uuid,
        name: String,
        group_id: Uuid,
    },
    Rename {
        name: String,
    },
    /// Into the group `parent_id` (which the caller checked exists, is a
    /// group, and is neither this scope nor below it).
    Move {
        parent_id: Uuid,
    },
    Archive,
    SetRunnerLimit {
        limit: Option<i64>,
    },
    /// Adds the member, or changes their role or source.
    AddMember {
        user_id: Uuid,
        role: ScopeRole,
        source: MembershipSource,
    },
    /// Removes the member; with `only_from`, only a membership of that
    /// source (a directory sync does not take away what an admin granted).
    RemoveMember {
        user_id: Uuid,
        only_from: Option<MembershipSource>,
    },
}

/// A group's or project's name: 1 to 64 of a-z 0-9 `_` `.` `-`, starting
/// with a letter or digit (a path segment; upper case is folded).
pub fn normalise_name(name: &str) -> Result<String, DomainError> {
    let name = name.trim().to_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(name)
    } else {
        Err(DomainError::Invalid {
            code: ErrorCode::InvalidScope,
            message: format!(
                "`{name}` is not a valid group or project name: 1 to 64 of a-z 0-9 _ . -, starting with a letter or digit"
            ),
        })
    }
}

impl Aggregate for Scope {
    // Names, limits and user ids only.
    const CACHEABLE: bool = true;
    type Command = ScopeCommand;
    type Event = ScopeEvent;

    fn select(event: &Event) -> Option<&ScopeEvent> {
        event.as_scope()
    }

    fn evolve(&mut self, event: &ScopeEvent) {
        let created = |id, kind, name: &str, parent_id| {
            Scope::Existing(ExistingScope {
                id,
                kind,
                name: name.to_owned(),
                parent_id,
                archived: false,
                runner_limit: None,
                members: BTreeMap::new(),
            })
        };
        match event {
            ScopeEvent::GroupCreated(e) => *self = created(e.group_id, ScopeKind::Group, &e.name, e.parent_id),
            ScopeEvent::ProjectCreated(e) => {
                *self = created(e.project_id, ScopeKind::Project, &e.name, Some(e.group_id))
            }
            ScopeEvent::ScopeRenamed(e) => self.change(|scope| scope.name = e.name.clone()),
            ScopeEvent::ScopeMoved(e) => self.change(|scope| scope.parent_id = Some(e.parent_id)),
            ScopeEvent::ScopeArchived(_) => self.change(|scope| scope.archived = true),
            ScopeEvent::ScopeRunnerLimitSet(e) => self.change(|scope| scope.runner_limit = e.limit),
            ScopeEvent::MemberAdded(e) => self.change(|scope| {
                scope.members.insert(e.user_id, (e.role, e.source.clone()));
            }),
            ScopeEvent::MemberRemoved(e) => self.change(|scope| {
                scope.members.remove(&e.user_id);
            }),
        }
    }

    fn decide(&self, command: &ScopeCommand) -> Result<Vec<ScopeEvent>, DomainError> {
        let scope = match (self, command) {
            (
                Scope::Unknown,
                ScopeCommand::CreateGroup {
                    group_id,
                    name,
                    parent_id,
                },
            ) => {
                return Ok(vec![GroupCreated {
                    group_id: *group_id,
                    name: normalise_name(name)?,
                    parent_id: *parent_id,
                }
                .into()])
            }
            (
                Scope::Unknown,
                ScopeCommand::CreateProject {
                    project_id,
                    name,
                    group_id,
                },
            ) => {
                return Ok(vec![ProjectCreated {
                    project_id: *project_id,
                    name: normalise_name(name)?,
                    group_id: *group_id,
                }
                .into()])
            }
            (_, ScopeCommand::CreateGroup { .. } | ScopeCommand::CreateProject { .. }) => {
                return Err(DomainError::Conflict {
                    code: ErrorCode::ScopeExists,
                    message: "a group or project with this id already exists".into(),
                })
            }
            (Scope::Unknown, _) => {
                return Err(DomainError::NotFound {
                    code: ErrorCode::ScopeNotFound,
                    what: "group or project",
                })
            }
            (Scope::Existing(scope), _) => scope,
        };
        let id = scope.id;
        let archived = || DomainError::Conflict {
            code: ErrorCode::ScopeArchived,
            message: format!("the {} `{}` is archived", scope.kind.as_str(), scope.name),
        };
        let event: ScopeEvent = match command {
            ScopeCommand::CreateGroup { .. } | ScopeCommand::CreateProject { .. } => {
                unreachable!("handled above")
            }
            ScopeCommand::Rename { name } => {
                let name = normalise_name(name)?;
                if name == scope.name {
                    return Ok(Vec::new());
                }
                ScopeRenamed {
                    scope_id: id,
                    name,
                    parent_id: scope.parent_id,
                }
                .into()
            }
            ScopeCommand::Move { parent_id } if *parent_id == id => {
                return Err(DomainError::Conflict {
                    code: ErrorCode::ScopeLoop,
                    message: "a scope cannot be moved into itself".into(),
                })
            }
            ScopeCommand::Move { parent_id } if scope.parent_id == Some(*parent_id) => return Ok(Vec::new()),
            ScopeCommand::Move { parent_id } => ScopeMoved {
                scope_id: id,
                parent_id: *parent_id,
                name: scope.name.clone(),
            }
            .into(),
            ScopeCommand::Archive if scope.archived => return Ok(Vec::new()),
            ScopeCommand::Archive => ScopeArchived { scope_id: id }.into(),
            ScopeCommand::SetRunnerLimit { limit } => {
                if limit.is_some_and(|limit| !(0..=MAX_RUNNER_LIMIT).contains(&limit)) {
                    return Err(DomainError::Invalid {
                        code: ErrorCode::InvalidField,
                        message: format!("a runner limit is between 0 and {MAX_RUNNER_LIMIT}"),
                    });
                }
                if *limit == scope.runner_limit {
                    return Ok(Vec::new());
                }
                ScopeRunnerLimitSet {
                    scope_id: id,
                    limit: *limit,
                }
                .into()
            }
            ScopeCommand::AddMember { .. } if scope.archived => return Err(archived()),
            ScopeCommand::AddMember { user_id, role, source } => {
                let unchanged = scope.members.get(user_id) == Some(&(*role, source.clone()));
                // A directory or provider never overrides a grant made
                // through the API.
                let granted_by_hand = *source == MembershipSource::Mapping
                    && matches!(scope.members.get(user_id), Some((_, MembershipSource::Api)));
                if unchanged || granted_by_hand {
                    return Ok(Vec::new());
                }
                MemberAdded {
                    scope_id: id,
                    user_id: *user_id,
                    role: *role,
                    source: source.clone(),
                }
                .into()
            }
            ScopeCommand::RemoveMember { user_id, only_from } => match scope.members.get(user_id) {
                Some((_, source)) if only_from.as_ref().is_none_or(|only| only == source) => MemberRemoved {
                    scope_id: id,
                    user_id: *user_id,
                }
                .into(),
                _ => return Ok(Vec::new()),
            },
        };
        Ok(vec![event])
    }
}

impl Scope {
    fn change(&mut self, f: impl FnOnce(&mut ExistingScope)) {
        if let Scope::Existing(scope) = self {
            f(scope)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{given, then, then_err, when};

    fn group(id: u128) -> ScopeEvent {
        GroupCreated {
            group_id: Uuid::from_u128(id),
            name: "physics".into(),
            parent_id: None,
        }
        .into()
    }

    #[test]
    fn names_are_path_segments_folded_to_lower_case() {
        assert_eq!(normalise_name(" Lattice-QCD ").unwrap(), "lattice-qcd");
        for bad in ["", "-x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert_eq!(
                normalise_name(bad).unwrap_err().code(),
                ErrorCode::InvalidScope,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_scope_is_created_once() {
        let mut scope = given::<Scope>(&[group(1)]);
        let again = ScopeCommand::CreateProject {
            project_id: Uuid::from_u128(1),
            name: "x".into(),
            group_id: Uuid::from_u128(2),
        };
        then_err(when(&mut scope, again), "scope_exists");
    }

    #[test]
    fn membership_changes_only_when_something_changes() {
        let mut scope = given::<Scope>(&[group(1)]);
        let user_id = Uuid::from_u128(9);
        let add = ScopeCommand::AddMember {
            user_id,
            role: ScopeRole::Member,
            source: MembershipSource::Api,
        };
        then(
            when(&mut scope, add.clone()),
            &[MemberAdded {
                scope_id: Uuid::from_u128(1),
                user_id,
                role: ScopeRole::Member,
                source: MembershipSource::Api,
            }
            .into()],
        );
        then(when(&mut scope, add), &[]);
    }

    #[test]
    fn a_directory_sync_does_not_remove_what_an_admin_granted() {
        let user_id = Uuid::from_u128(9);
        let mut scope = given::<Scope>(&[
            group(1),
            MemberAdded {
                scope_id: Uuid::from_u128(1),
                user_id,
                role: ScopeRole::Manager,
                source: MembershipSource::Api,
            }
            .into(),
        ]);
        let sync_removal = ScopeCommand::RemoveMember {
            user_id,
            only_from: Some(MembershipSource::Mapping),
        };
        then(when(&mut scope, sync_removal), &[]);
        let removal = ScopeCommand::RemoveMember {
            user_id,
            only_from: None,
        };
        then(
            when(&mut scope, removal),
            &[MemberRemoved {
                scope_id: Uuid::from_u128(1),
                user_id,
            }
            .into()],
        );
    }

    #[test]
    fn a_mapping_does_not_override_what_an_admin_granted() {
        let user_id = Uuid::from_u128(9);
        let mut scope = given::<Scope>(&[
            group(1),
            MemberAdded {
                scope_id: Uuid::from_u128(1),
                user_id,
                role: ScopeRole::Manager,
                source: MembershipSource::Api,
            }
            .into(),
        ]);
        let mapped = ScopeCommand::AddMember {
            user_id,
            role: ScopeRole::Member,
            source: MembershipSource::Mapping,
        };
        then(when(&mut scope, mapped), &[]);
    }

    #[test]
    fn an_archived_scope_takes_no_new_members() {
        let mut scope = given::<Scope>(&[
            group(1),
            ScopeArchived {
                scope_id: Uuid::from_u128(1),
            }
            .into(),
        ]);
        let add = ScopeCommand::AddMember {
            user_id: Uuid::from_u128(9),
            role: ScopeRole::Member,
            source: MembershipSource::Api,
        };
        then_err(when(&mut scope, add), "scope_archived");
    }

    #[test]
    fn runner_limits_are_bounded() {
        let mut scope = given::<Scope>(&[group(1)]);
        let too_many = ScopeCommand::SetRunnerLimit {
            limit: Some(MAX_RUNNER_LIMIT + 1),
        };
        then_err(when(&mut scope, too_many), "invalid_field");
    }
}

//! Groups and projects: finding them by path, their members, who may do
//! what in them, and the runners and jobs that belong to them.
//!
//! The rules (GitLab's, with cc-backend's manager role):
//! - a member of a scope may submit jobs to it and to every scope below;
//! - a manager of a scope manages its runners, members and sub-scopes,
//!   and sees every runner and job of it and below;
//! - admins (admin-scoped token) may do everything; instance runners and
//!   top-level groups are theirs alone.
//!
//! A caller with no role in a scope or above it is told the scope does
//! not exist: names of other teams' scopes do not leak.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use uuid::Uuid;
use warden_events::scope::{MembershipSource, ScopeRole};
use warden_events::{Metadata, StreamId};

use crate::api::{ErrorCode, ScopeRef};
use crate::domain::scope::{Scope, ScopeCommand, ScopeKind};
use crate::domain::DomainError;
use crate::log::commands::{CommandError, CommandService, Precondition};
use crate::log::event_store::StoreError;
use crate::platform::db::Database;

/// A group or project as the read model has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeRecord {
    pub id: Uuid,
    pub kind: ScopeKind,
    /// Names from the top, joined by `/`.
    pub path: String,
    pub parent_id: Option<Uuid>,
    /// It or a group above it is archived.
    pub archived: bool,
    /// The scope's own runner limit; none: the configured default.
    pub runner_limit: Option<i64>,
}

impl ScopeRecord {
    /// How calls name it (`group:physics`, `project:physics/lattice-qcd`).
    pub fn reference(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.path)
    }
}

/// Who asks.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub user_id: Uuid,
    /// An admin with an admin-scoped token.
    pub admin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("no {0} (or none you may see)")]
    NotFound(String),
    #[error("this needs the manager role in {0} or a group above it")]
    ManagerRequired(String),
    #[error("submitting to {0} needs membership in it or a group above it")]
    MembershipRequired(String),
    #[error("{0} is archived")]
    Archived(String),
    #[error("only admins (with an admin-scoped token) may {0}")]
    AdminRequired(&'static str),
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl From<StoreError> for ScopeError {
    fn from(error: StoreError) -> Self {
        ScopeError::Command(error.into())
    }
}

impl From<DomainError> for ScopeError {
    fn from(error: DomainError) -> Self {
        ScopeError::Command(error.into())
    }
}

const COLUMNS: &str = "id, kind, parent_id, archived, runner_limit";

fn record(row: &tokio_postgres::Row, path: String) -> ScopeRecord {
    ScopeRecord {
        id: row.get(0),
        kind: match row.get::<_, &str>(1) {
            "project" => ScopeKind::Project,
            _ => ScopeKind::Group,
        },
        parent_id: row.get(2),
        archived: row.get(3),
        runner_limit: row.get(4),
        path,
    }
}

/// The group or project `reference` names; `None` for the instance.
/// Every segment but the last is a group.
pub async fn find<C: GenericClient>(client: &C, reference: &ScopeRef) -> Result<Option<ScopeRecord>, ScopeError> {
    let (path, kind) = match reference {
        ScopeRef::Instance => return Ok(None),
        ScopeRef::Group(path) => (path, ScopeKind::Group),
        ScopeRef::Project(path) => (path, ScopeKind::Project),
    };
    let not_found = || ScopeError::NotFound(reference.to_string());
    let top = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM scopes WHERE parent_id IS NULL AND name = $1"
        ))
        .await
        .map_err(StoreError::from)?;
    let nested = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM scopes WHERE parent_id = $1 AND name = $2"
        ))
        .await
        .map_err(StoreError::from)?;
    let mut found: Option<ScopeRecord> = None;
    for (depth, name) in path.iter().enumerate() {
        let row = match &found {
            None => client.query_opt(&top, &[name]).await,
            Some(parent) => client.query_opt(&nested, &[&parent.id, name]).await,
        }
        .map_err(StoreError::from)?
        .ok_or_else(not_found)?;
        let mut here = record(&row, path[..=depth].join("/"));
        here.archived |= found.as_ref().is_some_and(|parent| parent.archived);
        let last = depth + 1 == path.len();
        if (last && here.kind != kind) || (!last && here.kind != ScopeKind::Group) {
            return Err(not_found());
        }
        found = Some(here);
    }
    Ok(found)
}

/// Scopes with their path and whether they or a group above are archived
/// (columns as [`record`] reads them, the path sixth); callers add the
/// conditions.
macro_rules! scopes_with_path {
    () => {
        "SELECT scopes.id, scopes.kind, scopes.parent_id, above.archived, scopes.runner_limit, above.path
         FROM scopes,
         LATERAL (SELECT string_agg(s.name, '/' ORDER BY a.depth DESC) AS path, bool_or(s.archived) AS archived
            FROM unnest(scope_and_above(scopes.id)) WITH ORDINALITY AS a(id, depth)
            JOIN scopes s ON s.id = a.id) above"
    };
}

/// `$1`'s strongest role in the scope `$scope` names, or a group above
/// it: true for manager, false for member, NULL for none.
macro_rules! role_in_scope {
    ($scope:literal) => {
        concat!(
            "(SELECT bool_or(m.role = 'manager') FROM scope_members m
              WHERE m.active AND m.user_id = $1 AND m.scope_id = ANY(scope_and_above(",
            $scope,
            ")))"
        )
    };
}

fn role(manager: Option<bool>) -> Option<ScopeRole> {
    manager.map(|manager| if manager { ScopeRole::Manager } else { ScopeRole::Member })
}

/// The scope of id `scope_id`, with its path.
pub async fn by_id<C: GenericClient>(client: &C, scope_id: Uuid) -> Result<Option<ScopeRecord>, StoreError> {
    let select = client
        .prepare_cached(concat!(scopes_with_path!(), " WHERE scopes.id = $1"))
        .await?;
    Ok(client
        .query_opt(&select, &[&scope_id])
        .await?
        .map(|row| record(&row, row.get(5))))
}

/// `user_id`'s strongest role in `scope_id` or any group above it.
pub async fn role_in<C: GenericClient>(
    client: &C,
    user_id: Uuid,
    scope_id: Uuid,
) -> Result<Option<ScopeRole>, StoreError> {
    let select = client
        .prepare_cached(concat!("SELECT ", role_in_scope!("$2::uuid")))
        .await?;
    Ok(role(client.query_one(&select, &[&user_id, &scope_id]).await?.get(0)))
}

/// What `caller` may do in `scope`: `Ok` with their role (admins count as
/// managers), or not found when they have none there or above.
async fn role_of<C: GenericClient>(client: &C, caller: Caller, scope: &ScopeRecord) -> Result<ScopeRole, ScopeError> {
    if caller.admin {
        return Ok(ScopeRole::Manager);
    }
    role_in(client, caller.user_id, scope.id)
        .await?
        .ok_or_else(|| ScopeError::NotFound(scope.reference()))
}

/// `scope`, if `caller` manages it (or a group above it).
pub async fn require_manager<C: GenericClient>(
    client: &C,
    caller: Caller,
    scope: &ScopeRecord,
) -> Result<(), ScopeError> {
    match role_of(client, caller, scope).await? {
        ScopeRole::Manager => Ok(()),
        ScopeRole::Member => Err(ScopeError::ManagerRequired(scope.reference())),
    }
}

/// `scope`, if `caller` may submit jobs to it.
pub async fn require_member<C: GenericClient>(
    client: &C,
    caller: Caller,
    scope: &ScopeRecord,
) -> Result<(), ScopeError> {
    role_of(client, caller, scope)
        .await
        .map(|_| ())
        .map_err(|error| match error {
            ScopeError::NotFound(name) => ScopeError::MembershipRequired(name),
            other => other,
        })
}

/// The scope `reference` names, which `caller` manages.
pub async fn managed(db: &Database, caller: Caller, reference: &ScopeRef) -> Result<ScopeRecord, ScopeError> {
    let connection = db.get().await.map_err(StoreError::from)?;
    let scope = find(&connection, reference)
        .await?
        .ok_or(ScopeError::AdminRequired("act on the instance scope"))?;
    require_manager(&connection, caller, &scope).await?;
    Ok(scope)
}

/// Where a new runner or job goes: `None` for the instance. A job needs
/// membership there, a runner the manager role; an archived scope takes
/// neither.
pub async fn destination(
    db: &Database,
    caller: Caller,
    reference: &ScopeRef,
    manage: bool,
) -> Result<Option<ScopeRecord>, ScopeError> {
    let connection = db.get().await.map_err(StoreError::from)?;
    let found = find(&connection, reference).await.map_err(|error| match error {
        // Whether a scope one may not submit to exists is not told.
        ScopeError::NotFound(name) if !manage => ScopeError::MembershipRequired(name),
        other => other,
    });
    let Some(scope) = found? else {
        if manage && !caller.admin {
            return Err(ScopeError::AdminRequired("create instance runners"));
        }
        return Ok(None);
    };
    if manage {
        require_manager(&connection, caller, &scope).await?;
    } else {
        require_member(&connection, caller, &scope).await?;
    }
    if scope.archived {
        return Err(ScopeError::Archived(scope.reference()));
    }
    Ok(Some(scope))
}

/// Creates a group (in `parent`, or at the top) or a project (in the
/// group `parent`). Top-level groups are for admins; the rest for
/// managers of the parent.
pub async fn create(
    commands: &CommandService,
    db: &Database,
    caller: Caller,
    kind: ScopeKind,
    name: &str,
    parent: Option<&ScopeRef>,
    metadata: &Metadata,
) -> Result<ScopeRecord, ScopeError> {
    let parent = match parent {
        Some(reference @ ScopeRef::Group(_)) => Some(
            destination(db, caller, reference, true)
                .await?
                .ok_or_else(|| ScopeError::NotFound(reference.to_string()))?,
        ),
        Some(other) => {
            return Err(DomainError::Invalid {
                code: ErrorCode::InvalidScope,
                message: format!("`{other}` cannot hold groups or projects; name a group"),
            }
            .into())
        }
        None if kind == ScopeKind::Project => {
            return Err(DomainError::Invalid {
                code: ErrorCode::InvalidScope,
                message: "a project belongs to a group: name it".into(),
            }
            .into())
        }
        None if !caller.admin => return Err(ScopeError::AdminRequired("create top-level groups")),
        None => None,
    };
    let id = Uuid::now_v7();
    let command = match (kind, &parent) {
        (ScopeKind::Group, _) => ScopeCommand::CreateGroup {
            group_id: id,
            name: name.to_owned(),
            parent_id: parent.as_ref().map(|p| p.id),
        },
        (ScopeKind::Project, Some(group)) => ScopeCommand::CreateProject {
            project_id: id,
            name: name.to_owned(),
            group_id: group.id,
        },
        (ScopeKind::Project, None) => unreachable!("refused above"),
    };
    commands
        .execute_new::<Scope>(&StreamId::scope(id), &command, metadata)
        .await?;
    let connection = db.get().await.map_err(StoreError::from)?;
    Ok(by_id(&connection, id)
        .await?
        .expect("a scope just created is in the read model"))
}

/// Runs `command` on a scope `caller` manages.
pub async fn change(
    commands: &CommandService,
    db: &Database,
    caller: Caller,
    reference: &ScopeRef,
    command: ScopeCommand,
    metadata: &Metadata,
) -> Result<ScopeRecord, ScopeError> {
    let scope = managed(db, caller, reference).await?;
    if matches!(command, ScopeCommand::SetRunnerLimit { .. }) && !caller.admin {
        return Err(ScopeError::AdminRequired("set runner limits"));
    }
    commands
        .execute::<Scope>(&StreamId::scope(scope.id), &command, metadata)
        .await?;
    let connection = db.get().await.map_err(StoreError::from)?;
    Ok(by_id(&connection, scope.id).await?.unwrap_or(scope))
}

/// Adds `user_id` to (or changes their role in) a scope `caller` manages.
pub async fn add_member(
    commands: &CommandService,
    db: &Database,
    caller: Caller,
    reference: &ScopeRef,
    user_id: Uuid,
    role: ScopeRole,
    metadata: &Metadata,
) -> Result<ScopeRecord, ScopeError> {
    let command = ScopeCommand::AddMember {
        user_id,
        role,
        source: MembershipSource::Api,
    };
    change(commands, db, caller, reference, command, metadata).await
}

/// A member of a scope, as its managers see them.
#[derive(Clone, Debug)]
pub struct Member {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub role: ScopeRole,
    pub source: MembershipSource,
}

/// The members of a scope `caller` manages (of that scope itself; those
/// of groups above are listed there).
pub async fn members(db: &Database, caller: Caller, reference: &ScopeRef) -> Result<Vec<Member>, ScopeError> {
    let scope = managed(db, caller, reference).await?;
    let connection = db.get().await.map_err(StoreError::from)?;
    let rows = connection
        .query(
            "SELECT m.user_id, u.email, m.role, m.source FROM scope_members m
             LEFT JOIN users u ON u.id = m.user_id
             WHERE m.scope_id = $1 AND m.active ORDER BY u.email, m.user_id",
            &[&scope.id],
        )
        .await
        .map_err(StoreError::from)?;
    Ok(rows
        .iter()
        .map(|row| Member {
            user_id: row.get(0),
            email: row.get(1),
            role: if row.get::<_, Option<&str>>(2) == Some("manager") {
                ScopeRole::Manager
            } else {
                ScopeRole::Member
            },
            source: if row.get::<_, Option<&str>>(3) == Some("mapping") {
                MembershipSource::Mapping
            } else {
                MembershipSource::Api
            },
        })
        .collect())
}

/// A scope as listed to one caller.
#[derive(Clone, Debug)]
pub struct VisibleScope {
    pub scope: ScopeRecord,
    /// The caller's role there (from it or a group above); none for an
    /// admin or support user who is not a member.
    pub role: Option<ScopeRole>,
}

/// Every scope `user_id` is a member of, and every scope below those;
/// all scopes when `everything` (admins and support).
pub async fn visible(db: &Database, user_id: Uuid, everything: bool) -> Result<Vec<VisibleScope>, StoreError> {
    let connection = db.get().await?;
    // One statement, not two per scope: the console lists these on every
    // refresh of its lists.
    let select = connection
        .prepare_cached(concat!(
            "SELECT listed.*, ",
            role_in_scope!("listed.id"),
            " FROM (",
            scopes_with_path!(),
            " WHERE $2 OR scopes.id IN (
                 SELECT unnest(scope_and_below(scope_id)) FROM scope_members WHERE active AND user_id = $1)
             LIMIT 10000) listed"
        ))
        .await?;
    let rows = connection.query(&select, &[&user_id, &everything]).await?;
    let mut listed: Vec<VisibleScope> = rows
        .iter()
        .map(|row| VisibleScope {
            scope: record(row, row.get(5)),
            role: role(row.get(6)),
        })
        .collect();
    listed.sort_by(|a, b| a.scope.path.cmp(&b.scope.path));
    Ok(listed)
}

/// A scope may have at most its limit of active runners. Checked in the
/// creation's own transaction under a transaction-level lock per scope,
/// so parallel creations on any instance cannot all see room for one more.
pub struct RunnerLimit {
    pub scope_id: Uuid,
    /// `runners.scope_runner_limit`, for scopes without a limit of their own.
    pub default_limit: i64,
    pub lock_wait: Duration,
}

#[async_trait::async_trait]
impl Precondition for RunnerLimit {
    async fn check(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), CommandError> {
        let key = crate::platform::db::advisory_key(&format!("scope-runners:{}", self.scope_id));
        crate::platform::db::xact_lock(tx, key, false, self.lock_wait)
            .await
            .map_err(StoreError::from)?;
        let row = tx
            .query_one(
                "SELECT (SELECT coalesce(runner_limit, $2) FROM scopes WHERE id = $1),
                        (SELECT count(*) FROM runners WHERE scope_id = $1 AND status = 'active')",
                &[&self.scope_id, &self.default_limit],
            )
            .await
            .map_err(StoreError::from)?;
        let (limit, count): (Option<i64>, i64) = (row.get(0), row.get(1));
        let limit = limit.unwrap_or(self.default_limit);
        if count >= limit {
            return Err(DomainError::Conflict {
                code: ErrorCode::RunnerLimitReached,
                message: format!(
                    "this scope has {count} active runners, the most it may have ({limit}); \
                     invalidate one, or ask an admin to raise the scope's limit"
                ),
            }
            .into());
        }
        Ok(())
    }
}

/// Whether `caller` may act for service account `account` (issue its API
/// tokens): admins, and managers of a scope (or a group above it) the
/// account is a member of.
pub async fn may_manage_account<C: GenericClient>(
    client: &C,
    caller: Caller,
    account: Uuid,
) -> Result<bool, StoreError> {
    if caller.admin {
        return Ok(true);
    }
    let select = client
        .prepare_cached(
            "SELECT EXISTS (
                SELECT 1 FROM scope_members account
                JOIN scope_members manager ON manager.active AND manager.user_id = $1 AND manager.role = 'manager'
                 AND manager.scope_id = ANY(scope_and_above(account.scope_id))
                WHERE account.active AND account.user_id = $2)",
        )
        .await?;
    Ok(client.query_one(&select, &[&caller.user_id, &account]).await?.get(0))
}

/// Brings `user_id`'s memberships from an identity provider in line with
/// it: of the provider's `mappings` (scope, role), those in `holding` hold
/// for the user. In each mapped scope the user gets the strongest role of
/// the mappings that hold, and loses a membership that came from a
/// mapping when none holds. A membership granted through the API is left
/// alone. A mapped scope that does not exist is skipped with a warning.
pub async fn apply_mappings(
    commands: &CommandService,
    db: &Database,
    user_id: Uuid,
    mappings: &[(String, ScopeRole)],
    holding: &[usize],
    metadata: &Metadata,
) -> Result<(), CommandError> {
    let mut wanted: std::collections::BTreeMap<&str, Option<ScopeRole>> = Default::default();
    for (index, (scope, role)) in mappings.iter().enumerate() {
        let entry = wanted.entry(scope.as_str()).or_default();
        if holding.contains(&index) {
            *entry = (*entry).max(Some(*role));
        }
    }
    for (reference, role) in wanted {
        let Ok(parsed) = reference.parse::<ScopeRef>() else {
            continue; // refused by the configuration's validation
        };
        let connection = db.get().await.map_err(StoreError::from)?;
        let scope = match find(&connection, &parsed).await {
            Ok(Some(scope)) => scope,
            Err(ScopeError::Command(error)) => return Err(error),
            Ok(None) | Err(_) => {
                tracing::warn!(
                    scope = reference,
                    "a scope mapping names a scope that does not exist; skipped"
                );
                continue;
            }
        };
        drop(connection);
        let command = match role {
            Some(role) if !scope.archived => ScopeCommand::AddMember {
                user_id,
                role,
                source: MembershipSource::Mapping,
            },
            Some(_) => continue,
            None => ScopeCommand::RemoveMember {
                user_id,
                only_from: Some(MembershipSource::Mapping),
            },
        };
        commands
            .execute::<Scope>(&StreamId::scope(scope.id), &command, metadata)
            .await?;
    }
    Ok(())
}

/// Moves a scope `caller` manages into group `to`, which they manage too:
/// its runners, jobs, members and the scopes below it come along.
pub async fn move_scope(
    commands: &CommandService,
    db: &Database,
    caller: Caller,
    reference: &ScopeRef,
    to: &ScopeRef,
    metadata: &Metadata,
) -> Result<ScopeRecord, ScopeError> {
    let scope = managed(db, caller, reference).await?;
    if !matches!(to, ScopeRef::Group(_)) {
        return Err(DomainError::Invalid {
            code: ErrorCode::InvalidScope,
            message: format!("`{to}` cannot hold groups or projects; name a group"),
        }
        .into());
    }
    let group = destination(db, caller, to, true)
        .await?
        .ok_or_else(|| ScopeError::NotFound(to.to_string()))?;
    let command = ScopeCommand::Move { parent_id: group.id };
    let guard = NoCycle {
        scope_id: scope.id,
        parent_id: group.id,
        lock_wait: db.timeouts().lock_wait(),
    };
    commands
        .execute_guarded::<Scope>(&StreamId::scope(scope.id), &command, metadata, &guard)
        .await?;
    let connection = db.get().await.map_err(StoreError::from)?;
    Ok(by_id(&connection, scope.id).await?.unwrap_or(scope))
}

/// A move must not put a scope below itself. Moves are serialised (one
/// lock for the whole tree), so two moves cannot each pass this check and
/// together make a loop.
struct NoCycle {
    scope_id: Uuid,
    parent_id: Uuid,
    lock_wait: Duration,
}

#[async_trait::async_trait]
impl Precondition for NoCycle {
    async fn check(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), CommandError> {
        let key = crate::platform::db::advisory_key("scope-moves");
        crate::platform::db::xact_lock(tx, key, false, self.lock_wait)
            .await
            .map_err(StoreError::from)?;
        let below: bool = tx
            .query_one(
                "SELECT $2 = ANY(scope_and_below($1))",
                &[&self.scope_id, &self.parent_id],
            )
            .await
            .map_err(StoreError::from)?
            .get(0);
        if below {
            return Err(DomainError::Conflict {
                code: ErrorCode::ScopeLoop,
                message: "a scope cannot be moved into itself or a group below it".into(),
            }
            .into());
        }
        Ok(())
    }
}

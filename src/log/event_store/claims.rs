//! Cross-stream uniqueness (emails, provisioning ids), claimed in the same
//! transaction as the event that needs it.

use deadpool_postgres::GenericClient;
use warden_events::user::UserOrigin;
use warden_events::{Event, JobEvent, ScopeEvent, StreamId, UserEvent};

use super::StoreError;

/// Scope of every active user's email address, whatever its origin
/// (local, LDAP, OIDC), stored normalised: an address belongs to one user.
pub const EMAIL: &str = "email";
/// Scope of `security.local_account.user_provisioning` ids.
pub const PROVISIONING_ID: &str = "provisioning_id";
/// A runner machine runs at most one job: the job stream holding the
/// machine's id in this scope is the one it runs.
pub const MACHINE_JOB: &str = "machine_job";

/// Scope of group and project names: `<parent id or "top">/<name>`, so a
/// name is unique among its siblings.
pub const SCOPE_NAME: &str = "scope_name";

/// The claim key of a group's or project's name in its parent.
pub fn scope_name_key(parent_id: Option<uuid::Uuid>, name: &str) -> String {
    match parent_id {
        Some(parent) => format!("{parent}/{name}"),
        None => format!("top/{name}"),
    }
}

/// Scope of linked LDAP users: `<provider>\n<uid, lowercased>`.
pub const LDAP_USER: &str = "ldap_user";
/// Scope of linked OIDC users: `<provider>\n<sub>`.
pub const OIDC_SUBJECT: &str = "oidc_subject";

/// The claim key of an LDAP user (directory attributes compare
/// case-insensitively).
pub fn ldap_user_key(provider: &str, uid: &str) -> String {
    format!("{provider}\n{}", uid.trim().to_lowercase())
}

/// The claim key of an OIDC user (`sub` is case-sensitive).
pub fn oidc_subject_key(provider: &str, subject: &str) -> String {
    format!("{provider}\n{subject}")
}

pub use crate::domain::user::normalise_email;

enum ClaimChange {
    Take { scope: &'static str, value: String },
    ReleaseScope(&'static str),
    ReleaseAll,
}

fn changes_for(event: &Event) -> Vec<ClaimChange> {
    match event {
        Event::User(UserEvent::LocalUserCreated(e)) => {
            let mut changes = Vec::new();
            // The provisioning id first: two instances provisioning the
            // same account collide here, and the loser retries as an
            // update instead of reporting the email as taken.
            if let UserOrigin::Provisioned { provisioning_id } = &e.origin {
                changes.push(ClaimChange::Take {
                    scope: PROVISIONING_ID,
                    value: provisioning_id.clone(),
                });
            }
            changes.extend(take_email(&e.email));
            changes
        }
        Event::User(UserEvent::UserEmailChanged(e)) => {
            let mut changes = vec![ClaimChange::ReleaseScope(EMAIL)];
            changes.extend(take_email(&e.email));
            changes
        }
        Event::User(UserEvent::ExternalUserSynced(e)) => {
            let mut changes = vec![ClaimChange::ReleaseScope(EMAIL)];
            changes.extend(take_email(&e.email));
            changes
        }
        // The identity first: two first logins of one user at once collide
        // there, and the loser syncs the winner's user instead.
        Event::User(UserEvent::LdapUserLinked(e)) => e
            .uid
            .as_plain()
            .map(|uid| ClaimChange::Take {
                scope: LDAP_USER,
                value: ldap_user_key(&e.provider, uid),
            })
            .into_iter()
            .chain(take_email(&e.email))
            .collect(),
        Event::User(UserEvent::OidcUserLinked(e)) => e
            .subject
            .as_plain()
            .map(|subject| ClaimChange::Take {
                scope: OIDC_SUBJECT,
                value: oidc_subject_key(&e.provider, subject),
            })
            .into_iter()
            .chain(take_email(&e.email))
            .collect(),
        Event::User(UserEvent::UserDeleted(_)) => vec![ClaimChange::ReleaseAll],
        Event::Scope(ScopeEvent::GroupCreated(e)) => vec![ClaimChange::Take {
            scope: SCOPE_NAME,
            value: scope_name_key(e.parent_id, &e.name),
        }],
        Event::Scope(ScopeEvent::ProjectCreated(e)) => vec![ClaimChange::Take {
            scope: SCOPE_NAME,
            value: scope_name_key(Some(e.group_id), &e.name),
        }],
        Event::Scope(ScopeEvent::ScopeRenamed(e)) => vec![
            ClaimChange::ReleaseScope(SCOPE_NAME),
            ClaimChange::Take {
                scope: SCOPE_NAME,
                value: scope_name_key(e.parent_id, &e.name),
            },
        ],
        Event::Scope(ScopeEvent::ScopeMoved(e)) => vec![
            ClaimChange::ReleaseScope(SCOPE_NAME),
            ClaimChange::Take {
                scope: SCOPE_NAME,
                value: scope_name_key(Some(e.parent_id), &e.name),
            },
        ],
        Event::Job(JobEvent::JobAssigned(e)) => vec![ClaimChange::Take {
            scope: MACHINE_JOB,
            value: e.machine_id.to_string(),
        }],
        Event::Job(JobEvent::JobRequeued(_))
        | Event::Job(JobEvent::JobFinished(_))
        | Event::Job(JobEvent::JobCancelled(_)) => {
            vec![ClaimChange::ReleaseScope(MACHINE_JOB)]
        }
        Event::User(
            UserEvent::UserPasswordChanged(_)
            | UserEvent::UserRoleChanged(_)
            | UserEvent::ApiTokenCreated(_)
            | UserEvent::ApiTokenRevoked(_)
            | UserEvent::UserSessionsRevoked(_),
        )
        | Event::Job(
            JobEvent::JobSubmitted(_)
            | JobEvent::JobRetrieved(_)
            | JobEvent::JobProgressed(_)
            | JobEvent::JobCancelRequested(_),
        )
        | Event::Scope(
            ScopeEvent::ScopeArchived(_)
            | ScopeEvent::ScopeRunnerLimitSet(_)
            | ScopeEvent::MemberAdded(_)
            | ScopeEvent::MemberRemoved(_),
        )
        | Event::Runner(_)
        | Event::Machine(_) => Vec::new(),
    }
}

/// The claim of an address (none once forgotten: nothing new is recorded
/// for a deleted user).
fn take_email(email: &warden_events::Pii) -> Option<ClaimChange> {
    email.as_plain().map(|email| ClaimChange::Take {
        scope: EMAIL,
        value: normalise_email(email),
    })
}

/// Applies the claims `event` (still in plain form) needs for `owner`.
pub(super) async fn apply<C: GenericClient>(client: &C, owner: &StreamId, event: &Event) -> Result<(), StoreError> {
    for change in changes_for(event) {
        match change {
            ClaimChange::Take { scope, value } => {
                // Re-claiming one's own value is a no-op; anyone else's
                // claim (even one not yet committed: we wait for it) wins.
                let take = client
                    .prepare_cached(
                        "INSERT INTO unique_claims (scope, value, owner_stream) VALUES ($1, $2, $3)
                         ON CONFLICT (scope, value) DO UPDATE SET owner_stream = EXCLUDED.owner_stream
                         WHERE unique_claims.owner_stream = EXCLUDED.owner_stream
                         RETURNING 1",
                    )
                    .await?;
                if client
                    .query_opt(&take, &[&scope, &value, &owner.as_str()])
                    .await?
                    .is_none()
                {
                    return Err(StoreError::ClaimTaken { scope });
                }
            }
            ClaimChange::ReleaseScope(scope) => {
                client
                    .execute(
                        "DELETE FROM unique_claims WHERE owner_stream = $1 AND scope = $2",
                        &[&owner.as_str(), &scope],
                    )
                    .await?;
            }
            ClaimChange::ReleaseAll => {
                client
                    .execute("DELETE FROM unique_claims WHERE owner_stream = $1", &[&owner.as_str()])
                    .await?;
            }
        }
    }
    Ok(())
}

/// The stream that holds `value` in `scope`, if any.
pub async fn owner_of<C: GenericClient>(client: &C, scope: &str, value: &str) -> Result<Option<StreamId>, StoreError> {
    let select = client
        .prepare_cached("SELECT owner_stream FROM unique_claims WHERE scope = $1 AND value = $2")
        .await?;
    let row = client.query_opt(&select, &[&scope, &value]).await?;
    Ok(row.map(|row| StreamId::from_stored(row.get(0))))
}

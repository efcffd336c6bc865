//! LDAP providers (`ldap_providers.<name>`): password login against the
//! directory, and synchronising its users into warden (periodically,
//! `warden ldap sync`, or one user at login). Directory users become users
//! of the log (`LdapUserLinked`, then `ExternalUserSynced` when their email
//! or admin status changes, `UserDeleted` when a sync finds them gone and
//! `sync_del_old_users` is on).

pub mod directory;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warden_events::user::Role;
use warden_events::Metadata;

use crate::domain::user::ExternalKind;
use crate::identity::accounts::LoginError;
use crate::identity::accounts::{self, ExternalSync};
use crate::identity::throttle;
use crate::identity::Identity;
use crate::log::commands::CommandError;
use crate::log::event_store::{claims, StoreError};
use crate::platform::config::Config;
pub use directory::{Directory, DirectoryError, DirectoryUser};

/// The configured directories, by provider name.
#[derive(Default)]
pub struct LdapProviders {
    directories: BTreeMap<String, Arc<Directory>>,
}

impl LdapProviders {
    pub fn from_config(config: &Config) -> anyhow::Result<LdapProviders> {
        let mut directories = BTreeMap::new();
        for (name, provider) in &config.ldap_providers {
            let directory =
                Directory::new(provider.clone()).map_err(|e| anyhow::anyhow!("ldap_providers.{name}.ca_file: {e}"))?;
            directories.insert(name.clone(), Arc::new(directory));
        }
        Ok(LdapProviders { directories })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Directory>> {
        self.directories.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.directories.keys()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LdapLoginError {
    #[error("no LDAP provider named `{0}`")]
    UnknownProvider(String),
    #[error("this directory user has not been synchronised into warden yet")]
    NotSynced,
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(transparent)]
    Directory(DirectoryError),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// `provider` as stored on users (`ldap:<name>`).
fn user_provider(name: &str) -> String {
    format!("ldap:{name}")
}

/// Password login through directory `name`, behind the brute-force
/// throttle (keyed by `metadata.source_ip`); links or updates the warden
/// user, recording `metadata` (the login request) on those events.
/// `want_admin` is granted only to users `admin_query` returns.
pub async fn login(
    identity: &Identity,
    name: &str,
    username: &str,
    password: &str,
    want_admin: bool,
    metadata: &Metadata,
) -> Result<Uuid, LdapLoginError> {
    let source_ip = metadata.source_ip.as_deref();
    let directory = identity
        .ldap
        .get(name)
        .ok_or_else(|| LdapLoginError::UnknownProvider(name.to_owned()))?;
    let provider = user_provider(name);
    let attempt = throttle::Attempt {
        provider: &provider,
        username,
        source_ip,
    };
    // No pooled connection is held while the directory answers (it may
    // take up to its timeout).
    let connection = || async {
        identity
            .db
            .get()
            .await
            .map_err(StoreError::from)
            .map_err(LoginError::from)
    };
    if let Some(wait) = identity
        .throttle
        .begin(&connection().await?, &attempt)
        .await
        .map_err(LoginError::from)?
    {
        return Err(LoginError::Throttled(wait).into());
    }
    let user = match directory.authenticate(username, password).await {
        Ok(user) => user,
        // Counted already (before the check).
        Err(DirectoryError::InvalidCredentials) => {
            identity.throttle.record_failure(&attempt);
            return Err(LoginError::InvalidCredentials.into());
        }
        Err(other) => {
            // The directory, not the password, failed: not a guess.
            identity
                .throttle
                .take_back(&connection().await?, &attempt)
                .await
                .map_err(LoginError::from)?;
            return Err(LdapLoginError::Directory(other));
        }
    };
    identity
        .throttle
        .record_success(&connection().await?, &attempt)
        .await
        .map_err(LoginError::from)?;
    // Only looked up when it matters: linking looks again anyway.
    if !directory.config().sync_user_on_login
        && linked_user(identity, name, &user.uid)
            .await
            .map_err(LoginError::from)?
            .is_none()
    {
        return Err(LdapLoginError::NotSynced);
    }
    let user_id = link_or_update(identity, name, &user, metadata).await?.user_id();
    apply_scope_mappings(identity, directory, user_id, &user, metadata).await?;
    if want_admin && !user.admin {
        return Err(LoginError::AdminScopeDenied.into());
    }
    Ok(user_id)
}

async fn linked_user(identity: &Identity, name: &str, uid: &str) -> Result<Option<Uuid>, StoreError> {
    accounts::find_external_user(identity, ExternalKind::Ldap, name, uid).await
}

/// Links a new directory user, or records what changed about a known one.
async fn link_or_update(
    identity: &Identity,
    name: &str,
    user: &DirectoryUser,
    metadata: &Metadata,
) -> Result<ExternalSync, CommandError> {
    let external = accounts::ExternalIdentity {
        kind: ExternalKind::Ldap,
        provider: name,
        external_id: &user.uid,
        email: &user.email,
        role: if user.admin { Role::Admin } else { Role::User },
    };
    accounts::link_or_sync_external(identity, &external, metadata).await
}

/// The user's memberships from the directory's `scope_mappings`.
async fn apply_scope_mappings(
    identity: &Identity,
    directory: &Directory,
    user_id: Uuid,
    user: &DirectoryUser,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    let mappings: Vec<(String, warden_events::scope::ScopeRole)> = directory
        .config()
        .scope_mappings
        .iter()
        .map(|mapping| (mapping.scope.clone(), mapping.role))
        .collect();
    if mappings.is_empty() {
        return Ok(());
    }
    crate::scopes::apply_mappings(
        &identity.commands,
        &identity.db,
        user_id,
        &mappings,
        &user.mappings,
        metadata,
    )
    .await
}

#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    pub provider: String,
    pub linked: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// Directory users left out because another warden user has their
    /// address (an address belongs to one user): their uids.
    pub email_taken: Vec<String>,
}

/// Brings warden's users of directory `name` in line with the directory.
pub async fn sync(identity: &Identity, name: &str) -> anyhow::Result<SyncReport> {
    let directory = identity
        .ldap
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("no LDAP provider named `{name}`"))?;
    let users = directory.all_users().await?;
    let metadata = Metadata::system(&format!("ldap-sync:{name}"));
    let mut report = SyncReport {
        provider: name.to_owned(),
        ..SyncReport::default()
    };
    let mut present = HashSet::new();
    for user in &users {
        let outcome = match link_or_update(identity, name, user, &metadata).await {
            Ok(outcome) => outcome,
            Err(CommandError::Store(StoreError::ClaimTaken { scope })) if scope == claims::EMAIL => {
                tracing::warn!(provider = name, uid = %user.uid, "LDAP user not synchronised: another user has its email address");
                report.email_taken.push(user.uid.clone());
                // Still in the directory: never deleted for it.
                if let Some(linked) =
                    accounts::find_external_user(identity, ExternalKind::Ldap, name, &user.uid).await?
                {
                    present.insert(linked);
                }
                continue;
            }
            Err(other) => return Err(other.into()),
        };
        present.insert(outcome.user_id());
        apply_scope_mappings(identity, directory, outcome.user_id(), user, &metadata).await?;
        match outcome {
            ExternalSync::Linked(_) => report.linked += 1,
            ExternalSync::Updated(_) => report.updated += 1,
            ExternalSync::Unchanged(_) => report.unchanged += 1,
        }
    }
    let connection = identity.db.get().await?;
    let known: Vec<Uuid> = connection
        .query(
            "SELECT id FROM users WHERE provider = $1 AND deleted_at IS NULL",
            &[&user_provider(name)],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    drop(connection);
    for user_id in known.into_iter().filter(|id| !present.contains(id)) {
        if directory.config().sync_del_old_users {
            crate::identity::accounts::delete_user(&identity.commands, user_id, &metadata).await?;
            report.deleted += 1;
        } else {
            // Gone from the directory's users: no mapping holds any more.
            let gone = DirectoryUser {
                uid: String::new(),
                email: String::new(),
                admin: false,
                mappings: Vec::new(),
            };
            apply_scope_mappings(identity, directory, user_id, &gone, &metadata).await?;
        }
    }
    Ok(report)
}

/// Syncs every directory with a `sync_interval` that often; failures are
/// logged and retried at the next interval.
pub fn spawn_periodic_sync(identity: Arc<Identity>, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let providers: Vec<(String, std::time::Duration)> = identity
        .ldap
        .directories
        .iter()
        .map(|(name, directory)| (name.clone(), directory.config().sync_interval))
        .filter(|(_, interval)| !interval.is_zero())
        .collect();
    for (name, interval) in providers {
        let (identity, cancel) = (Arc::clone(&identity), cancel.clone());
        tasks.push(tokio::spawn(async move {
            // One instance syncs each directory; the others stand by.
            let mut leadership = crate::platform::leases::Lease::periodic(format!("ldap-sync:{name}"), interval);
            loop {
                if leadership.hold(&identity.db).await {
                    match sync(&identity, &name).await {
                        Ok(report) => tracing::info!(?report, "LDAP sync done"),
                        Err(error) => {
                            tracing::warn!(provider = %name, %error, "LDAP sync failed; retrying next interval")
                        }
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }));
    }
    tasks
}

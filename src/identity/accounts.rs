//! Local accounts: password log-in, adding and deleting users, and keeping
//! config-provisioned users in line with the config file.

use deadpool_postgres::GenericClient;
use uuid::Uuid;
use warden_events::user::{Role, UserOrigin};
use warden_events::{Metadata, StreamId};

use crate::api::ErrorCode;
use crate::domain::job::{Job, JobCommand};
use crate::domain::user::{Account, ActiveUser, ExternalKind, PasswordInput, User, UserCommand};
use crate::domain::DomainError;
use crate::identity::throttle;
use crate::identity::Identity;
use crate::log::commands::{CommandError, CommandService, UserLock};
use crate::log::event_store::claims::{self, normalise_email};
use crate::log::event_store::StoreError;
use crate::platform::config::LocalAccountMode;
use crate::platform::secrets::passwords;
use crate::platform::secrets::Secret;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("local accounts are disabled on this server")]
    LocalLoginDisabled,
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("admin rights were requested (scope=admin) but this user is not an admin")]
    AdminScopeDenied,
    #[error("this is a service account (role api): it cannot log in, it acts with API tokens only")]
    ServiceAccount,
    #[error("too many failed logins; try again later")]
    Throttled(std::time::Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A user as the read model sees them.
pub struct UserRecord {
    pub id: Uuid,
    pub email: Option<String>,
    pub role: Role,
    /// `local`, `ldap:<name>`, `oidc:<name>`.
    pub provider: String,
    /// Access tokens and session cookies issued before this are refused.
    pub sessions_revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    password_hash: Option<String>,
}

pub fn parse_role(role: &str) -> Role {
    match role {
        "admin" => Role::Admin,
        "support" => Role::Support,
        "api" => Role::Api,
        _ => Role::User,
    }
}

/// The live (not deleted) user with this id.
pub async fn find_user<C: GenericClient>(client: &C, user_id: Uuid) -> Result<Option<UserRecord>, StoreError> {
    let select = client
        .prepare_cached(
            "SELECT id, email, role, password_hash, provider, sessions_revoked_at
             FROM users WHERE id = $1 AND deleted_at IS NULL",
        )
        .await?;
    Ok(client.query_opt(&select, &[&user_id]).await?.map(|row| UserRecord {
        id: row.get(0),
        email: row.get(1),
        role: parse_role(row.get(2)),
        password_hash: row.get(3),
        provider: row.get(4),
        sessions_revoked_at: row.get(5),
    }))
}

/// The live user a caller names by email address or by id.
pub async fn find_user_by_email_or_id<C: GenericClient>(
    client: &C,
    named: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let user_id = match Uuid::parse_str(named.trim()) {
        Ok(id) => Some(id),
        Err(_) => find_user_id_by_email(client, named).await?,
    };
    match user_id {
        Some(id) => find_user(client, id).await,
        None => Ok(None),
    }
}

/// The user that owns `email` (any origin: addresses are unique across
/// local, LDAP and OIDC users), if any.
pub async fn find_user_id_by_email<C: GenericClient>(client: &C, email: &str) -> Result<Option<Uuid>, StoreError> {
    Ok(claims::owner_of(client, claims::EMAIL, &normalise_email(email))
        .await?
        .and_then(|stream| stream.id()))
}

/// Checks a local account's password, behind the brute-force throttle.
/// Returns the user id; `want_admin` (scope=admin) is only granted to
/// admins.
pub async fn password_login(
    identity: &Identity,
    email: &str,
    password: &str,
    want_admin: bool,
    source_ip: Option<&str>,
) -> Result<Uuid, LoginError> {
    if identity.security.local_account.mode == LocalAccountMode::Disabled {
        return Err(LoginError::LocalLoginDisabled);
    }
    let attempt = throttle::Attempt {
        provider: "local",
        username: email,
        source_ip,
    };
    let connection = identity.db.get().await.map_err(StoreError::from)?;
    if let Some(wait) = identity.throttle.begin(&connection, &attempt).await? {
        return Err(LoginError::Throttled(wait));
    }
    // Only a local account has a password here (an LDAP or OIDC user's
    // address finds no hash, and is checked against none, as long as an
    // unknown address).
    let user = match find_user_id_by_email(&connection, email).await? {
        Some(id) => find_user(&connection, id)
            .await?
            .filter(|user| user.provider == "local"),
        None => None,
    };
    // The pool connection is not held during the ~30 ms of argon2.
    drop(connection);
    let password = password.to_owned();
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let matches = passwords::verify_capped(password, hash).await;
    let Some(user) = user.filter(|_| matches) else {
        // Counted already (before the check).
        identity.throttle.record_failure(&attempt);
        return Err(LoginError::InvalidCredentials);
    };
    let connection = identity.db.get().await.map_err(StoreError::from)?;
    identity.throttle.record_success(&connection, &attempt).await?;
    if user.role == Role::Api {
        return Err(LoginError::ServiceAccount);
    }
    if want_admin && user.role != Role::Admin {
        return Err(LoginError::AdminScopeDenied);
    }
    Ok(user.id)
}

/// Self sign-up of a local account (only in mode `enabled`).
pub async fn sign_up(
    identity: &Identity,
    email: &str,
    password: &Secret,
    metadata: &Metadata,
) -> Result<Uuid, CommandError> {
    if identity.security.local_account.mode != LocalAccountMode::Enabled {
        return Err(DomainError::Invalid {
            code: ErrorCode::SignupDisabled,
            message: "self sign-up is disabled on this server".into(),
        }
        .into());
    }
    add_local_user(
        &identity.commands,
        email,
        password,
        Role::User,
        UserOrigin::SignUp,
        metadata,
    )
    .await
}

/// A local account's new password, after checking the current one. Ends
/// every session of the user (the caller issues a fresh token).
#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    #[error("too many wrong current passwords; try again later")]
    Throttled(std::time::Duration),
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl From<DomainError> for ChangePasswordError {
    fn from(error: DomainError) -> Self {
        ChangePasswordError::Command(error.into())
    }
}

impl From<StoreError> for ChangePasswordError {
    fn from(error: StoreError) -> Self {
        ChangePasswordError::Command(error.into())
    }
}

/// Checks the current password behind the same throttle as logins (keyed
/// by the user and the source address): a stolen token must not be a way
/// to guess the password online.
pub async fn change_password(
    identity: &Identity,
    user_id: Uuid,
    current: &Secret,
    new: &Secret,
    metadata: &Metadata,
) -> Result<(), ChangePasswordError> {
    let commands = &identity.commands;
    let user_key = user_id.to_string();
    let attempt = throttle::Attempt {
        provider: "password-change",
        username: &user_key,
        source_ip: metadata.source_ip.as_deref(),
    };
    let connection = identity.db.get().await.map_err(StoreError::from)?;
    if let Some(wait) = identity.throttle.begin(&connection, &attempt).await? {
        return Err(ChangePasswordError::Throttled(wait));
    }
    drop(connection);
    let stream = StreamId::user(user_id);
    let (user, _) = commands.load::<User>(&stream).await.map_err(CommandError::from)?;
    let current_hash = match &user {
        User::Active(ActiveUser {
            account: Account::Local { password_hash, .. },
            ..
        }) => password_hash.clone(),
        User::Active(_) => {
            return Err(DomainError::Invalid {
                code: ErrorCode::ManagedExternally,
                message: "the password of this user is kept by its directory or provider".into(),
            }
            .into())
        }
        _ => {
            return Err(DomainError::NotFound {
                code: ErrorCode::UserNotFound,
                what: "user",
            }
            .into())
        }
    };
    let matches = passwords::verify_capped(current.expose().to_owned(), Some(current_hash)).await;
    if !matches {
        // Counted already (before the check).
        identity.throttle.record_failure(&attempt);
        return Err(CommandError::from(DomainError::Invalid {
            code: ErrorCode::WrongPassword,
            message: "the current password is not right".into(),
        })
        .into());
    }
    identity
        .throttle
        .record_success(&identity.db.get().await.map_err(StoreError::from)?, &attempt)
        .await?;
    let new_hash = hash_password(new).await?;
    commands
        .execute::<User>(
            &stream,
            &UserCommand::ChangePassword {
                new_hash,
                at: chrono::Utc::now(),
                revoke_api_tokens: identity.security.api_tokens.revoke_on_password_change,
            },
            metadata,
        )
        .await?;
    Ok(())
}

/// Promotes or demotes a local account. The last admin cannot be demoted.
pub async fn change_role(
    identity: &Identity,
    user_id: Uuid,
    role: Role,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    let _serialised = AdminChangeLock::take(&identity.db).await?;
    if role != Role::Admin {
        ensure_not_last_admin(identity, user_id).await?;
    }
    identity
        .commands
        .execute::<User>(&StreamId::user(user_id), &UserCommand::ChangeRole { role }, metadata)
        .await?;
    Ok(())
}

/// Refuses (409 `last_admin`) when `user_id` is the only admin left, so
/// demoting or deleting them cannot leave warden without one.
pub async fn ensure_not_last_admin(identity: &Identity, user_id: Uuid) -> Result<(), CommandError> {
    let connection = identity.db.get().await.map_err(StoreError::from)?;
    let others: i64 = connection
        .query_one(
            "SELECT count(*) FROM users WHERE role = 'admin' AND deleted_at IS NULL AND id <> $1",
            &[&user_id],
        )
        .await
        .map_err(StoreError::from)?
        .get(0);
    let is_admin = find_user(&connection, user_id)
        .await?
        .is_some_and(|u| u.role == Role::Admin);
    if is_admin && others == 0 {
        return Err(DomainError::Conflict {
            code: ErrorCode::LastAdmin,
            message: "this is the only admin; promote another user first".into(),
        }
        .into());
    }
    Ok(())
}

/// Log out everywhere.
pub async fn revoke_sessions(
    commands: &CommandService,
    user_id: Uuid,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    commands
        .execute::<User>(
            &StreamId::user(user_id),
            &UserCommand::RevokeSessions { at: chrono::Utc::now() },
            metadata,
        )
        .await?;
    Ok(())
}

async fn hash_password(password: &Secret) -> Result<String, CommandError> {
    passwords::check_policy(password.expose()).map_err(|message| DomainError::Invalid {
        code: ErrorCode::WeakPassword,
        message: format!("the password {message}"),
    })?;
    Ok(passwords::hash_capped(password.expose().to_owned()).await)
}

/// Creates a local account (command line, sign-up).
pub async fn add_local_user(
    commands: &CommandService,
    email: &str,
    password: &Secret,
    role: Role,
    origin: UserOrigin,
    metadata: &Metadata,
) -> Result<Uuid, CommandError> {
    let password_hash = hash_password(password).await?;
    let user_id = Uuid::now_v7();
    let command = UserCommand::Create {
        user_id,
        email: email.to_owned(),
        password_hash,
        role,
        origin,
    };
    commands
        .execute_new::<User>(&StreamId::user(user_id), &command, metadata)
        .await?;
    Ok(user_id)
}

/// Deletes a user, unless they are the last admin (every deletion by an
/// admin, the user themselves or the command line goes through here).
pub async fn delete_user_keeping_an_admin(
    identity: &Identity,
    user_id: Uuid,
    metadata: &Metadata,
) -> Result<(), CommandError> {
    let _serialised = AdminChangeLock::take(&identity.db).await?;
    ensure_not_last_admin(identity, user_id).await?;
    delete_user(&identity.commands, user_id, metadata).await
}

/// Serialises changes that may remove an admin (demotion, deletion), on
/// every instance: held from the last-admin check until the change is in
/// the read model, so two admins demoting each other at once cannot both
/// pass the check.
struct AdminChangeLock;

/// Advisory lock key of [`AdminChangeLock`].
const ADMIN_CHANGE_LOCK: i64 = 0x7761_7264_656e_0002;

impl AdminChangeLock {
    async fn take(db: &crate::platform::db::Database) -> Result<crate::platform::db::SessionLock, StoreError> {
        Ok(crate::platform::db::SessionLock::take(db, ADMIN_CHANGE_LOCK).await?)
    }
}

/// Deletes a user at once; their uploaded files and job results go with
/// them (files are not part of the log, so nothing of them remains), and
/// their unfinished jobs are cancelled (`JobCancelled` / `JobCancelRequested`
/// with the reason `submitter deleted`).
pub async fn delete_user(commands: &CommandService, user_id: Uuid, metadata: &Metadata) -> Result<(), CommandError> {
    // Holds the user's submissions off until the deletion commits: every
    // job committed before it is cancelled below, every later one refused
    // (`UserLock`).
    let lock_wait = commands.store().database().timeouts().lock_wait();
    commands
        .execute_guarded::<User>(
            &StreamId::user(user_id),
            &UserCommand::Delete,
            metadata,
            &UserLock::deletion(user_id, lock_wait),
        )
        .await?;
    let connection = commands.store().database().get().await.map_err(StoreError::from)?;
    connection
        .execute("DELETE FROM files WHERE owner_id = $1", &[&user_id])
        .await
        .map_err(StoreError::from)?;
    // Nobody wants their jobs run any more: queued ones are cancelled,
    // running ones told to abort.
    let unfinished: Vec<Uuid> = connection
        .query(
            "SELECT id FROM jobs WHERE submitted_by = $1 AND status IN ('queued', 'assigned') AND NOT cancel_requested",
            &[&user_id],
        )
        .await
        .map_err(StoreError::from)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    drop(connection);
    for job_id in unfinished {
        let cancel = JobCommand::Cancel {
            requested_by: user_id,
            admin: true,
            reason: Some(SUBMITTER_DELETED.into()),
        };
        match commands.execute::<Job>(&StreamId::job(job_id), &cancel, metadata).await {
            // It finished meanwhile: nothing to cancel.
            Ok(_) | Err(CommandError::Domain(DomainError::Conflict { .. })) => {}
            Err(other) => return Err(other),
        }
    }
    crate::identity::erasure::scrub_after_deletion(commands.store().database(), user_id).await?;
    Ok(())
}

/// Why a deleted user's jobs were cancelled.
pub const SUBMITTER_DELETED: &str = "submitter deleted";

#[derive(Debug, thiserror::Error)]
#[error("security.local_account.user_provisioning.{id}: {reason}")]
pub struct ProvisioningError {
    pub id: String,
    pub reason: String,
}

/// Makes every provisioned account match the config; appends events only
/// for what differs. Returns the ids that changed.
pub async fn provision_from_config(identity: &Identity) -> Result<Vec<String>, ProvisioningError> {
    let mut changed = Vec::new();
    let metadata = Metadata::system("config-provisioning");
    for (id, wanted) in &identity.security.local_account.user_provisioning {
        let error = |reason: String| ProvisioningError { id: id.clone(), reason };
        // Two instances starting together race for the provisioning id;
        // the loser finds the winner's account on its next attempt.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let connection = identity.db.get().await.map_err(|e| error(e.to_string()))?;
            let existing = claims::owner_of(&connection, claims::PROVISIONING_ID, id)
                .await
                .map_err(|e| error(e.to_string()))?;
            drop(connection);
            let stream = existing.unwrap_or_else(|| StreamId::user(Uuid::now_v7()));
            let user_id = stream.id().expect("user streams carry their id");
            let (current, _) = identity
                .commands
                .load::<User>(&stream)
                .await
                .map_err(|e| error(e.to_string()))?;
            let password = provided_password(&current, &wanted.password).await;
            let command = UserCommand::Provision {
                user_id,
                provisioning_id: id.clone(),
                email: wanted.email.clone(),
                admin: wanted.is_admin,
                password,
            };
            match identity.commands.execute::<User>(&stream, &command, &metadata).await {
                Ok(executed) => {
                    if executed.appended.is_some() {
                        changed.push(id.clone());
                    }
                    break;
                }
                Err(CommandError::Store(StoreError::ClaimTaken { scope }))
                    if scope == claims::PROVISIONING_ID && attempts < 3 =>
                {
                    continue
                }
                Err(CommandError::Store(StoreError::ClaimTaken { scope })) if scope == claims::EMAIL => {
                    return Err(error("email: another account already uses this email".into()))
                }
                Err(other) => return Err(error(other.to_string())),
            }
        }
    }
    Ok(changed)
}

async fn provided_password(current: &User, password: &Secret) -> PasswordInput {
    let current_hash = match current {
        User::Active(ActiveUser {
            account: Account::Local { password_hash, .. },
            ..
        }) => Some(password_hash.clone()),
        _ => None,
    };
    let password = password.expose().to_owned();
    if current_hash.is_some() && passwords::verify_capped(password.clone(), current_hash).await {
        return PasswordInput::MatchesCurrent;
    }
    PasswordInput::NewHash(passwords::hash_capped(password).await)
}

/// The claim that holds an external user's identity.
fn external_claim(kind: ExternalKind, provider: &str, external_id: &str) -> (&'static str, String) {
    match kind {
        ExternalKind::Ldap => (claims::LDAP_USER, claims::ldap_user_key(provider, external_id)),
        ExternalKind::Oidc => (claims::OIDC_SUBJECT, claims::oidc_subject_key(provider, external_id)),
    }
}

/// The warden user linked to a directory or provider identity, if any.
pub async fn find_external_user(
    identity: &Identity,
    kind: ExternalKind,
    provider: &str,
    external_id: &str,
) -> Result<Option<Uuid>, StoreError> {
    let (scope, key) = external_claim(kind, provider, external_id);
    let connection = identity.db.get().await?;
    Ok(claims::owner_of(&connection, scope, &key)
        .await?
        .and_then(|stream| stream.id()))
}

/// What a directory or OIDC provider says about one of its users.
pub struct ExternalIdentity<'a> {
    pub kind: ExternalKind,
    /// The config's provider name.
    pub provider: &'a str,
    /// LDAP uid or OIDC subject.
    pub external_id: &'a str,
    pub email: &'a str,
    pub role: Role,
}

/// What `link_or_sync_external` did to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalSync {
    Linked(Uuid),
    Updated(Uuid),
    Unchanged(Uuid),
}

impl ExternalSync {
    pub fn user_id(self) -> Uuid {
        match self {
            ExternalSync::Linked(id) | ExternalSync::Updated(id) | ExternalSync::Unchanged(id) => id,
        }
    }
}

/// Links the identity on first sight (`LdapUserLinked`/`OidcUserLinked`),
/// or records what changed about the linked user (`ExternalUserSynced`).
/// Two first logins at once link one user: the loser updates the winner's.
pub async fn link_or_sync_external(
    identity: &Identity,
    external: &ExternalIdentity<'_>,
    metadata: &Metadata,
) -> Result<ExternalSync, CommandError> {
    let (scope, _) = external_claim(external.kind, external.provider, external.external_id);
    loop {
        let existing = find_external_user(identity, external.kind, external.provider, external.external_id).await?;
        if let Some(user_id) = existing {
            let command = UserCommand::SyncExternal {
                email: external.email.to_owned(),
                role: external.role,
            };
            let executed = identity
                .commands
                .execute::<User>(&StreamId::user(user_id), &command, metadata)
                .await?;
            return Ok(if executed.appended.is_some() {
                ExternalSync::Updated(user_id)
            } else {
                ExternalSync::Unchanged(user_id)
            });
        }
        let user_id = Uuid::now_v7();
        let command = UserCommand::LinkExternal {
            user_id,
            kind: external.kind,
            provider: external.provider.to_owned(),
            external_id: external.external_id.to_owned(),
            email: external.email.to_owned(),
            role: external.role,
        };
        match identity
            .commands
            .execute_new::<User>(&StreamId::user(user_id), &command, metadata)
            .await
        {
            Ok(_) => return Ok(ExternalSync::Linked(user_id)),
            Err(CommandError::Store(StoreError::ClaimTaken { scope: taken })) if taken == scope => continue,
            Err(other) => return Err(other),
        }
    }
}

//! The server's own secrets: the keys that sign access tokens and the key
//! of the login throttle's keyed hashes. None of them lives in the
//! database: whoever reads the database, its WAL or a backup must not be
//! able to mint tokens or unmask throttle keys. They come from
//! `security.secret_key` (configured; the throttle key is derived from
//! it), or from a file, `security.secrets_file` (default
//! `<database.data_dir>/secrets.json`, mode 0600, made at first start).
//!
//! The database keeps only their fingerprints (SHA-256, which reveals
//! nothing of 256 random bits), so that an instance whose secrets differ
//! from the others' refuses to start instead of refusing their tokens.
//! An installation that kept them in the database (`server_secrets`,
//! before) moves them into the file at start: the file is written first,
//! then the rows are deleted and the table rewritten (no dead row keeps
//! them in the live database files).
//!
//! Rotation (`warden keys rotate`): a new key signs; the previous ones
//! still verify until every token they signed has expired. `--stage` adds
//! the new key for verification only, for fleets: stage, give every
//! instance the file (they re-read it every [`RELOAD_EVERY`]), then
//! rotate to make it sign.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::platform::config::Config;
use crate::platform::db::{Database, DbError};

/// How often a serving instance looks whether its secrets file changed.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a warden secrets file: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "this database is used with other server secrets than {path}'s ({what} differs): every instance of \
         one database needs the same secrets; copy the secrets file of an instance that serves it (or set the \
         same security.secret_key everywhere)"
    )]
    Mismatch { path: String, what: &'static str },
    #[error(
        "{path} is missing, and this database's secrets were moved out of it by another instance already: copy \
         that instance's secrets file to {path} (or set security.secrets_file to it)"
    )]
    MissingFile { path: PathBuf },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for SecretsError {
    fn from(error: tokio_postgres::Error) -> Self {
        SecretsError::Db(error.into())
    }
}

/// One access-token signing key.
#[derive(Clone)]
pub struct SigningKey {
    /// Names the key in a token's header (`kid`): the start of the key's
    /// fingerprint.
    pub id: String,
    pub key: Vec<u8>,
}

impl SigningKey {
    fn new(key: Vec<u8>) -> SigningKey {
        SigningKey {
            id: fingerprint("signing", &key)[..16].to_owned(),
            key,
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

/// The secrets an instance runs with.
#[derive(Clone, Debug)]
pub struct ServerSecrets {
    /// Signs new access tokens.
    pub signing: SigningKey,
    /// Verify tokens but sign none: keys retired by a rotation whose
    /// tokens may still be valid, and a staged key.
    pub verifying: Vec<SigningKey>,
    pub throttle_key: Vec<u8>,
    /// Where they came from: the file, or `None` when configured.
    pub file: Option<PathBuf>,
}

impl ServerSecrets {
    /// The secrets of this instance: configured, or from the file (made,
    /// or moved out of the database, on first use); checked against the
    /// fingerprints the database keeps.
    pub async fn load(db: &Database, config: &Config) -> Result<ServerSecrets, SecretsError> {
        let secrets = match &config.security.secret_key {
            Some(configured) => {
                let key = configured.expose().as_bytes().to_vec();
                let throttle_key = derive(&key, "login throttle");
                ServerSecrets {
                    signing: SigningKey::new(key),
                    verifying: config
                        .security
                        .previous_secret_keys
                        .iter()
                        .map(|key| SigningKey::new(key.expose().as_bytes().to_vec()))
                        .collect(),
                    throttle_key,
                    file: None,
                }
            }
            None => {
                let path = secrets_path(config);
                match read_file(&path)? {
                    Some(file) => file.secrets(&path)?,
                    None => create_file(db, &path).await?,
                }
            }
        };
        secrets.check_fingerprints(db).await?;
        remove_from_database(db).await?;
        Ok(secrets)
    }

    /// Every key that verifies tokens, the signing one first.
    pub fn all_keys(&self) -> impl Iterator<Item = &SigningKey> {
        std::iter::once(&self.signing).chain(&self.verifying)
    }

    fn origin(&self) -> String {
        match &self.file {
            Some(path) => path.display().to_string(),
            None => "security.secret_key".into(),
        }
    }

    /// The first instance records the fingerprints; every later one must
    /// match them. For the signing key it is enough that the recorded
    /// key is one of ours (a rotation in progress).
    async fn check_fingerprints(&self, db: &Database) -> Result<(), SecretsError> {
        let connection = db.get().await?;
        let ours = [
            ("throttle", fingerprint("throttle", &self.throttle_key)),
            ("signing", fingerprint("signing", &self.signing.key)),
        ];
        for (name, value) in &ours {
            connection
                .execute(
                    "INSERT INTO server_secret_fingerprints (name, fingerprint) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                    &[name, value],
                )
                .await?;
        }
        let rows = connection
            .query("SELECT name, fingerprint FROM server_secret_fingerprints", &[])
            .await?;
        for row in rows {
            let (name, recorded): (String, String) = (row.get(0), row.get(1));
            let matches = match name.as_str() {
                "throttle" => recorded == ours[0].1,
                "signing" => self.all_keys().any(|key| fingerprint("signing", &key.key) == recorded),
                _ => true,
            };
            if !matches {
                return Err(SecretsError::Mismatch {
                    path: self.origin(),
                    what: if name == "throttle" {
                        "the login throttle key"
                    } else {
                        "the token signing key"
                    },
                });
            }
        }
        Ok(())
    }
}

/// Where the secrets file is: `security.secrets_file`, else in the data
/// folder.
pub fn secrets_path(config: &Config) -> PathBuf {
    config
        .security
        .secrets_file
        .clone()
        .unwrap_or_else(|| config.database.data_dir.join("secrets.json"))
}

/// A fingerprint: SHA-256 over a domain-separated key.
fn fingerprint(purpose: &str, key: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"warden secret fingerprint\n");
    hash.update(purpose.as_bytes());
    hash.update(b"\n");
    hash.update(key);
    hex::encode(hash.finalize())
}

/// A key for `purpose` derived from a configured secret.
fn derive(secret: &[u8], purpose: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"warden derived key\n");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; 64];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// The file's contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    /// Newest first. The first one not staged signs.
    signing_keys: Vec<StoredKey>,
    /// base64.
    throttle_key: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    /// base64.
    key: String,
    created_at: DateTime<Utc>,
    /// Verifies, signs nothing yet (`warden keys rotate --stage`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    staged: bool,
    /// When a newer key took over signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<DateTime<Utc>>,
}

impl StoredKey {
    fn new(key: &[u8], staged: bool) -> StoredKey {
        StoredKey {
            key: STANDARD.encode(key),
            created_at: Utc::now(),
            staged,
            retired_at: None,
        }
    }

    fn bytes(&self, path: &Path) -> Result<Vec<u8>, SecretsError> {
        let key = STANDARD.decode(&self.key).map_err(|e| SecretsError::Unreadable {
            path: path.to_owned(),
            reason: format!("a key is not base64: {e}"),
        })?;
        if key.len() < 32 {
            return Err(SecretsError::Unreadable {
                path: path.to_owned(),
                reason: "a key is shorter than 32 bytes".into(),
            });
        }
        Ok(key)
    }
}

impl SecretsFile {
    fn secrets(&self, path: &Path) -> Result<ServerSecrets, SecretsError> {
        let mut signing = None;
        let mut verifying = Vec::new();
        for stored in &self.signing_keys {
            let key = SigningKey::new(stored.bytes(path)?);
            if signing.is_none() && !stored.staged {
                signing = Some(key);
            } else {
                verifying.push(key);
            }
        }
        let signing = signing.ok_or_else(|| SecretsError::Unreadable {
            path: path.to_owned(),
            reason: "no signing key (only staged ones)".into(),
        })?;
        let throttle_key = STANDARD
            .decode(&self.throttle_key)
            .map_err(|e| SecretsError::Unreadable {
                path: path.to_owned(),
                reason: format!("throttle_key is not base64: {e}"),
            })?;
        Ok(ServerSecrets {
            signing,
            verifying,
            throttle_key,
            file: Some(path.to_owned()),
        })
    }
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> SecretsError + '_ {
    move |source| SecretsError::File {
        path: path.to_owned(),
        source,
    }
}

/// The file, if it exists. Warns when others may read it.
fn read_file(path: &Path) -> Result<Option<SecretsFile>, SecretsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(file_error(path)(error)),
    };
    if let Ok(metadata) = std::fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the secrets file may be read by other users of this machine: chmod 600 it"
            );
        }
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| SecretsError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Writes `file` to `path` in one step (a temporary file renamed over it),
/// mode 0600. With `fresh`, never over an existing file.
fn write_file(path: &Path, file: &SecretsFile, fresh: bool) -> Result<(), SecretsError> {
    let error = file_error(path);
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(&error)?;
    }
    let temporary = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        out.write_all(&serde_json::to_vec_pretty(file).expect("secrets serialise"))?;
        out.sync_all()?;
        if fresh {
            // Fails if another process made the file meanwhile.
            std::fs::hard_link(&temporary, path)?;
            std::fs::remove_file(&temporary)
        } else {
            std::fs::rename(&temporary, path)
        }
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(&error)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        // The rename is durable once the folder is.
        if let Ok(folder) = std::fs::File::open(dir) {
            let _ = folder.sync_all();
        }
    }
    Ok(())
}

/// Makes the file: from the secrets an older release kept in the database,
/// else new ones (unless another instance already moved this database's
/// secrets out: their file must be copied here).
async fn create_file(db: &Database, path: &Path) -> Result<ServerSecrets, SecretsError> {
    let connection = db.get().await?;
    let rows = connection.query("SELECT name, value FROM server_secrets", &[]).await?;
    let recorded: i64 = connection
        .query_one("SELECT count(*) FROM server_secret_fingerprints", &[])
        .await?
        .get(0);
    drop(connection);
    let stored = |name: &str| {
        rows.iter()
            .find(|row| row.get::<_, String>(0) == name)
            .map(|row| row.get::<_, Vec<u8>>(1))
    };
    let (signing, throttle) = (stored("access_token_signing_key"), stored("login_throttle_key"));
    if signing.is_none() && throttle.is_none() && recorded > 0 {
        return Err(SecretsError::MissingFile { path: path.to_owned() });
    }
    let moved = signing.is_some() || throttle.is_some();
    let file = SecretsFile {
        signing_keys: vec![StoredKey::new(&signing.unwrap_or_else(random_key), false)],
        throttle_key: STANDARD.encode(throttle.unwrap_or_else(random_key)),
    };
    match write_file(path, &file, true) {
        Ok(()) => {
            if moved {
                tracing::info!(path = %path.display(), "moved the server secrets out of the database into their file");
            } else {
                tracing::info!(path = %path.display(), "made the server secrets file");
            }
            file.secrets(path)
        }
        // Another process on this machine made it first: theirs.
        Err(SecretsError::File { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            read_file(path)?
                .ok_or_else(|| SecretsError::MissingFile { path: path.to_owned() })?
                .secrets(path)
        }
        Err(other) => Err(other),
    }
}

/// Deletes the secrets an older release kept in the database and rewrites
/// the table, so that no dead row version keeps them in its files.
async fn remove_from_database(db: &Database) -> Result<(), SecretsError> {
    let mut connection = db.get().await?;
    let tx = connection.transaction().await?;
    let deleted = tx.execute("DELETE FROM server_secrets", &[]).await?;
    // The deleting transaction's id (its low 32 bits, as `xid`).
    let deleter: String = tx
        .query_one("SELECT (txid_current() % 4294967296)::text", &[])
        .await?
        .get(0);
    tx.commit().await?;
    drop(connection);
    if deleted > 0 {
        let maintenance = db.dedicated(db.timeouts().for_maintenance()).await?;
        // VACUUM FULL copies a deleted row that some snapshot may still
        // see: a transaction of this database older than the delete, or a
        // backend still connecting (counted for every database). Wait until
        // none is left, for at most 10 s (start-up must not hang on a
        // forgotten session), rewrite, and once more: a backend that
        // connected during the first rewrite cannot hold the second back.
        // (Seen once, with four test threads starting clusters beside it.)
        for _ in 0..2 {
            wait_for_older_snapshots(&maintenance, &deleter).await?;
            maintenance.batch_execute("VACUUM (FULL) server_secrets").await?;
        }
        tracing::info!("removed the server secrets from the database and rewrote its table");
    }
    Ok(())
}

/// Waits (at most 10 s) until no backend of this database, or one still
/// connecting, has a snapshot older than transaction `xid`.
async fn wait_for_older_snapshots(connection: &tokio_postgres::Client, xid: &str) -> Result<(), SecretsError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let older: i64 = connection
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE (datname = current_database() OR datname IS NULL) AND pid <> pg_backend_pid()
                   AND backend_xmin IS NOT NULL AND age(backend_xmin) >= age($1::text::xid)",
                &[&xid],
            )
            .await?
            .get(0);
        if older == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                "transactions older than the removal of the server secrets are still open; \
                 run VACUUM (FULL) server_secrets once they end"
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What `warden keys rotate` did.
#[derive(Debug, Serialize)]
pub struct Rotation {
    pub file: PathBuf,
    /// The key that signs now (its id, as in tokens' `kid`).
    pub signing: String,
    /// A staged key (verifies only), if any.
    pub staged: Option<String>,
    /// Keys that still verify tokens they signed.
    pub retired: Vec<String>,
    /// Keys dropped: every token they signed has expired.
    pub dropped: Vec<String>,
}

/// Rotates the token signing key of the file `path`: with `stage`, adds a
/// new key that only verifies; otherwise the staged key (or a new one)
/// signs from now on and the previous one is retired. Retired keys are
/// dropped once `longest_token` has passed since their retirement (none
/// while tokens may live for ever). The database's fingerprint follows
/// the signing key.
pub async fn rotate(
    db: &Database,
    path: &Path,
    stage: bool,
    longest_token: Option<Duration>,
) -> Result<Rotation, SecretsError> {
    let mut file = read_file(path)?.ok_or_else(|| SecretsError::MissingFile { path: path.to_owned() })?;
    // The file must be this database's (the check that start-up makes).
    file.secrets(path)?.check_fingerprints(db).await?;
    let now = Utc::now();
    let staged_at = file.signing_keys.iter().position(|key| key.staged);
    if stage {
        if staged_at.is_some() {
            return Err(SecretsError::Refused(
                "a key is staged already: give every instance the file, then run `warden keys rotate`".into(),
            ));
        }
        file.signing_keys.insert(0, StoredKey::new(&random_key(), true));
    } else {
        let mut next = match staged_at {
            Some(index) => file.signing_keys.remove(index),
            None => StoredKey::new(&random_key(), false),
        };
        next.staged = false;
        for key in file.signing_keys.iter_mut().filter(|key| key.retired_at.is_none()) {
            key.retired_at = Some(now);
        }
        file.signing_keys.insert(0, next);
    }
    let mut dropped = Vec::new();
    if let Some(longest) = longest_token.and_then(|d| chrono::Duration::from_std(d).ok()) {
        let mut kept = Vec::new();
        for key in file.signing_keys.drain(..) {
            match key.retired_at {
                Some(retired) if retired + longest < now => dropped.push(SigningKey::new(key.bytes(path)?).id),
                _ => kept.push(key),
            }
        }
        file.signing_keys = kept;
    }
    write_file(path, &file, false)?;
    let secrets = file.secrets(path)?;
    if !stage {
        let connection = db.get().await?;
        connection
            .execute(
                "UPDATE server_secret_fingerprints SET fingerprint = $1 WHERE name = 'signing'",
                &[&fingerprint("signing", &secrets.signing.key)],
            )
            .await?;
    }
    let staged = file
        .signing_keys
        .iter()
        .find(|key| key.staged)
        .map(|key| key.bytes(path).map(|bytes| SigningKey::new(bytes).id))
        .transpose()?;
    Ok(Rotation {
        file: path.to_owned(),
        signing: secrets.signing.id.clone(),
        retired: secrets
            .verifying
            .iter()
            .map(|key| key.id.clone())
            .filter(|id| Some(id) != staged.as_ref())
            .collect(),
        staged,
        dropped,
    })
}

/// Re-reads the secrets file when it changed (a rotation), for a serving
/// instance; `None` while it is unchanged or unreadable (the keys in use
/// stay).
pub fn reload_if_changed(path: &Path, seen: &mut Option<std::time::SystemTime>) -> Option<ServerSecrets> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    if *seen == Some(modified) {
        return None;
    }
    *seen = Some(modified);
    match read_file(path).and_then(|file| file.map(|file| file.secrets(path)).transpose()) {
        Ok(secrets) => secrets,
        Err(error) => {
            tracing::warn!(%error, "could not re-read the secrets file; the keys in use stay");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_and_ids_name_a_key_without_revealing_it() {
        let key = vec![7u8; 64];
        let print = fingerprint("signing", &key);
        assert_eq!(print.len(), 64);
        assert!(!print.contains(&hex::encode(&key[..8])));
        assert_ne!(print, fingerprint("throttle", &key), "purposes are separated");
        assert_eq!(SigningKey::new(key.clone()).id, print[..16]);
        assert_ne!(derive(&key, "login throttle"), key);
    }

    #[test]
    fn the_first_key_not_staged_signs_and_the_others_verify() {
        let path = Path::new("secrets.json");
        let file = SecretsFile {
            signing_keys: vec![
                StoredKey::new(&[1u8; 64], true),
                StoredKey::new(&[2u8; 64], false),
                StoredKey::new(&[3u8; 64], false),
            ],
            throttle_key: STANDARD.encode([9u8; 64]),
        };
        let secrets = file.secrets(path).unwrap();
        assert_eq!(secrets.signing.key, vec![2u8; 64]);
        let verifying: Vec<u8> = secrets.verifying.iter().map(|key| key.key[0]).collect();
        assert_eq!(verifying, [1, 3]);
        let only_staged = SecretsFile {
            signing_keys: vec![StoredKey::new(&[1u8; 64], true)],
            throttle_key: STANDARD.encode([9u8; 64]),
        };
        assert!(only_staged.secrets(path).is_err());
    }
}

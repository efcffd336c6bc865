//! Configuration: a YAML file, then environment variables on top.
//!
//! Layout follows Project-W's config (`security.local_account...`). Any
//! string in the file may reference environment variables as `${NAME}`
//! (secrets belong in the environment or a `.env` file). Every field can
//! also be set as `WARDEN_<SECTION>__<FIELD>`, e.g.
//! `WARDEN_SECURITY__LOCAL_ACCOUNT__MODE=no_signup`. Errors name the field.

mod interpolate;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Serialized};
use figment::Figment;
use serde::Deserialize;

use crate::platform::secrets::passwords;
use crate::platform::secrets::Secret;
use interpolate::read_yaml;

/// Shortest `security.secret_key` accepted (it signs access tokens).
pub const MIN_SECRET_KEY_LENGTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid YAML: {source}")]
    Yaml { path: String, source: serde_yaml::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub runners: RunnersConfig,
    #[serde(default)]
    pub jobs: JobsConfig,
    /// LDAP directories users may log in with, by name (seed 000).
    #[serde(default)]
    pub ldap_providers: BTreeMap<String, LdapProviderConfig>,
    /// OpenID Connect providers users may log in with, by name (seed 000).
    #[serde(default)]
    pub oidc_providers: BTreeMap<String, OidcProviderConfig>,
    /// Fields whose `${VARIABLE}` is not set (they hold an empty string).
    /// Only the commands that use such a field refuse to run
    /// ([`Config::require`]): `warden replay` needs no admin password.
    #[serde(skip)]
    pub unresolved: Vec<UnresolvedVariable>,
}

/// A `${VARIABLE}` in the config file that the environment does not set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnresolvedVariable {
    /// Dotted path of the field, e.g. `security.local_account.user_provisioning.0.password`.
    pub field: String,
    pub variable: String,
}

/// One OpenID Connect provider (`oidc_providers.<name>`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// The issuer URL, without `/.well-known/openid-configuration`.
    pub base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Users must have this claim value to log in; none: any user may.
    #[serde(default)]
    pub user_role: Option<OidcRole>,
    /// Users with this claim value are admins; none: nobody.
    #[serde(default)]
    pub admin_role: Option<OidcRole>,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub icon_url: Option<String>,
    /// Refuse users whose `email_verified` claim is not `true`. Turn off
    /// only for a provider that verifies every address itself but does not
    /// send the claim.
    #[serde(default = "default_true")]
    pub require_verified_email: bool,
    /// Memberships in warden's groups and projects from a group claim:
    /// a user whose claim holds a mapping's value gets its role in its
    /// scope at each log-in, and loses it at a log-in without it (a
    /// membership granted through the API is left alone). docs/scopes.md.
    #[serde(default)]
    pub scope_mappings: Vec<OidcScopeMapping>,
}

/// Users whose claim `claim.field_name` holds `claim.name` get `role` in
/// `scope`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcScopeMapping {
    pub claim: OidcRole,
    /// `group:<path>` or `project:<path>`.
    pub scope: String,
    pub role: warden_events::scope::ScopeRole,
}

/// A claim (string or list of strings) that must contain `name`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcRole {
    pub field_name: String,
    pub name: String,
}

/// One LDAP directory (`ldap_providers.<name>`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapProviderConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub server_address: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file with the CA certificates that sign the server's
    /// certificate; default: the system's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    pub service_account_auth: LdapServiceAccount,
    /// Attributes a user may type as username, e.g. `[uid, mail]`.
    pub username_attributes: Vec<String>,
    /// Attribute with the stable user id, e.g. `uid`.
    pub uid_attribute: String,
    /// Attribute with the email address, e.g. `mail`.
    pub mail_attribute: String,
    /// Who may log in.
    pub user_query: LdapQuery,
    /// Who is an admin (also needs to pass `user_query`); none: nobody.
    #[serde(default)]
    pub admin_query: Option<LdapQuery>,
    /// Memberships in warden's groups and projects from the directory:
    /// the users a mapping's query returns (e.g. `(memberOf=<group DN>)`)
    /// get its role in its scope, at each log-in and sync; one the query
    /// no longer returns loses it (a membership granted through the API
    /// is left alone). docs/scopes.md.
    #[serde(default)]
    pub scope_mappings: Vec<LdapScopeMapping>,
    /// Not advertised as a login option (still usable).
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub icon_url: Option<String>,
    /// Synchronise all users this often (`0s`: never; `warden ldap sync`
    /// still works).
    #[serde(default, with = "humantime_serde")]
    pub sync_interval: Duration,
    /// A sync deletes users of this directory that are no longer in it.
    #[serde(default)]
    pub sync_del_old_users: bool,
    /// A directory user unknown to warden may log in (and is linked);
    /// otherwise only users a sync added may.
    #[serde(default = "default_true")]
    pub sync_user_on_login: bool,
    /// Connect and operation timeout.
    #[serde(default = "default_ldap_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapServiceAccount {
    /// Bind DN of the account that searches the directory.
    pub user: String,
    pub password: Secret,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapQuery {
    pub base_dn: String,
    /// An LDAP filter, e.g. `(objectClass=inetOrgPerson)`.
    pub filter: String,
}

/// Directory users `query` returns get `role` in `scope`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapScopeMapping {
    pub query: LdapQuery,
    /// `group:<path>` or `project:<path>`.
    pub scope: String,
    pub role: warden_events::scope::ScopeRole,
}

fn default_ldap_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The runner side: machines, job hand-out, limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnersConfig {
    /// A machine's contact is written to the log at most this often (plus
    /// whenever its info or address changes); the freshest value is kept
    /// in memory.
    #[serde(with = "humantime_serde")]
    pub contact_record_interval: Duration,
    /// Machines whose last recorded contact is older than this are pruned.
    #[serde(with = "humantime_serde")]
    pub machine_retention: Duration,
    #[serde(with = "humantime_serde")]
    pub prune_check_interval: Duration,
    /// Longest a job request may wait for a job (`wait_seconds` is capped).
    #[serde(with = "humantime_serde")]
    pub long_poll_max: Duration,
    /// A Project-W style machine counts as online this long after its last
    /// heartbeat.
    #[serde(with = "humantime_serde")]
    pub online_timeout: Duration,
    /// A Project-W job its machine has not fetched (`retrieve_job_info`)
    /// this long after it was assigned goes back to the queue: three
    /// heartbeat intervals of the real runner by default.
    #[serde(with = "humantime_serde")]
    pub retrieve_timeout: Duration,
    /// A machine of warden's native protocol that holds a job and sends
    /// nothing (no poll, progress or verify) for this long loses the job:
    /// it goes back to the queue. Must be longer than
    /// `contact_record_interval` (its contacts are read from the log).
    #[serde(with = "humantime_serde")]
    pub native_silence_timeout: Duration,
    /// Progress reports are recorded at most this often per job.
    #[serde(with = "humantime_serde")]
    pub progress_record_interval: Duration,
    /// Longest grace period for the old token when a runner token is reset.
    #[serde(with = "humantime_serde")]
    pub max_token_grace: Duration,
    pub rate_limit: RateLimitConfig,
    /// Machines one runner token may have registered at once (pruned ones
    /// do not count): a leaked token cannot fill the database with
    /// machines.
    pub max_machines_per_token: u32,
    /// Answer heartbeats of idle Project-W machines from memory when this
    /// instance checked their tokens recently and no change was notified
    /// since (`fleet/heartbeat_cache.rs`). Off: every heartbeat reads the
    /// database.
    pub heartbeat_cache: bool,
    /// Active runners a group or project may have, unless an admin set
    /// the scope's own limit (GitLab's per-scope runner registration
    /// limit). Instance runners have no limit.
    pub scope_runner_limit: i64,
}

impl Default for RunnersConfig {
    fn default() -> Self {
        RunnersConfig {
            contact_record_interval: Duration::from_secs(5 * 60),
            machine_retention: Duration::from_secs(7 * 24 * 3600),
            prune_check_interval: Duration::from_secs(10 * 60),
            long_poll_max: Duration::from_secs(60),
            online_timeout: Duration::from_secs(60),
            retrieve_timeout: Duration::from_secs(30),
            native_silence_timeout: Duration::from_secs(15 * 60),
            progress_record_interval: Duration::from_secs(5),
            max_token_grace: Duration::from_secs(7 * 24 * 3600),
            rate_limit: RateLimitConfig::default(),
            max_machines_per_token: 1000,
            heartbeat_cache: true,
            scope_runner_limit: 50,
        }
    }
}

/// Jobs and their files.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Largest input file a user may upload (`POST /api/files`).
    pub max_file_bytes: u64,
    /// Largest result a runner may send (a Project-W transcript in all its
    /// formats), the body limit of `submit_job_result`.
    pub max_result_bytes: usize,
    /// The most bytes one user's files (uploads and results) may take;
    /// an upload past it answers `413 storage_quota_exceeded`.
    pub max_user_bytes: u64,
    /// Uploads of one user in progress at once; one more answers `429
    /// too_many_uploads`.
    pub max_concurrent_uploads: u32,
    /// An upload (or a runner's result) that sends nothing for this long
    /// is given up (`408 upload_timed_out`).
    #[serde(with = "humantime_serde")]
    pub upload_idle_timeout: Duration,
    /// The longest an upload (or a result) may take in all.
    #[serde(with = "humantime_serde")]
    pub upload_deadline: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_file_bytes: 1024 * 1024 * 1024,
            max_result_bytes: 64 * 1024 * 1024,
            max_user_bytes: 10 * 1024 * 1024 * 1024,
            max_concurrent_uploads: 4,
            upload_idle_timeout: Duration::from_secs(30),
            upload_deadline: Duration::from_secs(3600),
        }
    }
}

/// Requests per runner token (all its machines together).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 100,
            burst: 500,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://...` or `host=... user=...`; without it warden starts
    /// its own PostgreSQL cluster in `data_dir`.
    pub url: Option<Secret>,
    pub data_dir: PathBuf,
    pub max_connections: usize,
    /// PEM file with the CA certificates that sign the database server's
    /// certificate (for `sslmode=require`); default: the system's.
    pub ca_file: Option<PathBuf>,
    /// Streaming replicas of the database (URLs as for `url`): admin
    /// read-model queries, audit queries and time travel go there once a
    /// replica has replayed what the primary had when the query started.
    pub replica_urls: Vec<Secret>,
    /// How long such a query waits for a replica to catch up before it
    /// goes to the primary.
    #[serde(with = "humantime_serde")]
    pub replica_max_wait: Duration,
    /// The server cancels a statement after this; warden gives a
    /// connection that owes an answer 2 s more, then fails it (a frozen
    /// server never applies its own timeout) and the request answers
    /// `503 database_unavailable`.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Connecting to one host of the URL: TCP, TLS, start-up,
    /// authentication and the read-write check together. With several
    /// hosts, the next is tried beside a host silent for 250 ms.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest a request waits for a free pooled connection.
    #[serde(with = "humantime_serde")]
    pub pool_wait_timeout: Duration,
    /// The statement timeout of migrations, of the rewrite after a
    /// user's deletion, and of one-shot commands (`warden replay`,
    /// `warden audit verify`, ...).
    #[serde(with = "humantime_serde")]
    pub maintenance_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            data_dir: PathBuf::from("warden-data"),
            max_connections: 32,
            ca_file: None,
            replica_urls: Vec::new(),
            replica_max_wait: Duration::from_millis(250),
            statement_timeout: crate::platform::db::Timeouts::REQUESTS.statement,
            connect_timeout: crate::platform::db::Timeouts::REQUESTS.connect,
            pool_wait_timeout: crate::platform::db::Timeouts::REQUESTS.pool_wait,
            maintenance_timeout: crate::platform::db::Timeouts::REQUESTS.maintenance,
        }
    }
}

impl DatabaseConfig {
    /// The database deadlines this configuration asks for.
    pub fn timeouts(&self) -> crate::platform::db::Timeouts {
        crate::platform::db::Timeouts {
            statement: self.statement_timeout,
            connect: self.connect_timeout,
            pool_wait: self.pool_wait_timeout,
            maintenance: self.maintenance_timeout,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    /// Defaults to one per CPU.
    pub workers: Option<usize>,
    /// warden's own URL as clients reach it (behind a proxy: the public
    /// one), e.g. `https://warden.example.org`. OIDC callbacks are built
    /// from it; without it, from the request's host.
    pub public_url: Option<String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For`
    /// is believed; the client is the rightmost address not in this list.
    /// Empty: the TCP peer is the client and the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest JSON or form body accepted.
    pub max_body_bytes: usize,
    /// No longer used: commands update the read models in their own
    /// transaction and do not wait. Still accepted, so that configuration
    /// files of earlier releases load; start-up warns when it is set.
    #[serde(with = "humantime_serde")]
    pub consistency_timeout: Option<Duration>,
    /// After SIGTERM/SIGINT: in-flight requests drain, background tasks
    /// stop; past this the process exits anyway (e.g. the database does
    /// not answer).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// `/api/health/ready` fails when a consumer's oldest unprocessed event
    /// is older than this.
    #[serde(with = "humantime_serde")]
    pub ready_max_lag: Duration,
    /// `/api/health` and `/api/health/ready` answer within this: `503`
    /// when the database has not answered their questions by then.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// A transaction that holds the log horizon (and so every projector)
    /// back longer than this is named in a warning.
    #[serde(with = "humantime_serde")]
    pub stall_warning: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            workers: None,
            public_url: None,
            trusted_proxies: Vec::new(),
            max_body_bytes: 64 * 1024,
            consistency_timeout: None,
            shutdown_timeout: Duration::from_secs(30),
            ready_max_lag: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(2),
            stall_warning: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Signs access tokens (and the login throttle's key is derived from
    /// it); at least 32 bytes. Without it warden keeps generated keys in
    /// `secrets_file`.
    pub secret_key: Option<Secret>,
    /// Keys that signed tokens before `secret_key` (a rotation): they
    /// verify, never sign. Remove them once their tokens have expired.
    pub previous_secret_keys: Vec<Secret>,
    /// Where the generated server secrets are kept when `secret_key` is
    /// not set (mode 0600); default `<database.data_dir>/secrets.json`.
    /// Every instance of one database needs the same file.
    pub secrets_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub access_token_lifetime: Duration,
    pub local_account: LocalAccountConfig,
    pub session: SessionConfig,
    pub login_throttle: LoginThrottleConfig,
    pub api_tokens: ApiTokensConfig,
}

/// Long-lived API tokens (`security.api_tokens`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiTokensConfig {
    /// The longest (and default) lifetime of a new API token; `0s` = tokens
    /// may live until revoked.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// A password change revokes the user's API tokens.
    pub revoke_on_password_change: bool,
}

impl Default for ApiTokensConfig {
    fn default() -> Self {
        ApiTokensConfig {
            max_lifetime: Duration::from_secs(90 * 24 * 3600),
            revoke_on_password_change: true,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            secret_key: None,
            previous_secret_keys: Vec::new(),
            secrets_file: None,
            access_token_lifetime: Duration::from_secs(3600),
            local_account: LocalAccountConfig::default(),
            session: SessionConfig::default(),
            login_throttle: LoginThrottleConfig::default(),
            api_tokens: ApiTokensConfig::default(),
        }
    }
}

/// The session cookie every login also sets (seed 003's `session-max-age`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a session cookie stays valid; `0s` = unlimited (until
    /// log-out, password change or deletion).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Send the cookie over HTTPS only. Turn off only for plain-HTTP
    /// development set-ups.
    pub cookie_secure: bool,
    pub same_site: SameSite,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_age: Duration::from_secs(7 * 24 * 3600),
            cookie_secure: true,
            same_site: SameSite::default(),
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
}

/// Brute-force protection of every password login (local and LDAP).
/// Failures count per account *and source address* and per source
/// address: an attacker elsewhere cannot lock an admin out, and every
/// lock-out ends.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginThrottleConfig {
    /// Failed logins of one account from one address within `window`
    /// before that pair is locked out.
    pub max_failures_per_account: u32,
    /// Failed logins (any account) from one address within `window`
    /// before that address is locked out.
    pub max_failures_per_address: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a lock-out lasts.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// Failed checks of one account from *all* addresses together before
    /// each further attempt must wait (1 s, doubling).
    pub slow_down_after: u32,
    /// The longest such wait: an account is never locked, only slowed.
    #[serde(with = "humantime_serde")]
    pub max_slow_down: Duration,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        LoginThrottleConfig {
            max_failures_per_account: 5,
            max_failures_per_address: 50,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(5 * 60),
            slow_down_after: 10,
            max_slow_down: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalAccountConfig {
    #[serde(default)]
    pub mode: LocalAccountMode,
    /// Accounts created (and kept matching) at every start, by id.
    #[serde(default)]
    pub user_provisioning: BTreeMap<String, ProvisionedUser>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalAccountMode {
    /// Log-in and self sign-up.
    #[default]
    Enabled,
    /// Log-in only.
    NoSignup,
    /// Log-in only, and not advertised as a login option.
    NoSignupHidden,
    /// No local log-in at all.
    Disabled,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionedUser {
    pub email: String,
    pub password: Secret,
    /// `true`: an admin at every start. `false`: not an admin (an admin is
    /// made a `user` again; a `support` user stays support).
    #[serde(default)]
    pub is_admin: bool,
}

impl Config {
    /// Reads `path` (if any), applies `WARDEN_*` variables, validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        let mut unresolved = Vec::new();
        if let Some(path) = path {
            figment = figment.merge(Serialized::defaults(read_yaml(path, &mut unresolved)?));
        }
        // Only WARDEN_<SECTION>__... variables are configuration (not, say,
        // WARDEN_CONFIG). Keys keep the variable's case here: compare
        // without it.
        figment = figment.merge(Env::prefixed("WARDEN_").split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            [
                "database.",
                "http.",
                "security.",
                "runners.",
                "jobs.",
                "ldap_providers.",
                "oidc_providers.",
            ]
            .iter()
            .any(|section| key.starts_with(section))
        }));
        let mut config: Config = figment.extract().map_err(|error| {
            let field = error.path.join(".");
            let message = error.kind.to_string();
            if field.is_empty() {
                ConfigError::Invalid(message)
            } else {
                field_error(field, message)
            }
        })?;
        // A variable set through WARDEN_* after all is resolved.
        unresolved.retain(|u: &UnresolvedVariable| {
            let env_name = format!("WARDEN_{}", u.field.replace('.', "__")).to_uppercase();
            std::env::var_os(env_name).is_none()
        });
        config.unresolved = unresolved;
        if let Err(error) = config.validate() {
            // A field that failed only because its variable is unset says so.
            if let ConfigError::Field { field, .. } = &error {
                config.require(&[field])?;
            }
            return Err(error);
        }
        Ok(config)
    }

    /// Refuses when a field under one of `sections` (dotted prefixes; `""`
    /// is everything) names an environment variable that is not set.
    pub fn require(&self, sections: &[&str]) -> Result<(), ConfigError> {
        let covered = |field: &str| {
            sections.iter().any(|section| {
                section.is_empty()
                    || field == *section
                    || field.starts_with(&format!("{section}."))
                    || section.starts_with(&format!("{field}."))
            })
        };
        match self.unresolved.iter().find(|u| covered(&u.field)) {
            Some(u) => Err(field_error(
                u.field.clone(),
                format!("environment variable {} is not set", u.variable),
            )),
            None => Ok(()),
        }
    }

    fn is_unresolved(&self, field: &str) -> bool {
        self.unresolved.iter().any(|u| u.field == field)
    }
}

#[cfg(test)]
mod tests {
    use super::interpolate::expand_env;
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn seed_layout_with_integer_ids_and_env_secrets() {
        std::env::set_var("WARDEN_TEST_PW_1", "a long enough password");
        let file = write(
            "security:\n  local_account:\n    mode: no_signup_hidden\n    user_provisioning:\n      0:\n        email: root@example.org\n        password: ${WARDEN_TEST_PW_1}\n        is_admin: true\n",
        );
        let config = Config::load(Some(file.path())).unwrap();
        let local = &config.security.local_account;
        assert_eq!(local.mode, LocalAccountMode::NoSignupHidden);
        let root = &local.user_provisioning["0"];
        assert_eq!(root.password.expose(), "a long enough password");
        assert!(root.is_admin);
        assert!(
            !format!("{config:?}").contains("a long enough"),
            "secrets must not be printable"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("security:\n  local_account:\n    mode: sometimes\n", "security.local_account.mode"),
            ("security:\n  local_account:\n    user_provisioning:\n      7:\n        email: nope\n        password: long enough password\n", "security.local_account.user_provisioning.7.email"),
            ("security:\n  local_account:\n    user_provisioning:\n      1:\n        email: a@b.c\n        password: short\n", "security.local_account.user_provisioning.1.password"),
            ("http:\n  listen: not-an-address\n", "http.listen"),
            ("security:\n  secret_key: tooshort\n", "security.secret_key"),
            ("databse:\n  url: x\n", "databse"),
        ];
        for (yaml, field) in cases {
            let error = Config::load(Some(write(yaml).path())).unwrap_err().to_string();
            assert!(error.contains(field), "{field} missing from: {error}");
        }
    }

    #[test]
    fn unset_variables_only_stop_the_commands_that_use_them() {
        let yaml = "security:\n  local_account:\n    user_provisioning:\n      1:\n        email: a@b.c\n        password: ${WARDEN_TEST_SURELY_UNSET}\n";
        let config = Config::load(Some(write(yaml).path())).expect("loads: replay needs no password");
        config.require(&["database"]).expect("the database section is complete");
        for sections in [&[""][..], &["security"], &["security.local_account.user_provisioning"]] {
            let error = config.require(sections).unwrap_err().to_string();
            assert!(
                error.contains("security.local_account.user_provisioning.1.password")
                    && error.contains("WARDEN_TEST_SURELY_UNSET"),
                "{error}"
            );
        }
        // A field that cannot be empty fails at load, naming the variable.
        let listen = Config::load(Some(write("http:\n  listen: ${WARDEN_TEST_SURELY_UNSET}\n").path()))
            .unwrap_err()
            .to_string();
        assert!(
            listen.contains("http.listen") && listen.contains("WARDEN_TEST_SURELY_UNSET"),
            "{listen}"
        );
    }

    #[test]
    fn environment_variables_override_the_file() {
        // A field no other test reads: the environment is shared by tests.
        std::env::set_var("WARDEN_RUNNERS__PROGRESS_RECORD_INTERVAL", "7s");
        let config = Config::load(Some(write("runners:\n  progress_record_interval: 9s\n").path()));
        std::env::remove_var("WARDEN_RUNNERS__PROGRESS_RECORD_INTERVAL");
        assert_eq!(config.unwrap().runners.progress_record_interval, Duration::from_secs(7));
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("WARDEN_TEST_X", "v");
        assert_eq!(expand_env("a${WARDEN_TEST_X}b$c$${d}").unwrap(), "avb$c${d}");
        assert_eq!(
            expand_env("${WARDEN_TEST_SURELY_UNSET}").unwrap_err(),
            "WARDEN_TEST_SURELY_UNSET"
        );
    }
}

//! `warden runner reconcile`: run before a runner host's runner starts
//! (systemd `ExecStartPre`) so that its config always holds valid tokens.
//! A port of seed 002's gitlab-runner-auth script to warden's API.
//!
//! The prefix folder holds:
//! - `admin-token` (an admin-scoped access token), or `admin-credentials`
//!   (first line email, second line password of an admin: warden logs in
//!   with `scope=admin`);
//! - `config.template`: the runner config with Python-style named fields,
//!   `{<runner type>}` for each type's token and `{hostname}`; `{{`/`}}`
//!   for literal braces;
//! - `runner-data.json` (stateful mode): `{"<type>": {"id": .., "token": ..}}`;
//!   `{}` entries ask for a runner of that type.
//!
//! Stateful: tokens in `runner-data.json` are checked; invalid or missing
//! ones are replaced by new runners (tagged with the host name and the
//! type). Stateless (`--stateless`): no state file; runners are found by
//! their host-name and type tags and get a fresh token (warden keeps only
//! hashes, so an existing token cannot be read back), new ones are
//! created where none exists. Either way `config.toml` is rendered from
//! the template when it changes. Files with tokens are written 0600,
//! atomically.
//!
//! Exit codes: 0 done, 2 local set-up problem (files, template), 3 warden
//! unreachable or failing, 4 admin credentials refused, 1 anything else.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{CreatedRunner, NewRunnerToken, Page, RunnerView, TokenResponse};

pub const DEFAULT_TYPES: [&str; 2] = ["shell", "batch"];

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Setup(String),
    #[error("warden is unreachable or failing: {0}")]
    Backend(String),
    #[error("the admin credentials were refused: {0}")]
    AdminRefused(String),
    #[error("{0}")]
    Other(String),
}

impl ReconcileError {
    /// The process exit code a systemd unit can act on.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReconcileError::Other(_) => 1,
            ReconcileError::Setup(_) => 2,
            ReconcileError::Backend(_) => 3,
            ReconcileError::AdminRefused(_) => 4,
        }
    }
}

fn setup(message: String) -> ReconcileError {
    ReconcileError::Setup(message)
}

pub struct Options {
    pub api_url: String,
    pub prefix: PathBuf,
    pub stateless: bool,
    pub types: Option<Vec<String>>,
    pub hostname: String,
    /// Create the runners in this group or project (`group:<path>`,
    /// `project:<path>`); none: instance runners.
    pub scope: Option<String>,
}

/// A runner entry of `runner-data.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// What happened to each runner type (for the report).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    Created,
    TokenReset,
}

pub struct Report {
    pub outcomes: BTreeMap<String, (Outcome, String)>,
    pub config_written: bool,
}

/// Runs one reconciliation.
pub async fn reconcile(options: &Options) -> Result<Report, ReconcileError> {
    let template_path = options.prefix.join("config.template");
    let template = std::fs::read_to_string(&template_path)
        .map_err(|e| setup(format!("cannot read {}: {e}", template_path.display())))?;
    let fields = template_fields(&template).map_err(|e| setup(format!("{}: {e}", template_path.display())))?;
    let data_path = options.prefix.join("runner-data.json");
    let mut data = if options.stateless {
        BTreeMap::new()
    } else {
        read_runner_data(&data_path)?
    };
    let types: Vec<String> = match &options.types {
        Some(types) => types.clone(),
        None if !data.is_empty() => data.keys().cloned().collect(),
        None => {
            let from_template: Vec<String> = fields.iter().filter(|f| *f != "hostname").cloned().collect();
            if from_template.is_empty() {
                DEFAULT_TYPES.iter().map(|t| t.to_string()).collect()
            } else {
                from_template
            }
        }
    };
    let client = Client::new(&options.api_url)?;
    let admin = AdminToken::from_prefix(&options.prefix);
    let mut outcomes = BTreeMap::new();
    let scope = options.scope.as_deref();

    if options.stateless {
        let admin = admin.get(&client).await?;
        let runners = client.list_runners(&admin).await?;
        // Only runners of the scope asked for count as this host's.
        let scope_id = match scope {
            Some(scope) => Some(client.scope_id(&admin, scope).await?),
            None => None,
        };
        for runner_type in &types {
            let existing = runners.iter().find(|r| {
                r.status == "active"
                    && r.scope_id == scope_id
                    && has_tag(r, &options.hostname)
                    && has_tag(r, runner_type)
            });
            let (entry, outcome) = match existing.map(|r| r.id.to_string()) {
                Some(id) => (client.reset_token(&admin, &id).await?, Outcome::TokenReset),
                None => (
                    client
                        .create_runner(&admin, &options.hostname, runner_type, scope)
                        .await?,
                    Outcome::Created,
                ),
            };
            outcomes.insert(runner_type.clone(), (outcome, entry.id.clone().unwrap_or_default()));
            data.insert(runner_type.clone(), entry);
        }
    } else {
        let mut admin_token = None;
        for runner_type in &types {
            let entry = data.get(runner_type).cloned().unwrap_or_default();
            if let Some(token) = &entry.token {
                if client.token_is_valid(token).await? {
                    outcomes.insert(
                        runner_type.clone(),
                        (Outcome::Valid, entry.id.clone().unwrap_or_default()),
                    );
                    continue;
                }
            }
            if admin_token.is_none() {
                admin_token = Some(admin.get(&client).await?);
            }
            let fresh = client
                .create_runner(
                    admin_token.as_ref().expect("set above"),
                    &options.hostname,
                    runner_type,
                    scope,
                )
                .await?;
            outcomes.insert(
                runner_type.clone(),
                (Outcome::Created, fresh.id.clone().unwrap_or_default()),
            );
            data.insert(runner_type.clone(), fresh);
            // Saved after each new runner: a later failure must not lose it.
            write_private(&data_path, &serde_json::to_vec_pretty(&data).expect("serialisable"))?;
        }
    }

    let mut values: BTreeMap<String, String> = data
        .iter()
        .filter_map(|(name, entry)| entry.token.clone().map(|token| (name.clone(), token)))
        .collect();
    values.insert("hostname".into(), options.hostname.clone());
    let rendered = render(&template, &values).map_err(|e| setup(format!("{}: {e}", template_path.display())))?;
    let config_path = options.prefix.join("config.toml");
    let config_written = std::fs::read_to_string(&config_path).ok().as_deref() != Some(rendered.as_str());
    if config_written {
        write_private(&config_path, rendered.as_bytes())?;
    }
    Ok(Report {
        outcomes,
        config_written,
    })
}

fn has_tag(runner: &RunnerView, tag: &str) -> bool {
    let tag = tag.to_lowercase();
    runner.tags.contains(&tag)
}

fn read_runner_data(path: &Path) -> Result<BTreeMap<String, RunnerEntry>, ReconcileError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| setup(format!("{} is not valid runner data: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(setup(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Writes a file readable by its owner only, via a temporary file and a
/// rename, so a crash never leaves half a config.
/// Writes `path` atomically, readable by its owner only. The temporary file
/// has a random name and is created new (`O_EXCL`), never through a
/// symbolic link (`O_NOFOLLOW`): a link planted beside the config cannot
/// make the tokens land elsewhere.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), ReconcileError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let failure = |e: std::io::Error| setup(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&temporary)
        .map_err(failure)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600)))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failure(error));
    }
    Ok(())
}

/// Warns when a file with admin credentials can be read by other users.
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        if metadata.mode() & 0o077 != 0 {
            eprintln!(
                "warden-reconcile: warning: {} is readable by other users (mode {:o}); chmod 600 it",
                path.display(),
                metadata.mode() & 0o777
            );
        }
    }
}

/// The named fields of a Python-style format string.
pub fn template_fields(template: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    render_with(template, &mut |name| {
        if !fields.iter().any(|f| f == name) {
            fields.push(name.to_owned());
        }
        Some(String::new())
    })?;
    Ok(fields)
}

/// Fills `{name}` fields; `{{` and `}}` are literal braces.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    render_with(template, &mut |name| values.get(name).cloned())
}

fn render_with(template: &str, value: &mut dyn FnMut(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(format!("`{{{name}}}` is not a named field"));
                }
                out.push_str(&value(&name).ok_or_else(|| format!("no value for the field `{{{name}}}`"))?);
            }
            '}' => return Err("a single `}` must be written `}}`".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Where the admin's access comes from.
enum AdminToken {
    Token(String),
    Credentials { email: String, password: String },
    Missing(PathBuf),
    Unreadable(String),
}

impl AdminToken {
    fn from_prefix(prefix: &Path) -> Self {
        let token_path = prefix.join("admin-token");
        if let Ok(token) = std::fs::read_to_string(&token_path) {
            warn_if_shared(&token_path);
            return AdminToken::Token(token.trim().to_owned());
        }
        let credentials_path = prefix.join("admin-credentials");
        match std::fs::read_to_string(&credentials_path) {
            Ok(text) => {
                warn_if_shared(&credentials_path);
                let mut lines = text.lines();
                match (lines.next(), lines.next()) {
                    (Some(email), Some(password)) if !email.trim().is_empty() && !password.is_empty() => {
                        AdminToken::Credentials {
                            email: email.trim().to_owned(),
                            password: password.to_owned(),
                        }
                    }
                    _ => AdminToken::Unreadable(format!(
                        "{} must hold an email on its first line and a password on its second",
                        credentials_path.display()
                    )),
                }
            }
            Err(_) => AdminToken::Missing(token_path),
        }
    }

    async fn get(&self, client: &Client) -> Result<String, ReconcileError> {
        match self {
            AdminToken::Token(token) => Ok(token.clone()),
            AdminToken::Credentials { email, password } => client.admin_login(email, password).await,
            AdminToken::Missing(path) => Err(setup(format!(
                "a new runner is needed but there is no admin access: create {} (or admin-credentials next to it)",
                path.display()
            ))),
            AdminToken::Unreadable(message) => Err(setup(message.clone())),
        }
    }
}

/// warden's HTTP API as the reconciler uses it.
struct Client {
    base: String,
    http: reqwest::Client,
}

/// A successful answer in the API's shape (crate::api), or a clear error.
fn answer<T: serde::de::DeserializeOwned>(body: Value, what: &str) -> Result<T, ReconcileError> {
    serde_json::from_value(body).map_err(|e| ReconcileError::Other(format!("{what} answered an unexpected shape: {e}")))
}

impl Client {
    fn new(api_url: &str) -> Result<Self, ReconcileError> {
        let base = api_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(setup(format!(
                "--api-url must start with http:// or https://, got `{api_url}`"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ReconcileError::Other(e.to_string()))?;
        Ok(Client { base, http })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Value), ReconcileError> {
        let response = request
            .send()
            .await
            .map_err(|e| ReconcileError::Backend(e.to_string()))?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        if status.is_server_error() {
            return Err(ReconcileError::Backend(format!("HTTP {status}: {body}")));
        }
        Ok((status, body))
    }

    async fn token_is_valid(&self, token: &str) -> Result<bool, ReconcileError> {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/api/runners/verify", self.base))
                    .bearer_auth(token),
            )
            .await?;
        match status.as_u16() {
            200 => Ok(true),
            401 => Ok(false),
            429 => Err(ReconcileError::Backend(format!("rate limited: {body}"))),
            _ => Err(ReconcileError::Other(format!("verify answered HTTP {status}: {body}"))),
        }
    }

    async fn admin_login(&self, email: &str, password: &str) -> Result<String, ReconcileError> {
        let (status, body) = self
            .send(self.http.post(format!("{}/api/local-account/login", self.base)).form(&[
                ("grant_type", "password"),
                ("scope", "admin"),
                ("username", email),
                ("password", password),
            ]))
            .await?;
        match serde_json::from_value::<TokenResponse>(body.clone()) {
            Ok(answer) if status.is_success() => Ok(answer.access_token),
            _ => Err(ReconcileError::AdminRefused(format!(
                "login answered HTTP {status}: {body}"
            ))),
        }
    }

    fn admin_outcome(status: reqwest::StatusCode, body: Value, what: &str) -> Result<Value, ReconcileError> {
        match status.as_u16() {
            200..=299 => Ok(body),
            401 | 403 => Err(ReconcileError::AdminRefused(format!(
                "{what} answered HTTP {status}: {body}"
            ))),
            _ => Err(ReconcileError::Other(format!("{what} answered HTTP {status}: {body}"))),
        }
    }

    async fn create_runner(
        &self,
        admin: &str,
        hostname: &str,
        runner_type: &str,
        scope: Option<&str>,
    ) -> Result<RunnerEntry, ReconcileError> {
        let mut body = json!({
            "description": format!("{hostname} {runner_type}"),
            "tags": [hostname.to_lowercase(), runner_type.to_lowercase()],
        });
        if let Some(scope) = scope {
            body["scope"] = json!(scope);
        }
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/api/admins/create_runner", self.base))
                    .bearer_auth(admin)
                    .json(&body),
            )
            .await?;
        let created: CreatedRunner = answer(Self::admin_outcome(status, body, "create_runner")?, "create_runner")?;
        Ok(RunnerEntry {
            id: Some(created.id.to_string()),
            token: Some(created.token),
        })
    }

    async fn reset_token(&self, admin: &str, runner_id: &str) -> Result<RunnerEntry, ReconcileError> {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/api/admins/reset_runner_token", self.base))
                    .query(&[("runner_id", runner_id)])
                    .bearer_auth(admin),
            )
            .await?;
        let reset: NewRunnerToken = answer(
            Self::admin_outcome(status, body, "reset_runner_token")?,
            "reset_runner_token",
        )?;
        Ok(RunnerEntry {
            id: Some(runner_id.to_owned()),
            token: Some(reset.token),
        })
    }

    /// The id of the group or project `scope` names (`group:<path>`,
    /// `project:<path>`), as the admin's list of scopes has it.
    async fn scope_id(&self, admin: &str, scope: &str) -> Result<uuid::Uuid, ReconcileError> {
        let (status, body) = self
            .send(self.http.get(format!("{}/api/scopes", self.base)).bearer_auth(admin))
            .await?;
        let scopes: Vec<Value> = answer(Self::admin_outcome(status, body, "listing scopes")?, "listing scopes")?;
        let wanted = scope.trim().to_lowercase();
        scopes
            .iter()
            .find(|listed| listed["scope"].as_str() == Some(wanted.as_str()))
            .and_then(|listed| listed["id"].as_str())
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| setup(format!("warden has no {scope}")))
    }

    /// Every runner, newest first (a host's newest matching runner is the
    /// one used), following the pages.
    async fn list_runners(&self, admin: &str) -> Result<Vec<RunnerView>, ReconcileError> {
        let mut runners = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "1000".to_owned())];
            if let Some(cursor) = cursor.take() {
                query.push(("cursor", cursor));
            }
            let (status, body) = self
                .send(
                    self.http
                        .get(format!("{}/api/admins/runners", self.base))
                        .query(&query)
                        .bearer_auth(admin),
                )
                .await?;
            let page: Page<RunnerView> =
                answer(Self::admin_outcome(status, body, "listing runners")?, "listing runners")?;
            runners.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(runners),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_use_python_named_fields() {
        let template = "[[runners]]\nname = \"{hostname}-shell\"\ntoken = \"{shell}\"\nlabels = {{ a = 1 }}\n";
        assert_eq!(template_fields(template).unwrap(), ["hostname", "shell"]);
        let values = BTreeMap::from([
            ("hostname".to_owned(), "h1".to_owned()),
            ("shell".to_owned(), "wdrt_x".to_owned()),
        ]);
        assert_eq!(
            render(template, &values).unwrap(),
            "[[runners]]\nname = \"h1-shell\"\ntoken = \"wdrt_x\"\nlabels = { a = 1 }\n"
        );
        assert!(render("{missing}", &values).unwrap_err().contains("missing"));
        assert!(render("a } b", &values).is_err());
        assert!(render("{not valid}", &values).is_err());
    }

    #[test]
    fn exit_codes_say_what_to_fix() {
        assert_eq!(ReconcileError::Setup(String::new()).exit_code(), 2);
        assert_eq!(ReconcileError::Backend(String::new()).exit_code(), 3);
        assert_eq!(ReconcileError::AdminRefused(String::new()).exit_code(), 4);
    }
}

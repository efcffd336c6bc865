//! Secrets warden hands out or accepts: opaque bearer tokens and passwords.
//! Neither ever reaches the log, a read model or a log line in plain text.

pub mod passwords;
pub mod tokens;

/// A secret string whose `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

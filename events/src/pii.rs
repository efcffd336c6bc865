//! Personal data inside events.
//!
//! The log is immutable, yet a deleted user's personal data must become
//! unreadable. Every personal value is therefore wrapped in [`Pii`]: the
//! domain works with `Plain` values, the event store seals them with a key
//! that belongs to one subject (a user) before they reach the log, and
//! unseals them when reading. Destroying the subject's key turns every
//! sealed value of that subject into `Forgotten` for all later readers.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pii {
    /// Readable value; only ever in memory, never written to the log.
    Plain(String),
    /// base64(nonce || ciphertext) as stored in the log.
    Sealed(String),
    /// The subject's key was destroyed: the value cannot be recovered.
    Forgotten,
}

impl Pii {
    pub fn plain(value: impl Into<String>) -> Self {
        Pii::Plain(value.into())
    }

    /// The readable value, if there is one.
    pub fn as_plain(&self) -> Option<&str> {
        match self {
            Pii::Plain(value) => Some(value),
            _ => None,
        }
    }
}

// Debug output ends up in logs: never print the value itself.
impl fmt::Debug for Pii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pii::Plain(_) => f.write_str("Pii(<redacted>)"),
            Pii::Sealed(_) => f.write_str("Pii(<sealed>)"),
            Pii::Forgotten => f.write_str("Pii(<forgotten>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let shown = format!("{:?}", Pii::plain("alice@example.org"));
        assert!(!shown.contains("alice"), "{shown}");
    }

    #[test]
    fn serialises_with_an_explicit_state_tag() {
        let json = serde_json::to_value(Pii::Sealed("abc".into())).unwrap();
        assert_eq!(json, serde_json::json!({"sealed": "abc"}));
        let back: Pii = serde_json::from_value(serde_json::json!("forgotten")).unwrap();
        assert_eq!(back, Pii::Forgotten);
    }
}

//! Opaque bearer tokens (runner and API tokens): generation, hashing,
//! comparison.
//!
//! A token is `<prefix><43 chars of base64url>`: 256 random bits behind a
//! recognisable prefix so secret scanners can spot a leaked one. Only its
//! SHA-256 is stored; a slow hash buys nothing against 256 random bits.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of runner tokens ("warden runner token").
pub const RUNNER_TOKEN_PREFIX: &str = "wdrt_";
/// Prefix of users' long-lived API tokens ("warden API token").
pub const API_TOKEN_PREFIX: &str = "wdat_";
const RANDOM_BYTES: usize = 32;
const ENCODED_LEN: usize = 43;

/// A freshly generated token: `plain` is shown once, `hash` is stored.
pub struct GeneratedToken {
    pub plain: String,
    pub hash: String,
}

pub fn generate(prefix: &str) -> GeneratedToken {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plain = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&plain);
    GeneratedToken { plain, hash }
}

/// Hex SHA-256 of a token: the only form that is ever stored.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the shape of a token with `prefix` (cheap check
/// before any database work).
pub fn is_well_formed(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|body| {
        body.len() == ENCODED_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Constant-time equality of two stored hashes.
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_prefixed_unique_and_well_formed() {
        let a = generate(RUNNER_TOKEN_PREFIX);
        let b = generate(RUNNER_TOKEN_PREFIX);
        assert!(a.plain.starts_with("wdrt_"));
        assert_ne!(a.plain, b.plain);
        assert!(is_well_formed(&a.plain, RUNNER_TOKEN_PREFIX));
        assert_eq!(a.hash, hash(&a.plain));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.plain[5..]));
    }

    #[test]
    fn malformed_tokens_are_recognised() {
        let token = generate(RUNNER_TOKEN_PREFIX).plain;
        assert!(!is_well_formed(&token[..20], RUNNER_TOKEN_PREFIX));
        assert!(!is_well_formed(&token.replace("wdrt_", "glrt-"), RUNNER_TOKEN_PREFIX));
        assert!(!is_well_formed(&format!("{token}!"), RUNNER_TOKEN_PREFIX));
        assert!(!is_well_formed("eyJhbGciOiJIUzI1NiJ9.e30.sig", RUNNER_TOKEN_PREFIX));
    }

    #[test]
    fn hash_comparison() {
        let h = hash("wdrt_x");
        assert!(hashes_match(&h, &hash("wdrt_x")));
        assert!(!hashes_match(&h, &hash("wdrt_y")));
        assert!(!hashes_match(&h, "short"));
    }
}

//! Who is calling: access tokens for users, token checks for runners.

pub mod access_tokens;
pub mod signing_key;

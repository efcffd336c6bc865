//! Who someone is: local accounts, API tokens, the login throttle, LDAP
//! directories, OIDC providers, access tokens and their signing key. Uses
//! `platform`, `domain` and `log`.

pub mod access_tokens;
pub mod accounts;
pub mod api_tokens;
pub mod ldap;
pub mod oidc;
pub mod signing_key;
pub mod throttle;

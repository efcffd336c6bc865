//! Who someone is: local accounts, API tokens, the login throttle, LDAP
//! directories, OIDC providers, access tokens and their signing key. Uses
//! `platform`, `domain` and `log`.

pub mod access_tokens;
pub mod accounts;
pub mod api_tokens;
pub mod erasure;
pub mod ldap;
pub mod oidc;
pub mod throttle;

use crate::log::commands::CommandService;
use crate::platform::config::SecurityConfig;
use crate::platform::db::Database;

/// What the identity use cases work with. Built once by the composition
/// root (`app.rs`); the periodic LDAP sync is started only by `serve`.
pub struct Identity {
    pub db: Database,
    pub commands: CommandService,
    pub security: SecurityConfig,
    pub ldap: ldap::LdapProviders,
    pub oidc: oidc::OidcProviders,
    pub throttle: throttle::Throttle,
}

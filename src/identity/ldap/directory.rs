//! Talking to one LDAP directory (ldap3): service-account search, user
//! bind, admin check. Every value typed by a user goes into filters only
//! through `ldap_escape`; users bind with the DN the search returned, so no
//! DN is ever built from input.

use std::sync::Arc;

use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use crate::platform::config::{LdapProviderConfig, LdapQuery};

/// What warden needs of a directory user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The `uid_attribute` value.
    pub uid: String,
    pub email: String,
    pub admin: bool,
    /// The `scope_mappings` whose query returns this user, by their index
    /// in the provider's configuration.
    pub mappings: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Unknown user, ambiguous username, wrong or empty password: one
    /// answer for all, so logins do not reveal which.
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("the directory entry {dn} has no {attribute} attribute")]
    MissingAttribute { dn: String, attribute: String },
    #[error("LDAP directory unavailable: {0}")]
    Unavailable(String),
    #[error("the directory refused a query: {0}")]
    Query(String),
}

/// LDAP result code 49: invalid credentials.
const INVALID_CREDENTIALS: u32 = 49;

pub struct Directory {
    config: LdapProviderConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Directory {
    /// Reads the CA file once; fails on an unreadable or empty one.
    pub fn new(config: LdapProviderConfig) -> Result<Directory, String> {
        let tls = match &config.ca_file {
            None => None,
            Some(path) => Some(Arc::new(crate::platform::tls::client_config(Some(path))?)),
        };
        Ok(Directory { config, tls })
    }

    pub fn config(&self) -> &LdapProviderConfig {
        &self.config
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.timeout)
            .set_starttls(self.config.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(Arc::clone(tls));
        }
        let (connection, ldap) = LdapConnAsync::with_settings(settings, &self.config.server_address)
            .await
            .map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
        ldap3::drive!(connection);
        Ok(ldap)
    }

    /// A connection bound as the service account.
    async fn service_connection(&self) -> Result<Ldap, DirectoryError> {
        let mut ldap = self.connect().await?;
        let account = &self.config.service_account_auth;
        ldap.with_timeout(self.config.timeout)
            .simple_bind(&account.user, account.password.expose())
            .await
            .and_then(|result| result.success())
            .map_err(|e| DirectoryError::Unavailable(format!("service account bind failed: {e}")))?;
        Ok(ldap)
    }

    /// Checks `username` (any of `username_attributes`) and `password`.
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<DirectoryUser, DirectoryError> {
        // An empty password would be an "unauthenticated bind", which
        // servers accept without checking anything (RFC 4513 5.1.2).
        if username.trim().is_empty() || password.is_empty() {
            return Err(DirectoryError::InvalidCredentials);
        }
        let mut service = self.service_connection().await?;
        let entries = self.search_users(&mut service, Some(username.trim())).await?;
        let entry = match <[SearchEntry; 1]>::try_from(entries) {
            Ok([entry]) => entry,
            // None, or several (a username must name one person).
            Err(_) => {
                let _ = service.unbind().await;
                return Err(DirectoryError::InvalidCredentials);
            }
        };
        let mut user = self.directory_user(&entry)?;
        if let Some(query) = &self.config.admin_query {
            user.admin = self.returns(&mut service, query, &user.uid).await?;
        }
        for (index, mapping) in self.config.scope_mappings.iter().enumerate() {
            if self.returns(&mut service, &mapping.query, &user.uid).await? {
                user.mappings.push(index);
            }
        }
        let _ = service.unbind().await;

        let mut own = self.connect().await?;
        let bound = own
            .with_timeout(self.config.timeout)
            .simple_bind(&entry.dn, password)
            .await
            .map_err(|e| DirectoryError::Unavailable(e.to_string()))?;
        let _ = own.unbind().await;
        match bound.rc {
            0 => Ok(user),
            INVALID_CREDENTIALS => Err(DirectoryError::InvalidCredentials),
            _ => Err(DirectoryError::Query(bound.to_string())),
        }
    }

    /// Every user `user_query` returns, with their admin flag (for sync).
    pub async fn all_users(&self) -> Result<Vec<DirectoryUser>, DirectoryError> {
        let mut service = self.service_connection().await?;
        let entries = self.search_users(&mut service, None).await?;
        let admins = match &self.config.admin_query {
            Some(query) => self.uids_of(&mut service, query).await?,
            None => Default::default(),
        };
        let mut mapped = Vec::new();
        for mapping in &self.config.scope_mappings {
            mapped.push(self.uids_of(&mut service, &mapping.query).await?);
        }
        let _ = service.unbind().await;
        let mut users = Vec::new();
        for entry in &entries {
            match self.directory_user(entry) {
                Ok(mut user) => {
                    let uid = user.uid.to_lowercase();
                    user.admin = admins.contains(&uid);
                    user.mappings = (0..mapped.len()).filter(|n| mapped[*n].contains(&uid)).collect();
                    users.push(user);
                }
                Err(error) => tracing::warn!(%error, "skipping a directory entry in the sync"),
            }
        }
        Ok(users)
    }

    /// `user_query`, narrowed to entries whose username attributes equal
    /// `username` when given.
    async fn search_users(&self, ldap: &mut Ldap, username: Option<&str>) -> Result<Vec<SearchEntry>, DirectoryError> {
        let query = &self.config.user_query;
        let filter = match username {
            None => query.filter.trim().to_owned(),
            Some(username) => {
                let escaped = ldap_escape(username);
                let any_of: String = self
                    .config
                    .username_attributes
                    .iter()
                    .map(|attribute| format!("({attribute}={escaped})"))
                    .collect();
                format!("(&{}(|{any_of}))", query.filter.trim())
            }
        };
        let attributes = [self.config.uid_attribute.as_str(), self.config.mail_attribute.as_str()];
        let (entries, _) = ldap
            .with_timeout(self.config.timeout)
            .search(&query.base_dn, Scope::Subtree, &filter, attributes.to_vec())
            .await
            .and_then(|result| result.success())
            .map_err(|e| DirectoryError::Query(e.to_string()))?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// Whether `query` returns the user `uid`.
    async fn returns(&self, ldap: &mut Ldap, query: &LdapQuery, uid: &str) -> Result<bool, DirectoryError> {
        let filter = format!(
            "(&{}({}={}))",
            query.filter.trim(),
            self.config.uid_attribute,
            ldap_escape(uid)
        );
        let (entries, _) = ldap
            .with_timeout(self.config.timeout)
            .search(&query.base_dn, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|result| result.success())
            .map_err(|e| DirectoryError::Query(e.to_string()))?;
        Ok(!entries.is_empty())
    }

    /// The uids (lowercased) `query` returns.
    async fn uids_of(
        &self,
        ldap: &mut Ldap,
        query: &LdapQuery,
    ) -> Result<std::collections::HashSet<String>, DirectoryError> {
        let (entries, _) = ldap
            .with_timeout(self.config.timeout)
            .search(
                &query.base_dn,
                Scope::Subtree,
                query.filter.trim(),
                vec![self.config.uid_attribute.as_str()],
            )
            .await
            .and_then(|result| result.success())
            .map_err(|e| DirectoryError::Query(e.to_string()))?;
        Ok(entries
            .into_iter()
            .map(SearchEntry::construct)
            .filter_map(|entry| first(&entry, &self.config.uid_attribute))
            .map(|uid| uid.to_lowercase())
            .collect())
    }

    fn directory_user(&self, entry: &SearchEntry) -> Result<DirectoryUser, DirectoryError> {
        let missing = |attribute: &str| DirectoryError::MissingAttribute {
            dn: entry.dn.clone(),
            attribute: attribute.to_owned(),
        };
        Ok(DirectoryUser {
            uid: first(entry, &self.config.uid_attribute).ok_or_else(|| missing(&self.config.uid_attribute))?,
            email: first(entry, &self.config.mail_attribute).ok_or_else(|| missing(&self.config.mail_attribute))?,
            admin: false,
            mappings: Vec::new(),
        })
    }
}

/// An attribute's first value; attribute names compare case-insensitively.
fn first(entry: &SearchEntry, attribute: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attribute))
        .and_then(|(_, values)| values.first().cloned())
}

//! Checks of a loaded configuration beyond its types: ranges, names,
//! combinations, and LDAP and OIDC providers.

use super::*;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = self
            .security
            .secret_key
            .as_ref()
            .filter(|_| !self.is_unresolved("security.secret_key"))
        {
            if key.expose().len() < MIN_SECRET_KEY_LENGTH {
                return Err(field_error("security.secret_key", "must be at least 32 bytes long"));
            }
        }
        if self.security.access_token_lifetime < Duration::from_secs(60) {
            return Err(field_error("security.access_token_lifetime", "must be at least 1m"));
        }
        self.http
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| field_error("http.listen", format!("not an address like 127.0.0.1:8080 ({e})")))?;
        let throttle = &self.security.login_throttle;
        if throttle.max_failures_per_account == 0 || throttle.max_failures_per_address == 0 {
            return Err(field_error(
                "security.login_throttle",
                "the failure limits must be at least 1",
            ));
        }
        if throttle.window.is_zero() || throttle.lockout.is_zero() {
            return Err(field_error(
                "security.login_throttle",
                "window and lockout must be longer than 0s",
            ));
        }
        if throttle.lockout > Duration::from_secs(24 * 3600) {
            return Err(field_error(
                "security.login_throttle.lockout",
                "at most 24h: a lock-out must end, or an attacker could keep an admin out",
            ));
        }
        if throttle.slow_down_after == 0 || throttle.max_slow_down > Duration::from_secs(3600) {
            return Err(field_error(
                "security.login_throttle",
                "slow_down_after must be at least 1 and max_slow_down at most 1h",
            ));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(field_error("http.max_body_bytes", "must be at least 1024"));
        }
        let database = &self.database;
        for (field, value, least) in [
            (
                "database.statement_timeout",
                database.statement_timeout,
                Duration::from_millis(100),
            ),
            (
                "database.connect_timeout",
                database.connect_timeout,
                Duration::from_millis(100),
            ),
            (
                "database.pool_wait_timeout",
                database.pool_wait_timeout,
                Duration::from_millis(1),
            ),
            (
                "database.maintenance_timeout",
                database.maintenance_timeout,
                database.statement_timeout,
            ),
        ] {
            if value < least {
                return Err(field_error(
                    field,
                    format!("must be at least {}", humantime::format_duration(least)),
                ));
            }
        }
        let jobs = &self.jobs;
        if jobs.max_concurrent_uploads == 0 || jobs.max_user_bytes == 0 {
            return Err(field_error(
                "jobs",
                "max_concurrent_uploads and max_user_bytes must be at least 1",
            ));
        }
        if jobs.upload_idle_timeout.is_zero() || jobs.upload_deadline < jobs.upload_idle_timeout {
            return Err(field_error(
                "jobs.upload_deadline",
                "upload_idle_timeout must be longer than 0s, and upload_deadline at least as long",
            ));
        }
        let runners = &self.runners;
        if runners.retrieve_timeout.is_zero() {
            return Err(field_error("runners.retrieve_timeout", "must be longer than 0s"));
        }
        if runners.max_machines_per_token == 0 {
            return Err(field_error("runners.max_machines_per_token", "must be at least 1"));
        }
        if runners.rate_limit.per_second == 0 || runners.rate_limit.burst == 0 {
            return Err(field_error(
                "runners.rate_limit",
                "per_second and burst must be at least 1",
            ));
        }
        if runners.contact_record_interval.is_zero() || runners.prune_check_interval.is_zero() {
            return Err(field_error("runners", "intervals must be longer than 0s"));
        }
        if runners.native_silence_timeout <= runners.contact_record_interval {
            return Err(field_error(
                "runners.native_silence_timeout",
                "must be longer than runners.contact_record_interval, or machines at work would lose their jobs",
            ));
        }
        if runners.machine_retention <= runners.contact_record_interval {
            return Err(field_error(
                "runners.machine_retention",
                "must be longer than runners.contact_record_interval, or live machines would be pruned",
            ));
        }
        if self.database.max_connections < 4 {
            return Err(field_error("database.max_connections", "must be at least 4"));
        }
        for (name, ldap) in &self.ldap_providers {
            validate_ldap_provider(name, ldap)?;
        }
        for (name, oidc) in &self.oidc_providers {
            validate_provider_name("oidc_providers", name)?;
            let url = url::Url::parse(&oidc.base_url)
                .map_err(|e| field_error(format!("oidc_providers.{name}.base_url"), format!("not a URL ({e})")))?;
            if !matches!(url.scheme(), "https" | "http") {
                return Err(field_error(
                    format!("oidc_providers.{name}.base_url"),
                    "must be an http(s) URL",
                ));
            }
            if oidc.client_id.is_empty() {
                return Err(field_error(
                    format!("oidc_providers.{name}.client_id"),
                    "must not be empty",
                ));
            }
        }
        if let Some(public) = &self.http.public_url {
            let url =
                url::Url::parse(public).map_err(|e| field_error("http.public_url", format!("not a URL ({e})")))?;
            if !matches!(url.scheme(), "https" | "http") || url.path() != "/" {
                return Err(field_error(
                    "http.public_url",
                    "an http(s) URL without a path, e.g. https://warden.example.org",
                ));
            }
        }
        let mut emails = BTreeMap::new();
        for (id, user) in &self.security.local_account.user_provisioning {
            let field = format!("security.local_account.user_provisioning.{id}");
            crate::domain::user::validate_email(&user.email)
                .map_err(|e| field_error(format!("{field}.email"), e.to_string()))?;
            if !self.is_unresolved(&format!("{field}.password")) {
                passwords::check_policy(user.password.expose())
                    .map_err(|m| field_error(format!("{field}.password"), m))?;
            }
            let normalised = crate::domain::user::normalise_email(&user.email);
            if let Some(other) = emails.insert(normalised, id) {
                return Err(field_error(
                    format!("{field}.email"),
                    format!("the same email is already provisioned under id {other}"),
                ));
            }
        }
        Ok(())
    }
}

/// A provider's name appears in URLs and in user ids (`ldap:<name>`).
fn validate_provider_name(kind: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty() && name.len() <= 64 && !name.chars().any(|c| c.is_control() || c == '/' || c == ':');
    if valid {
        Ok(())
    } else {
        Err(field_error(
            format!("{kind}.{name}"),
            "a provider name must be 1 to 64 characters without '/', ':' or control characters",
        ))
    }
}

fn validate_ldap_provider(name: &str, ldap: &LdapProviderConfig) -> Result<(), ConfigError> {
    validate_provider_name("ldap_providers", name)?;
    let field = |f: &str| format!("ldap_providers.{name}.{f}");
    let url = url::Url::parse(&ldap.server_address)
        .map_err(|e| field_error(field("server_address"), format!("not a URL ({e})")))?;
    match url.scheme() {
        "ldap" => {}
        "ldaps" if ldap.starttls => {
            return Err(field_error(
                field("starttls"),
                "StartTLS is for ldap:// URLs; ldaps:// is TLS already",
            ))
        }
        "ldaps" => {}
        other => {
            return Err(field_error(
                field("server_address"),
                format!("scheme must be ldap or ldaps, not {other}"),
            ))
        }
    }
    if let Some(ca) = &ldap.ca_file {
        if !ca.is_file() {
            return Err(field_error(
                field("ca_file"),
                format!("{} is not a readable file", ca.display()),
            ));
        }
    }
    let attribute = |a: &str| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';');
    if ldap.username_attributes.is_empty() || !ldap.username_attributes.iter().all(|a| attribute(a)) {
        return Err(field_error(
            field("username_attributes"),
            "a list of one or more attribute names",
        ));
    }
    for (f, value) in [
        ("uid_attribute", &ldap.uid_attribute),
        ("mail_attribute", &ldap.mail_attribute),
    ] {
        if !attribute(value) {
            return Err(field_error(field(f), "an attribute name"));
        }
    }
    let mut queries = vec![
        ("user_query".to_owned(), Some(&ldap.user_query)),
        ("admin_query".to_owned(), ldap.admin_query.as_ref()),
    ];
    for (n, mapping) in ldap.scope_mappings.iter().enumerate() {
        match mapping.scope.parse::<crate::api::ScopeRef>() {
            Ok(crate::api::ScopeRef::Group(_) | crate::api::ScopeRef::Project(_)) => {}
            _ => {
                return Err(field_error(
                    field(&format!("scope_mappings[{n}].scope")),
                    "`group:<path>` or `project:<path>`",
                ))
            }
        }
        queries.push((format!("scope_mappings[{n}].query"), Some(&mapping.query)));
    }
    for (f, query) in queries {
        if let Some(query) = query {
            let filter = query.filter.trim();
            if !(filter.starts_with('(') && filter.ends_with(')'))
                || filter.matches('(').count() != filter.matches(')').count()
            {
                return Err(field_error(
                    format!("{}.filter", field(&f)),
                    "an LDAP filter in parentheses",
                ));
            }
        }
    }
    if ldap.timeout.is_zero() {
        return Err(field_error(field("timeout"), "must be longer than 0s"));
    }
    Ok(())
}

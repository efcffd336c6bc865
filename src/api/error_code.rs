//! The error catalogue: every `code` an error answer can carry, with its
//! HTTP status and what it means, in one place. Codes are stable API
//! (clients match on them); they serialise as the snake_case strings
//! listed here. The OpenAPI description exports them as the `ErrorCode`
//! schema, and `docs/errors.md` lists them (a test keeps it in line).

/// Declares [`ErrorCode`]: variant, HTTP status, wire string, and the doc
/// comment that becomes its description. Two variants may share a wire
/// string when the same code means the same to clients in two places
/// that answer with different statuses.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $status:literal, $code:literal;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])+ $variant,)*
        }

        impl ErrorCode {
            /// Every code, in catalogue order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The string clients see in `{"code": ...}`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status of answers with this code.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// What the code means, for the docs and the OpenAPI description.
            pub fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($($doc),+).trim_start(),)*
                }
            }
        }
    };
}

error_codes! {
    // Requests that are malformed as HTTP.
    /// The request could not be read (a generic client error).
    BadRequest = 400, "bad_request";
    /// The request is malformed in a way no more specific code covers.
    MalformedRequest = 400, "malformed_request";
    /// The body is not valid JSON.
    MalformedJson = 400, "malformed_json";
    /// A query parameter is missing, unknown or out of its range.
    InvalidQuery = 400, "invalid_query";
    /// A path parameter is malformed (e.g. not a UUID).
    InvalidPath = 400, "invalid_path";
    /// The paging cursor was not one this API returned.
    InvalidCursor = 400, "invalid_cursor";
    /// No such API route.
    NotFound = 404, "not_found";
    /// The path exists but not with this HTTP method; `Allow` lists the methods it takes.
    MethodNotAllowed = 405, "method_not_allowed";
    /// The body is larger than this route accepts.
    PayloadTooLarge = 413, "payload_too_large";
    /// The body's Content-Type is not the one this route takes.
    UnsupportedMediaType = 415, "unsupported_media_type";
    /// The request headers are too large.
    HeadersTooLarge = 431, "headers_too_large";

    // Fields with wrong values.
    /// A JSON field is missing or has the wrong type or value.
    InvalidField = 422, "invalid_field";
    /// A form field is missing or malformed.
    InvalidForm = 422, "invalid_form";
    /// Not a valid email address.
    InvalidEmail = 422, "invalid_email";
    /// A priority outside -1000..=1000.
    InvalidPriority = 422, "invalid_priority";
    /// Job progress outside its range.
    InvalidProgress = 422, "invalid_progress";
    /// A runner machine's system_id is empty, too long or has other characters than A-Z a-z 0-9 - _ . :
    InvalidSystemId = 422, "invalid_system_id";
    /// A tag is empty, too long or has characters other than a-z 0-9 - _ . : /
    InvalidTag = 422, "invalid_tag";
    /// More tags than allowed.
    TooManyTags = 422, "too_many_tags";
    /// A description, reason or machine field is too long.
    TextTooLong = 422, "text_too_long";
    /// A text field holds a character it may not (NUL).
    InvalidText = 422, "invalid_text";
    /// A time or number is beyond what warden stores (e.g. the year -100000).
    ValueOutOfRange = 422, "value_out_of_range";
    /// An API token name must be 1 to 100 printable characters.
    InvalidTokenName = 422, "invalid_token_name";
    /// The role is not one of user, support, admin, api (or, in a scope, member, manager).
    InvalidRole = 422, "invalid_role";
    /// `runner_id` is neither a runner's UUID nor its number.
    InvalidRunnerId = 400, "invalid_runner_id";
    /// `grace_period` is not a duration like `10m`.
    MalformedGracePeriod = 400, "invalid_grace_period";
    /// `grace_period` is longer than `runners.max_token_grace`.
    InvalidGracePeriod = 422, "invalid_grace_period";
    /// The runner machine did not say which machine it is (system_id).
    MissingSystemId = 422, "missing_system_id";

    // Authentication.
    /// No credential was sent.
    MissingToken = 401, "missing_token";
    /// The Authorization header is not `Bearer <token>`.
    InvalidAuthorizationHeader = 401, "invalid_authorization_header";
    /// The access token is not valid.
    InvalidToken = 401, "invalid_token";
    /// The access token (or ID token) has expired; log in again.
    TokenExpired = 401, "token_expired";
    /// The token was issued before a log-out or password change.
    SessionRevoked = 401, "session_revoked";
    /// The user of this token no longer exists.
    UserOfTokenGone = 401, "user_not_found";
    /// Not a live API token.
    InvalidApiToken = 401, "invalid_api_token";
    /// A runner token was sent to a user route.
    RunnerTokenNotAccepted = 401, "runner_token_not_accepted";
    /// A user token was sent to a runner route.
    UserTokenNotAccepted = 401, "user_token_not_accepted";
    /// Not a valid runner token.
    InvalidRunnerToken = 401, "invalid_runner_token";
    /// The runner of this token has been invalidated.
    RunnerInvalidated = 401, "runner_invalidated";
    /// Wrong username or password.
    InvalidCredentials = 401, "invalid_credentials";
    /// The LDAP user is not synchronised into warden yet (and sync on login is off).
    UserNotSynced = 401, "user_not_synced";
    /// The OIDC provider refused the login or sent an invalid ID token.
    OidcLoginFailed = 401, "oidc_login_failed";

    // Authorisation.
    /// This call needs an access token issued with scope=admin to an admin.
    AdminScopeRequired = 403, "admin_scope_required";
    /// This view needs an admin-scoped token of an admin, or the support role.
    AdminReadRequired = 403, "admin_read_required";
    /// scope=admin was asked for by a user who is not an admin.
    AdminScopeDenied = 403, "admin_scope_denied";
    /// Local accounts are disabled on this server.
    LocalLoginDisabled = 403, "local_login_disabled";
    /// Self sign-up is disabled on this server.
    SignupDisabled = 403, "signup_disabled";
    /// A cookie-authenticated change came from another site's page (CSRF).
    CrossSiteRequest = 403, "cross_site_request";
    /// The OIDC provider does not give this user the role warden requires.
    RoleMissing = 403, "role_missing";
    /// This call needs a log-in's token (access token, session cookie), not an API token.
    LoginRequired = 403, "login_required";

    // Logins.
    /// Too many failed logins; see Retry-After.
    TooManyLoginAttempts = 429, "too_many_login_attempts";
    /// Only grant_type=password is supported.
    UnsupportedGrantType = 422, "unsupported_grant_type";
    /// An unknown scope was asked for; only `admin` exists.
    UnknownScope = 422, "unknown_scope";
    /// No LDAP or OIDC provider of this name.
    UnknownProvider = 404, "unknown_provider";
    /// The OIDC login state is unknown, expired, used, or from another browser.
    InvalidState = 400, "invalid_state";
    /// The OIDC provider sent no usable email claim.
    NoEmail = 422, "no_email";
    /// The OIDC provider does not say the user's email is verified.
    EmailNotVerified = 403, "email_not_verified";
    /// The current password is not right.
    WrongPassword = 422, "wrong_password";
    /// The password is too short or too long.
    WeakPassword = 422, "weak_password";
    /// A new account needs a password.
    PasswordRequired = 422, "password_required";

    // Users.
    /// No such user.
    UserNotFound = 404, "user_not_found";
    /// A user with this id already exists.
    UserExists = 409, "user_exists";
    /// An account with this email already exists.
    EmailTaken = 409, "email_taken";
    /// Another stream already holds this unique value.
    AlreadyTaken = 409, "already_taken";
    /// This user has been deleted.
    UserDeleted = 410, "user_deleted";
    /// The change would leave warden without an admin.
    LastAdmin = 409, "last_admin";
    /// The password or role of this user is kept by its directory or provider.
    ManagedExternally = 422, "managed_externally";
    /// A local account is not synchronised from outside.
    NotExternal = 422, "not_external";
    /// No such live API token of this user.
    ApiTokenNotFound = 404, "api_token_not_found";
    /// The user has the most API tokens allowed; revoke one first.
    TooManyApiTokens = 409, "too_many_api_tokens";

    // Groups and projects.
    /// `scope` is not `instance`, `group:<path>` or `project:<path>`, or a name is not 1 to 64 of a-z 0-9 _ . - (starting with a letter or digit).
    InvalidScope = 422, "invalid_scope";
    /// No such group or project (or none the caller may see).
    ScopeNotFound = 404, "scope_not_found";
    /// A group or project of this name already exists in the same place.
    ScopeExists = 409, "scope_exists";
    /// A scope cannot be moved into itself or a group below it.
    ScopeLoop = 409, "scope_loop";
    /// The group or project is archived: no new runners, jobs or members.
    ScopeArchived = 409, "scope_archived";
    /// This call needs the manager role in the scope (or above), or an admin-scoped token.
    ManagerRequired = 403, "manager_required";
    /// Submitting to this scope needs membership in it (or above).
    MembershipRequired = 403, "membership_required";
    /// The scope has as many active runners as it may (`scopes.runner_limit`, or the scope's own limit).
    RunnerLimitReached = 409, "runner_limit_reached";
    /// A service account (role `api`) cannot log in; it acts with API tokens only.
    ServiceAccountCannotLogIn = 403, "service_account_cannot_log_in";

    // Runners, machines, jobs.
    /// This runner token has the most machines allowed (`runners.max_machines_per_token`).
    TooManyMachines = 409, "too_many_machines";
    /// No such runner.
    RunnerNotFound = 404, "runner_not_found";
    /// A runner with this id already exists.
    RunnerExists = 409, "runner_exists";
    /// The runner has already been invalidated.
    RunnerAlreadyInvalidated = 409, "runner_already_invalidated";
    /// Too many requests for this runner token; see Retry-After.
    RateLimited = 429, "rate_limited";
    /// The runner machine is not registered (any more); register first.
    MachineNotRegistered = 409, "machine_not_registered";
    /// No such job.
    JobNotFound = 404, "job_not_found";
    /// A job with this id already exists.
    JobExists = 409, "job_exists";
    /// The job is not waiting in the queue.
    JobNotQueued = 409, "job_not_queued";
    /// The job is not assigned to this runner machine (any more).
    JobNotAssignedToMachine = 409, "job_not_assigned_to_machine";
    /// The job has already finished.
    JobAlreadyFinished = 409, "job_already_finished";
    /// No job is assigned to this runner machine.
    NoJobAssigned = 400, "no_job_assigned";
    /// The job was aborted (its submitter cancelled it); report the result with an error message.
    JobAborted = 405, "job_aborted";
    /// No open session of this runner has this session token (closed, expired or never opened); register again.
    InvalidSession = 403, "invalid_session";
    /// No such file, or not yours.
    FileNotFound = 404, "file_not_found";
    /// A job that is not finished uses this file as its input.
    FileInUse = 409, "file_in_use";
    /// The user has the most uploads in progress allowed (`jobs.max_concurrent_uploads`); see Retry-After.
    TooManyUploads = 429, "too_many_uploads";
    /// The user's files would take more than `jobs.max_user_bytes`; delete some first.
    StorageQuotaExceeded = 413, "storage_quota_exceeded";
    /// The upload sent nothing for `jobs.upload_idle_timeout`, or took longer than `jobs.upload_deadline`.
    UploadTimedOut = 408, "upload_timed_out";
    /// A result names a file that was not stored for this job by this runner machine.
    ForeignFileReference = 422, "foreign_file_reference";
    /// The job has no result in this format (yet).
    ResultNotFound = 404, "result_not_found";

    // The server and what it depends on.
    /// The same object was changed concurrently too often; try again.
    ConcurrentModification = 409, "concurrent_modification";
    /// This object has a change recorded by a newer release of warden (a rolling upgrade); an instance of that release can act on it.
    WrittenByNewerRelease = 503, "written_by_newer_release";
    /// The database is unavailable; try again.
    DatabaseUnavailable = 503, "database_unavailable";
    /// The LDAP directory could not be reached or refused the query.
    LdapUnavailable = 503, "ldap_unavailable";
    /// The OIDC provider could not be reached.
    OidcUnavailable = 503, "oidc_unavailable";
    /// Our fault; the server log has the details.
    InternalError = 500, "internal_error";
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Lets tests and callers compare a code with its wire string.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl ErrorCode {
    /// The catalogue as a Markdown table (docs/errors.md).
    pub fn markdown_table() -> String {
        let mut table = String::from("| code | status | meaning |\n| --- | ---: | --- |\n");
        for code in ErrorCode::ALL {
            table.push_str(&format!(
                "| `{}` | {} | {} |\n",
                code.as_str(),
                code.status(),
                code.description()
            ));
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_wire_string_keeps_one_meaning_per_status() {
        for a in ErrorCode::ALL {
            for b in ErrorCode::ALL {
                if a != b && a.as_str() == b.as_str() {
                    assert_ne!(a.status(), b.status(), "{a:?} and {b:?} duplicate each other");
                }
            }
            assert!(a.as_str().bytes().all(|c| c.is_ascii_lowercase() || c == b'_'), "{a:?}");
            assert!(!a.description().is_empty(), "{a:?}");
            assert!((400..600).contains(&a.status()), "{a:?}");
        }
    }

    /// docs/errors.md lists the catalogue; `UPDATE_DOCS=1 cargo test`
    /// rewrites it.
    #[test]
    fn the_docs_list_every_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/errors.md");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let table = ErrorCode::markdown_table();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            let start = text.find("| code |").unwrap_or(text.len());
            let end = text[start..].find("\n\n").map_or(text.len(), |i| start + i + 1);
            let updated = format!("{}{}{}", &text[..start], table, &text[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert!(
            text.contains(&table),
            "docs/errors.md is out of date: run `UPDATE_DOCS=1 cargo test --lib the_docs_list_every_code`"
        );
    }
}

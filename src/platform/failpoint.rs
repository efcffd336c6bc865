//! Named failpoints for crash tests. Inert unless the environment variable
//! `WARDEN_FAILPOINT` names one; then the process announces it on its log
//! and stops there, so a test can kill it at exactly that point.

/// Stops here forever when `WARDEN_FAILPOINT` is `name`.
pub async fn pause_if_armed(name: &str) {
    if std::env::var("WARDEN_FAILPOINT").as_deref() == Ok(name) {
        tracing::warn!(failpoint = name, "failpoint reached; pausing until killed");
        std::future::pending::<()>().await;
    }
}

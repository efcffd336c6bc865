//! TLS client settings (rustls with the ring provider) for warden's own
//! outgoing connections: PostgreSQL and LDAP. Certificates are always
//! verified, host name included.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Trusting the CA certificates in `ca_file` (PEM), or the system's trust
/// store without one. Fails on an unreadable file or one without a
/// certificate.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let roots = match ca_file {
        Some(path) => roots_from_file(path)?,
        None => system_roots().as_ref().clone(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
        let certificate = certificate.map_err(|e| format!("{}: {e}", path.display()))?;
        roots.add(certificate).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(roots)
}

/// The system's trust store, read once (an unreadable one is empty: every
/// TLS connection then fails verification, never silently skips it).
fn system_roots() -> &'static Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "reading the system's CA certificates");
        }
        roots.add_parsable_certificates(found.certs);
        Arc::new(roots)
    })
}

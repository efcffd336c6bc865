//! A real OpenLDAP `slapd` for the LDAP tests, on a private loopback port,
//! with the directory in tests/ldap/ (loaded with `ldapadd`, so overlays
//! such as memberof see it). Stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVICE_DN: &str = "cn=warden-service,ou=services,dc=example,dc=org";
pub const SERVICE_PASSWORD: &str = "service-password-for-tests";
const ROOT_DN: &str = "cn=root,dc=example,dc=org";
const ROOT_PASSWORD: &str = "root-secret-for-tests";

pub struct LdapServer {
    pub url: String,
    /// `ldaps://` URL when started with TLS.
    pub tls_url: Option<String>,
    /// The CA that signed the server certificate (PEM), with TLS.
    pub ca_file: Option<PathBuf>,
    child: Child,
    _dir: tempfile::TempDir,
}

fn slapd() -> PathBuf {
    ["/usr/sbin/slapd", "/usr/local/sbin/slapd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("slapd is not installed (.ci/install-deps installs slapd and ldap-utils)")
}

fn shipped(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ldap").join(file)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate for 127.0.0.1 it signed, made with the
/// `openssl` command line in `dir`; returns the slapd TLS lines.
fn make_certificates(dir: &std::path::Path) -> String {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed for the LDAP TLS test");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=warden test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let path = |f: &str| dir.join(f).display().to_string();
    format!(
        "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}",
        path("ca.pem"),
        path("server.pem"),
        path("server.key")
    )
}

impl LdapServer {
    pub fn start() -> LdapServer {
        Self::start_inner(false)
    }

    /// Also serves `ldaps://` (and StartTLS on `ldap://`) with a
    /// certificate from a fresh test CA.
    pub fn start_with_tls() -> LdapServer {
        Self::start_inner(true)
    }

    /// Starts slapd and loads the directory. A free port can be taken by
    /// another test's server between choosing it and binding it (slapd then
    /// fails, or the load reaches the other server): start afresh.
    fn start_inner(tls: bool) -> LdapServer {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(tls) {
                Ok(server) => return server,
                Err(error) => failures.push(error),
            }
        }
        panic!("slapd did not start: {failures:?}");
    }

    fn try_start(tls: bool) -> Result<LdapServer, String> {
        let dir = tempfile::Builder::new().prefix("warden-slapd-").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let tls_lines = if tls {
            make_certificates(dir.path())
        } else {
            String::new()
        };
        let template = std::fs::read_to_string(shipped("slapd.conf.in")).unwrap();
        let config = dir.path().join("slapd.conf");
        std::fs::write(
            &config,
            template
                .replace("@TLS@", &tls_lines)
                .replace("@DIR@", &dir.path().display().to_string()),
        )
        .unwrap();
        let port = free_port();
        let url = format!("ldap://127.0.0.1:{port}");
        let tls_port = tls.then(free_port);
        let tls_url = tls_port.map(|p| format!("ldaps://127.0.0.1:{p}"));
        let listen = match &tls_url {
            Some(tls_url) => format!("{url}/ {tls_url}/"),
            None => format!("{url}/"),
        };
        // -d keeps slapd in the foreground, so it is our child to stop.
        let child = Command::new(slapd())
            .args(["-f", config.to_str().unwrap(), "-h", &listen, "-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slapd");
        let ca_file = tls.then(|| dir.path().join("ca.pem"));
        let server = LdapServer {
            url,
            tls_url,
            ca_file,
            child,
            _dir: dir,
        };
        server.wait_until_listening(port);
        if let Some(tls_port) = tls_port {
            server.wait_until_listening(tls_port);
        }
        server.try_ldap_tool("ldapadd", &["-f", shipped("directory.ldif").to_str().unwrap()])?;
        Ok(server)
    }

    fn wait_until_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "slapd did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs an ldap-utils tool as the directory's root.
    fn ldap_tool(&self, tool: &str, args: &[&str]) {
        if let Err(error) = self.try_ldap_tool(tool, args) {
            panic!("{error}");
        }
    }

    fn try_ldap_tool(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let output = Command::new(tool)
            .args(["-x", "-H", &self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool} (ldap-utils) not runnable: {e}"));
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{tool} failed: {}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// Changes the directory as its root, from LDIF.
    pub fn modify(&self, ldif: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ldif).unwrap();
        self.ldap_tool("ldapmodify", &["-f", file.path().to_str().unwrap()]);
    }

    pub fn delete(&self, dn: &str) {
        self.ldap_tool("ldapdelete", &[dn]);
    }
}

impl Drop for LdapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Opening a connection with a deadline for every step, host by host.
//!
//! tokio-postgres' own `connect` bounds only the TCP connect
//! (`connect_timeout`), then runs TLS, start-up, authentication and the
//! `target_session_attrs` check without a deadline, and tries the hosts of
//! a multi-host URL strictly one after the other: a first host that
//! accepts TCP but answers nothing (frozen, SIGSTOPped) holds the attempt
//! until a caller gives up, and the other hosts are never tried. Here:
//! - each host's attempt (resolve, connect, TLS, start-up, the read-write
//!   check) has one deadline, `per_host`;
//! - hosts are tried in the URL's order, but when one has not answered
//!   within [`STAGGER`] the next one is started beside it (and at once
//!   when one fails), so a hung host costs the others only that delay;
//!   the first host that qualifies wins, the other attempts are dropped;
//! - every connection's socket is [`Watched`]: once open, a connection
//!   that owes an answer and hears nothing for `answer_within` fails.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{Host, SslMode, TargetSessionAttrs};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Config, Connection};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::answer_deadline::{OnSilence, Watched};

/// How long an attempt on one host runs alone before the next host is
/// tried beside it.
pub const STAGGER: Duration = Duration::from_millis(250);

/// Deadlines of a connection.
#[derive(Clone)]
pub struct Deadlines {
    /// Resolving, connecting, TLS, start-up and the read-write check of
    /// one host.
    pub per_host: Duration,
    /// How long an open connection may stay silent while it owes an
    /// answer.
    pub answer_within: Duration,
}

/// A socket to PostgreSQL (TCP or unix), watched for silence.
pub type Socket = Watched<RawSocket>;
/// A connection's driver (spawn it or poll it).
pub type PgConnection = Connection<Socket, Watched<TlsOf<Socket>>>;
type TlsOf<S> = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;

/// A TCP or unix socket.
pub enum RawSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// rustls for warden's connections, with the TLS stream watched for
/// silence like the socket under it (see `answer_deadline`).
#[derive(Clone)]
pub struct PostgresTls {
    rustls: MakeRustlsConnect,
    answer_within: Duration,
    on_silence: Option<OnSilence>,
}

impl PostgresTls {
    pub fn new(rustls: MakeRustlsConnect) -> Self {
        PostgresTls {
            rustls,
            answer_within: Duration::from_secs(3600),
            on_silence: None,
        }
    }

    fn watching(&self, deadlines: &Deadlines, on_silence: Option<OnSilence>) -> Self {
        PostgresTls {
            rustls: self.rustls.clone(),
            answer_within: deadlines.answer_within,
            on_silence,
        }
    }
}

/// A TLS connector for one connection (what [`PostgresTls`] makes).
pub struct WatchedTlsConnect<C> {
    inner: C,
    answer_within: Duration,
    on_silence: Option<OnSilence>,
}

impl<S> MakeTlsConnect<S> for PostgresTls
where
    MakeRustlsConnect: MakeTlsConnect<S>,
    <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect: Send + 'static,
    <<MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect as TlsConnect<S>>::Future: Send + 'static,
    S: Send + 'static,
{
    type Stream = Watched<<MakeRustlsConnect as MakeTlsConnect<S>>::Stream>;
    type TlsConnect = WatchedTlsConnect<<MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect>;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        // A unix socket has no host name; TLS never starts there, so any
        // valid name serves.
        let domain = if domain.is_empty() { "localhost" } else { domain };
        Ok(WatchedTlsConnect {
            inner: self.rustls.make_tls_connect(domain)?,
            answer_within: self.answer_within,
            on_silence: self.on_silence.clone(),
        })
    }
}

impl<S, C> TlsConnect<S> for WatchedTlsConnect<C>
where
    C: TlsConnect<S> + Send + 'static,
    C::Future: Send + 'static,
    S: Send + 'static,
{
    type Stream = Watched<C::Stream>;
    type Error = C::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Stream, C::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let WatchedTlsConnect {
            inner,
            answer_within,
            on_silence,
        } = self;
        Box::pin(async move {
            let stream = inner.connect(stream).await?;
            Ok(Watched::new(stream, answer_within, on_silence))
        })
    }
}

impl<S: TlsStream + Unpin> TlsStream for Watched<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.get_ref().channel_binding()
    }
}

/// One place to try: a host (or its `hostaddr`) and port.
#[derive(Clone, Debug)]
enum Target {
    Tcp {
        host: String,
        address: Option<IpAddr>,
        port: u16,
    },
    Unix {
        dir: PathBuf,
        port: u16,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { host, port, .. } => write!(f, "{host}:{port}"),
            Target::Unix { dir, port } => write!(f, "{}/.s.PGSQL.{port}", dir.display()),
        }
    }
}

fn targets(config: &Config) -> Vec<Target> {
    let hosts = config.get_hosts();
    let addresses = config.get_hostaddrs();
    let count = hosts.len().max(addresses.len());
    let ports = config.get_ports();
    let mut targets: Vec<Target> = (0..count)
        .map(|i| {
            let port = ports.get(i).or_else(|| ports.first()).copied().unwrap_or(5432);
            match (hosts.get(i), addresses.get(i)) {
                (Some(Host::Unix(dir)), _) => Target::Unix { dir: dir.clone(), port },
                (Some(Host::Tcp(host)), address) => Target::Tcp {
                    host: host.clone(),
                    address: address.copied(),
                    port,
                },
                (None, Some(address)) => Target::Tcp {
                    host: address.to_string(),
                    address: Some(*address),
                    port,
                },
                (None, None) => unreachable!("count is the longer list's length"),
            }
        })
        .collect();
    if config.get_load_balance_hosts() == tokio_postgres::config::LoadBalanceHosts::Random {
        use rand::seq::SliceRandom;
        targets.shuffle(&mut rand::thread_rng());
    }
    targets
}

/// How soon a host that answered but did not serve (a standby, a server
/// starting up or refusing connections) is asked again within the same
/// attempt: during a failover or a restart it may serve any moment.
pub const RETRY_STANDBY: Duration = Duration::from_millis(300);

/// Connects to the first host of `config` that answers in time and
/// qualifies (`target_session_attrs`), trying the hosts as the module
/// says. With several hosts, one that answers quickly but does not serve
/// (a standby, a server starting up, a refused connection) is asked again
/// every [`RETRY_STANDBY`] until the attempt's deadline, so that an
/// attempt that began just before a promotion or a restart ends with the
/// server that serves then. The error names every host and why it did not
/// serve.
pub async fn connect(
    config: &Config,
    tls: &PostgresTls,
    deadlines: &Deadlines,
    on_silence: Option<OnSilence>,
) -> Result<(Client, PgConnection), tokio_postgres::Error> {
    use tokio::time::Instant;
    let targets = targets(config);
    if targets.is_empty() {
        return Err(postgres_error(io::ErrorKind::InvalidInput, "the database URL names no host".into()).await);
    }
    let several = targets.len() > 1;
    let tls = tls.watching(deadlines, on_silence.clone());
    let give_up = Instant::now() + deadlines.per_host + STAGGER * (targets.len() as u32 - 1);
    let mut attempts = FuturesUnordered::new();
    let mut fresh: std::collections::VecDeque<usize> = (0..targets.len()).collect();
    let mut again: Vec<(Instant, usize)> = Vec::new();
    let mut next_fresh = Instant::now();
    let mut failures: Vec<Option<tokio_postgres::Error>> = targets.iter().map(|_| None).collect();
    loop {
        let now = Instant::now();
        if !fresh.is_empty() && (attempts.is_empty() || now >= next_fresh) {
            let index = fresh.pop_front().expect("not empty");
            attempts.push(attempt(
                config,
                index,
                &targets[index],
                &tls,
                deadlines,
                &on_silence,
                None,
            ));
            next_fresh = now + STAGGER;
        }
        while let Some(position) = again.iter().position(|(due, _)| *due <= now) {
            let (_, index) = again.swap_remove(position);
            // A repeated attempt ends with the whole one.
            attempts.push(attempt(
                config,
                index,
                &targets[index],
                &tls,
                deadlines,
                &on_silence,
                Some(give_up),
            ));
        }
        if attempts.is_empty() && fresh.is_empty() && again.is_empty() {
            break;
        }
        let wake = again
            .iter()
            .map(|(due, _)| *due)
            .chain((!fresh.is_empty()).then_some(next_fresh))
            .min()
            .unwrap_or(give_up);
        tokio::select! {
            Some((index, outcome)) = attempts.next() => match outcome {
                Ok(connected) => return Ok(connected),
                Err(failure) => {
                    let retry_at = Instant::now() + RETRY_STANDBY;
                    if several && failure.worth_again && retry_at < give_up {
                        again.push((retry_at, index));
                    }
                    failures[index] = Some(failure.error);
                    // The next host at once: this one has answered.
                    next_fresh = Instant::now();
                }
            },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    let mut failures: Vec<(Target, tokio_postgres::Error)> = targets
        .into_iter()
        .zip(failures)
        .filter_map(|(target, error)| Some((target, error?)))
        .collect();
    if !several {
        let (_, error) = failures.pop().expect("the one attempt failed");
        return Err(error);
    }
    let reasons: Vec<String> = failures
        .iter()
        .map(|(target, error)| format!("{target}: {}", describe(error)))
        .collect();
    let summary = format!("no host of the database URL served: {}", reasons.join("; "));
    tracing::warn!("{summary}");
    Err(postgres_error(io::ErrorKind::NotConnected, summary).await)
}

/// Why one host's attempt failed.
struct AttemptFailure {
    error: tokio_postgres::Error,
    /// It answered at once but did not serve for a reason that may pass
    /// in a moment (not for a timeout, a wrong password or database).
    worth_again: bool,
}

/// Whether a failed attempt may serve if asked again soon: a standby, a
/// server starting up or shutting down (SQLSTATE classes 08 and 57), a
/// refused or broken connection.
fn passing(failure: &ConnectFailure) -> bool {
    match failure {
        ConnectFailure::NotWritable(_) | ConnectFailure::Io(_) => true,
        ConnectFailure::Postgres(error) => match error.code() {
            Some(code) => matches!(&code.code()[..2], "08" | "57"),
            None => true,
        },
    }
}

fn attempt<'a>(
    config: &'a Config,
    index: usize,
    target: &Target,
    tls: &PostgresTls,
    deadlines: &Deadlines,
    on_silence: &Option<OnSilence>,
    until: Option<tokio::time::Instant>,
) -> impl std::future::Future<Output = (usize, Result<(Client, PgConnection), AttemptFailure>)> + 'a {
    let (target, tls, mut deadlines, on_silence) = (target.clone(), tls.clone(), deadlines.clone(), on_silence.clone());
    if let Some(until) = until {
        deadlines.per_host = deadlines
            .per_host
            .min(until.saturating_duration_since(tokio::time::Instant::now()));
    }
    async move { (index, attempt_host(config, target, tls, deadlines, on_silence).await) }
}

/// An error with its whole chain of causes (tokio-postgres keeps the
/// useful part, e.g. which host timed out, in the cause).
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// One host: everything up to a usable connection, within `per_host`.
async fn attempt_host(
    config: &Config,
    target: Target,
    tls: PostgresTls,
    deadlines: Deadlines,
    on_silence: Option<OnSilence>,
) -> Result<(Client, PgConnection), AttemptFailure> {
    let per_host = deadlines.per_host;
    let work = async {
        let (socket, host_name) = open_socket(config, &target).await?;
        let socket = Watched::new(socket, deadlines.answer_within, on_silence);
        let mut config = config.clone();
        let mut tls = tls;
        if matches!(target, Target::Unix { .. }) {
            // PostgreSQL never speaks TLS on a unix socket.
            config.ssl_mode(SslMode::Disable);
        }
        let connector = MakeTlsConnect::<Socket>::make_tls_connect(&mut tls, &host_name)
            .map_err(|error| ConnectFailure::Io(io::Error::other(error.to_string())))?;
        let (client, mut connection) = config
            .connect_raw(socket, connector)
            .await
            .map_err(ConnectFailure::Postgres)?;
        let wanted = config.get_target_session_attrs();
        if wanted != TargetSessionAttrs::Any {
            // The connection must be driven while the check runs.
            let check = client.simple_query("SHOW transaction_read_only");
            tokio::pin!(check);
            let rows = loop {
                tokio::select! {
                    rows = &mut check => break rows.map_err(ConnectFailure::Postgres)?,
                    message = futures_util::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return Err(ConnectFailure::Postgres(error)),
                        None => return Err(ConnectFailure::Io(io::Error::from(io::ErrorKind::ConnectionReset))),
                    },
                }
            };
            let read_only = rows.iter().find_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|value| value == "on"),
                _ => None,
            });
            let refused = match wanted {
                TargetSessionAttrs::ReadWrite => read_only != Some(false),
                _ => read_only != Some(true),
            };
            if refused {
                let why = if wanted == TargetSessionAttrs::ReadWrite {
                    "it does not accept writes (a standby, or read-only)"
                } else {
                    "it accepts writes (target_session_attrs=read-only)"
                };
                return Err(ConnectFailure::NotWritable(why));
            }
        }
        Ok((client, connection))
    };
    let failed = |error, worth_again| AttemptFailure { error, worth_again };
    match tokio::time::timeout(per_host, work).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(failure)) => {
            let again = passing(&failure);
            let error = match failure {
                ConnectFailure::Postgres(error) => error,
                ConnectFailure::Io(error) => postgres_error(error.kind(), error.to_string()).await,
                ConnectFailure::NotWritable(why) => {
                    postgres_error(io::ErrorKind::PermissionDenied, why.to_owned()).await
                }
            };
            Err(failed(error, again))
        }
        Err(_) => Err(failed(
            postgres_error(
                io::ErrorKind::TimedOut,
                format!("no usable answer within {per_host:?} (connect, TLS, start-up and the read-write check)"),
            )
            .await,
            false,
        )),
    }
}

enum ConnectFailure {
    Postgres(tokio_postgres::Error),
    Io(io::Error),
    /// It answered, and does not qualify (`target_session_attrs`).
    NotWritable(&'static str),
}

/// The socket to `target` with the URL's TCP settings (no delay,
/// keepalives, `tcp_user_timeout`), and the host name for TLS.
async fn open_socket(config: &Config, target: &Target) -> Result<(RawSocket, String), ConnectFailure> {
    match target {
        Target::Unix { dir, port } => {
            let socket = UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                .await
                .map_err(ConnectFailure::Io)?;
            Ok((RawSocket::Unix(socket), String::new()))
        }
        Target::Tcp { host, address, port } => {
            let addresses: Vec<std::net::SocketAddr> = match address {
                Some(address) => vec![(*address, *port).into()],
                None => tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(ConnectFailure::Io)?
                    .collect(),
            };
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"));
            for address in addresses {
                match TcpStream::connect(address).await {
                    Ok(stream) => {
                        configure_tcp(config, &stream).map_err(ConnectFailure::Io)?;
                        return Ok((RawSocket::Tcp(stream), host.clone()));
                    }
                    Err(error) => last = error,
                }
            }
            Err(ConnectFailure::Io(last))
        }
    }
}

fn configure_tcp(config: &Config, stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(stream);
    if let Some(timeout) = config.get_tcp_user_timeout() {
        socket.set_tcp_user_timeout(Some(*timeout))?;
    }
    if config.get_keepalives() {
        let mut keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        if let Some(interval) = config.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(retries) = config.get_keepalives_retries() {
            keepalive = keepalive.with_retries(retries);
        }
        socket.set_tcp_keepalive(&keepalive)?;
    }
    Ok(())
}

/// tokio-postgres has no public constructor for its error type, and the
/// pool's connect hook must return one. An I/O error met while opening a
/// connection is how it reports one of ours: this runs its start-up
/// against a stream that fails with `message`.
async fn postgres_error(kind: io::ErrorKind, message: String) -> tokio_postgres::Error {
    let failing = Failing(Some(io::Error::new(kind, message)));
    match Config::new()
        .user("warden")
        .connect_raw(failing, tokio_postgres::NoTls)
        .await
    {
        Err(error) => error,
        Ok(_) => unreachable!("a stream that fails every call cannot start a session"),
    }
}

/// A stream whose first use fails with the error it holds.
struct Failing(Option<io::Error>);

impl Failing {
    fn fail<T>(&mut self) -> Poll<io::Result<T>> {
        Poll::Ready(Err(self.0.take().unwrap_or_else(|| io::ErrorKind::BrokenPipe.into())))
    }
}

impl AsyncRead for Failing {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().fail()
    }
}

impl AsyncWrite for Failing {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().fail()
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().fail()
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for RawSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RawSocket::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            RawSocket::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RawSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            RawSocket::Tcp(stream) => Pin::new(stream).poll_write(cx, data),
            RawSocket::Unix(stream) => Pin::new(stream).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RawSocket::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            RawSocket::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RawSocket::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            RawSocket::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

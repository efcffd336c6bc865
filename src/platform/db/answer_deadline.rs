//! A connection's answer deadline: a database that stops answering (a
//! frozen host, a proxy that keeps the socket open and forwards nothing)
//! fails the connection after `answer_within` instead of leaving every
//! request on it waiting for ever. TCP cannot tell: a frozen process's
//! kernel still acknowledges what is sent and answers keepalives, and a
//! server-side `statement_timeout` is never applied by a frozen server.
//!
//! The stream counts the answers the server owes, from the protocol's
//! framing: PostgreSQL answers the start-up message, every simple query
//! (`Q`), every extended-protocol `Sync` (`S`) and every function call
//! (`F`) with exactly one `ReadyForQuery` (`Z`). While an answer is owed,
//! or a write cannot get into the socket, the server must send something
//! at least every `answer_within`. A connection that owes nothing (idle
//! in the pool, a LISTEN connection waiting for notifications) is never
//! timed out, however long it stays quiet.
//!
//! Under TLS the bytes on the socket cannot be read: the stream below TLS
//! stops counting once the server accepts TLS, and the TLS stream is
//! watched on top of it (`connect::PostgresTls`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Called once when a connection is failed for silence: the pool then
/// replaces every connection made before (see `db::Database`).
pub type OnSilence = Arc<dyn Fn() + Send + Sync>;

/// `SSLRequest`'s request code.
const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest`'s request code (answered like `SSLRequest`).
const GSS_REQUEST: u32 = 80_877_104;
/// `CancelRequest`'s request code (never answered).
const CANCEL_REQUEST: u32 = 80_877_102;

pub struct Watched<S> {
    inner: S,
    within: Duration,
    frames: Frames,
    last_progress: Instant,
    write_blocked: bool,
    timer: Pin<Box<Sleep>>,
    on_silence: Option<OnSilence>,
}

impl<S> Watched<S> {
    /// `inner` as just connected (a socket, or a TLS stream on one): the
    /// protocol starts with an untyped start-up (or SSL) request.
    pub fn new(inner: S, within: Duration, on_silence: Option<OnSilence>) -> Self {
        let now = Instant::now();
        Watched {
            inner,
            within,
            frames: Frames::default(),
            last_progress: now,
            write_blocked: false,
            timer: Box::pin(tokio::time::sleep_until(now + within)),
            on_silence,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Answers the server owes now.
    #[cfg(test)]
    fn owed(&self) -> u32 {
        self.frames.owed
    }

    /// `Ready(error)` once the server has been silent past the deadline
    /// while it owes an answer; otherwise `Pending`, with the timer set to
    /// wake the task when the deadline passes.
    fn poll_silence(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.frames.opaque || (self.frames.owed == 0 && !self.write_blocked) {
            return Poll::Pending;
        }
        let deadline = self.last_progress + self.within;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        if let Some(on_silence) = &self.on_silence {
            on_silence();
        }
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the database sent nothing for {:?} while an answer was due (a frozen or cut-off host)",
                self.within
            ),
        ))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.last_progress = Instant::now();
                    this.frames.incoming(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.poll_silence(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    this.last_progress = Instant::now();
                    this.frames.outgoing(&data[..written]);
                }
                this.write_blocked = false;
                // The deadline starts now. tokio-postgres reads before it
                // writes, so the read that follows this write may only come
                // when the server answers: the timer must already be set
                // to wake the task (it cannot have passed: progress was
                // just made).
                let _ = this.poll_silence(cx);
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                this.write_blocked = true;
                this.poll_silence(cx).map(Err)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => {
                this.write_blocked = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.write_blocked = true;
                this.poll_silence(cx).map(Err)
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The protocol's message boundaries in both directions, and the
/// `ReadyForQuery` answers owed.
#[derive(Default)]
struct Frames {
    outgoing: Framing,
    incoming: Framing,
    owed: u32,
    /// An `SSLRequest` went out: the next byte in is the single-byte answer.
    ssl_answer_due: bool,
    /// TLS started below this layer: the bytes are no longer the protocol.
    opaque: bool,
    /// The first outgoing messages (start-up, SSL request) have no type.
    started: bool,
}

/// Where a byte stream is between messages.
#[derive(Default)]
struct Framing {
    header: [u8; 8],
    have: usize,
    /// Body bytes of the current message still to pass.
    skip: usize,
}

impl Frames {
    fn outgoing(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.opaque {
            if self.outgoing.skip > 0 {
                let passed = self.outgoing.skip.min(data.len());
                self.outgoing.skip -= passed;
                data = &data[passed..];
                continue;
            }
            // Untyped start-up messages: length and code (8 bytes); then
            // typed ones: type and length (5 bytes).
            let header_len = if self.started { 5 } else { 8 };
            let taken = (header_len - self.outgoing.have).min(data.len());
            self.outgoing.header[self.outgoing.have..self.outgoing.have + taken].copy_from_slice(&data[..taken]);
            self.outgoing.have += taken;
            data = &data[taken..];
            if self.outgoing.have < header_len {
                return;
            }
            self.outgoing.have = 0;
            let header = self.outgoing.header;
            if self.started {
                let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                self.outgoing.skip = length.saturating_sub(4);
                if matches!(header[0], b'Q' | b'S' | b'F') {
                    self.owed += 1;
                }
            } else {
                let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
                let code = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                self.outgoing.skip = length.saturating_sub(8);
                match code {
                    SSL_REQUEST | GSS_REQUEST => self.ssl_answer_due = true,
                    CANCEL_REQUEST => {}
                    // A start-up message: answered by ReadyForQuery once
                    // authenticated.
                    _ => {
                        self.started = true;
                        self.owed += 1;
                    }
                }
            }
        }
    }

    fn incoming(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.opaque {
            if self.ssl_answer_due && self.incoming.have == 0 && self.incoming.skip == 0 {
                self.ssl_answer_due = false;
                match data[0] {
                    b'S' | b'G' => {
                        // TLS (or GSS encryption) begins: watched above.
                        self.opaque = true;
                        return;
                    }
                    b'N' => {
                        data = &data[1..];
                        continue;
                    }
                    // Anything else is a typed message (an old server's
                    // error): read it as one.
                    _ => {}
                }
            }
            if self.incoming.skip > 0 {
                let passed = self.incoming.skip.min(data.len());
                self.incoming.skip -= passed;
                data = &data[passed..];
                continue;
            }
            let taken = (5 - self.incoming.have).min(data.len());
            self.incoming.header[self.incoming.have..self.incoming.have + taken].copy_from_slice(&data[..taken]);
            self.incoming.have += taken;
            data = &data[taken..];
            if self.incoming.have < 5 {
                return;
            }
            self.incoming.have = 0;
            let header = self.incoming.header;
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            self.incoming.skip = length.saturating_sub(4);
            if header[0] == b'Z' {
                self.owed = self.owed.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut message = vec![kind];
        message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    fn startup() -> Vec<u8> {
        let body = b"user\0warden\0\0";
        let mut message = (body.len() as u32 + 8).to_be_bytes().to_vec();
        message.extend_from_slice(&196_608u32.to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    #[test]
    fn answers_are_counted_across_any_split_of_the_bytes() {
        let mut sent = startup();
        sent.extend(typed(b'Q', b"SELECT 1\0"));
        // Extended protocol: Parse, Bind, Execute, Sync; a Flush owes nothing.
        sent.extend(typed(b'P', b"\0SELECT $1\0\0\0"));
        sent.extend(typed(b'B', &[0; 10]));
        sent.extend(typed(b'E', &[0; 5]));
        sent.extend(typed(b'H', &[]));
        sent.extend(typed(b'S', &[]));
        let mut received = typed(b'R', &[0, 0, 0, 0]);
        received.extend(typed(b'S', b"TimeZone\0UTC\0")); // ParameterStatus, not Sync
        received.extend(typed(b'Z', b"I"));
        received.extend(typed(b'T', &[0; 20]));
        received.extend(typed(b'Z', b"I"));
        received.extend(typed(b'Z', b"I"));
        for split in [1, 2, 3, 7, 1000] {
            let mut frames = Frames::default();
            for piece in sent.chunks(split) {
                frames.outgoing(piece);
            }
            assert_eq!(frames.owed, 3, "split {split}: start-up, query, sync");
            for piece in received.chunks(split) {
                frames.incoming(piece);
            }
            assert_eq!(frames.owed, 0, "split {split}");
        }
    }

    #[test]
    fn counting_stops_where_tls_starts_and_goes_on_after_a_refusal() {
        let ssl_request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        let mut frames = Frames::default();
        frames.outgoing(&ssl_request);
        frames.incoming(b"S");
        assert!(frames.opaque);

        let mut frames = Frames::default();
        frames.outgoing(&ssl_request);
        frames.incoming(b"N");
        frames.outgoing(&startup());
        assert_eq!(frames.owed, 1);
        frames.incoming(&typed(b'Z', b"I"));
        assert_eq!(frames.owed, 0);
        assert!(!frames.opaque);
    }

    /// A server that reads what it is sent and answers only when told.
    async fn pair(
        within: Duration,
    ) -> (
        Watched<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<AtomicUsize>,
    ) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let silences = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&silences);
        let on_silence: OnSilence = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        (Watched::new(client, within, Some(on_silence)), server, silences)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_that_owes_an_answer_fails_the_stream_in_time() {
        let (mut client, mut server, silences) = pair(Duration::from_secs(3)).await;
        client.write_all(&startup()).await.unwrap();
        let mut sink = vec![0; 1024];
        let n = server.read(&mut sink).await.unwrap();
        assert!(n > 0);
        server.write_all(&typed(b'Z', b"I")).await.unwrap();
        let mut answer = vec![0; 6];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(client.owed(), 0);

        // Idle: nothing owed, so no deadline however long it is quiet.
        let idle = tokio::time::timeout(Duration::from_secs(60), client.read(&mut answer)).await;
        assert!(idle.is_err(), "an idle connection must not be failed");

        client.write_all(&typed(b'Q', b"SELECT 1\0")).await.unwrap();
        let started = Instant::now();
        let error = client.read(&mut answer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(silences.load(Ordering::SeqCst), 1);
    }

    /// How tokio-postgres drives its stream: each poll reads first, then
    /// writes what its client queued, then waits; nothing but the socket
    /// (or the deadline's timer) wakes it.
    struct ReadThenWrite<'a> {
        stream: &'a mut Watched<tokio::io::DuplexStream>,
        query: Option<Vec<u8>>,
    }

    impl Future for ReadThenWrite<'_> {
        type Output = io::Result<()>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let mut space = [0; 64];
            let mut buf = ReadBuf::new(&mut space);
            if let Poll::Ready(result) = Pin::new(&mut *self.stream).poll_read(cx, &mut buf) {
                return Poll::Ready(result);
            }
            if let Some(query) = self.query.take() {
                match Pin::new(&mut *self.stream).poll_write(cx, &query) {
                    Poll::Ready(Ok(written)) => assert_eq!(written, query.len()),
                    other => panic!("the query should go out at once: {other:?}"),
                }
            }
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_written_after_a_long_idle_read_is_still_timed() {
        let (mut client, mut server, silences) = pair(Duration::from_secs(3)).await;
        client.write_all(&startup()).await.unwrap();
        let mut sink = vec![0; 1024];
        let _ = server.read(&mut sink).await.unwrap();
        server.write_all(&typed(b'Z', b"I")).await.unwrap();
        let mut answer = vec![0; 6];
        client.read_exact(&mut answer).await.unwrap();
        // Idle for longer than the deadline: any timer set for the
        // start-up has fired and is spent.
        let idle = tokio::time::timeout(Duration::from_secs(10), client.read(&mut answer)).await;
        assert!(idle.is_err());

        let started = Instant::now();
        let driver = ReadThenWrite {
            stream: &mut client,
            query: Some(typed(b'Q', b"SELECT 1\0")),
        };
        let outcome = tokio::time::timeout(Duration::from_secs(60), driver).await;
        let error = outcome
            .expect("the silent server must fail the stream, not leave it waiting")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(silences.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_keeps_sending_is_not_failed_while_it_works() {
        let (mut client, mut server, silences) = pair(Duration::from_secs(3)).await;
        client.write_all(&startup()).await.unwrap();
        client.write_all(&typed(b'Q', b"SELECT 1\0")).await.unwrap();
        let mut sink = vec![0; 1024];
        let _ = server.read(&mut sink).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0; 64];
            while client.owed() > 0 {
                let n = client.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got.len()
        });
        // Rows every 2 s for 10 s, then the two answers: never 3 s silent.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            server.write_all(&typed(b'D', &[0; 10])).await.unwrap();
        }
        server.write_all(&typed(b'Z', b"I")).await.unwrap();
        server.write_all(&typed(b'Z', b"I")).await.unwrap();
        assert!(reader.await.unwrap() > 0);
        assert_eq!(silences.load(Ordering::SeqCst), 0);
    }
}

//! Connections: how many one client may hold, how the protocol is chosen, and how long a
//! connection may sit silent or stalled.
//!
//! A connection costs a permit of the listener's limit from accept to close, so every phase
//! before a request is parsed has a timer: the protocol sniff of a plain connection (which
//! hyper's automatic builder does without one), the TLS handshake, and the wait for a request
//! (no request in flight for `idle_timeout_secs`, whether between HTTP/1 requests, on an idle
//! HTTP/2 connection, or before the first request ever completes its headers). A response
//! that cannot be written because the client reads nothing fails after `write_stall_secs`,
//! so a stalled reader cannot pin the blobs it leased for ever.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The HTTP/2 connection preface a client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Concurrent streams one HTTP/2 connection may open.
pub(crate) const MAX_H2_STREAMS: u32 = 100;
/// Largest header block a client may send (HTTP/1 and HTTP/2).
pub(crate) const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// HTTP/2 pings an idle peer this often and drops it when a ping goes unanswered as long.
pub(crate) const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// Open connections per client address, bounded per address.
pub(crate) struct ClientConns {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One admitted connection; dropping it gives its slot back.
pub(crate) struct ClientSlot {
    conns: Arc<ClientConns>,
    ip: IpAddr,
}

impl ClientConns {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::default(),
            max,
        })
    }

    /// A slot for one more connection from `ip`, or `None` when it holds its maximum.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            conns: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Which protocol a plain connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// Peeks at the first bytes until they decide HTTP/2 (the full preface) or HTTP/1 (anything
/// else), within `limit`; `None` when the client sends too little in time (or closes).
pub(crate) async fn sniff(stream: &tokio::net::TcpStream, limit: Duration) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        // Checked here, not only by the timeouts: a ready future wins over its timeout, and
        // a client that sent part of the preface keeps `peek` and `readable` ready.
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Protocol::Http2);
        }
        // A prefix of the preface so far: wait for more bytes, not for the same ones.
        tokio::time::timeout_at(deadline, stream.readable())
            .await
            .ok()?
            .ok()?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a connection's requests and its I/O wrapper share: how many requests are in flight
/// (a response body still streaming counts) and since when none has been.
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds after `born` at which the last request ended (or the connection began).
    idle_since_ms: AtomicU64,
    born: Instant,
    /// The reader, woken when the last request ends so it re-arms the idle timer.
    reader: AtomicWaker,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            born: Instant::now(),
            reader: AtomicWaker::new(),
        })
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When the connection became idle, if it is.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::SeqCst);
        Some(self.born + Duration::from_millis(ms))
    }
}

/// A request (and its response body) in flight on a connection.
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.born.elapsed().as_millis() as u64;
        a.idle_since_ms.store(ms, Ordering::SeqCst);
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.reader.wake();
        }
    }
}

/// A response body that keeps its request counted in flight until it is sent or dropped.
pub(crate) struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket with an idle timer on the read side and a stall timer on the write
/// side.
pub(crate) struct TimedIo<S> {
    inner: S,
    activity: Arc<Activity>,
    idle: Duration,
    stall: Duration,
    idle_timer: Pin<Box<Sleep>>,
    stall_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> TimedIo<S> {
    pub fn new(inner: S, activity: Arc<Activity>, idle: Duration, stall: Duration) -> Self {
        Self {
            inner,
            activity,
            idle,
            stall,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            stall_timer: None,
        }
    }

    /// After the inner write returned `Pending`: fails once the stall outlasts its limit.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let stall = self.stall;
        let timer = self
            .stall_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing for the write-stall limit",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned())
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                this.activity.reader.register(cx.waker());
                let Some(since) = this.activity.idle_since() else {
                    // A request is in flight: its end wakes this reader to re-arm the timer.
                    return Poll::Pending;
                };
                let deadline = since + this.idle;
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(timed_out("no request within the idle timeout")));
                }
                this.idle_timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
                match this.idle_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(timed_out("no request within the idle timeout")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                self.stall_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.stall_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                self.stall_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn client_slots_are_bounded_and_returned() {
        let conns = ClientConns::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = conns.admit(ip).unwrap();
        let _b = conns.admit(ip).unwrap();
        assert!(conns.admit(ip).is_none());
        assert!(conns.admit("10.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(conns.admit(ip).is_some());
    }

    #[tokio::test]
    async fn an_idle_connection_times_out_but_not_during_a_request() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut io = TimedIo::new(
            server,
            activity.clone(),
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        let guard = activity.begin();
        let mut buf = [0u8; 8];
        // In flight: reading waits past the idle limit.
        let r = tokio::time::timeout(Duration::from_millis(300), io.read(&mut buf)).await;
        assert!(r.is_err(), "timed out while a request was in flight");
        drop(guard);
        let start = Instant::now();
        let r = io.read(&mut buf).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(client);
    }

    #[tokio::test]
    async fn a_reader_that_reads_nothing_stalls_the_writer_out() {
        let (_client, server) = tokio::io::duplex(16);
        let mut io = TimedIo::new(
            server,
            Activity::new(),
            Duration::from_secs(60),
            Duration::from_millis(100),
        );
        let r = tokio::time::timeout(Duration::from_secs(5), io.write_all(&[0u8; 1024])).await;
        assert_eq!(
            r.expect("the stall timer fired").unwrap_err().kind(),
            std::io::ErrorKind::TimedOut
        );
    }

    #[tokio::test]
    async fn sniffing_tells_the_protocols_apart_and_gives_up_on_silence() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        for (sent, want) in [
            (&b"GET / HTTP/1.1\r\n"[..], Some(Protocol::Http1)),
            (H2_PREFACE, Some(Protocol::Http2)),
            (&b"PRI * HT"[..], None),
            (&b""[..], None),
        ] {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(sent).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            assert_eq!(
                sniff(&s, Duration::from_millis(200)).await,
                want,
                "{sent:?}"
            );
        }
    }
}

//! Accepting connections and serving them: the accept loop with its region-wide and
//! per-client caps, graceful shutdown, and one connection's TLS handshake, protocol choice
//! and HTTP limits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::{App, HEADER_READ_TIMEOUT, Server, ServerError, conn};

impl Server {
    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// (bounded by the configured grace period) and returns.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let clients = conn::ClientConns::new(self.config.max_connections_per_client);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepts = self
                .listeners
                .iter()
                .map(|l| Box::pin(async move { (l.accept().await, l.tls.clone()) }));
            let ((accepted, tls), _, _) = tokio::select! {
                _ = &mut shutdown => break,
                r = futures::future::select_all(accepts) => r,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = clients.admit(peer.ip()) else {
                // One client may not take every permit; its extra sockets close at once.
                tracing::debug!(%peer, "too many connections from this client");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let timers = ConnTimers {
                idle: Duration::from_secs(self.config.idle_timeout_secs),
                stall: Duration::from_secs(self.config.write_stall_secs),
            };
            let app = self.app.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                serve_connection(app, stream, peer, tls, timers, watcher).await;
                drop(slot);
                drop(permit);
            });
        }
        self.app
            .ready
            .store(false, std::sync::atomic::Ordering::SeqCst);
        drop(self.listeners);
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "in-flight requests did not finish in time; closing them"
            );
        }
        if self.app.audit.flush().await.is_err() {
            tracing::error!("the audit writer stopped before shutdown");
        }
    }
}

/// A connection's idle and write-stall limits.
#[derive(Clone, Copy)]
struct ConnTimers {
    idle: Duration,
    stall: Duration,
}

/// Serves one accepted connection until it closes, times out or shutdown ends it: the TLS
/// handshake (bounded), the protocol (ALPN, or a bounded sniff of a plain connection), and
/// HTTP/1 or HTTP/2 with their limits, over a socket whose silence and stalls are timed.
async fn serve_connection(
    app: Arc<App>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timers: ConnTimers,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let activity = conn::Activity::new();
    let secure = tls.is_some();
    let service_activity = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let app = app.clone();
        let in_flight = service_activity.begin();
        async move {
            let resp = app.handle(req, peer, secure).await;
            Ok::<_, Infallible>(resp.map(|b| conn::Tracked::new(b, in_flight)))
        }
    });
    let result = match tls {
        None => {
            let Some(protocol) = conn::sniff(&stream, HEADER_READ_TIMEOUT.min(timers.idle)).await
            else {
                tracing::debug!(%peer, "no request line or preface in time");
                return;
            };
            let io = conn::TimedIo::new(stream, activity, timers.idle, timers.stall);
            let builder = http_builder(protocol);
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            watcher.watch(conn.into_owned()).await
        }
        Some(acceptor) => {
            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let protocol = match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => conn::Protocol::Http2,
                        _ => conn::Protocol::Http1,
                    };
                    let io = conn::TimedIo::new(stream, activity, timers.idle, timers.stall);
                    let builder = http_builder(protocol);
                    let conn = builder.serve_connection(TokioIo::new(io), svc);
                    watcher.watch(conn.into_owned()).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                    Ok(())
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// The HTTP server for one protocol, with its limits.
fn http_builder(protocol: conn::Protocol) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(conn::MAX_HEADER_BYTES as usize * 2)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(conn::MAX_H2_STREAMS)
        .max_header_list_size(conn::MAX_HEADER_BYTES)
        .max_pending_accept_reset_streams(conn::MAX_H2_STREAMS as usize)
        .max_local_error_reset_streams(conn::MAX_H2_STREAMS as usize)
        .keep_alive_interval(conn::H2_KEEPALIVE)
        .keep_alive_timeout(conn::H2_KEEPALIVE);
    match protocol {
        conn::Protocol::Http1 => builder.http1_only(),
        conn::Protocol::Http2 => builder.http2_only(),
    }
}

/// One bound socket, plain or TLS.
pub(crate) struct Listener {
    tcp: TcpListener,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) addr: SocketAddr,
}

impl Listener {
    pub(crate) async fn bind(
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Self, ServerError> {
        let bind_err = |source| ServerError::Bind { addr, source };
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        let addr = tcp.local_addr().map_err(bind_err)?;
        Ok(Self { tcp, tls, addr })
    }

    async fn accept(&self) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
        self.tcp.accept().await
    }
}

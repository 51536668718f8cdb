//! Node-to-node blob traffic: the cluster listener's server and the client the other nodes
//! use, over plain HTTP/1.1 authenticated by the region's cluster secret.
//!
//! Every request carries `x-feiyun-node`, `x-feiyun-date` (Unix seconds, within five
//! minutes of the receiver's clock), `x-feiyun-nonce` and `x-feiyun-signature`, an
//! HMAC-SHA256 under the secret of the method, the address of the node it is meant for, the
//! path, the date, the sender and the nonce. A request replayed to another node fails its
//! signature there; one that changes anything (an upload, a delete) is refused when its
//! nonce was seen within the date window, so a captured delete cannot be sent again. Bodies are authenticated too, since the
//! request signature cannot cover a stream it precedes: an uploaded blob ends with a MAC of
//! its bytes and every answer ends with a MAC of its own, both under keys derived from the
//! request's signature, so a replayed or spliced answer fails. S3 credentials are never
//! accepted here, and the only names are opaque blob ids, so nothing a client of the region
//! controls reaches this protocol.
//!
//! The secret authenticates, it does not encrypt: blobs travel as they are stored, which is
//! sealed (AES-GCM) whenever encryption at rest is on, as it is by default.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use feiyun_blob::{BlobError, BlobId, LocalBlobStore, Source};
use hmac::{KeyInit, Mac};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, oneshot};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;
type PeerBody = UnsyncBoxBody<Bytes, io::Error>;

pub(crate) const MAC_LEN: usize = 32;
/// How far a request's date may be from the receiver's clock.
const SKEW_SECS: i64 = 300;
/// How far a cache message's date may be from the receiver's clock (nodes run NTP).
const CACHE_SKEW_SECS: i64 = 5;
/// Largest range one read asks for: a blob reader's largest read plus its frame trailers.
const MAX_RANGE: u64 = 32 * 1024 * 1024;
/// Chunks (each up to the frame writer's 1 MiB buffer) in flight to one replica.
const SEND_QUEUE: usize = 4;
/// A replica that takes no chunk for this long has failed.
const STALL: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A read, size or delete that has not answered by now has failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// A replica's answer to the end of an upload (its fsync): this long, plus a second per
/// [`COMMIT_BYTES_PER_SEC`] sent, so a node cut off mid-write holds the write for seconds,
/// while a 5 GiB part's fsync on a slow disk still has its time.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
const COMMIT_BYTES_PER_SEC: u64 = 64 * 1024 * 1024;
/// Connections the cluster listener serves at once.
const MAX_CONNECTIONS: usize = 512;
/// Connections one address may hold: a stranger filling the listener before it has shown
/// a signature must not lock the nodes out.
const MAX_PER_ADDRESS: usize = 64;
/// Nonces of changing requests remembered (a date window's worth).
const MAX_NONCES: usize = 1_000_000;

/// The region's shared secret for node-to-node requests.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl ClusterSecret {
    pub fn new(secret: &str) -> Self {
        Self(Arc::from(secret.as_bytes()))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length.
        <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("hmac key")
    }

    fn sign(&self, s: &Signed<'_>) -> [u8; 32] {
        let mut m = self.mac();
        m.update(
            format!(
                "feiyun-cluster-v1\n{}\n{}\n{}\n{}\n{}\n{}",
                s.method, s.target, s.path, s.date, s.from, s.nonce
            )
            .as_bytes(),
        );
        m.finalize().into_bytes().into()
    }

    /// A key for one body of one request: `purpose` is `body` (sender's) or `answer`.
    fn body_mac(&self, purpose: &str, signature: &[u8; 32]) -> HmacSha256 {
        let mut m = self.mac();
        m.update(purpose.as_bytes());
        m.update(signature);
        let key: [u8; 32] = m.finalize().into_bytes().into();
        <HmacSha256 as KeyInit>::new_from_slice(&key).expect("hmac key")
    }
}

/// What a request's signature covers.
struct Signed<'a> {
    method: &'a Method,
    /// The advertised address of the node it is meant for.
    target: &'a str,
    path: &'a str,
    date: i64,
    from: &'a str,
    nonce: &'a str,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

fn unix_now() -> i64 {
    crate::now_ms() / 1000
}

fn blob_path(id: BlobId) -> String {
    format!("/blob/{}", id.to_hex())
}

/// Runs `f` on `rt` and waits for it from synchronous code (the blob store's callers run
/// on the blocking pool). The answer comes back over a plain channel, as the PostgreSQL
/// engine's do, so a wait on a runtime worker never depends on that worker's task budget.
pub(crate) fn wait<T: Send + 'static>(
    rt: &Handle,
    f: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    let recv = move || rx.recv().ok();
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(recv)
        }
        _ => recv(),
    }
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The client side: what one node asks of another.
#[derive(Clone)]
pub struct PeerClient {
    http: Client<HttpConnector, PeerBody>,
    secret: ClusterSecret,
    me: Arc<str>,
    rt: Handle,
}

impl PeerClient {
    pub fn new(secret: ClusterSecret, me: &str, rt: Handle) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self {
            http,
            secret,
            me: Arc::from(me),
            rt,
        }
    }

    pub(crate) fn runtime(&self) -> &Handle {
        &self.rt
    }

    fn request(
        &self,
        method: Method,
        addr: &str,
        path: &str,
        body: PeerBody,
    ) -> (Request<PeerBody>, [u8; 32]) {
        let date = unix_now();
        let nonce = format!("{:032x}", rand::random::<u128>());
        let sig = self.secret.sign(&Signed {
            method: &method,
            target: addr,
            path,
            date,
            from: &self.me,
            nonce: &nonce,
        });
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("x-feiyun-node", &*self.me)
            .header("x-feiyun-date", date.to_string())
            .header("x-feiyun-nonce", nonce)
            .header("x-feiyun-signature", hex::encode(sig))
            .body(body)
            // Every part is ours and valid: an address that is no authority fails at send.
            .unwrap_or_else(|_| Request::new(empty()));
        (req, sig)
    }

    /// Sends a bodiless request and returns its authenticated answer (404: `NotFound`).
    async fn call(&self, method: Method, addr: &str, path: &str) -> io::Result<Bytes> {
        let (req, sig) = self.request(method, addr, path, empty());
        self.exchange(req, sig, addr, REQUEST_TIMEOUT).await
    }

    /// POSTs a small message (a cache lease or invalidation) ending with its MAC, and
    /// returns the authenticated answer; `timeout` covers connecting and answering.
    pub(crate) async fn post(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> io::Result<Bytes> {
        let (req, sig) = self.request(Method::POST, addr, path, empty());
        let mut mac = self.secret.body_mac("body", &sig);
        mac.update(&body);
        let mut body = body;
        body.extend_from_slice(&mac.finalize().into_bytes());
        let (parts, _) = req.into_parts();
        let req = Request::from_parts(
            parts,
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        self.exchange(req, sig, addr, timeout).await
    }

    async fn exchange(
        &self,
        req: Request<PeerBody>,
        sig: [u8; 32],
        addr: &str,
        timeout: Duration,
    ) -> io::Result<Bytes> {
        let answer = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| other(format!("node {addr}: {e}")))?;
            let status = resp.status();
            let body = Limited::collect(resp.into_body(), MAX_RANGE as usize + MAC_LEN).await?;
            if status == StatusCode::NOT_FOUND {
                return Err(io::ErrorKind::NotFound.into());
            }
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(other(format!("node {addr} answered {status}: {text}")));
            }
            self.open_answer(&sig, body)
        };
        tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("node {addr}")))?
    }

    fn open_answer(&self, sig: &[u8; 32], body: Bytes) -> io::Result<Bytes> {
        if body.len() < MAC_LEN {
            return Err(other("answer without its MAC"));
        }
        let (data, tag) = body.split_at(body.len() - MAC_LEN);
        let mut m = self.secret.body_mac("answer", sig);
        m.update(data);
        m.verify_slice(tag)
            .map_err(|_| other("answer failed its MAC"))?;
        Ok(body.slice(..body.len() - MAC_LEN))
    }

    /// Stored bytes `[offset, offset + len)` of a blob on node `addr`.
    pub async fn read(&self, addr: &str, id: BlobId, offset: u64, len: usize) -> io::Result<Bytes> {
        let path = format!("{}?off={offset}&len={len}", blob_path(id));
        let got = self.call(Method::GET, addr, &path).await?;
        if got.len() != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(got)
    }

    /// The stored size of a blob on node `addr`.
    pub async fn size(&self, addr: &str, id: BlobId) -> io::Result<u64> {
        let path = format!("{}?size", blob_path(id));
        let got = self.call(Method::GET, addr, &path).await?;
        let bytes: [u8; 8] = got[..]
            .try_into()
            .map_err(|_| other("a size is eight bytes"))?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Removes a blob's copy on node `addr` (a missing one is not an error).
    pub async fn delete(&self, addr: &str, id: BlobId) -> io::Result<()> {
        self.call(Method::DELETE, addr, &blob_path(id))
            .await
            .map(|_| ())
    }

    /// Starts an upload of a blob's stored bytes to node `addr`.
    pub fn upload(&self, addr: &str, id: BlobId) -> RemoteSink {
        let (tx, rx) = mpsc::channel::<Bytes>(SEND_QUEUE);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, io::Error>(Frame::data(b)), rx))
        });
        let body = StreamBody::new(stream).boxed_unsync();
        let (req, sig) = self.request(Method::PUT, addr, &blob_path(id), body);
        let (done_tx, done_rx) = oneshot::channel();
        let me = self.clone();
        let target = addr.to_owned();
        self.rt.spawn(async move {
            let r = async {
                let resp = me
                    .http
                    .request(req)
                    .await
                    .map_err(|e| other(format!("node {target}: {e}")))?;
                let status = resp.status();
                let body = Limited::collect(resp.into_body(), 4096).await?;
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body).into_owned();
                    return Err(other(format!("node {target} answered {status}: {text}")));
                }
                me.open_answer(&sig, body).map(|_| ())
            }
            .await;
            let _ = done_tx.send(r);
        });
        RemoteSink {
            sent: 0,
            closed: false,
            tx: Some(tx),
            mac: self.secret.body_mac("body", &sig),
            done: Some(done_rx),
            rt: self.rt.clone(),
            addr: addr.to_owned(),
        }
    }
}

fn empty() -> PeerBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Collects a body of at most `max` bytes.
struct Limited;

impl Limited {
    async fn collect<B>(mut body: B, max: usize) -> io::Result<Bytes>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| other(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > max {
                    return Err(other("answer too large"));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(out))
    }
}

/// One replica's upload in progress.
pub struct RemoteSink {
    sent: u64,
    closed: bool,
    tx: Option<mpsc::Sender<Bytes>>,
    mac: HmacSha256,
    done: Option<oneshot::Receiver<io::Result<()>>>,
    rt: Handle,
    addr: String,
}

impl RemoteSink {
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        let Some(tx) = self.tx.clone() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let sent = wait(&self.rt, async move {
            tokio::time::timeout(STALL, tx.send(chunk)).await
        });
        match sent {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Err(_)) => Err(io::Error::new(io::ErrorKind::TimedOut, "replica stalled")),
            _ => Err(self.failure()),
        }
    }

    /// Why the upload stopped, once its task has ended.
    fn failure(&mut self) -> io::Error {
        self.tx = None;
        let Some(done) = self.done.take() else {
            return io::ErrorKind::BrokenPipe.into();
        };
        match wait(&self.rt, async move {
            tokio::time::timeout(REQUEST_TIMEOUT, done).await
        }) {
            Some(Ok(Ok(Err(e)))) => e,
            _ => other(format!("upload to node {} ended", self.addr)),
        }
    }

    /// Sends the body's MAC and ends the upload: the replica then fsyncs and answers. The
    /// tee closes every replica before it waits for any, so their fsyncs overlap.
    pub fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let tag: [u8; 32] = self.mac.clone().finalize().into_bytes().into();
        self.send(Bytes::copy_from_slice(&tag))?;
        self.tx = None;
        Ok(())
    }

    /// [`Self::close`], then waits for the replica to say it has fsynced the copy.
    pub fn finish(mut self) -> io::Result<()> {
        self.close()?;
        let Some(done) = self.done.take() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let limit = COMMIT_TIMEOUT + Duration::from_secs(self.sent / COMMIT_BYTES_PER_SEC);
        match wait(
            &self.rt,
            async move { tokio::time::timeout(limit, done).await },
        ) {
            Some(Ok(Ok(r))) => r,
            Some(Err(_)) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("node {} did not confirm the copy", self.addr),
            )),
            _ => Err(other(format!("upload to node {} ended", self.addr))),
        }
    }
}

impl io::Write for RemoteSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.mac.update(buf);
        self.sent += buf.len() as u64;
        self.send(Bytes::copy_from_slice(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blob's stored bytes on another node, read range by range.
pub struct RemoteSource {
    pub(crate) peers: PeerClient,
    pub(crate) addr: String,
    pub(crate) id: BlobId,
    pub(crate) size: std::sync::OnceLock<u64>,
}

impl Source for RemoteSource {
    fn size(&self) -> io::Result<u64> {
        if let Some(s) = self.size.get() {
            return Ok(*s);
        }
        let (peers, addr, id) = (self.peers.clone(), self.addr.clone(), self.id);
        let s = wait(&self.peers.rt, async move { peers.size(&addr, id).await })
            .unwrap_or_else(|| Err(other("runtime gone")))?;
        Ok(*self.size.get_or_init(|| s))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (peers, addr, id, len) = (self.peers.clone(), self.addr.clone(), self.id, buf.len());
        let got = wait(&self.peers.rt, async move {
            peers.read(&addr, id, offset, len).await
        })
        .unwrap_or_else(|| Err(other("runtime gone")))?;
        buf.copy_from_slice(&got);
        Ok(())
    }
}

/// The cluster listener: serves this node's blob copies to the other nodes.
pub struct PeerServer {
    blobs: Arc<LocalBlobStore>,
    secret: ClusterSecret,
    /// This node's advertised address, which every request to it must be signed for.
    advertise: String,
    /// Nonces of changing requests seen, with the date they expire.
    nonces: std::sync::Mutex<std::collections::HashMap<u128, i64>>,
    /// The node's row cache, which answers `/cache/` requests once it is set.
    cache: std::sync::OnceLock<Arc<crate::rowcache::RowCache>>,
}

/// Largest cache message accepted: an invalidation of a large multi-object delete.
const MAX_CACHE_MESSAGE: usize = 8 * 1024 * 1024;

type Answer = Response<Full<Bytes>>;

fn plain(status: StatusCode, text: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r
}

impl PeerServer {
    pub fn new(blobs: Arc<LocalBlobStore>, secret: ClusterSecret, advertise: &str) -> Arc<Self> {
        Arc::new(Self {
            blobs,
            secret,
            advertise: advertise.to_owned(),
            nonces: std::sync::Mutex::default(),
            cache: std::sync::OnceLock::new(),
        })
    }

    /// Lets `cache` answer lease requests and invalidations from the other nodes.
    pub fn set_cache(&self, cache: Arc<crate::rowcache::RowCache>) {
        let _ = self.cache.set(cache);
    }

    /// Records a changing request's nonce; false when it was seen (a replay) or when the
    /// table is full of live ones (refused rather than forgotten).
    fn fresh_nonce(&self, nonce: u128, expires: i64) -> bool {
        let Ok(mut seen) = self.nonces.lock() else {
            return false;
        };
        // Cache messages come by the thousand a second and live seconds: prune as they go.
        if seen.len() >= MAX_NONCES || (seen.len() + 1) % 65_536 == 0 {
            let now = unix_now();
            seen.retain(|_, expires| *expires >= now);
            if seen.len() >= MAX_NONCES {
                return false;
            }
        }
        seen.insert(nonce, expires).is_none()
    }

    /// Accepts connections until the listener fails; each is served on its own task.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let per_address: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
            Arc::default();
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ip = peer.ip();
            let admitted = per_address.lock().is_ok_and(|mut m| {
                let n = m.entry(ip).or_insert(0);
                *n += 1;
                *n <= MAX_PER_ADDRESS
            });
            let slot = AddressSlot(per_address.clone(), ip);
            if !admitted {
                continue; // dropping the stream closes it; the slot gives its count back
            }
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "cluster connection ended");
                }
                drop(permit);
            });
        }
    }

    /// Checks the request's signature and returns it.
    fn authenticate(
        &self,
        req: &Request<Incoming>,
    ) -> Result<[u8; 32], (StatusCode, &'static str)> {
        let denied = || (StatusCode::FORBIDDEN, "bad cluster signature");
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let (Some(from), Some(date), Some(nonce), Some(sig)) = (
            header("x-feiyun-node"),
            header("x-feiyun-date").and_then(|d| d.parse::<i64>().ok()),
            header("x-feiyun-nonce").filter(|n| n.len() == 32),
            header("x-feiyun-signature").and_then(|s| hex::decode(s).ok()),
        ) else {
            return Err(denied());
        };
        if unix_now().abs_diff(date) > SKEW_SECS as u64 {
            return Err((StatusCode::FORBIDDEN, "request date out of range"));
        }
        let path = req.uri().path_and_query().map_or("", |p| p.as_str());
        let mut m = self.secret.mac();
        m.update(
            format!(
                "feiyun-cluster-v1\n{}\n{}\n{path}\n{date}\n{from}\n{nonce}",
                req.method(),
                self.advertise
            )
            .as_bytes(),
        );
        if m.verify_slice(&sig).is_err() {
            return Err(denied());
        }
        if matches!(*req.method(), Method::PUT | Method::DELETE) {
            let fresh = u128::from_str_radix(nonce, 16)
                .is_ok_and(|n| self.fresh_nonce(n, date.saturating_add(SKEW_SECS)));
            if !fresh {
                return Err((StatusCode::FORBIDDEN, "request replayed"));
            }
        }
        // Cache messages (POST) are many, so their window is short and their nonces are
        // remembered only that long: a replayed lease would make a writer wait on a
        // holder that is gone, a replayed invalidation empty a cache.
        if *req.method() == Method::POST {
            if unix_now().abs_diff(date) > CACHE_SKEW_SECS as u64 {
                return Err((StatusCode::FORBIDDEN, "request date out of range"));
            }
            let fresh = u128::from_str_radix(nonce, 16)
                .is_ok_and(|n| self.fresh_nonce(n, date.saturating_add(CACHE_SKEW_SECS)));
            if !fresh {
                return Err((StatusCode::FORBIDDEN, "request replayed"));
            }
        }
        sig.try_into().map_err(|_| denied())
    }

    fn answer(&self, sig: &[u8; 32], mut data: Vec<u8>) -> Answer {
        let mut m = self.secret.body_mac("answer", sig);
        m.update(&data);
        data.extend_from_slice(&m.finalize().into_bytes());
        Response::new(Full::new(Bytes::from(data)))
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Answer {
        let sig = match self.authenticate(&req) {
            Ok(v) => v,
            Err((status, why)) => return plain(status, why),
        };
        if req.uri().path().starts_with("/cache/") {
            return self.cache_request(&sig, req).await;
        }
        let Some(id) = req
            .uri()
            .path()
            .strip_prefix("/blob/")
            .and_then(BlobId::from_hex)
        else {
            return plain(StatusCode::NOT_FOUND, "no such resource");
        };
        let query = req.uri().query().unwrap_or("").to_owned();
        let method = req.method().clone();
        let result = match method {
            Method::PUT => self.receive(&sig, id, req.into_body()).await,
            Method::GET if query == "size" => {
                let blobs = self.blobs.clone();
                blocking(move || Ok(blobs.open_raw(id)?.size()?.to_le_bytes().to_vec())).await
            }
            Method::GET => match parse_range(&query) {
                Some((off, len)) if len <= MAX_RANGE => {
                    let blobs = self.blobs.clone();
                    blocking(move || {
                        let f = blobs.open_raw(id)?;
                        // Room for the answer's MAC, so it is appended without a copy.
                        let mut buf = Vec::with_capacity(len as usize + MAC_LEN);
                        buf.resize(len as usize, 0);
                        Source::read_exact_at(&f, &mut buf, off)?;
                        Ok(buf)
                    })
                    .await
                }
                _ => return plain(StatusCode::BAD_REQUEST, "bad range"),
            },
            Method::DELETE => {
                let blobs = self.blobs.clone();
                blocking(move || {
                    feiyun_blob::BlobStore::delete(&*blobs, id)?;
                    Ok(Vec::new())
                })
                .await
            }
            _ => return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        };
        match result {
            Ok(data) => self.answer(&sig, data),
            Err(BlobError::NotFound(_)) => plain(StatusCode::NOT_FOUND, "no such blob"),
            Err(BlobError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                plain(StatusCode::RANGE_NOT_SATISFIABLE, "range beyond the blob")
            }
            Err(BlobError::Corrupt { reason, .. }) => plain(StatusCode::BAD_REQUEST, &reason),
            Err(e) => {
                tracing::warn!(%id, error = %e, "cluster request failed");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
            }
        }
    }

    /// A lease on this node's invalidations (`/cache/lease?from=ADDR`), or an invalidation
    /// from the node that committed a change (`/cache/invalidate`). Neither changes stored
    /// data, and a replay only grants a lease again or drops cached rows again, so they
    /// carry no nonce; the body is authenticated like an upload's.
    async fn cache_request(&self, sig: &[u8; 32], req: Request<Incoming>) -> Answer {
        let Some(cache) = self.cache.get() else {
            return plain(StatusCode::NOT_FOUND, "no row cache on this node");
        };
        if req.method() != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let from = req
            .headers()
            .get("x-feiyun-node")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let max = match path.as_str() {
            "/cache/lease" => MAC_LEN,
            _ => MAX_CACHE_MESSAGE + MAC_LEN,
        };
        let body = match Limited::collect(req.into_body(), max).await {
            Ok(b) if b.len() >= MAC_LEN => b,
            _ => return plain(StatusCode::BAD_REQUEST, "bad cache message"),
        };
        let (data, tag) = body.split_at(body.len() - MAC_LEN);
        let mut mac = self.secret.body_mac("body", sig);
        mac.update(data);
        if mac.verify_slice(tag).is_err() {
            return plain(StatusCode::FORBIDDEN, "cache message failed its MAC");
        }
        match path.as_str() {
            "/cache/lease" => {
                let Some(addr) = query.strip_prefix("from=").filter(|a| !a.is_empty()) else {
                    return plain(StatusCode::BAD_REQUEST, "lease without an address");
                };
                match cache.grant(&from, addr) {
                    Some(answer) => self.answer(sig, answer),
                    None => plain(StatusCode::CONFLICT, "lease refused for now"),
                }
            }
            "/cache/invalidate" => match cache.apply_invalidation(data) {
                Ok(()) => self.answer(sig, Vec::new()),
                Err(why) => plain(StatusCode::BAD_REQUEST, why),
            },
            _ => plain(StatusCode::NOT_FOUND, "no such resource"),
        }
    }

    /// Stores an uploaded copy: written as it arrives (the last 32 bytes held back, being
    /// the MAC), fsynced and named only once the MAC holds.
    async fn receive(
        &self,
        sig: &[u8; 32],
        id: BlobId,
        mut body: Incoming,
    ) -> Result<Vec<u8>, BlobError> {
        let blobs = self.blobs.clone();
        let (tx, mut rx) = mpsc::channel::<Bytes>(SEND_QUEUE);
        let writer = tokio::task::spawn_blocking(move || -> Result<_, BlobError> {
            let mut sink = blobs.create_raw(id)?;
            let mut failed = None;
            while let Some(chunk) = rx.blocking_recv() {
                // Keep draining after a failure so the sender is not left blocked.
                if failed.is_none()
                    && let Err(e) = io::Write::write_all(&mut sink, &chunk)
                {
                    failed = Some(e);
                }
            }
            match failed {
                Some(e) => Err(e.into()),
                None => Ok(sink),
            }
        });
        let mut mac = self.secret.body_mac("body", sig);
        let mut tail: Vec<u8> = Vec::with_capacity(2 * MAC_LEN);
        let mut broken = None;
        loop {
            let frame = match tokio::time::timeout(STALL, body.frame()).await {
                Err(_) => {
                    broken = Some("upload stalled");
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(_))) => {
                    broken = Some("upload cut off");
                    break;
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            tail.extend_from_slice(&data);
            if tail.len() > MAC_LEN {
                let ready = Bytes::copy_from_slice(&tail[..tail.len() - MAC_LEN]);
                tail.drain(..tail.len() - MAC_LEN);
                mac.update(&ready);
                if tx.send(ready).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
        }
        drop(tx);
        let sink = writer
            .await
            .map_err(|e| BlobError::Io(other(e.to_string())))??;
        if let Some(why) = broken {
            return Err(BlobError::Io(other(why)));
        }
        if tail.len() != MAC_LEN || mac.verify_slice(&tail).is_err() {
            return Err(BlobError::Corrupt {
                id,
                reason: "upload failed its MAC".into(),
            });
        }
        tokio::task::spawn_blocking(move || feiyun_blob::Sink::commit(Box::new(sink)))
            .await
            .map_err(|e| BlobError::Io(other(e.to_string())))??;
        Ok(Vec::new())
    }
}

/// Gives a connection's place in its address's count back when the connection ends.
struct AddressSlot(
    Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    std::net::IpAddr,
);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.lock()
            && let Some(n) = m.get_mut(&self.1)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<Vec<u8>, BlobError> + Send + 'static,
) -> Result<Vec<u8>, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Io(other(e.to_string())))?
}

/// `off=N&len=N`.
fn parse_range(query: &str) -> Option<(u64, u64)> {
    let (mut off, mut len) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=')? {
            ("off", v) => off = Some(v.parse().ok()?),
            ("len", v) => len = Some(v.parse().ok()?),
            _ => return None,
        }
    }
    Some((off?, len?))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    async fn server(dir: &std::path::Path, secret: &str) -> (String, Arc<LocalBlobStore>) {
        let blobs = Arc::new(LocalBlobStore::open(dir).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            PeerServer::new(blobs.clone(), ClusterSecret::new(secret), &addr).serve(listener),
        );
        (addr, blobs)
    }

    fn client(secret: &str) -> PeerClient {
        PeerClient::new(ClusterSecret::new(secret), "node-t", Handle::current())
    }

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|s| std::fs::read_dir(s.unwrap().path()).map_or(0, |d| d.count()))
            .sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_upload_read_and_delete_and_strangers_get_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _blobs) = server(dir.path(), "the-right-secret").await;
        let peers = client("the-right-secret");
        let id = BlobId::random();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (p, a, d) = (peers.clone(), addr.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            let mut s = p.upload(&a, id);
            for c in d.chunks(700_000) {
                s.write_all(c).unwrap();
            }
            s.finish().unwrap();
        })
        .await
        .unwrap();
        assert_eq!(peers.size(&addr, id).await.unwrap(), data.len() as u64);
        let got = peers.read(&addr, id, 1_000_000, 5000).await.unwrap();
        assert_eq!(&got[..], &data[1_000_000..1_005_000]);
        assert!(peers.read(&addr, id, 2_999_000, 5000).await.is_err());

        // An upload that does not end with its MAC replaces nothing.
        let (p, a) = (peers.clone(), addr.clone());
        tokio::task::spawn_blocking(move || {
            let mut s = p.upload(&a, id);
            s.write_all(b"other bytes").unwrap();
            drop(s);
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(peers.size(&addr, id).await.unwrap(), data.len() as u64);

        // Another secret: refused, reading, uploading and deleting alike.
        let stranger = client("some-other-secret");
        assert!(stranger.size(&addr, id).await.is_err());
        assert!(stranger.delete(&addr, id).await.is_err());
        let (p, a) = (stranger.clone(), addr.clone());
        let other = BlobId::random();
        let refused = tokio::task::spawn_blocking(move || {
            let mut s = p.upload(&a, other);
            let _ = s.write_all(b"payload");
            s.finish()
        })
        .await
        .unwrap();
        assert!(refused.is_err());
        assert!(matches!(
            peers.size(&addr, other).await.map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        ));

        peers.delete(&addr, id).await.unwrap();
        assert!(peers.size(&addr, id).await.is_err());
        assert_eq!(files(dir.path()), 0);
    }

    /// An upload dropped before its end (the writer failed, the client went away) leaves
    /// nothing behind: without the closing MAC the copy is never named.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _blobs) = server(dir.path(), "the-right-secret").await;
        let peers = client("the-right-secret");
        let id = BlobId::random();
        let (p, a) = (peers.clone(), addr.clone());
        tokio::task::spawn_blocking(move || {
            let mut s = p.upload(&a, id);
            s.write_all(&[7u8; 200_000]).unwrap();
            drop(s);
        })
        .await
        .unwrap();
        let t = std::time::Instant::now();
        while files(dir.path()) != 0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "a partial copy stayed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(peers.size(&addr, id).await.is_err());
    }

    /// A captured delete cannot be sent again, nor to another node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replayed_or_redirected_request_is_refused() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a1, _) = server(d1.path(), "the-right-secret").await;
        let (a2, _) = server(d2.path(), "the-right-secret").await;
        let peers = client("the-right-secret");
        let id = BlobId::random();
        let path = blob_path(id);
        let (req, _) = peers.request(Method::DELETE, &a1, &path, empty());
        let (parts, _) = req.into_parts();
        let send = |to: &str| {
            let mut b = Request::builder()
                .method(Method::DELETE)
                .uri(format!("http://{to}{path}"));
            for (k, v) in &parts.headers {
                b = b.header(k, v);
            }
            peers.http.request(b.body(empty()).unwrap())
        };
        assert_eq!(send(&a1).await.unwrap().status(), StatusCode::OK);
        assert_eq!(send(&a1).await.unwrap().status(), StatusCode::FORBIDDEN);
        assert_eq!(send(&a2).await.unwrap().status(), StatusCode::FORBIDDEN);

        // Cache messages (POST) are one-shot as well.
        let (req, _) = peers.request(Method::POST, &a1, "/cache/invalidate", empty());
        let (parts, _) = req.into_parts();
        let post = || {
            let mut b = Request::builder()
                .method(Method::POST)
                .uri(format!("http://{a1}/cache/invalidate"));
            for (k, v) in &parts.headers {
                b = b.header(k, v);
            }
            peers.http.request(b.body(empty()).unwrap())
        };
        // Authenticated (this node keeps no row cache), then refused as a replay.
        assert_eq!(post().await.unwrap().status(), StatusCode::NOT_FOUND);
        assert_eq!(post().await.unwrap().status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn ranges_parse_strictly() {
        assert_eq!(parse_range("off=5&len=10"), Some((5, 10)));
        for bad in [
            "",
            "off=5",
            "len=1",
            "off=-1&len=2",
            "off=1&len=2&x=3",
            "off=a&len=1",
        ] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }
}

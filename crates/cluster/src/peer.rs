//! Node-to-node blob traffic: the cluster listener's server and the client the other nodes
//! use, over plain HTTP/1.1 authenticated by the region's cluster secret.
//!
//! Every request carries `x-feiyun-node`, `x-feiyun-date` (Unix seconds, within five
//! minutes of the receiver's clock) and `x-feiyun-signature`, an HMAC-SHA256 under the
//! secret of the method, path, date and sender. Bodies are authenticated too, since the
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
/// Largest range one read asks for: a blob reader's largest read plus its frame trailers.
const MAX_RANGE: u64 = 32 * 1024 * 1024;
/// Chunks (each up to the frame writer's 1 MiB buffer) in flight to one replica.
const SEND_QUEUE: usize = 4;
/// A replica that takes no chunk for this long has failed.
const STALL: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A read, size or delete that has not answered by now has failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// A replica's answer to the end of an upload: its fsync of up to 5 GiB.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections the cluster listener serves at once.
const MAX_CONNECTIONS: usize = 512;

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

    fn sign(&self, method: &Method, path: &str, date: i64, from: &str) -> [u8; 32] {
        let mut m = self.mac();
        m.update(format!("feiyun-cluster-v1\n{method}\n{path}\n{date}\n{from}").as_bytes());
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
        let sig = self.secret.sign(&method, path, date, &self.me);
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("x-feiyun-node", &*self.me)
            .header("x-feiyun-date", date.to_string())
            .header("x-feiyun-signature", hex::encode(sig))
            .body(body)
            // Every part is ours and valid: an address that is no authority fails at send.
            .unwrap_or_else(|_| Request::new(empty()));
        (req, sig)
    }

    /// Sends a bodiless request and returns its authenticated answer (404: `NotFound`).
    async fn call(&self, method: Method, addr: &str, path: &str) -> io::Result<Bytes> {
        let (req, sig) = self.request(method, addr, path, empty());
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
        tokio::time::timeout(REQUEST_TIMEOUT, answer)
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

    /// Sends the body's MAC and waits for the replica to say it has fsynced the copy.
    pub fn finish(mut self) -> io::Result<()> {
        let tag: [u8; 32] = self.mac.clone().finalize().into_bytes().into();
        self.send(Bytes::copy_from_slice(&tag))?;
        self.tx = None;
        let Some(done) = self.done.take() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        match wait(&self.rt, async move {
            tokio::time::timeout(COMMIT_TIMEOUT, done).await
        }) {
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
}

type Answer = Response<Full<Bytes>>;

fn plain(status: StatusCode, text: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r
}

impl PeerServer {
    pub fn new(blobs: Arc<LocalBlobStore>, secret: ClusterSecret) -> Arc<Self> {
        Arc::new(Self { blobs, secret })
    }

    /// Accepts connections until the listener fails; each is served on its own task.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
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

    /// Checks the request's signature; returns it and the blob id it names.
    fn authenticate(
        &self,
        req: &Request<Incoming>,
    ) -> Result<([u8; 32], BlobId), (StatusCode, &'static str)> {
        let denied = || (StatusCode::FORBIDDEN, "bad cluster signature");
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let (Some(from), Some(date), Some(sig)) = (
            header("x-feiyun-node"),
            header("x-feiyun-date").and_then(|d| d.parse::<i64>().ok()),
            header("x-feiyun-signature").and_then(|s| hex::decode(s).ok()),
        ) else {
            return Err(denied());
        };
        if (unix_now() - date).abs() > SKEW_SECS {
            return Err((StatusCode::FORBIDDEN, "request date out of range"));
        }
        let path = req
            .uri()
            .path_and_query()
            .map_or("", |p| p.as_str())
            .to_owned();
        let mut m = self.secret.mac();
        m.update(
            format!(
                "feiyun-cluster-v1\n{}\n{path}\n{date}\n{from}",
                req.method()
            )
            .as_bytes(),
        );
        if m.verify_slice(&sig).is_err() {
            return Err(denied());
        }
        let id = req
            .uri()
            .path()
            .strip_prefix("/blob/")
            .and_then(BlobId::from_hex)
            .ok_or((StatusCode::NOT_FOUND, "no such resource"))?;
        let sig: [u8; 32] = sig.try_into().map_err(|_| denied())?;
        Ok((sig, id))
    }

    fn answer(&self, sig: &[u8; 32], mut data: Vec<u8>) -> Answer {
        let mut m = self.secret.body_mac("answer", sig);
        m.update(&data);
        data.extend_from_slice(&m.finalize().into_bytes());
        Response::new(Full::new(Bytes::from(data)))
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Answer {
        let (sig, id) = match self.authenticate(&req) {
            Ok(v) => v,
            Err((status, why)) => return plain(status, why),
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
                        let mut buf = vec![0u8; len as usize];
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
            Err(BlobError::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
                plain(StatusCode::CONFLICT, "blob exists")
            }
            Err(BlobError::Corrupt { reason, .. }) => plain(StatusCode::BAD_REQUEST, &reason),
            Err(e) => {
                tracing::warn!(%id, error = %e, "cluster request failed");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
            }
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

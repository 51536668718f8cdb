//! The server: wires the engines, the object service and the S3 edge into one HTTP listener,
//! and owns nothing else — the process lifecycle (start-up, readiness line, graceful
//! shutdown), connection limits, request ids, and the `/metrics` and `/health/*` endpoints.

mod bodies;
mod conn;
mod cors;
mod fc_identity;
mod guard;
pub mod keys;
mod metrics;
mod oidc_keys;
mod reject;
mod screening;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use feiyun_blob::LocalBlobStore;
use feiyun_common::{Config, CredentialSource, RootCredentials};
use feiyun_iam::SecureTransport;
use feiyun_iam::{Iam, RootKey};
use feiyun_iamapi::QueryApi;
use feiyun_meta::RedbStore;
use feiyun_oss::{ObjectService, OssConfig};
use feiyun_s3api::{
    Authorize, BucketAccessCache, ClientAddr, FeiyunS3, IamAuth, OpSlot, RequestId,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::reject::{
    add_request_id_to_error, home_unreachable, plain, redirect_response, reject_oversized_xml,
    throttle_response,
};
use crate::screening::Edge;

/// Most bytes of an XML request body (DeleteObjects with 1000 maximal keys fits).
const MAX_XML_BODY: usize = 4 * 1024 * 1024;
/// A client must send its request headers within this time (slow-loris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the metadata store: {0}")]
    Meta(#[from] feiyun_meta::MetaError),
    #[error("cannot open the blob store: {0}")]
    Blob(#[from] feiyun_blob::BlobError),
    #[error("start-up recovery failed: {0}")]
    Recovery(#[from] feiyun_oss::OssError),
    #[error("root credentials: {0}")]
    Credentials(#[from] feiyun_common::CredentialError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid virtual-host domain {0:?}")]
    Domain(String),
    #[error("{0}")]
    Webhook(#[from] feiyun_notify::NotifyError),
    #[error("cannot load identities: {0}")]
    Iam(#[from] feiyun_iam::IamError),
    #[error("OpenID Connect provider: {0}")]
    Oidc(String),
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] feiyun_audit::AuditError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("function service: {0}")]
    Functions(String),
    #[error("replication: {0}")]
    Replication(String),
}

type EmbeddedOss = ObjectService<RedbStore, LocalBlobStore>;

/// A started region: bound, recovered, ready to serve.
pub struct Server {
    listeners: Vec<Listener>,
    self_signed: Option<std::path::PathBuf>,
    app: Arc<App>,
    credentials: (RootCredentials, CredentialSource),
    config: Config,
}

struct App {
    s3: S3Service,
    audit: feiyun_audit::AuditLog,
    guard: guard::AuthGuard,
    query: QueryApi<RedbStore>,
    oss: Arc<EmbeddedOss>,
    fc: Arc<feiyun_fc::Functions<RedbStore>>,
    replication: Arc<feiyun_replication::Replication<RedbStore, LocalBlobStore>>,
    /// `replication_proxy_reads`: a read that finds nothing asks the bucket's replica peers.
    proxy_reads: bool,
    hosts: VirtualHosts,
    /// Memory for bodies read before their signature is checked, shared by all requests.
    preauth: bodies::PreauthBudget,
    /// The region's name, which every credential scope must carry.
    region: String,
    metrics_token: Option<feiyun_common::Secret>,
    /// Refuse requests while the audit log cannot be written.
    audit_fail_closed: bool,
    /// Verifies the marks on functions' calls to the region.
    fc_call_key: [u8; 32],
    metrics: Metrics,
    ready: std::sync::atomic::AtomicBool,
}

impl Server {
    /// Opens the data directory (running crash recovery) and binds the listener.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        // TLS first: bad certificate settings fail before anything else is opened or made.
        let tls = tls::acceptor(&config)?;
        let self_signed = tls.as_ref().and_then(|(_, path)| path.clone());
        let acceptor = tls.map(|(a, _)| a);
        let configured = config.root_access_key.clone().zip(
            config
                .root_secret_key
                .as_ref()
                .map(|s| s.expose().to_owned()),
        );
        let credentials = RootCredentials::load_or_create(dir, configured)?;
        let meta = RedbStore::open(&dir.join("meta.redb"))?;
        let master = keys::master_key(&config, &meta).await?;
        let audit_key = keys::audit_key(&master);
        let artifact_key = master.derive("fc artifacts");
        let blobs = LocalBlobStore::open(&dir.join("blobs"))?;
        let oss: Arc<EmbeddedOss> = ObjectService::open(
            meta,
            blobs,
            OssConfig {
                region: config.region.clone(),
                inline_threshold: config.inline_threshold,
                lifecycle_day_ms: (config.lifecycle_day_secs as i64).saturating_mul(1000),
                encrypt_at_rest: config.encrypt_at_rest,
            },
            master,
        )
        .await?;
        if !config.encrypt_at_rest {
            tracing::warn!(
                "encrypt_at_rest is off: objects written without SSE headers or a bucket default are stored in plaintext"
            );
        }
        oss.spawn_janitor();
        // Data keys sealed under a rotated KMS key move to its newest version in the
        // background, on the lifecycle worker's schedule.
        oss.spawn_rewrap(std::time::Duration::from_secs(
            config.lifecycle_interval_secs,
        ));
        oss.spawn_lifecycle(std::time::Duration::from_secs(
            config.lifecycle_interval_secs,
        ));
        let targets = config
            .webhooks
            .iter()
            .map(|(id, url)| feiyun_notify::Target::new(id, url))
            .collect::<Result<Vec<_>, _>>()?;
        let target_ids = targets.iter().map(|t| t.id.clone()).collect();
        feiyun_notify::spawn(
            oss.clone(),
            targets,
            // Function triggers and replication follow the log too; it is not trimmed past them.
            vec![
                feiyun_fc::triggers::CONSUMER.to_owned(),
                feiyun_replication::worker::CONSUMER.to_owned(),
            ],
            std::time::Duration::from_secs(config.event_retention_secs),
        )?;
        let mut metrics = Metrics::new(oss.stats().clone());
        let replication = feiyun_replication::Replication::open(oss.clone())
            .await
            .map_err(|e| ServerError::Replication(e.to_string()))?;
        replication.register(metrics.registry_mut());
        replication.spawn(config.replication_rpo_secs.map(Duration::from_secs));
        let kms = oss.kms().clone();
        spawn_kms_purge(
            kms.clone(),
            Duration::from_secs(config.lifecycle_day_secs.clamp(1, 3600)),
        );

        let iam = Iam::open(
            oss.meta().clone(),
            RootKey {
                access_key: credentials.0.access_key.clone(),
                secret_key: credentials.0.secret_key.clone(),
            },
            kms.clone(),
            config.account_id.clone(),
        )
        .await?;
        replication.set_iam(iam.clone());
        if let Some(key) = keys::backup_key(&config)? {
            replication.set_backup_key(key);
        }

        let host = feiyun_fc::host::ObjectHost::open(oss.clone(), iam.default_account())
            .await
            .map_err(|e| ServerError::Functions(e.to_string()))?;
        let mut fc_settings = feiyun_fc::Settings::new(&config.region, dir);
        fc_settings.stable_window = Duration::from_secs(config.fc_scale_window_secs);
        fc_settings.idle = Duration::from_secs(config.fc_idle_secs);
        fc_settings.allowed_networks = config
            .fc_allowed_networks
            .iter()
            .map(|n| {
                feiyun_fc::outbound::Network::parse(n).ok_or_else(|| {
                    ServerError::Functions(format!("fc_allowed_networks: {n:?} is not a CIDR"))
                })
            })
            .collect::<Result<_, _>>()?;
        let fc_call_key: [u8; 32] = rand::random();
        fc_settings.call_key = fc_call_key;
        fc_settings.artifact_key = artifact_key;
        fc_settings.memory_budget_mib = config
            .fc_memory_budget_mib
            .unwrap_or_else(|| physical_memory_mib().map_or(4096, |m| m / 2))
            .max(1);
        let fc = feiyun_fc::Functions::open(oss.meta().clone(), Arc::new(host), fc_settings)
            .map_err(|e| ServerError::Functions(e.to_string()))?;
        fc.meter().register(metrics.registry_mut());
        // One cache of bucket policies for S3 requests and for triggers' object reads: the
        // operations that change a policy invalidate it for both.
        let bucket_access = Arc::new(BucketAccessCache::default());
        fc.set_identities(Arc::new(fc_identity::FcIdentities {
            iam: iam.clone(),
            authorize: Authorize::new(iam.clone(), oss.clone(), bucket_access.clone()),
        }));
        fc.set_own_hosts(config.domains.clone());
        fc.set_route_domains(config.fc_domains.clone());

        // The writer thread ends when the last sender is dropped; `serve` flushes it first.
        let (audit, _writer) = feiyun_audit::AuditLog::open(&dir.join("audit"), audit_key)?;
        metrics.watch_audit(audit.health().clone());
        let oidc = match (&config.oidc_issuer, &config.oidc_jwks) {
            (Some(issuer), Some(jwks)) => {
                let oidc = Arc::new(
                    feiyun_iam::oidc::Oidc::new(issuer, jwks, config.oidc_audiences.clone())
                        .map_err(|e| ServerError::Oidc(e.to_string()))?,
                );
                oidc_keys::start(oidc.clone()).await;
                Some(oidc)
            }
            (None, None) => None,
            _ => {
                return Err(ServerError::Oidc(
                    "set both oidc_issuer and oidc_jwks (FEIYUN_OIDC_ISSUER, FEIYUN_OIDC_JWKS)"
                        .into(),
                ));
            }
        };
        let mut builder = S3ServiceBuilder::new(
            FeiyunS3::new(oss.clone())
                .with_webhook_targets(target_ids)
                .with_bucket_access(bucket_access.clone())
                .with_default_account(iam.default_account())
                .with_sse_c_over_http(config.sse_c_over_http)
                .with_peers(replication.clone()),
        );
        builder.set_auth(IamAuth::new(iam.clone()));
        builder.set_access(Authorize::new(iam.clone(), oss.clone(), bucket_access));
        builder.set_host(VirtualHosts::new(&config.domains)?);
        let mut s3_config = s3s::config::S3Config::default();
        s3_config.xml_max_body_size = MAX_XML_BODY;
        // POST Object is refused before s3s sees it; should one slip through, s3s must not
        // buffer gigabytes of it.
        s3_config.post_object_max_file_size = 0;
        s3_config.form_max_fields_size = 64 * 1024;
        s3_config.form_max_field_size = 16 * 1024;
        builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
            s3_config,
        ))));
        let s3 = builder.build();

        let mut listeners = Vec::new();
        match (config.tls_listen, acceptor) {
            (Some(tls_addr), Some(a)) => {
                listeners.push(Listener::bind(config.listen, None).await?);
                listeners.push(Listener::bind(tls_addr, Some(a)).await?);
            }
            // Certificates without a second address: the one listener speaks HTTPS.
            (_, a) => listeners.push(Listener::bind(config.listen, a).await?),
        }
        // Functions call the region back over plain HTTP when it has such a listener (a
        // guest cannot trust a self-signed certificate), on loopback when bound to any
        // address.
        if let Some(l) = listeners
            .iter()
            .find(|l| l.tls.is_none())
            .or(listeners.first())
        {
            let scheme = if l.tls.is_some() { "https" } else { "http" };
            let mut addr = l.addr;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            fc.set_endpoint(format!("{scheme}://{addr}"));
        }
        Ok(Self {
            listeners,
            self_signed,
            app: Arc::new(App {
                s3,
                audit,
                guard: guard::AuthGuard::default(),
                query: QueryApi::new(iam)
                    .with_min_session_secs(config.sts_min_session_secs)
                    .with_oidc(oidc)
                    .with_kms(kms)
                    .with_key_users(oss.clone()),
                oss,
                fc,
                replication,
                proxy_reads: config.replication_proxy_reads,
                hosts: VirtualHosts::new(&config.domains)?,
                preauth: bodies::PreauthBudget::default(),
                region: config.region.clone(),
                metrics_token: config.metrics_token.clone(),
                audit_fail_closed: config.audit_fail_closed,
                fc_call_key,
                metrics,
                ready: std::sync::atomic::AtomicBool::new(true),
            }),
            credentials,
            config,
        })
    }

    /// The address of the first listener (`listen`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].addr
    }

    /// `http://ADDR` or `https://ADDR` per listener, `listen` first.
    pub fn endpoints(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|l| {
                let scheme = if l.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", l.addr)
            })
            .collect()
    }

    /// The generated certificate, when `tls_self_signed` is on: clients trust it as their CA.
    pub fn self_signed_cert(&self) -> Option<&std::path::Path> {
        self.self_signed.as_deref()
    }

    /// The credentials, and whether they were generated just now (print them once).
    pub fn credentials(&self) -> &(RootCredentials, CredentialSource) {
        &self.credentials
    }

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

impl App {
    /// `/metrics` names functions, buckets' traffic and peers: with `metrics_token` set it
    /// needs `Authorization: Bearer TOKEN`; without one, only loopback clients are served.
    fn metrics_refused(
        &self,
        headers: &http::HeaderMap,
        peer: SocketAddr,
    ) -> Option<Response<s3s::Body>> {
        match &self.metrics_token {
            Some(token) => {
                let presented = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                let ok = feiyun_iam::sigv4::constant_time_eq(
                    presented.trim().as_bytes(),
                    token.expose().as_bytes(),
                );
                (!ok).then(|| {
                    let mut r = plain(StatusCode::UNAUTHORIZED, "metrics need a bearer token\n");
                    r.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Bearer"),
                    );
                    r
                })
            }
            None => (!peer.ip().is_loopback()).then(|| {
                plain(
                    StatusCode::FORBIDDEN,
                    "metrics are served to loopback only unless metrics_token is set\n",
                )
            }),
        }
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> Response<s3s::Body> {
        let start = Instant::now();
        req.extensions_mut().insert(SecureTransport(secure));
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = req.uri().path();
        // A host name a function routes belongs to that function, whatever the path.
        let routed = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(req.uri().authority().map(|a| a.as_str()))
            .and_then(|host| self.fc.route(host, path));
        // `/metrics` and `/health/*` answer unsigned GETs only, so a bucket named "metrics" or
        // "health" stays reachable by signed S3 requests.
        if routed.is_none()
            && req.method() == http::Method::GET
            && !is_signed(&req)
            && let Some(r) = self.builtin(path, req.headers(), peer)
        {
            return r;
        }
        if self.audit_fail_closed && self.audit.health().failing() {
            // Fail closed: nothing is served that could not be audited.
            let resp = reject::s3_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The audit log cannot be written; requests are refused until it can.",
                &id,
            );
            self.metrics
                .observe("AuditClosed", 503, start.elapsed().as_secs_f64());
            return resp;
        }
        if routed.is_none() && req.method() == http::Method::OPTIONS {
            let mut resp = cors::preflight(&self.oss, &self.hosts, &req, &id).await;
            if let Ok(v) = http::HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-amz-request-id", v);
            }
            let d = feiyun_audit::Decided {
                principal: "anonymous".into(),
                action: "PreflightRequest".into(),
                resource: req.uri().path().to_owned(),
                decision: if resp.status().is_success() {
                    "Allow"
                } else {
                    "ImplicitDeny"
                }
                .into(),
                ..Default::default()
            };
            self.audit(&id, peer, "PreflightRequest", 0, &resp, Some(d))
                .await;
            self.metrics.observe(
                "PreflightRequest",
                resp.status().as_u16(),
                start.elapsed().as_secs_f64(),
            );
            return resp;
        }
        let claimed = guard::claimed_key(req.headers(), req.uri().query());
        let service = feiyun_iamapi::service_of(req.method(), req.uri().path(), req.headers());
        let edge = if routed.is_some() || feiyun_fc::api::is_fc_path(req.uri().path()) {
            Edge::Functions
        } else if feiyun_replication::api::is_path(req.uri().path()) {
            Edge::Replication
        } else {
            match service {
                Some(feiyun_iamapi::Service::Kms) => Edge::Kms,
                Some(_) => Edge::Query,
                None => Edge::S3,
            }
        };
        let auth_kind = match self.screen(&req, edge) {
            Ok(kind) => kind,
            Err(e) => {
                let resp = edge.screen_error(&e, req.uri().query(), &id);
                self.audit(&id, peer, "Rejected", 0, &resp, None).await;
                self.metrics.observe(
                    "Rejected",
                    resp.status().as_u16(),
                    start.elapsed().as_secs_f64(),
                );
                return resp;
            }
        };
        req.extensions_mut().insert(auth_kind);
        // A peer region's relay mark: honoured only when its MAC and holder check out; it
        // stops forwarding and carries the original client's address and TLS state.
        let relayed = match req
            .headers()
            .get(feiyun_replication::home::FORWARDED_HEADER)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
        {
            None => None,
            Some(mark) => {
                match self
                    .query
                    .verify_relay(&mark, req.method(), req.uri(), req.headers())
                {
                    Ok(m) => Some(m),
                    Err(e) => {
                        let resp = reject::s3_error(
                            StatusCode::FORBIDDEN,
                            "AccessDenied",
                            &e.message,
                            &id,
                        );
                        self.audit(&id, peer, "Rejected", 0, &resp, None).await;
                        return resp;
                    }
                }
            }
        };
        // Policies judge the client the relaying region saw, not the relaying region.
        let (mut peer, secure) = match &relayed {
            Some(m) => (
                m.client_ip.map_or(peer, |ip| SocketAddr::new(ip, 0)),
                m.secure.unwrap_or(secure),
            ),
            None => (peer, secure),
        };
        // A function calling its region arrives over loopback; it must not pass for a
        // loopback client in `aws:SourceIp` conditions. Its source is no address at all.
        if let Some(mark) = req.headers().get(feiyun_fc::outbound::CALL_HEADER) {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let verified = mark.to_str().ok().and_then(|m| {
                feiyun_fc::outbound::verify_call(
                    &self.fc_call_key,
                    m,
                    req.method().as_str(),
                    pq,
                    now,
                )
            });
            if verified.is_none() {
                let resp = reject::s3_error(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "x-feiyun-function-call is set only by the region's own function runtime",
                    &id,
                );
                self.audit(&id, peer, "Rejected", 0, &resp, None).await;
                return resp;
            }
            peer = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
        }
        req.extensions_mut().insert(SecureTransport(secure));
        if let Some(wait) = self.throttled(peer, claimed.as_deref()) {
            let resp = throttle_response(service.is_some(), wait, &id);
            let d = feiyun_audit::Decided {
                principal: claimed.clone().unwrap_or_else(|| "anonymous".into()),
                access_key: claimed.clone().unwrap_or_default(),
                decision: "Throttled".into(),
                ..Default::default()
            };
            self.audit(&id, peer, "Throttled", 0, &resp, Some(d)).await;
            self.metrics.observe(
                "Throttled",
                resp.status().as_u16(),
                start.elapsed().as_secs_f64(),
            );
            return resp;
        }
        if routed.is_some() || feiyun_fc::api::is_fc_path(req.uri().path()) {
            let audit = feiyun_audit::Slot::default();
            let bytes_in = content_length(req.headers());
            let (mut resp, op) = self.functions(req, peer, &audit, routed).await;
            if let Ok(v) = http::HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-amzn-requestid", v);
            }
            let decided = audit.take();
            self.judge(peer, claimed.as_deref(), resp.status(), decided.as_ref());
            self.audit(&id, peer, op, bytes_in, &resp, decided).await;
            self.metrics
                .observe(op, resp.status().as_u16(), start.elapsed().as_secs_f64());
            return resp;
        }
        if feiyun_replication::api::is_path(req.uri().path()) {
            let audit = feiyun_audit::Slot::default();
            let (mut resp, op) = self.replication(req, peer, &audit).await;
            if let Ok(v) = http::HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-amzn-requestid", v);
            }
            let decided = audit.take();
            self.judge(peer, claimed.as_deref(), resp.status(), decided.as_ref());
            self.audit(&id, peer, op, 0, &resp, decided).await;
            self.metrics
                .observe(op, resp.status().as_u16(), start.elapsed().as_secs_f64());
            return resp;
        }
        if let Some(service) = service {
            let audit = feiyun_audit::Slot::default();
            let bytes_in = content_length(req.headers());
            let resp = self.query(service, req, peer, &id, &audit).await;
            let decided = audit.take();
            self.judge(peer, claimed.as_deref(), resp.status(), decided.as_ref());
            self.audit(&id, peer, "", bytes_in, &resp, decided).await;
            self.metrics.observe(
                "IamQuery",
                resp.status().as_u16(),
                start.elapsed().as_secs_f64(),
            );
            return resp;
        }
        if let Some(bucket) = self.bucket_for(&req) {
            let pq = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            if let Some(route) = self.replication.route(&bucket, relayed.is_some(), &pq) {
                let bytes_in = content_length(req.headers());
                let (op, mut resp) = match route {
                    feiyun_replication::home::Route::Redirect(location) => {
                        ("Redirected", redirect_response(&location, &bucket))
                    }
                    feiyun_replication::home::Route::Forward(home) => {
                        let client = feiyun_replication::RelayedFor {
                            client_ip: peer.ip(),
                            secure,
                        };
                        match self.replication.forward(&home, req, &client).await {
                            Ok(r) => ("Forwarded", r.map(s3s::Body::from)),
                            Err(e) => {
                                tracing::warn!(id = %id, bucket = %bucket, error = %e,
                                    "forwarding to the home region failed");
                                ("Forwarded", home_unreachable(&id))
                            }
                        }
                    }
                };
                if let Ok(v) = http::HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("x-amz-request-id", v);
                }
                // The home region authenticates the request and audits its decision; this
                // record says where it went.
                let d = feiyun_audit::Decided {
                    principal: claimed.clone().unwrap_or_else(|| "anonymous".into()),
                    access_key: claimed.clone().unwrap_or_default(),
                    resource: format!("arn:aws:s3:::{bucket}"),
                    decision: op.into(),
                    ..Default::default()
                };
                self.audit(&id, peer, op, bytes_in, &resp, Some(d)).await;
                self.metrics
                    .observe(op, resp.status().as_u16(), start.elapsed().as_secs_f64());
                return resp;
            }
        }
        let cors = cors::CorsRequest::of(&req, &self.hosts);
        if is_post_object(&req) {
            // s3s would buffer the whole form (file included) before checking its policy
            // signature; browser uploads wait for a streaming implementation.
            let resp = reject::s3_error(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "POST Object (browser form upload) is not supported by this region; use PUT or a presigned PUT URL.",
                &id,
            );
            self.audit(&id, peer, "PostObject", 0, &resp, None).await;
            self.metrics
                .observe("PostObject", 501, start.elapsed().as_secs_f64());
            return resp;
        }
        if let Some(resp) = reject_oversized_xml(&req, &id) {
            self.audit(
                &id,
                peer,
                "Rejected",
                content_length(req.headers()),
                &resp,
                None,
            )
            .await;
            self.metrics.observe(
                "Rejected",
                resp.status().as_u16(),
                start.elapsed().as_secs_f64(),
            );
            return resp;
        }
        let span = tracing::debug_span!("request", id = %id, method = %req.method(), %peer);
        let _entered = span.enter();
        let slot = OpSlot::default();
        req.extensions_mut().insert(RequestId(id.clone()));
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(ClientAddr(peer));
        let audit = feiyun_audit::Slot::default();
        req.extensions_mut().insert(audit.clone());
        let bytes_in = content_length(req.headers());
        drop(_entered);
        // A read may be answered by a peer holding a version not replicated here yet.
        let proxy = (self.proxy_reads
            && matches!(*req.method(), http::Method::GET | http::Method::HEAD)
            && relayed.is_none())
        .then(|| {
            let mut r = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
            *r.method_mut() = req.method().clone();
            *r.uri_mut() = req.uri().clone();
            *r.headers_mut() = req.headers().clone();
            r
        });
        let resp = match self.s3.call(req.map(s3s::Body::from)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(id = %id, error = ?e, "unhandled S3 service error");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
        };
        let mut resp = resp;
        if resp.status() == StatusCode::NOT_FOUND
            && let Some(read) = proxy
            && let Some(answer) = self.proxy_read(read, peer, secure).await
        {
            resp = answer;
        }
        if let Ok(v) = http::HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-amz-request-id", v);
        }
        add_request_id_to_error(&mut resp, &id);
        if let Some(c) = cors {
            c.decorate(&self.oss, &mut resp).await;
        }
        let op = slot
            .0
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or_else(|| "Unresolved".to_owned());
        let status = resp.status().as_u16();
        let decided = audit.take();
        self.judge(peer, claimed.as_deref(), resp.status(), decided.as_ref());
        self.audit(&id, peer, &op, bytes_in, &resp, decided).await;
        self.metrics
            .observe(&op, status, start.elapsed().as_secs_f64());
        if resp.status().is_server_error() {
            tracing::warn!(id = %id, op, status, "request failed");
        } else {
            tracing::debug!(id = %id, op, status, elapsed_us = start.elapsed().as_micros() as u64, "request");
        }
        resp
    }

    /// An IAM or STS query request: read the (bounded) form body, answer in XML.
    async fn query(
        &self,
        service: feiyun_iamapi::Service,
        req: Request<Incoming>,
        peer: SocketAddr,
        id: &str,
        audit: &feiyun_audit::Slot,
    ) -> Response<s3s::Body> {
        let (parts, body) = req.into_parts();
        // Query forms are signed over their body's hash: read (bounded) before the check.
        let body = match self
            .preauth
            .read(&parts.headers, body, feiyun_iamapi::MAX_BODY, false)
            .await
        {
            Ok(b) => b,
            Err(bodies::BodyError::Busy) => {
                return reject::query_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "too many unauthenticated request bodies in flight; retry",
                    id,
                );
            }
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        };
        let (status, xml, code) = self
            .query
            .handle(service, &parts, body, peer, id, audit)
            .await;
        if !code.is_empty() {
            tracing::debug!(id, code, "query API error");
        }
        let mut r = plain(status, &xml);
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(if service == feiyun_iamapi::Service::Kms {
                "application/x-amz-json-1.1"
            } else {
                "text/xml"
            }),
        );
        if let Ok(v) = http::HeaderValue::from_str(id) {
            r.headers_mut().insert("x-amzn-requestid", v);
        }
        r
    }

    /// A Function Compute request: signed callers are authenticated here and authorized by
    /// the API per action; unsigned requests reach only public functions' invocation URLs
    /// and routes. `routed` is the function (and qualifier) a route gave the request.
    async fn functions(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        audit: &feiyun_audit::Slot,
        routed: Option<(String, Option<String>)>,
    ) -> (Response<s3s::Body>, &'static str) {
        use feiyun_fc::api::{self, ApiError, ApiResponse, Call};
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let limit = match routed {
            Some(_) => feiyun_fc::service::MAX_REQUEST,
            None => api::body_limit(&path),
        };
        let fail = |e: ApiError| {
            (
                fc_response(api::error_response(e, "Rejected")),
                "FcRejected",
            )
        };
        // A signed request is authenticated before its body is read whenever it claims the
        // body's hash; only small bodies are read first to check a signature over them.
        let signed = parts.headers.contains_key(http::header::AUTHORIZATION);
        let early = signed && parts.headers.contains_key("x-amz-content-sha256");
        let caller = if early {
            match self
                .query
                .sign_in_caller_head(&parts, peer, "fc:".into(), audit)
            {
                Ok(c) => Some(c),
                Err(e) => {
                    let r = api::error_response(
                        ApiError::new(e.status.as_u16(), e.code, e.message),
                        "AuthFailed",
                    );
                    return (fc_response(r), "AuthFailed");
                }
            }
        } else {
            None
        };
        let read_limit = if signed && !early {
            limit.min(bodies::MAX_UNCLAIMED_BODY)
        } else {
            limit
        };
        let body = match self
            .preauth
            .read(&parts.headers, body, read_limit, caller.is_some())
            .await
        {
            Ok(b) => b,
            Err(bodies::BodyError::Busy) => {
                return fail(ApiError::new(
                    503,
                    "ServiceException",
                    "too many unauthenticated request bodies in flight; retry",
                ));
            }
            Err(bodies::BodyError::TooLarge(n)) if n < limit => {
                return fail(ApiError::new(
                    413,
                    "RequestEntityTooLargeException",
                    format!("a body over {n} bytes must be signed with x-amz-content-sha256"),
                ));
            }
            Err(_) => {
                return fail(ApiError::new(
                    413,
                    "RequestEntityTooLargeException",
                    format!("the request body is larger than {limit} bytes"),
                ));
            }
        };
        if caller.is_some()
            && let Err(e) = feiyun_iamapi::check_payload(&parts.headers, &body)
        {
            return fail(ApiError::new(e.status.as_u16(), e.code, e.message));
        }
        let call = Call {
            method: &parts.method,
            path: &path,
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body: body.clone(),
        };
        let meta = self.oss.meta();
        let target = routed.as_ref().map(|(f, q)| (f.as_str(), q.as_deref()));
        let r: ApiResponse = if signed {
            let caller = match caller {
                Some(c) => Ok(c),
                None => self
                    .query
                    .sign_in_caller(&parts, &body, peer, "fc:".into(), audit),
            };
            match caller {
                Ok(caller) => {
                    let gate = SignedGate(&caller);
                    let r = match target {
                        Some((f, q)) => api::handle_route(&self.fc, &gate, f, q, call).await,
                        None => api::handle(&self.fc, meta, &gate, call).await,
                    };
                    caller.finish(
                        audit,
                        StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
                    );
                    r
                }
                Err(e) => api::error_response(
                    ApiError::new(e.status.as_u16(), e.code, e.message),
                    "AuthFailed",
                ),
            }
        } else if target.is_some() || api::invoked_function(&path).is_some() {
            let r = match target {
                Some((f, q)) => api::handle_route(&self.fc, &AnonymousGate, f, q, call).await,
                None => api::handle(&self.fc, meta, &AnonymousGate, call).await,
            };
            audit.set(feiyun_audit::Decided {
                principal: "anonymous".into(),
                action: "fc:InvokeFunction".into(),
                resource: path.clone(),
                // Only a public function answers an unsigned request.
                decision: if r.status == 404 || r.status == 403 {
                    "ImplicitDeny"
                } else {
                    "Allow"
                }
                .into(),
                ..Default::default()
            });
            r
        } else {
            api::error_response(
                ApiError::new(
                    403,
                    "MissingAuthenticationToken",
                    "Function Compute requests must be signed (SigV4)",
                ),
                "AuthFailed",
            )
        };
        let op = match r.action {
            "" => "Fc",
            a => a,
        };
        (fc_response(r), op)
    }

    /// The `/replication/` admin API (peer regions, status): signed requests only.
    async fn replication(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        audit: &feiyun_audit::Slot,
    ) -> (Response<s3s::Body>, &'static str) {
        use feiyun_replication::api::{self, ApiError};
        let (parts, body) = req.into_parts();
        let fail = |e: ApiError| {
            (
                json_response(api::error_response(e, "Rejected")),
                "ReplicationRejected",
            )
        };
        if !parts.headers.contains_key(http::header::AUTHORIZATION) {
            return fail(ApiError::new(
                403,
                "MissingAuthenticationToken",
                "replication requests must be signed (SigV4)",
            ));
        }
        // A site push carries every identity of the region; the rest are small documents.
        // Either is read only for a caller whose signature over its claimed hash holds.
        let limit = if parts.uri.path() == "/replication/site" {
            api::MAX_SITE_BODY
        } else {
            64 * 1024
        };
        let early = parts.headers.contains_key("x-amz-content-sha256");
        let caller = if early {
            match self
                .query
                .sign_in_caller_head(&parts, peer, "replication:".into(), audit)
            {
                Ok(c) => Some(c),
                Err(e) => {
                    let r = api::error_response(
                        ApiError::new(e.status.as_u16(), e.code, e.message),
                        "AuthFailed",
                    );
                    return (json_response(r), "AuthFailed");
                }
            }
        } else {
            None
        };
        let read_limit = if early {
            limit
        } else {
            limit.min(bodies::MAX_UNCLAIMED_BODY)
        };
        let body = match self
            .preauth
            .read(&parts.headers, body, read_limit, caller.is_some())
            .await
        {
            Ok(b) => b,
            Err(bodies::BodyError::Busy) => {
                return fail(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "too many unauthenticated request bodies in flight; retry",
                ));
            }
            Err(_) => {
                return fail(ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("the body is over {} KiB", read_limit / 1024),
                ));
            }
        };
        if caller.is_some()
            && let Err(e) = feiyun_iamapi::check_payload(&parts.headers, &body)
        {
            return fail(ApiError::new(e.status.as_u16(), e.code, e.message));
        }
        let caller = match caller {
            Some(c) => Ok(c),
            None => self
                .query
                .sign_in_caller(&parts, &body, peer, "replication:".into(), audit),
        };
        let r = match caller {
            Ok(caller) => {
                let gate = ReplicationGate(&caller);
                let r = api::handle(
                    &self.replication,
                    &gate,
                    &parts.method,
                    parts.uri.path(),
                    &parts.headers,
                    body,
                )
                .await;
                caller.finish(
                    audit,
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
                );
                r
            }
            Err(e) => api::error_response(
                ApiError::new(e.status.as_u16(), e.code, e.message),
                "AuthFailed",
            ),
        };
        let op = r.action;
        (json_response(r), op)
    }

    /// Appends the request's audit record. Requests that never reached authorization (a
    /// bad signature, an unknown key) are recorded as `AuthFailed` under the key they claimed.
    /// Asks the peers holding a replica of the bucket for a read that found nothing here;
    /// the first that has it answers (`x-feiyun-read-from` names it).
    async fn proxy_read(
        &self,
        read: Request<http_body_util::Empty<bytes::Bytes>>,
        client: SocketAddr,
        secure: bool,
    ) -> Option<Response<s3s::Body>> {
        let first = read
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()?;
        let host = read
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let bucket = match self.hosts.bucket_of(host) {
            Some(b) => b.to_owned(),
            None if !first.is_empty() => first.to_owned(),
            None => return None,
        };
        for peer in self.replication.read_peers(&bucket).await {
            let (parts, body) = read.clone().into_parts();
            let relayed_for = feiyun_replication::RelayedFor {
                client_ip: client.ip(),
                secure,
            };
            match self
                .replication
                .forward(&peer, Request::from_parts(parts, body), &relayed_for)
                .await
            {
                Ok(r) if r.status().is_success() => {
                    let mut r = r.map(s3s::Body::from);
                    if let Ok(v) = http::HeaderValue::from_str(&peer.record.name) {
                        r.headers_mut().insert("x-feiyun-read-from", v);
                    }
                    return Some(r);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(region = %peer.record.name, error = %e, "proxied read failed")
                }
            }
        }
        None
    }

    /// The bucket an S3 request addresses: its virtual host, or its path's first segment.
    fn bucket_for(&self, req: &Request<Incoming>) -> Option<String> {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(req.uri().authority().map(|a| a.as_str()));
        if let Some(b) = host.and_then(|h| self.hosts.bucket_of(h)) {
            return Some(b.to_owned());
        }
        let first = req.uri().path().trim_start_matches('/').split('/').next()?;
        (!first.is_empty()).then(|| first.to_owned())
    }

    async fn audit(
        &self,
        id: &str,
        peer: SocketAddr,
        op: &str,
        bytes_in: u64,
        resp: &Response<s3s::Body>,
        decided: Option<feiyun_audit::Decided>,
    ) {
        let d = decided.unwrap_or_else(|| feiyun_audit::Decided {
            principal: "unknown".into(),
            decision: "AuthFailed".into(),
            ..Default::default()
        });
        let record = feiyun_audit::AuditRecord {
            time: feiyun_audit::now_rfc3339(),
            request_id: id.to_owned(),
            tenant: d.tenant,
            principal: d.principal,
            access_key: d.access_key,
            source_ip: peer.ip().to_string(),
            operation: if op.is_empty() {
                d.action.clone()
            } else {
                op.to_owned()
            },
            action: d.action,
            resource: d.resource,
            decision: d.decision,
            statement: d.statement,
            status: resp.status().as_u16(),
            bytes_in,
            bytes_out: content_length(resp.headers()),
            items: d.items,
        };
        if self.audit.append(record).await.is_err() {
            tracing::error!(id, "audit writer stopped; record lost");
        }
    }

    /// Whether the source or the claimed key is backing off after failed authentications.
    fn throttled(&self, peer: SocketAddr, claimed: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let by_source = self.guard.blocked(&guard::Subject::Source(peer.ip()), now);
        let by_key = claimed.and_then(|k| {
            self.guard
                .blocked(&guard::Subject::Key(k.to_owned(), peer.ip()), now)
        });
        by_source.max(by_key)
    }

    /// Counts a failed authentication against the source and the key it claimed from that
    /// source; forgives the key there when it authenticated.
    fn judge(
        &self,
        peer: SocketAddr,
        claimed: Option<&str>,
        status: StatusCode,
        decided: Option<&feiyun_audit::Decided>,
    ) {
        let Some(key) = claimed else { return };
        let failed = decided.is_none_or(|d| d.decision == "AuthFailed");
        if failed && (status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST) {
            let now = Instant::now();
            self.guard.failure(guard::Subject::Source(peer.ip()), now);
            self.guard
                .failure(guard::Subject::Key(key.to_owned(), peer.ip()), now);
        } else if !failed {
            self.guard.success(key, peer.ip());
        }
    }

    fn builtin(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: SocketAddr,
    ) -> Option<Response<s3s::Body>> {
        match path {
            "/metrics" => {
                if let Some(refused) = self.metrics_refused(headers, peer) {
                    return Some(refused);
                }
                let mut r = plain(StatusCode::OK, &self.metrics.render());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Some(r)
            }
            "/health/live" => Some(plain(StatusCode::OK, "ok\n")),
            "/health/ready" => Some(if self.audit.health().failing() {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit log cannot be written\n",
                )
            } else if self.ready.load(std::sync::atomic::Ordering::SeqCst) {
                plain(StatusCode::OK, "ready\n")
            } else {
                plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            }),
            _ => None,
        }
    }
}

fn content_length(h: &http::HeaderMap) -> u64 {
    content_length_opt(h).unwrap_or(0)
}

fn content_length_opt(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// POST with a form body: S3's browser upload (the only multipart/form-data S3 request).
fn is_post_object<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
}

/// Signed the AWS way (a bearer token for `/metrics` is not a signature).
fn is_signed<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"AWS"))
        || req
            .uri()
            .query()
            .is_some_and(|q| q.contains("X-Amz-Signature=") || q.contains("Signature="))
}

/// A Function Compute caller who signed the request.
struct SignedGate<'a>(&'a feiyun_iamapi::Authenticated);

impl feiyun_fc::api::Gate for SignedGate<'_> {
    fn account(&self) -> Option<&str> {
        Some(self.0.account())
    }

    fn principal(&self) -> Option<&str> {
        Some(self.0.principal_arn())
    }

    fn authorize(&self, action: &str, resource: &str) -> Result<(), feiyun_fc::api::ApiError> {
        self.0.authorize(action, resource).map_err(|e| {
            feiyun_fc::api::ApiError::new(e.status.as_u16(), "AccessDeniedException", e.message)
        })
    }
}

struct ReplicationGate<'a>(&'a feiyun_iamapi::Authenticated);

impl feiyun_replication::api::Gate for ReplicationGate<'_> {
    fn is_root(&self) -> bool {
        self.0.is_root()
    }

    fn shared_key(&self, purpose: &str) -> [u8; 32] {
        self.0.shared_key(purpose)
    }

    fn authorize(
        &self,
        action: &str,
        resource: &str,
    ) -> Result<(), feiyun_replication::api::ApiError> {
        self.0.authorize(action, resource).map_err(|e| {
            feiyun_replication::api::ApiError::new(
                e.status.as_u16(),
                "AccessDeniedException",
                e.message,
            )
        })
    }
}

fn json_response(r: feiyun_replication::api::ApiResponse) -> Response<s3s::Body> {
    let mut resp = Response::new(s3s::Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// An unsigned request: it may invoke public functions and nothing else.
struct AnonymousGate;

impl feiyun_fc::api::Gate for AnonymousGate {
    fn account(&self) -> Option<&str> {
        None
    }

    fn principal(&self) -> Option<&str> {
        None
    }

    fn authorize(&self, action: &str, _resource: &str) -> Result<(), feiyun_fc::api::ApiError> {
        Err(feiyun_fc::api::ApiError::new(
            403,
            "AccessDeniedException",
            format!("{action} needs a signed request"),
        ))
    }
}

fn fc_response(r: feiyun_fc::api::ApiResponse) -> Response<s3s::Body> {
    let mut resp = Response::new(s3s::Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

/// Virtual-hosted-style addressing: `BUCKET.DOMAIN[:port]` for a configured `DOMAIN` names a
/// bucket; every other host (an IP, the bare domain, an unknown name) is path-style. Unlike a
/// catch-all, an unconfigured DNS name never turns into a bucket name.
struct VirtualHosts {
    domains: Vec<String>,
}

impl VirtualHosts {
    fn new(domains: &[String]) -> Result<Self, ServerError> {
        for d in domains {
            if d.is_empty() || d.contains(':') || d.starts_with('.') {
                return Err(ServerError::Domain(d.clone()));
            }
        }
        Ok(Self {
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        })
    }

    pub(crate) fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        if host.starts_with('[') {
            return None; // An IPv6 literal never names a bucket.
        }
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        self.domains.iter().find_map(|d| {
            let bucket = name.strip_suffix(d.as_str())?.strip_suffix('.')?;
            (!bucket.is_empty()).then_some(bucket)
        })
    }
}

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let vh = s3s::host::VirtualHost::new(host);
        Ok(match self.bucket_of(host) {
            Some(bucket) => vh.with_bucket(bucket),
            None => vh,
        })
    }
}

/// The machine's memory in MiB (Linux `/proc/meminfo`), for default budgets.
fn physical_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Deletes keys whose deletion waiting period has ended, at start and then hourly.
fn spawn_kms_purge(kms: Arc<feiyun_kms::Kms<RedbStore>>, every: Duration) {
    tokio::spawn(async move {
        loop {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            match kms.purge_due(now).await {
                Ok(ids) => {
                    for id in ids {
                        tracing::warn!(key = %id, "KMS key deleted after its waiting period");
                    }
                }
                Err(e) => tracing::error!(error = %e, "KMS key purge failed"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// One bound socket, plain or TLS.
struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    addr: SocketAddr,
}

impl Listener {
    async fn bind(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_host_table() {
        let v = VirtualHosts::new(&["localhost".into(), "s3.example.com".into()]).unwrap();
        let rows: &[(&str, Option<&str>)] = &[
            ("localhost:9000", None),
            ("localhost", None),
            ("127.0.0.1:9000", None),
            ("[::1]:9000", None),
            ("my-bucket.localhost:9000", Some("my-bucket")),
            ("a.b.s3.example.com", Some("a.b")),
            ("other.example.org", None),
            (".localhost", None),
        ];
        for (host, bucket) in rows {
            assert_eq!(v.bucket_of(host), *bucket, "{host}");
        }
    }
}

//! The server: wires the engines, the object service and the S3 edge into one HTTP listener,
//! and owns nothing else — the process lifecycle (start-up, readiness line, graceful
//! shutdown), connection limits, request ids, and the `/metrics` and `/health/*` endpoints.

mod blobs;
mod bodies;
mod cluster_edge;
mod conn;
mod cors;
mod fc_edge;
mod fc_identity;
mod guard;
mod handle;
mod invalidate;
pub mod keys;
mod legacy;
mod listen;
mod live_edge;
mod metrics;
mod oidc_keys;
mod reject;
mod replication_edge;
mod screening;
mod sql_edge;
mod store;
mod tls;
mod vhost;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use blobs::Blobs;
use feiyun_blob::LocalBlobStore;
use feiyun_cluster::rowcache::RowCache;
use feiyun_common::{Config, CredentialSource, RootCredentials};
use feiyun_iam::{Iam, RootKey};
use feiyun_iamapi::QueryApi;
use feiyun_meta::RedbStore;
use feiyun_oss::{ObjectService, OssConfig};
use feiyun_s3api::{Authorize, BucketAccessCache, FeiyunS3, IamAuth};
use s3s::service::{S3Service, S3ServiceBuilder};
pub use store::Store;

use crate::listen::Listener;
use crate::metrics::Metrics;
use crate::vhost::VirtualHosts;

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
    #[error("{0}")]
    MetaDatabase(String),
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
    #[error("SQL analytics: {0}")]
    Sql(String),
    #[error("cannot join the region: {0}")]
    Cluster(#[from] feiyun_cluster::ClusterError),
    #[error("data directory {0} is in use by another running process")]
    DataDirLocked(String),
    #[error("cannot listen for node-to-node traffic on {0}: {1}")]
    ClusterListen(SocketAddr, std::io::Error),
}

type EmbeddedOss = ObjectService<Store, Blobs>;

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
    query: QueryApi<Store>,
    oss: Arc<EmbeddedOss>,
    /// Owner of buckets created before accounts existed.
    default_account: String,
    fc: Arc<feiyun_fc::Functions<Store>>,
    /// SQL analytics (`POST /sql` here, the PostgreSQL protocol on `sql_listen`).
    sql: Arc<feiyun_sql::Sql>,
    replication: Arc<feiyun_replication::Replication<Store, Blobs>>,
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
    /// This node's place in a multi-node region (`--node-id`).
    membership: Option<Arc<feiyun_cluster::Membership<Store>>>,
    /// Held for the process's life: one process per data directory.
    _dir_lock: std::fs::File,
}

/// The SQL engine over this region's objects, authorized as S3 requests are.
fn open_sql(
    config: &Config,
    oss: &Arc<EmbeddedOss>,
    iam: &Arc<feiyun_iam::Iam<Store>>,
    buckets: &Arc<BucketAccessCache>,
    default_account: &str,
) -> Result<Arc<feiyun_sql::Sql>, ServerError> {
    let spill = config.data_dir.join("tmp").join("sql-spill");
    // Spill files of a previous run are dead: nothing reads them after a restart.
    let _ = std::fs::remove_dir_all(&spill);
    std::fs::create_dir_all(&spill).map_err(|source| ServerError::DataDir {
        path: spill.display().to_string(),
        source,
    })?;
    let mut limits = feiyun_sql::Limits::new(spill);
    limits.memory_per_query = (config.sql_memory_mb as usize).saturating_mul(1024 * 1024);
    limits.timeout = Duration::from_secs(config.sql_timeout_secs);
    limits.per_account = config.sql_queries_per_account;
    let region = feiyun_sql::OssRegion {
        oss: oss.clone(),
        default_account: default_account.to_owned(),
    };
    let access = sql_edge::SqlAccess {
        authorize: Authorize::new(iam.clone(), oss.clone(), buckets.clone()),
        region: config.region.clone(),
    };
    let sql = feiyun_sql::Sql::new(Arc::new(region), Arc::new(access), limits)
        .map_err(|e| ServerError::Sql(e.to_string()))?;
    Ok(Arc::new(sql))
}

impl Server {
    /// Opens the data directory (running crash recovery) and binds the listener.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let dir_lock = lock_data_dir(dir)?;
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
        let recovery = if config.meta_quick_repair {
            feiyun_meta::Recovery::Quick
        } else {
            feiyun_meta::Recovery::Full
        };
        let meta = match &config.meta_url {
            None => Store::Embedded(RedbStore::open_with(&dir.join("meta.redb"), recovery)?),
            Some(url) => {
                let url = url.expose().to_owned();
                let opened = tokio::task::spawn_blocking(move || {
                    feiyun_meta_pg::PgStore::open(&url, feiyun_meta_pg::PoolOptions::default())
                })
                .await
                .map_err(|e| ServerError::MetaDatabase(e.to_string()))?;
                Store::Postgres(
                    opened.map_err(|e| ServerError::MetaDatabase(e.to_string()))?,
                    store::RowCacheSlot::default(),
                )
            }
        };
        // A lone process on a region's database would commit without the nodes' cache
        // invalidations, and they would serve rows it had changed.
        if config.node.is_none()
            && matches!(meta, Store::Postgres(..))
            && !feiyun_cluster::list_nodes(&meta)
                .map_err(|e| ServerError::MetaDatabase(e.to_string()))?
                .is_empty()
        {
            return Err(ServerError::MetaDatabase(
                "this database holds a multi-node region: start as one of its nodes (--node-id, --advertise)".into(),
            ));
        }
        let master = keys::master_key(&config, &meta).await?;
        let audit_key = keys::audit_key(&master);
        let artifact_key = master.derive("fc artifacts");
        let meta = Arc::new(meta);
        let local = LocalBlobStore::open(&dir.join("blobs"))?;
        let (blobs, membership) = match &config.node {
            None => (Blobs::Local(local), None),
            Some(node) => {
                let (blobs, membership) = start_node(&meta, local, node, dir).await?;
                (blobs, Some(membership))
            }
        };
        let oss: Arc<EmbeddedOss> = ObjectService::open(
            meta,
            blobs,
            OssConfig {
                region: config.region.clone(),
                inline_threshold: config.inline_threshold,
                lifecycle_day_ms: (config.lifecycle_day_secs as i64).saturating_mul(1000),
                encrypt_at_rest: config.encrypt_at_rest,
                node: config.node.as_ref().map(|n| n.id.clone()),
            },
            master,
        )
        .await?;
        if let Some(m) = &membership {
            spawn_event_horizon(&oss, m);
        }
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
        oss.set_legacy_connector(Arc::new(
            legacy::Connector::new(&config.live_allowed_networks)
                .map_err(ServerError::Replication)?,
        ));
        oss.spawn_live_copier(Duration::from_secs(config.live_copy_interval_secs));
        oss.spawn_live_write_through(Duration::from_millis(500));
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
                feiyun_oss::live::WRITE_THROUGH_CONSUMER.to_owned(),
            ],
            std::time::Duration::from_secs(config.event_retention_secs),
        )?;
        let mut metrics = Metrics::new(oss.stats().clone());
        if let Store::Postgres(pg, cache) = &**oss.meta() {
            metrics.watch_meta_commits(pg.commit_stats());
            if let Some(cache) = cache.get() {
                watch_row_cache(&mut metrics, cache);
            }
        }
        if let (Blobs::Cluster(b), Some(m)) = (oss.blobs(), &membership) {
            let m = m.clone();
            metrics.watch_cluster(b.stats().clone(), Arc::new(move || m.repair_backlog()));
        }
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
        oss.set_live_authority(Arc::new(legacy::LiveAuthority {
            iam: iam.clone(),
            oss: Arc::downgrade(&oss),
            buckets: bucket_access.clone(),
        }));
        fc.set_identities(Arc::new(fc_identity::FcIdentities {
            iam: iam.clone(),
            authorize: Authorize::new(iam.clone(), oss.clone(), bucket_access.clone()),
        }));
        let sql = open_sql(&config, &oss, &iam, &bucket_access, &iam.default_account())?;
        if let Some(node) = &config.node {
            invalidate::spawn(
                oss.meta().clone(),
                node.id.clone(),
                invalidate::Caches {
                    iam: iam.clone(),
                    buckets: bucket_access.clone(),
                    kms: kms.clone(),
                    functions: fc.clone(),
                    replication: replication.clone(),
                },
            );
        }
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
        let iam_default_account = iam.default_account();
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
                default_account: iam_default_account,
                oss,
                fc,
                sql,
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
                membership,
                _dir_lock: dir_lock,
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
}

/// Takes an exclusive lock on `DATA/lock`: a second process on one data directory would
/// interleave its audit chain and, as a node, claim the same identity.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ServerError::DataDir {
            path: path.display().to_string(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(ServerError::DataDirLocked(dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(source)) => Err(ServerError::DataDir {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Serves this node's blob copies on the cluster listener, joins the region, and returns
/// the blob engine that places copies across its nodes.
async fn start_node(
    meta: &Arc<Store>,
    local: LocalBlobStore,
    node: &feiyun_common::NodeConfig,
    dir: &std::path::Path,
) -> Result<(Blobs, Arc<feiyun_cluster::Membership<Store>>), ServerError> {
    let local = Arc::new(local);
    let secret = feiyun_cluster::ClusterSecret::new(node.cluster_secret.expose());
    // Joining first refuses a taken id or address before the port could clash.
    let membership = join_region(meta, node, dir).await?;
    invalidate::set_node(&node.id);
    let listener = tokio::net::TcpListener::bind(node.cluster_listen)
        .await
        .map_err(|e| ServerError::ClusterListen(node.cluster_listen, e))?;
    let server = feiyun_cluster::PeerServer::new(local.clone(), secret.clone(), &node.advertise);
    let peers =
        feiyun_cluster::PeerClient::new(secret, &node.id, tokio::runtime::Handle::current());
    // A thirty-second of the machine's memory unless set: small objects live in these rows.
    let budget = node.row_cache_bytes.unwrap_or_else(|| {
        let mib = physical_memory_mib().map_or(64, |m| (m / 32).clamp(64, 4096));
        (mib as usize) << 20
    });
    if let Store::Postgres(_, slot) = &**meta
        && budget > 0
    {
        let cache = RowCache::new(&node.id, budget, peers.clone());
        let m = membership.clone();
        // Not after it left the region, nor once its own heartbeat lease ran out: the other
        // nodes may have removed it and stopped asking it for leases.
        cache.set_membership_check(Arc::new(move || m.is_ready()));
        server.set_cache(cache.clone());
        cache.spawn(membership.clone(), &node.advertise);
        slot.set(cache);
    }
    tokio::spawn(server.serve(listener));
    let blobs = feiyun_cluster::ClusterBlobStore::new(
        local,
        membership.clone(),
        peers,
        feiyun_cluster::ReplicaConfig {
            replicas: node.replicas,
            min_replicas: node.min_replicas,
            repair_after_secs: node.repair_after_secs,
            delete_grace_secs: node.blob_delete_grace_secs,
            erasure: node
                .erasure
                .map(|(k, m)| feiyun_cluster::erasure::Layout { k, m }),
            erasure_all: node.erasure_all,
        },
    );
    blobs.spawn_repair(Duration::from_secs(
        (node.repair_after_secs / 2).clamp(1, 60),
    ));
    Ok((Blobs::Cluster(blobs), membership))
}

fn watch_row_cache(metrics: &mut Metrics, cache: &Arc<RowCache>) {
    use std::sync::atomic::Ordering::Relaxed;
    type Read = fn(&feiyun_cluster::rowcache::RowCacheStats) -> u64;
    let series: [(&str, &str, Read); 4] = [
        (
            "row_cache_hits",
            "Object and bucket reads answered from the node's row cache",
            |s| s.hits.load(Relaxed),
        ),
        (
            "row_cache_misses",
            "Object and bucket reads that asked the database",
            |s| s.misses.load(Relaxed),
        ),
        (
            "row_cache_lease_waits",
            "Commits that waited out a lease because a node missed their invalidation",
            |s| s.lease_waits.load(Relaxed),
        ),
        (
            "row_cache_lapses",
            "Times the row cache was dropped because a lease or the node list lapsed",
            |s| s.lapses.load(Relaxed),
        ),
    ];
    for (name, help, read) in series {
        let c = cache.clone();
        metrics.watch_counter(name, help, Box::new(move || read(c.stats())));
    }
}

/// How often a node publishes its event horizon: the delay it adds to event delivery.
const HORIZON_EVERY: Duration = Duration::from_millis(150);

/// Makes event readers on this node wait for every node's commits, and publishes this
/// node's horizon for the others': each node numbers events on its own clock, so an id
/// below another node's newest may still be in flight here.
fn spawn_event_horizon(oss: &Arc<EmbeddedOss>, m: &Arc<feiyun_cluster::Membership<Store>>) {
    let others = m.clone();
    oss.set_other_event_horizon(move || others.others_horizon());
    let (oss, m) = (Arc::downgrade(oss), m.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HORIZON_EVERY).await;
            let Some(o) = oss.upgrade() else { return };
            let h = o.local_event_horizon();
            drop(o);
            if let Err(e) = m.publish_horizon(h).await {
                tracing::debug!(error = %e, "event horizon not published");
            }
        }
    });
}

/// Registers this process as a node of the region and starts its heartbeat.
async fn join_region(
    meta: &Arc<Store>,
    node: &feiyun_common::NodeConfig,
    dir: &std::path::Path,
) -> Result<Arc<feiyun_cluster::Membership<Store>>, ServerError> {
    let data_dir = dir.to_owned();
    let usage: Arc<dyn Fn() -> feiyun_cluster::LocalUsage + Send + Sync> = Arc::new(move || {
        let (capacity_bytes, free_bytes) = feiyun_cluster::disk_usage(&data_dir);
        let (blobs, blob_bytes) = feiyun_cluster::dir_usage(&data_dir.join("blobs"));
        feiyun_cluster::LocalUsage {
            capacity_bytes,
            free_bytes,
            blobs,
            blob_bytes,
        }
    });
    let measure = usage.clone();
    let first = tokio::task::spawn_blocking(move || measure())
        .await
        .unwrap_or_default();
    let spec = feiyun_cluster::NodeSpec {
        id: node.id.clone(),
        advertise: node.advertise.clone(),
        zone: node.zone.clone(),
        down_secs: node.down_secs,
        data_dir: dir.to_owned(),
    };
    let membership = feiyun_cluster::Membership::join(meta.clone(), spec, first).await?;
    // Once-per-region work runs on the holder of the background lease only.
    let leader = membership.clone();
    feiyun_common::background::set_gate(move || leader.leads());
    let fencer = membership.clone();
    feiyun_common::background::set_fence(move || fencer.fence());
    if let Err(e) = membership.try_lead().await {
        tracing::warn!(error = %e, "background lease not taken yet");
    }
    membership.spawn_heartbeat(usage);
    Ok(membership)
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
fn spawn_kms_purge(kms: Arc<feiyun_kms::Kms<Store>>, every: Duration) {
    tokio::spawn(async move {
        loop {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            if !feiyun_common::background::runs() {
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            match feiyun_common::background::fenced(kms.purge_due(now)).await {
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

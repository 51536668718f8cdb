//! Server configuration: one struct, filled in layers.
//!
//! The precedence is fixed by the command-line contract in PRODUCT.md: flags override
//! `FEIYUN_*` environment variables, which override the TOML file, which overrides defaults.
//! Each layer is an `Option` per field ([`ConfigOverrides`]) so that "not given" and "given as
//! the default value" stay distinguishable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
pub const DEFAULT_DATA_DIR: &str = "./feiyun-data";
pub const DEFAULT_REGION: &str = "us-east-1";

/// Upper bound on how long shutdown waits for in-flight requests.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Upper bound on concurrently served connections; beyond it, accepts wait.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Upper bound on connections one client address holds open at once.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub region: String,
    /// Base domains for virtual-hosted-style requests (`bucket.DOMAIN`).
    pub domains: Vec<String>,
    pub root_access_key: Option<String>,
    pub root_secret_key: Option<crate::Secret>,
    pub shutdown_grace_secs: u64,
    pub max_connections: usize,
    /// Largest object stored inline in the metadata store instead of a data file.
    pub inline_threshold: usize,
    /// Length of a "day" in seconds for lifecycle rules and KMS key-deletion waiting periods:
    /// 86400, or a few seconds to test them quickly.
    pub lifecycle_day_secs: u64,
    /// Seconds between lifecycle worker runs.
    pub lifecycle_interval_secs: u64,
    /// Seconds between passes of a live migration's copier (`feiyun migrate live`).
    pub live_copy_interval_secs: u64,
    /// Networks (CIDR) a live migration's legacy store may be in besides public addresses.
    pub live_allowed_networks: Vec<String>,
    /// The PostgreSQL-protocol listener of SQL analytics (`None`: off).
    pub sql_listen: Option<SocketAddr>,
    /// DataFusion's memory pool per SQL statement, in MiB.
    pub sql_memory_mb: u64,
    /// Seconds a SQL statement may run.
    pub sql_timeout_secs: u64,
    /// SQL statements one account may run at once.
    pub sql_queries_per_account: usize,
    /// Webhook targets for bucket notifications: (id, http URL), sorted by id.
    pub webhooks: Vec<(String, String)>,
    /// Events older than this are dropped from the log even if a target has not taken them.
    pub event_retention_secs: u64,
    /// Replication lag (age of the oldest unreplicated change) above which the log carries
    /// an alert line; `None`: no alert.
    pub replication_rpo_secs: Option<u64>,
    /// A GET or HEAD that finds nothing here, in a bucket replicating to a same-named bucket
    /// of a peer, is answered by the peer when it has it (a version not replicated yet).
    pub replication_proxy_reads: bool,
    /// The default account's 12-digit id, used when the region first starts (random when
    /// unset). Regions of one site (IAM replicated between them) share it.
    pub account_id: Option<String>,
    /// Shortest STS session AssumeRole/GetSessionToken grant (AWS: 900). Tests lower it
    /// to see sessions expire.
    pub sts_min_session_secs: u64,
    /// The OpenID Connect issuer AssumeRoleWithWebIdentity trusts (its `iss`), if any.
    pub oidc_issuer: Option<String>,
    /// Where its signing keys are: a JWKS file or an `http://` or `https://` URL.
    pub oidc_jwks: Option<String>,
    /// Accepted `aud` values (client ids); empty accepts any.
    pub oidc_audiences: Vec<String>,
    /// PEM certificate chain and private key for HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Generate (once, under the data directory) a certificate for local use.
    pub tls_self_signed: bool,
    /// A second listener for HTTPS. Without it, `listen` itself serves HTTPS when TLS is set.
    pub tls_listen: Option<SocketAddr>,
    /// The region master key (base64 of 32 bytes); never in the config file.
    pub master_key: Option<crate::Secret>,
    /// A file holding the master key (base64), kept outside the data directory.
    pub master_key_file: Option<PathBuf>,
    /// The key backups are sealed with (base64 of 32 bytes); every region that restores a
    /// backup needs the same one. Never in the config file.
    pub backup_key: Option<crate::Secret>,
    /// A file holding the backup key (base64).
    pub backup_key_file: Option<PathBuf>,
    /// Encrypt objects with SSE-S3 when neither request nor bucket names a mode (default
    /// on, as S3). Off only for disks that already encrypt, or to measure the cost.
    pub encrypt_at_rest: bool,
    /// Accept SSE-C keys over plain HTTP (tests only; S3 refuses them).
    pub sse_c_over_http: bool,
    /// The function autoscaler's stable window (Knative's 60 s; the panic window is a
    /// tenth of it). Tests shorten it to watch scaling.
    pub fc_scale_window_secs: u64,
    /// Seconds without a request before a function scales to zero.
    pub fc_idle_secs: u64,
    /// MiB all running function instances together may use (each counts its memory limit);
    /// half the machine's memory when unset. One function may hold at most half of it.
    pub fc_memory_budget_mib: Option<u64>,
    /// Networks (CIDRs) beyond the public internet that functions' outbound requests may
    /// reach; loopback, link-local and private ranges are refused unless listed here.
    pub fc_allowed_networks: Vec<String>,
    /// Domains whose names (and subdomains) function HTTP routes may take; none by default,
    /// so no route can claim a name the region or its peers answer to.
    pub fc_domains: Vec<String>,
    /// Refuse requests (503) while the audit log cannot be written, instead of serving them
    /// unaudited (the failure is always visible in metrics and readiness).
    pub audit_fail_closed: bool,
    /// Metadata commits save what a start after a crash needs to skip checking the whole
    /// file, at a second fsync each (for large embedded metadata; off by default).
    pub meta_quick_repair: bool,
    /// `postgres://…`: keep metadata in that database (PostgreSQL, CockroachDB, YugabyteDB)
    /// instead of the embedded engine in the data directory.
    pub meta_url: Option<crate::Secret>,
    /// `/metrics` requires `Authorization: Bearer TOKEN` when set; without it, only clients
    /// on loopback are served.
    pub metrics_token: Option<crate::Secret>,
    /// Seconds a response may wait on a client that reads nothing before the connection is
    /// closed (a stalled reader holds blobs that garbage collection must keep).
    pub write_stall_secs: u64,
    /// Seconds a connection may sit with no request in flight (HTTP/1 keep-alive, HTTP/2,
    /// or a client that never finishes its first request) before it is closed.
    pub idle_timeout_secs: u64,
    /// Most connections one client address may hold open; beyond it, its new connections
    /// are closed at once (a few thousand silent sockets must not take every permit).
    pub max_connections_per_client: usize,
    /// This process's place in a multi-node region (`--node-id`), if it is one.
    pub node: Option<NodeConfig>,
}

/// A node of a multi-node region: its name, where the other nodes reach it, its zone.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Stable across restarts (a StatefulSet's pod name): 1-63 of `a-z`, `0-9`, `-`.
    pub id: String,
    /// `HOST:PORT` other nodes use to reach this one.
    pub advertise: String,
    pub zone: Option<String>,
    /// A node whose last heartbeat is older than this is down.
    pub down_secs: u64,
    /// Where node-to-node traffic is served (by default the advertised address's port).
    pub cluster_listen: SocketAddr,
    /// Authenticates node-to-node requests; the same on every node of the region.
    pub cluster_secret: crate::Secret,
    /// Copies of each blob (fewer while the region has fewer nodes).
    pub replicas: usize,
    /// Fewest copies a write is acknowledged with.
    pub min_replicas: usize,
    /// A node down this long has its copies re-created on other nodes.
    pub repair_after_secs: u64,
    /// How long a deleted blob's copies stay, so reads in progress on other nodes finish.
    pub blob_delete_grace_secs: u64,
    /// `(k, m)`: blobs of the cold storage classes (all blobs with `erasure_all`) stored as
    /// k data and m parity shards instead of copies.
    pub erasure: Option<(u8, u8)>,
    pub erasure_all: bool,
    /// Bytes of metadata rows the node caches for reads (0: none; unset: a share of the
    /// machine's memory); see `feiyun_cluster::rowcache`.
    pub row_cache_bytes: Option<usize>,
}

/// Default seconds a deleted blob's copies stay for reads in progress on other nodes.
pub const DEFAULT_BLOB_DELETE_GRACE_SECS: u64 = 600;

/// Default seconds a node may be down before its copies are re-created elsewhere: long
/// enough for a restart or a rolling upgrade not to copy anything.
pub const DEFAULT_REPAIR_AFTER_SECS: u64 = 300;

/// Default copies of each blob in a multi-node region.
pub const DEFAULT_REPLICAS: usize = 3;
/// Default fewest copies a write is acknowledged with.
pub const DEFAULT_MIN_REPLICAS: usize = 2;
/// Shortest cluster secret accepted.
const MIN_CLUSTER_SECRET: usize = 16;

/// Default seconds of silence after which a node is down.
pub const DEFAULT_NODE_DOWN_SECS: u64 = 20;

impl Config {
    pub fn tls_enabled(&self) -> bool {
        self.tls_self_signed || self.tls_cert.is_some()
    }
}

/// One layer of settings; `None` means "this layer says nothing".
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub region: Option<String>,
    pub domains: Option<Vec<String>>,
    pub root_access_key: Option<String>,
    pub root_secret_key: Option<crate::Secret>,
    pub shutdown_grace_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub inline_threshold: Option<usize>,
    pub lifecycle_day_secs: Option<u64>,
    pub lifecycle_interval_secs: Option<u64>,
    pub live_copy_interval_secs: Option<u64>,
    pub live_allowed_networks: Option<Vec<String>>,
    /// `off` turns the PostgreSQL-protocol listener off.
    pub sql_listen: Option<String>,
    pub sql_memory_mb: Option<u64>,
    pub sql_timeout_secs: Option<u64>,
    pub sql_queries_per_account: Option<usize>,
    pub webhooks: Option<std::collections::BTreeMap<String, String>>,
    pub event_retention_secs: Option<u64>,
    pub replication_rpo_secs: Option<u64>,
    pub replication_proxy_reads: Option<bool>,
    pub account_id: Option<String>,
    pub sts_min_session_secs: Option<u64>,
    pub oidc_issuer: Option<String>,
    pub oidc_jwks: Option<String>,
    pub oidc_audiences: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_self_signed: Option<bool>,
    pub tls_listen: Option<String>,
    /// Only from the environment: a secret does not belong in a config file.
    #[serde(skip)]
    pub master_key: Option<crate::Secret>,
    pub master_key_file: Option<PathBuf>,
    /// Only from the environment, as the master key.
    #[serde(skip)]
    pub backup_key: Option<crate::Secret>,
    pub backup_key_file: Option<PathBuf>,
    pub encrypt_at_rest: Option<bool>,
    pub sse_c_over_http: Option<bool>,
    pub fc_scale_window_secs: Option<u64>,
    pub fc_idle_secs: Option<u64>,
    pub fc_memory_budget_mib: Option<u64>,
    pub fc_allowed_networks: Option<Vec<String>>,
    pub fc_domains: Option<Vec<String>>,
    pub audit_fail_closed: Option<bool>,
    pub meta_quick_repair: Option<bool>,
    pub meta_url: Option<crate::Secret>,
    #[serde(skip)]
    pub metrics_token: Option<crate::Secret>,
    pub write_stall_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections_per_client: Option<usize>,
    pub node_id: Option<String>,
    pub advertise: Option<String>,
    pub zone: Option<String>,
    pub node_down_secs: Option<u64>,
    pub cluster_listen: Option<String>,
    #[serde(skip)]
    pub cluster_secret: Option<crate::Secret>,
    pub replicas: Option<usize>,
    pub min_replicas: Option<usize>,
    pub repair_after_secs: Option<u64>,
    pub blob_delete_grace_secs: Option<u64>,
    pub erasure: Option<String>,
    pub erasure_all: Option<bool>,
    pub row_cache_mb: Option<u64>,
}

impl ConfigOverrides {
    /// Parses a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads the `FEIYUN_*` variables through `get`, so tests need not touch the process env.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let parse_num = |name: &'static str| -> Result<Option<u64>, ConfigError> {
            match get(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| ConfigError::Invalid {
                        name,
                        message: format!("{v:?} is not a number"),
                    }),
            }
        };
        Ok(Self {
            data_dir: get("FEIYUN_DATA_DIR").map(PathBuf::from),
            listen: get("FEIYUN_LISTEN"),
            region: get("FEIYUN_REGION"),
            domains: get("FEIYUN_DOMAINS").map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            root_access_key: get("FEIYUN_ROOT_ACCESS_KEY"),
            root_secret_key: get("FEIYUN_ROOT_SECRET_KEY").map(crate::Secret::new),
            shutdown_grace_secs: parse_num("FEIYUN_SHUTDOWN_GRACE_SECS")?,
            max_connections: parse_num("FEIYUN_MAX_CONNECTIONS")?.map(|n| n as usize),
            inline_threshold: parse_num("FEIYUN_INLINE_THRESHOLD")?.map(|n| n as usize),
            lifecycle_day_secs: parse_num("FEIYUN_LIFECYCLE_DAY_SECS")?,
            lifecycle_interval_secs: parse_num("FEIYUN_LIFECYCLE_INTERVAL_SECS")?,
            live_copy_interval_secs: parse_num("FEIYUN_LIVE_COPY_INTERVAL_SECS")?,
            sql_listen: get("FEIYUN_SQL_LISTEN"),
            sql_memory_mb: parse_num("FEIYUN_SQL_MEMORY_MB")?,
            sql_timeout_secs: parse_num("FEIYUN_SQL_TIMEOUT_SECS")?,
            sql_queries_per_account: parse_num("FEIYUN_SQL_QUERIES_PER_ACCOUNT")?
                .map(|n| n as usize),
            live_allowed_networks: get("FEIYUN_LIVE_ALLOWED_NETWORKS").map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            webhooks: match get("FEIYUN_WEBHOOKS") {
                None => None,
                Some(v) => Some(parse_webhooks(&v)?),
            },
            event_retention_secs: parse_num("FEIYUN_EVENT_RETENTION_SECS")?,
            replication_rpo_secs: parse_num("FEIYUN_REPLICATION_RPO_SECS")?,
            replication_proxy_reads: match get("FEIYUN_REPLICATION_PROXY_READS") {
                None => None,
                Some(v) => Some(parse_bool("FEIYUN_REPLICATION_PROXY_READS", &v)?),
            },
            account_id: get("FEIYUN_ACCOUNT_ID"),
            sts_min_session_secs: parse_num("FEIYUN_STS_MIN_SESSION_SECS")?,
            oidc_issuer: get("FEIYUN_OIDC_ISSUER"),
            oidc_jwks: get("FEIYUN_OIDC_JWKS"),
            oidc_audiences: get("FEIYUN_OIDC_AUDIENCES").map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            tls_cert: get("FEIYUN_TLS_CERT").map(PathBuf::from),
            tls_key: get("FEIYUN_TLS_KEY").map(PathBuf::from),
            tls_self_signed: match get("FEIYUN_TLS_SELF_SIGNED") {
                None => None,
                Some(v) => Some(parse_bool("FEIYUN_TLS_SELF_SIGNED", &v)?),
            },
            tls_listen: get("FEIYUN_TLS_LISTEN"),
            // An empty value is no key (a wrapper that clears the variable).
            master_key: get("FEIYUN_MASTER_KEY")
                .filter(|v| !v.is_empty())
                .map(crate::Secret::new),
            backup_key: get("FEIYUN_BACKUP_KEY").map(crate::Secret::new),
            backup_key_file: get("FEIYUN_BACKUP_KEY_FILE").map(PathBuf::from),
            encrypt_at_rest: match get("FEIYUN_ENCRYPT_AT_REST") {
                None => None,
                Some(v) => Some(parse_bool("FEIYUN_ENCRYPT_AT_REST", &v)?),
            },
            sse_c_over_http: match get("FEIYUN_SSE_C_OVER_HTTP") {
                None => None,
                Some(v) => Some(parse_bool("FEIYUN_SSE_C_OVER_HTTP", &v)?),
            },
            master_key_file: get("FEIYUN_MASTER_KEY_FILE").map(PathBuf::from),
            fc_scale_window_secs: parse_num("FEIYUN_FC_SCALE_WINDOW_SECS")?,
            fc_idle_secs: parse_num("FEIYUN_FC_IDLE_SECS")?,
            fc_memory_budget_mib: parse_num("FEIYUN_FC_MEMORY_BUDGET_MIB")?,
            fc_allowed_networks: get("FEIYUN_FC_ALLOWED_NETWORKS").map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            fc_domains: get("FEIYUN_FC_DOMAINS").map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            audit_fail_closed: match get("FEIYUN_AUDIT_FAIL_CLOSED") {
                None => None,
                Some(v) => Some(parse_bool("FEIYUN_AUDIT_FAIL_CLOSED", &v)?),
            },
            meta_quick_repair: match get("FEIYUN_META_QUICK_REPAIR") {
                None => None,
                Some(v) => Some(parse_bool("FEIYUN_META_QUICK_REPAIR", &v)?),
            },
            metrics_token: get("FEIYUN_METRICS_TOKEN").map(crate::Secret::new),
            meta_url: get("FEIYUN_META_URL").map(crate::Secret::new),
            write_stall_secs: parse_num("FEIYUN_WRITE_STALL_SECS")?,
            idle_timeout_secs: parse_num("FEIYUN_IDLE_TIMEOUT_SECS")?,
            max_connections_per_client: parse_num("FEIYUN_MAX_CONNECTIONS_PER_CLIENT")?
                .map(|n| n as usize),
            node_id: get("FEIYUN_NODE_ID"),
            advertise: get("FEIYUN_ADVERTISE"),
            // Empty means no zone: a StatefulSet reading it from a pod label the cluster
            // does not set gets "".
            zone: get("FEIYUN_ZONE").filter(|z| !z.is_empty()),
            node_down_secs: parse_num("FEIYUN_NODE_DOWN_SECS")?,
            cluster_listen: get("FEIYUN_CLUSTER_LISTEN"),
            cluster_secret: get("FEIYUN_CLUSTER_SECRET").map(crate::Secret::new),
            replicas: parse_num("FEIYUN_REPLICAS")?.map(|n| n as usize),
            min_replicas: parse_num("FEIYUN_MIN_REPLICAS")?.map(|n| n as usize),
            repair_after_secs: parse_num("FEIYUN_REPAIR_AFTER_SECS")?,
            blob_delete_grace_secs: parse_num("FEIYUN_BLOB_DELETE_GRACE_SECS")?,
            erasure: get("FEIYUN_ERASURE").filter(|v| !v.is_empty()),
            erasure_all: match get("FEIYUN_ERASURE_ALL") {
                None => None,
                Some(v) => Some(parse_bool("FEIYUN_ERASURE_ALL", &v)?),
            },
            row_cache_mb: parse_num("FEIYUN_ROW_CACHE_MB")?,
        })
    }

    /// Fields set in `self` win over those in `lower`.
    #[must_use]
    pub fn over(self, lower: Self) -> Self {
        Self {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            region: self.region.or(lower.region),
            domains: self.domains.or(lower.domains),
            root_access_key: self.root_access_key.or(lower.root_access_key),
            root_secret_key: self.root_secret_key.or(lower.root_secret_key),
            shutdown_grace_secs: self.shutdown_grace_secs.or(lower.shutdown_grace_secs),
            max_connections: self.max_connections.or(lower.max_connections),
            inline_threshold: self.inline_threshold.or(lower.inline_threshold),
            lifecycle_day_secs: self.lifecycle_day_secs.or(lower.lifecycle_day_secs),
            lifecycle_interval_secs: self
                .lifecycle_interval_secs
                .or(lower.lifecycle_interval_secs),
            live_copy_interval_secs: self
                .live_copy_interval_secs
                .or(lower.live_copy_interval_secs),
            live_allowed_networks: self.live_allowed_networks.or(lower.live_allowed_networks),
            sql_listen: self.sql_listen.or(lower.sql_listen),
            sql_memory_mb: self.sql_memory_mb.or(lower.sql_memory_mb),
            sql_timeout_secs: self.sql_timeout_secs.or(lower.sql_timeout_secs),
            sql_queries_per_account: self
                .sql_queries_per_account
                .or(lower.sql_queries_per_account),
            webhooks: self.webhooks.or(lower.webhooks),
            event_retention_secs: self.event_retention_secs.or(lower.event_retention_secs),
            replication_rpo_secs: self.replication_rpo_secs.or(lower.replication_rpo_secs),
            replication_proxy_reads: self
                .replication_proxy_reads
                .or(lower.replication_proxy_reads),
            account_id: self.account_id.or(lower.account_id),
            sts_min_session_secs: self.sts_min_session_secs.or(lower.sts_min_session_secs),
            oidc_issuer: self.oidc_issuer.or(lower.oidc_issuer),
            oidc_jwks: self.oidc_jwks.or(lower.oidc_jwks),
            oidc_audiences: self.oidc_audiences.or(lower.oidc_audiences),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_self_signed: self.tls_self_signed.or(lower.tls_self_signed),
            tls_listen: self.tls_listen.or(lower.tls_listen),
            master_key: self.master_key.or(lower.master_key),
            master_key_file: self.master_key_file.or(lower.master_key_file),
            backup_key: self.backup_key.or(lower.backup_key),
            backup_key_file: self.backup_key_file.or(lower.backup_key_file),
            encrypt_at_rest: self.encrypt_at_rest.or(lower.encrypt_at_rest),
            sse_c_over_http: self.sse_c_over_http.or(lower.sse_c_over_http),
            fc_scale_window_secs: self.fc_scale_window_secs.or(lower.fc_scale_window_secs),
            fc_idle_secs: self.fc_idle_secs.or(lower.fc_idle_secs),
            fc_memory_budget_mib: self.fc_memory_budget_mib.or(lower.fc_memory_budget_mib),
            fc_allowed_networks: self.fc_allowed_networks.or(lower.fc_allowed_networks),
            fc_domains: self.fc_domains.or(lower.fc_domains),
            audit_fail_closed: self.audit_fail_closed.or(lower.audit_fail_closed),
            meta_quick_repair: self.meta_quick_repair.or(lower.meta_quick_repair),
            meta_url: self.meta_url.or(lower.meta_url),
            metrics_token: self.metrics_token.or(lower.metrics_token),
            write_stall_secs: self.write_stall_secs.or(lower.write_stall_secs),
            idle_timeout_secs: self.idle_timeout_secs.or(lower.idle_timeout_secs),
            max_connections_per_client: self
                .max_connections_per_client
                .or(lower.max_connections_per_client),
            node_id: self.node_id.or(lower.node_id),
            advertise: self.advertise.or(lower.advertise),
            zone: self.zone.or(lower.zone),
            node_down_secs: self.node_down_secs.or(lower.node_down_secs),
            cluster_listen: self.cluster_listen.or(lower.cluster_listen),
            cluster_secret: self.cluster_secret.or(lower.cluster_secret),
            replicas: self.replicas.or(lower.replicas),
            min_replicas: self.min_replicas.or(lower.min_replicas),
            repair_after_secs: self.repair_after_secs.or(lower.repair_after_secs),
            blob_delete_grace_secs: self.blob_delete_grace_secs.or(lower.blob_delete_grace_secs),
            erasure: self.erasure.or(lower.erasure),
            erasure_all: self.erasure_all.or(lower.erasure_all),
            row_cache_mb: self.row_cache_mb.or(lower.row_cache_mb),
        }
    }

    /// Fills the remaining gaps with defaults and validates.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|e| ConfigError::Invalid {
                name: "listen",
                message: format!("{listen_text:?}: {e}"),
            })?;
        let region = self.region.unwrap_or_else(|| DEFAULT_REGION.to_owned());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConfigError::Invalid {
                name: "region",
                message: format!("{region:?} must be letters, digits and '-'"),
            });
        }
        let inline_threshold = self.inline_threshold.unwrap_or(64 * 1024);
        if inline_threshold > 1024 * 1024 {
            return Err(ConfigError::Invalid {
                name: "inline_threshold",
                message: "at most 1 MiB".to_owned(),
            });
        }
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(ConfigError::Invalid {
                name: "max_connections",
                message: "must be at least 1".to_owned(),
            });
        }
        if let Some(id) = &self.account_id
            && (id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ConfigError::Invalid {
                name: "account_id",
                message: format!("{id:?} must be 12 digits"),
            });
        }
        let lifecycle_day_secs = self.lifecycle_day_secs.unwrap_or(86_400);
        let lifecycle_interval_secs = self.lifecycle_interval_secs.unwrap_or(3_600);
        if lifecycle_day_secs == 0 || lifecycle_interval_secs == 0 {
            return Err(ConfigError::Invalid {
                name: "lifecycle_day_secs / lifecycle_interval_secs",
                message: "must be at least 1".to_owned(),
            });
        }
        let fc_scale_window_secs = self.fc_scale_window_secs.unwrap_or(60);
        if fc_scale_window_secs == 0 {
            return Err(ConfigError::Invalid {
                name: "fc_scale_window_secs",
                message: "must be at least 1".to_owned(),
            });
        }
        if self.root_access_key.is_some() != self.root_secret_key.is_some() {
            return Err(ConfigError::Invalid {
                name: "root credentials",
                message: "set both FEIYUN_ROOT_ACCESS_KEY and FEIYUN_ROOT_SECRET_KEY, or neither"
                    .to_owned(),
            });
        }
        if self.master_key.is_some() && self.master_key_file.is_some() {
            return Err(ConfigError::Invalid {
                name: "master key",
                message: "set FEIYUN_MASTER_KEY or master_key_file, not both".to_owned(),
            });
        }
        let tls_self_signed = self.tls_self_signed.unwrap_or(false);
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                name: "tls_cert / tls_key",
                message: "set both the certificate and the key, or neither".to_owned(),
            });
        }
        if tls_self_signed && self.tls_cert.is_some() {
            return Err(ConfigError::Invalid {
                name: "tls_self_signed",
                message: "choose either a certificate and key or a self-signed certificate"
                    .to_owned(),
            });
        }
        let tls_listen = match self.tls_listen {
            None => None,
            Some(text) => Some(
                text.parse::<SocketAddr>()
                    .map_err(|e| ConfigError::Invalid {
                        name: "tls_listen",
                        message: format!("{text:?}: {e}"),
                    })?,
            ),
        };
        let sql_listen = match self.sql_listen.as_deref().map(str::trim) {
            Some("off") | Some("") => None,
            text => {
                let text = text.unwrap_or("127.0.0.1:9432");
                Some(
                    text.parse::<SocketAddr>()
                        .map_err(|e| ConfigError::Invalid {
                            name: "sql_listen",
                            message: format!("{text:?}: {e} (an address:port, or off)"),
                        })?,
                )
            }
        };
        if tls_listen.is_some() && !tls_self_signed && self.tls_cert.is_none() {
            return Err(ConfigError::Invalid {
                name: "tls_listen",
                message: "an HTTPS listener needs tls_cert and tls_key, or tls_self_signed"
                    .to_owned(),
            });
        }
        let node = resolve_node(NodeInput {
            id: self.node_id,
            advertise: self.advertise,
            zone: self.zone,
            down_secs: self.node_down_secs,
            cluster_listen: self.cluster_listen,
            cluster_secret: self.cluster_secret,
            replicas: self.replicas,
            min_replicas: self.min_replicas,
            repair_after_secs: self.repair_after_secs,
            blob_delete_grace_secs: self.blob_delete_grace_secs,
            erasure: self.erasure,
            erasure_all: self.erasure_all,
            row_cache_mb: self.row_cache_mb,
            shared_meta: self.meta_url.is_some(),
        })?;
        Ok(Config {
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen,
            region,
            domains: self.domains.unwrap_or_else(|| vec!["localhost".to_owned()]),
            root_access_key: self.root_access_key,
            root_secret_key: self.root_secret_key,
            shutdown_grace_secs: self
                .shutdown_grace_secs
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
            max_connections,
            inline_threshold,
            lifecycle_day_secs,
            lifecycle_interval_secs,
            live_copy_interval_secs: self.live_copy_interval_secs.unwrap_or(10).max(1),
            live_allowed_networks: self.live_allowed_networks.unwrap_or_default(),
            sql_listen,
            sql_memory_mb: self.sql_memory_mb.unwrap_or(1024).max(16),
            sql_timeout_secs: self.sql_timeout_secs.unwrap_or(1800).max(1),
            sql_queries_per_account: self.sql_queries_per_account.unwrap_or(8).max(1),
            webhooks: self.webhooks.unwrap_or_default().into_iter().collect(),
            event_retention_secs: self.event_retention_secs.unwrap_or(7 * 86_400),
            replication_rpo_secs: self.replication_rpo_secs,
            replication_proxy_reads: self.replication_proxy_reads.unwrap_or(false),
            account_id: self.account_id,
            sts_min_session_secs: self.sts_min_session_secs.unwrap_or(900),
            oidc_issuer: self.oidc_issuer,
            oidc_jwks: self.oidc_jwks,
            oidc_audiences: self.oidc_audiences.unwrap_or_default(),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_self_signed,
            tls_listen,
            master_key: self.master_key,
            master_key_file: self.master_key_file,
            backup_key: self.backup_key,
            backup_key_file: self.backup_key_file,
            encrypt_at_rest: self.encrypt_at_rest.unwrap_or(true),
            sse_c_over_http: self.sse_c_over_http.unwrap_or(false),
            fc_scale_window_secs,
            fc_idle_secs: self.fc_idle_secs.unwrap_or(30),
            fc_memory_budget_mib: self.fc_memory_budget_mib,
            fc_allowed_networks: self.fc_allowed_networks.unwrap_or_default(),
            fc_domains: self.fc_domains.unwrap_or_default(),
            audit_fail_closed: self.audit_fail_closed.unwrap_or(false),
            meta_quick_repair: self.meta_quick_repair.unwrap_or(false),
            meta_url: self.meta_url,
            metrics_token: self.metrics_token,
            write_stall_secs: self.write_stall_secs.unwrap_or(60).max(1),
            idle_timeout_secs: self.idle_timeout_secs.unwrap_or(60).max(1),
            max_connections_per_client: self
                .max_connections_per_client
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_CLIENT)
                .max(1),
            node,
        })
    }
}

/// A node id or zone: what a DNS label and a StatefulSet pod name can both be.
fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The node settings of one merged layer.
struct NodeInput {
    id: Option<String>,
    advertise: Option<String>,
    zone: Option<String>,
    down_secs: Option<u64>,
    cluster_listen: Option<String>,
    cluster_secret: Option<crate::Secret>,
    replicas: Option<usize>,
    min_replicas: Option<usize>,
    repair_after_secs: Option<u64>,
    blob_delete_grace_secs: Option<u64>,
    erasure: Option<String>,
    erasure_all: Option<bool>,
    row_cache_mb: Option<u64>,
    shared_meta: bool,
}

fn resolve_node(input: NodeInput) -> Result<Option<NodeConfig>, ConfigError> {
    let invalid = |name, message: String| Err(ConfigError::Invalid { name, message });
    let NodeInput {
        id,
        advertise,
        zone,
        down_secs,
        cluster_listen,
        cluster_secret,
        replicas,
        min_replicas,
        repair_after_secs,
        blob_delete_grace_secs,
        erasure,
        erasure_all,
        row_cache_mb,
        shared_meta,
    } = input;
    let Some(id) = id else {
        if advertise.is_some()
            || zone.is_some()
            || down_secs.is_some()
            || cluster_listen.is_some()
            || replicas.is_some()
            || min_replicas.is_some()
            || repair_after_secs.is_some()
            || blob_delete_grace_secs.is_some()
            || erasure.is_some()
            || erasure_all.is_some()
            || row_cache_mb.is_some()
        {
            return invalid(
                "node_id",
                "advertise, zone, node_down_secs, cluster_listen and replicas belong to a node: set --node-id too"
                    .into(),
            );
        }
        return Ok(None);
    };
    if !is_label(&id) {
        return invalid(
            "node_id",
            format!("{id:?} must be 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"),
        );
    }
    if !shared_meta {
        return invalid(
            "node_id",
            "the nodes of a region share one metadata database: set --meta-url too".into(),
        );
    }
    let Some(advertise) = advertise else {
        return invalid(
            "advertise",
            "a node needs --advertise HOST:PORT, the address the other nodes reach it at".into(),
        );
    };
    let port_ok = advertise
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok
        || advertise
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'/')
    {
        return invalid("advertise", format!("{advertise:?} is not HOST:PORT"));
    }
    if let Some(z) = &zone
        && !is_label(z)
    {
        return invalid("zone", format!("{z:?} must be 1-63 of a-z, 0-9 and '-'"));
    }
    let down_secs = down_secs.unwrap_or(DEFAULT_NODE_DOWN_SECS);
    if !(2..=3600).contains(&down_secs) {
        return invalid("node_down_secs", "must be 2 to 3600".into());
    }
    let Some(cluster_secret) = cluster_secret else {
        return invalid(
            "cluster_secret",
            "a node needs FEIYUN_CLUSTER_SECRET (the same on every node) to authenticate node-to-node traffic".into(),
        );
    };
    if cluster_secret.expose().len() < MIN_CLUSTER_SECRET {
        return invalid(
            "cluster_secret",
            format!("must be at least {MIN_CLUSTER_SECRET} characters"),
        );
    }
    let cluster_listen = match cluster_listen {
        Some(text) => text
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::Invalid {
                name: "cluster_listen",
                message: format!("{text:?} is not IP:PORT"),
            })?,
        // The advertised port on every interface when the advertised host is a name.
        None => advertise.parse::<SocketAddr>().unwrap_or_else(|_| {
            let port = advertise
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0);
            SocketAddr::from(([0, 0, 0, 0], port))
        }),
    };
    let replicas = replicas.unwrap_or(DEFAULT_REPLICAS);
    if !(1..=16).contains(&replicas) {
        return invalid("replicas", "must be 1 to 16".into());
    }
    let min_replicas = min_replicas.unwrap_or(DEFAULT_MIN_REPLICAS.min(replicas));
    if !(1..=replicas).contains(&min_replicas) {
        return invalid(
            "min_replicas",
            format!("must be 1 to replicas ({replicas})"),
        );
    }
    let repair_after_secs = repair_after_secs.unwrap_or(DEFAULT_REPAIR_AFTER_SECS);
    if row_cache_mb.is_some_and(|mb| mb > 1 << 20) {
        return invalid("row_cache_mb", "must be 0 to 1048576".into());
    }
    if !(1..=7 * 86_400).contains(&repair_after_secs) {
        return invalid("repair_after_secs", "must be 1 to 604800".into());
    }
    Ok(Some(NodeConfig {
        id,
        advertise,
        zone,
        down_secs,
        cluster_listen,
        cluster_secret,
        replicas,
        min_replicas,
        repair_after_secs,
        blob_delete_grace_secs: blob_delete_grace_secs.unwrap_or(DEFAULT_BLOB_DELETE_GRACE_SECS),
        erasure: match erasure {
            None => None,
            Some(text) => Some(parse_erasure(&text).ok_or_else(|| ConfigError::Invalid {
                name: "erasure",
                message: format!(
                    "{text:?} is not K+M (2-32 data shards, 1-16 parity shards, no more parity than data; e.g. 4+2)"
                ),
            })?),
        },
        erasure_all: erasure_all.unwrap_or(false),
        row_cache_bytes: row_cache_mb.map(|mb| (mb as usize).saturating_mul(1 << 20)),
    }))
}

/// `K+M`: 2 to 32 data shards, 1 to 16 parity shards, no more parity than data.
fn parse_erasure(text: &str) -> Option<(u8, u8)> {
    let (k, m) = text.trim().split_once('+')?;
    let (k, m) = (k.trim().parse::<u8>().ok()?, m.trim().parse::<u8>().ok()?);
    ((2..=32).contains(&k) && (1..=16).contains(&m) && m <= k).then_some((k, m))
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Invalid {
            name,
            message: format!("{v:?} is not true or false"),
        }),
    }
}

/// `id=url,id2=url2` (the form `FEIYUN_WEBHOOKS` takes).
fn parse_webhooks(v: &str) -> Result<std::collections::BTreeMap<String, String>, ConfigError> {
    let mut out = std::collections::BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, url) = item.split_once('=').ok_or_else(|| ConfigError::Invalid {
            name: "FEIYUN_WEBHOOKS",
            message: format!("{item:?} is not id=url"),
        })?;
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::Invalid {
                name: "FEIYUN_WEBHOOKS",
                message: format!("webhook id {id:?} must be letters, digits, '-' or '_'"),
            });
        }
        out.insert(id.to_owned(), url.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = ConfigOverrides::default().resolve().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.data_dir, PathBuf::from("./feiyun-data"));
        assert_eq!(c.region, "us-east-1");
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file: ConfigOverrides =
            toml::from_str("listen = \"127.0.0.1:1\"\nregion = \"file-region\"\ndata_dir = \"/f\"")
                .unwrap();
        let envl = ConfigOverrides::from_env(env(&[
            ("FEIYUN_LISTEN", "127.0.0.1:2"),
            ("FEIYUN_REGION", "env-region"),
        ]))
        .unwrap();
        let flags = ConfigOverrides {
            listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let c = flags.over(envl.over(file)).resolve().unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.region, "env-region");
        assert_eq!(c.data_dir, PathBuf::from("/f"));
    }

    #[test]
    fn erasure_layouts_parse_within_bounds() {
        assert_eq!(parse_erasure("4+2"), Some((4, 2)));
        assert_eq!(parse_erasure(" 8 + 3 "), Some((8, 3)));
        for bad in [
            "", "4", "4+", "+2", "1+1", "4+0", "2+3", "33+1", "a+b", "4+2+1",
        ] {
            assert_eq!(parse_erasure(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_empty_zone_is_no_zone() {
        let o = ConfigOverrides::from_env(env(&[("FEIYUN_ZONE", "")])).unwrap();
        assert_eq!(o.zone, None);
        let o = ConfigOverrides::from_env(env(&[("FEIYUN_ZONE", "rack-a")])).unwrap();
        assert_eq!(o.zone.as_deref(), Some("rack-a"));
    }

    #[test]
    fn bad_values_are_errors() {
        let bad = |o: ConfigOverrides| o.resolve().unwrap_err().to_string();
        assert!(
            bad(ConfigOverrides {
                listen: Some("nope".into()),
                ..Default::default()
            })
            .contains("listen")
        );
        assert!(
            bad(ConfigOverrides {
                root_access_key: Some("a".into()),
                ..Default::default()
            })
            .contains("root credentials")
        );
        assert!(ConfigOverrides::from_env(env(&[("FEIYUN_MAX_CONNECTIONS", "x")])).is_err());
        assert!(
            bad(ConfigOverrides {
                max_connections: Some(0),
                ..Default::default()
            })
            .contains("max_connections")
        );
        assert!(toml::from_str::<ConfigOverrides>("unknown_key = 1").is_err());
    }

    #[test]
    fn a_node_needs_a_shared_database_an_address_and_a_clean_id() {
        let node = |id: &str, adv: Option<&str>, meta: bool| {
            ConfigOverrides {
                node_id: Some(id.into()),
                advertise: adv.map(Into::into),
                meta_url: meta.then(|| crate::Secret::new("postgres://x/y")),
                cluster_secret: Some(crate::Secret::new("0123456789abcdef")),
                ..Default::default()
            }
            .resolve()
        };
        let ok = node("feiyun-0", Some("10.0.0.1:9100"), true).unwrap();
        let n = ok.node.unwrap();
        assert_eq!(
            (n.id.as_str(), n.down_secs),
            ("feiyun-0", DEFAULT_NODE_DOWN_SECS)
        );
        assert!(
            node("a", Some("h:1"), false)
                .unwrap_err()
                .to_string()
                .contains("meta-url")
        );
        assert!(
            node("a", None, true)
                .unwrap_err()
                .to_string()
                .contains("advertise")
        );
        for bad in ["", "Node", "a/b", "-a", "a b", &"x".repeat(64)] {
            assert!(node(bad, Some("h:1"), true).is_err(), "{bad:?}");
        }
        for bad in ["h", "h:0", ":9", "h:x", "h:1/p"] {
            assert!(node("a", Some(bad), true).is_err(), "{bad:?}");
        }
        let stray = ConfigOverrides {
            zone: Some("z1".into()),
            ..Default::default()
        };
        assert!(stray.resolve().is_err());
        assert_eq!(n.cluster_listen.to_string(), "10.0.0.1:9100");
        assert_eq!((n.replicas, n.min_replicas), (3, 2));
        let with = |f: &dyn Fn(&mut ConfigOverrides)| {
            let mut o = ConfigOverrides {
                node_id: Some("a".into()),
                advertise: Some("feiyun-0.feiyun:9100".into()),
                meta_url: Some(crate::Secret::new("postgres://x/y")),
                cluster_secret: Some(crate::Secret::new("0123456789abcdef")),
                ..Default::default()
            };
            f(&mut o);
            o.resolve()
        };
        let named = with(&|_| {}).unwrap().node.unwrap();
        assert_eq!(named.cluster_listen.to_string(), "0.0.0.0:9100");
        let one = with(&|o| o.replicas = Some(1)).unwrap().node.unwrap();
        assert_eq!((one.replicas, one.min_replicas), (1, 1));
        for (name, f) in [
            (
                "cluster_secret",
                &(|o: &mut ConfigOverrides| o.cluster_secret = None)
                    as &dyn Fn(&mut ConfigOverrides),
            ),
            ("cluster_secret", &|o| {
                o.cluster_secret = Some(crate::Secret::new("short"))
            }),
            ("cluster_listen", &|o| {
                o.cluster_listen = Some("host:1".into())
            }),
            ("replicas", &|o| o.replicas = Some(0)),
            ("min_replicas", &|o| o.min_replicas = Some(4)),
        ] {
            let err = with(f).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}

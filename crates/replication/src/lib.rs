//! Cross-region replication: the peer regions this region replicates to, their health, and
//! the worker that copies new versions, delete markers and tag changes to them.
//!
//! Owns the `replication` table: `p/NAME` → [`PeerRecord`] (the secret key sealed by the
//! region's master key, bound to its row). The replication rules themselves are a bucket
//! setting and live with the bucket in `oss`, which also marks each new version PENDING for
//! the destinations its rules name; this crate follows the event log (consumer
//! [`worker::CONSUMER`]) and turns PENDING into COMPLETED or FAILED. Writes to a peer are
//! plain signed S3 requests (`client`), so a peer is any S3 endpoint; between Feiyun regions
//! the replica keeps its source's version id and time (`oss::replication::REPLICA_*_HEADER`).

pub mod api;
pub mod backup;
mod client;
pub use client::RelayedFor;
pub mod home;
pub mod resync;
pub mod site;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use feiyun_meta::{MetaStore, Table, WriteBatch};
use feiyun_oss::{BlobStore, ObjectService, OssError};
use serde::{Deserialize, Serialize};

/// How often each peer is probed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("{0}")]
    Invalid(String),
    #[error("no region named {0}")]
    NoSuchRegion(String),
    #[error("{0}")]
    InUse(String),
    #[error(transparent)]
    Oss(#[from] OssError),
    #[error("metadata: {0}")]
    Meta(#[from] feiyun_meta::MetaError),
    /// A site push older than this region's own identities.
    #[error("{0}")]
    Stale(String),
    #[error("corrupt replication record: {0}")]
    Corrupt(String),
}

/// A registered peer region as stored (`p/NAME`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRecord {
    pub name: String,
    /// `http(s)://host:port` of the peer's S3 endpoint.
    pub endpoint: String,
    /// The region name requests to it are signed for.
    pub signing_region: String,
    pub access_key: String,
    /// The secret key, sealed by the master key with the row key as AAD.
    #[serde(with = "serde_bytes")]
    pub sealed_secret: Vec<u8>,
    pub created_ms: i64,
    /// A region of the same site: it also receives this region's identities.
    #[serde(default)]
    pub site: bool,
}

/// A peer in memory: its record, a client holding the unsealed secret, and its health.
pub struct Peer {
    pub record: PeerRecord,
    pub(crate) client: client::S3Client,
    pub(crate) up: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Writes to this peer in flight at once.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Woken when the peer answers again, so waiting retries go at once.
    pub(crate) back: tokio::sync::Notify,
}

impl Peer {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// What `feiyun region add` asks for.
#[derive(Debug, Clone, Deserialize)]
pub struct NewPeer {
    pub name: String,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    #[serde(default)]
    pub signing_region: Option<String>,
    #[serde(default)]
    pub site: bool,
}

/// The replication service of one region.
pub struct Replication<M, B> {
    /// Itself, for work a synchronous callback starts in the background.
    me: std::sync::Weak<Self>,
    oss: Arc<ObjectService<M, B>>,
    peers: RwLock<BTreeMap<String, Arc<Peer>>>,
    pub(crate) metrics: worker::Metrics,
    pub(crate) state: worker::SharedState,
    /// The region's identities, for site replication (set once IAM is open).
    iam: std::sync::OnceLock<Arc<feiyun_iam::Iam<M>>>,
    site_status: Mutex<site::SiteStatus>,
    /// One reader or writer of the site mark at a time (never held across a push).
    site_lock: tokio::sync::Mutex<()>,
    /// Seals backups (from the configuration); none: backups are refused.
    backup_key: std::sync::OnceLock<backup::BackupKey>,
    /// Buckets whose home is another region, by name.
    homes: RwLock<std::collections::HashMap<String, home::HomeRecord>>,
}

fn row(name: &str) -> Vec<u8> {
    format!("p/{name}").into_bytes()
}

/// Peer names: what an ARN's region field and a metric label can carry.
/// The region name a peer expects in signature scopes. Peers check it (as AWS does), and
/// answer a request signed for the wrong one with `AuthorizationHeaderMalformed` naming the
/// right one, so one ListBuckets signed for `us-east-1` finds it; an unreachable peer keeps
/// that default, which `--signing-region` overrides.
async fn discover_signing_region(endpoint: &str, access_key: &str, secret_key: &str) -> String {
    const DEFAULT: &str = "us-east-1";
    let Ok(probe) = client::S3Client::new(endpoint, access_key, secret_key, DEFAULT, "") else {
        return DEFAULT.to_owned();
    };
    let answer = probe
        .bodiless(
            http::Method::GET,
            None,
            None,
            &[],
            Vec::new(),
            std::time::Duration::from_secs(10),
        )
        .await;
    match answer {
        Err(client::ClientError::Status { code, message, .. })
            if code == "AuthorizationHeaderMalformed" =>
        {
            expected_region(&message).unwrap_or_else(|| DEFAULT.to_owned())
        }
        _ => DEFAULT.to_owned(),
    }
}

/// The region an `AuthorizationHeaderMalformed` message names as expected: `… expecting 'R'`
/// in ours and AWS's wording.
fn expected_region(message: &str) -> Option<String> {
    let rest = &message[message.find("expecting '")? + "expecting '".len()..];
    let region = &rest[..rest.find('\'')?];
    let valid = !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| region.to_owned())
}

fn validate_name(name: &str) -> Result<(), ReplicationError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ReplicationError::Invalid(format!(
            "region name {name:?}: 1-63 characters of a-z, 0-9 and '-'"
        )))
    }
}

fn validate_endpoint(url: &str) -> Result<(), ReplicationError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(['/', '?', '#', ' ']) => Ok(()),
        Some(r) if r.ends_with('/') && !r[..r.len() - 1].contains(['/', '?', '#', ' ']) => Ok(()),
        _ => Err(ReplicationError::Invalid(format!(
            "endpoint {url:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"
        ))),
    }
}

/// HTTPS, or plain HTTP that never leaves the machine.
fn site_endpoint_ok(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.trim_end_matches('/');
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl<M: MetaStore, B: BlobStore> Replication<M, B> {
    /// Loads the registered peers. Call [`Replication::spawn`] to start the worker.
    pub async fn open(oss: Arc<ObjectService<M, B>>) -> Result<Arc<Self>, ReplicationError> {
        let r = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            oss,
            peers: RwLock::default(),
            metrics: worker::Metrics::default(),
            state: worker::SharedState::default(),
            iam: std::sync::OnceLock::new(),
            site_status: Mutex::default(),
            site_lock: tokio::sync::Mutex::new(()),
            backup_key: std::sync::OnceLock::new(),
            homes: RwLock::default(),
        });
        let rows = r
            .oss
            .meta()
            .scan(Table::Replication, b"p/", Some(b"p0"), 10_000)?;
        for (k, v) in rows {
            let rec: PeerRecord = ciborium::from_reader(v.as_slice())
                .map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
            let secret = r.unseal(&k, &rec.sealed_secret)?;
            r.install(rec, &secret)?;
        }
        r.load_homes()?;
        Ok(r)
    }

    pub fn oss(&self) -> &Arc<ObjectService<M, B>> {
        &self.oss
    }

    fn unseal(&self, row: &[u8], sealed: &[u8]) -> Result<String, ReplicationError> {
        let plain = self
            .oss
            .kms()
            .master()
            .unseal(row, sealed)
            .map_err(|e| ReplicationError::Corrupt(format!("peer secret: {e}")))?;
        String::from_utf8(plain).map_err(|_| ReplicationError::Corrupt("peer secret".into()))
    }

    /// Reads the peers and bucket homes again: another node of the region changed them. A
    /// peer whose record is unchanged keeps its client and health.
    pub fn reload(&self) -> Result<(), ReplicationError> {
        let rows = self
            .oss
            .meta()
            .scan(Table::Replication, b"p/", Some(b"p0"), 10_000)?;
        let mut names = std::collections::BTreeSet::new();
        for (k, v) in rows {
            let rec: PeerRecord = ciborium::from_reader(v.as_slice())
                .map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
            names.insert(rec.name.clone());
            let same = self.peer(&rec.name).is_some_and(|p| {
                let o = &p.record;
                (
                    &o.endpoint,
                    &o.signing_region,
                    &o.access_key,
                    &o.sealed_secret,
                    o.site,
                ) == (
                    &rec.endpoint,
                    &rec.signing_region,
                    &rec.access_key,
                    &rec.sealed_secret,
                    rec.site,
                )
            });
            if !same {
                let secret = self.unseal(&k, &rec.sealed_secret)?;
                self.install(rec, &secret)?;
            }
        }
        if let Ok(mut p) = self.peers.write() {
            p.retain(|name, _| names.contains(name));
        }
        self.load_homes()
    }

    fn install(&self, rec: PeerRecord, secret: &str) -> Result<(), ReplicationError> {
        let client = client::S3Client::new(
            &rec.endpoint,
            &rec.access_key,
            secret,
            &rec.signing_region,
            self.oss.region(),
        )
        .map_err(ReplicationError::Invalid)?;
        let peer = Arc::new(Peer {
            client,
            up: AtomicBool::new(true),
            last_error: Mutex::new(None),
            slots: Arc::new(tokio::sync::Semaphore::new(worker::PEER_CONCURRENCY)),
            back: tokio::sync::Notify::new(),
            record: rec,
        });
        self.metrics.peer_up(&peer.record.name, true);
        if let Ok(mut p) = self.peers.write() {
            p.insert(peer.record.name.clone(), peer);
        }
        Ok(())
    }

    /// Registers (or re-registers, replacing endpoint and credentials) a peer region.
    pub async fn add_peer(&self, new: NewPeer) -> Result<PeerRecord, ReplicationError> {
        validate_name(&new.name)?;
        validate_endpoint(&new.endpoint)?;
        if new.site && !site_endpoint_ok(&new.endpoint) {
            return Err(ReplicationError::Invalid(format!(
                "a site peer receives every identity's secret: its endpoint must be https:// (its certificate is verified), or on loopback, not {:?}",
                new.endpoint
            )));
        }
        if new.access_key.is_empty() || new.secret_key.is_empty() {
            return Err(ReplicationError::Invalid(
                "both an access key and a secret key are required".into(),
            ));
        }
        // The URL must make a client before anything is stored.
        client::S3Client::new(&new.endpoint, &new.access_key, "", "us-east-1", "")
            .map_err(ReplicationError::Invalid)?;
        let signing_region = match new.signing_region {
            Some(r) => r,
            None => discover_signing_region(&new.endpoint, &new.access_key, &new.secret_key).await,
        };
        let k = row(&new.name);
        let sealed = self
            .oss
            .kms()
            .master()
            .seal(&k, new.secret_key.as_bytes())
            .map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
        let rec = PeerRecord {
            name: new.name.clone(),
            endpoint: new.endpoint.trim_end_matches('/').to_owned(),
            signing_region,
            access_key: new.access_key,
            sealed_secret: sealed,
            created_ms: feiyun_oss::now_millis(),
            site: new.site,
        };
        let mut value = Vec::new();
        ciborium::into_writer(&rec, &mut value)
            .map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
        let mut batch = WriteBatch::new();
        batch.put(Table::Replication, k, value);
        self.oss.meta().commit(batch).await?;
        self.install(rec.clone(), &new.secret_key)?;
        Ok(rec)
    }

    /// Removes a peer no replication rule names.
    pub async fn remove_peer(&self, name: &str) -> Result<(), ReplicationError> {
        if self.peer(name).is_none() {
            return Err(ReplicationError::NoSuchRegion(name.to_owned()));
        }
        for (bucket, rec) in self.oss.list_buckets().await? {
            if let Some(c) = rec.replication
                && c.rules.iter().any(|r| r.destination.region == name)
            {
                return Err(ReplicationError::InUse(format!(
                    "region {name} is a destination of bucket {bucket}'s replication rules; \
                     remove them first"
                )));
            }
        }
        if let Some(bucket) = self.is_home(name) {
            return Err(ReplicationError::InUse(format!(
                "region {name} is the home region of bucket {bucket}; clear it first"
            )));
        }
        let mut batch = WriteBatch::new();
        batch.delete(Table::Replication, row(name));
        self.oss.meta().commit(batch).await?;
        if let Ok(mut p) = self.peers.write() {
            p.remove(name);
        }
        self.metrics.forget_peer(name);
        Ok(())
    }

    pub fn peer(&self, name: &str) -> Option<Arc<Peer>> {
        self.peers.read().ok().and_then(|p| p.get(name).cloned())
    }

    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Probes every peer (ListBuckets) and records up/down, logging each change.
    async fn check_health(&self) {
        for peer in self.peers() {
            let probe = peer
                .client
                .bodiless(
                    http::Method::GET,
                    None,
                    None,
                    &[],
                    Vec::new(),
                    HEALTH_TIMEOUT,
                )
                .await;
            let err = probe.err().map(|e| e.to_string());
            let up = err.is_none();
            let was = peer.up.swap(up, Ordering::Relaxed);
            if was != up {
                match &err {
                    None => {
                        tracing::info!(region = %peer.record.name, "peer region is up");
                        peer.back.notify_waiters();
                    }
                    Some(e) => {
                        tracing::warn!(region = %peer.record.name, error = %e, "peer region is down")
                    }
                }
            }
            if let Ok(mut l) = peer.last_error.lock() {
                *l = err;
            }
            self.metrics.peer_up(&peer.record.name, up);
        }
    }

    /// Starts the health checker and the replication worker.
    pub fn spawn(self: &Arc<Self>, rpo: Option<Duration>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.check_health().await;
                tokio::time::sleep(HEALTH_INTERVAL).await;
            }
        });
        worker::spawn(self.clone(), rpo);
        self.resume_resyncs();
        self.spawn_site_sync();
    }

    /// Registers the `feiyun_replication_*` series.
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        self.metrics.register(r);
    }
}

impl<M: MetaStore, B: BlobStore> feiyun_oss::replication::PeerDirectory for Replication<M, B> {
    fn has_peer(&self, name: &str) -> bool {
        self.peer(name).is_some()
    }

    fn backfill(&self, bucket: &str, label: &str) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let (bucket, label) = (bucket.to_owned(), label.to_owned());
        tokio::spawn(async move {
            match me.start_resync_to(&bucket, vec![label.clone()], None).await {
                Ok(_) => tracing::info!(%bucket, destination = %label,
                    "existing objects replication started"),
                Err(e) => tracing::warn!(%bucket, destination = %label, error = %e,
                    "existing objects replication not started"),
            }
        });
    }
}

/// One line per peer for `feiyun region list`.
pub fn peer_json(p: &Peer) -> serde_json::Value {
    let err = p.last_error.lock().ok().and_then(|e| e.clone());
    serde_json::json!({
        "name": p.record.name,
        "endpoint": p.record.endpoint,
        "signing_region": p.record.signing_region,
        "access_key": p.record.access_key,
        "up": p.is_up(),
        "site": p.record.site,
        "last_error": err,
        "created": p.record.created_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_region_is_read_from_a_scope_refusal() {
        let aws = "The authorization header is malformed; the region 'us-east-1' is wrong; \
                   expecting 'eu-west-1'";
        assert_eq!(expected_region(aws).as_deref(), Some("eu-west-1"));
        assert_eq!(
            expected_region("the region 'a' is wrong; expecting ''"),
            None
        );
        assert_eq!(expected_region("expecting 'a b'"), None);
        assert_eq!(expected_region("expecting 'unterminated"), None);
        assert_eq!(expected_region("no region here"), None);
    }

    #[test]
    fn names_and_endpoints_are_checked() {
        for ok in ["eu-west", "dr2", "a"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "EU", "eu_west", "-x", "a/b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for ok in [
            "http://10.0.0.2:9000",
            "https://s3.example.com",
            "http://h:1/",
        ] {
            validate_endpoint(ok).unwrap();
        }
        for bad in [
            "ftp://h",
            "h:9000",
            "http://",
            "http://h/path",
            "http://h?x",
        ] {
            assert!(validate_endpoint(bad).is_err(), "{bad}");
        }
    }
}

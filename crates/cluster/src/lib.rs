//! Region membership: the nodes of a multi-node region, as records in the shared metadata
//! store (`Table::Cluster`, one record per node under `node/ID`).
//!
//! Each node registers when it starts and rewrites its record on a heartbeat (address, zone,
//! version, disk capacity and free space, blob count). A node whose heartbeat is older than
//! `node_down_secs` is down. Liveness is judged on the reader's wall clock against the
//! writer's, so the nodes' clocks must agree to well within `node_down_secs` (NTP).
//!
//! Two guards keep one id one machine: a node key kept in the data directory (a restart of
//! the same node finds its own key and takes its record back at once; a second machine with
//! the same id is refused while the first is up), and an incarnation per process start that
//! every heartbeat checks inside its commit, so a node whose record was taken over or removed
//! learns it at its next heartbeat and stops calling itself ready.
//!
//! This crate owns the records and their rules. The row cache (`rowcache`) holds bucket and
//! object rows as opaque bytes; nothing here decodes them.

pub mod api;
pub mod blobs;
mod coded;
pub mod erasure;
pub mod peer;
pub mod placement;
pub mod repair;
pub mod rowcache;
mod usage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use feiyun_meta::{MetaError, MetaStore, Table, WriteBatch};
use serde::{Deserialize, Serialize};

pub use blobs::{ClusterBlobStore, ClusterReader, ClusterStats, ReplicaConfig};
pub use peer::{ClusterSecret, PeerClient, PeerServer};
pub use repair::RepairReport;
pub use usage::{LocalUsage, dir_usage, disk_usage};

/// Key prefix of node records in [`Table::Cluster`].
const NODE_PREFIX: &[u8] = b"node/";
/// The region's background lease: which node runs the once-per-region workers.
const LEASE_KEY: &[u8] = b"lease/background";
/// The lease's fencing token alone (8 bytes, big-endian), written only when the holder
/// changes: fenced background commits check it, and a row rewritten at every renewal would
/// make each of them conflict with the renewals.
pub const FENCE_KEY: &[u8] = b"lease/fence";
/// Key prefix of each node's event horizon: every event id it handed out below the value
/// has landed (big-endian u64).
const HORIZON_PREFIX: &[u8] = b"horizon/";
/// How long a read of the other nodes' horizons serves.
const HORIZON_TTL: Duration = Duration::from_millis(100);
/// Attempts at a read-modify-write of one record before giving up to the caller.
const ATTEMPTS: usize = 8;
/// How long a node list read for placement serves before it is read again.
const VIEW_TTL: Duration = Duration::from_secs(1);
/// Blob counts walk the blob directory; not more often than this.
const USAGE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "node id {id} is held by a running node advertising {advertise} (last heartbeat {secs_ago} s ago): \
         each node needs its own id, or stop the other one"
    )]
    IdTaken {
        id: String,
        advertise: String,
        secs_ago: i64,
    },
    #[error("address {advertise} is advertised by running node {other}: each node needs its own")]
    AddressTaken { advertise: String, other: String },
    #[error("no node {0} in this region")]
    NoSuchNode(String),
    #[error("node {0} is up: stop it before removing it (drain it first so its data moves away)")]
    NodeUp(String),
    #[error("this node's membership record was removed or taken over by another process")]
    Superseded,
    #[error("the record of node {0} is damaged")]
    Corrupt(String),
    #[error("the record of node {0} kept changing; retry")]
    Busy(String),
    #[error("the node key in the data directory: {0}")]
    NodeKey(std::io::Error),
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
}

/// What a node says about itself, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub advertise: String,
    pub zone: Option<String>,
    /// The binary's version.
    pub version: String,
    /// Hex of the random key in the node's data directory (who this machine is).
    pub node_key: String,
    /// Hex of a random value drawn at each process start (which start of it this is).
    pub incarnation: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// Until when the writer's own `node_down_secs` keeps it up: liveness is the writer's
    /// lease, so a reader configured with a shorter window cannot declare it down early.
    #[serde(default)]
    pub expires_ms: i64,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// An operator asked for this node's data to move away; placement skips it.
    pub draining: bool,
    /// Blobs this node is to repair that its last repair pass left short of copies.
    #[serde(default)]
    pub repair_backlog: u64,
}

impl NodeRecord {
    /// Up while its lease runs. A heartbeat stamped further ahead of the reader's clock than
    /// the lease is long is a clock gone wrong, and counts as down rather than up for years.
    pub fn is_up(&self, now_ms: i64) -> bool {
        let window = self.expires_ms.saturating_sub(self.heartbeat_ms);
        now_ms < self.expires_ms && self.heartbeat_ms <= now_ms.saturating_add(window)
    }
}

fn lease_ms(down_secs: u64) -> i64 {
    i64::try_from(down_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Who holds the background lease, until when (the holder's clock), and its fencing
/// token, one higher at every change of holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    pub incarnation: String,
    pub expires_ms: i64,
    pub fence: u64,
}

/// A node as seen by the caller now.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub record: NodeRecord,
    pub up: bool,
    /// Seconds since its last heartbeat.
    pub silent_secs: i64,
}

/// How this process joins: from `--node-id`, `--advertise`, `--zone`.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    pub advertise: String,
    pub zone: Option<String>,
    pub down_secs: u64,
    pub data_dir: PathBuf,
}

pub struct Membership<M> {
    meta: Arc<M>,
    spec: NodeSpec,
    node_key: String,
    incarnation: String,
    started_ms: i64,
    /// Until when (ms) the last successful heartbeat keeps this node up.
    fresh_until_ms: AtomicI64,
    superseded: AtomicBool,
    repair_backlog: std::sync::atomic::AtomicU64,
    /// Until when (ms, this clock) this node may run background work, and the fencing
    /// token of its lease.
    lead_until_ms: AtomicI64,
    fence: std::sync::atomic::AtomicU64,
    /// The node list placement last read, and when.
    view: std::sync::Mutex<Option<(std::time::Instant, Arc<Vec<NodeView>>)>>,
    /// The other nodes' lowest event horizon last read, and when.
    horizon: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn record_key(id: &str) -> Vec<u8> {
    [NODE_PREFIX, id.as_bytes()].concat()
}

fn decode(id: &str, bytes: &[u8]) -> Result<NodeRecord, ClusterError> {
    serde_json::from_slice(bytes).map_err(|_| ClusterError::Corrupt(id.to_owned()))
}

fn encode(r: &NodeRecord) -> Vec<u8> {
    // A struct of strings and numbers always serializes.
    serde_json::to_vec(r).unwrap_or_default()
}

/// The machine's identity, created on first start: 16 random bytes in `DATA/node-key`.
fn load_or_create_node_key(dir: &Path) -> Result<String, ClusterError> {
    let path = dir.join("node-key");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() == 32 && s.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
            return Ok(s.trim().to_owned());
        }
        Ok(_) => {
            return Err(ClusterError::NodeKey(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not 32 hex digits", path.display()),
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ClusterError::NodeKey(e)),
    }
    let key = format!("{:032x}", rand::random::<u128>());
    let tmp = dir.join("node-key.tmp");
    std::fs::write(&tmp, format!("{key}\n")).map_err(ClusterError::NodeKey)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(ClusterError::NodeKey)?;
    std::fs::rename(&tmp, &path).map_err(ClusterError::NodeKey)?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(ClusterError::NodeKey)?;
    Ok(key)
}

/// Most nodes a region lists.
const MAX_NODES: usize = 4096;

/// Every node record, with the caller's view of it; a damaged record is logged and skipped
/// so that one bad row does not stop every node from joining.
pub fn list_nodes<M: MetaStore>(meta: &M) -> Result<Vec<NodeView>, ClusterError> {
    let now = now_ms();
    let mut end = NODE_PREFIX.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let rows = meta.scan(Table::Cluster, NODE_PREFIX, Some(&end), MAX_NODES)?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, v)| {
            let id = String::from_utf8_lossy(&k[NODE_PREFIX.len()..]).into_owned();
            match decode(&id, &v) {
                Ok(record) => Some(NodeView {
                    up: record.is_up(now),
                    silent_secs: now.saturating_sub(record.heartbeat_ms).max(0) / 1000,
                    record,
                }),
                Err(e) => {
                    tracing::error!(error = %e, "skipping a node record");
                    None
                }
            }
        })
        .collect())
}

impl<M: MetaStore> Membership<M> {
    /// Registers this process as node `spec.id`, refusing an id or address another running
    /// node holds. A node that was draining stays draining across restarts.
    pub async fn join(
        meta: Arc<M>,
        spec: NodeSpec,
        usage: LocalUsage,
    ) -> Result<Arc<Self>, ClusterError> {
        let node_key = load_or_create_node_key(&spec.data_dir)?;
        let incarnation = format!("{:032x}", rand::random::<u128>());
        let started_ms = now_ms();
        let key = record_key(&spec.id);
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            let others = list_nodes(&*meta)?;
            if let Some(o) = others
                .iter()
                .find(|o| o.up && o.record.id != spec.id && o.record.advertise == spec.advertise)
            {
                return Err(ClusterError::AddressTaken {
                    advertise: spec.advertise.clone(),
                    other: o.record.id.clone(),
                });
            }
            let stored = meta.get(Table::Cluster, &key)?;
            let old = stored.as_deref().map(|b| decode(&spec.id, b)).transpose()?;
            // A restart of this machine finds its own key (and address). The same key at a
            // running node elsewhere is a copied data directory (a cloned disk or VM image).
            if let Some(o) = &old
                && o.is_up(now)
                && (o.node_key != node_key || o.advertise != spec.advertise)
            {
                return Err(ClusterError::IdTaken {
                    id: spec.id.clone(),
                    advertise: o.advertise.clone(),
                    secs_ago: now.saturating_sub(o.heartbeat_ms).max(0) / 1000,
                });
            }
            let record = NodeRecord {
                id: spec.id.clone(),
                advertise: spec.advertise.clone(),
                zone: spec.zone.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                node_key: node_key.clone(),
                incarnation: incarnation.clone(),
                started_ms,
                heartbeat_ms: now,
                expires_ms: now.saturating_add(lease_ms(spec.down_secs)),
                capacity_bytes: usage.capacity_bytes,
                free_bytes: usage.free_bytes,
                blobs: usage.blobs,
                blob_bytes: usage.blob_bytes,
                // Another machine taking over a dead node's id starts afresh.
                draining: old
                    .as_ref()
                    .is_some_and(|o| o.draining && o.node_key == node_key),
                repair_backlog: 0,
            };
            let mut batch = WriteBatch::new();
            batch.check_value(Table::Cluster, key.clone(), stored).put(
                Table::Cluster,
                key.clone(),
                encode(&record),
            );
            match meta.commit(batch).await {
                Ok(()) => {
                    tracing::info!(node = %spec.id, advertise = %spec.advertise, "joined the region");
                    return Ok(Arc::new(Self {
                        fresh_until_ms: AtomicI64::new(record.expires_ms),
                        meta,
                        spec,
                        node_key,
                        incarnation,
                        started_ms,
                        superseded: AtomicBool::new(false),
                        view: std::sync::Mutex::new(None),
                        horizon: std::sync::Mutex::new(None),
                        repair_backlog: std::sync::atomic::AtomicU64::new(0),
                        lead_until_ms: AtomicI64::new(0),
                        fence: std::sync::atomic::AtomicU64::new(0),
                    }));
                }
                Err(MetaError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClusterError::Busy(spec.id))
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn down_secs(&self) -> u64 {
        self.spec.down_secs
    }

    pub fn meta(&self) -> &Arc<M> {
        &self.meta
    }

    /// Whether this node holds the background lease now. It stops a quarter of the lease
    /// before the lease ends by the others' reckoning, so two nodes whose clocks agree to
    /// within that margin never both run the workers.
    pub fn leads(&self) -> bool {
        !self.superseded.load(Ordering::SeqCst)
            && now_ms() < self.lead_until_ms.load(Ordering::SeqCst)
    }

    /// The fencing token of the lease this node holds (0 before it ever held one).
    pub fn fence(&self) -> u64 {
        self.fence.load(Ordering::SeqCst)
    }

    /// Publishes this node's event horizon for the others' event readers.
    pub async fn publish_horizon(&self, horizon: u64) -> Result<(), ClusterError> {
        let mut batch = WriteBatch::new();
        batch.put(
            Table::Cluster,
            [HORIZON_PREFIX, self.spec.id.as_bytes()].concat(),
            horizon.to_be_bytes().to_vec(),
        );
        self.meta.commit(batch).await?;
        Ok(())
    }

    /// The lowest event id another up node may still commit: the least of their published
    /// horizons (0 for one that has not published yet). Down nodes are left out: a node
    /// that cannot heartbeat cannot commit either. Blocking.
    pub fn others_horizon(&self) -> u64 {
        if let Ok(h) = self.horizon.lock()
            && let Some((at, v)) = *h
            && at.elapsed() < HORIZON_TTL
        {
            return v;
        }
        // Read afresh (the placement view may be a second old): a node that just joined
        // may already be committing events.
        let Ok(nodes) = list_nodes(&*self.meta) else {
            return 0;
        };
        let mut end = HORIZON_PREFIX.to_vec();
        if let Some(l) = end.last_mut() {
            *l += 1;
        }
        let Ok(rows) = self
            .meta
            .scan(Table::Cluster, HORIZON_PREFIX, Some(&end), MAX_NODES)
        else {
            return 0;
        };
        let published: std::collections::HashMap<&[u8], u64> = rows
            .iter()
            .filter_map(|(k, v)| {
                let id = &k[HORIZON_PREFIX.len()..];
                Some((id, u64::from_be_bytes(v.as_slice().try_into().ok()?)))
            })
            .collect();
        let least = nodes
            .iter()
            .filter(|n| n.up && n.record.id != self.spec.id)
            .map(|n| published.get(n.record.id.as_bytes()).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX);
        if let Ok(mut h) = self.horizon.lock() {
            *h = Some((std::time::Instant::now(), least));
        }
        least
    }

    /// The background lease as stored, if any node ever took it.
    pub fn lease(&self) -> Result<Option<LeaseRecord>, ClusterError> {
        Ok(self
            .meta
            .get(Table::Cluster, LEASE_KEY)?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Takes the background lease when it is free or expired, or renews it when held.
    pub async fn try_lead(&self) -> Result<bool, ClusterError> {
        if self.superseded.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let stored = self.meta.get(Table::Cluster, LEASE_KEY)?;
        let old: Option<LeaseRecord> = stored
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok());
        let now = now_ms();
        let mine = old
            .as_ref()
            .is_some_and(|o| o.holder == self.spec.id && o.incarnation == self.incarnation);
        if !mine && old.as_ref().is_some_and(|o| o.expires_ms > now) {
            self.lead_until_ms.store(0, Ordering::SeqCst);
            return Ok(false);
        }
        let lease = lease_ms(self.spec.down_secs);
        // The fence row may be ahead of a lease row that was lost or damaged: a new holder's
        // token is above both, so it never repeats a deposed holder's.
        let fence_row = self.meta.get(Table::Cluster, FENCE_KEY)?;
        let fenced_at = fence_row
            .as_deref()
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes);
        let fence = match &old {
            Some(o) if mine => o.fence,
            Some(o) => o.fence.max(fenced_at) + 1,
            None => fenced_at + 1,
        };
        let record = LeaseRecord {
            holder: self.spec.id.clone(),
            incarnation: self.incarnation.clone(),
            expires_ms: now.saturating_add(lease),
            fence,
        };
        let mut batch = WriteBatch::new();
        batch
            .check_value(Table::Cluster, LEASE_KEY.to_vec(), stored)
            .put(
                Table::Cluster,
                LEASE_KEY.to_vec(),
                serde_json::to_vec(&record).unwrap_or_default(),
            );
        let token = fence.to_be_bytes().to_vec();
        if fence_row.as_deref() != Some(&token[..]) {
            batch
                .check_value(Table::Cluster, FENCE_KEY.to_vec(), fence_row)
                .put(Table::Cluster, FENCE_KEY.to_vec(), token);
        }
        match self.meta.commit(batch).await {
            Ok(()) => {
                if !mine {
                    tracing::info!(node = %self.spec.id, fence, "took the background lease");
                }
                self.fence.store(fence, Ordering::SeqCst);
                self.lead_until_ms
                    .store(now.saturating_add(lease - lease / 4), Ordering::SeqCst);
                Ok(true)
            }
            Err(MetaError::Conflict(_)) => {
                self.lead_until_ms.store(0, Ordering::SeqCst);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What the last repair pass left; reported with the next heartbeat.
    pub fn set_repair_backlog(&self, n: u64) {
        self.repair_backlog.store(n, Ordering::Relaxed);
    }

    pub fn repair_backlog(&self) -> u64 {
        self.repair_backlog.load(Ordering::Relaxed)
    }

    /// Registered, not superseded, and the last heartbeat landed within `node_down_secs`.
    pub fn is_ready(&self) -> bool {
        !self.superseded.load(Ordering::SeqCst)
            && now_ms() < self.fresh_until_ms.load(Ordering::SeqCst)
    }

    /// Rewrites this node's record with a new heartbeat time and `usage`. Fails with
    /// [`ClusterError::Superseded`] (for good) when the record is gone or names another start.
    pub async fn heartbeat(&self, usage: Option<LocalUsage>) -> Result<(), ClusterError> {
        if self.superseded.load(Ordering::SeqCst) {
            return Err(ClusterError::Superseded);
        }
        let key = record_key(&self.spec.id);
        for _ in 0..ATTEMPTS {
            let stored = self.meta.get(Table::Cluster, &key)?;
            let Some(bytes) = stored else {
                return self.supersede("its record was removed (feiyun cluster remove)");
            };
            let mut record = decode(&self.spec.id, &bytes)?;
            if record.incarnation != self.incarnation || record.node_key != self.node_key {
                return self.supersede("another process took its id over");
            }
            let now = now_ms();
            record.heartbeat_ms = now;
            record.expires_ms = now.saturating_add(lease_ms(self.spec.down_secs));
            record.started_ms = self.started_ms;
            record.repair_backlog = self.repair_backlog.load(Ordering::Relaxed);
            if let Some(u) = usage {
                record.capacity_bytes = u.capacity_bytes;
                record.free_bytes = u.free_bytes;
                record.blobs = u.blobs;
                record.blob_bytes = u.blob_bytes;
            }
            let mut batch = WriteBatch::new();
            batch
                .check_value(Table::Cluster, key.clone(), Some(bytes))
                .put(Table::Cluster, key.clone(), encode(&record));
            match self.meta.commit(batch).await {
                Ok(()) => {
                    self.fresh_until_ms
                        .store(record.expires_ms, Ordering::SeqCst);
                    return Ok(());
                }
                // A drain flag set between the read and the commit: read again.
                Err(MetaError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClusterError::Busy(self.spec.id.clone()))
    }

    fn supersede(&self, why: &str) -> Result<(), ClusterError> {
        if !self.superseded.swap(true, Ordering::SeqCst) {
            tracing::error!(
                node = %self.spec.id,
                "this node left the region: {why}; it reports not ready until restarted"
            );
        }
        Err(ClusterError::Superseded)
    }

    /// Heartbeats every fifth of `node_down_secs`. Disk usage is measured once a minute by
    /// its own task (it walks the blob directory, which on a large disk takes longer than a
    /// lease) and the newest figure rides on the next heartbeat.
    pub fn spawn_heartbeat(self: &Arc<Self>, usage: Arc<dyn Fn() -> LocalUsage + Send + Sync>) {
        let me = self.clone();
        let every = Duration::from_millis((lease_ms(me.spec.down_secs) / 5).max(500) as u64);
        let latest: Arc<std::sync::Mutex<Option<LocalUsage>>> = Arc::default();
        let slot = latest.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(USAGE_EVERY).await;
                let u = usage.clone();
                if let Ok(m) = tokio::task::spawn_blocking(move || u()).await
                    && let Ok(mut s) = slot.lock()
                {
                    *s = Some(m);
                }
            }
        });
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let fresh = latest.lock().ok().and_then(|mut s| s.take());
                match me.heartbeat(fresh).await {
                    Ok(()) => {}
                    Err(ClusterError::Superseded) => return,
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
                if let Err(e) = me.try_lead().await {
                    tracing::warn!(error = %e, "background lease not renewed");
                }
            }
        });
    }

    pub fn nodes(&self) -> Result<Vec<NodeView>, ClusterError> {
        list_nodes(&*self.meta)
    }

    /// The node list at most [`VIEW_TTL`] old, for placing and finding blob copies
    /// (blocking: it reads the store when stale).
    pub fn current_nodes(&self) -> Result<Arc<Vec<NodeView>>, ClusterError> {
        if let Ok(v) = self.view.lock()
            && let Some((at, nodes)) = &*v
            && at.elapsed() < VIEW_TTL
        {
            return Ok(nodes.clone());
        }
        let nodes = Arc::new(list_nodes(&*self.meta)?);
        if let Ok(mut v) = self.view.lock() {
            *v = Some((std::time::Instant::now(), nodes.clone()));
        }
        Ok(nodes)
    }

    /// Starts (or, with `on == false`, cancels) moving a node's data away.
    pub async fn set_draining(&self, id: &str, on: bool) -> Result<NodeView, ClusterError> {
        let key = record_key(id);
        for _ in 0..ATTEMPTS {
            let Some(bytes) = self.meta.get(Table::Cluster, &key)? else {
                return Err(ClusterError::NoSuchNode(id.to_owned()));
            };
            let mut record = decode(id, &bytes)?;
            record.draining = on;
            let mut batch = WriteBatch::new();
            batch
                .check_value(Table::Cluster, key.clone(), Some(bytes))
                .put(Table::Cluster, key.clone(), encode(&record));
            match self.meta.commit(batch).await {
                Ok(()) => {
                    let now = now_ms();
                    return Ok(NodeView {
                        up: record.is_up(now),
                        silent_secs: now.saturating_sub(record.heartbeat_ms).max(0) / 1000,
                        record,
                    });
                }
                Err(MetaError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClusterError::Busy(id.to_owned()))
    }

    /// Forgets a node that is down. A node that is up is refused: it would only register
    /// again, and its data is still being served from it.
    pub async fn remove(&self, id: &str) -> Result<NodeRecord, ClusterError> {
        let key = record_key(id);
        let Some(bytes) = self.meta.get(Table::Cluster, &key)? else {
            return Err(ClusterError::NoSuchNode(id.to_owned()));
        };
        let record = decode(id, &bytes)?;
        if record.is_up(now_ms()) {
            return Err(ClusterError::NodeUp(id.to_owned()));
        }
        let mut batch = WriteBatch::new();
        batch
            .check_value(Table::Cluster, key.clone(), Some(bytes))
            .delete(Table::Cluster, key);
        match self.meta.commit(batch).await {
            Ok(()) => {
                tracing::warn!(node = %id, "node removed from the region");
                Ok(record)
            }
            // It heartbeated (came back) in between.
            Err(MetaError::Conflict(_)) => Err(ClusterError::NodeUp(id.to_owned())),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;

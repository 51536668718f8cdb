//! Blobs across the nodes of a region: each blob is written to `replicas` nodes at once and
//! read from the nearest copy that verifies.
//!
//! The frame encoder (and its checksums or seal) runs once, on the node taking the write,
//! and every replica stores the same encoded bytes, so a replica never holds the blob's key
//! and a reader verifies whatever copy it reads exactly as it verifies a local file.
//!
//! Write: rank the up, non-draining nodes for the blob id ([`crate::placement::rank`]),
//! record the intended copies (so a crash mid-write leaves nothing a later delete cannot
//! find), stream the stored bytes to all of them at once with a few chunks in flight each,
//! and acknowledge only when every copy is fsynced. A copy that fails is replaced by the next
//! node in rank order, filled from a good copy; with fewer than `min_replicas` good copies
//! the write fails as unavailable. The record then names exactly the good copies.
//!
//! Read: this node's copy first, then its zone's, then the rest; a copy that is missing,
//! unreachable or fails verification is skipped (mid-read too) and queued for repair.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use feiyun_blob::{
    BlobError, BlobId, BlobReader, BlobStore, FileSink, FrameKey, LocalBlobReader, LocalBlobStore,
    LocalBlobWriter, Sink, Source, framed_reader, framed_writer,
};
use feiyun_meta::{MetaStore, Table, WriteBatch};

use crate::peer::{PeerClient, RemoteSink, RemoteSource, wait};
use crate::placement::{Candidate, Gone, Placement, gone_key, place_key, rank};
use crate::{Membership, NodeView};

/// Placement records kept in memory; a blob's record changes only by repair, and a stale
/// one costs a failed read and a fresh lookup, never wrong bytes.
const PLACEMENT_CACHE: usize = 65_536;
/// Blobs remembered for repair at most (the scrubber finds the rest).
const REPAIR_QUEUE: usize = 100_000;
/// Bytes per request when copying a blob from one node to another.
const COPY_PIECE: usize = 4 * 1024 * 1024;

/// How many copies each blob gets.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaConfig {
    /// Copies per blob (fewer while the region has fewer nodes).
    pub replicas: usize,
    /// Fewest good copies a write may be acknowledged with.
    pub min_replicas: usize,
    /// A node down this long has its copies re-created elsewhere.
    pub repair_after_secs: u64,
    /// How long the copies of a deleted blob stay, so that reads in progress on any node
    /// finish (a node's read leases are its own).
    pub delete_grace_secs: u64,
    /// Erasure coding for the blobs of the cold storage classes (or all, with
    /// `erasure_all`) instead of copies, while the region has `k+m` nodes up.
    pub erasure: Option<crate::erasure::Layout>,
    pub erasure_all: bool,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Reads that left a copy for another.
    pub read_fallbacks: AtomicU64,
    /// Copies that failed during a write.
    pub replica_failures: AtomicU64,
    /// Copies made to replace a failed one.
    pub replacements: AtomicU64,
    /// Writes refused for want of nodes.
    pub refused_writes: AtomicU64,
    /// Copies re-created by repair.
    pub repaired: AtomicU64,
    /// Copies of deleted blobs removed.
    pub collected: AtomicU64,
    /// Bytes of this node's shards the scrubber checked.
    pub scrubbed_bytes: AtomicU64,
    /// Shards the scrubber found damaged or missing here.
    pub scrub_damaged: AtomicU64,
}

pub struct ClusterBlobStore<M: MetaStore> {
    pub(crate) inner: Arc<Inner<M>>,
}

pub(crate) struct Inner<M: MetaStore> {
    pub(crate) local: Arc<LocalBlobStore>,
    pub(crate) membership: Arc<Membership<M>>,
    pub(crate) peers: PeerClient,
    pub(crate) config: ReplicaConfig,
    placements: Mutex<HashMap<BlobId, Arc<Placement>>>,
    /// Copies reads found damaged or missing, for the next repair pass.
    pub(crate) repair: Mutex<crate::repair::Suspects>,
    /// The placement key the scrubber checked last; it goes on after it next pass.
    pub(crate) scrub_from: Mutex<Vec<u8>>,
    pub(crate) stats: Arc<ClusterStats>,
}

pub(crate) fn addr_of<'a>(nodes: &'a [NodeView], id: &str) -> Option<&'a NodeView> {
    nodes.iter().find(|n| n.record.id == id)
}

fn unavailable(msg: String) -> BlobError {
    BlobError::Unavailable(msg)
}

fn io_err(e: impl std::fmt::Display) -> BlobError {
    BlobError::Io(io::Error::other(e.to_string()))
}

impl<M: MetaStore> ClusterBlobStore<M> {
    pub fn new(
        local: Arc<LocalBlobStore>,
        membership: Arc<Membership<M>>,
        peers: PeerClient,
        config: ReplicaConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                local,
                membership,
                peers,
                config,
                placements: Mutex::default(),
                repair: Mutex::default(),
                scrub_from: Mutex::default(),
                stats: Arc::default(),
            }),
        }
    }

    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.inner.stats
    }

    /// Copies reads found bad that wait for the next repair pass.
    pub fn suspect_copies(&self) -> usize {
        self.inner
            .repair
            .lock()
            .map_or(0, |q| q.values().map(|s| s.len()).sum())
    }

    /// Where a blob's copies are, as recorded.
    pub fn placement(&self, id: BlobId) -> Result<Option<Placement>, BlobError> {
        Ok(self.inner.placement(id, false)?.map(|p| (*p).clone()))
    }
}

impl<M: MetaStore> Inner<M> {
    pub(crate) fn me(&self) -> &str {
        self.membership.id()
    }

    pub(crate) fn nodes(&self) -> Result<Arc<Vec<NodeView>>, BlobError> {
        self.membership.current_nodes().map_err(io_err)
    }

    fn placement(&self, id: BlobId, fresh: bool) -> Result<Option<Arc<Placement>>, BlobError> {
        if !fresh
            && let Some(p) = self
                .placements
                .lock()
                .ok()
                .and_then(|c| c.get(&id).cloned())
        {
            return Ok(Some(p));
        }
        let Some(bytes) = self
            .membership
            .meta()
            .get(Table::Cluster, &place_key(id.0))
            .map_err(io_err)?
        else {
            self.forget(id);
            return Ok(None);
        };
        let p = Arc::new(Placement::decode(&bytes).ok_or_else(|| BlobError::Corrupt {
            id,
            reason: "its placement record is damaged".into(),
        })?);
        if let Ok(mut c) = self.placements.lock() {
            if c.len() >= PLACEMENT_CACHE {
                c.clear();
            }
            c.insert(id, p.clone());
        }
        Ok(Some(p))
    }

    pub(crate) fn forget(&self, id: BlobId) {
        if let Ok(mut c) = self.placements.lock() {
            c.remove(&id);
        }
    }

    pub(crate) fn commit_batch(&self, batch: WriteBatch) -> Result<bool, BlobError> {
        let meta = self.membership.meta().clone();
        match wait(
            self.peers.runtime(),
            async move { meta.commit(batch).await },
        ) {
            Some(Ok(())) => Ok(true),
            Some(Err(feiyun_meta::MetaError::Conflict(_))) => Ok(false),
            Some(Err(e)) => Err(unavailable(format!("metadata store: {e}"))),
            None => Err(unavailable("runtime gone".into())),
        }
    }

    /// Writes a new blob's placement record (its id is fresh: nothing to check).
    fn record(&self, id: BlobId, nodes: &[String]) -> Result<Vec<u8>, BlobError> {
        self.record_placement(id, &Placement::copies(nodes.to_vec()))
    }

    pub(crate) fn record_placement(
        &self,
        id: BlobId,
        place: &Placement,
    ) -> Result<Vec<u8>, BlobError> {
        let value = place.encode();
        let mut batch = WriteBatch::new();
        batch.put(Table::Cluster, place_key(id.0), value.clone());
        self.commit_batch(batch)?;
        self.forget(id);
        Ok(value)
    }

    /// Replaces a placement record that still holds `expect`; false when it changed (the
    /// blob was deleted while it was being written).
    fn rerecord(&self, id: BlobId, expect: &[u8], nodes: &[String]) -> Result<bool, BlobError> {
        self.replace_placement(id, expect, &Placement::copies(nodes.to_vec()))
    }

    pub(crate) fn replace_placement(
        &self,
        id: BlobId,
        expect: &[u8],
        place: &Placement,
    ) -> Result<bool, BlobError> {
        let mut batch = WriteBatch::new();
        batch
            .check_value(Table::Cluster, place_key(id.0), Some(expect.to_vec()))
            .put(Table::Cluster, place_key(id.0), place.encode());
        let done = self.commit_batch(batch)?;
        self.forget(id);
        Ok(done)
    }

    /// Adds `nodes` to the blob's tombstone, so their copies go after the grace.
    pub(crate) fn tombstone(
        &self,
        id: BlobId,
        nodes: &[String],
        place: Option<Vec<u8>>,
    ) -> Result<(), BlobError> {
        let meta = self.membership.meta();
        let key = gone_key(id.0);
        for _ in 0..8 {
            let stored = meta.get(Table::Cluster, &key).map_err(io_err)?;
            let mut gone = stored.as_deref().and_then(Gone::decode).unwrap_or(Gone {
                nodes: Vec::new(),
                after_ms: 0,
            });
            for n in nodes {
                if !gone.nodes.contains(n) {
                    gone.nodes.push(n.clone());
                }
            }
            let grace = i64::try_from(self.config.delete_grace_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX);
            gone.after_ms = gone.after_ms.max(crate::now_ms().saturating_add(grace));
            let mut batch = WriteBatch::new();
            batch.check_value(Table::Cluster, key.clone(), stored).put(
                Table::Cluster,
                key.clone(),
                gone.encode(),
            );
            if let Some(p) = &place {
                batch
                    .check_value(Table::Cluster, place_key(id.0), Some(p.clone()))
                    .delete(Table::Cluster, place_key(id.0));
            }
            if self.commit_batch(batch)? {
                self.forget(id);
                return Ok(());
            }
            if place.is_some() {
                // The placement changed under us (a repair): the caller reads it again.
                return Err(BlobError::Io(io::Error::other("placement changed")));
            }
        }
        Err(unavailable(format!("blob {id}'s tombstone kept changing")))
    }

    /// A copy on `node` failed a read: read elsewhere, and, when the copy itself is
    /// damaged or missing (not merely out of reach), have it rewritten.
    pub(crate) fn suspect(&self, id: BlobId, node: &str, e: &BlobError) {
        self.stats.read_fallbacks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%id, node, error = %e, "a blob copy failed; reading another");
        if matches!(e, BlobError::Corrupt { .. } | BlobError::NotFound(_))
            && let Ok(mut q) = self.repair.lock()
            && q.len() < REPAIR_QUEUE
        {
            q.entry(id).or_default().insert(node.to_owned());
        }
    }

    /// The stored bytes of a copy on `node`.
    pub(crate) fn source(
        &self,
        nodes: &[NodeView],
        node: &str,
        id: BlobId,
    ) -> Result<Box<dyn Source>, BlobError> {
        if node == self.me() {
            return Ok(Box::new(self.local.open_raw(id)?));
        }
        let view = addr_of(nodes, node)
            .ok_or_else(|| unavailable(format!("node {node} is no longer in the region")))?;
        Ok(Box::new(RemoteSource {
            peers: self.peers.clone(),
            addr: view.record.advertise.clone(),
            id,
            size: std::sync::OnceLock::new(),
        }))
    }

    fn open_on(
        &self,
        nodes: &[NodeView],
        node: &str,
        id: BlobId,
        len: u64,
        key: Option<&FrameKey>,
    ) -> Result<LocalBlobReader, BlobError> {
        framed_reader(id, len, key, self.source(nodes, node, id)?)
    }

    /// The copies in the order to read them: this node's, its zone's, the others'; those on
    /// nodes that are down last (they may only be slow to heartbeat).
    fn read_order(&self, nodes: &[NodeView], place: &Placement) -> Vec<String> {
        let mine = addr_of(nodes, self.me()).and_then(|n| n.record.zone.clone());
        let mut order: Vec<(u8, &String)> = place
            .nodes
            .iter()
            .map(|n| {
                let rank = match addr_of(nodes, n) {
                    _ if n == self.me() => 0,
                    Some(v) if v.up && v.record.zone == mine && mine.is_some() => 1,
                    Some(v) if v.up => 2,
                    _ => 3,
                };
                (rank, n)
            })
            .collect();
        order.sort_by_key(|(r, _)| *r);
        order.into_iter().map(|(_, n)| n.clone()).collect()
    }

    pub(crate) fn sink_on(
        &self,
        nodes: &[NodeView],
        node: &str,
        id: BlobId,
    ) -> Result<Replica, BlobError> {
        let sink = if node == self.me() {
            ReplicaSink::Local(self.local.create_raw(id)?)
        } else {
            let view = addr_of(nodes, node)
                .ok_or_else(|| unavailable(format!("node {node} is no longer in the region")))?;
            ReplicaSink::Remote(self.peers.upload(&view.record.advertise, id))
        };
        Ok(Replica {
            node: node.to_owned(),
            sink,
        })
    }

    /// Copies blob `id` from the copy on `from` to node `to`, streaming.
    pub(crate) fn copy(
        &self,
        nodes: &[NodeView],
        id: BlobId,
        from: &str,
        to: &str,
    ) -> Result<(), BlobError> {
        let source = self.source(nodes, from, id)?;
        let size = source.size()?;
        let mut replica = self.sink_on(nodes, to, id)?;
        let mut buf = vec![0u8; COPY_PIECE];
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(COPY_PIECE as u64) as usize;
            source.read_exact_at(&mut buf[..n], at)?;
            replica.write_all(&buf[..n])?;
            at += n as u64;
        }
        replica.commit()
    }
}

impl<M: MetaStore> ClusterBlobStore<M> {
    fn create_as(
        &self,
        id: BlobId,
        key: Option<&FrameKey>,
        cold: bool,
    ) -> Result<LocalBlobWriter, BlobError> {
        let inner = &self.inner;
        let nodes = inner.nodes()?;
        let live: Vec<Candidate> = nodes
            .iter()
            .filter(|n| n.up && !n.record.draining)
            .map(|n| Candidate {
                id: &n.record.id,
                zone: n.record.zone.as_deref(),
            })
            .collect();
        // A region of fewer nodes than `replicas` keeps a copy on each.
        let want = inner.config.replicas.min(nodes.len()).max(1);
        let need = inner.config.min_replicas.clamp(1, want);
        let order: Vec<String> = rank(id.0, &live, want)
            .iter()
            .map(|c| c.id.to_owned())
            .collect();
        if order.len() < need {
            inner.stats.refused_writes.fetch_add(1, Ordering::Relaxed);
            return Err(unavailable(format!(
                "{} of the {need} nodes a write needs are up",
                order.len()
            )));
        }
        if let Some(layout) = inner.config.erasure
            && (cold || inner.config.erasure_all)
            && let Some(sink) = inner.create_coded(
                id,
                layout,
                nodes.clone(),
                &rank(id.0, &live, layout.shards())
                    .iter()
                    .map(|c| c.id.to_owned())
                    .collect::<Vec<_>>(),
            )?
        {
            return framed_writer(id, key, cold, Box::new(sink));
        }
        let chosen = order[..want.min(order.len())].to_vec();
        let intent = inner.record(id, &chosen)?;
        let mut replicas = Vec::with_capacity(chosen.len());
        for node in &chosen {
            match inner.sink_on(&nodes, node, id) {
                Ok(r) => replicas.push(r),
                Err(e) => {
                    inner.stats.replica_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%id, node = %node, error = %e, "a copy could not start");
                }
            }
        }
        let tee = Tee {
            inner: inner.clone(),
            id,
            nodes,
            replicas,
            failed: Vec::new(),
            spare: order[chosen.len()..].to_vec(),
            chosen,
            intent,
            want,
            need,
        };
        framed_writer(id, key, cold, Box::new(tee))
    }
}

impl<M: MetaStore> BlobStore for ClusterBlobStore<M> {
    type Writer = LocalBlobWriter;
    type Reader = ClusterReader<M>;

    fn create(&self, id: BlobId, key: Option<&FrameKey>) -> Result<LocalBlobWriter, BlobError> {
        self.create_as(id, key, false)
    }

    fn create_cold(
        &self,
        id: BlobId,
        key: Option<&FrameKey>,
    ) -> Result<LocalBlobWriter, BlobError> {
        self.create_as(id, key, true)
    }

    fn open(
        &self,
        id: BlobId,
        len: u64,
        key: Option<&FrameKey>,
    ) -> Result<ClusterReader<M>, BlobError> {
        let inner = &self.inner;
        let key = key.and_then(|k| FrameKey::from_bytes(k.as_bytes()));
        let mut last = None;
        // A cached record may predate a repair that moved the copies: the second pass
        // reads the record afresh.
        for fresh in [false, true] {
            let Some(place) = inner.placement(id, fresh)? else {
                // Written before this region had nodes: the local file.
                let r = inner.local.open(id, len, key.as_ref())?;
                let me = inner.me().to_owned();
                return Ok(ClusterReader::new(
                    inner.clone(),
                    id,
                    len,
                    key,
                    r,
                    me,
                    Vec::new(),
                ));
            };
            if let Some(coded) = place.coded {
                let opened = inner.open_coded(id, &place, coded).and_then(|source| {
                    // The first stripe, read before the frame reader looks at the header:
                    // too few shards answering is the region unable to serve it, not damage.
                    source
                        .read_exact_at(&mut [0u8; 8], 0)
                        .map_err(|e| crate::erasure::classify(BlobError::Io(e), id))?;
                    framed_reader(id, len, key.as_ref(), Box::new(source))
                        .map_err(|e| crate::erasure::classify(e, id))
                });
                let r = match opened {
                    Ok(r) => r,
                    Err(e) if !fresh => {
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                return Ok(ClusterReader::new(
                    inner.clone(),
                    id,
                    len,
                    key,
                    r,
                    "erasure-coded".into(),
                    Vec::new(),
                ));
            }
            let nodes = inner.nodes()?;
            let order = inner.read_order(&nodes, &place);
            for (i, node) in order.iter().enumerate() {
                match inner.open_on(&nodes, node, id, len, key.as_ref()) {
                    Ok(r) => {
                        let rest = order[i + 1..].to_vec();
                        let node = node.clone();
                        return Ok(ClusterReader::new(
                            inner.clone(),
                            id,
                            len,
                            key,
                            r,
                            node,
                            rest,
                        ));
                    }
                    Err(e) => {
                        inner.suspect(id, node, &e);
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or(BlobError::NotFound(id)))
    }

    /// Deleting a blob moves its copies to a tombstone in the same commit that drops its
    /// placement; each node removes its own copy once the read grace has passed.
    fn delete(&self, id: BlobId) -> Result<(), BlobError> {
        let inner = &self.inner;
        for _ in 0..8 {
            let stored = inner
                .membership
                .meta()
                .get(Table::Cluster, &place_key(id.0))
                .map_err(io_err)?;
            let Some(stored) = stored else {
                inner.forget(id);
                // Written before this region had nodes, or deleted already.
                return inner.local.delete(id);
            };
            let place = Placement::decode(&stored).ok_or_else(|| BlobError::Corrupt {
                id,
                reason: "its placement record is damaged".into(),
            })?;
            if place.coded.is_some() {
                if inner.tombstone_shards(id, &place.nodes, Some(stored))? {
                    return Ok(());
                }
                continue;
            }
            match inner.tombstone(id, &place.nodes, Some(stored)) {
                Ok(()) => return Ok(()),
                Err(BlobError::Io(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(unavailable(format!("blob {id}'s placement kept changing")))
    }

    fn exists(&self, id: BlobId) -> Result<bool, BlobError> {
        Ok(self.inner.placement(id, false)?.is_some() || self.inner.local.exists(id)?)
    }
}

/// One copy (or shard) being written.
pub(crate) struct Replica {
    node: String,
    sink: ReplicaSink,
}

enum ReplicaSink {
    Local(FileSink),
    Remote(RemoteSink),
}

impl Replica {
    /// Ends an upload without waiting for its fsync (a local file has nothing to end).
    pub(crate) fn close(&mut self) -> io::Result<()> {
        match &mut self.sink {
            ReplicaSink::Remote(s) => s.close(),
            ReplicaSink::Local(_) => Ok(()),
        }
    }

    pub(crate) fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            ReplicaSink::Local(s) => s.write_all(buf),
            ReplicaSink::Remote(s) => s.write_all(buf),
        }
    }

    pub(crate) fn commit(self) -> Result<(), BlobError> {
        match self.sink {
            ReplicaSink::Local(s) => Box::new(s).commit(),
            ReplicaSink::Remote(s) => s.finish().map_err(BlobError::Io),
        }
    }
}

/// The sink under a cluster write: every byte to every copy still healthy.
struct Tee<M: MetaStore> {
    inner: Arc<Inner<M>>,
    id: BlobId,
    nodes: Arc<Vec<NodeView>>,
    replicas: Vec<Replica>,
    /// Copies that failed, with why.
    failed: Vec<(String, String)>,
    /// The nodes ranked after the chosen ones: replacements, in order.
    spare: Vec<String>,
    chosen: Vec<String>,
    /// The placement record as written when the write began.
    intent: Vec<u8>,
    want: usize,
    need: usize,
}

impl<M: MetaStore> Tee<M> {
    fn fail(&mut self, node: String, why: String) {
        self.inner
            .stats
            .replica_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(id = %self.id, node = %node, error = %why, "a copy failed during a write");
        self.failed.push((node, why));
    }
}

impl<M: MetaStore> Write for Tee<M> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut i = 0;
        while i < self.replicas.len() {
            match self.replicas[i].write_all(buf) {
                Ok(()) => i += 1,
                Err(e) => {
                    let r = self.replicas.remove(i);
                    self.fail(r.node, e.to_string());
                }
            }
        }
        if self.replicas.is_empty() {
            let why: Vec<String> = self
                .failed
                .iter()
                .map(|(n, e)| format!("{n}: {e}"))
                .collect();
            return Err(io::Error::other(format!(
                "every copy failed ({})",
                why.join("; ")
            )));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<M: MetaStore> Sink for Tee<M> {
    fn commit(mut self: Box<Self>) -> Result<(), BlobError> {
        let id = self.id;
        let mut good: Vec<String> = Vec::with_capacity(self.want);
        let mut replicas = std::mem::take(&mut self.replicas);
        // Every upload ends before any is waited for: the copies' fsyncs overlap.
        let mut i = 0;
        while i < replicas.len() {
            match replicas[i].close() {
                Ok(()) => i += 1,
                Err(e) => {
                    let r = replicas.remove(i);
                    self.fail(r.node, e.to_string());
                }
            }
        }
        for r in replicas {
            let node = r.node.clone();
            match r.commit() {
                Ok(()) => good.push(node),
                Err(e) => self.fail(node, e.to_string()),
            }
        }
        // Fill the places of failed copies from a good one, next in rank order first.
        let spare = std::mem::take(&mut self.spare);
        for node in spare {
            if good.len() >= self.want || good.is_empty() {
                break;
            }
            match self.inner.copy(&self.nodes, id, &good[0], &node) {
                Ok(()) => {
                    self.inner
                        .stats
                        .replacements
                        .fetch_add(1, Ordering::Relaxed);
                    good.push(node);
                }
                Err(e) => self.fail(node, e.to_string()),
            }
        }
        // Copies that failed after they may have been stored are removed where reachable;
        // what is not reachable now is found by the scrubber.
        for (node, _) in &self.failed {
            if let Some(view) = addr_of(&self.nodes, node)
                && node != self.inner.me()
            {
                let (peers, addr) = (self.inner.peers.clone(), view.record.advertise.clone());
                self.inner.peers.runtime().spawn(async move {
                    let _ = peers.delete(&addr, id).await;
                });
            }
        }
        if good.len() < self.need {
            self.inner
                .stats
                .refused_writes
                .fetch_add(1, Ordering::Relaxed);
            // What was stored goes, as a deleted blob's copies do.
            let mut stored = self.chosen.clone();
            stored.extend(good.iter().filter(|n| !self.chosen.contains(n)).cloned());
            if self
                .inner
                .tombstone(id, &stored, Some(self.intent.clone()))
                .is_err()
            {
                self.inner.tombstone(id, &stored, None)?;
            }
            let why: Vec<String> = self
                .failed
                .iter()
                .map(|(n, e)| format!("{n}: {e}"))
                .collect();
            return Err(unavailable(format!(
                "{} of the {} copies a write needs were stored ({})",
                good.len(),
                self.need,
                why.join("; ")
            )));
        }
        // Fewer copies than wanted are found and made up by the next repair pass.
        if good != self.chosen && !self.inner.rerecord(id, &self.intent, &good)? {
            // Deleted while it was written (the request was abandoned): its copies go too.
            self.inner.tombstone(id, &good, None)?;
            return Err(unavailable(format!("blob {id} was deleted while written")));
        }
        Ok(())
    }
}

/// A reader that moves to another copy when the one it reads fails.
pub struct ClusterReader<M: MetaStore> {
    inner: Arc<Inner<M>>,
    id: BlobId,
    len: u64,
    key: Option<FrameKey>,
    current: LocalBlobReader,
    /// The node `current` reads from.
    node: String,
    rest: Vec<String>,
}

impl<M: MetaStore> ClusterReader<M> {
    fn new(
        inner: Arc<Inner<M>>,
        id: BlobId,
        len: u64,
        key: Option<FrameKey>,
        current: LocalBlobReader,
        node: String,
        rest: Vec<String>,
    ) -> Self {
        Self {
            inner,
            id,
            len,
            key,
            current,
            node,
            rest,
        }
    }
}

impl<M: MetaStore> BlobReader for ClusterReader<M> {
    fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, BlobError> {
        loop {
            let e = match self.current.read(offset, len) {
                Ok(v) => return Ok(v),
                Err(
                    e @ (BlobError::Corrupt { .. } | BlobError::Io(_) | BlobError::NotFound(_)),
                ) => e,
                Err(e) => return Err(e),
            };
            if self.rest.is_empty() {
                // A coded blob's reader has no other copy; its errors say their class.
                return Err(crate::erasure::classify(e, self.id));
            }
            self.inner.suspect(self.id, &self.node, &e);
            let nodes = self.inner.nodes()?;
            loop {
                let Some(node) = (!self.rest.is_empty()).then(|| self.rest.remove(0)) else {
                    return Err(e);
                };
                match self
                    .inner
                    .open_on(&nodes, &node, self.id, self.len, self.key.as_ref())
                {
                    Ok(r) => {
                        self.current = r;
                        self.node = node;
                        break;
                    }
                    Err(e2) => self.inner.suspect(self.id, &node, &e2),
                }
            }
        }
    }
}

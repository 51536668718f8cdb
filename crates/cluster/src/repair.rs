//! Repair: bringing every blob back to its wanted number of good copies.
//!
//! A pass reads every placement record and finds the blobs whose copies are too few: fewer
//! recorded than wanted (written while a node was down), on a node down longer than
//! `repair_after_secs` or removed from the region, on a draining node, or found damaged or
//! missing by a read on this node. Work is split across the up nodes without a lease: a
//! blob is repaired by the first up node in its record that holds a copy not known bad, so
//! each blob has exactly one repairer in a given view of the membership, and it copies from
//! its own disk. Two nodes with different views may both act; the record is rewritten by
//! compare-and-swap, so one wins and the other's extra copy is an unreferenced file.
//!
//! A copy is moved by its stored bytes; it is verified by the next read of it, which falls
//! back and reports it should it be bad.
//!
//! Each pass also scrubs: it reads back up to [`SCRUB_BYTES`] of this node's erasure-coded
//! shards, from where the last pass stopped, and checks every unit's CRC. A healthy read
//! touches parity only when a data shard fails, so without it a damaged parity shard would
//! be found only when it is needed. A shard found bad is repaired in the same pass, as if a
//! read had found it. Copies are not scrubbed: a sealed copy's frames can be checked only
//! with its data key, which this layer never holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use feiyun_blob::{BlobError, BlobId, BlobStore};
use feiyun_meta::{MetaStore, Table, WriteBatch};

use crate::NodeView;
use crate::blobs::{ClusterBlobStore, Inner, addr_of};
use crate::peer::wait;
use crate::placement::{
    Candidate, GONE_PREFIX, Gone, PLACE_PREFIX, Placement, gone_key, place_key, rank,
};

/// Placement records read per page of a pass.
const PAGE: usize = 512;

/// Shard bytes a pass reads back at most: at the default pass interval (150 s) about
/// 1.7 MiB/s of background reads per node.
const SCRUB_BYTES: u64 = 256 << 20;

/// What one pass found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairReport {
    /// Records read.
    pub scanned: u64,
    /// Blobs this node was responsible for that had too few good copies.
    pub needed: u64,
    /// Copies made.
    pub copied: u64,
    /// Blobs still short after the pass (no node to copy to, or a copy failed).
    pub backlog: u64,
    /// Copies of deleted blobs this node removed.
    pub collected: u64,
}

impl<M: MetaStore> ClusterBlobStore<M> {
    /// One pass over every placement record (blocking).
    pub fn repair_pass(&self) -> Result<RepairReport, BlobError> {
        self.inner.repair_pass()
    }

    /// Runs a pass every `every` until the runtime stops; the backlog it leaves rides on
    /// this node's heartbeat into `feiyun cluster status`.
    pub fn spawn_repair(&self, every: Duration) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let i = inner.clone();
                match tokio::task::spawn_blocking(move || i.repair_pass()).await {
                    Ok(Ok(r)) => {
                        inner.membership.set_repair_backlog(r.backlog);
                        inner
                            .stats
                            .collected
                            .fetch_add(r.collected, Ordering::Relaxed);
                        if r.copied > 0 {
                            tracing::info!(copied = r.copied, backlog = r.backlog, "repair pass");
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "repair pass failed"),
                    Err(e) => tracing::warn!(error = %e, "repair pass panicked"),
                }
            }
        });
    }
}

/// Whether a holder's copy counts, as a repairer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// Up, not draining, not known bad.
    Good,
    /// Down, but not yet for `repair_after_secs`: likely back soon (a restart).
    Away,
    /// Draining: its copy counts until a replacement exists.
    Leaving,
    /// Gone for good, removed, or its copy is damaged or missing.
    Lost,
}

impl<M: MetaStore> Inner<M> {
    fn repair_pass(self: &Arc<Self>) -> Result<RepairReport, BlobError> {
        let nodes = Arc::new(
            self.membership
                .nodes()
                .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?,
        );
        let suspects = self.take_suspects();
        let mut report = RepairReport {
            collected: self.collect_pass(&nodes)?,
            ..RepairReport::default()
        };
        let mut end = PLACE_PREFIX.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut scrub = Scrub {
            after: self
                .scrub_from
                .lock()
                .map(|f| f.clone())
                .unwrap_or_default(),
            left: SCRUB_BYTES,
            last: None,
        };
        let mut from = PLACE_PREFIX.to_vec();
        loop {
            let rows = self
                .membership
                .meta()
                .scan(Table::Cluster, &from, Some(&end), PAGE)
                .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?;
            let full = rows.len() == PAGE;
            for (key, value) in &rows {
                report.scanned += 1;
                let Some(id) = BlobId::from_bytes(&key[PLACE_PREFIX.len()..]) else {
                    continue;
                };
                let Some(place) = Placement::decode(value) else {
                    tracing::error!(%id, "a damaged placement record; left for an operator");
                    continue;
                };
                let found;
                let bad = match self.scrub_one(&mut scrub, key, value, id, &place) {
                    Some(me) => {
                        let mut b = suspects.get(&id).cloned().unwrap_or_default();
                        b.insert(me);
                        found = b;
                        Some(&found)
                    }
                    None => suspects.get(&id),
                };
                match self.repair_one(&nodes, id, &place, value, bad) {
                    Ok(None) => {}
                    Ok(Some(copied)) => {
                        report.needed += 1;
                        report.copied += copied.0;
                        report.backlog += u64::from(copied.1);
                        // Still short: what this node's reads found stays known for the
                        // next pass (no other node knows of it).
                        if copied.1
                            && let Some(b) = bad
                            && let Ok(mut q) = self.repair.lock()
                        {
                            q.entry(id).or_default().extend(b.iter().cloned());
                        }
                    }
                    Err(e) => {
                        report.needed += 1;
                        report.backlog += 1;
                        tracing::warn!(%id, error = %e, "repair of a blob failed; retried next pass");
                        if let Some(b) = bad
                            && let Ok(mut q) = self.repair.lock()
                        {
                            q.entry(id).or_default().extend(b.iter().cloned());
                        }
                    }
                }
            }
            match rows.last() {
                Some((k, _)) if full => {
                    from = k.clone();
                    from.push(0);
                }
                _ => break,
            }
        }
        // The budget outlasted the records: the next pass starts over from the first.
        let next = if scrub.left > 0 {
            Vec::new()
        } else {
            scrub.last.unwrap_or_default()
        };
        if let Ok(mut f) = self.scrub_from.lock() {
            *f = next;
        }
        Ok(report)
    }

    /// Checks this node's shard of a coded blob when the pass's scrub budget allows; the
    /// node's id when the shard is damaged or missing.
    fn scrub_one(
        &self,
        scrub: &mut Scrub,
        key: &[u8],
        value: &[u8],
        id: BlobId,
        place: &Placement,
    ) -> Option<String> {
        if scrub.left == 0 || key <= scrub.after.as_slice() {
            return None;
        }
        scrub.last = Some(key.to_vec());
        // A record of size 0 is a coded write in flight: its shards are still arriving.
        let coded = place.coded.filter(|c| c.size > 0)?;
        let i = place.nodes.iter().position(|n| n == self.me())?;
        let checked = self
            .local
            .open_raw(crate::erasure::shard_id(id, i))
            .and_then(|f| crate::erasure::verify_shard(&coded, i, &f));
        match checked {
            Ok(bytes) => {
                scrub.left = scrub.left.saturating_sub(bytes);
                self.stats
                    .scrubbed_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
                None
            }
            // A read the disk may answer next time: not damage.
            Err(BlobError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                ) =>
            {
                tracing::warn!(%id, shard = i, error = %e, "the scrubber could not read a shard");
                None
            }
            // Damage, a missing file or a media error (EIO): rebuilt, unless the record
            // changed since the page was read (the shard moved away, the blob was deleted)
            // or the write is still in flight.
            Err(e)
                if self.still_recorded(id, value) && !self.write_in_flight(id).unwrap_or(true) =>
            {
                tracing::warn!(%id, shard = i, error = %e, "the scrubber found a shard damaged; rebuilding it");
                self.stats.scrub_damaged.fetch_add(1, Ordering::Relaxed);
                Some(self.me().to_owned())
            }
            Err(_) => None,
        }
    }

    /// Whether `id`'s placement record still holds `value`.
    fn still_recorded(&self, id: BlobId, value: &[u8]) -> bool {
        self.membership
            .meta()
            .get(Table::Cluster, &place_key(id.0))
            .is_ok_and(|now| now.as_deref() == Some(value))
    }

    fn holder_state(
        &self,
        nodes: &[NodeView],
        node: &str,
        bad: Option<&BTreeSet<String>>,
    ) -> Holder {
        if bad.is_some_and(|b| b.contains(node)) {
            return Holder::Lost;
        }
        match addr_of(nodes, node) {
            None => Holder::Lost,
            Some(v) if v.up && v.record.draining => Holder::Leaving,
            Some(v) if v.up => Holder::Good,
            Some(v) if v.silent_secs >= self.config.repair_after_secs as i64 => Holder::Lost,
            Some(_) => Holder::Away,
        }
    }

    /// Repairs one blob if this node is its repairer and it is short of copies; returns
    /// the copies made and whether it is still short, or `None` when there was nothing to do
    /// here.
    fn repair_one(
        self: &Arc<Self>,
        nodes: &Arc<Vec<NodeView>>,
        id: BlobId,
        place: &Placement,
        stored: &[u8],
        bad: Option<&BTreeSet<String>>,
    ) -> Result<Option<(u64, bool)>, BlobError> {
        if let Some(coded) = place.coded {
            return self.repair_one_coded(nodes, id, place, coded, stored, bad);
        }
        let want = self.config.replicas.min(nodes.len()).max(1);
        let states: Vec<(&String, Holder)> = place
            .nodes
            .iter()
            .map(|n| (n, self.holder_state(nodes, n, bad)))
            .collect();
        let counted = states
            .iter()
            .filter(|(_, s)| matches!(s, Holder::Good | Holder::Away))
            .count();
        let leaving = states.iter().any(|(_, s)| *s == Holder::Leaving);
        let lost = states.iter().any(|(_, s)| *s == Holder::Lost);
        if counted >= want && !leaving && !lost {
            return Ok(None);
        }
        // A write still in flight owns its record (it rewrites it when its copies are
        // done); only blobs whose writes committed are repaired.
        if self
            .membership
            .meta()
            .get(Table::PendingBlobs, &id.to_bytes())
            .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
            .is_some()
        {
            return Ok(None);
        }
        // The source: a copy on an up node not known bad, this node's own if it has one.
        let sources: Vec<&str> = states
            .iter()
            .filter(|(_, s)| matches!(s, Holder::Good | Holder::Leaving))
            .map(|(n, _)| n.as_str())
            .collect();
        let Some(first) = sources.first().copied() else {
            // No copy within reach: nothing to copy from until a holder is back.
            return Ok(Some((0, true)));
        };
        // The repairer: the first such holder; for copies this node's reads found bad,
        // this node (no other knows of them).
        if bad.is_none() && first != self.me() {
            return Ok(None);
        }
        let source = if sources.contains(&self.me()) {
            self.me()
        } else {
            first
        };
        let live: Vec<Candidate> = nodes
            .iter()
            .filter(|n| n.up && !n.record.draining)
            .map(|n| Candidate {
                id: &n.record.id,
                zone: n.record.zone.as_deref(),
            })
            .collect();
        let mut keep: Vec<String> = states
            .iter()
            .filter(|(_, s)| matches!(s, Holder::Good | Holder::Away))
            .map(|(n, _)| (*n).clone())
            .collect();
        let mut copied = 0u64;
        for target in rank(id.0, &live, want) {
            if keep.len() >= want {
                break;
            }
            if keep.iter().any(|k| k == target.id) {
                continue;
            }
            // A damaged copy on the target is replaced whole by the good one.
            match self.copy(nodes, id, source, target.id) {
                Ok(()) => {
                    copied += 1;
                    self.stats.repaired.fetch_add(1, Ordering::Relaxed);
                    keep.push(target.id.to_owned());
                }
                Err(e) => {
                    tracing::warn!(%id, node = target.id, error = %e, "a repair copy failed");
                }
            }
        }
        // A draining holder keeps its place until the blob has its copies elsewhere.
        let short = keep.len() < want;
        let dropped: Vec<String> = if short {
            for (n, s) in &states {
                if *s == Holder::Leaving {
                    keep.push((*n).clone());
                }
            }
            Vec::new()
        } else {
            states
                .iter()
                .filter(|(n, s)| matches!(s, Holder::Leaving | Holder::Lost) && !keep.contains(n))
                .map(|(n, _)| (*n).clone())
                .collect()
        };
        if keep != place.nodes {
            let mut batch = WriteBatch::new();
            batch
                .check_value(Table::Cluster, place_key(id.0), Some(stored.to_vec()))
                .put(
                    Table::Cluster,
                    place_key(id.0),
                    Placement::copies(keep).encode(),
                );
            let meta = self.membership.meta().clone();
            wait(
                self.peers.runtime(),
                async move { meta.commit(batch).await },
            )
            .unwrap_or_else(|| Err(feiyun_meta::MetaError::Storage("runtime gone".into())))
            .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?;
            self.forget(id);
            // Copies the record no longer names are removed where their node answers.
            for n in &dropped {
                if let Err(e) = self.remove_copy(nodes, id, n) {
                    tracing::debug!(%id, node = %n, error = %e, "an old copy stays until its node answers");
                }
            }
        }
        Ok(Some((copied, short)))
    }

    /// A coded blob: its shards on lost or draining nodes (or never written) are rebuilt by
    /// the first up holder of a good shard, as copies are.
    fn repair_one_coded(
        self: &Arc<Self>,
        nodes: &Arc<Vec<NodeView>>,
        id: BlobId,
        place: &Placement,
        coded: crate::erasure::Coded,
        stored: &[u8],
        bad: Option<&BTreeSet<String>>,
    ) -> Result<Option<(u64, bool)>, BlobError> {
        let states: Vec<Holder> = place
            .nodes
            .iter()
            .map(|n| {
                if n.is_empty() {
                    Holder::Lost
                } else {
                    self.holder_state(nodes, n, bad)
                }
            })
            .collect();
        let lost: Vec<usize> = (0..states.len())
            .filter(|&i| matches!(states[i], Holder::Lost | Holder::Leaving))
            .collect();
        if lost.is_empty() || self.write_in_flight(id)? {
            return Ok(None);
        }
        let Some(first) = (0..states.len()).find(|&i| states[i] == Holder::Good) else {
            return Ok(Some((0, true)));
        };
        if bad.is_none() && place.nodes[first] != self.me() {
            return Ok(None);
        }
        // A draining holder's shard stays readable while it is rebuilt elsewhere; only lost
        // ones are skipped by the rebuilding reader.
        let unreadable: Vec<usize> = (0..states.len())
            .filter(|&i| matches!(states[i], Holder::Lost | Holder::Away))
            .collect();
        let (rebuilt, short) =
            self.repair_coded(nodes, id, place, coded, stored, &lost, &unreadable)?;
        Ok(Some((rebuilt, short)))
    }

    fn write_in_flight(&self, id: BlobId) -> Result<bool, BlobError> {
        Ok(self
            .membership
            .meta()
            .get(Table::PendingBlobs, &id.to_bytes())
            .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
            .is_some())
    }

    /// Removes this node's copies of deleted blobs whose grace has passed, and drops from
    /// each tombstone the nodes no longer in the region (their disks went with them).
    fn collect_pass(&self, nodes: &[NodeView]) -> Result<u64, BlobError> {
        let storage =
            |e: feiyun_meta::MetaError| BlobError::Io(std::io::Error::other(e.to_string()));
        let mut end = GONE_PREFIX.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut from = GONE_PREFIX.to_vec();
        let now = crate::now_ms();
        let mut collected = 0;
        loop {
            let rows = self
                .membership
                .meta()
                .scan(Table::Cluster, &from, Some(&end), PAGE)
                .map_err(storage)?;
            let full = rows.len() == PAGE;
            for (key, value) in &rows {
                let Some(id) = BlobId::from_bytes(&key[GONE_PREFIX.len()..]) else {
                    continue;
                };
                let Some(gone) = Gone::decode(value) else {
                    continue;
                };
                if now < gone.after_ms {
                    continue;
                }
                let mut left: Vec<String> = gone
                    .nodes
                    .iter()
                    .filter(|n| n.as_str() != self.me() && addr_of(nodes, n).is_some())
                    .cloned()
                    .collect();
                if gone.nodes.iter().any(|n| n == self.me()) {
                    match self.local.delete(id) {
                        Ok(()) => collected += 1,
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "a deleted blob's copy stays");
                            left.push(self.me().to_owned());
                        }
                    }
                }
                if left.len() == gone.nodes.len() {
                    continue;
                }
                let mut batch = WriteBatch::new();
                batch.check_value(Table::Cluster, gone_key(id.0), Some(value.clone()));
                if left.is_empty() {
                    batch.delete(Table::Cluster, gone_key(id.0));
                } else {
                    let rest = Gone {
                        nodes: left,
                        after_ms: gone.after_ms,
                    };
                    batch.put(Table::Cluster, gone_key(id.0), rest.encode());
                }
                // A conflict is another node removing its own entry: next pass.
                let meta = self.membership.meta().clone();
                let _ = wait(
                    self.peers.runtime(),
                    async move { meta.commit(batch).await },
                );
            }
            match rows.last() {
                Some((k, _)) if full => {
                    from = k.clone();
                    from.push(0);
                }
                _ => return Ok(collected),
            }
        }
    }

    /// Deletes the copy of `id` on `node`, wherever it is.
    pub(crate) fn remove_copy(
        &self,
        nodes: &[NodeView],
        id: BlobId,
        node: &str,
    ) -> Result<(), BlobError> {
        if node == self.me() {
            return self.local.delete(id);
        }
        let Some(view) = addr_of(nodes, node) else {
            return Ok(());
        };
        let (peers, addr) = (self.peers.clone(), view.record.advertise.clone());
        wait(self.peers.runtime(), async move {
            peers.delete(&addr, id).await
        })
        .unwrap_or_else(|| Err(std::io::Error::other("runtime gone")))
        .map_err(BlobError::Io)
    }

    fn take_suspects(&self) -> Suspects {
        self.repair
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}

/// Copies found bad by reads on this node, by blob, with the nodes holding them.
pub(crate) type Suspects = BTreeMap<BlobId, BTreeSet<String>>;

/// A pass's scrub: the placement keys after `after` are checked until `left` bytes ran out.
struct Scrub {
    after: Vec<u8>,
    left: u64,
    last: Option<Vec<u8>>,
}

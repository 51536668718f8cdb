//! Erasure-coded blobs on the nodes of a region: the write that stripes a blob's stored
//! bytes into shards on `k+m` nodes, the reader over them, their deletion and the repair
//! that rebuilds a lost shard on another node. The coding itself is in [`crate::erasure`].
//!
//! A write is acknowledged once every shard it could keep is fsynced and at least
//! `k + min(m, min_replicas - 1)` are, so an acknowledged coded blob survives as many node
//! losses as an acknowledged replicated one; shards that failed are rebuilt by repair.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use feiyun_blob::{BlobError, BlobId, Sink, Source};
use feiyun_meta::{MetaStore, Table, WriteBatch};

use crate::NodeView;
use crate::blobs::{Inner, Replica, addr_of};
use crate::erasure::{
    Coded, CodedSource, Layout, ShardSources, UNIT, framed_unit, last_unit, parity, shard_id, split,
};
use crate::placement::{Gone, Placement, gone_key, place_key};

fn unavailable(msg: String) -> BlobError {
    BlobError::Unavailable(msg)
}

/// The shards of one blob as its placement names them.
pub(crate) struct NodeShards<M: MetaStore> {
    pub(crate) inner: Arc<Inner<M>>,
    pub(crate) nodes: Arc<Vec<NodeView>>,
    pub(crate) id: BlobId,
    pub(crate) holders: Vec<String>,
}

impl<M: MetaStore> ShardSources for NodeShards<M> {
    fn open(&self, shard: usize) -> Result<Box<dyn Source>, BlobError> {
        match self.holders.get(shard).map(String::as_str) {
            None | Some("") => Err(BlobError::NotFound(shard_id(self.id, shard))),
            Some(node) => self
                .inner
                .source(&self.nodes, node, shard_id(self.id, shard)),
        }
    }

    fn failed(&self, shard: usize, e: &BlobError) {
        if let Some(node) = self.holders.get(shard).filter(|n| !n.is_empty()) {
            self.inner.suspect(self.id, node, e);
        }
    }
}

impl<M: MetaStore> Inner<M> {
    /// The shards a coded write needs fsynced before it is acknowledged.
    fn coded_need(&self, layout: Layout) -> usize {
        usize::from(layout.k) + usize::from(layout.m).min(self.config.min_replicas.max(1) - 1)
    }

    /// Starts a coded write on the first `k+m` nodes of `order`; `None` when there are
    /// fewer (the caller writes copies instead).
    pub(crate) fn create_coded(
        self: &Arc<Self>,
        id: BlobId,
        layout: Layout,
        nodes: Arc<Vec<NodeView>>,
        order: &[String],
    ) -> Result<Option<CodedSink<M>>, BlobError> {
        let n = layout.shards();
        if order.len() < n {
            return Ok(None);
        }
        let holders = order[..n].to_vec();
        let coded = Coded {
            k: layout.k,
            m: layout.m,
            unit: UNIT as u32,
            size: 0,
        };
        let intent = self.record_placement(
            id,
            &Placement {
                nodes: holders.clone(),
                coded: Some(coded),
            },
        )?;
        let mut shards = Vec::with_capacity(n);
        let mut failed = Vec::new();
        for (i, node) in holders.iter().enumerate() {
            match self.sink_on(&nodes, node, shard_id(id, i)) {
                Ok(r) => shards.push(Some(r)),
                Err(e) => {
                    failed.push((node.clone(), e.to_string()));
                    shards.push(None);
                }
            }
        }
        Ok(Some(CodedSink {
            inner: self.clone(),
            id,
            layout,
            holders,
            shards,
            failed,
            buf: Vec::with_capacity(UNIT * usize::from(layout.k)),
            stripe: 0,
            size: 0,
            intent,
            need: self.coded_need(layout),
        }))
    }

    /// A reader over a coded blob's shards; refused as unavailable when fewer than `k` of
    /// its shards are on nodes that answer.
    pub(crate) fn open_coded(
        self: &Arc<Self>,
        id: BlobId,
        place: &Placement,
        coded: Coded,
    ) -> Result<CodedSource<NodeShards<M>>, BlobError> {
        let nodes = self.nodes()?;
        let down: Vec<usize> = place
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.is_empty()
                    || (n.as_str() != self.me() && !addr_of(&nodes, n).is_some_and(|v| v.up))
            })
            .map(|(i, _)| i)
            .collect();
        let source = CodedSource::new(
            coded,
            NodeShards {
                inner: self.clone(),
                nodes,
                id,
                holders: place.nodes.clone(),
            },
            &down,
        );
        if source.usable() < usize::from(coded.k) {
            return Err(unavailable(format!(
                "blob {id} is erasure-coded {}+{} and only {} of its shards are on nodes that are up; {} are needed",
                coded.k,
                coded.m,
                source.usable(),
                coded.k
            )));
        }
        Ok(source)
    }

    /// Deletes a coded blob: each shard to its node's tombstone, in the commit that drops
    /// the placement `stored`. False when the placement changed meanwhile.
    pub(crate) fn tombstone_shards(
        &self,
        id: BlobId,
        holders: &[String],
        stored: Option<Vec<u8>>,
    ) -> Result<bool, BlobError> {
        let gone: Vec<(usize, String)> = holders
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
            .map(|(i, n)| (i, n.clone()))
            .collect();
        self.swap_placement(id, stored, None, &gone)
    }

    /// In one commit: the placement still `expect` (when given) becomes `new` (or goes),
    /// and each `(shard, node)` of `gone` joins its shard's tombstone, so a shard leaves
    /// its node only after the read grace, and never while a record still names it there.
    /// False when the placement was not `expect`.
    fn swap_placement(
        &self,
        id: BlobId,
        expect: Option<Vec<u8>>,
        new: Option<&Placement>,
        gone: &[(usize, String)],
    ) -> Result<bool, BlobError> {
        let meta = self.membership.meta();
        let grace =
            i64::try_from(self.config.delete_grace_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let after = crate::now_ms().saturating_add(grace);
        for _ in 0..8 {
            let mut batch = WriteBatch::new();
            for (i, node) in gone {
                let key = gone_key(shard_id(id, *i).0);
                let old = meta
                    .get(Table::Cluster, &key)
                    .map_err(|e| unavailable(e.to_string()))?;
                let mut row = old.as_deref().and_then(Gone::decode).unwrap_or(Gone {
                    nodes: Vec::new(),
                    after_ms: 0,
                });
                if !row.nodes.contains(node) {
                    row.nodes.push(node.clone());
                }
                row.after_ms = row.after_ms.max(after);
                batch.check_value(Table::Cluster, key.clone(), old).put(
                    Table::Cluster,
                    key,
                    row.encode(),
                );
            }
            if let Some(p) = &expect {
                batch.check_value(Table::Cluster, place_key(id.0), Some(p.clone()));
                match new {
                    Some(n) => batch.put(Table::Cluster, place_key(id.0), n.encode()),
                    None => batch.delete(Table::Cluster, place_key(id.0)),
                };
            }
            if self.commit_batch(batch)? {
                self.forget(id);
                return Ok(true);
            }
            if let Some(p) = &expect {
                let now = meta
                    .get(Table::Cluster, &place_key(id.0))
                    .map_err(|e| unavailable(e.to_string()))?;
                if now.as_ref() != Some(p) {
                    return Ok(false);
                }
            }
        }
        Err(unavailable(format!("blob {id}'s tombstones kept changing")))
    }

    /// The nodes whose copy of shard `i` waits in a tombstone: not a place to rebuild it,
    /// since the collector will remove that file.
    fn tombstoned(&self, id: BlobId, i: usize) -> Result<Vec<String>, BlobError> {
        Ok(self
            .membership
            .meta()
            .get(Table::Cluster, &gone_key(shard_id(id, i).0))
            .map_err(|e| unavailable(e.to_string()))?
            .as_deref()
            .and_then(Gone::decode)
            .map(|g| g.nodes)
            .unwrap_or_default())
    }

    /// Rebuilds shards `lost` of a coded blob on nodes holding none of its shards, reading
    /// around `unreadable`; returns the shards rebuilt and whether some are still missing.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn repair_coded(
        self: &Arc<Self>,
        nodes: &Arc<Vec<NodeView>>,
        id: BlobId,
        place: &Placement,
        coded: Coded,
        stored: &[u8],
        lost: &[usize],
        unreadable: &[usize],
    ) -> Result<(u64, bool), BlobError> {
        let mut holders = place.nodes.clone();
        let live: Vec<crate::placement::Candidate> = nodes
            .iter()
            .filter(|n| n.up && !n.record.draining)
            .map(|n| crate::placement::Candidate {
                id: &n.record.id,
                zone: n.record.zone.as_deref(),
            })
            .collect();
        let order: Vec<String> =
            crate::placement::rank(id.0, &live, coded.k as usize + coded.m as usize)
                .iter()
                .map(|c| c.id.to_owned())
                .collect();
        let source = CodedSource::new(
            coded,
            NodeShards {
                inner: self.clone(),
                nodes: nodes.clone(),
                id,
                holders: holders.clone(),
            },
            unreadable,
        );
        let mut rebuilt = 0u64;
        let mut dropped = Vec::new();
        for &i in lost {
            // A node holding no shard of this blob (one failure never takes two shards) and
            // no tombstoned copy of this one; failing that, the holder itself when it is up
            // and only its copy is bad (rewritten whole, by rename).
            let skip = self.tombstoned(id, i)?;
            let holder_up = !holders[i].is_empty()
                && nodes
                    .iter()
                    .any(|n| n.record.id == holders[i] && n.up && !n.record.draining);
            let Some(target) = order
                .iter()
                .find(|n| !holders.contains(n) && !skip.contains(n))
                .cloned()
                .or_else(|| holder_up.then(|| holders[i].clone()))
            else {
                continue;
            };
            match self.rebuild_shard(nodes, id, &source, coded, i, &target) {
                Ok(()) => {
                    rebuilt += 1;
                    self.stats.repaired.fetch_add(1, Ordering::Relaxed);
                    if !holders[i].is_empty() && holders[i] != target {
                        dropped.push((i, holders[i].clone()));
                    }
                    holders[i] = target;
                }
                Err(e) => {
                    tracing::warn!(%id, shard = i, node = %target, error = %e, "rebuilding a shard failed");
                    if matches!(e, BlobError::Unavailable(_) | BlobError::Corrupt { .. }) {
                        break;
                    }
                }
            }
        }
        let short = (rebuilt as usize) < lost.len();
        if holders != place.nodes {
            let new = Placement {
                nodes: holders,
                coded: Some(coded),
            };
            if !self.swap_placement(id, Some(stored.to_vec()), Some(&new), &dropped)? {
                return Ok((rebuilt, true));
            }
        }
        Ok((rebuilt, short))
    }

    fn rebuild_shard<S: ShardSources>(
        &self,
        nodes: &[NodeView],
        id: BlobId,
        source: &CodedSource<S>,
        coded: Coded,
        i: usize,
        target: &str,
    ) -> Result<(), BlobError> {
        let mut out = self.sink_on(nodes, target, shard_id(id, i))?;
        for j in 0..coded.stripes() {
            let unit = source.rebuild_unit(i, j)?;
            out.write_all(&framed_unit(i, j, &unit))?;
        }
        out.commit()
    }
}

/// The sink under a coded write: stripes the stored bytes into units, one shard per node.
pub(crate) struct CodedSink<M: MetaStore> {
    inner: Arc<Inner<M>>,
    id: BlobId,
    layout: Layout,
    holders: Vec<String>,
    /// Shard `i`'s upload, `None` once it failed.
    shards: Vec<Option<Replica>>,
    failed: Vec<(String, String)>,
    /// Stored bytes of the stripe being filled.
    buf: Vec<u8>,
    stripe: u64,
    size: u64,
    intent: Vec<u8>,
    need: usize,
}

impl<M: MetaStore> CodedSink<M> {
    fn live(&self) -> usize {
        self.shards.iter().filter(|s| s.is_some()).count()
    }

    /// Encodes and sends one stripe of `ulen`-byte units.
    fn send_stripe(&mut self, stripe: &[u8], ulen: usize) -> io::Result<()> {
        let k = usize::from(self.layout.k);
        let data = split(stripe, k, ulen);
        let par = parity(self.layout, &data).map_err(|e| io::Error::other(e.to_string()))?;
        for (i, unit) in data.iter().chain(par.iter()).enumerate() {
            let Some(shard) = self.shards[i].as_mut() else {
                continue;
            };
            if let Err(e) = shard.write_all(&framed_unit(i, self.stripe, unit)) {
                self.inner
                    .stats
                    .replica_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %self.id, shard = i, node = %self.holders[i], error = %e, "a shard failed during a write");
                self.failed.push((self.holders[i].clone(), e.to_string()));
                self.shards[i] = None;
            }
        }
        self.stripe += 1;
        if self.live() < self.need {
            return Err(io::Error::other(format!(
                "{} of the {} shards a coded write needs are still being written",
                self.live(),
                self.need
            )));
        }
        Ok(())
    }

    fn why(&self) -> String {
        self.failed
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl<M: MetaStore> Write for CodedSink<M> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        let stripe = UNIT * usize::from(self.layout.k);
        while !data.is_empty() {
            let take = (stripe - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == stripe {
                let full = std::mem::take(&mut self.buf);
                self.send_stripe(&full, UNIT)?;
                self.buf = full;
                self.buf.clear();
            }
        }
        self.size += total as u64;
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<M: MetaStore> Sink for CodedSink<M> {
    fn commit(mut self: Box<Self>) -> Result<(), BlobError> {
        let id = self.id;
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let ulen = last_unit(rest.len(), usize::from(self.layout.k));
            self.send_stripe(&rest, ulen)?;
        }
        let mut shards = std::mem::take(&mut self.shards);
        // Every upload ends before any is waited for: the shards' fsyncs overlap.
        for (i, s) in shards.iter_mut().enumerate() {
            if let Some(r) = s
                && let Err(e) = r.close()
            {
                self.failed.push((self.holders[i].clone(), e.to_string()));
                *s = None;
            }
        }
        let mut holders = self.holders.clone();
        for (i, s) in shards.into_iter().enumerate() {
            match s.map(Replica::commit) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    self.failed.push((holders[i].clone(), e.to_string()));
                    holders[i].clear();
                }
                None => holders[i].clear(),
            }
        }
        let good = holders.iter().filter(|n| !n.is_empty()).count();
        if good < self.need {
            self.inner
                .stats
                .refused_writes
                .fetch_add(1, Ordering::Relaxed);
            if !self
                .inner
                .tombstone_shards(id, &self.holders, Some(self.intent.clone()))?
            {
                self.inner.tombstone_shards(id, &self.holders, None)?;
            }
            return Err(unavailable(format!(
                "{good} of the {} shards a coded write needs were stored ({})",
                self.need,
                self.why()
            )));
        }
        let done = Placement {
            nodes: holders.clone(),
            coded: Some(Coded {
                k: self.layout.k,
                m: self.layout.m,
                unit: UNIT as u32,
                size: self.size,
            }),
        };
        // Shards that failed after they may have been stored go to their tombstones in the
        // commit that names the good ones, so no late delete can meet a rebuilt shard.
        let failed: Vec<(usize, String)> = self
            .holders
            .iter()
            .enumerate()
            .filter(|(i, _)| holders[*i].is_empty())
            .map(|(i, n)| (i, n.clone()))
            .collect();
        if !self
            .inner
            .swap_placement(id, Some(self.intent.clone()), Some(&done), &failed)?
        {
            // Deleted while it was written (the request was abandoned): its shards go too.
            self.inner.tombstone_shards(id, &holders, None)?;
            return Err(unavailable(format!("blob {id} was deleted while written")));
        }
        Ok(())
    }
}

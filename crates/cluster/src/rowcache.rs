//! A node's cache of the rows a read plans from — bucket records and each key's current
//! version and head — kept coherent with every node's commits, so that a small GET on a
//! multi-node region is answered without asking the database and still never sees a
//! version older than the last acknowledged write.
//!
//! Coherence rests on two rules, one for each side of a change:
//!
//! - **A reader serves from its cache only while it holds a lease from every other node
//!   registered in the region** (up or down: a down node might still commit), and only
//!   while its own list of those nodes was read from the store less than a lease ago. A
//!   lease is asked for every [`RENEW_EVERY`] and runs [`LEASE`] from the moment the reader
//!   *sent* the request, so a slow answer only shortens it. Whenever the reader's leases
//!   lapsed, even for an instant, it drops everything it cached before it serves again.
//! - **A writer acknowledges a change only after every node it granted a lease that may
//!   still run has dropped the changed rows**: after the commit it sends them the changed
//!   keys and waits for their answers; a node that does not answer in time is refused new
//!   leases and the writer waits out the one it holds (the grant runs from when the writer
//!   *received* the request, plus a margin for clocks that run at different rates, so it
//!   never ends before the holder's). A node that has just started waits out one lease
//!   before it acknowledges a change: by then every node serving from a cache has read a
//!   node list that names it, and so asks it for a lease.
//!
//! A read that misses takes a ticket before it asks the database and fills the cache only
//! if no invalidation of its rows (and no wholesale drop) arrived in the meantime, so an
//! answer read before a commit is never stored after that commit's invalidation.
//!
//! A writer keeps the rows it committed the same way: it takes a ticket before the commit
//! and stores the batch's values after it only if no other node's invalidation of those
//! rows arrived meanwhile (one that did came from a later commit).
//!
//! Only rows of [`cacheable`] tables are kept; a node with no other node serves from its
//! cache under the same rules (its list of nodes must be fresh).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use feiyun_meta::{MetaStore, Mutation, Replan, Table, WriteBatch};
use tokio::sync::oneshot;

use crate::{Membership, PeerClient};

/// How long a lease runs, from the moment its holder asked for it.
pub const LEASE: Duration = Duration::from_millis(1000);
/// How often a reader renews its leases and reads the node list.
const RENEW_EVERY: Duration = Duration::from_millis(200);
/// A lease request not answered by now is lost.
const RENEW_TIMEOUT: Duration = Duration::from_millis(400);
/// An invalidation not answered by now is given up: the writer waits out the lease instead.
const INVALIDATE_TIMEOUT: Duration = Duration::from_millis(300);
/// Largest invalidation message sent at once (the receiver takes up to 8 MiB).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Invalidation counters; a fill checks the ones its rows hash to.
const SHARDS: usize = 1024;
/// Bookkeeping bytes counted per cached row besides its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// What a writer adds to a lease it grants, and a starting node to its wait: clocks whose
/// rates differ by up to a tenth, plus scheduling delay.
fn slack(d: Duration) -> Duration {
    d / 10 + Duration::from_millis(50)
}

/// The tables whose rows are cached: what a GET, HEAD or PUT plans from first.
pub fn cacheable(table: Table) -> bool {
    matches!(table, Table::Buckets | Table::Objects | Table::Heads)
}

fn row_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(table as u8);
    k.extend_from_slice(key);
    k
}

/// Counters for metrics.
#[derive(Default, Debug)]
pub struct RowCacheStats {
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
    /// Invalidations a commit here had to wait out a lease for (a node did not answer).
    pub lease_waits: std::sync::atomic::AtomicU64,
    /// Times the whole cache was dropped because a lease or the node list lapsed.
    pub lapses: std::sync::atomic::AtomicU64,
}

/// A miss's permission to store what it is about to read.
pub struct Ticket {
    keys: Vec<Vec<u8>>,
    epoch: u64,
    shards: Vec<(usize, u64)>,
}

/// A commit's own rows, to keep once it has landed (see [`RowCache::write_fill`]).
pub struct WriteFill {
    ticket: Ticket,
    values: Vec<Option<Vec<u8>>>,
}

impl Ticket {
    /// Whether nothing dropped the ticket's rows (or everything) since it was taken, and
    /// the cache may serve.
    fn current(&self, r: &Rows) -> bool {
        r.epoch == self.epoch
            && r.valid_until.is_some_and(|v| Instant::now() < v)
            && self.shards.iter().all(|&(s, n)| r.shards[s] == n)
    }
}

pub enum Lookup {
    Hit(Vec<Option<Vec<u8>>>),
    /// Read the store; fill with the ticket, if any, afterwards.
    Miss(Option<Ticket>),
}

/// The reader's side: cached rows and the leases that make them servable.
struct Rows {
    map: HashMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    shards: Vec<u64>,
    /// Bumped whenever everything is dropped.
    epoch: u64,
    /// Serving is allowed strictly before this instant.
    valid_until: Option<Instant>,
    /// Leases held: writer id → end, and the writer's incarnation that granted it.
    held: HashMap<String, (Instant, String)>,
    /// Every other registered node, from the last node list read.
    writers: Vec<String>,
    /// When the read of that list began.
    view_at: Option<Instant>,
}

/// The writer's side: one node holding a lease from this one.
struct Grant {
    until: Instant,
    /// New leases are refused before this (the holder missed an invalidation).
    revoked_until: Option<Instant>,
    /// Invalidations it missed in a row: each doubles how long it is refused, so a holder
    /// that can ask for leases but not be told of changes stalls commits rarely, not always.
    misses: u32,
    link: Arc<Link>,
}

/// Longest a holder that keeps missing invalidations is refused leases.
const MAX_REFUSAL: Duration = Duration::from_secs(60);
/// Grants that ran out this long ago are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Invalidations queued for one lease holder, sent one message at a time.
struct Link {
    addr: String,
    outbox: Mutex<Outbox>,
}

#[derive(Default)]
struct Outbox {
    queued: std::collections::VecDeque<(Vec<u8>, oneshot::Sender<bool>)>,
    sending: bool,
}

pub struct RowCache {
    me: String,
    /// Drawn at each start and sent with every lease: a holder that sees a writer's
    /// incarnation change drops its cache (the old process may have committed without
    /// telling it, then died).
    incarnation: String,
    budget: usize,
    started: Instant,
    hasher: std::collections::hash_map::RandomState,
    rows: Mutex<Rows>,
    /// Keyed by holder id and address: a node id that moved is a new holder.
    grants: Mutex<HashMap<(String, String), Grant>>,
    client: PeerClient,
    /// False once this node has left the region: it must not commit cached rows then.
    member: Mutex<Option<Arc<dyn Fn() -> bool + Send + Sync>>>,
    stats: RowCacheStats,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RowCache {
    /// A cache of at most `budget` bytes for node `me`; serves nothing until
    /// [`RowCache::spawn`] has read the node list and taken the leases.
    pub fn new(me: &str, budget: usize, client: PeerClient) -> Arc<Self> {
        Arc::new(Self {
            me: me.to_owned(),
            incarnation: format!("{:032x}", rand::random::<u128>()),
            budget,
            started: Instant::now(),
            hasher: Default::default(),
            rows: Mutex::new(Rows {
                map: HashMap::new(),
                bytes: 0,
                shards: vec![0; SHARDS],
                epoch: 0,
                valid_until: None,
                held: HashMap::new(),
                writers: Vec::new(),
                view_at: None,
            }),
            grants: Mutex::default(),
            client,
            member: Mutex::new(None),
            stats: RowCacheStats::default(),
        })
    }

    pub fn stats(&self) -> &RowCacheStats {
        &self.stats
    }

    fn shard(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// The rows `reads` asks for when all are cached and servable; else a ticket to fill
    /// them with once read (none when they are not cacheable or nothing may be served).
    pub fn lookup(&self, reads: &[(Table, &[u8])]) -> Lookup {
        use std::sync::atomic::Ordering::Relaxed;
        if reads.is_empty() || !reads.iter().all(|(t, _)| cacheable(*t)) {
            return Lookup::Miss(None);
        }
        let keys: Vec<Vec<u8>> = reads.iter().map(|(t, k)| row_key(*t, k)).collect();
        let shards: Vec<usize> = keys.iter().map(|k| self.shard(k)).collect();
        let now = Instant::now();
        let r = locked(&self.rows);
        if r.valid_until.is_none_or(|v| now >= v) {
            self.stats.misses.fetch_add(1, Relaxed);
            return Lookup::Miss(None);
        }
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            match r.map.get(k) {
                Some(v) => out.push(v.clone()),
                None => {
                    self.stats.misses.fetch_add(1, Relaxed);
                    let shards = shards.iter().map(|&s| (s, r.shards[s])).collect();
                    return Lookup::Miss(Some(Ticket {
                        keys,
                        epoch: r.epoch,
                        shards,
                    }));
                }
            }
        }
        self.stats.hits.fetch_add(1, Relaxed);
        Lookup::Hit(out)
    }

    /// The cached rows for `reads`, an uncached one as absent, when the cache may serve and
    /// holds the first row (see `MetaStore::speculative_rows`).
    pub fn speculate(&self, reads: &[(Table, &[u8])]) -> Option<Vec<Option<Vec<u8>>>> {
        if reads.is_empty() || !reads.iter().all(|(t, _)| cacheable(*t)) {
            return None;
        }
        let now = Instant::now();
        let r = locked(&self.rows);
        if r.valid_until.is_none_or(|v| now >= v) {
            return None;
        }
        let mut out = Vec::with_capacity(reads.len());
        for (i, (t, k)) in reads.iter().enumerate() {
            match r.map.get(&row_key(*t, k)) {
                Some(v) => out.push(v.clone()),
                None if i == 0 => return None,
                None => out.push(None),
            }
        }
        Some(out)
    }

    /// Stores what a miss read, unless a change to any of its rows arrived meanwhile.
    pub fn fill(&self, ticket: Ticket, rows: &[Option<Vec<u8>>]) {
        if rows.len() != ticket.keys.len() {
            return;
        }
        if cost(&ticket.keys, rows) > self.budget / 16 {
            return;
        }
        let mut r = locked(&self.rows);
        if !ticket.current(&r) {
            return;
        }
        store(&mut r, self.budget, ticket.keys, rows.to_vec());
    }

    /// Before `batch` is committed: what to keep of it if it lands as it is (not re-planned).
    /// `None` when the cache cannot serve now or the batch writes no cached row.
    pub fn write_fill(&self, batch: &WriteBatch) -> Option<WriteFill> {
        // The last mutation of a row is what the commit leaves.
        let mut rows: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        for m in &batch.mutations {
            match m {
                Mutation::Put { table, key, value } if cacheable(*table) => {
                    rows.insert(row_key(*table, key), Some(value.clone()));
                }
                Mutation::Delete { table, key } if cacheable(*table) => {
                    rows.insert(row_key(*table, key), None);
                }
                _ => {}
            }
        }
        let (keys, values): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        if keys.is_empty() || cost(&keys, &values) > self.budget / 16 {
            return None;
        }
        let r = locked(&self.rows);
        if r.valid_until.is_none_or(|v| Instant::now() >= v) {
            return None;
        }
        let shards = keys
            .iter()
            .map(|k| {
                let s = self.shard(k);
                (s, r.shards[s])
            })
            .collect();
        Some(WriteFill {
            ticket: Ticket {
                keys,
                epoch: r.epoch,
                shards,
            },
            values,
        })
    }

    /// Drops `keys` (row keys as [`RowCache::watch`] collects them) here.
    fn drop_rows<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) {
        self.drop_and_keep(keys, None);
    }

    /// Drops `keys`, then keeps what `fill` wrote when nothing dropped its rows since its
    /// ticket was taken: the check and this node's own drop happen under one lock, so only
    /// another node's invalidation (a later commit's) spoils the fill.
    fn drop_and_keep<'a>(&self, keys: impl Iterator<Item = &'a [u8]>, fill: Option<WriteFill>) {
        let mut r = locked(&self.rows);
        let fill = fill.filter(|f| f.ticket.current(&r));
        for k in keys {
            let s = self.shard(k);
            r.shards[s] = r.shards[s].wrapping_add(1);
            if let Some(v) = r.map.remove(k) {
                r.bytes -= k.len() + v.map_or(0, |v| v.len()) + ENTRY_OVERHEAD;
            }
        }
        if let Some(WriteFill { ticket, values }) = fill {
            store(&mut r, self.budget, ticket.keys, values);
        }
    }

    /// An invalidation from another node: length-prefixed row keys.
    pub(crate) fn apply_invalidation(&self, mut body: &[u8]) -> Result<(), &'static str> {
        let mut keys = Vec::new();
        while !body.is_empty() {
            let Some((len, rest)) = body.split_first_chunk::<4>() else {
                return Err("truncated invalidation");
            };
            let len = u32::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return Err("truncated invalidation");
            }
            keys.push(&rest[..len]);
            body = &rest[len..];
        }
        self.drop_rows(keys.into_iter());
        Ok(())
    }

    /// Records the node list read at `started`: the writers whose leases serving needs.
    fn note_view(&self, started: Instant, writers: Vec<String>) {
        let mut r = locked(&self.rows);
        r.held.retain(|id, _| writers.contains(id));
        r.writers = writers;
        if r.view_at.is_none_or(|v| v < started) {
            r.view_at = Some(started);
        }
        let dropped = recompute(&mut r);
        drop(r);
        self.count_lapse(dropped);
    }

    fn count_lapse(&self, dropped: Option<HashMap<Vec<u8>, Option<Vec<u8>>>>) {
        if let Some(d) = dropped {
            self.stats
                .lapses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(d);
        }
    }

    /// Records a lease from `writer` (its process `incarnation`) running until `until`.
    fn note_lease(&self, writer: &str, incarnation: &str, until: Instant) {
        let mut r = locked(&self.rows);
        if !r.writers.iter().any(|w| w == writer) {
            return;
        }
        match r.held.get_mut(writer) {
            Some((held, inc)) if inc == incarnation => *held = (*held).max(until),
            // A new process behind the id: whatever the old one committed last may not
            // have reached this node, so this is a lapse.
            Some(_) => {
                r.valid_until = None;
                r.held
                    .insert(writer.to_owned(), (until, incarnation.to_owned()));
            }
            None => {
                r.held
                    .insert(writer.to_owned(), (until, incarnation.to_owned()));
            }
        }
        let dropped = recompute(&mut r);
        drop(r);
        self.count_lapse(dropped);
    }

    /// A lease for node `from` at `addr` (the answer names this node and its incarnation),
    /// unless it missed an invalidation and is still refused.
    pub(crate) fn grant(&self, from: &str, addr: &str) -> Option<Vec<u8>> {
        if from == self.me {
            return None;
        }
        let now = Instant::now();
        let mut g = locked(&self.grants);
        if g.len() > 64 {
            g.retain(|_, gr| {
                gr.until + FORGET_AFTER > now || gr.revoked_until.is_some_and(|r| r > now)
            });
        }
        let grant = g
            .entry((from.to_owned(), addr.to_owned()))
            .or_insert_with(|| Grant {
                until: now,
                revoked_until: None,
                misses: 0,
                link: Arc::new(Link {
                    addr: addr.to_owned(),
                    outbox: Mutex::default(),
                }),
            });
        if grant.revoked_until.is_some_and(|r| now < r) {
            return None;
        }
        grant.revoked_until = None;
        grant.until = grant.until.max(now + LEASE + slack(LEASE));
        Some(format!("{}\n{}", self.me, self.incarnation).into_bytes())
    }

    /// Called once the node has left the region (its record removed): commits of cached
    /// rows are refused from then on, since the other nodes no longer ask it for leases.
    pub fn set_membership_check(&self, f: Arc<dyn Fn() -> bool + Send + Sync>) {
        *locked(&self.member) = Some(f);
    }

    /// False when this node must not commit cached rows (it left the region).
    pub fn may_commit(&self) -> bool {
        locked(&self.member).as_ref().is_none_or(|f| f())
    }

    /// Starts collecting the cached rows `batch` changes, including those of a batch it is
    /// re-planned into inside the commit; hand the result to [`RowCache::publish`].
    pub fn watch(batch: &mut WriteBatch) -> Arc<Mutex<Vec<Vec<u8>>>> {
        let touched = Arc::new(Mutex::new(changed_rows(batch)));
        if let Some(Replan(plan)) = batch.replan.take() {
            let sink = touched.clone();
            batch.replan = Some(Replan(Arc::new(move |read| {
                let again = plan(read)?;
                if let Some(b) = &again {
                    locked(&sink).extend(changed_rows(b));
                }
                Ok(again)
            })));
        }
        touched
    }

    /// After a commit that may have changed `keys`: drops them here and at every node that
    /// may hold a lease from this one, and returns once none of them can serve the old rows.
    /// `fill`, taken before the commit, is kept here if the batch landed as it was.
    pub async fn publish(&self, keys: &Mutex<Vec<Vec<u8>>>, fill: Option<WriteFill>) {
        let mut keys = std::mem::take(&mut *locked(keys));
        if keys.is_empty() {
            return;
        }
        keys.sort_unstable();
        keys.dedup();
        self.drop_and_keep(keys.iter().map(Vec::as_slice), fill);
        let settled = self.started + LEASE + slack(LEASE);
        if Instant::now() < settled {
            tokio::time::sleep_until(settled.into()).await;
        }
        let mut message = Vec::new();
        for k in &keys {
            message.extend_from_slice(&(k.len() as u32).to_be_bytes());
            message.extend_from_slice(k);
        }
        let now = Instant::now();
        let holders: Vec<((String, String), Arc<Link>)> = locked(&self.grants)
            .iter()
            .filter(|(_, g)| g.until > now)
            .map(|(k, g)| (k.clone(), g.link.clone()))
            .collect();
        let waits = holders.into_iter().map(|(holder, link)| {
            let answer = link.enqueue(&self.client, message.clone());
            async move { (holder, answer.await.unwrap_or(false)) }
        });
        for (holder, delivered) in futures::future::join_all(waits).await {
            if delivered {
                if let Some(g) = locked(&self.grants).get_mut(&holder) {
                    g.misses = 0;
                }
            } else {
                self.wait_out(&holder).await;
            }
        }
    }

    /// Refuses `holder` new leases and waits until the one it holds has run out.
    async fn wait_out(&self, holder: &(String, String)) {
        self.stats
            .lease_waits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let until = {
            let mut g = locked(&self.grants);
            let Some(grant) = g.get_mut(holder) else {
                return;
            };
            grant.misses = grant.misses.saturating_add(1);
            let refusal = LEASE
                .saturating_mul(1 << grant.misses.min(6))
                .min(MAX_REFUSAL);
            let refused = grant.until.max(Instant::now() + refusal);
            grant.revoked_until = Some(grant.revoked_until.map_or(refused, |r| r.max(refused)));
            grant.until
        };
        tracing::warn!(node = %holder.0, addr = %holder.1, "a node missed a cache invalidation; waiting out its lease");
        if Instant::now() < until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// Reads the node list and renews this node's leases every [`RENEW_EVERY`].
    pub fn spawn<M: MetaStore>(self: &Arc<Self>, membership: Arc<Membership<M>>, advertise: &str) {
        let me = Arc::downgrade(self);
        let lease_path = format!("/cache/lease?from={advertise}");
        tokio::spawn(async move {
            loop {
                let Some(cache) = me.upgrade() else { return };
                let started = Instant::now();
                let m = membership.clone();
                if let Ok(Ok(nodes)) = tokio::task::spawn_blocking(move || m.nodes()).await {
                    let others: Vec<(String, String)> = nodes
                        .into_iter()
                        .filter(|n| n.record.id != cache.me)
                        .map(|n| (n.record.id, n.record.advertise))
                        .collect();
                    cache.note_view(started, others.iter().map(|(id, _)| id.clone()).collect());
                    for (id, addr) in others {
                        let (c, path) = (cache.clone(), lease_path.clone());
                        tokio::spawn(async move {
                            let sent = Instant::now();
                            let asked = c.client.post(&addr, &path, Vec::new(), RENEW_TIMEOUT);
                            let Ok(answer) = asked.await else { return };
                            // The answer names who granted it: an address now held by
                            // another node grants nothing for this one.
                            let text = String::from_utf8_lossy(&answer);
                            if let Some((who, incarnation)) = text.split_once('\n')
                                && who == id
                            {
                                c.note_lease(&id, incarnation, sent + LEASE);
                            }
                        });
                    }
                }
                drop(cache);
                tokio::time::sleep(RENEW_EVERY).await;
            }
        });
    }
}

/// Row keys of the cached tables `batch` writes.
fn changed_rows(batch: &WriteBatch) -> Vec<Vec<u8>> {
    batch
        .mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Put { table, key, .. } | Mutation::Delete { table, key } => {
                cacheable(*table).then(|| row_key(*table, key))
            }
        })
        .collect()
}

/// Sets when serving is allowed again from the leases and node list now held; a moment
/// without leases drops everything, since a writer may have committed then without
/// telling this node.
/// Returns what it dropped after a lapse (a cache that had been serving), to be freed once
/// the lock is released.
#[must_use]
fn recompute(r: &mut Rows) -> Option<HashMap<Vec<u8>, Option<Vec<u8>>>> {
    let now = Instant::now();
    let mut dropped = None;
    if r.valid_until.is_none_or(|v| now >= v) {
        // Only a cache that had been serving counts as a lapse; an idle one is just reset.
        if r.valid_until.is_some() || !r.map.is_empty() {
            dropped = Some(std::mem::take(&mut r.map));
        }
        r.bytes = 0;
        r.epoch = r.epoch.wrapping_add(1);
    }
    let mut until = r.view_at.map(|v| v + LEASE);
    for w in &r.writers {
        until = match (until, r.held.get(w)) {
            (Some(u), Some((h, _))) => Some(u.min(*h)),
            _ => None,
        };
    }
    r.valid_until = until.filter(|u| now < *u);
    dropped
}

/// What keeping `values` under `keys` counts against the budget.
fn cost(keys: &[Vec<u8>], values: &[Option<Vec<u8>>]) -> usize {
    keys.iter()
        .zip(values)
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD)
        .sum()
}

/// Keeps `values` under `keys`, making room first when they would exceed `budget`.
fn store(r: &mut Rows, budget: usize, keys: Vec<Vec<u8>>, values: Vec<Option<Vec<u8>>>) {
    if r.bytes + cost(&keys, &values) > budget {
        evict(r, budget / 2);
    }
    for (k, v) in keys.into_iter().zip(values) {
        let key_cost = k.len() + ENTRY_OVERHEAD;
        r.bytes += key_cost + v.as_ref().map_or(0, Vec::len);
        if let Some(old) = r.map.insert(k, v) {
            r.bytes -= key_cost + old.map_or(0, |o| o.len());
        }
    }
}

/// Drops rows until at most `target` bytes remain (whichever the map yields first).
fn evict(r: &mut Rows, target: usize) {
    let mut bytes = r.bytes;
    r.map.retain(|k, v| {
        if bytes <= target {
            return true;
        }
        bytes -= k.len() + v.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD;
        false
    });
    r.bytes = bytes;
}

impl Link {
    /// Queues `message` for this holder; the answer says whether it was delivered.
    fn enqueue(self: &Arc<Self>, client: &PeerClient, message: Vec<u8>) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let mut o = locked(&self.outbox);
        o.queued.push_back((message, tx));
        if !o.sending {
            o.sending = true;
            let (link, client) = (self.clone(), client.clone());
            client
                .runtime()
                .clone()
                .spawn(async move { link.send_all(client).await });
        }
        rx
    }

    /// Sends what is queued, as few messages as fit, until the queue is empty.
    async fn send_all(self: Arc<Self>, client: PeerClient) {
        loop {
            let (body, waiters) = {
                let mut o = locked(&self.outbox);
                if o.queued.is_empty() {
                    o.sending = false;
                    return;
                }
                let mut body = Vec::new();
                let mut waiters = Vec::new();
                while let Some((m, _)) = o.queued.front() {
                    if !waiters.is_empty() && body.len() + m.len() > MAX_MESSAGE {
                        break;
                    }
                    let Some((m, tx)) = o.queued.pop_front() else {
                        break;
                    };
                    body.extend_from_slice(&m);
                    waiters.push(tx);
                }
                (body, waiters)
            };
            let delivered = client
                .post(&self.addr, "/cache/invalidate", body, INVALIDATE_TIMEOUT)
                .await
                .is_ok();
            for w in waiters {
                let _ = w.send(delivered);
            }
        }
    }
}

#[cfg(test)]
mod tests;

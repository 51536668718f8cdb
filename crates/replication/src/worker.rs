//! The replication worker: follows the event log from its durable cursor, turns each event
//! into one task per destination, and runs the tasks against the peers.
//!
//! The log is the queue. Tasks of many events run at once (up to [`PEER_CONCURRENCY`] writes
//! per peer), so the cursor only moves past an event once every task of it has finished:
//! after a crash the events after the cursor are planned again, and a task whose version is
//! already COMPLETED for that destination, or already present there (same version id), does
//! nothing. A peer that does not answer, or answers 5xx, is retried with back-off for as long
//! as the rule exists; a peer that refuses (4xx) three times leaves the version FAILED.
//! Order between tasks does not matter: a replica keeps its version id, and the destination
//! makes the greatest id current whatever order versions arrive in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use feiyun_oss::events::EventRecord;
use feiyun_oss::replication::{
    REPLICA_MTIME_HEADER, REPLICA_VERSION_HEADER, ReplicationConfig, ReplicationRule,
    ReplicationState, StatusUpdate, TargetStatus,
};
use feiyun_oss::{BlobStore, GetRequest, MetaStore, OssError, VersionId, VersionSelector};
use futures::StreamExt;
use http::Method;
use http_body_util::BodyExt;
use md5::Digest;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::client::{self, ClientError};
use crate::{Peer, Replication};

mod transfer;
use transfer::*;

/// SHA-256 of an empty payload.
pub(crate) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const SMALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The worker's event-log cursor.
pub const CONSUMER: &str = "replication";
/// Writes in flight to one peer.
pub(crate) const PEER_CONCURRENCY: usize = 32;
/// Events planned but not finished, or finished but not recorded, before the worker stops
/// reading the log (outcomes wait in memory while their commit keeps failing).
const MAX_OUTSTANDING: usize = 20_000;
const BATCH: usize = 512;
const POLL: Duration = Duration::from_millis(20);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(15);
/// A peer's refusal is final after this many attempts.
const REFUSALS: u32 = 3;
/// Completions kept per destination for the throughput figure.
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabel {
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TargetLabel {
    destination: String,
}

/// The `feiyun_replication_*` series.
pub(crate) struct Metrics {
    peer_up: Family<PeerLabel, Gauge>,
    replicated: Family<TargetLabel, Counter>,
    bytes: Family<TargetLabel, Counter>,
    failed: Family<TargetLabel, Counter>,
    pending: Gauge,
    oldest_pending: Gauge<f64, std::sync::atomic::AtomicU64>,
    lag: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            peer_up: Family::default(),
            replicated: Family::default(),
            bytes: Family::default(),
            failed: Family::default(),
            pending: Gauge::default(),
            oldest_pending: Gauge::default(),
            lag: Histogram::new([
                0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5,
                2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        }
    }
}

impl Metrics {
    pub(crate) fn peer_up(&self, region: &str, up: bool) {
        self.peer_up
            .get_or_create(&PeerLabel {
                region: region.to_owned(),
            })
            .set(i64::from(up));
    }

    pub(crate) fn forget_peer(&self, region: &str) {
        self.peer_up.remove(&PeerLabel {
            region: region.to_owned(),
        });
    }

    pub(crate) fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "replication_peer_up",
            "1 while the peer region answers its health probe",
            self.peer_up.clone(),
        );
        r.register(
            "replication_replicated",
            "Versions, delete markers and tag sets written to a destination",
            self.replicated.clone(),
        );
        r.register(
            "replication_replicated_bytes",
            "Object bytes written to a destination",
            self.bytes.clone(),
        );
        r.register(
            "replication_failed",
            "Replications a destination refused for good (status FAILED)",
            self.failed.clone(),
        );
        r.register(
            "replication_pending_events",
            "Logged changes with replication still to do",
            self.pending.clone(),
        );
        r.register(
            "replication_oldest_pending_seconds",
            "Age of the oldest change not yet replicated (0 when none): the current RPO",
            self.oldest_pending.clone(),
        );
        r.register(
            "replication_lag_seconds",
            "From a change's commit at the source to its replica's commit at the destination",
            self.lag.clone(),
        );
    }
}

/// Totals per destination, for `feiyun replication status`.
#[derive(Debug, Default, Clone)]
pub struct RuleStats {
    pub completed: u64,
    pub failed: u64,
    pub bytes: u64,
    pub last_error: Option<String>,
    recent: VecDeque<(Instant, u64)>,
}

impl RuleStats {
    /// Completions and bytes per second over the last minute.
    fn throughput(&mut self, now: Instant) -> (f64, f64) {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            self.recent.pop_front();
        }
        let n = self.recent.len() as f64;
        let b: u64 = self.recent.iter().map(|(_, b)| b).sum();
        (n / WINDOW.as_secs_f64(), b as f64 / WINDOW.as_secs_f64())
    }
}

#[derive(Default)]
struct Outstanding {
    remaining: usize,
    bytes: u64,
}

#[derive(Default)]
struct State {
    /// Event id → tasks of it not yet finished.
    outstanding: BTreeMap<u64, Outstanding>,
    /// The last event planned.
    scanned: u64,
    /// The cursor as stored.
    durable: u64,
    targets: HashMap<String, RuleStats>,
    /// Outcomes of finished event tasks, with their event ids, not yet recorded in the
    /// versions: the cursor writer records them in one commit just before it moves the cursor
    /// past their events.
    unrecorded: Vec<(u64, StatusUpdate)>,
    /// Event ids of the outcomes being recorded now.
    recording: Vec<u64>,
}

type StatusItem = (StatusUpdate, tokio::sync::oneshot::Sender<()>);

/// The worker's progress, shared with the status API.
#[derive(Default)]
pub(crate) struct SharedState {
    inner: Mutex<State>,
    /// Completions go to one writer, which commits them in batches.
    statuses: std::sync::OnceLock<tokio::sync::mpsc::Sender<StatusItem>>,
    /// When the last RPO alert was logged (ms), to log at most one a minute.
    last_alert_ms: AtomicI64,
    /// Resync job row → the generation running it (a restarted job replaces the run).
    pub(crate) resyncs: Mutex<HashMap<Vec<u8>, u64>>,
}

impl SharedState {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Marker,
    Tags,
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    /// The logged change (0 for a resync, which follows no event).
    pub(crate) event_id: u64,
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) version: VersionId,
    pub(crate) kind: Kind,
    pub(crate) rule: ReplicationRule,
    /// Sent whatever the version's status: a resync rebuilds a destination that lost what it
    /// had, replicas of its own writes included.
    pub(crate) resync: bool,
}

impl Task {
    fn label(&self) -> String {
        self.rule.destination.label()
    }
}

enum Failure {
    /// Nothing to do (the version went away, or is already there).
    Skip,
    /// The peer did not answer, or failed; try again later.
    Retry(String),
    /// The peer refused.
    Refused(String),
    /// Can never succeed (an SSE-C object, whose key the region does not keep).
    Never(String),
}

/// What a peer's error means for the task.
fn classify(e: ClientError) -> Failure {
    if e.transient() {
        Failure::Retry(e.to_string())
    } else {
        Failure::Refused(e.to_string())
    }
}

fn oss_failure(e: OssError) -> Failure {
    match e {
        OssError::NoSuchVersion
        | OssError::NoSuchKey
        | OssError::NoSuchBucket
        | OssError::DeleteMarker { .. } => Failure::Skip,
        // The worker reads without encryption parameters: only an SSE-C version refuses that,
        // and the region does not keep the customer's key.
        OssError::InvalidRequest(_) => Failure::Never(
            "an SSE-C object cannot be replicated: the region does not keep the customer's key"
                .into(),
        ),
        other => Failure::Retry(format!("reading the source: {other}")),
    }
}

/// Starts the follower, the cursor writer and the lag watcher.
pub(crate) fn spawn<M: MetaStore, B: BlobStore>(r: Arc<Replication<M, B>>, rpo: Option<Duration>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    if r.state.statuses.set(tx).is_ok() {
        let writer = r.clone();
        tokio::spawn(async move { write_statuses(writer, rx).await });
    }
    let follower = r.clone();
    tokio::spawn(async move { follow(follower).await });
    let cursor = r.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            persist_cursor(&cursor).await;
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            watch_lag(&r, rpo).await;
        }
    });
}

async fn follow<M: MetaStore, B: BlobStore>(r: Arc<Replication<M, B>>) {
    let mut pos = loop {
        match r.oss.event_cursor(CONSUMER).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "replication cursor unreadable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    r.state.with(|s| {
        s.scanned = pos;
        s.durable = pos;
    });
    let mut leading = true;
    loop {
        if !feiyun_common::background::runs() {
            leading = false;
            tokio::time::sleep(POLL).await;
            continue;
        }
        if !leading {
            // Another node followed the log meanwhile: go on from its durable cursor once
            // this node's own tasks are done.
            if r.state.with(|s| s.outstanding.len() + s.unrecorded.len()) > 0 {
                tokio::time::sleep(POLL).await;
                continue;
            }
            match r.oss.event_cursor(CONSUMER).await {
                Ok(c) => pos = c,
                Err(_) => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            }
            r.state.with(|s| {
                s.scanned = pos;
                s.durable = pos;
            });
            leading = true;
        }
        if r.state.with(|s| s.outstanding.len() + s.unrecorded.len()) >= MAX_OUTSTANDING {
            tokio::time::sleep(POLL).await;
            continue;
        }
        let events = match r.oss.events_after(pos, BATCH).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "replication cannot read the event log");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if events.is_empty() {
            tokio::time::sleep(POLL).await;
            continue;
        }
        let mut configs = HashMap::new();
        for e in events {
            let tasks = match plan(&r, &e, &mut configs).await {
                Ok(t) => t,
                Err(err) => {
                    // Not planned, not passed: the next round reads this event again.
                    tracing::warn!(error = %err, bucket = %e.bucket, "replication planning failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            };
            pos = e.id;
            if !tasks.is_empty() {
                r.state.with(|s| {
                    s.outstanding.insert(
                        e.id,
                        Outstanding {
                            remaining: tasks.len(),
                            bytes: e.size.unwrap_or(0) * tasks.len() as u64,
                        },
                    );
                });
                for t in tasks {
                    tokio::spawn(run(r.clone(), t));
                }
            }
            r.state.with(|s| s.scanned = pos);
        }
    }
}

/// The tasks one event asks for: a new version, a delete marker, or a tag change, for each
/// destination a rule of its bucket sends it to.
/// `configs` caches bucket rules for one read of the log.
async fn plan<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    e: &EventRecord,
    configs: &mut HashMap<String, Option<ReplicationConfig>>,
) -> Result<Vec<Task>, OssError> {
    let Some(version) = e.version_id.as_deref().and_then(VersionId::parse) else {
        return Ok(Vec::new());
    };
    if !configs.contains_key(&e.bucket) {
        let c = match r.oss.replication(&e.bucket).await {
            Ok(c) => c,
            Err(OssError::NoSuchBucket) => None,
            Err(other) => return Err(other),
        };
        configs.insert(e.bucket.clone(), c);
    }
    let Some(config) = configs.get(&e.bucket).and_then(|c| c.as_ref()) else {
        return Ok(Vec::new());
    };
    let task = |kind, rule: &ReplicationRule| Task {
        event_id: e.id,
        bucket: e.bucket.clone(),
        key: e.key.clone(),
        version,
        kind,
        rule: rule.clone(),
        resync: false,
    };
    let kind = if e.name.starts_with("ObjectCreated:") {
        Kind::Object
    } else if e.name == "ObjectRemoved:DeleteMarkerCreated" {
        Kind::Marker
    } else if e.name.starts_with("ObjectTagging:") {
        Kind::Tags
    } else {
        // Deleting a version never replicates; lifecycle acts in each region on its own.
        return Ok(Vec::new());
    };
    if kind == Kind::Marker {
        return Ok(match r.oss.marker(&e.bucket, &e.key, version).await? {
            Some(m) if !m.replica => config
                .marker_rules_for(&e.key)
                .into_iter()
                .map(|rule| task(Kind::Marker, rule))
                .collect(),
            _ => Vec::new(),
        });
    }
    let enabled_rule = |label: &str| {
        config
            .rules
            .iter()
            .find(|x| x.enabled && x.destination.label() == label)
    };
    if kind == Kind::Object
        && let Some(labels) = &e.replicate
    {
        // The commit named the destinations: no read. A replay of a version already sent
        // finds it COMPLETED when the task reads it.
        return Ok(labels
            .iter()
            .filter_map(|l| enabled_rule(l))
            .map(|rule| task(kind, rule))
            .collect());
    }
    let rec = match r
        .oss
        .load_version(&e.bucket, &e.key, Some(VersionSelector::Id(version)))
        .await
    {
        Ok((rec, _)) => rec,
        Err(
            OssError::NoSuchVersion
            | OssError::NoSuchKey
            | OssError::NoSuchBucket
            | OssError::DeleteMarker { .. },
        ) => return Ok(Vec::new()),
        Err(other) => return Err(other),
    };
    let Some(ReplicationState::Source(targets)) = &rec.replication else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (label, status) in targets {
        if kind == Kind::Object && *status == TargetStatus::Completed {
            continue;
        }
        if let Some(rule) = enabled_rule(label) {
            out.push(task(kind, rule));
        }
    }
    Ok(out)
}

async fn run<M: MetaStore, B: BlobStore>(r: Arc<Replication<M, B>>, t: Task) {
    deliver(&r, &t).await;
    r.state.with(|s| {
        if let Some(o) = s.outstanding.get_mut(&t.event_id) {
            o.remaining = o.remaining.saturating_sub(1);
            if o.remaining == 0 {
                s.outstanding.remove(&t.event_id);
            }
        }
    });
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Written to the peer: the object bytes sent.
    Sent(u64),
    /// Nothing to do (gone at the source, or already there).
    Skipped,
    /// Refused for good; the version is FAILED for that destination.
    Failed,
    /// The rule or the peer went away first.
    Dropped,
}

/// Runs one task to its end: retried with back-off while the peer is away, given up after
/// [`REFUSALS`] refusals. Records the version's status and the metrics.
pub(crate) async fn deliver<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    t: &Task,
) -> Delivered {
    let label = t.label();
    let mut wait = FIRST_RETRY;
    let mut refusals = 0;
    loop {
        let Some(peer) = r.peer(&t.rule.destination.region) else {
            return Delivered::Dropped;
        };
        let outcome = {
            let Ok(_slot) = peer.slots.clone().acquire_owned().await else {
                return Delivered::Dropped;
            };
            attempt(r, &peer, t).await
        };
        let (error, last_try) = match outcome {
            Ok(bytes) => {
                if t.kind == Kind::Object {
                    record_status(r, t, &label, TargetStatus::Completed).await;
                }
                done(r, t, bytes);
                return Delivered::Sent(bytes);
            }
            Err(Failure::Skip) => return Delivered::Skipped,
            Err(Failure::Retry(m)) => (m, false),
            Err(Failure::Refused(m)) => {
                refusals += 1;
                (m, refusals >= REFUSALS)
            }
            Err(Failure::Never(m)) => (m, true),
        };
        r.state.with(|s| {
            s.targets.entry(label.clone()).or_default().last_error = Some(error.clone());
        });
        if last_try {
            tracing::warn!(bucket = %t.bucket, key = %t.key, version = %t.version.render(),
                destination = %label, error = %error, "replication failed");
            if t.kind == Kind::Object {
                record_status(r, t, &label, TargetStatus::Failed).await;
            }
            r.metrics
                .failed
                .get_or_create(&TargetLabel {
                    destination: label.clone(),
                })
                .inc();
            r.state
                .with(|s| s.targets.entry(label.clone()).or_default().failed += 1);
            return Delivered::Failed;
        }
        tracing::debug!(destination = %label, error = %error, "replication retry");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = peer.back.notified() => {}
        }
        wait = (wait * 2).min(MAX_RETRY);
        // A rule removed (or pointed elsewhere) meanwhile ends the task.
        match r.oss.replication(&t.bucket).await {
            Ok(Some(c))
                if c.rules
                    .iter()
                    .any(|x| x.enabled && x.destination.label() == label) => {}
            Ok(_) | Err(OssError::NoSuchBucket) => return Delivered::Dropped,
            Err(_) => {}
        }
    }
}

/// Commits completions in batches: whatever has queued up while the last commit ran.
async fn write_statuses<M: MetaStore, B: BlobStore>(
    r: Arc<Replication<M, B>>,
    mut rx: tokio::sync::mpsc::Receiver<StatusItem>,
) {
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        while items.len() < 512 {
            match rx.try_recv() {
                Ok(i) => items.push(i),
                Err(_) => break,
            }
        }
        let (updates, acks): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        if let Err(e) = r.oss.set_replication_statuses(updates).await {
            tracing::warn!(error = %e, "replication status not recorded");
        }
        for a in acks {
            let _ = a.send(());
        }
    }
}

/// Records a version's outcome for one destination. A resync's returns once it is committed;
/// an event task's is left for the cursor writer, which records it before the cursor passes
/// the event (one commit for every outcome since its last round, instead of one per batch of
/// concurrent completions: these commits were a third of the worker's cost).
async fn record_status<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    t: &Task,
    label: &str,
    status: TargetStatus,
) {
    let u = StatusUpdate {
        bucket: t.bucket.clone(),
        key: t.key.clone(),
        version: t.version,
        label: label.to_owned(),
        status,
    };
    if t.event_id != 0 {
        r.state.with(|s| s.unrecorded.push((t.event_id, u)));
        return;
    }
    if let Some(tx) = r.state.statuses.get() {
        let (ack, committed) = tokio::sync::oneshot::channel();
        if tx.send((u, ack)).await.is_ok() {
            let _ = committed.await;
            return;
        }
    }
    if let Err(e) = r
        .oss
        .set_replication_status(&t.bucket, &t.key, t.version, label, status)
        .await
    {
        tracing::warn!(error = %e, "replication status not recorded");
    }
}

fn done<M: MetaStore, B: BlobStore>(r: &Replication<M, B>, t: &Task, bytes: u64) {
    let label = TargetLabel {
        destination: t.label(),
    };
    r.metrics.replicated.get_or_create(&label).inc();
    r.metrics.bytes.get_or_create(&label).inc_by(bytes);
    if !t.resync {
        // Event ids are the commit's microseconds.
        let now_us = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as u64;
        r.metrics
            .lag
            .observe(now_us.saturating_sub(t.event_id) as f64 / 1e6);
    }
    r.state.with(|s| {
        let st = s.targets.entry(label.destination).or_default();
        st.last_error = None;
        st.completed += 1;
        st.bytes += bytes;
        st.recent.push_back((Instant::now(), bytes));
        if st.recent.len() > 1_000_000 {
            st.recent.pop_front();
        }
    });
}

/// Writes to the peer; the bytes of object data sent.
async fn attempt<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    peer: &Peer,
    t: &Task,
) -> Result<u64, Failure> {
    let dest = &t.rule.destination;
    let version = t.version.render();
    match t.kind {
        Kind::Marker => {
            let Some(m) = r
                .oss
                .marker(&t.bucket, &t.key, t.version)
                .await
                .map_err(oss_failure)?
            else {
                return Err(Failure::Skip);
            };
            let headers = vec![
                (REPLICA_VERSION_HEADER.to_owned(), version),
                (
                    REPLICA_MTIME_HEADER.to_owned(),
                    m.last_modified_ms.to_string(),
                ),
            ];
            peer.client
                .bodiless(
                    Method::DELETE,
                    Some(&dest.bucket),
                    Some(&t.key),
                    &[],
                    headers,
                    SMALL_TIMEOUT,
                )
                .await
                .map_err(classify)?;
            Ok(0)
        }
        Kind::Tags => {
            let (rec, _) = r
                .oss
                .load_version(&t.bucket, &t.key, Some(VersionSelector::Id(t.version)))
                .await
                .map_err(oss_failure)?;
            let query = [("tagging", ""), ("versionId", version.as_str())];
            if rec.tags.is_empty() {
                peer.client
                    .bodiless(
                        Method::DELETE,
                        Some(&dest.bucket),
                        Some(&t.key),
                        &query,
                        Vec::new(),
                        SMALL_TIMEOUT,
                    )
                    .await
                    .map_err(classify)?;
            } else {
                let xml = Bytes::from(tagging_xml(&rec.tags));
                let headers = vec![
                    ("content-md5".to_owned(), content_md5(&xml)),
                    ("content-length".to_owned(), xml.len().to_string()),
                ];
                let sha = hex::encode(sha2::Sha256::digest(&xml));
                let body = http_body_util::Full::new(xml)
                    .map_err(|never| match never {})
                    .boxed_unsync();
                peer.client
                    .send(
                        Method::PUT,
                        Some(&dest.bucket),
                        Some(&t.key),
                        &query,
                        headers,
                        body,
                        &sha,
                        SMALL_TIMEOUT,
                    )
                    .await
                    .map_err(classify)?;
            }
            Ok(0)
        }
        Kind::Object => put_version(r, peer, t).await,
    }
}

/// Stores the cursor: just before the oldest unfinished event, or the last planned one.
async fn persist_cursor<M: MetaStore, B: BlobStore>(r: &Replication<M, B>) {
    // A task leaves its outcome in `unrecorded` before it counts its event finished, so every
    // outcome of the events below `target` is in the batch taken with it.
    let (target, durable, updates) = r.state.with(|s| {
        let t = match s.outstanding.keys().next() {
            Some(first) => first.saturating_sub(1).min(s.scanned),
            None => s.scanned,
        };
        let taken = std::mem::take(&mut s.unrecorded);
        s.recording = taken.iter().map(|(id, _)| *id).collect();
        (t, s.durable, taken)
    });
    if !updates.is_empty() {
        let batch: Vec<StatusUpdate> = updates.iter().map(|(_, u)| u.clone()).collect();
        if let Err(e) = r.oss.set_replication_statuses(batch).await {
            // Kept for the next round; the cursor stays where it is until they are recorded.
            tracing::warn!(error = %e, "replication status not recorded");
            r.state.with(|s| {
                s.recording.clear();
                let later = std::mem::replace(&mut s.unrecorded, updates);
                s.unrecorded.extend(later);
            });
            return;
        }
    }
    r.state.with(|s| s.recording.clear());
    if target > durable {
        match r.oss.set_event_cursor(CONSUMER, target).await {
            Ok(()) => r.state.with(|s| s.durable = target),
            Err(e) => tracing::warn!(error = %e, "replication cursor not stored"),
        }
    }
}

/// Logged changes looked at per lag check before the follower has read them.
const UNREAD_SCAN: usize = 10_000;

/// Pending figures: changes, bytes, and the age of the oldest (ms). Changes still unread by
/// the follower count when their bucket replicates (up to `UNREAD_SCAN` of them).
async fn pending<M: MetaStore, B: BlobStore>(r: &Replication<M, B>) -> (usize, u64, u64) {
    let now_us = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as u64;
    let (mut count, mut bytes, mut oldest, scanned) = r.state.with(|s| {
        // Finished but not yet recorded counts as pending: its status still reads PENDING.
        let unrecorded: std::collections::BTreeSet<u64> = s
            .unrecorded
            .iter()
            .map(|(id, _)| *id)
            .chain(s.recording.iter().copied())
            .filter(|id| !s.outstanding.contains_key(id))
            .collect();
        let first = s
            .outstanding
            .keys()
            .next()
            .into_iter()
            .chain(unrecorded.first())
            .min();
        (
            s.outstanding.len() + unrecorded.len(),
            s.outstanding.values().map(|o| o.bytes).sum::<u64>(),
            first.copied(),
            s.scanned,
        )
    });
    if let Ok(unread) = r.oss.events_after(scanned, UNREAD_SCAN).await {
        let mut replicated: HashMap<String, bool> = HashMap::new();
        for e in unread {
            let on = match replicated.get(&e.bucket) {
                Some(on) => *on,
                None => {
                    let on = matches!(r.oss.replication(&e.bucket).await, Ok(Some(_)));
                    replicated.insert(e.bucket.clone(), on);
                    on
                }
            };
            if on {
                count += 1;
                bytes += e.size.unwrap_or(0);
                oldest = Some(oldest.map_or(e.id, |o| o.min(e.id)));
            }
        }
    }
    let age = oldest
        .map(|id| now_us.saturating_sub(id) / 1000)
        .unwrap_or(0);
    (count, bytes, age)
}

async fn watch_lag<M: MetaStore, B: BlobStore>(r: &Replication<M, B>, rpo: Option<Duration>) {
    let (count, _, age_ms) = pending(r).await;
    r.metrics.pending.set(count as i64);
    r.metrics.oldest_pending.set(age_ms as f64 / 1000.0);
    if let Some(rpo) = rpo
        && age_ms > rpo.as_millis() as u64
    {
        let now = feiyun_oss::now_millis();
        let last = r
            .state
            .last_alert_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now - last >= 60_000 {
            r.state
                .last_alert_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                lag_seconds = age_ms / 1000,
                rpo_seconds = rpo.as_secs(),
                pending = count,
                "ALERT replication lag exceeds the RPO"
            );
        }
    }
}

/// `feiyun replication status`: progress, lag, failures and throughput per destination.
pub async fn status_json<M: MetaStore, B: BlobStore>(r: &Replication<M, B>) -> serde_json::Value {
    let (count, bytes, age_ms) = pending(r).await;
    let now = Instant::now();
    let (cursor, targets) = r.state.with(|s| {
        let mut targets = serde_json::Map::new();
        for (label, st) in s.targets.iter_mut() {
            let (ops, bps) = st.throughput(now);
            targets.insert(
                label.clone(),
                serde_json::json!({
                    "completed": st.completed,
                    "failed": st.failed,
                    "bytes": st.bytes,
                    "objects_per_second": ops,
                    "bytes_per_second": bps,
                    "last_error": st.last_error,
                }),
            );
        }
        (s.durable, targets)
    });
    serde_json::json!({
        "cursor": cursor,
        "pending_events": count,
        "pending_bytes": bytes,
        "oldest_pending_ms": age_ms,
        "destinations": targets,
        "site": r.site_json(),
        "homes": r.homes().iter().map(|h| serde_json::json!({"bucket": h.bucket, "region": h.region, "redirect": h.redirect, "home_up": r.peer(&h.region).is_some_and(|p| p.is_up())})).collect::<Vec<_>>(),
        "resyncs": r.resync_jobs().unwrap_or_default().iter().map(crate::resync::job_json).collect::<Vec<_>>(),
        "regions": r.peers().iter().map(|p| crate::peer_json(p)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_url_encoded() {
        let t = vec![
            ("a b".to_owned(), "x=y&z".to_owned()),
            ("k".to_owned(), "ü".to_owned()),
        ];
        assert_eq!(encode_tags(&t), "a%20b=x%3Dy%26z&k=%C3%BC");
    }
}

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

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use feiyun_oss::events::EventRecord;
use feiyun_oss::replication::{
    REPLICA_MTIME_HEADER, REPLICA_VERSION_HEADER, ReplicationRule, ReplicationState, TargetStatus,
};
use feiyun_oss::{BlobStore, GetRequest, MetaStore, OssError, VersionId, VersionSelector};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::{Peer, Replication};

/// The worker's event-log cursor.
pub const CONSUMER: &str = "replication";
/// Writes in flight to one peer.
pub(crate) const PEER_CONCURRENCY: usize = 32;
/// Events planned but not finished before the worker stops reading the log.
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
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
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
}

/// The worker's progress, shared with the status API.
#[derive(Default)]
pub(crate) struct SharedState {
    inner: Mutex<State>,
    /// When the last RPO alert was logged (ms), to log at most one a minute.
    last_alert_ms: AtomicI64,
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
enum Kind {
    Object,
    Marker,
    Tags,
}

#[derive(Debug, Clone)]
struct Task {
    event_id: u64,
    bucket: String,
    key: String,
    version: VersionId,
    kind: Kind,
    rule: ReplicationRule,
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

/// What an SDK error means for the task, and a one-line description.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Failure {
    let msg = describe(e);
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            if status >= 500 || status == 429 || status == 408 {
                Failure::Retry(msg)
            } else {
                Failure::Refused(msg)
            }
        }
        _ => Failure::Retry(msg),
    }
}

pub(crate) fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(e)),
    }
}

fn oss_failure(e: OssError) -> Failure {
    match e {
        OssError::NoSuchVersion
        | OssError::NoSuchKey
        | OssError::NoSuchBucket
        | OssError::DeleteMarker { .. } => Failure::Skip,
        other => Failure::Retry(format!("reading the source: {other}")),
    }
}

/// Starts the follower, the cursor writer and the lag watcher.
pub(crate) fn spawn<M: MetaStore, B: BlobStore>(r: Arc<Replication<M, B>>, rpo: Option<Duration>) {
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
            watch_lag(&r, rpo);
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
    loop {
        if r.state.with(|s| s.outstanding.len()) >= MAX_OUTSTANDING {
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
        for e in events {
            let tasks = match plan(&r, &e).await {
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
async fn plan<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    e: &EventRecord,
) -> Result<Vec<Task>, OssError> {
    let Some(version) = e.version_id.as_deref().and_then(VersionId::parse) else {
        return Ok(Vec::new());
    };
    let config = match r.oss.replication(&e.bucket).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(OssError::NoSuchBucket) => return Ok(Vec::new()),
        Err(other) => return Err(other),
    };
    let task = |kind, rule: &ReplicationRule| Task {
        event_id: e.id,
        bucket: e.bucket.clone(),
        key: e.key.clone(),
        version,
        kind,
        rule: rule.clone(),
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
        if let Some(rule) = config
            .rules
            .iter()
            .find(|x| x.enabled && x.destination.label() == *label)
        {
            out.push(task(kind, rule));
        }
    }
    Ok(out)
}

async fn run<M: MetaStore, B: BlobStore>(r: Arc<Replication<M, B>>, t: Task) {
    let label = t.label();
    let mut wait = FIRST_RETRY;
    let mut refusals = 0;
    loop {
        let Some(peer) = r.peer(&t.rule.destination.region) else {
            break;
        };
        let outcome = {
            let Ok(_slot) = peer.slots.clone().acquire_owned().await else {
                break;
            };
            attempt(&r, &peer, &t).await
        };
        let (error, last_try) = match outcome {
            Ok(bytes) => {
                if t.kind == Kind::Object
                    && let Err(e) = r
                        .oss
                        .set_replication_status(
                            &t.bucket,
                            &t.key,
                            t.version,
                            &label,
                            TargetStatus::Completed,
                        )
                        .await
                {
                    tracing::warn!(error = %e, "replication status not recorded");
                }
                done(&r, &t, bytes);
                break;
            }
            Err(Failure::Skip) => break,
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
            if t.kind == Kind::Object
                && let Err(e) = r
                    .oss
                    .set_replication_status(
                        &t.bucket,
                        &t.key,
                        t.version,
                        &label,
                        TargetStatus::Failed,
                    )
                    .await
            {
                tracing::warn!(error = %e, "replication status not recorded");
            }
            r.metrics
                .failed
                .get_or_create(&TargetLabel {
                    destination: label.clone(),
                })
                .inc();
            r.state
                .with(|s| s.targets.entry(label.clone()).or_default().failed += 1);
            break;
        }
        tracing::debug!(destination = %label, error = %error, "replication retry");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
        // A rule removed (or pointed elsewhere) meanwhile ends the task.
        match r.oss.replication(&t.bucket).await {
            Ok(Some(c))
                if c.rules
                    .iter()
                    .any(|x| x.enabled && x.destination.label() == label) => {}
            Ok(_) | Err(OssError::NoSuchBucket) => break,
            Err(_) => {}
        }
    }
    r.state.with(|s| {
        if let Some(o) = s.outstanding.get_mut(&t.event_id) {
            o.remaining = o.remaining.saturating_sub(1);
            if o.remaining == 0 {
                s.outstanding.remove(&t.event_id);
            }
        }
    });
}

fn done<M: MetaStore, B: BlobStore>(r: &Replication<M, B>, t: &Task, bytes: u64) {
    let label = TargetLabel {
        destination: t.label(),
    };
    r.metrics.replicated.get_or_create(&label).inc();
    r.metrics.bytes.get_or_create(&label).inc_by(bytes);
    // Event ids are the commit's microseconds.
    let now_us = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as u64;
    r.metrics
        .lag
        .observe(now_us.saturating_sub(t.event_id) as f64 / 1e6);
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
            let mtime = m.last_modified_ms.to_string();
            peer.client
                .delete_object()
                .bucket(&dest.bucket)
                .key(&t.key)
                .customize()
                .mutate_request(move |req| {
                    req.headers_mut()
                        .insert(REPLICA_VERSION_HEADER, version.clone());
                    req.headers_mut()
                        .insert(REPLICA_MTIME_HEADER, mtime.clone());
                })
                .send()
                .await
                .map_err(|e| classify(&e))?;
            Ok(0)
        }
        Kind::Tags => {
            let (rec, _) = r
                .oss
                .load_version(&t.bucket, &t.key, Some(VersionSelector::Id(t.version)))
                .await
                .map_err(oss_failure)?;
            if rec.tags.is_empty() {
                peer.client
                    .delete_object_tagging()
                    .bucket(&dest.bucket)
                    .key(&t.key)
                    .version_id(&version)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
            } else {
                let tags = rec
                    .tags
                    .iter()
                    .map(|(k, v)| {
                        aws_sdk_s3::types::Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                            .map_err(|e| Failure::Never(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let tagging = aws_sdk_s3::types::Tagging::builder()
                    .set_tag_set(Some(tags))
                    .build()
                    .map_err(|e| Failure::Never(e.to_string()))?;
                peer.client
                    .put_object_tagging()
                    .bucket(&dest.bucket)
                    .key(&t.key)
                    .version_id(&version)
                    .tagging(tagging)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
            }
            Ok(0)
        }
        Kind::Object => put_version(r, peer, t).await,
    }
}

async fn put_version<M: MetaStore, B: BlobStore>(
    r: &Replication<M, B>,
    peer: &Peer,
    t: &Task,
) -> Result<u64, Failure> {
    let dest = &t.rule.destination;
    let label = dest.label();
    let req = GetRequest {
        version: Some(VersionSelector::Id(t.version)),
        ..Default::default()
    };
    let head = r
        .oss
        .head_object(&t.bucket, &t.key, &req)
        .await
        .map_err(oss_failure)?;
    let rec = &head.record;
    match &rec.replication {
        Some(s) if s.target(&label) == Some(TargetStatus::Completed) => return Err(Failure::Skip),
        Some(ReplicationState::Replica) => return Err(Failure::Skip),
        _ => {}
    }
    if matches!(rec.sse(), Some(feiyun_oss::SseMode::Customer { .. })) {
        return Err(Failure::Never(
            "an SSE-C object cannot be replicated: the region does not keep the customer's key"
                .into(),
        ));
    }
    let read = r
        .oss
        .get_object(&t.bucket, &t.key, &req)
        .await
        .map_err(oss_failure)?;
    let rec = read.record;
    let size = rec.size;
    let Some(body) = read.body else {
        return Err(Failure::Retry("the source read has no body".into()));
    };
    // The SDK may poll again after the end (checksum trailers); the source stream must not be.
    let frames = body.fuse().map(|c| {
        c.map(http_body::Frame::data)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let body = ByteStream::from_body_1_x(SizedBody {
        inner: http_body_util::StreamBody::new(sync_wrapper::SyncStream::new(frames)),
        len: size,
    });
    let now = feiyun_oss::now_millis();
    let mut put = peer
        .client
        .put_object()
        .bucket(&dest.bucket)
        .key(&t.key)
        .content_length(size as i64)
        .body(body)
        .set_content_type(rec.content_type.clone())
        .set_content_encoding(rec.content_encoding.clone())
        .set_content_disposition(rec.content_disposition.clone())
        .set_content_language(rec.content_language.clone())
        .set_cache_control(rec.cache_control.clone())
        .set_metadata(
            (!rec.user_metadata.is_empty())
                .then(|| rec.user_metadata.iter().cloned().collect::<HashMap<_, _>>()),
        );
    if let Some(exp) = rec
        .expires
        .as_deref()
        .and_then(|s| DateTime::from_str(s, aws_smithy_types::date_time::Format::HttpDate).ok())
    {
        #[allow(deprecated)]
        {
            put = put.expires(exp);
        }
    }
    if !rec.tags.is_empty() {
        put = put.tagging(encode_tags(&rec.tags));
    }
    if let Some(class) = dest.storage_class.clone().or(rec.storage_class.clone()) {
        put = put.storage_class(aws_sdk_s3::types::StorageClass::from(class.as_str()));
    }
    // Retention that has run out no longer protects anything, and a PUT may not set it.
    if let Some(ret) = rec.retention.filter(|r| r.until_ms > now) {
        put = put
            .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::from(ret.mode.as_str()))
            .object_lock_retain_until_date(DateTime::from_millis(ret.until_ms));
    }
    if rec.legal_hold {
        put = put.object_lock_legal_hold_status(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On);
    }
    if let Some(k) = &dest.replica_kms_key {
        put = put
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .ssekms_key_id(k);
    }
    let version = t.version.render();
    let mtime = rec.last_modified_ms.to_string();
    put.customize()
        .mutate_request(move |req| {
            req.headers_mut()
                .insert(REPLICA_VERSION_HEADER, version.clone());
            req.headers_mut()
                .insert(REPLICA_MTIME_HEADER, mtime.clone());
        })
        .send()
        .await
        .map_err(|e| classify(&e))?;
    Ok(size)
}

/// A streamed body that states its length, which the SDK needs to checksum it (an
/// aws-chunked trailer) without buffering it.
struct SizedBody<S> {
    inner: http_body_util::StreamBody<S>,
    len: u64,
}

impl<S> http_body::Body for SizedBody<S>
where
    S: futures::Stream<Item = Result<http_body::Frame<bytes::Bytes>, std::io::Error>> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

/// `x-amz-tagging`: a URL-encoded query string.
fn encode_tags(tags: &[(String, String)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    tags.iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Stores the cursor: just before the oldest unfinished event, or the last planned one.
async fn persist_cursor<M: MetaStore, B: BlobStore>(r: &Replication<M, B>) {
    let (target, durable) = r.state.with(|s| {
        let t = match s.outstanding.keys().next() {
            Some(first) => first.saturating_sub(1).min(s.scanned),
            None => s.scanned,
        };
        (t, s.durable)
    });
    if target > durable {
        match r.oss.set_event_cursor(CONSUMER, target).await {
            Ok(()) => r.state.with(|s| s.durable = target),
            Err(e) => tracing::warn!(error = %e, "replication cursor not stored"),
        }
    }
}

/// Pending figures: events, bytes, and the age of the oldest (ms).
fn pending<M: MetaStore, B: BlobStore>(r: &Replication<M, B>) -> (usize, u64, u64) {
    let now_us = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as u64;
    r.state.with(|s| {
        let bytes = s.outstanding.values().map(|o| o.bytes).sum();
        let age = s
            .outstanding
            .keys()
            .next()
            .map(|id| now_us.saturating_sub(*id) / 1000)
            .unwrap_or(0);
        (s.outstanding.len(), bytes, age)
    })
}

fn watch_lag<M: MetaStore, B: BlobStore>(r: &Replication<M, B>, rpo: Option<Duration>) {
    let (count, _, age_ms) = pending(r);
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
pub fn status_json<M: MetaStore, B: BlobStore>(r: &Replication<M, B>) -> serde_json::Value {
    let (count, bytes, age_ms) = pending(r);
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

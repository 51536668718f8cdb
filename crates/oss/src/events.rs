//! The object event log: one durable row per object created or removed, written in the same
//! commit as the change itself, so an acknowledged change always has its event and a failed
//! one never does. Consumers (webhook delivery now, Function Compute later) read the log in id
//! order from their own durable cursor, which gives at-least-once delivery that survives
//! restarts.
//!
//! Event ids come from one in-process sequence that never goes backwards (seeded from the
//! clock and from the last stored id). Changes of one key serialize through the engine's
//! checks and a loser re-plans with a fresh id, so per key the id order is the commit order.
//!
//! Across keys, commits land out of id order: a change that took id 7 may commit after
//! the one that took id 8. A consumer that read 8 and moved its cursor there would never see
//! 7, so an id is a [`Ticket`] held until its commit has finished (landed or failed), and
//! readers see only ids below the oldest ticket still open: the *horizon*.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use feiyun_blob::BlobStore;
use feiyun_meta::{MetaStore, Table, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::records::{self, ObjectRecord};
use crate::{ObjectService, OssError};

/// Event rows deleted per commit by [`ObjectService::trim_events`].
const TRIM_CHUNK: usize = 512;
/// Rows one call removes at most; the trimmer calls again on its next tick.
const TRIM_PER_CALL: usize = 50_000;

/// Why an object changed; becomes the S3 event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventCause {
    Put,
    Copy,
    CompleteMultipartUpload,
    /// A client DELETE.
    Delete,
    /// A lifecycle rule.
    Lifecycle,
    /// A live migration's copy of a legacy object (announced as a PUT).
    LiveCopy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: u64,
    pub bucket: String,
    pub key: String,
    /// S3's name without the `s3:` prefix, e.g. `ObjectCreated:Put`.
    pub name: String,
    pub time_ms: i64,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    /// For a created version: the replication destinations (labels) left PENDING by its
    /// commit, so the replication worker need not read the version to plan. None in rows
    /// written before this field, and for every other event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate: Option<Vec<String>>,
    /// A live migration's copy of a legacy object: not written back to the legacy store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_legacy: bool,
}

impl EventRecord {
    /// S3's `sequencer`: hex that orders events of one key.
    pub fn sequencer(&self) -> String {
        format!("{:016X}", self.id)
    }
}

type OtherHorizon = Box<dyn Fn() -> u64 + Send + Sync>;

/// The event sequence and the ids whose commits have not finished.
#[derive(Default, Clone)]
pub(crate) struct EventIds {
    state: Arc<Mutex<IdState>>,
    /// In a multi-node region: the lowest id another node may still commit (each node
    /// publishes its own horizon). Blocking; call off the runtime.
    others: Arc<std::sync::OnceLock<OtherHorizon>>,
}

#[derive(Debug, Default)]
struct IdState {
    last: u64,
    open: BTreeSet<u64>,
}

/// An event id whose commit may still land. Dropped once the commit has finished; the
/// commit must therefore own it (a cancelled request must not release the id of a batch
/// still queued in the engine).
#[derive(Debug)]
pub(crate) struct Ticket {
    pub(crate) id: u64,
    state: Arc<Mutex<IdState>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.state).open.remove(&self.id);
    }
}

fn lock(m: &Mutex<IdState>) -> std::sync::MutexGuard<'_, IdState> {
    // The state is a counter and a set, each left whole by every critical section.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventIds {
    pub(crate) fn seed(&self, stored_max: u64) {
        let mut s = lock(&self.state);
        s.last = s.last.max(stored_max);
    }

    /// Greater than every id handed out before, and at least the clock in microseconds.
    pub(crate) fn next(&self) -> Ticket {
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as u64;
        let mut s = lock(&self.state);
        let id = now.max(s.last.saturating_add(1));
        s.last = id;
        s.open.insert(id);
        Ticket {
            id,
            state: self.state.clone(),
        }
    }

    /// Every id this process handed out below this has finished its commit: it is stored,
    /// or never will be. Read before the scan: ids handed out later are all at or above it
    /// (at least the clock, and above the last).
    pub(crate) fn local_horizon(&self) -> u64 {
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as u64;
        let s = lock(&self.state);
        s.open
            .first()
            .copied()
            .unwrap_or_else(|| s.last.saturating_add(1).max(now))
    }

    /// [`Self::local_horizon`], lowered to the other nodes' (blocking in a region).
    pub(crate) fn horizon(&self) -> u64 {
        let local = self.local_horizon();
        match self.others.get() {
            Some(f) => local.min(f()),
            None => local,
        }
    }
}

pub(crate) fn event_key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// Adds the event row for a created object to `batch`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn created(
    batch: &mut WriteBatch,
    id: u64,
    bucket: &str,
    key: &str,
    cause: EventCause,
    rec: &ObjectRecord,
    version_id: Option<String>,
) -> Result<(), OssError> {
    let name = match cause {
        EventCause::Copy => "ObjectCreated:Copy",
        EventCause::CompleteMultipartUpload => "ObjectCreated:CompleteMultipartUpload",
        _ => "ObjectCreated:Put",
    };
    let e = EventRecord {
        id,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        name: name.into(),
        time_ms: rec.last_modified_ms,
        size: Some(rec.size),
        etag: Some(rec.etag.clone()),
        version_id,
        replicate: Some(match &rec.replication {
            Some(crate::replication::ReplicationState::Source(targets)) => targets
                .iter()
                .filter(|(_, s)| *s == crate::replication::TargetStatus::Pending)
                .map(|(label, _)| label.clone())
                .collect(),
            _ => Vec::new(),
        }),
        from_legacy: cause == EventCause::LiveCopy,
    };
    batch.put(Table::Events, event_key(id), records::encode(&e)?);
    Ok(())
}

/// Adds the event row for a change to a version that keeps its bytes (a lifecycle
/// transition), named `name` (S3's name without `s3:`).
pub(crate) fn updated(
    batch: &mut WriteBatch,
    id: u64,
    bucket: &str,
    key: &str,
    name: &str,
    rec: &ObjectRecord,
    version_id: Option<String>,
) -> Result<(), OssError> {
    let e = EventRecord {
        id,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        name: name.to_owned(),
        time_ms: crate::now_millis(),
        size: Some(rec.size),
        etag: Some(rec.etag.clone()),
        version_id,
        replicate: None,
        from_legacy: false,
    };
    batch.put(Table::Events, event_key(id), records::encode(&e)?);
    Ok(())
}

/// Adds the event row for a removal (`marker`: a delete marker was created).
pub(crate) fn removed(
    batch: &mut WriteBatch,
    id: u64,
    bucket: &str,
    key: &str,
    cause: EventCause,
    marker: bool,
    version_id: Option<String>,
) -> Result<(), OssError> {
    let name = match (cause, marker) {
        (EventCause::Lifecycle, true) => "LifecycleExpiration:DeleteMarkerCreated",
        (EventCause::Lifecycle, false) => "LifecycleExpiration:Delete",
        (_, true) => "ObjectRemoved:DeleteMarkerCreated",
        (_, false) => "ObjectRemoved:Delete",
    };
    let e = EventRecord {
        id,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        name: name.into(),
        time_ms: crate::now_millis(),
        size: None,
        etag: None,
        version_id,
        replicate: None,
        from_legacy: false,
    };
    batch.put(Table::Events, event_key(id), records::encode(&e)?);
    Ok(())
}

fn cursor_key(consumer: &str) -> Vec<u8> {
    format!("event-cursor/{consumer}").into_bytes()
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Up to `limit` events with ids greater than `after`, in order, stopping before the
    /// first id whose commit may still land (so a cursor moved past what this returns
    /// never skips an event committed later).
    pub async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, OssError> {
        let local = self.event_ids.local_horizon();
        if local <= after.saturating_add(1) {
            return Ok(Vec::new());
        }
        let ids = self.event_ids.clone();
        let rows = self
            .blocking(move |m, _| {
                // Read before the scan, as the local one was.
                let horizon = match ids.others.get() {
                    Some(f) => local.min(f()),
                    None => local,
                };
                if horizon <= after.saturating_add(1) {
                    return Ok(Vec::new());
                }
                let start = event_key(after.saturating_add(1));
                let end = event_key(horizon);
                Ok(m.scan(Table::Events, &start, Some(&end), limit)?)
            })
            .await?;
        rows.iter().map(|(_, v)| records::decode(v)).collect()
    }

    /// Every event id below this has landed (stored, or never will be): a consumer with
    /// nothing to do for any event may move its cursor to just below it without reading.
    pub fn events_landed_below(&self) -> u64 {
        self.event_ids.horizon()
    }

    /// Every event id this node handed out below this has landed: what it publishes to the
    /// other nodes of its region.
    pub fn local_event_horizon(&self) -> u64 {
        self.event_ids.local_horizon()
    }

    /// Makes event readers wait for the other nodes of a region: `others` is the lowest
    /// event id any of them may still commit. Only the first call counts.
    pub fn set_other_event_horizon(&self, others: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.event_ids.others.set(Box::new(others));
    }

    /// A consumer's durable position (0 before its first event).
    pub async fn event_cursor(&self, consumer: &str) -> Result<u64, OssError> {
        let k = cursor_key(consumer);
        let v = self
            .blocking(move |m, _| Ok(m.get(Table::System, &k)?))
            .await?;
        Ok(match v {
            Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().unwrap_or([0; 8])),
            _ => 0,
        })
    }

    /// Records that `consumer` has handled every event up to `id`.
    pub async fn set_event_cursor(&self, consumer: &str, id: u64) -> Result<(), OssError> {
        self.store_event_cursor(consumer, id, false).await
    }

    /// Moves `consumer` past events it had nothing to do for. The move is made durable by
    /// the next durable commit rather than by an fsync of its own: a crash before then only
    /// makes the consumer read those events again and find, again, nothing to do. Without
    /// this, every follower's idle round after each PUT was a durable commit of its own —
    /// three fsyncs more per PUT for a client writing one object at a time (issue 20).
    pub async fn skip_events_to(&self, consumer: &str, id: u64) -> Result<(), OssError> {
        self.store_event_cursor(consumer, id, true).await
    }

    async fn store_event_cursor(
        &self,
        consumer: &str,
        id: u64,
        deferred: bool,
    ) -> Result<(), OssError> {
        let mut batch = WriteBatch::new();
        batch.deferred = deferred;
        batch.put(
            Table::System,
            cursor_key(consumer),
            id.to_be_bytes().to_vec(),
        );
        Ok(self.meta.commit(batch).await?)
    }

    /// Removes events with ids up to `upto` (every consumer is past them), at most
    /// `TRIM_PER_CALL` of them, in commits of `TRIM_CHUNK` rows. A consumer that fell behind
    /// leaves tens of thousands of expired rows at once; deleting them in one commit held the
    /// metadata writer (and every PUT grouped into that commit) for a tenth of a second.
    pub async fn trim_events(&self, upto: u64) -> Result<usize, OssError> {
        let end = event_key(upto.saturating_add(1));
        let mut start = Vec::new();
        let mut trimmed = 0;
        while trimmed < TRIM_PER_CALL {
            let (from, to) = (start.clone(), end.clone());
            let ids: Vec<Vec<u8>> = self
                .blocking(move |m, _| {
                    Ok(m.scan(Table::Events, &from, Some(&to), TRIM_CHUNK)?
                        .into_iter()
                        .map(|(k, _)| k)
                        .collect())
                })
                .await?;
            let Some(last) = ids.last() else { break };
            start = last.clone();
            start.push(0);
            let n = ids.len();
            let mut batch = WriteBatch::new();
            for k in ids {
                batch.delete(Table::Events, k);
            }
            self.meta.commit(batch).await?;
            trimmed += n;
            if n < TRIM_CHUNK {
                break;
            }
            // Let the requests queued behind this commit have the writer first.
            tokio::task::yield_now().await;
        }
        Ok(trimmed)
    }

    /// Seeds the sequence from the newest stored event (called once at open).
    pub(crate) async fn seed_event_ids(&self) -> Result<(), OssError> {
        let last = self
            .blocking(|m, _| {
                // The table is ordered; walk to its end in pages (only at start-up).
                let mut start = Vec::new();
                let mut last = None;
                loop {
                    let rows = m.scan(Table::Events, &start, None, 10_000)?;
                    let done = rows.len() < 10_000;
                    if let Some((k, _)) = rows.last() {
                        last = Some(k.clone());
                        start = k.clone();
                        start.push(0);
                    }
                    if done {
                        return Ok(last);
                    }
                }
            })
            .await?;
        if let Some(k) = last
            && let Ok(b) = <[u8; 8]>::try_from(k.as_slice())
        {
            self.event_ids.seed(u64::from_be_bytes(b));
        }
        Ok(())
    }
}

/// Where a bucket's events go: webhook targets named by id, filtered by event and key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationConfig {
    pub rules: Vec<NotificationRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRule {
    pub id: String,
    /// The ARN as the client gave it (echoed by Get).
    pub arn: String,
    /// The webhook target id (the ARN's last `:` segment).
    pub target: String,
    /// S3 event patterns: `s3:ObjectCreated:*`, `s3:ObjectRemoved:Delete`, …
    pub events: Vec<String>,
    pub prefix: String,
    pub suffix: String,
}

/// Event names S3 can notify about that Feiyun produces (wildcards included).
const KNOWN_EVENTS: [&str; 12] = [
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectCreated:Post",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:LifecycleExpiration:*",
    "s3:LifecycleExpiration:Delete",
    "s3:LifecycleExpiration:DeleteMarkerCreated",
    "s3:LifecycleTransition",
];

const NOTIFICATION_CONFIG: &str = "notification";

impl NotificationRule {
    pub fn matches(&self, e: &EventRecord) -> bool {
        e.key.starts_with(&self.prefix)
            && e.key.ends_with(&self.suffix)
            && self.events.iter().any(|p| {
                let p = p.strip_prefix("s3:").unwrap_or(p);
                match p.strip_suffix('*') {
                    Some(family) => e.name.starts_with(family),
                    None => e.name == p,
                }
            })
    }
}

/// Whether two event patterns can match the same event (`s3:ObjectCreated:*` covers `…:Put`).
fn events_overlap(a: &str, b: &str) -> bool {
    let family = |p: &str| p.strip_suffix('*').map(str::to_owned);
    match (family(a), family(b)) {
        (Some(fa), Some(fb)) => fa == fb,
        (Some(f), None) => b.starts_with(&f),
        (None, Some(f)) => a.starts_with(&f),
        (None, None) => a == b,
    }
}

impl NotificationRule {
    /// S3 refuses two rules that could both fire for one event: a shared event type with
    /// prefixes and suffixes that a single key can satisfy together.
    fn overlaps(&self, other: &NotificationRule) -> bool {
        let prefixes =
            self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix);
        let suffixes = self.suffix.ends_with(&other.suffix) || other.suffix.ends_with(&self.suffix);
        prefixes
            && suffixes
            && self
                .events
                .iter()
                .any(|a| other.events.iter().any(|b| events_overlap(a, b)))
    }
}

impl NotificationConfig {
    /// Checks event names, that rules do not overlap and that every target exists (`targets`
    /// are the configured ids).
    pub fn validate(&self, targets: &[String]) -> Result<(), OssError> {
        let mut ids = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            if self.rules[..i].iter().any(|o| o.overlaps(r)) {
                return Err(OssError::InvalidArgument(
                    "Configurations overlap. Configurations on the same bucket cannot share a common event type.".into(),
                ));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(OssError::InvalidArgument(
                    "Configuration ids must be unique".into(),
                ));
            }
            if r.events.is_empty() {
                return Err(OssError::InvalidArgument(
                    "A notification configuration needs at least one event".into(),
                ));
            }
            for e in &r.events {
                if !KNOWN_EVENTS.contains(&e.as_str()) {
                    return Err(OssError::InvalidArgument(format!(
                        "The event {e} is not supported for notifications"
                    )));
                }
            }
            if !targets.contains(&r.target) {
                return Err(OssError::InvalidArgument(format!(
                    "Unable to validate the following destination configurations: {} (no webhook target {:?} is configured on this server)",
                    r.arn, r.target
                )));
            }
        }
        Ok(())
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    pub async fn put_notification(
        &self,
        bucket: &str,
        config: NotificationConfig,
        targets: &[String],
    ) -> Result<(), OssError> {
        config.validate(targets)?;
        // An empty configuration turns notifications off, as in S3.
        let value = if config.rules.is_empty() {
            None
        } else {
            Some(records::encode(&config)?)
        };
        self.set_bucket_config(bucket, NOTIFICATION_CONFIG, value)
            .await
    }

    pub async fn notification(&self, bucket: &str) -> Result<NotificationConfig, OssError> {
        match self.bucket_config(bucket, NOTIFICATION_CONFIG).await? {
            Some(v) => records::decode(&v),
            None => Ok(NotificationConfig::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_go_backwards() {
        let ids = EventIds::default();
        ids.seed(u64::MAX / 2);
        let a = ids.next();
        let b = ids.next();
        assert!(a.id > u64::MAX / 2 && b.id > a.id);
    }

    #[test]
    fn the_horizon_waits_for_the_oldest_open_commit() {
        let ids = EventIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_eq!(ids.horizon(), a.id);
        // The later commit lands first: readers still stop below the earlier one.
        drop(b);
        assert_eq!(ids.horizon(), a.id);
        let a_id = a.id;
        drop(a);
        let h = ids.horizon();
        assert!(
            h > a_id,
            "all settled: the horizon passes every id handed out"
        );
        let c = ids.next();
        assert!(
            c.id >= h,
            "a later id is never below a horizon already read"
        );
    }

    #[test]
    fn rules_match_event_family_prefix_and_suffix() {
        let r = NotificationRule {
            events: vec!["s3:ObjectCreated:*".into()],
            prefix: "img/".into(),
            suffix: ".jpg".into(),
            target: "t".into(),
            ..Default::default()
        };
        let e = |name: &str, key: &str| EventRecord {
            id: 1,
            bucket: "b".into(),
            key: key.into(),
            name: name.into(),
            time_ms: 0,
            size: None,
            etag: None,
            version_id: None,
            replicate: None,
            from_legacy: false,
        };
        assert!(r.matches(&e("ObjectCreated:Put", "img/a.jpg")));
        assert!(r.matches(&e("ObjectCreated:CompleteMultipartUpload", "img/b.jpg")));
        assert!(!r.matches(&e("ObjectRemoved:Delete", "img/a.jpg")));
        assert!(!r.matches(&e("ObjectCreated:Put", "doc/a.jpg")));
        assert!(!r.matches(&e("ObjectCreated:Put", "img/a.png")));
        let cfg = NotificationConfig { rules: vec![r] };
        assert!(cfg.validate(&["t".into()]).is_ok());
        assert!(cfg.validate(&[]).is_err());
        let mut bad = cfg.clone();
        bad.rules[0].events = vec!["s3:Replication:*".into()];
        assert!(bad.validate(&["t".into()]).is_err());
    }

    #[test]
    fn overlapping_rules_are_refused_disjoint_ones_kept() {
        let rule = |id: &str, event: &str, prefix: &str, suffix: &str| NotificationRule {
            id: id.into(),
            events: vec![event.into()],
            prefix: prefix.into(),
            suffix: suffix.into(),
            target: "t".into(),
            ..Default::default()
        };
        let check = |a: NotificationRule, b: NotificationRule| {
            NotificationConfig { rules: vec![a, b] }
                .validate(&["t".into()])
                .is_ok()
        };
        let created = "s3:ObjectCreated:*";
        let put = "s3:ObjectCreated:Put";
        let removed = "s3:ObjectRemoved:*";
        assert!(!check(
            rule("a", created, "img/", ""),
            rule("b", put, "img/x/", "")
        ));
        assert!(!check(
            rule("a", put, "", ".jpg"),
            rule("b", put, "", "a.jpg")
        ));
        assert!(check(
            rule("a", created, "img/", ""),
            rule("b", created, "doc/", "")
        ));
        assert!(check(
            rule("a", created, "", ".jpg"),
            rule("b", created, "", ".png")
        ));
        assert!(check(
            rule("a", created, "img/", ""),
            rule("b", removed, "img/", "")
        ));
        assert!(check(
            rule("a", put, "", ""),
            rule("b", "s3:ObjectCreated:Copy", "", "")
        ));
    }
}

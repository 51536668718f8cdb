//! Versioning: the one place where a key's set of versions changes.
//!
//! Every PUT, copy, multipart completion and DELETE of a key is a [`Change`] applied by
//! [`ObjectService::apply_change`], whatever the bucket's versioning state; unversioned buckets
//! simply keep a single `null` version. Per key there are three kinds of rows:
//!
//! - `objects`: the current version's full record, present only while the current version is
//!   an object (not a delete marker). Plain GET and ListObjects read only this table, so their
//!   cost never depends on how many noncurrent versions exist.
//! - `versions`: one row per version, newest first. The current object's row is a
//!   [`VersionRow::Current`] stub (its record lives in `objects`); older versions and delete
//!   markers hold their full record.
//! - `heads`: which version is newest and which one is `null`.
//!
//! Concurrency is optimistic: a change reads the rows it decides on and its batch checks each of
//! them for the exact value it read, so two changes of one key serialize through the engine's
//! checks and the loser re-plans. Every change rewrites or checks the head, and every new
//! version id is greater than the head's newest, so no change can slip in unseen. The loser
//! re-plans inside the same commit where it can (the batch carries a [`Replan`]), so many
//! writers of one key share one durable commit instead of queueing for one each.

use std::sync::{Arc, Mutex};

use feiyun_blob::{BlobId, BlobStore};
use feiyun_meta::{MetaError, MetaRead, MetaStore, Replan, Table, WriteBatch, prefix_end};

use crate::events::{self, EventCause};
use crate::lock;
use crate::records::{
    self, BucketRecord, KeyHead, MarkerRecord, ObjectRecord, VersionId, VersionRow, Versioning,
};
use crate::replication::ReplicationState;
use crate::retry::Retry;
use crate::{ObjectService, OssError, keys, now_millis};

/// A `versionId` request parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    Null,
    Id(VersionId),
}

impl VersionSelector {
    pub fn parse(s: &str) -> Result<Self, OssError> {
        if s == "null" {
            return Ok(VersionSelector::Null);
        }
        VersionId::parse(s)
            .map(VersionSelector::Id)
            .ok_or_else(|| OssError::InvalidArgument("Invalid version id specified".into()))
    }

    pub fn render(self) -> String {
        match self {
            VersionSelector::Null => "null".into(),
            VersionSelector::Id(v) => v.render(),
        }
    }
}

/// What a write or delete does to a key's versions.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A new current version. `pending` blobs leave `PendingBlobs` in the same commit.
    Put {
        record: Box<ObjectRecord>,
        pending: Vec<BlobId>,
    },
    /// DELETE without a version id: a delete marker, or removal in an unversioned bucket.
    DeleteCurrent,
    /// A delete marker replicated from another region, keeping its version id and time.
    ReplicaMarker(MarkerRecord),
    /// DELETE of one version, permanently.
    DeleteVersion {
        selector: VersionSelector,
        bypass_governance: bool,
    },
}

/// The result of a change, as the S3 response reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// `x-amz-version-id`; `None` in a bucket that was never versioned.
    pub version_id: Option<String>,
    /// `x-amz-delete-marker`: a marker was created, or the version removed was one.
    pub delete_marker: bool,
    /// The committed record of a `Put`.
    pub record: Option<ObjectRecord>,
    /// A replica whose version was already here: nothing was written (its staged blobs are
    /// the caller's to drop).
    pub duplicate: bool,
}

struct Plan {
    batch: WriteBatch,
    freed: bool,
}

impl Plan {
    fn garbage(&mut self, r: &ObjectRecord) {
        for b in r.blobs() {
            self.batch
                .put(Table::Garbage, b.id.to_bytes().to_vec(), Vec::new());
            self.freed = true;
        }
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Applies `change` to `bucket/key` atomically with `extra` (further checks and mutations,
    /// such as a multipart upload's removal), re-planning after a lost race.
    pub(crate) async fn apply_change(
        &self,
        bucket: &str,
        key: &str,
        change: Change,
        cause: EventCause,
        extra: WriteBatch,
    ) -> Result<Applied, OssError> {
        let change = Arc::new(change);
        let extra = Arc::new(extra);
        let mut retry = Retry::new();
        // A client's PUT checks both rows of the key it decides on, so its first attempt may
        // plan from a node's row cache, a key it does not hold taken as new: the commit's
        // checks catch a key that existed, and the re-plan inside the transaction takes
        // over. A new key then costs no read before its commit.
        let mut speculate = matches!(&*change, Change::Put { record, .. }
            if record.replication != Some(ReplicationState::Replica));
        loop {
            // A fresh id per attempt: a re-planned change is ordered after the one it lost to.
            let ticket = self.event_ids.next();
            let event_id = ticket.id;
            let guessed = match std::mem::take(&mut speculate) {
                true => self.speculative_plan(bucket, key, &change, &extra),
                false => None,
            };
            let (plan, applied) = match guessed {
                Some(p) => p,
                None => {
                    self.first_read_or_snapshot(bucket, key, |r| {
                        plan(r, bucket, key, &change, &extra, now_millis())
                    })
                    .await?
                }
            };
            let Some(mut plan) = plan else {
                return Ok(applied);
            };
            record_event(
                &mut plan.batch,
                event_id,
                bucket,
                key,
                cause,
                &change,
                &applied,
            )?;
            // Another writer of this key may commit first, in this very group: the engine
            // then plans this change again against what that one left, with a later event
            // id, rather than failing it back here to queue behind the next group.
            let replanned: Arc<Mutex<Option<Replanned>>> = Arc::default();
            plan.batch.replan = Some(self.replan(bucket, key, &change, &extra, cause, &replanned));
            match self.commit_event(plan.batch, Some(ticket)).await {
                Ok(was_replanned) => {
                    let (freed, applied) = match slot(&replanned).take() {
                        Some(r) if was_replanned => (r.freed, r.applied),
                        _ => (plan.freed, applied),
                    };
                    if freed {
                        self.janitor.notify_one();
                    }
                    return Ok(applied);
                }
                Err(MetaError::Conflict(_)) => {
                    // Re-planning reads the key again, but not what `extra` depends on: when
                    // that is what changed, the caller must plan again itself.
                    if !extra.checks.is_empty() {
                        let holds =
                            self.point_read(|m| Ok(feiyun_meta::checks_hold(m, &extra.checks)?))?;
                        if !holds {
                            return Err(OssError::Raced);
                        }
                    }
                    if !retry.again().await {
                        return Err(OssError::Busy);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `change` planned from the rows the metadata engine's cache holds (see
    /// `MetaStore::speculative_rows`); `None` when it cannot be, or when the plan wanted
    /// other rows, failed, or had nothing to commit (whose checks would not run).
    fn speculative_plan(
        &self,
        bucket: &str,
        key: &str,
        change: &Change,
        extra: &WriteBatch,
    ) -> Option<Planned> {
        let bkey = keys::bucket(bucket);
        let okey = keys::object(bucket, key);
        let reads = key_rows(&bkey, &okey);
        let rows = self.meta.speculative_rows(&reads)?;
        let first = FirstRows {
            reads: &reads,
            rows,
            wanted_more: std::cell::Cell::new(false),
        };
        match plan(&first, bucket, key, change, extra, now_millis()) {
            Ok((Some(p), applied)) if !first.wanted_more.get() => Some((Some(p), applied)),
            _ => None,
        }
    }

    /// The function the engine calls to plan `change` again inside the commit, when the
    /// rows it was planned from have moved; it leaves what it planned in `out`. A plan that
    /// fails (object lock, a vanished bucket) declines, and the caller's loop plans again
    /// outside and reports it.
    fn replan(
        &self,
        bucket: &str,
        key: &str,
        change: &Arc<Change>,
        extra: &Arc<WriteBatch>,
        cause: EventCause,
        out: &Arc<Mutex<Option<Replanned>>>,
    ) -> Replan {
        let (b, k, c, e, out) = (
            bucket.to_owned(),
            key.to_owned(),
            change.clone(),
            extra.clone(),
            out.clone(),
        );
        let ids = self.event_ids.clone();
        Replan::new(move |m| {
            let Ok((Some(mut plan), applied)) = plan(m, &b, &k, &c, &e, now_millis()) else {
                return Ok(None);
            };
            // Taken now, inside the transaction: later than the id of every batch already
            // applied before this one, so the event log keeps the commit order of the key.
            let ticket = ids.next();
            if record_event(&mut plan.batch, ticket.id, &b, &k, cause, &c, &applied).is_err() {
                return Ok(None);
            }
            *slot(&out) = Some(Replanned {
                freed: plan.freed,
                applied,
                _ticket: ticket,
            });
            Ok(Some(plan.batch))
        })
    }

    /// The record a read names: the current version, or the one `selector` picks. A delete
    /// marker answers `DeleteMarker`; a missing version `NoSuchVersion`.
    pub async fn load_version(
        &self,
        bucket: &str,
        key: &str,
        selector: Option<VersionSelector>,
    ) -> Result<(ObjectRecord, bool), OssError> {
        keys::validate_object_key(key)?;
        let mut retry = Retry::new();
        let found = loop {
            let found = self
                .first_read_or_snapshot(bucket, key, |r| resolve(r, bucket, key, selector))
                .await;
            if !matches!(found, Err(OssError::Busy)) || !retry.again().await {
                break found;
            }
        };
        if let Err(OssError::Corrupt(_)) = &found {
            self.note_corruption(key);
        }
        found
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Changes one version's record in place (tags, retention, legal hold) through `f`,
    /// which sees the bucket record and may refuse. Returns the updated record.
    pub(crate) async fn update_version<F>(
        &self,
        bucket: &str,
        key: &str,
        selector: Option<VersionSelector>,
        f: F,
    ) -> Result<ObjectRecord, OssError>
    where
        F: Fn(&BucketRecord, &mut ObjectRecord, i64) -> Result<(), OssError>
            + Send
            + Sync
            + 'static,
    {
        self.update_version_with(bucket, key, selector, f, WriteBatch::new(), None)
            .await
    }

    /// [`Self::update_version`] committing `extra` in the same batch and, with `event`, an
    /// event row of that S3 name.
    pub(crate) async fn update_version_with<F>(
        &self,
        bucket: &str,
        key: &str,
        selector: Option<VersionSelector>,
        f: F,
        extra: WriteBatch,
        event: Option<&'static str>,
    ) -> Result<ObjectRecord, OssError>
    where
        F: Fn(&BucketRecord, &mut ObjectRecord, i64) -> Result<(), OssError>
            + Send
            + Sync
            + 'static,
    {
        keys::validate_object_key(key)?;
        let f = Arc::new(f);
        let extra = Arc::new(extra);
        let mut retry = Retry::new();
        loop {
            let (b, k, f, extra) = (bucket.to_owned(), key.to_owned(), f.clone(), extra.clone());
            let ticket = event.map(|_| self.event_ids.next());
            let event_id = ticket.as_ref().map(|t| t.id);
            let planned = self
                .blocking(move |m, _| {
                    // One snapshot: the record, its bucket and where it lives agree.
                    let m = &m.snapshot()?;
                    let (mut rec, _) = resolve(m, &b, &k, selector)?;
                    let brec: BucketRecord = match m.get(Table::Buckets, &keys::bucket(&b))? {
                        Some(v) => records::decode(&v)?,
                        None => return Err(OssError::NoSuchBucket),
                    };
                    let okey = keys::object(&b, &k);
                    // Where the record lives: `objects` for the current version.
                    let (table, row_key, old) = match m.get(Table::Objects, &okey)? {
                        Some(cur)
                            if records::decode::<ObjectRecord>(&cur)?.version == rec.version =>
                        {
                            (Table::Objects, okey, cur)
                        }
                        _ => {
                            let vk = keys::version(&b, &k, rec.version);
                            let Some(old) = m.get(Table::Versions, &vk)? else {
                                return Err(OssError::Busy);
                            };
                            (Table::Versions, vk, old)
                        }
                    };
                    f(&brec, &mut rec, now_millis())?;
                    let value = if table == Table::Objects {
                        records::encode(&rec)?
                    } else {
                        records::encode(&VersionRow::Object(Box::new(rec.clone())))?
                    };
                    let mut batch = WriteBatch::new();
                    batch
                        .check_value(table, row_key.clone(), Some(old))
                        .put(table, row_key, value);
                    batch.checks.extend(extra.checks.iter().cloned());
                    batch.mutations.extend(extra.mutations.iter().cloned());
                    if let (Some(name), Some(id)) = (event, event_id) {
                        let version_id = match brec.versioning {
                            crate::records::Versioning::Unversioned => None,
                            _ if rec.null_version => Some("null".to_owned()),
                            _ => Some(rec.version.render()),
                        };
                        events::updated(&mut batch, id, &b, &k, name, &rec, version_id)?;
                    }
                    Ok((batch, rec))
                })
                .await;
            let (batch, rec) = match planned {
                Err(OssError::Busy) if retry.again().await => continue,
                other => other?,
            };
            match self.commit_event(batch, ticket).await {
                Ok(_) => return Ok(rec),
                Err(MetaError::Conflict(_)) if retry.again().await => continue,
                Err(MetaError::Conflict(_)) => return Err(OssError::Busy),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether an `update_version_with` failed only because the version changed or went away
/// after the caller read it (background workers then skip it).
pub(crate) fn changed_meanwhile(e: &OssError) -> bool {
    matches!(
        e,
        OssError::PreconditionFailed
            | OssError::NoSuchVersion
            | OssError::NoSuchKey
            | OssError::DeleteMarker { .. }
    )
}

/// Reads the bucket, and the version `selector` names (the current one when `None`).
fn resolve<R: MetaRead + ?Sized>(
    m: &R,
    bucket: &str,
    key: &str,
    selector: Option<VersionSelector>,
) -> Result<(ObjectRecord, bool), OssError> {
    let okey = keys::object(bucket, key);
    // The bucket, the current version and the head in one read (one round trip on a
    // networked engine): a plain GET needs nothing more.
    let [brec, cur_bytes, head_bytes] = read_key_rows(m, &keys::bucket(bucket), &okey)?;
    let brec: BucketRecord = match brec {
        Some(b) => records::BUCKETS.decode(&b)?,
        None => return Err(OssError::NoSuchBucket),
    };
    let versioned = brec.versioning != Versioning::Unversioned;
    let current = || -> Result<Option<ObjectRecord>, OssError> {
        cur_bytes
            .as_deref()
            .map(|b| records::OBJECTS.decode(b))
            .transpose()
    };
    let head = || -> Result<Option<KeyHead>, OssError> {
        head_bytes.as_deref().map(records::decode).transpose()
    };
    let marker_error = |mk: &MarkerRecord, by_version: bool| OssError::DeleteMarker {
        version_id: if mk.null_version {
            "null".into()
        } else {
            mk.version.render()
        },
        last_modified_ms: mk.last_modified_ms,
        by_version,
    };
    let target = match selector {
        None => {
            if let Some(r) = current()? {
                return Ok((r, versioned));
            }
            // Not found: say so with the marker's headers when a delete marker is current.
            let Some(h) = head()? else {
                return Err(OssError::NoSuchKey);
            };
            match m.get(Table::Versions, &keys::version(bucket, key, h.newest))? {
                Some(v) => match records::decode::<VersionRow>(&v)? {
                    VersionRow::Marker(mk) => return Err(marker_error(&mk, false)),
                    _ => return Err(OssError::NoSuchKey),
                },
                None => return Err(OssError::NoSuchKey),
            }
        }
        Some(VersionSelector::Id(v)) => v,
        Some(VersionSelector::Null) => match head()?.and_then(|h| h.null) {
            Some(v) => v,
            None => return Err(OssError::NoSuchVersion),
        },
    };
    let Some(row) = m.get(Table::Versions, &keys::version(bucket, key, target))? else {
        return Err(OssError::NoSuchVersion);
    };
    match records::decode::<VersionRow>(&row)? {
        VersionRow::Object(r) => Ok((*r, versioned)),
        VersionRow::Marker(mk) => Err(marker_error(&mk, true)),
        VersionRow::Current => match current()? {
            Some(r) if r.version == target => Ok((r, versioned)),
            // The row and `objects` were read in two transactions and a write came between.
            _ => Err(OssError::Busy),
        },
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Runs `f` against the rows every plan and read of a key starts from (the bucket, the
    /// key's current version and its head), read together without a transaction and
    /// without parking this thread (one statement on a networked engine); when `f` wants
    /// any other row, its answer is thrown away and it runs again against a snapshot. A
    /// plain GET, and a PUT of a new key or over an unversioned one, decide on those rows
    /// alone, so they cost one statement instead of a transaction's three.
    async fn first_read_or_snapshot<T>(
        &self,
        bucket: &str,
        key: &str,
        f: impl Fn(&dyn MetaRead) -> Result<T, OssError>,
    ) -> Result<T, OssError> {
        let bkey = keys::bucket(bucket);
        let okey = keys::object(bucket, key);
        let reads = key_rows(&bkey, &okey);
        let rows = self.meta.get_many_async(&reads).await?;
        let first = FirstRows {
            reads: &reads,
            rows,
            wanted_more: std::cell::Cell::new(false),
        };
        let answer = f(&first);
        if !first.wanted_more.get() {
            return answer;
        }
        self.point_read(|m| f(&m.snapshot()?))
    }
}

/// See [`ObjectService::first_read_or_snapshot`]: answers the rows read first, which agree
/// with each other (one read), and refuses any other, which would not agree with them.
struct FirstRows<'a> {
    reads: &'a [(Table, &'a [u8]); 3],
    rows: Vec<Option<Vec<u8>>>,
    wanted_more: std::cell::Cell<bool>,
}

impl FirstRows<'_> {
    fn more(&self) -> MetaError {
        self.wanted_more.set(true);
        MetaError::Conflict("a further read needs a snapshot".into())
    }
}

impl MetaRead for FirstRows<'_> {
    fn get(&self, _: Table, _: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        Err(self.more())
    }

    fn get_many(&self, reads: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        if reads == self.reads.as_slice() {
            return Ok(self.rows.clone());
        }
        Err(self.more())
    }

    fn scan(
        &self,
        _: Table,
        _: &[u8],
        _: Option<&[u8]>,
        _: usize,
    ) -> Result<Vec<feiyun_meta::KvPair>, MetaError> {
        Err(self.more())
    }
}

fn key_rows<'a>(bkey: &'a [u8], okey: &'a [u8]) -> [(Table, &'a [u8]); 3] {
    [
        (Table::Buckets, bkey),
        (Table::Objects, okey),
        (Table::Heads, okey),
    ]
}

/// The bucket's record, and the key's `objects` and `heads` rows.
fn read_key_rows<R: MetaRead + ?Sized>(
    m: &R,
    bkey: &[u8],
    okey: &[u8],
) -> Result<[Option<Vec<u8>>; 3], OssError> {
    let rows = m.get_many(&key_rows(bkey, okey))?;
    rows.try_into()
        .map_err(|_| OssError::Internal("a metadata read answered the wrong number of rows".into()))
}

type Planned = (Option<Plan>, Applied);

/// What a change planned again inside its commit came to; its event id's ticket is held
/// until the commit has finished (the engine drops the plan, and this, after it).
pub(crate) struct Replanned {
    freed: bool,
    applied: Applied,
    _ticket: events::Ticket,
}

fn slot<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The event row of an applied change.
fn record_event(
    batch: &mut WriteBatch,
    event_id: u64,
    bucket: &str,
    key: &str,
    cause: EventCause,
    change: &Change,
    applied: &Applied,
) -> Result<(), OssError> {
    match (change, &applied.record) {
        (Change::Put { .. }, Some(rec)) => events::created(
            batch,
            event_id,
            bucket,
            key,
            cause,
            rec,
            applied.version_id.clone(),
        ),
        _ => events::removed(
            batch,
            event_id,
            bucket,
            key,
            cause,
            applied.delete_marker
                && matches!(change, Change::DeleteCurrent | Change::ReplicaMarker(_)),
            applied.version_id.clone(),
        ),
    }
}

fn plan<R: MetaRead + ?Sized>(
    m: &R,
    bucket: &str,
    key: &str,
    change: &Change,
    extra: &WriteBatch,
    now_ms: i64,
) -> Result<Planned, OssError> {
    let bkey = keys::bucket(bucket);
    let okey = keys::object(bucket, key);
    // The rows every change decides on, in one read (one round trip on a networked engine).
    let [brec, cur_bytes, head_bytes] = read_key_rows(m, &bkey, &okey)?;
    let brec: BucketRecord = match brec {
        Some(b) => records::BUCKETS.decode(&b)?,
        None => return Err(OssError::NoSuchBucket),
    };
    let cur: Option<ObjectRecord> = cur_bytes.as_deref().map(records::decode).transpose()?;
    let head: Option<KeyHead> = head_bytes.as_deref().map(records::decode).transpose()?;
    let mut p = Plan {
        batch: extra.clone(),
        freed: false,
    };
    p.batch
        .check_present(Table::Buckets, bkey)
        .check_value(Table::Objects, okey.clone(), cur_bytes)
        .check_value(Table::Heads, okey.clone(), head_bytes);
    let versioned = brec.versioning != Versioning::Unversioned;
    let newest = head.map(|h| h.newest);
    // In live migration a key deleted here must not be read through from the legacy store
    // again, even when it was never fetched: the delete leaves a tombstone in its commit.
    let tombstone = brec.live.is_some()
        && matches!(change, Change::DeleteCurrent | Change::DeleteVersion { .. });
    if tombstone {
        p.batch.put(
            Table::BucketConfigs,
            crate::live::tomb_key(bucket, key),
            Vec::new(),
        );
    }
    match change {
        Change::Put { record, pending }
            if record.replication == Some(ReplicationState::Replica) =>
        {
            let mut rec = (**record).clone();
            lock::check_new_version(&brec, &rec, now_ms)?;
            rec.null_version = false;
            let v = rec.version;
            let Some(mut p) = plan_replica(m, p, &brec, bucket, key, v)? else {
                return Ok((None, duplicate(v, false, Some(rec))));
            };
            if newest.is_none_or(|n| v > n) {
                if let Some(c) = &cur {
                    demote(&mut p, bucket, key, c)?;
                }
                p.batch
                    .put(Table::Objects, okey.clone(), records::encode(&rec)?)
                    .put(
                        Table::Versions,
                        keys::version(bucket, key, v),
                        records::encode(&VersionRow::Current)?,
                    )
                    .put(
                        Table::Heads,
                        okey,
                        records::encode(&KeyHead {
                            newest: v,
                            null: head.and_then(|h| h.null),
                        })?,
                    );
            } else {
                // An older version than the key's newest: it lands among the noncurrent ones.
                p.batch.put(
                    Table::Versions,
                    keys::version(bucket, key, v),
                    records::encode(&VersionRow::Object(Box::new(rec.clone())))?,
                );
            }
            for id in pending {
                // Still pending: an abandoned request's guard has not taken it back.
                p.batch
                    .check_present(Table::PendingBlobs, id.to_bytes().to_vec())
                    .delete(Table::PendingBlobs, id.to_bytes().to_vec());
            }
            let applied = Applied {
                version_id: Some(v.render()),
                delete_marker: false,
                record: Some(rec),
                duplicate: false,
            };
            Ok((Some(p), applied))
        }
        Change::ReplicaMarker(marker) => {
            let v = marker.version;
            let Some(mut p) = plan_replica(m, p, &brec, bucket, key, v)? else {
                return Ok((None, duplicate(v, true, None)));
            };
            let mut marker = marker.clone();
            marker.null_version = false;
            marker.replica = true;
            if newest.is_none_or(|n| v > n) {
                if let Some(c) = &cur {
                    demote(&mut p, bucket, key, c)?;
                    p.batch.delete(Table::Objects, okey.clone());
                }
                p.batch.put(
                    Table::Heads,
                    okey,
                    records::encode(&KeyHead {
                        newest: v,
                        null: head.and_then(|h| h.null),
                    })?,
                );
            }
            p.batch.put(
                Table::Versions,
                keys::version(bucket, key, v),
                records::encode(&VersionRow::Marker(marker))?,
            );
            let mut applied = duplicate(v, true, None);
            applied.duplicate = false;
            Ok((Some(p), applied))
        }
        Change::Put { record, pending } => {
            let v = VersionId::next_after(newest);
            let mut rec = (**record).clone();
            lock::check_new_version(&brec, &rec, now_ms)?;
            // A client's write: pending for every destination a rule sends it to.
            rec.replication = brec
                .replication
                .as_ref()
                .and_then(|c| c.initial_state(key, &rec.tags));
            rec.version = v;
            rec.null_version = brec.versioning != Versioning::Enabled;
            if brec.object_lock
                && rec.retention.is_none()
                && let Some(d) = brec.default_retention
            {
                rec.retention = Some(lock::default_until(d, rec.last_modified_ms));
            }
            let mut cur_gone = false;
            if rec.null_version {
                cur_gone = drop_null(m, &mut p, bucket, key, head, cur.as_ref(), now_ms)?;
            }
            if let Some(c) = &cur
                && !cur_gone
            {
                demote(&mut p, bucket, key, c)?;
            }
            p.batch
                .put(Table::Objects, okey.clone(), records::encode(&rec)?);
            p.batch.put(
                Table::Versions,
                keys::version(bucket, key, v),
                records::encode(&VersionRow::Current)?,
            );
            let new_head = KeyHead {
                newest: v,
                null: if rec.null_version {
                    Some(v)
                } else {
                    head.and_then(|h| h.null)
                },
            };
            p.batch.put(Table::Heads, okey, records::encode(&new_head)?);
            for id in pending {
                // Still pending: an abandoned request's guard has not taken it back.
                p.batch
                    .check_present(Table::PendingBlobs, id.to_bytes().to_vec())
                    .delete(Table::PendingBlobs, id.to_bytes().to_vec());
            }
            let applied = Applied {
                version_id: versioned.then(|| rec.version_label()),
                delete_marker: false,
                record: Some(rec),
                duplicate: false,
            };
            Ok((Some(p), applied))
        }
        Change::DeleteCurrent => match brec.versioning {
            Versioning::Unversioned => {
                let Some(c) = &cur else {
                    return Ok((tombstone.then_some(p), Applied::default()));
                };
                lock::check_removal(c, false, now_ms)?;
                p.garbage(c);
                p.batch
                    .delete(Table::Objects, okey.clone())
                    .delete(Table::Versions, keys::version(bucket, key, c.version))
                    .delete(Table::Heads, okey);
                Ok((Some(p), Applied::default()))
            }
            Versioning::Enabled | Versioning::Suspended => {
                let v = VersionId::next_after(newest);
                let null = brec.versioning == Versioning::Suspended;
                let mut cur_gone = false;
                if null {
                    cur_gone = drop_null(m, &mut p, bucket, key, head, cur.as_ref(), now_ms)?;
                }
                if let Some(c) = &cur {
                    if !cur_gone {
                        demote(&mut p, bucket, key, c)?;
                    }
                    p.batch.delete(Table::Objects, okey.clone());
                }
                let marker = MarkerRecord {
                    version: v,
                    null_version: null,
                    last_modified_ms: now_ms,
                    replica: false,
                };
                p.batch.put(
                    Table::Versions,
                    keys::version(bucket, key, v),
                    records::encode(&VersionRow::Marker(marker))?,
                );
                let new_head = KeyHead {
                    newest: v,
                    null: if null {
                        Some(v)
                    } else {
                        head.and_then(|h| h.null)
                    },
                };
                p.batch.put(Table::Heads, okey, records::encode(&new_head)?);
                let applied = Applied {
                    version_id: Some(if null { "null".into() } else { v.render() }),
                    delete_marker: true,
                    record: None,
                    duplicate: false,
                };
                Ok((Some(p), applied))
            }
        },
        Change::DeleteVersion {
            selector,
            bypass_governance,
        } => {
            // Deleting a version that does not exist succeeds and echoes the id, as S3 does.
            let nothing = Applied {
                version_id: Some(selector.render()),
                delete_marker: false,
                record: None,
                duplicate: false,
            };
            let target = match selector {
                VersionSelector::Null => head.and_then(|h| h.null),
                VersionSelector::Id(v) => Some(*v),
            };
            let (Some(t), Some(mut new_head)) = (target, head) else {
                return Ok((None, nothing));
            };
            let vkey = keys::version(bucket, key, t);
            let Some(row_bytes) = m.get(Table::Versions, &vkey)? else {
                return Ok((None, nothing));
            };
            p.batch
                .check_value(Table::Versions, vkey.clone(), Some(row_bytes.clone()));
            let mut delete_marker = false;
            match records::decode::<VersionRow>(&row_bytes)? {
                VersionRow::Current => {
                    let c = cur
                        .as_ref()
                        .filter(|c| c.version == t)
                        .ok_or_else(|| OssError::Corrupt("current version row".into()))?;
                    lock::check_removal(c, *bypass_governance, now_ms)?;
                    p.garbage(c);
                    p.batch.delete(Table::Objects, okey.clone());
                }
                VersionRow::Object(r) => {
                    lock::check_removal(&r, *bypass_governance, now_ms)?;
                    p.garbage(&r);
                }
                VersionRow::Marker(_) => delete_marker = true,
            }
            p.batch.delete(Table::Versions, vkey.clone());
            if new_head.null == Some(t) {
                new_head.null = None;
            }
            let mut head_gone = false;
            if new_head.newest == t {
                // The newest version goes: the next one (if any) becomes current.
                let mut after = vkey;
                after.push(0);
                let end = prefix_end(&keys::key_versions(bucket, key));
                let next = m.scan(Table::Versions, &after, end.as_deref(), 1)?;
                match next.into_iter().next() {
                    Some((nk, nv)) => {
                        p.batch
                            .check_value(Table::Versions, nk.clone(), Some(nv.clone()));
                        new_head.newest = keys::parse_version(bucket, &nk)?.1;
                        match records::decode::<VersionRow>(&nv)? {
                            VersionRow::Object(r) => {
                                p.batch
                                    .put(Table::Objects, okey.clone(), records::encode(&r)?)
                                    .put(
                                        Table::Versions,
                                        nk,
                                        records::encode(&VersionRow::Current)?,
                                    );
                            }
                            VersionRow::Marker(_) => {}
                            VersionRow::Current => {
                                return Err(OssError::Corrupt("two current versions".into()));
                            }
                        }
                    }
                    None => head_gone = true,
                }
            }
            if head_gone {
                p.batch.delete(Table::Heads, okey);
            } else {
                p.batch.put(Table::Heads, okey, records::encode(&new_head)?);
            }
            let applied = Applied {
                version_id: Some(selector.render()),
                delete_marker,
                record: None,
                duplicate: false,
            };
            Ok((Some(p), applied))
        }
    }
}

/// Checks that `bucket` may take a replica with version `v`: versioning enabled, and the
/// version not already present (`None`: a replica delivered twice, nothing to do).
fn plan_replica<R: MetaRead + ?Sized>(
    m: &R,
    mut p: Plan,
    brec: &BucketRecord,
    bucket: &str,
    key: &str,
    v: VersionId,
) -> Result<Option<Plan>, OssError> {
    if brec.versioning != Versioning::Enabled {
        return Err(OssError::InvalidRequest(
            "Versioning must be 'Enabled' on the destination bucket to receive replicas".into(),
        ));
    }
    let vkey = keys::version(bucket, key, v);
    if m.get(Table::Versions, &vkey)?.is_some() {
        return Ok(None);
    }
    p.batch.check_value(Table::Versions, vkey, None);
    Ok(Some(p))
}

fn duplicate(v: VersionId, delete_marker: bool, record: Option<ObjectRecord>) -> Applied {
    Applied {
        version_id: Some(v.render()),
        delete_marker,
        record,
        duplicate: true,
    }
}

/// Moves the current record from `objects` into its version row.
fn demote(p: &mut Plan, bucket: &str, key: &str, c: &ObjectRecord) -> Result<(), OssError> {
    p.batch.put(
        Table::Versions,
        keys::version(bucket, key, c.version),
        records::encode(&VersionRow::Object(Box::new(c.clone())))?,
    );
    Ok(())
}

/// Removes the key's `null` version, which a new null version replaces. Returns true when that
/// was the current object (whose `objects` row the caller then overwrites or deletes).
fn drop_null<R: MetaRead + ?Sized>(
    m: &R,
    p: &mut Plan,
    bucket: &str,
    key: &str,
    head: Option<KeyHead>,
    cur: Option<&ObjectRecord>,
    now_ms: i64,
) -> Result<bool, OssError> {
    let Some(n) = head.and_then(|h| h.null) else {
        return Ok(false);
    };
    let vkey = keys::version(bucket, key, n);
    if let Some(c) = cur.filter(|c| c.version == n) {
        lock::check_removal(c, false, now_ms)?;
        p.garbage(c);
        p.batch.delete(Table::Versions, vkey);
        return Ok(true);
    }
    let row = m.get(Table::Versions, &vkey)?;
    p.batch
        .check_value(Table::Versions, vkey.clone(), row.clone());
    if let Some(bytes) = row {
        match records::decode::<VersionRow>(&bytes)? {
            VersionRow::Object(r) => {
                lock::check_removal(&r, false, now_ms)?;
                p.garbage(&r);
            }
            VersionRow::Marker(_) => {}
            VersionRow::Current => return Err(OssError::Corrupt("null version row".into())),
        }
        p.batch.delete(Table::Versions, vkey);
    }
    Ok(false)
}

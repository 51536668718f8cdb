//! Point-in-time restore: bringing a bucket (or a prefix of it, or a copy in another bucket)
//! back to what it held at a moment, from its versions.
//!
//! The state at T of a key is its newest version or delete marker modified at or before T.
//! Restoring never rewrites history: a key whose state at T was a version gets a copy of that
//! version as its new current version (server-side, metadata and tags kept), and a key that
//! did not exist at T gets a delete marker (a plain delete in an unversioned target). Every
//! version written after T stays as a noncurrent version, so a restore can itself be undone,
//! and versions under Object Lock are never touched. Keys already in their state at T (the
//! same version, or the same ETag and size) are left alone, so running a restore twice changes
//! nothing the second time.
//!
//! The walk is the bucket's version listing, one key at a time, merged with the target's
//! current keys when the target is another bucket: memory stays bounded by one listing page.

use std::sync::Arc;

use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;
use futures::StreamExt;

use crate::copy::CopySource;
use crate::list::{ListEntry, ListParams, VersionEntry, VersionListParams};
use crate::put::{ObjectHeaders, WriteSpec};
use crate::records::{ObjectRecord, VersionId};
use crate::versions::VersionSelector;
use crate::{MAX_PUT_SIZE, ObjectService, OssError};

/// Changes listed in a report; the counts cover all of them.
pub const MAX_LISTED: usize = 10_000;
const PAGE: usize = 1000;
/// Copies and deletes in flight at once.
const CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub bucket: String,
    /// Milliseconds since the epoch.
    pub to_time_ms: i64,
    pub prefix: String,
    /// Where the state at T is written (the bucket itself when `None`).
    pub target: Option<String>,
    /// Only report what would change.
    pub dry_run: bool,
}

/// One key's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreChange {
    /// The key gets version `version` of the source back.
    Restore {
        key: String,
        version: VersionId,
        size: u64,
    },
    /// The key did not exist at T.
    Delete { key: String },
    /// The key cannot be restored (why).
    Skip { key: String, reason: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub keys: u64,
    pub restored: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub bytes: u64,
    /// Applying a change failed (the first errors are in `changes` as `Skip`).
    pub failed: u64,
    /// The first [`MAX_LISTED`] changes.
    pub changes: Vec<RestoreChange>,
}

impl RestoreReport {
    fn list(&mut self, c: RestoreChange) {
        if self.changes.len() < MAX_LISTED {
            self.changes.push(c);
        }
    }
}

/// What a key should hold and what it holds.
struct KeyPlan {
    key: String,
    want: Option<ObjectRecord>,
    have: Option<ObjectRecord>,
}

/// A key's state at `t` from its versions and markers: the one modified last at or before
/// `t` (ties: the greater id), `None` when that is a marker or nothing.
fn state_at(entries: &[VersionEntry], t: i64) -> Option<ObjectRecord> {
    let mut best: Option<(i64, VersionId, Option<&ObjectRecord>)> = None;
    for e in entries {
        let (at, id, rec) = match e {
            VersionEntry::Version { record, .. } => (
                record.last_modified_ms,
                record.version,
                Some(record.as_ref()),
            ),
            VersionEntry::Marker { marker, .. } => (marker.last_modified_ms, marker.version, None),
            VersionEntry::CommonPrefix(_) => continue,
        };
        if at <= t
            && best
                .as_ref()
                .is_none_or(|(bt, bid, _)| (at, id) > (*bt, *bid))
        {
            best = Some((at, id, rec));
        }
    }
    best.and_then(|(_, _, r)| r.cloned())
}

/// The current state: the latest entry, if it is a version.
fn current(entries: &[VersionEntry]) -> Option<ObjectRecord> {
    entries.iter().find_map(|e| match e {
        VersionEntry::Version {
            record,
            latest: true,
            ..
        } => Some(record.as_ref().clone()),
        _ => None,
    })
}

fn entry_key(e: &VersionEntry) -> &str {
    match e {
        VersionEntry::Version { key, .. } | VersionEntry::Marker { key, .. } => key,
        VersionEntry::CommonPrefix(p) => p,
    }
}

fn same_content(a: &ObjectRecord, b: &ObjectRecord) -> bool {
    a.version == b.version || (a.etag == b.etag && a.size == b.size)
}

/// The target bucket's current objects, read page by page in key order.
struct TargetKeys {
    bucket: String,
    prefix: String,
    buffered: std::collections::VecDeque<(String, ObjectRecord)>,
    after: Option<String>,
    done: bool,
}

impl TargetKeys {
    async fn fill<M: MetaStore, B: BlobStore>(
        &mut self,
        oss: &Arc<ObjectService<M, B>>,
    ) -> Result<(), OssError> {
        if !self.buffered.is_empty() || self.done {
            return Ok(());
        }
        let page = oss
            .list_objects(
                &self.bucket,
                ListParams {
                    prefix: self.prefix.clone(),
                    delimiter: None,
                    after: self.after.clone(),
                    max_keys: PAGE,
                },
            )
            .await?;
        self.done = !page.is_truncated;
        for e in page.entries {
            if let ListEntry::Object(k, r) = e {
                self.after = Some(k.clone());
                self.buffered.push_back((k, r));
            }
        }
        if self.buffered.is_empty() {
            self.done = true;
        }
        Ok(())
    }

    /// Target keys before `key` (they did not exist at T), then `key`'s own record.
    async fn up_to<M: MetaStore, B: BlobStore>(
        &mut self,
        oss: &Arc<ObjectService<M, B>>,
        key: Option<&str>,
        extra: &mut Vec<KeyPlan>,
    ) -> Result<Option<ObjectRecord>, OssError> {
        loop {
            self.fill(oss).await?;
            let Some((k, _)) = self.buffered.front() else {
                return Ok(None);
            };
            match key.map(|key| k.as_str().cmp(key)) {
                Some(std::cmp::Ordering::Greater) => return Ok(None),
                Some(std::cmp::Ordering::Equal) => {
                    return Ok(self.buffered.pop_front().map(|(_, r)| r));
                }
                _ => {
                    if let Some((k, r)) = self.buffered.pop_front() {
                        extra.push(KeyPlan {
                            key: k,
                            want: None,
                            have: Some(r),
                        });
                    }
                }
            }
        }
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Restores `req.bucket` (under `req.prefix`) as it was at `req.to_time_ms`, into itself
    /// or `req.target`; with `dry_run`, only reports what would change.
    pub async fn restore_to_time(
        self: &Arc<Self>,
        req: &RestoreRequest,
    ) -> Result<RestoreReport, OssError> {
        self.require_bucket(&req.bucket).await?;
        let target = req.target.clone().unwrap_or_else(|| req.bucket.clone());
        let elsewhere = target != req.bucket;
        if elsewhere {
            self.require_bucket(&target).await?;
        }
        let mut report = RestoreReport::default();
        let mut theirs = elsewhere.then(|| TargetKeys {
            bucket: target.clone(),
            prefix: req.prefix.clone(),
            buffered: Default::default(),
            after: None,
            done: false,
        });
        let mut marker: Option<(String, Option<VersionSelector>)> = None;
        let mut group: Vec<VersionEntry> = Vec::new();
        loop {
            let page = self
                .list_object_versions(
                    &req.bucket,
                    VersionListParams {
                        prefix: req.prefix.clone(),
                        delimiter: None,
                        key_marker: marker.as_ref().map(|m| m.0.clone()),
                        version_marker: marker.as_ref().and_then(|m| m.1),
                        max_keys: PAGE,
                    },
                )
                .await?;
            let mut plans = Vec::new();
            for e in page.entries {
                if group.first().is_some_and(|g| entry_key(g) != entry_key(&e)) {
                    let done = std::mem::take(&mut group);
                    self.plan_key(req, done, theirs.as_mut(), &mut plans)
                        .await?;
                }
                group.push(e);
            }
            let last = !page.is_truncated;
            if last && !group.is_empty() {
                let done = std::mem::take(&mut group);
                self.plan_key(req, done, theirs.as_mut(), &mut plans)
                    .await?;
            }
            if last && let Some(t) = theirs.as_mut() {
                t.up_to(self, None, &mut plans).await?;
            }
            self.apply_plans(req, &target, plans, &mut report).await;
            if last {
                return Ok(report);
            }
            marker = match page.next_key_marker {
                Some(k) => Some((
                    k,
                    page.next_version_marker
                        .as_deref()
                        .map(VersionSelector::parse)
                        .transpose()?,
                )),
                None => return Ok(report),
            };
        }
    }

    async fn plan_key(
        self: &Arc<Self>,
        req: &RestoreRequest,
        entries: Vec<VersionEntry>,
        theirs: Option<&mut TargetKeys>,
        plans: &mut Vec<KeyPlan>,
    ) -> Result<(), OssError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let key = entry_key(first).to_owned();
        let want = state_at(&entries, req.to_time_ms);
        let have = match theirs {
            Some(t) => t.up_to(self, Some(&key), plans).await?,
            None => current(&entries),
        };
        plans.push(KeyPlan { key, want, have });
        Ok(())
    }

    async fn apply_plans(
        self: &Arc<Self>,
        req: &RestoreRequest,
        target: &str,
        plans: Vec<KeyPlan>,
        report: &mut RestoreReport,
    ) {
        let mut work = Vec::new();
        for p in plans {
            report.keys += 1;
            let change = match (&p.want, &p.have) {
                (Some(w), Some(h)) if same_content(w, h) => None,
                (Some(w), _) if matches!(w.sse(), Some(crate::sse::SseMode::Customer { .. })) => {
                    Some(RestoreChange::Skip {
                        key: p.key.clone(),
                        reason: "SSE-C: the region does not keep the customer's key".into(),
                    })
                }
                (Some(w), _) if w.size > MAX_PUT_SIZE => Some(RestoreChange::Skip {
                    key: p.key.clone(),
                    reason: "over 5 GiB: copy it with UploadPartCopy".into(),
                }),
                (Some(w), _) => Some(RestoreChange::Restore {
                    key: p.key.clone(),
                    version: w.version,
                    size: w.size,
                }),
                (None, Some(_)) => Some(RestoreChange::Delete { key: p.key.clone() }),
                (None, None) => None,
            };
            match change {
                None => report.unchanged += 1,
                Some(c) => {
                    match &c {
                        RestoreChange::Restore { size, .. } => {
                            report.restored += 1;
                            report.bytes += size;
                        }
                        RestoreChange::Delete { .. } => report.deleted += 1,
                        RestoreChange::Skip { .. } => report.skipped += 1,
                    }
                    if !req.dry_run && !matches!(c, RestoreChange::Skip { .. }) {
                        work.push((c.clone(), p.want));
                    }
                    report.list(c);
                }
            }
        }
        let results: Vec<(RestoreChange, Result<(), OssError>)> = futures::stream::iter(work)
            .map(|(c, want)| async move {
                let r = self.apply_change_for_restore(req, target, &c, want).await;
                (c, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (c, r) in results {
            if let Err(e) = r {
                report.failed += 1;
                let key = match c {
                    RestoreChange::Restore { key, .. }
                    | RestoreChange::Delete { key }
                    | RestoreChange::Skip { key, .. } => key,
                };
                report.list(RestoreChange::Skip {
                    key,
                    reason: format!("failed: {e}"),
                });
            }
        }
    }

    async fn apply_change_for_restore(
        self: &Arc<Self>,
        req: &RestoreRequest,
        target: &str,
        change: &RestoreChange,
        want: Option<ObjectRecord>,
    ) -> Result<(), OssError> {
        match (change, want) {
            (RestoreChange::Restore { key, version, .. }, Some(w)) => {
                let src = CopySource {
                    bucket: req.bucket.clone(),
                    key: key.clone(),
                    version: Some(VersionSelector::Id(*version)),
                    conditions: Default::default(),
                    customer: None,
                    key_check: None,
                };
                // The version's own metadata and tags (COPY); its storage class too. Lock
                // settings come from the target's default, as for any new version.
                let settings = ObjectHeaders {
                    storage_class: w.storage_class.clone(),
                    ..Default::default()
                };
                self.copy_object(
                    &src,
                    target,
                    key,
                    None,
                    (settings, false),
                    WriteSpec::default(),
                )
                .await
                .map(|_| ())
            }
            (RestoreChange::Delete { key }, _) => self
                .delete_object(target, key, None, false)
                .await
                .map(|_| ()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: u128, at: i64, latest: bool) -> VersionEntry {
        VersionEntry::Version {
            key: "k".into(),
            record: Box::new(ObjectRecord {
                version: VersionId(id),
                last_modified_ms: at,
                ..crate::records::tests::sample()
            }),
            latest,
        }
    }

    fn marker(id: u128, at: i64, latest: bool) -> VersionEntry {
        VersionEntry::Marker {
            key: "k".into(),
            marker: crate::records::MarkerRecord {
                version: VersionId(id),
                null_version: false,
                last_modified_ms: at,
                replica: false,
            },
            latest,
        }
    }

    #[test]
    fn the_state_at_a_time_is_the_last_change_before_it() {
        // Newest first, as listed: a marker at 300, versions at 200 and 100.
        let entries = vec![
            marker(3, 300, true),
            version(2, 200, false),
            version(1, 100, false),
        ];
        assert_eq!(state_at(&entries, 50), None);
        assert_eq!(
            state_at(&entries, 100).map(|r| r.version),
            Some(VersionId(1))
        );
        assert_eq!(
            state_at(&entries, 250).map(|r| r.version),
            Some(VersionId(2))
        );
        assert_eq!(state_at(&entries, 300), None);
        assert_eq!(current(&entries), None);
        // Two changes in the same millisecond: the greater id is the later.
        let tie = vec![version(5, 100, true), version(4, 100, false)];
        assert_eq!(state_at(&tie, 100).map(|r| r.version), Some(VersionId(5)));
        assert_eq!(current(&tie).map(|r| r.version), Some(VersionId(5)));
    }
}

//! Lifecycle: the bucket configuration (validated as S3 validates it) and the worker that
//! applies it.
//!
//! The worker walks each configured bucket key by key through the `heads` table, in pages,
//! with no lock held between pages; every action is an ordinary [`Change`] through
//! `apply_change`, so it races safely with clients, and Object Lock refuses it exactly as it
//! would refuse a client (the version is then skipped and counted). A run starts from the
//! beginning each time and every action is idempotent, so a crash mid-run loses nothing and
//! the next run finishes the work. Lifecycle "days" are `day_ms` long: a day in production,
//! seconds in tests.

use std::sync::atomic::Ordering;

use feiyun_blob::BlobStore;
use feiyun_meta::{MetaStore, Table, prefix_end};
use serde::{Deserialize, Serialize};

use crate::records::{self, ObjectRecord, VersionId, VersionRow};
use crate::transition::class_rank;
use crate::versions::{Change, VersionSelector};
use crate::{ObjectService, OssError, keys, now_millis};

const CONFIG: &str = "lifecycle";
const MAX_RULES: usize = 1000;
const MAX_ID_LEN: usize = 255;
/// Keys examined per page of the worker's walk.
const KEYS_PER_PAGE: usize = 500;
/// Versions of one key examined per run; a key with more is finished by later runs.
const VERSIONS_PER_KEY: usize = 10_000;
const DAY_MS: i64 = 86_400_000;
/// S3's default (`all_storage_classes_128K`): smaller objects are not transitioned unless a
/// rule's own size filter says otherwise.
const MIN_TRANSITION_SIZE: u64 = 128 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleConfig {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    pub filter: Filter,
    pub expiration: Option<Expiration>,
    pub noncurrent_expiration: Option<NoncurrentExpiration>,
    pub abort_multipart_days: Option<u32>,
    #[serde(default)]
    pub transitions: Vec<Transition>,
    #[serde(default)]
    pub noncurrent_transitions: Vec<NoncurrentTransition>,
}

/// Move current versions to a storage class after `days` since creation or from `date_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub days: Option<u32>,
    pub date_ms: Option<i64>,
    pub storage_class: String,
}

/// Move noncurrent versions to a storage class `days` after they became noncurrent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoncurrentTransition {
    pub days: u32,
    pub newer_noncurrent_versions: Option<u32>,
    pub storage_class: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub prefix: String,
    pub tags: Vec<(String, String)>,
    pub size_greater_than: Option<u64>,
    pub size_less_than: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiration {
    pub days: Option<u32>,
    /// Midnight UTC, in ms.
    pub date_ms: Option<i64>,
    pub expired_object_delete_marker: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoncurrentExpiration {
    pub days: u32,
    pub newer_noncurrent_versions: Option<u32>,
}

/// What one run of the worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleReport {
    pub expired: u64,
    pub noncurrent_expired: u64,
    pub markers_removed: u64,
    pub uploads_aborted: u64,
    pub skipped_locked: u64,
    pub transitioned: u64,
}

fn invalid(m: impl Into<String>) -> OssError {
    OssError::InvalidArgument(m.into())
}

impl Rule {
    fn may_transition(&self, size: u64) -> bool {
        size >= MIN_TRANSITION_SIZE
            || self.filter.size_greater_than.is_some()
            || self.filter.size_less_than.is_some()
    }
}

impl Filter {
    fn matches(&self, key: &str, size: Option<u64>, tags: &[(String, String)]) -> bool {
        if !key.starts_with(&self.prefix) {
            return false;
        }
        if !self.tags.iter().all(|t| tags.contains(t)) {
            return false;
        }
        // A delete marker has no size: size filters never match it.
        match size {
            Some(s) => {
                self.size_greater_than.is_none_or(|g| s > g)
                    && self.size_less_than.is_none_or(|l| s < l)
            }
            None => self.size_greater_than.is_none() && self.size_less_than.is_none(),
        }
    }
}

impl LifecycleConfig {
    /// S3's rules for a configuration; the messages follow S3's where it has them.
    pub fn validate(&self) -> Result<(), OssError> {
        if self.rules.is_empty() || self.rules.len() > MAX_RULES {
            return Err(OssError::MalformedXml(format!(
                "a lifecycle configuration holds 1 to {MAX_RULES} rules"
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for r in &self.rules {
            if r.id.chars().count() > MAX_ID_LEN {
                return Err(invalid("ID length should not exceed allowed limit of 255"));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(invalid(
                    "Rule ID must be unique. Found same ID for more than one rule",
                ));
            }
            if r.expiration.is_none()
                && r.noncurrent_expiration.is_none()
                && r.abort_multipart_days.is_none()
                && r.transitions.is_empty()
                && r.noncurrent_transitions.is_empty()
            {
                return Err(invalid(
                    "At least one action needs to be specified in a rule",
                ));
            }
            crate::tagging::validate_tags(&r.filter.tags, crate::tagging::MAX_BUCKET_TAGS)?;
            if let (Some(g), Some(l)) = (r.filter.size_greater_than, r.filter.size_less_than)
                && g >= l
            {
                return Err(invalid(
                    "ObjectSizeGreaterThan must be less than ObjectSizeLessThan",
                ));
            }
            if let Some(e) = &r.expiration {
                let set = usize::from(e.days.is_some())
                    + usize::from(e.date_ms.is_some())
                    + usize::from(e.expired_object_delete_marker);
                if set != 1 {
                    return Err(OssError::MalformedXml(
                        "Expiration needs exactly one of Days, Date or ExpiredObjectDeleteMarker"
                            .into(),
                    ));
                }
                if e.days == Some(0) {
                    return Err(invalid(
                        "'Days' for Expiration action must be a positive integer",
                    ));
                }
                if e.date_ms.is_some_and(|d| d.rem_euclid(DAY_MS) != 0) {
                    return Err(invalid("'Date' must be at midnight GMT"));
                }
                if e.expired_object_delete_marker && !r.filter.tags.is_empty() {
                    return Err(invalid(
                        "ExpiredObjectDeleteMarker cannot be specified with tags",
                    ));
                }
            }
            if let Some(n) = &r.noncurrent_expiration {
                if n.days == 0 {
                    return Err(invalid(
                        "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer",
                    ));
                }
                if n.newer_noncurrent_versions
                    .is_some_and(|v| v == 0 || v > 100)
                {
                    return Err(invalid("NewerNoncurrentVersions must be between 1 and 100"));
                }
            }
            validate_transitions(r)?;
            if let Some(d) = r.abort_multipart_days {
                if d == 0 {
                    return Err(invalid(
                        "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer",
                    ));
                }
                if !r.filter.tags.is_empty() {
                    return Err(invalid(
                        "Tag-based filter cannot be used with AbortIncompleteMultipartUpload action",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn validate_transitions(r: &Rule) -> Result<(), OssError> {
    let mut classes = std::collections::HashSet::new();
    for t in &r.transitions {
        if usize::from(t.days.is_some()) + usize::from(t.date_ms.is_some()) != 1 {
            return Err(OssError::MalformedXml(
                "Transition needs exactly one of Days or Date".into(),
            ));
        }
        if t.date_ms.is_some_and(|d| d.rem_euclid(DAY_MS) != 0) {
            return Err(invalid("'Date' must be at midnight GMT"));
        }
        crate::transition::validate_transition(&t.storage_class, t.days)?;
        if !classes.insert(t.storage_class.as_str()) {
            return Err(invalid(
                "'StorageClass' must be different for 'Transition' actions in same 'Rule'",
            ));
        }
        if let (Some(td), Some(ed)) = (t.days, r.expiration.as_ref().and_then(|e| e.days))
            && ed <= td
        {
            return Err(invalid(
                "'Days' in the Expiration action must be greater than 'Days' in the Transition action",
            ));
        }
    }
    let days_based = r.transitions.iter().filter(|t| t.days.is_some()).count();
    if days_based != 0 && days_based != r.transitions.len() {
        return Err(invalid(
            "Found mixed 'Date' and 'Days' based Transition actions in lifecycle rule",
        ));
    }
    let mut classes = std::collections::HashSet::new();
    for t in &r.noncurrent_transitions {
        crate::transition::validate_transition(&t.storage_class, Some(t.days))?;
        if !classes.insert(t.storage_class.as_str()) {
            return Err(invalid(
                "'StorageClass' must be different for 'NoncurrentVersionTransition' actions in same 'Rule'",
            ));
        }
        if t.newer_noncurrent_versions
            .is_some_and(|v| v == 0 || v > 100)
        {
            return Err(invalid("NewerNoncurrentVersions must be between 1 and 100"));
        }
        if let Some(n) = &r.noncurrent_expiration
            && n.days <= t.days
        {
            return Err(invalid(
                "'NoncurrentDays' in the NoncurrentVersionExpiration action must be greater than 'NoncurrentDays' in the NoncurrentVersionTransition action",
            ));
        }
    }
    Ok(())
}

/// A version as the worker sees it.
struct Seen {
    id: VersionId,
    null: bool,
    /// `None` for a delete marker.
    record: Option<ObjectRecord>,
    created_ms: i64,
}

impl Seen {
    fn selector(&self) -> VersionSelector {
        if self.null {
            VersionSelector::Null
        } else {
            VersionSelector::Id(self.id)
        }
    }
}

/// The time a version was written, from its id (microseconds in the high half).
fn created_ms(id: VersionId) -> i64 {
    ((id.0 >> 64) as u64 / 1000) as i64
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    pub async fn put_lifecycle(
        &self,
        bucket: &str,
        config: Option<LifecycleConfig>,
    ) -> Result<(), OssError> {
        let value = match config {
            Some(c) => {
                c.validate()?;
                Some(records::encode(&c)?)
            }
            None => None,
        };
        self.set_bucket_config(bucket, CONFIG, value).await
    }

    /// The configuration, or `None` when the bucket has none.
    pub async fn lifecycle(&self, bucket: &str) -> Result<Option<LifecycleConfig>, OssError> {
        match self.bucket_config(bucket, CONFIG).await? {
            Some(v) => Ok(Some(records::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// One pass of the lifecycle worker over every bucket, at time `now_ms`.
    pub async fn run_lifecycle(&self, now_ms: i64) -> Result<LifecycleReport, OssError> {
        let mut report = LifecycleReport::default();
        for (bucket, _) in self.list_buckets().await? {
            let Some(config) = self.lifecycle(&bucket).await? else {
                continue;
            };
            let rules: Vec<Rule> = config.rules.into_iter().filter(|r| r.enabled).collect();
            if rules.is_empty() {
                continue;
            }
            self.lifecycle_bucket(&bucket, &rules, now_ms, &mut report)
                .await?;
            self.lifecycle_uploads(&bucket, &rules, now_ms, &mut report)
                .await?;
        }
        let s = &self.stats;
        s.lifecycle_expired.fetch_add(
            report.expired + report.noncurrent_expired,
            Ordering::Relaxed,
        );
        s.lifecycle_markers_removed
            .fetch_add(report.markers_removed, Ordering::Relaxed);
        s.lifecycle_uploads_aborted
            .fetch_add(report.uploads_aborted, Ordering::Relaxed);
        s.lifecycle_skipped_locked
            .fetch_add(report.skipped_locked, Ordering::Relaxed);
        s.lifecycle_transitioned
            .fetch_add(report.transitioned, Ordering::Relaxed);
        Ok(report)
    }

    async fn lifecycle_bucket(
        &self,
        bucket: &str,
        rules: &[Rule],
        now_ms: i64,
        report: &mut LifecycleReport,
    ) -> Result<(), OssError> {
        let day = self.config.lifecycle_day_ms;
        let base = keys::bucket_objects(bucket);
        let end = prefix_end(&base);
        let mut cursor = base.clone();
        loop {
            let (from, to) = (cursor.clone(), end.clone());
            let heads = self
                .blocking(move |m, _| {
                    Ok(m.scan(Table::Heads, &from, to.as_deref(), KEYS_PER_PAGE)?)
                })
                .await?;
            let Some(last) = heads.last().map(|(k, _)| k.clone()) else {
                return Ok(());
            };
            for (hk, _) in &heads {
                let key = String::from_utf8(hk[base.len()..].to_vec())
                    .map_err(|_| OssError::Corrupt("head key".into()))?;
                if !rules.iter().any(|r| key.starts_with(&r.filter.prefix)) {
                    continue;
                }
                let seen = self.versions_of(bucket, &key).await?;
                self.lifecycle_key(bucket, &key, &seen, rules, now_ms, day, report)
                    .await?;
            }
            if heads.len() < KEYS_PER_PAGE {
                return Ok(());
            }
            cursor = last;
            cursor.push(0);
        }
    }

    /// Every version of a key, newest first (up to `VERSIONS_PER_KEY`).
    async fn versions_of(&self, bucket: &str, key: &str) -> Result<Vec<Seen>, OssError> {
        let (b, k) = (bucket.to_owned(), key.to_owned());
        self.blocking(move |m, _| {
            let prefix = keys::key_versions(&b, &k);
            let end = prefix_end(&prefix);
            let rows = m.scan(Table::Versions, &prefix, end.as_deref(), VERSIONS_PER_KEY)?;
            let mut out = Vec::with_capacity(rows.len());
            for (rk, rv) in rows {
                let (_, id) = keys::parse_version(&b, &rk)?;
                let (null, record) = match records::decode::<VersionRow>(&rv)? {
                    VersionRow::Current => match m.get(Table::Objects, &keys::object(&b, &k))? {
                        Some(v) => {
                            let r: ObjectRecord = records::decode(&v)?;
                            if r.version != id {
                                // Changed under us; the next run sees it settled.
                                return Ok(Vec::new());
                            }
                            (r.null_version, Some(r))
                        }
                        None => return Ok(Vec::new()),
                    },
                    VersionRow::Object(r) => (r.null_version, Some(*r)),
                    VersionRow::Marker(mk) => (mk.null_version, None),
                };
                out.push(Seen {
                    id,
                    null,
                    record,
                    created_ms: created_ms(id),
                });
            }
            Ok(out)
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn lifecycle_key(
        &self,
        bucket: &str,
        key: &str,
        seen: &[Seen],
        rules: &[Rule],
        now_ms: i64,
        day: i64,
        report: &mut LifecycleReport,
    ) -> Result<(), OssError> {
        let Some(current) = seen.first() else {
            return Ok(());
        };
        let matches = |r: &Rule, s: &Seen| {
            let (size, tags) = match &s.record {
                Some(rec) => (Some(rec.size), rec.tags.as_slice()),
                None => (None, &[][..]),
            };
            r.filter.matches(key, size, tags)
        };
        let age_days = |since: i64| (now_ms - since).div_euclid(day.max(1));
        // The current version.
        match &current.record {
            Some(rec) => {
                let expire = rules.iter().any(|r| {
                    matches(r, current)
                        && r.expiration.as_ref().is_some_and(|e| {
                            e.days
                                .is_some_and(|d| age_days(rec.last_modified_ms) >= i64::from(d))
                                || e.date_ms.is_some_and(|d| now_ms >= d)
                        })
                });
                if expire {
                    self.lifecycle_apply(bucket, key, Change::DeleteCurrent, report, |r| {
                        r.expired += 1
                    })
                    .await?;
                    // The rest is judged on the next run, with the new marker in place.
                    return Ok(());
                }
                // The coldest class a due transition names.
                let due = rules
                    .iter()
                    .filter(|r| matches(r, current) && r.may_transition(rec.size))
                    .flat_map(|r| &r.transitions)
                    .filter(|t| {
                        t.days
                            .is_some_and(|d| age_days(rec.last_modified_ms) >= i64::from(d))
                            || t.date_ms.is_some_and(|d| now_ms >= d)
                    })
                    .map(|t| t.storage_class.as_str())
                    .max_by_key(|c| class_rank(Some(c)));
                if let Some(class) = due {
                    self.lifecycle_transition(bucket, key, current, class, report)
                        .await?;
                }
            }
            None => {
                let lone = seen.len() == 1;
                let remove = lone
                    && rules.iter().any(|r| {
                        r.filter.matches(key, None, &[])
                            && r.expiration
                                .as_ref()
                                .is_some_and(|e| e.expired_object_delete_marker)
                    });
                if remove {
                    let change = Change::DeleteVersion {
                        selector: current.selector(),
                        bypass_governance: false,
                    };
                    self.lifecycle_apply(bucket, key, change, report, |r| r.markers_removed += 1)
                        .await?;
                    return Ok(());
                }
            }
        }
        // Noncurrent versions: a version became noncurrent when the next newer one was written.
        let mut expired = std::collections::HashSet::new();
        for rule in rules {
            let Some(n) = &rule.noncurrent_expiration else {
                continue;
            };
            let mut rank = 0u32;
            for i in 1..seen.len() {
                let s = &seen[i];
                if !matches(rule, s) {
                    continue;
                }
                let keep = n.newer_noncurrent_versions.is_some_and(|k| rank < k);
                rank += 1;
                let noncurrent_since = seen[i - 1].created_ms;
                if keep || age_days(noncurrent_since) < i64::from(n.days) {
                    continue;
                }
                let change = Change::DeleteVersion {
                    selector: s.selector(),
                    bypass_governance: false,
                };
                expired.insert(s.id);
                self.lifecycle_apply(bucket, key, change, report, |r| r.noncurrent_expired += 1)
                    .await?;
            }
        }
        // Noncurrent transitions, for versions expiration left in place.
        let mut target: std::collections::HashMap<VersionId, &str> = Default::default();
        for rule in rules {
            for t in &rule.noncurrent_transitions {
                let mut rank = 0u32;
                for i in 1..seen.len() {
                    let s = &seen[i];
                    let Some(rec) = &s.record else { continue };
                    if !matches(rule, s) {
                        continue;
                    }
                    let keep = t.newer_noncurrent_versions.is_some_and(|k| rank < k);
                    rank += 1;
                    if keep
                        || !rule.may_transition(rec.size)
                        || expired.contains(&s.id)
                        || age_days(seen[i - 1].created_ms) < i64::from(t.days)
                    {
                        continue;
                    }
                    let slot = target.entry(s.id).or_insert(&t.storage_class);
                    if class_rank(Some(&t.storage_class)) > class_rank(Some(slot)) {
                        *slot = &t.storage_class;
                    }
                }
            }
        }
        for s in &seen[1..] {
            if let Some(class) = target.get(&s.id) {
                self.lifecycle_transition(bucket, key, s, class, report)
                    .await?;
            }
        }
        Ok(())
    }

    /// Moves `s` to `class` unless it is already there or colder.
    async fn lifecycle_transition(
        &self,
        bucket: &str,
        key: &str,
        s: &Seen,
        class: &str,
        report: &mut LifecycleReport,
    ) -> Result<(), OssError> {
        let Some(rec) = &s.record else {
            return Ok(());
        };
        if class_rank(rec.storage_class.as_deref()) >= class_rank(Some(class)) {
            return Ok(());
        }
        match self
            .transition_version(bucket, key, s.selector(), rec, class)
            .await
        {
            Ok(true) => {
                tracing::info!(bucket, key, version = %rec.version.render(), class, "lifecycle transition");
                report.transitioned += 1;
                Ok(())
            }
            Ok(false) | Err(OssError::NoSuchBucket | OssError::Busy) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn lifecycle_apply(
        &self,
        bucket: &str,
        key: &str,
        change: Change,
        report: &mut LifecycleReport,
        count: impl FnOnce(&mut LifecycleReport),
    ) -> Result<(), OssError> {
        let what = format!("{change:?}");
        match self
            .apply_change(
                bucket,
                key,
                change,
                crate::events::EventCause::Lifecycle,
                feiyun_meta::WriteBatch::new(),
            )
            .await
        {
            Ok(applied) => {
                tracing::info!(bucket, key, action = %what.split_whitespace().next().unwrap_or(""), version = ?applied.version_id, "lifecycle");
                count(report);
                Ok(())
            }
            Err(OssError::AccessDenied(why)) => {
                tracing::info!(bucket, key, why, "lifecycle skipped a locked version");
                report.skipped_locked += 1;
                Ok(())
            }
            // The key or bucket changed or went away meanwhile: nothing to do now.
            Err(OssError::NoSuchBucket | OssError::Busy) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn lifecycle_uploads(
        &self,
        bucket: &str,
        rules: &[Rule],
        now_ms: i64,
        report: &mut LifecycleReport,
    ) -> Result<(), OssError> {
        let day = self.config.lifecycle_day_ms;
        for rule in rules {
            let Some(days) = rule.abort_multipart_days else {
                continue;
            };
            let mut params = crate::UploadParams {
                prefix: rule.filter.prefix.clone(),
                max_uploads: 1000,
                ..Default::default()
            };
            loop {
                let page = self.list_multipart_uploads(bucket, params.clone()).await?;
                for u in &page.uploads {
                    if (now_ms - u.initiated_ms).div_euclid(day.max(1)) >= i64::from(days) {
                        match self
                            .abort_multipart_upload(bucket, &u.key, &u.upload_id)
                            .await
                        {
                            Ok(()) => {
                                tracing::info!(
                                    bucket,
                                    key = u.key,
                                    upload = u.upload_id,
                                    "lifecycle aborted an upload"
                                );
                                report.uploads_aborted += 1;
                            }
                            Err(OssError::NoSuchUpload) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                match (page.is_truncated, page.uploads.last()) {
                    (true, Some(last)) => {
                        params.key_marker = Some(last.key.clone());
                        params.upload_id_marker = Some(last.upload_id.clone());
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Runs the worker every `interval` until the service is dropped.
    pub fn spawn_lifecycle(self: &std::sync::Arc<Self>, interval: std::time::Duration) {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(svc) = weak.upgrade() else { return };
                if !feiyun_common::background::runs() {
                    continue;
                }
                match feiyun_common::background::fenced(svc.run_lifecycle(now_millis())).await {
                    Ok(r) if r != LifecycleReport::default() => {
                        tracing::info!(?r, "lifecycle run");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "lifecycle run failed; retried next interval")
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        Rule {
            id: "r".into(),
            enabled: true,
            expiration: Some(Expiration {
                days: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn validation() {
        let ok = LifecycleConfig {
            rules: vec![rule()],
        };
        assert!(ok.validate().is_ok());
        let mut dup = ok.clone();
        dup.rules.push(rule());
        assert!(dup.validate().is_err(), "duplicate ids");
        let mut none = rule();
        none.expiration = None;
        assert!(LifecycleConfig { rules: vec![none] }.validate().is_err());
        let mut zero = rule();
        zero.expiration.as_mut().unwrap().days = Some(0);
        assert!(LifecycleConfig { rules: vec![zero] }.validate().is_err());
        let mut both = rule();
        both.expiration.as_mut().unwrap().date_ms = Some(0);
        assert!(LifecycleConfig { rules: vec![both] }.validate().is_err());
        let mut noon = rule();
        noon.expiration = Some(Expiration {
            date_ms: Some(DAY_MS / 2),
            ..Default::default()
        });
        assert!(LifecycleConfig { rules: vec![noon] }.validate().is_err());
        let mut marker_tags = rule();
        marker_tags.expiration = Some(Expiration {
            expired_object_delete_marker: true,
            ..Default::default()
        });
        marker_tags.filter.tags = vec![("a".into(), "b".into())];
        assert!(
            LifecycleConfig {
                rules: vec![marker_tags]
            }
            .validate()
            .is_err()
        );
        let mut sizes = rule();
        sizes.filter.size_greater_than = Some(10);
        sizes.filter.size_less_than = Some(10);
        assert!(LifecycleConfig { rules: vec![sizes] }.validate().is_err());
        let mut newer = rule();
        newer.noncurrent_expiration = Some(NoncurrentExpiration {
            days: 1,
            newer_noncurrent_versions: Some(101),
        });
        assert!(LifecycleConfig { rules: vec![newer] }.validate().is_err());
        assert!(LifecycleConfig { rules: vec![] }.validate().is_err());
    }

    #[test]
    fn filters() {
        let f = Filter {
            prefix: "logs/".into(),
            tags: vec![("t".into(), "1".into())],
            size_greater_than: Some(10),
            size_less_than: None,
        };
        let tags = vec![("t".to_string(), "1".to_string()), ("u".into(), "2".into())];
        assert!(f.matches("logs/a", Some(11), &tags));
        assert!(!f.matches("logs/a", Some(10), &tags));
        assert!(!f.matches("data/a", Some(11), &tags));
        assert!(!f.matches("logs/a", Some(11), &[]));
        assert!(
            !f.matches("logs/a", None, &tags),
            "size filters never match markers"
        );
    }
}

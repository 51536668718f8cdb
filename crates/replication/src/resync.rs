//! Resync: re-sending a bucket's existing versions and delete markers to one destination, for
//! a new region, a rebuilt one, a failback, or a rule with ExistingObjectReplication.
//!
//! A job is a row `s/BUCKET/LABEL` of the `replication` table ([`ResyncRecord`]): the versions
//! it covers (modified at or before `cutoff_ms`; later ones are the live worker's) and how far
//! it got (`after_key`, the last key all of whose versions are done). A restart resumes each
//! unfinished job from there.
//!
//! The job walks the source's version listing and the destination's side by side, both in
//! key order, and sends only the versions whose ids the destination does not list: a resync
//! into a full region costs two listings, not a request per version. A destination that
//! does not keep version ids (a non-Feiyun endpoint) lists none of ours, so everything is
//! sent. Sends reuse the worker's delivery: same retries, same statuses (a version sent by a
//! resync is COMPLETED for the destination, also one written before the rule existed).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use feiyun_meta::{MetaStore, Table, WriteBatch};
use feiyun_oss::replication::ReplicationConfig;
use feiyun_oss::{BlobStore, OssError, VersionEntry, VersionListParams, VersionSelector};
use futures::StreamExt;
use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::ClientError;
use crate::worker::{Delivered, Kind, Task};
use crate::{Replication, ReplicationError};

/// Versions sent at once by one job (the peer's own limit applies on top).
const JOB_CONCURRENCY: usize = 32;
/// Source versions read per listing page.
const PAGE: usize = 1000;
/// Versions planned before the job waits for them and records its position.
const BATCH: usize = 1000;
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// A resync job as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResyncRecord {
    pub bucket: String,
    /// `REGION/BUCKET` of the destination.
    pub label: String,
    /// Versions and markers modified after this are left to live replication.
    pub cutoff_ms: i64,
    pub created_ms: i64,
    /// Every version of every key up to and including this one is done.
    pub after_key: Option<String>,
    pub sent: u64,
    pub bytes: u64,
    /// Already at the destination.
    pub present: u64,
    pub failed: u64,
    pub finished_ms: Option<i64>,
    /// Why the job stopped early (the rule or the peer went away).
    pub error: Option<String>,
}

fn job_row(bucket: &str, label: &str) -> Vec<u8> {
    format!("s/{bucket}/{label}").into_bytes()
}

/// What a job sends to, from the bucket's current rules.
struct Target {
    region: String,
    dest_bucket: String,
    /// Longest prefix common to the enabled rules for the destination: both listings start
    /// there.
    prefix: String,
}

fn target(config: &ReplicationConfig, label: &str) -> Option<Target> {
    let rules: Vec<_> = config
        .rules
        .iter()
        .filter(|r| r.enabled && r.destination.label() == label)
        .collect();
    let first = rules.first()?;
    let mut prefix = first.prefix.clone();
    for r in &rules[1..] {
        let common = prefix
            .char_indices()
            .zip(r.prefix.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, c), _)| i + c.len_utf8());
        prefix.truncate(common);
    }
    Some(Target {
        region: first.destination.region.clone(),
        dest_bucket: first.destination.bucket.clone(),
        prefix,
    })
}

/// One entry of the destination's ListObjectVersions.
#[derive(Debug, PartialEq)]
struct Listed {
    key: String,
    version: String,
}

/// Parses a ListVersionsResult page: its versions and markers, and where the next starts.
/// Where the next page of a listing starts: key marker and version-id marker.
type NextPage = Option<(String, String)>;

fn parse_versions(xml: &[u8]) -> Result<(Vec<Listed>, NextPage), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut out = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let (mut key, mut version) = (String::new(), String::new());
    let (mut truncated, mut next_key, mut next_version): (bool, Option<String>, Option<String>) =
        (false, None, None);
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Ok(Event::End(_)) => {
                if let Some(tag) = path.pop()
                    && path.len() == 1
                    && (tag == "Version" || tag == "DeleteMarker")
                {
                    out.push(Listed {
                        key: std::mem::take(&mut key),
                        version: std::mem::take(&mut version),
                    });
                }
            }
            Ok(Event::Text(t)) => {
                let text = t.decode().map_err(|e| e.to_string())?;
                let text = quick_xml::escape::unescape(&text)
                    .map_err(|e| e.to_string())?
                    .into_owned();
                let tags: Vec<&str> = path.iter().map(String::as_str).collect();
                match tags.as_slice() {
                    [_, "Version" | "DeleteMarker", "Key"] => key.push_str(&text),
                    [_, "Version" | "DeleteMarker", "VersionId"] => version.push_str(&text),
                    [_, "IsTruncated"] => truncated = text.trim() == "true",
                    // Text comes in pieces around entity references: append.
                    [_, "NextKeyMarker"] => {
                        next_key.get_or_insert_with(String::new).push_str(&text)
                    }
                    [_, "NextVersionIdMarker"] => {
                        next_version.get_or_insert_with(String::new).push_str(&text)
                    }
                    _ => {}
                }
            }
            Ok(Event::GeneralRef(r)) => {
                // An entity reference inside a key (`&amp;`): resolve it in place.
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                let ch = match name.as_str() {
                    "amp" => "&".to_owned(),
                    "lt" => "<".to_owned(),
                    "gt" => ">".to_owned(),
                    "quot" => "\"".to_owned(),
                    "apos" => "'".to_owned(),
                    n if n.starts_with("#x") => u32::from_str_radix(&n[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .ok_or_else(|| format!("bad character reference &{n};"))?,
                    n if n.starts_with('#') => n[1..]
                        .parse::<u32>()
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .ok_or_else(|| format!("bad character reference &{n};"))?,
                    n => return Err(format!("unknown entity &{n};")),
                };
                match path
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice()
                {
                    [_, "Version" | "DeleteMarker", "Key"] => key.push_str(&ch),
                    [_, "NextKeyMarker"] => next_key.get_or_insert_with(String::new).push_str(&ch),
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("ListVersionsResult: {e}")),
        }
        buf.clear();
    }
    let next = match (truncated, next_key) {
        (true, Some(k)) => Some((k, next_version.unwrap_or_default())),
        (true, None) => return Err("a truncated listing without NextKeyMarker".into()),
        _ => None,
    };
    Ok((out, next))
}

/// The destination's versions, read page by page in key order.
struct DestListing<'a> {
    peer: &'a crate::Peer,
    bucket: String,
    prefix: String,
    buffered: VecDeque<Listed>,
    /// Where the next page starts; `None` once the listing is exhausted.
    next: NextPage,
    /// The destination cannot list our ids: every version is sent.
    blind: bool,
}

impl<'a> DestListing<'a> {
    fn new(peer: &'a crate::Peer, bucket: &str, prefix: &str, after: Option<&str>) -> Self {
        Self {
            peer,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            buffered: VecDeque::new(),
            next: Some((after.unwrap_or_default().to_owned(), String::new())),
            blind: false,
        }
    }

    async fn fetch(&mut self) -> Result<(), ClientError> {
        let Some((key_marker, version_marker)) = self.next.clone() else {
            return Ok(());
        };
        let max = PAGE.to_string();
        let mut query = vec![("versions", ""), ("max-keys", max.as_str())];
        if !self.prefix.is_empty() {
            query.push(("prefix", self.prefix.as_str()));
        }
        if !key_marker.is_empty() {
            query.push(("key-marker", key_marker.as_str()));
            if !version_marker.is_empty() {
                query.push(("version-id-marker", version_marker.as_str()));
            }
        }
        let (_, body) = self
            .peer
            .client
            .send_for_body(Method::GET, &self.bucket, &query, LIST_TIMEOUT)
            .await?;
        let (mut entries, next) = parse_versions(&body).map_err(|m| ClientError::Status {
            status: 200,
            code: "MalformedListing".into(),
            message: m,
        })?;
        // A page may hold all its versions before all its markers (ours does): walk it in key
        // order.
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        self.buffered.extend(entries);
        self.next = next;
        Ok(())
    }

    /// The version ids the destination holds for `key`. Keys come in increasing order.
    async fn versions_of(&mut self, key: &str) -> Result<HashSet<String>, ClientError> {
        let mut ids = HashSet::new();
        if self.blind {
            return Ok(ids);
        }
        loop {
            while let Some(front) = self.buffered.front() {
                match front.key.as_str().cmp(key) {
                    std::cmp::Ordering::Less => {
                        self.buffered.pop_front();
                    }
                    std::cmp::Ordering::Equal => {
                        if let Some(l) = self.buffered.pop_front() {
                            ids.insert(l.version);
                        }
                    }
                    std::cmp::Ordering::Greater => return Ok(ids),
                }
            }
            if self.next.is_none() {
                return Ok(ids);
            }
            match self.fetch().await {
                Ok(()) => {}
                Err(e) if e.transient() => return Err(e),
                Err(e) => {
                    // Listing refused (no permission, not an S3 that lists versions): fall
                    // back to sending everything, which is what the job is for anyway.
                    tracing::warn!(bucket = %self.bucket, error = %e,
                        "resync cannot list the destination; sending every version");
                    self.blind = true;
                    self.buffered.clear();
                    return Ok(ids);
                }
            }
        }
    }
}

/// A version or marker at the source: id, kind, modified (ms), tags.
type Item = (feiyun_oss::VersionId, Kind, i64, Vec<(String, String)>);

/// One key's versions and markers at the source, newest first.
struct KeyGroup {
    key: String,
    entries: Vec<Item>,
}

impl<M: MetaStore, B: BlobStore> Replication<M, B> {
    /// Starts (or restarts from the beginning) resyncs of `bucket` to every destination in
    /// `region` its rules name. Versions older than `older_than` only, when given.
    pub async fn start_resync(
        self: &Arc<Self>,
        bucket: &str,
        region: &str,
        older_than: Option<Duration>,
    ) -> Result<Vec<ResyncRecord>, ReplicationError> {
        if self.peer(region).is_none() {
            return Err(ReplicationError::NoSuchRegion(region.to_owned()));
        }
        let config = self.oss.replication(bucket).await?.ok_or_else(|| {
            ReplicationError::Invalid(format!("bucket {bucket} has no replication configuration"))
        })?;
        let mut labels: Vec<String> = config
            .rules
            .iter()
            .filter(|r| r.enabled && r.destination.region == region)
            .map(|r| r.destination.label())
            .collect();
        labels.sort();
        labels.dedup();
        if labels.is_empty() {
            return Err(ReplicationError::Invalid(format!(
                "no enabled rule of bucket {bucket} replicates to region {region}"
            )));
        }
        self.start_resync_to(bucket, labels, older_than).await
    }

    /// Starts resyncs of `bucket` to the destinations `labels` (`REGION/BUCKET`).
    pub(crate) async fn start_resync_to(
        self: &Arc<Self>,
        bucket: &str,
        labels: Vec<String>,
        older_than: Option<Duration>,
    ) -> Result<Vec<ResyncRecord>, ReplicationError> {
        let now = feiyun_oss::now_millis();
        let cutoff = now - older_than.map_or(0, |d| d.as_millis() as i64);
        let mut out = Vec::new();
        for label in labels {
            let rec = ResyncRecord {
                bucket: bucket.to_owned(),
                label,
                cutoff_ms: cutoff,
                created_ms: now,
                after_key: None,
                sent: 0,
                bytes: 0,
                present: 0,
                failed: 0,
                finished_ms: None,
                error: None,
            };
            self.store_job(&rec).await?;
            self.launch(rec.clone());
            out.push(rec);
        }
        Ok(out)
    }

    async fn store_job(&self, rec: &ResyncRecord) -> Result<(), ReplicationError> {
        let mut value = Vec::new();
        ciborium::into_writer(rec, &mut value)
            .map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
        let mut batch = WriteBatch::new();
        batch.put(Table::Replication, job_row(&rec.bucket, &rec.label), value);
        self.oss.meta().commit(batch).await?;
        Ok(())
    }

    /// Every resync job on record, finished or not.
    pub fn resync_jobs(&self) -> Result<Vec<ResyncRecord>, ReplicationError> {
        let rows = self
            .oss
            .meta()
            .scan(Table::Replication, b"s/", Some(b"s0"), 100_000)?;
        rows.into_iter()
            .map(|(_, v)| {
                ciborium::from_reader(v.as_slice())
                    .map_err(|e| ReplicationError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// Runs `rec` in the background; a job started again for the same destination replaces
    /// it (the older run notices at its next batch and stops).
    fn launch(self: &Arc<Self>, rec: ResyncRecord) {
        let row = job_row(&rec.bucket, &rec.label);
        let generation = {
            let mut g = match self.state.resyncs.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let n = g.get(&row).map_or(1, |n| n + 1);
            g.insert(row.clone(), n);
            n
        };
        let me = self.clone();
        tokio::spawn(async move {
            let (bucket, label) = (rec.bucket.clone(), rec.label.clone());
            if let Err(e) = me.run_job(rec, &row, generation).await {
                tracing::warn!(%bucket, destination = %label, error = %e, "resync stopped");
            }
        });
    }

    fn current(&self, row: &[u8], generation: u64) -> bool {
        self.state
            .resyncs
            .lock()
            .map(|g| g.get(row) == Some(&generation))
            .unwrap_or(false)
    }

    /// Resumes the jobs a restart interrupted.
    pub(crate) fn resume_resyncs(self: &Arc<Self>) {
        match self.resync_jobs() {
            Ok(jobs) => {
                for j in jobs.into_iter().filter(|j| j.finished_ms.is_none()) {
                    tracing::info!(bucket = %j.bucket, destination = %j.label,
                        after = ?j.after_key, "resuming resync");
                    self.launch(j);
                }
            }
            Err(e) => tracing::warn!(error = %e, "resync jobs unreadable"),
        }
    }

    async fn run_job(
        self: &Arc<Self>,
        mut rec: ResyncRecord,
        row: &[u8],
        generation: u64,
    ) -> Result<(), ReplicationError> {
        let finish = |rec: &mut ResyncRecord, error: Option<String>| {
            rec.finished_ms = Some(feiyun_oss::now_millis());
            rec.error = error;
        };
        let config = match self.oss.replication(&rec.bucket).await {
            Ok(Some(c)) => c,
            Ok(None) | Err(OssError::NoSuchBucket) => {
                finish(
                    &mut rec,
                    Some("the bucket's replication rules are gone".into()),
                );
                return self.store_job(&rec).await;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(tgt) = target(&config, &rec.label) else {
            finish(
                &mut rec,
                Some("no enabled rule names the destination".into()),
            );
            return self.store_job(&rec).await;
        };
        let Some(peer) = self.peer(&tgt.region) else {
            finish(&mut rec, Some(format!("region {} is gone", tgt.region)));
            return self.store_job(&rec).await;
        };
        let mut dest = DestListing::new(
            &peer,
            &tgt.dest_bucket,
            &tgt.prefix,
            rec.after_key.as_deref(),
        );
        let mut marker: Option<(String, Option<VersionSelector>)> =
            rec.after_key.clone().map(|k| (k, None));
        let mut carry: Option<KeyGroup> = None;
        let mut queued: Vec<KeyGroup> = Vec::new();
        let mut planned = 0usize;
        loop {
            let page = self
                .oss
                .list_object_versions(
                    &rec.bucket,
                    VersionListParams {
                        prefix: tgt.prefix.clone(),
                        delimiter: None,
                        key_marker: marker.as_ref().map(|m| m.0.clone()),
                        version_marker: marker.as_ref().and_then(|m| m.1),
                        max_keys: PAGE,
                    },
                )
                .await;
            let page = match page {
                Ok(p) => p,
                Err(OssError::NoSuchBucket) => {
                    finish(&mut rec, Some("the bucket is gone".into()));
                    return self.store_job(&rec).await;
                }
                Err(e) => return Err(e.into()),
            };
            for entry in page.entries {
                let (key, item) = match entry {
                    VersionEntry::Version { key, record, .. } => {
                        let item = (
                            record.version,
                            Kind::Object,
                            record.last_modified_ms,
                            record.tags,
                        );
                        (key, item)
                    }
                    VersionEntry::Marker { key, marker, .. } => (
                        key,
                        (
                            marker.version,
                            Kind::Marker,
                            marker.last_modified_ms,
                            Vec::new(),
                        ),
                    ),
                    VersionEntry::CommonPrefix(_) => continue,
                };
                if carry.as_ref().is_some_and(|g| g.key != key)
                    && let Some(g) = carry.take()
                {
                    planned += g.entries.len();
                    queued.push(g);
                }
                carry
                    .get_or_insert_with(|| KeyGroup {
                        key,
                        entries: Vec::new(),
                    })
                    .entries
                    .push(item);
            }
            let last_page = !page.is_truncated;
            if last_page && let Some(g) = carry.take() {
                planned += g.entries.len();
                queued.push(g);
            }
            if planned >= BATCH || last_page {
                if !self.current(row, generation) {
                    return Ok(());
                }
                let groups = std::mem::take(&mut queued);
                planned = 0;
                if let Some(last) = groups.last() {
                    let last_key = last.key.clone();
                    self.send_groups(&mut rec, &config, &mut dest, groups)
                        .await?;
                    rec.after_key = Some(last_key);
                }
                if last_page {
                    finish(&mut rec, None);
                }
                if !self.current(row, generation) {
                    return Ok(());
                }
                self.store_job(&rec).await?;
                if last_page {
                    tracing::info!(bucket = %rec.bucket, destination = %rec.label,
                        sent = rec.sent, present = rec.present, failed = rec.failed,
                        "resync finished");
                    return Ok(());
                }
            }
            marker = match (page.next_key_marker, page.next_version_marker) {
                (Some(k), v) => Some((k, v.as_deref().map(VersionSelector::parse).transpose()?)),
                (None, _) => {
                    return Err(ReplicationError::Corrupt(
                        "a truncated version listing without a next key".into(),
                    ));
                }
            };
        }
    }

    /// Sends the versions of `groups` the destination lacks, and waits for all of them.
    async fn send_groups(
        &self,
        rec: &mut ResyncRecord,
        config: &ReplicationConfig,
        dest: &mut DestListing<'_>,
        groups: Vec<KeyGroup>,
    ) -> Result<(), ReplicationError> {
        let mut tasks = Vec::new();
        for g in groups {
            let present = loop {
                match dest.versions_of(&g.key).await {
                    Ok(p) => break p,
                    Err(e) => {
                        tracing::debug!(error = %e, "resync listing retry");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            for (version, kind, modified, tags) in g.entries {
                if modified > rec.cutoff_ms {
                    continue;
                }
                let rules = match kind {
                    Kind::Marker => config.marker_rules_for(&g.key),
                    _ => config.rules_for(&g.key, &tags),
                };
                let Some(rule) = rules
                    .into_iter()
                    .find(|r| r.destination.label() == rec.label)
                else {
                    continue;
                };
                if present.contains(&version.render()) {
                    rec.present += 1;
                    continue;
                }
                tasks.push(Task {
                    event_id: 0,
                    bucket: rec.bucket.clone(),
                    key: g.key.clone(),
                    version,
                    kind,
                    rule: rule.clone(),
                    resync: true,
                });
            }
        }
        let results: Vec<Delivered> = futures::stream::iter(tasks)
            .map(|t| async move { crate::worker::deliver(self, &t).await })
            .buffer_unordered(JOB_CONCURRENCY)
            .collect()
            .await;
        for d in results {
            match d {
                Delivered::Sent(b) => {
                    rec.sent += 1;
                    rec.bytes += b;
                }
                Delivered::Skipped => {}
                Delivered::Failed => rec.failed += 1,
                Delivered::Dropped => {
                    return Err(ReplicationError::Invalid(
                        "the rule or the region went away".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `resync` as the status API shows it.
pub fn job_json(j: &ResyncRecord) -> serde_json::Value {
    serde_json::json!({
        "bucket": j.bucket,
        "destination": j.label,
        "cutoff": j.cutoff_ms,
        "created": j.created_ms,
        "after_key": j.after_key,
        "sent": j.sent,
        "bytes": j.bytes,
        "present": j.present,
        "failed": j.failed,
        "finished": j.finished_ms,
        "error": j.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_listings_parse() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<IsTruncated>true</IsTruncated><NextKeyMarker>k&amp;2</NextKeyMarker>
<NextVersionIdMarker>v9</NextVersionIdMarker>
<Version><Key>a &lt;1&gt;</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest>
<Owner><ID>o</ID></Owner></Version>
<DeleteMarker><Key>k&amp;2</Key><VersionId>v9</VersionId></DeleteMarker>
<CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes></ListVersionsResult>"#;
        let (entries, next) = parse_versions(xml).unwrap();
        assert_eq!(
            entries,
            vec![
                Listed {
                    key: "a <1>".into(),
                    version: "v1".into()
                },
                Listed {
                    key: "k&2".into(),
                    version: "v9".into()
                }
            ]
        );
        assert_eq!(next, Some(("k&2".into(), "v9".into())));
        let (entries, next) = parse_versions(
            b"<ListVersionsResult><IsTruncated>false</IsTruncated></ListVersionsResult>",
        )
        .unwrap();
        assert!(entries.is_empty() && next.is_none());
        assert!(
            parse_versions(
                b"<ListVersionsResult><IsTruncated>true</IsTruncated></ListVersionsResult>"
            )
            .is_err()
        );
    }

    #[test]
    fn a_job_lists_from_the_common_prefix_of_its_rules() {
        use feiyun_oss::replication::{Destination, ReplicationRule};
        let rule = |id: &str, prefix: &str, bucket: &str| ReplicationRule {
            id: id.into(),
            priority: 0,
            enabled: true,
            prefix: prefix.into(),
            tags: Vec::new(),
            filtered: true,
            destination: Destination {
                arn: format!("arn:aws:s3:dr::{bucket}"),
                region: "dr".into(),
                bucket: bucket.into(),
                storage_class: None,
                replica_kms_key: None,
            },
            delete_markers: false,
            existing_objects: false,
        };
        let c = ReplicationConfig {
            role: String::new(),
            rules: vec![
                rule("a", "logs/2026/ü1", "x"),
                rule("b", "logs/2026/ü2", "x"),
                rule("c", "other/", "y"),
            ],
        };
        let t = target(&c, "dr/x").unwrap();
        assert_eq!(
            (t.prefix.as_str(), t.dest_bucket.as_str()),
            ("logs/2026/ü", "x")
        );
        assert_eq!(target(&c, "dr/y").unwrap().prefix, "other/");
        assert!(target(&c, "dr/z").is_none());
    }
}

//! Cross-region replication as the object service sees it: a bucket's replication rules, which
//! destinations a new version is pending for, replica writes that keep the source's version id
//! and time, and the per-version status the replication worker reports back.
//!
//! The rules live in the bucket's own record, so the write path decides PENDING from the row
//! it already reads; the worker (crate `replication`) follows the event log and does the
//! copying. Peers (the regions a destination names) belong to that crate; this one only asks
//! a [`PeerDirectory`] whether a name is known when a configuration is stored.

use std::collections::HashSet;

use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;
use serde::{Deserialize, Serialize};

use crate::records::{ObjectRecord, VersionId, Versioning};
use crate::{ObjectService, OssError, VersionSelector};

/// Request header of a replica write between regions: the source version's id (32 hex).
/// Needs `s3:ReplicateObject` (PUT) or `s3:ReplicateDelete` (a delete marker).
pub const REPLICA_VERSION_HEADER: &str = "x-feiyun-replica-version-id";
/// The source version's modification time, milliseconds since the epoch.
pub const REPLICA_MTIME_HEADER: &str = "x-feiyun-replica-last-modified";

/// Most rules in one configuration (S3's limit).
pub const MAX_RULES: usize = 1000;

/// A bucket's replication configuration (PutBucketReplication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationConfig {
    /// The role ARN the client named; kept and shown back. The worker writes with the peer's
    /// own credentials, so it grants nothing here.
    pub role: String,
    pub rules: Vec<ReplicationRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRule {
    pub id: String,
    /// Among rules naming the same destination, the highest priority that matches wins.
    pub priority: i32,
    pub enabled: bool,
    pub prefix: String,
    pub tags: Vec<(String, String)>,
    /// The rule came with a `Filter` (V2) rather than the legacy top-level `Prefix`.
    pub filtered: bool,
    pub destination: Destination,
    pub delete_markers: bool,
    pub existing_objects: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// The bucket ARN as the client wrote it: `arn:aws:s3:REGION::BUCKET`, the region field
    /// naming a registered peer.
    pub arn: String,
    pub region: String,
    pub bucket: String,
    pub storage_class: Option<String>,
    /// SSE-KMS key the replica is sealed under at the destination (its own key id or ARN).
    pub replica_kms_key: Option<String>,
}

impl Destination {
    /// The label a version's status is kept under: `REGION/BUCKET`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.region, self.bucket)
    }

    /// Reads `arn:PARTITION:s3:REGION:ACCOUNT:BUCKET`; the region must be present.
    pub fn parse_arn(arn: &str) -> Result<(String, String), OssError> {
        let bad = || {
            OssError::InvalidArgument(format!(
                "Invalid destination bucket ARN '{arn}': expected arn:aws:s3:REGION::BUCKET, \
                 REGION a region registered with `feiyun region add`"
            ))
        };
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[1].is_empty() || parts[2] != "s3" {
            return Err(bad());
        }
        let (region, bucket) = (parts[3], parts[5]);
        if region.is_empty() || bucket.is_empty() || bucket.contains('/') {
            return Err(bad());
        }
        crate::keys::validate_bucket_name(bucket).map_err(|_| bad())?;
        Ok((region.to_owned(), bucket.to_owned()))
    }
}

/// Which regions exist, for validating a configuration's destinations.
pub trait PeerDirectory: Send + Sync {
    fn has_peer(&self, name: &str) -> bool;
    /// A rule with ExistingObjectReplication now sends `bucket` to `label`: copy what the
    /// bucket already holds there.
    fn backfill(&self, _bucket: &str, _label: &str) {}
}

/// Replication state of one object version (`x-amz-replication-status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationState {
    /// Written by replication from another region; never replicated onward by this one.
    Replica,
    /// A source version: its state per destination label.
    Source(Vec<(String, TargetStatus)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetStatus {
    Pending,
    Completed,
    Failed,
}

impl ReplicationState {
    /// S3's header value: FAILED if any destination failed, PENDING while any is pending.
    pub fn header(&self) -> &'static str {
        match self {
            ReplicationState::Replica => "REPLICA",
            ReplicationState::Source(t) => {
                if t.iter().any(|(_, s)| *s == TargetStatus::Failed) {
                    "FAILED"
                } else if t.iter().any(|(_, s)| *s == TargetStatus::Pending) {
                    "PENDING"
                } else {
                    "COMPLETED"
                }
            }
        }
    }

    pub fn target(&self, label: &str) -> Option<TargetStatus> {
        match self {
            ReplicationState::Replica => None,
            ReplicationState::Source(t) => t.iter().find(|(l, _)| l == label).map(|(_, s)| *s),
        }
    }
}

/// One destination's outcome for one version, for [`ObjectService::set_replication_statuses`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub bucket: String,
    pub key: String,
    pub version: VersionId,
    pub label: String,
    pub status: TargetStatus,
}

/// What a replica write carries over from its source version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaOf {
    pub version: VersionId,
    pub last_modified_ms: i64,
}

impl ReplicationConfig {
    /// Checks what S3 checks, and that every destination names a known region.
    pub fn validate(&self, peers: &dyn PeerDirectory) -> Result<(), OssError> {
        if self.rules.is_empty() {
            return Err(OssError::MalformedXml(
                "a replication configuration needs at least one rule".into(),
            ));
        }
        if self.rules.len() > MAX_RULES {
            return Err(OssError::InvalidRequest(format!(
                "a replication configuration has at most {MAX_RULES} rules"
            )));
        }
        let mut ids = HashSet::new();
        let mut priorities = HashSet::new();
        for r in &self.rules {
            if r.id.len() > 255 {
                return Err(OssError::InvalidArgument(
                    "Rule ID must be at most 255 characters".into(),
                ));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(OssError::InvalidRequest(format!(
                    "Rule ID '{}' is used by more than one rule",
                    r.id
                )));
            }
            if r.filtered && self.rules.len() > 1 && !priorities.insert(r.priority) {
                return Err(OssError::InvalidRequest(
                    "Priority must be unique among rules with a Filter".into(),
                ));
            }
            if r.delete_markers && !r.tags.is_empty() {
                return Err(OssError::InvalidRequest(
                    "Delete marker replication is not supported if any Tag filter is specified"
                        .into(),
                ));
            }
            crate::tagging::validate_tags(&r.tags, crate::tagging::MAX_OBJECT_TAGS)?;
            if !peers.has_peer(&r.destination.region) {
                return Err(OssError::InvalidRequest(format!(
                    "Destination region '{}' is not a registered region (see `feiyun region add`)",
                    r.destination.region
                )));
            }
        }
        Ok(())
    }

    /// The enabled rules that apply to a new version of `key` with `tags`: for each
    /// destination, the matching rule of highest priority.
    pub fn rules_for<'a>(
        &'a self,
        key: &str,
        tags: &[(String, String)],
    ) -> Vec<&'a ReplicationRule> {
        let mut best: Vec<&ReplicationRule> = Vec::new();
        for r in self
            .rules
            .iter()
            .filter(|r| r.enabled && r.matches(key, tags))
        {
            match best
                .iter_mut()
                .find(|b| b.destination.label() == r.destination.label())
            {
                Some(b) if b.priority < r.priority => *b = r,
                Some(_) => {}
                None => best.push(r),
            }
        }
        best
    }

    /// The state a new source version starts in, if any rule applies.
    pub fn initial_state(&self, key: &str, tags: &[(String, String)]) -> Option<ReplicationState> {
        let targets: Vec<(String, TargetStatus)> = self
            .rules_for(key, tags)
            .into_iter()
            .map(|r| (r.destination.label(), TargetStatus::Pending))
            .collect();
        (!targets.is_empty()).then_some(ReplicationState::Source(targets))
    }

    /// The rules that replicate a delete marker on `key`.
    pub fn marker_rules_for<'a>(&'a self, key: &str) -> Vec<&'a ReplicationRule> {
        self.rules_for(key, &[])
            .into_iter()
            .filter(|r| r.delete_markers)
            .collect()
    }
}

/// Destinations that an enabled ExistingObjectReplication rule sends to under `after` and
/// none did under `before`: their backfill is due.
pub fn backfills(
    before: Option<&ReplicationConfig>,
    after: Option<&ReplicationConfig>,
) -> Vec<String> {
    let existing = |c: Option<&ReplicationConfig>| -> Vec<String> {
        c.map(|c| {
            c.rules
                .iter()
                .filter(|r| r.enabled && r.existing_objects)
                .map(|r| r.destination.label())
                .collect()
        })
        .unwrap_or_default()
    };
    let had = existing(before);
    let mut due: Vec<String> = existing(after)
        .into_iter()
        .filter(|l| !had.contains(l))
        .collect();
    due.sort();
    due.dedup();
    due
}

impl ReplicationRule {
    pub fn matches(&self, key: &str, tags: &[(String, String)]) -> bool {
        key.starts_with(&self.prefix) && self.tags.iter().all(|t| tags.contains(t))
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// PutBucketReplication (`Some`) or DeleteBucketReplication (`None`). The bucket must be
    /// versioning-enabled, and stays so while the configuration exists.
    pub async fn put_replication(
        &self,
        bucket: &str,
        config: Option<ReplicationConfig>,
        peers: &dyn PeerDirectory,
    ) -> Result<(), OssError> {
        if let Some(c) = &config {
            c.validate(peers)?;
        }
        // The closure may run more than once (a conflicting commit retries it): the last run
        // saw what was replaced.
        let before = std::sync::Mutex::new(None);
        self.update_bucket(bucket, |r| {
            if config.is_some() && r.versioning != Versioning::Enabled {
                return Err(OssError::InvalidRequest(
                    "Versioning must be 'Enabled' on the bucket to apply a replication configuration"
                        .into(),
                ));
            }
            if let Ok(mut b) = before.lock() {
                *b = r.replication.clone();
            }
            r.replication = config.clone();
            Ok(())
        })
        .await?;
        let before = before.into_inner().unwrap_or_else(|p| p.into_inner());
        for label in backfills(before.as_ref(), config.as_ref()) {
            peers.backfill(bucket, &label);
        }
        Ok(())
    }

    /// The delete marker with id `version` of `bucket/key`, if that version is one.
    pub async fn marker(
        &self,
        bucket: &str,
        key: &str,
        version: VersionId,
    ) -> Result<Option<crate::records::MarkerRecord>, OssError> {
        let k = crate::keys::version(bucket, key, version);
        let row = self
            .blocking(move |m, _| Ok(m.get(feiyun_meta::Table::Versions, &k)?))
            .await?;
        match row {
            Some(b) => match crate::records::decode::<crate::records::VersionRow>(&b)? {
                crate::records::VersionRow::Marker(mk) => Ok(Some(mk)),
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// GetBucketReplication.
    pub async fn replication(&self, bucket: &str) -> Result<Option<ReplicationConfig>, OssError> {
        Ok(self.bucket(bucket).await?.replication)
    }

    /// Records the outcome of replicating one version to `label`. A version that changed or
    /// went away meanwhile is left alone.
    pub async fn set_replication_status(
        &self,
        bucket: &str,
        key: &str,
        version: VersionId,
        label: &str,
        status: TargetStatus,
    ) -> Result<(), OssError> {
        let label = label.to_owned();
        let done = self
            .update_version(
                bucket,
                key,
                Some(VersionSelector::Id(version)),
                move |_, r: &mut ObjectRecord, _| {
                    apply_status(r, &label, status);
                    Ok(())
                },
            )
            .await;
        match done {
            Err(e) if crate::versions::changed_meanwhile(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

fn apply_status(r: &mut ObjectRecord, label: &str, status: TargetStatus) {
    match &mut r.replication {
        Some(ReplicationState::Source(targets)) => {
            match targets.iter_mut().find(|(l, _)| l == label) {
                Some(t) => t.1 = status,
                None => targets.push((label.to_owned(), status)),
            }
        }
        Some(ReplicationState::Replica) => {}
        None => r.replication = Some(ReplicationState::Source(vec![(label.to_owned(), status)])),
    }
}

type StatusRow = (feiyun_meta::Table, Vec<u8>, Vec<u8>, ObjectRecord);

/// Where version `u.version`'s record lives now: its table, row key, stored bytes, record.
fn status_row<M: MetaStore>(m: &M, u: &StatusUpdate) -> Result<Option<StatusRow>, OssError> {
    use crate::records::{VersionRow, decode};
    use feiyun_meta::Table;
    let okey = crate::keys::object(&u.bucket, &u.key);
    if let Some(b) = m.get(Table::Objects, &okey)? {
        let r: ObjectRecord = decode(&b)?;
        if r.version == u.version {
            return Ok(Some((Table::Objects, okey, b, r)));
        }
    }
    let vkey = crate::keys::version(&u.bucket, &u.key, u.version);
    Ok(match m.get(Table::Versions, &vkey)? {
        Some(b) => match decode::<VersionRow>(&b)? {
            VersionRow::Object(r) => Some((Table::Versions, vkey, b, *r)),
            _ => None,
        },
        None => None,
    })
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Records many outcomes in one commit (the worker's completions, batched). Versions gone
    /// meanwhile are skipped; if another write touched one of the rows, each update is
    /// retried on its own.
    pub async fn set_replication_statuses(
        &self,
        updates: Vec<StatusUpdate>,
    ) -> Result<(), OssError> {
        use feiyun_meta::{MetaError, Table, WriteBatch};
        let updates = std::sync::Arc::new(updates);
        let planned = updates.clone();
        let batch = self
            .blocking(move |m, _| {
                // One row per version, whatever number of destinations it reports.
                let mut rows: Vec<(&StatusUpdate, StatusRow)> = Vec::new();
                for u in planned.iter() {
                    let same = |(o, _): &&mut (&StatusUpdate, StatusRow)| {
                        o.version == u.version && o.key == u.key && o.bucket == u.bucket
                    };
                    if let Some((_, row)) = rows.iter_mut().find(same) {
                        apply_status(&mut row.3, &u.label, u.status);
                    } else if let Some(mut row) = status_row(m, u)? {
                        apply_status(&mut row.3, &u.label, u.status);
                        rows.push((u, row));
                    }
                }
                let mut batch = WriteBatch::new();
                // The worker's cursor, stored durably afterwards, makes these durable too; a
                // crash before that replays the events and writes them again.
                batch.deferred = true;
                for (_, (table, key, old, rec)) in rows {
                    let value = if table == Table::Objects {
                        crate::records::encode(&rec)?
                    } else {
                        crate::records::encode(&crate::records::VersionRow::Object(Box::new(rec)))?
                    };
                    batch
                        .check_value(table, key.clone(), Some(old))
                        .put(table, key, value);
                }
                Ok(batch)
            })
            .await?;
        if batch.mutations.is_empty() {
            return Ok(());
        }
        match self.meta.commit(batch).await {
            Ok(()) => Ok(()),
            Err(MetaError::Conflict(_)) => {
                for u in updates.iter() {
                    self.set_replication_status(&u.bucket, &u.key, u.version, &u.label, u.status)
                        .await?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Peers(Vec<&'static str>);
    impl PeerDirectory for Peers {
        fn has_peer(&self, name: &str) -> bool {
            self.0.contains(&name)
        }
    }

    fn rule(id: &str, priority: i32, prefix: &str, region: &str, bucket: &str) -> ReplicationRule {
        ReplicationRule {
            id: id.into(),
            priority,
            enabled: true,
            prefix: prefix.into(),
            tags: vec![],
            filtered: true,
            destination: Destination {
                arn: format!("arn:aws:s3:{region}::{bucket}"),
                region: region.into(),
                bucket: bucket.into(),
                storage_class: None,
                replica_kms_key: None,
            },
            delete_markers: true,
            existing_objects: false,
        }
    }

    #[test]
    fn arns_name_a_region_and_a_bucket() {
        assert_eq!(
            Destination::parse_arn("arn:aws:s3:eu-west::backup").unwrap(),
            ("eu-west".into(), "backup".into())
        );
        for bad in [
            "arn:aws:s3:::backup",
            "arn:aws:iam:eu::backup",
            "backup",
            "arn:aws:s3:eu::",
            "arn:aws:s3:eu::a/b",
            "arn:aws:s3:eu::UPPER",
        ] {
            assert!(Destination::parse_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_highest_priority_rule_per_destination_wins() {
        let mut low = rule("low", 1, "", "east", "b");
        low.tags = vec![("k".into(), "v".into())];
        low.delete_markers = false;
        let c = ReplicationConfig {
            role: String::new(),
            rules: vec![
                low,
                rule("high", 5, "logs/", "east", "b"),
                rule("other", 2, "", "west", "c"),
            ],
        };
        let tags = vec![("k".into(), "v".into())];
        let got: Vec<&str> = c
            .rules_for("logs/a", &tags)
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(got, vec!["high", "other"]);
        let got: Vec<&str> = c
            .rules_for("data/a", &tags)
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(got, vec!["low", "other"]);
        let got: Vec<&str> = c
            .rules_for("data/a", &[])
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(got, vec!["other"]);
        assert_eq!(
            c.initial_state("data/a", &[]),
            Some(ReplicationState::Source(vec![(
                "west/c".into(),
                TargetStatus::Pending
            )]))
        );
        let mut disabled = c.clone();
        for r in &mut disabled.rules {
            r.enabled = false;
        }
        assert_eq!(disabled.initial_state("logs/a", &tags), None);
    }

    #[test]
    fn validation_refuses_what_s3_refuses_and_unknown_regions() {
        let peers = Peers(vec!["east"]);
        let ok = ReplicationConfig {
            role: "r".into(),
            rules: vec![
                rule("a", 1, "", "east", "b"),
                rule("b", 2, "x/", "east", "c"),
            ],
        };
        ok.validate(&peers).unwrap();
        let mut dup = ok.clone();
        dup.rules[1].id = "a".into();
        assert!(matches!(
            dup.validate(&peers),
            Err(OssError::InvalidRequest(_))
        ));
        let mut prio = ok.clone();
        prio.rules[1].priority = 1;
        assert!(matches!(
            prio.validate(&peers),
            Err(OssError::InvalidRequest(_))
        ));
        let mut unknown = ok.clone();
        unknown.rules[0].destination.region = "mars".into();
        assert!(
            matches!(unknown.validate(&peers), Err(OssError::InvalidRequest(m)) if m.contains("mars"))
        );
        let mut tagged = ok.clone();
        tagged.rules[0].tags = vec![("k".into(), "v".into())];
        assert!(tagged.validate(&peers).is_err());
        let empty = ReplicationConfig {
            role: String::new(),
            rules: vec![],
        };
        assert!(matches!(
            empty.validate(&peers),
            Err(OssError::MalformedXml(_))
        ));
    }

    #[test]
    fn the_header_summarises_every_destination() {
        use TargetStatus::*;
        let s = |v: Vec<TargetStatus>| {
            ReplicationState::Source(
                v.into_iter()
                    .enumerate()
                    .map(|(i, s)| (i.to_string(), s))
                    .collect(),
            )
            .header()
        };
        assert_eq!(s(vec![Completed, Completed]), "COMPLETED");
        assert_eq!(s(vec![Completed, Pending]), "PENDING");
        assert_eq!(s(vec![Pending, Failed]), "FAILED");
        assert_eq!(ReplicationState::Replica.header(), "REPLICA");
    }

    #[test]
    fn existing_object_rules_backfill_only_new_destinations() {
        let with = |rules: Vec<ReplicationRule>| ReplicationConfig {
            role: String::new(),
            rules,
        };
        let existing = |id: &str, bucket: &str| ReplicationRule {
            existing_objects: true,
            ..rule(id, 0, "", "dr", bucket)
        };
        let a = with(vec![existing("a", "x"), rule("b", 1, "", "dr", "y")]);
        assert_eq!(backfills(None, Some(&a)), vec!["dr/x".to_owned()]);
        // Storing the same rules again copies nothing again.
        assert!(backfills(Some(&a), Some(&a)).is_empty());
        let b = with(vec![existing("a", "x"), existing("b", "y")]);
        assert_eq!(backfills(Some(&a), Some(&b)), vec!["dr/y".to_owned()]);
        let mut off = existing("c", "z");
        off.enabled = false;
        assert!(backfills(None, Some(&with(vec![off]))).is_empty());
        assert!(backfills(Some(&b), None).is_empty());
    }
}

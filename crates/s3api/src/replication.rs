//! Put/Get/DeleteBucketReplication: S3's replication configuration XML to and from the
//! object service's rules, and the peer check that a destination names a known region.

use feiyun_oss::replication::{Destination as Dest, ReplicationConfig, ReplicationRule};
use feiyun_oss::{BlobStore, MetaStore, OssError, Unconfigured};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::{FeiyunS3, fail};

fn rule_in(r: &ReplicationRule_, n: usize) -> Result<ReplicationRule, OssError> {
    let (prefix, tags, filtered) = match (&r.filter, &r.prefix) {
        (Some(_), Some(_)) => {
            return Err(OssError::MalformedXml(
                "a rule has either Filter or Prefix, not both".into(),
            ));
        }
        (Some(f), None) => {
            let mut prefix = f.prefix.clone().unwrap_or_default();
            let mut tags = crate::headers::tag_pairs(&f.tag);
            if let Some(and) = &f.and {
                if !prefix.is_empty() || !tags.is_empty() {
                    return Err(OssError::MalformedXml(
                        "a Filter holds one of Prefix, Tag or And".into(),
                    ));
                }
                prefix = and.prefix.clone().unwrap_or_default();
                tags = crate::headers::tag_pairs(and.tags.iter().flatten());
            }
            (prefix, tags, true)
        }
        (None, p) => (p.clone().unwrap_or_default(), Vec::new(), false),
    };
    let (region, bucket) = Dest::parse_arn(&r.destination.bucket)?;
    let enabled = match r.status.as_str() {
        ReplicationRuleStatus::ENABLED => true,
        ReplicationRuleStatus::DISABLED => false,
        other => {
            return Err(OssError::MalformedXml(format!(
                "rule Status must be Enabled or Disabled, not '{other}'"
            )));
        }
    };
    let on = |s: Option<&str>| s == Some("Enabled");
    Ok(ReplicationRule {
        // S3 names a rule that has no ID itself.
        id: r.id.clone().unwrap_or_else(|| format!("rule-{}", n + 1)),
        priority: r.priority.unwrap_or(0),
        enabled,
        prefix,
        tags,
        filtered,
        destination: Dest {
            arn: r.destination.bucket.clone(),
            region,
            bucket,
            storage_class: r
                .destination
                .storage_class
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            replica_kms_key: r
                .destination
                .encryption_configuration
                .as_ref()
                .and_then(|e| e.replica_kms_key_id.clone()),
        },
        // V1 rules (a bare Prefix) replicate delete markers, as in S3.
        delete_markers: if filtered {
            on(r.delete_marker_replication
                .as_ref()
                .and_then(|d| d.status.as_ref())
                .map(|s| s.as_str()))
        } else {
            true
        },
        existing_objects: on(r
            .existing_object_replication
            .as_ref()
            .map(|e| e.status.as_str())),
    })
}

type ReplicationRule_ = s3s::dto::ReplicationRule;

fn rule_out(r: ReplicationRule) -> ReplicationRule_ {
    let tag = |(k, v): (String, String)| Tag {
        key: Some(k),
        value: Some(v),
    };
    let filter = r.filtered.then(|| {
        if r.tags.is_empty() {
            ReplicationRuleFilter {
                prefix: Some(r.prefix.clone()),
                ..Default::default()
            }
        } else if r.tags.len() == 1 && r.prefix.is_empty() {
            ReplicationRuleFilter {
                tag: r.tags.clone().into_iter().map(tag).next(),
                ..Default::default()
            }
        } else {
            ReplicationRuleFilter {
                and: Some(ReplicationRuleAndOperator {
                    prefix: Some(r.prefix.clone()),
                    tags: Some(r.tags.clone().into_iter().map(tag).collect()),
                }),
                ..Default::default()
            }
        }
    });
    let status = |on: bool| if on { "Enabled" } else { "Disabled" };
    ReplicationRule_ {
        id: Some(r.id),
        priority: r.filtered.then_some(r.priority),
        status: ReplicationRuleStatus::from(status(r.enabled).to_owned()),
        prefix: (!r.filtered).then_some(r.prefix),
        filter,
        delete_marker_replication: r.filtered.then(|| DeleteMarkerReplication {
            status: Some(DeleteMarkerReplicationStatus::from(
                status(r.delete_markers).to_owned(),
            )),
        }),
        existing_object_replication: r.existing_objects.then(|| ExistingObjectReplication {
            status: ExistingObjectReplicationStatus::from("Enabled".to_owned()),
        }),
        destination: Destination {
            bucket: r.destination.arn,
            storage_class: r.destination.storage_class.map(StorageClass::from),
            encryption_configuration: r.destination.replica_kms_key.map(|k| {
                EncryptionConfiguration {
                    replica_kms_key_id: Some(k),
                }
            }),
            ..Default::default()
        },
        source_selection_criteria: None,
    }
}

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_put_bucket_replication(
        &self,
        req: S3Request<PutBucketReplicationInput>,
    ) -> S3Result<S3Response<PutBucketReplicationOutput>> {
        let i = &req.input;
        let cfg = &i.replication_configuration;
        let rules = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(n, r)| rule_in(r, n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail(&req))?;
        let config = ReplicationConfig {
            role: cfg.role.clone(),
            rules,
        };
        self.oss
            .put_replication(&i.bucket, Some(config), self.peers.as_ref())
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutBucketReplicationOutput::default()))
    }

    pub(crate) async fn op_get_bucket_replication(
        &self,
        req: S3Request<GetBucketReplicationInput>,
    ) -> S3Result<S3Response<GetBucketReplicationOutput>> {
        let cfg = self
            .oss
            .replication(&req.input.bucket)
            .await
            .map_err(fail(&req))?
            .ok_or(OssError::NotConfigured(Unconfigured::Replication))
            .map_err(fail(&req))?;
        Ok(S3Response::new(GetBucketReplicationOutput {
            replication_configuration: Some(ReplicationConfiguration {
                role: cfg.role,
                rules: cfg.rules.into_iter().map(rule_out).collect(),
            }),
        }))
    }

    pub(crate) async fn op_delete_bucket_replication(
        &self,
        req: S3Request<DeleteBucketReplicationInput>,
    ) -> S3Result<S3Response<DeleteBucketReplicationOutput>> {
        self.oss
            .put_replication(&req.input.bucket, None, self.peers.as_ref())
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(DeleteBucketReplicationOutput::default()))
    }
}

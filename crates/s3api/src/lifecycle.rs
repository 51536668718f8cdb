//! Put/Get/DeleteBucketLifecycleConfiguration: S3's XML model to and from the service's
//! `LifecycleConfig`.

use feiyun_oss::lifecycle::{
    Expiration, Filter, LifecycleConfig, NoncurrentExpiration, NoncurrentTransition, Rule,
    Transition as RuleTransition,
};
use feiyun_oss::{BlobStore, MetaStore, OssError};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::{FeiyunS3, fail, headers};

fn non_negative(n: Option<i32>, what: &str) -> Result<Option<u32>, OssError> {
    n.map(|v| {
        u32::try_from(v)
            .map_err(|_| OssError::InvalidArgument(format!("'{what}' must be a positive integer")))
    })
    .transpose()
}

fn size(n: Option<i64>) -> Result<Option<u64>, OssError> {
    n.map(|v| {
        u64::try_from(v).map_err(|_| {
            OssError::InvalidArgument("object size filters must not be negative".into())
        })
    })
    .transpose()
}

fn class_in(c: &Option<TransitionStorageClass>, what: &str) -> Result<String, OssError> {
    c.as_ref()
        .map(|c| c.as_str().to_owned())
        .ok_or_else(|| OssError::MalformedXml(format!("{what} needs a StorageClass")))
}

fn rule_in(r: &LifecycleRule, index: usize) -> Result<Rule, OssError> {
    let transitions = r
        .transitions
        .iter()
        .flatten()
        .map(|t| {
            Ok(RuleTransition {
                days: non_negative(t.days, "Days")?,
                date_ms: t.date.as_ref().map(headers::unix_millis),
                storage_class: class_in(&t.storage_class, "Transition")?,
            })
        })
        .collect::<Result<Vec<_>, OssError>>()?;
    let noncurrent_transitions = r
        .noncurrent_version_transitions
        .iter()
        .flatten()
        .map(|t| {
            Ok(NoncurrentTransition {
                days: non_negative(t.noncurrent_days, "NoncurrentDays")?.ok_or_else(|| {
                    OssError::MalformedXml(
                        "NoncurrentVersionTransition needs NoncurrentDays".into(),
                    )
                })?,
                newer_noncurrent_versions: non_negative(
                    t.newer_noncurrent_versions,
                    "NewerNoncurrentVersions",
                )?,
                storage_class: class_in(&t.storage_class, "NoncurrentVersionTransition")?,
            })
        })
        .collect::<Result<Vec<_>, OssError>>()?;
    let enabled = match r.status.as_str() {
        ExpirationStatus::ENABLED => true,
        ExpirationStatus::DISABLED => false,
        other => {
            return Err(OssError::MalformedXml(format!(
                "Status must be Enabled or Disabled, not {other:?}"
            )));
        }
    };
    let mut filter = Filter::default();
    if let Some(f) = &r.filter {
        let parts = usize::from(f.prefix.is_some())
            + usize::from(f.tag.is_some())
            + usize::from(f.and.is_some())
            + usize::from(f.object_size_greater_than.is_some())
            + usize::from(f.object_size_less_than.is_some());
        if parts > 1 {
            return Err(OssError::MalformedXml(
                "a Filter holds one of Prefix, Tag, ObjectSize… or And".into(),
            ));
        }
        filter.prefix = f.prefix.clone().unwrap_or_default();
        filter.tags = crate::headers::tag_pairs(&f.tag);
        filter.size_greater_than = size(f.object_size_greater_than)?;
        filter.size_less_than = size(f.object_size_less_than)?;
        if let Some(a) = &f.and {
            filter.prefix = a.prefix.clone().unwrap_or_default();
            filter.tags = crate::headers::tag_pairs(a.tags.iter().flatten());
            filter.size_greater_than = size(a.object_size_greater_than)?;
            filter.size_less_than = size(a.object_size_less_than)?;
        }
        if r.prefix.is_some() {
            return Err(OssError::MalformedXml(
                "a rule has either Filter or the legacy Prefix, not both".into(),
            ));
        }
    } else if let Some(p) = &r.prefix {
        filter.prefix = p.clone();
    }
    let expiration = match &r.expiration {
        None => None,
        Some(e) => Some(Expiration {
            days: non_negative(e.days, "Days")?,
            date_ms: e.date.as_ref().map(headers::unix_millis),
            expired_object_delete_marker: e.expired_object_delete_marker.unwrap_or(false),
        }),
    };
    let noncurrent_expiration = match &r.noncurrent_version_expiration {
        None => None,
        Some(n) => Some(NoncurrentExpiration {
            days: non_negative(n.noncurrent_days, "NoncurrentDays")?.ok_or_else(|| {
                OssError::MalformedXml("NoncurrentVersionExpiration needs NoncurrentDays".into())
            })?,
            newer_noncurrent_versions: non_negative(
                n.newer_noncurrent_versions,
                "NewerNoncurrentVersions",
            )?,
        }),
    };
    let abort_multipart_days = match &r.abort_incomplete_multipart_upload {
        None => None,
        Some(a) => Some(
            non_negative(a.days_after_initiation, "DaysAfterInitiation")?.ok_or_else(|| {
                OssError::MalformedXml(
                    "AbortIncompleteMultipartUpload needs DaysAfterInitiation".into(),
                )
            })?,
        ),
    };
    Ok(Rule {
        // S3 names a rule without an ID itself.
        id: r
            .id
            .clone()
            .unwrap_or_else(|| format!("rule-{}", index + 1)),
        enabled,
        filter,
        expiration,
        noncurrent_expiration,
        abort_multipart_days,
        transitions,
        noncurrent_transitions,
    })
}

fn rule_out(r: Rule) -> LifecycleRule {
    let f = r.filter;
    let tag = |(k, v): (String, String)| Tag {
        key: Some(k),
        value: Some(v),
    };
    let simple = f.tags.len()
        + usize::from(f.size_greater_than.is_some())
        + usize::from(f.size_less_than.is_some())
        + usize::from(!f.prefix.is_empty())
        <= 1;
    let filter = if simple {
        LifecycleRuleFilter {
            prefix: (!f.prefix.is_empty()
                || (f.tags.is_empty()
                    && f.size_greater_than.is_none()
                    && f.size_less_than.is_none()))
            .then_some(f.prefix),
            tag: f.tags.into_iter().next().map(tag),
            object_size_greater_than: f.size_greater_than.map(|n| n as i64),
            object_size_less_than: f.size_less_than.map(|n| n as i64),
            and: None,
        }
    } else {
        LifecycleRuleFilter {
            and: Some(LifecycleRuleAndOperator {
                prefix: (!f.prefix.is_empty()).then_some(f.prefix),
                tags: (!f.tags.is_empty()).then(|| f.tags.into_iter().map(tag).collect()),
                object_size_greater_than: f.size_greater_than.map(|n| n as i64),
                object_size_less_than: f.size_less_than.map(|n| n as i64),
            }),
            ..Default::default()
        }
    };
    LifecycleRule {
        id: Some(r.id),
        status: ExpirationStatus::from_static(if r.enabled {
            ExpirationStatus::ENABLED
        } else {
            ExpirationStatus::DISABLED
        }),
        filter: Some(filter),
        expiration: r.expiration.map(|e| LifecycleExpiration {
            days: e.days.map(|d| d as i32),
            date: e.date_ms.map(headers::timestamp),
            expired_object_delete_marker: e.expired_object_delete_marker.then_some(true),
        }),
        noncurrent_version_expiration: r.noncurrent_expiration.map(|n| {
            NoncurrentVersionExpiration {
                noncurrent_days: Some(n.days as i32),
                newer_noncurrent_versions: n.newer_noncurrent_versions.map(|v| v as i32),
            }
        }),
        abort_incomplete_multipart_upload: r.abort_multipart_days.map(|d| {
            AbortIncompleteMultipartUpload {
                days_after_initiation: Some(d as i32),
            }
        }),
        prefix: None,
        transitions: (!r.transitions.is_empty()).then(|| {
            r.transitions
                .into_iter()
                .map(|t| Transition {
                    days: t.days.map(|d| d as i32),
                    date: t.date_ms.map(headers::timestamp),
                    storage_class: Some(TransitionStorageClass::from(t.storage_class)),
                })
                .collect()
        }),
        noncurrent_version_transitions: (!r.noncurrent_transitions.is_empty()).then(|| {
            r.noncurrent_transitions
                .into_iter()
                .map(|t| NoncurrentVersionTransition {
                    noncurrent_days: Some(t.days as i32),
                    newer_noncurrent_versions: t.newer_noncurrent_versions.map(|v| v as i32),
                    storage_class: Some(TransitionStorageClass::from(t.storage_class)),
                })
                .collect()
        }),
    }
}

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let i = &req.input;
        let Some(cfg) = &i.lifecycle_configuration else {
            return Err(fail(&req)(OssError::MalformedXml(
                "LifecycleConfiguration is required".into(),
            )));
        };
        let rules = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(n, r)| rule_in(r, n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail(&req))?;
        self.oss
            .put_lifecycle(&i.bucket, Some(LifecycleConfig { rules }))
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(
            PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    pub(crate) async fn op_get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let cfg = self
            .oss
            .lifecycle(&req.input.bucket)
            .await
            .map_err(fail(&req))?
            .ok_or(OssError::NoSuchLifecycleConfiguration)
            .map_err(fail(&req))?;
        Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
            rules: Some(cfg.rules.into_iter().map(rule_out).collect()),
            transition_default_minimum_object_size: Some(
                TransitionDefaultMinimumObjectSize::from_static(
                    TransitionDefaultMinimumObjectSize::ALL_STORAGE_CLASSES_128K,
                ),
            ),
        }))
    }

    pub(crate) async fn op_delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.oss
            .put_lifecycle(&req.input.bucket, None)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
    }
}

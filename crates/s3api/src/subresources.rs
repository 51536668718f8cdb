//! Object and bucket subresources: tagging, Object Lock (configuration, retention, legal
//! hold) and the ACL operations clients probe.

use feiyun_oss::{BlobStore, DefaultRetention, LockMode, MetaStore, OssError, Retention};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::versioning::selector;
use crate::{FeiyunS3, fail, headers};

fn tags_in(set: &[Tag]) -> Result<Vec<(String, String)>, OssError> {
    set.iter()
        .map(|t| match (&t.key, &t.value) {
            (Some(k), Some(v)) => Ok((k.clone(), v.clone())),
            (Some(k), None) => Ok((k.clone(), String::new())),
            _ => Err(OssError::MalformedXml("a Tag needs a Key".into())),
        })
        .collect()
}

fn tags_out(tags: Vec<(String, String)>) -> TagSet {
    tags.into_iter()
        .map(|(k, v)| Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}

pub(crate) fn lock_mode(s: &str) -> Result<LockMode, OssError> {
    match s {
        ObjectLockMode::GOVERNANCE => Ok(LockMode::Governance),
        ObjectLockMode::COMPLIANCE => Ok(LockMode::Compliance),
        other => Err(OssError::InvalidArgument(format!(
            "Unknown Object Lock mode {other:?}"
        ))),
    }
}

/// The retention a PUT asks for with `x-amz-object-lock-mode` and `-retain-until-date`,
/// which S3 requires together.
pub(crate) fn put_retention(
    mode: &Option<ObjectLockMode>,
    until: &Option<Timestamp>,
) -> Result<Option<Retention>, OssError> {
    match (mode, until) {
        (None, None) => Ok(None),
        (Some(m), Some(u)) => Ok(Some(Retention {
            mode: lock_mode(m.as_str())?,
            until_ms: headers::unix_millis(u),
        })),
        _ => Err(OssError::InvalidArgument(
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied"
                .into(),
        )),
    }
}

pub(crate) fn legal_hold_on(s: &Option<ObjectLockLegalHoldStatus>) -> Result<bool, OssError> {
    match s.as_ref().map(|s| s.as_str()) {
        None | Some(ObjectLockLegalHoldStatus::OFF) => Ok(false),
        Some(ObjectLockLegalHoldStatus::ON) => Ok(true),
        Some(other) => Err(OssError::InvalidArgument(format!(
            "Legal Hold status must be ON or OFF, not {other:?}"
        ))),
    }
}

fn owner_full_control() -> (Option<Grants>, Option<Owner>) {
    let owner = crate::bucket::owner();
    let grant = Grant {
        grantee: Some(Grantee {
            display_name: owner.display_name.clone(),
            email_address: None,
            id: owner.id.clone(),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    };
    (Some(vec![grant]), Some(owner))
}

/// Only the owner's full control exists as an ACL; access beyond the owner is granted with
/// bucket policies. A public ACL is refused as S3 refuses it while BlockPublicAcls is on
/// (the default), and otherwise reported as not implemented rather than silently ignored.
fn only_private(
    canned: Option<&str>,
    grants: bool,
    policy: bool,
    block_public_acls: bool,
) -> Result<(), OssError> {
    let public = matches!(
        canned,
        Some("public-read" | "public-read-write" | "authenticated-read")
    );
    if public && block_public_acls {
        return Err(OssError::AccessDenied(
            "public ACLs are blocked by the bucket's public access block".into(),
        ));
    }
    match canned {
        None | Some("private") if !grants && !policy => Ok(()),
        None if policy => Err(OssError::NotImplemented(
            "access control policies other than the owner's full control are not supported yet"
                .into(),
        )),
        _ => Err(OssError::NotImplemented(
            "only the canned ACL 'private' is supported; grant access with a bucket policy".into(),
        )),
    }
}

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let i = &req.input;
        let tags = tags_in(&i.tagging.tag_set).map_err(fail(&req))?;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        let version_id = self
            .oss
            .put_object_tags(&i.bucket, &i.key, v, tags)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutObjectTaggingOutput {
            version_id: Some(version_id),
        }))
    }

    pub(crate) async fn op_get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let i = &req.input;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        let (tags, version_id) = self
            .oss
            .object_tags(&i.bucket, &i.key, v)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tags_out(tags),
            version_id: Some(version_id),
        }))
    }

    pub(crate) async fn op_delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let i = &req.input;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        let version_id = self
            .oss
            .put_object_tags(&i.bucket, &i.key, v, Vec::new())
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(DeleteObjectTaggingOutput {
            version_id: Some(version_id),
        }))
    }

    pub(crate) async fn op_put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let i = &req.input;
        let tags = tags_in(&i.tagging.tag_set).map_err(fail(&req))?;
        self.oss
            .put_bucket_tags(&i.bucket, Some(tags))
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutBucketTaggingOutput::default()))
    }

    pub(crate) async fn op_get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let tags = self
            .oss
            .bucket_tags(&req.input.bucket)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(GetBucketTaggingOutput {
            tag_set: tags_out(tags),
        }))
    }

    pub(crate) async fn op_delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.oss
            .put_bucket_tags(&req.input.bucket, None)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
    }

    pub(crate) async fn op_put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        let i = &req.input;
        let Some(cfg) = &i.object_lock_configuration else {
            return Err(fail(&req)(OssError::MalformedXml(
                "ObjectLockConfiguration is required".into(),
            )));
        };
        if cfg.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some(ObjectLockEnabled::ENABLED)
        {
            return Err(fail(&req)(OssError::MalformedXml(
                "ObjectLockEnabled must be Enabled".into(),
            )));
        }
        let default = match cfg.rule.as_ref().and_then(|r| r.default_retention.as_ref()) {
            None => None,
            Some(d) => {
                let Some(mode) = &d.mode else {
                    return Err(fail(&req)(OssError::MalformedXml(
                        "DefaultRetention needs a Mode".into(),
                    )));
                };
                let nonneg = |n: Option<i32>| -> Result<Option<u32>, OssError> {
                    n.map(|n| {
                        u32::try_from(n).map_err(|_| {
                            OssError::InvalidArgument(
                                "Default retention period must be a positive integer value".into(),
                            )
                        })
                    })
                    .transpose()
                };
                Some(DefaultRetention {
                    mode: lock_mode(mode.as_str()).map_err(fail(&req))?,
                    days: nonneg(d.days).map_err(fail(&req))?,
                    years: nonneg(d.years).map_err(fail(&req))?,
                })
            }
        };
        self.oss
            .put_object_lock_config(&i.bucket, default)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
    }

    pub(crate) async fn op_get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        let d = self
            .oss
            .object_lock_config(&req.input.bucket)
            .await
            .map_err(fail(&req))?;
        let rule = d.map(|d| ObjectLockRule {
            default_retention: Some(s3s::dto::DefaultRetention {
                mode: Some(ObjectLockRetentionMode::from(d.mode.as_str().to_owned())),
                days: d.days.map(|n| n as i32),
                years: d.years.map(|n| n as i32),
            }),
        });
        Ok(S3Response::new(GetObjectLockConfigurationOutput {
            object_lock_configuration: Some(ObjectLockConfiguration {
                object_lock_enabled: Some(ObjectLockEnabled::from_static(
                    ObjectLockEnabled::ENABLED,
                )),
                rule,
            }),
        }))
    }

    pub(crate) async fn op_put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        let i = &req.input;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        let retention = match &i.retention {
            None => None,
            Some(r) => match (&r.mode, &r.retain_until_date) {
                (None, None) => None,
                (Some(m), Some(d)) => Some(Retention {
                    mode: lock_mode(m.as_str()).map_err(fail(&req))?,
                    until_ms: headers::unix_millis(d),
                }),
                _ => {
                    return Err(fail(&req)(OssError::MalformedXml(
                        "Retention needs both Mode and RetainUntilDate".into(),
                    )));
                }
            },
        };
        self.oss
            .put_object_retention(
                &i.bucket,
                &i.key,
                v,
                retention,
                i.bypass_governance_retention.unwrap_or(false),
            )
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutObjectRetentionOutput::default()))
    }

    pub(crate) async fn op_get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        let i = &req.input;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        let r = self
            .oss
            .object_retention(&i.bucket, &i.key, v)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(GetObjectRetentionOutput {
            retention: Some(ObjectLockRetention {
                mode: Some(ObjectLockRetentionMode::from(r.mode.as_str().to_owned())),
                retain_until_date: Some(headers::timestamp(r.until_ms)),
            }),
        }))
    }

    pub(crate) async fn op_put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        let i = &req.input;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        let Some(status) = i.legal_hold.as_ref().map(|h| h.status.clone()) else {
            return Err(fail(&req)(OssError::MalformedXml(
                "LegalHold is required".into(),
            )));
        };
        let on = legal_hold_on(&status).map_err(fail(&req))?;
        self.oss
            .put_legal_hold(&i.bucket, &i.key, v, on)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
    }

    pub(crate) async fn op_get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        let i = &req.input;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        let on = self
            .oss
            .legal_hold(&i.bucket, &i.key, v)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(GetObjectLegalHoldOutput {
            legal_hold: Some(ObjectLockLegalHold {
                status: Some(ObjectLockLegalHoldStatus::from_static(if on {
                    ObjectLockLegalHoldStatus::ON
                } else {
                    ObjectLockLegalHoldStatus::OFF
                })),
            }),
        }))
    }

    pub(crate) async fn op_get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        self.oss
            .bucket(&req.input.bucket)
            .await
            .map_err(fail(&req))?;
        let (grants, owner) = owner_full_control();
        Ok(S3Response::new(GetBucketAclOutput { grants, owner }))
    }

    pub(crate) async fn op_get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let i = &req.input;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        self.oss
            .load_version(&i.bucket, &i.key, v)
            .await
            .map_err(fail(&req))?;
        let (grants, owner) = owner_full_control();
        Ok(S3Response::new(GetObjectAclOutput {
            grants,
            owner,
            ..Default::default()
        }))
    }

    pub(crate) async fn op_put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let i = &req.input;
        let grants = i.grant_full_control.is_some()
            || i.grant_read.is_some()
            || i.grant_read_acp.is_some()
            || i.grant_write.is_some()
            || i.grant_write_acp.is_some();
        let block = self
            .public_access_block(&i.bucket)
            .await
            .map_err(fail(&req))?
            .is_some_and(|b| b.block_public_acls);
        only_private(
            i.acl.as_ref().map(|a| a.as_str()),
            grants,
            i.access_control_policy.is_some(),
            block,
        )
        .map_err(fail(&req))?;
        self.oss.bucket(&i.bucket).await.map_err(fail(&req))?;
        Ok(S3Response::new(PutBucketAclOutput::default()))
    }

    pub(crate) async fn op_put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let i = &req.input;
        let grants = i.grant_full_control.is_some()
            || i.grant_read.is_some()
            || i.grant_read_acp.is_some()
            || i.grant_write.is_some()
            || i.grant_write_acp.is_some();
        let block = self
            .public_access_block(&i.bucket)
            .await
            .map_err(fail(&req))?
            .is_some_and(|b| b.block_public_acls);
        only_private(
            i.acl.as_ref().map(|a| a.as_str()),
            grants,
            i.access_control_policy.is_some(),
            block,
        )
        .map_err(fail(&req))?;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        self.oss
            .load_version(&i.bucket, &i.key, v)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }
}

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let i = &req.input;
        let mut rules = Vec::new();
        for r in &i.cors_configuration.cors_rules {
            let max_age_secs = match r.max_age_seconds {
                None => None,
                Some(n) => Some(u32::try_from(n).map_err(|_| {
                    fail(&req)(OssError::MalformedXml(
                        "MaxAgeSeconds must not be negative".into(),
                    ))
                })?),
            };
            rules.push(feiyun_oss::cors::CorsRule {
                id: r.id.clone(),
                allowed_origins: r.allowed_origins.clone(),
                allowed_methods: r.allowed_methods.clone(),
                allowed_headers: r.allowed_headers.clone().unwrap_or_default(),
                expose_headers: r.expose_headers.clone().unwrap_or_default(),
                max_age_secs,
            });
        }
        self.oss
            .put_cors(&i.bucket, Some(feiyun_oss::cors::CorsConfig { rules }))
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutBucketCorsOutput::default()))
    }

    pub(crate) async fn op_get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let cfg = self
            .oss
            .cors(&req.input.bucket)
            .await
            .map_err(fail(&req))?
            .ok_or(OssError::NoSuchCorsConfiguration)
            .map_err(fail(&req))?;
        let rules = cfg
            .rules
            .into_iter()
            .map(|r| CORSRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: (!r.allowed_headers.is_empty()).then_some(r.allowed_headers),
                expose_headers: (!r.expose_headers.is_empty()).then_some(r.expose_headers),
                max_age_seconds: r.max_age_secs.map(|n| n as i32),
            })
            .collect();
        Ok(S3Response::new(GetBucketCorsOutput {
            cors_rules: Some(rules),
        }))
    }

    pub(crate) async fn op_delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.oss
            .put_cors(&req.input.bucket, None)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(DeleteBucketCorsOutput::default()))
    }
}

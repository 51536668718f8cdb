//! PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects.

use feiyun_oss::{BlobStore, ByteRange, Conditions, GetRequest, MetaStore, ObjectRead, OssError};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::headers::{self, BodyChecks};
use crate::sse::{customer_headers, key_check, sse_headers, sse_out};
use crate::versioning::selector;
use crate::{FeiyunS3, fail, request_id};

/// GetObject and HeadObject answer with the same fields in two distinct s3s types.
macro_rules! object_output {
    ($ty:ident, $read:expr, $m:expr) => {{
        let read = &$read;
        let m = $m;
        let sse = sse_out(read.record.sse());
        $ty {
            server_side_encryption: sse.sse,
            ssekms_key_id: sse.kms_key,
            bucket_key_enabled: sse.bucket_key,
            sse_customer_algorithm: sse.customer_algorithm,
            sse_customer_key_md5: sse.customer_md5,
            accept_ranges: Some("bytes".into()),
            content_length: Some(read.content_length as i64),
            content_range: m.content_range,
            content_type: m.content_type,
            content_encoding: m.content_encoding,
            content_disposition: m.content_disposition,
            content_language: m.content_language,
            cache_control: m.cache_control,
            expires: m.expires,
            e_tag: Some(headers::etag(&read.record.etag)),
            last_modified: Some(headers::timestamp(read.record.last_modified_ms)),
            metadata: m.metadata,
            parts_count: read.parts_count.map(|n| n as i32),
            checksum_crc32: m.checksums.0,
            checksum_crc32c: m.checksums.1,
            checksum_crc64nvme: m.checksums.2,
            checksum_sha1: m.checksums.3,
            checksum_sha256: m.checksums.4,
            checksum_type: m.checksum_type,
            version_id: read.versioned.then(|| read.record.version_label()),
            object_lock_mode: read
                .record
                .retention
                .map(|r| ObjectLockMode::from(r.mode.as_str().to_owned())),
            object_lock_retain_until_date: read
                .record
                .retention
                .map(|r| headers::timestamp(r.until_ms)),
            object_lock_legal_hold_status: read
                .record
                .legal_hold
                .then(|| ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON)),
            storage_class: read.record.storage_class.clone().map(StorageClass::from),
            replication_status: read
                .record
                .replication
                .as_ref()
                .map(|r| ReplicationStatus::from(r.header().to_owned())),
            ..Default::default()
        }
    }};
}

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = &mut req.input;
        let body = input.body.take();
        let sent = headers::header_checksums(
            &input.checksum_crc32,
            &input.checksum_crc32c,
            &input.checksum_crc64nvme,
            &input.checksum_sha1,
            &input.checksum_sha256,
        );
        let checks = BodyChecks::from_request(
            &req,
            &req.input.checksum_algorithm,
            sent,
            req.input.content_md5.clone(),
        )
        .map_err(fail(&req))?;
        let i = &req.input;
        let mut object_headers = headers::object_headers(
            i.content_type.clone(),
            i.content_encoding.clone(),
            i.content_disposition.clone(),
            i.content_language.clone(),
            i.cache_control.clone(),
            i.expires.as_ref(),
            i.metadata.clone(),
        )
        .map_err(fail(&req))?;
        headers::version_settings(
            &mut object_headers,
            &i.tagging,
            &i.object_lock_mode,
            &i.object_lock_retain_until_date,
            &i.object_lock_legal_hold_status,
            &i.storage_class,
        )
        .map_err(fail(&req))?;
        let mut spec = checks.spec(i.content_length).map_err(fail(&req))?;
        self.fill_sse(&req, sse_headers!(i), &mut spec)
            .map_err(fail(&req))?;
        spec.replica = headers::replica_of(&req.headers).map_err(fail(&req))?;
        let body = headers::request_body(body);
        let out = self
            .oss
            .put_object(&i.bucket, &i.key, object_headers, spec, body, |d| {
                checks.verify(d)
            })
            .await
            .map_err(fail(&req))?;
        let c = headers::checksum_fields(out.checksum.as_ref());
        let sse = sse_out(out.sse.as_ref());
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(headers::etag(&out.etag)),
            server_side_encryption: sse.sse,
            ssekms_key_id: sse.kms_key,
            bucket_key_enabled: sse.bucket_key,
            sse_customer_algorithm: sse.customer_algorithm,
            sse_customer_key_md5: sse.customer_md5,
            checksum_crc32: c.0,
            checksum_crc32c: c.1,
            checksum_crc64nvme: c.2,
            checksum_sha1: c.3,
            checksum_sha256: c.4,
            checksum_type: headers::checksum_type(out.checksum.as_ref()),
            size: Some(out.size as i64),
            version_id: out.version_id,
            ..Default::default()
        }))
    }

    pub(crate) async fn op_get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = &req.input;
        let mut get = read_request(
            i.range.as_ref(),
            i.part_number,
            &i.if_match,
            &i.if_none_match,
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )
        .map_err(fail(&req))?;
        get.version = selector(&i.version_id).map_err(fail(&req))?;
        get.customer = self
            .customer_key(&req, customer_headers!(i))
            .map_err(fail(&req))?;
        get.key_check = key_check(&req);
        let mut read = self
            .oss
            .get_object(&i.bucket, &i.key, &get)
            .await
            .map_err(fail(&req))?;
        let body = read.body.take().map(|b| {
            StreamingBlob::wrap(sync_wrapper::SyncStream::new(futures::StreamExt::map(
                b,
                |r| r.map_err(|e| std::io::Error::other(e.to_string())),
            )))
        });
        let want_checksum = checksum_enabled(&i.checksum_mode);
        let m = ResponseMeta::of(&read, want_checksum);
        let mut out = object_output!(GetObjectOutput, read, m);
        out.body = body;
        // HEAD has no x-amz-tagging-count in S3's model; GET does.
        out.tag_count = (!read.record.tags.is_empty()).then_some(read.record.tags.len() as i32);
        Ok(S3Response::new(out))
    }

    pub(crate) async fn op_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = &req.input;
        let mut get = read_request(
            i.range.as_ref(),
            i.part_number,
            &i.if_match,
            &i.if_none_match,
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )
        .map_err(fail(&req))?;
        get.version = selector(&i.version_id).map_err(fail(&req))?;
        get.customer = self
            .customer_key(&req, customer_headers!(i))
            .map_err(fail(&req))?;
        let read = self
            .oss
            .head_object(&i.bucket, &i.key, &get)
            .await
            .map_err(fail(&req))?;
        let m = ResponseMeta::of(&read, checksum_enabled(&i.checksum_mode));
        Ok(S3Response::new(object_output!(HeadObjectOutput, read, m)))
    }

    pub(crate) async fn op_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = &req.input;
        let v = selector(&i.version_id).map_err(fail(&req))?;
        let bypass = i.bypass_governance_retention.unwrap_or(false);
        let out = match headers::replica_of(&req.headers).map_err(fail(&req))? {
            // A delete marker replicated from a peer region.
            Some(of) if v.is_none() => self.oss.put_replica_marker(&i.bucket, &i.key, of).await,
            Some(_) => Err(OssError::InvalidRequest(
                "a replicated delete marker names no versionId".into(),
            )),
            None => self.oss.delete_object(&i.bucket, &i.key, v, bypass).await,
        }
        .map_err(fail(&req))?;
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: out.delete_marker.then_some(true),
            version_id: out.version_id,
            ..Default::default()
        }))
    }

    pub(crate) async fn op_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = &req.input;
        let quiet = i.delete.quiet.unwrap_or(false);
        if i.delete.objects.is_empty() {
            return Err(fail(&req)(OssError::InvalidArgument(
                "the Delete element must name at least one object".into(),
            )));
        }
        if i.delete.objects.len() > feiyun_oss::MAX_DELETE_KEYS {
            let mut e = s3s::s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            );
            if let Some(id) = request_id(&req) {
                e.set_request_id(id);
            }
            return Err(e);
        }
        let bypass = i.bypass_governance_retention.unwrap_or(false);
        let grant = req.extensions.get::<crate::access::Grant>().cloned();
        let mut entries = Vec::with_capacity(i.delete.objects.len());
        let mut requested = Vec::with_capacity(i.delete.objects.len());
        let mut errors = Vec::new();
        let mut decisions = Vec::with_capacity(i.delete.objects.len());
        for o in &i.delete.objects {
            match selector(&o.version_id) {
                Ok(v) => {
                    // Without a grant (never expected) nothing is deleted: deny by default.
                    let decision = match &grant {
                        Some(g) => {
                            g.decide_delete(&self.oss, &i.bucket, &o.key, v, bypass)
                                .await
                        }
                        None => feiyun_iam::Decision::ImplicitDeny,
                    };
                    let allowed = decision.allowed();
                    decisions.push(feiyun_audit::AuditItem {
                        resource: crate::access::object_arn(&i.bucket, &o.key),
                        version_id: o.version_id.clone().unwrap_or_default(),
                        decision: decision_name(&decision).into(),
                    });
                    if allowed {
                        entries.push((o.key.clone(), v));
                        requested.push(o);
                    } else {
                        errors.push(Error {
                            code: Some("AccessDenied".to_owned()),
                            key: Some(o.key.clone()),
                            message: Some("Access Denied".to_owned()),
                            version_id: o.version_id.clone(),
                        });
                    }
                }
                Err(e) => errors.push(error_entry(o.key.clone(), o.version_id.clone(), e)),
            }
        }
        let results = self
            .oss
            .delete_objects(&i.bucket, entries, bypass)
            .await
            .map_err(fail(&req))?;
        let mut deleted = Vec::new();
        for ((key, r), requested) in results.into_iter().zip(requested) {
            match r {
                Ok(out) => {
                    if !quiet {
                        // For a new delete marker S3 reports its id as DeleteMarkerVersionId;
                        // for a version deleted by id, that id as VersionId.
                        let (version_id, marker_id) = if requested.version_id.is_some() {
                            (out.version_id, None)
                        } else if out.delete_marker {
                            (None, out.version_id)
                        } else {
                            (None, None)
                        };
                        deleted.push(DeletedObject {
                            key: Some(key),
                            version_id,
                            delete_marker: out.delete_marker.then_some(true),
                            delete_marker_version_id: marker_id,
                        });
                    }
                }
                Err(e) => errors.push(error_entry(key, requested.version_id.clone(), e)),
            }
        }
        // The audit record lists every key with what was decided for it.
        if let Some(slot) = req.extensions.get::<feiyun_audit::Slot>() {
            slot.add_items(decisions);
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }
}

fn decision_name(d: &feiyun_iam::Decision) -> &'static str {
    match d {
        feiyun_iam::Decision::Allow(_) => "Allow",
        feiyun_iam::Decision::Deny(_) => "Deny",
        feiyun_iam::Decision::ImplicitDeny => "ImplicitDeny",
    }
}

fn error_entry(key: String, version_id: Option<String>, e: OssError) -> Error {
    let s3 = crate::error::to_s3(e, None);
    Error {
        code: Some(s3.code().as_str().to_owned()),
        key: Some(key),
        message: s3.message().map(str::to_owned),
        version_id,
    }
}

fn checksum_enabled(mode: &Option<ChecksumMode>) -> bool {
    mode.as_ref()
        .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED)
}

pub(crate) fn read_request(
    range: Option<&Range>,
    part_number: Option<i32>,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> Result<GetRequest, OssError> {
    let part_number = match part_number {
        None => None,
        Some(n) if n >= 1 => Some(n as u32),
        Some(_) => {
            return Err(OssError::InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive".into(),
            ));
        }
    };
    Ok(GetRequest {
        range: range.map(|r| match *r {
            Range::Int { first, last } => ByteRange::FromTo { first, last },
            Range::Suffix { length } => ByteRange::Suffix { len: length },
        }),
        part_number,
        conditions: Conditions {
            if_match: headers::etag_conditions(if_match),
            if_none_match: headers::etag_conditions(if_none_match),
            if_modified_since: if_modified_since.map(headers::unix_seconds),
            if_unmodified_since: if_unmodified_since.map(headers::unix_seconds),
        },
        version: None,
        customer: None,
        key_check: None,
    })
}

/// Response fields shared by GET and HEAD.
struct ResponseMeta {
    content_range: Option<String>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
    checksums: headers::ChecksumFields,
    checksum_type: Option<ChecksumType>,
}

impl ResponseMeta {
    fn of(read: &ObjectRead, want_checksum: bool) -> Self {
        let r = &read.record;
        // A checksum describes the whole object (or, for partNumber reads, that part); it is
        // not sent for an arbitrary range, which it would not match.
        let checksum = if !want_checksum {
            None
        } else {
            match read.span {
                None => r.checksum.as_ref(),
                Some((start, end)) => {
                    let mut off = 0;
                    let mut found = None;
                    for p in &r.parts {
                        if off == start && off + p.size == end {
                            found = p.checksum.as_ref();
                        }
                        off += p.size;
                    }
                    if r.parts.is_empty() && start == 0 && end == r.size {
                        r.checksum.as_ref()
                    } else {
                        found
                    }
                }
            }
        };
        Self {
            content_range: read
                .span
                .map(|(s, e)| format!("bytes {}-{}/{}", s, e.saturating_sub(1), r.size)),
            content_type: r.content_type.clone(),
            content_encoding: r.content_encoding.clone(),
            content_disposition: r.content_disposition.clone(),
            content_language: r.content_language.clone(),
            cache_control: r.cache_control.clone(),
            expires: r.expires.as_deref().and_then(headers::parse_http_date),
            metadata: headers::metadata_map(&r.user_metadata),
            checksums: headers::checksum_fields(checksum),
            checksum_type: headers::checksum_type(checksum),
        }
    }
}

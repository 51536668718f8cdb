//! CopyObject and UploadPartCopy.

use feiyun_oss::{BlobStore, ByteRange, Conditions, CopySource as Source, MetaStore, OssError};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::headers;
use crate::sse::{copy_source_customer_headers, customer_headers, key_check, sse_headers, sse_out};
use crate::{FeiyunS3, fail};

fn source(
    cs: &CopySource,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> Result<Source, OssError> {
    match cs {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            let version = match version_id.as_deref() {
                Some(v) => Some(feiyun_oss::VersionSelector::parse(v)?),
                None => None,
            };
            Ok(Source {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version,
                customer: None,
                key_check: None,
                conditions: Conditions {
                    if_match: headers::etag_conditions(if_match),
                    if_none_match: headers::etag_conditions(if_none_match),
                    if_modified_since: if_modified_since.map(headers::unix_seconds),
                    if_unmodified_since: if_unmodified_since.map(headers::unix_seconds),
                },
            })
        }
        _ => Err(OssError::InvalidArgument(
            "access point copy sources are not supported".into(),
        )),
    }
}

/// Parses `x-amz-copy-source-range: bytes=first-last` (both required, as S3 requires).
fn copy_range(r: &Option<String>) -> Result<Option<ByteRange>, OssError> {
    let Some(r) = r else { return Ok(None) };
    let bad = || OssError::InvalidArgument(format!("invalid x-amz-copy-source-range {r:?}"));
    let spec = r.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let first: u64 = a.parse().map_err(|_| bad())?;
    let last: u64 = b.parse().map_err(|_| bad())?;
    if last < first {
        return Err(bad());
    }
    Ok(Some(ByteRange::FromTo {
        first,
        last: Some(last),
    }))
}

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = &req.input;
        let mut src = source(
            &i.copy_source,
            &i.copy_source_if_match,
            &i.copy_source_if_none_match,
            i.copy_source_if_modified_since.as_ref(),
            i.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(fail(&req))?;
        src.customer = self
            .customer_key(&req, copy_source_customer_headers!(i))
            .map_err(fail(&req))?;
        src.key_check = key_check(&req);
        let replace = match i.metadata_directive.as_ref().map(|d| d.as_str()) {
            None | Some("COPY") => false,
            Some("REPLACE") => true,
            Some(other) => {
                return Err(fail(&req)(OssError::InvalidArgument(format!(
                    "unknown metadata directive {other}"
                ))));
            }
        };
        // Copying a named version onto its own key is how a previous version is restored.
        if !replace
            && src.bucket == i.bucket
            && src.key == i.key
            && src.version.is_none()
            && i.checksum_algorithm.is_none()
            && i.storage_class.is_none()
            && i.server_side_encryption.is_none()
            && i.sse_customer_algorithm.is_none()
        {
            return Err(fail(&req)(OssError::InvalidArgument(
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.".into(),
            )));
        }
        let new_headers = if replace {
            Some(
                headers::object_headers(
                    i.content_type.clone(),
                    i.content_encoding.clone(),
                    i.content_disposition.clone(),
                    i.content_language.clone(),
                    i.cache_control.clone(),
                    i.expires.as_ref(),
                    i.metadata.clone(),
                )
                .map_err(fail(&req))?,
            )
        } else {
            None
        };
        // Tags follow the metadata rule of their own directive; lock settings and storage
        // class come from this request (or the destination bucket's default), never the source.
        let mut settings = feiyun_oss::ObjectHeaders::default();
        headers::version_settings(
            &mut settings,
            &i.tagging,
            &i.object_lock_mode,
            &i.object_lock_retain_until_date,
            &i.object_lock_legal_hold_status,
            &i.storage_class,
        )
        .map_err(fail(&req))?;
        let replace_tags = match i.tagging_directive.as_ref().map(|d| d.as_str()) {
            None | Some("COPY") => false,
            Some("REPLACE") => true,
            Some(other) => {
                return Err(fail(&req)(OssError::InvalidArgument(format!(
                    "Unknown tagging directive: {other}"
                ))));
            }
        };
        let mut spec = feiyun_oss::WriteSpec {
            checksum_algorithm: headers::algorithm(&i.checksum_algorithm).map_err(fail(&req))?,
            ..Default::default()
        };
        self.fill_sse(&req, sse_headers!(i), &mut spec)
            .map_err(fail(&req))?;
        let (out, source) = self
            .oss
            .copy_object(
                &src,
                &i.bucket,
                &i.key,
                new_headers,
                (settings, replace_tags),
                spec,
            )
            .await
            .map_err(fail(&req))?;
        let c = headers::checksum_fields(out.checksum.as_ref());
        let sse = sse_out(out.sse.as_ref());
        Ok(S3Response::new(CopyObjectOutput {
            server_side_encryption: sse.sse,
            ssekms_key_id: sse.kms_key,
            bucket_key_enabled: sse.bucket_key,
            sse_customer_algorithm: sse.customer_algorithm,
            sse_customer_key_md5: sse.customer_md5,
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(headers::etag(&out.etag)),
                last_modified: Some(headers::timestamp(out.last_modified_ms)),
                checksum_crc32: c.0,
                checksum_crc32c: c.1,
                checksum_crc64nvme: c.2,
                checksum_sha1: c.3,
                checksum_sha256: c.4,
                checksum_type: headers::checksum_type(out.checksum.as_ref()),
            }),
            version_id: out.version_id,
            copy_source_version_id: source.1.then(|| source.0.version_label()),
            ..Default::default()
        }))
    }

    pub(crate) async fn op_upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let i = &req.input;
        let mut src = source(
            &i.copy_source,
            &i.copy_source_if_match,
            &i.copy_source_if_none_match,
            i.copy_source_if_modified_since.as_ref(),
            i.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(fail(&req))?;
        src.customer = self
            .customer_key(&req, copy_source_customer_headers!(i))
            .map_err(fail(&req))?;
        src.key_check = key_check(&req);
        let customer = self
            .customer_key(&req, customer_headers!(i))
            .map_err(fail(&req))?;
        let range = copy_range(&i.copy_source_range).map_err(fail(&req))?;
        if i.part_number < 1 {
            return Err(fail(&req)(OssError::InvalidArgument(
                "part number must be between 1 and 10000".into(),
            )));
        }
        let (part, _) = self
            .oss
            .upload_part_copy(
                &src,
                range,
                &i.bucket,
                &i.key,
                &i.upload_id,
                i.part_number as u32,
                customer,
            )
            .await
            .map_err(fail(&req))?;
        let c = headers::checksum_fields(part.checksum.as_ref());
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(headers::etag(&part.etag)),
                last_modified: Some(headers::timestamp(part.last_modified_ms)),
                checksum_crc32: c.0,
                checksum_crc32c: c.1,
                checksum_crc64nvme: c.2,
                checksum_sha1: c.3,
                checksum_sha256: c.4,
            }),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges() {
        assert_eq!(
            copy_range(&Some("bytes=0-9".into())).unwrap(),
            Some(ByteRange::FromTo {
                first: 0,
                last: Some(9)
            })
        );
        for bad in ["0-9", "bytes=9-0", "bytes=-5", "bytes=a-b", "bytes=5-"] {
            assert!(copy_range(&Some(bad.into())).is_err(), "{bad}");
        }
    }
}

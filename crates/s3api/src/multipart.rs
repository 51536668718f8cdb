//! CreateMultipartUpload, UploadPart, CompleteMultipartUpload, AbortMultipartUpload,
//! ListParts, ListMultipartUploads.

use feiyun_oss::{BlobStore, CompletePart, MetaStore, OssError, UploadParams};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::headers::{self, BodyChecks};
use crate::sse::{customer_headers, sse_headers, sse_out};
use crate::{FeiyunS3, fail};

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = &req.input;
        let mut h = headers::object_headers(
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
            &mut h,
            &i.tagging,
            &i.object_lock_mode,
            &i.object_lock_retain_until_date,
            &i.object_lock_legal_hold_status,
            &i.storage_class,
        )
        .map_err(fail(&req))?;
        let algorithm = headers::algorithm(&i.checksum_algorithm).map_err(fail(&req))?;
        let kind = headers::checksum_kind(&i.checksum_type).map_err(fail(&req))?;
        let mut spec = feiyun_oss::WriteSpec::default();
        self.fill_sse(&req, sse_headers!(i), &mut spec)
            .map_err(fail(&req))?;
        spec.replica = headers::replica_of(&req.headers).map_err(fail(&req))?;
        let (upload_id, mode) = self
            .oss
            .create_multipart_upload(&i.bucket, &i.key, h, algorithm, kind, &spec)
            .await
            .map_err(fail(&req))?;
        let sse = sse_out(mode.as_ref());
        Ok(S3Response::new(CreateMultipartUploadOutput {
            server_side_encryption: sse.sse,
            ssekms_key_id: sse.kms_key,
            bucket_key_enabled: sse.bucket_key,
            sse_customer_algorithm: sse.customer_algorithm,
            sse_customer_key_md5: sse.customer_md5,
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            upload_id: Some(upload_id),
            checksum_algorithm: i.checksum_algorithm.clone(),
            checksum_type: algorithm.map(|_| {
                ChecksumType::from(
                    kind.unwrap_or(feiyun_oss::ChecksumKind::Composite)
                        .as_str()
                        .to_owned(),
                )
            }),
            ..Default::default()
        }))
    }

    pub(crate) async fn op_upload_part(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let body = req.input.body.take();
        let i = &req.input;
        let sent = headers::header_checksums(
            &i.checksum_crc32,
            &i.checksum_crc32c,
            &i.checksum_crc64nvme,
            &i.checksum_sha1,
            &i.checksum_sha256,
        );
        let checks =
            BodyChecks::from_request(&req, &i.checksum_algorithm, sent, i.content_md5.clone())
                .map_err(fail(&req))?;
        let mut spec = checks.spec(i.content_length).map_err(fail(&req))?;
        spec.sse = self
            .customer_key(&req, customer_headers!(i))
            .map_err(fail(&req))?
            .map(feiyun_oss::SseRequest::Customer);
        if i.part_number < 1 {
            return Err(fail(&req)(OssError::InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive".into(),
            )));
        }
        let body = headers::request_body(body);
        let part = self
            .oss
            .upload_part(
                &i.bucket,
                &i.key,
                &i.upload_id,
                i.part_number as u32,
                spec,
                body,
                |d| checks.verify(d),
            )
            .await
            .map_err(fail(&req))?;
        let c = headers::checksum_fields(part.checksum.as_ref());
        let sse = sse_out(part.sse.as_ref());
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(headers::etag(&part.etag)),
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
            ..Default::default()
        }))
    }

    pub(crate) async fn op_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = &req.input;
        let mut parts = Vec::new();
        for p in i
            .multipart_upload
            .as_ref()
            .and_then(|m| m.parts.as_ref())
            .into_iter()
            .flatten()
        {
            let (Some(n), Some(etag)) = (p.part_number, p.e_tag.as_ref()) else {
                return Err(fail(&req)(OssError::InvalidPart(
                    "each part needs a PartNumber and an ETag".into(),
                )));
            };
            if n < 1 {
                return Err(fail(&req)(OssError::InvalidPart(format!(
                    "part number {n}"
                ))));
            }
            parts.push(CompletePart {
                part_number: n as u32,
                etag: etag.value().to_owned(),
            });
        }
        let sent = headers::header_checksums(
            &i.checksum_crc32,
            &i.checksum_crc32c,
            &i.checksum_crc64nvme,
            &i.checksum_sha1,
            &i.checksum_sha256,
        );
        let object_checksum = sent.values.into_iter().next();
        let out = self
            .oss
            .complete_multipart_upload(&i.bucket, &i.key, &i.upload_id, &parts, object_checksum)
            .await
            .map_err(fail(&req))?;
        let c = headers::checksum_fields(out.checksum.as_ref());
        let sse = sse_out(out.sse.as_ref());
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            server_side_encryption: sse.sse,
            ssekms_key_id: sse.kms_key,
            bucket_key_enabled: sse.bucket_key,
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(headers::etag(&out.etag)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            checksum_crc32: c.0,
            checksum_crc32c: c.1,
            checksum_crc64nvme: c.2,
            checksum_sha1: c.3,
            checksum_sha256: c.4,
            checksum_type: headers::checksum_type(out.checksum.as_ref()),
            version_id: out.version_id,
            ..Default::default()
        }))
    }

    pub(crate) async fn op_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = &req.input;
        self.oss
            .abort_multipart_upload(&i.bucket, &i.key, &i.upload_id)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(crate) async fn op_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = &req.input;
        let marker = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = match i.max_parts {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(fail(&req)(OssError::InvalidArgument(
                    "max-parts must be non-negative".into(),
                )));
            }
            Some(n) => (n as usize).min(1000),
        };
        let (info, parts, truncated) = self
            .oss
            .list_parts(&i.bucket, &i.key, &i.upload_id, marker, max)
            .await
            .map_err(fail(&req))?;
        let next = parts.last().map(|p| p.part_number as i32);
        let parts = parts
            .into_iter()
            .map(|p| {
                let c = headers::checksum_fields(p.checksum.as_ref());
                Part {
                    part_number: Some(p.part_number as i32),
                    e_tag: Some(headers::etag(&p.etag)),
                    size: Some(p.size as i64),
                    last_modified: Some(headers::timestamp(p.last_modified_ms)),
                    checksum_crc32: c.0,
                    checksum_crc32c: c.1,
                    checksum_crc64nvme: c.2,
                    checksum_sha1: c.3,
                    checksum_sha256: c.4,
                }
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            upload_id: Some(i.upload_id.clone()),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(parts),
            checksum_algorithm: info.checksum_algorithm.map(headers::dto_algorithm),
            owner: Some(crate::bucket::owner()),
            storage_class: Some(StorageClass::from(
                info.storage_class.unwrap_or_else(|| "STANDARD".into()),
            )),
            ..Default::default()
        }))
    }

    pub(crate) async fn op_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = &req.input;
        let max = match i.max_uploads {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(fail(&req)(OssError::InvalidArgument(
                    "max-uploads must be non-negative".into(),
                )));
            }
            Some(n) => (n as usize).min(1000),
        };
        let page = self
            .oss
            .list_multipart_uploads(
                &i.bucket,
                UploadParams {
                    prefix: i.prefix.clone().unwrap_or_default(),
                    key_marker: i.key_marker.clone().filter(|s| !s.is_empty()),
                    upload_id_marker: i.upload_id_marker.clone().filter(|s| !s.is_empty()),
                    max_uploads: max,
                },
            )
            .await
            .map_err(fail(&req))?;
        let last = page.uploads.last().cloned();
        let uploads = page
            .uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(headers::timestamp(u.initiated_ms)),
                checksum_algorithm: u.checksum_algorithm.map(headers::dto_algorithm),
                storage_class: Some(StorageClass::from(
                    u.storage_class.unwrap_or_else(|| "STANDARD".into()),
                )),
                owner: Some(crate::bucket::owner()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket.clone()),
            prefix: i.prefix.clone(),
            key_marker: i.key_marker.clone(),
            upload_id_marker: i.upload_id_marker.clone(),
            next_key_marker: page
                .is_truncated
                .then(|| last.as_ref().map(|u| u.key.clone()))
                .flatten(),
            next_upload_id_marker: page
                .is_truncated
                .then(|| last.as_ref().map(|u| u.upload_id.clone()))
                .flatten(),
            max_uploads: Some(max as i32),
            is_truncated: Some(page.is_truncated),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

//! Server-side copies (CopyObject, UploadPartCopy): the source is streamed through the
//! verified read path into a new blob, never through the client.

use std::sync::Arc;

use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;

use crate::conditions::Conditions;
use crate::get::{ByteRange, GetRequest};
use crate::multipart::PartInfo;
use crate::put::{ObjectHeaders, PutOutcome, WriteSpec};
use crate::records::ObjectRecord;
use crate::{MAX_PUT_SIZE, ObjectService, OssError, keys};

/// The object a copy reads from.
#[derive(Debug, Clone)]
pub struct CopySource {
    pub bucket: String,
    pub key: String,
    pub version: Option<crate::VersionSelector>,
    pub conditions: Conditions,
    /// `x-amz-copy-source-server-side-encryption-customer-*`: the source's SSE-C key.
    pub customer: Option<crate::sse::CustomerKey>,
    /// May the caller decrypt the source with its KMS key.
    pub key_check: Option<crate::sse::KeyCheck>,
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Copies the source's bytes to `dst`; `headers` replaces the metadata (REPLACE) or, when
    /// `None`, the source's metadata is kept (COPY). `settings` carries the new version's lock
    /// settings and storage class, and its tags when the flag says REPLACE. `spec` names the
    /// checksum and the destination's encryption (S3 never carries the source's over).
    /// Returns the new object, and the source with whether its bucket is versioned.
    pub async fn copy_object(
        self: &Arc<Self>,
        src: &CopySource,
        dst_bucket: &str,
        dst_key: &str,
        headers: Option<ObjectHeaders>,
        settings: (ObjectHeaders, bool),
        spec: WriteSpec,
    ) -> Result<(PutOutcome, (ObjectRecord, bool)), OssError> {
        keys::validate_object_key(dst_key)?;
        let sealing = self.sealing_for_new(dst_bucket, dst_key, &spec).await?;
        let at = (
            src.bucket.as_str(),
            src.key.as_str(),
            src.customer.as_ref(),
            src.key_check.as_ref(),
        );
        // The source may be overwritten between reading its record and leasing its blobs.
        let mut retry = crate::retry::Retry::new();
        let (source, versioned, body) = loop {
            let (source, versioned) = self
                .load_version(&src.bucket, &src.key, src.version)
                .await?;
            self.check_customer_key(source.sse(), src.customer.as_ref(), &src.bucket, &src.key)?;
            src.conditions
                .check_copy_source(&source.etag, source.last_modified_ms)?;
            if source.size > MAX_PUT_SIZE {
                return Err(OssError::InvalidArgument(
                    "a source larger than 5 GiB must be copied with UploadPartCopy".into(),
                ));
            }
            match self.open_body(&source, 0, source.size, at).await {
                Ok(body) => break (source, versioned, body),
                Err(OssError::BlobGone(id)) => {
                    self.after_blob_gone(
                        &src.bucket,
                        &src.key,
                        src.version,
                        &source,
                        id,
                        &mut retry,
                    )
                    .await?
                }
                Err(e) => return Err(e),
            }
        };
        let algorithm = spec
            .checksum_algorithm
            .or(source.checksum.as_ref().map(|c| c.algorithm));
        let spec = WriteSpec {
            checksum_algorithm: algorithm,
            want_payload_sha256: false,
            declared_len: Some(source.size),
            // S3 copies into STANDARD unless the request names a class.
            cold: settings.0.storage_class.is_some(),
            ..spec
        };
        let seal = sealing.as_deref().map(|sealing| crate::put::SealAt {
            sealing,
            bucket: dst_bucket,
            key: dst_key,
        });
        let staged = self
            .stage(
                body,
                &spec,
                MAX_PUT_SIZE,
                self.config.inline_threshold,
                seal,
            )
            .await?;
        let mut headers = headers.unwrap_or_else(|| ObjectHeaders::of(&source));
        let (settings, replace_tags) = settings;
        headers.tags = if replace_tags {
            settings.tags
        } else {
            source.tags.clone()
        };
        headers.retention = settings.retention;
        headers.legal_hold = settings.legal_hold;
        headers.storage_class = settings.storage_class;
        let out = self
            .commit_object(
                dst_bucket,
                dst_key,
                headers,
                staged,
                sealing.as_deref(),
                crate::events::EventCause::Copy,
                crate::put::Origin::Client,
            )
            .await?;
        Ok((out, (source, versioned)))
    }

    /// Copies (a range of) the source into a part of a multipart upload.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part_copy(
        self: &Arc<Self>,
        src: &CopySource,
        range: Option<ByteRange>,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        customer: Option<crate::sse::CustomerKey>,
    ) -> Result<(PartInfo, ObjectRecord), OssError> {
        let req = GetRequest {
            range,
            part_number: None,
            conditions: Conditions::default(),
            version: src.version,
            customer: src.customer.clone(),
            key_check: src.key_check.clone(),
        };
        let read = self.get_object(&src.bucket, &src.key, &req).await?;
        src.conditions
            .check_copy_source(&read.record.etag, read.record.last_modified_ms)?;
        let record = read.record.clone();
        let Some(body) = read.body else {
            return Err(OssError::Internal("copy source has no body".into()));
        };
        let spec = WriteSpec {
            checksum_algorithm: None,
            want_payload_sha256: false,
            declared_len: Some(read.content_length),
            cold: false,
            sse: customer.map(crate::sse::SseRequest::Customer),
            account: String::new(),
            key_check: None,
            replica: None,
        };
        let info = self
            .upload_part(bucket, key, upload_id, part_number, spec, body, |_| Ok(()))
            .await?;
        Ok((info, record))
    }
}

//! Put/GetBucketVersioning and ListObjectVersions.

use feiyun_oss::{
    BlobStore, MetaStore, OssError, VersionEntry, VersionListParams, VersionSelector, Versioning,
};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::list::{max_keys, url_encoded};
use crate::{FeiyunS3, fail, headers};

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let cfg = &req.input.versioning_configuration;
        if cfg
            .mfa_delete
            .as_ref()
            .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
        {
            return Err(fail(&req)(OssError::InvalidArgument(
                "MFA delete is not supported; require MFA through IAM policy conditions instead"
                    .into(),
            )));
        }
        let enabled = match cfg.status.as_ref().map(|s| s.as_str()) {
            Some(BucketVersioningStatus::ENABLED) => true,
            Some(BucketVersioningStatus::SUSPENDED) => false,
            _ => {
                return Err(fail(&req)(OssError::MalformedXml(
                    "Status must be Enabled or Suspended".into(),
                )));
            }
        };
        self.oss
            .set_versioning(&req.input.bucket, enabled)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    /// A never-versioned bucket answers with no Status element, as S3 does.
    pub(crate) async fn op_get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let r = self
            .oss
            .bucket(&req.input.bucket)
            .await
            .map_err(fail(&req))?;
        let status = match r.versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::ENABLED,
            )),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::SUSPENDED,
            )),
        };
        Ok(S3Response::new(GetBucketVersioningOutput {
            status,
            mfa_delete: None,
        }))
    }

    pub(crate) async fn op_list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let i = &req.input;
        let encode = url_encoded(&i.encoding_type).map_err(fail(&req))?;
        let version_marker = match i.version_id_marker.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(VersionSelector::parse(s).map_err(fail(&req))?),
            None => None,
        };
        let params = VersionListParams {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone(),
            key_marker: i.key_marker.clone().filter(|s| !s.is_empty()),
            version_marker,
            max_keys: max_keys(i.max_keys).map_err(fail(&req))?,
        };
        let page = self
            .oss
            .list_object_versions(&i.bucket, params)
            .await
            .map_err(fail(&req))?;
        let enc = |s: &str| {
            if encode {
                headers::url_encode(s)
            } else {
                s.to_owned()
            }
        };
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        let mut prefixes = Vec::new();
        for e in page.entries {
            match e {
                VersionEntry::Version {
                    key,
                    record,
                    latest,
                } => versions.push(ObjectVersion {
                    key: Some(enc(&key)),
                    version_id: Some(record.version_label()),
                    is_latest: Some(latest),
                    e_tag: Some(headers::etag(&record.etag)),
                    size: Some(record.size as i64),
                    last_modified: Some(headers::timestamp(record.last_modified_ms)),
                    storage_class: Some(ObjectVersionStorageClass::from(
                        record
                            .storage_class
                            .clone()
                            .unwrap_or_else(|| "STANDARD".into()),
                    )),
                    checksum_algorithm: record
                        .checksum
                        .as_ref()
                        .map(|c| vec![headers::dto_algorithm(c.algorithm)]),
                    checksum_type: headers::checksum_type(record.checksum.as_ref()),
                    owner: Some(crate::bucket::owner()),
                    ..Default::default()
                }),
                VersionEntry::Marker {
                    key,
                    marker,
                    latest,
                } => markers.push(DeleteMarkerEntry {
                    key: Some(enc(&key)),
                    version_id: Some(if marker.null_version {
                        "null".into()
                    } else {
                        marker.version.render()
                    }),
                    is_latest: Some(latest),
                    last_modified: Some(headers::timestamp(marker.last_modified_ms)),
                    owner: Some(crate::bucket::owner()),
                }),
                VersionEntry::CommonPrefix(p) => prefixes.push(CommonPrefix {
                    prefix: Some(enc(&p)),
                }),
            }
        }
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(i.prefix.as_deref().unwrap_or(""))),
            delimiter: i.delimiter.as_deref().map(enc),
            key_marker: Some(enc(i.key_marker.as_deref().unwrap_or(""))),
            version_id_marker: Some(i.version_id_marker.clone().unwrap_or_default()),
            max_keys: Some(i.max_keys.unwrap_or(1000).min(1000)),
            is_truncated: Some(page.is_truncated),
            next_key_marker: page.next_key_marker.as_deref().map(enc),
            next_version_id_marker: page.next_version_marker,
            encoding_type: i.encoding_type.clone(),
            versions: (!versions.is_empty()).then_some(versions),
            delete_markers: (!markers.is_empty()).then_some(markers),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            ..Default::default()
        }))
    }
}

/// Parses an optional `versionId` parameter.
pub(crate) fn selector(v: &Option<String>) -> Result<Option<VersionSelector>, OssError> {
    v.as_deref().map(VersionSelector::parse).transpose()
}

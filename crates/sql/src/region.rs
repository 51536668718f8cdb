//! What the query engine needs of the region, as one object-safe trait: listing and reading
//! objects of the object service (verified and decrypted as a GET is), staging writes as
//! multipart uploads that become visible only when completed, and the rows of the
//! `analytics` metadata table. [`OssRegion`] implements it over the object service itself —
//! no HTTP requests to the region's own endpoint. Authorization is not here: the engine
//! asks [`crate::Access`] before every call.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use feiyun_meta::{MetaError, Table, WriteBatch};
use feiyun_oss::{
    BlobStore, ByteRange, CompletePart, GetRequest, KeyCheck, ListEntry, ListParams, MetaStore,
    ObjectBody, ObjectHeaders, ObjectService, OssError, VersionSelector, WriteSpec,
};

/// An object as a listing or HEAD shows it.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    /// The version id as S3 renders it (`null` for the null version): what reads select.
    pub version: String,
    /// The version's own id, distinct for every write of the key, the null version's too:
    /// what caches and pins compare.
    pub id: String,
    /// Microseconds since the epoch: the version id's time when it has one, so that every
    /// version of a key has a distinct time (caches validate by size and time).
    pub modified_us: i64,
    /// The KMS key an SSE-KMS object is sealed under.
    pub kms_key: Option<String>,
}

/// Whose write it is: the caller's account (whose KMS keys SSE-KMS names) and its KMS
/// permission check.
#[derive(Debug, Clone)]
pub struct WriteAs {
    pub account: String,
    pub keys: KeyCheck,
}

/// One page of a listing.
pub struct ObjectPage {
    pub objects: Vec<ObjectInfo>,
    /// With a delimiter: the common prefixes of this page.
    pub prefixes: Vec<String>,
    /// The key to list after for the next page, when there is one.
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("the bucket {0} does not exist")]
    NoSuchBucket(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

/// The region's objects and the analytics table, as the engine reaches them.
#[async_trait]
pub trait Region: Send + Sync + 'static {
    /// Up to `limit` objects of `bucket` under `prefix`, after `after`; with `delimiter`,
    /// keys below the next `/` are rolled up into common prefixes.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<String>,
        limit: usize,
        delimiter: bool,
    ) -> Result<ObjectPage, RegionError>;

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, RegionError>;

    /// `[start, end)` of one version, decrypted with the caller's KMS permissions.
    async fn read(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        span: Option<(u64, u64)>,
        keys: KeyCheck,
    ) -> Result<(ObjectInfo, ObjectBody), RegionError>;

    /// Starts a staged write of `key`: an upload nobody sees until it is completed.
    async fn stage(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        who: &WriteAs,
    ) -> Result<String, RegionError>;

    /// Stores part `number` of a staged write; returns its ETag.
    async fn stage_part(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        number: u32,
        data: Bytes,
        who: &WriteAs,
    ) -> Result<String, RegionError>;

    /// Makes a staged write visible, as one object of the listed parts.
    async fn publish(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<(), RegionError>;

    /// Drops a staged write and its parts.
    async fn discard(&self, bucket: &str, key: &str, upload: &str) -> Result<(), RegionError>;

    /// Who owns the bucket (its account id).
    async fn bucket_owner(&self, bucket: &str) -> Result<String, RegionError>;

    async fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RegionError>;

    /// Rows whose keys start with `prefix`, after `after`, up to `limit`.
    async fn rows(
        &self,
        prefix: &[u8],
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, RegionError>;

    /// Applies puts (`Some`) and deletes (`None`) at once; `expect` holds rows that must
    /// still have the given value (`None`: absent). `Ok(false)` when one did not.
    async fn apply(
        &self,
        expect: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<bool, RegionError>;
}

/// [`Region`] over the object service and its metadata store.
pub struct OssRegion<M, B> {
    pub oss: Arc<ObjectService<M, B>>,
    /// Owner of buckets made before accounts existed.
    pub default_account: String,
}

fn failed(e: impl std::fmt::Display) -> RegionError {
    RegionError::Failed(e.to_string())
}

fn oss_error(bucket: &str, key: &str, e: OssError) -> RegionError {
    match e {
        OssError::NoSuchBucket => RegionError::NoSuchBucket(bucket.to_owned()),
        OssError::NoSuchKey | OssError::NoSuchVersion => {
            RegionError::NotFound(format!("s3://{bucket}/{key}"))
        }
        OssError::AccessDenied(m) => {
            RegionError::Failed(format!("s3://{bucket}/{key}: access denied: {m}"))
        }
        e => RegionError::Failed(format!("s3://{bucket}/{key}: {e}")),
    }
}

fn info(key: String, r: &feiyun_oss::ObjectRecord) -> ObjectInfo {
    let from_version = (r.version.0 >> 64) as i64;
    ObjectInfo {
        key,
        size: r.size,
        etag: r.etag.clone(),
        version: r.version_label(),
        id: r.version.render(),
        modified_us: if from_version > 0 {
            from_version
        } else {
            r.last_modified_ms.saturating_mul(1000)
        },
        kms_key: match r.sse() {
            Some(feiyun_oss::SseMode::Kms { key_arn, .. }) => Some(key_arn.clone()),
            _ => None,
        },
    }
}

#[async_trait]
impl<M: MetaStore, B: BlobStore> Region for OssRegion<M, B> {
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<String>,
        limit: usize,
        delimiter: bool,
    ) -> Result<ObjectPage, RegionError> {
        let page = self
            .oss
            .list_objects(
                bucket,
                ListParams {
                    prefix: prefix.to_owned(),
                    delimiter: delimiter.then(|| "/".to_owned()),
                    after,
                    max_keys: limit,
                },
            )
            .await
            .map_err(|e| oss_error(bucket, prefix, e))?;
        let next = page.next_marker().map(str::to_owned);
        let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
        for e in page.entries {
            match e {
                ListEntry::Object(k, r) => objects.push(info(k, &r)),
                ListEntry::CommonPrefix(p) => prefixes.push(p),
            }
        }
        Ok(ObjectPage {
            objects,
            prefixes,
            next,
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, RegionError> {
        let read = self
            .oss
            .head_object(bucket, key, &GetRequest::default())
            .await
            .map_err(|e| oss_error(bucket, key, e))?;
        Ok(info(key.to_owned(), &read.record))
    }

    async fn read(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        span: Option<(u64, u64)>,
        keys: KeyCheck,
    ) -> Result<(ObjectInfo, ObjectBody), RegionError> {
        let version = VersionSelector::parse(version).map_err(failed)?;
        let req = GetRequest {
            range: span.map(|(start, end)| ByteRange::FromTo {
                first: start,
                last: Some(end.saturating_sub(1)),
            }),
            version: Some(version),
            key_check: Some(keys),
            ..Default::default()
        };
        let read = self
            .oss
            .get_object(bucket, key, &req)
            .await
            .map_err(|e| oss_error(bucket, key, e))?;
        let body = read
            .body
            .ok_or_else(|| RegionError::Failed(format!("s3://{bucket}/{key} has no body")))?;
        Ok((info(key.to_owned(), &read.record), body))
    }

    async fn stage(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        who: &WriteAs,
    ) -> Result<String, RegionError> {
        let spec = WriteSpec {
            account: who.account.clone(),
            key_check: Some(who.keys.clone()),
            ..Default::default()
        };
        let headers = ObjectHeaders {
            content_type: Some(content_type.to_owned()),
            ..Default::default()
        };
        let (upload, _) = self
            .oss
            .create_multipart_upload(bucket, key, headers, None, None, &spec)
            .await
            .map_err(|e| oss_error(bucket, key, e))?;
        Ok(upload)
    }

    async fn stage_part(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        number: u32,
        data: Bytes,
        who: &WriteAs,
    ) -> Result<String, RegionError> {
        let spec = WriteSpec {
            account: who.account.clone(),
            key_check: Some(who.keys.clone()),
            declared_len: Some(data.len() as u64),
            ..Default::default()
        };
        let body = futures::stream::iter([Ok::<_, OssError>(data)]);
        let part = self
            .oss
            .upload_part(bucket, key, upload, number, spec, body, |_| Ok(()))
            .await
            .map_err(|e| oss_error(bucket, key, e))?;
        Ok(part.etag)
    }

    async fn publish(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<(), RegionError> {
        let parts: Vec<CompletePart> = parts
            .into_iter()
            .map(|(part_number, etag)| CompletePart { part_number, etag })
            .collect();
        self.oss
            .complete_multipart_upload(bucket, key, upload, &parts, None)
            .await
            .map_err(|e| oss_error(bucket, key, e))?;
        Ok(())
    }

    async fn discard(&self, bucket: &str, key: &str, upload: &str) -> Result<(), RegionError> {
        match self.oss.abort_multipart_upload(bucket, key, upload).await {
            Ok(()) | Err(OssError::NoSuchUpload) => Ok(()),
            Err(e) => Err(oss_error(bucket, key, e)),
        }
    }

    async fn bucket_owner(&self, bucket: &str) -> Result<String, RegionError> {
        let b = self
            .oss
            .bucket(bucket)
            .await
            .map_err(|e| oss_error(bucket, "", e))?;
        Ok(b.owner.unwrap_or_else(|| self.default_account.clone()))
    }

    async fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RegionError> {
        let meta = self.oss.meta().clone();
        let key = key.to_vec();
        tokio::task::spawn_blocking(move || meta.get(Table::Analytics, &key))
            .await
            .map_err(failed)?
            .map_err(failed)
    }

    async fn rows(
        &self,
        prefix: &[u8],
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, RegionError> {
        let meta = self.oss.meta().clone();
        let mut end = prefix.to_vec();
        end.push(0xff);
        let start = match after {
            Some(mut a) => {
                a.push(0);
                a
            }
            None => prefix.to_vec(),
        };
        tokio::task::spawn_blocking(move || meta.scan(Table::Analytics, &start, Some(&end), limit))
            .await
            .map_err(failed)?
            .map_err(failed)
    }

    async fn apply(
        &self,
        expect: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<bool, RegionError> {
        let mut batch = WriteBatch::new();
        for (k, v) in expect {
            batch.check_value(Table::Analytics, k, v);
        }
        for (k, v) in changes {
            match v {
                Some(v) => batch.put(Table::Analytics, k, v),
                None => batch.delete(Table::Analytics, k),
            };
        }
        match self.oss.meta().commit(batch).await {
            Ok(()) => Ok(true),
            Err(MetaError::Conflict(_)) => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }
}

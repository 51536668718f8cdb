//! Buckets: create, delete (empty only), look up, list; and object deletion.

use std::sync::Arc;

use feiyun_blob::BlobStore;
use feiyun_meta::{MetaError, MetaStore, Table, WriteBatch, prefix_end};
use futures::StreamExt;

use crate::records::{self, BucketRecord};
use crate::{MAX_DELETE_KEYS, ObjectService, OssError, keys, now_millis};

/// Most buckets a region lists (S3's default quota is far lower).
const MAX_BUCKETS_LISTED: usize = 100_000;
/// DeleteObjects keys deleted concurrently.
const DELETE_CONCURRENCY: usize = 64;

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    pub async fn create_bucket(&self, name: &str) -> Result<(), OssError> {
        keys::validate_bucket_name(name)?;
        let record = BucketRecord {
            created_ms: now_millis(),
            region: self.config.region.clone(),
        };
        let mut batch = WriteBatch::new();
        batch.check_absent(Table::Buckets, keys::bucket(name)).put(
            Table::Buckets,
            keys::bucket(name),
            records::encode(&record)?,
        );
        match self.meta.commit(batch).await {
            Ok(()) => Ok(()),
            // One tenant until the identity service lands: an existing bucket is ours.
            Err(MetaError::Conflict(_)) => Err(OssError::BucketAlreadyOwnedByYou),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_bucket(&self, name: &str) -> Result<(), OssError> {
        self.require_bucket(name).await?;
        let mut batch = WriteBatch::new();
        batch
            .check_present(Table::Buckets, keys::bucket(name))
            .check_prefix_empty(Table::Objects, keys::bucket_objects(name))
            .check_prefix_empty(Table::Uploads, keys::bucket_objects(name))
            .delete(Table::Buckets, keys::bucket(name));
        match self.meta.commit(batch).await {
            Ok(()) => Ok(()),
            Err(MetaError::Conflict(_)) => {
                self.require_bucket(name).await?;
                Err(OssError::BucketNotEmpty)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn bucket(&self, name: &str) -> Result<BucketRecord, OssError> {
        let k = keys::bucket(name);
        let v = self
            .blocking(move |m, _| Ok(m.get(Table::Buckets, &k)?))
            .await?;
        match v {
            Some(bytes) => records::decode(&bytes),
            None => Err(OssError::NoSuchBucket),
        }
    }

    pub async fn list_buckets(&self) -> Result<Vec<(String, BucketRecord)>, OssError> {
        let rows = self
            .blocking(|m, _| Ok(m.scan(Table::Buckets, b"", None, MAX_BUCKETS_LISTED)?))
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8(k)
                    .map_err(|_| OssError::Corrupt("bucket name is not UTF-8".into()))?;
                Ok((name, records::decode(&v)?))
            })
            .collect()
    }

    /// Deletes the current object; deleting a missing key succeeds, as in S3.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), OssError> {
        keys::validate_object_key(key)?;
        self.require_bucket(bucket).await?;
        let okey = keys::object(bucket, key);
        let exists = self
            .blocking(move |m, _| Ok(m.get(Table::Objects, &okey)?.is_some()))
            .await?;
        if exists {
            self.replace_object(bucket, key, None, &[], WriteBatch::new())
                .await?;
        }
        Ok(())
    }

    /// Deletes many keys; returns one result per key, in request order.
    pub async fn delete_objects(
        self: &Arc<Self>,
        bucket: &str,
        object_keys: Vec<String>,
    ) -> Result<Vec<(String, Result<(), OssError>)>, OssError> {
        if object_keys.len() > MAX_DELETE_KEYS {
            return Err(OssError::InvalidArgument(format!(
                "at most {MAX_DELETE_KEYS} keys per request"
            )));
        }
        self.require_bucket(bucket).await?;
        let results = futures::stream::iter(object_keys.into_iter().map(|k| {
            let svc = self.clone();
            let bucket = bucket.to_owned();
            async move {
                let r = svc.delete_object(&bucket, &k).await;
                (k, r)
            }
        }))
        .buffered(DELETE_CONCURRENCY)
        .collect()
        .await;
        Ok(results)
    }

    /// True when the bucket holds no object.
    pub async fn bucket_is_empty(&self, name: &str) -> Result<bool, OssError> {
        let start = keys::bucket_objects(name);
        let end = prefix_end(&start);
        let rows = self
            .blocking(move |m, _| Ok(m.scan(Table::Objects, &start, end.as_deref(), 1)?))
            .await?;
        Ok(rows.is_empty())
    }
}

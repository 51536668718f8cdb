//! Buckets: create, delete (empty only), look up, list; and object deletion.

use std::sync::Arc;

use feiyun_blob::BlobStore;
use feiyun_meta::{MetaError, MetaStore, Table, WriteBatch, prefix_end};
use futures::StreamExt;

use crate::events::EventCause;
use crate::records::{self, BucketRecord, Versioning};
use crate::versions::{Applied, Change, VersionSelector};
use crate::{MAX_DELETE_KEYS, ObjectService, OssError, keys, now_millis};

/// Most buckets a region lists (S3's default quota is far lower).
const MAX_BUCKETS_LISTED: usize = 100_000;
/// DeleteObjects keys deleted concurrently.
const DELETE_CONCURRENCY: usize = 64;

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Creates a bucket; with `object_lock` it is versioned from the start and can hold
    /// locked versions (S3 allows enabling Object Lock only this way or on a versioned bucket).
    pub async fn create_bucket(&self, name: &str, object_lock: bool) -> Result<(), OssError> {
        self.create_bucket_with(name, object_lock, None, Vec::new())
            .await
    }

    /// Creates a bucket owned by `owner` with initial subresources (a public access block,
    /// say) in the same commit, so no moment exists where the bucket lacks them.
    pub async fn create_bucket_with(
        &self,
        name: &str,
        object_lock: bool,
        owner: Option<String>,
        configs: Vec<(&str, Vec<u8>)>,
    ) -> Result<(), OssError> {
        keys::validate_bucket_name(name)?;
        self.insert_bucket(name, object_lock, owner, configs).await
    }

    /// Commits a new bucket's record (and initial subresources) if the name is free.
    async fn insert_bucket(
        &self,
        name: &str,
        object_lock: bool,
        owner: Option<String>,
        configs: Vec<(&str, Vec<u8>)>,
    ) -> Result<(), OssError> {
        let record = BucketRecord {
            created_ms: now_millis(),
            region: self.config.region.clone(),
            versioning: if object_lock {
                Versioning::Enabled
            } else {
                Versioning::Unversioned
            },
            object_lock,
            default_retention: None,
            owner: owner.clone(),
            encryption: None,
            replication: None,
            live: None,
        };
        let mut batch = WriteBatch::new();
        batch.check_absent(Table::Buckets, keys::bucket(name)).put(
            Table::Buckets,
            keys::bucket(name),
            records::encode(&record)?,
        );
        // Leftovers of an earlier bucket of the same name must not leak into this one.
        for (config, value) in configs {
            batch.put(
                Table::BucketConfigs,
                keys::bucket_config(name, config),
                value,
            );
        }
        match self.meta.commit(batch).await {
            Ok(()) => Ok(()),
            Err(MetaError::Conflict(_)) => {
                // Bucket names are unique in the region; only the owner hears "yours".
                let existing = self.bucket(name).await.ok().and_then(|b| b.owner);
                if existing == owner || existing.is_none() || owner.is_none() {
                    Err(OssError::BucketAlreadyOwnedByYou)
                } else {
                    Err(OssError::BucketAlreadyExists)
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates, unless it exists, a bucket the region keeps for itself (function code, say).
    /// Its name starts with a dot, which S3 refuses in any request, so no account can
    /// create, list or address it; its objects are stored, checksummed and encrypted like
    /// any other.
    pub async fn ensure_system_bucket(&self, name: &str) -> Result<(), OssError> {
        if !name.starts_with('.') || keys::validate_bucket_name(&name[1..]).is_err() {
            return Err(OssError::InvalidBucketName(format!(
                "{name:?} is not a system bucket name"
            )));
        }
        match self.insert_bucket(name, false, None, Vec::new()).await {
            Ok(()) | Err(OssError::BucketAlreadyOwnedByYou) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a bucket that holds no version and no delete marker. Unfinished multipart
    /// uploads do not keep a bucket alive (S3 discards them with it): they are aborted first,
    /// their parts' blobs becoming garbage.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), OssError> {
        if self.bucket(name).await?.live.is_some() {
            return Err(OssError::InvalidBucketState(
                "the bucket is in live migration: `feiyun migrate live finish` it first".into(),
            ));
        }
        self.drop_tombstones(name).await?;
        let prefix = keys::bucket_objects(name);
        let mut retry = crate::retry::Retry::new();
        loop {
            if !self.bucket_has_no_versions(name).await? {
                return Err(OssError::BucketNotEmpty);
            }
            self.abort_all_uploads(name).await?;
            let configs = {
                let (start, end) = (prefix.clone(), prefix_end(&prefix));
                self.blocking(move |m, _| {
                    Ok(m.scan(Table::BucketConfigs, &start, end.as_deref(), 1000)?)
                })
                .await?
            };
            let mut batch = WriteBatch::new();
            batch
                .check_present(Table::Buckets, keys::bucket(name))
                .check_prefix_empty(Table::Objects, prefix.clone())
                .check_prefix_empty(Table::Versions, prefix.clone())
                .check_prefix_empty(Table::Uploads, prefix.clone())
                .delete(Table::Buckets, keys::bucket(name));
            for (k, _) in configs {
                batch.delete(Table::BucketConfigs, k);
            }
            match self.meta.commit(batch).await {
                Ok(()) => return Ok(()),
                Err(MetaError::Conflict(_)) => {
                    self.require_bucket(name).await?;
                    // An object written meanwhile answers BucketNotEmpty on the next round;
                    // an upload started meanwhile is aborted like the others.
                    if !retry.again().await {
                        return Err(OssError::Busy);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// True when the bucket holds no version and no delete marker.
    async fn bucket_has_no_versions(&self, name: &str) -> Result<bool, OssError> {
        let start = keys::bucket_objects(name);
        let end = prefix_end(&start);
        self.blocking(move |m, _| {
            Ok(m.scan(Table::Objects, &start, end.as_deref(), 1)?
                .is_empty()
                && m.scan(Table::Versions, &start, end.as_deref(), 1)?
                    .is_empty())
        })
        .await
    }

    /// The bucket's record. Every object request reads it (its settings decide encryption,
    /// locking, versioning), so it is read as the object rows are: inline on the embedded
    /// engine, from the node's coherent row cache in a multi-node region.
    pub async fn bucket(&self, name: &str) -> Result<BucketRecord, OssError> {
        match self.bucket_row(name).await? {
            Some(bytes) => records::decode(&bytes),
            None => Err(OssError::NoSuchBucket),
        }
    }

    pub(crate) async fn bucket_row(&self, name: &str) -> Result<Option<Vec<u8>>, OssError> {
        let k = keys::bucket(name);
        let mut rows = self.meta.get_many_async(&[(Table::Buckets, &k)]).await?;
        Ok(rows.pop().flatten())
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

    /// DeleteObject: without a version, deletes the current object (a delete marker in a
    /// versioned bucket; deleting a missing key succeeds, as in S3); with one, removes exactly
    /// that version unless Object Lock protects it.
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
        bypass_governance: bool,
    ) -> Result<Applied, OssError> {
        keys::validate_object_key(key)?;
        let change = match version {
            None => Change::DeleteCurrent,
            Some(selector) => Change::DeleteVersion {
                selector,
                bypass_governance,
            },
        };
        self.apply_change(bucket, key, change, EventCause::Delete, WriteBatch::new())
            .await
    }

    /// A delete marker replicated from another region (the edge has checked
    /// `s3:ReplicateDelete`), with the source marker's version id and time.
    pub async fn put_replica_marker(
        &self,
        bucket: &str,
        key: &str,
        of: crate::replication::ReplicaOf,
    ) -> Result<Applied, OssError> {
        keys::validate_object_key(key)?;
        let marker = crate::records::MarkerRecord {
            version: of.version,
            null_version: false,
            last_modified_ms: of.last_modified_ms,
            replica: true,
        };
        self.apply_change(
            bucket,
            key,
            Change::ReplicaMarker(marker),
            EventCause::Delete,
            WriteBatch::new(),
        )
        .await
    }

    /// Deletes many keys (or versions); returns one result per entry, in request order.
    pub async fn delete_objects(
        self: &Arc<Self>,
        bucket: &str,
        entries: Vec<(String, Option<VersionSelector>)>,
        bypass_governance: bool,
    ) -> Result<Vec<(String, Result<Applied, OssError>)>, OssError> {
        if entries.len() > MAX_DELETE_KEYS {
            return Err(OssError::InvalidArgument(format!(
                "at most {MAX_DELETE_KEYS} keys per request"
            )));
        }
        self.require_bucket(bucket).await?;
        let results = futures::stream::iter(entries.into_iter().map(|(k, v)| {
            let svc = self.clone();
            let bucket = bucket.to_owned();
            async move {
                let r = svc.delete_object(&bucket, &k, v, bypass_governance).await;
                (k, r)
            }
        }))
        .buffered(DELETE_CONCURRENCY)
        .collect()
        .await;
        Ok(results)
    }

    /// Changes the bucket record through `f`, which may refuse; retried after a lost race.
    pub(crate) async fn update_bucket(
        &self,
        name: &str,
        f: impl Fn(&mut BucketRecord) -> Result<(), OssError>,
    ) -> Result<BucketRecord, OssError> {
        let mut retry = crate::retry::Retry::new();
        loop {
            let k = keys::bucket(name);
            let old = self
                .blocking(move |m, _| Ok(m.get(Table::Buckets, &k)?))
                .await?
                .ok_or(OssError::NoSuchBucket)?;
            let mut rec: BucketRecord = records::decode(&old)?;
            f(&mut rec)?;
            let mut batch = WriteBatch::new();
            batch
                .check_value(Table::Buckets, keys::bucket(name), Some(old))
                .put(Table::Buckets, keys::bucket(name), records::encode(&rec)?);
            match self.meta.commit(batch).await {
                Ok(()) => return Ok(rec),
                Err(MetaError::Conflict(_)) if retry.again().await => continue,
                Err(MetaError::Conflict(_)) => return Err(OssError::Busy),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// PutBucketVersioning. A bucket never returns to unversioned, and a bucket with Object
    /// Lock cannot be suspended.
    pub async fn set_versioning(&self, name: &str, enabled: bool) -> Result<(), OssError> {
        self.update_bucket(name, |r| {
            if !enabled && r.object_lock {
                return Err(OssError::InvalidBucketState(
                    "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed.".into(),
                ));
            }
            if !enabled && r.replication.is_some() {
                return Err(OssError::InvalidBucketState(
                    "A replication configuration is present on this bucket, so the versioning state cannot be changed.".into(),
                ));
            }
            // Suspending a never-versioned bucket is accepted and records Suspended, as in S3.
            r.versioning = if enabled {
                Versioning::Enabled
            } else {
                Versioning::Suspended
            };
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// A bucket subresource (tags, CORS, lifecycle, …) stored as opaque bytes.
    pub async fn bucket_config(
        &self,
        bucket: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, OssError> {
        let k = keys::bucket_config(bucket, name);
        let bk = keys::bucket(bucket);
        self.blocking(move |m, _| {
            if m.get(Table::Buckets, &bk)?.is_none() {
                return Err(OssError::NoSuchBucket);
            }
            Ok(m.get(Table::BucketConfigs, &k)?)
        })
        .await
    }

    /// Stores (or with `None`, removes) a bucket subresource.
    pub async fn set_bucket_config(
        &self,
        bucket: &str,
        name: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), OssError> {
        let k = keys::bucket_config(bucket, name);
        let mut batch = WriteBatch::new();
        batch.check_present(Table::Buckets, keys::bucket(bucket));
        match value {
            Some(v) => batch.put(Table::BucketConfigs, k, v),
            None => batch.delete(Table::BucketConfigs, k),
        };
        match self.meta.commit(batch).await {
            Ok(()) => Ok(()),
            Err(MetaError::Conflict(_)) => Err(OssError::NoSuchBucket),
            Err(e) => Err(e.into()),
        }
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

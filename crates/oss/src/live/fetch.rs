//! Read-through: a GET or HEAD of a key a live bucket does not hold fetches it from the
//! legacy store — one fetch per key at a time, shared by every request that waits on it —
//! verifies it, and stores it create-only before the request reads it here.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use feiyun_blob::BlobStore;
use feiyun_meta::{MetaStore, Table, WriteBatch};
use futures::StreamExt;

use super::{FETCH_MAX, Legacy, LegacyError, LegacyObject, LiveSetting, lock, tomb_key};
use crate::checksum::ChecksumSet;
use crate::get::{ObjectBody, ObjectRead};
use crate::put::{Origin, SealAt, WriteSpec};
use crate::records::{ObjectData, ObjectRecord};
use crate::{GetRequest, ObjectService, OssError, keys};

/// What a read-through found.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// Stored here, or a client's write or delete landed first: read the key again.
    Stored,
    /// Not in the legacy store, or deleted here during live mode.
    Absent,
    /// Larger than [`FETCH_MAX`]: answered from the legacy store, left to the copier.
    Large(Box<LegacyObject>),
}

/// A fetch's failure, shared by every request that waited on it.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    Legacy(String),
    Local(String),
}

impl From<OssError> for Failure {
    fn from(e: OssError) -> Self {
        match e {
            OssError::Legacy(m) => Failure::Legacy(m),
            other => Failure::Local(other.to_string()),
        }
    }
}

impl From<Failure> for OssError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Legacy(m) => OssError::Legacy(m),
            Failure::Local(m) => OssError::Internal(m),
        }
    }
}

fn is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// A read of the current version that found nothing: in a live bucket, fetch the key
    /// from the legacy store (unless it was deleted here).
    pub(crate) async fn read_through(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
    ) -> Result<Fetched, OssError> {
        let brec = self.bucket(bucket).await?;
        let Some(setting) = brec.live else {
            return Ok(Fetched::Absent);
        };
        if self.tombstoned(bucket, key).await? {
            return Ok(Fetched::Absent);
        }
        let id = (bucket.to_owned(), key.to_owned());
        let flight = lock(&self.live.flights)
            .entry(id.clone())
            .or_default()
            .clone();
        let owner = brec.owner.unwrap_or_default();
        let out = flight
            .get_or_init(|| async {
                self.fetch(bucket, key, &setting, &owner, FETCH_MAX)
                    .await
                    .map_err(Failure::from)
            })
            .await
            .clone();
        {
            let mut flights = lock(&self.live.flights);
            if flights.get(&id).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(&id);
            }
        }
        out.map_err(OssError::from)
    }

    /// HEAD, then GET and store (objects up to `max` bytes) of one legacy key.
    pub(crate) async fn fetch(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        setting: &LiveSetting,
        owner: &str,
        max: u64,
    ) -> Result<Fetched, OssError> {
        let legacy = self.legacy_for(bucket, setting)?;
        let head = match legacy.head(key).await {
            Ok(h) => h,
            Err(LegacyError::NotFound) => return Ok(Fetched::Absent),
            Err(e) => {
                self.stats.live_fetch_failures.fetch_add(1, Relaxed);
                return Err(e.into());
            }
        };
        if head.size > max {
            return Ok(Fetched::Large(Box::new(head)));
        }
        match self.store_legacy(bucket, key, &*legacy, &head, owner).await {
            Err(OssError::NoSuchKey) => Ok(Fetched::Absent),
            Err(e) => {
                self.stats.live_fetch_failures.fetch_add(1, Relaxed);
                Err(e)
            }
            Ok(()) => Ok(Fetched::Stored),
        }
    }

    /// Streams one legacy object into the region, verified against its MD5 ETag and its
    /// checksum where it has them, committed only while the key is still new here.
    async fn store_legacy(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        legacy: &dyn Legacy,
        head: &LegacyObject,
        owner: &str,
    ) -> Result<(), OssError> {
        let (obj, body) = legacy.get(key, Some(&head.etag), None).await?;
        let mut headers = obj.headers.clone();
        if obj.tag_count > 0 {
            headers.tags = legacy.tags(key).await?;
        }
        let spec = WriteSpec {
            checksum_algorithm: obj.checksum.as_ref().map(|c| c.0),
            declared_len: Some(obj.size),
            account: owner.to_owned(),
            ..Default::default()
        };
        let sealing = self.sealing_for_new(bucket, key, &spec).await?;
        let at = sealing.as_deref().map(|sealing| SealAt {
            sealing,
            bucket,
            key,
        });
        let body = body.map(|r| r.map_err(OssError::from));
        let staged = self
            .stage(
                Box::pin(body),
                &spec,
                super::COPY_MAX,
                self.config.inline_threshold,
                at,
            )
            .await
            .map_err(|e| match e {
                OssError::IncompleteBody => {
                    OssError::Legacy(format!("{key}: the legacy store sent a short body"))
                }
                other => other,
            })?;
        let d = &staged.digests;
        if obj.etag_is_md5 && is_md5(&obj.etag) && !d.md5_hex().eq_ignore_ascii_case(&obj.etag) {
            return Err(OssError::Legacy(format!(
                "{key}: the bytes read do not match the legacy ETag {}",
                obj.etag
            )));
        }
        if let Some((alg, value)) = &obj.checksum {
            let sent = ChecksumSet {
                values: vec![(*alg, value.clone())],
            };
            d.verify(&sent).map_err(|_| {
                OssError::Legacy(format!(
                    "{key}: the bytes read do not match the legacy {}",
                    alg.header_name()
                ))
            })?;
        }
        let size = d.size;
        let mut checks = WriteBatch::new();
        checks
            .check_value(Table::Heads, keys::object(bucket, key), None)
            .check_value(Table::BucketConfigs, tomb_key(bucket, key), None);
        let origin = Origin::Legacy {
            last_modified_ms: obj.last_modified_ms,
            checks,
        };
        match self
            .commit_object(
                bucket,
                key,
                headers,
                staged,
                sealing.as_deref(),
                crate::events::EventCause::LiveCopy,
                origin,
            )
            .await
        {
            Ok(_) => {
                self.stats.live_fetched.fetch_add(1, Relaxed);
                self.stats.live_fetched_bytes.fetch_add(size, Relaxed);
                Ok(())
            }
            // A client's write or delete of the key came first: it wins.
            Err(OssError::Raced) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The answer to a read of an object too large to fetch first: its legacy metadata as a
    /// record, and (for GET) its bytes streamed from the legacy store.
    pub(crate) async fn legacy_read(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        head: LegacyObject,
        req: &GetRequest,
        with_body: bool,
    ) -> Result<ObjectRead, OssError> {
        let mut record = ObjectRecord::new(
            head.headers.clone(),
            head.size,
            head.etag.clone(),
            None,
            Vec::new(),
            ObjectData::Inline(Vec::new()),
        );
        record.last_modified_ms = head.last_modified_ms;
        let (span, parts_count) = crate::get::select(&record, req)?;
        let (start, end) = span.unwrap_or((0, record.size));
        let body = if with_body {
            let setting = self.bucket(bucket).await?.live.ok_or(OssError::NoSuchKey)?;
            let legacy = self.legacy_for(bucket, &setting)?;
            let (_, stream) = legacy
                .get(key, Some(&head.etag), span.map(|_| (start, end)))
                .await?;
            self.stats.live_streamed.fetch_add(1, Relaxed);
            let body: ObjectBody = Box::pin(stream.map(|r| r.map_err(OssError::from)));
            Some(body)
        } else {
            None
        };
        Ok(ObjectRead {
            record,
            span,
            parts_count,
            content_length: end - start,
            versioned: false,
            body,
        })
    }
}

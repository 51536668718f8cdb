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
    Busy,
    Local(String),
}

impl From<OssError> for Failure {
    fn from(e: OssError) -> Self {
        match e {
            OssError::Legacy(m) => Failure::Legacy(m),
            OssError::Busy | OssError::Raced => Failure::Busy,
            other => Failure::Local(other.to_string()),
        }
    }
}

impl From<Failure> for OssError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Legacy(m) => OssError::Legacy(m),
            Failure::Busy => OssError::Busy,
            Failure::Local(m) => OssError::Internal(m),
        }
    }
}

/// Longest a read waits for its key to be fetched from the legacy store.
const FETCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Takes a finished (or abandoned) flight out of the map, unless a newer one replaced it.
struct Leave<'a> {
    flights: &'a std::sync::Mutex<std::collections::HashMap<(String, String), super::Flight>>,
    id: (String, String),
    flight: super::Flight,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut flights = lock(self.flights);
        // Only the last request holding this flight removes it (the map holds one more).
        if flights
            .get(&self.id)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight) && Arc::strong_count(f) <= 2)
        {
            flights.remove(&self.id);
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
        // Removes the map's entry however this request ends (a reader that hangs up too).
        let leave = Leave {
            flights: &self.live.flights,
            id,
            flight,
        };
        let owner = brec.owner.unwrap_or_default();
        let out = leave
            .flight
            .get_or_init(|| async {
                // Bounded per node: each fetch may hold up to FETCH_MAX bytes in flight.
                let Ok(_permit) = self.live.fetching.clone().try_acquire_owned() else {
                    return Err(Failure::Busy);
                };
                // A reader that missed just before an earlier flight stored the key starts
                // a new flight after it: the key is here now, nothing to fetch.
                let row = keys::object(bucket, key);
                match self
                    .meta
                    .get_many_async(&[(Table::Heads, row.as_slice())])
                    .await
                {
                    Ok(rows) if rows.iter().any(Option::is_some) => return Ok(Fetched::Stored),
                    Ok(_) => {}
                    Err(e) => return Err(Failure::from(OssError::from(e))),
                }
                let fetch = self.fetch(bucket, key, &setting, &owner, FETCH_MAX);
                match tokio::time::timeout(FETCH_DEADLINE, fetch).await {
                    Ok(r) => r.map_err(Failure::from),
                    Err(_) => Err(Failure::Legacy(format!(
                        "{key}: the legacy store took longer than {FETCH_DEADLINE:?}"
                    ))),
                }
            })
            .await
            .clone();
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
        keys::validate_object_key(key)
            .map_err(|e| OssError::Legacy(format!("{key:?} cannot be a key here: {e}")))?;
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
        match self
            .store_legacy(bucket, key, setting, &*legacy, &head, owner)
            .await
        {
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
        setting: &LiveSetting,
        legacy: &dyn Legacy,
        head: &LegacyObject,
        owner: &str,
    ) -> Result<(), OssError> {
        // The copy commits only while the bucket row is the one that named this legacy
        // store: a `finish` (or a new start) meanwhile makes it drop its copy.
        let brow = self
            .bucket_row(bucket)
            .await?
            .ok_or(OssError::NoSuchBucket)?;
        let brec: crate::BucketRecord = crate::records::decode(&brow)?;
        if brec.live.as_ref() != Some(setting) {
            return Err(OssError::NoSuchKey);
        }
        let key_check = self.acting(setting, "s3:PutObject", bucket, key).await?;
        let (obj, body) = legacy.get(key, Some(&head.etag), None).await?;
        if obj.size != head.size || obj.etag != head.etag {
            return Err(OssError::Legacy(format!(
                "{key}: the legacy store's GET ({} bytes, ETag {}) disagrees with its HEAD ({} bytes, ETag {})",
                obj.size, obj.etag, head.size, head.etag
            )));
        }
        let mut headers = obj.headers.clone();
        if obj.tag_count > 0 {
            headers.tags = legacy.tags(key).await?;
        }
        let spec = WriteSpec {
            checksum_algorithm: obj.checksum.as_ref().map(|c| c.0),
            declared_len: Some(obj.size),
            account: owner.to_owned(),
            key_check,
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
            .check_value(Table::BucketConfigs, tomb_key(bucket, key), None)
            .check_value(Table::Buckets, keys::bucket(bucket), Some(brow));
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
            // A client's write or delete of the key came first: it wins. Otherwise the
            // bucket row changed (another setting, or the migration ended): try again later.
            Err(OssError::Raced) => {
                let head_row = keys::object(bucket, key);
                let tomb = tomb_key(bucket, key);
                let rows = self
                    .meta
                    .get_many_async(&[
                        (Table::Heads, head_row.as_slice()),
                        (Table::BucketConfigs, tomb.as_slice()),
                    ])
                    .await?;
                if rows.iter().any(Option::is_some) {
                    Ok(())
                } else {
                    Err(OssError::Busy)
                }
            }
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
        let record = super::shown_record(
            head.headers.clone(),
            head.size,
            head.etag.clone(),
            head.last_modified_ms,
        );
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

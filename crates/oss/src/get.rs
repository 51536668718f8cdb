//! The read path: look up a record, resolve Range / partNumber, and stream verified bytes.
//!
//! The first chunk is read (and its checksums verified) before the caller gets the stream, so
//! a corrupt object fails with an error status instead of a 200. Corruption found later in a
//! large body ends the stream with an error: the connection is cut short and the damaged
//! bytes are never sent.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use feiyun_blob::{BlobError, BlobReader, BlobStore};
use feiyun_meta::MetaStore;
use futures::Stream;

use crate::conditions::Conditions;
use crate::records::{BlobRef, ObjectData, ObjectRecord};
use crate::sse::{CustomerKey, KeyPlace};
use crate::{ObjectService, OssError};

/// Bytes per read call while streaming a blob.
const READ_CHUNK: usize = 1024 * 1024;

/// A `Range` request, as parsed from `bytes=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-` or `bytes=first-last` (inclusive).
    FromTo { first: u64, last: Option<u64> },
    /// `bytes=-len`: the last `len` bytes.
    Suffix { len: u64 },
}

impl ByteRange {
    /// The half-open byte span `[start, end)` this range selects in an object of `size` bytes.
    pub fn resolve(self, size: u64) -> Result<(u64, u64), OssError> {
        let invalid = Err(OssError::InvalidRange { object_size: size });
        match self {
            ByteRange::FromTo { first, last } => {
                if first >= size {
                    return invalid;
                }
                let end = match last {
                    Some(l) if l < first => return invalid,
                    Some(l) => l.saturating_add(1).min(size),
                    None => size,
                };
                Ok((first, end))
            }
            ByteRange::Suffix { len } => {
                if len == 0 || size == 0 {
                    return invalid;
                }
                Ok((size - len.min(size), size))
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GetRequest {
    pub range: Option<ByteRange>,
    pub part_number: Option<u32>,
    pub conditions: Conditions,
    /// `versionId`; the current version when `None`.
    pub version: Option<crate::VersionSelector>,
    /// The SSE-C key the request carries (required for SSE-C objects, refused for others).
    pub customer: Option<CustomerKey>,
    /// May the caller decrypt with the object's KMS key (SSE-KMS objects only).
    pub key_check: Option<crate::sse::KeyCheck>,
}

/// Whose object a body is read from, and with which keys: bucket, key, the SSE-C key, and
/// the caller's KMS permission check.
pub(crate) type ReadAs<'a> = (
    &'a str,
    &'a str,
    Option<&'a CustomerKey>,
    Option<&'a crate::sse::KeyCheck>,
);

pub type ObjectBody = Pin<Box<dyn Stream<Item = Result<Bytes, OssError>> + Send>>;

pub struct ObjectRead {
    pub record: ObjectRecord,
    /// The span served, when a Range or partNumber narrowed it.
    pub span: Option<(u64, u64)>,
    pub parts_count: Option<u32>,
    pub content_length: u64,
    /// The bucket has been versioned at some time (so responses carry `x-amz-version-id`).
    pub versioned: bool,
    /// `None` for HEAD.
    pub body: Option<ObjectBody>,
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    pub async fn head_object(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        req: &GetRequest,
    ) -> Result<ObjectRead, OssError> {
        match self.head_here(bucket, key, req).await {
            Err(OssError::NoSuchKey) if req.version.is_none() => {
                self.after_miss(bucket, key, req, false).await
            }
            found => found,
        }
    }

    pub async fn get_object(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        req: &GetRequest,
    ) -> Result<ObjectRead, OssError> {
        match self.get_here(bucket, key, req).await {
            Err(OssError::NoSuchKey) if req.version.is_none() => {
                self.after_miss(bucket, key, req, true).await
            }
            found => found,
        }
    }

    /// A read of a key not held here: a live bucket reads it through its legacy store.
    async fn after_miss(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        req: &GetRequest,
        body: bool,
    ) -> Result<ObjectRead, OssError> {
        match self.read_through(bucket, key).await? {
            crate::live::Fetched::Absent => Err(OssError::NoSuchKey),
            crate::live::Fetched::Stored if body => self.get_here(bucket, key, req).await,
            crate::live::Fetched::Stored => self.head_here(bucket, key, req).await,
            crate::live::Fetched::Large(head) => {
                self.legacy_read(bucket, key, *head, req, body).await
            }
        }
    }

    pub(crate) async fn head_here(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        req: &GetRequest,
    ) -> Result<ObjectRead, OssError> {
        let (record, versioned) = self.load_version(bucket, key, req.version).await?;
        self.check_customer_key(record.sse(), req.customer.as_ref(), bucket, key)?;
        let (span, parts_count) = select(&record, req)?;
        let (start, end) = span.unwrap_or((0, record.size));
        Ok(ObjectRead {
            record,
            span,
            parts_count,
            content_length: end - start,
            versioned,
            body: None,
        })
    }

    pub(crate) async fn get_here(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        req: &GetRequest,
    ) -> Result<ObjectRead, OssError> {
        // A concurrent overwrite may collect the blob between reading the record and leasing
        // it; re-reading the record then finds the new one.
        let mut retry = crate::retry::Retry::new();
        loop {
            let mut read = self.head_here(bucket, key, req).await?;
            let (start, end) = read.span.unwrap_or((0, read.record.size));
            let at = (bucket, key, req.customer.as_ref(), req.key_check.as_ref());
            match self.open_body(&read.record, start, end, at).await {
                Ok(body) => {
                    read.body = Some(body);
                    return Ok(read);
                }
                Err(OssError::BlobGone(id)) => {
                    self.after_blob_gone(bucket, key, req.version, &read.record, id, &mut retry)
                        .await?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A blob of `record` was missing when a read leased it. Returns `Ok` to read again when
    /// the key moved on meanwhile (the blob was the replaced version's); fails with the
    /// key's new state when it is gone, and reports corruption when the record is still the
    /// one read — a committed record whose data is missing is damage, not a race.
    pub(crate) async fn after_blob_gone(
        &self,
        bucket: &str,
        key: &str,
        selector: Option<crate::versions::VersionSelector>,
        record: &ObjectRecord,
        blob: feiyun_blob::BlobId,
        retry: &mut crate::retry::Retry,
    ) -> Result<(), OssError> {
        let (now, _) = self.load_version(bucket, key, selector).await?;
        if now.version == record.version && now.blobs() == record.blobs() {
            self.note_corruption(&format!("blob {blob} of {bucket}/{key} is missing"));
            return Err(OssError::Corrupt(format!("blob {blob} not found")));
        }
        if retry.again().await {
            Ok(())
        } else {
            Err(OssError::Busy)
        }
    }

    /// A stream of bytes `[start, end)` of the object at `(bucket, key)`, first chunk
    /// already verified; encrypted objects are decrypted with keys opened for the blobs the
    /// span touches only.
    pub(crate) async fn open_body(
        self: &Arc<Self>,
        record: &ObjectRecord,
        start: u64,
        end: u64,
        (bucket, key, customer, check): ReadAs<'_>,
    ) -> Result<ObjectBody, OssError> {
        if let (Some(crate::sse::SseMode::Kms { key_arn, .. }), Some(c)) = (record.sse(), check) {
            c.require("kms:Decrypt", key_arn)?;
        }
        self.stats
            .bytes_read
            .fetch_add(end - start, std::sync::atomic::Ordering::Relaxed);
        let data_key = |i: usize, blob| -> Result<Option<feiyun_blob::FrameKey>, OssError> {
            let Some(enc) = &record.encryption else {
                return Ok(None);
            };
            let sealed = enc
                .keys
                .get(i)
                .ok_or_else(|| OssError::Corrupt("a blob has no data key".into()))?;
            let place = KeyPlace { bucket, key, blob };
            self.open_data_key(&enc.mode, sealed, customer, place)
                .map(Some)
        };
        match &record.data {
            ObjectData::Inline(data) => {
                let plain = match data_key(0, None)? {
                    Some(k) => std::borrow::Cow::Owned(crate::sse::open_inline(&k, data)?),
                    None => std::borrow::Cow::Borrowed(&data[..]),
                };
                let bytes = plain
                    .get(start as usize..end as usize)
                    .map(Bytes::copy_from_slice)
                    .ok_or_else(|| OssError::Corrupt("inline object is short".into()))?;
                Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })))
            }
            ObjectData::Blobs(blobs) => {
                let mut segs = segments(blobs, start, end);
                for s in &mut segs {
                    s.key = data_key(s.index, Some(s.blob.id))?.map(Arc::new);
                }
                let ids: Vec<_> = segs.iter().map(|s| s.blob.id).collect();
                let leases = self.leases.clone();
                let lease = self.blocking(move |_, b| leases.acquire(b, ids)).await?;
                let mut cursor = BlobCursor {
                    segments: segs,
                    current: None,
                    ahead: None,
                    _lease: lease,
                };
                let first = self.next_chunk(&mut cursor).await?;
                let svc = self.clone();
                let stream = futures::stream::unfold(
                    (svc, cursor, first, false),
                    |(svc, mut cursor, first, failed)| async move {
                        if failed {
                            return None;
                        }
                        if let Some(chunk) = first {
                            return Some((Ok(chunk), (svc, cursor, None, false)));
                        }
                        match svc.next_chunk(&mut cursor).await {
                            Ok(Some(c)) => Some((Ok(c), (svc, cursor, None, false))),
                            Ok(None) => None,
                            Err(e) => Some((Err(e), (svc, cursor, None, true))),
                        }
                    },
                );
                Ok(Box::pin(stream))
            }
        }
    }

    /// The next chunk of the body. Each call also starts reading the chunk after it, so
    /// reading and decrypting one megabyte overlaps with sending the previous one.
    async fn next_chunk(
        &self,
        cursor: &mut BlobCursor<B::Reader>,
    ) -> Result<Option<Bytes>, OssError> {
        let job = match cursor.ahead.take() {
            Some(j) => j,
            None => match self.start_read(cursor) {
                Some(j) => j,
                None => return Ok(None),
            },
        };
        let joined = job.await.map_err(|e| OssError::Internal(e.to_string()))?;
        let (reader, data, more) = match joined {
            Ok(x) => x,
            Err(e @ BlobError::Corrupt { .. }) => {
                self.note_corruption(&e.to_string());
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        if more {
            cursor.current = Some(reader);
        }
        cursor.ahead = self.start_read(cursor);
        Ok(Some(Bytes::from(data)))
    }

    /// Starts reading the next chunk on the blocking pool and moves the cursor past it.
    fn start_read(&self, cursor: &mut BlobCursor<B::Reader>) -> Option<ReadJob<B::Reader>> {
        let seg = cursor.segments.first_mut()?;
        let n = READ_CHUNK.min(seg.len as usize);
        let (offset, blob, key) = (seg.offset, seg.blob, seg.key.clone());
        seg.offset += n as u64;
        seg.len -= n as u64;
        let more = seg.len > 0;
        if !more {
            cursor.segments.remove(0);
        }
        // Only a reader of this same segment is ever kept in `current`.
        let reader = cursor.current.take();
        let blobs = self.blobs.clone();
        Some(tokio::task::spawn_blocking(move || {
            let mut r = match reader {
                Some(r) => r,
                None => blobs.open(blob.id, blob.len, key.as_deref())?,
            };
            let data = r.read(offset, n)?;
            Ok((r, data, more))
        }))
    }
}

/// A chunk being read: the reader (to continue its segment), the bytes, and whether the
/// segment continues.
type ReadJob<R> = tokio::task::JoinHandle<Result<(R, Vec<u8>, bool), BlobError>>;

struct BlobCursor<R> {
    segments: Vec<Segment>,
    current: Option<R>,
    ahead: Option<ReadJob<R>>,
    /// Keeps the blobs on disk until the stream is dropped.
    _lease: crate::lease::Lease,
}

#[derive(Debug, Clone)]
struct Segment {
    blob: BlobRef,
    /// The blob's position in the record (which data key is its).
    index: usize,
    offset: u64,
    len: u64,
    key: Option<Arc<feiyun_blob::FrameKey>>,
}

/// The pieces of each blob that make up object bytes `[start, end)`.
fn segments(blobs: &[BlobRef], start: u64, end: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut base = 0u64;
    for (index, b) in blobs.iter().enumerate() {
        let (lo, hi) = (base, base + b.len);
        let s = start.max(lo);
        let e = end.min(hi);
        if s < e {
            out.push(Segment {
                blob: *b,
                index,
                offset: s - lo,
                len: e - s,
                key: None,
            });
        }
        base = hi;
    }
    out
}

/// The span `[start, end)` a read selects (`None`: the whole object), and the part count.
type Selection = (Option<(u64, u64)>, Option<u32>);

/// Applies conditions, partNumber and Range to a record.
pub(crate) fn select(record: &ObjectRecord, req: &GetRequest) -> Result<Selection, OssError> {
    req.conditions
        .check_read(&record.etag, record.last_modified_ms)?;
    let parts_count = (!record.parts.is_empty()).then_some(record.parts.len() as u32);
    if let Some(n) = req.part_number {
        if req.range.is_some() {
            return Err(OssError::InvalidArgument(
                "Range and partNumber cannot both be given".into(),
            ));
        }
        if n == 0 {
            return Err(OssError::InvalidArgument("partNumber must be ≥ 1".into()));
        }
        if record.parts.is_empty() {
            // A single-part object is its own part 1.
            return if n == 1 {
                Ok((Some((0, record.size)), None))
            } else {
                Err(OssError::InvalidRange {
                    object_size: record.size,
                })
            };
        }
        let idx = (n - 1) as usize;
        let Some(part) = record.parts.get(idx) else {
            return Err(OssError::InvalidRange {
                object_size: record.size,
            });
        };
        let start: u64 = record.parts[..idx].iter().map(|p| p.size).sum();
        return Ok((Some((start, start + part.size)), parts_count));
    }
    match req.range {
        None => Ok((None, parts_count)),
        Some(r) => Ok((Some(r.resolve(record.size)?), parts_count)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use feiyun_blob::BlobId;

    #[test]
    fn range_resolution_table() {
        use ByteRange::*;
        type Row = (ByteRange, u64, Option<(u64, u64)>);
        let rows: &[Row] = &[
            (
                FromTo {
                    first: 0,
                    last: None,
                },
                10,
                Some((0, 10)),
            ),
            (
                FromTo {
                    first: 0,
                    last: Some(0),
                },
                10,
                Some((0, 1)),
            ),
            (
                FromTo {
                    first: 2,
                    last: Some(100),
                },
                10,
                Some((2, 10)),
            ),
            (
                FromTo {
                    first: 9,
                    last: Some(9),
                },
                10,
                Some((9, 10)),
            ),
            (
                FromTo {
                    first: 10,
                    last: None,
                },
                10,
                None,
            ),
            (
                FromTo {
                    first: 5,
                    last: Some(4),
                },
                10,
                None,
            ),
            (
                FromTo {
                    first: 0,
                    last: None,
                },
                0,
                None,
            ),
            (Suffix { len: 3 }, 10, Some((7, 10))),
            (Suffix { len: 30 }, 10, Some((0, 10))),
            (Suffix { len: 0 }, 10, None),
            (Suffix { len: 1 }, 0, None),
        ];
        for (r, size, expected) in rows {
            assert_eq!(r.resolve(*size).ok(), *expected, "{r:?} of {size}");
        }
    }

    #[test]
    fn segments_cover_exactly_the_span() {
        let b = |n: u128, len| BlobRef { id: BlobId(n), len };
        let blobs = [b(1, 10), b(2, 5), b(3, 10)];
        let s = segments(&blobs, 8, 17);
        let got: Vec<_> = s.iter().map(|s| (s.blob.id.0, s.offset, s.len)).collect();
        assert_eq!(got, vec![(1, 8, 2), (2, 0, 5), (3, 0, 2)]);
        assert!(segments(&blobs, 25, 25).is_empty());
    }
}

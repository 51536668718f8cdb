//! The write pipeline: stream a body in, hash it, store it inline or as a blob, and commit.
//!
//! Small bodies are buffered (up to the inline threshold) and stored inside the record. A body
//! that outgrows the threshold is handed to a blocking worker that hashes and writes frames
//! while the network task keeps reading, through a bounded channel, so memory per upload stays
//! at a few chunks whatever the object size. The blob id is registered in `PendingBlobs` before
//! its file exists; the commit that makes the object visible removes that entry. If the
//! request is cancelled (client gone) or fails, a guard deletes the blob; if the process dies,
//! the start-up sweep does.

use std::sync::Arc;

use bytes::Bytes;
use feiyun_blob::{BlobId, BlobStore, BlobWriter};
use feiyun_meta::{MetaStore, Table, WriteBatch};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::checksum::{ChecksumAlgorithm, Digests, StreamHasher};
use crate::records::{BlobRef, ObjectData, ObjectRecord};
use crate::sse::{Encryption, KeyPlace, Sealing, SseMode, SseRequest};
use crate::versions::Change;
use crate::{ObjectService, OssError, keys};

/// Chunks queued between the network task and the blob worker of one upload.
const WRITE_QUEUE_CHUNKS: usize = 8;

/// The standard headers and user metadata stored with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub user_metadata: Vec<(String, String)>,
    /// `x-amz-tagging`, validated.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// `x-amz-object-lock-mode` + `-retain-until-date`.
    #[serde(default)]
    pub retention: Option<crate::records::Retention>,
    /// `x-amz-object-lock-legal-hold: ON`.
    #[serde(default)]
    pub legal_hold: bool,
    #[serde(default)]
    pub storage_class: Option<String>,
}

impl ObjectHeaders {
    pub fn of(record: &ObjectRecord) -> Self {
        Self {
            content_type: record.content_type.clone(),
            content_encoding: record.content_encoding.clone(),
            content_disposition: record.content_disposition.clone(),
            content_language: record.content_language.clone(),
            cache_control: record.cache_control.clone(),
            expires: record.expires.clone(),
            user_metadata: record.user_metadata.clone(),
            tags: record.tags.clone(),
            // Lock settings belong to a version, not its content: a copy takes the
            // destination's own (or its bucket's default).
            retention: None,
            legal_hold: false,
            storage_class: record.storage_class.clone(),
        }
    }
}

/// How to receive one body.
#[derive(Debug, Clone, Default)]
pub struct WriteSpec {
    /// The flexible checksum to compute (CRC64NVME when `None`).
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    /// Compute SHA-256 of the payload (for a signed `x-amz-content-sha256`).
    pub want_payload_sha256: bool,
    /// The declared (decoded) length; a body of any other length fails.
    pub declared_len: Option<u64>,
    /// Write blobs in the cold (compressed) format. Set by the service from the object's
    /// storage class, never by the protocol edge.
    pub cold: bool,
    /// The request's encryption headers; `None` takes the bucket's default.
    pub sse: Option<SseRequest>,
    /// The caller's account, whose KMS keys SSE-KMS names (when the bucket records none).
    pub account: String,
    /// May the caller use the KMS key the object will be sealed under.
    pub key_check: Option<crate::sse::KeyCheck>,
    /// A replica from another region: keep its version id and time (the edge has checked
    /// `s3:ReplicateObject`).
    pub replica: Option<crate::replication::ReplicaOf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub etag: String,
    pub size: u64,
    pub last_modified_ms: i64,
    pub checksum: Option<crate::checksum::StoredChecksum>,
    /// `x-amz-version-id`; `None` in a bucket that was never versioned.
    pub version_id: Option<String>,
    /// How the new object is encrypted, for the response's SSE headers.
    pub sse: Option<SseMode>,
}

/// Data received and durable on disk (or in memory, if inline), not yet visible.
pub(crate) struct Staged {
    pub data: StagedData,
    pub digests: Digests,
    pub guard: Option<PendingBlobGuard>,
    /// The data key (for the ETag) and its sealed form, when encrypted.
    pub key: Option<(feiyun_blob::FrameKey, Vec<u8>)>,
}

/// Who a committed body comes from.
pub(crate) enum Origin {
    Client,
    /// A replica from another region: keeps its version id and time.
    Replica(crate::replication::ReplicaOf),
    /// A copy fetched from a live bucket's legacy store: keeps the legacy time, and commits
    /// only while `checks` hold (the key still new here, and not deleted here).
    Legacy {
        last_modified_ms: i64,
        checks: WriteBatch,
    },
}

/// Where staged data goes and how it is sealed.
#[derive(Clone, Copy)]
pub(crate) struct SealAt<'a> {
    pub sealing: &'a Sealing,
    pub bucket: &'a str,
    pub key: &'a str,
}

pub(crate) enum StagedData {
    Inline(Vec<u8>),
    Blob(BlobRef),
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Receives a body; `verify` runs on the digests before anything becomes visible (trailing
    /// checksums are only known then).
    pub async fn put_object<S, E>(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        headers: ObjectHeaders,
        spec: WriteSpec,
        body: S,
        verify: impl FnOnce(&Digests) -> Result<(), OssError>,
    ) -> Result<PutOutcome, OssError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Into<OssError>,
    {
        keys::validate_object_key(key)?;
        let sealing = self.sealing_for_new(bucket, key, &spec).await?;
        let spec = WriteSpec {
            cold: headers.storage_class.is_some(),
            ..spec
        };
        let at = sealing.as_deref().map(|sealing| SealAt {
            sealing,
            bucket,
            key,
        });
        let staged = self
            .stage(
                body,
                &spec,
                crate::MAX_PUT_SIZE,
                self.config.inline_threshold,
                at,
            )
            .await?;
        verify(&staged.digests)?;
        self.commit_object(
            bucket,
            key,
            headers,
            staged,
            sealing.as_deref(),
            crate::events::EventCause::Put,
            match spec.replica {
                Some(r) => Origin::Replica(r),
                None => Origin::Client,
            },
        )
        .await
    }

    /// How a new object at `bucket/key` is sealed: the request's headers, else the
    /// bucket's default, else the region's. Fails for a missing bucket.
    pub(crate) async fn sealing_for_new(
        &self,
        bucket: &str,
        key: &str,
        spec: &WriteSpec,
    ) -> Result<Option<Arc<Sealing>>, OssError> {
        let record = self.bucket(bucket).await?;
        match &spec.sse {
            Some(SseRequest::Customer(c)) => Ok(Some(self.sealing_for_customer(bucket, key, c)?)),
            other => {
                self.sealing_for(
                    &record,
                    other.as_ref(),
                    &spec.account,
                    spec.key_check.as_ref(),
                )
                .await
            }
        }
    }

    /// Writes a staged body as the object's new current content.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn commit_object(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        headers: ObjectHeaders,
        mut staged: Staged,
        sealing: Option<&Sealing>,
        cause: crate::events::EventCause,
        origin: Origin,
    ) -> Result<PutOutcome, OssError> {
        let data = match &staged.data {
            StagedData::Inline(b) => ObjectData::Inline(b.clone()),
            StagedData::Blob(r) => ObjectData::Blobs(vec![*r]),
        };
        let mode = sealing.map(|s| &s.mode);
        let etag = crate::sse::etag_for(
            mode,
            staged.digests.md5_hex(),
            staged.key.as_ref().map(|k| &k.0),
        );
        let mut record = ObjectRecord::new(
            headers,
            staged.digests.size,
            etag,
            Some(staged.digests.checksum.clone()),
            Vec::new(),
            data,
        );
        if let (Some(mode), Some((_, sealed))) = (mode, staged.key.take()) {
            record.encryption = Some(Encryption {
                mode: mode.clone(),
                keys: vec![serde_bytes::ByteBuf::from(sealed)],
            });
        }
        let mut extra = WriteBatch::new();
        match origin {
            Origin::Client => {}
            Origin::Replica(r) => {
                record.version = r.version;
                record.last_modified_ms = r.last_modified_ms;
                record.replication = Some(crate::replication::ReplicationState::Replica);
            }
            Origin::Legacy {
                last_modified_ms,
                checks,
            } => {
                record.last_modified_ms = last_modified_ms;
                extra = checks;
            }
        }
        let pending: Vec<BlobId> = record.blobs().iter().map(|b| b.id).collect();
        let change = Change::Put {
            record: Box::new(record),
            pending,
        };
        let applied = self.apply_change(bucket, key, change, cause, extra).await?;
        // A replica delivered twice keeps the first copy; the guard drops this one's blob.
        if !applied.duplicate
            && let Some(g) = staged.guard.as_mut()
        {
            g.disarm();
        }
        PutOutcome::of(applied)
    }

    /// Streams `body` to memory (≤ `inline_max`) or to a new blob, hashing it on the way.
    pub(crate) async fn stage<S, E>(
        self: &Arc<Self>,
        mut body: S,
        spec: &WriteSpec,
        max_len: u64,
        inline_max: usize,
        seal: Option<SealAt<'_>>,
    ) -> Result<Staged, OssError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Into<OssError>,
    {
        if let Some(n) = spec.declared_len
            && n > max_len
        {
            return Err(OssError::EntityTooLarge);
        }
        let mut buffered: Vec<Bytes> = Vec::new();
        let mut total: u64 = 0;
        let goes_to_blob = |total: u64| {
            total > inline_max as u64 || spec.declared_len.is_some_and(|n| n > inline_max as u64)
        };
        // Phase 1: buffer while the body may still fit inline.
        while !goes_to_blob(total) {
            match body.next().await {
                None => {
                    check_len(spec, total)?;
                    let mut data = Vec::with_capacity(total as usize);
                    for b in &buffered {
                        data.extend_from_slice(b);
                    }
                    let mut h =
                        StreamHasher::new(spec.checksum_algorithm, spec.want_payload_sha256);
                    h.update(&data);
                    let key = self.staged_key(seal, None)?;
                    if let Some((k, _)) = &key {
                        data = crate::sse::seal_inline(k, data);
                    }
                    return Ok(Staged {
                        data: StagedData::Inline(data),
                        digests: h.finish(),
                        guard: None,
                        key,
                    });
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(chunk)) => {
                    total += chunk.len() as u64;
                    if total > max_len {
                        return Err(OssError::EntityTooLarge);
                    }
                    buffered.push(chunk);
                }
            }
        }
        // Phase 2: register the blob, then stream everything to the worker.
        let id = BlobId::random();
        let mut reg = WriteBatch::new();
        reg.put(
            Table::PendingBlobs,
            id.to_bytes().to_vec(),
            self.pending_tag(),
        );
        self.meta.commit(reg).await?;
        let guard = PendingBlobGuard::new(self.meta.clone(), self.blobs.clone(), id);
        let key = self.staged_key(seal, Some(id))?;
        let frame_key = match &key {
            Some((k, _)) => feiyun_blob::FrameKey::from_bytes(k.as_bytes()),
            None => None,
        };

        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_CHUNKS);
        let blobs = self.blobs.clone();
        let algorithm = spec.checksum_algorithm;
        let want_sha = spec.want_payload_sha256;
        let cold = spec.cold;
        let worker = tokio::task::spawn_blocking(move || -> Result<Digests, OssError> {
            let mut w = if cold {
                blobs.create_cold(id, frame_key.as_ref())?
            } else {
                blobs.create(id, frame_key.as_ref())?
            };
            let mut h = StreamHasher::new(algorithm, want_sha);
            while let Some(chunk) = rx.blocking_recv() {
                h.update(&chunk);
                w.write(&chunk)?;
            }
            w.finish()?;
            Ok(h.finish())
        });
        let feed = async {
            for b in buffered {
                tx.send(b).await.map_err(|_| worker_gone())?;
            }
            while let Some(item) = body.next().await {
                let chunk = item.map_err(Into::into)?;
                total += chunk.len() as u64;
                if total > max_len {
                    return Err(OssError::EntityTooLarge);
                }
                tx.send(chunk).await.map_err(|_| worker_gone())?;
            }
            check_len(spec, total)
        };
        let fed = feed.await;
        drop(tx);
        let digests = worker
            .await
            .map_err(|e| OssError::Internal(format!("blob worker: {e}")))?;
        let digests = match (fed, digests) {
            // The worker stopped on an error of its own (no copies could be placed, say): that
            // is the answer, not the feed's "it stopped".
            (Err(OssError::Internal(m)), Err(cause)) if m == WORKER_GONE => return Err(cause),
            (Err(e), _) => return Err(e),
            (Ok(()), digests) => digests?,
        };
        debug_assert_eq!(digests.size, total);
        self.stats
            .bytes_written
            .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
        Ok(Staged {
            data: StagedData::Blob(BlobRef { id, len: total }),
            digests,
            guard: Some(guard),
            key,
        })
    }

    /// A fresh data key (and its sealed form) for a staged body, when it is to be sealed.
    fn staged_key(
        &self,
        seal: Option<SealAt<'_>>,
        blob: Option<BlobId>,
    ) -> Result<Option<(feiyun_blob::FrameKey, Vec<u8>)>, OssError> {
        seal.map(|at| {
            self.new_data_key(
                at.sealing,
                KeyPlace {
                    bucket: at.bucket,
                    key: at.key,
                    blob,
                },
            )
        })
        .transpose()
    }

    pub(crate) async fn require_bucket(&self, bucket: &str) -> Result<(), OssError> {
        if self.bucket_row(bucket).await?.is_some() {
            Ok(())
        } else {
            Err(OssError::NoSuchBucket)
        }
    }
}

impl PutOutcome {
    pub(crate) fn of(applied: crate::versions::Applied) -> Result<Self, OssError> {
        let r = applied
            .record
            .ok_or_else(|| OssError::Internal("a put committed no record".into()))?;
        Ok(PutOutcome {
            etag: r.etag,
            size: r.size,
            last_modified_ms: r.last_modified_ms,
            checksum: r.checksum,
            version_id: applied.version_id,
            sse: r.encryption.map(|e| e.mode),
        })
    }
}

fn check_len(spec: &WriteSpec, total: u64) -> Result<(), OssError> {
    match spec.declared_len {
        Some(n) if n != total => Err(OssError::IncompleteBody),
        _ => Ok(()),
    }
}

const WORKER_GONE: &str = "blob worker stopped early";

fn worker_gone() -> OssError {
    OssError::Internal(WORKER_GONE.into())
}

/// Deletes an uncommitted blob (and its `PendingBlobs` entry) unless disarmed by a commit.
/// Runs on drop, so a cancelled request cleans up after itself.
pub(crate) struct PendingBlobGuard {
    armed: bool,
    cleanup: Option<Box<dyn FnOnce() + Send>>,
}

impl PendingBlobGuard {
    pub fn new<M: MetaStore, B: BlobStore>(meta: Arc<M>, blobs: Arc<B>, id: BlobId) -> Self {
        let cleanup = Box::new(move || {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return; // No runtime: the start-up sweep removes it.
            };
            rt.spawn(async move {
                // The request may have been cancelled after its commit was queued: the
                // blob is ours to delete only while `pending_blobs` still lists it (the
                // object's commit removes the entry in the same transaction).
                let mut batch = WriteBatch::new();
                batch
                    .check_present(Table::PendingBlobs, id.to_bytes().to_vec())
                    .delete(Table::PendingBlobs, id.to_bytes().to_vec());
                match meta.commit(batch).await {
                    Ok(()) => {
                        let b = blobs.clone();
                        let deleted = tokio::task::spawn_blocking(move || b.delete(id)).await;
                        if !matches!(deleted, Ok(Ok(()))) {
                            tracing::warn!(%id, "an abandoned blob file could not be deleted");
                        }
                    }
                    Err(feiyun_meta::MetaError::Conflict(_)) => {} // committed: kept
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "pending blob left for the sweep")
                    }
                }
            });
        });
        Self {
            armed: true,
            cleanup: Some(cleanup),
        }
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for PendingBlobGuard {
    fn drop(&mut self) {
        if self.armed
            && let Some(f) = self.cleanup.take()
        {
            f();
        }
    }
}

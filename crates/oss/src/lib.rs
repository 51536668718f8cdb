//! The object service: buckets, objects and multipart uploads with S3 semantics, on top of
//! the metadata engine ([`feiyun_meta`]) and the blob engine ([`feiyun_blob`]).
//!
//! This crate owns the record schemas and key encodings, the write pipeline (hash, checksum,
//! stream to a blob or inline, commit), the verified read stream, listing, conditional
//! requests, multipart assembly, and the janitor that removes unreferenced blobs. It knows
//! nothing of HTTP or XML: the S3 edge (`feiyun-s3api`) maps its errors to S3 codes.
//!
//! Architecture invariant: an object becomes visible only through one metadata commit that
//! follows the fsync of all its data; a blob is either referenced by a committed record, or
//! listed in the `PendingBlobs` or `Garbage` table, so a restart can always clean it up.

pub mod checksum;
pub mod conditions;
pub mod keys;
pub mod list;
pub mod records;

mod bucket;
mod copy;
pub mod cors;
pub mod events;
mod get;
mod janitor;
mod keyuse;
mod lease;
pub mod lifecycle;
pub mod live;
mod lock;
mod multipart;
mod put;
#[cfg(test)]
mod race_tests;
pub mod replication;
pub mod restore;
mod retry;
pub mod sse;
pub mod tagging;
pub mod transition;
mod versions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use feiyun_blob::BlobError;
use feiyun_meta::MetaError;

pub use checksum::{ChecksumAlgorithm, ChecksumKind, ChecksumSet, Digests, StoredChecksum};
pub use conditions::Conditions;
pub use copy::CopySource;
pub use feiyun_blob::BlobStore;
pub use feiyun_meta::MetaStore;
pub use get::{ByteRange, GetRequest, ObjectBody, ObjectRead};
pub use list::{ListEntry, ListPage, ListParams, VersionEntry, VersionListParams, VersionPage};
pub use multipart::{CompletePart, PartInfo, UploadInfo, UploadPage, UploadParams};
pub use put::{ObjectHeaders, PutOutcome, WriteSpec};
pub use records::{
    BucketRecord, DefaultRetention, LockMode, MarkerRecord, ObjectRecord, Retention, VersionId,
    Versioning,
};
pub use sse::{BucketEncryption, CustomerKey, DefaultSse, KeyCheck, SseMode, SseRequest};
pub use versions::{Applied, VersionSelector};

/// Longest object key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Most parts in one multipart upload.
pub const MAX_PARTS: u32 = 10_000;
/// Smallest size of every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest single PUT / part.
pub const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Largest object assembled by multipart (5 TiB).
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// Most keys one DeleteObjects request may name.
pub const MAX_DELETE_KEYS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum OssError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("no such key")]
    NoSuchKey,
    #[error("no such version")]
    NoSuchVersion,
    /// The version a request names, or the current one, is a delete marker.
    #[error("the object is a delete marker")]
    DeleteMarker {
        version_id: String,
        last_modified_ms: i64,
        /// The request named the marker's version id (S3 answers 405, else 404).
        by_version: bool,
    },
    #[error("invalid storage class: {0}")]
    InvalidStorageClass(String),
    #[error("not implemented: {0}")]
    NotImplemented(String),
    #[error("invalid tag: {0}")]
    InvalidTag(String),
    /// A bucket setting that is not configured (and, until the identity and encryption
    /// services land, cannot be): answered with S3's own "not found" error for it.
    #[error("{0:?} is not configured")]
    NotConfigured(Unconfigured),
    #[error("no CORS configuration")]
    NoSuchCorsConfiguration,
    #[error("no lifecycle configuration")]
    NoSuchLifecycleConfiguration,
    #[error("no tag set")]
    NoSuchTagSet,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("malformed XML: {0}")]
    MalformedXml(String),
    #[error("the bucket has no Object Lock configuration")]
    ObjectLockConfigurationNotFound,
    #[error("the object version has no retention")]
    NoSuchObjectLockConfiguration,
    #[error("invalid bucket state: {0}")]
    InvalidBucketState(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("no such upload")]
    NoSuchUpload,
    #[error("bucket is not empty")]
    BucketNotEmpty,
    #[error("bucket already exists and is yours")]
    BucketAlreadyOwnedByYou,
    #[error("bucket name is taken by another account")]
    BucketAlreadyExists,
    #[error("invalid bucket name: {0}")]
    InvalidBucketName(String),
    #[error("key is longer than 1024 bytes")]
    KeyTooLong,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the requested range is not satisfiable")]
    InvalidRange { object_size: u64 },
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("not modified")]
    NotModified { etag: String, last_modified: i64 },
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("parts must be listed in ascending order")]
    InvalidPartOrder,
    #[error("part {part} is smaller than the 5 MiB minimum")]
    EntityTooSmall { part: u32 },
    #[error("entity too large")]
    EntityTooLarge,
    #[error("the Content-MD5 you specified did not match what was received")]
    BadDigest(String),
    #[error("the provided x-amz-content-sha256 does not match what was computed")]
    ContentSha256Mismatch,
    #[error("body length does not match the declared content length")]
    IncompleteBody,
    #[error("request body failed: {0}")]
    Body(String),
    #[error("stored data is corrupt")]
    Corrupt(String),
    #[error("service is busy, retry")]
    Busy,
    /// A row a change depends on (beyond its key's own) changed before it committed; the
    /// caller plans again. Never reaches a client.
    #[error("a concurrent change won; plan again")]
    Raced,
    /// A blob a record names is not on disk. Right after the record was replaced this is a
    /// lost race (the reader re-reads the record); for a record still current it is damage.
    #[error("blob {0} not found")]
    BlobGone(feiyun_blob::BlobId),
    #[error("internal error: {0}")]
    Internal(String),
    /// Too few nodes of a multi-node region are reachable to store or read the data.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A live bucket's legacy store failed a read-through (unreachable, refused, or sent
    /// bytes that do not verify).
    #[error("{0}")]
    Legacy(String),
    /// The KMS refused a key the request or the object depends on (S3's `KMS.*` codes).
    #[error("{code}: {message}")]
    Kms { code: &'static str, message: String },
    #[error("{0}")]
    InvalidEncryptionAlgorithm(String),
}

impl From<MetaError> for OssError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Corrupt { table } => OssError::Corrupt(format!("metadata in {table}")),
            MetaError::Conflict(_) => OssError::Busy,
            MetaError::Unavailable(m) => OssError::Unavailable(m),
            other => OssError::Internal(other.to_string()),
        }
    }
}

impl From<BlobError> for OssError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound(id) => OssError::BlobGone(id),
            BlobError::Corrupt { .. } => OssError::Corrupt(e.to_string()),
            BlobError::Unavailable(m) => OssError::Unavailable(m),
            other => OssError::Internal(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unconfigured {
    Encryption,
    BucketPolicy,
    PublicAccessBlock,
    Replication,
}

/// Counters the server exports as metrics.
#[derive(Debug, Default)]
pub struct OssStats {
    pub corruption_events: AtomicU64,
    pub bytes_written: AtomicU64,
    pub bytes_read: AtomicU64,
    pub blobs_collected: AtomicU64,
    /// Versions removed by lifecycle expiration (current and noncurrent).
    pub lifecycle_expired: AtomicU64,
    pub lifecycle_markers_removed: AtomicU64,
    pub lifecycle_uploads_aborted: AtomicU64,
    /// Lifecycle actions refused by Object Lock.
    pub lifecycle_skipped_locked: AtomicU64,
    /// Versions moved to the cold class by lifecycle.
    pub lifecycle_transitioned: AtomicU64,
    /// Live migration: objects read through (or copied) from legacy stores, their bytes,
    /// fetches that failed, reads streamed without storing, writes replayed to legacy
    /// stores and replays refused.
    pub live_fetched: AtomicU64,
    pub live_fetched_bytes: AtomicU64,
    pub live_fetch_failures: AtomicU64,
    pub live_streamed: AtomicU64,
    pub live_written_through: AtomicU64,
    pub live_write_through_failures: AtomicU64,
}

/// Settings the service needs from configuration.
#[derive(Debug, Clone)]
pub struct OssConfig {
    pub region: String,
    pub inline_threshold: usize,
    /// A lifecycle "day" in milliseconds (shorter in tests).
    pub lifecycle_day_ms: i64,
    /// SSE-S3 for objects whose request and bucket name no encryption (S3's behaviour since
    /// 2023). Off only for disks that encrypt already, and to measure what encryption costs.
    pub encrypt_at_rest: bool,
    /// This process's node id in a multi-node region. Its writes in flight are marked with
    /// it, so the recovery sweep at start removes only its own, never another node's.
    pub node: Option<String>,
}

/// The object service over a metadata engine `M` and a blob engine `B`.
pub struct ObjectService<M, B> {
    meta: Arc<M>,
    blobs: Arc<B>,
    config: OssConfig,
    stats: Arc<OssStats>,
    janitor: Arc<tokio::sync::Notify>,
    leases: Arc<lease::Leases>,
    event_ids: events::EventIds,
    kms: Arc<feiyun_kms::Kms<M>>,
    live: live::LiveState,
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Builds the service and runs the start-up recovery sweep: blobs of writes that never
    /// committed, and blobs that were unreferenced but not yet deleted, are removed.
    pub async fn open(
        meta: impl Into<Arc<M>>,
        blobs: B,
        config: OssConfig,
        master: feiyun_kms::MasterKey,
    ) -> Result<Arc<Self>, OssError> {
        let janitor = Arc::new(tokio::sync::Notify::new());
        let meta = meta.into();
        // The test clock that shortens lifecycle days shortens key-deletion days too.
        let kms = Arc::new(
            feiyun_kms::Kms::new(meta.clone(), master, &config.region)
                .with_day_secs(config.lifecycle_day_ms / 1000),
        );
        let svc = Arc::new(Self {
            kms,
            meta,
            blobs: Arc::new(blobs),
            config,
            stats: Arc::new(OssStats::default()),
            leases: Arc::new(lease::Leases::new(janitor.clone())),
            janitor,
            event_ids: events::EventIds::default(),
            live: live::LiveState::default(),
        });
        svc.seed_event_ids().await?;
        let swept = svc.recover().await?;
        if swept > 0 {
            tracing::info!(swept, "recovery removed blobs of unfinished writes");
        }
        svc.collect_garbage().await?;
        Ok(svc)
    }

    /// The metadata engine, shared with services that keep their own tables in it (IAM).
    pub fn meta(&self) -> &Arc<M> {
        &self.meta
    }

    /// The blob engine (its statistics, in a multi-node region).
    pub fn blobs(&self) -> &B {
        &self.blobs
    }

    /// The region's KMS (its keys seal SSE-KMS data keys; the KMS API serves it too).
    pub fn kms(&self) -> &Arc<feiyun_kms::Kms<M>> {
        &self.kms
    }

    pub fn stats(&self) -> &Arc<OssStats> {
        &self.stats
    }

    pub fn region(&self) -> &str {
        &self.config.region
    }

    fn note_corruption(&self, what: &str) {
        self.stats.corruption_events.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            what,
            "corruption detected; request failed instead of serving it"
        );
    }

    /// Runs a few point reads of the metadata (a key's head, its record, its bucket) on the
    /// calling task. A redb lookup of a handful of rows takes microseconds, its pages in its
    /// own cache or the OS's; handing it to the blocking pool cost more than the reads, a
    /// thread wake-up and a switch each way, and was 30 % of a 4 KiB GET's CPU (BENCHMARKS.md,
    /// issue 20). Scans, listings and file I/O, whose cost grows with the data, go through
    /// [`Self::blocking`].
    fn point_read<T, F>(&self, f: F) -> Result<T, OssError>
    where
        F: FnOnce(&M) -> Result<T, OssError>,
    {
        f(&self.meta)
    }

    /// Runs a blocking metadata read off the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T, OssError>
    where
        T: Send + 'static,
        F: FnOnce(&M, &B) -> Result<T, OssError> + Send + 'static,
    {
        let meta = self.meta.clone();
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || f(&meta, &blobs))
            .await
            .map_err(|e| OssError::Internal(format!("blocking task failed: {e}")))?
    }

    /// Commits a batch that carries the event row of `ticket`, releasing the ticket only once
    /// the engine has finished with the batch, even if the caller's request is cancelled
    /// meanwhile (the engine's queue keeps the batch; see [`events::Ticket`]).
    async fn commit_event(
        &self,
        batch: feiyun_meta::WriteBatch,
        ticket: Option<events::Ticket>,
    ) -> Result<bool, MetaError> {
        let Some(ticket) = ticket else {
            return self.meta.commit_replanning(batch).await;
        };
        let meta = self.meta.clone();
        // A background round's fence goes along with its commit.
        let fence = feiyun_common::background::fence();
        tokio::spawn(feiyun_common::background::with_fence(fence, async move {
            let done = meta.commit_replanning(batch).await;
            drop(ticket);
            done
        }))
        .await
        .map_err(|e| MetaError::Storage(format!("commit task failed: {e}")))?
    }
}

/// Unix time in milliseconds.
pub fn now_millis() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

//! The live cut-over (`feiyun migrate live`): a bucket that serves keys it does not hold yet
//! from a legacy S3 store, while a copier drains the rest.
//!
//! Owns the bucket's `live` setting (on its [`BucketRecord`](crate::BucketRecord)), the
//! copier's progress row and the tombstones (`live.tomb/KEY` bucket-config rows) that keep
//! a key deleted here from being read through again. The legacy store is reached through
//! the [`Legacy`] trait, implemented at the server over the migrate crate's S3 client: this
//! crate never learns its wire format.
//!
//! Invariant: a fetched copy is stored create-only — the commit checks that the key has no
//! head row (no version, no marker) and no tombstone — so a client's write or delete that
//! landed meanwhile always wins over the legacy copy.

mod copier;
mod fetch;
pub mod journal;
mod list;
mod write_through;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use feiyun_blob::BlobStore;
use feiyun_meta::{MetaStore, Table, WriteBatch};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::put::ObjectHeaders;
use crate::{ChecksumAlgorithm, ObjectService, OssError, keys, records};

pub use fetch::Fetched;
pub use write_through::WRITE_THROUGH_CONSUMER;

/// Largest object a read-through stores before answering; larger ones are streamed from
/// the legacy store to the client and left to the copier.
pub const FETCH_MAX: u64 = 64 * 1024 * 1024;
/// Largest object the copier stores (one PUT's worth); larger ones are reported.
pub const COPY_MAX: u64 = crate::MAX_PUT_SIZE;

/// Where a live bucket reads what it does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSetting {
    pub endpoint: String,
    pub bucket: String,
    /// Empty, or ending in `/`: region key `K` is legacy key `PREFIX` + `K`.
    pub prefix: String,
    pub region: String,
    pub virtual_hosted: bool,
    pub access_key: String,
    /// The secret key, sealed by the master key with [`secret_purpose`] as AAD.
    #[serde(with = "serde_bytes")]
    pub sealed_secret: Vec<u8>,
    /// Writes and deletes are replayed to the legacy store too (a rollback loses nothing).
    pub write_through: bool,
    pub started_ms: i64,
    /// Who started it: the copier stores, and write-through reads, as this principal.
    #[serde(default)]
    pub principal: String,
    /// Events with ids from here on are written through (earlier ones predate the start).
    #[serde(default)]
    pub first_event: u64,
}

/// What `live start` is given.
#[derive(Clone)]
pub struct LiveStart {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub virtual_hosted: bool,
    pub access_key: String,
    pub secret_key: String,
    pub write_through: bool,
    /// The caller's ARN: what the migration does in the region, it does as this principal.
    pub principal: String,
}

impl std::fmt::Debug for LiveStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStart")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key", &self.access_key)
            .field("write_through", &self.write_through)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// Authorizes what a live migration does in the region as the principal that started it:
/// the copies it stores (`s3:PutObject`) and the objects write-through reads
/// (`s3:GetObject`), with the KMS permissions they carry.
#[async_trait::async_trait]
pub trait ActingAs: Send + Sync {
    async fn object(
        &self,
        principal: &str,
        action: &str,
        bucket: &str,
        key: &str,
    ) -> Result<crate::KeyCheck, String>;
}

/// The copier's progress, kept in the bucket's `live.status` row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStatus {
    /// Complete passes over the legacy listing.
    pub passes: u64,
    /// The last legacy key the current pass has dealt with.
    pub cursor: Option<String>,
    /// Objects copied (by the copier and by reads), and their bytes, since the start.
    pub copied: u64,
    pub bytes: u64,
    /// This pass: keys already here, keys deleted here (tombstoned), copies that failed.
    pub present: u64,
    pub deleted_here: u64,
    pub pass_copied: u64,
    pub pass_failed: u64,
    /// When the last pass ended that found every legacy key here (or deleted here) and
    /// failed nothing: the condition for `finish`. Reset by a pass that was not clean.
    pub clean_pass_ms: Option<i64>,
    /// The latest failures, newest last (at most [`MAX_ERRORS`]).
    pub errors: Vec<String>,
    /// The latest writes and deletes the legacy store refused for good (write-through),
    /// read from their own row.
    #[serde(skip)]
    pub write_through_errors: Vec<String>,
    pub updated_ms: i64,
}

pub const MAX_ERRORS: usize = 20;

/// What the legacy store says of one object.
#[derive(Debug, Clone, Default)]
pub struct LegacyObject {
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    /// The ETag is the content's MD5 (one part, not SSE-KMS or SSE-C).
    pub etag_is_md5: bool,
    pub last_modified_ms: i64,
    /// System headers and user metadata, as a PUT would carry them (no tags).
    pub headers: ObjectHeaders,
    pub tag_count: u32,
    /// A full-object checksum the legacy store holds: algorithm and base64 value.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
}

/// What the region shows of a legacy object it does not hold (a listing entry, a large
/// object streamed through): a record without data.
pub(crate) fn shown_record(
    headers: ObjectHeaders,
    size: u64,
    etag: String,
    last_modified_ms: i64,
) -> crate::ObjectRecord {
    let mut r = crate::ObjectRecord::new(
        headers,
        size,
        etag,
        None,
        Vec::new(),
        crate::records::ObjectData::Inline(Vec::new()),
    );
    r.last_modified_ms = last_modified_ms;
    r
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LegacyError {
    #[error("not found in the legacy store")]
    NotFound,
    /// The object changed between the HEAD and the GET (its ETag moved on).
    #[error("changed in the legacy store while it was read")]
    Changed,
    #[error("the legacy store refused: {0}")]
    Denied(String),
    /// The store rejected this one request (a 4xx other than access, throttling or a
    /// timeout): retrying it will not help.
    #[error("the legacy store rejected the request: {0}")]
    Rejected(String),
    #[error("the legacy store is unavailable: {0}")]
    Unavailable(String),
}

impl From<LegacyError> for OssError {
    fn from(e: LegacyError) -> Self {
        match e {
            LegacyError::NotFound => OssError::NoSuchKey,
            other => OssError::Legacy(other.to_string()),
        }
    }
}

pub type LegacyBody = Pin<Box<dyn Stream<Item = Result<Bytes, LegacyError>> + Send>>;

/// One entry of a legacy listing, keys relative to the setting's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyEntry {
    Object {
        key: String,
        size: u64,
        etag: String,
        last_modified_ms: i64,
    },
    CommonPrefix(String),
}

impl LegacyEntry {
    pub fn name(&self) -> &str {
        match self {
            LegacyEntry::Object { key, .. } | LegacyEntry::CommonPrefix(key) => key,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LegacyPage {
    pub entries: Vec<LegacyEntry>,
    pub truncated: bool,
}

/// A legacy S3 store, keys relative to the live setting's prefix.
#[async_trait::async_trait]
pub trait Legacy: Send + Sync {
    async fn head(&self, key: &str) -> Result<LegacyObject, LegacyError>;
    /// The object's bytes, `span` (`[start, end)`) or all of it, pinned to `etag` when given.
    async fn get(
        &self,
        key: &str,
        etag: Option<&str>,
        span: Option<(u64, u64)>,
    ) -> Result<(LegacyObject, LegacyBody), LegacyError>;
    async fn tags(&self, key: &str) -> Result<Vec<(String, String)>, LegacyError>;
    /// One page of keys strictly after `after`, in S3 key order.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        delimiter: Option<&str>,
        max: usize,
    ) -> Result<LegacyPage, LegacyError>;
    /// Write-through: stores `body` as `key` with `headers`.
    async fn put(&self, key: &str, headers: &ObjectHeaders, body: Bytes)
    -> Result<(), LegacyError>;
    async fn delete(&self, key: &str) -> Result<(), LegacyError>;
}

/// Makes a [`Legacy`] for a setting (the server's S3 client).
pub trait LegacyConnector: Send + Sync {
    fn connect(&self, setting: &LiveSetting, secret: &str) -> Result<Arc<dyn Legacy>, OssError>;
}

/// Read-throughs fetched at once on one node; beyond it a read answers SlowDown.
pub const MAX_FETCHES: usize = 64;

impl Default for LiveState {
    fn default() -> Self {
        Self {
            connector: OnceLock::new(),
            acting: OnceLock::new(),
            fetching: Arc::new(tokio::sync::Semaphore::new(MAX_FETCHES)),
            clients: Mutex::default(),
            flights: Mutex::default(),
        }
    }
}

/// A live bucket's legacy client, with the setting it was made for.
type Client = (LiveSetting, Arc<dyn Legacy>);

pub(crate) type Flight = Arc<tokio::sync::OnceCell<Result<Fetched, fetch::Failure>>>;

/// The live mode's in-memory state: the connector, one client per live bucket, and the
/// fetches in flight (one per key).
pub(crate) struct LiveState {
    connector: OnceLock<Arc<dyn LegacyConnector>>,
    acting: OnceLock<Arc<dyn ActingAs>>,
    /// Read-throughs being fetched at once on this node (bounded by [`MAX_FETCHES`]).
    fetching: Arc<tokio::sync::Semaphore>,
    clients: Mutex<HashMap<String, Client>>,
    flights: Mutex<HashMap<(String, String), Flight>>,
}

/// The AAD a bucket's legacy secret is sealed under.
fn secret_purpose(bucket: &str) -> Vec<u8> {
    format!("live-secret/{bucket}").into_bytes()
}

const STATUS_ROW: &str = "live.status";
const TOMB_PREFIX: &str = "live.tomb/";

/// The tombstone row of `key`: present once the key was deleted here during live mode.
pub(crate) fn tomb_key(bucket: &str, key: &str) -> Vec<u8> {
    keys::bucket_config(bucket, &format!("{TOMB_PREFIX}{key}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Installs how legacy stores are reached (once, at start).
    pub fn set_legacy_connector(&self, c: Arc<dyn LegacyConnector>) {
        let _ = self.live.connector.set(c);
    }

    /// Runs `round` each `every` on the background-lease holder, for as long as the service
    /// lives; a failed round is logged and tried again at the next.
    pub(crate) fn spawn_live_rounds<F, Fut>(
        self: &Arc<Self>,
        every: std::time::Duration,
        what: &'static str,
        round: F,
    ) where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), OssError>> + Send,
    {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(svc) = weak.upgrade() else { return };
                if !feiyun_common::background::runs() {
                    continue;
                }
                if let Err(e) = feiyun_common::background::fenced(round(svc)).await {
                    tracing::warn!(error = %e, "{what} round failed; retried next round");
                }
            }
        });
    }

    /// Installs how a migration's work is authorized as its principal (once, at start).
    pub fn set_live_authority(&self, a: Arc<dyn ActingAs>) {
        let _ = self.live.acting.set(a);
    }

    /// May the migration's principal do `action` on `key`; the KMS check to carry. Without
    /// an authority installed (tests of this crate alone) nothing is checked.
    pub(crate) async fn acting(
        &self,
        setting: &LiveSetting,
        action: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Option<crate::KeyCheck>, OssError> {
        let Some(a) = self.live.acting.get() else {
            return Ok(None);
        };
        a.object(&setting.principal, action, bucket, key)
            .await
            .map(Some)
            .map_err(|m| {
                OssError::Legacy(format!(
                    "the migration's principal {} may not {action} {key}: {m}",
                    setting.principal
                ))
            })
    }

    /// The client for a live bucket's legacy store, made once per setting.
    pub(crate) fn legacy_for(
        &self,
        bucket: &str,
        setting: &LiveSetting,
    ) -> Result<Arc<dyn Legacy>, OssError> {
        if let Some((s, c)) = lock(&self.live.clients).get(bucket)
            && s == setting
        {
            return Ok(c.clone());
        }
        let connector = self
            .live
            .connector
            .get()
            .ok_or_else(|| OssError::Legacy("this server cannot reach legacy stores".into()))?;
        let secret = self
            .kms
            .master()
            .unseal(&secret_purpose(bucket), &setting.sealed_secret)
            .map_err(|e| OssError::Corrupt(format!("live secret of {bucket}: {e}")))?;
        let secret = String::from_utf8(secret)
            .map_err(|_| OssError::Corrupt(format!("live secret of {bucket}")))?;
        let client = connector.connect(setting, &secret)?;
        lock(&self.live.clients).insert(bucket.to_owned(), (setting.clone(), client.clone()));
        Ok(client)
    }

    /// Starts read-through from a legacy store: checks that it answers a listing with these
    /// credentials, then records the setting and a fresh progress row.
    pub async fn live_start(
        &self,
        bucket: &str,
        start: LiveStart,
    ) -> Result<LiveSetting, OssError> {
        let current = self.bucket(bucket).await?;
        if current.live.is_some() {
            return Err(OssError::InvalidBucketState(
                "the bucket is already in live migration; finish it first".into(),
            ));
        }
        let prefix = match start.prefix.as_str() {
            "" => String::new(),
            p if p.ends_with('/') => p.to_owned(),
            p => format!("{p}/"),
        };
        let setting = LiveSetting {
            sealed_secret: self
                .kms
                .master()
                .seal(&secret_purpose(bucket), start.secret_key.as_bytes())
                .map_err(|e| OssError::Internal(format!("sealing the legacy secret: {e}")))?,
            endpoint: start.endpoint,
            bucket: start.bucket,
            prefix,
            region: start.region,
            virtual_hosted: start.virtual_hosted,
            access_key: start.access_key,
            write_through: start.write_through,
            started_ms: crate::now_millis(),
            principal: start.principal,
            first_event: self.event_ids.next().id,
        };
        let legacy = self.legacy_for(bucket, &setting)?;
        // Tombstones a finished migration left (see `live_finish`) must not hide this one's keys.
        self.drop_tombstones(bucket).await?;
        legacy
            .list("", None, None, 1)
            .await
            .map_err(|e| OssError::InvalidArgument(format!("cannot list the legacy store: {e}")))?;
        let s = setting.clone();
        self.update_bucket(bucket, move |r| {
            if r.live.is_some() {
                return Err(OssError::InvalidBucketState(
                    "the bucket is already in live migration; finish it first".into(),
                ));
            }
            r.live = Some(s.clone());
            Ok(())
        })
        .await?;
        let fresh = LiveStatus {
            updated_ms: crate::now_millis(),
            ..Default::default()
        };
        self.set_bucket_config(bucket, STATUS_ROW, Some(records::encode(&fresh)?))
            .await?;
        Ok(setting)
    }

    /// The setting and the copier's progress; `InvalidRequest` for a bucket not in live mode.
    pub async fn live_status(&self, bucket: &str) -> Result<(LiveSetting, LiveStatus), OssError> {
        let setting = self.bucket(bucket).await?.live.ok_or_else(not_live)?;
        let mut status = self.load_status(bucket).await?;
        status.write_through_errors = self.write_through_errors(bucket).await?;
        Ok((setting, status))
    }

    pub(crate) async fn load_status(&self, bucket: &str) -> Result<LiveStatus, OssError> {
        match self.bucket_config(bucket, STATUS_ROW).await? {
            Some(b) => records::decode(&b),
            None => Ok(LiveStatus::default()),
        }
    }

    /// Ends live mode once a complete pass of the copier found everything here: drops the
    /// setting, the progress row and the tombstones. Refuses (naming what remains) before.
    pub async fn live_finish(&self, bucket: &str, force: bool) -> Result<LiveStatus, OssError> {
        let (_, status) = self.live_status(bucket).await?;
        let ready = status.clean_pass_ms.is_some() && status.cursor.is_none();
        if !ready && !force {
            return Err(OssError::InvalidBucketState(format!(
                "the copier has not yet completed a pass that found every legacy object here \
                 (passes {}, this pass: {} copied, {} failed{}); see `feiyun migrate live status`",
                status.passes,
                status.pass_copied,
                status.pass_failed,
                status
                    .errors
                    .last()
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            )));
        }
        self.update_bucket(bucket, |r| {
            r.live = None;
            Ok(())
        })
        .await?;
        lock(&self.live.clients).remove(bucket);
        self.set_bucket_config(bucket, STATUS_ROW, None).await?;
        self.set_bucket_config(bucket, write_through::ERRORS_ROW, None)
            .await?;
        // The tombstones stay until the next start (or the bucket's deletion): a fetch still
        // in flight commits only while they hold, so it cannot bring a deleted key back.
        Ok(status)
    }

    pub(crate) async fn drop_tombstones(&self, bucket: &str) -> Result<(), OssError> {
        let start = keys::bucket_config(bucket, TOMB_PREFIX);
        let end = feiyun_meta::prefix_end(&start);
        loop {
            let (s, e) = (start.clone(), end.clone());
            let rows = self
                .blocking(move |m, _| Ok(m.scan(Table::BucketConfigs, &s, e.as_deref(), 1000)?));
            let rows = rows.await?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut batch = WriteBatch::new();
            for (k, _) in rows {
                batch.delete(Table::BucketConfigs, k);
            }
            self.meta.commit(batch).await?;
        }
    }

    /// The tags a policy's `s3:ExistingObjectTag` conditions see: the object's here, else (in
    /// a live bucket, for a key not deleted here) the legacy object's, since a read would
    /// serve that object. `None` when there is no such object anywhere. A legacy store that
    /// cannot say fails the caller's check (the edge denies rather than guess).
    pub async fn existing_tags(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        version: Option<crate::VersionSelector>,
    ) -> Result<Option<Vec<(String, String)>>, OssError> {
        match self.object_tags(bucket, key, version).await {
            Ok((tags, _)) => return Ok(Some(tags)),
            Err(OssError::NoSuchKey) if version.is_none() => {}
            Err(OssError::NoSuchKey | OssError::NoSuchVersion | OssError::DeleteMarker { .. }) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let Some(setting) = self.bucket(bucket).await?.live else {
            return Ok(None);
        };
        if self.tombstoned(bucket, key).await? {
            return Ok(None);
        }
        // A HEAD does not say whether there are tags (S3 sends the count with GET only).
        let legacy = self.legacy_for(bucket, &setting)?;
        match legacy.tags(key).await {
            Ok(tags) => Ok(Some(tags)),
            Err(LegacyError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `key` was deleted here during live mode.
    pub(crate) async fn tombstoned(&self, bucket: &str, key: &str) -> Result<bool, OssError> {
        let k = tomb_key(bucket, key);
        let mut rows = self
            .meta
            .get_many_async(&[(Table::BucketConfigs, &k)])
            .await?;
        Ok(rows.pop().flatten().is_some())
    }
}

fn not_live() -> OssError {
    OssError::InvalidRequest("the bucket is not in live migration".into())
}

//! The records stored in the metadata tables (CBOR, inside the engine's checksummed envelope).
//!
//! CBOR is self-describing, so later issues can add fields with `#[serde(default)]` and old
//! records still decode.

use feiyun_blob::BlobId;
use serde::{Deserialize, Serialize};

use crate::OssError;
use crate::checksum::StoredChecksum;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub created_ms: i64,
    pub region: String,
    #[serde(default)]
    pub versioning: Versioning,
    /// Object Lock can only be turned on at creation (or later by PutObjectLockConfiguration
    /// on a versioned bucket) and never off.
    #[serde(default)]
    pub object_lock: bool,
    #[serde(default)]
    pub default_retention: Option<DefaultRetention>,
    /// The account that owns the bucket; `None` for buckets made before accounts existed,
    /// which belong to the default account.
    #[serde(default)]
    pub owner: Option<String>,
    /// Default encryption (PutBucketEncryption); `None` is the region default (SSE-S3).
    #[serde(default)]
    pub encryption: Option<crate::sse::BucketEncryption>,
    /// Cross-region replication rules (PutBucketReplication); read by the write path.
    #[serde(default)]
    pub replication: Option<crate::replication::ReplicationConfig>,
    /// Read-through from a legacy store during a live migration (`feiyun migrate live`).
    #[serde(default)]
    pub live: Option<crate::live::LiveSetting>,
}

/// A bucket's versioning state. `Unversioned` is only ever the initial state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    #[default]
    Unversioned,
    Enabled,
    Suspended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// A bucket's default retention, applied to new versions that do not name their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRetention {
    pub mode: LockMode,
    pub days: Option<u32>,
    pub years: Option<u32>,
}

/// Retention of one object version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub mode: LockMode,
    pub until_ms: i64,
}

/// Where an object's bytes live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ObjectData {
    /// Small objects live in the record itself (one fsync per PUT, shared by group commit).
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// One blob per part (single-part objects have one), concatenated in order.
    Blobs(Vec<BlobRef>),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BlobRef {
    #[serde(with = "blob_id")]
    pub id: BlobId,
    pub len: u64,
}

/// Per-part facts kept after CompleteMultipartUpload, for `partNumber` reads and checksums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartLayout {
    pub size: u64,
    pub checksum: Option<StoredChecksum>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub size: u64,
    /// Without quotes: the MD5 hex, or `md5-of-part-md5s-N` for multipart.
    pub etag: String,
    pub last_modified_ms: i64,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub user_metadata: Vec<(String, String)>,
    pub checksum: Option<StoredChecksum>,
    /// Empty for single-part uploads.
    pub parts: Vec<PartLayout>,
    pub data: ObjectData,
    /// Set by the versioning layer when the record is committed.
    #[serde(default)]
    pub version: VersionId,
    /// True for the `null` version (written while the bucket was unversioned or suspended).
    #[serde(default)]
    pub null_version: bool,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub retention: Option<Retention>,
    #[serde(default)]
    pub legal_hold: bool,
    /// `None` is STANDARD.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// `None`: stored in plaintext (written before encryption at rest, or with it off).
    #[serde(default)]
    pub encryption: Option<crate::sse::Encryption>,
    /// `x-amz-replication-status`: pending/done per destination, or a replica.
    #[serde(default)]
    pub replication: Option<crate::replication::ReplicationState>,
}

/// A version id: the high 64 bits are microseconds since the epoch (made strictly increasing
/// per key), the low 64 bits random, so ids from two regions never collide and order by time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionId(pub u128);

impl VersionId {
    /// A new id later than `after` (the key's newest version) and than the clock.
    pub fn next_after(after: Option<VersionId>) -> VersionId {
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as u64;
        let hi = match after {
            Some(a) => now.max(((a.0 >> 64) as u64).saturating_add(1)),
            None => now,
        };
        // The thread's userspace generator, not a getrandom system call per version.
        let lo: u64 = rand::random();
        VersionId(((hi as u128) << 64) | lo as u128)
    }

    /// The 32-hex-digit form clients see.
    pub fn render(self) -> String {
        format!("{:032x}", self.0)
    }

    pub fn parse(s: &str) -> Option<VersionId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(VersionId)
    }
}

impl Serialize for VersionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.to_be_bytes())
    }
}

impl<'de> Deserialize<'de> for VersionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        let arr: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::custom("version id is 16 bytes"))?;
        Ok(VersionId(u128::from_be_bytes(arr)))
    }
}

/// One row of the `versions` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VersionRow {
    /// The current version; its record is the key's row in `objects` (kept once, not twice).
    Current,
    Object(Box<ObjectRecord>),
    Marker(MarkerRecord),
}

/// A delete marker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerRecord {
    pub version: VersionId,
    pub null_version: bool,
    pub last_modified_ms: i64,
    /// Written by replication from another region (never replicated onward).
    #[serde(default)]
    pub replica: bool,
}

/// The `heads` row of a key that has at least one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHead {
    pub newest: VersionId,
    pub null: Option<VersionId>,
}

impl ObjectRecord {
    /// A record for new content; the versioning layer fills in the version fields.
    pub fn new(
        headers: crate::put::ObjectHeaders,
        size: u64,
        etag: String,
        checksum: Option<StoredChecksum>,
        parts: Vec<PartLayout>,
        data: ObjectData,
    ) -> Self {
        ObjectRecord {
            size,
            etag,
            last_modified_ms: crate::now_millis(),
            content_type: headers.content_type,
            content_encoding: headers.content_encoding,
            content_disposition: headers.content_disposition,
            content_language: headers.content_language,
            cache_control: headers.cache_control,
            expires: headers.expires,
            user_metadata: headers.user_metadata,
            checksum,
            parts,
            data,
            version: VersionId::default(),
            null_version: false,
            tags: headers.tags,
            retention: headers.retention,
            legal_hold: headers.legal_hold,
            storage_class: headers.storage_class,
            encryption: None,
            replication: None,
        }
    }

    pub fn sse(&self) -> Option<&crate::sse::SseMode> {
        self.encryption.as_ref().map(|e| &e.mode)
    }

    /// The version id as S3 shows it.
    pub fn version_label(&self) -> String {
        if self.null_version {
            "null".into()
        } else {
            self.version.render()
        }
    }

    pub fn blobs(&self) -> &[BlobRef] {
        match &self.data {
            ObjectData::Inline(_) => &[],
            ObjectData::Blobs(b) => b,
        }
    }
}

/// An in-progress multipart upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub initiated_ms: i64,
    pub headers: crate::put::ObjectHeaders,
    pub checksum_algorithm: Option<crate::checksum::ChecksumAlgorithm>,
    pub checksum_kind: Option<crate::checksum::ChecksumKind>,
    /// How every part's data key is sealed (chosen at creation).
    #[serde(default)]
    pub sse: Option<crate::sse::SseMode>,
    /// The upload of a replica from another region: completing it commits that version.
    #[serde(default)]
    pub replica: Option<crate::replication::ReplicaOf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartRecord {
    #[serde(with = "blob_id")]
    pub blob: BlobId,
    pub size: u64,
    /// MD5 hex of the part.
    pub etag: String,
    pub last_modified_ms: i64,
    pub checksum: Option<StoredChecksum>,
    #[serde(default)]
    pub sealed_key: Option<serde_bytes::ByteBuf>,
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, OssError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out)
        .map_err(|e| OssError::Internal(format!("encode record: {e}")))?;
    Ok(out)
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, OssError> {
    ciborium::from_reader(bytes).map_err(|e| OssError::Corrupt(format!("undecodable record: {e}")))
}

/// Records decoded before, by their exact stored bytes. ciborium reads a record's field
/// names one by one, and decoding an object's record was 6 % of a 4 KiB GET's CPU, its
/// bucket's 2 % (BENCHMARKS.md, issue 20); a hot object is read far more often than it
/// changes, and the same bytes always decode to the same record. The caller still reads the
/// row in its own snapshot: what is cached is the work of decoding, never state.
pub(crate) struct Decoded<T> {
    shards: [std::sync::Mutex<Shard<T>>; DECODED_SHARDS],
}

struct Shard<T> {
    /// By the bytes' CRC-64 (a hint: a hit also compares the bytes).
    map: std::collections::HashMap<u64, (Box<[u8]>, T)>,
    bytes: usize,
}

const DECODED_SHARDS: usize = 8;
/// Stored bytes held per shard (the decoded copies take about as much again).
const DECODED_SHARD_BYTES: usize = 1 << 20;
/// Larger rows (big inline objects) are decoded every time: one would crowd out hundreds.
const DECODED_MAX_ROW: usize = 16 * 1024;

pub(crate) static OBJECTS: std::sync::LazyLock<Decoded<ObjectRecord>> =
    std::sync::LazyLock::new(Decoded::new);
pub(crate) static BUCKETS: std::sync::LazyLock<Decoded<BucketRecord>> =
    std::sync::LazyLock::new(Decoded::new);

impl<T: Clone + for<'de> Deserialize<'de>> Decoded<T> {
    fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| {
                std::sync::Mutex::new(Shard {
                    map: std::collections::HashMap::new(),
                    bytes: 0,
                })
            }),
        }
    }

    /// [`decode`], or a copy of what the same bytes decoded to before.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<T, OssError> {
        if bytes.len() > DECODED_MAX_ROW {
            return decode(bytes);
        }
        let hash = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, bytes);
        let shard = &self.shards[(hash % DECODED_SHARDS as u64) as usize];
        if let Ok(s) = shard.lock()
            && let Some((raw, value)) = s.map.get(&hash)
            && **raw == *bytes
        {
            return Ok(value.clone());
        }
        let value: T = decode(bytes)?;
        if let Ok(mut s) = shard.lock() {
            // Full: start the shard again rather than track recency on every hit.
            if s.bytes + bytes.len() > DECODED_SHARD_BYTES {
                s.map.clear();
                s.bytes = 0;
            }
            if let Some((old, _)) = s.map.insert(hash, (bytes.into(), value.clone())) {
                s.bytes -= old.len();
            }
            s.bytes += bytes.len();
        }
        Ok(value)
    }
}

mod blob_id {
    use feiyun_blob::BlobId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &BlobId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&id.to_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BlobId, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        BlobId::from_bytes(&bytes).ok_or_else(|| serde::de::Error::custom("blob id is 16 bytes"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> ObjectRecord {
        ObjectRecord {
            size: 3,
            etag: "abc".into(),
            last_modified_ms: 1,
            content_type: Some("text/plain".into()),
            content_encoding: None,
            content_disposition: None,
            content_language: None,
            cache_control: None,
            expires: None,
            user_metadata: vec![("k".into(), "v".into())],
            checksum: None,
            parts: vec![],
            data: ObjectData::Blobs(vec![BlobRef {
                id: BlobId(7),
                len: 3,
            }]),
            version: VersionId::next_after(None),
            null_version: false,
            tags: vec![("t".into(), "1".into())],
            retention: Some(Retention {
                mode: LockMode::Compliance,
                until_ms: 5,
            }),
            legal_hold: false,
            storage_class: None,
            encryption: None,
            replication: None,
        }
    }

    #[test]
    fn object_record_round_trips() {
        let r = sample();
        let back: ObjectRecord = decode(&encode(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(decode::<ObjectRecord>(b"\xff\x00garbage").is_err());
    }

    #[test]
    fn version_ids_order_by_time_and_parse_back() {
        let a = VersionId::next_after(None);
        let b = VersionId::next_after(Some(a));
        assert!(b > a);
        // Even when the clock is behind the key's newest version.
        let future = VersionId(u128::MAX >> 1);
        assert!(VersionId::next_after(Some(future)) > future);
        assert_eq!(VersionId::parse(&a.render()), Some(a));
        assert_eq!(VersionId::parse("null"), None);
        assert_eq!(VersionId::parse(&"g".repeat(32)), None);
        assert_eq!(VersionId::parse(&"a".repeat(31)), None);
    }

    #[test]
    fn a_decoded_record_is_what_its_bytes_say_and_the_cache_stays_bounded() {
        let cache = Decoded::<ObjectRecord>::new();
        let a = sample();
        let mut b = sample();
        b.etag = "another".into();
        let (ea, eb) = (encode(&a).unwrap(), encode(&b).unwrap());
        for _ in 0..3 {
            assert_eq!(cache.decode(&ea).unwrap(), a);
            assert_eq!(cache.decode(&eb).unwrap(), b);
        }
        // Bytes that do not decode are refused every time, never cached as something else.
        assert!(cache.decode(&ea[..ea.len() - 1]).is_err());
        assert!(cache.decode(&ea[..ea.len() - 1]).is_err());
        // Many distinct records: each shard keeps within its budget.
        for i in 0..20_000 {
            let mut r = sample();
            r.etag = format!("{i:08}");
            let e = encode(&r).unwrap();
            assert_eq!(cache.decode(&e).unwrap().etag, r.etag);
        }
        for shard in &cache.shards {
            let s = shard.lock().unwrap();
            assert!(s.bytes <= DECODED_SHARD_BYTES);
            assert_eq!(
                s.bytes,
                s.map.values().map(|(raw, _)| raw.len()).sum::<usize>()
            );
        }
    }
}

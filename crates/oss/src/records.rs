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
}

impl ObjectRecord {
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
mod tests {
    use super::*;

    #[test]
    fn object_record_round_trips() {
        let r = ObjectRecord {
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
        };
        let back: ObjectRecord = decode(&encode(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(decode::<ObjectRecord>(b"\xff\x00garbage").is_err());
    }
}

//! Shared plumbing between S3 DTOs and service types: object headers, checksums, times.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use feiyun_oss::{ChecksumAlgorithm, ChecksumKind, ChecksumSet, Digests, OssError, StoredChecksum};
use s3s::dto::{self, Timestamp, TimestampFormat};
use s3s::{S3Request, TrailingHeaders};

/// Most bytes of user metadata (`x-amz-meta-*` names and values) S3 accepts.
pub const MAX_USER_METADATA: usize = 2 * 1024;

pub fn timestamp(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

pub fn unix_seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

pub fn unix_millis(t: &Timestamp) -> i64 {
    (time::OffsetDateTime::from(t.clone()).unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

pub fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

pub fn etag(value: &str) -> dto::ETag {
    dto::ETag::Strong(value.to_owned())
}

pub fn etag_conditions(c: &Option<dto::ETagCondition>) -> Option<Vec<String>> {
    c.as_ref().map(|c| match c {
        dto::ETagCondition::Any => vec!["*".to_owned()],
        dto::ETagCondition::ETag(e) => vec![e.value().to_owned()],
    })
}

/// Builds stored headers from a request's fields, enforcing the user-metadata limit.
#[allow(clippy::too_many_arguments)]
pub fn object_headers(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<&Timestamp>,
    metadata: Option<dto::Metadata>,
) -> Result<feiyun_oss::ObjectHeaders, OssError> {
    let mut user_metadata: Vec<(String, String)> = metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    user_metadata.sort();
    let size: usize = user_metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_METADATA {
        return Err(OssError::InvalidArgument(format!(
            "Your metadata headers exceed the maximum allowed metadata size ({MAX_USER_METADATA} bytes)"
        )));
    }
    // `aws-chunked` describes this request's framing, not the object: S3 drops it.
    let content_encoding = content_encoding.and_then(|v| {
        let kept: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
            .collect();
        (!kept.is_empty()).then(|| kept.join(","))
    });
    Ok(feiyun_oss::ObjectHeaders {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        expires: expires.and_then(http_date),
        user_metadata,
        ..Default::default()
    })
}

/// Adds the per-version settings a PUT, copy or CreateMultipartUpload may carry: tags,
/// Object Lock retention and legal hold, storage class.
pub fn version_settings(
    h: &mut feiyun_oss::ObjectHeaders,
    tagging: &Option<String>,
    mode: &Option<dto::ObjectLockMode>,
    until: &Option<Timestamp>,
    legal_hold: &Option<dto::ObjectLockLegalHoldStatus>,
    storage_class: &Option<dto::StorageClass>,
) -> Result<(), OssError> {
    if let Some(t) = tagging {
        h.tags = feiyun_oss::tagging::parse_tagging_header(t)?;
    }
    h.retention = crate::subresources::put_retention(mode, until)?;
    h.legal_hold = crate::subresources::legal_hold_on(legal_hold)?;
    h.storage_class =
        feiyun_oss::transition::storage_class(storage_class.as_ref().map(|c| c.as_str()))?;
    Ok(())
}

pub fn metadata_map(pairs: &[(String, String)]) -> Option<dto::Metadata> {
    (!pairs.is_empty()).then(|| pairs.iter().cloned().collect())
}

pub fn algorithm(
    a: &Option<dto::ChecksumAlgorithm>,
) -> Result<Option<ChecksumAlgorithm>, OssError> {
    match a {
        None => Ok(None),
        Some(a) => ChecksumAlgorithm::parse(a.as_str())
            .map(Some)
            .ok_or_else(|| {
                OssError::InvalidArgument(format!("unknown checksum algorithm {}", a.as_str()))
            }),
    }
}

pub fn checksum_kind(t: &Option<dto::ChecksumType>) -> Result<Option<ChecksumKind>, OssError> {
    match t.as_ref().map(|t| t.as_str()) {
        None => Ok(None),
        Some("FULL_OBJECT") => Ok(Some(ChecksumKind::FullObject)),
        Some("COMPOSITE") => Ok(Some(ChecksumKind::Composite)),
        Some(other) => Err(OssError::InvalidArgument(format!(
            "unknown checksum type {other}"
        ))),
    }
}

/// Checksums sent as headers, in the order of the DTO fields.
pub fn header_checksums(
    crc32: &Option<String>,
    crc32c: &Option<String>,
    crc64nvme: &Option<String>,
    sha1: &Option<String>,
    sha256: &Option<String>,
) -> ChecksumSet {
    let mut set = ChecksumSet::default();
    let fields = [
        (ChecksumAlgorithm::Crc32, crc32),
        (ChecksumAlgorithm::Crc32c, crc32c),
        (ChecksumAlgorithm::Crc64Nvme, crc64nvme),
        (ChecksumAlgorithm::Sha1, sha1),
        (ChecksumAlgorithm::Sha256, sha256),
    ];
    for (alg, v) in fields {
        if let Some(v) = v {
            set.push(alg, v.clone());
        }
    }
    set
}

/// What a body upload must compute and verify, derived from the request.
pub struct BodyChecks {
    pub algorithm: Option<ChecksumAlgorithm>,
    pub sent: ChecksumSet,
    pub trailer: Option<ChecksumAlgorithm>,
    pub trailing: Option<TrailingHeaders>,
    pub content_md5: Option<String>,
    pub payload_sha256: Option<[u8; 32]>,
}

impl BodyChecks {
    pub fn from_request<T>(
        req: &S3Request<T>,
        declared: &Option<dto::ChecksumAlgorithm>,
        sent: ChecksumSet,
        content_md5: Option<String>,
    ) -> Result<Self, OssError> {
        if sent.values.len() > 1 {
            return Err(OssError::InvalidArgument(
                "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
                    .into(),
            ));
        }
        let trailer = match req.headers.get("x-amz-trailer") {
            None => None,
            Some(v) => {
                let name = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
                Some(
                    ChecksumAlgorithm::ALL
                        .into_iter()
                        .find(|a| a.header_name() == name)
                        .ok_or_else(|| {
                            OssError::InvalidArgument(format!("unsupported trailer {name:?}"))
                        })?,
                )
            }
        };
        let declared = algorithm(declared)?;
        let algorithm = sent
            .values
            .first()
            .map(|(a, _)| *a)
            .or(trailer)
            .or(declared);
        // A signed request's payload hash is checked by s3s while the body streams (its
        // UploadStream fails the last chunk on a mismatch, before the body ends): hashing it
        // again here would be a second SHA-256 of every byte. An anonymous request's claim is
        // left to us.
        let payload_sha256 = match req.headers.get("x-amz-content-sha256") {
            _ if req.credentials.is_some() => None,
            Some(v) => {
                let v = v.to_str().unwrap_or("");
                if v.len() == 64 {
                    let raw = hex::decode(v).map_err(|_| {
                        OssError::InvalidArgument("x-amz-content-sha256 is not hex".into())
                    })?;
                    raw.try_into().ok()
                } else {
                    None
                }
            }
            None => None,
        };
        Ok(Self {
            algorithm,
            sent,
            trailer,
            trailing: req.trailing_headers.clone(),
            content_md5,
            payload_sha256,
        })
    }

    pub fn spec(&self, declared_len: Option<i64>) -> Result<feiyun_oss::WriteSpec, OssError> {
        let declared_len = match declared_len {
            Some(n) if n < 0 => {
                return Err(OssError::InvalidArgument("negative Content-Length".into()));
            }
            Some(n) => Some(n as u64),
            None => None,
        };
        Ok(feiyun_oss::WriteSpec {
            checksum_algorithm: self.algorithm,
            want_payload_sha256: self.payload_sha256.is_some(),
            declared_len,
            cold: false,
            sse: None,
            account: String::new(),
            key_check: None,
            replica: None,
        })
    }

    /// Runs after the body is received: Content-MD5, signed payload hash, and the flexible
    /// checksum from a header or from the trailer.
    pub fn verify(self, d: &Digests) -> Result<(), OssError> {
        if let Some(md5) = &self.content_md5 {
            let raw = B64
                .decode(md5.trim())
                .map_err(|_| OssError::InvalidArgument("Content-MD5 is not valid base64".into()))?;
            if raw.len() != 16 {
                return Err(OssError::InvalidArgument(
                    "Content-MD5 must be 16 bytes".into(),
                ));
            }
            if raw != d.md5 {
                return Err(OssError::BadDigest(
                    "The Content-MD5 you specified did not match what we received.".into(),
                ));
            }
        }
        if let Some(expected) = self.payload_sha256
            && d.sha256_payload != Some(expected)
        {
            return Err(OssError::ContentSha256Mismatch);
        }
        let mut sent = self.sent;
        if let (Some(alg), Some(t)) = (self.trailer, &self.trailing) {
            let value = t
                .read(|h| {
                    h.get(alg.header_name())
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })
                .flatten();
            match value {
                Some(v) => sent.push(alg, v),
                None => {
                    return Err(OssError::InvalidArgument(format!(
                        "the trailer {} was declared but not sent",
                        alg.header_name()
                    )));
                }
            }
        }
        d.verify(&sent)
    }
}

/// Output fields for one stored checksum: (crc32, crc32c, crc64nvme, sha1, sha256).
pub type ChecksumFields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub fn checksum_fields(c: Option<&StoredChecksum>) -> ChecksumFields {
    let mut f: ChecksumFields = (None, None, None, None, None);
    if let Some(c) = c {
        let v = Some(c.render());
        match c.algorithm {
            ChecksumAlgorithm::Crc32 => f.0 = v,
            ChecksumAlgorithm::Crc32c => f.1 = v,
            ChecksumAlgorithm::Crc64Nvme => f.2 = v,
            ChecksumAlgorithm::Sha1 => f.3 = v,
            ChecksumAlgorithm::Sha256 => f.4 = v,
        }
    }
    f
}

pub fn checksum_type(c: Option<&StoredChecksum>) -> Option<dto::ChecksumType> {
    c.map(|c| dto::ChecksumType::from(c.kind.as_str().to_owned()))
}

pub fn dto_algorithm(a: ChecksumAlgorithm) -> dto::ChecksumAlgorithm {
    dto::ChecksumAlgorithm::from(a.as_str().to_owned())
}

/// A request body as the service consumes it: chunks, or a typed error.
pub type RequestBody = futures::stream::BoxStream<'static, Result<bytes::Bytes, OssError>>;

/// Adapts an s3s body. s3s verifies a signed payload's SHA-256 and aws-chunked framing while
/// streaming and reports failures as opaque errors; they are classified here so the client
/// gets `XAmzContentSHA256Mismatch` or `IncompleteBody` rather than a generic failure.
pub fn request_body(body: Option<dto::StreamingBlob>) -> RequestBody {
    use futures::StreamExt;
    match body {
        None => futures::stream::empty().boxed(),
        Some(b) => b
            .map(|r| {
                r.map_err(|e| {
                    let text = e.to_string();
                    if text.contains("Sha256Mismatch") {
                        OssError::ContentSha256Mismatch
                    } else if text.contains("Incomplete") || text.contains("LengthMismatch") {
                        OssError::IncompleteBody
                    } else {
                        OssError::Body(text)
                    }
                })
            })
            .boxed(),
    }
}

/// Percent-encodes a key or prefix for `encoding-type=url` listings.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The source version a replica write names (`x-feiyun-replica-version-id` and
/// `-last-modified`), or `None` for an ordinary write.
pub(crate) fn replica_of(
    h: &http::HeaderMap,
) -> Result<Option<feiyun_oss::replication::ReplicaOf>, OssError> {
    use feiyun_oss::replication::{REPLICA_MTIME_HEADER, REPLICA_VERSION_HEADER, ReplicaOf};
    let Some(v) = h.get(REPLICA_VERSION_HEADER) else {
        return Ok(None);
    };
    let version = v
        .to_str()
        .ok()
        .and_then(feiyun_oss::VersionId::parse)
        .ok_or_else(|| {
            OssError::InvalidArgument(format!("{REPLICA_VERSION_HEADER} is not a version id"))
        })?;
    let last_modified_ms = h
        .get(REPLICA_MTIME_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| {
            OssError::InvalidArgument(format!(
                "{REPLICA_MTIME_HEADER} must accompany {REPLICA_VERSION_HEADER} (milliseconds since the epoch)"
            ))
        })?;
    Ok(Some(ReplicaOf {
        version,
        last_modified_ms,
    }))
}

/// A rule filter's tags (lifecycle, replication) as (key, value) pairs.
pub(crate) fn tag_pairs<'a>(tags: impl IntoIterator<Item = &'a dto::Tag>) -> Vec<(String, String)> {
    tags.into_iter()
        .map(|t| {
            (
                t.key.clone().unwrap_or_default(),
                t.value.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a b/c+d%"), "a%20b/c%2Bd%25");
        assert_eq!(url_encode("é"), "%C3%A9");
    }

    #[test]
    fn metadata_limit() {
        let big: dto::Metadata = [("k".to_owned(), "v".repeat(2048))].into_iter().collect();
        assert!(object_headers(None, None, None, None, None, None, Some(big)).is_err());
        let ok: dto::Metadata = [("K".to_owned(), "v".to_owned())].into_iter().collect();
        let h = object_headers(None, None, None, None, None, None, Some(ok)).unwrap();
        assert_eq!(h.user_metadata, vec![("k".to_owned(), "v".to_owned())]);
    }
}

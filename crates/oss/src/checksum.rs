//! Digests computed while data streams in: MD5 (ETag), the optional SHA-256 of a signed
//! payload, and one S3 flexible checksum (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256).
//!
//! When the client names no checksum, CRC64NVME is computed and stored anyway, as S3 does for
//! every new object, so that `x-amz-checksum-mode: ENABLED` always has something to return.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crc_fast::{CrcAlgorithm, Digest as CrcDigest};
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::Sha256;

use crate::OssError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    /// The name used in `x-amz-checksum-algorithm` and XML.
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    /// The header that carries this checksum, e.g. `x-amz-checksum-crc32`.
    pub fn header_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            ChecksumAlgorithm::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            ChecksumAlgorithm::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            ChecksumAlgorithm::Crc64Nvme => Some(CrcAlgorithm::Crc64Nvme),
            _ => None,
        }
    }

    fn raw_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Crc64Nvme => 8,
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }

    /// Whether a multipart object can carry a full-object checksum of this kind.
    pub fn supports_full_object(self) -> bool {
        self.crc().is_some()
    }
}

/// Whether a multipart checksum covers the whole object or is a checksum of part checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumKind {
    FullObject,
    Composite,
}

impl ChecksumKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumKind::FullObject => "FULL_OBJECT",
            ChecksumKind::Composite => "COMPOSITE",
        }
    }
}

/// A checksum as kept in a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredChecksum {
    pub algorithm: ChecksumAlgorithm,
    pub kind: ChecksumKind,
    #[serde(with = "serde_bytes")]
    pub raw: Vec<u8>,
    /// Number of parts for a composite checksum (rendered as the `-N` suffix).
    pub parts: Option<u32>,
}

impl StoredChecksum {
    /// The header/XML form: base64, plus `-N` for composite multipart checksums.
    pub fn render(&self) -> String {
        let b = B64.encode(&self.raw);
        match self.parts {
            Some(n) => format!("{b}-{n}"),
            None => b,
        }
    }
}

/// Checksums a client sent (in headers or trailers), to be verified against what was received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksumSet {
    pub values: Vec<(ChecksumAlgorithm, String)>,
}

impl ChecksumSet {
    pub fn push(&mut self, algorithm: ChecksumAlgorithm, value: String) {
        self.values.push((algorithm, value));
    }
}

/// What the write pipeline computed over the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub md5: [u8; 16],
    pub sha256_payload: Option<[u8; 32]>,
    pub checksum: StoredChecksum,
}

impl Digests {
    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }

    /// Verifies every client-sent checksum; each must be of the computed algorithm.
    pub fn verify(&self, sent: &ChecksumSet) -> Result<(), OssError> {
        for (alg, value) in &sent.values {
            if *alg != self.checksum.algorithm {
                return Err(OssError::InvalidArgument(format!(
                    "checksum {} was sent but {} was computed",
                    alg.as_str(),
                    self.checksum.algorithm.as_str()
                )));
            }
            let raw = B64.decode(value.trim()).map_err(|_| {
                OssError::InvalidArgument(format!("{} is not valid base64", alg.header_name()))
            })?;
            if raw.len() != alg.raw_len() {
                return Err(OssError::InvalidArgument(format!(
                    "{} has the wrong length",
                    alg.header_name()
                )));
            }
            if raw != self.checksum.raw {
                return Err(OssError::BadDigest(format!(
                    "The {} you specified did not match the calculated checksum.",
                    alg.as_str()
                )));
            }
        }
        Ok(())
    }
}

enum FlexHasher {
    Crc(CrcDigest, ChecksumAlgorithm),
    Sha1(Sha1),
    Sha256(Sha256),
}

/// Incremental hashing of an upload.
pub struct StreamHasher {
    size: u64,
    md5: Md5,
    sha256_payload: Option<Sha256>,
    flex: FlexHasher,
    algorithm: ChecksumAlgorithm,
}

impl StreamHasher {
    pub fn new(algorithm: Option<ChecksumAlgorithm>, want_payload_sha256: bool) -> Self {
        let algorithm = algorithm.unwrap_or(ChecksumAlgorithm::Crc64Nvme);
        let flex = match algorithm {
            ChecksumAlgorithm::Sha1 => FlexHasher::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => FlexHasher::Sha256(Sha256::new()),
            crc => FlexHasher::Crc(
                CrcDigest::new(crc.crc().unwrap_or(CrcAlgorithm::Crc64Nvme)),
                crc,
            ),
        };
        Self {
            size: 0,
            md5: Md5::new(),
            sha256_payload: want_payload_sha256.then(Sha256::new),
            flex,
            algorithm,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        self.md5.update(data);
        if let Some(s) = &mut self.sha256_payload {
            s.update(data);
        }
        match &mut self.flex {
            FlexHasher::Crc(d, _) => d.update(data),
            FlexHasher::Sha1(s) => s.update(data),
            FlexHasher::Sha256(s) => s.update(data),
        }
    }

    pub fn finish(self) -> Digests {
        let raw = match self.flex {
            FlexHasher::Crc(d, alg) => crc_bytes(alg, d.finalize()),
            FlexHasher::Sha1(s) => s.finalize().to_vec(),
            FlexHasher::Sha256(s) => s.finalize().to_vec(),
        };
        Digests {
            size: self.size,
            md5: self.md5.finalize().into(),
            sha256_payload: self.sha256_payload.map(|s| s.finalize().into()),
            checksum: StoredChecksum {
                algorithm: self.algorithm,
                kind: ChecksumKind::FullObject,
                raw,
                parts: None,
            },
        }
    }
}

fn crc_bytes(alg: ChecksumAlgorithm, v: u64) -> Vec<u8> {
    match alg {
        ChecksumAlgorithm::Crc64Nvme => v.to_be_bytes().to_vec(),
        _ => (v as u32).to_be_bytes().to_vec(),
    }
}

fn crc_value(raw: &[u8]) -> u64 {
    raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// The multipart object checksum from its parts' checksums and sizes.
pub fn combine_parts(
    algorithm: ChecksumAlgorithm,
    kind: ChecksumKind,
    parts: &[(StoredChecksum, u64)],
) -> Result<StoredChecksum, OssError> {
    for (c, _) in parts {
        if c.algorithm != algorithm {
            return Err(OssError::InvalidPart(format!(
                "a part has a {} checksum, the upload uses {}",
                c.algorithm.as_str(),
                algorithm.as_str()
            )));
        }
    }
    let raw = match kind {
        ChecksumKind::FullObject => {
            let crc = algorithm.crc().ok_or_else(|| {
                OssError::InvalidArgument(format!(
                    "{} cannot be a full-object checksum",
                    algorithm.as_str()
                ))
            })?;
            let mut iter = parts.iter();
            let mut acc = iter.next().map(|(c, _)| crc_value(&c.raw)).unwrap_or(0);
            for (c, len) in iter {
                acc = crc_fast::checksum_combine(crc, acc, crc_value(&c.raw), *len);
            }
            crc_bytes(algorithm, acc)
        }
        ChecksumKind::Composite => {
            let concat: Vec<u8> = parts.iter().flat_map(|(c, _)| c.raw.clone()).collect();
            let mut h = StreamHasher::new(Some(algorithm), false);
            h.update(&concat);
            h.finish().checksum.raw
        }
    };
    Ok(StoredChecksum {
        algorithm,
        kind,
        raw,
        parts: (kind == ChecksumKind::Composite).then_some(parts.len() as u32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(alg: ChecksumAlgorithm, data: &[u8]) -> StoredChecksum {
        let mut h = StreamHasher::new(Some(alg), false);
        h.update(data);
        h.finish().checksum
    }

    #[test]
    fn known_vectors() {
        // "123456789" check values from the CRC catalogue, base64 of big-endian bytes.
        let rows = [
            (ChecksumAlgorithm::Crc32, "y/Q5Jg=="),
            (ChecksumAlgorithm::Crc32c, "4waSgw=="),
            (ChecksumAlgorithm::Crc64Nvme, "rosUhgp5mIg="),
            (ChecksumAlgorithm::Sha1, "98O8HYCOBHMq32eZZczDTKeuNEE="),
            (
                ChecksumAlgorithm::Sha256,
                "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU=",
            ),
        ];
        for (alg, expected) in rows {
            assert_eq!(digest(alg, b"123456789").render(), expected, "{alg:?}");
        }
        let mut h = StreamHasher::new(None, true);
        h.update(b"hello");
        let d = h.finish();
        assert_eq!(d.md5_hex(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(d.checksum.algorithm, ChecksumAlgorithm::Crc64Nvme);
        assert!(d.sha256_payload.is_some());
    }

    #[test]
    fn full_object_combine_equals_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        for alg in [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64Nvme,
        ] {
            let parts: Vec<_> = data
                .chunks(30_000)
                .map(|c| (digest(alg, c), c.len() as u64))
                .collect();
            let combined = combine_parts(alg, ChecksumKind::FullObject, &parts).unwrap();
            assert_eq!(combined.raw, digest(alg, &data).raw, "{alg:?}");
        }
    }

    #[test]
    fn verify_catches_mismatch_and_bad_input() {
        let mut h = StreamHasher::new(Some(ChecksumAlgorithm::Crc32), false);
        h.update(b"123456789");
        let d = h.finish();
        let mut ok = ChecksumSet::default();
        ok.push(ChecksumAlgorithm::Crc32, "y/Q5Jg==".into());
        d.verify(&ok).unwrap();
        let mut bad = ChecksumSet::default();
        bad.push(ChecksumAlgorithm::Crc32, "AAAAAA==".into());
        assert!(matches!(d.verify(&bad), Err(OssError::BadDigest(_))));
        let mut junk = ChecksumSet::default();
        junk.push(ChecksumAlgorithm::Crc32, "!!".into());
        assert!(matches!(d.verify(&junk), Err(OssError::InvalidArgument(_))));
    }
}

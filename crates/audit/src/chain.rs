//! The chain's links and its `HEAD`: keyed MACs, with the unkeyed SHA-256 form of older logs.

use std::path::Path;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{AuditError, io};

type HmacSha256 = hmac::Hmac<Sha256>;

/// The previous hash of the first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The key the chain is MACed with, derived from the region's master key.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl AuditKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC-SHA256 takes any key length");
        for p in parts {
            m.update(p);
        }
        hex::encode(m.finalize().into_bytes())
    }

    /// The link of a record: a MAC of the previous link and the record's JSON.
    pub(crate) fn link(&self, prev: &str, json: &[u8]) -> String {
        self.mac(&[prev.as_bytes(), json])
    }

    fn head_mac(&self, count: u64, hash: &str, unkeyed: u64) -> String {
        self.mac(&[
            b"feiyun audit head v1\n",
            count.to_string().as_bytes(),
            b"\n",
            hash.as_bytes(),
            b"\n",
            unkeyed.to_string().as_bytes(),
        ])
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// The link of a record written before the chain was keyed.
pub(crate) fn unkeyed_link(prev: &str, json: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(json);
    hex::encode(h.finalize())
}

/// The durable end of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub count: u64,
    pub hash: String,
    /// The first `unkeyed` records are linked by plain SHA-256 (written by older releases).
    #[serde(default)]
    pub unkeyed: u64,
    /// MAC over the three fields; absent in a `HEAD` an older release wrote.
    #[serde(default)]
    pub mac: Option<String>,
}

impl Head {
    pub fn sealed(key: &AuditKey, count: u64, hash: String, unkeyed: u64) -> Self {
        let mac = Some(key.head_mac(count, &hash, unkeyed));
        Self {
            count,
            hash,
            unkeyed,
            mac,
        }
    }

    /// Whether the MAC is present and right.
    pub fn authentic(&self, key: &AuditKey) -> bool {
        self.mac.as_deref().is_some_and(|m| {
            let want = key.head_mac(self.count, &self.hash, self.unkeyed);
            constant_time_eq(m.as_bytes(), want.as_bytes())
        })
    }
}

pub(crate) fn read_head(dir: &Path) -> Result<Option<Head>, AuditError> {
    match std::fs::read_to_string(dir.join("HEAD")) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| AuditError::Head(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&dir.join("HEAD"))(e)),
    }
}

pub(crate) fn write_head(dir: &Path, head: &Head) -> Result<(), AuditError> {
    let path = dir.join("HEAD");
    let bytes = serde_json::to_vec(head).map_err(|e| AuditError::Head(e.to_string()))?;
    feiyun_common::durable::write_file(&path, &bytes, false).map_err(io(&path))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

//! Compiled modules at rest: MACed under a key from the master key and bound to their file
//! name, so nothing but our own compiler's output is ever loaded as native code.

use super::*;

/// Artifacts are native code the process maps and runs, so their check is a MAC under a
/// key derived from the master key, not a hash anyone who can write `fc-cache/` could
/// recompute. Artifacts of the unkeyed format (`FYCWASM1`) are never loaded: recompiled.
pub(super) const ARTIFACT_MAGIC: &[u8; 8] = b"FYCWASM2";

pub(super) const ARTIFACT_HEADER: usize = 8 + 32;

/// HMAC-SHA256 of the artifact's file name (its code's SHA-256 and engine) and payload, so
/// an artifact is good only for the code and engine it was compiled for.
pub(super) fn artifact_mac(key: &[u8; 32], path: &Path, serialized: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 takes any key length");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    m.update(name.as_bytes());
    m.update(b"\n");
    m.update(serialized);
    m.finalize().into_bytes().into()
}

pub(super) fn write_artifact(
    key: &[u8; 32],
    path: &Path,
    serialized: &[u8],
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(ARTIFACT_HEADER + serialized.len());
    bytes.extend_from_slice(ARTIFACT_MAGIC);
    bytes.extend_from_slice(&artifact_mac(key, path, serialized));
    bytes.extend_from_slice(serialized);
    feiyun_common::durable::write_file(path, &bytes, true)
}

/// The artifact's payload if its MAC holds; `None` for a missing, damaged, forged or
/// old-format file.
pub(super) fn read_artifact(key: &[u8; 32], path: &Path) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(path).ok()?;
    if bytes.len() < ARTIFACT_HEADER || &bytes[..8] != ARTIFACT_MAGIC {
        return None;
    }
    let want = artifact_mac(key, path, &bytes[ARTIFACT_HEADER..]);
    let same = want
        .iter()
        .zip(&bytes[8..ARTIFACT_HEADER])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0;
    if !same {
        tracing::warn!(path = %path.display(), "compiled artifact fails its MAC; recompiling");
        return None;
    }
    bytes.drain(..ARTIFACT_HEADER);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_with_a_flipped_byte_or_another_key_are_not_loaded() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.cwasm");
        let key = [3u8; 32];
        write_artifact(&key, &path, b"compiled code").expect("write");
        assert_eq!(
            read_artifact(&key, &path).as_deref(),
            Some(&b"compiled code"[..])
        );
        // Someone with write access to the cache but not the master key cannot forge one:
        // the old unkeyed format, a recomputed hash, another key — all refused.
        assert_eq!(read_artifact(&[4u8; 32], &path), None);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(read_artifact(&key, &path), None);
        let mut old = b"FYCWASM1".to_vec();
        old.extend_from_slice(&Sha256::digest(b"evil"));
        old.extend_from_slice(b"evil");
        std::fs::write(&path, &old).expect("write");
        assert_eq!(read_artifact(&key, &path), None);
        // Another code's artifact copied under this name fails too (the name is MACed).
        let other = dir.path().join("b.cwasm");
        write_artifact(&key, &other, b"other code").expect("write");
        std::fs::copy(&other, &path).expect("copy");
        assert_eq!(read_artifact(&key, &path), None);
        assert_eq!(read_artifact(&key, &dir.path().join("missing")), None);
    }
}

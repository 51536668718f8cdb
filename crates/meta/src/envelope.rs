//! The checksummed envelope around every stored metadata value.
//!
//! Layout: `[format: u8 = 1][payload ...][crc32c(format || payload): u32 LE]`. The checksum
//! also covers the table's key (mixed in, not stored) so a value copied under another key is
//! detected as well.

use crc_fast::{CrcAlgorithm, Digest};

const FORMAT_V1: u8 = 1;
pub const OVERHEAD: usize = 5;

pub fn seal(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
    out.push(FORMAT_V1);
    out.extend_from_slice(payload);
    let crc = checksum(key, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Returns the payload, or `None` if the envelope is damaged.
pub fn open<'a>(key: &[u8], sealed: &'a [u8]) -> Option<&'a [u8]> {
    if sealed.len() < OVERHEAD || sealed[0] != FORMAT_V1 {
        return None;
    }
    let (body, tail) = sealed.split_at(sealed.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().ok()?);
    (checksum(key, body) == stored).then(|| &body[1..])
}

fn checksum(key: &[u8], body: &[u8]) -> u32 {
    let mut d = Digest::new(CrcAlgorithm::Crc32Iscsi);
    d.update(&(key.len() as u64).to_le_bytes());
    d.update(key);
    d.update(body);
    d.finalize() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip_and_any_flip_is_caught(key in proptest::collection::vec(any::<u8>(), 0..40),
                                             payload in proptest::collection::vec(any::<u8>(), 0..300),
                                             flip in any::<prop::sample::Index>(),
                                             bit in 0u8..8) {
            let sealed = seal(&key, &payload);
            prop_assert_eq!(open(&key, &sealed), Some(payload.as_slice()));
            let mut bad = sealed.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert_eq!(open(&key, &bad), None);
        }
    }

    #[test]
    fn value_under_another_key_is_rejected() {
        let sealed = seal(b"k1", b"v");
        assert!(open(b"k2", &sealed).is_none());
        assert!(open(b"k1", &sealed[..3]).is_none());
    }
}

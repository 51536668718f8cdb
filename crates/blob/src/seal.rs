//! What protects each stored frame: a crc32c bound to the frame index in plain blobs, or
//! AES-256-GCM in encrypted ones.
//!
//! An encrypted blob has its own random [`FrameKey`] (a data key used for exactly one blob),
//! so the nonce can simply be the frame index: `0u32 ‖ index (u64 BE)` is never repeated
//! under one key. The AAD binds the blob id, the frame index and whether this is the last
//! frame, so a frame moved to another position or another blob fails, and a blob cut after
//! a frame boundary fails too (its new last frame was not sealed as last).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::BlobId;
use crate::local::frame_crc;

pub(crate) const CRC_LEN: usize = 4;
pub(crate) const TAG_LEN: usize = 16;

/// A 256-bit data key for one blob. Zeroed when dropped; never printed.
pub struct FrameKey([u8; 32]);

impl FrameKey {
    pub fn generate() -> Result<Self, crate::BlobError> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| std::io::Error::other("no randomness for a data key"))?;
        Ok(Self(k))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for FrameKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameKey(..)")
    }
}

pub(crate) enum Guard {
    Crc,
    Gcm { key: LessSafeKey, id: BlobId },
}

impl Guard {
    pub(crate) fn new(id: BlobId, key: Option<&FrameKey>) -> Self {
        match key {
            None => Guard::Crc,
            Some(k) => Guard::Gcm {
                // 32 bytes is always a valid AES-256 key.
                key: LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, &k.0).expect("AES-256 takes 32-byte keys"),
                ),
                id,
            },
        }
    }

    pub(crate) fn sealed(&self) -> bool {
        matches!(self, Guard::Gcm { .. })
    }

    pub(crate) fn trailer_len(&self) -> usize {
        match self {
            Guard::Crc => CRC_LEN,
            Guard::Gcm { .. } => TAG_LEN,
        }
    }

    /// Encrypts `frame` in place when sealed, then appends its trailer.
    pub(crate) fn seal(&self, index: u64, last: bool, frame: &mut Vec<u8>) {
        match self {
            Guard::Crc => {
                let crc = frame_crc(index, frame);
                frame.extend_from_slice(&crc.to_le_bytes());
            }
            Guard::Gcm { key, id } => {
                let tag = key
                    .seal_in_place_separate_tag(nonce(index), aad(*id, index, last), frame)
                    // Only fails for inputs beyond GCM's 64 GiB per message; a frame is 64 KiB.
                    .expect("a frame is far below GCM's message limit");
                frame.extend_from_slice(tag.as_ref());
            }
        }
    }

    /// Checks a stored frame followed by its trailer, decrypting it in place when sealed;
    /// returns the payload.
    pub(crate) fn open<'a>(
        &self,
        index: u64,
        last: bool,
        stored: &'a mut [u8],
    ) -> Result<&'a [u8], String> {
        let Some(body_len) = stored.len().checked_sub(self.trailer_len()) else {
            return Err(format!("frame {index} is shorter than its trailer"));
        };
        match self {
            Guard::Crc => {
                let (body, trailer) = stored.split_at(body_len);
                let want = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
                if frame_crc(index, body) != want {
                    return Err(format!("frame {index} failed its checksum"));
                }
                Ok(&stored[..body_len])
            }
            Guard::Gcm { key, id } => key
                .open_in_place(nonce(index), aad(*id, index, last), stored)
                .map(|p| &*p)
                .map_err(|_| format!("frame {index} failed authentication")),
        }
    }
}

impl Guard {
    /// Checks a stored frame (payload then trailer) and appends payload bytes `[from, to)` to
    /// `out`. A whole sealed frame is decrypted straight into `out`, saving a copy on the
    /// streaming path.
    pub(crate) fn open_to(
        &self,
        index: u64,
        last: bool,
        stored: &mut [u8],
        (from, to): (usize, usize),
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let body_len = stored.len().saturating_sub(self.trailer_len());
        match self {
            Guard::Gcm { key, id } if from == 0 && to == body_len => {
                let at = out.len();
                out.resize(at + body_len, 0);
                let (body, tag) = stored.split_at(body_len);
                key.open_separate_gather(
                    nonce(index),
                    aad(*id, index, last),
                    body,
                    tag,
                    &mut out[at..],
                )
                .map_err(|_| {
                    out.truncate(at);
                    format!("frame {index} failed authentication")
                })
            }
            _ => {
                let payload = self.open(index, last, stored)?;
                out.extend_from_slice(&payload[from..to]);
                Ok(())
            }
        }
    }
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(id: BlobId, index: u64, last: bool) -> Aad<[u8; 25]> {
    let mut a = [0u8; 25];
    a[..16].copy_from_slice(&id.to_bytes());
    a[16..24].copy_from_slice(&index.to_be_bytes());
    a[24] = u8::from(last);
    Aad::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_frame_opens_only_where_it_was_sealed() {
        let key = FrameKey::generate().unwrap();
        let id = BlobId(7);
        let g = Guard::new(id, Some(&key));
        let mut f = b"attack at dawn".to_vec();
        g.seal(3, false, &mut f);
        assert_eq!(f.len(), 14 + TAG_LEN);
        assert!(!f.windows(6).any(|w| w == b"attack"));
        assert_eq!(g.open(3, false, &mut f.clone()).unwrap(), b"attack at dawn");
        assert!(g.open(4, false, &mut f.clone()).is_err(), "moved frame");
        assert!(g.open(3, true, &mut f.clone()).is_err(), "last-frame flag");
        let other = Guard::new(BlobId(8), Some(&key));
        assert!(other.open(3, false, &mut f.clone()).is_err(), "other blob");
        let stranger = Guard::new(id, Some(&FrameKey::generate().unwrap()));
        assert!(
            stranger.open(3, false, &mut f.clone()).is_err(),
            "other key"
        );
        for i in 0..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 1;
            assert!(g.open(3, false, &mut bad).is_err(), "flip at {i}");
        }
        assert!(g.open(3, false, &mut [0u8; 3]).is_err());
    }

    #[test]
    fn frame_key_hides_itself() {
        let k = FrameKey::from_bytes(&[0x41; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "FrameKey(..)");
        assert!(FrameKey::from_bytes(&[0; 31]).is_none());
    }
}

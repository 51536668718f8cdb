//! The region master key: 256 bits held only in memory, which seals every customer key's
//! material (and, later, every secret the region stores). It comes from outside the data
//! directory — an environment variable or a key file the operator keeps elsewhere — so a
//! stolen data directory alone opens nothing.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;

use crate::KmsError;

const MAGIC: &[u8; 4] = b"FYM1";
const TAG_LEN: usize = 16;

pub struct MasterKey {
    key: LessSafeKey,
    /// Keys for other purposes are derived from this, never from the sealing key itself.
    derive: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KmsError> {
        if bytes.len() != 32 {
            return Err(KmsError::MasterKey(format!(
                "the master key must be 32 bytes, not {}",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| KmsError::MasterKey("AES-256-GCM rejected the key".into()))?;
        let derive = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes);
        Ok(Self {
            key: LessSafeKey::new(key),
            derive,
        })
    }

    /// The form operators handle: standard base64 of 32 bytes (`openssl rand -base64 32`).
    pub fn from_base64(text: &str) -> Result<Self, KmsError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| KmsError::MasterKey("the master key is not base64".into()))?;
        Self::from_bytes(&bytes)
    }

    /// A 256-bit key for `purpose` (the audit chain's MAC, say), derived one-way from the
    /// master key: HMAC-SHA256(master, "feiyun derive v1\n" ‖ purpose).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.derive);
        ctx.update(b"feiyun derive v1\n");
        ctx.update(purpose.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// A fresh random key and its base64 form, to be stored by the operator.
    pub fn generate() -> Result<(Self, String), KmsError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KmsError::MasterKey("no randomness".into()))?;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok((Self::from_bytes(&bytes)?, text))
    }

    /// Seals `plaintext`; `purpose` binds the result to what it is for (a key id and
    /// version), so sealed values cannot be swapped between records.
    /// Whether `bytes` look like a value [`MasterKey::seal`] made (nothing is checked yet).
    pub fn is_sealed(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    pub fn seal(&self, purpose: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KmsError::MasterKey("no randomness".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut body,
            )
            .map_err(|_| KmsError::MasterKey("sealing failed".into()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn unseal(&self, purpose: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KmsError> {
        let header = MAGIC.len() + NONCE_LEN;
        if sealed.len() < header + TAG_LEN || &sealed[..MAGIC.len()] != MAGIC {
            return Err(KmsError::Corrupt("a sealed value is malformed".into()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[MAGIC.len()..header]);
        let mut body = sealed[header..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut body,
            )
            .map_err(|_| {
                KmsError::Corrupt(
                    "a sealed value does not open with this master key (wrong key, or altered)"
                        .into(),
                )
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_key_and_purpose() {
        let (k, text) = MasterKey::generate().unwrap();
        let sealed = k.seal(b"key/1", b"material").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"material"));
        assert_eq!(k.unseal(b"key/1", &sealed).unwrap(), b"material");
        assert!(k.unseal(b"key/2", &sealed).is_err(), "another purpose");
        let again = MasterKey::from_base64(&text).unwrap();
        assert_eq!(again.unseal(b"key/1", &sealed).unwrap(), b"material");
        let (other, _) = MasterKey::generate().unwrap();
        assert!(
            other.unseal(b"key/1", &sealed).is_err(),
            "another master key"
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(k.unseal(b"key/1", &bad).is_err(), "flipped byte {i}");
        }
        assert!(k.unseal(b"key/1", &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn bad_master_keys_are_refused() {
        assert!(MasterKey::from_bytes(&[0; 16]).is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64("AAAA").is_err());
    }
}

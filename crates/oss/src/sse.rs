//! Server-side encryption of object data: the three S3 modes (SSE-S3, SSE-KMS, SSE-C), the
//! bucket default, and the data keys.
//!
//! Every blob gets a fresh 256-bit data key (a multipart upload one per part) which the
//! blob engine uses for its AES-256-GCM frames; an inline object's bytes are sealed with
//! their own key the same way. A data key is stored only sealed, bound to the object's ARN
//! and its blob id as context:
//!
//! - SSE-S3: by the region master key;
//! - SSE-KMS: by the named customer key of the KMS (so disabling or deleting that key makes
//!   the data unreadable), with the request's encryption context added;
//! - SSE-C: by the customer's own key, which is never stored; a salted HMAC of it (itself
//!   sealed by the master key) tells a wrong key from a right one before anything is read.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use feiyun_blob::{BlobId, BlobStore, FrameKey};
use feiyun_kms::KmsError;
use feiyun_meta::MetaStore;
use serde::{Deserialize, Serialize};

use crate::records::BucketRecord;
use crate::{ObjectService, OssError};

pub type Context = BTreeMap<String, String>;

/// Whether the caller may use a KMS key (by ARN) for an action (`kms:GenerateDataKey` to
/// write, `kms:Decrypt` to read): the edge's IAM decision, asked once the service knows
/// which key an object uses. Requests the service makes itself (lifecycle) carry none.
#[derive(Clone)]
pub struct KeyCheck(pub Arc<KeyCheckFn>);

/// `(action, key ARN) -> allowed`.
pub type KeyCheckFn = dyn Fn(&str, &str) -> bool + Send + Sync;

impl std::fmt::Debug for KeyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCheck(..)")
    }
}

impl KeyCheck {
    pub(crate) fn require(&self, action: &str, key_arn: &str) -> Result<(), OssError> {
        if (self.0)(action, key_arn) {
            Ok(())
        } else {
            Err(OssError::AccessDenied(format!(
                "not authorized to perform {action} on the KMS key {key_arn}"
            )))
        }
    }
}

/// What a request's headers ask for.
#[derive(Clone, Debug)]
pub enum SseRequest {
    /// `x-amz-server-side-encryption: AES256`.
    S3,
    /// `aws:kms`, with `…-aws-kms-key-id` (id, ARN or alias; the AWS managed `aws/s3` key
    /// when absent), `…-context` and `…-bucket-key-enabled`.
    Kms {
        key_id: Option<String>,
        context: Context,
        bucket_key: bool,
    },
    /// The three `…-customer-*` headers.
    Customer(CustomerKey),
}

/// A key the client sends (SSE-C). Zeroed when dropped, never printed.
#[derive(Clone)]
pub struct CustomerKey {
    key: [u8; 32],
    md5: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerKey(md5={})", self.md5)
    }
}

impl Drop for CustomerKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl CustomerKey {
    /// From the `…-customer-algorithm`, `…-customer-key` and `…-customer-key-MD5` values,
    /// checked as S3 checks them.
    pub fn parse(algorithm: &str, key_b64: &str, md5_b64: &str) -> Result<Self, OssError> {
        if algorithm != "AES256" {
            return Err(OssError::InvalidEncryptionAlgorithm(format!(
                "The encryption algorithm {algorithm:?} is not supported; use AES256"
            )));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let key: [u8; 32] = b64
            .decode(key_b64)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| {
                OssError::InvalidArgument(
                    "The secret key was invalid for the specified algorithm (AES256 takes 256 bits, base64-encoded).".into(),
                )
            })?;
        let md5 = md5::Digest::finalize(<md5::Md5 as md5::Digest>::new_with_prefix(key));
        if b64.encode(md5) != md5_b64 {
            return Err(OssError::InvalidArgument(
                "The calculated MD5 hash of the key did not match the hash that was provided."
                    .into(),
            ));
        }
        Ok(Self {
            key,
            md5: md5_b64.to_owned(),
        })
    }

    pub fn md5(&self) -> &str {
        &self.md5
    }
}

/// How an object's data keys are sealed (stored in its record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SseMode {
    S3,
    Kms {
        key_arn: String,
        #[serde(default)]
        context: Context,
        #[serde(default)]
        bucket_key: bool,
    },
    Customer {
        key_md5: String,
        /// `salt ‖ HMAC-SHA256(salt, key)`, sealed by the master key.
        #[serde(with = "serde_bytes")]
        check: Vec<u8>,
    },
}

impl SseMode {
    /// `x-amz-server-side-encryption` for this mode (SSE-C objects send none).
    pub fn algorithm(&self) -> Option<&'static str> {
        match self {
            SseMode::S3 => Some("AES256"),
            SseMode::Kms { .. } => Some("aws:kms"),
            SseMode::Customer { .. } => None,
        }
    }

    /// The KMS key ARN, for `…-aws-kms-key-id`.
    pub fn kms_key(&self) -> Option<&str> {
        match self {
            SseMode::Kms { key_arn, .. } => Some(key_arn),
            _ => None,
        }
    }

    pub fn bucket_key(&self) -> bool {
        matches!(
            self,
            SseMode::Kms {
                bucket_key: true,
                ..
            }
        )
    }

    pub fn customer_md5(&self) -> Option<&str> {
        match self {
            SseMode::Customer { key_md5, .. } => Some(key_md5),
            _ => None,
        }
    }
}

/// What protects a stored object: its mode and one sealed data key per blob (one in all for
/// an inline object), in blob order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    pub mode: SseMode,
    pub keys: Vec<serde_bytes::ByteBuf>,
}

/// A bucket's default encryption (PutBucketEncryption).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketEncryption {
    pub algorithm: DefaultSse,
    pub bucket_key: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DefaultSse {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS under this key (an ARN once stored), or the account's `aws/s3` key.
    Kms { key: Option<String> },
}

/// A resolved mode for new data, with the customer key in hand for SSE-C.
#[derive(Clone, Debug)]
pub struct Sealing {
    pub mode: SseMode,
    customer: Option<CustomerKey>,
}

impl Sealing {
    /// A stored mode (an upload's) with the customer key the request brought, if SSE-C.
    pub(crate) fn of(mode: SseMode, customer: Option<CustomerKey>) -> Self {
        Self { mode, customer }
    }
}

/// What a new data key is bound to.
#[derive(Clone, Copy)]
pub(crate) struct KeyPlace<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// `None` for an inline object.
    pub blob: Option<BlobId>,
}

impl KeyPlace<'_> {
    pub(crate) fn context(&self, extra: &Context) -> Context {
        let mut ctx = extra.clone();
        ctx.insert(
            "aws:s3:arn".into(),
            format!("arn:aws:s3:::{}/{}", self.bucket, self.key),
        );
        ctx.insert(
            "feiyun:blob".into(),
            self.blob.map_or_else(|| "inline".into(), |b| b.to_hex()),
        );
        ctx
    }
}

/// `tag` then the KMS's canonical encoding of the context (length-prefixed sorted pairs).
fn canonical(tag: &[u8], ctx: &Context) -> Vec<u8> {
    let mut out = tag.to_vec();
    out.extend_from_slice(&feiyun_kms::canonical_context(ctx));
    out
}

fn random<const N: usize>() -> Result<[u8; N], OssError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| OssError::Internal("no randomness".into()))?;
    Ok(b)
}

fn gcm(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes 32-byte keys"))
}

fn check_purpose(bucket: &str, key: &str) -> Vec<u8> {
    format!("sse-c-check\0arn:aws:s3:::{bucket}/{key}").into_bytes()
}

/// The account a KMS key ARN belongs to.
fn account_of(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or("")
}

/// KMS refusals as S3 reports them: `KMS.*` codes, 400.
pub(crate) fn kms_error(e: KmsError) -> OssError {
    let (code, message) = match e {
        KmsError::NotFound(m) => ("KMS.NotFoundException", m),
        KmsError::Disabled(m) => ("KMS.DisabledException", format!("{m} is disabled.")),
        KmsError::InvalidState(m) => ("KMS.KMSInvalidStateException", m),
        KmsError::Validation(m) => ("KMS.ValidationException", m),
        KmsError::IncorrectKey | KmsError::InvalidCiphertext => {
            return OssError::Corrupt("a sealed data key does not open".into());
        }
        other => return OssError::Internal(other.to_string()),
    };
    OssError::Kms { code, message }
}

/// The ETag S3 gives each mode: the MD5 of the content for SSE-S3 (and plaintext), and for
/// SSE-KMS and SSE-C a value that is not the content's MD5, so it reveals nothing about it.
pub(crate) fn etag_for(mode: Option<&SseMode>, md5_hex: String, key: Option<&FrameKey>) -> String {
    match (mode, key) {
        (Some(SseMode::Kms { .. } | SseMode::Customer { .. }), Some(k)) => {
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, k.as_bytes()),
                md5_hex.as_bytes(),
            );
            hex::encode(&tag.as_ref()[..16])
        }
        _ => md5_hex,
    }
}

/// Seals an inline object's bytes under its own data key (used for nothing else).
pub(crate) fn seal_inline(key: &FrameKey, mut data: Vec<u8>) -> Vec<u8> {
    gcm(key.as_bytes())
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(b"inline"),
            &mut data,
        )
        .expect("inline objects are far below GCM's message limit");
    data
}

pub(crate) fn open_inline(key: &FrameKey, sealed: &[u8]) -> Result<Vec<u8>, OssError> {
    let mut buf = sealed.to_vec();
    let n = gcm(key.as_bytes())
        .open_in_place(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(b"inline"),
            &mut buf,
        )
        .map_err(|_| OssError::Corrupt("inline object failed authentication".into()))?
        .len();
    buf.truncate(n);
    Ok(buf)
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// PutBucketEncryption (`Some`) and DeleteBucketEncryption (`None`, back to SSE-S3).
    /// A named KMS key must exist and be enabled in `account`; it is stored as its ARN.
    pub async fn set_bucket_encryption(
        &self,
        bucket: &str,
        config: Option<BucketEncryption>,
        account: &str,
    ) -> Result<(), OssError> {
        let config = match config {
            Some(BucketEncryption {
                algorithm: DefaultSse::Kms { key: Some(k) },
                bucket_key,
            }) => {
                let meta = self.kms.describe(account, &k).map_err(kms_error)?;
                Some(BucketEncryption {
                    algorithm: DefaultSse::Kms {
                        key: Some(meta.arn),
                    },
                    bucket_key,
                })
            }
            other => other,
        };
        self.update_bucket(bucket, move |r| {
            r.encryption = config.clone();
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// GetBucketEncryption: the stored default, or SSE-S3 when none is stored (S3's answer
    /// since 2023); `None` only when the region stores plaintext by default.
    pub async fn bucket_encryption(
        &self,
        bucket: &str,
    ) -> Result<Option<BucketEncryption>, OssError> {
        let r = self.bucket(bucket).await?;
        Ok(r.encryption.or_else(|| {
            self.config.encrypt_at_rest.then_some(BucketEncryption {
                algorithm: DefaultSse::S3,
                bucket_key: false,
            })
        }))
    }

    /// How a new object in `bucket` is encrypted: as the request asks, else by the bucket's
    /// default, else SSE-S3 (unless the region stores plaintext). `account` is the caller's,
    /// used for KMS keys when the bucket has no owner recorded.
    pub(crate) async fn sealing_for(
        &self,
        bucket: &BucketRecord,
        request: Option<&SseRequest>,
        account: &str,
        check: Option<&KeyCheck>,
    ) -> Result<Option<Arc<Sealing>>, OssError> {
        let account = bucket.owner.as_deref().unwrap_or(account);
        let default;
        let request = match request {
            Some(r) => r,
            None => match &bucket.encryption {
                Some(BucketEncryption {
                    algorithm: DefaultSse::S3,
                    ..
                }) => &SseRequest::S3,
                Some(BucketEncryption {
                    algorithm: DefaultSse::Kms { key },
                    bucket_key,
                }) => {
                    default = SseRequest::Kms {
                        key_id: key.clone(),
                        context: Context::new(),
                        bucket_key: *bucket_key,
                    };
                    &default
                }
                None if self.config.encrypt_at_rest => &SseRequest::S3,
                None => return Ok(None),
            },
        };
        let mode = match request {
            SseRequest::S3 => SseMode::S3,
            SseRequest::Kms {
                key_id,
                context,
                bucket_key,
            } => {
                let meta = match key_id {
                    Some(k) => self.kms.describe(account, k).map_err(kms_error)?,
                    None => self
                        .kms
                        .managed_key(account, "s3", crate::now_millis())
                        .await
                        .map_err(kms_error)?,
                };
                if meta.state != feiyun_kms::KeyState::Enabled {
                    return Err(kms_error(if meta.state == feiyun_kms::KeyState::Disabled {
                        KmsError::Disabled(meta.arn)
                    } else {
                        KmsError::InvalidState(format!("{} is pending deletion.", meta.arn))
                    }));
                }
                if let Some(c) = check {
                    c.require("kms:GenerateDataKey", &meta.arn)?;
                }
                SseMode::Kms {
                    key_arn: meta.arn,
                    context: context.clone(),
                    bucket_key: *bucket_key,
                }
            }
            SseRequest::Customer(_) => {
                return Err(OssError::Internal(
                    "SSE-C sealing is made by sealing_for_customer".into(),
                ));
            }
        };
        Ok(Some(Arc::new(Sealing {
            mode,
            customer: None,
        })))
    }

    /// SSE-C: a fresh salted check of the customer's key for a new object at `bucket/key`.
    pub(crate) fn sealing_for_customer(
        &self,
        bucket: &str,
        key: &str,
        customer: &CustomerKey,
    ) -> Result<Arc<Sealing>, OssError> {
        let salt: [u8; 16] = random()?;
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salt), &customer.key);
        let mut plain = salt.to_vec();
        plain.extend_from_slice(mac.as_ref());
        let check = self
            .kms
            .master()
            .seal(&check_purpose(bucket, key), &plain)
            .map_err(kms_error)?;
        Ok(Arc::new(Sealing {
            mode: SseMode::Customer {
                key_md5: customer.md5.clone(),
                check,
            },
            customer: Some(customer.clone()),
        }))
    }

    /// Checks that `given` is the customer key an SSE-C object (or upload) was written with:
    /// missing → 400, wrong → 403, as S3 answers. Keys for an object that is not SSE-C are
    /// refused too.
    pub(crate) fn check_customer_key(
        &self,
        mode: Option<&SseMode>,
        given: Option<&CustomerKey>,
        bucket: &str,
        key: &str,
    ) -> Result<(), OssError> {
        match (mode, given) {
            (Some(SseMode::Customer { check, .. }), Some(c)) => {
                let plain = self
                    .kms
                    .master()
                    .unseal(&check_purpose(bucket, key), check)
                    .map_err(|_| OssError::Corrupt("SSE-C key check does not open".into()))?;
                if plain.len() != 48 {
                    return Err(OssError::Corrupt("SSE-C key check is malformed".into()));
                }
                let k = hmac::Key::new(hmac::HMAC_SHA256, &plain[..16]);
                hmac::verify(&k, &c.key, &plain[16..]).map_err(|_| {
                    OssError::AccessDenied(
                        "The SSE-C key does not match the key the object was stored with".into(),
                    )
                })
            }
            (Some(SseMode::Customer { .. }), None) => Err(OssError::InvalidRequest(
                "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.".into(),
            )),
            (_, Some(_)) => Err(OssError::InvalidRequest(
                "The encryption parameters are not applicable to this object.".into(),
            )),
            (_, None) => Ok(()),
        }
    }

    /// A fresh data key for one blob (or an inline object) and its sealed form.
    pub(crate) fn new_data_key(
        &self,
        sealing: &Sealing,
        place: KeyPlace<'_>,
    ) -> Result<(FrameKey, Vec<u8>), OssError> {
        let key = FrameKey::generate()?;
        let sealed = match &sealing.mode {
            SseMode::S3 => self
                .kms
                .master()
                .seal(
                    &canonical(b"sse-s3\0", &place.context(&Context::new())),
                    key.as_bytes(),
                )
                .map_err(kms_error)?,
            SseMode::Kms {
                key_arn, context, ..
            } => self
                .kms
                .encrypt(
                    account_of(key_arn),
                    key_arn,
                    key.as_bytes(),
                    &place.context(context),
                )
                .map_err(kms_error)?,
            SseMode::Customer { .. } => {
                let c = sealing
                    .customer
                    .as_ref()
                    .ok_or_else(|| OssError::Internal("SSE-C sealing without its key".into()))?;
                seal_with_customer(c, &place, key.as_bytes())?
            }
        };
        Ok((key, sealed))
    }

    /// Opens a stored data key. For SSE-KMS the key's state decides (disabled or deleted
    /// keys refuse, which is how erasing a key erases its objects).
    pub(crate) fn open_data_key(
        &self,
        mode: &SseMode,
        sealed: &[u8],
        customer: Option<&CustomerKey>,
        place: KeyPlace<'_>,
    ) -> Result<FrameKey, OssError> {
        let plain = match mode {
            SseMode::S3 => self
                .kms
                .master()
                .unseal(
                    &canonical(b"sse-s3\0", &place.context(&Context::new())),
                    sealed,
                )
                .map_err(|_| OssError::Corrupt("a sealed data key does not open".into()))?,
            SseMode::Kms {
                key_arn, context, ..
            } => {
                let account = account_of(key_arn);
                match self
                    .kms
                    .decrypt(account, sealed, &place.context(context), None)
                {
                    Ok((_, p)) => p,
                    Err(KmsError::InvalidCiphertext) => {
                        return Err(match self.kms.describe(account, key_arn) {
                            Err(KmsError::NotFound(_)) => OssError::Kms {
                                code: "KMS.NotFoundException",
                                message: format!(
                                    "The KMS key {key_arn} that protected this object has been deleted; the object cannot be decrypted."
                                ),
                            },
                            _ => OssError::Corrupt("a sealed data key does not open".into()),
                        });
                    }
                    Err(e) => return Err(kms_error(e)),
                }
            }
            SseMode::Customer { .. } => {
                let c = customer.ok_or_else(|| {
                    OssError::InvalidRequest("The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.".into())
                })?;
                open_with_customer(c, &place, sealed)?
            }
        };
        FrameKey::from_bytes(&plain)
            .ok_or_else(|| OssError::Corrupt("a data key is not 256 bits".into()))
    }
}

fn seal_with_customer(
    c: &CustomerKey,
    place: &KeyPlace<'_>,
    data_key: &[u8],
) -> Result<Vec<u8>, OssError> {
    let nonce: [u8; NONCE_LEN] = random()?;
    let mut body = data_key.to_vec();
    gcm(&c.key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(canonical(b"sse-c\0", &place.context(&Context::new()))),
            &mut body,
        )
        .map_err(|_| OssError::Internal("sealing a data key failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

fn open_with_customer(
    c: &CustomerKey,
    place: &KeyPlace<'_>,
    sealed: &[u8],
) -> Result<Vec<u8>, OssError> {
    if sealed.len() < NONCE_LEN {
        return Err(OssError::Corrupt("a sealed data key is malformed".into()));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[..NONCE_LEN]);
    let mut body = sealed[NONCE_LEN..].to_vec();
    let n = gcm(&c.key)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(canonical(b"sse-c\0", &place.context(&Context::new()))),
            &mut body,
        )
        .map_err(|_| {
            OssError::AccessDenied(
                "The SSE-C key does not match the key the object was stored with".into(),
            )
        })?
        .len();
    body.truncate(n);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_keys_are_checked_as_s3_checks_them() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = [7u8; 32];
        let md5 = b64.encode(<md5::Md5 as md5::Digest>::digest(key));
        let ok = CustomerKey::parse("AES256", &b64.encode(key), &md5).unwrap();
        assert_eq!(ok.md5(), md5);
        assert!(!format!("{ok:?}").contains(&b64.encode(key)));
        assert!(matches!(
            CustomerKey::parse("AES128", &b64.encode(key), &md5),
            Err(OssError::InvalidEncryptionAlgorithm(_))
        ));
        assert!(matches!(
            CustomerKey::parse("AES256", &b64.encode([7u8; 16]), &md5),
            Err(OssError::InvalidArgument(_))
        ));
        assert!(matches!(
            CustomerKey::parse("AES256", "not base64!", &md5),
            Err(OssError::InvalidArgument(_))
        ));
        assert!(matches!(
            CustomerKey::parse("AES256", &b64.encode(key), &b64.encode([0u8; 16])),
            Err(OssError::InvalidArgument(_))
        ));
    }

    #[test]
    fn customer_sealed_keys_open_only_in_place_with_the_key() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mk = |k: [u8; 32]| {
            let md5 = b64.encode(<md5::Md5 as md5::Digest>::digest(k));
            CustomerKey::parse("AES256", &b64.encode(k), &md5).unwrap()
        };
        let (c, wrong) = (mk([1; 32]), mk([2; 32]));
        let place = KeyPlace {
            bucket: "b",
            key: "k",
            blob: Some(BlobId(9)),
        };
        let sealed = seal_with_customer(&c, &place, &[5; 32]).unwrap();
        assert_eq!(open_with_customer(&c, &place, &sealed).unwrap(), [5; 32]);
        assert!(matches!(
            open_with_customer(&wrong, &place, &sealed),
            Err(OssError::AccessDenied(_))
        ));
        let elsewhere = KeyPlace {
            key: "other",
            ..place
        };
        assert!(open_with_customer(&c, &elsewhere, &sealed).is_err());
    }

    #[test]
    fn inline_seal_round_trips_and_refuses_damage() {
        let k = FrameKey::generate().unwrap();
        let sealed = seal_inline(&k, b"small secret".to_vec());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(open_inline(&k, &sealed).unwrap(), b"small secret");
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(open_inline(&k, &bad).is_err());
        assert!(open_inline(&FrameKey::generate().unwrap(), &sealed).is_err());
    }

    #[test]
    fn etags_hide_the_md5_only_where_s3_does() {
        let k = FrameKey::generate().unwrap();
        let md5 = "0123456789abcdef0123456789abcdef".to_string();
        assert_eq!(etag_for(Some(&SseMode::S3), md5.clone(), Some(&k)), md5);
        assert_eq!(etag_for(None, md5.clone(), None), md5);
        let kms = SseMode::Kms {
            key_arn: "arn".into(),
            context: Context::new(),
            bucket_key: false,
        };
        let e = etag_for(Some(&kms), md5.clone(), Some(&k));
        assert_eq!(e.len(), 32);
        assert_ne!(e, md5);
    }
}

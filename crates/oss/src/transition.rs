//! Storage classes and lifecycle transitions.
//!
//! Feiyun has two local classes: STANDARD, and a cold class stored compressed (the blob
//! engine's cold format). The cold class answers to the names of S3's instant-retrieval
//! classes (`STANDARD_IA`, `ONEZONE_IA`, `GLACIER_IR`), so configurations written for AWS
//! keep working and reads stay immediate. Classes that need a RestoreObject before a read
//! (`GLACIER`, `DEEP_ARCHIVE`) wait for the public-cloud tier and are refused.
//!
//! Invariant: a record's `storage_class` is `Some` exactly when its blobs are in the cold
//! format (inline records hold their bytes in the record either way).
//!
//! A transition copies each blob of a version into a new cold blob, reads the copy back to
//! prove it holds the same bytes, then swaps the blob list in one commit that checks the
//! version still holds the blobs it copied. The old blobs become garbage in that commit and
//! are collected once no reader holds them. Object Lock does not stop a transition: the
//! version's bytes, ETag, checksums and retention are unchanged, as in S3.

use crc_fast::{CrcAlgorithm, Digest};
use feiyun_blob::{BlobId, BlobReader, BlobStore, BlobWriter, FrameKey};
use feiyun_meta::{MetaStore, Table, WriteBatch};

use crate::put::PendingBlobGuard;
use crate::records::{BlobRef, ObjectData, ObjectRecord};
use crate::versions::VersionSelector;
use crate::{ObjectService, OssError};

/// Names of the local cold class.
pub const COLD_CLASSES: [&str; 3] = ["STANDARD_IA", "ONEZONE_IA", "GLACIER_IR"];
/// S3's minimum age before a current version may move to the infrequent-access classes.
const IA_MIN_DAYS: u32 = 30;
const COPY_CHUNK: usize = 1024 * 1024;

/// The stored class for a requested one: `None` for STANDARD, the name for a cold class.
pub fn storage_class(requested: Option<&str>) -> Result<Option<String>, OssError> {
    match requested {
        None | Some("STANDARD") => Ok(None),
        Some(c) if COLD_CLASSES.contains(&c) => Ok(Some(c.to_owned())),
        Some(other) => Err(OssError::InvalidStorageClass(format!(
            "The storage class {other} is not available in this region; the local cold class \
             answers to {}",
            COLD_CLASSES.join(", ")
        ))),
    }
}

/// Checks a lifecycle transition's target class and age as S3 does.
pub(crate) fn validate_transition(class: &str, days: Option<u32>) -> Result<(), OssError> {
    if !COLD_CLASSES.contains(&class) {
        return Err(OssError::InvalidStorageClass(format!(
            "Lifecycle cannot transition to {class}; the local cold class answers to {}",
            COLD_CLASSES.join(", ")
        )));
    }
    if class != "GLACIER_IR"
        && let Some(d) = days
        && d < IA_MIN_DAYS
    {
        return Err(OssError::InvalidArgument(format!(
            "'Days' in Transition action must be greater than or equal to {IA_MIN_DAYS} for storageClass '{class}'"
        )));
    }
    Ok(())
}

/// How cold a class is; lifecycle only ever moves a version colder.
pub(crate) fn class_rank(class: Option<&str>) -> u8 {
    match class {
        None | Some("STANDARD") => 0,
        Some("GLACIER_IR") => 2,
        Some(_) => 1,
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Moves one version (as `seen`, read moments ago) to the cold class `class`.
    /// `Ok(false)`: the version changed or went away meanwhile; nothing was done.
    pub(crate) async fn transition_version(
        &self,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        seen: &ObjectRecord,
        class: &str,
    ) -> Result<bool, OssError> {
        let mut guards = Vec::new();
        let mut fresh = Vec::new();
        let mut sealed_keys = Vec::new();
        // The server cannot read SSE-C data without the customer's key, so it cannot
        // recompress it: such versions stay where they are.
        if matches!(seen.sse(), Some(crate::sse::SseMode::Customer { .. })) {
            tracing::debug!(bucket, key, "SSE-C version not transitioned");
            return Ok(false);
        }
        // Already cold or inline: only the label changes.
        if seen.storage_class.is_none()
            && let ObjectData::Blobs(old) = &seen.data
        {
            for (i, b) in old.iter().enumerate() {
                let id = BlobId::random();
                let mut reg = WriteBatch::new();
                reg.put(
                    Table::PendingBlobs,
                    id.to_bytes().to_vec(),
                    self.pending_tag(),
                );
                self.meta.commit(reg).await?;
                guards.push(PendingBlobGuard::new(
                    self.meta.clone(),
                    self.blobs.clone(),
                    id,
                ));
                // A fresh data key for the new blob: a key never encrypts two blobs.
                let keys = match &seen.encryption {
                    None => None,
                    Some(enc) => {
                        let sealed = enc
                            .keys
                            .get(i)
                            .ok_or_else(|| OssError::Corrupt("a blob has no data key".into()))?;
                        let place = |blob| crate::sse::KeyPlace { bucket, key, blob };
                        let old_key =
                            self.open_data_key(&enc.mode, sealed, None, place(Some(b.id)))?;
                        let sealing = crate::sse::Sealing::of(enc.mode.clone(), None);
                        let (new_key, new_sealed) = self.new_data_key(&sealing, place(Some(id)))?;
                        sealed_keys.push(serde_bytes::ByteBuf::from(new_sealed));
                        Some((old_key, new_key))
                    }
                };
                let (blobs, from) = (self.blobs.clone(), *b);
                let copied =
                    tokio::task::spawn_blocking(move || copy_cold(&*blobs, from, id, keys))
                        .await
                        .map_err(|e| OssError::Internal(format!("transition worker: {e}")))?;
                match copied {
                    Ok(()) => fresh.push(BlobRef { id, len: b.len }),
                    // Deleted meanwhile (its version went away): nothing to move.
                    Err(feiyun_blob::BlobError::NotFound(_)) => return Ok(false),
                    Err(e @ feiyun_blob::BlobError::Corrupt { .. }) => {
                        self.note_corruption(&e.to_string());
                        return Err(e.into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut extra = WriteBatch::new();
        for b in seen.blobs().iter().filter(|_| !fresh.is_empty()) {
            extra.put(Table::Garbage, b.id.to_bytes().to_vec(), Vec::new());
        }
        for b in &fresh {
            extra.delete(Table::PendingBlobs, b.id.to_bytes().to_vec());
        }
        let (expect, class) = (seen.data.clone(), class.to_owned());
        let new_data = (!fresh.is_empty()).then_some(ObjectData::Blobs(fresh));
        let new_encryption = match (&seen.encryption, new_data.is_some()) {
            (Some(enc), true) => Some(crate::sse::Encryption {
                mode: enc.mode.clone(),
                keys: sealed_keys,
            }),
            (other, _) => other.clone(),
        };
        let updated = self
            .update_version_with(
                bucket,
                key,
                Some(selector),
                move |_, rec, _| {
                    if rec.data != expect {
                        return Err(OssError::PreconditionFailed);
                    }
                    if let Some(d) = &new_data {
                        rec.data = d.clone();
                        rec.encryption = new_encryption.clone();
                    }
                    rec.storage_class = Some(class.clone());
                    Ok(())
                },
                extra,
                Some("LifecycleTransition"),
            )
            .await;
        match updated {
            Ok(_) => {
                for g in &mut guards {
                    g.disarm();
                }
                self.janitor.notify_one();
                Ok(true)
            }
            Err(e) if crate::versions::changed_meanwhile(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Copies blob `from` into a new cold blob `to`, then reads `to` back and compares a CRC of
/// the whole stream, so a transition never commits a copy that differs from its source.
fn copy_cold<B: BlobStore>(
    blobs: &B,
    from: BlobRef,
    to: BlobId,
    keys: Option<(FrameKey, FrameKey)>,
) -> Result<(), feiyun_blob::BlobError> {
    let (from_key, to_key) = match &keys {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let mut src = blobs.open(from.id, from.len, from_key)?;
    let mut w = blobs.create_cold(to, to_key)?;
    let mut sent = Digest::new(CrcAlgorithm::Crc64Nvme);
    let mut at = 0u64;
    while at < from.len {
        let n = (from.len - at).min(COPY_CHUNK as u64) as usize;
        let chunk = src.read(at, n)?;
        sent.update(&chunk);
        w.write(&chunk)?;
        at += n as u64;
    }
    w.finish()?;
    let mut back = blobs.open(to, from.len, to_key)?;
    let mut got = Digest::new(CrcAlgorithm::Crc64Nvme);
    let mut at = 0u64;
    while at < from.len {
        let n = (from.len - at).min(COPY_CHUNK as u64) as usize;
        got.update(&back.read(at, n)?);
        at += n as u64;
    }
    if got.finalize() != sent.finalize() {
        return Err(feiyun_blob::BlobError::Corrupt {
            id: to,
            reason: "cold copy reads back different bytes".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names() {
        assert_eq!(storage_class(None).unwrap(), None);
        assert_eq!(storage_class(Some("STANDARD")).unwrap(), None);
        assert_eq!(
            storage_class(Some("GLACIER_IR")).unwrap().as_deref(),
            Some("GLACIER_IR")
        );
        assert!(matches!(
            storage_class(Some("DEEP_ARCHIVE")),
            Err(OssError::InvalidStorageClass(_))
        ));
        assert!(validate_transition("GLACIER_IR", Some(0)).is_ok());
        assert!(validate_transition("STANDARD_IA", Some(29)).is_err());
        assert!(validate_transition("STANDARD_IA", Some(30)).is_ok());
        assert!(validate_transition("STANDARD_IA", None).is_ok());
        assert!(validate_transition("GLACIER", Some(90)).is_err());
        assert!(class_rank(Some("GLACIER_IR")) > class_rank(Some("STANDARD_IA")));
        assert!(class_rank(Some("ONEZONE_IA")) > class_rank(None));
    }
}

//! What each KMS key protects, and re-wrapping after rotation. One walk over every stored
//! version (current ones in `objects`, older ones in `versions`) finds the records sealed
//! under SSE-KMS keys: `key_dependents` counts them per bucket for an operator about to
//! delete a key; `rewrap` re-seals, under the key's newest version, every data key still
//! sealed under an older one — a metadata update per version, object data untouched — so a
//! rotated key's old versions protect nothing after one pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use feiyun_blob::BlobStore;
use feiyun_kms::{KeyUse, KeyUsers};
use feiyun_meta::{MetaStore, Table, WriteBatch, prefix_end};

use crate::records::{ObjectRecord, VersionRow};
use crate::sse::{Encryption, KeyPlace, SseMode};
use crate::versions::VersionSelector;
use crate::{ObjectService, OssError, keys, records};

/// Records read per metadata scan.
const PAGE: usize = 500;

/// One SSE-KMS version found by the walk.
struct Sealed {
    key: String,
    selector: VersionSelector,
    record: ObjectRecord,
}

/// A walk over one bucket's versions: `objects` (current), then `versions` (older ones).
struct Walk {
    bucket: String,
    table: usize,
    start: Vec<u8>,
}

const TABLES: [Table; 2] = [Table::Objects, Table::Versions];

impl Walk {
    fn new(bucket: &str) -> Self {
        Self {
            bucket: bucket.to_owned(),
            table: 0,
            start: keys::bucket_objects(bucket),
        }
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// The next page of SSE-KMS versions of the walk's bucket; `None` at the end.
    async fn next_page(&self, w: &mut Walk) -> Result<Option<Vec<Sealed>>, OssError> {
        while w.table < TABLES.len() {
            let table = TABLES[w.table];
            let prefix = keys::bucket_objects(&w.bucket);
            let end = prefix_end(&prefix);
            let s = w.start.clone();
            let rows = self
                .blocking(move |m, _| Ok(m.scan(table, &s, end.as_deref(), PAGE)?))
                .await?;
            if rows.len() < PAGE {
                w.table += 1;
                w.start = prefix;
            } else if let Some(last) = rows.last() {
                w.start = last.0.clone();
                w.start.push(0);
            }
            let mut page = Vec::new();
            for (k, v) in &rows {
                let (key, record) = if table == Table::Objects {
                    let key = String::from_utf8(k[w.bucket.len() + 1..].to_vec())
                        .map_err(|_| OssError::Corrupt("object row key".into()))?;
                    (key, records::decode::<ObjectRecord>(v)?)
                } else {
                    match records::decode::<VersionRow>(v)? {
                        VersionRow::Object(r) => (keys::parse_version(&w.bucket, k)?.0, *r),
                        _ => continue,
                    }
                };
                if !matches!(record.sse(), Some(SseMode::Kms { .. })) {
                    continue;
                }
                let selector = if record.null_version {
                    VersionSelector::Null
                } else {
                    VersionSelector::Id(record.version)
                };
                page.push(Sealed {
                    key,
                    selector,
                    record,
                });
            }
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }

    /// Which buckets depend on `key_arn`: their default names it, or versions are sealed
    /// under it (with how many still under an older key version).
    pub async fn key_dependents(&self, key_arn: &str) -> Result<Vec<KeyUse>, OssError> {
        let current = self.current_version(key_arn);
        let mut out = Vec::new();
        for (bucket, rec) in self.list_buckets().await? {
            let mut u = KeyUse {
                bucket: bucket.clone(),
                bucket_default: matches!(
                    &rec.encryption,
                    Some(crate::sse::BucketEncryption {
                        algorithm: crate::sse::DefaultSse::Kms { key: Some(k) },
                        ..
                    }) if k == key_arn
                ),
                ..KeyUse::default()
            };
            let mut w = Walk::new(&bucket);
            while let Some(page) = self.next_page(&mut w).await? {
                for v in page {
                    let Some(enc) = &v.record.encryption else {
                        continue;
                    };
                    if enc.mode.kms_key() != Some(key_arn) {
                        continue;
                    }
                    u.versions += 1;
                    u.bytes += v.record.size;
                    if enc
                        .keys
                        .iter()
                        .any(|k| feiyun_kms::ciphertext_version(k) != current)
                    {
                        u.stale += 1;
                    }
                }
            }
            if u.bucket_default || u.versions > 0 {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// Re-seals every data key sealed under an older version of its KMS key; returns the
    /// number of versions updated. Disabled or deleted keys are skipped (their objects stay
    /// as they are until the key is usable again, or forever).
    pub async fn rewrap(&self) -> Result<u64, OssError> {
        let mut done = 0;
        for (bucket, _) in self.list_buckets().await? {
            let mut current: BTreeMap<String, Option<u32>> = BTreeMap::new();
            let mut w = Walk::new(&bucket);
            while let Some(page) = self.next_page(&mut w).await? {
                for v in page {
                    let Some(arn) = v.record.sse().and_then(|m| m.kms_key()).map(str::to_owned)
                    else {
                        continue;
                    };
                    let now = *current
                        .entry(arn.clone())
                        .or_insert_with(|| self.current_version(&arn));
                    let Some(now) = now else { continue };
                    let stale = v.record.encryption.as_ref().is_some_and(|e| {
                        e.keys
                            .iter()
                            .any(|k| feiyun_kms::ciphertext_version(k) != Some(now))
                    });
                    if stale && self.rewrap_version(&bucket, &v, now).await? {
                        done += 1;
                    }
                }
            }
        }
        Ok(done)
    }

    /// Runs [`Self::rewrap`] every `interval`.
    pub fn spawn_rewrap(self: &Arc<Self>, interval: std::time::Duration) {
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if !feiyun_common::background::runs() {
                    continue;
                }
                match feiyun_common::background::fenced(svc.rewrap()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        versions = n,
                        "re-wrapped data keys after a KMS key rotation"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "re-wrapping data keys failed; will retry")
                    }
                }
            }
        });
    }

    /// The newest material version of a key, if it is enabled.
    fn current_version(&self, key_arn: &str) -> Option<u32> {
        let account = key_arn.split(':').nth(4).unwrap_or("");
        match self.kms.describe(account, key_arn) {
            Ok(m) if m.state == feiyun_kms::KeyState::Enabled => Some(m.current_version),
            _ => None,
        }
    }

    /// Re-seals one version's stale data keys; `Ok(false)` if it changed meanwhile.
    async fn rewrap_version(
        &self,
        bucket: &str,
        s: &Sealed,
        current: u32,
    ) -> Result<bool, OssError> {
        let Some(enc) = &s.record.encryption else {
            return Ok(false);
        };
        let SseMode::Kms {
            key_arn, context, ..
        } = &enc.mode
        else {
            return Ok(false);
        };
        let account = key_arn.split(':').nth(4).unwrap_or("");
        let blobs: Vec<Option<feiyun_blob::BlobId>> = match &s.record.data {
            crate::records::ObjectData::Inline(_) => vec![None],
            crate::records::ObjectData::Blobs(b) => b.iter().map(|b| Some(b.id)).collect(),
        };
        let mut fresh = Vec::with_capacity(enc.keys.len());
        for (sealed, blob) in enc.keys.iter().zip(blobs) {
            if feiyun_kms::ciphertext_version(sealed) == Some(current) {
                fresh.push(sealed.clone());
                continue;
            }
            let ctx = KeyPlace {
                bucket,
                key: &s.key,
                blob,
            }
            .context(context);
            let (_, out) = self
                .kms
                .re_encrypt(account, sealed, &ctx, key_arn, &ctx)
                .map_err(crate::sse::kms_error)?;
            fresh.push(serde_bytes::ByteBuf::from(out));
        }
        let (old, new) = (
            enc.clone(),
            Encryption {
                mode: enc.mode.clone(),
                keys: fresh,
            },
        );
        let updated = self
            .update_version_with(
                bucket,
                &s.key,
                Some(s.selector),
                move |_, rec, _| {
                    if rec.encryption.as_ref() != Some(&old) {
                        return Err(OssError::PreconditionFailed);
                    }
                    rec.encryption = Some(new.clone());
                    Ok(())
                },
                WriteBatch::new(),
                None,
            )
            .await;
        match updated {
            Ok(_) => Ok(true),
            Err(e) if crate::versions::changed_meanwhile(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl<M: MetaStore, B: BlobStore> KeyUsers for ObjectService<M, B> {
    fn key_users(&self, key_arn: String) -> feiyun_kms::usage::KeyUsersFuture<'_> {
        Box::pin(async move {
            self.key_dependents(&key_arn)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

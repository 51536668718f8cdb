//! The copier of a live bucket: passes over the legacy listing, a page at a time, storing
//! every key the region neither holds nor deleted, on the holder of the background lease.
//! Its progress is the bucket's `live.status` row, so a restart resumes at the cursor.

use std::sync::Arc;
use std::time::Duration;

use feiyun_blob::BlobStore;
use feiyun_meta::{MetaStore, Table};
use futures::StreamExt;

use super::{COPY_MAX, Fetched, LegacyEntry, LiveStatus, MAX_ERRORS, STATUS_ROW, tomb_key};
use crate::{ObjectService, OssError, keys, records};

/// Keys listed (and compared) per step.
const PAGE: usize = 1000;
/// Copies at once.
const COPIES: usize = 8;
/// Pages of one bucket's pass per round.
const PAGES_PER_ROUND: usize = 100;

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Runs the copier of every live bucket each `every`, on the background-lease holder.
    pub fn spawn_live_copier(self: &Arc<Self>, every: Duration) {
        self.spawn_live_rounds(every, "live copier", |svc| async move {
            svc.live_copy_round().await
        });
    }

    /// Each live bucket's pass, up to [`PAGES_PER_ROUND`] pages (the rest next round); one
    /// bucket's failure does not hold up the others.
    pub async fn live_copy_round(self: &Arc<Self>) -> Result<(), OssError> {
        for bucket in self.live_buckets().await? {
            for _ in 0..PAGES_PER_ROUND {
                match self.live_copy_page(&bucket).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(bucket, error = %e, "live copier page failed");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn live_buckets(&self) -> Result<Vec<String>, OssError> {
        let mut out = Vec::new();
        let mut start = Vec::new();
        loop {
            let from = start.clone();
            let rows = self
                .blocking(move |m, _| Ok(m.scan(Table::Buckets, &from, None, 1000)?))
                .await?;
            let Some((last, _)) = rows.last() else {
                return Ok(out);
            };
            start = last.clone();
            start.push(0);
            for (k, v) in &rows {
                let rec: crate::BucketRecord = records::decode(v)?;
                if rec.live.is_some() {
                    out.push(String::from_utf8_lossy(k).into_owned());
                }
            }
        }
    }

    /// Copies what is missing of one page of the legacy listing after the cursor. Answers
    /// whether the pass has more pages.
    pub async fn live_copy_page(self: &Arc<Self>, bucket: &str) -> Result<bool, OssError> {
        let brec = self.bucket(bucket).await?;
        let Some(setting) = brec.live else {
            return Ok(false);
        };
        let owner = brec.owner.unwrap_or_default();
        let mut st = self.load_status(bucket).await?;
        if st.cursor.is_none() {
            st.present = 0;
            st.deleted_here = 0;
            st.pass_copied = 0;
            st.pass_failed = 0;
        }
        let legacy = self.legacy_for(bucket, &setting)?;
        let page = match legacy.list("", st.cursor.as_deref(), None, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                note(&mut st, format!("listing the legacy store: {e}"));
                st.pass_failed += 1;
                self.save_status(bucket, &st).await?;
                return Err(e.into());
            }
        };
        let objects: Vec<(String, u64)> = page
            .entries
            .iter()
            .filter_map(|e| match e {
                LegacyEntry::Object { key, size, .. } => Some((key.clone(), *size)),
                LegacyEntry::CommonPrefix(_) => None,
            })
            .collect();
        let rows: Vec<[Vec<u8>; 2]> = objects
            .iter()
            .map(|(k, _)| [keys::object(bucket, k), tomb_key(bucket, k)])
            .collect();
        let reads: Vec<(Table, &[u8])> = rows
            .iter()
            .flat_map(|[h, t]| {
                [
                    (Table::Heads, h.as_slice()),
                    (Table::BucketConfigs, t.as_slice()),
                ]
            })
            .collect();
        let found = self.meta.get_many_async(&reads).await?;
        let mut todo = Vec::new();
        for (i, (key, size)) in objects.iter().enumerate() {
            match (&found[2 * i], &found[2 * i + 1]) {
                (Some(_), _) => st.present += 1,
                (None, Some(_)) => st.deleted_here += 1,
                (None, None) if *size > COPY_MAX => {
                    st.pass_failed += 1;
                    note(
                        &mut st,
                        format!("{key}: larger than 5 GiB; copy it with `feiyun migrate`"),
                    );
                }
                (None, None) => todo.push(key.clone()),
            }
        }
        let results: Vec<(String, Result<Fetched, OssError>)> = futures::stream::iter(todo)
            .map(|key| {
                let (setting, owner) = (&setting, &owner);
                async move {
                    let r = self.fetch(bucket, &key, setting, owner, COPY_MAX).await;
                    (key, r)
                }
            })
            .buffer_unordered(COPIES)
            .collect()
            .await;
        for (key, r) in results {
            match r {
                Ok(Fetched::Stored) => {
                    st.pass_copied += 1;
                    st.copied += 1;
                    if let Some((_, size)) = objects.iter().find(|(k, _)| *k == key) {
                        st.bytes += size;
                    }
                }
                // Gone from the legacy store since it was listed: nothing to copy.
                Ok(Fetched::Absent) => {}
                Ok(Fetched::Large(_)) => {
                    st.pass_failed += 1;
                    note(&mut st, format!("{key}: larger than 5 GiB"));
                }
                Err(e) => {
                    st.pass_failed += 1;
                    note(&mut st, format!("{key}: {e}"));
                }
            }
        }
        let before = st.cursor.take();
        st.cursor = page.entries.last().map(|e| e.name().to_owned());
        // A store that ignored start-after would have the pass go round for ever.
        if page.truncated && st.cursor.is_some() && st.cursor <= before {
            note(
                &mut st,
                "the legacy store's listing did not move past its last page; the pass is cut short"
                    .into(),
            );
            st.pass_failed += 1;
            st.cursor = None;
        }
        let more = page.truncated && st.cursor.is_some();
        if !more {
            st.passes += 1;
            let clean = st.pass_copied == 0 && st.pass_failed == 0;
            st.clean_pass_ms = clean.then(crate::now_millis);
            st.cursor = None;
        }
        self.save_status(bucket, &st).await?;
        Ok(more)
    }

    pub(super) async fn save_status(&self, bucket: &str, st: &LiveStatus) -> Result<(), OssError> {
        let mut st = st.clone();
        st.updated_ms = crate::now_millis();
        self.set_bucket_config(bucket, STATUS_ROW, Some(records::encode(&st)?))
            .await
    }
}

pub(super) fn note(st: &mut LiveStatus, error: String) {
    tracing::warn!(%error, "live copier");
    st.errors.push(error);
    if st.errors.len() > MAX_ERRORS {
        st.errors.remove(0);
    }
}

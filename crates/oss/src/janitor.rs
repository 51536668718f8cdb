//! Blob housekeeping: the start-up recovery sweep and garbage collection.
//!
//! Neither ever scans the blob directory: the `PendingBlobs` and `Garbage` tables name every
//! blob that may need removing, so recovery time depends on the writes in flight at the crash,
//! not on the size of the store.

use std::sync::Arc;
use std::time::Duration;

use feiyun_blob::{BlobId, BlobStore};
use feiyun_meta::{MetaStore, Table, WriteBatch};

use crate::{ObjectService, OssError};

/// Blobs deleted per garbage-collection round.
const GC_BATCH: usize = 1024;
/// How often the janitor runs even when nobody signals it.
const GC_INTERVAL: Duration = Duration::from_secs(30);

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Removes the blobs of writes that were in flight when the process last stopped.
    /// Only called before the service takes requests.
    pub(crate) async fn recover(&self) -> Result<usize, OssError> {
        self.drain_table(Table::PendingBlobs).await
    }

    /// The value of this process's `PendingBlobs` rows: its node id, empty when alone.
    pub(crate) fn pending_tag(&self) -> Vec<u8> {
        self.config
            .node
            .as_deref()
            .map_or_else(Vec::new, |n| n.as_bytes().to_vec())
    }

    /// Deletes every unreferenced blob that no reader holds; leased ones stay listed and are
    /// collected when their last reader lets go.
    pub async fn collect_garbage(&self) -> Result<usize, OssError> {
        self.drain_table(Table::Garbage).await
    }

    /// One pass over `table` in pages of [`GC_BATCH`], deleting each listed blob that is not
    /// leased. A page whose every blob is leased does not end the pass: the next page starts
    /// after it, so slow readers at the front of the table never stall collection.
    async fn drain_table(&self, table: Table) -> Result<usize, OssError> {
        let mut total = 0;
        let mut from: Vec<u8> = Vec::new();
        // Another node's writes in flight are its own to clean up.
        let only = (table == Table::PendingBlobs).then(|| self.pending_tag());
        loop {
            let leases = self.leases.clone();
            let start = from.clone();
            let only = only.clone();
            let (ids, scanned, last) = self
                .blocking(move |m, b| {
                    let rows = m.scan(table, &start, None, GC_BATCH)?;
                    let scanned = rows.len();
                    let last = rows.last().map(|(k, _)| k.clone());
                    let mut ids = Vec::with_capacity(rows.len());
                    for (k, v) in rows {
                        if only.as_ref().is_some_and(|tag| *tag != v) {
                            continue;
                        }
                        let Some(id) = BlobId::from_bytes(&k) else {
                            return Err(OssError::Corrupt(format!("{} key", table.name())));
                        };
                        // A blob being read stays (and stays listed) until its reader is done.
                        if leases.delete_unleased(b, id)? {
                            ids.push(id);
                        }
                    }
                    Ok((ids, scanned, last))
                })
                .await?;
            if !ids.is_empty() {
                let mut batch = WriteBatch::new();
                for id in &ids {
                    batch.delete(table, id.to_bytes().to_vec());
                }
                self.meta.commit(batch).await?;
                self.stats
                    .blobs_collected
                    .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
                total += ids.len();
            }
            match last {
                Some(mut k) if scanned == GC_BATCH => {
                    k.push(0);
                    from = k;
                }
                _ => return Ok(total),
            }
        }
    }

    /// Runs garbage collection whenever a write frees blobs (and periodically), until the
    /// service is dropped.
    pub fn spawn_janitor(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(svc) = weak.upgrade() else { return };
                let _ = tokio::time::timeout(GC_INTERVAL, svc.janitor.notified()).await;
                if let Err(e) = svc.collect_garbage().await {
                    tracing::warn!(error = %e, "garbage collection failed; will retry");
                }
            }
        });
    }
}

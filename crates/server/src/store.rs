//! The region's metadata engine, chosen at start: the embedded redb file in the data
//! directory, or a PostgreSQL-protocol database named by `meta_url`. One enum rather than a
//! generic server, so the services are compiled once for both.

use feiyun_meta::{
    KvPair, MetaError, MetaRead, MetaStore, RedbSnapshot, RedbStore, Replan, Table, WriteBatch,
};
use std::sync::Arc;

use feiyun_cluster::rowcache::{Lookup, RowCache};
use feiyun_meta_pg::{PgSnapshot, PgStore};

pub enum Store {
    Embedded(RedbStore),
    /// With the node's row cache once it has joined a region (see
    /// `feiyun_cluster::rowcache`): plans of GET, HEAD and PUT read their first rows there.
    Postgres(PgStore, RowCacheSlot),
}

/// Set once, after the store is open and the node has joined.
#[derive(Default)]
pub struct RowCacheSlot(std::sync::OnceLock<Arc<RowCache>>);

impl RowCacheSlot {
    pub fn set(&self, cache: Arc<RowCache>) {
        let _ = self.0.set(cache);
    }

    pub fn get(&self) -> Option<&Arc<RowCache>> {
        self.0.get()
    }
}

pub enum StoreSnapshot {
    Embedded(RedbSnapshot),
    Postgres(PgSnapshot),
}

impl MetaRead for Store {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        match self {
            Store::Embedded(s) => s.get(table, key),
            Store::Postgres(s, _) => s.get(table, key),
        }
    }

    fn get_many(&self, reads: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        match self {
            Store::Embedded(s) => s.get_many(reads),
            Store::Postgres(s, _) => s.get_many(reads),
        }
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError> {
        match self {
            Store::Embedded(s) => s.scan(table, start, end, limit),
            Store::Postgres(s, _) => s.scan(table, start, end, limit),
        }
    }
}

impl MetaRead for StoreSnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        match self {
            StoreSnapshot::Embedded(s) => s.get(table, key),
            StoreSnapshot::Postgres(s) => s.get(table, key),
        }
    }

    fn get_many(&self, reads: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        match self {
            StoreSnapshot::Embedded(s) => s.get_many(reads),
            StoreSnapshot::Postgres(s) => s.get_many(reads),
        }
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError> {
        match self {
            StoreSnapshot::Embedded(s) => s.scan(table, start, end, limit),
            StoreSnapshot::Postgres(s) => s.scan(table, start, end, limit),
        }
    }
}

impl MetaStore for Store {
    type Snapshot = StoreSnapshot;

    fn snapshot(&self) -> Result<StoreSnapshot, MetaError> {
        Ok(match self {
            Store::Embedded(s) => StoreSnapshot::Embedded(s.snapshot()?),
            Store::Postgres(s, _) => StoreSnapshot::Postgres(s.snapshot()?),
        })
    }

    async fn get_many_async<'a>(
        &'a self,
        reads: &'a [(Table, &'a [u8])],
    ) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        match self {
            Store::Embedded(s) => s.get_many(reads),
            Store::Postgres(s, cache) => {
                let Some(cache) = cache.0.get() else {
                    return s.get_many_async(reads).await;
                };
                match cache.lookup(reads) {
                    Lookup::Hit(rows) => Ok(rows),
                    Lookup::Miss(ticket) => {
                        let rows = s.get_many_async(reads).await?;
                        if let Some(t) = ticket {
                            cache.fill(t, &rows);
                        }
                        Ok(rows)
                    }
                }
            }
        }
    }

    fn speculative_rows(&self, reads: &[(Table, &[u8])]) -> Option<Vec<Option<Vec<u8>>>> {
        match self {
            Store::Embedded(_) => None,
            Store::Postgres(_, cache) => cache.get()?.speculate(reads),
        }
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), MetaError> {
        self.commit_replanning(batch).await.map(|_| ())
    }

    async fn commit_replanning(&self, mut batch: WriteBatch) -> Result<bool, MetaError> {
        crate::invalidate::stamp(&mut batch);
        fence(&mut batch);
        match self {
            Store::Embedded(s) => s.commit_replanning(batch).await,
            Store::Postgres(s, slot) => {
                let Some(cache) = slot.0.get() else {
                    return s.commit_replanning(batch).await;
                };
                let touched = RowCache::watch(&mut batch);
                let fill = cache.write_fill(&batch);
                if !cache.may_commit() && !touched.lock().is_ok_and(|t| t.is_empty()) {
                    return Err(MetaError::Unavailable(
                        "this node is not a member of the region in good standing".into(),
                    ));
                }
                // On a task of its own: a caller that goes away (a client hanging up) must
                // not stop the invalidations of a commit that lands all the same.
                let (s, cache) = (s.clone(), cache.clone());
                tokio::spawn(async move {
                    let result = s.commit_replanning(batch).await;
                    // Whatever may have landed is dropped everywhere before anyone is told.
                    if !matches!(
                        result,
                        Err(MetaError::Conflict(_) | MetaError::TooLarge { .. })
                    ) {
                        // Kept here only when the batch landed as planned, not re-planned.
                        let fill = fill.filter(|_| matches!(result, Ok(false)));
                        cache.publish(&touched, fill).await;
                    }
                    result
                })
                .await
                .map_err(|e| MetaError::Storage(format!("commit task failed: {e}")))?
            }
        }
    }
}

/// Inside a fenced background round of a multi-node region, the commit holds only while the
/// region's fencing token is still this node's: a holder deposed while it was paused gets a
/// conflict, never a write after its successor's.
/// A batch planned again inside the transaction carries the same check.
fn fence(batch: &mut WriteBatch) {
    let Some(token) = feiyun_common::background::fence() else {
        return;
    };
    fence_with(batch, token);
    if let Some(Replan(plan)) = batch.replan.take() {
        batch.replan = Some(Replan(std::sync::Arc::new(move |read| {
            let mut again = plan(read)?;
            if let Some(b) = again.as_mut() {
                fence_with(b, token);
            }
            Ok(again)
        })));
    }
}

fn fence_with(batch: &mut WriteBatch, token: u64) {
    batch.check_value(
        Table::Cluster,
        feiyun_cluster::FENCE_KEY,
        Some(token.to_be_bytes().to_vec()),
    );
}

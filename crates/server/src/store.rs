//! The region's metadata engine, chosen at start: the embedded redb file in the data
//! directory, or a PostgreSQL-protocol database named by `meta_url`. One enum rather than a
//! generic server, so the services are compiled once for both.

use feiyun_meta::{
    KvPair, MetaError, MetaRead, MetaStore, RedbSnapshot, RedbStore, Replan, Table, WriteBatch,
};
use feiyun_meta_pg::{PgSnapshot, PgStore};

pub enum Store {
    Embedded(RedbStore),
    Postgres(PgStore),
}

pub enum StoreSnapshot {
    Embedded(RedbSnapshot),
    Postgres(PgSnapshot),
}

impl MetaRead for Store {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        match self {
            Store::Embedded(s) => s.get(table, key),
            Store::Postgres(s) => s.get(table, key),
        }
    }

    fn get_many(&self, reads: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        match self {
            Store::Embedded(s) => s.get_many(reads),
            Store::Postgres(s) => s.get_many(reads),
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
            Store::Postgres(s) => s.scan(table, start, end, limit),
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
            Store::Postgres(s) => StoreSnapshot::Postgres(s.snapshot()?),
        })
    }

    async fn get_many_async<'a>(
        &'a self,
        reads: &'a [(Table, &'a [u8])],
    ) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        match self {
            Store::Embedded(s) => s.get_many(reads),
            Store::Postgres(s) => s.get_many_async(reads).await,
        }
    }

    async fn commit(&self, mut batch: WriteBatch) -> Result<(), MetaError> {
        crate::invalidate::stamp(&mut batch);
        fence(&mut batch);
        match self {
            Store::Embedded(s) => s.commit(batch).await,
            Store::Postgres(s) => s.commit(batch).await,
        }
    }

    async fn commit_replanning(&self, mut batch: WriteBatch) -> Result<bool, MetaError> {
        crate::invalidate::stamp(&mut batch);
        fence(&mut batch);
        match self {
            Store::Embedded(s) => s.commit_replanning(batch).await,
            Store::Postgres(s) => s.commit_replanning(batch).await,
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

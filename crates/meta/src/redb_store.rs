//! The embedded metadata engine on redb, with group commit.
//!
//! redb allows one writer at a time and fsyncs on every commit. To keep small-object PUTs
//! from being bound by one fsync each, a dedicated writer thread drains every batch waiting
//! in its queue, applies them in order inside one write transaction, commits once, and only
//! then answers each caller. A batch whose checks fail is skipped (its caller gets
//! [`MetaError::Conflict`]) without affecting the others in the group.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::{Check, KvPair, MetaError, MetaRead, MetaStore, Mutation, Table, WriteBatch, envelope};

/// redb page cache. Inline objects live in the database, so a larger cache mostly holds object
/// bytes the OS page cache would hold anyway; 64 MiB keeps server RSS well under 300 MiB.
const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Most batches the writer folds into one commit.
const MAX_GROUP: usize = 512;
/// Most batches waiting for the writer; senders wait (asynchronously) beyond it.
const MAX_QUEUE: usize = 4096;
/// Largest single batch (keys + values).
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// A batch's outcome: applied (`true` when its re-plan was applied instead), or why not.
type Reply = oneshot::Sender<Result<bool, MetaError>>;

/// What a commit pays for a quick start after a crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Recovery {
    /// redb's checksummed single-phase commit: one fsync. The first start after a crash
    /// walks the whole file to check it and rebuild the allocator (2.8 s for a 1 GiB file,
    /// BENCHMARKS.md); a clean shutdown needs none of it.
    #[default]
    Full,
    /// Each commit also saves the allocator state, in two phases (two fsyncs, about twice
    /// the latency): a start after a crash is immediate however large the file.
    Quick,
}

pub struct RedbStore {
    db: Arc<Database>,
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<(WriteBatch, Reply)>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    /// Closes the queue and waits for the writer, so the database file is released (and can
    /// be opened again) when the store is gone.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl RedbStore {
    /// Opens (or creates) the database file and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        Self::open_with(path, Recovery::default())
    }

    /// [`RedbStore::open`], choosing what commits pay for recovery.
    pub fn open_with(path: &Path, recovery: Recovery) -> Result<Self, MetaError> {
        let quick = recovery == Recovery::Quick;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(storage)?;
        // Create every table up front so read transactions never meet a missing table.
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_quick_repair(quick);
        for t in Table::ALL {
            txn.open_table(def(t)).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(MAX_QUEUE);
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("meta-writer".into())
            .spawn(move || writer_loop(&writer_db, rx, quick))
            .map_err(|e| MetaError::Storage(e.to_string()))?;
        Ok(Self {
            db,
            queue: Some(tx),
            writer: Some(writer),
        })
    }
}

impl MetaRead for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        self.snapshot()?.get(table, key)
    }

    fn get_many(&self, reads: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        self.snapshot()?.get_many(reads)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError> {
        self.snapshot()?.scan(table, start, end, limit)
    }
}

/// A redb read transaction: one committed state for as long as it is held.
pub struct RedbSnapshot {
    txn: redb::ReadTransaction,
}

impl MetaRead for RedbSnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        get_in(
            &self.txn.open_table(def(table)).map_err(storage)?,
            table,
            key,
        )
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError> {
        let t = self.txn.open_table(def(table)).map_err(storage)?;
        scan_in(&t, table, start, end, limit)
    }
}

fn get_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, MetaError> {
    match t.get(key).map_err(storage)? {
        None => Ok(None),
        Some(v) => unseal(table, key, v.value()).map(Some),
    }
}

fn scan_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    table: Table,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<KvPair>, MetaError> {
    let iter = match end {
        Some(end) => t.range::<&[u8]>(start..end),
        None => t.range::<&[u8]>(start..),
    }
    .map_err(storage)?;
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item.map_err(storage)?;
        let key = k.value().to_vec();
        let value = unseal(table, &key, v.value())?;
        out.push((key, value));
    }
    Ok(out)
}

impl MetaStore for RedbStore {
    type Snapshot = RedbSnapshot;

    fn snapshot(&self) -> Result<RedbSnapshot, MetaError> {
        Ok(RedbSnapshot {
            txn: self.db.begin_read().map_err(storage)?,
        })
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), MetaError> {
        self.commit_replanning(batch).await.map(|_| ())
    }

    async fn commit_replanning(&self, batch: WriteBatch) -> Result<bool, MetaError> {
        let size: usize = batch
            .mutations
            .iter()
            .map(|m| match m {
                Mutation::Put { key, value, .. } => key.len() + value.len(),
                Mutation::Delete { key, .. } => key.len(),
            })
            .sum();
        if size > MAX_BATCH_BYTES {
            return Err(MetaError::TooLarge {
                limit: MAX_BATCH_BYTES,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.queue
            .as_ref()
            .ok_or(MetaError::Closed)?
            .send((batch, tx))
            .await
            .map_err(|_| MetaError::Closed)?;
        rx.await.map_err(|_| MetaError::Closed)?
    }
}

fn def(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(t.name())
}

fn storage(e: impl std::fmt::Display) -> MetaError {
    MetaError::Storage(e.to_string())
}

fn unseal(table: Table, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, MetaError> {
    match envelope::open(key, sealed) {
        Some(p) => Ok(p.to_vec()),
        None => {
            tracing::error!(table = table.name(), "metadata value failed its checksum");
            Err(MetaError::Corrupt {
                table: table.name(),
            })
        }
    }
}

fn writer_loop(db: &Database, mut rx: mpsc::Receiver<(WriteBatch, Reply)>, quick: bool) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(item) => group.push(item),
                Err(_) => break,
            }
        }
        match apply_group(db, &group, quick) {
            Ok(results) => {
                for ((_, reply), result) in group.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            // A storage failure in the shared transaction: retry each batch alone so one bad
            // batch cannot fail the others.
            Err(_) if group.len() > 1 => {
                for (batch, reply) in group {
                    let result =
                        apply_group(db, std::slice::from_ref(&(batch, dummy_reply())), quick)
                            .and_then(|mut r| r.pop().unwrap_or(Err(MetaError::Closed)));
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                for (_, reply) in group {
                    let _ = reply.send(Err(MetaError::Storage(e.to_string())));
                }
            }
        }
    }
}

fn dummy_reply() -> Reply {
    oneshot::channel().0
}

/// Applies the batches in order in one transaction; returns each batch's outcome, or an error
/// when the transaction as a whole could not be committed (then nothing was applied).
fn apply_group(
    db: &Database,
    group: &[(WriteBatch, Reply)],
    quick: bool,
) -> Result<Vec<Result<bool, MetaError>>, MetaError> {
    let mut txn = db.begin_write().map_err(storage)?;
    // One fsync for the group unless every batch in it may wait for the next one.
    let durability = if group.iter().all(|(b, _)| b.deferred) {
        Durability::None
    } else {
        Durability::Immediate
    };
    txn.set_durability(durability).map_err(storage)?;
    txn.set_quick_repair(quick);
    let mut results = Vec::with_capacity(group.len());
    {
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for t in Table::ALL {
            tables.push(txn.open_table(def(t)).map_err(storage)?);
        }
        let idx = |t: Table| Table::ALL.iter().position(|x| *x == t).unwrap_or(0);
        for (batch, _) in group {
            let replanned = match check_all(&batch.checks, &tables, idx) {
                Ok(()) => None,
                Err(conflict) => match replan_in(batch, conflict, &tables, &idx) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                },
            };
            for m in &replanned.as_ref().unwrap_or(batch).mutations {
                match m {
                    Mutation::Put { table, key, value } => {
                        tables[idx(*table)]
                            .insert(key.as_slice(), envelope::seal(key, value).as_slice())
                            .map_err(storage)?;
                    }
                    Mutation::Delete { table, key } => {
                        tables[idx(*table)]
                            .remove(key.as_slice())
                            .map_err(storage)?;
                    }
                }
            }
            results.push(Ok(replanned.is_some()));
        }
    }
    txn.commit().map_err(storage)?;
    Ok(results)
}

/// A batch whose checks failed with `conflict`, planned again by its [`crate::Replan`] against
/// the transaction so far; the new batch if its own checks hold, else why not.
fn replan_in<F: Fn(Table) -> usize>(
    batch: &WriteBatch,
    conflict: MetaError,
    tables: &[redb::Table<'_, &'static [u8], &'static [u8]>],
    idx: &F,
) -> Result<WriteBatch, MetaError> {
    let Some(replan) = &batch.replan else {
        return Err(conflict);
    };
    let view = TxnView { tables, idx };
    let Some(b) = (replan.0)(&view)? else {
        return Err(conflict);
    };
    check_all(&b.checks, tables, idx)?;
    Ok(b)
}

/// The rows as the write transaction holds them so far: what a [`crate::Replan`] reads.
struct TxnView<'a, 't, F> {
    tables: &'a [redb::Table<'t, &'static [u8], &'static [u8]>],
    idx: &'a F,
}

impl<F: Fn(Table) -> usize> MetaRead for TxnView<'_, '_, F> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        get_in(&self.tables[(self.idx)(table)], table, key)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError> {
        scan_in(&self.tables[(self.idx)(table)], table, start, end, limit)
    }
}

fn check_all(
    checks: &[Check],
    tables: &[redb::Table<'_, &'static [u8], &'static [u8]>],
    idx: impl Fn(Table) -> usize,
) -> Result<(), MetaError> {
    for c in checks {
        match c {
            Check::Absent { table, key } => {
                if tables[idx(*table)]
                    .get(key.as_slice())
                    .map_err(storage)?
                    .is_some()
                {
                    return Err(MetaError::Conflict(format!("{} key exists", table.name())));
                }
            }
            Check::Present { table, key } => {
                if tables[idx(*table)]
                    .get(key.as_slice())
                    .map_err(storage)?
                    .is_none()
                {
                    return Err(MetaError::Conflict(format!("{} key missing", table.name())));
                }
            }
            Check::Equals { table, key, value } => {
                let t = &tables[idx(*table)];
                let current = t.get(key.as_slice()).map_err(storage)?;
                let same = match current {
                    None => false,
                    Some(v) => unseal(*table, key, v.value())? == *value,
                };
                if !same {
                    return Err(MetaError::Conflict(format!("{} key changed", table.name())));
                }
            }
            Check::PrefixEmpty { table, prefix } => {
                let t = &tables[idx(*table)];
                let mut iter = t.range::<&[u8]>(prefix.as_slice()..).map_err(storage)?;
                if let Some(item) = iter.next() {
                    let (k, _) = item.map_err(storage)?;
                    if k.value().starts_with(prefix) {
                        return Err(MetaError::Conflict(format!(
                            "{} prefix not empty",
                            table.name()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        (dir, s)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_the_engine_conformance_suite() {
        let (_d, s) = store();
        crate::conformance::run_all(Arc::new(s)).await;
    }

    /// A deferred batch is visible at once and made durable by the next durable commit.
    #[tokio::test]
    async fn deferred_batches_ride_on_the_next_durable_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            let mut lazy = WriteBatch::new();
            lazy.deferred = true;
            lazy.put(Table::System, "status", "done");
            s.commit(lazy).await.unwrap();
            assert_eq!(
                s.get(Table::System, b"status").unwrap(),
                Some(b"done".to_vec())
            );
            let mut cursor = WriteBatch::new();
            cursor.put(Table::System, "cursor", "7");
            s.commit(cursor).await.unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(
            s.get(Table::System, b"status").unwrap(),
            Some(b"done".to_vec())
        );
        assert_eq!(
            s.get(Table::System, b"cursor").unwrap(),
            Some(b"7".to_vec())
        );
    }

    /// Sixty-four increments of one counter, each planned from the same stale value: every
    /// one fails its check, is planned again inside the commit against what the batches
    /// before it left, and lands; none comes back as a conflict.
    #[tokio::test]
    async fn a_stale_batch_is_planned_again_inside_its_commit() {
        let (_d, s) = store();
        let s = Arc::new(s);
        let mut init = WriteBatch::new();
        init.put(Table::System, "n", "0");
        s.commit(init).await.unwrap();
        let increment = |m: &dyn MetaRead| -> Result<Option<WriteBatch>, MetaError> {
            let cur = m.get(Table::System, b"n")?.unwrap_or_default();
            let n: u64 = String::from_utf8_lossy(&cur).parse().unwrap_or(0);
            let mut b = WriteBatch::new();
            b.check_value(Table::System, "n", Some(cur)).put(
                Table::System,
                "n",
                (n + 1).to_string(),
            );
            Ok(Some(b))
        };
        let stale = s.snapshot().unwrap();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let mut b = increment(&stale).unwrap().unwrap();
            b.replan = Some(crate::Replan::new(increment));
            let s = s.clone();
            tasks.push(tokio::spawn(async move { s.commit_replanning(b).await }));
        }
        let mut replanned = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() {
                replanned += 1;
            }
        }
        assert_eq!(s.get(Table::System, b"n").unwrap(), Some(b"64".to_vec()));
        // The first to land needed no re-plan; the others all did.
        assert_eq!(replanned, 63);

        // A re-plan that declines leaves the batch failed with its conflict.
        let mut b = increment(&stale).unwrap().unwrap();
        b.replan = Some(crate::Replan::new(|_| Ok(None)));
        assert!(matches!(
            s.commit_replanning(b).await,
            Err(MetaError::Conflict(_))
        ));
        assert_eq!(s.get(Table::System, b"n").unwrap(), Some(b"64".to_vec()));
    }

    #[tokio::test]
    async fn checks_gate_the_whole_batch() {
        let (_d, s) = store();
        let mut b = WriteBatch::new();
        b.check_absent(Table::Buckets, "x")
            .put(Table::Buckets, "x", "1");
        s.commit(b.clone()).await.unwrap();
        // Same batch again: the check fails and nothing is applied.
        let mut b2 = b.clone();
        b2.put(Table::System, "other", "v");
        assert!(matches!(s.commit(b2).await, Err(MetaError::Conflict(_))));
        assert_eq!(s.get(Table::System, b"other").unwrap(), None);
        assert_eq!(s.get(Table::Buckets, b"x").unwrap(), Some(b"1".to_vec()));

        let mut b3 = WriteBatch::new();
        b3.check_value(Table::Buckets, "x", Some(b"1".to_vec()))
            .put(Table::Buckets, "x", "2");
        s.commit(b3).await.unwrap();
        assert_eq!(s.get(Table::Buckets, b"x").unwrap(), Some(b"2".to_vec()));
    }

    #[tokio::test]
    async fn prefix_empty_and_scan() {
        let (_d, s) = store();
        let mut b = WriteBatch::new();
        for k in ["a/1", "a/2", "b/1"] {
            b.put(Table::Objects, k, k);
        }
        s.commit(b).await.unwrap();
        let mut c = WriteBatch::new();
        c.check_prefix_empty(Table::Objects, "a/");
        assert!(s.commit(c).await.is_err());
        let mut c = WriteBatch::new();
        c.check_prefix_empty(Table::Objects, "c/");
        s.commit(c).await.unwrap();
        let got = s.scan(Table::Objects, b"a/", Some(b"a0"), 10).unwrap();
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![b"a/1".as_slice(), b"a/2"]);
        assert_eq!(s.scan(Table::Objects, b"", None, 2).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn concurrent_commits_are_grouped_and_all_land() {
        let (_d, s) = store();
        let s = Arc::new(s);
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut b = WriteBatch::new();
                b.put(
                    Table::Objects,
                    i.to_be_bytes().to_vec(),
                    i.to_le_bytes().to_vec(),
                );
                s.commit(b).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let all = s.scan(Table::Objects, b"", None, 1000).unwrap();
        assert_eq!(all.len(), 200);
        for (k, v) in all {
            let i = u32::from_be_bytes(k.try_into().unwrap());
            assert_eq!(v, i.to_le_bytes());
        }
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            let mut b = WriteBatch::new();
            b.put(Table::Buckets, "k", "v");
            s.commit(b).await.unwrap();
        }
        // The writer thread holds the database until its queue closes; give it a moment.
        let mut reopened = None;
        for _ in 0..100 {
            match RedbStore::open(&path) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        let s = reopened.expect("reopen");
        assert_eq!(s.get(Table::Buckets, b"k").unwrap(), Some(b"v".to_vec()));
    }
}

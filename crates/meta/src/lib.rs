//! The metadata engine: an ordered, transactional key-value store behind a small trait.
//!
//! Services store their records here as opaque bytes in a handful of named [`Table`]s. Writes
//! are declarative [`WriteBatch`]es — preconditions ([`Check`]) plus [`Mutation`]s applied
//! atomically — which is the shape that etcd, FoundationDB and TiKV transactions also take, so
//! a distributed engine can replace the embedded one without touching the services. A batch
//! may carry a [`Replan`]: the function to plan it again inside the transaction when its
//! checks fail, which an engine with interactive transactions (SQL) runs the same way.
//!
//! Every value is stored inside a checksummed envelope ([`envelope`]); a value whose checksum
//! fails is reported as [`MetaError::Corrupt`] and never handed to a caller as good data.
//!
//! Architecture invariant: when [`MetaStore::commit`] returns `Ok`, the batch is durable
//! (fsynced); when it returns `Err`, none of the batch is applied — except
//! [`MetaError::Indeterminate`], which a networked engine returns when it cannot tell.

#[cfg(any(test, feature = "testkit"))]
pub mod conformance;
pub mod envelope;
mod redb_store;

use std::future::Future;

pub use redb_store::{Recovery, RedbSnapshot, RedbStore};

/// The tables a region keeps. Keys are ordered bytewise within a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Buckets,
    /// The current, live version of each key.
    Objects,
    /// Every version and delete marker of each key, newest first.
    Versions,
    /// Per-key version bookkeeping (newest version, the null version).
    Heads,
    /// Bucket subresources (tags, CORS, lifecycle, notification, lock defaults).
    BucketConfigs,
    /// The object event log, by event id.
    Events,
    Uploads,
    Parts,
    /// Blob ids being written and not yet referenced; swept on start.
    PendingBlobs,
    /// Blob ids no longer referenced; their files are deleted in the background.
    Garbage,
    System,
    /// Identities: accounts, users, groups, roles, managed policies, access keys, sessions.
    Iam,
    /// KMS keys (metadata and sealed key material) and aliases.
    Kms,
    /// Functions (configuration, versions, aliases) and their invocation records.
    Functions,
    /// Replication: peer regions (credentials sealed) and per-rule progress.
    Replication,
    /// The nodes of a multi-node region (membership and heartbeats).
    Cluster,
    /// SQL analytics: per-account catalogs of external tables, query history, jobs.
    Analytics,
}

impl Table {
    pub const ALL: [Table; 17] = [
        Table::Buckets,
        Table::Objects,
        Table::Versions,
        Table::Heads,
        Table::BucketConfigs,
        Table::Events,
        Table::Uploads,
        Table::Parts,
        Table::PendingBlobs,
        Table::Garbage,
        Table::System,
        Table::Iam,
        Table::Kms,
        Table::Functions,
        Table::Replication,
        Table::Cluster,
        Table::Analytics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Buckets => "buckets",
            Table::Objects => "objects",
            Table::Versions => "versions",
            Table::Heads => "heads",
            Table::BucketConfigs => "bucket_configs",
            Table::Events => "events",
            Table::Uploads => "uploads",
            Table::Parts => "parts",
            Table::PendingBlobs => "pending_blobs",
            Table::Garbage => "garbage",
            Table::System => "system",
            Table::Iam => "iam",
            Table::Kms => "kms",
            Table::Functions => "functions",
            Table::Replication => "replication",
            Table::Cluster => "cluster",
            Table::Analytics => "analytics",
        }
    }
}

/// A precondition of a [`WriteBatch`]; all must hold or nothing is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Absent {
        table: Table,
        key: Vec<u8>,
    },
    Present {
        table: Table,
        key: Vec<u8>,
    },
    /// The key holds exactly this (unsealed) value.
    Equals {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// No key in the table starts with this prefix.
    PrefixEmpty {
        table: Table,
        prefix: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
    },
}

/// An atomic unit of change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub checks: Vec<Check>,
    pub mutations: Vec<Mutation>,
    /// Visible at once, but durable only with the next durable commit instead of paying an
    /// fsync of its own: a crash may lose it. Only for what can be recomputed (replication
    /// status, which the worker rewrites when it replays the events past its durable cursor).
    pub deferred: bool,
    /// How to plan this change again when its checks fail at commit time: see [`Replan`].
    pub replan: Option<Replan>,
}

/// The signature of a re-planning function: reads the state the commit would apply to and
/// returns the batch to apply instead, or `None` to fail the original with its conflict.
pub type ReplanFn = dyn Fn(&dyn MetaRead) -> Result<Option<WriteBatch>, MetaError> + Send + Sync;

/// A change planned from a snapshot whose rows may have moved by the time it commits (many
/// writers of one key): rather than failing the batch back to its caller, who would read
/// again and queue again behind the next group of writers, the engine runs this function
/// inside the same transaction, against the rows as the batches before it left them, and
/// applies what it returns (checked like any batch). Writers of one key then land in one
/// durable commit instead of one each. It runs on the engine's writer, so it must be quick
/// and must not block; a re-planned batch is not re-planned again.
#[derive(Clone)]
pub struct Replan(pub std::sync::Arc<ReplanFn>);

impl Replan {
    pub fn new(
        f: impl Fn(&dyn MetaRead) -> Result<Option<WriteBatch>, MetaError> + Send + Sync + 'static,
    ) -> Self {
        Self(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for Replan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replan(..)")
    }
}

impl PartialEq for Replan {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Replan {}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn check_absent(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.checks.push(Check::Absent {
            table,
            key: key.into(),
        });
        self
    }
    pub fn check_present(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.checks.push(Check::Present {
            table,
            key: key.into(),
        });
        self
    }
    /// Requires the key to hold `value`, or to be absent when `value` is `None`.
    pub fn check_value(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> &mut Self {
        let key = key.into();
        self.checks.push(match value {
            Some(value) => Check::Equals { table, key, value },
            None => Check::Absent { table, key },
        });
        self
    }
    pub fn check_prefix_empty(&mut self, table: Table, prefix: impl Into<Vec<u8>>) -> &mut Self {
        self.checks.push(Check::PrefixEmpty {
            table,
            prefix: prefix.into(),
        });
        self
    }
    pub fn put(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.mutations.push(Mutation::Put {
            table,
            key: key.into(),
            value: value.into(),
        });
        self
    }
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.mutations.push(Mutation::Delete {
            table,
            key: key.into(),
        });
        self
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaError {
    /// A [`Check`] did not hold; the caller may re-read and retry.
    #[error("precondition failed: {0}")]
    Conflict(String),
    /// A stored value failed its checksum.
    #[error("corrupt metadata value in table {table}")]
    Corrupt { table: &'static str },
    #[error("metadata batch exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("metadata store is shut down")]
    Closed,
    #[error("metadata storage error: {0}")]
    Storage(String),
    /// A networked engine cannot reach its database (down, restarting, pool exhausted):
    /// nothing was applied, and the same request may work in a moment.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// A networked engine lost its connection while a commit was in flight and could not
    /// find out whether it landed. The only error after which the batch may have been
    /// applied: callers must not undo what it would have referenced (the pending-blob guard
    /// checks its row before deleting anything).
    #[error("the outcome of a metadata commit is unknown: {0}")]
    Indeterminate(String),
}

pub type KvPair = (Vec<u8>, Vec<u8>);

/// Reading the store: the store itself (each call sees the latest commit) or a
/// [`MetaStore::snapshot`] (every call sees the same one). Blocking: call off the runtime.
pub trait MetaRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError>;

    /// Several point reads, answered in order, all from one view: through a snapshot, its
    /// own; on the store itself, one taken for these reads. A networked engine sends them in
    /// one round trip, so a plan that knows which rows it needs asks for them together.
    fn get_many(&self, reads: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        reads.iter().map(|(t, k)| self.get(*t, k)).collect()
    }

    /// Up to `limit` pairs with `start <= key < end` (no upper bound when `end` is `None`),
    /// in key order.
    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError>;
}

/// The metadata engine. Reads are blocking (call them off the async runtime); commits are
/// asynchronous so that an engine can group many of them into one durable write.
pub trait MetaStore: MetaRead + Send + Sync + 'static {
    /// A consistent view: every read through it sees the same committed state, fixed no later
    /// than its first read. Plans that read several rows and then decide (a key's head, its
    /// current version, the null one) read them through one, or a commit between two reads
    /// shows them rows that never coexisted.
    type Snapshot: MetaRead;

    fn snapshot(&self) -> Result<Self::Snapshot, MetaError>;

    /// [`MetaRead::get_many`] for a caller on the async runtime: a networked engine awaits
    /// its database instead of parking the caller's thread for the round trip. The embedded
    /// engine answers inline (microseconds).
    fn get_many_async<'a>(
        &'a self,
        reads: &'a [(Table, &'a [u8])],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, MetaError>> + Send + 'a {
        std::future::ready(self.get_many(reads))
    }

    /// For a plan whose batch checks every row it decides on (a PUT's), the rows a node-local
    /// cache holds for `reads`, those it does not hold answered as absent: the commit's
    /// checks find out inside the transaction when that was wrong, and its re-plan takes
    /// over. `None` (the default) when there is no such cache or it cannot answer the
    /// first row, which must be a real one.
    fn speculative_rows(&self, _reads: &[(Table, &[u8])]) -> Option<Vec<Option<Vec<u8>>>> {
        None
    }

    fn commit(&self, batch: WriteBatch) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// [`MetaStore::commit`], saying whether the batch's [`Replan`] was applied instead of the
    /// batch itself (its caller then reports what the re-plan decided).
    fn commit_replanning(
        &self,
        batch: WriteBatch,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;
}

/// Rows one page of a whole-range walk reads.
pub const SCAN_PAGE: usize = 1000;

/// Every pair with `start <= key < end`, read a page ([`SCAN_PAGE`]) at a time and failing
/// with [`MetaError::TooLarge`] past `max_rows`: the bounded way to read a range whose size
/// a client influences.
pub fn scan_bounded<M: MetaRead + ?Sized>(
    m: &M,
    table: Table,
    start: &[u8],
    end: Option<&[u8]>,
    max_rows: usize,
) -> Result<Vec<KvPair>, MetaError> {
    let mut out = Vec::new();
    let mut from = start.to_vec();
    loop {
        let page = m.scan(table, &from, end, SCAN_PAGE)?;
        let full = page.len() == SCAN_PAGE;
        if let Some((k, _)) = page.last() {
            from = k.clone();
            from.push(0);
        }
        out.extend(page);
        if out.len() > max_rows {
            return Err(MetaError::TooLarge { limit: max_rows });
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Whether every check holds now, read outside any transaction. A caller whose commit failed
/// a check uses it to tell which part of its batch went stale (and so what to re-read).
pub fn checks_hold<M: MetaRead + ?Sized>(m: &M, checks: &[Check]) -> Result<bool, MetaError> {
    for c in checks {
        let ok = match c {
            Check::Absent { table, key } => m.get(*table, key)?.is_none(),
            Check::Present { table, key } => m.get(*table, key)?.is_some(),
            Check::Equals { table, key, value } => m.get(*table, key)?.as_ref() == Some(value),
            Check::PrefixEmpty { table, prefix } => {
                let end = prefix_end(prefix);
                m.scan(*table, prefix, end.as_deref(), 1)?.is_empty()
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when no such
/// key exists (the prefix is all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_table() {
        let rows: &[(&[u8], Option<&[u8]>)] = &[
            (b"a", Some(b"b")),
            (b"a\xff", Some(b"b")),
            (b"\xff\xff", None),
            (b"", None),
            (b"ab\x00", Some(b"ab\x01")),
        ];
        for (input, expected) in rows {
            assert_eq!(prefix_end(input).as_deref(), *expected, "input {input:?}");
        }
    }
}

//! The metadata engine over the PostgreSQL wire protocol: the second implementation of
//! [`feiyun_meta::MetaStore`], for a region whose nodes share one distributed SQL database
//! (CockroachDB, YugabyteDB) or a PostgreSQL server.
//!
//! Each [`Table`] is one SQL table of `(k bytea primary key, v bytea)`: `bytea` compares
//! bytewise in all three engines, which is the order S3 listings need. Values are stored in
//! the same checksummed envelope as the embedded engine's, so a damaged or moved row is
//! reported as corrupt, never returned.
//!
//! A [`WriteBatch`] is one SERIALIZABLE transaction: its checks, its re-plan when they fail,
//! its mutations, and a row in `feiyun_commits` naming the commit. Serialization failures and
//! deadlocks are retried with jittered back-off. When the connection breaks while `COMMIT`
//! is in flight the outcome is settled by inserting the same commit row as "void": the
//! primary key lets exactly one of the two land, so the answer is definite, and a commit that
//! cannot be settled is reported as an error, never as a success. The statements and why each
//! is portable are listed in ARCHITECTURE.md.

mod commit;
mod conn;
mod schema;
mod sql;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::sync::{Arc, Mutex};

use feiyun_meta::{KvPair, MetaError, MetaRead, MetaStore, Table, WriteBatch, envelope};

pub use commit::CommitStats;
pub use conn::PoolOptions;
use conn::{Answer, Op, Param, Pool, Pooled};
pub(crate) use sql::{PointReads, sql, sql_table};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("metadata database URL: {0}")]
    Url(String),
    #[error("connecting to the metadata database: {0}")]
    Connect(String),
    #[error("metadata database: {0}")]
    Db(String),
    /// A serialization failure or deadlock the database asks us to retry.
    #[error("metadata database asked for a retry ({0})")]
    Retry(String),
    #[error("metadata database did not answer in time")]
    Timeout,
    #[error("all {0} metadata database connections are busy")]
    PoolExhausted(usize),
    #[error("metadata schema version {found} is newer than this binary's {known}")]
    SchemaTooNew { found: i64, known: i64 },
}

impl PgError {
    /// Whether the session is gone (or its state unknown), as opposed to the server having
    /// answered with an error.
    fn connection_lost(&self) -> bool {
        matches!(self, PgError::Connect(_) | PgError::Timeout)
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                PgError::Retry(c.code().to_string())
            }
            Some(c) => PgError::Db(format!(
                "{} ({})",
                e.as_db_error().map(|d| d.message()).unwrap_or("error"),
                c.code()
            )),
            // No SQLSTATE: the socket closed or the protocol failed.
            None => PgError::Connect(e.to_string()),
        }
    }
}

/// The store: a pool of sessions to one database, and the group committer.
#[derive(Clone)]
pub struct PgStore {
    pool: Arc<Pool>,
    committer: Arc<commit::Committer>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db?sslmode=require`), creates or
    /// migrates the schema, and checks it can read it. `sslmode=require` encrypts and checks
    /// the server's certificate against the system's CAs (`SSL_CERT_FILE` names others);
    /// `sslrootcert=FILE` names the only CA to trust instead.
    pub fn open(url: &str, options: PoolOptions) -> Result<Self, PgError> {
        let (config, tls) = conn::parse_url(url)?;
        let pool = Arc::new(Pool::new(config, tls, &options)?);
        schema::migrate(&pool)?;
        let committer = Arc::new(commit::Committer::new(pool.clone()));
        Ok(Self { pool, committer })
    }

    /// [`MetaRead::get_many`] without parking the caller's thread, when a session is idle;
    /// otherwise (every session busy, or none open yet) on a blocking thread, which may wait
    /// for one or connect.
    pub async fn get_many_async(
        &self,
        reads: &[(Table, &[u8])],
    ) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        let Some(op) = PointReads::new(reads.iter().copied()).op() else {
            return Ok(Vec::new());
        };
        let Some(conn) = self.pool.try_get_idle() else {
            let owned: Vec<(Table, Vec<u8>)> =
                reads.iter().map(|(t, k)| (*t, k.to_vec())).collect();
            let pool = self.pool.clone();
            return tokio::task::spawn_blocking(move || {
                let borrowed: Vec<(Table, &[u8])> =
                    owned.iter().map(|(t, k)| (*t, k.as_slice())).collect();
                get_many_on(&pool, &borrowed)
            })
            .await
            .map_err(|e| MetaError::Storage(format!("read task failed: {e}")))?;
        };
        let (conn, mut answers) = conn.pipeline_async(vec![op]).await?;
        drop(conn);
        let answer = answers.pop().unwrap_or(Ok(Answer::Done))?;
        open_point_reads(reads, answer.rows())
    }

    /// The group committer's counters.
    pub fn commit_stats(&self) -> Arc<CommitStats> {
        self.committer.stats.clone()
    }

    /// The schema version this binary writes.
    pub fn schema_version() -> i64 {
        schema::VERSION
    }
}

pub(crate) fn unseal(table: Table, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, MetaError> {
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

/// Point read on one session (in whatever transaction it is in), the value still sealed.
pub(crate) fn get_raw(
    c: &mut Pooled,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, PgError> {
    let rows = c.query(sql(table).get, vec![Param::Bytes(key.to_vec())])?;
    match rows.first() {
        None => Ok(None),
        Some(r) => r
            .try_get::<_, Vec<u8>>(0)
            .map(Some)
            .map_err(|e| PgError::Db(e.to_string())),
    }
}

/// Range read on one session, the values still sealed.
pub(crate) fn scan_raw(
    c: &mut Pooled,
    table: Table,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<KvPair>, PgError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = Param::Int(i64::try_from(limit).unwrap_or(i64::MAX));
    let rows = match end {
        Some(end) => c.query(
            sql(table).scan_range,
            vec![
                Param::Bytes(start.to_vec()),
                Param::Bytes(end.to_vec()),
                limit,
            ],
        )?,
        None => c.query(
            sql(table).scan_from,
            vec![Param::Bytes(start.to_vec()), limit],
        )?,
    };
    rows.into_iter()
        .map(|r| {
            let k: Vec<u8> = r.try_get(0).map_err(|e| PgError::Db(e.to_string()))?;
            let v: Vec<u8> = r.try_get(1).map_err(|e| PgError::Db(e.to_string()))?;
            Ok((k, v))
        })
        .collect()
}

fn get_on(c: &mut Pooled, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
    let sealed = get_raw(c, table, key)?;
    sealed.map(|v| unseal(table, key, &v)).transpose()
}

fn scan_on(
    c: &mut Pooled,
    table: Table,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<KvPair>, MetaError> {
    scan_raw(c, table, start, end, limit)?
        .into_iter()
        .map(|(k, v)| unseal(table, &k, &v).map(|v| (k, v)))
        .collect()
}

impl MetaRead for PgStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let mut c = self.pool.get()?;
        get_on(&mut c, table, key)
    }

    /// One view for all of them without a transaction: the reads are one statement.
    fn get_many(&self, reads: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        get_many_on(&self.pool, reads)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError> {
        let mut c = self.pool.get()?;
        scan_on(&mut c, table, start, end, limit)
    }
}

/// A read-only REPEATABLE READ transaction held on one session. Its `BEGIN` travels with
/// its first read, so the snapshot is fixed no later than that read (CockroachDB and
/// YugabyteDB run it at their snapshot or serializable level, which is at least as
/// strong), and its `ROLLBACK` is sent when it is dropped without the reader waiting for it:
/// a snapshot read costs the round trips of its reads and nothing more.
pub struct PgSnapshot {
    inner: Mutex<Option<SnapshotConn>>,
}

const SNAPSHOT_BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

struct SnapshotConn {
    conn: Pooled,
    /// `BEGIN` has been sent.
    begun: bool,
    /// A read failed: the session's transaction state is unknown, so it is not pooled again.
    failed: bool,
}

impl Drop for PgSnapshot {
    fn drop(&mut self) {
        let (taken, poisoned) = match self.inner.get_mut() {
            Ok(s) => (s.take(), false),
            // A read panicked mid-way: the session's state is unknown.
            Err(p) => (p.into_inner().take(), true),
        };
        if let Some(s) = taken {
            if s.failed || poisoned {
                s.conn.discard();
            } else if s.begun {
                // Ending a read-only transaction cannot lose anything; a session whose
                // ROLLBACK fails is closed rather than pooled in an unknown state.
                s.conn.finish_in_background("ROLLBACK");
            }
        }
    }
}

impl PgSnapshot {
    /// Runs `reads` in the snapshot's transaction, opening it first if no read has.
    fn pipeline(&self, reads: Vec<Op>) -> Result<Vec<Answer>, MetaError> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let s = guard.as_mut().ok_or(MetaError::Closed)?;
        let begin = !s.begun;
        let mut ops = Vec::with_capacity(reads.len() + 1);
        if begin {
            ops.push(Op::Simple(SNAPSHOT_BEGIN));
        }
        ops.extend(reads);
        // The transaction is open (or the session broken) once BEGIN has been sent.
        s.begun = true;
        let answers = s.conn.pipeline(ops).and_then(|all| {
            all.into_iter()
                .skip(usize::from(begin))
                .collect::<Result<Vec<_>, _>>()
        });
        answers.map_err(|e| {
            s.failed = true;
            e.into()
        })
    }
}

impl MetaRead for PgSnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        Ok(self.get_many(&[(table, key)])?.pop().flatten())
    }

    fn get_many(&self, reads: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        let Some(op) = PointReads::new(reads.iter().copied()).op() else {
            return Ok(Vec::new());
        };
        let answers = self.pipeline(vec![op])?;
        open_point_reads(reads, answers.first().map(Answer::rows).unwrap_or_default())
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let answers = self.pipeline(vec![scan_op(table, start, end, limit)])?;
        let rows = answers.first().map(Answer::rows).unwrap_or_default();
        open_rows(table, rows)
    }
}

fn scan_op(table: Table, start: &[u8], end: Option<&[u8]>, limit: usize) -> Op {
    let limit = Param::Int(i64::try_from(limit).unwrap_or(i64::MAX));
    match end {
        Some(end) => Op::Query(
            sql(table).scan_range,
            vec![
                Param::Bytes(start.to_vec()),
                Param::Bytes(end.to_vec()),
                limit,
            ],
        ),
        None => Op::Query(
            sql(table).scan_from,
            vec![Param::Bytes(start.to_vec()), limit],
        ),
    }
}

/// Several point reads as one statement on a pooled session, outside any transaction.
fn get_many_on(
    pool: &Arc<Pool>,
    reads: &[(Table, &[u8])],
) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
    let Some(op) = PointReads::new(reads.iter().copied()).op() else {
        return Ok(Vec::new());
    };
    let mut c = pool.get()?;
    let answer = c
        .pipeline(vec![op])
        .and_then(|mut a| a.pop().unwrap_or(Ok(Answer::Done)));
    match answer {
        Ok(a) => open_point_reads(reads, a.rows()),
        Err(e) => {
            if e.connection_lost() {
                c.discard();
            }
            Err(e.into())
        }
    }
}

/// The values a [`PointReads`] statement's rows hold, in the order `reads` asked for them.
pub(crate) fn open_point_reads(
    reads: &[(Table, &[u8])],
    rows: &[tokio_postgres::Row],
) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
    let found = PointReads::found(rows)?;
    reads
        .iter()
        .map(|(t, k)| found.sealed(*t, k).map(|v| unseal(*t, k, v)).transpose())
        .collect()
}

fn open_rows(table: Table, rows: &[tokio_postgres::Row]) -> Result<Vec<KvPair>, MetaError> {
    rows.iter()
        .map(|r| {
            let k: Vec<u8> = r.try_get(0).map_err(|e| PgError::Db(e.to_string()))?;
            let v: Vec<u8> = r.try_get(1).map_err(|e| PgError::Db(e.to_string()))?;
            let v = unseal(table, &k, &v)?;
            Ok((k, v))
        })
        .collect()
}

impl MetaStore for PgStore {
    type Snapshot = PgSnapshot;

    fn snapshot(&self) -> Result<PgSnapshot, MetaError> {
        // The session is taken now, so a snapshot that cannot have one fails here.
        let conn = self.pool.get()?;
        Ok(PgSnapshot {
            inner: Mutex::new(Some(SnapshotConn {
                conn,
                begun: false,
                failed: false,
            })),
        })
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), MetaError> {
        self.commit_replanning(batch).await.map(|_| ())
    }

    async fn commit_replanning(&self, batch: WriteBatch) -> Result<bool, MetaError> {
        self.committer.submit(batch).await
    }
}

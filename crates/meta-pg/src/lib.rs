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
#[cfg(feature = "testkit")]
pub mod testkit;

use std::sync::{Arc, Mutex};

use feiyun_meta::{KvPair, MetaError, MetaRead, MetaStore, Table, WriteBatch, envelope};

pub use conn::PoolOptions;
use conn::{Param, Pool, Pooled};

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

/// The store: a pool of sessions to one database.
pub struct PgStore {
    pool: Arc<Pool>,
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
        Ok(Self { pool })
    }

    /// The schema version this binary writes.
    pub fn schema_version() -> i64 {
        schema::VERSION
    }
}

/// The SQL table behind a [`Table`]. The names are fixed identifiers, never client input.
pub(crate) fn sql_table(t: Table) -> &'static str {
    match t {
        Table::Buckets => "feiyun_buckets",
        Table::Objects => "feiyun_objects",
        Table::Versions => "feiyun_versions",
        Table::Heads => "feiyun_heads",
        Table::BucketConfigs => "feiyun_bucket_configs",
        Table::Events => "feiyun_events",
        Table::Uploads => "feiyun_uploads",
        Table::Parts => "feiyun_parts",
        Table::PendingBlobs => "feiyun_pending_blobs",
        Table::Garbage => "feiyun_garbage",
        Table::System => "feiyun_system",
        Table::Iam => "feiyun_iam",
        Table::Kms => "feiyun_kms",
        Table::Functions => "feiyun_functions",
        Table::Replication => "feiyun_replication",
        Table::Cluster => "feiyun_cluster",
    }
}

/// The statements, one set per table, built once: `tokio-postgres` caches a prepared
/// statement per text, and the text must be `'static` to key that cache.
pub(crate) struct Sql {
    pub get: &'static str,
    pub scan_from: &'static str,
    pub scan_range: &'static str,
    pub exists_from: &'static str,
    pub exists_range: &'static str,
    pub upsert: &'static str,
    pub delete: &'static str,
}

pub(crate) fn sql(t: Table) -> &'static Sql {
    static ALL: std::sync::OnceLock<Vec<Sql>> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        Table::ALL
            .iter()
            .map(|t| {
                let n = sql_table(*t);
                let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
                Sql {
                    get: leak(format!("SELECT v FROM {n} WHERE k = $1")),
                    scan_from: leak(format!(
                        "SELECT k, v FROM {n} WHERE k >= $1 ORDER BY k LIMIT $2"
                    )),
                    scan_range: leak(format!(
                        "SELECT k, v FROM {n} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"
                    )),
                    exists_from: leak(format!("SELECT k FROM {n} WHERE k >= $1 ORDER BY k LIMIT 1")),
                    exists_range: leak(format!(
                        "SELECT k FROM {n} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT 1"
                    )),
                    upsert: leak(format!(
                        "INSERT INTO {n} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
                    )),
                    delete: leak(format!("DELETE FROM {n} WHERE k = $1")),
                }
            })
            .collect()
    });
    let i = Table::ALL.iter().position(|x| *x == t).unwrap_or(0);
    &all[i]
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

/// A read-only REPEATABLE READ transaction held on one session, its snapshot taken when it
/// is opened (the `SELECT 1` sent with `BEGIN`), as the embedded engine's is. (CockroachDB and YugabyteDB run it at their snapshot or serializable
/// level, which is at least as strong.)
pub struct PgSnapshot {
    inner: Mutex<Option<SnapshotConn>>,
}

struct SnapshotConn {
    conn: Pooled,
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
        if let Some(mut s) = taken {
            s.failed |= poisoned;
            // Ending a read-only transaction cannot lose anything; a session whose ROLLBACK
            // fails is closed rather than pooled in an unknown state.
            if s.failed || s.conn.simple("ROLLBACK").is_err() {
                s.conn.discard();
            }
        }
    }
}

impl PgSnapshot {
    fn with<T>(&self, f: impl FnOnce(&mut Pooled) -> Result<T, MetaError>) -> Result<T, MetaError> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let s = guard.as_mut().ok_or(MetaError::Closed)?;
        let r = f(&mut s.conn);
        if r.is_err() {
            s.failed = true;
        }
        r
    }
}

impl MetaRead for PgSnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        self.with(|c| get_on(c, table, key))
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError> {
        self.with(|c| scan_on(c, table, start, end, limit))
    }
}

impl MetaStore for PgStore {
    type Snapshot = PgSnapshot;

    fn snapshot(&self) -> Result<PgSnapshot, MetaError> {
        let mut conn = self.pool.get()?;
        if let Err(e) = conn.simple("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1") {
            conn.discard();
            return Err(e.into());
        }
        Ok(PgSnapshot {
            inner: Mutex::new(Some(SnapshotConn {
                conn,
                failed: false,
            })),
        })
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), MetaError> {
        self.commit_replanning(batch).await.map(|_| ())
    }

    async fn commit_replanning(&self, batch: WriteBatch) -> Result<bool, MetaError> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || commit::commit(&pool, &batch))
            .await
            .map_err(|e| MetaError::Storage(format!("commit task failed: {e}")))?
    }
}

//! SQL analytics over the region's buckets on Apache DataFusion.
//!
//! Owns the `analytics` metadata table (the per-account catalog of external tables and the
//! query history) and everything between a statement's text and its result: a DataFusion
//! session per statement with the caller's limits, the region's buckets as object stores
//! read and written as the caller ([`store`], authorized through [`Access`], which the
//! server implements with the S3 authorization), staged writes published only when the
//! statement succeeds, the cache of Parquet footers across statements ([`footers`]), and
//! admission per account. It reaches the region only through [`Region`]; it knows nothing
//! of HTTP or the PostgreSQL protocol, which the server's edges speak.

pub mod catalog;
mod engine;
pub mod footers;
pub mod history;
pub mod region;
pub mod results;
mod scope;
mod session;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use feiyun_iam::Caller;
use feiyun_oss::KeyCheck;

pub use engine::{Outcome, Sql, Statement, Stats};
pub use footers::FooterCache;
pub use region::{OssRegion, Region};

/// How a statement is authorized: the S3 authorization, as the caller.
#[async_trait]
pub trait Access: Send + Sync + 'static {
    /// May `caller` do `action` on the object (identity and bucket policies, conditions,
    /// the public access block, the tags of `version`, or of the current version when
    /// `None`); the grant's KMS permission check.
    async fn object(
        &self,
        caller: &Arc<Caller>,
        origin: Option<Origin>,
        action: &str,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<KeyCheck, String>;

    /// May `caller` do `action` (`sql:CreateTable`, `sql:DropTable`) on the account's table
    /// `name`, by its identity policies.
    fn table(
        &self,
        caller: &Caller,
        origin: Option<Origin>,
        action: &str,
        name: &str,
    ) -> Result<(), String>;

    /// May `caller` do `action` on the bucket (`s3:ListBucket` with `s3:prefix`).
    async fn bucket(
        &self,
        caller: &Arc<Caller>,
        origin: Option<Origin>,
        action: &str,
        bucket: &str,
        prefix: &str,
    ) -> Result<(), String>;
}

/// Where a statement came from, for the conditions policies put on it (`aws:SourceIp`,
/// `aws:SecureTransport`); `None` for statements the region runs itself (scheduled jobs).
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub peer: std::net::SocketAddr,
    pub secure: bool,
}

/// What one statement may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// DataFusion's memory pool per statement; operators that can spill do, the rest fail
    /// with `ResourcesExhausted`.
    pub memory_per_query: usize,
    /// Spill files of all statements go here (under the data directory).
    pub spill_dir: PathBuf,
    /// Spill bytes one statement may write.
    pub spill_per_query: u64,
    /// Wall-clock time a statement may run.
    pub timeout: Duration,
    /// Rows and bytes of a result returned inline; the rest is cut (and says so).
    pub max_rows: usize,
    pub max_bytes: usize,
    /// Statements one account may run at once, and the whole region.
    pub per_account: usize,
    pub total: usize,
    /// Objects one statement may list (each is remembered to pin its version).
    pub max_objects: usize,
    /// DataFusion's target partitions (threads a plan is spread over).
    pub partitions: usize,
    /// Bytes of object tails (Parquet footers) kept across statements.
    pub footer_cache: usize,
}

impl Limits {
    pub fn new(spill_dir: PathBuf) -> Self {
        Self {
            memory_per_query: 1024 * 1024 * 1024,
            spill_dir,
            spill_per_query: 16 * 1024 * 1024 * 1024,
            timeout: Duration::from_secs(30 * 60),
            max_rows: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
            per_account: 8,
            total: 32,
            max_objects: 1_000_000,
            partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            footer_cache: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The statement cannot be parsed or planned (bad SQL, unknown table or column).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not read or write something the statement needs.
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The memory limit, spill limit or time limit stopped the statement.
    #[error("{0}")]
    ResourcesExhausted(String),
    #[error("the statement ran longer than its limit of {0} s and was stopped")]
    Timeout(u64),
    #[error("{0}")]
    TooMany(String),
    #[error("the statement was cancelled")]
    Cancelled,
    /// A stored object could not be read as the format says (a corrupt Parquet file).
    #[error("{0}")]
    Data(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SqlError {
    /// A short code for the error (the HTTP edge's `__type`, the history's status).
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::Invalid(_) => "InvalidQuery",
            SqlError::AccessDenied(_) => "AccessDenied",
            SqlError::NotFound(_) => "NotFound",
            SqlError::AlreadyExists(_) => "AlreadyExists",
            SqlError::ResourcesExhausted(_) => "ResourcesExhausted",
            SqlError::Timeout(_) => "QueryTimeout",
            SqlError::TooMany(_) => "TooManyQueries",
            SqlError::Cancelled => "Cancelled",
            SqlError::Data(_) => "DataError",
            SqlError::Internal(_) => "InternalError",
        }
    }
}

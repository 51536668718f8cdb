//! Migration into a region: copies a directory tree or an S3 bucket (any S3 API) into a
//! bucket of the region, verified object by object, resumable from a durable journal,
//! incremental on later runs; and `verify`, which lists every difference between the two.
//!
//! The crate talks to both ends over S3 only: the region is the destination as any client
//! would see it, so every write goes through the region's own authentication, policies,
//! encryption and checksums. See docs/migrate.md for the journal, the checks and the limits.

pub mod client;
pub mod config;
mod copy;
pub mod dest;
pub mod history;
pub mod iam;
pub mod iam_minio;
pub mod journal;
pub mod limit;
mod multipart;
mod progress;
pub mod source;
mod verify;
pub mod xml;

use std::sync::Arc;

pub use copy::Stats;
pub use dest::Dest;
pub use journal::Journal;
pub use limit::Limits;
pub use source::Source;
pub use verify::{Difference, verify, verify_bucket_config, verify_histories};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("source: {0}")]
    Source(String),
    #[error("listing {0}")]
    List(String),
    #[error("there is no bucket {0}")]
    NoSuchBucket(String),
    #[error("destination: {0}")]
    Dest(String),
    #[error("journal: {0}")]
    Journal(String),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("{0} changed while it was copied; the next run copies it")]
    Changed(String),
    #[error("{0} disappeared from the source while it was copied")]
    Vanished(String),
    #[error("histories differ: {0}")]
    Diverged(String),
    /// The destination's credentials may not do this (AccessDenied).
    #[error("access denied: {0}")]
    Denied(String),
}

/// How a migration runs.
#[derive(Clone)]
pub struct Options {
    /// Objects copied at once.
    pub transfers: usize,
    /// Comparisons (HEADs, content reads) at once.
    pub checkers: usize,
    pub part_size: u64,
    /// Objects larger than this go as multipart uploads.
    pub multipart_threshold: u64,
    /// Parts of one object in flight at once.
    pub part_concurrency: usize,
    /// Compare content (CRC64NVME read from the source), not only size and fingerprint.
    pub checksum: bool,
    pub delete: bool,
    pub dry_run: bool,
    /// Copy the source bucket's settings and each object's retention and legal hold
    /// (an S3 source, bucket to bucket).
    pub bucket_config: bool,
    /// Every version and delete marker, oldest first (a versioned S3 source).
    pub all_versions: bool,
    pub limits: Limits,
    /// Draw a progress bar (a terminal) or print a line every few seconds.
    pub progress: Progress,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Lines,
    Off,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            transfers: 16,
            checkers: 16,
            part_size: 16 << 20,
            multipart_threshold: 16 << 20,
            part_concurrency: 4,
            checksum: false,
            delete: false,
            dry_run: false,
            bucket_config: false,
            all_versions: false,
            limits: Limits::default(),
            progress: Progress::Off,
        }
    }
}

/// An object (or a source name) that did not make it, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub key: String,
    pub error: String,
}

/// What a pass did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub listed: u64,
    pub copied: u64,
    /// Bytes sent to the destination.
    pub bytes: u64,
    pub skipped: u64,
    pub deleted: u64,
    pub failed: u64,
    /// Source names that cannot become objects (reported in `failures` too).
    pub problems: u64,
    /// Source names left out on purpose (symbolic links not followed, loops).
    pub ignored: u64,
    /// Objects copied inside the region (source and destination in one region).
    pub server_side: u64,
    pub seconds: f64,
    pub failures: Vec<Failure>,
    /// With `dry_run`: what would be done, one line each.
    pub plan: Vec<String>,
    /// Bucket settings written (`--bucket-config`), as `config NAME`.
    pub settings: Vec<String>,
}

/// One pass of the migration from `source` to `dest`, recorded in `journal`.
pub async fn migrate(
    source: Source,
    dest: Dest,
    journal: Journal,
    opts: Options,
) -> Result<Summary, Error> {
    let stats = Arc::new(Stats::default());
    let shown = progress::show(opts.progress, stats.clone());
    let r = copy::run(source, dest, journal, opts, stats).await;
    shown.finish().await;
    r
}

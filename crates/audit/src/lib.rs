//! The audit log: one record per authenticated or denied request, appended to segment files
//! under `DATA_DIR/audit/` and chained by a MAC keyed from the region's master key, so that
//! [`verify`] (which works on the files alone, server running or stopped) detects:
//!
//! - a record changed, removed, inserted or reordered anywhere in the log;
//! - records cut off the end, back to the last durable `HEAD`;
//! - a log rewritten consistently offline by someone who can write the data directory but
//!   does not hold the master key (every link and `HEAD` are MACs they cannot compute).
//!
//! What it cannot detect: a rollback to an older complete copy of the log and its `HEAD`
//! (export the head hash off the machine to anchor it), or anything done by a holder of the
//! master key. Records written before the chain was keyed (Feiyun releases that chained by
//! plain SHA-256) are reported as unkeyed and fail verification unless accepted explicitly.
//!
//! Line format: `HASH JSON\n`, `HASH = hex(HMAC-SHA256(K, PREV_HASH_HEX ‖ JSON))` (the first
//! record's previous hash is 64 zeros; unkeyed records use SHA-256 in place of the HMAC).
//! `HEAD` holds the count and hash of the last durable record, how many leading records are
//! unkeyed, and a MAC over those three.
//!
//! Writing never fails open: a write that fails leaves the chain where it was (the records
//! are retried, in order), marks the log unhealthy ([`AuditHealth`]) for metrics and
//! readiness, and the server can refuse requests while it lasts (`audit_fail_closed`).

mod chain;
mod read;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use chain::AuditKey;
pub use read::{Summary, tail, tail_after, verify};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Records waiting to be written; a full queue makes requests wait rather than drop records.
pub const QUEUE: usize = 65_536;
/// How often buffered records are made durable (and `HEAD` advanced).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);
/// Most records written per batch.
const BATCH: usize = 4096;
/// How long the writer waits before retrying records it could not write.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// One request, as the audit trail keeps it. Never holds a secret or a signature.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// RFC 3339 with milliseconds, UTC.
    pub time: String,
    pub request_id: String,
    /// The account (tenant) of the caller; empty for anonymous requests.
    pub tenant: String,
    /// The caller's ARN, `anonymous`, or the access key id of a request whose signature
    /// could not be verified.
    pub principal: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub access_key: String,
    pub source_ip: String,
    /// The API operation (`GetObject`, `iam:CreateUser`).
    pub operation: String,
    /// The IAM actions checked, with their resources.
    pub action: String,
    pub resource: String,
    /// `Allow`, `Deny` (explicit), `ImplicitDeny`, or `AuthFailed`.
    pub decision: String,
    /// The policy statement that decided, when one did.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub statement: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Requests that decide per object (DeleteObjects): what was decided for each.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub items: Vec<AuditItem>,
    /// A SQL statement: its text (cut), what it read and returned.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub query: Option<QueryAudit>,
}

/// What a SQL statement's audit record says of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueryAudit {
    pub text: String,
    pub objects_read: u64,
    pub bytes_read: u64,
    pub rows: u64,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub error: String,
}

/// One object a multi-object request acted on, and its own decision.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditItem {
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub version_id: String,
    pub decision: String,
}

/// What authorization decided about a request, filled in by the protocol edge and read by
/// the server when it writes the record.
#[derive(Debug, Clone, Default)]
pub struct Decided {
    pub tenant: String,
    pub principal: String,
    pub access_key: String,
    pub action: String,
    pub resource: String,
    pub decision: String,
    pub statement: String,
    pub items: Vec<AuditItem>,
    pub query: Option<QueryAudit>,
}

/// A per-request place for [`Decided`], carried in request extensions.
#[derive(Clone, Default)]
pub struct Slot(std::sync::Arc<std::sync::Mutex<Option<Decided>>>);

impl Slot {
    pub fn set(&self, d: Decided) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(d);
        }
    }

    /// Adds per-object decisions to what was decided (the request's own decision stays).
    pub fn add_items(&self, items: Vec<AuditItem>) {
        if let Ok(mut g) = self.0.lock()
            && let Some(d) = g.as_mut()
        {
            d.items.extend(items);
        }
    }

    pub fn take(&self) -> Option<Decided> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log I/O at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("record {record} ({file}, line {line}) is broken: {why}")]
    Broken {
        record: u64,
        file: String,
        line: u64,
        why: String,
    },
    #[error("the log ends after {found} records but HEAD says {expected} were written")]
    Truncated { found: u64, expected: u64 },
    #[error("HEAD is missing, malformed or not authenticated by the master key: {0}")]
    Head(String),
    #[error(
        "{0} records predate keyed chaining and cannot be authenticated (accept them explicitly to check them by hash only)"
    )]
    Unkeyed(u64),
    #[error("the audit writer has stopped")]
    Stopped,
}

/// Whether the writer is keeping up: shared with the server for metrics and readiness.
#[derive(Debug, Default)]
pub struct AuditHealth {
    failing: AtomicBool,
    failures: AtomicU64,
}

impl AuditHealth {
    /// The last write failed and its records are still waiting.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Write failures since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::SeqCst);
    }

    fn recovered(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }
}

/// The writing side: a bounded queue drained by one blocking thread that appends, fsyncs
/// every [`SYNC_INTERVAL`] and advances `HEAD`.
#[derive(Clone)]
pub struct AuditLog {
    tx: tokio::sync::mpsc::Sender<writer::Msg>,
    health: Arc<AuditHealth>,
}

impl AuditLog {
    /// Opens (or creates) the log keyed by `key`, checking the chain it continues, and
    /// starts the writer. A log whose tail was damaged by a crash mid-line is cut back to
    /// its last whole record.
    pub fn open(
        dir: &Path,
        key: AuditKey,
    ) -> Result<(AuditLog, std::thread::JoinHandle<()>), AuditError> {
        let health = Arc::new(AuditHealth::default());
        let mut w = writer::AuditWriter::open(dir, key, health.clone())?;
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(rx))
            .map_err(io(dir))?;
        Ok((AuditLog { tx, health }, handle))
    }

    pub fn health(&self) -> &Arc<AuditHealth> {
        &self.health
    }

    /// Queues a record; waits while the queue is full, so no record is dropped.
    pub async fn append(&self, r: AuditRecord) -> Result<(), AuditError> {
        self.tx
            .send(writer::Msg::Record(Box::new(r)))
            .await
            .map_err(|_| AuditError::Stopped)
    }

    /// Waits until every record queued so far is on disk (for shutdown).
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(writer::Msg::Flush(tx))
            .await
            .map_err(|_| AuditError::Stopped)?;
        rx.await.map_err(|_| AuditError::Stopped)
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn key() -> AuditKey {
        AuditKey::new([9; 32])
    }

    fn rec(i: u32) -> AuditRecord {
        AuditRecord {
            time: now_rfc3339(),
            request_id: format!("req-{i}"),
            principal: "arn:aws:iam::123456789012:user/alice".into(),
            operation: "GetObject".into(),
            decision: "Allow".into(),
            status: 200,
            ..Default::default()
        }
    }

    async fn write(dir: &Path, n: u32, from: u32) {
        let (log, handle) = AuditLog::open(dir, key()).unwrap();
        for i in from..from + n {
            log.append(rec(i)).await.unwrap();
        }
        drop(log);
        handle.join().unwrap();
    }

    #[tokio::test]
    async fn chain_survives_reopen_and_names_a_tampered_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, 10, 0).await;
        write(dir, 5, 10).await;
        let s = verify(dir, &key(), false).unwrap();
        assert_eq!((s.records, s.unkeyed), (15, 0));
        assert_eq!(tail(dir, 2).unwrap()[1].request_id, "req-14");
        // A huge tail request is bounded instead of allocating for it.
        assert_eq!(tail(dir, usize::MAX).unwrap().len(), 15);
        let (after, total) = tail_after(dir, 13).unwrap();
        assert_eq!((after.len(), total), (2, 15));

        // Change one byte of record 7's JSON.
        let seg = read::segments(dir).unwrap()[0].clone();
        let text = std::fs::read_to_string(&seg).unwrap();
        let tampered = text.replacen("req-6\"", "req-X\"", 1);
        std::fs::write(&seg, tampered).unwrap();
        match verify(dir, &key(), false) {
            Err(AuditError::Broken { record, line, .. }) => assert_eq!((record, line), (7, 7)),
            other => panic!("{other:?}"),
        }

        // Removing a whole record breaks the link of the next one.
        std::fs::write(&seg, &text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let without: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&seg, without).unwrap();
        match verify(dir, &key(), false) {
            Err(AuditError::Broken { record, .. }) => assert_eq!(record, 4),
            other => panic!("{other:?}"),
        }

        // Cutting off the tail is caught by HEAD.
        let first_ten: String = lines.iter().take(10).map(|l| format!("{l}\n")).collect();
        std::fs::write(&seg, first_ten).unwrap();
        assert!(matches!(
            verify(dir, &key(), false),
            Err(AuditError::Truncated {
                found: 10,
                expected: 15
            })
        ));
    }

    /// Someone who can write the data directory but lacks the master key rewrites the log
    /// consistently — every link recomputed the only way they can, and HEAD to match.
    #[tokio::test]
    async fn an_offline_rewrite_without_the_key_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, 5, 0).await;
        let seg = read::segments(dir).unwrap()[0].clone();
        let text = std::fs::read_to_string(&seg).unwrap();
        let mut prev = chain::GENESIS.to_owned();
        let mut out = String::new();
        for line in text.lines() {
            let json = line.split_once(' ').unwrap().1.replace("alice", "mallory");
            let link = chain::unkeyed_link(&prev, json.as_bytes());
            out.push_str(&format!("{link} {json}\n"));
            prev = link;
        }
        std::fs::write(&seg, out).unwrap();
        // With the old HEAD its MAC no longer matches the records: the first link fails.
        assert!(matches!(
            verify(dir, &key(), false),
            Err(AuditError::Broken { record: 1, .. })
        ));
        // Writing HEAD as an older release would (no MAC) claims everything is unkeyed,
        // which verification refuses unless told to accept it.
        let head = format!("{{\"count\":5,\"hash\":\"{prev}\"}}");
        std::fs::write(dir.join("HEAD"), head).unwrap();
        assert!(matches!(
            verify(dir, &key(), false),
            Err(AuditError::Unkeyed(5))
        ));
        // A forged MAC'd HEAD needs the key.
        let forged = chain::Head::sealed(&AuditKey::new([1; 32]), 5, prev, 0);
        std::fs::write(dir.join("HEAD"), serde_json::to_vec(&forged).unwrap()).unwrap();
        assert!(matches!(
            verify(dir, &key(), false),
            Err(AuditError::Head(_))
        ));
        // Removing HEAD leaves the rewritten links to be judged as keyed ones: they fail.
        std::fs::remove_file(dir.join("HEAD")).unwrap();
        assert!(matches!(
            verify(dir, &key(), false),
            Err(AuditError::Broken { record: 1, .. })
        ));
    }

    #[tokio::test]
    async fn a_log_of_an_older_release_continues_with_keyed_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Three records as the SHA-256-only releases wrote them, HEAD without a MAC.
        let mut prev = chain::GENESIS.to_owned();
        let mut text = String::new();
        for i in 0..3 {
            let json = serde_json::to_string(&rec(i)).unwrap();
            let link = chain::unkeyed_link(&prev, json.as_bytes());
            text.push_str(&format!("{link} {json}\n"));
            prev = link;
        }
        std::fs::write(read::segment_name(dir, 1), text).unwrap();
        std::fs::write(
            dir.join("HEAD"),
            format!("{{\"count\":3,\"hash\":\"{prev}\"}}"),
        )
        .unwrap();
        write(dir, 2, 3).await;
        assert!(matches!(
            verify(dir, &key(), false),
            Err(AuditError::Unkeyed(3))
        ));
        let s = verify(dir, &key(), true).unwrap();
        assert_eq!((s.records, s.unkeyed), (5, 3));
    }

    #[tokio::test]
    async fn a_log_whose_head_was_removed_does_not_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, 3, 0).await;
        std::fs::remove_file(dir.join("HEAD")).unwrap();
        assert!(matches!(
            verify(dir, &key(), false),
            Err(AuditError::Head(_))
        ));
    }

    #[tokio::test]
    async fn a_partial_last_line_is_cut_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, 3, 0).await;
        let seg = read::segments(dir).unwrap()[0].clone();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"deadbeef {\"time\":").unwrap();
        drop(f);
        write(dir, 2, 3).await;
        assert_eq!(verify(dir, &key(), false).unwrap().records, 5);
    }

    #[test]
    fn a_failed_write_keeps_the_chain_and_marks_the_log_unhealthy() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let health = Arc::new(AuditHealth::default());
        let mut w = writer::AuditWriter::open(dir, key(), health.clone()).unwrap();
        w.write_batch(&[rec(0)]).unwrap();
        // The disk fills up: every write fails.
        let good = std::mem::replace(
            w.file_mut(),
            OpenOptions::new().write(true).open("/dev/full").unwrap(),
        );
        assert!(w.write_batch(&[rec(1), rec(2)]).is_err());
        health.failed();
        assert!(health.failing());
        // Space comes back: the same records land after the first, and the chain verifies.
        *w.file_mut() = good;
        w.write_batch(&[rec(1), rec(2)]).unwrap();
        drop(w);
        let s = verify(dir, &key(), false).unwrap();
        assert_eq!(s.records, 3);
        assert_eq!(tail(dir, 3).unwrap()[1].request_id, "req-1");
    }
}

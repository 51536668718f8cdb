//! The audit log: one record per authenticated or denied request, appended to segment files
//! under `DATA_DIR/audit/` and chained by SHA-256 so that changing, removing or reordering
//! any record is detected by [`verify`], which works on the files alone (server running or
//! stopped).
//!
//! Line format: `HASH JSON\n`, where `HASH = hex(sha256(PREV_HASH_HEX ‖ JSON))` and the first
//! record's previous hash is 64 zeros. `HEAD` holds the count and hash of the last record
//! known to be durable, so cutting records off the end is detected too.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Records waiting to be written; a full queue makes requests wait rather than drop records.
pub const QUEUE: usize = 65_536;
/// How often buffered records are made durable (and `HEAD` advanced).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);
/// Most records written per batch.
const BATCH: usize = 4096;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
    #[error("the audit writer has stopped")]
    Stopped,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn chain(prev: &str, json: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(json);
    hex::encode(h.finalize())
}

fn segments(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".log"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(dir)(e)),
    };
    v.sort();
    Ok(v)
}

fn segment_name(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:08}.log"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub count: u64,
    pub hash: String,
}

fn read_head(dir: &Path) -> Option<Head> {
    let text = std::fs::read_to_string(dir.join("HEAD")).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_head(dir: &Path, head: &Head) -> Result<(), AuditError> {
    let tmp = dir.join("HEAD.tmp");
    let path = dir.join("HEAD");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&serde_json::to_vec(head).unwrap_or_default())
        .map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(())
}

/// What `verify` found in a sound log.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub segments: usize,
    pub head: String,
}

/// Walks every segment and checks every link of the chain, and that no durable record is
/// missing from the end. Names the first broken record.
pub fn verify(dir: &Path) -> Result<Summary, AuditError> {
    let files = segments(dir)?;
    let mut prev = GENESIS.to_owned();
    let mut n = 0u64;
    for path in &files {
        let f = File::open(path).map_err(io(path))?;
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_owned();
        for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
            let line = line.map_err(io(path))?;
            n += 1;
            let broken = |why: String| AuditError::Broken {
                record: n,
                file: name.clone(),
                line: i as u64 + 1,
                why,
            };
            let Some(space) = line.iter().position(|b| *b == b' ') else {
                return Err(broken("no hash".into()));
            };
            let (hash, json) = (&line[..space], &line[space + 1..]);
            let want = chain(&prev, json);
            if hash != want.as_bytes() {
                return Err(broken(
                    "its hash does not match its content and the record before it".into(),
                ));
            }
            if serde_json::from_slice::<AuditRecord>(json).is_err() {
                return Err(broken("not an audit record".into()));
            }
            prev = want;
        }
    }
    if let Some(head) = read_head(dir)
        && head.count > n
    {
        return Err(AuditError::Truncated {
            found: n,
            expected: head.count,
        });
    }
    Ok(Summary {
        records: n,
        segments: files.len(),
        head: prev,
    })
}

/// The last `n` records (oldest first).
pub fn tail(dir: &Path, n: usize) -> Result<Vec<AuditRecord>, AuditError> {
    let mut out = std::collections::VecDeque::with_capacity(n);
    for path in segments(dir)? {
        let f = File::open(&path).map_err(io(&path))?;
        for line in BufReader::new(f).split(b'\n') {
            let line = line.map_err(io(&path))?;
            let Some(space) = line.iter().position(|b| *b == b' ') else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<AuditRecord>(&line[space + 1..]) {
                if out.len() == n {
                    out.pop_front();
                }
                out.push_back(r);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The writing side: a bounded queue drained by one blocking thread that appends, fsyncs
/// every [`SYNC_INTERVAL`] and advances `HEAD`.
#[derive(Clone)]
pub struct AuditLog {
    tx: tokio::sync::mpsc::Sender<Msg>,
}

enum Msg {
    Record(Box<AuditRecord>),
    /// Answered once everything queued before it is durable.
    Flush(tokio::sync::oneshot::Sender<()>),
}

pub struct AuditWriter {
    dir: PathBuf,
    file: File,
    segment: u64,
    size: u64,
    prev: String,
    count: u64,
}

impl AuditLog {
    /// Opens (or creates) the log, checking the chain it continues, and starts the writer.
    /// A log whose tail was damaged by a crash mid-line is cut back to its last whole record.
    pub fn open(dir: &Path) -> Result<(AuditLog, std::thread::JoinHandle<()>), AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let files = segments(dir)?;
        let (prev, count) = recover(dir, &files)?;
        let segment = files
            .last()
            .and_then(|p| {
                p.file_stem()?
                    .to_str()?
                    .strip_prefix("audit-")?
                    .parse()
                    .ok()
            })
            .unwrap_or(1);
        let path = segment_name(dir, segment);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let size = file.metadata().map_err(io(&path))?.len();
        let mut w = AuditWriter {
            dir: dir.to_owned(),
            file,
            segment,
            size,
            prev,
            count,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(rx))
            .map_err(io(dir))?;
        Ok((AuditLog { tx }, handle))
    }

    /// Queues a record; waits while the queue is full, so no record is dropped.
    pub async fn append(&self, r: AuditRecord) -> Result<(), AuditError> {
        self.tx
            .send(Msg::Record(Box::new(r)))
            .await
            .map_err(|_| AuditError::Stopped)
    }

    /// Waits until every record queued so far is on disk (for shutdown).
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| AuditError::Stopped)?;
        rx.await.map_err(|_| AuditError::Stopped)
    }
}

/// Finds the chain's end, truncating a partial last line left by a crash.
fn recover(dir: &Path, files: &[PathBuf]) -> Result<(String, u64), AuditError> {
    let mut prev = GENESIS.to_owned();
    let mut count = 0;
    for path in files {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let mut good = 0usize;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            if !line.ends_with(b"\n") {
                break;
            }
            let body = &line[..line.len() - 1];
            let Some(space) = body.iter().position(|b| *b == b' ') else {
                break;
            };
            prev = String::from_utf8_lossy(&body[..space]).into_owned();
            count += 1;
            good += line.len();
        }
        if good < bytes.len() {
            tracing::warn!(path = %path.display(), kept = good, "audit segment ended mid-record; cutting the partial record");
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            f.set_len(good as u64).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
        }
    }
    let _ = dir;
    Ok((prev, count))
}

impl AuditWriter {
    fn run(&mut self, mut rx: tokio::sync::mpsc::Receiver<Msg>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut flushes = Vec::new();
        loop {
            // Wait for the first message, then take whatever else is queued.
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Record(r) => batch.push(*r),
                    Msg::Flush(ack) => flushes.push(ack),
                }
                if batch.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty()
                && let Err(e) = self.write_batch(&batch)
            {
                tracing::error!(error = %e, "audit log write failed");
            }
            batch.clear();
            for ack in flushes.drain(..) {
                let _ = ack.send(());
            }
            std::thread::sleep(SYNC_INTERVAL);
        }
        // Queue closed: everything before has been written and synced.
    }

    fn write_batch(&mut self, batch: &[AuditRecord]) -> Result<(), AuditError> {
        let mut buf = Vec::with_capacity(batch.len() * 400);
        for r in batch {
            let json = serde_json::to_vec(r).unwrap_or_default();
            let hash = chain(&self.prev, &json);
            buf.extend_from_slice(hash.as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(&json);
            buf.push(b'\n');
            self.prev = hash;
            self.count += 1;
        }
        let path = segment_name(&self.dir, self.segment);
        self.file.write_all(&buf).map_err(io(&path))?;
        self.file.sync_data().map_err(io(&path))?;
        self.size += buf.len() as u64;
        write_head(
            &self.dir,
            &Head {
                count: self.count,
                hash: self.prev.clone(),
            },
        )?;
        if self.size >= SEGMENT_BYTES {
            self.segment += 1;
            let next = segment_name(&self.dir, self.segment);
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&next)
                .map_err(io(&next))?;
            self.size = 0;
        }
        Ok(())
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
        let (log, handle) = AuditLog::open(dir).unwrap();
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
        let s = verify(dir).unwrap();
        assert_eq!(s.records, 15);
        assert_eq!(tail(dir, 2).unwrap()[1].request_id, "req-14");

        // Change one byte of record 7's JSON.
        let seg = segments(dir).unwrap()[0].clone();
        let text = std::fs::read_to_string(&seg).unwrap();
        let tampered = text.replacen("req-6\"", "req-X\"", 1);
        std::fs::write(&seg, tampered).unwrap();
        match verify(dir) {
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
        match verify(dir) {
            Err(AuditError::Broken { record, .. }) => assert_eq!(record, 4),
            other => panic!("{other:?}"),
        }

        // Cutting off the tail is caught by HEAD.
        let first_ten: String = lines.iter().take(10).map(|l| format!("{l}\n")).collect();
        std::fs::write(&seg, first_ten).unwrap();
        assert!(matches!(
            verify(dir),
            Err(AuditError::Truncated {
                found: 10,
                expected: 15
            })
        ));
    }

    #[tokio::test]
    async fn a_partial_last_line_is_cut_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, 3, 0).await;
        let seg = segments(dir).unwrap()[0].clone();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"deadbeef {\"time\":").unwrap();
        drop(f);
        write(dir, 2, 3).await;
        assert_eq!(verify(dir).unwrap().records, 5);
    }
}

//! The writer thread: appends batches of records, syncs them, advances `HEAD`; on a failed
//! write it keeps the chain where it was and retries the same records.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chain::{AuditKey, GENESIS, Head, read_head, write_head};
use crate::read::{segment_name, segments};
use crate::{
    AuditError, AuditHealth, AuditRecord, BATCH, RETRY_INTERVAL, SEGMENT_BYTES, SYNC_INTERVAL, io,
};

pub(crate) enum Msg {
    Record(Box<AuditRecord>),
    /// Answered once everything queued before it is durable.
    Flush(tokio::sync::oneshot::Sender<()>),
}

pub(crate) struct AuditWriter {
    dir: PathBuf,
    key: AuditKey,
    file: File,
    segment: u64,
    /// Bytes of the current segment known good: a failed write is cut back to here.
    size: u64,
    prev: String,
    count: u64,
    unkeyed: u64,
    health: Arc<AuditHealth>,
}

impl AuditWriter {
    pub fn open(dir: &Path, key: AuditKey, health: Arc<AuditHealth>) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let files = segments(dir)?;
        let (prev, count, first) = recover(&files)?;
        let unkeyed = match read_head(dir)? {
            Some(h) if h.authentic(&key) => h.unkeyed,
            // Written by a release that did not key the chain: what is there stays unkeyed.
            Some(h) if h.mac.is_none() => count,
            Some(_) => {
                return Err(AuditError::Head(
                    "its MAC does not match: the log was rewritten or another master key is in use; move the audit directory aside to start a new log".into(),
                ));
            }
            // No HEAD yet: a crash before the first one, or a log of an older release.
            None => match first {
                Some((hash, json)) if hash == key.link(GENESIS, &json) => 0,
                Some(_) => count,
                None => 0,
            },
        };
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
        feiyun_common::durable::sync_dir(dir).map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            file,
            segment,
            size,
            prev,
            count,
            unkeyed,
            health,
        })
    }

    pub fn run(&mut self, mut rx: tokio::sync::mpsc::Receiver<Msg>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut flushes = Vec::new();
        let mut open = true;
        loop {
            if batch.is_empty() {
                // Wait for the first message, then take whatever else is queued.
                let Some(first) = rx.blocking_recv() else {
                    break;
                };
                take(first, &mut batch, &mut flushes);
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => take(m, &mut batch, &mut flushes),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                if let Err(e) = self.write_batch(&batch) {
                    // Nothing of the batch counts: the same records go again, in order.
                    self.health.failed();
                    tracing::error!(error = %e, pending = batch.len(), "audit log write failed; retrying");
                    if !open {
                        tracing::error!(
                            lost = batch.len(),
                            "audit writer stopping with unwritten records"
                        );
                        return;
                    }
                    std::thread::sleep(RETRY_INTERVAL);
                    continue;
                }
                self.health.recovered();
                batch.clear();
            }
            for ack in flushes.drain(..) {
                let _ = ack.send(());
            }
            if !open {
                break;
            }
            std::thread::sleep(SYNC_INTERVAL);
        }
        // Queue closed: everything before has been written and synced.
    }

    /// Appends `batch`, syncs it and advances `HEAD`. On failure the segment is cut back to
    /// its last good length and the chain's state is left as it was.
    pub(crate) fn write_batch(&mut self, batch: &[AuditRecord]) -> Result<(), AuditError> {
        let mut buf = Vec::with_capacity(batch.len() * 400);
        let mut prev = self.prev.clone();
        for r in batch {
            let json = serde_json::to_vec(r).map_err(|e| AuditError::Head(e.to_string()))?;
            let hash = self.key.link(&prev, &json);
            buf.extend_from_slice(hash.as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(&json);
            buf.push(b'\n');
            prev = hash;
        }
        let path = segment_name(&self.dir, self.segment);
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Best effort: a partial line must not stay to break the chain.
            let _ = self.file.set_len(self.size);
            return Err(io(&path)(e));
        }
        let count = self.count + batch.len() as u64;
        write_head(
            &self.dir,
            &Head::sealed(&self.key, count, prev.clone(), self.unkeyed),
        )?;
        self.size += buf.len() as u64;
        self.prev = prev;
        self.count = count;
        if self.size >= SEGMENT_BYTES {
            let next = segment_name(&self.dir, self.segment + 1);
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&next)
                .map_err(io(&next))?;
            feiyun_common::durable::sync_dir(&self.dir).map_err(io(&self.dir))?;
            self.segment += 1;
            self.size = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
impl AuditWriter {
    pub(crate) fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }
}

fn take(m: Msg, batch: &mut Vec<AuditRecord>, flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>) {
    match m {
        Msg::Record(r) => batch.push(*r),
        Msg::Flush(ack) => flushes.push(ack),
    }
}

/// The first record's link and JSON, if any.
type First = Option<(String, Vec<u8>)>;

/// Finds the chain's end (and its first record), truncating a partial last line a crash
/// left behind.
fn recover(files: &[PathBuf]) -> Result<(String, u64, First), AuditError> {
    let mut prev = GENESIS.to_owned();
    let mut count = 0;
    let mut first = None;
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
            if first.is_none() {
                first = Some((prev.clone(), body[space + 1..].to_vec()));
            }
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
    Ok((prev, count, first))
}

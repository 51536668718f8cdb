//! Reading the log from its files: [`verify`] walks the whole chain, [`tail`] returns the
//! newest records. Both stream the segments, holding one line at a time.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::chain::{AuditKey, GENESIS, read_head, unkeyed_link};
use crate::{AuditError, AuditRecord, io};

/// Most records [`tail`] returns at once.
const MAX_TAIL: usize = 100_000;

/// What `verify` found in a sound log.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub segments: usize,
    pub head: String,
    /// Leading records linked by SHA-256 only (older releases); accepted only on request.
    pub unkeyed: u64,
}

pub(crate) fn segments(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
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

pub(crate) fn segment_name(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:08}.log"))
}

/// Walks every segment and checks every link of the chain against `key`, and `HEAD`'s
/// MAC and count, so that no durable record is missing from the end. Names the first broken
/// record. `accept_unkeyed` lets records from before keyed chaining pass on their hashes.
pub fn verify(dir: &Path, key: &AuditKey, accept_unkeyed: bool) -> Result<Summary, AuditError> {
    let files = segments(dir)?;
    let head = read_head(dir)?;
    let unkeyed = match &head {
        Some(h) if h.authentic(key) => h.unkeyed,
        Some(h) if h.mac.is_none() => h.count,
        Some(_) => {
            return Err(AuditError::Head(
                "its MAC does not match (rewritten, or another master key)".into(),
            ));
        }
        None => 0,
    };
    if unkeyed > 0 && !accept_unkeyed {
        return Err(AuditError::Unkeyed(unkeyed));
    }
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
            let want = if n <= unkeyed {
                unkeyed_link(&prev, json)
            } else {
                key.link(&prev, json)
            };
            if hash != want.as_bytes() {
                return Err(broken(
                    "its MAC does not match its content and the record before it".into(),
                ));
            }
            if serde_json::from_slice::<AuditRecord>(json).is_err() {
                return Err(broken("not an audit record".into()));
            }
            prev = want;
        }
    }
    match head {
        Some(h) if h.count > n => {
            return Err(AuditError::Truncated {
                found: n,
                expected: h.count,
            });
        }
        // Records exist but nothing vouches for the end: HEAD was removed.
        None if n > 0 => return Err(AuditError::Head("missing".into())),
        _ => {}
    }
    Ok(Summary {
        records: n,
        segments: files.len(),
        head: prev,
        unkeyed,
    })
}

/// The last `n` records (oldest first), at most [`MAX_TAIL`].
pub fn tail(dir: &Path, n: usize) -> Result<Vec<AuditRecord>, AuditError> {
    let n = n.min(MAX_TAIL);
    let mut out = std::collections::VecDeque::with_capacity(n.min(1024));
    each_record(dir, 0, |r| {
        if out.len() == n {
            out.pop_front();
        }
        if n > 0 {
            out.push_back(r);
        }
    })?;
    Ok(out.into_iter().collect())
}

/// The records after the first `skip` (for following a growing log), at most [`MAX_TAIL`],
/// and the count of records read in all.
pub fn tail_after(dir: &Path, skip: u64) -> Result<(Vec<AuditRecord>, u64), AuditError> {
    let mut out = Vec::new();
    let total = each_record(dir, skip, |r| {
        if out.len() < MAX_TAIL {
            out.push(r);
        }
    })?;
    Ok((out, total))
}

/// Calls `f` with every well-formed record after the first `skip`; returns how many lines
/// there were.
fn each_record(dir: &Path, skip: u64, mut f: impl FnMut(AuditRecord)) -> Result<u64, AuditError> {
    let mut n = 0u64;
    for path in segments(dir)? {
        let file = File::open(&path).map_err(io(&path))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(io(&path))?;
            n += 1;
            if n <= skip {
                continue;
            }
            let Some(space) = line.iter().position(|b| *b == b' ') else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<AuditRecord>(&line[space + 1..]) {
                f(r);
            }
        }
    }
    Ok(n)
}

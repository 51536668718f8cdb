//! The durable journal of one migration: which objects are done (with the source fingerprint
//! and destination ETag they were done at) and which multipart uploads are in flight. A redb
//! file: transactional, fsynced on commit, ordered, and read from disk rather than held in
//! memory, so a journal of millions of objects costs a page cache, not a heap.
//!
//! Records of finished objects are committed in groups (every 256 or every 200 ms): one
//! fsync per object would cap a small-file migration at the disk's sync rate. An object
//! copied but not yet journaled when the migrator dies is found at the destination on the
//! next run, and recognised there without a second copy (see `copy::classify`).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::Error;

const DONE: TableDefinition<&str, &[u8]> = TableDefinition::new("done");
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
const INFO: TableDefinition<&str, &str> = TableDefinition::new("info");

/// A finished object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Done {
    /// The source's fingerprint when it was read (`Entry::fingerprint`).
    pub fp: String,
    /// The destination's ETag after the write.
    pub etag: String,
    /// The whole content's CRC64NVME, base64, as the destination also stores it.
    pub crc64: String,
    /// The version the copy made (a versioned destination).
    #[serde(default)]
    pub version_id: Option<String>,
}

/// The journal key of one source version's copy (`--all-versions`). NUL is in no key an S3
/// listing can carry (XML 1.0 cannot write it) and in no file name, so these never meet an
/// object's own record.
pub fn version_record(key: &str, version: &str) -> String {
    format!("\0v\0{key}\0{version}")
}

/// A multipart upload begun and not yet completed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Upload {
    pub fp: String,
    pub upload_id: String,
    pub part_size: u64,
}

#[derive(Clone)]
pub struct Journal {
    db: Arc<Database>,
    /// Where records also go: the region (see [`RegionJournal`]).
    mirror: Option<tokio::sync::mpsc::UnboundedSender<Op>>,
    /// Why the region stopped taking records, once it has: every later commit fails, so a
    /// run does not go on for hours with a journal the region no longer keeps.
    mirror_failed: Arc<std::sync::Mutex<Option<String>>>,
}

/// A record on its way to the region's copy of the journal.
pub enum Op {
    Put(char, String, Vec<u8>),
    Del(char, String),
    /// Everything sent before it has been stored in the region: answers how that went.
    Flush(tokio::sync::oneshot::Sender<Result<(), Error>>),
}

/// A migration's journal in the region (`/migrate/journal/ID`, signed as the `migrate`
/// service): the local file is its cache, filled from here when it is new, and every record
/// committed locally is sent here in batches.
#[derive(Clone)]
pub struct RegionJournal {
    client: crate::client::S3Client,
    id: String,
}

/// Records sent in one call.
const SEND_BATCH: usize = 1000;

impl RegionJournal {
    pub fn new(region: &crate::client::S3Client, id: &str) -> Self {
        Self {
            client: region.for_service("migrate"),
            id: id.to_owned(),
        }
    }

    fn key(&self) -> String {
        format!("journal/{}", self.id)
    }

    async fn page(
        &self,
        after: Option<&str>,
    ) -> Result<(Vec<(char, String, Vec<u8>)>, bool), Error> {
        use base64::Engine as _;
        let q: Vec<(&str, &str)> = after.map(|a| ("after", a)).into_iter().collect();
        let key = self.key();
        let (_, body) = crate::client::retry(|| {
            self.client.call(
                http::Method::GET,
                Some("migrate"),
                Some(&key),
                &q,
                Vec::new(),
                bytes::Bytes::new(),
            )
        })
        .await
        .map_err(|e| refused("reading", e))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Journal(format!("the region's journal answer: {e}")))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = Vec::new();
        for r in v["records"].as_array().into_iter().flatten() {
            let (Some(t), Some(k), Some(val)) = (r["t"].as_str(), r["k"].as_str(), r["v"].as_str())
            else {
                continue;
            };
            let t = if t == "u" { 'u' } else { 'd' };
            let val = b64
                .decode(val)
                .map_err(|_| Error::Journal("the region's journal sent a damaged record".into()))?;
            out.push((t, k.to_owned(), val));
        }
        Ok((out, v["truncated"].as_bool() == Some(true)))
    }

    /// Whether the region will keep records: an empty write, refused as a real one would be.
    async fn probe(&self) -> Result<(), Error> {
        self.send(&[]).await
    }

    async fn send(&self, ops: &[Op]) -> Result<(), Error> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let records: Vec<serde_json::Value> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Put(t, k, v) => {
                    Some(serde_json::json!({"t": t.to_string(), "k": k, "v": b64.encode(v)}))
                }
                Op::Del(t, k) => Some(serde_json::json!({"t": t.to_string(), "k": k, "v": null})),
                Op::Flush(_) => None,
            })
            .collect();
        let body = bytes::Bytes::from(serde_json::json!({ "records": records }).to_string());
        let key = self.key();
        crate::client::retry(|| {
            self.client.call(
                http::Method::POST,
                Some("migrate"),
                Some(&key),
                &[],
                vec![("content-type".into(), "application/json".into())],
                body.clone(),
            )
        })
        .await
        .map(|_| ())
        .map_err(|e| refused("keeping", e))
    }

    /// Carries records to the region until the last sender is gone, in batches of up to
    /// [`SEND_BATCH`] or what a quarter second gathered (one commit in the region each, not
    /// one per object); a flush answers once everything before it is stored. A failure is
    /// kept and given to every later flush (the run then fails: its journal is not in the
    /// region).
    async fn carry(
        self,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Op>,
        shared: Arc<std::sync::Mutex<Option<String>>>,
    ) {
        let mut failed: Option<String> = None;
        let mut batch: Vec<Op> = Vec::new();
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            if let Some(f) = &failed {
                *shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(f.clone());
            }
            let op = match due {
                Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                    Ok(op) => op,
                    Err(_) => {
                        self.deliver(&mut batch, &mut failed).await;
                        due = None;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            match op {
                None => {
                    self.deliver(&mut batch, &mut failed).await;
                    return;
                }
                Some(Op::Flush(reply)) => {
                    self.deliver(&mut batch, &mut failed).await;
                    due = None;
                    let _ = reply.send(match &failed {
                        None => Ok(()),
                        Some(m) => Err(Error::Journal(m.clone())),
                    });
                }
                Some(op) => {
                    batch.push(op);
                    due.get_or_insert_with(|| {
                        tokio::time::Instant::now() + std::time::Duration::from_millis(250)
                    });
                    if batch.len() >= SEND_BATCH {
                        self.deliver(&mut batch, &mut failed).await;
                        due = None;
                    }
                }
            }
        }
    }

    /// Sends the batch (unless an earlier one failed) and empties it.
    async fn deliver(&self, batch: &mut Vec<Op>, failed: &mut Option<String>) {
        if failed.is_none()
            && !batch.is_empty()
            && let Err(e) = self.send(batch).await
        {
            *failed = Some(e.to_string());
        }
        batch.clear();
    }
}

/// A failed journal call; a refusal names the permissions it takes and the way around it.
fn refused(doing: &str, e: crate::client::ClientError) -> Error {
    match e.status() {
        Some(403) => Error::Journal(format!(
            "the region refuses to keep this migration's journal ({e}): allow migrate:ReadJournal and migrate:WriteJournal, or give --state FILE"
        )),
        _ => Error::Journal(format!("{doing} the journal in the region: {e}")),
    }
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Journal(e.to_string())
}

impl Journal {
    /// Opens (or creates) the journal of the migration from `source` to `dest`; a journal
    /// kept for another migration is refused rather than mixed up with this one.
    pub fn open(path: &Path, source: &str, dest: &str) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Journal(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path)
            .map_err(|e| Error::Journal(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut info = txn.open_table(INFO).map_err(storage)?;
            txn.open_table(DONE).map_err(storage)?;
            txn.open_table(UPLOADS).map_err(storage)?;
            for (k, v) in [("source", source), ("dest", dest)] {
                let old = info.get(k).map_err(storage)?.map(|g| g.value().to_owned());
                match old {
                    Some(o) if o != v => {
                        return Err(Error::Journal(format!(
                            "{} is the journal of a migration with {k} {o}, not {v}: give another --state",
                            path.display()
                        )));
                    }
                    Some(_) => {}
                    None => {
                        info.insert(k, v).map_err(storage)?;
                    }
                }
            }
        }
        txn.commit().map_err(storage)?;
        Ok(Self {
            db: Arc::new(db),
            mirror: None,
            mirror_failed: Arc::default(),
        })
    }

    /// Opens the journal kept in the region through the local cache at `path` (filled from
    /// the region when it is new: another machine, or a lost disk). Records committed from
    /// here on are also sent to the region; [`Journal::flush`] waits until they are there.
    pub async fn open_in_region(
        path: &Path,
        source: &str,
        dest: &str,
        region: RegionJournal,
    ) -> Result<Self, Error> {
        let (p, s, d) = (path.to_owned(), source.to_owned(), dest.to_owned());
        let mut j = tokio::task::spawn_blocking(move || Journal::open(&p, &s, &d))
            .await
            .map_err(storage)??;
        // A cache is filled from the region once, completely: a first run stopped half-way
        // through (or a file an older version kept) is filled again.
        let fresh = !j.restored()?;
        region.probe().await?;
        // Read even when the cache is there: a region that refuses the journal says so now,
        // not after the copies.
        let mut after: Option<String> = None;
        loop {
            let (records, more) = region.page(after.as_deref()).await?;
            if !fresh {
                break;
            }
            if let Some((t, k, _)) = records.last() {
                use base64::Engine as _;
                after = Some(
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{t}{k}")),
                );
            }
            let moved = !records.is_empty();
            let db = j.db.clone();
            tokio::task::spawn_blocking(move || restore(&db, &records))
                .await
                .map_err(storage)??;
            if !more || !moved {
                break;
            }
        }
        if fresh {
            j.mark_restored()?;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(region.carry(rx, j.mirror_failed.clone()));
        j.mirror = Some(tx);
        Ok(j)
    }

    fn restored(&self) -> Result<bool, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(INFO).map_err(storage)?;
        Ok(t.get("region").map_err(storage)?.is_some())
    }

    fn mark_restored(&self) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(INFO)
            .map_err(storage)?
            .insert("region", "restored")
            .map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// Waits until every record committed so far is stored in the region (a journal kept
    /// only in a file has nothing to wait for).
    pub async fn flush(&self) -> Result<(), Error> {
        let Some(m) = &self.mirror else {
            return Ok(());
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        m.send(Op::Flush(tx))
            .map_err(|_| Error::Journal("the journal's sender to the region stopped".into()))?;
        rx.await
            .map_err(|_| Error::Journal("the journal's sender to the region stopped".into()))?
    }

    fn mirror(&self, op: Op) -> Result<(), Error> {
        if let Some(m) = &self.mirror {
            if let Some(e) = self
                .mirror_failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Err(Error::Journal(e));
            }
            let _ = m.send(op);
        }
        Ok(())
    }

    pub fn done(&self, key: &str) -> Result<Option<Done>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(DONE).map_err(storage)?;
        t.get(key)
            .map_err(storage)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    pub fn upload(&self, key: &str) -> Result<Option<Upload>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(UPLOADS).map_err(storage)?;
        t.get(key)
            .map_err(storage)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Records objects as done (and their uploads as over) in one durable commit.
    pub fn commit_done(&self, items: &[(String, Done)]) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut done = txn.open_table(DONE).map_err(storage)?;
            let mut uploads = txn.open_table(UPLOADS).map_err(storage)?;
            for (k, d) in items {
                done.insert(k.as_str(), encode(d)?.as_slice())
                    .map_err(storage)?;
                uploads.remove(k.as_str()).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        for (k, d) in items {
            self.mirror(Op::Put('d', k.clone(), encode(d)?))?;
            self.mirror(Op::Del('u', k.clone()))?;
        }
        Ok(())
    }

    /// Records an upload before its first part is sent, so a resumed run can find it.
    pub fn begin_upload(&self, key: &str, u: &Upload) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut uploads = txn.open_table(UPLOADS).map_err(storage)?;
            uploads
                .insert(key, encode(u)?.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        self.mirror(Op::Put('u', key.to_owned(), encode(u)?))?;
        Ok(())
    }

    pub fn forget_upload(&self, key: &str) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(UPLOADS)
            .map_err(storage)?
            .remove(key)
            .map_err(storage)?;
        txn.commit().map_err(storage)?;
        self.mirror(Op::Del('u', key.to_owned()))?;
        Ok(())
    }

    /// Forgets deleted objects.
    pub fn forget(&self, keys: &[String]) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut done = txn.open_table(DONE).map_err(storage)?;
            for k in keys {
                done.remove(k.as_str()).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        for k in keys {
            self.mirror(Op::Del('d', k.clone()))?;
        }
        Ok(())
    }

    /// How many objects are recorded as done.
    pub fn done_count(&self) -> Result<u64, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(DONE).map_err(storage)?;
        t.len().map_err(storage)
    }
}

/// Writes records read from the region into a new local cache, in one commit.
fn restore(db: &Database, records: &[(char, String, Vec<u8>)]) -> Result<(), Error> {
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut done = txn.open_table(DONE).map_err(storage)?;
        let mut uploads = txn.open_table(UPLOADS).map_err(storage)?;
        for (t, k, v) in records {
            match t {
                'u' => uploads.insert(k.as_str(), v.as_slice()).map_err(storage)?,
                _ => done.insert(k.as_str(), v.as_slice()).map_err(storage)?,
            };
        }
    }
    txn.commit().map_err(storage)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(storage)?;
    Ok(out)
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, Error> {
    ciborium::from_reader(b).map_err(|e| Error::Journal(format!("a damaged record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_a_journal_is_bound_to_its_migration() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j");
        let j = Journal::open(&p, "/src", "s3://b/").unwrap();
        let up = Upload {
            fp: "fs:1:2".into(),
            upload_id: "u".into(),
            part_size: 8,
        };
        j.begin_upload("big", &up).unwrap();
        let done = Done {
            fp: "fs:1:2".into(),
            etag: "e".into(),
            crc64: "c".into(),
            version_id: None,
        };
        j.commit_done(&[("small".into(), done.clone())]).unwrap();
        drop(j);
        let j = Journal::open(&p, "/src", "s3://b/").unwrap();
        assert_eq!(j.done("small").unwrap(), Some(done.clone()));
        assert_eq!(j.upload("big").unwrap(), Some(up));
        j.commit_done(&[("big".into(), done)]).unwrap();
        assert_eq!(j.upload("big").unwrap(), None);
        assert_eq!(j.done_count().unwrap(), 2);
        j.forget(&["small".into()]).unwrap();
        assert_eq!(j.done("small").unwrap(), None);
        drop(j);
        let e = Journal::open(&p, "/other", "s3://b/").err().unwrap();
        assert!(e.to_string().contains("another --state"), "{e}");
    }
}

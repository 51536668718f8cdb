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
        Ok(Self { db: Arc::new(db) })
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
        txn.commit().map_err(storage)
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
        txn.commit().map_err(storage)
    }

    pub fn forget_upload(&self, key: &str) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(UPLOADS)
            .map_err(storage)?
            .remove(key)
            .map_err(storage)?;
        txn.commit().map_err(storage)
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
        txn.commit().map_err(storage)
    }

    /// How many objects are recorded as done.
    pub fn done_count(&self) -> Result<u64, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(DONE).map_err(storage)?;
        t.len().map_err(storage)
    }
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

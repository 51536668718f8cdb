//! Migration journals kept in the region (`feiyun migrate` without `--state`): the records
//! of which objects a migration has finished and which uploads it has under way, so a run
//! from another machine, or after the migrator's disk is lost, continues where the last one
//! stopped. The migrator keeps a local cache; these rows are what outlives it.
//!
//! Rows in the `system` table: `migrate-journal/ACCOUNT/ID 0x00 TABLE KEY` → the record as
//! the migrator encoded it (opaque here). An account sees only its own journals.

use feiyun_blob::BlobStore;
use feiyun_meta::{MetaStore, Table, WriteBatch, prefix_end};

use crate::{ObjectService, OssError};

/// One record of a journal: `table` is `d` (done) or `u` (upload under way); no value
/// removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub table: char,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// Most records one call may change or read.
pub const JOURNAL_BATCH: usize = 2000;
/// Largest record value (the migrator's records are a few hundred bytes).
pub const JOURNAL_VALUE_MAX: usize = 2048;
/// Longest record key: an object key and a version id, within what every metadata engine
/// indexes (PostgreSQL's btree rows end near 2.7 KB).
pub const JOURNAL_KEY_MAX: usize = 2048;
/// A page read stops after about this many bytes of records.
pub const JOURNAL_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A journal id: what the migrator derives from its source and destination (hex).
pub fn journal_id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn journal_prefix(account: &str, id: &str) -> Vec<u8> {
    let mut k = format!("migrate-journal/{account}/{id}").into_bytes();
    k.push(0);
    k
}

fn record_row(account: &str, id: &str, table: char, key: &str) -> Vec<u8> {
    let mut k = journal_prefix(account, id);
    k.push(table as u8);
    k.extend_from_slice(key.as_bytes());
    k
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Applies records to a journal in one durable commit.
    pub async fn journal_apply(
        &self,
        account: &str,
        id: &str,
        records: &[JournalRecord],
    ) -> Result<(), OssError> {
        if records.len() > JOURNAL_BATCH {
            return Err(OssError::InvalidArgument(format!(
                "at most {JOURNAL_BATCH} records a call"
            )));
        }
        let mut batch = WriteBatch::new();
        for r in records {
            if !matches!(r.table, 'd' | 'u') {
                return Err(OssError::InvalidArgument(
                    "a record's table is d or u".into(),
                ));
            }
            if r.key.len() > JOURNAL_KEY_MAX
                || r.value
                    .as_ref()
                    .is_some_and(|v| v.len() > JOURNAL_VALUE_MAX)
            {
                return Err(OssError::InvalidArgument("a record is too large".into()));
            }
            let row = record_row(account, id, r.table, &r.key);
            match &r.value {
                Some(v) => batch.put(Table::System, row, v.clone()),
                None => batch.delete(Table::System, row),
            };
        }
        // An empty call is the migrator's probe that it may write here: nothing to commit.
        if records.is_empty() {
            return Ok(());
        }
        Ok(self.meta.commit(batch).await?)
    }

    /// Up to `limit` records after `after` (`(table, key)`), in order; and whether more follow.
    pub async fn journal_page(
        &self,
        account: &str,
        id: &str,
        after: Option<(char, String)>,
        limit: usize,
    ) -> Result<(Vec<JournalRecord>, bool), OssError> {
        let prefix = journal_prefix(account, id);
        let end = prefix_end(&prefix);
        let start = match &after {
            Some((t, k)) => {
                let mut s = record_row(account, id, *t, k);
                s.push(0);
                s
            }
            None => prefix.clone(),
        };
        let limit = limit.clamp(1, JOURNAL_BATCH);
        let rows = self
            .blocking(move |m, _| Ok(m.scan(Table::System, &start, end.as_deref(), limit + 1)?))
            .await?;
        let mut more = rows.len() > limit;
        let mut out = Vec::with_capacity(rows.len().min(limit));
        let mut bytes = 0;
        for (k, v) in rows.into_iter().take(limit) {
            if bytes >= JOURNAL_PAGE_BYTES {
                more = true;
                break;
            }
            let Some((&t, key)) = k
                .strip_prefix(prefix.as_slice())
                .and_then(|r| r.split_first())
            else {
                continue;
            };
            bytes += key.len() + v.len();
            out.push(JournalRecord {
                table: t as char,
                key: String::from_utf8_lossy(key).into_owned(),
                value: Some(v),
            });
        }
        Ok((out, more))
    }

    /// Removes a journal; answers how many records it held.
    pub async fn journal_drop(&self, account: &str, id: &str) -> Result<u64, OssError> {
        let prefix = journal_prefix(account, id);
        let end = prefix_end(&prefix);
        let mut n = 0;
        loop {
            let (s, e) = (prefix.clone(), end.clone());
            let rows = self
                .blocking(move |m, _| Ok(m.scan(Table::System, &s, e.as_deref(), 1000)?))
                .await?;
            if rows.is_empty() {
                return Ok(n);
            }
            let mut batch = WriteBatch::new();
            for (k, _) in rows {
                batch.delete(Table::System, k);
                n += 1;
            }
            self.meta.commit(batch).await?;
        }
    }
}

//! LIST of a live bucket: the region's page merged with the legacy store's, both in S3 key
//! order. The region wins on equal names, keys deleted here are left out, and the page ends
//! at the caller's limit, so its last name resumes both sides.

use std::sync::Arc;

use feiyun_blob::BlobStore;
use feiyun_meta::{MetaStore, Table};

use super::{LegacyEntry, LiveSetting, tomb_key};
use crate::list::{ListEntry, ListPage, ListParams};
use crate::records::ObjectRecord;
use crate::{ObjectHeaders, ObjectService, OssError};

/// Legacy pages read for one merged page when what they hold was all deleted here.
const MAX_LEGACY_PAGES: usize = 32;

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    pub(crate) async fn merge_legacy(
        self: &Arc<Self>,
        bucket: &str,
        setting: &LiveSetting,
        params: &ListParams,
        here: ListPage<ObjectRecord>,
    ) -> Result<ListPage<ObjectRecord>, OssError> {
        if params.max_keys == 0 {
            return Ok(here);
        }
        let legacy = self.legacy_for(bucket, setting)?;
        let delimiter = params.delimiter.as_deref().filter(|d| !d.is_empty());
        let after = params.after.as_deref();
        // Legacy entries left after dropping those deleted here (and any the store sent
        // out of range). When a page is all dropped and more follow, read the next one:
        // an empty page cannot say where to resume.
        let mut theirs: Vec<LegacyEntry> = Vec::new();
        let mut cursor = params.after.clone();
        let mut bound: Option<String> = None;
        for _ in 0..MAX_LEGACY_PAGES {
            // Full pages whatever the caller asked: the caller's page is cut to its size
            // below, and keys deleted here then rarely empty a whole legacy page.
            let page = legacy
                .list(
                    &params.prefix,
                    cursor.as_deref(),
                    delimiter,
                    crate::list::MAX_KEYS,
                )
                .await?;
            let last = page.entries.last().map(|e| e.name().to_owned());
            let kept: Vec<LegacyEntry> = page
                .entries
                .into_iter()
                .filter(|e| {
                    after.is_none_or(|a| e.name() > a)
                        && cursor.as_deref().is_none_or(|c| e.name() > c)
                        && e.name().starts_with(&params.prefix)
                })
                .collect();
            let gone = self.tombstones_among(bucket, &kept).await?;
            theirs.extend(
                kept.into_iter()
                    .zip(gone)
                    .filter(|(_, g)| !g)
                    .map(|(e, _)| e),
            );
            // What lies past a truncated page's last name is unknown: the merged page
            // must not go beyond it, or the next page would skip legacy keys.
            bound = if page.truncated { last.clone() } else { None };
            match (&bound, &last) {
                (Some(_), Some(l)) if theirs.is_empty() && cursor.as_deref() < Some(l.as_str()) => {
                    cursor = last;
                }
                _ => break,
            }
        }
        let mut theirs = theirs.into_iter().peekable();
        let mut ours = here.entries.into_iter().peekable();
        let mut entries = Vec::new();
        while entries.len() < params.max_keys {
            let next_name = match (ours.peek(), theirs.peek()) {
                (Some(o), Some(t)) => o.name().min(t.name()),
                (Some(o), None) => o.name(),
                (None, Some(t)) => t.name(),
                (None, None) => break,
            };
            if bound.as_deref().is_some_and(|b| next_name > b) {
                break;
            }
            let next = match (ours.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => ours.next(),
                (None, Some(_)) => theirs.next().map(as_entry),
                (Some(o), Some(t)) => match o.name().cmp(t.name()) {
                    std::cmp::Ordering::Less => ours.next(),
                    std::cmp::Ordering::Greater => theirs.next().map(as_entry),
                    std::cmp::Ordering::Equal => {
                        theirs.next();
                        ours.next()
                    }
                },
            };
            entries.extend(next);
        }
        let is_truncated = ours.peek().is_some()
            || theirs.peek().is_some()
            || here.is_truncated
            || bound.is_some();
        Ok(ListPage {
            entries,
            is_truncated,
        })
    }

    /// For each entry, whether it is an object deleted here during live mode.
    async fn tombstones_among(
        &self,
        bucket: &str,
        entries: &[LegacyEntry],
    ) -> Result<Vec<bool>, OssError> {
        let rows: Vec<Vec<u8>> = entries.iter().map(|e| tomb_key(bucket, e.name())).collect();
        let reads: Vec<(Table, &[u8])> = rows
            .iter()
            .map(|k| (Table::BucketConfigs, k.as_slice()))
            .collect();
        let found = self.meta.get_many_async(&reads).await?;
        Ok(entries
            .iter()
            .zip(found)
            .map(|(e, row)| matches!(e, LegacyEntry::Object { .. }) && row.is_some())
            .collect())
    }
}

/// A legacy listing entry as the region lists it (what ListObjects shows of a record).
fn as_entry(e: LegacyEntry) -> ListEntry<ObjectRecord> {
    match e {
        LegacyEntry::CommonPrefix(p) => ListEntry::CommonPrefix(p),
        LegacyEntry::Object {
            key,
            size,
            etag,
            last_modified_ms,
        } => ListEntry::Object(
            key,
            super::shown_record(ObjectHeaders::default(), size, etag, last_modified_ms),
        ),
    }
}

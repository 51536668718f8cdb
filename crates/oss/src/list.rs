//! Listing with prefix, delimiter and pagination (ListObjects v1 and v2 share it).
//!
//! The algorithm reads keys in order from a [`KeySource`] and folds keys that contain the
//! delimiter after the prefix into common prefixes; after emitting a common prefix it seeks
//! past every key that shares it, so a "directory" with a million keys costs one seek, not a
//! million reads. A marker that lies inside a common prefix (`a/x` for `a/`) skips that
//! prefix, which is what makes `NextMarker = "a/"` resume correctly.

use std::sync::Arc;

use feiyun_blob::BlobStore;
use feiyun_meta::{MetaRead, MetaStore, Table, prefix_end};

use crate::records::{self, KeyHead, MarkerRecord, ObjectRecord, VersionRow};
use crate::versions::VersionSelector;
use crate::{ObjectService, OssError, keys};

/// Largest page S3 serves.
pub const MAX_KEYS: usize = 1000;
/// Most keys read from the engine per round trip.
const SCAN_BATCH: usize = 1000;

/// How many rows the next scan reads. Right after a seek past a common prefix the next key
/// is often another common prefix, of which only the first row matters: reading a full
/// batch there made one delimiter page touch up to a million rows. So a scan after a seek
/// reads one row, and each scan that folds nothing reads eight times more, up to
/// [`SCAN_BATCH`]: rows read stay within a small multiple of the entries returned.
struct ScanSize(usize);

impl ScanSize {
    fn new() -> Self {
        Self(SCAN_BATCH)
    }
    fn get(&self) -> usize {
        self.0
    }
    fn after_seek(&mut self) {
        self.0 = 1;
    }
    fn grow(&mut self) {
        self.0 = (self.0 * 8).min(SCAN_BATCH);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// List entries strictly after this key or common prefix.
    pub after: Option<String>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListEntry<V> {
    Object(String, V),
    CommonPrefix(String),
}

impl<V> ListEntry<V> {
    pub fn name(&self) -> &str {
        match self {
            ListEntry::Object(k, _) | ListEntry::CommonPrefix(k) => k,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListPage<V> {
    pub entries: Vec<ListEntry<V>>,
    pub is_truncated: bool,
}

impl<V> ListPage<V> {
    /// The marker that resumes after this page (the last entry's name).
    pub fn next_marker(&self) -> Option<&str> {
        if self.is_truncated {
            self.entries.last().map(|e| e.name())
        } else {
            None
        }
    }
}

/// Ordered keys of one bucket.
pub trait KeySource<V> {
    /// Up to `limit` keys `>= start`, in order, below `end` if given.
    fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(String, V)>, OssError>;
}

/// One page of a listing.
pub fn list_page<V>(
    source: &mut impl KeySource<V>,
    params: &ListParams,
) -> Result<ListPage<V>, OssError> {
    let mut entries = Vec::new();
    if params.max_keys == 0 {
        return Ok(ListPage {
            entries,
            is_truncated: false,
        });
    }
    let end = prefix_end(params.prefix.as_bytes());
    // The first key to look at; `after` itself is excluded below.
    let mut cursor = match &params.after {
        Some(a) if a.as_str() >= params.prefix.as_str() => a.as_bytes().to_vec(),
        _ => params.prefix.as_bytes().to_vec(),
    };
    let delimiter = params.delimiter.as_deref().filter(|d| !d.is_empty());
    let mut size = ScanSize::new();
    loop {
        let want = size.get();
        let batch = source.scan(&cursor, end.as_deref(), want)?;
        let exhausted = batch.len() < want;
        let mut next_cursor = None;
        let mut last_seen = None;
        for (key, value) in batch {
            last_seen = Some(key.clone());
            if params.after.as_deref().is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            if !key.starts_with(&params.prefix) {
                continue;
            }
            let rolled = delimiter.and_then(|d| {
                key[params.prefix.len()..]
                    .find(d)
                    .map(|i| key[..params.prefix.len() + i + d.len()].to_owned())
            });
            let behind_marker = rolled
                .as_deref()
                .is_some_and(|cp| params.after.as_deref().is_some_and(|a| a.starts_with(cp)));
            if !behind_marker && entries.len() == params.max_keys {
                return Ok(ListPage {
                    entries,
                    is_truncated: true,
                });
            }
            match rolled {
                Some(cp) => {
                    let skip_to = prefix_end(cp.as_bytes());
                    if !behind_marker {
                        entries.push(ListEntry::CommonPrefix(cp));
                    }
                    match skip_to {
                        Some(s) => {
                            next_cursor = Some(s);
                            break;
                        }
                        None => {
                            return Ok(ListPage {
                                entries,
                                is_truncated: false,
                            });
                        }
                    }
                }
                None => entries.push(ListEntry::Object(key, value)),
            }
        }
        match (next_cursor, last_seen) {
            (Some(c), _) => {
                cursor = c;
                size.after_seek();
            }
            (None, None) => {
                return Ok(ListPage {
                    entries,
                    is_truncated: false,
                });
            }
            (None, Some(_)) if exhausted => {
                return Ok(ListPage {
                    entries,
                    is_truncated: false,
                });
            }
            (None, Some(last)) => {
                // Continue right after the last key of this batch.
                cursor = last.into_bytes();
                cursor.push(0);
                size.grow();
            }
        }
    }
}

/// Keys of one bucket in the metadata engine.
struct MetaKeys<'a, M> {
    meta: &'a M,
    bucket: String,
}

impl<M: MetaStore> KeySource<ObjectRecord> for MetaKeys<'_, M> {
    fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, OssError> {
        let mut from = keys::bucket_objects(&self.bucket);
        from.extend_from_slice(start);
        let to = match end {
            Some(e) => {
                let mut to = keys::bucket_objects(&self.bucket);
                to.extend_from_slice(e);
                Some(to)
            }
            None => prefix_end(&keys::bucket_objects(&self.bucket)),
        };
        let prefix_len = self.bucket.len() + 1;
        self.meta
            .scan(Table::Objects, &from, to.as_deref(), limit)?
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8(k[prefix_len..].to_vec())
                    .map_err(|_| OssError::Corrupt("stored key is not UTF-8".into()))?;
                Ok((key, records::decode(&v)?))
            })
            .collect()
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    pub async fn list_objects(
        self: &Arc<Self>,
        bucket: &str,
        params: ListParams,
    ) -> Result<ListPage<ObjectRecord>, OssError> {
        let live = self.bucket(bucket).await?.live;
        let (b, p) = (bucket.to_owned(), params.clone());
        let here = self
            .blocking(move |m, _| {
                let mut src = MetaKeys { meta: m, bucket: b };
                list_page(&mut src, &p)
            })
            .await?;
        match live {
            Some(setting) => self.merge_legacy(bucket, &setting, &params, here).await,
            None => Ok(here),
        }
    }
}

/// ListObjectVersions parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionListParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: Option<String>,
    pub version_marker: Option<VersionSelector>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VersionEntry {
    Version {
        key: String,
        record: Box<ObjectRecord>,
        latest: bool,
    },
    Marker {
        key: String,
        marker: MarkerRecord,
        latest: bool,
    },
    CommonPrefix(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionPage {
    pub entries: Vec<VersionEntry>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_marker: Option<String>,
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// One page of ListObjectVersions: versions and delete markers by key, newest first.
    pub async fn list_object_versions(
        &self,
        bucket: &str,
        params: VersionListParams,
    ) -> Result<VersionPage, OssError> {
        if params.version_marker.is_some() && params.key_marker.is_none() {
            return Err(OssError::InvalidArgument(
                "A version-id marker cannot be specified without a key marker.".into(),
            ));
        }
        self.require_bucket(bucket).await?;
        let params = Arc::new(params);
        let mut retry = crate::retry::Retry::new();
        loop {
            let (b, p) = (bucket.to_owned(), params.clone());
            match self
                .blocking(move |m, _| version_page(&m.snapshot()?, &b, &p))
                .await
            {
                // A write moved a version between two reads of this page: read it again.
                Err(OssError::Busy) if retry.again().await => continue,
                other => return other,
            }
        }
    }
}

fn version_page<R: MetaRead>(
    m: &R,
    bucket: &str,
    params: &VersionListParams,
) -> Result<VersionPage, OssError> {
    let mut page = VersionPage::default();
    if params.max_keys == 0 {
        return Ok(page);
    }
    let base = keys::bucket_objects(bucket);
    let with_base = |rest: &[u8]| {
        let mut k = base.clone();
        k.extend_from_slice(rest);
        k
    };
    let end = prefix_end(&with_base(params.prefix.as_bytes()));
    let mut cursor = with_base(params.prefix.as_bytes());
    let mut prev_key: Option<String> = None;
    if let Some(km) = &params.key_marker {
        let after_marker = match params.version_marker {
            Some(sel) => {
                let v = match sel {
                    VersionSelector::Id(v) => Some(v),
                    VersionSelector::Null => m
                        .get(Table::Heads, &keys::object(bucket, km))?
                        .map(|h| records::decode::<KeyHead>(&h))
                        .transpose()?
                        .and_then(|h| h.null),
                };
                match v {
                    Some(v) => {
                        prev_key = Some(km.clone());
                        let mut k = keys::version(bucket, km, v);
                        k.push(0);
                        Some(k)
                    }
                    None => prefix_end(&keys::key_versions(bucket, km)),
                }
            }
            None => prefix_end(&keys::key_versions(bucket, km)),
        };
        if let Some(a) = after_marker {
            cursor = cursor.max(a);
        }
    }
    let delimiter = params.delimiter.as_deref().filter(|d| !d.is_empty());
    let full = |page: &mut VersionPage| {
        page.is_truncated = true;
        match page.entries.last() {
            Some(VersionEntry::Version { key, record, .. }) => {
                page.next_key_marker = Some(key.clone());
                page.next_version_marker = Some(record.version_label());
            }
            Some(VersionEntry::Marker { key, marker, .. }) => {
                page.next_key_marker = Some(key.clone());
                page.next_version_marker = Some(if marker.null_version {
                    "null".into()
                } else {
                    marker.version.render()
                });
            }
            Some(VersionEntry::CommonPrefix(cp)) => page.next_key_marker = Some(cp.clone()),
            None => {}
        }
    };
    let mut size = ScanSize::new();
    'scan: loop {
        let want = size.get();
        let rows = m.scan(Table::Versions, &cursor, end.as_deref(), want)?;
        let exhausted = rows.len() < want;
        let Some(last) = rows.last().map(|(k, _)| k.clone()) else {
            return Ok(page);
        };
        for (rk, rv) in rows {
            let (key, vid) = keys::parse_version(bucket, &rk)?;
            if let Some(d) = delimiter
                && let Some(i) = key[params.prefix.len()..].find(d)
            {
                let cp = key[..params.prefix.len() + i + d.len()].to_owned();
                let behind_marker = params
                    .key_marker
                    .as_deref()
                    .is_some_and(|km| km.starts_with(cp.as_str()));
                if !behind_marker {
                    if page.entries.len() == params.max_keys {
                        full(&mut page);
                        return Ok(page);
                    }
                    page.entries.push(VersionEntry::CommonPrefix(cp.clone()));
                }
                match prefix_end(cp.as_bytes()) {
                    Some(next) => {
                        cursor = with_base(&next);
                        size.after_seek();
                        continue 'scan;
                    }
                    None => return Ok(page),
                }
            }
            if page.entries.len() == params.max_keys {
                full(&mut page);
                return Ok(page);
            }
            let latest = prev_key.as_deref() != Some(key.as_str());
            prev_key = Some(key.clone());
            let entry = match records::decode::<VersionRow>(&rv)? {
                VersionRow::Current => {
                    let Some(cur) = m.get(Table::Objects, &keys::object(bucket, &key))? else {
                        return Err(OssError::Busy);
                    };
                    let record: ObjectRecord = records::decode(&cur)?;
                    if record.version != vid {
                        return Err(OssError::Busy);
                    }
                    VersionEntry::Version {
                        key,
                        record: Box::new(record),
                        latest,
                    }
                }
                VersionRow::Object(record) => VersionEntry::Version {
                    key,
                    record,
                    latest,
                },
                VersionRow::Marker(marker) => VersionEntry::Marker {
                    key,
                    marker,
                    latest,
                },
            };
            page.entries.push(entry);
        }
        if exhausted {
            return Ok(page);
        }
        cursor = last;
        cursor.push(0);
        size.grow();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    struct Model(BTreeMap<String, ()>);

    impl KeySource<()> for Model {
        fn scan(
            &mut self,
            start: &[u8],
            end: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<(String, ())>, OssError> {
            Ok(self
                .0
                .iter()
                .filter(|(k, _)| k.as_bytes() >= start)
                .take_while(|(k, _)| end.is_none_or(|e| k.as_bytes() < e))
                .take(limit)
                .map(|(k, _)| (k.clone(), ()))
                .collect())
        }
    }

    /// The whole listing, computed the obvious way.
    fn expected(keys: &BTreeSet<String>, prefix: &str, delim: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for k in keys.iter().filter(|k| k.starts_with(prefix)) {
            let name = match delim.and_then(|d| k[prefix.len()..].find(d).map(|i| (i, d))) {
                Some((i, d)) => k[..prefix.len() + i + d.len()].to_owned(),
                None => k.clone(),
            };
            if out.last() != Some(&name) {
                out.push(name);
            }
        }
        out
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab/c]{0,6}").unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn paging_concatenates_to_the_model(
            keys in proptest::collection::btree_set(key_strategy(), 0..60),
            prefix in proptest::string::string_regex("[ab/]{0,2}").unwrap(),
            delim in proptest::option::of(prop_oneof![Just("/".to_owned()), Just("b".to_owned()), Just("ab".to_owned())]),
            max_keys in 1usize..7,
        ) {
            let keys: BTreeSet<String> = keys.into_iter().filter(|k| !k.is_empty()).collect();
            let mut model = Model(keys.iter().map(|k| (k.clone(), ())).collect());
            let want = expected(&keys, &prefix, delim.as_deref());
            let mut got = Vec::new();
            let mut after = None;
            for _ in 0..200 {
                let page = list_page(&mut model, &ListParams {
                    prefix: prefix.clone(),
                    delimiter: delim.clone(),
                    after: after.clone(),
                    max_keys,
                }).unwrap();
                prop_assert!(page.entries.len() <= max_keys);
                got.extend(page.entries.iter().map(|e| e.name().to_owned()));
                match page.next_marker() {
                    Some(m) => after = Some(m.to_owned()),
                    None => break,
                }
            }
            prop_assert_eq!(got, want);
        }
    }

    /// Counts the rows a listing reads (ASCII keys: seeks by range, not by filtering).
    struct Counting(Model, usize);

    impl KeySource<()> for Counting {
        fn scan(
            &mut self,
            start: &[u8],
            end: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<(String, ())>, OssError> {
            let from = String::from_utf8(start.to_vec()).unwrap();
            let rows: Vec<(String, ())> = self
                .0
                .0
                .range(from..)
                .take_while(|(k, _)| end.is_none_or(|e| k.as_bytes() < e))
                .take(limit)
                .map(|(k, _)| (k.clone(), ()))
                .collect();
            self.1 += rows.len();
            Ok(rows)
        }
    }

    #[test]
    fn a_delimiter_page_reads_rows_near_its_entries() {
        // 1,000 "directories" of 1,000 keys each: one page of common prefixes used to read
        // a full scan batch per prefix (a million rows).
        let keys: BTreeMap<String, ()> = (0..1000)
            .flat_map(|d| (0..1000).map(move |f| (format!("d{d:04}/f{f:04}"), ())))
            .collect();
        let mut src = Counting(Model(keys), 0);
        let page = list_page(
            &mut src,
            &ListParams {
                delimiter: Some("/".into()),
                max_keys: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(page.entries.len(), 1000);
        assert!(src.1 <= 3 * 1000, "read {} rows for 1000 entries", src.1);
    }

    #[test]
    fn small_scan_batches_still_progress() {
        // More keys than one scan batch under one prefix, plus a delimiter roll-up.
        let mut keys: BTreeMap<String, ()> = (0..2500).map(|i| (format!("k{i:05}"), ())).collect();
        keys.insert("dir/a".into(), ());
        keys.insert("dir/b".into(), ());
        let mut m = Model(keys);
        let page = list_page(
            &mut m,
            &ListParams {
                prefix: String::new(),
                delimiter: Some("/".into()),
                after: None,
                max_keys: 1000,
            },
        )
        .unwrap();
        assert_eq!(page.entries.len(), 1000);
        assert_eq!(page.entries[0], ListEntry::CommonPrefix("dir/".into()));
        assert!(page.is_truncated);
    }
}

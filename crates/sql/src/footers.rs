//! The tails of objects statements read — where Parquet keeps its footer, with the schema
//! and the statistics pruning uses — kept across statements per object version, so a
//! repeated query over the same files reads no footer twice. An entry is found only by the
//! version it was read from, and meeting a newer version of the key drops the key's
//! entries. It holds bytes the statement's own read path returned after authorizing the
//! read: a hit still passes the caller's `s3:GetObject` and `kms:Decrypt` checks first.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;

use crate::region::ObjectInfo;

/// Tails up to this long are kept (DataFusion reads a footer with one tail read of at most
/// its metadata size hint, or two: the 8-byte trailer, then the footer).
const MAX_TAIL: u64 = 1024 * 1024;

type Key = (String, String);

struct Entry {
    version: String,
    tails: Vec<(Range<u64>, Bytes)>,
}

pub struct FooterCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Insertion order, for eviction.
    order: VecDeque<Key>,
    bytes: usize,
}

impl FooterCache {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::default(),
        }
    }

    pub(crate) fn wants(&self, range: &Range<u64>) -> bool {
        self.budget > 0 && range.end - range.start <= MAX_TAIL
    }

    pub(crate) fn get(&self, bucket: &str, o: &ObjectInfo, range: &Range<u64>) -> Option<Bytes> {
        let mut g = crate::scope::lock(&self.inner);
        let key = (bucket.to_owned(), o.key.clone());
        let e = g.entries.get(&key)?;
        if e.version != o.id {
            Self::drop_key(&mut g, &key);
            return None;
        }
        e.tails.iter().find_map(|(r, b)| {
            (r.start <= range.start && range.end <= r.end)
                .then(|| b.slice((range.start - r.start) as usize..(range.end - r.start) as usize))
        })
    }

    pub(crate) fn put(&self, bucket: &str, o: &ObjectInfo, range: &Range<u64>, bytes: Bytes) {
        // Only a whole tail: a short read (the object changed under it) is never kept.
        if !self.wants(range) || bytes.len() as u64 != range.end - range.start {
            return;
        }
        let mut g = crate::scope::lock(&self.inner);
        let key = (bucket.to_owned(), o.key.clone());
        if g.entries.get(&key).is_some_and(|e| e.version != o.id) {
            Self::drop_key(&mut g, &key);
        }
        let len = bytes.len();
        match g.entries.get_mut(&key) {
            Some(e) => e.tails.push((range.clone(), bytes)),
            None => {
                g.entries.insert(
                    key.clone(),
                    Entry {
                        version: o.id.clone(),
                        tails: vec![(range.clone(), bytes)],
                    },
                );
                g.order.push_back(key);
            }
        }
        g.bytes += len;
        while g.bytes > self.budget {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some(e) = g.entries.remove(&old) {
                g.bytes -= e.tails.iter().map(|(_, b)| b.len()).sum::<usize>();
            }
        }
    }

    fn drop_key(g: &mut Inner, key: &Key) {
        if let Some(e) = g.entries.remove(key) {
            g.bytes -= e.tails.iter().map(|(_, b)| b.len()).sum::<usize>();
            g.order.retain(|k| k != key);
        }
    }

    /// Entries and bytes held (for metrics and tests).
    pub fn usage(&self) -> (usize, usize) {
        let g = crate::scope::lock(&self.inner);
        (g.entries.len(), g.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, version: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 100,
            etag: "e".into(),
            version: "null".into(),
            id: version.into(),
            modified_us: 1,
            kms_key: None,
        }
    }

    #[test]
    fn a_new_version_drops_the_old_tails() {
        let c = FooterCache::new(1 << 20);
        let v1 = obj("k", "1");
        c.put("b", &v1, &(90..100), Bytes::from_static(b"0123456789"));
        assert_eq!(
            c.get("b", &v1, &(92..100)).as_deref(),
            Some(&b"23456789"[..])
        );
        assert!(c.get("other", &v1, &(92..100)).is_none());
        let v2 = obj("k", "2");
        assert!(c.get("b", &v2, &(92..100)).is_none());
        assert_eq!(c.usage(), (0, 0));
    }

    #[test]
    fn a_short_read_is_not_kept() {
        let c = FooterCache::new(1 << 20);
        c.put("b", &obj("k", "1"), &(90..100), Bytes::from_static(b"0123"));
        assert!(c.get("b", &obj("k", "1"), &(96..100)).is_none());
        assert_eq!(c.usage(), (0, 0));
    }

    #[test]
    fn the_budget_evicts_the_oldest() {
        let c = FooterCache::new(25);
        for i in 0..5 {
            c.put(
                "b",
                &obj(&format!("k{i}"), "1"),
                &(90..100),
                Bytes::from(vec![0u8; 10]),
            );
        }
        assert_eq!(c.usage(), (2, 20));
        assert!(c.get("b", &obj("k4", "1"), &(90..100)).is_some());
        assert!(c.get("b", &obj("k0", "1"), &(90..100)).is_none());
    }
}

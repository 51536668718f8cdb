//! `--all-versions`: every version of a versioned S3 source, delete markers included,
//! replayed oldest first into a versioned destination, so the destination's history of each
//! key reads as the source's.
//!
//! The destination's own history is the state: before a key is replayed its versions at
//! both ends are listed and paired off, oldest first. A pair matches when the journal says
//! that destination version is the copy of that source version, or (a copy made by a run
//! that died before its record was committed) both are delete markers, or both are objects
//! of one size whose ETags are the same MD5. The source versions past the matched ones are
//! copied, in order; a destination history that departs from the source's (a version
//! written there since, a version deleted at the source) is reported and left alone, never
//! rewritten. So a resumed or later run appends exactly what is missing.
//!
//! A key's history is held in memory while it is replayed: bounded by the versions of one
//! key, not by the bucket.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::client::S3Client;
use crate::copy::Ctx;
use crate::journal::{Done, version_record};
use crate::limit::Limits;
use crate::source::{Entry, list_page, parse_time};
use crate::{Error, xml};

/// One version of a key.
#[derive(Debug, Clone)]
pub struct Version {
    /// `version_id` is always set.
    pub entry: Entry,
    pub marker: bool,
    /// The listing's `IsLatest`.
    pub latest: bool,
}

/// Pages through every version under `prefix` (ListObjectVersions, URL-encoded keys),
/// calling `each` with one key's whole history (relative key, oldest first) until it answers
/// false.
pub async fn list_histories<F, Fut>(
    client: &S3Client,
    bucket: &str,
    prefix: &str,
    limits: &Limits,
    mut each: F,
) -> Result<(), Error>
where
    F: FnMut(String, Vec<Version>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut key_marker: Option<String> = None;
    let mut version_marker: Option<String> = None;
    let mut carry: Option<(String, Vec<Version>)> = None;
    // What was handed on last: keys must keep rising, or a key would be replayed twice
    // (by two workers at once); the version markers of one key must never repeat.
    let mut last_key: Option<String> = None;
    let mut markers_seen = std::collections::HashSet::new();
    let broken = |why: &str| Error::List(format!("versions of s3://{bucket}/{prefix}: {why}"));
    loop {
        let mut q = vec![
            ("versions", ""),
            ("encoding-type", "url"),
            ("prefix", prefix),
        ];
        if let Some(k) = &key_marker {
            q.push(("key-marker", k));
        }
        if let Some(v) = &version_marker {
            q.push(("version-id-marker", v));
        }
        let text = list_page(client, bucket, &q, limits)
            .await
            .map_err(|e| e.context(&format!("versions of s3://{bucket}/{prefix}")))?;
        let encoded = xml::field(&text, "EncodingType").as_deref() == Some("url");
        let decode = |raw: String| -> Result<String, Error> {
            match encoded {
                true => xml::url_decode(&raw).ok_or_else(|| {
                    Error::List(format!(
                        "s3://{bucket}: a listed key does not decode: {raw}"
                    ))
                }),
                false => Ok(raw),
            }
        };
        // Some stores (ours among them, through s3s) write every <Version> before every
        // <DeleteMarker>, so a key's entries need not be adjacent: gather the page by key.
        let mut page: BTreeMap<String, Vec<Version>> = BTreeMap::new();
        if let Some((k, v)) = carry.take() {
            page.insert(k, v);
        }
        for (tag, inner) in elements(&text) {
            let key = decode(xml::field(inner, "Key").unwrap_or_default())?;
            if key.is_empty() || key.len() > crate::source::MAX_KEY_BYTES {
                return Err(broken(&format!("a listed key of {} bytes", key.len())));
            }
            let Some(rel) = key.strip_prefix(prefix) else {
                continue;
            };
            if last_key
                .as_deref()
                .is_some_and(|l| rel.as_bytes() <= l.as_bytes())
            {
                return Err(broken("the listing went back to a key it had finished"));
            }
            // A version's place in its history comes from its time: one without a readable
            // time cannot be placed.
            let mtime = xml::field(inner, "LastModified")
                .and_then(|t| parse_time(&t))
                .ok_or_else(|| broken(&format!("{key}: a version without a readable time")))?;
            let v = Version {
                entry: Entry {
                    key: rel.to_owned(),
                    size: xml::field(inner, "Size")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    etag: xml::field(inner, "ETag").map(|e| e.trim_matches('"').to_owned()),
                    mtime_ns: mtime,
                    version_id: Some(
                        xml::field(inner, "VersionId").unwrap_or_else(|| "null".into()),
                    ),
                },
                marker: tag == "DeleteMarker",
                latest: xml::field(inner, "IsLatest").as_deref() == Some("true"),
            };
            let versions = page.entry(rel.to_owned()).or_default();
            if versions.len() >= MAX_VERSIONS {
                return Err(broken(&format!(
                    "{key} has more than {MAX_VERSIONS} versions; move it on its own"
                )));
            }
            versions.push(v);
        }
        let truncated = xml::field(&text, "IsTruncated").as_deref() == Some("true");
        // The page's last key may go on in the next page: held back until it ends.
        if truncated {
            carry = page.pop_last();
        }
        for (k, versions) in page {
            last_key = Some(k.clone());
            if !each(k, oldest_first(versions)).await {
                return Ok(());
            }
        }
        if !truncated {
            return Ok(());
        }
        let next_key = xml::field(&text, "NextKeyMarker").map(decode).transpose()?;
        let next_version = xml::field(&text, "NextVersionIdMarker");
        let Some(nk) = &next_key else {
            return Err(broken("a truncated page with no way on"));
        };
        if key_marker
            .as_deref()
            .is_some_and(|k| nk.as_bytes() < k.as_bytes())
        {
            return Err(broken("the next page starts before this one"));
        }
        if next_key != key_marker {
            markers_seen.clear();
        }
        if !markers_seen.insert(next_version.clone()) {
            return Err(broken("a truncated page with no way on"));
        }
        key_marker = next_key;
        version_marker = next_version;
    }
}

/// The most versions of one key a run replays: the whole history is held while it is.
const MAX_VERSIONS: usize = 100_000;

/// S3 lists a key's versions newest first. Some implementations list the delete markers
/// after the versions rather than among them, so the order is taken from the times; among
/// equal times (a store that keeps whole seconds) the latest entry is the newest, and the
/// listing's order decides the rest.
fn oldest_first(mut v: Vec<Version>) -> Vec<Version> {
    v.sort_by_key(|x| (std::cmp::Reverse(x.entry.mtime_ns), !x.latest));
    v.reverse();
    v
}

/// The `<Version>` and `<DeleteMarker>` elements of a listing, in document order. Each tag's
/// next position is searched for once and kept until it is consumed, so a page costs one
/// pass, however its elements are mixed.
fn elements(doc: &str) -> Vec<(&'static str, &str)> {
    const TAGS: [&str; 2] = ["Version", "DeleteMarker"];
    let find = |from: usize, t: &str| doc[from..].find(&format!("<{t}>")).map(|i| from + i);
    let mut next = [find(0, TAGS[0]), find(0, TAGS[1])];
    let mut out = Vec::new();
    loop {
        let which = match next {
            [Some(a), Some(b)] => usize::from(b < a),
            [Some(_), None] => 0,
            [None, Some(_)] => 1,
            [None, None] => return out,
        };
        let (Some(at), tag) = (next[which], TAGS[which]) else {
            return out;
        };
        let start = at + tag.len() + 2;
        let close = format!("</{tag}>");
        let Some(len) = doc[start..].find(&close) else {
            return out;
        };
        out.push((tag, &doc[start..start + len]));
        let after = start + len + close.len();
        next[which] = find(after, tag);
        // The other tag's next element may lie inside the one just taken.
        if next[1 - which].is_some_and(|p| p < after) {
            next[1 - which] = find(after, TAGS[1 - which]);
        }
    }
}

impl Ctx {
    /// Brings the destination's history of `key` up to the source's (see the module doc).
    pub(crate) async fn replay(
        &self,
        key: &str,
        src: Vec<Version>,
        dst: Vec<Version>,
    ) -> Result<(), Error> {
        for (i, s) in src.iter().enumerate() {
            let vid = s.entry.version_id.clone().unwrap_or_default();
            let record = version_record(key, &vid);
            if let Some(d) = dst.get(i) {
                let journal = self.journal.clone();
                let r = record.clone();
                let done = tokio::task::spawn_blocking(move || journal.done(&r))
                    .await
                    .map_err(|e| Error::Journal(e.to_string()))??;
                if !same_version(s, d, done.as_ref()) {
                    return Err(Error::Diverged(format!(
                        "{key}: version {} of the region's history is not version {vid} of the source's; nothing of this key was copied",
                        i + 1
                    )));
                }
                if done.is_none() && !self.opts.dry_run {
                    let d = Done {
                        fp: s.entry.fingerprint(),
                        etag: d.entry.etag.clone().unwrap_or_default(),
                        crc64: String::new(),
                        version_id: d.entry.version_id.clone(),
                    };
                    let _ = self.done_tx.send((record, d)).await;
                }
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if self.opts.dry_run {
                let line = match s.marker {
                    true => format!("delete-marker {key} (version {vid})"),
                    false => format!("copy {key} (version {vid}, {} bytes)", s.entry.size),
                };
                self.plan.lock().await.push(line);
                continue;
            }
            // Replayed versions of one key a few milliseconds apart, so that the region's
            // times (milliseconds) order them as the source did.
            if i > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
            let done = match s.marker {
                true => Done {
                    fp: "marker".into(),
                    etag: String::new(),
                    crc64: String::new(),
                    version_id: self.dest.delete_marker(key).await?,
                },
                false => self.copy_object(s.entry.clone()).await?.1,
            };
            if s.marker {
                self.stats.copied.fetch_add(1, Ordering::Relaxed);
            }
            let _ = self.done_tx.send((record, done)).await;
        }
        if dst.len() > src.len() {
            return Err(Error::Diverged(format!(
                "{key}: the region holds {} version(s) the source does not; left as they are",
                dst.len() - src.len()
            )));
        }
        Ok(())
    }
}

/// Whether destination version `d` is the copy of source version `s`.
fn same_version(s: &Version, d: &Version, journaled: Option<&Done>) -> bool {
    match (s.marker, d.marker) {
        (true, true) => true,
        // The journal's record must be of this very source version: a `null` version is
        // rewritten in place by an unversioned or suspended source.
        (false, false) => match journaled {
            Some(j) => {
                j.version_id.is_some()
                    && j.version_id == d.entry.version_id
                    && j.fp == s.entry.fingerprint()
            }
            None => {
                s.entry.size == d.entry.size
                    && s.entry.md5_etag().is_some()
                    && s.entry.etag == d.entry.etag
            }
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, id: &str, t: i128, marker: bool) -> Version {
        Version {
            entry: Entry {
                key: key.into(),
                size: 1,
                etag: (!marker).then(|| "0123456789abcdef0123456789abcdef".into()),
                mtime_ns: t,
                version_id: Some(id.into()),
            },
            marker,
            latest: false,
        }
    }

    #[test]
    fn listing_elements_keep_document_order_and_histories_run_oldest_first() {
        let doc = "<ListVersionsResult><Version><Key>a</Key><VersionId>3</VersionId></Version>\
                   <DeleteMarker><Key>a</Key><VersionId>2</VersionId></DeleteMarker>\
                   <Version><Key>a</Key><VersionId>1</VersionId></Version></ListVersionsResult>";
        let tags: Vec<&str> = elements(doc).iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, ["Version", "DeleteMarker", "Version"]);
        // Every <Version> first, then the markers (as s3s and moto write them).
        let split = "<Version><Key>a</Key></Version><Version><Key>b</Key></Version>\
                     <DeleteMarker><Key>a</Key></DeleteMarker>";
        let got: Vec<(&str, &str)> = elements(split);
        assert_eq!(
            got,
            [
                ("Version", "<Key>a</Key>"),
                ("Version", "<Key>b</Key>"),
                ("DeleteMarker", "<Key>a</Key>")
            ]
        );
        // Markers listed after the versions (as some stores do) still fall in time order;
        // equal times keep the listing's newest-first order.
        let h = oldest_first(vec![
            v("a", "3", 30, false),
            v("a", "1", 10, false),
            v("a", "2b", 20, false),
            v("a", "2", 20, true),
        ]);
        let ids: Vec<&str> = h
            .iter()
            .map(|x| x.entry.version_id.as_deref().unwrap())
            .collect();
        assert_eq!(ids, ["1", "2", "2b", "3"]);
        // Whole seconds: a version listed before the latest marker at the same time is
        // still older than it.
        let mut marker = v("a", "m", 10, true);
        marker.latest = true;
        let h = oldest_first(vec![v("a", "v", 10, false), marker]);
        assert!(h[1].marker, "the latest entry is the newest");
    }

    #[test]
    fn versions_pair_off_by_journal_marker_or_md5() {
        let s = v("a", "s1", 1, false);
        let mut d = v("a", "d1", 2, false);
        assert!(same_version(&s, &d, None));
        let j = Done {
            fp: String::new(),
            etag: String::new(),
            crc64: String::new(),
            version_id: Some("other".into()),
        };
        assert!(
            !same_version(&s, &d, Some(&j)),
            "the journal names another copy"
        );
        let mut j = Done {
            fp: s.entry.fingerprint(),
            version_id: Some("d1".into()),
            ..j
        };
        assert!(same_version(&s, &d, Some(&j)));
        j.fp = "s3:1:another".into();
        assert!(
            !same_version(&s, &d, Some(&j)),
            "a null version rewritten at the source since it was copied"
        );
        d.entry.size = 2;
        assert!(!same_version(&s, &d, None));
        assert!(same_version(
            &v("a", "s", 1, true),
            &v("a", "d", 1, true),
            None
        ));
        assert!(!same_version(&s, &v("a", "d", 1, true), None));
    }
}

//! Objects above the multipart threshold, cut into parts sent with up to
//! `--part-concurrency` in flight, each carrying its MD5 and CRC64NVME, the completion
//! carrying the whole object's CRC64NVME; an upload journaled before its first part, so a
//! resumed run sends only the parts the region does not hold.
//!
//! A directory file is read as one stream. An S3 object is read part by part with ranged
//! GETs pinned to the listed version, as many at once as parts are sent: one stream from a
//! distant store runs at one connection's rate. Its metadata and full-object checksum then
//! come from a HEAD, since a ranged GET does not carry them, and the whole object's MD5 and
//! CRC64NVME are computed over the parts in order.

use std::sync::atomic::Ordering;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use crc_fast::{CrcAlgorithm, Digest as Crc};
use md5::{Digest as _, Md5};

use crate::Error;
use crate::copy::{B64, Ctx, MAX_PARTS, check_source};
use crate::journal::{Done, Upload};
use crate::source::Entry;

impl Ctx {
    pub(crate) async fn copy_multipart(&self, entry: &Entry) -> Result<Done, Error> {
        let part_size = self
            .opts
            .part_size
            .max(entry.size.div_ceil(MAX_PARTS))
            .max(5 << 20);
        let fp = entry.fingerprint();
        let ranged = self.opts.part_concurrency > 1
            && matches!(self.source, crate::source::Source::S3 { .. })
            && (entry.etag.is_some() || entry.version_id.is_some());
        let mut r = match ranged {
            true => None,
            false => Some(self.source.open(entry, &self.opts.limits).await?),
        };
        let meta = match &r {
            Some(r) => r.meta.clone(),
            None => self.source.head(entry, &self.opts.limits).await?,
        };
        let headers = self.put_headers(entry, &meta).await?;
        // A journaled upload of the same source version resumes: the parts the region holds
        // are not sent again.
        // One source version's upload is journaled under that version's record.
        let record = match &entry.version_id {
            Some(v) => crate::journal::version_record(&entry.key, v),
            None => entry.key.clone(),
        };
        let journal = self.journal.clone();
        let k = record.clone();
        let prior = tokio::task::spawn_blocking(move || journal.upload(&k))
            .await
            .map_err(|e| Error::Journal(e.to_string()))??;
        let mut held: std::collections::HashMap<u32, String> = Default::default();
        let mut upload_id = None;
        if let Some(u) = prior {
            if u.fp == fp && u.part_size == part_size {
                if let Some(parts) = self.dest.list_parts(&entry.key, &u.upload_id).await? {
                    held = parts.into_iter().collect();
                    upload_id = Some(u.upload_id);
                }
            } else {
                self.dest.abort(&entry.key, &u.upload_id).await;
            }
        }
        let upload_id = match upload_id {
            Some(u) => u,
            None => {
                let id = self.dest.create_upload(&entry.key, headers).await?;
                let journal = self.journal.clone();
                let (k, u) = (
                    record.clone(),
                    Upload {
                        fp: fp.clone(),
                        upload_id: id.clone(),
                        part_size,
                    },
                );
                tokio::task::spawn_blocking(move || journal.begin_upload(&k, &u))
                    .await
                    .map_err(|e| Error::Journal(e.to_string()))??;
                id
            }
        };
        let result = match r.as_mut() {
            Some(r) => {
                self.send_parts(entry, r, &upload_id, part_size, &held)
                    .await
            }
            None => {
                self.send_ranged_parts(entry, &meta, &upload_id, part_size, &held)
                    .await
            }
        };
        match result {
            Ok(d) => Ok(d),
            Err(e) => {
                // A source that changed invalidates every part sent: start again next time.
                if matches!(e, Error::Changed(_)) {
                    self.dest.abort(&entry.key, &upload_id).await;
                    let journal = self.journal.clone();
                    let k = record.clone();
                    let _ = tokio::task::spawn_blocking(move || journal.forget_upload(&k)).await;
                }
                Err(e)
            }
        }
    }

    async fn send_parts(
        &self,
        entry: &Entry,
        r: &mut crate::source::Reader,
        upload_id: &str,
        part_size: u64,
        held: &std::collections::HashMap<u32, String>,
    ) -> Result<Done, Error> {
        let mut whole_md5 = Md5::new();
        let mut whole_crc = Crc::new(CrcAlgorithm::Crc64Nvme);
        let mut sending = tokio::task::JoinSet::new();
        let mut parts: Vec<(u32, String, String)> = Vec::new();
        let mut total = 0u64;
        let mut n = 0u32;
        let mut sent_bytes = 0u64;
        loop {
            let mut buf = BytesMut::with_capacity(part_size as usize);
            while (buf.len() as u64) < part_size {
                let b = r.read((part_size as usize) - buf.len()).await?;
                if b.is_empty() {
                    break;
                }
                buf.extend_from_slice(&b);
            }
            if buf.is_empty() {
                break;
            }
            n += 1;
            total += buf.len() as u64;
            if total > entry.size {
                return Err(Error::Changed(entry.key.clone()));
            }
            let body: Bytes = buf.freeze();
            whole_md5.update(&body);
            whole_crc.update(&body);
            let md5: [u8; 16] = Md5::digest(&body).into();
            let mut crc = Crc::new(CrcAlgorithm::Crc64Nvme);
            crc.update(&body);
            let crc = B64.encode(crc.finalize().to_be_bytes());
            if held.get(&n) == Some(&hex::encode(md5)) {
                parts.push((n, hex::encode(md5), crc));
                continue;
            }
            while sending.len() >= self.opts.part_concurrency.max(1) {
                parts.push(join_part(&mut sending).await?);
            }
            sent_bytes += body.len() as u64;
            let dest = self.dest.clone();
            let (key, id) = (entry.key.clone(), upload_id.to_owned());
            sending.spawn(async move {
                let etag = dest
                    .upload_part(&key, &id, n, body, &B64.encode(md5), &crc)
                    .await?;
                if etag != hex::encode(md5) {
                    return Err(Error::Verify(format!(
                        "{key} part {n}: the region answered ETag {etag} for MD5 {}",
                        hex::encode(md5)
                    )));
                }
                Ok((n, etag, crc))
            });
        }
        while !sending.is_empty() {
            parts.push(join_part(&mut sending).await?);
        }
        if total != entry.size || !self.source.unchanged(entry).await? {
            return Err(Error::Changed(entry.key.clone()));
        }
        let whole = Whole {
            md5: whole_md5,
            crc: whole_crc,
        };
        self.complete_upload(entry, &r.meta, upload_id, parts, whole, sent_bytes)
            .await
    }

    /// [`Self::send_parts`] for an S3 source: each part read with its own ranged GET, as
    /// many reads and sends at once as `--part-concurrency`, parts hashed into the whole in
    /// order. At most that many parts are in memory, read or waiting for their turn.
    async fn send_ranged_parts(
        &self,
        entry: &Entry,
        meta: &crate::source::ObjectMeta,
        upload_id: &str,
        part_size: u64,
        held: &std::collections::HashMap<u32, String>,
    ) -> Result<Done, Error> {
        let count = entry.size.div_ceil(part_size) as u32;
        let width = self.opts.part_concurrency.max(1);
        let mut whole = Whole {
            md5: Md5::new(),
            crc: Crc::new(CrcAlgorithm::Crc64Nvme),
        };
        let mut tasks = tokio::task::JoinSet::new();
        let mut waiting: std::collections::BTreeMap<u32, Bytes> = Default::default();
        let mut parts = Vec::new();
        let (mut next_part, mut next_hash, mut sent_bytes) = (1u32, 1u32, 0u64);
        while next_hash <= count {
            while next_part <= count && tasks.len() + waiting.len() < width {
                let n = next_part;
                next_part += 1;
                let start = u64::from(n - 1) * part_size;
                let len = part_size.min(entry.size - start);
                let (source, dest, limits) = (
                    self.source.clone(),
                    self.dest.clone(),
                    self.opts.limits.clone(),
                );
                let (entry, id) = (entry.clone(), upload_id.to_owned());
                let held = held.get(&n).cloned();
                tasks.spawn(async move {
                    let body = read_range(&source, &entry, start, len, &limits).await?;
                    let digest: [u8; 16] = Md5::digest(&body).into();
                    let md5 = hex::encode(digest);
                    let mut crc = Crc::new(CrcAlgorithm::Crc64Nvme);
                    crc.update(&body);
                    let crc = B64.encode(crc.finalize().to_be_bytes());
                    if held.as_deref() == Some(md5.as_str()) {
                        return Ok((n, body, md5, crc, 0));
                    }
                    let etag = dest
                        .upload_part(&entry.key, &id, n, body.clone(), &B64.encode(digest), &crc)
                        .await?;
                    if etag != md5 {
                        return Err(Error::Verify(format!(
                            "{} part {n}: the region answered ETag {etag} for MD5 {md5}",
                            entry.key
                        )));
                    }
                    Ok((n, body, md5, crc, len))
                });
            }
            let (n, body, md5, crc, sent) = match tasks.join_next().await {
                Some(Ok(r)) => r?,
                Some(Err(e)) => return Err(Error::Dest(format!("a part failed: {e}"))),
                None => return Err(Error::Dest("no part to wait for".into())),
            };
            sent_bytes += sent;
            parts.push((n, md5, crc));
            waiting.insert(n, body);
            while let Some(body) = waiting.remove(&next_hash) {
                whole.md5.update(&body);
                whole.crc.update(&body);
                next_hash += 1;
            }
        }
        self.complete_upload(entry, meta, upload_id, parts, whole, sent_bytes)
            .await
    }

    /// Checks the whole object against the source and completes its upload.
    async fn complete_upload(
        &self,
        entry: &Entry,
        meta: &crate::source::ObjectMeta,
        upload_id: &str,
        mut parts: Vec<(u32, String, String)>,
        whole: Whole,
        sent_bytes: u64,
    ) -> Result<Done, Error> {
        let md5 = hex::encode(whole.md5.finalize());
        let crc64 = B64.encode(whole.crc.finalize().to_be_bytes());
        check_source(entry, meta, &md5, &crc64, &[])?;
        parts.sort_by_key(|p| p.0);
        let w = self
            .dest
            .complete(&entry.key, upload_id, &parts, &crc64)
            .await?;
        let done = Done {
            fp: entry.fingerprint(),
            etag: w.etag,
            crc64,
            version_id: w.version_id,
        };
        // Large objects are journaled at once: a lost record would mean sending them again.
        let journal = self.journal.clone();
        let record = match &entry.version_id {
            Some(v) => crate::journal::version_record(&entry.key, v),
            None => entry.key.clone(),
        };
        let item = vec![(record, done.clone())];
        tokio::task::spawn_blocking(move || journal.commit_done(&item))
            .await
            .map_err(|e| Error::Journal(e.to_string()))??;
        self.stats.bytes.fetch_add(sent_bytes, Ordering::Relaxed);
        Ok(done)
    }
}

/// The whole object's digests, fed the parts in order.
struct Whole {
    md5: Md5,
    crc: Crc,
}

/// One part's bytes, exactly `len` of them.
async fn read_range(
    source: &crate::source::Source,
    entry: &Entry,
    start: u64,
    len: u64,
    limits: &crate::limit::Limits,
) -> Result<Bytes, Error> {
    let mut r = source
        .open_range(entry, start, len, limits)
        .await?
        .ok_or_else(|| Error::Source(format!("{}: cannot be read by ranges", entry.key)))?;
    let mut buf = BytesMut::with_capacity(len as usize);
    loop {
        let b = r.read(1 << 20).await?;
        if b.is_empty() {
            break;
        }
        buf.extend_from_slice(&b);
        if buf.len() as u64 > len {
            break;
        }
    }
    if buf.len() as u64 != len {
        return Err(Error::Changed(entry.key.clone()));
    }
    Ok(buf.freeze())
}

async fn join_part(
    set: &mut tokio::task::JoinSet<Result<(u32, String, String), Error>>,
) -> Result<(u32, String, String), Error> {
    match set.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Error::Dest(format!("a part upload failed: {e}"))),
        None => Err(Error::Dest("no part upload to wait for".into())),
    }
}

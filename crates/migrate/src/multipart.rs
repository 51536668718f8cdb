//! Objects above the multipart threshold: one stream read from the source, cut into parts
//! sent with up to `--part-concurrency` in flight, each carrying its MD5 and CRC64NVME, the
//! completion carrying the whole object's CRC64NVME; an upload journaled before its first
//! part, so a resumed run sends only the parts the region does not hold.

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
        let mut r = self.source.open(entry, &self.opts.limits).await?;
        let headers = self.put_headers(entry, &r.meta).await?;
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
        let result = self
            .send_parts(entry, &mut r, &upload_id, part_size, &held)
            .await;
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
        let md5 = hex::encode(whole_md5.finalize());
        let crc64 = B64.encode(whole_crc.finalize().to_be_bytes());
        check_source(entry, &r.meta, &md5, &crc64, &[])?;
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

async fn join_part(
    set: &mut tokio::task::JoinSet<Result<(u32, String, String), Error>>,
) -> Result<(u32, String, String), Error> {
    match set.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Error::Dest(format!("a part upload failed: {e}"))),
        None => Err(Error::Dest("no part upload to wait for".into())),
    }
}

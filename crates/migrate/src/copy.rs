//! One pass of a migration: the source and destination listings merged in key order, each
//! key classified (new, changed, unchanged, gone), and the copies and deletes run by a fixed
//! number of workers with bounded memory. Every object is verified on the way: the bytes
//! read are hashed (MD5 and CRC64NVME) and checked against what the source says of them, and
//! the region checks both again before it acknowledges the write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use crc_fast::{CrcAlgorithm, Digest as Crc};
use md5::{Digest as _, Md5};
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::config::{self, ConfigSource, Stage};
use crate::dest::{Dest, DestEntry};
use crate::history::{Version, list_histories};
use crate::journal::{Done, Journal};
use crate::limit::Limits;
use crate::source::{Entry, Listed, Source, list_bucket, mtime_text};
use crate::{Error, Failure, Options, Summary};

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// S3's most parts in one upload.
pub(crate) const MAX_PARTS: u64 = 10_000;

/// Counters every worker adds to; the progress display reads them.
#[derive(Default)]
pub struct Stats {
    pub listed: AtomicU64,
    pub copied: AtomicU64,
    pub bytes: AtomicU64,
    pub skipped: AtomicU64,
    pub deleted: AtomicU64,
    pub failed: AtomicU64,
    pub problems: AtomicU64,
    pub ignored: AtomicU64,
    /// Bytes of objects still to copy, as far as the listing has got.
    pub planned_bytes: AtomicU64,
    /// Objects copied inside the region (CopyObject), their bytes never sent.
    pub server_side: AtomicU64,
}

enum Job {
    Copy(Entry, &'static str),
    Compare(Entry, DestEntry),
    Delete(String),
    /// `--all-versions`: one key's history at the source and at the destination.
    History(String, Vec<Version>, Vec<Version>),
}

pub(crate) struct Ctx {
    pub(crate) source: Source,
    pub(crate) dest: Dest,
    pub(crate) journal: Journal,
    pub(crate) opts: Options,
    pub(crate) stats: Arc<Stats>,
    failures: Mutex<Vec<Failure>>,
    pub(crate) plan: Mutex<Vec<String>>,
    checkers: Semaphore,
    pub(crate) done_tx: mpsc::Sender<(String, Done)>,
}

/// Runs one pass; the summary's `failures` lists what did not make it.
pub async fn run(
    source: Source,
    dest: Dest,
    journal: Journal,
    opts: Options,
    stats: Arc<Stats>,
) -> Result<Summary, Error> {
    let started = std::time::Instant::now();
    // A source that cannot be read leaves nothing behind, not even an empty bucket.
    source.probe(&opts.limits, opts.all_versions).await?;
    if !opts.dry_run {
        dest.ensure_bucket().await?;
    }
    let config = match (&source, opts.bucket_config) {
        (_, false) => None,
        (Source::S3 { client, bucket, .. }, true) => Some(ConfigSource {
            client: client.clone(),
            bucket: bucket.clone(),
        }),
        (Source::Dir { .. }, true) => {
            return Err(Error::Source(
                "--bucket-config needs an S3 bucket as the source".into(),
            ));
        }
    };
    let (mut config_done, mut config_failed) = (Vec::new(), Vec::new());
    if let Some(c) = &config {
        (config_done, config_failed) = config::copy_stage(
            c,
            &dest,
            Stage::BeforeObjects,
            &opts.limits,
            opts.dry_run,
            opts.all_versions,
        )
        .await;
    }
    let (done_tx, done_rx) = mpsc::channel(1024);
    let writer = tokio::spawn(journal_writer(journal.clone(), done_rx));
    let ctx = Arc::new(Ctx {
        checkers: Semaphore::new(opts.checkers.max(1)),
        source: source.clone(),
        dest: dest.clone(),
        journal,
        opts: opts.clone(),
        stats: stats.clone(),
        failures: Mutex::new(Vec::new()),
        plan: Mutex::new(Vec::new()),
        done_tx,
    });

    let (job_tx, job_rx) = mpsc::channel::<Job>(1024);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let mut workers = Vec::new();
    for _ in 0..opts.transfers.max(1) {
        let ctx = ctx.clone();
        let rx = job_rx.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let job = rx.lock().await.recv().await;
                let Some(job) = job else { break };
                ctx.handle(job).await;
            }
        }));
    }
    let (listing, dest_listing) = match opts.all_versions {
        true => merge_histories(&ctx, job_tx).await,
        false => merge_latest(&ctx, job_tx).await,
    };
    for w in workers {
        let _ = w.await;
    }
    // Every record must be durable before the summary says the objects are done.
    let Ctx {
        failures,
        plan,
        done_tx,
        ..
    } = match Arc::try_unwrap(ctx) {
        Ok(c) => c,
        Err(_) => return Err(Error::Journal("a worker outlived the pass".into())),
    };
    drop(done_tx);
    writer
        .await
        .map_err(|e| Error::Journal(format!("the journal writer failed: {e}")))??;
    // A listing that broke off must not read as a complete pass (nor, with --delete, have
    // deleted what it did not reach: deletes only follow keys both listings passed).
    listing?;
    // A destination bucket that does not exist yet (a dry run) is empty.
    match dest_listing {
        Err(Error::NoSuchBucket(_)) | Ok(()) => {}
        Err(e) => return Err(e),
    }
    // The settings that would get in the objects' way go after them (see config.rs),
    // and only once every object was reached and copied: a policy denying the migrator or
    // an expiration rule must not meet a rerun that still has objects to send.
    let incomplete = stats.failed.load(Ordering::Relaxed) + stats.problems.load(Ordering::Relaxed);
    if let Some(c) = config.as_ref().filter(|_| incomplete > 0) {
        config_failed.push(Failure {
            key: format!("(bucket {}) lifecycle, policy, default retention", c.bucket),
            error: format!(
                "not written: {incomplete} object(s) did not make it; a clean rerun writes them"
            ),
        });
    }
    if let Some(c) = config.as_ref().filter(|_| incomplete == 0) {
        let (done, failed) = config::copy_stage(
            c,
            &dest,
            Stage::AfterObjects,
            &opts.limits,
            opts.dry_run,
            opts.all_versions,
        )
        .await;
        config_done.extend(done);
        config_failed.extend(failed);
    }
    let s = &stats;
    s.failed
        .fetch_add(config_failed.len() as u64, Ordering::Relaxed);
    let mut failures = failures.into_inner();
    failures.extend(config_failed);
    let mut plan = plan.into_inner();
    if opts.dry_run {
        plan.extend(config_done.iter().cloned());
    }
    Ok(Summary {
        listed: s.listed.load(Ordering::Relaxed),
        copied: s.copied.load(Ordering::Relaxed),
        bytes: s.bytes.load(Ordering::Relaxed),
        skipped: s.skipped.load(Ordering::Relaxed),
        deleted: s.deleted.load(Ordering::Relaxed),
        failed: s.failed.load(Ordering::Relaxed),
        problems: s.problems.load(Ordering::Relaxed),
        ignored: s.ignored.load(Ordering::Relaxed),
        server_side: s.server_side.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        failures,
        plan,
        settings: config_done,
    })
}

type Listings = (Result<(), Error>, Result<(), Error>);

/// Both listing tasks' outcomes, a task that panicked counted as its listing failing.
async fn join_listings(
    src: tokio::task::JoinHandle<Result<(), Error>>,
    dst: tokio::task::JoinHandle<Result<(), Error>>,
) -> Listings {
    let listing = src
        .await
        .unwrap_or_else(|e| Err(Error::Source(format!("the listing task failed: {e}"))));
    let dest_listing = dst
        .await
        .unwrap_or_else(|e| Err(Error::Dest(format!("the listing task failed: {e}"))));
    (listing, dest_listing)
}

/// The latest objects: both listings merged in key order into jobs.
async fn merge_latest(ctx: &Arc<Ctx>, job_tx: mpsc::Sender<Job>) -> Listings {
    let source = ctx.source.clone();
    let dest = ctx.dest.clone();
    let (src_tx, mut src_rx) = mpsc::channel(4096);
    let limits = ctx.opts.limits.clone();
    let src_list = tokio::spawn(async move { source.list(src_tx, limits).await });
    let (dst_tx, mut dst_rx) = mpsc::channel::<DestEntry>(4096);
    let dlist = dest.clone();
    let dst_list = tokio::spawn(async move {
        list_bucket(
            &dlist.client,
            &dlist.bucket,
            &dlist.prefix,
            &Limits::default(),
            |e| {
                let tx = dst_tx.clone();
                async move {
                    tx.send(DestEntry {
                        key: e.key,
                        size: e.size,
                        etag: e.etag.unwrap_or_default(),
                    })
                    .await
                    .is_ok()
                }
            },
        )
        .await
    });

    // The merge: both listings arrive in key order.
    let mut next_src = recv_object(&mut src_rx, ctx).await;
    let mut next_dst = dst_rx.recv().await;
    loop {
        let job = match (next_src.take(), next_dst.take()) {
            (None, None) => break,
            (Some(s), None) => {
                next_src = recv_object(&mut src_rx, ctx).await;
                Job::Copy(s, "new")
            }
            (None, Some(d)) => {
                next_dst = dst_rx.recv().await;
                match ctx.opts.delete {
                    true => Job::Delete(d.key),
                    false => continue,
                }
            }
            (Some(s), Some(d)) => match s.key.as_bytes().cmp(d.key.as_bytes()) {
                std::cmp::Ordering::Less => {
                    next_src = recv_object(&mut src_rx, ctx).await;
                    next_dst = Some(d);
                    Job::Copy(s, "new")
                }
                std::cmp::Ordering::Greater => {
                    next_dst = dst_rx.recv().await;
                    next_src = Some(s);
                    match ctx.opts.delete {
                        true => Job::Delete(d.key),
                        false => continue,
                    }
                }
                std::cmp::Ordering::Equal => {
                    next_src = recv_object(&mut src_rx, ctx).await;
                    next_dst = dst_rx.recv().await;
                    Job::Compare(s, d)
                }
            },
        };
        if job_tx.send(job).await.is_err() {
            break;
        }
    }
    drop(job_tx);
    // A listing still sending (the merge stopped early) ends once its receiver is gone.
    drop(src_rx);
    drop(dst_rx);
    join_listings(src_list, dst_list).await
}

/// `--all-versions`: both ends' histories merged by key, one job per key.
async fn merge_histories(ctx: &Arc<Ctx>, job_tx: mpsc::Sender<Job>) -> Listings {
    let Source::S3 {
        client,
        bucket,
        prefix,
    } = ctx.source.clone()
    else {
        return (
            Err(Error::Source(
                "--all-versions needs a versioned S3 bucket as the source".into(),
            )),
            Ok(()),
        );
    };
    if !ctx.opts.dry_run
        && let Err(e) = ctx.dest.enable_versioning().await
    {
        return (Ok(()), Err(e));
    }
    type Keyed = (String, Vec<Version>);
    let (src_tx, mut src_rx) = mpsc::channel::<Keyed>(256);
    let limits = ctx.opts.limits.clone();
    let src_list = tokio::spawn(async move {
        list_histories(&client, &bucket, &prefix, &limits, |k, h| {
            let tx = src_tx.clone();
            async move { tx.send((k, h)).await.is_ok() }
        })
        .await
    });
    let (dst_tx, mut dst_rx) = mpsc::channel::<Keyed>(256);
    let d = ctx.dest.clone();
    let dst_list = tokio::spawn(async move {
        list_histories(
            &d.client,
            &d.bucket,
            &d.prefix,
            &Limits::default(),
            |k, h| {
                let tx = dst_tx.clone();
                async move { tx.send((k, h)).await.is_ok() }
            },
        )
        .await
    });
    let mut next_src = src_rx.recv().await;
    let mut next_dst = dst_rx.recv().await;
    loop {
        let job = match (next_src.take(), next_dst.take()) {
            (None, None) => break,
            (Some((k, h)), None) => {
                next_src = src_rx.recv().await;
                Job::History(k, h, Vec::new())
            }
            // Keys only the destination has are not the source's history: left alone.
            (None, Some(_)) => {
                next_dst = dst_rx.recv().await;
                continue;
            }
            (Some((sk, sh)), Some((dk, dh))) => match sk.as_bytes().cmp(dk.as_bytes()) {
                std::cmp::Ordering::Less => {
                    next_src = src_rx.recv().await;
                    next_dst = Some((dk, dh));
                    Job::History(sk, sh, Vec::new())
                }
                std::cmp::Ordering::Greater => {
                    next_dst = dst_rx.recv().await;
                    next_src = Some((sk, sh));
                    continue;
                }
                std::cmp::Ordering::Equal => {
                    next_src = src_rx.recv().await;
                    next_dst = dst_rx.recv().await;
                    Job::History(sk, sh, dh)
                }
            },
        };
        if job_tx.send(job).await.is_err() {
            break;
        }
    }
    drop(job_tx);
    // A listing still sending (the merge stopped early) ends once its receiver is gone.
    drop(src_rx);
    drop(dst_rx);
    join_listings(src_list, dst_list).await
}

/// The next object of the source listing; problems are reported on the way.
async fn recv_object(rx: &mut mpsc::Receiver<Listed>, ctx: &Ctx) -> Option<Entry> {
    loop {
        match rx.recv().await? {
            Listed::Object(e) => {
                ctx.stats.listed.fetch_add(1, Ordering::Relaxed);
                return Some(e);
            }
            Listed::Ignored { .. } => {
                ctx.stats.ignored.fetch_add(1, Ordering::Relaxed);
            }
            Listed::Problem { name, reason } => {
                ctx.stats.problems.fetch_add(1, Ordering::Relaxed);
                ctx.failures.lock().await.push(Failure {
                    key: name,
                    error: reason,
                });
            }
        }
    }
}

/// Commits finished objects in groups: one fsync per 256 objects or 200 ms.
async fn journal_writer(
    journal: Journal,
    mut rx: mpsc::Receiver<(String, Done)>,
) -> Result<(), Error> {
    let mut batch = Vec::new();
    loop {
        let got = tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await;
        let (closed, timed_out) = (matches!(got, Ok(None)), got.is_err());
        if let Ok(Some(item)) = got {
            batch.push(item);
            while batch.len() < 256 {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() && (closed || batch.len() >= 256 || timed_out || rx.is_empty()) {
            let items = std::mem::take(&mut batch);
            let j = journal.clone();
            tokio::task::spawn_blocking(move || j.commit_done(&items))
                .await
                .map_err(|e| Error::Journal(e.to_string()))??;
        }
        if closed {
            return Ok(());
        }
    }
}

impl Ctx {
    async fn handle(&self, job: Job) {
        let (key, result) = match job {
            Job::Copy(e, why) => {
                let key = e.key.clone();
                (key, self.copy(e, why).await)
            }
            Job::Compare(e, d) => {
                let key = e.key.clone();
                (key, self.compare(e, d).await)
            }
            Job::Delete(k) => {
                let r = self.delete(&k).await;
                (k, r)
            }
            Job::History(k, src, dst) => {
                self.stats
                    .listed
                    .fetch_add(src.len() as u64, Ordering::Relaxed);
                let r = self.replay(&k, src, dst).await;
                (k, r)
            }
        };
        if let Err(e) = result {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            self.failures.lock().await.push(Failure {
                key,
                error: e.to_string(),
            });
        }
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        if self.opts.dry_run {
            self.plan.lock().await.push(format!("delete {key}"));
            return Ok(());
        }
        self.dest.delete(key).await?;
        let j = self.journal.clone();
        let k = vec![key.to_owned()];
        tokio::task::spawn_blocking(move || j.forget(&k))
            .await
            .map_err(|e| Error::Journal(e.to_string()))??;
        self.stats.deleted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A key at both ends: unchanged (skipped), or changed (copied).
    async fn compare(&self, src: Entry, dst: DestEntry) -> Result<(), Error> {
        let journal = self.journal.clone();
        let k = src.key.clone();
        let done = tokio::task::spawn_blocking(move || journal.done(&k))
            .await
            .map_err(|e| Error::Journal(e.to_string()))??;
        let fp = src.fingerprint();
        if let Some(d) = &done
            && d.fp == fp
            && d.etag == dst.etag
        {
            if !self.opts.checksum || self.content_matches(&src, &d.crc64).await? {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            return self.copy(src, "content differs").await;
        }
        if done.is_some() {
            // Recorded at another fingerprint (the source changed) or another ETag (the
            // destination was written since).
            return self.copy(src, "changed").await;
        }
        if src.size != dst.size {
            return self.copy(src, "changed").await;
        }
        // Not journaled but present with the right size: copied by a run that died before
        // its record was committed, or there before the migration. Recognise it.
        let permit = self.checkers.acquire().await;
        let Some(head) = self.dest.head(&src.key).await? else {
            return self.copy(src, "new").await;
        };
        let same = match (&src.etag, &self.source) {
            (Some(_), _) if src.md5_etag() == Some(dst.etag.as_str()) => true,
            (Some(_), Source::S3 { .. }) => {
                // A multipart ETag says nothing of content: the source's own CRC might.
                match (self.source_crc(&src).await?, &head.crc64) {
                    (Some(a), Some(b)) => a == *b,
                    _ => false,
                }
            }
            _ => head
                .headers
                .iter()
                .any(|(k, v)| k == "x-amz-meta-mtime" && *v == mtime_text(src.mtime_ns)),
        };
        if same && head.crc64.is_some() && !self.opts.checksum {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            let d = Done {
                fp,
                etag: head.etag,
                crc64: head.crc64.unwrap_or_default(),
                version_id: None,
            };
            let _ = self.done_tx.send((src.key, d)).await;
            return Ok(());
        }
        if same
            && let Some(crc) = &head.crc64
            && self.content_matches(&src, crc).await?
        {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            let d = Done {
                fp,
                etag: head.etag.clone(),
                crc64: crc.clone(),
                version_id: None,
            };
            let _ = self.done_tx.send((src.key, d)).await;
            return Ok(());
        }
        drop(permit);
        self.copy(src, "changed").await
    }

    /// A full-object CRC64NVME the S3 source stores, from a HEAD.
    async fn source_crc(&self, src: &Entry) -> Result<Option<String>, Error> {
        let meta = self.source.head(src, &self.opts.limits).await?;
        Ok(meta
            .checksum
            .filter(|(n, _)| n == "x-amz-checksum-crc64nvme")
            .map(|(_, v)| v))
    }

    /// Reads the source and compares its CRC64NVME (`--checksum`).
    async fn content_matches(&self, src: &Entry, crc64: &str) -> Result<bool, Error> {
        let mut r = self.source.open(src, &self.opts.limits).await?;
        let mut crc = Crc::new(CrcAlgorithm::Crc64Nvme);
        loop {
            let b = r.read(1 << 20).await?;
            if b.is_empty() {
                break;
            }
            crc.update(&b);
        }
        Ok(B64.encode(crc.finalize().to_be_bytes()) == crc64)
    }

    async fn copy(&self, src: Entry, why: &str) -> Result<(), Error> {
        if self.opts.dry_run {
            self.plan
                .lock()
                .await
                .push(format!("copy {} ({why}, {} bytes)", src.key, src.size));
            return Ok(());
        }
        let (key, done) = self.copy_object(src).await?;
        let _ = self.done_tx.send((key, done)).await;
        Ok(())
    }

    /// Copies one object (or one version); answers its key (as read last) and what the
    /// destination holds now. Counted, not journaled.
    pub(crate) async fn copy_object(&self, src: Entry) -> Result<(String, Done), Error> {
        // S3's largest object: a listing that claims more is not believed (its part size
        // would be allocated up front).
        if src.size > 5 << 40 {
            return Err(Error::Source(format!(
                "{}: a listed size of {} bytes is beyond S3's 5 TiB",
                src.key, src.size
            )));
        }
        self.stats
            .planned_bytes
            .fetch_add(src.size, Ordering::Relaxed);
        match self.copy_in_region(&src).await {
            Ok(Some(done)) => {
                self.stats.copied.fetch_add(1, Ordering::Relaxed);
                self.stats.server_side.fetch_add(1, Ordering::Relaxed);
                return Ok((src.key, done));
            }
            // Rewritten since it was listed: the path below reads it again and re-lists it.
            Ok(None) | Err(Error::Changed(_)) => {}
            Err(e) => return Err(e),
        }
        // A file rewritten while it was read is read again, once; then reported.
        let mut entry = src;
        for attempt in 0..2 {
            let r = if entry.size <= self.opts.multipart_threshold {
                self.copy_single(&entry).await
            } else {
                self.copy_multipart(&entry).await
            };
            match r {
                Err(Error::Changed(_)) if attempt == 0 => {
                    match self.source.restat(&entry, &self.opts.limits).await? {
                        Some(e) => entry = e,
                        None => return Err(Error::Vanished(entry.key)),
                    }
                }
                Err(e) => return Err(e),
                Ok(d) => {
                    self.stats.copied.fetch_add(1, Ordering::Relaxed);
                    return Ok((entry.key, d));
                }
            }
        }
        Err(Error::Changed(entry.key))
    }

    pub(crate) async fn put_headers(
        &self,
        entry: &Entry,
        meta: &crate::source::ObjectMeta,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut headers = meta.headers.clone();
        if self.opts.bucket_config {
            headers.extend(meta.lock.iter().cloned());
        }
        if meta.tag_count > 0 {
            let tags = self.source.tagging(entry, &self.opts.limits).await?;
            if !tags.is_empty() {
                headers.push(("x-amz-tagging".into(), tags));
            }
        }
        Ok(headers)
    }

    /// A server-side copy (CopyObject) when the source is a bucket of the destination's own
    /// region: `None` when the source is elsewhere, the object is over CopyObject's 5 GiB,
    /// or the destination's credentials may not read the source (then the bytes travel
    /// through the migrator, read with the source's credentials).
    async fn copy_in_region(&self, entry: &Entry) -> Result<Option<Done>, Error> {
        let Source::S3 {
            client,
            bucket,
            prefix,
        } = &self.source
        else {
            return Ok(None);
        };
        if client.url().trim_end_matches('/') != self.dest.client.url().trim_end_matches('/')
            || entry.size > 5 << 30
        {
            return Ok(None);
        }
        let mut headers = Vec::new();
        if self.opts.bucket_config {
            // CopyObject carries metadata and tags, but not retention or a legal hold.
            headers.extend(self.source.head(entry, &self.opts.limits).await?.lock);
        }
        let key = format!("{prefix}{}", entry.key);
        let r = self
            .dest
            .copy_from(
                &entry.key,
                bucket,
                &key,
                entry.version_id.as_deref(),
                entry.etag.as_deref(),
                headers,
            )
            .await;
        let (w, crc64) = match r {
            Ok(x) => x,
            Err(Error::Denied(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |why: String| {
            Err(Error::Verify(format!(
                "{}: the in-region copy {why}",
                entry.key
            )))
        };
        if w.etag.is_empty() {
            return bad("answered no ETag".into());
        }
        if entry.version_id.is_some() && w.version_id.is_none() {
            return bad("made no version in a versioned bucket".into());
        }
        // The region checked every frame it read. The copy's ETag is the source's MD5 again
        // unless either end is encrypted under a KMS or customer key; where that cannot be
        // compared, the source's stored CRC64NVME (if it has one) is.
        let md5_checked = entry.md5_etag() == Some(w.etag.as_str());
        if !md5_checked {
            let meta = self.source.head(entry, &self.opts.limits).await?;
            if let Some(src) = entry.md5_etag()
                && meta.etag_is_md5
                && w.etag.len() == 32
            {
                return bad(format!("answered ETag {}, the source's is {src}", w.etag));
            }
            if let Some((_, want)) = meta
                .checksum
                .filter(|(n, _)| n == "x-amz-checksum-crc64nvme")
                && crc64.as_deref() != Some(want.as_str())
            {
                return bad(format!("has CRC64NVME {crc64:?}, the source's is {want}"));
            }
        }
        Ok(Some(Done {
            fp: entry.fingerprint(),
            etag: w.etag,
            crc64: crc64.unwrap_or_default(),
            version_id: w.version_id,
        }))
    }

    /// An object read whole, with what the source says of it.
    async fn read_whole(&self, entry: &Entry) -> Result<(Bytes, crate::source::ObjectMeta), Error> {
        if let Some(whole) = self.source.read_file(entry, &self.opts.limits).await? {
            return Ok(whole);
        }
        let mut r = self.source.open(entry, &self.opts.limits).await?;
        let mut buf = BytesMut::with_capacity(entry.size as usize);
        loop {
            let b = r.read(1 << 20).await?;
            if b.is_empty() {
                break;
            }
            if buf.len() as u64 + b.len() as u64 > entry.size {
                return Err(Error::Changed(entry.key.clone()));
            }
            buf.extend_from_slice(&b);
        }
        if buf.len() as u64 != entry.size || !self.source.unchanged(entry).await? {
            return Err(Error::Changed(entry.key.clone()));
        }
        Ok((buf.freeze(), r.meta))
    }

    async fn copy_single(&self, entry: &Entry) -> Result<Done, Error> {
        let (body, meta) = self.read_whole(entry).await?;
        let md5: [u8; 16] = Md5::digest(&body).into();
        let mut crc = Crc::new(CrcAlgorithm::Crc64Nvme);
        crc.update(&body);
        let crc64 = B64.encode(crc.finalize().to_be_bytes());
        check_source(entry, &meta, &hex::encode(md5), &crc64, &body)?;
        let mut headers = self.put_headers(entry, &meta).await?;
        headers.push(("content-md5".into(), B64.encode(md5)));
        headers.push(("x-amz-checksum-crc64nvme".into(), crc64.clone()));
        let w = self.dest.put(&entry.key, body, headers).await?;
        let etag = w.etag;
        if etag != hex::encode(md5) {
            return Err(Error::Verify(format!(
                "{}: the region answered ETag {etag} for bytes whose MD5 is {}",
                entry.key,
                hex::encode(md5)
            )));
        }
        self.stats.bytes.fetch_add(entry.size, Ordering::Relaxed);
        Ok(Done {
            fp: entry.fingerprint(),
            etag,
            crc64,
            version_id: w.version_id,
        })
    }
}

/// The bytes read against what the source says of them: its MD5 ETag, its stored checksum.
pub(crate) fn check_source(
    entry: &Entry,
    meta: &crate::source::ObjectMeta,
    md5_hex: &str,
    crc64: &str,
    body: &[u8],
) -> Result<(), Error> {
    if let Some(e) = entry.md5_etag()
        && meta.etag_is_md5
        && e != md5_hex
    {
        return Err(Error::Verify(format!(
            "{}: read MD5 {md5_hex}, the source's ETag is {e}",
            entry.key
        )));
    }
    if let Some((name, want)) = &meta.checksum {
        let got = match name.as_str() {
            "x-amz-checksum-crc64nvme" => Some(crc64.to_owned()),
            "x-amz-checksum-sha256" if !body.is_empty() || entry.size == 0 => {
                Some(B64.encode(sha2::Sha256::digest(body)))
            }
            _ => None,
        };
        if let Some(got) = got
            && &got != want
        {
            return Err(Error::Verify(format!(
                "{}: read {name} {got}, the source stores {want}",
                entry.key
            )));
        }
    }
    Ok(())
}

//! `migrate verify`: both listings merged in key order, and every key present at both ends
//! compared for size, content (CRC64NVME: the source's stored one, else read and computed;
//! the destination's stored one), system headers and user metadata, and tags.

use std::sync::Arc;

use base64::Engine as _;
use crc_fast::{CrcAlgorithm, Digest as Crc};
use tokio::sync::{Mutex, mpsc};

use crate::dest::Dest;
use crate::source::{Entry, Listed, Source, list_bucket};
use crate::{Error, Limits};

/// One way the destination differs from the source.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Difference {
    pub key: String,
    /// `missing`, `extra`, `size`, `checksum`, `metadata`, `tags`, `unlisted`, `error`.
    pub kind: &'static str,
    pub detail: String,
}

fn diff(key: &str, kind: &'static str, detail: String) -> Difference {
    Difference {
        key: key.to_owned(),
        kind,
        detail,
    }
}

/// The bucket settings that differ (`--bucket-config`): kind `bucket-config`, keyed by the
/// setting's name.
pub async fn verify_bucket_config(
    source: &Source,
    dest: &Dest,
    limits: &Limits,
) -> Result<Vec<Difference>, Error> {
    let Source::S3 { client, bucket, .. } = source else {
        return Err(Error::Source(
            "--bucket-config needs an S3 bucket as the source".into(),
        ));
    };
    let src = crate::config::ConfigSource {
        client: client.clone(),
        bucket: bucket.clone(),
    };
    Ok(crate::config::compare(&src, dest, limits)
        .await?
        .into_iter()
        .map(|(name, detail)| Difference {
            key: name,
            kind: "bucket-config",
            detail,
        })
        .collect())
}

/// Every difference, in key order. With `lock`, each object's retention and legal hold
/// are compared too.
pub async fn verify(
    source: Source,
    dest: Dest,
    checkers: usize,
    limits: Limits,
    lock: bool,
) -> Result<Vec<Difference>, Error> {
    let (src_tx, mut src_rx) = mpsc::channel(4096);
    let (s, l) = (source.clone(), limits.clone());
    let src_list = tokio::spawn(async move { s.list(src_tx, l).await });
    let (dst_tx, mut dst_rx) = mpsc::channel::<Entry>(4096);
    let d = dest.clone();
    let dst_list = tokio::spawn(async move {
        list_bucket(&d.client, &d.bucket, &d.prefix, &Limits::default(), |e| {
            let tx = dst_tx.clone();
            async move { tx.send(e).await.is_ok() }
        })
        .await
    });
    let out = Arc::new(Mutex::new(Vec::new()));
    let (job_tx, job_rx) = mpsc::channel::<(Entry, Entry)>(256);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let mut workers = Vec::new();
    for _ in 0..checkers.max(1) {
        let (rx, out, source, dest, limits) = (
            job_rx.clone(),
            out.clone(),
            source.clone(),
            dest.clone(),
            limits.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let job = rx.lock().await.recv().await;
                let Some((s, d)) = job else { break };
                let found = match compare(&source, &dest, &s, &d, &limits, lock).await {
                    Ok(v) => v,
                    Err(e) => vec![diff(&s.key, "error", e.to_string())],
                };
                out.lock().await.extend(found);
            }
        }));
    }
    let mut s = next_object(&mut src_rx, &out).await;
    let mut d = dst_rx.recv().await;
    loop {
        match (s.take(), d.take()) {
            (None, None) => break,
            (Some(a), None) => {
                out.lock()
                    .await
                    .push(diff(&a.key, "missing", String::new()));
                s = next_object(&mut src_rx, &out).await;
            }
            (None, Some(b)) => {
                out.lock().await.push(diff(&b.key, "extra", String::new()));
                d = dst_rx.recv().await;
            }
            (Some(a), Some(b)) => match a.key.as_bytes().cmp(b.key.as_bytes()) {
                std::cmp::Ordering::Less => {
                    out.lock()
                        .await
                        .push(diff(&a.key, "missing", String::new()));
                    s = next_object(&mut src_rx, &out).await;
                    d = Some(b);
                }
                std::cmp::Ordering::Greater => {
                    out.lock().await.push(diff(&b.key, "extra", String::new()));
                    d = dst_rx.recv().await;
                    s = Some(a);
                }
                std::cmp::Ordering::Equal => {
                    if job_tx.send((a, b)).await.is_err() {
                        break;
                    }
                    s = next_object(&mut src_rx, &out).await;
                    d = dst_rx.recv().await;
                }
            },
        }
    }
    drop(job_tx);
    for w in workers {
        let _ = w.await;
    }
    src_list
        .await
        .map_err(|e| Error::Source(format!("the listing task failed: {e}")))??;
    match dst_list
        .await
        .map_err(|e| Error::Dest(format!("the listing task failed: {e}")))?
    {
        Err(Error::NoSuchBucket(_)) | Ok(()) => {}
        Err(e) => return Err(e),
    }
    let mut v = std::mem::take(&mut *out.lock().await);
    v.sort_by(|a, b| {
        a.key
            .as_bytes()
            .cmp(b.key.as_bytes())
            .then(a.kind.cmp(b.kind))
    });
    Ok(v)
}

async fn next_object(
    rx: &mut mpsc::Receiver<Listed>,
    out: &Mutex<Vec<Difference>>,
) -> Option<Entry> {
    loop {
        match rx.recv().await? {
            Listed::Object(e) => return Some(e),
            Listed::Ignored { .. } => {}
            Listed::Problem { name, reason } => {
                out.lock().await.push(diff(&name, "unlisted", reason))
            }
        }
    }
}

/// Headers in a fixed order, so two ends compare as sets.
fn comparable(h: &[(String, String)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h.to_vec();
    v.sort();
    v
}

async fn compare(
    source: &Source,
    dest: &Dest,
    s: &Entry,
    d: &Entry,
    limits: &Limits,
    lock: bool,
) -> Result<Vec<Difference>, Error> {
    let mut found = Vec::new();
    if s.size != d.size {
        found.push(diff(
            &s.key,
            "size",
            format!("{} at the source, {} here", s.size, d.size),
        ));
        return Ok(found);
    }
    let Some(head) = dest.head_version(&s.key, d.version_id.as_deref()).await? else {
        found.push(diff(&s.key, "missing", "listed but gone".into()));
        return Ok(found);
    };
    let meta = source.head(s, limits).await?;
    let stored = meta
        .checksum
        .clone()
        .filter(|(n, _)| n == "x-amz-checksum-crc64nvme")
        .map(|(_, v)| v);
    let src_crc = match stored {
        Some(c) => c,
        None => {
            let mut r = source.open(s, limits).await?;
            let mut crc = Crc::new(CrcAlgorithm::Crc64Nvme);
            loop {
                let b = r.read(1 << 20).await?;
                if b.is_empty() {
                    break;
                }
                crc.update(&b);
            }
            base64::engine::general_purpose::STANDARD.encode(crc.finalize().to_be_bytes())
        }
    };
    match &head.crc64 {
        Some(c) if *c == src_crc => {}
        Some(c) => found.push(diff(
            &s.key,
            "checksum",
            format!("CRC64NVME {src_crc} at the source, {c} here"),
        )),
        None => found.push(diff(&s.key, "checksum", "no CRC64NVME stored here".into())),
    }
    let (a, b) = (comparable(&meta.headers), comparable(&head.headers));
    let differs: Vec<String> = a
        .iter()
        .filter(|x| !b.contains(x))
        .map(|(k, v)| format!("{k}: {v:?} at the source, {:?} here", lookup(&b, k)))
        .chain(
            b.iter()
                .filter(|(k, _)| lookup(&a, k).is_none() && k.starts_with("x-amz-meta-"))
                .map(|(k, v)| format!("{k}: only here ({v:?})")),
        )
        .collect();
    if !differs.is_empty() {
        found.push(diff(&s.key, "metadata", differs.join("; ")));
    }
    if lock {
        let (a, b) = (lock_state(&meta.lock), lock_state(&head.lock));
        if a != b {
            found.push(diff(
                &s.key,
                "lock",
                format!("{a:?} at the source, {b:?} here"),
            ));
        }
    }
    // HEAD carries no tag count (S3 sends x-amz-tagging-count on GET only), so the tag sets
    // are always read: a directory source has none, and then only the region's is.
    {
        let (ta, tb) = (
            source.tagging(s, limits).await?,
            dest.tagging(&s.key, d.version_id.as_deref()).await?,
        );
        let sort = |t: &str| {
            let mut v: Vec<String> = t
                .split('&')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect();
            v.sort();
            v
        };
        if sort(&ta) != sort(&tb) {
            found.push(diff(
                &s.key,
                "tags",
                format!("{ta:?} at the source, {tb:?} here"),
            ));
        }
    }
    Ok(found)
}

/// Retention and legal hold in a fixed form: dates without a zero fraction (`.000Z` and
/// `Z` are one instant), a legal hold `OFF` the same as none.
fn lock_state(h: &[(String, String)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .iter()
        .filter(|(k, v)| !(k == "x-amz-object-lock-legal-hold" && v == "OFF"))
        .map(|(k, v)| {
            let v = match v.split_once('.') {
                Some((whole, frac)) if frac.trim_end_matches('Z').bytes().all(|b| b == b'0') => {
                    format!("{whole}Z")
                }
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    v.sort();
    v
}

fn lookup<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// `--all-versions`: each key's history at both ends, version by version, oldest first —
/// the same kinds (object or delete marker) in the same order, and each object version
/// compared as `verify` compares the latest (size, content, metadata, tags, and with `lock`
/// its retention and legal hold). A version's difference names it as `KEY (version N of M)`.
pub async fn verify_histories(
    source: Source,
    dest: Dest,
    limits: Limits,
    lock: bool,
) -> Result<Vec<Difference>, Error> {
    let Source::S3 {
        client,
        bucket,
        prefix,
    } = source.clone()
    else {
        return Err(Error::Source(
            "--all-versions needs a versioned S3 bucket as the source".into(),
        ));
    };
    type Keyed = (String, Vec<crate::history::Version>);
    let collect = |c: crate::client::S3Client, b: String, p: String, l: Limits| async move {
        let (tx, rx) = mpsc::channel::<Keyed>(64);
        let task = tokio::spawn(async move {
            crate::history::list_histories(&c, &b, &p, &l, |k, h| {
                let tx = tx.clone();
                async move { tx.send((k, h)).await.is_ok() }
            })
            .await
        });
        (rx, task)
    };
    let (mut src_rx, src_task) = collect(client, bucket, prefix, limits.clone()).await;
    let (mut dst_rx, dst_task) = collect(
        dest.client.clone(),
        dest.bucket.clone(),
        dest.prefix.clone(),
        Limits::default(),
    )
    .await;
    let mut out = Vec::new();
    let mut s = src_rx.recv().await;
    let mut d = dst_rx.recv().await;
    loop {
        match (s.take(), d.take()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                out.push(diff(&k, "missing", String::new()));
                s = src_rx.recv().await;
            }
            (None, Some((k, _))) => {
                out.push(diff(&k, "extra", String::new()));
                d = dst_rx.recv().await;
            }
            (Some(a), Some(b)) => match a.0.as_bytes().cmp(b.0.as_bytes()) {
                std::cmp::Ordering::Less => {
                    out.push(diff(&a.0, "missing", String::new()));
                    s = src_rx.recv().await;
                    d = Some(b);
                }
                std::cmp::Ordering::Greater => {
                    out.push(diff(&b.0, "extra", String::new()));
                    d = dst_rx.recv().await;
                    s = Some(a);
                }
                std::cmp::Ordering::Equal => {
                    out.extend(
                        compare_history(&source, &dest, &a.0, &a.1, &b.1, &limits, lock).await,
                    );
                    s = src_rx.recv().await;
                    d = dst_rx.recv().await;
                }
            },
        }
    }
    drop(src_rx);
    drop(dst_rx);
    src_task
        .await
        .map_err(|e| Error::Source(format!("the listing task failed: {e}")))??;
    match dst_task
        .await
        .map_err(|e| Error::Dest(format!("the listing task failed: {e}")))?
    {
        Err(Error::NoSuchBucket(_)) | Ok(()) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

async fn compare_history(
    source: &Source,
    dest: &Dest,
    key: &str,
    src: &[crate::history::Version],
    dst: &[crate::history::Version],
    limits: &Limits,
    lock: bool,
) -> Vec<Difference> {
    let shape = |h: &[crate::history::Version]| -> String {
        h.iter().map(|v| if v.marker { 'D' } else { 'V' }).collect()
    };
    if shape(src) != shape(dst) {
        return vec![diff(
            key,
            "history",
            format!(
                "{} at the source, {} here (V a version, D a delete marker, oldest first)",
                shape(src),
                shape(dst)
            ),
        )];
    }
    let mut out = Vec::new();
    let n = src.len();
    for (i, (a, b)) in src.iter().zip(dst).enumerate() {
        if a.marker {
            continue;
        }
        let found = match compare(source, dest, &a.entry, &b.entry, limits, lock).await {
            Ok(v) => v,
            Err(e) => vec![diff(key, "error", e.to_string())],
        };
        out.extend(found.into_iter().map(|mut d| {
            d.key = format!("{key} (version {} of {n})", i + 1);
            d
        }));
    }
    out
}

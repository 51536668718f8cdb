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

/// Every difference, in key order.
pub async fn verify(
    source: Source,
    dest: Dest,
    checkers: usize,
    limits: Limits,
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
                let found = match compare(&source, &dest, &s, &d, &limits).await {
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
    let Some(head) = dest.head(&s.key).await? else {
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
    // HEAD carries no tag count (S3 sends x-amz-tagging-count on GET only), so the tag sets
    // are always read: a directory source has none, and then only the region's is.
    {
        let (ta, tb) = (
            source.tagging(s, limits).await?,
            dest.tagging(&s.key).await?,
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

fn lookup<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

//! Large-object phases: `N` concurrent streams each PUT then GET one object of
//! `--large-size` bytes, reported in MiB/s. The PUT body is generated as it is sent, so the
//! generator's memory stays flat whatever the size.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::client::{Body, Ctx, drain};
use super::{Row, RssSampler};

const CHUNK: usize = 1024 * 1024;

pub(crate) async fn large_phase(
    ctx: &Arc<Ctx>,
    op: &'static str,
    streams: usize,
    size: u64,
    pid: Option<u32>,
) -> anyhow::Result<Row> {
    let rss = RssSampler::start(pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..streams {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("large-{streams}-{i}");
            let t = Instant::now();
            let ok = if op == "PUT" {
                let chunk = if ctx.storage_class.is_some() {
                    log_text(CHUNK, i as u64)
                } else {
                    Bytes::from((0..CHUNK).map(|j| (j * 31 + i) as u8).collect::<Vec<_>>())
                };
                let n_full = size / CHUNK as u64;
                let tail = (size % CHUNK as u64) as usize;
                let chunks = futures::stream::iter((0..n_full).map(move |_| chunk.clone()))
                    .chain(futures::stream::iter(
                        (tail > 0).then(|| Bytes::from(vec![7u8; tail])),
                    ))
                    .map(|b| Ok::<_, Infallible>(Frame::data(b)));
                let body = SizedBody {
                    inner: StreamBody::new(chunks),
                    size,
                }
                .boxed();
                match ctx.request("PUT", &key, body).await {
                    Ok((200, b)) => drain(b).await.is_some(),
                    Ok((_, b)) => {
                        drain(b).await;
                        false
                    }
                    Err(_) => false,
                }
            } else {
                match ctx.request("GET", &key, Body::default()).await {
                    Ok((200, b)) => drain(b).await == Some(size),
                    _ => false,
                }
            };
            (ok, t.elapsed())
        }));
    }
    let mut ok = 0;
    let mut errors = 0;
    let mut lat = Vec::new();
    for t in tasks {
        let (good, d) = t.await?;
        if good {
            ok += 1;
        } else {
            errors += 1;
        }
        lat.push(d.as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let seconds = start.elapsed().as_secs_f64();
    Ok(Row {
        target: ctx.endpoint(),
        phase: format!("{op} {} MiB", size / 1048576),
        concurrency: streams,
        ops: ok,
        errors,
        seconds,
        ops_per_sec: ok as f64 / seconds,
        mib_per_sec: (ok * size) as f64 / seconds / 1048576.0,
        p50_ms: lat[lat.len() / 2],
        p99_ms: *lat.last().unwrap_or(&0.0),
        peak_rss_mib: rss.finish().await,
    })
}

/// Access-log-like lines: compresses about as well as the data people move to cold storage.
fn log_text(len: usize, seed: u64) -> Bytes {
    let mut out = Vec::with_capacity(len + 128);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(
            format!(
                "10.{}.{}.{} - - [24/Nov/2026:10:{:02}:{:02} +0000] \"GET /api/v1/items/{} HTTP/1.1\" {} {} \"-\" \"client/{}\"\n",
                x % 256,
                (x >> 8) % 256,
                (x >> 16) % 256,
                (x >> 24) % 60,
                (x >> 30) % 60,
                (x >> 36) % 100_000,
                [200, 200, 200, 304, 404][((x >> 50) % 5) as usize],
                (x >> 40) % 50_000,
                (x >> 56) % 9
            )
            .as_bytes(),
        );
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A streaming body that announces its exact length (so it is sent with Content-Length).
struct SizedBody<S> {
    inner: StreamBody<S>,
    size: u64,
}

impl<S> http_body::Body for SizedBody<S>
where
    S: futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Unpin,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.size)
    }
}

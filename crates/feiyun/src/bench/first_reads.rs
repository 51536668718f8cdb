//! `--first-reads N`: the latency a live migration adds to a read (`feiyun migrate live`).
//! Writes N small objects to the legacy store (`--compare`), then reads each through the
//! live bucket at `--endpoint` twice in a row, one request at a time: the first read is the
//! read-through (HEAD and GET of the legacy store, verify, store), the second an ordinary
//! GET of the same bytes. Pairing the two per key keeps a noisy machine's drift out of the
//! difference; one request at a time measures service time, with no queue to hide.

use std::time::Instant;

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::{Body, Ctx, Row, drain};

async fn timed_get(ctx: &Ctx, key: &str, want: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let (status, body) = ctx.request("GET", key, Body::default()).await?;
    let n = drain(body).await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if status != 200 || n != Some(want) {
        bail!("GET {key}: HTTP {status}, {n:?} bytes of {want}");
    }
    Ok(ms)
}

fn row(target: &str, phase: &str, mut ms: Vec<f64>, size: usize) -> Row {
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    let seconds = ms.iter().sum::<f64>() / 1000.0;
    Row {
        target: target.to_owned(),
        phase: phase.to_owned(),
        concurrency: 1,
        ops: ms.len() as u64,
        errors: 0,
        seconds,
        ops_per_sec: ms.len() as f64 / seconds,
        mib_per_sec: (ms.len() * size) as f64 / seconds / (1 << 20) as f64,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        peak_rss_mib: None,
    }
}

pub(crate) async fn run(
    live: &Ctx,
    legacy: &Ctx,
    n: usize,
    size: usize,
) -> anyhow::Result<Vec<Row>> {
    if n == 0 {
        bail!("--first-reads needs at least one key");
    }
    let payload = Bytes::from(vec![b'r'; size]);
    let keys: Vec<String> = (0..n).map(|i| format!("first-{i:07}")).collect();
    for chunk in keys.chunks(32) {
        let payload = &payload;
        let puts = chunk.iter().map(|k| async move {
            let (status, b) = legacy
                .request("PUT", k, Full::new(payload.clone()).boxed())
                .await?;
            drain(b).await;
            if status != 200 {
                bail!("PUT {k} to the legacy store: HTTP {status}");
            }
            Ok(())
        });
        for r in futures::future::join_all(puts).await {
            r?;
        }
    }
    let (mut first, mut held, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for k in &keys {
        first.push(timed_get(live, k, size as u64).await?);
        held.push(timed_get(live, k, size as u64).await?);
        direct.push(timed_get(legacy, k, size as u64).await?);
    }
    let (l, o) = (live.endpoint(), legacy.endpoint());
    Ok(vec![
        row(&l, "GET read-through", first, size),
        row(&l, "GET held", held, size),
        row(&o, "GET legacy", direct, size),
    ])
}

//! `feiyun bench --http-get URL`: unsigned GETs of one URL at each `--concurrency` for
//! `--duration-secs`, counting 200 answers with a body as done and anything else as an
//! error — the load for Function Compute benchmarks, aimed alike at a function's URL and at
//! `wasmtime serve` serving the same component.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::bench::{BenchArgs, Row, RssSampler, percentile_ms};

pub(crate) async fn run(url: &str, args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    let uri: hyper::Uri = url.parse().context("--http-get is not a URL")?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "--http-get takes an http:// URL"
    );
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    // One request first: a URL that does not answer 200 is a setup mistake, not a result.
    let resp = client
        .get(uri.clone())
        .await
        .context("cannot reach --http-get")?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    anyhow::ensure!(status == 200, "{url} answered {status}");
    let mut rows = Vec::new();
    for &c in &args.concurrency {
        rows.push(
            phase(
                &client,
                &uri,
                c,
                Duration::from_secs(args.duration_secs),
                args.server_pid,
            )
            .await?,
        );
    }
    Ok(rows)
}

async fn phase(
    client: &Client<HttpConnector, Empty<Bytes>>,
    uri: &hyper::Uri,
    concurrency: usize,
    duration: Duration,
    pid: Option<u32>,
) -> anyhow::Result<Row> {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let rss = RssSampler::start(pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, uri, stop, errors) =
            (client.clone(), uri.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match client.get(uri.clone()).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                        status == 200 && body.is_ok_and(|b| !b.is_empty())
                    }
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p| percentile_ms(&lat, p);
    let ops = lat.len() as u64;
    Ok(Row {
        phase: "GET url".into(),
        concurrency,
        ops,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        ops_per_sec: ops as f64 / seconds,
        mib_per_sec: 0.0,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        peak_rss_mib: rss.finish().await,
    })
}

//! `feiyun bench`: a load generator for any S3 endpoint (Feiyun or another).
//!
//! Small-object phases: PUT then GET of `--small-size` objects at each `--concurrency`, each for
//! `--duration-secs`, reporting ops/s and p50/p99 latency. Large-object phases: `N` concurrent
//! PUTs then GETs of `--large-size` objects for each `--large-streams` N, reporting MiB/s.
//! Requests are signed with SigV4 (`UNSIGNED-PAYLOAD`) by a minimal client so the generator's
//! own cost stays small next to the server's on a shared machine. With `--server-pid`, the
//! server's peak RSS is sampled from /proc during each phase.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::sigv4::{self, Signer};

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// S3 endpoint to load
    #[arg(long, env = "FEIYUN_ENDPOINT", default_value = "http://127.0.0.1:9000")]
    pub(crate) endpoint: String,
    /// Access key [default: AWS_ACCESS_KEY_ID, then FEIYUN_ROOT_ACCESS_KEY]
    #[arg(long)]
    pub(crate) access_key: Option<String>,
    /// Secret key [default: AWS_SECRET_ACCESS_KEY, then FEIYUN_ROOT_SECRET_KEY]
    #[arg(long)]
    pub(crate) secret_key: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    pub(crate) region: String,
    /// Bucket to use (created if missing)
    #[arg(long, default_value = "feiyun-bench")]
    pub(crate) bucket: String,
    /// Size of small objects in bytes
    #[arg(long, default_value_t = 4096)]
    pub(crate) small_size: usize,
    /// Seconds each small-object phase runs
    #[arg(long, default_value_t = 10)]
    pub(crate) duration_secs: u64,
    /// Comma-separated connection counts for small objects
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    pub(crate) concurrency: Vec<usize>,
    /// Size of large objects in bytes
    #[arg(long, default_value_t = 1 << 30)]
    pub(crate) large_size: u64,
    /// Comma-separated concurrent streams for large objects
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    pub(crate) large_streams: Vec<usize>,
    #[arg(long)]
    pub(crate) skip_small: bool,
    #[arg(long)]
    pub(crate) skip_large: bool,
    /// Sample this process's resident memory (the server, when it runs here)
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Print results as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Load one URL with unsigned GETs instead (a function's URL, or `wasmtime serve`
    /// beside it): requests/s and latency at each `--concurrency`
    #[arg(long, value_name = "URL")]
    pub(crate) http_get: Option<String>,
    /// Run the versioning benchmarks instead: PUT on a versioned vs an unversioned bucket,
    /// and ListObjectVersions over `--list-keys` × `--list-versions`
    #[arg(long)]
    pub(crate) versioning: bool,
    /// Only PUT small objects, at this fixed rate (requests started per second, whatever
    /// their latency), for `--duration-secs`: a steady load, e.g. to measure replication lag
    #[arg(long, value_name = "OPS")]
    pub(crate) rate: Option<u32>,
    /// Keys written for the ListObjectVersions benchmark
    #[arg(long, default_value_t = 100_000)]
    pub(crate) list_keys: usize,
    /// Versions written per key for the ListObjectVersions benchmark
    #[arg(long, default_value_t = 5)]
    pub(crate) list_versions: usize,
    /// Write large objects in this storage class (e.g. GLACIER_IR, the compressed cold class).
    /// The payload is then log-like text rather than a byte pattern, so compression sees
    /// realistic data; pass STANDARD for the same payload uncompressed.
    #[arg(long)]
    pub(crate) storage_class: Option<String>,
}

/// Upper bound on connections, streams and phase length, so a typo cannot run forever.
const MAX_CONCURRENCY: usize = 1024;
const MAX_DURATION_SECS: u64 = 3600;
const CHUNK: usize = 1024 * 1024;

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) struct Ctx {
    client: Client<HttpConnector, Body>,
    signer: Signer,
    base: hyper::Uri,
    host: String,
    pub(crate) bucket: String,
    /// `x-amz-storage-class` sent (and signed) on PUTs of objects.
    storage_class: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) phase: String,
    pub(crate) concurrency: usize,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) ops_per_sec: f64,
    pub(crate) mib_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) peak_rss_mib: Option<f64>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args
        .concurrency
        .iter()
        .chain(&args.large_streams)
        .any(|c| *c == 0 || *c > MAX_CONCURRENCY)
    {
        bail!("concurrency and streams must be between 1 and {MAX_CONCURRENCY}");
    }
    if args.duration_secs == 0 || args.duration_secs > MAX_DURATION_SECS {
        bail!("--duration-secs must be between 1 and {MAX_DURATION_SECS}");
    }
    if let Some(url) = &args.http_get {
        let rows = crate::bench_http::run(url, &args).await?;
        print(&rows, &args);
        return Ok(());
    }
    let env = |a: &str, b: &str| std::env::var(a).or_else(|_| std::env::var(b)).ok();
    let access_key = args
        .access_key
        .clone()
        .or_else(|| env("AWS_ACCESS_KEY_ID", "FEIYUN_ROOT_ACCESS_KEY"))
        .context("no access key: pass --access-key or set AWS_ACCESS_KEY_ID")?;
    let secret_key = args
        .secret_key
        .clone()
        .or_else(|| env("AWS_SECRET_ACCESS_KEY", "FEIYUN_ROOT_SECRET_KEY"))
        .context("no secret key: pass --secret-key or set AWS_SECRET_ACCESS_KEY")?;
    let base: hyper::Uri = args.endpoint.parse().context("invalid --endpoint")?;
    let host = base
        .authority()
        .context("--endpoint needs a host")?
        .to_string();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_CONCURRENCY)
        .build(connector);
    let ctx = Arc::new(Ctx {
        client,
        signer: Signer {
            access_key,
            secret_key,
            region: args.region.clone(),
        },
        base,
        host,
        bucket: args.bucket.clone(),
        storage_class: args.storage_class.clone(),
    });
    let (status, _) = ctx.request("PUT", "", Body::default()).await?;
    if !(status == 200 || status == 409) {
        bail!("cannot create bucket {}: HTTP {status}", args.bucket);
    }

    let mut rows = Vec::new();
    if let Some(rate) = args.rate {
        if rate == 0 || rate > 100_000 {
            bail!("--rate must be between 1 and 100000");
        }
        let payload = Bytes::from(vec![b'r'; args.small_size]);
        let duration = Duration::from_secs(args.duration_secs);
        rows.push(rate_phase(&ctx, rate, duration, &payload, args.server_pid).await?);
        print(&rows, &args);
        return Ok(());
    }
    if args.versioning {
        rows.extend(crate::bench_versions::run(&ctx, &args).await?);
        print(&rows, &args);
        return Ok(());
    }
    if !args.skip_small {
        let payload = Bytes::from(vec![b'x'; args.small_size]);
        for &c in &args.concurrency {
            let duration = Duration::from_secs(args.duration_secs);
            let (row, written) =
                small_phase(&ctx, "PUT", c, duration, &payload, &[], args.server_pid).await?;
            rows.push(row);
            let (row, _) = small_phase(
                &ctx,
                "GET",
                c,
                duration,
                &payload,
                &written,
                args.server_pid,
            )
            .await?;
            rows.push(row);
        }
    }
    if !args.skip_large {
        for &s in &args.large_streams {
            rows.push(large_phase(&ctx, "PUT", s, args.large_size, args.server_pid).await?);
            rows.push(large_phase(&ctx, "GET", s, args.large_size, args.server_pid).await?);
            for i in 0..s {
                let _ = ctx
                    .request("DELETE", &format!("large-{s}-{i}"), Body::default())
                    .await;
            }
        }
    }
    print(&rows, &args);
    Ok(())
}

impl Ctx {
    pub(crate) fn with_bucket(&self, bucket: &str) -> Ctx {
        Ctx {
            client: self.client.clone(),
            signer: Signer {
                access_key: self.signer.access_key.clone(),
                secret_key: self.signer.secret_key.clone(),
                region: self.signer.region.clone(),
            },
            base: self.base.clone(),
            host: self.host.clone(),
            bucket: bucket.to_owned(),
            storage_class: None,
        }
    }

    pub(crate) async fn request(
        &self,
        method: &str,
        key: &str,
        body: Body,
    ) -> anyhow::Result<(u16, hyper::body::Incoming)> {
        self.request_q(method, key, "", body).await
    }

    /// A signed request; `query` is sent as given (its values already URI-encoded).
    pub(crate) async fn request_q(
        &self,
        method: &str,
        key: &str,
        query: &str,
        body: Body,
    ) -> anyhow::Result<(u16, hyper::body::Incoming)> {
        let path = if key.is_empty() {
            format!("/{}", self.bucket)
        } else {
            format!("/{}/{}", self.bucket, key)
        };
        let date = sigv4::now_amz_date();
        let mut headers = vec![("host", self.host.clone())];
        if let Some(class) = self
            .storage_class
            .as_ref()
            .filter(|_| method == "PUT" && !key.is_empty())
        {
            headers.push(("x-amz-storage-class", class.clone()));
        }
        let signed = self
            .signer
            .sign(method, &path, query, &headers, sigv4::UNSIGNED, &date);
        let scheme = self.base.scheme_str().unwrap_or("http");
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(if query.is_empty() {
                format!("{scheme}://{}{path}", self.host)
            } else {
                format!("{scheme}://{}{path}?{query}", self.host)
            })
            .header("host", &self.host);
        for (k, v) in headers.iter().skip(1) {
            req = req.header(*k, v);
        }
        for (k, v) in signed {
            req = req.header(k, v);
        }
        let size = http_body::Body::size_hint(&body).exact();
        if let Some(n) = size {
            req = req.header("content-length", n);
        }
        let resp = self.client.request(req.body(body)?).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body()))
    }
}

/// Drains a response body; returns its length, or `None` if the connection failed.
pub(crate) async fn drain(mut body: hyper::body::Incoming) -> Option<u64> {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.ok()?.data_ref() {
            n += d.len() as u64;
        }
    }
    Some(n)
}

/// The `p` quantile of sorted microsecond latencies, in milliseconds (0 when empty).
pub(crate) fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

pub(crate) async fn small_phase(
    ctx: &Arc<Ctx>,
    op: &'static str,
    concurrency: usize,
    duration: Duration,
    payload: &Bytes,
    keys: &[String],
    pid: Option<u32>,
) -> anyhow::Result<(Row, Vec<String>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys.to_vec());
    let rss = RssSampler::start(pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let ctx = ctx.clone();
        let stop = stop.clone();
        let errors = errors.clone();
        let payload = payload.clone();
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut written = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = if op == "PUT" {
                    let key = format!("small-{concurrency}-{w}-{i}");
                    let r = ctx
                        .request("PUT", &key, Full::new(payload.clone()).boxed())
                        .await;
                    match r {
                        Ok((200, b)) => {
                            let ok = drain(b).await.is_some();
                            if ok {
                                written.push(key);
                            }
                            ok
                        }
                        Ok((_, b)) => {
                            drain(b).await;
                            false
                        }
                        Err(_) => false,
                    }
                } else {
                    let key = &keys[(i * 7919 + w * 104_729) % keys.len().max(1)];
                    match ctx.request("GET", key, Body::default()).await {
                        Ok((200, b)) => drain(b).await == Some(payload.len() as u64),
                        Ok((_, b)) => {
                            drain(b).await;
                            false
                        }
                        Err(_) => false,
                    }
                };
                if ok {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            (lat, written)
        }));
    }
    if op == "GET" && keys.is_empty() {
        stop.store(true, Ordering::Relaxed);
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut written = Vec::new();
    for t in tasks {
        let (l, w) = t.await?;
        lat.extend(l);
        written.extend(w);
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p| percentile_ms(&lat, p);
    let ops = lat.len() as u64;
    Ok((
        Row {
            phase: format!("{op} {} B", payload.len()),
            concurrency,
            ops,
            errors: errors.load(Ordering::Relaxed),
            seconds,
            ops_per_sec: ops as f64 / seconds,
            mib_per_sec: ops as f64 * payload.len() as f64 / seconds / 1048576.0,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            peak_rss_mib: rss.finish().await,
        },
        written,
    ))
}

/// PUTs started at a fixed rate (open loop: a slow answer does not slow the schedule, up
/// to `MAX_CONCURRENCY` in flight).
async fn rate_phase(
    ctx: &Arc<Ctx>,
    rate: u32,
    duration: Duration,
    payload: &Bytes,
    pid: Option<u32>,
) -> anyhow::Result<Row> {
    let rss = RssSampler::start(pid);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENCY));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while start.elapsed() < duration {
        // Request i is due at start + i/rate whatever happened before: its latency is
        // measured from then, so time spent queued behind slow requests (or waiting for a
        // connection slot) counts — no coordinated omission.
        let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let permit = slots.clone().acquire_owned().await?;
        let (ctx, errors, payload) = (ctx.clone(), errors.clone(), payload.clone());
        let key = format!("rate-{rate}-{i}");
        i += 1;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t = due;
            let ok = match ctx.request("PUT", &key, Full::new(payload).boxed()).await {
                Ok((200, b)) => drain(b).await.is_some(),
                Ok((_, b)) => {
                    drain(b).await;
                    false
                }
                Err(_) => false,
            };
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            ok.then(|| t.elapsed().as_micros() as u32)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        if let Some(l) = t.await? {
            lat.push(l);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let ops = lat.len() as u64;
    Ok(Row {
        phase: format!("PUT {} B at {rate}/s", payload.len()),
        concurrency: 0,
        ops,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        ops_per_sec: ops as f64 / seconds,
        mib_per_sec: ops as f64 * payload.len() as f64 / seconds / 1048576.0,
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
        peak_rss_mib: rss.finish().await,
    })
}

async fn large_phase(
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

/// Samples a process's VmRSS every 50 ms and keeps the peak.
pub(crate) struct RssSampler {
    task: Option<(Arc<AtomicBool>, tokio::task::JoinHandle<u64>)>,
}

impl RssSampler {
    pub(crate) fn start(pid: Option<u32>) -> Self {
        let Some(pid) = pid else {
            return Self { task: None };
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                if let Ok(text) = tokio::fs::read_to_string(format!("/proc/{pid}/status")).await {
                    for line in text.lines() {
                        if let Some(v) = line.strip_prefix("VmRSS:") {
                            let kb: u64 =
                                v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                            peak = peak.max(kb);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        });
        Self {
            task: Some((stop, handle)),
        }
    }

    pub(crate) async fn finish(self) -> Option<f64> {
        let (stop, handle) = self.task?;
        stop.store(true, Ordering::Relaxed);
        handle.await.ok().map(|kb| kb as f64 / 1024.0)
    }
}

pub(crate) fn print(rows: &[Row], args: &BenchArgs) {
    if args.json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "phase": r.phase, "concurrency": r.concurrency, "ops": r.ops,
                    "errors": r.errors, "seconds": r.seconds, "ops_per_sec": r.ops_per_sec,
                    "mib_per_sec": r.mib_per_sec, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                    "peak_rss_mib": r.peak_rss_mib,
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(items));
        return;
    }
    outln!("endpoint {}", args.endpoint);
    outln!(
        "{:<16} {:>5} {:>9} {:>6} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "phase",
        "conc",
        "ops",
        "errors",
        "ops/s",
        "MiB/s",
        "p50 ms",
        "p99 ms",
        "rss MiB"
    );
    for r in rows {
        outln!(
            "{:<16} {:>5} {:>9} {:>6} {:>10.0} {:>10.1} {:>9.2} {:>9.2} {:>9}",
            r.phase,
            r.concurrency,
            r.ops,
            r.errors,
            r.ops_per_sec,
            r.mib_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.peak_rss_mib.map_or("-".to_owned(), |m| format!("{m:.0}"))
        );
    }
}

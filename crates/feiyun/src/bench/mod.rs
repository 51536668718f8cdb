//! `feiyun bench`: a load generator for any S3 endpoint (Feiyun or another), and for a web
//! server beside it, so that both are measured in one run.
//!
//! Small-object phases (`load`): PUT then GET of `--small-size` objects over each
//! `--concurrency` connections for `--duration-secs`, as fast as answers come or at a fixed
//! `--rate` timed from the schedule. PUTs write a fresh key each time, or overwrite
//! `--keys N` keys (one key: every PUT replaces it); requests are signed in the header or
//! presigned (`--auth`). Large-object phases (`large`): `N` concurrent PUTs then GETs of
//! `--large-size` objects for each `--large-streams` N, in MiB/s. With `--compare` (another
//! S3 endpoint) and `--compare-url` (a web server's copy of the small object), every phase
//! also runs against them, right after, and the ratio is printed. With `--server-pid`, the
//! server's peak RSS is sampled from /proc during each phase.

mod client;
mod first_reads;
mod large;
mod load;
mod versions;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

pub(crate) use client::{Auth, Body, Ctx, drain};
use load::{Load, SmallOp};

use crate::sigv4::Signer;

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
    /// Small-object phases to run, in order: put, get [default: put,get; put with --rate]
    #[arg(long, value_delimiter = ',', value_parser = ["put", "get"])]
    pub(crate) ops: Option<Vec<String>>,
    /// 0: every PUT writes a new key and GETs read them. N: PUTs overwrite N keys in turn
    /// (1: all on one key) and GETs read those N
    #[arg(long, default_value_t = 0)]
    pub(crate) keys: usize,
    /// How requests are signed
    #[arg(long, value_enum, default_value = "header")]
    pub(crate) auth: Auth,
    /// Start small-object requests at this fixed rate (per second, over all connections),
    /// latency timed from when each was due; alone it runs only the PUT phase
    #[arg(long, value_name = "OPS")]
    pub(crate) rate: Option<u32>,
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
    /// Another S3 endpoint to run every phase against too, right after this one
    #[arg(long, value_name = "ENDPOINT")]
    pub(crate) compare: Option<String>,
    /// Its access key [default: the same as --access-key]
    #[arg(long)]
    pub(crate) compare_access_key: Option<String>,
    /// Its secret key [default: the same as --secret-key]
    #[arg(long)]
    pub(crate) compare_secret_key: Option<String>,
    /// Its region [default: --region]
    #[arg(long)]
    pub(crate) compare_region: Option<String>,
    /// A web server's URL of a file of --small-size bytes: each small GET phase runs
    /// against it too, unsigned (nginx serving the same bytes from the same disk)
    #[arg(long, value_name = "URL")]
    pub(crate) compare_url: Option<String>,
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
    /// Measure what a live migration adds to a read instead: write N objects of
    /// --small-size to the legacy store at --compare, then GET each through the live
    /// bucket at --endpoint twice (read-through, then held) and once from the legacy store
    #[arg(long, value_name = "N")]
    pub(crate) first_reads: Option<usize>,
}

/// Upper bound on connections, streams, keys and phase length, so a typo cannot run for ever.
pub(crate) const MAX_CONCURRENCY: usize = 1024;
const MAX_DURATION_SECS: u64 = 3600;
const MAX_KEYS: usize = 1_000_000;

#[derive(Debug)]
pub(crate) struct Row {
    /// The endpoint (or URL) measured.
    pub(crate) target: String,
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

/// One S3 endpoint under load, and what its phases have written so far.
struct Target {
    ctx: Arc<Ctx>,
    written: Vec<String>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    check(&args)?;
    if let Some(url) = &args.http_get {
        let rows = http_get(url, &args).await?;
        print(&rows, &[], &args);
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
    let signer = Signer {
        access_key,
        secret_key,
        region: args.region.clone(),
    };
    let ctx = Arc::new(
        Ctx::new(
            &args.endpoint,
            signer.clone(),
            &args.bucket,
            args.auth,
            args.storage_class.clone(),
        )
        .context("--endpoint")?,
    );
    let mut targets = vec![Target {
        ctx: ctx.clone(),
        written: Vec::new(),
    }];
    if let Some(other) = &args.compare {
        let signer = Signer {
            access_key: args
                .compare_access_key
                .clone()
                .unwrap_or(signer.access_key.clone()),
            secret_key: args
                .compare_secret_key
                .clone()
                .unwrap_or(signer.secret_key.clone()),
            region: args.compare_region.clone().unwrap_or(args.region.clone()),
        };
        let c = Ctx::new(
            other,
            signer,
            &args.bucket,
            args.auth,
            args.storage_class.clone(),
        )
        .context("--compare")?;
        targets.push(Target {
            ctx: Arc::new(c),
            written: Vec::new(),
        });
    }
    for t in &targets {
        create_bucket(&t.ctx).await?;
    }
    if let Some(n) = args.first_reads {
        let Some(legacy) = targets.get(1) else {
            bail!("--first-reads needs the legacy store as --compare");
        };
        let rows = first_reads::run(&ctx, &legacy.ctx, n.min(MAX_KEYS), args.small_size).await?;
        print(&rows, &[], &args);
        return Ok(());
    }
    if args.versioning {
        let rows = versions::run(&ctx, &args).await?;
        print(&rows, &[], &args);
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    if !args.skip_small {
        small_phases(&args, &mut targets, &mut rows, &mut ratios).await?;
    }
    if !args.skip_large && args.rate.is_none() {
        for &s in &args.large_streams {
            for op in ["PUT", "GET"] {
                let mut group = Vec::new();
                for t in &targets {
                    group.push(
                        large::large_phase(&t.ctx, op, s, args.large_size, args.server_pid).await?,
                    );
                }
                ratios.extend(ratio(&group, true));
                rows.extend(group);
            }
            for t in &targets {
                for i in 0..s {
                    let _ = t
                        .ctx
                        .request("DELETE", &format!("large-{s}-{i}"), Body::default())
                        .await;
                }
            }
        }
    }
    print(&rows, &ratios, &args);
    Ok(())
}

fn check(args: &BenchArgs) -> anyhow::Result<()> {
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
    if args.rate.is_some_and(|r| r == 0 || r > 100_000) {
        bail!("--rate must be between 1 and 100000");
    }
    if args.keys > MAX_KEYS {
        bail!("--keys must be at most {MAX_KEYS}");
    }
    Ok(())
}

async fn create_bucket(ctx: &Ctx) -> anyhow::Result<()> {
    let (status, b) = ctx.request("PUT", "", Body::default()).await?;
    drain(b).await;
    if !(status == 200 || status == 409) {
        bail!(
            "cannot create bucket {} at {}: HTTP {status}",
            ctx.bucket,
            ctx.endpoint()
        );
    }
    Ok(())
}

/// The small-object phases at each concurrency: every op against every target in turn (and
/// GETs against `--compare-url`), so that drift on a noisy machine hits them alike.
async fn small_phases(
    args: &BenchArgs,
    targets: &mut [Target],
    rows: &mut Vec<Row>,
    ratios: &mut Vec<String>,
) -> anyhow::Result<()> {
    let payload = Bytes::from(vec![b'x'; args.small_size]);
    let default_ops = if args.rate.is_some() {
        "put"
    } else {
        "put,get"
    };
    let ops: Vec<String> = args
        .ops
        .clone()
        .unwrap_or_else(|| default_ops.split(',').map(str::to_owned).collect());
    let hot: Arc<Vec<String>> = Arc::new((0..args.keys).map(|i| format!("hot-{i}")).collect());
    if !hot.is_empty() {
        for t in targets.iter() {
            fill(&t.ctx, &hot, &payload).await?;
        }
    }
    let url = match &args.compare_url {
        Some(u) => Some((
            u.parse::<hyper::Uri>().context("--compare-url")?,
            Arc::new(url_ctx(u)?),
        )),
        None => None,
    };
    for &c in &args.concurrency {
        let load = Load {
            connections: c,
            duration: Duration::from_secs(args.duration_secs),
            rate: args.rate,
        };
        for op in &ops {
            let mut group = Vec::new();
            for t in targets.iter_mut() {
                let small_op = match (op.as_str(), hot.is_empty()) {
                    ("put", true) => SmallOp::PutFresh,
                    ("put", false) => SmallOp::PutOver(hot.clone()),
                    (_, false) => SmallOp::Get(hot.clone()),
                    (_, true) if t.written.is_empty() => {
                        bail!("a GET phase needs --keys N or a PUT phase before it")
                    }
                    (_, true) => SmallOp::Get(Arc::new(std::mem::take(&mut t.written))),
                };
                let (row, written) =
                    load::small(&t.ctx, small_op, load, &payload, args.server_pid).await?;
                t.written.extend(written);
                group.push(row);
            }
            if let (Some((uri, ctx)), "get") = (&url, op.as_str()) {
                let (row, _) =
                    load::small(ctx, SmallOp::Url(uri.clone()), load, &payload, None).await?;
                group.push(row);
            }
            ratios.extend(ratio(&group, false));
            rows.extend(group);
        }
    }
    Ok(())
}

/// Writes each of `keys` once, 32 at a time, so GETs and overwrites find them.
async fn fill(ctx: &Arc<Ctx>, keys: &Arc<Vec<String>>, payload: &Bytes) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..32.min(keys.len()) {
        let (ctx, keys, next, failed, payload) = (
            ctx.clone(),
            keys.clone(),
            next.clone(),
            failed.clone(),
            payload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else { break };
                match ctx
                    .request("PUT", key, Full::new(payload.clone()).boxed())
                    .await
                {
                    Ok((200, b)) => {
                        drain(b).await;
                    }
                    _ => failed.store(true, Ordering::Relaxed),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    if failed.load(Ordering::Relaxed) {
        bail!("cannot write the --keys objects at {}", ctx.endpoint());
    }
    Ok(())
}

/// A context whose client reaches `url`'s host, for unsigned GETs.
fn url_ctx(url: &str) -> anyhow::Result<Ctx> {
    let uri: hyper::Uri = url.parse().context("not a URL")?;
    let base = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().context("the URL needs a host")?
    );
    let nobody = Signer {
        access_key: String::new(),
        secret_key: String::new(),
        region: String::new(),
    };
    Ctx::new(&base, nobody, "", Auth::Header, None)
}

/// `--http-get URL`: unsigned GETs of one URL at each `--concurrency`.
async fn http_get(url: &str, args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    let uri: hyper::Uri = url.parse().context("--http-get is not a URL")?;
    let ctx = Arc::new(url_ctx(url).context("--http-get")?);
    // One request first: a URL that does not answer 200 is a setup mistake, not a result.
    let (status, b) = ctx.get_url(&uri).await.context("cannot reach --http-get")?;
    drain(b).await;
    anyhow::ensure!(status == 200, "{url} answered {status}");
    let mut rows = Vec::new();
    for &c in &args.concurrency {
        let load = Load {
            connections: c,
            duration: Duration::from_secs(args.duration_secs),
            rate: args.rate,
        };
        let op = SmallOp::Url(uri.clone());
        rows.push(
            load::small(&ctx, op, load, &Bytes::new(), args.server_pid)
                .await?
                .0,
        );
    }
    Ok(rows)
}

/// "first ÷ other" for each other row of a group run against several targets.
fn ratio(group: &[Row], bandwidth: bool) -> Vec<String> {
    let Some((first, others)) = group.split_first() else {
        return Vec::new();
    };
    let measure = |r: &Row| {
        if bandwidth {
            r.mib_per_sec
        } else {
            r.ops_per_sec
        }
    };
    others
        .iter()
        .map(|o| {
            format!(
                "{} at {}: {} ÷ {} = {:.2}",
                first.phase,
                first.concurrency,
                first.target,
                o.target,
                measure(first) / measure(o).max(f64::MIN_POSITIVE)
            )
        })
        .collect()
}

/// The `p` quantile of sorted microsecond latencies, in milliseconds (0 when empty).
pub(crate) fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
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

pub(crate) fn print(rows: &[Row], ratios: &[String], args: &BenchArgs) {
    if args.json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "target": r.target, "phase": r.phase, "concurrency": r.concurrency,
                    "ops": r.ops, "errors": r.errors, "seconds": r.seconds,
                    "ops_per_sec": r.ops_per_sec, "mib_per_sec": r.mib_per_sec,
                    "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "peak_rss_mib": r.peak_rss_mib,
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(items));
        return;
    }
    let width = rows.iter().map(|r| r.phase.len()).max().unwrap_or(5).max(5);
    outln!(
        "{:<24} {:<width$} {:>5} {:>9} {:>6} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "target",
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
        let target = r
            .target
            .trim_start_matches("http://")
            .chars()
            .take(24)
            .collect::<String>();
        outln!(
            "{:<24} {:<width$} {:>5} {:>9} {:>6} {:>10.0} {:>10.1} {:>9.2} {:>9.2} {:>9}",
            target,
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
    for r in ratios {
        outln!("{r}");
    }
}

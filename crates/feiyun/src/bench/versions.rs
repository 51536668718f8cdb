//! `feiyun bench --versioning`: what versioning costs.
//!
//! 1. PUT throughput on a versioned bucket against an unversioned one, phases interleaved
//!    (plain, versioned, plain, versioned) so that drift on a noisy machine hits both; the
//!    ratio of the medians is reported.
//! 2. ListObjectVersions over `--list-keys` keys × `--list-versions` versions, paged 1000 at a
//!    time, in versions listed per second; and ListObjectsV2 over the same bucket and over one
//!    with the same keys and a single version each, to show that listing current objects does
//!    not pay for noncurrent versions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::{BenchArgs, Body, Ctx, Row, drain};

const PAGE: usize = 1000;
const FILL_CONCURRENCY: usize = 64;

pub(crate) async fn run(ctx: &Arc<Ctx>, args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let base = &args.bucket;
    let plain = Arc::new(ctx.with_bucket(&format!("{base}-plain")));
    let versioned = Arc::new(ctx.with_bucket(&format!("{base}-versioned")));
    create(&plain, false).await?;
    create(&versioned, true).await?;
    let payload = Bytes::from(vec![b'v'; args.small_size]);
    let c = args.concurrency.first().copied().unwrap_or(16);
    let duration = Duration::from_secs(args.duration_secs);
    let mut plain_ops = Vec::new();
    let mut versioned_ops = Vec::new();
    for _ in 0..2 {
        for (ctx, name, acc) in [
            (&plain, "PUT unversioned", &mut plain_ops),
            (&versioned, "PUT versioned", &mut versioned_ops),
        ] {
            let load = super::load::Load {
                connections: c,
                duration,
                rate: None,
            };
            let (mut row, _) = super::load::small(
                ctx,
                super::load::SmallOp::PutFresh,
                load,
                &payload,
                args.server_pid,
            )
            .await?;
            row.phase = format!("{name} {} B", payload.len());
            acc.push(row.ops_per_sec);
            rows.push(row);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
    };
    let ratio = median(&mut versioned_ops) / median(&mut plain_ops);
    eprintln!("versioned/unversioned PUT ops/s (median of 2 each): {ratio:.3}");

    // ListObjectVersions over keys × versions.
    let listed = Arc::new(ctx.with_bucket(&format!("{base}-versions")));
    create(&listed, true).await?;
    let t = Instant::now();
    fill(&listed, args.list_keys, args.list_versions).await?;
    eprintln!(
        "wrote {} keys × {} versions in {:.1} s",
        args.list_keys,
        args.list_versions,
        t.elapsed().as_secs_f64()
    );
    // The same keys with one version each: ListObjectsV2 should cost the same on both.
    let single = Arc::new(ctx.with_bucket(&format!("{base}-single")));
    create(&single, true).await?;
    fill(&single, args.list_keys, 1).await?;
    for _ in 0..3 {
        rows.push(list_all(&listed, true, args.list_keys * args.list_versions).await?);
        let mut row = list_all(&listed, false, args.list_keys).await?;
        row.phase = format!("ListObjectsV2, {} versions/key", args.list_versions);
        rows.push(row);
        let mut row = list_all(&single, false, args.list_keys).await?;
        row.phase = "ListObjectsV2, 1 version/key".into();
        rows.push(row);
    }
    Ok(rows)
}

async fn create(ctx: &Ctx, versioned: bool) -> anyhow::Result<()> {
    super::create_bucket(ctx).await?;
    if versioned {
        let xml = "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>";
        let (status, b) = ctx
            .request_q(
                "PUT",
                "",
                "versioning=",
                Full::new(Bytes::from(xml)).boxed(),
            )
            .await?;
        drain(b).await;
        if status != 200 {
            bail!("cannot enable versioning on {}: HTTP {status}", ctx.bucket);
        }
    }
    Ok(())
}

/// Writes `versions` rounds over `keys` keys, `FILL_CONCURRENCY` requests in flight.
async fn fill(ctx: &Arc<Ctx>, keys: usize, versions: usize) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for w in 0..FILL_CONCURRENCY {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..versions {
                for k in (w..keys).step_by(FILL_CONCURRENCY) {
                    let body = Full::new(Bytes::from(format!("k{k:07} v{round}"))).boxed();
                    let (status, b) = ctx.request("PUT", &format!("k{k:07}"), body).await?;
                    drain(b).await;
                    if status != 200 {
                        bail!("fill PUT failed: HTTP {status}");
                    }
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.context("fill task")??;
    }
    Ok(())
}

/// Pages through the whole bucket; `versions` selects ListObjectVersions, else
/// ListObjectsV2. Checks that exactly `expect` entries came back.
async fn list_all(ctx: &Ctx, versions: bool, expect: usize) -> anyhow::Result<Row> {
    let start = Instant::now();
    let mut lat = Vec::new();
    let mut entries = 0usize;
    let mut markers: Option<(String, String)> = None;
    loop {
        let query = if versions {
            match &markers {
                None => format!("max-keys={PAGE}&versions="),
                Some((k, v)) => format!(
                    "key-marker={}&max-keys={PAGE}&version-id-marker={}&versions=",
                    enc(k),
                    enc(v)
                ),
            }
        } else {
            match &markers {
                None => format!("list-type=2&max-keys={PAGE}"),
                Some((_, token)) => {
                    format!(
                        "continuation-token={}&list-type=2&max-keys={PAGE}",
                        enc(token)
                    )
                }
            }
        };
        let t = Instant::now();
        let (status, body) = ctx.request_q("GET", "", &query, Body::default()).await?;
        let bytes = body.collect().await?.to_bytes();
        lat.push(t.elapsed().as_micros() as u32);
        if status != 200 {
            bail!("list failed: HTTP {status}");
        }
        let text = String::from_utf8_lossy(&bytes);
        entries += if versions {
            text.matches("<Version>").count() + text.matches("<DeleteMarker>").count()
        } else {
            text.matches("<Contents>").count()
        };
        if tag(&text, "IsTruncated").as_deref() != Some("true") {
            break;
        }
        markers = if versions {
            Some((
                tag(&text, "NextKeyMarker").context("no NextKeyMarker")?,
                tag(&text, "NextVersionIdMarker").context("no NextVersionIdMarker")?,
            ))
        } else {
            Some((
                String::new(),
                tag(&text, "NextContinuationToken").context("no continuation token")?,
            ))
        };
    }
    if entries != expect {
        bail!("listed {entries} entries, expected {expect}");
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| f64::from(lat[((lat.len() as f64 - 1.0) * p).round() as usize]) / 1000.0;
    Ok(Row {
        target: ctx.endpoint(),
        phase: if versions {
            "ListObjectVersions (entries)".into()
        } else {
            "ListObjectsV2 (entries)".into()
        },
        concurrency: 1,
        ops: entries as u64,
        errors: 0,
        seconds,
        ops_per_sec: entries as f64 / seconds,
        mib_per_sec: 0.0,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        peak_rss_mib: None,
    })
}

fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let i = xml.find(&open)? + open.len();
    let j = xml[i..].find(&format!("</{name}>"))? + i;
    Some(xml[i..j].to_owned())
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

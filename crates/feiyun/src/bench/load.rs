//! Small-object phases: a fixed number of connections, each sending one request after
//! another, either as fast as answers come (closed loop) or on a fixed schedule (open loop).
//!
//! At a fixed rate, request `i` is due at `start + i / rate` whatever happened before, and
//! its latency is measured from then. A request that waits for a connection behind a slow
//! one is late, and its lateness counts: no coordinated omission (the fault that makes a
//! closed-loop generator's p99 look good when the server stalls).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::client::{Auth, Body, Ctx, Prepared, drain};
use super::{Row, RssSampler, percentile_ms};

/// What each request of a phase does.
#[derive(Clone)]
pub(crate) enum SmallOp {
    /// PUT the payload to a new key each time; the keys written are returned.
    PutFresh,
    /// PUT the payload over these keys in turn (one key: every request overwrites it).
    PutOver(Arc<Vec<String>>),
    /// GET these keys, spread over the set.
    Get(Arc<Vec<String>>),
    /// An unsigned GET of one URL (a web server's file, a function).
    Url(hyper::Uri),
}

impl SmallOp {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            SmallOp::PutFresh => "PUT",
            SmallOp::PutOver(k) if k.len() == 1 => "PUT 1 key",
            SmallOp::PutOver(_) => "PUT over",
            SmallOp::Get(k) if k.len() == 1 => "GET 1 key",
            SmallOp::Get(_) => "GET",
            SmallOp::Url(_) => "GET url",
        }
    }
}

/// How the load is offered.
#[derive(Clone, Copy)]
pub(crate) struct Load {
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
    /// Requests per second in all, on a schedule; `None` for as fast as answers come.
    pub(crate) rate: Option<u32>,
}

/// A phase's requests, prepared once where the keys are known (presigned URLs are made
/// once per phase, as a client handed them would reuse them).
struct Plan {
    op: SmallOp,
    prepared: Vec<Prepared>,
    payload: Bytes,
    prefix: String,
}

impl Plan {
    fn new(ctx: &Ctx, op: SmallOp, payload: &Bytes, prefix: String) -> Self {
        let prepared = match &op {
            SmallOp::PutOver(keys) => keys.iter().map(|k| ctx.prepare("PUT", k)).collect(),
            SmallOp::Get(keys) => keys.iter().map(|k| ctx.prepare("GET", k)).collect(),
            SmallOp::PutFresh | SmallOp::Url(_) => Vec::new(),
        };
        Self {
            op,
            prepared,
            payload: payload.clone(),
            prefix,
        }
    }

    /// Request `i` of connection `w`; whether it succeeded, and the key it wrote.
    async fn one(&self, ctx: &Ctx, w: usize, i: u64) -> (bool, Option<String>) {
        let body = || Full::new(self.payload.clone()).boxed();
        let size = Expect::Exactly(self.payload.len() as u64);
        match &self.op {
            SmallOp::PutFresh => {
                let key = format!("{}{w}-{i}", self.prefix);
                let p = ctx.prepare("PUT", &key);
                let ok = succeeded(ctx.send("PUT", &p, body()).await, Expect::Any).await;
                (ok, ok.then_some(key))
            }
            SmallOp::PutOver(_) => {
                let p = &self.prepared[(i % self.prepared.len() as u64) as usize];
                (
                    succeeded(ctx.send("PUT", p, body()).await, Expect::Any).await,
                    None,
                )
            }
            SmallOp::Get(_) => {
                let n = self.prepared.len() as u64;
                let p = &self.prepared[((i * 7919 + w as u64 * 104_729) % n) as usize];
                let answer = ctx.send("GET", p, Body::default()).await;
                (succeeded(answer, size).await, None)
            }
            SmallOp::Url(uri) => (
                succeeded(ctx.get_url(uri).await, Expect::NonEmpty).await,
                None,
            ),
        }
    }
}

/// The body a successful answer must bring.
#[derive(Clone, Copy)]
enum Expect {
    Any,
    NonEmpty,
    Exactly(u64),
}

/// Whether an answer was a 200 whose body arrived whole and as expected.
async fn succeeded(answer: anyhow::Result<(u16, hyper::body::Incoming)>, want: Expect) -> bool {
    match answer {
        Ok((200, b)) => match (drain(b).await, want) {
            (None, _) => false,
            (Some(_), Expect::Any) => true,
            (Some(n), Expect::NonEmpty) => n > 0,
            (Some(n), Expect::Exactly(len)) => n == len,
        },
        Ok((_, b)) => {
            drain(b).await;
            false
        }
        Err(_) => false,
    }
}

/// Runs one phase; its row and the keys it wrote (for a GET phase to read).
pub(crate) async fn small(
    ctx: &Arc<Ctx>,
    op: SmallOp,
    load: Load,
    payload: &Bytes,
    pid: Option<u32>,
) -> anyhow::Result<(Row, Vec<String>)> {
    if let SmallOp::PutOver(k) | SmallOp::Get(k) = &op {
        anyhow::ensure!(!k.is_empty(), "{}: no keys to use", op.name());
    }
    let name = op.name();
    let plan = Arc::new(Plan::new(
        ctx,
        op,
        payload,
        format!("small-{}-{}-", load.connections, rand::random::<u32>()),
    ));
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let rss = RssSampler::start(pid);
    let start = Instant::now();
    let end = start + load.duration;
    // A schedule the server cannot keep is not drained for ever: what is still due this
    // long after the end is counted as not served.
    let give_up = end + load.duration;
    let mut tasks = Vec::new();
    for w in 0..load.connections {
        let (ctx, plan, next, stop, errors) = (
            ctx.clone(),
            plan.clone(),
            next.clone(),
            stop.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut written = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let from = match load.rate {
                    Some(rate) => {
                        let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
                        if due >= end {
                            break;
                        }
                        if Instant::now() > give_up {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None if stop.load(Ordering::Relaxed) => break,
                    None => Instant::now(),
                };
                let (ok, key) = plan.one(&ctx, w, i).await;
                if ok {
                    lat.push(from.elapsed().as_micros() as u32);
                    written.extend(key);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            (lat, written)
        }));
    }
    if load.rate.is_none() {
        tokio::time::sleep(load.duration).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut lat = Vec::new();
    let mut written = Vec::new();
    for t in tasks {
        let (l, w) = t.await?;
        lat.extend(l);
        written.extend(w);
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let ops = lat.len() as u64;
    let bytes = if name == "GET url" { 0 } else { payload.len() };
    let auth = match (&plan.op, ctx.auth) {
        (SmallOp::Url(_), _) => "",
        (_, Auth::Header) => "",
        (_, Auth::Presigned) => " presigned",
    };
    let phase = match load.rate {
        Some(rate) => format!("{name} {} B{auth} at {rate}/s", payload.len()),
        None => format!("{name} {} B{auth}", payload.len()),
    };
    Ok((
        Row {
            target: ctx.endpoint(),
            phase,
            concurrency: load.connections,
            ops,
            errors: errors.load(Ordering::Relaxed),
            seconds,
            ops_per_sec: ops as f64 / seconds,
            mib_per_sec: ops as f64 * bytes as f64 / seconds / 1048576.0,
            p50_ms: percentile_ms(&lat, 0.50),
            p99_ms: percentile_ms(&lat, 0.99),
            peak_rss_mib: rss.finish().await,
        },
        written,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers one request at a time, 20 ms each, behind a generator asked
    /// for 100 requests/s on one connection: it can serve 50/s, so the schedule falls
    /// further behind with every request. Timed from the schedule, the p99 shows that
    /// (about a second); timed from the send, every request would look like 20 ms.
    #[tokio::test]
    async fn a_fixed_rate_is_timed_from_the_schedule() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"x")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        let signer = crate::sigv4::Signer {
            access_key: "AK".into(),
            secret_key: "SK".into(),
            region: "us-east-1".into(),
        };
        let ctx =
            Arc::new(Ctx::new(&format!("http://{addr}"), signer, "b", Auth::Header, None).unwrap());
        let load = Load {
            connections: 1,
            duration: Duration::from_secs(2),
            rate: Some(100),
        };
        let uri: hyper::Uri = format!("http://{addr}/file").parse().unwrap();
        let (row, _) = small(&ctx, SmallOp::Url(uri), load, &Bytes::new(), None)
            .await
            .unwrap();
        assert!(row.ops >= 50, "{row:?}");
        // The last requests are due at 2 s and served near 4 s.
        assert!(row.p99_ms > 1000.0, "{row:?}");
        assert!(row.p50_ms > 200.0, "{row:?}");
    }
}

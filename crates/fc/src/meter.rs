//! Metering: per-invocation records (duration, memory, GB-seconds, result, the guest's log)
//! and per-function totals, written to the metadata store in batches off the request path,
//! and the Prometheus series of functions (invocations, duration, GB-seconds, cold starts,
//! throttles, instances, scaling decisions).
//!
//! Records reach the store within a batch period (50 ms); a crash may lose that window of
//! logs and totals, never an invocation's result, which the caller already has.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use feiyun_meta::{MetaStore, Table, WriteBatch};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

use crate::records::{self, InvocationRecord, Totals};
use crate::scale::Reason;
use crate::service::ServiceError;

/// Records waiting for the writer; beyond this they are dropped (and counted).
const QUEUE: usize = 10_000;
const BATCH: usize = 512;
const PERIOD: Duration = Duration::from_millis(50);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Fn {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FnResult {
    function: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FnVersion {
    function: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FnScale {
    function: String,
    direction: String,
    reason: String,
}

/// How an invocation ended, for the totals.
pub struct Outcome {
    pub ok: bool,
    pub duration: Duration,
}

enum Message {
    Record(Box<InvocationRecord>),
    Flush(oneshot::Sender<()>),
    Purge(String, oneshot::Sender<()>),
}

pub struct Meter {
    tx: mpsc::Sender<Message>,
    totals: Arc<Mutex<HashMap<String, Totals>>>,
    seq: AtomicU32,
    last_ms: AtomicU64,
    invocations: Family<FnResult, Counter>,
    duration: Family<Fn, Histogram>,
    gb_seconds: Family<Fn, Counter<f64, AtomicU64>>,
    cold_starts: Family<Fn, Counter>,
    throttles: Family<Fn, Counter>,
    instances: Family<FnVersion, Gauge>,
    scale_events: Family<FnScale, Counter>,
    dropped: Counter,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Meter {
    /// Loads the stored totals and starts the writer on the current runtime.
    pub fn start<M: MetaStore>(
        meta: Arc<M>,
        retention: Duration,
    ) -> Result<Arc<Self>, ServiceError> {
        let mut totals = HashMap::new();
        let mut start = b"t/".to_vec();
        loop {
            let page = meta.scan(Table::Functions, &start, Some(b"t0"), 1000)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (k, v) in &page {
                if let (Some(name), Some(t)) = (
                    std::str::from_utf8(&k[2..]).ok(),
                    records::decode::<Totals>(v),
                ) {
                    totals.insert(name.to_owned(), t);
                }
            }
        }
        let totals = Arc::new(Mutex::new(totals));
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(meta, rx, totals.clone(), retention));
        Ok(Arc::new(Self {
            tx,
            totals,
            seq: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
            invocations: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 50 µs .. ~13 min, doubling.
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.00005, 2.0, 24,
                ))
            }),
            gb_seconds: Family::default(),
            cold_starts: Family::default(),
            throttles: Family::default(),
            instances: Family::default(),
            scale_events: Family::default(),
            dropped: Counter::default(),
        }))
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fc_invocations",
            "Function invocations by result",
            self.invocations.clone(),
        );
        r.register(
            "fc_invocation_duration_seconds",
            "Function invocation duration, loading included",
            self.duration.clone(),
        );
        r.register(
            "fc_gb_seconds",
            "Configured memory (GiB) times duration (s), summed: what functions are billed",
            self.gb_seconds.clone(),
        );
        r.register(
            "fc_cold_starts",
            "Invocations that found no warm instance",
            self.cold_starts.clone(),
        );
        r.register(
            "fc_throttles",
            "Requests refused for want of capacity (429/503)",
            self.throttles.clone(),
        );
        r.register(
            "fc_instances",
            "Instances (warm capacity) per function version",
            self.instances.clone(),
        );
        r.register(
            "fc_scale_events",
            "Autoscaler decisions by direction and reason",
            self.scale_events.clone(),
        );
        r.register(
            "fc_records_dropped",
            "Invocation records dropped because the writer fell behind",
            self.dropped.clone(),
        );
    }

    /// A new invocation id: milliseconds then a sequence, so ids sort by start time.
    pub fn next_id(&self, started_ms: i64) -> String {
        let ms = started_ms.max(0) as u64;
        let prev = self.last_ms.swap(ms, Ordering::Relaxed);
        let seq = if prev == ms {
            self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
        } else {
            self.seq.store(0, Ordering::Relaxed);
            0
        };
        format!("{ms:016x}{seq:08x}")
    }

    pub fn record(&self, r: InvocationRecord, outcome: Outcome) {
        let f = Fn {
            function: r.function.clone(),
        };
        self.invocations
            .get_or_create(&FnResult {
                function: r.function.clone(),
                result: r.result.clone(),
            })
            .inc();
        self.duration
            .get_or_create(&f)
            .observe(outcome.duration.as_secs_f64());
        self.gb_seconds.get_or_create(&f).inc_by(r.gb_seconds);
        if r.cold {
            self.cold_starts.get_or_create(&f).inc();
        }
        {
            let mut totals = lock(&self.totals);
            let t = totals.entry(r.function.clone()).or_default();
            t.invocations += 1;
            t.errors += u64::from(!outcome.ok);
            t.cold_starts += u64::from(r.cold);
            t.duration_us += r.duration_us;
            t.gb_seconds += r.gb_seconds;
        }
        if self.tx.try_send(Message::Record(Box::new(r))).is_err() {
            self.dropped.inc();
        }
    }

    pub fn throttled(&self, function: &str) {
        self.throttles
            .get_or_create(&Fn {
                function: function.to_owned(),
            })
            .inc();
        lock(&self.totals)
            .entry(function.to_owned())
            .or_default()
            .throttles += 1;
    }

    pub fn totals(&self, function: &str) -> Totals {
        lock(&self.totals)
            .get(function)
            .cloned()
            .unwrap_or_default()
    }

    pub fn forget(&self, function: &str) {
        lock(&self.totals).remove(function);
    }

    pub fn instances(&self, function: &str, version: &str, n: i64) {
        self.instances
            .get_or_create(&FnVersion {
                function: function.to_owned(),
                version: version.to_owned(),
            })
            .set(n);
    }

    pub fn scaled(&self, function: &str, version: &str, n: i64, up: bool, reason: Reason) {
        self.instances(function, version, n);
        self.scale_events
            .get_or_create(&FnScale {
                function: function.to_owned(),
                direction: if up { "up" } else { "down" }.to_owned(),
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// Waits until every record sent so far is in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Deletes a function's invocation records (and waits for it).
    pub async fn purge(&self, function: &str) {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Message::Purge(function.to_owned(), tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Invocation records of `function` after `after` (an id), oldest first, at most `limit`.
    pub async fn logs<M: MetaStore>(
        &self,
        meta: &M,
        function: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>, ServiceError> {
        self.flush().await;
        let prefix = records::invocations_prefix(function);
        let start = match after {
            Some(id) => {
                let mut k = records::invocation_key(function, id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let end = feiyun_meta::prefix_end(&prefix);
        let page = meta.scan(Table::Functions, &start, end.as_deref(), limit)?;
        Ok(page
            .iter()
            .filter_map(|(_, v)| records::decode::<InvocationRecord>(v))
            .collect())
    }
}

async fn writer<M: MetaStore>(
    meta: Arc<M>,
    mut rx: mpsc::Receiver<Message>,
    totals: Arc<Mutex<HashMap<String, Totals>>>,
    retention: Duration,
) {
    let mut last_trim = std::time::Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(first) = rx.recv().await {
        let mut batch = WriteBatch::new();
        let mut touched = std::collections::BTreeSet::new();
        let mut waiting = Vec::new();
        let mut purges = Vec::new();
        let mut next = Some(first);
        let deadline = tokio::time::Instant::now() + PERIOD;
        let mut n = 0;
        loop {
            match next.take() {
                Some(Message::Record(r)) => {
                    batch.put(
                        Table::Functions,
                        records::invocation_key(&r.function, &r.id),
                        records::encode(r.as_ref()),
                    );
                    touched.insert(r.function.clone());
                    n += 1;
                }
                Some(Message::Flush(done)) => {
                    waiting.push(done);
                    // A reader is waiting: write what there is now.
                    break;
                }
                Some(Message::Purge(f, done)) => {
                    purges.push((f, done));
                    break;
                }
                None => {}
            }
            if n >= BATCH {
                break;
            }
            next = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => Some(m),
                _ => break,
            };
        }
        {
            let totals = lock(&totals);
            for f in &touched {
                if let Some(t) = totals.get(f) {
                    batch.put(Table::Functions, records::totals_key(f), records::encode(t));
                }
            }
        }
        if !batch.mutations.is_empty()
            && let Err(e) = meta.commit(batch).await
        {
            tracing::error!(error = %e, "cannot store invocation records");
        }
        seen.extend(touched);
        for (f, done) in purges {
            delete_records(meta.as_ref(), &f, None).await;
            seen.remove(&f);
            let _ = done.send(());
        }
        for done in waiting {
            let _ = done.send(());
        }
        if last_trim.elapsed() > Duration::from_secs(60) {
            last_trim = std::time::Instant::now();
            let cutoff = std::time::SystemTime::now()
                .checked_sub(retention)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            for f in &seen {
                delete_records(meta.as_ref(), f, Some(cutoff)).await;
            }
        }
    }
}

/// Deletes a function's invocation records started before `before_ms` (all when `None`).
async fn delete_records<M: MetaStore>(meta: &M, function: &str, before_ms: Option<u64>) {
    let prefix = records::invocations_prefix(function);
    let end = match before_ms {
        Some(ms) => records::invocation_key(function, &format!("{ms:016x}")),
        None => feiyun_meta::prefix_end(&prefix).unwrap_or_default(),
    };
    loop {
        let page = match meta.scan(Table::Functions, &prefix, Some(&end), 1000) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(function, error = %e, "cannot trim invocation records");
                return;
            }
        };
        let mut batch = WriteBatch::new();
        for (k, _) in page {
            batch.delete(Table::Functions, k);
        }
        if let Err(e) = meta.commit(batch).await {
            tracing::warn!(function, error = %e, "cannot trim invocation records");
            return;
        }
    }
}

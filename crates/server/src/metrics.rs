//! Prometheus metrics served at `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use feiyun_oss::OssStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpStatus {
    pub op: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: String,
}

/// Reads one counter out of the service's statistics.
type StatReader = fn(&OssStats) -> u64;

pub struct Metrics {
    registry: Registry,
    requests: Family<OpStatus, Counter>,
    latency: Family<Op, Histogram>,
    bytes_in: Counter,
    bytes_out: Counter,
    corruption: Counter,
    blobs_collected: Counter,
    /// Counters that mirror an `OssStats` atomic.
    mirrored: Vec<(Counter, StatReader)>,
    stats: Arc<OssStats>,
    /// The audit writer's health, once the log is open.
    audit: Option<(Arc<feiyun_audit::AuditHealth>, Counter, Gauge)>,
    /// A node's blob copies: counters mirroring its statistics, and the repair backlog.
    cluster: Option<ClusterSeries>,
    /// Counters mirrored from a reader at each render (the PostgreSQL engine's commits,
    /// the row cache's).
    watched: Vec<(Counter, MirrorReader)>,
    sync: std::sync::Mutex<()>,
}

/// Reads a counter's current value, for [`Metrics::watch_counter`].
pub type MirrorReader = Box<dyn Fn() -> u64 + Send + Sync>;

impl Metrics {
    pub fn new(stats: Arc<OssStats>) -> Self {
        let mut registry = Registry::with_prefix("feiyun");
        let requests = Family::<OpStatus, Counter>::default();
        let latency = Family::<Op, Histogram>::new_with_constructor(|| {
            // 100 µs .. ~26 s, doubling.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 18,
            ))
        });
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let corruption = Counter::default();
        let blobs_collected = Counter::default();
        registry.register(
            "s3_requests",
            "S3 requests by operation and HTTP status",
            requests.clone(),
        );
        registry.register(
            "s3_request_duration_seconds",
            "S3 request latency by operation (time to response headers)",
            latency.clone(),
        );
        registry.register(
            "object_bytes_written",
            "Object payload bytes stored",
            bytes_in.clone(),
        );
        registry.register(
            "object_bytes_read",
            "Object payload bytes served",
            bytes_out.clone(),
        );
        registry.register(
            "corruption_events",
            "Checksum failures detected on read (the request failed instead of serving bad data)",
            corruption.clone(),
        );
        registry.register(
            "blobs_collected",
            "Unreferenced blobs deleted by the janitor",
            blobs_collected.clone(),
        );
        let mut mirrored: Vec<(Counter, StatReader)> = Vec::new();
        let counters: [(&str, &str, StatReader); 11] = [
            (
                "live_fetched",
                "Live migration: objects copied in from legacy stores (by reads and the copier)",
                |s| s.live_fetched.load(Ordering::Relaxed),
            ),
            (
                "live_fetched_bytes",
                "Live migration: bytes copied in from legacy stores",
                |s| s.live_fetched_bytes.load(Ordering::Relaxed),
            ),
            (
                "live_fetch_failures",
                "Live migration: reads of a legacy store that failed",
                |s| s.live_fetch_failures.load(Ordering::Relaxed),
            ),
            (
                "live_streamed",
                "Live migration: reads of large legacy objects answered without storing them",
                |s| s.live_streamed.load(Ordering::Relaxed),
            ),
            (
                "live_written_through",
                "Live migration: writes and deletes replayed to legacy stores",
                |s| s.live_written_through.load(Ordering::Relaxed),
            ),
            (
                "live_write_through_failures",
                "Live migration: replays a legacy store refused for good",
                |s| s.live_write_through_failures.load(Ordering::Relaxed),
            ),
            (
                "lifecycle_expired_versions",
                "Versions removed by lifecycle expiration, current and noncurrent",
                |s| s.lifecycle_expired.load(Ordering::Relaxed),
            ),
            (
                "lifecycle_delete_markers_removed",
                "Expired delete markers removed by lifecycle",
                |s| s.lifecycle_markers_removed.load(Ordering::Relaxed),
            ),
            (
                "lifecycle_uploads_aborted",
                "Incomplete multipart uploads aborted by lifecycle",
                |s| s.lifecycle_uploads_aborted.load(Ordering::Relaxed),
            ),
            (
                "lifecycle_skipped_locked",
                "Lifecycle actions refused because Object Lock protects the version",
                |s| s.lifecycle_skipped_locked.load(Ordering::Relaxed),
            ),
            (
                "lifecycle_transitioned",
                "Versions moved to the cold storage class by lifecycle",
                |s| s.lifecycle_transitioned.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, read) in counters {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            mirrored.push((c, read));
        }
        Self {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            corruption,
            blobs_collected,
            mirrored,
            stats,
            audit: None,
            cluster: None,
            watched: Vec::new(),
            sync: std::sync::Mutex::new(()),
        }
    }

    pub fn observe(&self, op: &str, status: u16, seconds: f64) {
        let op = op.to_owned();
        self.requests
            .get_or_create(&OpStatus {
                op: op.clone(),
                status,
            })
            .inc();
        self.latency.get_or_create(&Op { op }).observe(seconds);
    }

    /// Exports the audit writer's failures and whether it is failing now.
    pub fn watch_audit(&mut self, health: Arc<feiyun_audit::AuditHealth>) {
        let failures = Counter::default();
        let failing = Gauge::default();
        self.registry.register(
            "audit_write_failures",
            "Audit log writes that failed (their records are retried, in order)",
            failures.clone(),
        );
        self.registry.register(
            "audit_failing",
            "1 while the audit log cannot be written",
            failing.clone(),
        );
        self.audit = Some((health, failures, failing));
    }

    /// Exports a node's blob-copy statistics and repair backlog.
    pub fn watch_cluster(
        &mut self,
        stats: Arc<feiyun_cluster::ClusterStats>,
        backlog: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) {
        let series: [(&str, &str, ClusterStatReader); 8] = [
            (
                "cluster_read_fallbacks",
                "Blob reads that left a copy (missing, unreachable or damaged) for another",
                |s| s.read_fallbacks.load(Ordering::Relaxed),
            ),
            (
                "cluster_replica_failures",
                "Blob copies that failed while being written",
                |s| s.replica_failures.load(Ordering::Relaxed),
            ),
            (
                "cluster_replacements",
                "Blob copies written to the next node in rank after a copy failed",
                |s| s.replacements.load(Ordering::Relaxed),
            ),
            (
                "cluster_refused_writes",
                "Writes refused because fewer than min_replicas copies could be stored",
                |s| s.refused_writes.load(Ordering::Relaxed),
            ),
            (
                "cluster_repaired",
                "Blob copies re-created by repair",
                |s| s.repaired.load(Ordering::Relaxed),
            ),
            (
                "cluster_collected",
                "Copies of deleted blobs removed after the read grace",
                |s| s.collected.load(Ordering::Relaxed),
            ),
            (
                "cluster_scrubbed_bytes",
                "Bytes of this node's erasure-coded shards read back and checked by the scrubber",
                |s| s.scrubbed_bytes.load(Ordering::Relaxed),
            ),
            (
                "cluster_scrub_damaged",
                "Shards the scrubber found damaged or missing on this node",
                |s| s.scrub_damaged.load(Ordering::Relaxed),
            ),
        ];
        let mut counters = Vec::new();
        for (name, help, read) in series {
            let c = Counter::default();
            self.registry.register(name, help, c.clone());
            counters.push((c, read));
        }
        let gauge = Gauge::default();
        self.registry.register(
            "cluster_repair_backlog",
            "Blobs this node is to repair that its last repair pass left short of copies",
            gauge.clone(),
        );
        self.cluster = Some(ClusterSeries {
            stats,
            counters,
            backlog,
            gauge,
        });
    }

    /// Exports the PostgreSQL engine's group commits: how many batches each transaction
    /// carries, and how often the database asks for a retry.
    pub fn watch_meta_commits(&mut self, stats: Arc<feiyun_meta_pg::CommitStats>) {
        type Read = fn(&feiyun_meta_pg::CommitStats) -> u64;
        let series: [(&str, &str, Read); 3] = [
            (
                "meta_commit_groups",
                "Metadata transactions committed (each one group of batches)",
                |s| s.groups.load(Ordering::Relaxed),
            ),
            (
                "meta_commit_batches",
                "Metadata batches those transactions carried",
                |s| s.batches.load(Ordering::Relaxed),
            ),
            (
                "meta_commit_retries",
                "Metadata transactions the database asked to retry (40001, 40P01)",
                |s| s.retries.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, read) in series {
            let s = stats.clone();
            self.watch_counter(name, help, Box::new(move || read(&s)));
        }
    }

    /// A counter whose value `read` gives at each render.
    pub fn watch_counter(&mut self, name: &str, help: &str, read: MirrorReader) {
        let c = Counter::default();
        self.registry.register(name, help, c.clone());
        self.watched.push((c, read));
    }

    /// Where another service registers its own series (Function Compute's).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn render(&self) -> String {
        {
            // Counters mirror the service's atomics; bring them up to date.
            let _g = self.sync.lock().unwrap_or_else(|p| p.into_inner());
            let catch_up = |c: &Counter, v: u64| {
                let cur = c.get();
                if v > cur {
                    c.inc_by(v - cur);
                }
            };
            catch_up(
                &self.bytes_in,
                self.stats.bytes_written.load(Ordering::Relaxed),
            );
            catch_up(
                &self.bytes_out,
                self.stats.bytes_read.load(Ordering::Relaxed),
            );
            catch_up(
                &self.corruption,
                self.stats.corruption_events.load(Ordering::Relaxed),
            );
            catch_up(
                &self.blobs_collected,
                self.stats.blobs_collected.load(Ordering::Relaxed),
            );
            for (c, read) in &self.mirrored {
                catch_up(c, read(&self.stats));
            }
            if let Some((health, failures, failing)) = &self.audit {
                catch_up(failures, health.failures());
                failing.set(i64::from(health.failing()));
            }
            for (counter, read) in &self.watched {
                catch_up(counter, read());
            }
            if let Some(c) = &self.cluster {
                for (counter, read) in &c.counters {
                    catch_up(counter, read(&c.stats));
                }
                c.gauge
                    .set(i64::try_from((c.backlog)()).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Reads one counter out of a node's blob-copy statistics.
type ClusterStatReader = fn(&feiyun_cluster::ClusterStats) -> u64;

struct ClusterSeries {
    stats: Arc<feiyun_cluster::ClusterStats>,
    counters: Vec<(Counter, ClusterStatReader)>,
    backlog: Arc<dyn Fn() -> u64 + Send + Sync>,
    gauge: Gauge,
}

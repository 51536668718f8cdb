//! Keeping every node's caches true to changes committed through any node.
//!
//! Each commit that touches a cached domain (identities, bucket settings, KMS keys,
//! functions) also writes, in the same transaction, a fresh random stamp under
//! `gen/DOMAIN/NODE` in the cluster table: the change and its stamp land together or not at
//! all, and each node writes only its own row, so writers on different nodes never contend
//! for one. Every node reads the stamps every [`POLL`] and drops what it cached of a
//! domain whose stamp another node moved. A change is therefore seen everywhere within
//! `POLL` plus one read of the store, well inside the one-second bound, and a node cut off
//! from the store catches up at its first read after it heals. No LISTEN/NOTIFY: the
//! distributed engines this runs on do not offer it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use feiyun_meta::{MetaRead, Table, WriteBatch};

use crate::Store;

/// How often a node reads the stamps.
const POLL: Duration = Duration::from_millis(200);
const PREFIX: &[u8] = b"gen/";

/// This node's id, once it has joined a region; until then (and in a single-process
/// region) commits carry no stamp.
static NODE: OnceLock<String> = OnceLock::new();

pub(crate) fn set_node(id: &str) {
    let _ = NODE.set(id.to_owned());
}

/// The cached domain a row belongs to.
fn domain(table: Table, key: &[u8]) -> Option<&'static str> {
    match table {
        // STS sessions are many and change nothing else: re-read on their own.
        Table::Iam if key.starts_with(b"s\0") => Some("sessions"),
        Table::Iam => Some("iam"),
        Table::Buckets | Table::BucketConfigs => Some("buckets"),
        Table::Kms => Some("kms"),
        Table::Functions => Some("functions"),
        // Peer regions and bucket homes; not the per-rule progress rows.
        Table::Replication if key.starts_with(b"p/") || key.starts_with(b"h/") => {
            Some("replication")
        }
        _ => None,
    }
}

/// Adds this node's stamp for every cached domain `batch` changes.
pub(crate) fn stamp(batch: &mut WriteBatch) {
    let Some(node) = NODE.get() else { return };
    let mut touched: Vec<&'static str> = Vec::new();
    for m in &batch.mutations {
        let (table, key) = match m {
            feiyun_meta::Mutation::Put { table, key, .. }
            | feiyun_meta::Mutation::Delete { table, key } => (*table, key),
        };
        if let Some(d) = domain(table, key)
            && !touched.contains(&d)
        {
            touched.push(d);
        }
    }
    for d in touched {
        let value = rand::random::<u128>().to_be_bytes().to_vec();
        batch.put(
            Table::Cluster,
            format!("gen/{d}/{node}").into_bytes(),
            value,
        );
    }
}

/// What a node drops when another node changed a domain.
pub(crate) struct Caches {
    pub iam: Arc<feiyun_iam::Iam<Store>>,
    pub buckets: Arc<feiyun_s3api::BucketAccessCache>,
    pub kms: Arc<feiyun_kms::Kms<Store>>,
    pub functions: Arc<feiyun_fc::Functions<Store>>,
    pub replication: Arc<feiyun_replication::Replication<Store, crate::Blobs>>,
}

impl Caches {
    fn drop_domain(&self, d: &str) {
        match d {
            "iam" => {
                if let Err(e) = self.iam.refresh() {
                    tracing::warn!(error = %e, "identities could not be re-read; retried");
                }
            }
            "sessions" => {
                if let Err(e) = self.iam.refresh_sessions() {
                    tracing::warn!(error = %e, "sessions could not be re-read; retried");
                }
            }
            "buckets" => self.buckets.clear(),
            "kms" => self.kms.forget_cached(),
            "functions" => self.functions.forget_cached(),
            "replication" => {
                if let Err(e) = self.replication.reload() {
                    tracing::warn!(error = %e, "peer regions could not be re-read; retried");
                }
            }
            _ => {}
        }
    }
}

/// Follows the other nodes' stamps until the process ends.
pub(crate) fn spawn(meta: Arc<Store>, me: String, caches: Caches) {
    let caches = Arc::new(caches);
    tokio::spawn(async move {
        // The first read drops every domain: a change may have landed between opening the
        // services and this task's start.
        let mut seen: Option<HashMap<Vec<u8>, Vec<u8>>> = None;
        loop {
            let m = meta.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut end = PREFIX.to_vec();
                if let Some(l) = end.last_mut() {
                    *l += 1;
                }
                m.scan(Table::Cluster, PREFIX, Some(&end), 100_000)
            })
            .await;
            let rows = match read {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    // Caches stay as they are; the first read after the store is back
                    // catches up.
                    tracing::debug!(error = %e, "cache stamps could not be read");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Err(_) => return,
            };
            let now: HashMap<Vec<u8>, Vec<u8>> = rows.into_iter().collect();
            let mut changed: Vec<String> = Vec::new();
            for (k, v) in &now {
                let text = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
                let Some((d, node)) = text.split_once('/') else {
                    continue;
                };
                let moved = seen.as_ref().is_none_or(|s| s.get(k) != Some(v));
                if moved && node != me && !changed.iter().any(|c| c == d) {
                    changed.push(d.to_owned());
                }
            }
            if seen.is_none() {
                changed = [
                    "iam",
                    "sessions",
                    "buckets",
                    "kms",
                    "functions",
                    "replication",
                ]
                .map(str::to_owned)
                .to_vec();
            }
            seen = Some(now);
            if !changed.is_empty() {
                let c = caches.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for d in &changed {
                        c.drop_domain(d);
                    }
                })
                .await;
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

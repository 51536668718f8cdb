//! Home regions: a bucket this region holds as a replica can name the peer region it belongs
//! to. While that region is up, S3 requests for the bucket that reach this region are
//! forwarded to it (or redirected, with a 307, if the operator prefers), so clients may use
//! either region's endpoint and writes still go to one place; while it is down, this region
//! serves the bucket from its replica — the failover — and forwards again once the health
//! probe sees the home region back.
//!
//! Forwarding is transparent: the request goes on unchanged, its `Host` and signature
//! included, so the home region checks the caller's own signature (site replication gives it
//! the same credentials). `x-feiyun-forwarded` marks a forwarded request, which is never
//! forwarded again: two regions naming each other cannot loop. Every request one region's
//! replication sends another carries it too, so replicas, resync listings and backups reach
//! the region they are meant for. The mark is a MAC under the peer credentials
//! (`feiyun_iam::relay`) carrying the original client's address and TLS state, so a client
//! cannot set it and the home region judges `aws:SourceIp` by the real client.
//!
//! Rows `h/BUCKET` of the `replication` table ([`HomeRecord`]).

use std::sync::Arc;

use feiyun_meta::{MetaStore, Table, WriteBatch};
use feiyun_oss::BlobStore;
use serde::{Deserialize, Serialize};

use crate::{Peer, Replication, ReplicationError};

/// Most buckets with a home region (one row each, all held in memory).
pub const MAX_HOMES: usize = 100_000;

/// Marks a request one region forwarded to another.
pub const FORWARDED_HEADER: &str = "x-feiyun-forwarded";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeRecord {
    pub bucket: String,
    pub region: String,
    /// Answer 307 Temporary Redirect to the home region instead of forwarding.
    pub redirect: bool,
}

/// What to do with a request for a bucket whose home is elsewhere.
pub enum Route {
    Forward(Arc<Peer>),
    Redirect(String),
}

fn row(bucket: &str) -> Vec<u8> {
    format!("h/{bucket}").into_bytes()
}

impl<M: MetaStore, B: BlobStore> Replication<M, B> {
    pub(crate) fn load_homes(&self) -> Result<(), ReplicationError> {
        let rows = feiyun_meta::scan_bounded(
            &**self.oss.meta(),
            Table::Replication,
            b"h/",
            Some(b"h0"),
            MAX_HOMES,
        )?;
        let mut homes = std::collections::HashMap::new();
        for (_, v) in rows {
            let h: HomeRecord = ciborium::from_reader(v.as_slice())
                .map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
            homes.insert(h.bucket.clone(), h);
        }
        if let Ok(mut g) = self.homes.write() {
            *g = homes;
        }
        Ok(())
    }

    /// Names (or, with `None`, forgets) the home region of `bucket`.
    pub async fn set_home(
        &self,
        bucket: &str,
        home: Option<(String, bool)>,
    ) -> Result<Option<HomeRecord>, ReplicationError> {
        self.oss.bucket(bucket).await?;
        let mut b = WriteBatch::new();
        let rec = match home {
            Some((region, redirect)) => {
                if self.peer(&region).is_none() {
                    return Err(ReplicationError::NoSuchRegion(region));
                }
                let full = self
                    .homes
                    .read()
                    .map(|g| g.len() >= MAX_HOMES && !g.contains_key(bucket))
                    .unwrap_or(true);
                if full {
                    return Err(ReplicationError::Invalid(format!(
                        "at most {MAX_HOMES} buckets can name a home region"
                    )));
                }
                let rec = HomeRecord {
                    bucket: bucket.to_owned(),
                    region,
                    redirect,
                };
                let mut v = Vec::new();
                ciborium::into_writer(&rec, &mut v)
                    .map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
                b.put(Table::Replication, row(bucket), v);
                Some(rec)
            }
            None => {
                b.delete(Table::Replication, row(bucket));
                None
            }
        };
        self.oss.meta().commit(b).await?;
        if let Ok(mut g) = self.homes.write() {
            match &rec {
                Some(r) => g.insert(bucket.to_owned(), r.clone()),
                None => g.remove(bucket),
            };
        }
        Ok(rec)
    }

    pub fn homes(&self) -> Vec<HomeRecord> {
        let mut v: Vec<HomeRecord> = self
            .homes
            .read()
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        v
    }

    /// Whether a peer is some bucket's home (it cannot be removed then).
    pub(crate) fn is_home(&self, region: &str) -> Option<String> {
        self.homes.read().ok().and_then(|g| {
            g.values()
                .find(|h| h.region == region)
                .map(|h| h.bucket.clone())
        })
    }

    /// Where a request for `bucket` goes instead of being served here: its home region, when
    /// it has one that is up and the request was not forwarded already.
    /// `relayed`: the request carries a verified relay mark.
    pub fn route(&self, bucket: &str, relayed: bool, path_and_query: &str) -> Option<Route> {
        if relayed {
            return None;
        }
        let home = self.homes.read().ok()?.get(bucket).cloned()?;
        let peer = self.peer(&home.region)?;
        if !peer.is_up() {
            return None;
        }
        Some(if home.redirect {
            Route::Redirect(format!("{}{path_and_query}", peer.record.endpoint))
        } else {
            Route::Forward(peer)
        })
    }

    /// Sends `req` on to `peer` as it came, and its answer back.
    pub async fn forward<Body>(
        &self,
        peer: &Peer,
        req: http::Request<Body>,
        client: &crate::client::RelayedFor,
    ) -> Result<http::Response<hyper::body::Incoming>, String>
    where
        Body: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        Body::Error: std::error::Error + Send + Sync + 'static,
    {
        peer.client.forward(req, client).await
    }

    /// The up peers holding a same-named replica of `bucket` (its rules' destinations), for
    /// a read that found nothing here.
    pub async fn read_peers(&self, bucket: &str) -> Vec<Arc<Peer>> {
        let Ok(Some(config)) = self.oss.replication(bucket).await else {
            return Vec::new();
        };
        let mut out: Vec<Arc<Peer>> = Vec::new();
        for r in config
            .rules
            .iter()
            .filter(|r| r.enabled && r.destination.bucket == bucket)
        {
            if let Some(p) = self.peer(&r.destination.region)
                && p.is_up()
                && !out.iter().any(|o| o.record.name == p.record.name)
            {
                out.push(p);
            }
        }
        out
    }
}

//! Site replication: keeping the identities (IAM) and KMS key metadata (ids, aliases, states;
//! never key material) of the regions of one site alike, so a failover region accepts the
//! same access keys under the same policies and knows the same key ids and aliases.
//!
//! Peers registered with `--site` receive this region's identities whenever they change: every
//! 2 s the region hashes its export (`feiyun_iam::site`); a hash it has not seen is a local
//! change, stamped with the time it was noticed (its generation), and pushed (`POST
//! /replication/site`, CBOR, signed with the peer's credentials, over the peer's URL — use
//! https between sites). The receiver first stamps any change of its own it has not noticed
//! yet, then takes the push only if it is newer, mirroring it (a revoked key is revoked
//! everywhere) and recording its hash, so it does not send the same state back; an older push
//! is answered StaleSite and the receiver's own state travels the other way. The mark lives
//! in the `replication` table (`site-hash`), so a restarted region does not push stale state
//! over changes its peers made meanwhile. Between concurrent changes in two regions, the later
//! one wins whole (wall clocks compared: keep them in sync).

use std::sync::Arc;
use std::time::Duration;

use feiyun_iam::site::SiteState;
use feiyun_meta::{MetaStore, Table, WriteBatch};
use feiyun_oss::BlobStore;
use http::Method;
use md5::Digest;

use crate::{Replication, ReplicationError};

const SITE_HASH_ROW: &[u8] = b"site-hash";
/// When the pushed identities last changed at their sender (ms since the epoch).
pub const GENERATION_HEADER: &str = "x-feiyun-site-generation";
/// How far ahead of this region's clock a pushed generation may be.
const MAX_GENERATION_SKEW_MS: i64 = 5 * 60 * 1000;

/// The identities as last sent or received: their hash, when they changed (here, or at the
/// peer they came from), and whether every site peer has them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SiteMark {
    #[serde(with = "serde_bytes")]
    hash: Vec<u8>,
    generation_ms: i64,
    sent: bool,
}
const INTERVAL: Duration = Duration::from_secs(2);
const PUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// What `feiyun replication status` shows of it.
#[derive(Debug, Default, Clone)]
pub(crate) struct SiteStatus {
    pub(crate) last_push_ms: Option<i64>,
    pub(crate) last_import_ms: Option<i64>,
    pub(crate) last_error: Option<String>,
}

/// What one push carries: identities and KMS key metadata.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SitePush {
    iam: SiteState,
    kms: feiyun_kms::site::KmsSite,
}

impl SitePush {
    /// Nothing but accounts: a region that has never had identities or keys of its own.
    fn fresh(&self) -> bool {
        self.kms.keys.is_empty() && self.iam.rows.iter().all(|(k, _)| k.first() == Some(&b'a'))
    }
}

fn encode(s: &SitePush) -> Result<Vec<u8>, ReplicationError> {
    let mut out = Vec::new();
    ciborium::into_writer(s, &mut out).map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
    Ok(out)
}

fn digest(bytes: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(bytes).to_vec()
}

impl<M: MetaStore, B: BlobStore> Replication<M, B> {
    /// Gives the replication service the region's identities to replicate between sites.
    pub fn set_iam(&self, iam: Arc<feiyun_iam::Iam<M>>) {
        let _ = self.iam.set(iam);
    }

    /// The identities' hash and generation as last sent or received.
    fn site_mark(&self) -> Result<Option<SiteMark>, ReplicationError> {
        match self.oss.meta().get(Table::Replication, SITE_HASH_ROW)? {
            Some(b) => ciborium::from_reader(b.as_slice())
                .map(Some)
                .map_err(|e| ReplicationError::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    async fn store_site_mark(&self, mark: &SiteMark) -> Result<(), ReplicationError> {
        let mut value = Vec::new();
        ciborium::into_writer(mark, &mut value)
            .map_err(|e| ReplicationError::Corrupt(e.to_string()))?;
        let mut b = WriteBatch::new();
        b.put(Table::Replication, SITE_HASH_ROW.to_vec(), value);
        self.oss.meta().commit(b).await?;
        Ok(())
    }

    fn note_site(&self, f: impl FnOnce(&mut SiteStatus)) {
        match self.site_status.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// This region's identities, and their mark: a state not seen before is a local change,
    /// stamped now.
    async fn current_site(
        &self,
        iam: &feiyun_iam::Iam<M>,
    ) -> Result<(Vec<u8>, SiteMark, bool), ReplicationError> {
        let state = self.export_push(iam)?;
        let body = encode(&state)?;
        let hash = digest(&body);
        let stored = self.site_mark()?;
        match stored {
            Some(m) if m.hash == hash => Ok((body, m, false)),
            _ => {
                // The first look at a region without identities of its own (only accounts):
                // it yields to any peer's. Otherwise the change is as new as now.
                let fresh = stored.is_none() && state.fresh();
                let mark = SiteMark {
                    hash,
                    generation_ms: if fresh { 0 } else { feiyun_oss::now_millis() },
                    sent: false,
                };
                self.store_site_mark(&mark).await?;
                Ok((body, mark, true))
            }
        }
    }

    /// Pushes this region's identities to the site peers if they changed here.
    async fn sync_site(&self) -> Result<(), ReplicationError> {
        let peers: Vec<_> = self.peers().into_iter().filter(|p| p.record.site).collect();
        let Some(iam) = self.iam.get() else {
            return Ok(());
        };
        if peers.is_empty() {
            return Ok(());
        }
        let _one = self.site_lock.lock().await;
        let (body, mark, _) = self.current_site(iam).await?;
        if mark.sent {
            return Ok(());
        }
        let sha = hex::encode(sha2::Sha256::digest(&body));
        let body = bytes::Bytes::from(body);
        let generation = mark.generation_ms.to_string();
        let mut newer_elsewhere = false;
        for p in &peers {
            use http_body_util::BodyExt;
            let len = body.len();
            let sent = p
                .client
                .request_path(
                    Method::POST,
                    "/replication/site",
                    vec![
                        ("content-type".into(), "application/cbor".into()),
                        ("content-length".into(), len.to_string()),
                        (GENERATION_HEADER.into(), generation.clone()),
                    ],
                    http_body_util::Full::new(body.clone())
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                    &sha,
                    PUSH_TIMEOUT,
                )
                .await;
            match sent {
                Ok(_) => {}
                // The peer changed its identities after we did: its state comes here instead.
                Err(crate::client::ClientError::Status { code, .. }) if code == "StaleSite" => {
                    newer_elsewhere = true;
                }
                Err(e) => {
                    return Err(ReplicationError::Invalid(format!(
                        "identities not sent to {}: {e}",
                        p.record.name
                    )));
                }
            }
        }
        if !newer_elsewhere {
            self.store_site_mark(&SiteMark { sent: true, ..mark })
                .await?;
            self.note_site(|s| {
                s.last_push_ms = Some(feiyun_oss::now_millis());
                s.last_error = None;
            });
            tracing::info!(peers = peers.len(), "identities sent to the site");
        }
        Ok(())
    }

    /// Takes a site peer's identities changed at `generation_ms`; the number of rows changed.
    /// Refused as stale when this region's own identities changed later.
    pub async fn import_site(
        &self,
        body: &[u8],
        generation_ms: i64,
    ) -> Result<usize, ReplicationError> {
        let Some(iam) = self.iam.get() else {
            return Err(ReplicationError::Invalid(
                "identities are not ready yet".into(),
            ));
        };
        let state: SitePush = ciborium::from_reader(body)
            .map_err(|e| ReplicationError::Invalid(format!("site state: {e}")))?;
        // The sender's clock is not trusted beyond a little skew: a generation far in the
        // future would win every comparison for ever.
        let generation_ms = generation_ms.min(feiyun_oss::now_millis() + MAX_GENERATION_SKEW_MS);
        let _one = self.site_lock.lock().await;
        // A local change not yet noticed is stamped first, so it is not lost to an older one.
        let (_, mark, _) = self.current_site(iam).await?;
        if digest(body) == mark.hash {
            // Already the same identities: nothing to take, nothing to refuse.
            return Ok(0);
        }
        if generation_ms <= mark.generation_ms {
            return Err(ReplicationError::Stale(format!(
                "this region's identities changed later ({} > {generation_ms})",
                mark.generation_ms
            )));
        }
        let mut n = iam.import_site(&state.iam).await.map_err(|e| match e {
            feiyun_iam::IamError::SiteMismatch(m) => ReplicationError::InUse(m),
            other => ReplicationError::Invalid(other.to_string()),
        })?;
        n += self
            .oss
            .kms()
            .import_site(&state.kms, feiyun_oss::now_millis() / 1000)
            .await
            .map_err(|e| ReplicationError::Invalid(format!("KMS keys: {e}")))?;
        // What this region now holds is what it received: nothing to send back.
        let mine = self.export_push(iam)?;
        self.store_site_mark(&SiteMark {
            hash: digest(&encode(&mine)?),
            generation_ms,
            sent: true,
        })
        .await?;
        self.note_site(|s| s.last_import_ms = Some(feiyun_oss::now_millis()));
        if n > 0 {
            tracing::info!(rows = n, "identities received from the site");
        }
        Ok(n)
    }

    fn export_push(&self, iam: &feiyun_iam::Iam<M>) -> Result<SitePush, ReplicationError> {
        Ok(SitePush {
            iam: iam
                .export_site()
                .map_err(|e| ReplicationError::Corrupt(e.to_string()))?,
            kms: self
                .oss
                .kms()
                .export_site()
                .map_err(|e| ReplicationError::Corrupt(e.to_string()))?,
        })
    }

    pub(crate) fn spawn_site_sync(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(INTERVAL).await;
                if let Err(e) = me.sync_site().await {
                    let msg = e.to_string();
                    me.note_site(|s| {
                        if s.last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(error = %msg, "site replication");
                        }
                        s.last_error = Some(msg.clone());
                    });
                }
            }
        });
    }

    pub(crate) fn site_json(&self) -> serde_json::Value {
        let s = self
            .site_status
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        serde_json::json!({
            "peers": self.peers().iter().filter(|p| p.record.site).map(|p| p.record.name.clone()).collect::<Vec<_>>(),
            "last_push": s.last_push_ms,
            "last_import": s.last_import_ms,
            "last_error": s.last_error,
        })
    }
}

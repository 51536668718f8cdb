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
//! is answered StaleSite and the receiver's own state travels the other way. Pushes go only
//! to peers added by root with `--site` over verified HTTPS (or loopback), are sealed for
//! the peer (AES-256-GCM under a key derived from the credentials held for it), and are
//! taken only by a region that joined a site itself, from its root's credentials. The mark lives
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
/// What the key sealing site pushes is derived for (from the peer credentials' secret).
pub const PUSH_PURPOSE: &str = "feiyun site push v1";
const SEALED_MAGIC: &[u8; 5] = b"FYSP1";

/// Seals a push for one peer: AES-256-GCM under a key derived from the secret of the
/// credentials this region holds for it, so the identities it carries (secrets included) are
/// readable by that peer alone, not by whatever relays the connection. The generation is
/// bound in, so a sealed body cannot be replayed under a newer one.
pub(crate) fn seal_push(
    key: &[u8; 32],
    generation_ms: i64,
    body: &[u8],
) -> Result<Vec<u8>, ReplicationError> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
    use aws_lc_rs::rand::SecureRandom;
    let cipher = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| ReplicationError::Corrupt("push key".into()))?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| ReplicationError::Corrupt("no randomness".into()))?;
    let mut out = body.to_vec();
    cipher
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(push_aad(generation_ms).as_slice()),
            &mut out,
        )
        .map_err(|_| ReplicationError::Corrupt("sealing a push failed".into()))?;
    let mut sealed = Vec::with_capacity(SEALED_MAGIC.len() + NONCE_LEN + out.len());
    sealed.extend_from_slice(SEALED_MAGIC);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&out);
    Ok(sealed)
}

/// What a sealed push authenticates besides its body.
fn push_aad(generation_ms: i64) -> Vec<u8> {
    let mut aad = SEALED_MAGIC.to_vec();
    aad.extend_from_slice(&generation_ms.to_be_bytes());
    aad
}

/// Opens a push sealed by [`seal_push`]; unsealed or altered pushes are refused.
pub(crate) fn open_push(
    key: &[u8; 32],
    generation_ms: i64,
    sealed: &[u8],
) -> Result<Vec<u8>, ReplicationError> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
    let header = SEALED_MAGIC.len() + NONCE_LEN;
    if sealed.len() < header || &sealed[..SEALED_MAGIC.len()] != SEALED_MAGIC {
        return Err(ReplicationError::Invalid(
            "a site push must be sealed for this region".into(),
        ));
    }
    let cipher = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| ReplicationError::Corrupt("push key".into()))?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[SEALED_MAGIC.len()..header]);
    let mut body = sealed[header..].to_vec();
    let plain = cipher
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(push_aad(generation_ms).as_slice()),
            &mut body,
        )
        .map_err(|_| {
            ReplicationError::Invalid("the site push does not open with this region's key".into())
        })?;
    Ok(plain.to_vec())
}

/// How far ahead of this region's clock a pushed generation may be.
const MAX_GENERATION_SKEW_MS: i64 = 5 * 60 * 1000;

/// The generation a push from a peer is recorded at, or why it is stale. The sender's clock
/// is not trusted beyond a little skew: a generation far in the future would otherwise win
/// every comparison for ever, and no later change here could replace it. Equal generations
/// (two regions that never had identities of their own, whose account rows differ; two
/// changes stamped in one millisecond) are ordered by the states' hashes, so of two regions
/// pushing to each other exactly one yields instead of each refusing the other for ever.
fn accepted_generation(
    (sent_ms, sent_hash): (i64, &[u8]),
    (local_ms, local_hash): (i64, &[u8]),
    now_ms: i64,
) -> Result<i64, ReplicationError> {
    let generation_ms = sent_ms.min(now_ms.saturating_add(MAX_GENERATION_SKEW_MS));
    if (generation_ms, sent_hash) <= (local_ms, local_hash) {
        return Err(ReplicationError::Stale(format!(
            "this region's identities changed later ({local_ms} >= {generation_ms})"
        )));
    }
    Ok(generation_ms)
}

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
        // The lock covers reading and writing the mark, never the push: a peer pushing here
        // at the same moment waits for it in `import_site`, and held across the network the
        // two regions would each wait for the other until the push timed out.
        let (body, mark) = {
            let _one = self.site_lock.lock().await;
            let (body, mark, _) = self.current_site(iam).await?;
            if mark.sent {
                return Ok(());
            }
            (body, mark)
        };
        let generation = mark.generation_ms.to_string();
        let mut newer_elsewhere = false;
        for p in &peers {
            use http_body_util::BodyExt;
            let sealed = seal_push(
                &p.client.shared_key(PUSH_PURPOSE),
                mark.generation_ms,
                &body,
            )?;
            let sha = hex::encode(sha2::Sha256::digest(&sealed));
            let body = bytes::Bytes::from(sealed);
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
            let _one = self.site_lock.lock().await;
            // An import that landed during the push stored its own mark, which stands; a local
            // change since is stamped by the next round, which sends it.
            let unchanged = self
                .site_mark()?
                .is_some_and(|m| m.hash == mark.hash && m.generation_ms == mark.generation_ms);
            if !unchanged {
                return Ok(());
            }
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
        sealed: &[u8],
        generation_ms: i64,
        key: &[u8; 32],
    ) -> Result<usize, ReplicationError> {
        let opened = open_push(key, generation_ms, sealed)?;
        let body = opened.as_slice();
        let Some(iam) = self.iam.get() else {
            return Err(ReplicationError::Invalid(
                "identities are not ready yet".into(),
            ));
        };
        let state: SitePush = ciborium::from_reader(body)
            .map_err(|e| ReplicationError::Invalid(format!("site state: {e}")))?;
        let _one = self.site_lock.lock().await;
        // A local change not yet noticed is stamped first, so it is not lost to an older one.
        let (_, mark, _) = self.current_site(iam).await?;
        if digest(body) == mark.hash {
            // Already the same identities: nothing to take, nothing to refuse.
            return Ok(0);
        }
        let generation_ms = accepted_generation(
            (generation_ms, &digest(body)),
            (mark.generation_ms, &mark.hash),
            feiyun_oss::now_millis(),
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_push_opens_only_with_its_key_and_generation() {
        let key = feiyun_iam::relay::shared_key("secret-a", PUSH_PURPOSE);
        let sealed = seal_push(&key, 42, b"{\"users\":[]}").unwrap();
        assert!(
            !sealed.windows(5).any(|w| w == b"users"),
            "not readable in transit"
        );
        assert_eq!(open_push(&key, 42, &sealed).unwrap(), b"{\"users\":[]}");
        let other = feiyun_iam::relay::shared_key("secret-b", PUSH_PURPOSE);
        assert!(
            open_push(&other, 42, &sealed).is_err(),
            "another peer's key"
        );
        assert!(
            open_push(&key, 43, &sealed).is_err(),
            "replayed as a newer generation"
        );
        assert!(open_push(&key, 42, b"{\"users\":[]}").is_err(), "unsealed");
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(open_push(&key, 42, &altered).is_err(), "altered");
    }

    /// Issue 19, item 21: a generation was taken as sent, so a push stamped far in the future
    /// won every later comparison.
    #[test]
    fn a_generation_from_the_future_is_held_to_the_clock() {
        let now = 1_800_000_000_000;
        let h: &[u8] = b"same";
        let g = accepted_generation((i64::MAX, h), (now - 1, h), now).unwrap();
        assert_eq!(g, now + MAX_GENERATION_SKEW_MS);
        // Once the skew has passed, a change made here is newer than what that push was
        // recorded at, and a push no newer than it is refused as stale.
        let later_local = now + MAX_GENERATION_SKEW_MS + 1;
        assert!(later_local > g);
        assert!(matches!(
            accepted_generation((g, h), (later_local, h), later_local),
            Err(ReplicationError::Stale(_))
        ));
        // An ordinary newer push is kept as sent; an older one is stale.
        assert_eq!(
            accepted_generation((now - 5, h), (now - 10, h), now).unwrap(),
            now - 5
        );
        assert!(accepted_generation((now - 10, h), (now - 5, h), now).is_err());
    }

    #[test]
    fn of_two_equal_generations_exactly_one_yields() {
        let now = 1_800_000_000_000;
        for g in [0, now - 5] {
            let (x, y): (&[u8], &[u8]) = (b"state-x", b"state-y");
            let x_at_y = accepted_generation((g, x), (g, y), now).is_ok();
            let y_at_x = accepted_generation((g, y), (g, x), now).is_ok();
            assert!(x_at_y != y_at_x, "generation {g}");
        }
    }
}

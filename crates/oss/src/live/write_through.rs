//! Write-through of a live bucket (`--write-through`): a consumer of the event log that
//! replays each write and delete made here to the legacy store, so that going back to it
//! (a rollback of the cut-over) loses nothing. Copies fetched from the legacy store are
//! not written back.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;
use futures::StreamExt;

use super::{FETCH_MAX, LegacyError};
use crate::events::EventRecord;
use crate::{GetRequest, ObjectHeaders, ObjectService, OssError};

/// The event-log consumer's name (its cursor; the log is not trimmed past it).
pub const WRITE_THROUGH_CONSUMER: &str = "live-write-through";
const BATCH: usize = 256;

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Replays new events each `every`, on the background-lease holder.
    pub fn spawn_live_write_through(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(svc) = weak.upgrade() else { return };
                if !feiyun_common::background::runs() {
                    continue;
                }
                let round = feiyun_common::background::fenced(svc.write_through_round());
                if let Err(e) = round.await {
                    tracing::warn!(error = %e, "live write-through stopped; retried next round");
                }
            }
        });
    }

    /// Replays up to a batch of events; stops at the first the legacy store could not take
    /// for want of being reachable, to retry it next round.
    pub async fn write_through_round(self: &Arc<Self>) -> Result<usize, OssError> {
        let pos = self.event_cursor(WRITE_THROUGH_CONSUMER).await?;
        let events = self.events_after(pos, BATCH).await?;
        let mut done = 0;
        let mut upto = pos;
        for e in &events {
            match self.write_through_one(e).await {
                Ok(wrote) => done += usize::from(wrote),
                Err(OssError::Legacy(m)) if m.starts_with(UNREACHABLE) => {
                    if done > 0 {
                        self.set_event_cursor(WRITE_THROUGH_CONSUMER, upto).await?;
                    }
                    return Err(OssError::Legacy(m));
                }
                Err(err) => {
                    // Refused for good (access, an SSE-C object, too large): reported, and
                    // the log moves on.
                    self.stats.live_write_through_failures.fetch_add(1, Relaxed);
                    let _ = self
                        .note_error(&e.bucket, format!("write-through of {}: {err}", e.key))
                        .await;
                }
            }
            upto = e.id;
        }
        if upto > pos {
            if done > 0 {
                self.set_event_cursor(WRITE_THROUGH_CONSUMER, upto).await?;
            } else {
                self.skip_events_to(WRITE_THROUGH_CONSUMER, upto).await?;
            }
        }
        Ok(done)
    }

    /// Replays one event; answers whether it wrote to the legacy store.
    async fn write_through_one(self: &Arc<Self>, e: &EventRecord) -> Result<bool, OssError> {
        if e.from_legacy {
            return Ok(false);
        }
        let setting = match self.bucket(&e.bucket).await {
            Ok(b) => match b.live {
                Some(s) if s.write_through => s,
                _ => return Ok(false),
            },
            Err(OssError::NoSuchBucket) => return Ok(false),
            Err(err) => return Err(err),
        };
        // The bucket's history before the cut-over is not the legacy store's business.
        if e.time_ms < setting.started_ms {
            return Ok(false);
        }
        let legacy = self.legacy_for(&e.bucket, &setting)?;
        let current = match self
            .head_here(&e.bucket, &e.key, &GetRequest::default())
            .await
        {
            Ok(r) => Some(r.record),
            Err(OssError::NoSuchKey | OssError::DeleteMarker { .. }) => None,
            Err(err) => return Err(err),
        };
        if e.name.starts_with("ObjectCreated") {
            // Only while it is still the key's current version: a later event carries the
            // newer one (or its delete).
            let Some(rec) = current.filter(|r| Some(&r.etag) == e.etag.as_ref()) else {
                return Ok(false);
            };
            if rec.size > FETCH_MAX {
                return Err(OssError::InvalidRequest(format!(
                    "larger than {} MiB; copy it back with `feiyun migrate`",
                    FETCH_MAX >> 20
                )));
            }
            let read = self
                .get_here(&e.bucket, &e.key, &GetRequest::default())
                .await?;
            let mut body = BytesMut::with_capacity(rec.size as usize);
            if let Some(mut s) = read.body {
                while let Some(chunk) = s.next().await {
                    body.extend_from_slice(&chunk?);
                }
            }
            legacy
                .put(&e.key, &ObjectHeaders::of(&read.record), body.freeze())
                .await
                .map_err(write_error)?;
        } else {
            // A delete of the current version (not of an older one) that still holds.
            if current.is_some() {
                return Ok(false);
            }
            legacy.delete(&e.key).await.map_err(write_error)?;
        }
        self.stats.live_written_through.fetch_add(1, Relaxed);
        Ok(true)
    }

    async fn note_error(&self, bucket: &str, error: String) -> Result<(), OssError> {
        let mut st = self.load_status(bucket).await?;
        super::copier::note(&mut st, error);
        self.save_status(bucket, &st).await
    }
}

const UNREACHABLE: &str = "unreachable: ";

fn write_error(e: LegacyError) -> OssError {
    match e {
        LegacyError::Unavailable(m) => OssError::Legacy(format!("{UNREACHABLE}{m}")),
        other => OssError::Legacy(other.to_string()),
    }
}

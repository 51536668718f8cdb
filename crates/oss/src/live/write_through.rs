//! Write-through of a live bucket (`--write-through`): a consumer of the event log that
//! replays each write and delete made here to the legacy store, so that going back to it
//! (a rollback of the cut-over) loses nothing. Copies fetched from the legacy store are
//! not written back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;
use futures::StreamExt;

use super::{FETCH_MAX, LegacyError, LiveSetting};
use crate::events::EventRecord;
use crate::{GetRequest, ObjectHeaders, ObjectService, OssError};

/// The event-log consumer's name (its cursor; the log is not trimmed past it).
pub const WRITE_THROUGH_CONSUMER: &str = "live-write-through";
const BATCH: usize = 1000;

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// Replays new events each `every`, on the background-lease holder.
    pub fn spawn_live_write_through(self: &Arc<Self>, every: Duration) {
        self.spawn_live_rounds(every, "live write-through", |svc| async move {
            svc.write_through_round().await.map(|_| ())
        });
    }

    /// Replays the events since its cursor, a batch at a time; stops at the first event the
    /// legacy store (or this region) could not take for now, to retry it next round.
    pub async fn write_through_round(self: &Arc<Self>) -> Result<usize, OssError> {
        let mut settings: HashMap<String, Option<LiveSetting>> = HashMap::new();
        let mut done = 0;
        loop {
            let pos = self.event_cursor(WRITE_THROUGH_CONSUMER).await?;
            let events = self.events_after(pos, BATCH).await?;
            let mut upto = pos;
            let mut wrote = false;
            for e in &events {
                let setting = match settings.get(&e.bucket) {
                    Some(s) => s.clone(),
                    None => {
                        let s = match self.bucket(&e.bucket).await {
                            Ok(b) => b.live.filter(|s| s.write_through),
                            Err(OssError::NoSuchBucket) => None,
                            Err(err) => return Err(err),
                        };
                        settings.insert(e.bucket.clone(), s.clone());
                        s
                    }
                };
                let outcome = match setting {
                    // The bucket's history before the cut-over is not the legacy store's.
                    Some(s) if !e.from_legacy && e.id >= s.first_event => {
                        self.write_through_one(&s, e).await
                    }
                    _ => Ok(false),
                };
                match outcome {
                    Ok(w) => {
                        wrote |= w;
                        done += usize::from(w);
                    }
                    Err(err) if retried(&err) => {
                        if upto > pos {
                            self.set_event_cursor(WRITE_THROUGH_CONSUMER, upto).await?;
                        }
                        return Err(err);
                    }
                    Err(err) => {
                        // Refused for good (an SSE-C object, too large, a request the store
                        // rejects): reported, and the log moves on.
                        self.stats.live_write_through_failures.fetch_add(1, Relaxed);
                        tracing::warn!(bucket = %e.bucket, key = %e.key, error = %err, "write-through refused");
                        let _ = self
                            .note_write_through_error(&e.bucket, format!("{}: {err}", e.key))
                            .await;
                    }
                }
                upto = e.id;
            }
            if upto > pos {
                if wrote {
                    self.set_event_cursor(WRITE_THROUGH_CONSUMER, upto).await?;
                } else {
                    self.skip_events_to(WRITE_THROUGH_CONSUMER, upto).await?;
                }
            }
            if events.len() < BATCH {
                return Ok(done);
            }
        }
    }

    /// Makes the legacy key what the key is here now, for an event of it: the current
    /// version PUT there (for a write, only while it is still the one the event made; a
    /// later event carries a newer one), or the key deleted there when it is gone here.
    async fn write_through_one(
        self: &Arc<Self>,
        setting: &LiveSetting,
        e: &EventRecord,
    ) -> Result<bool, OssError> {
        let legacy = self.legacy_for(&e.bucket, setting)?;
        let current = match self
            .head_here(&e.bucket, &e.key, &GetRequest::default())
            .await
        {
            Ok(r) => Some(r.record),
            Err(OssError::NoSuchKey | OssError::DeleteMarker { .. }) => None,
            Err(err) => return Err(err),
        };
        let created = e.name.starts_with("ObjectCreated");
        match current {
            Some(rec) if created && Some(&rec.etag) != e.etag.as_ref() => return Ok(false),
            Some(rec) => {
                if rec.size > FETCH_MAX {
                    return Err(OssError::InvalidRequest(format!(
                        "larger than {} MiB; copy it back with `feiyun migrate`",
                        FETCH_MAX >> 20
                    )));
                }
                // Read as the migration's principal, with its KMS permissions.
                let key_check = self
                    .acting(setting, "s3:GetObject", &e.bucket, &e.key)
                    .await
                    .map_err(|err| OssError::AccessDenied(err.to_string()))?;
                let req = GetRequest {
                    key_check,
                    ..Default::default()
                };
                let read = self.get_here(&e.bucket, &e.key, &req).await?;
                let mut body = BytesMut::with_capacity(read.record.size as usize);
                if let Some(mut s) = read.body {
                    while let Some(chunk) = s.next().await {
                        body.extend_from_slice(&chunk?);
                    }
                }
                legacy
                    .put(&e.key, &ObjectHeaders::of(&read.record), body.freeze())
                    .await
                    .map_err(write_error)?;
            }
            None if created => return Ok(false),
            None => legacy.delete(&e.key).await.map_err(write_error)?,
        }
        self.stats.live_written_through.fetch_add(1, Relaxed);
        Ok(true)
    }

    /// Records a refused replay in the bucket's own row (the copier owns `live.status`).
    async fn note_write_through_error(&self, bucket: &str, error: String) -> Result<(), OssError> {
        let mut errors: Vec<String> = match self.bucket_config(bucket, ERRORS_ROW).await? {
            Some(b) => crate::records::decode(&b)?,
            None => Vec::new(),
        };
        errors.push(error);
        if errors.len() > super::MAX_ERRORS {
            errors.remove(0);
        }
        self.set_bucket_config(bucket, ERRORS_ROW, Some(crate::records::encode(&errors)?))
            .await
    }

    /// The latest replays the legacy store refused for good, newest last.
    pub(crate) async fn write_through_errors(&self, bucket: &str) -> Result<Vec<String>, OssError> {
        match self.bucket_config(bucket, ERRORS_ROW).await? {
            Some(b) => crate::records::decode(&b),
            None => Ok(Vec::new()),
        }
    }
}

pub(crate) const ERRORS_ROW: &str = "live.write-through-errors";
const RETRY: &str = "retry: ";

/// Whether a replay failed for now (retried from that event next round) rather than for good.
fn retried(e: &OssError) -> bool {
    match e {
        OssError::Legacy(m) => m.starts_with(RETRY),
        OssError::Busy | OssError::Raced | OssError::Unavailable(_) | OssError::Internal(_) => true,
        _ => false,
    }
}

/// An unreachable store, or one that refuses these credentials (a clock skew, a key being
/// rotated), is waited for: skipping would leave it behind for a rollback. A store that
/// rejects one request (4xx) is not.
fn write_error(e: LegacyError) -> OssError {
    match e {
        LegacyError::Unavailable(m) | LegacyError::Denied(m) => {
            OssError::Legacy(format!("{RETRY}{m}"))
        }
        other => OssError::Legacy(other.to_string()),
    }
}

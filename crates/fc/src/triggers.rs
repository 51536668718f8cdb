//! Triggers: object events and timers that invoke functions.
//!
//! Object triggers follow the region's durable event log from their own cursor (consumer
//! `fc-triggers`), so delivery is at least once and survives restarts: the cursor moves only
//! after every matching invocation of a batch has succeeded or been dead-lettered. Each
//! event is tried up to the trigger's `max_attempts` with doubling back-off; then a
//! dead-letter record (`d/NAME/ID` in the functions table) keeps what failed and why.
//!
//! An object trigger hands the function the object's bytes (or the S3 event JSON, for
//! removals or when asked), with the event in `X-Fc-*` headers; with an output, a 2xx
//! response body is written to the output bucket under the prefix plus the same key — the
//! function reads and writes objects through the host, with the authority its trigger's
//! creator was checked for.
//!
//! Timer triggers fire on cron schedules (UTC); a firing missed while the region was down is
//! not replayed, as cron does not.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use feiyun_meta::{MetaStore, Table, WriteBatch};
use feiyun_oss::events::EventRecord;
use futures::StreamExt;
use serde_json::json;

use crate::cron::Schedule;
use crate::records::{self, DeadLetter, FunctionRecord, Source, Trigger, TriggerSpec};
use crate::runtime::Request;
use crate::service::{self, Functions, MAX_REQUEST, ServiceError};

/// The event-log consumer of object triggers.
pub const CONSUMER: &str = "fc-triggers";
const BATCH: usize = 100;
const POLL: Duration = Duration::from_millis(100);
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// Invocations of one batch run at once.
const PARALLEL: usize = 16;

type Armed = Vec<(Arc<FunctionRecord>, TriggerSpec)>;

pub(crate) fn spawn<M: MetaStore>(svc: &Arc<Functions<M>>) {
    let weak = Arc::downgrade(svc);
    tokio::spawn(async move {
        let mut armed: (u64, Armed) = (0, Vec::new());
        loop {
            let Some(svc) = weak.upgrade() else { break };
            if !feiyun_common::background::runs() {
                drop(svc);
                tokio::time::sleep(POLL).await;
                continue;
            }
            let busy = match feiyun_common::background::fenced(follow_round(&svc, &mut armed)).await
            {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "object trigger round failed");
                    false
                }
            };
            drop(svc);
            if !busy {
                tokio::time::sleep(POLL).await;
            }
        }
    });
    let weak = Arc::downgrade(svc);
    tokio::spawn(async move {
        let mut armed: (u64, Armed) = (0, Vec::new());
        let mut next: HashMap<(String, String), i64> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let Some(svc) = weak.upgrade() else { break };
            if !feiyun_common::background::runs() {
                continue;
            }
            timer_round(&svc, &mut armed, &mut next);
        }
    });
}

/// The triggers of every function, reloaded when a function changed.
fn armed<'a, M: MetaStore>(
    svc: &Functions<M>,
    cache: &'a mut (u64, Armed),
) -> Result<&'a Armed, ServiceError> {
    let generation = svc.generation.load(Ordering::SeqCst);
    if cache.0 != generation {
        let mut all = Vec::new();
        for f in svc.list()? {
            for t in &f.triggers {
                all.push((f.clone(), t.clone()));
            }
        }
        *cache = (generation, all);
    }
    Ok(&cache.1)
}

async fn follow_round<M: MetaStore>(
    svc: &Arc<Functions<M>>,
    cache: &mut (u64, Armed),
) -> Result<usize, ServiceError> {
    let host = svc.host().clone();
    let cursor = host.cursor(CONSUMER).await?;
    let armed = armed(svc, cache)?;
    if !armed
        .iter()
        .any(|(_, t)| matches!(t.source, Source::Object(_)))
    {
        // No object trigger anywhere: no event can ask for work, so none is read (reading
        // and decoding each was a tenth of the CPU of a client writing one small object at
        // a time). A trigger armed later starts after the event it was armed at.
        let landed = host.events_landed_below().saturating_sub(1);
        if landed > cursor {
            host.skip_to(CONSUMER, landed).await?;
        }
        return Ok(0);
    }
    let events = host.events_after(cursor, BATCH).await?;
    let Some(last) = events.last().map(|e| e.id) else {
        return Ok(0);
    };
    let mut work = Vec::new();
    for e in &events {
        for (f, t) in armed {
            if let Source::Object(o) = &t.source
                && e.id > t.after_event
                && o.matches(&e.bucket, &e.key, &e.name)
            {
                work.push((f.clone(), t.clone(), e.clone()));
            }
        }
    }
    if work.is_empty() {
        host.skip_to(CONSUMER, last).await?;
        return Ok(events.len());
    }
    futures::stream::iter(work)
        .map(|(f, t, e)| {
            let svc = svc.clone();
            async move { deliver(&svc, &f, &t, Some(&e)).await }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
    host.set_cursor(CONSUMER, last).await?;
    Ok(events.len())
}

fn timer_round<M: MetaStore>(
    svc: &Arc<Functions<M>>,
    cache: &mut (u64, Armed),
    next: &mut HashMap<(String, String), i64>,
) {
    let armed = match armed(svc, cache) {
        Ok(a) => a.clone(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot load timer triggers");
            return;
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut live = std::collections::HashSet::new();
    for (f, t) in armed {
        let Source::Timer { schedule } = &t.source else {
            continue;
        };
        let Ok(s) = Schedule::parse(schedule) else {
            continue;
        };
        let id = (f.name.clone(), t.id.clone());
        live.insert(id.clone());
        let due = *next
            .entry(id.clone())
            .or_insert_with(|| s.next_after(now).unwrap_or(i64::MAX));
        if due <= now {
            next.insert(id, s.next_after(now).unwrap_or(i64::MAX));
            let svc = svc.clone();
            tokio::spawn(async move { deliver(&svc, &f, &t, None).await });
        }
    }
    next.retain(|k, _| live.contains(k));
}

/// Invokes for one event (or timer firing) until it succeeds or runs out of attempts.
async fn deliver<M: MetaStore>(
    svc: &Functions<M>,
    f: &FunctionRecord,
    t: &TriggerSpec,
    event: Option<&EventRecord>,
) {
    let attempts = t.max_attempts.clamp(1, 10);
    let mut wait = FIRST_RETRY;
    let mut error = String::new();
    for attempt in 1..=attempts {
        match fire(svc, f, t, event).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(function = %f.name, trigger = %t.id, attempt, error = %e, "trigger invocation failed");
                error = e;
            }
        }
        if attempt < attempts {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let letter = DeadLetter {
        id: svc.meter().next_id(ms),
        trigger: t.id.clone(),
        time_ms: ms,
        attempts,
        error,
        bucket: event.map(|e| e.bucket.clone()),
        key: event.map(|e| e.key.clone()),
        event: event.map(|e| e.name.clone()),
        version_id: event.and_then(|e| e.version_id.clone()),
    };
    let mut batch = WriteBatch::new();
    batch.put(
        Table::Functions,
        records::dead_letter_key(&f.name, &letter.id),
        records::encode(&letter),
    );
    if let Err(e) = svc.meta().commit(batch).await {
        tracing::error!(function = %f.name, error = %e, "cannot store a dead letter");
    }
}

fn event_json(e: &EventRecord, region: &str) -> serde_json::Value {
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": service::rfc3339(e.time_ms),
        "eventName": e.name,
        "s3": {
            "bucket": {"name": e.bucket, "arn": format!("arn:aws:s3:::{}", e.bucket)},
            "object": {
                "key": e.key,
                "size": e.size,
                "eTag": e.etag,
                "versionId": e.version_id,
                "sequencer": e.sequencer(),
            }
        }
    }]})
}

/// One attempt: build the request, invoke, write the output.
async fn fire<M: MetaStore>(
    svc: &Functions<M>,
    f: &FunctionRecord,
    t: &TriggerSpec,
    event: Option<&EventRecord>,
) -> Result<(), String> {
    let host = svc.host();
    let mut headers = Vec::new();
    let (body, trigger) = match (&t.source, event) {
        (Source::Object(o), Some(e)) => {
            headers.push(("x-fc-bucket".to_owned(), e.bucket.clone()));
            headers.push(("x-fc-key".to_owned(), e.key.clone()));
            headers.push(("x-fc-event".to_owned(), e.name.clone()));
            headers.push(("x-fc-event-id".to_owned(), e.sequencer()));
            let created = e.name.starts_with("ObjectCreated");
            let body = if o.object_body && created {
                // Authorized now, for this object, as whoever the trigger acts for: a
                // policy changed since the trigger was set up, a Deny on part of the
                // prefix, the object's tags and its KMS key all count.
                let key_check = svc
                    .authorize_for_trigger(
                        f,
                        t,
                        "s3:GetObject",
                        &e.bucket,
                        &e.key,
                        e.version_id.as_deref(),
                    )
                    .await
                    .map_err(|why| format!("reading {}/{}: {why}", e.bucket, e.key))?;
                match host
                    .read_object(
                        &e.bucket,
                        &e.key,
                        e.version_id.as_deref(),
                        MAX_REQUEST,
                        Some(key_check),
                    )
                    .await
                {
                    Ok((bytes, ct)) => {
                        headers.push((
                            "content-type".to_owned(),
                            ct.unwrap_or_else(|| "application/octet-stream".into()),
                        ));
                        bytes
                    }
                    // Gone since (a later delete): nothing left to process.
                    Err(crate::host::HostError::NotFound(_)) => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                }
            } else {
                headers.push(("content-type".to_owned(), "application/json".to_owned()));
                event_json(e, svc.region()).to_string().into_bytes()
            };
            let trigger = Trigger::Object {
                bucket: e.bucket.clone(),
                key: e.key.clone(),
            };
            (body, trigger)
        }
        (Source::Timer { schedule }, _) => {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
            let body = json!({
                "trigger": t.id,
                "schedule": schedule,
                "time": service::rfc3339((time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64),
            });
            (
                body.to_string().into_bytes(),
                Trigger::Timer {
                    schedule: schedule.clone(),
                },
            )
        }
        (Source::Object(_), None) | (Source::Http { .. }, _) => return Ok(()),
    };
    let req = Request {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers,
        body,
    };
    let done = svc
        .invoke(f, t.qualifier.as_deref(), req, trigger)
        .await
        .map_err(|e| e.to_string())?;
    if !(200..300).contains(&done.response.status) {
        return Err(format!("the function answered {}", done.response.status));
    }
    if let (Source::Object(o), Some(e)) = (&t.source, event)
        && let Some(out) = &o.output
    {
        let ct = done
            .response
            .headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone());
        let out_key = format!("{}{}", out.prefix, e.key);
        svc.authorize_for_trigger(f, t, "s3:PutObject", &out.bucket, &out_key, None)
            .await
            .map_err(|why| format!("writing {}/{out_key}: {why}", out.bucket))?;
        host.write_object(&out.bucket, &out_key, Bytes::from(done.response.body), ct)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Refuses a trigger whose output would fire it again.
pub fn check_loop(spec: &TriggerSpec) -> Result<(), ServiceError> {
    if let Source::Object(o) = &spec.source
        && let Some(out) = &o.output
        && out.bucket == o.bucket
        && (out.prefix.starts_with(&o.prefix) || o.prefix.starts_with(&out.prefix))
        && o.events
            .iter()
            .any(|e| e.starts_with("ObjectCreated") || e == "*")
    {
        return Err(ServiceError::InvalidParameter(format!(
            "the output {}/{}… would match the trigger's own filter {}/{}… and fire it again; use another bucket or a disjoint prefix",
            out.bucket, out.prefix, o.bucket, o.prefix
        )));
    }
    if let Source::Timer { schedule } = &spec.source {
        Schedule::parse(schedule).map_err(|e| ServiceError::InvalidParameter(e.to_string()))?;
    }
    Ok(())
}

impl<M: MetaStore> Functions<M> {
    /// Authorizes one object a trigger reads or writes, as the function's execution role
    /// when the invoked version has one, else as the principal who set the trigger up
    /// (the account, for triggers stored before that was recorded). Returns the KMS check
    /// to read under.
    pub(crate) async fn authorize_for_trigger(
        &self,
        f: &FunctionRecord,
        t: &TriggerSpec,
        action: &str,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<feiyun_oss::KeyCheck, String> {
        let ids = self
            .identities()
            .ok_or("this region has no identities for functions")?;
        let role = Functions::<M>::resolve(f, t.qualifier.as_deref())
            .ok()
            .and_then(|(_, v)| v.config.role.clone());
        let principal = role
            .or_else(|| t.acting_as.clone())
            .unwrap_or_else(|| format!("arn:aws:iam::{}:root", f.owner));
        ids.authorize_object(&principal, action, bucket, key, version)
            .await
    }

    /// Refuses a route on one of the region's own names or on a host and path another
    /// trigger already routes.
    fn check_route(&self, name: &str, spec: &TriggerSpec) -> Result<(), ServiceError> {
        let Source::Http { host, path } = &spec.source else {
            return Ok(());
        };
        if self.is_own_host(host) {
            return Err(ServiceError::InvalidParameter(format!(
                "{host} is one of the region's S3 domains (or a bucket under one); a route needs a host name of its own"
            )));
        }
        if !self.in_route_domain(host) {
            return Err(ServiceError::InvalidParameter(format!(
                "{host} is not under a functions domain; routes may take only names under the region's fc_domains (FEIYUN_FC_DOMAINS)"
            )));
        }
        for f in self.list()? {
            for t in &f.triggers {
                if let Source::Http { host: h, path: p } = &t.source
                    && h == host
                    && p == path
                    && !(f.name == name && t.id == spec.id)
                {
                    return Err(ServiceError::Conflict(format!(
                        "{host}{path} is already routed to {} (trigger {})",
                        f.name, t.id
                    )));
                }
            }
        }
        Ok(())
    }
}

impl<M: MetaStore> Functions<M> {
    /// Adds or replaces a trigger of `name`.
    pub async fn set_trigger(
        &self,
        name: &str,
        spec: TriggerSpec,
    ) -> Result<Arc<FunctionRecord>, ServiceError> {
        if !records::valid_name(&spec.id) {
            return Err(ServiceError::InvalidParameter(format!(
                "{:?} is not a trigger id (1-64 letters, digits, '-' or '_')",
                spec.id
            )));
        }
        check_loop(&spec)?;
        self.check_route(name, &spec)?;
        let f = self.function(name)?;
        if let Some(q) = &spec.qualifier {
            Self::resolve(&f, Some(q))?;
        }
        let mut next = (*f).clone();
        // Only what happens from now on fires it (event ids are at least the clock in µs);
        // a replaced trigger keeps its place in the log.
        let mut spec = spec;
        spec.after_event = match f.triggers.iter().find(|t| t.id == spec.id) {
            Some(old) => old.after_event,
            None => (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as u64,
        };
        next.triggers.retain(|t| t.id != spec.id);
        next.triggers.push(spec);
        if next.triggers.len() > 100 {
            return Err(ServiceError::InvalidParameter(
                "a function has at most 100 triggers".into(),
            ));
        }
        self.replace(&f, next).await
    }

    pub async fn delete_trigger(&self, name: &str, id: &str) -> Result<(), ServiceError> {
        let f = self.function(name)?;
        if !f.triggers.iter().any(|t| t.id == id) {
            return Err(ServiceError::NotFound(format!(
                "{name} has no trigger {id}"
            )));
        }
        let mut next = (*f).clone();
        next.triggers.retain(|t| t.id != id);
        self.replace(&f, next).await?;
        Ok(())
    }

    /// Dead letters of `name`, oldest first.
    pub fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>, ServiceError> {
        let prefix = records::dead_letters_prefix(name);
        let end = feiyun_meta::prefix_end(&prefix);
        Ok(self
            .meta()
            .scan(Table::Functions, &prefix, end.as_deref(), limit)?
            .iter()
            .filter_map(|(_, v)| records::decode(v))
            .collect())
    }
}

/// Deletes every dead letter of a deleted function.
pub(crate) async fn purge_dead_letters<M: MetaStore>(meta: &M, name: &str) {
    let prefix = records::dead_letters_prefix(name);
    let end = feiyun_meta::prefix_end(&prefix);
    loop {
        let page = match meta.scan(Table::Functions, &prefix, end.as_deref(), 1000) {
            Ok(p) if !p.is_empty() => p,
            _ => return,
        };
        let mut batch = WriteBatch::new();
        for (k, _) in page {
            batch.delete(Table::Functions, k);
        }
        if meta.commit(batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ObjectSource, Output};

    fn object(prefix: &str, out: Option<(&str, &str)>) -> TriggerSpec {
        TriggerSpec {
            id: "t".into(),
            qualifier: None,
            max_attempts: 3,
            after_event: 0,
            acting_as: None,
            source: Source::Object(ObjectSource {
                bucket: "in".into(),
                prefix: prefix.into(),
                suffix: String::new(),
                events: vec!["ObjectCreated:*".into()],
                object_body: true,
                output: out.map(|(b, p)| Output {
                    bucket: b.into(),
                    prefix: p.into(),
                }),
            }),
        }
    }

    #[test]
    fn outputs_that_would_fire_their_own_trigger_are_refused() {
        assert!(check_loop(&object("uploads/", Some(("in", "uploads/thumbs/")))).is_err());
        assert!(check_loop(&object("", Some(("in", "out/")))).is_err());
        assert!(check_loop(&object("uploads/", Some(("in", "derived/")))).is_ok());
        assert!(check_loop(&object("", Some(("out", "")))).is_ok());
        let timer = |s: &str| TriggerSpec {
            id: "t".into(),
            qualifier: None,
            max_attempts: 1,
            after_event: 0,
            acting_as: None,
            source: Source::Timer { schedule: s.into() },
        };
        assert!(check_loop(&timer("*/5 * * * *")).is_ok());
        assert!(check_loop(&timer("every minute")).is_err());
    }

    #[test]
    fn filters_match_bucket_prefix_suffix_and_event() {
        let Source::Object(o) = object("in/", None).source else {
            unreachable!()
        };
        let o = ObjectSource {
            suffix: ".jpg".into(),
            ..o
        };
        assert!(o.matches("in", "in/a.jpg", "ObjectCreated:Put"));
        assert!(o.matches("in", "in/a.jpg", "ObjectCreated:CompleteMultipartUpload"));
        assert!(!o.matches("in", "in/a.png", "ObjectCreated:Put"));
        assert!(!o.matches("in", "out/a.jpg", "ObjectCreated:Put"));
        assert!(!o.matches("other", "in/a.jpg", "ObjectCreated:Put"));
        assert!(!o.matches("in", "in/a.jpg", "ObjectRemoved:Delete"));
    }
}

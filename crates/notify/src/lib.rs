//! Event delivery: one worker per webhook target reads the object event log from its own
//! durable cursor and POSTs each matching event as S3's event JSON, in log order. A failed
//! POST is retried with exponential back-off (capped) until it succeeds, so delivery is
//! at-least-once, ordered per key, and survives restarts; one slow target never holds back
//! another. The worker also trims the log once every target is past an event (or once the
//! event is older than the retention).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use feiyun_oss::events::{EventRecord, NotificationConfig};
use feiyun_oss::{BlobStore, MetaStore, ObjectService, OssError};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Events read per round.
const BATCH: usize = 256;
const POLL: Duration = Duration::from_millis(200);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Deliveries of one event a target may refuse (or miss) before the event goes to its dead
/// letters and delivery moves on: about seven minutes of doubling waits. One poisoned event
/// must not hold every later one for the target for ever.
pub const MAX_ATTEMPTS: u32 = 20;
/// Where undeliverable events are kept, in the `system` table: `PREFIX TARGET / EVENT_ID`.
pub const DEAD_LETTER_PREFIX: &str = "notify-dead/";
const POST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("webhook {id}: {url:?} is not an http:// or https:// URL")]
    BadUrl { id: String, url: String },
    #[error("webhook TLS client: {0}")]
    Tls(String),
}

/// Plain HTTP and HTTPS; servers are checked against the system's CAs (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` name others, as for OpenSSL).
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn http_client() -> Result<HttpClient, NotifyError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // One unreadable system certificate must not disable every webhook.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NotifyError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// A configured webhook target.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub url: http::Uri,
}

impl Target {
    pub fn new(id: &str, url: &str) -> Result<Self, NotifyError> {
        let bad = || NotifyError::BadUrl {
            id: id.to_owned(),
            url: url.to_owned(),
        };
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad());
        }
        Ok(Self {
            id: id.to_owned(),
            url: uri,
        })
    }

    fn consumer(&self) -> String {
        format!("webhook/{}", self.id)
    }
}

/// S3's event message for one event and the configuration that matched it.
pub fn s3_event_json(e: &EventRecord, configuration_id: &str, region: &str) -> serde_json::Value {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.time_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let mut object = serde_json::json!({
        "key": url_encode(&e.key),
        "sequencer": e.sequencer(),
    });
    if let Some(s) = e.size {
        object["size"] = s.into();
    }
    if let Some(t) = &e.etag {
        object["eTag"] = t.clone().into();
    }
    if let Some(v) = &e.version_id {
        object["versionId"] = v.clone().into();
    }
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": region,
            "eventTime": time,
            "eventName": e.name,
            "userIdentity": { "principalId": "feiyun-root" },
            "requestParameters": { "sourceIPAddress": "" },
            "responseElements": {},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": configuration_id,
                "bucket": {
                    "name": e.bucket,
                    "ownerIdentity": { "principalId": "feiyun-root" },
                    "arn": format!("arn:aws:s3:::{}", e.bucket),
                },
                "object": object,
            }
        }]
    })
}

/// Keys in S3 event messages are URL-encoded with `+` for spaces.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Starts one delivery worker per target and the log trimmer, which keeps events until every
/// target and every other `followers` consumer is past them (or they are older than
/// `retention`).
pub fn spawn<M: MetaStore, B: BlobStore>(
    oss: Arc<ObjectService<M, B>>,
    targets: Vec<Target>,
    followers: Vec<String>,
    retention: Duration,
) -> Result<(), NotifyError> {
    let client = http_client()?;
    for t in &targets {
        let (oss, t, client) = (oss.clone(), t.clone(), client.clone());
        tokio::spawn(async move { deliver_forever(oss, t, client).await });
    }
    let mut consumers: Vec<String> = targets.iter().map(Target::consumer).collect();
    consumers.extend(followers);
    tokio::spawn(async move { trim_forever(oss, consumers, retention).await });
    Ok(())
}

async fn deliver_forever<M: MetaStore, B: BlobStore>(
    oss: Arc<ObjectService<M, B>>,
    target: Target,
    client: HttpClient,
) {
    let consumer = target.consumer();
    loop {
        if !feiyun_common::background::runs() {
            tokio::time::sleep(POLL).await;
            continue;
        }
        match feiyun_common::background::fenced(deliver_round(&oss, &target, &client, &consumer))
            .await
        {
            Ok(0) => tokio::time::sleep(POLL).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(target = target.id, error = %e, "event delivery round failed");
                tokio::time::sleep(MAX_RETRY).await;
            }
        }
    }
}

/// Delivers one batch; returns how many events it moved past.
async fn deliver_round<M: MetaStore, B: BlobStore>(
    oss: &ObjectService<M, B>,
    target: &Target,
    client: &HttpClient,
    consumer: &str,
) -> Result<usize, OssError> {
    let cursor = oss.event_cursor(consumer).await?;
    let events = oss.events_after(cursor, BATCH).await?;
    let Some(last) = events.last().map(|e| e.id) else {
        return Ok(0);
    };
    let mut configs: HashMap<String, NotificationConfig> = HashMap::new();
    let mut delivered = false;
    for e in &events {
        if !configs.contains_key(&e.bucket) {
            let c = match oss.notification(&e.bucket).await {
                Ok(c) => c,
                // The bucket is gone: nobody is subscribed any more.
                Err(OssError::NoSuchBucket) => NotificationConfig::default(),
                Err(err) => return Err(err),
            };
            configs.insert(e.bucket.clone(), c);
        }
        let rules = configs[&e.bucket]
            .rules
            .iter()
            .filter(|r| r.target == target.id && r.matches(e));
        for rule in rules {
            delivered = true;
            let body = s3_event_json(e, &rule.id, oss.region()).to_string();
            let retry = Retry {
                first: FIRST_RETRY,
                max: MAX_RETRY,
                attempts: MAX_ATTEMPTS,
            };
            if let Err(why) =
                post_until_delivered(client, target, Bytes::from(body.clone()), retry).await
            {
                dead_letter(oss, target, e.id, &body, &why).await?;
            }
        }
    }
    if delivered {
        oss.set_event_cursor(consumer, last).await?;
    } else {
        oss.skip_events_to(consumer, last).await?;
    }
    Ok(events.len())
}

/// How a delivery is retried.
#[derive(Clone, Copy)]
struct Retry {
    first: Duration,
    max: Duration,
    attempts: u32,
}

/// Posts until the target accepts, or `retry.attempts` tries failed (the last error).
async fn post_until_delivered(
    client: &HttpClient,
    target: &Target,
    body: Bytes,
    retry: Retry,
) -> Result<(), String> {
    let mut wait = retry.first;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let req = hyper::Request::post(target.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()));
        let result = match req {
            Ok(req) => tokio::time::timeout(POST_TIMEOUT, client.request(req)).await,
            Err(e) => {
                tracing::error!(target = target.id, error = %e, "cannot build webhook request");
                return Err(e.to_string());
            }
        };
        let why = match result {
            Ok(Ok(resp)) if resp.status().is_success() => {
                let _ = resp.into_body().collect().await;
                return Ok(());
            }
            Ok(Ok(resp)) => format!("refused with {}", resp.status().as_u16()),
            Ok(Err(e)) => format!("unreachable: {e}"),
            Err(_) => "timed out".to_owned(),
        };
        tracing::warn!(
            target = target.id,
            attempt,
            why,
            "webhook delivery failed; retrying"
        );
        if attempt >= retry.attempts {
            return Err(why);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(retry.max);
    }
}

/// Keeps an event the target would not take, so delivery can move on without losing it.
async fn dead_letter<M: MetaStore, B: BlobStore>(
    oss: &ObjectService<M, B>,
    target: &Target,
    event: u64,
    body: &str,
    why: &str,
) -> Result<(), OssError> {
    tracing::error!(
        target = target.id,
        event,
        why,
        "webhook kept refusing an event; moved to its dead letters"
    );
    let row = format!("{DEAD_LETTER_PREFIX}{}/{event:016x}", target.id);
    let value = serde_json::json!({ "error": why, "event": body }).to_string();
    let mut b = feiyun_meta::WriteBatch::new();
    b.put(
        feiyun_meta::Table::System,
        row.into_bytes(),
        value.into_bytes(),
    );
    oss.meta().commit(b).await?;
    Ok(())
}

async fn trim_forever<M: MetaStore, B: BlobStore>(
    oss: Arc<ObjectService<M, B>>,
    consumers: Vec<String>,
    retention: Duration,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if !feiyun_common::background::runs() {
            continue;
        }
        // Event ids are microseconds since the epoch (or just above), so age is a bound on id.
        let now_us = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as u64;
        let expired = now_us.saturating_sub(retention.as_micros() as u64);
        let mut upto = expired;
        if !consumers.is_empty() {
            let mut slowest = u64::MAX;
            for c in &consumers {
                match oss.event_cursor(c).await {
                    Ok(c) => slowest = slowest.min(c),
                    Err(_) => slowest = 0,
                }
            }
            upto = upto.max(slowest);
        }
        match feiyun_common::background::fenced(oss.trim_events(upto)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "event log trimmed"),
            Err(e) => tracing::warn!(error = %e, "event log trim failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_has_s3_fields() {
        let e = EventRecord {
            id: 0x10,
            bucket: "b".into(),
            key: "a b/c+d".into(),
            name: "ObjectCreated:Put".into(),
            time_ms: 0,
            size: Some(3),
            etag: Some("abc".into()),
            version_id: None,
            replicate: None,
            from_legacy: false,
        };
        let j = s3_event_json(&e, "cfg", "us-east-1");
        let r = &j["Records"][0];
        assert_eq!(r["eventName"], "ObjectCreated:Put");
        assert_eq!(r["eventSource"], "aws:s3");
        assert_eq!(r["s3"]["object"]["key"], "a+b/c%2Bd");
        assert_eq!(r["s3"]["object"]["size"], 3);
        assert_eq!(r["s3"]["object"]["sequencer"], "0000000000000010");
        assert_eq!(r["s3"]["configurationId"], "cfg");
        assert_eq!(r["eventTime"], "1970-01-01T00:00:00Z");
    }

    /// A target that always answers 500 gets the event `attempts` times, then the delivery
    /// gives up (and the caller files it as a dead letter) instead of retrying for ever.
    #[tokio::test]
    async fn a_refusing_target_is_given_up_on_after_its_attempts() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let target = Target::new("t", &format!("http://{addr}/hook")).unwrap();
        let retry = Retry {
            first: Duration::from_millis(1),
            max: Duration::from_millis(5),
            attempts: 4,
        };
        let r =
            post_until_delivered(&http_client().unwrap(), &target, Bytes::from("{}"), retry).await;
        assert_eq!(r, Err("refused with 500".to_owned()));
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[test]
    fn only_plain_http_targets() {
        assert!(Target::new("a", "http://127.0.0.1:9/hook").is_ok());
        assert!(Target::new("a", "https://example.com/hook").is_ok());
        assert!(Target::new("a", "ftp://example.com/hook").is_err());
        assert!(Target::new("a", "/relative").is_err());
        assert!(Target::new("a", "not a url").is_err());
    }
}

//! Bucket notifications to a webhook: a local HTTP receiver gets S3 event JSON in order,
//! including events committed while it was failing and the server was killed and restarted,
//! and over HTTPS to a receiver whose CA the server trusts through `SSL_CERT_FILE`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::Region;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};

/// A webhook that records every body it accepts; while `failing`, it answers 503.
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
    failing: Arc<AtomicBool>,
    refused: Arc<Mutex<usize>>,
}

impl Receiver {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let failing = Arc::new(AtomicBool::new(false));
        let refused: Arc<Mutex<usize>> = Arc::default();
        let (g, f, r) = (got.clone(), failing.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let Some(body) = read_body(&mut reader) else {
                    continue;
                };
                let status = if f.load(Ordering::SeqCst) {
                    *r.lock().unwrap() += 1;
                    "503 Service Unavailable"
                } else {
                    g.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    "200 OK"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self {
            url,
            got,
            failing,
            refused,
        }
    }

    /// (event name, key) of everything received, in order.
    pub(crate) fn events(&self) -> Vec<(String, String)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|j| {
                let r = &j["Records"][0];
                (
                    r["eventName"].as_str().unwrap().to_owned(),
                    r["s3"]["object"]["key"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// Reads one HTTP request's headers and returns its body (by Content-Length).
fn read_body(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn notification(prefix: &str, arn: &str) -> NotificationConfiguration {
    NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .id("to-hook")
                .queue_arn(arn)
                .events(Event::S3ObjectCreated)
                .events(Event::S3ObjectRemoved)
                .filter(
                    NotificationConfigurationFilter::builder()
                        .key(
                            S3KeyFilter::builder()
                                .filter_rules(
                                    FilterRule::builder()
                                        .name(FilterRuleName::Prefix)
                                        .value(prefix)
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .build()
}

async fn put(c: &aws_sdk_s3::Client, key: &str) {
    c.put_object()
        .bucket("events")
        .key(key)
        .body(ByteStream::from_static(b"payload"))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_delivery_in_order_and_after_restart() {
    let hook = Receiver::start();
    let webhooks = format!("hook={}", hook.url);
    let env = [("FEIYUN_WEBHOOKS", webhooks.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let mut r = Region::start_with(dir.path(), &env);
    let c = r.client();
    c.create_bucket().bucket("events").send().await.unwrap();

    // Bad configurations: an unknown target, an unknown event.
    let err = c
        .put_bucket_notification_configuration()
        .bucket("events")
        .notification_configuration(notification("in/", "arn:feiyun:sqs:us-east-1:0:nobody"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidArgument"));
    let bad_event = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn("arn:feiyun:sqs:us-east-1:0:hook")
                .events(Event::S3ReplicationOperationFailedReplication)
                .build()
                .unwrap(),
        )
        .build();
    let err = c
        .put_bucket_notification_configuration()
        .bucket("events")
        .notification_configuration(bad_event)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidArgument"));

    c.put_bucket_notification_configuration()
        .bucket("events")
        .notification_configuration(notification("in/", "arn:feiyun:sqs:us-east-1:0:hook"))
        .send()
        .await
        .unwrap();
    let got = c
        .get_bucket_notification_configuration()
        .bucket("events")
        .send()
        .await
        .unwrap();
    assert_eq!(got.queue_configurations().len(), 1);
    assert_eq!(got.queue_configurations()[0].id(), Some("to-hook"));

    put(&c, "in/a b").await;
    put(&c, "out/ignored").await;
    c.delete_object()
        .bucket("events")
        .key("in/a b")
        .send()
        .await
        .unwrap();
    wait_for("two events", || hook.events().len() >= 2);
    assert_eq!(
        hook.events(),
        vec![
            ("ObjectCreated:Put".to_owned(), "in/a+b".to_owned()),
            ("ObjectRemoved:Delete".to_owned(), "in/a+b".to_owned()),
        ]
    );
    let first = hook.got.lock().unwrap()[0].clone();
    let rec = &first["Records"][0];
    assert_eq!(rec["s3"]["bucket"]["name"], "events");
    assert_eq!(rec["s3"]["object"]["size"], 7);
    assert_eq!(rec["s3"]["configurationId"], "to-hook");

    // The receiver fails; events committed meanwhile wait in the log through a kill -9.
    hook.failing.store(true, Ordering::SeqCst);
    put(&c, "in/while-down-1").await;
    put(&c, "in/while-down-2").await;
    wait_for("a refused delivery", || *hook.refused.lock().unwrap() > 0);
    r.kill9();
    hook.failing.store(false, Ordering::SeqCst);
    let _r = Region::start_with(dir.path(), &env);
    wait_for("events from before the restart", || {
        hook.events().len() >= 4
    });
    let keys: Vec<String> = hook.events().into_iter().map(|e| e.1).collect();
    let pos = |k: &str| keys.iter().position(|x| x == k).unwrap_or(usize::MAX);
    assert!(
        pos("in/while-down-1") < pos("in/while-down-2"),
        "in order: {keys:?}"
    );
    assert!(!keys.contains(&"out/ignored".to_owned()), "prefix filter");
}

/// An HTTPS receiver with a certificate from a throwaway CA; returns its URL, the CA's PEM and
/// the keys it received.
fn tls_receiver() -> (String, String, Arc<Mutex<Vec<String>>>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/events", listener.local_addr().unwrap());
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let k = keys.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut reader = BufReader::new(rustls::StreamOwned::new(conn, stream));
            let Some(body) = read_body(&mut reader) else {
                continue;
            };
            if let Ok(j) = serde_json::from_slice::<serde_json::Value>(&body)
                && let Some(key) = j["Records"][0]["s3"]["object"]["key"].as_str()
            {
                k.lock().unwrap().push(key.to_owned());
            }
            let s = reader.get_mut();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.flush();
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    });
    (url, ca.pem(), keys)
}

#[tokio::test]
async fn webhook_over_https_checks_the_certificate() {
    let (url, ca, keys) = tls_receiver();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let webhooks = format!("hook={url}");
    let r = Region::start_env(&[
        ("FEIYUN_WEBHOOKS", webhooks.as_str()),
        ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
    ]);
    let c = r.client();
    c.create_bucket().bucket("tls-events").send().await.unwrap();
    c.put_bucket_notification_configuration()
        .bucket("tls-events")
        .notification_configuration(notification("in/", "arn:feiyun:sqs:us-east-1:0:hook"))
        .send()
        .await
        .unwrap();
    put_to(&c, "tls-events", "in/secure").await;
    wait_for("delivery over https", || {
        keys.lock().unwrap().contains(&"in/secure".to_owned())
    });

    // A region that does not trust that CA never delivers (and keeps the event pending).
    let (url, _other_ca, untrusted) = tls_receiver();
    let webhooks = format!("hook={url}");
    let r2 = Region::start_env(&[("FEIYUN_WEBHOOKS", webhooks.as_str())]);
    let c2 = r2.client();
    c2.create_bucket()
        .bucket("tls-events")
        .send()
        .await
        .unwrap();
    c2.put_bucket_notification_configuration()
        .bucket("tls-events")
        .notification_configuration(notification("in/", "arn:feiyun:sqs:us-east-1:0:hook"))
        .send()
        .await
        .unwrap();
    put_to(&c2, "tls-events", "in/never").await;
    std::thread::sleep(Duration::from_secs(2));
    assert!(untrusted.lock().unwrap().is_empty());
}

async fn put_to(c: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
}

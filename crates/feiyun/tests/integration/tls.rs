//! HTTPS listeners through aws-sdk-s3: a self-signed region trusted by its local CA, the same
//! CA after a restart, `aws:SecureTransport` deciding a bucket policy on the plain and the TLS
//! listener of one region, and bad TLS settings refused at start with one line.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::{ACCESS_KEY, SECRET_KEY, pattern};
use aws_sdk_s3::primitives::ByteStream;

struct TlsRegion {
    child: Child,
    endpoints: Vec<String>,
    ca: Option<PathBuf>,
}

impl Drop for TlsRegion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_feiyun"));
    c.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("FEIYUN_ROOT_ACCESS_KEY", ACCESS_KEY)
        .env("FEIYUN_ROOT_SECRET_KEY", SECRET_KEY)
        .env("FEIYUN_LOG", "warn,s3s=off");
    c
}

/// Starts a region and reads its readiness lines: the endpoints, then the CA path.
fn start(dir: &Path, args: &[&str]) -> TlsRegion {
    let mut child = command(dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn feiyun");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut endpoints = Vec::new();
    let mut ca = None;
    for line in lines.by_ref() {
        let line = line.expect("read stdout");
        if let Some(e) = line
            .strip_prefix("S3 endpoint: ")
            .or_else(|| line.strip_prefix("S3 endpoint (also): "))
        {
            endpoints.push(e.to_owned());
        } else if let Some((_, path)) = line.split_once("--ca-bundle): ") {
            ca = Some(PathBuf::from(path));
        }
        let expect_ca = args.contains(&"--tls-self-signed");
        let expected = if args.contains(&"--tls-listen") { 2 } else { 1 };
        if endpoints.len() == expected && (ca.is_some() || !expect_ca) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    TlsRegion {
        child,
        endpoints,
        ca,
    }
}

fn https_client(endpoint: &str, ca_pem: &[u8]) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(
            tls::TlsContext::builder()
                .with_trust_store(tls::TrustStore::empty().with_pem_certificate(ca_pem.to_vec()))
                .build()
                .expect("TLS context"),
        )
        .build_https();
    aws_sdk_s3::Client::from_conf(
        common::config_for(endpoint, ACCESS_KEY, SECRET_KEY)
            .http_client(http)
            .build(),
    )
}

async fn body(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    match c.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => Ok(o.body.collect().await.expect("body").to_vec()),
        Err(e) => Err(e
            .as_service_error()
            .and_then(|s| s.meta().code())
            .unwrap_or("no code")
            .to_owned()),
    }
}

#[tokio::test]
async fn self_signed_region_serves_https_and_keeps_its_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(tmp.path(), &["--tls-self-signed"]);
    let endpoint = r.endpoints[0].clone();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    let ca_path = r.ca.clone().expect("the CA path is printed");
    let ca = std::fs::read(&ca_path).unwrap();
    assert!(String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE"));
    let c = https_client(&endpoint, &ca);
    c.create_bucket().bucket("secure").send().await.unwrap();
    let data = pattern(3 * 1024 * 1024 + 17, 7);
    c.put_object()
        .bucket("secure")
        .key("big")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(body(&c, "secure", "big").await.unwrap(), data);

    // Plain HTTP to the TLS port gets no S3 answer, and the listener keeps serving.
    let addr = endpoint.trim_start_matches("https://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let _ = s.write_all(b"GET /secure/big HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 200"),
        "plain HTTP must not be served on the TLS port"
    );
    // A client that does not trust the CA is refused by its own TLS check.
    let other_ca = rcgen_free_ca();
    let untrusting = https_client(&endpoint, other_ca.as_bytes());
    assert!(untrusting.list_buckets().send().await.is_err());
    assert_eq!(body(&c, "secure", "big").await.unwrap(), data);
    drop(r);

    // The same CA after a restart: clients that trusted it once keep working.
    let r = start(tmp.path(), &["--tls-self-signed"]);
    assert_eq!(std::fs::read(r.ca.clone().unwrap()).unwrap(), ca);
    let c = https_client(&r.endpoints[0], &ca);
    assert_eq!(body(&c, "secure", "big").await.unwrap(), data);
    let key = tmp.path().join("tls/key.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the private key is the owner's only");
        // No master key configured here: the embedded default generated one, owner-only.
        let master = std::fs::metadata(tmp.path().join("master.key")).unwrap();
        assert_eq!(master.permissions().mode() & 0o777, 0o600);
    }
}

/// A CA certificate nobody signed our server with (from a second self-signed region).
fn rcgen_free_ca() -> String {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(tmp.path(), &["--tls-self-signed"]);
    std::fs::read_to_string(r.ca.clone().unwrap()).unwrap()
}

#[tokio::test]
async fn secure_transport_decides_on_each_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(
        tmp.path(),
        &["--tls-self-signed", "--tls-listen", "127.0.0.1:0"],
    );
    assert_eq!(r.endpoints.len(), 2, "{:?}", r.endpoints);
    assert!(r.endpoints[0].starts_with("http://"));
    assert!(r.endpoints[1].starts_with("https://"));
    let ca = std::fs::read(r.ca.clone().unwrap()).unwrap();
    let plain = common::client_for(&r.endpoints[0], ACCESS_KEY, SECRET_KEY);
    let tls = https_client(&r.endpoints[1], &ca);
    plain
        .create_bucket()
        .bucket("tls-only")
        .send()
        .await
        .unwrap();
    plain
        .put_object()
        .bucket("tls-only")
        .key("k")
        .body(ByteStream::from_static(b"kept"))
        .send()
        .await
        .unwrap();
    // The policy AWS recommends to require TLS.
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"TlsOnly","Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::tls-only/*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#;
    plain
        .put_bucket_policy()
        .bucket("tls-only")
        .policy(policy)
        .send()
        .await
        .unwrap();
    assert_eq!(
        body(&plain, "tls-only", "k").await,
        Err("AccessDenied".to_owned())
    );
    assert_eq!(body(&tls, "tls-only", "k").await, Ok(b"kept".to_vec()));
}

#[test]
fn bad_tls_settings_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--tls-cert", junk], "tls_cert / tls_key"),
        (&["--tls-listen", "127.0.0.1:0"], "tls_listen"),
        (
            &["--tls-cert", junk, "--tls-key", junk],
            "holds no certificate",
        ),
        (
            &["--tls-self-signed", "--tls-cert", junk, "--tls-key", junk],
            "tls_self_signed",
        ),
    ];
    for (args, expect) in cases {
        let out = command(&tmp.path().join("data"), args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

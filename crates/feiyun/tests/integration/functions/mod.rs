//! Function Compute against the real binary: `feiyun fc` deploys, invokes, publishes,
//! aliases, reads logs and deletes; `/fc/invoke/NAME` answers signed callers with
//! `fc:InvokeFunction` and unsigned ones only for public functions; limits stop guests with a
//! clear error while the host and other functions go on; concurrency beyond the maximum is
//! refused with 429 and Retry-After; scaling to zero and back is seen in the metrics; code
//! and versions survive a restart without the compiled cache; bad input changes nothing.

use crate::common;

use crate::common::sigv4;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{ACCESS_KEY, RawResponse, Region, SECRET_KEY, raw_bytes};

mod access;
mod lifecycle;
mod routes;
mod triggers;

fn guest(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fc/tests/guests/{name}.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Writes a module to a file the CLI can deploy.
fn wasm_file(dir: &std::path::Path, name: &str, wasm: &[u8]) -> PathBuf {
    let p = dir.join(format!("{name}.wasm"));
    std::fs::write(&p, wasm).expect("write wasm");
    p
}

/// `hello` with another greeting of the same length, to tell versions apart.
fn hello_v2() -> Vec<u8> {
    let path = format!(
        "{}/../fc/tests/guests/hello.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("hello.wat");
    assert!(text.contains("hello from wasm"));
    wat::parse_str(text.replace("hello from wasm", "HELLO FROM WASM")).expect("v2")
}

/// Runs `feiyun fc ARGS` against the region as `(ak, sk)`.
fn fc_as(r: &Region, (ak, sk): (&str, &str), args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .arg("fc")
        .args(args)
        .env("FEIYUN_ENDPOINT", r.endpoint())
        .env("AWS_ACCESS_KEY_ID", ak)
        .env("AWS_SECRET_ACCESS_KEY", sk)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run feiyun fc")
}

fn fc(r: &Region, args: &[&str]) -> Output {
    fc_as(r, (ACCESS_KEY, SECRET_KEY), args)
}

/// `feiyun fc ARGS`, which must succeed; its stdout.
fn fc_ok(r: &Region, args: &[&str]) -> String {
    let out = fc(r, args);
    assert!(
        out.status.success(),
        "feiyun fc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `feiyun fc ARGS`, which must fail with one line on stderr; that line.
fn fc_err(r: &Region, args: &[&str]) -> String {
    let out = fc(r, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "feiyun fc {args:?} succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

/// A request to the region, signed as `(ak, sk)` for service `fc` when given.
fn request(
    r: &Region,
    creds: Option<(&str, &str)>,
    method: &str,
    path: &str,
    body: &[u8],
) -> RawResponse {
    request_at(r.addr, creds, method, path, body)
}

/// [`request`] by address, for threads.
fn request_at(
    addr: std::net::SocketAddr,
    creds: Option<(&str, &str)>,
    method: &str,
    path: &str,
    body: &[u8],
) -> RawResponse {
    send(addr, &addr.to_string(), creds, method, path, body)
}

/// [`request`] with another `Host` header (an HTTP route's host name).
fn request_host(
    r: &Region,
    host: &str,
    creds: Option<(&str, &str)>,
    method: &str,
    path: &str,
) -> RawResponse {
    send(r.addr, host, creds, method, path, b"")
}

/// One HTTP/1.1 request to `addr` naming `host`, signed for service `fc` when `creds` are
/// given.
fn send(
    addr: std::net::SocketAddr,
    host: &str,
    creds: Option<(&str, &str)>,
    method: &str,
    path: &str,
    body: &[u8],
) -> RawResponse {
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some((ak, sk)) = creds {
        let signer = sigv4::Signer {
            access_key: ak.into(),
            secret_key: sk.into(),
            region: "us-east-1".into(),
        };
        let auth = signer.sign_as(
            "fc",
            method,
            path_only,
            query,
            &[("host", host.to_owned())],
            &sigv4::sha256_hex(body),
            &sigv4::now_amz_date(),
        );
        for (k, v) in auth {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    raw_bytes(addr, &req)
}

fn root() -> Option<(&'static str, &'static str)> {
    Some((ACCESS_KEY, SECRET_KEY))
}

/// One IAM query call signed as root; the XML answer (asserting success).
fn iam(r: &Region, params: &[(&str, &str)]) -> String {
    let resp = common::query_call(
        r.addr,
        (ACCESS_KEY, SECRET_KEY),
        "iam",
        "2010-05-08",
        params,
    );
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    resp.body_text()
}

fn xml_field(xml: &str, tag: &str) -> String {
    xml.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|r| r.split(&format!("</{tag}>")).next())
        .unwrap_or_default()
        .to_owned()
}

fn json(resp: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null)
}

/// The value of one Prometheus sample whose line starts with `series`.
fn metric(r: &Region, series: &str) -> Option<f64> {
    r.metrics()
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The service's limits as the tests need them.
mod feiyun_fc_limits {
    /// Largest invocation body (Lambda's synchronous payload limit).
    pub const MAX_REQUEST: usize = 6 << 20;
}

fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Polls `get` every 100 ms for up to `secs`; the first `Some`.
async fn eventually<T, F, Fut>(secs: u64, mut get: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..secs * 10 {
        if let Some(v) = get().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn object_text(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let o = c.get_object().bucket(bucket).key(key).send().await.ok()?;
    let bytes = o.body.collect().await.ok()?.into_bytes();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `NAME=VALUE` lines as a function printed them.
fn env_of(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

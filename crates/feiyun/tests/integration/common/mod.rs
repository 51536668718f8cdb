//! Test harness: runs the real `feiyun` binary on a free port with a temporary data directory,
//! and gives tests an `aws-sdk-s3` client (default checksum and chunked-upload behaviour on)
//! and a raw HTTP helper for requests no SDK would send.

#![allow(dead_code)]

#[path = "../../../src/sigv4.rs"]
pub mod sigv4;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ACCESS_KEY: &str = "FYTESTACCESSKEY00001";
pub const SECRET_KEY: &str = "fy-test-secret-key-0123456789abcdefghijk";
/// A fixed master key, as an operator would pass it (base64 of 32 bytes), so restarts of one
/// data directory keep their KMS keys and no test writes `master.key` beside its data.
pub const MASTER_KEY: &str = "ZmVpeXVuLXRlc3QtbWFzdGVyLWtleS0zMi1ieXRlcyE=";

pub struct Region {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Region {
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let mut r = Self::start_in(&dir);
        r._tmp = Some(tmp);
        r
    }

    /// Starts on an existing data dir (for restart tests); the caller owns the directory.
    pub fn start_in(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts a fresh region with extra `FEIYUN_*` settings.
    pub fn start_env(env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let mut r = Self::start_with(&dir, env);
        r._tmp = Some(tmp);
        r
    }

    pub fn start_with(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_at(dir, "127.0.0.1:0", env)
    }

    /// Starts on `listen` (a restart that peers must find at the same address).
    pub fn start_at(dir: &Path, listen: &str, env: &[(&str, &str)]) -> Self {
        let meta = meta_url_for(dir, env);
        let mut child = Command::new(env!("CARGO_BIN_EXE_feiyun"))
            .args(["server", "--listen", listen, "--data-dir"])
            .arg(dir)
            .env("FEIYUN_ROOT_ACCESS_KEY", ACCESS_KEY)
            .env("FEIYUN_ROOT_SECRET_KEY", SECRET_KEY)
            .env("FEIYUN_MASTER_KEY", MASTER_KEY)
            .env(
                "FEIYUN_LOG",
                std::env::var("FEIYUN_TEST_LOG").unwrap_or_else(|_| "warn,s3s=off".into()),
            )
            // The caller's settings win over the defaults above.
            .envs(env.iter().copied())
            .envs(meta.iter().map(|u| ("FEIYUN_META_URL", u.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn feiyun");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .expect("server printed nothing")
            .expect("read stdout");
        let addr = first
            .strip_prefix("S3 endpoint: http://")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("address");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr,
            data_dir: dir.to_owned(),
            _tmp: None,
        }
    }

    /// Whether this run keeps metadata in PostgreSQL (`FEIYUN_TEST_META=postgres`).
    pub fn on_postgres() -> bool {
        meta_engine() == MetaEngine::Postgres
    }

    /// Starts a region that must refuse to start; returns what it said on stderr.
    pub fn start_refused(dir: &Path, env: &[(&str, &str)]) -> String {
        let meta = meta_url_for(dir, env);
        let out = Command::new(env!("CARGO_BIN_EXE_feiyun"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("FEIYUN_ROOT_ACCESS_KEY", ACCESS_KEY)
            .env("FEIYUN_ROOT_SECRET_KEY", SECRET_KEY)
            .env("FEIYUN_MASTER_KEY", MASTER_KEY)
            .env("FEIYUN_LOG", "error")
            .envs(env.iter().copied())
            .envs(meta.iter().map(|u| ("FEIYUN_META_URL", u.as_str())))
            .stdin(Stdio::null())
            .output()
            .expect("run feiyun");
        assert!(
            !out.status.success(),
            "the server started: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        client_for(&self.endpoint(), ACCESS_KEY, SECRET_KEY)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait")
    }

    pub fn metrics(&self) -> String {
        raw(
            self.addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .body_text()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_for(endpoint: &str, ak: &str, sk: &str) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(config_for(endpoint, ak, sk).build())
}

/// A client signing with temporary credentials (an STS session).
pub fn session_client(endpoint: &str, ak: &str, sk: &str, token: &str) -> aws_sdk_s3::Client {
    let creds = aws_credential_types::Credentials::new(ak, sk, Some(token.to_owned()), None, "sts");
    aws_sdk_s3::Client::from_conf(
        config_for(endpoint, ak, sk)
            .credentials_provider(creds)
            .build(),
    )
}

/// The SDK configuration every test client starts from (path style, us-east-1).
pub fn config_for(endpoint: &str, ak: &str, sk: &str) -> aws_sdk_s3::config::Builder {
    let creds = aws_credential_types::Credentials::new(ak, sk, None, None, "test");
    aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .force_path_style(true)
}

pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The `<Code>` of an S3 error body.
    pub fn code(&self) -> String {
        let t = self.body_text();
        t.split("<Code>")
            .nth(1)
            .and_then(|r| r.split("</Code>").next())
            .unwrap_or("")
            .to_owned()
    }
}

/// Sends raw bytes and reads the whole response (the request should say `Connection: close`).
pub fn raw(addr: SocketAddr, request: &str) -> RawResponse {
    raw_bytes(addr, request.as_bytes())
}

pub fn raw_bytes(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut buf = Vec::new();
    let head_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |i| i + 4);
    if request.len() - head_end > 1 << 20 {
        // A large body: the server may refuse on its headers alone and close; read that
        // answer before pushing megabytes into a socket nobody reads.
        s.write_all(&request[..head_end]).expect("write head");
        s.set_read_timeout(Some(Duration::from_millis(500))).ok();
        let mut first = [0u8; 4096];
        if let Ok(n) = s.read(&mut first)
            && n > 0
        {
            buf.extend_from_slice(&first[..n]);
            s.set_read_timeout(Some(Duration::from_secs(30))).ok();
            let _ = s.read_to_end(&mut buf);
            return parse_response(&buf);
        }
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        s.write_all(&request[head_end..]).expect("write body");
    } else {
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        s.write_all(request).expect("write");
    }
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> RawResponse {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + size]);
        b = &b[end + 2 + size + 2..];
    }
    out
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// Uploads `parts` as one multipart object (create, upload each part, complete in order);
/// returns the object's ETag, or the first error as text.
pub async fn multipart_put(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    parts: &[Vec<u8>],
) -> Result<String, String> {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let id = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?
        .upload_id()
        .unwrap_or_default()
        .to_owned();
    let mut done = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let up = c
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(aws_sdk_s3::primitives::ByteStream::from(data.clone()))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        done.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(up.e_tag().unwrap_or_default())
                .build(),
        );
    }
    let out = c
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(out.e_tag().unwrap_or_default().to_owned())
}

/// Completes an upload with the given (part number, ETag) list; returns "OK" or the S3 code.
pub async fn complete_code(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: &[(i32, &str)],
) -> String {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let list = parts
        .iter()
        .map(|(n, e)| CompletedPart::builder().part_number(*n).e_tag(*e).build())
        .collect();
    match c
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(list))
                .build(),
        )
        .send()
        .await
    {
        Ok(_) => "OK".into(),
        Err(e) => e.code().unwrap_or("<none>").to_owned(),
    }
}

/// Percent-encodes a form value as SigV4 and the query protocol want it.
pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A query-protocol call (`Action=…&…`) to the region's `service` (iam, sts), signed as
/// `(ak, sk)`.
pub fn query_call(
    addr: SocketAddr,
    (ak, sk): (&str, &str),
    service: &str,
    version: &str,
    params: &[(&str, &str)],
) -> RawResponse {
    let mut body = format!("Version={version}");
    for (k, v) in params {
        body.push_str(&format!("&{}={}", form_encode(k), form_encode(v)));
    }
    let host = addr.to_string();
    let signer = sigv4::Signer {
        access_key: ak.into(),
        secret_key: sk.into(),
        region: "us-east-1".into(),
    };
    let ct = "application/x-www-form-urlencoded; charset=utf-8".to_string();
    let auth = signer.sign_as(
        service,
        "POST",
        "/",
        "",
        &[("host", host.clone()), ("content-type", ct.clone())],
        &sigv4::sha256_hex(body.as_bytes()),
        &sigv4::now_amz_date(),
    );
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in auth {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    raw(addr, &req)
}

/// Creates IAM user `name` on `r` (as root) with the inline policy `policy`; returns its
/// (access key, secret).
pub fn iam_user(r: &Region, name: &str, policy: &str) -> (String, String) {
    let call = |params: &[(&str, &str)]| {
        let resp = query_call(
            r.addr,
            (ACCESS_KEY, SECRET_KEY),
            "iam",
            "2010-05-08",
            params,
        );
        assert_eq!(resp.status, 200, "{params:?}: {}", resp.body_text());
        resp.body_text()
    };
    call(&[("Action", "CreateUser"), ("UserName", name)]);
    call(&[
        ("Action", "PutUserPolicy"),
        ("UserName", name),
        ("PolicyName", "inline"),
        ("PolicyDocument", policy),
    ]);
    let k = call(&[("Action", "CreateAccessKey"), ("UserName", name)]);
    let field = |tag: &str| {
        k.split(&format!("<{tag}>"))
            .nth(1)
            .and_then(|r| r.split(&format!("</{tag}>")).next())
            .unwrap_or_default()
            .to_owned()
    };
    (field("AccessKeyId"), field("SecretAccessKey"))
}

/// A loopback address no one listens on right now.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// A network link to `target` that a test can cut and heal: a TCP relay on a loopback port.
/// Cut, nothing crosses in either direction — connections already open stay open but silent,
/// new ones are accepted and hang — as when a WAN link between two sites fails; healed, the
/// held connections carry on.
pub struct Link {
    pub addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Link {
    /// Starts the relay (on the current tokio runtime).
    pub async fn open(target: SocketAddr) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind link");
        let addr = listener.local_addr().expect("link addr");
        let (up, _) = tokio::sync::watch::channel(true);
        let watch = up.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let gate = watch.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, gate.clone()), pump(ro, wi, gate));
                });
            }
        });
        Link { addr, up }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn heal(&self) {
        self.up.send_replace(true);
    }
}

/// Copies `from` to `to` while the link is up; holds the bytes while it is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if gate.wait_for(|up| *up).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Read while up, but cut before it could be delivered: it waits for the heal.
        if gate.wait_for(|up| *up).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A signed POST to the region's query/JSON APIs (`iam`, `kms`) as `(ak, sk)`.
pub fn signed_post(
    r: &Region,
    creds: (&str, &str),
    service: &str,
    headers: &[(&str, String)],
    body: &str,
) -> RawResponse {
    signed_post_to(r, creds, service, "/", headers, body)
}

/// A signed POST of `body` to `path` for `service` (`sql`), as `(ak, sk)`.
pub fn signed_post_to(
    r: &Region,
    (ak, sk): (&str, &str),
    service: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> RawResponse {
    let signer = sigv4::Signer {
        access_key: ak.into(),
        secret_key: sk.into(),
        region: "us-east-1".into(),
    };
    let host = r.addr.to_string();
    let mut signed = vec![("host", host.clone())];
    signed.extend(headers.iter().cloned());
    let auth = signer.sign_as(
        service,
        "POST",
        path,
        "",
        &signed,
        &sigv4::sha256_hex(body.as_bytes()),
        &sigv4::now_amz_date(),
    );
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain(auth)
    {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw(r.addr, &req)
}

/// A signed GET of `path` on the region's admin API for `service` (`migrate`), as `(ak, sk)`.
pub fn sigv4_get(r: &Region, (ak, sk): (&str, &str), service: &str, path: &str) -> RawResponse {
    let signer = sigv4::Signer {
        access_key: ak.into(),
        secret_key: sk.into(),
        region: "us-east-1".into(),
    };
    let host = r.addr.to_string();
    let auth = signer.sign_as(
        service,
        "GET",
        path,
        "",
        &[("host", host.clone())],
        &sigv4::sha256_hex(b""),
        &sigv4::now_amz_date(),
    );
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in auth {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw(r.addr, &req)
}

/// One KMS JSON call (`TrentService.ACTION`), signed as root; returns status and body.
pub fn kms(r: &Region, action: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = signed_post(
        r,
        (ACCESS_KEY, SECRET_KEY),
        "kms",
        &[
            ("content-type", "application/x-amz-json-1.1".into()),
            ("x-amz-target", format!("TrentService.{action}")),
        ],
        &body.to_string(),
    );
    let json = serde_json::from_str(&resp.body_text()).unwrap_or(serde_json::Value::Null);
    (resp.status, json)
}

#[derive(Debug, PartialEq, Eq)]
pub enum MetaEngine {
    Embedded,
    Postgres,
}

/// The metadata engine the regions of this run use: `FEIYUN_TEST_META=postgres` runs them
/// on a throwaway PostgreSQL server (one database per data directory, so a restart finds
/// its metadata again); unset or `embedded`, on the embedded engine.
pub fn meta_engine() -> MetaEngine {
    match std::env::var("FEIYUN_TEST_META").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => MetaEngine::Embedded,
        Ok("postgres") => MetaEngine::Postgres,
        Ok(other) => panic!("FEIYUN_TEST_META={other}: expected embedded or postgres"),
    }
}

fn meta_url_for(dir: &Path, env: &[(&str, &str)]) -> Option<String> {
    if meta_engine() == MetaEngine::Embedded || env.iter().any(|(k, _)| *k == "FEIYUN_META_URL") {
        return None;
    }
    static PG: std::sync::OnceLock<feiyun_meta_pg::testkit::Throwaway> = std::sync::OnceLock::new();
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let pg = PG.get_or_init(feiyun_meta_pg::testkit::Throwaway::start);
    // The database is named in a file inside the data directory: a restart of the directory
    // finds its metadata again, and a test that wipes the directory (a lost region) loses
    // the metadata with it, as on the embedded engine.
    let marker = dir.join(".test-meta-database");
    let _one = CREATE.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(name) = std::fs::read_to_string(&marker) {
        return Some(format!(
            "postgres://feiyun@127.0.0.1:{}/{}",
            pg.port(),
            name.trim()
        ));
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "r{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let _ = std::fs::create_dir_all(dir);
    std::fs::write(&marker, &name).expect("write the test database marker");
    Some(pg.fresh_database(&name))
}

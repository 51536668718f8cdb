//! The S3 client both ends of a migration speak: any S3 API (AWS, OSS, MinIO, Garage, Ceph,
//! another Feiyun) as the source, the region as the destination. SigV4 with
//! `UNSIGNED-PAYLOAD` (bodies are covered by `Content-MD5` and flexible checksums instead, so
//! no byte is hashed twice), path-style or virtual-hosted, session tokens, bounded answers.
//!
//! Written rather than taken from the AWS SDK for the reason replication's client gives
//! (BENCHMARKS.md: the SDK's per-request machinery cost a quarter of a core at 400 PUT/s),
//! and because a migration of small files is nothing but per-request overhead.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use feiyun_iam::sigv4::{Signer, amz_date_now, uri_encode};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Https = hyper_rustls::HttpsConnector<HttpConnector<CheckedResolver>>;

/// Which addresses a client may connect to; `None` allows every address.
pub type AddressCheck = Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

/// Resolves names for the client and keeps only the addresses the check allows, at every
/// new connection: a name that starts resolving to a forbidden address (DNS rebinding) is
/// refused then, not only when the endpoint was accepted. IP literals never reach a
/// resolver; [`S3Client::new`] checks those.
#[derive(Clone)]
pub struct CheckedResolver {
    check: Option<AddressCheck>,
}

type Resolved = std::vec::IntoIter<std::net::SocketAddr>;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for CheckedResolver {
    type Response = Resolved;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Resolved, std::io::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let check = self.check.clone();
        Box::pin(async move {
            let all: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<_> = all
                .into_iter()
                .filter(|a| check.as_ref().is_none_or(|c| c(a.ip())))
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{name} resolves to no address this server may reach"),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// Most of an answer read into memory: listings of 1,000 long keys, error documents.
const MAX_DOCUMENT: usize = 16 * 1024 * 1024;
/// A request that has not answered by then is treated as lost (and retried if it may be).
const DOCUMENT_TIMEOUT: Duration = Duration::from_secs(120);
const UNSIGNED: &str = "UNSIGNED-PAYLOAD";

/// What went wrong talking to an S3 endpoint.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No answer: connect, TLS, a timeout, a connection cut mid-way.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Refused before it was sent: a request no S3 endpoint should get.
    #[error("{0}")]
    Invalid(String),
    /// The endpoint answered with an error status.
    #[error("{code} ({status}): {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
}

impl ClientError {
    /// Worth trying again: the endpoint is away or busy rather than refusing.
    pub fn transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) => true,
            ClientError::Invalid(_) => false,
            ClientError::Status { status, code, .. } => {
                *status >= 500 || *status == 429 || *status == 408 || code == "SlowDown"
            }
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Where an endpoint is and who is speaking to it.
#[derive(Clone)]
pub struct EndpointConfig {
    /// `http://host:port` or `https://host`.
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
    pub region: String,
    /// `https://BUCKET.host/key` instead of `https://host/BUCKET/key`.
    pub virtual_hosted: bool,
    pub tls: rustls::ClientConfig,
    /// The addresses connections may go to (a live migration's legacy store); `None`: any.
    pub allow: Option<AddressCheck>,
}

/// An S3 endpoint, shared by every task of a migration (connections are pooled).
#[derive(Clone)]
pub struct S3Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: HyperClient<Https, Full<Bytes>>,
    scheme: String,
    authority: String,
    signer: Signer,
    token: Option<String>,
    virtual_hosted: bool,
    url: String,
}

/// An answer whose body is still to be read (GetObject).
pub struct Streaming {
    pub headers: HeaderMap,
    pub body: hyper::body::Incoming,
}

impl S3Client {
    pub fn new(c: EndpointConfig) -> Result<Self, ClientError> {
        let uri: http::Uri = c
            .url
            .parse()
            .map_err(|e| ClientError::Unreachable(format!("endpoint {}: {e}", c.url)))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s.to_owned(),
            _ => {
                return Err(ClientError::Unreachable(format!(
                    "endpoint {} is not an http:// or https:// URL",
                    c.url
                )));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| ClientError::Unreachable(format!("endpoint {} has no host", c.url)))?
            .to_string();
        if let (Some(check), Some(host)) = (&c.allow, uri.host()) {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<std::net::IpAddr>()
                && !check(ip)
            {
                return Err(ClientError::Invalid(format!(
                    "endpoint {}: {ip} is not an address this server may reach",
                    c.url
                )));
            }
        }
        let mut http = HttpConnector::new_with_resolver(CheckedResolver { check: c.allow });
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(c.tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            inner: Arc::new(Inner {
                http: HyperClient::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(256)
                    .build(connector),
                scheme,
                authority,
                signer: Signer {
                    access_key: c.access_key,
                    secret_key: c.secret_key,
                    region: c.region,
                    service: "s3".into(),
                },
                token: c.session_token,
                virtual_hosted: c.virtual_hosted,
                url: c.url,
            }),
        })
    }

    /// The same endpoint and keys, signing for another service of the region (`migrate`,
    /// whose journal API lives beside S3), always path-style.
    pub fn for_service(&self, service: &str) -> S3Client {
        let i = &self.inner;
        S3Client {
            inner: Arc::new(Inner {
                http: i.http.clone(),
                scheme: i.scheme.clone(),
                authority: i.authority.clone(),
                signer: Signer {
                    access_key: i.signer.access_key.clone(),
                    secret_key: i.signer.secret_key.clone(),
                    region: i.signer.region.clone(),
                    service: service.to_owned(),
                },
                token: i.token.clone(),
                virtual_hosted: false,
                url: i.url.clone(),
            }),
        }
    }

    /// The endpoint as given, for messages.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// A request whose answer (at most 16 MiB) is read whole; errors as [`ClientError`].
    pub async fn call(
        &self,
        method: Method,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<(HeaderMap, Bytes), ClientError> {
        let exchange = async {
            let resp = self
                .request(method, bucket, key, query, headers, body)
                .await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, headers, body))
        };
        let (status, headers, body) = tokio::time::timeout(DOCUMENT_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                ClientError::Unreachable(format!("no answer within {DOCUMENT_TIMEOUT:?}"))
            })??;
        if status.is_success() {
            Ok((headers, body))
        } else {
            Err(status_error(status, &headers, &body))
        }
    }

    /// One call of an AWS query API (`Action=…`, form-encoded, `POST /`) to `service` at this
    /// endpoint — IAM of another region — signed over the body's SHA-256 as those APIs
    /// require. Answers the XML document.
    pub async fn query_api(
        &self,
        service: &str,
        params: &[(&str, &str)],
    ) -> Result<String, ClientError> {
        let mut body = String::from("Version=2010-05-08");
        for (k, v) in params {
            body.push_str(&format!("&{}={}", uri_encode(k), uri_encode(v)));
        }
        retry(|| async {
            tokio::time::timeout(DOCUMENT_TIMEOUT, self.query_once(service, &body))
                .await
                .map_err(|_| {
                    ClientError::Unreachable(format!("no answer within {DOCUMENT_TIMEOUT:?}"))
                })?
        })
        .await
    }

    async fn query_once(&self, service: &str, body: &str) -> Result<String, ClientError> {
        use sha2::Digest as _;
        let inner = &self.inner;
        let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        let signer = Signer {
            access_key: inner.signer.access_key.clone(),
            secret_key: inner.signer.secret_key.clone(),
            region: inner.signer.region.clone(),
            service: service.to_owned(),
        };
        let amz_date = amz_date_now();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), inner.authority.clone()),
            ("x-amz-date".into(), amz_date.clone()),
            (
                "content-type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            ),
        ];
        if let Some(t) = &inner.token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        let auth = signer.authorization("POST", "/", "", &headers, &hash, &amz_date);
        let mut req = http::Request::builder()
            .method(Method::POST)
            .uri(format!("{}://{}/", inner.scheme, inner.authority));
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .header("authorization", auth)
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| ClientError::Unreachable(format!("request: {e}")))?;
        let resp = inner
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Unreachable(describe(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|e| ClientError::Unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            Ok(String::from_utf8_lossy(&body).into_owned())
        } else {
            Err(status_error(status, &headers, &body))
        }
    }

    /// A request whose (successful) answer body is streamed to the caller; the caller bounds
    /// the time it takes to read it.
    pub async fn stream(
        &self,
        method: Method,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: Vec<(String, String)>,
    ) -> Result<Streaming, ClientError> {
        let resp = tokio::time::timeout(
            DOCUMENT_TIMEOUT,
            self.request(
                method,
                Some(bucket),
                Some(key),
                query,
                headers,
                Bytes::new(),
            ),
        )
        .await
        .map_err(|_| {
            ClientError::Unreachable(format!("no answer within {DOCUMENT_TIMEOUT:?}"))
        })??;
        let status = resp.status();
        if status.is_success() {
            let (parts, body) = resp.into_parts();
            return Ok(Streaming {
                headers: parts.headers,
                body,
            });
        }
        let headers = resp.headers().clone();
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(status_error(status, &headers, &body))
    }

    async fn request(
        &self,
        method: Method,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(&str, &str)],
        extra: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        // An empty key would make `/bucket/` a bucket request (PUT creates, DELETE removes
        // the bucket): a listing that names one is broken or hostile, never obeyed.
        if let Some(k) = key
            && (k.is_empty() || k.len() > crate::source::MAX_KEY_BYTES)
        {
            return Err(ClientError::Invalid(format!(
                "refusing an object request for a key of {} bytes",
                k.len()
            )));
        }
        let inner = &self.inner;
        let (host, path) = match (bucket, inner.virtual_hosted) {
            (Some(b), true) => (format!("{b}.{}", inner.authority), object_path(None, key)),
            (b, _) => (inner.authority.clone(), object_path(b, key)),
        };
        let query: String = query
            .iter()
            .map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let amz_date = amz_date_now();
        let mut headers = extra;
        headers.push(("host".into(), host.clone()));
        headers.push(("x-amz-date".into(), amz_date.clone()));
        headers.push(("x-amz-content-sha256".into(), UNSIGNED.into()));
        if let Some(t) = &inner.token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        for h in &mut headers {
            h.0.make_ascii_lowercase();
        }
        let auth = inner.signer.authorization(
            method.as_str(),
            &path,
            &query,
            &headers,
            UNSIGNED,
            &amz_date,
        );
        let uri = format!(
            "{}://{host}{path}{}{query}",
            inner.scheme,
            if query.is_empty() { "" } else { "?" }
        );
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .header("authorization", auth)
            .body(Full::new(body))
            .map_err(|e| ClientError::Unreachable(format!("request: {e}")))?;
        inner
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Unreachable(describe(&e)))
    }
}

/// `/bucket/key` (or `/key` for virtual-hosted requests), each key segment encoded as SigV4
/// and S3 expect.
fn object_path(bucket: Option<&str>, key: Option<&str>) -> String {
    let mut p = String::new();
    if let Some(b) = bucket {
        p.push('/');
        p.push_str(&uri_encode(b));
    }
    if let Some(k) = key {
        p.push('/');
        let segs: Vec<String> = k.split('/').map(uri_encode).collect();
        p.push_str(&segs.join("/"));
    }
    if p.is_empty() {
        p.push('/');
    }
    p
}

fn status_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(body);
    let code = crate::xml::field(&text, "Code").unwrap_or_else(|| {
        // HEAD answers carry no body: name the status as S3's own codes do.
        match status {
            StatusCode::NOT_FOUND => "NotFound".to_owned(),
            StatusCode::FORBIDDEN => "AccessDenied".to_owned(),
            StatusCode::PRECONDITION_FAILED => "PreconditionFailed".to_owned(),
            s => s.as_str().to_owned(),
        }
    });
    let mut message = crate::xml::field(&text, "Message").unwrap_or_default();
    if message.is_empty()
        && let Some(id) = headers
            .get("x-amz-request-id")
            .and_then(|v| v.to_str().ok())
    {
        message = format!("request {id}");
    }
    ClientError::Status {
        status: status.as_u16(),
        code,
        message,
    }
}

/// The innermost cause of a client error, which is the useful part.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        msg = format!("{msg}: {c}");
        cur = c.source();
    }
    msg
}

/// Runs `op` again on transient errors: four tries, backing off 0.2, 0.8 and 3.2 s with
/// jitter. Every request a migration sends may be repeated (PUTs of the same bytes, parts,
/// reads).
pub async fn retry<T, F, Fut>(mut op: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        match op().await {
            Err(e) if e.transient() && tries < 3 => {
                tries += 1;
                let jitter = Duration::from_millis(u64::from(rand_u16()) % 100);
                tokio::time::sleep(delay + jitter).await;
                delay *= 4;
            }
            r => return r,
        }
    }
}

fn rand_u16() -> u16 {
    // Jitter only needs to differ between tasks: the clock's low bits do.
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (n ^ (n >> 16)) as u16
}

/// A header's value as text, if present and readable.
pub fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_or_overlong_key_is_never_sent() {
        // Nothing listens on port 1: a request that were sent would fail as unreachable.
        let c = S3Client::new(EndpointConfig {
            url: "http://127.0.0.1:1".into(),
            access_key: "k".into(),
            secret_key: "s".into(),
            session_token: None,
            region: "us-east-1".into(),
            virtual_hosted: false,
            tls: rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
            allow: None,
        })
        .unwrap();
        let long = "k".repeat(1025);
        for key in ["", long.as_str()] {
            let e = c
                .call(
                    Method::DELETE,
                    Some("b"),
                    Some(key),
                    &[],
                    Vec::new(),
                    Bytes::new(),
                )
                .await
                .unwrap_err();
            assert!(matches!(e, ClientError::Invalid(_)), "{e}");
            assert!(!e.transient(), "never retried");
        }
    }

    #[test]
    fn paths_encode_each_key_segment() {
        assert_eq!(
            object_path(Some("b"), Some("a b/ü+c%")),
            "/b/a%20b/%C3%BC%2Bc%25"
        );
        assert_eq!(object_path(Some("b"), None), "/b");
        assert_eq!(object_path(None, Some("k")), "/k");
        assert_eq!(object_path(None, None), "/");
    }

    #[test]
    fn bodiless_errors_are_named() {
        let e = status_error(StatusCode::NOT_FOUND, &HeaderMap::new(), b"");
        assert_eq!(e.code(), Some("NotFound"));
        assert!(!e.transient());
        let e = status_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            b"<Error><Code>SlowDown</Code><Message>later</Message></Error>",
        );
        assert!(e.transient());
        assert_eq!(e.to_string(), "SlowDown (503): later");
    }
}

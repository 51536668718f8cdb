//! A small S3 client for writing to peer regions: path-style requests signed with SigV4
//! (`UNSIGNED-PAYLOAD` for streamed bodies, whose integrity `Content-MD5` or the destination's
//! own checksums cover), over HTTP or HTTPS (system CAs; `SSL_CERT_FILE` names others).
//!
//! Written rather than taken from the AWS SDK: the SDK's per-request machinery was a quarter
//! of the source region's CPU at 400 replicated PUT/s (BENCHMARKS.md), and replication only
//! needs five requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use feiyun_iam::sigv4::{Signer, amz_date_now, uri_encode};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub(crate) type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;
type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Most of an answer read: writes and errors answer a little XML.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most of a listing read (1,000 entries with long keys).
const MAX_LISTING_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(crate) enum ClientError {
    /// No answer: connect, TLS, timeout, a connection cut mid-way.
    Unreachable(String),
    /// The peer answered with an error status.
    Status {
        status: u16,
        code: String,
        message: String,
    },
}

impl ClientError {
    /// Worth trying again later: the peer is away or busy rather than refusing.
    pub(crate) fn transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) => true,
            ClientError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(m) => write!(f, "unreachable: {m}"),
            ClientError::Status {
                status,
                code,
                message,
            } => write!(f, "{code} ({status}): {message}"),
        }
    }
}

pub(crate) struct S3Client {
    http: Client<Https, ReqBody>,
    scheme: String,
    authority: String,
    signer: Signer,
    /// This region's own name, which relay marks carry.
    origin: String,
}

/// The client of a relayed request, as this region saw it.
pub struct RelayedFor {
    pub client_ip: std::net::IpAddr,
    pub secure: bool,
}

fn connector() -> Result<Https, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // One unreadable system certificate must not disable every peer.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// `/bucket/key` with each segment of the key encoded as SigV4 (and S3) expect.
fn object_path(bucket: &str, key: Option<&str>) -> String {
    let mut p = format!("/{}", uri_encode(bucket));
    if let Some(k) = key {
        p.push('/');
        let segs: Vec<String> = k.split('/').map(uri_encode).collect();
        p.push_str(&segs.join("/"));
    }
    p
}

/// The text of the first `<tag>` in a small S3 answer (an error's Code, an UploadId).
pub(crate) fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_owned())
}

pub(crate) fn empty() -> ReqBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl S3Client {
    pub(crate) fn new(
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
        origin: &str,
    ) -> Result<Self, String> {
        let uri: http::Uri = endpoint.parse().map_err(|e| format!("endpoint: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let authority = uri
            .authority()
            .ok_or_else(|| "endpoint has no host".to_owned())?
            .to_string();
        Ok(Self {
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector()?),
            scheme,
            authority,
            signer: Signer {
                access_key: access_key.to_owned(),
                secret_key: secret_key.to_owned(),
                region: region.to_owned(),
                service: "s3".to_owned(),
            },
            origin: origin.to_owned(),
        })
    }

    /// A key only this region and the peer share: HMAC-SHA256 of `purpose` under the secret
    /// of the credentials held for the peer (the peer derives it from its own record).
    pub(crate) fn shared_key(&self, purpose: &str) -> [u8; 32] {
        feiyun_iam::relay::shared_key(&self.signer.secret_key, purpose)
    }

    /// A relay mark for a request to the peer, MACed with the peer credentials' secret.
    fn mark(&self, method: &str, pq: &str, signature: &str, client: Option<&RelayedFor>) -> String {
        feiyun_iam::relay::RelayMark::make(
            &self.origin,
            &self.signer.access_key,
            &self.signer.secret_key,
            time::OffsetDateTime::now_utc().unix_timestamp(),
            client.map(|c| c.client_ip),
            client.map(|c| c.secure),
            &feiyun_iam::relay::Bound {
                method,
                path_and_query: pq,
                signature,
            },
        )
    }

    /// Sends one signed request; a 2xx answer's headers and body, or the error.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send(
        &self,
        method: Method,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: Vec<(String, String)>,
        body: ReqBody,
        payload_sha256: &str,
        timeout: Duration,
    ) -> Result<(HeaderMap, Bytes), ClientError> {
        let path = match bucket {
            Some(b) => object_path(b, key),
            None => "/".to_owned(),
        };
        self.exchange(
            method,
            path,
            query,
            headers,
            body,
            payload_sha256,
            timeout,
            MAX_ERROR_BODY,
        )
        .await
    }

    /// A request without a body (HEAD, DELETE, a POST that starts an upload).
    pub(crate) async fn bodiless(
        &self,
        method: Method,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<(HeaderMap, Bytes), ClientError> {
        self.send(
            method,
            bucket,
            key,
            query,
            headers,
            empty(),
            crate::worker::EMPTY_SHA256,
            timeout,
        )
        .await
    }

    /// A request to one of the peer's own (non-S3) paths, `/replication/…`.
    pub(crate) async fn request_path(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(String, String)>,
        body: ReqBody,
        payload_sha256: &str,
        timeout: Duration,
    ) -> Result<(HeaderMap, Bytes), ClientError> {
        self.exchange(
            method,
            path.to_owned(),
            &[],
            headers,
            body,
            payload_sha256,
            timeout,
            MAX_ERROR_BODY,
        )
        .await
    }

    /// Relays a client's request unchanged (its `Host` and signature too) and streams the
    /// answer back; only the connection is ours.
    pub(crate) async fn forward<B>(
        &self,
        req: http::Request<B>,
        client: &RelayedFor,
    ) -> Result<http::Response<hyper::body::Incoming>, String>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = format!("{}://{}{pq}", self.scheme, self.authority)
            .parse()
            .map_err(|e| format!("forward URI: {e}"))?;
        let signature = feiyun_iam::relay::request_signature(
            parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
            parts.uri.query().unwrap_or(""),
        );
        let mark = self.mark(parts.method.as_str(), &pq, &signature, Some(client));
        parts.headers.insert(
            crate::home::FORWARDED_HEADER,
            http::HeaderValue::from_str(&mark).map_err(|e| format!("relay mark: {e}"))?,
        );
        // The body is the client's own, relayed as it arrives.
        let body = body.map_err(std::io::Error::other).boxed_unsync();
        self.http
            .request(http::Request::from_parts(parts, body))
            .await
            .map_err(|e| describe(&e))
    }

    /// GetObject whose whole body (at most `max` bytes) is wanted.
    pub(crate) async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        max: usize,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        self.exchange(
            Method::GET,
            object_path(bucket, Some(key)),
            &[],
            Vec::new(),
            empty(),
            crate::worker::EMPTY_SHA256,
            timeout,
            max,
        )
        .await
        .map(|(_, b)| b)
    }

    /// A bodiless bucket request whose answer is a document (a listing).
    pub(crate) async fn send_for_body(
        &self,
        method: Method,
        bucket: &str,
        query: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(HeaderMap, Bytes), ClientError> {
        self.exchange(
            method,
            object_path(bucket, None),
            query,
            Vec::new(),
            empty(),
            crate::worker::EMPTY_SHA256,
            timeout,
            MAX_LISTING_BODY,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        method: Method,
        path: String,
        query: &[(&str, &str)],
        mut headers: Vec<(String, String)>,
        body: ReqBody,
        payload_sha256: &str,
        timeout: Duration,
        max_body: usize,
    ) -> Result<(HeaderMap, Bytes), ClientError> {
        let query: String = query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    uri_encode(k)
                } else {
                    format!("{}={}", uri_encode(k), uri_encode(v))
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        let amz_date = amz_date_now();
        // Region-to-region traffic (replicas, listings, backups) is served by the region it is
        // sent to, never forwarded on to a bucket's home region.
        let pq = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        };
        headers.push((
            crate::home::FORWARDED_HEADER.into(),
            self.mark(method.as_str(), &pq, "", None),
        ));
        headers.push(("host".into(), self.authority.clone()));
        headers.push(("x-amz-date".into(), amz_date.clone()));
        headers.push(("x-amz-content-sha256".into(), payload_sha256.to_owned()));
        // The region's own API (`/replication/…`) is its own service in the scope.
        let admin;
        let signer = if path.starts_with("/replication/") {
            admin = Signer {
                service: "replication".into(),
                access_key: self.signer.access_key.clone(),
                secret_key: self.signer.secret_key.clone(),
                region: self.signer.region.clone(),
            };
            &admin
        } else {
            &self.signer
        };
        let auth = signer.authorization(
            method.as_str(),
            &path,
            &query,
            &headers,
            payload_sha256,
            &amz_date,
        );
        let uri = format!(
            "{}://{}{path}{}{query}",
            self.scheme,
            self.authority,
            if query.is_empty() { "" } else { "?" }
        );
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req.header("authorization", auth);
        let req = req
            .body(body)
            .map_err(|e| ClientError::Unreachable(format!("request: {e}")))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Unreachable(describe(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let limited = http_body_util::Limited::new(resp.into_body(), max_body);
            let body = limited
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, headers, body))
        };
        let (status, headers, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Unreachable(format!("no answer within {timeout:?}")))??;
        if status.is_success() {
            return Ok((headers, body));
        }
        Err(status_error(status, &body))
    }
}

fn status_error(status: StatusCode, body: &[u8]) -> ClientError {
    // A peer's own JSON APIs (`/replication/…`) answer `{"__type", "message"}`.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(code) = v["__type"].as_str()
    {
        return ClientError::Status {
            status: status.as_u16(),
            code: code.to_owned(),
            message: v["message"].as_str().unwrap_or_default().to_owned(),
        };
    }
    let text = String::from_utf8_lossy(body);
    ClientError::Status {
        status: status.as_u16(),
        code: xml_field(&text, "Code").unwrap_or_else(|| status.as_str().to_owned()),
        message: xml_field(&text, "Message").unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_each_key_segment() {
        assert_eq!(object_path("b", Some("a b/ü+c")), "/b/a%20b/%C3%BC%2Bc");
        assert_eq!(object_path("b", None), "/b");
    }

    #[test]
    fn error_codes_come_from_the_xml() {
        let e = status_error(
            StatusCode::BAD_REQUEST,
            b"<Error><Code>InvalidRequest</Code><Message>no</Message></Error>",
        );
        assert!(matches!(&e, ClientError::Status { code, .. } if code == "InvalidRequest"));
        assert!(!e.transient());
        let e = status_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert!(e.transient());
        assert!(ClientError::Unreachable("x".into()).transient());
        let e = status_error(
            StatusCode::CONFLICT,
            br#"{"__type":"SiteMismatch","message":"set account_id"}"#,
        );
        assert!(
            e.to_string().contains("SiteMismatch (409): set account_id"),
            "{e}"
        );
    }
}

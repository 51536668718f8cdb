//! Outbound HTTP from functions: where a guest may connect, and how.
//!
//! A request leaves only for a host in the function's allow-list, and then only to public
//! addresses: loopback, link-local (cloud metadata services live at 169.254.169.254),
//! private, shared, multicast and reserved ranges are refused unless the operator opened a
//! network explicitly (`fc_allowed_networks`). The host is resolved once, every address it
//! resolves to is checked, and the connection goes to the address that was checked, so a
//! name that resolves to something else a moment later (DNS rebinding) gains nothing.
//!
//! The one exception is the region's own endpoint (`AWS_ENDPOINT_URL` of functions with a
//! role): requests to it carry a mark this process MACs (`x-feiyun-function-call`), so the
//! region judges them as a function's, not as a loopback client's (an `aws:SourceIp`
//! condition naming 127.0.0.1 must not admit every function).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::Error;

/// The mark on a function's requests to its own region.
pub const CALL_HEADER: &str = "x-feiyun-function-call";
/// How long a name may take to resolve, and a connection to open.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How far a call mark's time may be from the region's clock.
pub const CALL_SKEW_SECS: i64 = 300;

/// A network the operator opened to functions (`10.1.0.0/16`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    bits: u8,
}

impl Network {
    pub fn parse(text: &str) -> Option<Self> {
        let (a, b) = text.trim().split_once('/').unwrap_or((text.trim(), ""));
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = if b.is_empty() { max } else { b.parse().ok()? };
        (bits <= max).then_some(Self { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// Whether `ip` is on the public internet (not loopback, link-local, private, shared,
/// multicast, documentation, benchmarking or otherwise reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, shared (CGNAT)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, IETF
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 reaches IPv4 ranges
        }
    }
}

/// What every function's outbound requests are held to, shared by all invocations.
pub struct OutboundPolicy {
    networks: Vec<Network>,
    /// The region's own endpoint (`host:port`, as in the URL) and where it listens.
    region: Option<(String, SocketAddr)>,
    /// Keys the call marks; random per process.
    call_key: [u8; 32],
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for OutboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundPolicy")
            .field("networks", &self.networks)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl OutboundPolicy {
    pub fn new(networks: Vec<Network>, call_key: [u8; 32]) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // One unreadable system certificate must not disable every call.
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            });
        Self {
            networks,
            region: None,
            call_key,
            tls: Arc::new(tls),
        }
    }

    /// The region's endpoint for functions: its authority and socket address.
    pub fn with_region(mut self, authority: String, addr: SocketAddr) -> Self {
        self.region = Some((authority, addr));
        self
    }

    fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.networks.iter().any(|n| n.contains(ip))
    }

    /// The mark a function's call to the region carries.
    pub fn call_mark(&self, function: &str, time: i64, method: &str, pq: &str) -> String {
        format!(
            "v1;{function};{time};{}",
            call_mac(&self.call_key, function, time, method, pq)
        )
    }

    /// Checks a call mark; returns the calling function's name.
    pub fn verify_call(&self, mark: &str, method: &str, pq: &str, now: i64) -> Option<String> {
        verify_call(&self.call_key, mark, method, pq, now)
    }
}

fn call_mac(key: &[u8; 32], function: &str, time: i64, method: &str, pq: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 takes any key length");
    m.update(format!("feiyun function call v1\n{function}\n{time}\n{method}\n{pq}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// [`OutboundPolicy::verify_call`] with the key alone (the server keeps only the key).
pub fn verify_call(key: &[u8; 32], mark: &str, method: &str, pq: &str, now: i64) -> Option<String> {
    let mut f = mark.split(';');
    let (Some("v1"), Some(function), Some(time), Some(mac), None) =
        (f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return None;
    };
    let time: i64 = time.parse().ok()?;
    if (now - time).abs() > CALL_SKEW_SECS {
        return None;
    }
    let want = call_mac(key, function, time, method, pq);
    let same = want.len() == mac.len()
        && want
            .bytes()
            .zip(mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then(|| function.to_owned())
}

/// What one invocation's requests may reach.
pub(crate) struct Outbound {
    pub allowed: Vec<String>,
    pub policy: Arc<OutboundPolicy>,
    pub function: String,
}

impl Outbound {
    fn allows(&self, authority: &str) -> bool {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        self.allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(authority) || a.eq_ignore_ascii_case(host))
    }

    /// Where to connect for `uri`, after every check; marks a call to the region.
    async fn destination(
        &self,
        request: &mut http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> Result<(SocketAddr, String, bool), Error> {
        let uri = request.uri().clone();
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        if !self.allows(authority.as_str()) {
            tracing::debug!(authority = %authority, "outbound request denied");
            return Err(Error::HttpRequestDenied);
        }
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if let Some((region, addr)) = &self.policy.region
            && region.eq_ignore_ascii_case(authority.as_str())
        {
            let time = time::OffsetDateTime::now_utc().unix_timestamp();
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            let mark = self
                .policy
                .call_mark(&self.function, time, request.method().as_str(), pq);
            let value = http::HeaderValue::from_str(&mark).map_err(|_| Error::HttpRequestDenied)?;
            request.headers_mut().insert(CALL_HEADER, value);
            return Ok((*addr, host.to_owned(), tls));
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| Error::DnsTimeout)?
                .map_err(|_| Error::DestinationNotFound)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Error::DestinationNotFound);
        }
        // Every address the name has must be allowed: a name that also points inside is
        // refused, not tried until an inside one answers.
        if let Some(bad) = addrs.iter().find(|a| !self.policy.permits(a.ip())) {
            tracing::debug!(host, address = %bad.ip(), "outbound request to a non-public address refused");
            return Err(Error::DestinationIpProhibited);
        }
        Ok((addrs[0], host.to_owned(), tls))
    }

    /// Sends `request` to the checked address.
    pub(crate) async fn send(
        &self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> Result<http::Response<wasmtime_wasi_http::WasiBody>, Error> {
        let (addr, host, tls) = self.destination(&mut request).await?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        // The request line carries the path only; the authority stays in `Host`.
        let pq = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        if !request.headers().contains_key(http::header::HOST)
            && let Some(a) = request.uri().authority()
            && let Ok(v) = http::HeaderValue::from_str(a.as_str())
        {
            request.headers_mut().insert(http::header::HOST, v);
        }
        *request.uri_mut() = pq.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
        if tls {
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let stream = tokio_rustls::TlsConnector::from(self.policy.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(Error::Tls)?;
            exchange(stream, request).await
        } else {
            exchange(tcp, request).await
        }
    }
}

/// One HTTP/1.1 exchange on `io`; the connection lives as long as the response body.
async fn exchange<S>(
    io: S,
    request: http::Request<wasmtime_wasi_http::WasiBody>,
) -> Result<http::Response<wasmtime_wasi_http::WasiBody>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    let mut conn = Box::pin(conn);
    let send = sender.send_request(request);
    tokio::pin!(send);
    // Drive the connection while waiting for the answer's head.
    let response = tokio::select! {
        r = &mut send => r?,
        c = &mut conn => {
            c?;
            // The connection ended cleanly before an answer: none is coming.
            return Err(Error::HttpResponseIncomplete);
        }
    };
    // The body is read through the same connection: keep driving it until it ends.
    let (parts, body) = response.into_parts();
    let body = DrivenBody {
        body,
        conn: Some(conn),
    };
    Ok(http::Response::from_parts(
        parts,
        body.map_err(Error::from).boxed_unsync(),
    ))
}

/// A response body whose reads also drive its connection.
struct DrivenBody<C> {
    body: hyper::body::Incoming,
    conn: Option<std::pin::Pin<Box<C>>>,
}

impl<C> http_body::Body for DrivenBody<C>
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        if let Some(c) = self.conn.as_mut()
            && let std::task::Poll::Ready(r) = c.as_mut().poll(cx)
        {
            self.conn = None;
            if let Err(e) = r {
                return std::task::Poll::Ready(Some(Err(e)));
            }
        }
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<C> Unpin for DrivenBody<C> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_opened() {
        let rows: &[(&str, bool)] = &[
            ("93.184.215.14", true),
            ("2606:4700::1111", true),
            ("127.0.0.1", false),
            ("127.9.9.9", false),
            ("::1", false),
            ("169.254.169.254", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("198.18.0.1", false),
            ("fe80::1", false),
            ("fd00::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::a00:1", false),
        ];
        for (ip, public) in rows {
            assert_eq!(is_public(ip.parse().unwrap()), *public, "{ip}");
        }
        let p = OutboundPolicy::new(vec![Network::parse("10.1.0.0/16").unwrap()], [0; 32]);
        assert!(p.permits("10.1.200.3".parse().unwrap()));
        assert!(!p.permits("10.2.0.1".parse().unwrap()));
        assert!(!p.permits("127.0.0.1".parse().unwrap()));
        assert_eq!(Network::parse("10.0.0.0/33"), None);
        assert_eq!(Network::parse("nope"), None);
    }

    #[test]
    fn call_marks_verify_for_their_request_only() {
        let p = OutboundPolicy::new(Vec::new(), [7; 32]);
        let m = p.call_mark("thumbs", 1000, "GET", "/b/k");
        assert_eq!(
            p.verify_call(&m, "GET", "/b/k", 1000).as_deref(),
            Some("thumbs")
        );
        assert_eq!(p.verify_call(&m, "PUT", "/b/k", 1000), None);
        assert_eq!(p.verify_call(&m, "GET", "/b/other", 1000), None);
        assert_eq!(
            p.verify_call(&m, "GET", "/b/k", 1000 + CALL_SKEW_SECS + 1),
            None
        );
        let other = OutboundPolicy::new(Vec::new(), [8; 32]);
        assert_eq!(other.verify_call(&m, "GET", "/b/k", 1000), None);
    }
}

//! The OpenID Connect issuer's signing keys, kept fresh in the background: fetched over the
//! region's async HTTP(S) client (connect, TLS and the whole exchange bounded, the document
//! capped at 1 MiB), from a file with async reads, every [`REFRESH_EVERY`] and whenever a
//! token names a key not loaded yet. A request never waits on the issuer for longer than its
//! own short retry (`iamapi::sts_ops`).

use std::sync::Arc;
use std::time::Duration;

use feiyun_iam::oidc::{MAX_JWKS_BYTES, Oidc};
use http_body_util::BodyExt;

/// How often the keys are fetched anyway (issuers rotate on the order of days).
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(15 * 60);
/// A whole fetch (connect, TLS, request, body) takes at most this long.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{0}")]
    Failed(String),
}

/// Loads the keys once (for a URL), then keeps refreshing them until the process ends.
pub(crate) async fn start(oidc: Arc<Oidc>) {
    let client = client();
    if oidc.url().is_some()
        && let Err(e) = refresh(&oidc, &client).await
    {
        tracing::error!(error = %e, "cannot load the OpenID Connect issuer's keys; web-identity sign-ins fail until they load");
    }
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(REFRESH_EVERY, oidc.refresh_wanted()).await;
            if let Err(e) = refresh(&oidc, &client).await {
                tracing::warn!(error = %e, "refreshing the OpenID Connect issuer's keys failed");
            }
        }
    });
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

fn client() -> Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // One unreadable system certificate must not disable the issuer.
        let _ = roots.add(cert);
    }
    client_with(roots)
}

fn client_with(roots: rustls::RootCertStore) -> Client {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

async fn refresh(oidc: &Oidc, client: &Client) -> Result<(), FetchError> {
    let text = match (oidc.url(), oidc.file()) {
        (Some(url), _) => fetch(client, url).await?,
        (None, Some(file)) => tokio::fs::read_to_string(file)
            .await
            .map_err(|e| FetchError::Failed(format!("{file}: {e}")))?,
        (None, None) => return Ok(()),
    };
    oidc.install(&text)
        .map_err(|e| FetchError::Failed(e.to_string()))
}

/// GETs a JWKS document, bounded in time and size.
async fn fetch(client: &Client, url: &str) -> Result<String, FetchError> {
    let fail = |m: String| FetchError::Failed(format!("{url}: {m}"));
    let uri: http::Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(http_body_util::Empty::new())
        .map_err(|e| fail(e.to_string()))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| fail(e.to_string()))?;
        if resp.status() != http::StatusCode::OK {
            return Err(fail(format!("answered {}", resp.status())));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| fail("the document is not UTF-8".into()))
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {FETCH_TIMEOUT:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An issuer that accepts the connection and then trickles nothing: the fetch gives up
    /// after its bound instead of holding anything.
    #[tokio::test]
    async fn a_silent_issuer_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            // Headers, then silence.
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
                .await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let start = std::time::Instant::now();
        let r = fetch(&client(), &format!("http://{addr}/jwks")).await;
        assert!(r.is_err());
        assert!(start.elapsed() < FETCH_TIMEOUT + Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_document_is_fetched_and_an_untrusted_certificate_refused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let doc = r#"{"keys":[]}"#;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{doc}",
                            doc.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let got = fetch(&client(), &format!("http://{addr}/jwks"))
            .await
            .unwrap();
        assert_eq!(got, r#"{"keys":[]}"#);
        // A plain server on an https URL (or a certificate no trusted CA signed) fails.
        let https = fetch(
            &client_with(rustls::RootCertStore::empty()),
            &format!("https://localhost:{}/jwks", addr.port()),
        )
        .await;
        assert!(https.is_err());
    }
}

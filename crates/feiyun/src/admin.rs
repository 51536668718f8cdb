//! The client side of administrative verbs: finds the region (`--endpoint`,
//! `FEIYUN_ENDPOINT`), picks credentials from the AWS chain (`AWS_*` variables, `--profile`
//! in `~/.aws/credentials`) falling back to `FEIYUN_ROOT_*`, and sends signed query-API
//! requests.

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::sigv4::{self, Signer};

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9000";

#[derive(clap::Args, Clone)]
pub struct Connection {
    /// The region's endpoint [env: FEIYUN_ENDPOINT] [default: http://127.0.0.1:9000]
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// A profile in ~/.aws/credentials
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM bundle of the CAs to trust for https:// endpoints, instead of the system's
    /// [env: AWS_CA_BUNDLE]
    #[arg(long, global = true)]
    pub ca_bundle: Option<std::path::PathBuf>,
}

pub struct AdminClient {
    client: Client<HttpsConnector<HttpConnector>, http_body_util::Full<bytes::Bytes>>,
    base: http::Uri,
    signer: Signer,
    token: Option<String>,
}

/// The region's endpoint and the CA bundle to trust for it, from the flags and environment.
pub(crate) fn endpoint_of(c: &Connection) -> anyhow::Result<(String, Option<std::path::PathBuf>)> {
    let endpoint = c
        .endpoint
        .clone()
        .or_else(|| std::env::var("FEIYUN_ENDPOINT").ok())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    let base: http::Uri = endpoint.parse().context("--endpoint is not a URL")?;
    if !matches!(base.scheme_str(), Some("http" | "https")) {
        bail!("--endpoint must be an http:// or https:// URL");
    }
    let bundle = c.ca_bundle.clone().or_else(|| {
        std::env::var_os("AWS_CA_BUNDLE")
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    Ok((endpoint, bundle))
}

impl AdminClient {
    pub fn new(c: &Connection) -> anyhow::Result<Self> {
        let (endpoint, bundle) = endpoint_of(c)?;
        let base: http::Uri = endpoint.parse().context("--endpoint is not a URL")?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(bundle.as_deref())?)
            .https_or_http()
            .enable_http1()
            .build();
        let (access_key, secret_key, token) = credentials(c.profile.as_deref())?;
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base,
            signer: Signer {
                access_key,
                secret_key,
                region: std::env::var("AWS_REGION")
                    .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|_| "us-east-1".into()),
            },
            token,
        })
    }

    /// One IAM/STS query call; returns the XML body, or the service's error as text.
    pub async fn call(&self, service: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let version = if service == "sts" {
            "2011-06-15"
        } else {
            "2010-05-08"
        };
        let mut body = format!("Version={version}");
        for (k, v) in params {
            body.push('&');
            body.push_str(&sigv4_encode(k));
            body.push('=');
            body.push_str(&sigv4_encode(v));
        }
        let ct = "application/x-www-form-urlencoded; charset=utf-8".to_string();
        let (status, text) = self.post(service, vec![("content-type", ct)], body).await?;
        if !status.is_success() {
            bail!(
                "{}: {}",
                field(&text, "Code").unwrap_or_else(|| status.to_string()),
                field(&text, "Message").unwrap_or_default()
            );
        }
        Ok(text)
    }

    /// One KMS JSON call (`TrentService.ACTION`); returns the JSON answer, or KMS's error.
    pub async fn kms(
        &self,
        action: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let headers = vec![
            ("content-type", "application/x-amz-json-1.1".to_string()),
            ("x-amz-target", format!("TrentService.{action}")),
        ];
        let (status, text) = self.post("kms", headers, body.to_string()).await?;
        json_answer(status, text.as_bytes())
    }

    /// A signed `POST /` to the region for `service`.
    async fn post(
        &self,
        service: &str,
        extra: Vec<(&str, String)>,
        body: String,
    ) -> anyhow::Result<(hyper::StatusCode, String)> {
        let (status, _, body) = self
            .send(service, "POST", "/", &[], extra, bytes::Bytes::from(body))
            .await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// A signed request to the region for `service`; `query` is encoded here.
    pub async fn send(
        &self,
        service: &str,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        extra: Vec<(&str, String)>,
        body: bytes::Bytes,
    ) -> anyhow::Result<(hyper::StatusCode, http::HeaderMap, bytes::Bytes)> {
        let host = self
            .base
            .authority()
            .context("--endpoint needs a host")?
            .to_string();
        let query = query
            .iter()
            .map(|(k, v)| format!("{}={}", sigv4_encode(k), sigv4_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let payload = sigv4::sha256_hex(&body);
        let mut headers = vec![("host", host.clone())];
        headers.extend(extra);
        if let Some(t) = &self.token {
            headers.push(("x-amz-security-token", t.clone()));
        }
        let signed = self.signer.sign_as(
            service,
            method,
            path,
            &query,
            &headers,
            &payload,
            &sigv4::now_amz_date(),
        );
        let uri = format!(
            "{}://{host}{path}{}{query}",
            self.base.scheme_str().unwrap_or("http"),
            if query.is_empty() { "" } else { "?" }
        );
        let mut req = hyper::Request::builder().method(method).uri(uri);
        for (k, v) in headers.iter().skip(1) {
            req = req.header(*k, v);
        }
        for (k, v) in signed {
            req = req.header(k, v);
        }
        let resp = self
            .client
            .request(req.body(http_body_util::Full::new(body))?)
            .await
            .with_context(|| format!("cannot reach the region at {}", self.base))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, headers, body))
    }
}

/// A JSON API's answer, or its error (`{"__type", "message"}`, as KMS, Lambda and our `/fc/`
/// API send them) as one line.
pub fn json_answer(status: hyper::StatusCode, body: &[u8]) -> anyhow::Result<serde_json::Value> {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        bail!(
            "{}: {}",
            json["__type"].as_str().unwrap_or(status.as_str()),
            json["message"].as_str().unwrap_or_default()
        );
    }
    Ok(json)
}

/// The text of the first `<tag>…</tag>`, XML entities decoded.
pub fn field(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(unescape(&xml[start..end]))
}

/// Every `<tag>…</tag>` in order.
pub fn fields(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(unescape(&after[..j]));
        rest = &after[j + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn sigv4_encode(s: &str) -> String {
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

/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, then a profile, then
/// `FEIYUN_ROOT_*`.
pub(crate) fn credentials(
    profile: Option<&str>,
) -> anyhow::Result<(String, String, Option<String>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if profile.is_none()
        && let (Some(a), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok((a, s, env("AWS_SESSION_TOKEN")));
    }
    if let Some(name) = profile.map(str::to_owned).or_else(|| env("AWS_PROFILE")) {
        return profile_credentials(&name);
    }
    match (env("FEIYUN_ROOT_ACCESS_KEY"), env("FEIYUN_ROOT_SECRET_KEY")) {
        (Some(a), Some(s)) => Ok((a, s, None)),
        _ => bail!(
            "no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, --profile, or FEIYUN_ROOT_ACCESS_KEY/FEIYUN_ROOT_SECRET_KEY"
        ),
    }
}

/// A profile's keys from the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
/// `~/.aws/credentials`).
pub(crate) fn profile_credentials(name: &str) -> anyhow::Result<(String, String, Option<String>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    {
        let path = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| env("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials")))
            .context("no credentials file to read the profile from")?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut section = String::new();
        let (mut a, mut s, mut t) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
            } else if section == name
                && let Some((k, v)) = line.split_once('=')
            {
                match k.trim() {
                    "aws_access_key_id" => a = Some(v.trim().to_owned()),
                    "aws_secret_access_key" => s = Some(v.trim().to_owned()),
                    "aws_session_token" => t = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
        }
        match (a, s) {
            (Some(a), Some(s)) => Ok((a, s, t)),
            _ => bail!("profile {name} has no access key in {}", path.display()),
        }
    }
}

/// Trust the given bundle only (as the aws CLI does with `--ca-bundle`), else the system's CAs.
pub(crate) fn tls_config(bundle: Option<&std::path::Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match bundle {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("cannot read the CA bundle {}", path.display()))?;
            if certs.is_empty() {
                bail!("the CA bundle {} holds no certificate", path.display());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate in {} is invalid", path.display()))?;
            }
        }
        None => {
            // Unreadable system certificates are skipped; a missing CA shows up as a failed
            // handshake naming the endpoint.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

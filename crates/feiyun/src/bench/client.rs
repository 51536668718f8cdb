//! The load generator's HTTP client: one pooled hyper client per target, requests signed in
//! the Authorization header or presigned in the query string (as a browser or `wrk` on a
//! presigned URL sends them), or plain unsigned GETs of a URL (nginx serving a file).

use std::convert::Infallible;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::sigv4::{self, Signer};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// How requests prove who sends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Auth {
    /// SigV4 in the Authorization header, `UNSIGNED-PAYLOAD`, signed per request.
    Header,
    /// SigV4 in the query string, valid for an hour; a fixed set of keys is presigned once
    /// per phase, as a client handed presigned URLs would send them.
    Presigned,
}

/// Presigned URLs are made valid for this long (S3's maximum is a week).
const PRESIGN_SECS: u32 = 3600;

pub(crate) struct Ctx {
    client: Client<HttpConnector, Body>,
    signer: Signer,
    base: hyper::Uri,
    host: String,
    pub(crate) bucket: String,
    pub(crate) auth: Auth,
    /// `x-amz-storage-class` sent (and signed) on PUTs of objects.
    pub(crate) storage_class: Option<String>,
}

/// A request ready to send many times: its URI and the headers to add.
#[derive(Clone)]
pub(crate) struct Prepared {
    uri: hyper::Uri,
    headers: Vec<(String, String)>,
}

pub(crate) fn client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(super::MAX_CONCURRENCY)
        .build(connector)
}

impl Ctx {
    pub(crate) fn new(
        endpoint: &str,
        signer: Signer,
        bucket: &str,
        auth: Auth,
        storage_class: Option<String>,
    ) -> anyhow::Result<Self> {
        let base: hyper::Uri = endpoint.parse().context("invalid endpoint")?;
        anyhow::ensure!(
            base.scheme_str() == Some("http"),
            "the load generator speaks plain http:// only ({endpoint})"
        );
        let host = base
            .authority()
            .context("the endpoint needs a host")?
            .to_string();
        Ok(Self {
            client: client(),
            signer,
            base,
            host,
            bucket: bucket.to_owned(),
            auth,
            storage_class,
        })
    }

    pub(crate) fn with_bucket(&self, bucket: &str) -> Ctx {
        Ctx {
            client: self.client.clone(),
            signer: self.signer.clone(),
            base: self.base.clone(),
            host: self.host.clone(),
            bucket: bucket.to_owned(),
            auth: self.auth,
            storage_class: None,
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        self.base.to_string().trim_end_matches('/').to_owned()
    }

    pub(crate) async fn request(
        &self,
        method: &str,
        key: &str,
        body: Body,
    ) -> anyhow::Result<(u16, hyper::body::Incoming)> {
        self.request_q(method, key, "", body).await
    }

    /// A request signed in its header; `query` is sent as given (its values already
    /// URI-encoded).
    pub(crate) async fn request_q(
        &self,
        method: &str,
        key: &str,
        query: &str,
        body: Body,
    ) -> anyhow::Result<(u16, hyper::body::Incoming)> {
        let p = self.prepare_as(Auth::Header, method, key, query);
        self.send(method, &p, body).await
    }

    /// The request for `method` on `key` under this context's auth mode.
    pub(crate) fn prepare(&self, method: &str, key: &str) -> Prepared {
        self.prepare_as(self.auth, method, key, "")
    }

    fn prepare_as(&self, auth: Auth, method: &str, key: &str, query: &str) -> Prepared {
        let path = if key.is_empty() {
            format!("/{}", self.bucket)
        } else {
            format!("/{}/{}", self.bucket, key)
        };
        let date = sigv4::now_amz_date();
        let mut headers = vec![("host", self.host.clone())];
        if let Some(class) = self
            .storage_class
            .as_ref()
            .filter(|_| method == "PUT" && !key.is_empty())
        {
            headers.push(("x-amz-storage-class", class.clone()));
        }
        let scheme = self.base.scheme_str().unwrap_or("http");
        let (query, mut extra) = match auth {
            Auth::Header => {
                let signed =
                    self.signer
                        .sign(method, &path, query, &headers, sigv4::UNSIGNED, &date);
                (query.to_owned(), signed)
            }
            Auth::Presigned => {
                let q = self
                    .signer
                    .presign(method, &path, query, &headers, PRESIGN_SECS, &date);
                (q, Vec::new())
            }
        };
        extra.extend(headers.into_iter().skip(1).map(|(k, v)| (k.to_owned(), v)));
        let uri = if query.is_empty() {
            format!("{scheme}://{}{path}", self.host)
        } else {
            format!("{scheme}://{}{path}?{query}", self.host)
        };
        Prepared {
            // Keys are the bench's own ASCII names, so the URI always parses.
            uri: uri.parse().unwrap_or_else(|_| self.base.clone()),
            headers: extra,
        }
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        p: &Prepared,
        body: Body,
    ) -> anyhow::Result<(u16, hyper::body::Incoming)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(p.uri.clone())
            .header("host", &self.host);
        for (k, v) in &p.headers {
            req = req.header(k, v);
        }
        if let Some(n) = http_body::Body::size_hint(&body).exact() {
            req = req.header("content-length", n);
        }
        let resp = self.client.request(req.body(body)?).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body()))
    }

    /// An unsigned GET of `uri` (a file served by a web server, a function's URL).
    pub(crate) async fn get_url(
        &self,
        uri: &hyper::Uri,
    ) -> anyhow::Result<(u16, hyper::body::Incoming)> {
        let req = hyper::Request::get(uri.clone()).body(Body::default())?;
        let resp = self.client.request(req).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body()))
    }
}

/// Drains a response body; returns its length, or `None` if the connection failed.
pub(crate) async fn drain(mut body: hyper::body::Incoming) -> Option<u64> {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.ok()?.data_ref() {
            n += d.len() as u64;
        }
    }
    Some(n)
}

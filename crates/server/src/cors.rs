//! CORS at the edge: preflight `OPTIONS` requests (which carry no signature and never reach
//! s3s) and the `Access-Control-*` headers on actual cross-origin responses. Which rule applies
//! is decided by `feiyun_oss::cors`; this module only reads requests and writes headers.

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::{EmbeddedOss, VirtualHosts};

/// The bucket a request addresses, virtual-hosted or path-style.
pub(crate) fn bucket_of<B>(req: &Request<B>, hosts: &VirtualHosts) -> Option<String> {
    if let Some(b) = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| hosts.bucket_of(h))
    {
        return Some(b.to_owned());
    }
    let first = req.uri().path().trim_start_matches('/').split('/').next()?;
    (!first.is_empty()).then(|| first.to_owned())
}

fn header(req_headers: &HeaderMap, name: &str) -> Option<String> {
    req_headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn error(status: StatusCode, code: &str, message: &str, id: &str) -> Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message><RequestId>{id}</RequestId></Error>"
    );
    let mut r = Response::new(s3s::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    r
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Writes the headers a matching rule grants.
fn grant(h: &mut HeaderMap, rule: &feiyun_oss::cors::CorsRule, origin: &str) {
    if rule.any_origin() {
        set(h, "access-control-allow-origin", "*");
    } else {
        set(h, "access-control-allow-origin", origin);
        set(h, "access-control-allow-credentials", "true");
    }
    set(
        h,
        "access-control-allow-methods",
        &rule.allowed_methods.join(", "),
    );
    if !rule.expose_headers.is_empty() {
        set(
            h,
            "access-control-expose-headers",
            &rule.expose_headers.join(", "),
        );
    }
    if let Some(age) = rule.max_age_secs {
        set(h, "access-control-max-age", &age.to_string());
    }
    set(
        h,
        "vary",
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    );
}

/// Answers a preflight request.
pub(crate) async fn preflight<B>(
    oss: &EmbeddedOss,
    hosts: &VirtualHosts,
    req: &Request<B>,
    id: &str,
) -> Response<s3s::Body> {
    let h = req.headers();
    let (Some(origin), Some(method)) = (
        header(h, "origin"),
        header(h, "access-control-request-method"),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
            id,
        );
    };
    let Some(bucket) = bucket_of(req, hosts) else {
        return error(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: Bucket not found",
            id,
        );
    };
    let asked: Vec<String> = header(h, "access-control-request-headers")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let config = match oss.cors(&bucket).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error(
                StatusCode::FORBIDDEN,
                "AccessForbidden",
                "CORSResponse: CORS is not enabled for this bucket.",
                id,
            );
        }
        Err(_) => {
            return error(
                StatusCode::FORBIDDEN,
                "AccessForbidden",
                "CORSResponse: Bucket not found",
                id,
            );
        }
    };
    let Some(rule) = config.find(&origin, &method, &asked) else {
        return error(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: This CORS request is not allowed. This is usually because the evaluation of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
            id,
        );
    };
    let mut r = Response::new(s3s::Body::empty());
    let out = r.headers_mut();
    grant(out, rule, &origin);
    if !asked.is_empty() {
        set(out, "access-control-allow-headers", &asked.join(", "));
    }
    r
}

/// What an actual request needs to decorate its response: its origin, method and bucket.
pub(crate) struct CorsRequest {
    origin: String,
    method: Method,
    bucket: String,
}

impl CorsRequest {
    pub(crate) fn of<B>(req: &Request<B>, hosts: &VirtualHosts) -> Option<Self> {
        let origin = header(req.headers(), "origin")?;
        Some(Self {
            origin,
            method: req.method().clone(),
            bucket: bucket_of(req, hosts)?,
        })
    }

    /// Adds `Access-Control-*` headers when a rule allows this origin and method.
    pub(crate) async fn decorate(self, oss: &EmbeddedOss, resp: &mut Response<s3s::Body>) {
        if let Ok(Some(config)) = oss.cors(&self.bucket).await
            && let Some(rule) = config.find(&self.origin, self.method.as_str(), &[])
        {
            grant(resp.headers_mut(), rule, &self.origin);
        }
    }
}

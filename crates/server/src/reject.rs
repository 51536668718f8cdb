//! Answers the server gives itself, before or instead of the S3 edge: throttling, oversized
//! XML bodies, refused signatures and operations, redirects to a home region — each in the
//! protocol's own error form, with the request id.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::MAX_XML_BODY;

/// S3 operations whose body is an XML document (DeleteObjects, CompleteMultipartUpload,
/// CreateBucket configuration). s3s buffers such bodies whole and answers an oversized one with
/// a 500; S3 answers 400 `MaxMessageLengthExceeded`, before reading the body.
pub(crate) fn reject_oversized_xml(
    req: &Request<Incoming>,
    id: &str,
) -> Option<Response<s3s::Body>> {
    let len: u64 = req
        .headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    if len <= MAX_XML_BODY as u64 {
        return None;
    }
    let query = req.uri().query().unwrap_or("");
    let has = |name: &str| {
        query
            .split('&')
            .any(|kv| kv.split('=').next() == Some(name))
    };
    let path = req.uri().path().trim_matches('/');
    let xml_body = match *req.method() {
        http::Method::POST => has("delete") || (has("uploadId") && !has("partNumber")),
        http::Method::PUT => !path.is_empty() && !path.contains('/') && query.is_empty(),
        _ => false,
    };
    if !xml_body {
        return None;
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>MaxMessageLengthExceeded</Code>\
         <Message>Your request was too big.</Message><RequestId>{id}</RequestId></Error>"
    );
    let mut r = plain(StatusCode::BAD_REQUEST, &body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    if let Ok(v) = http::HeaderValue::from_str(id) {
        r.headers_mut().insert("x-amz-request-id", v);
    }
    Some(r)
}

/// Errors that s3s raises itself (signature, routing, parsing) carry no `<RequestId>`; S3
/// error bodies always do, and support tickets quote it.
pub(crate) fn add_request_id_to_error(resp: &mut Response<s3s::Body>, id: &str) {
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return;
    }
    let Some(bytes) = resp.body().bytes() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return;
    };
    if !text.ends_with("</Error>") || text.contains("<RequestId>") {
        return;
    }
    let patched = format!(
        "{}<RequestId>{id}</RequestId></Error>",
        &text[..text.len() - "</Error>".len()]
    );
    let len = patched.len();
    *resp.body_mut() = s3s::Body::from(Bytes::from(patched));
    if let Ok(v) = http::HeaderValue::from_str(&len.to_string()) {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
}

/// S3 answers `503 SlowDown`, IAM and STS `400 Throttling`; both say when to come back.
/// 307 to the bucket's home region, as S3 answers a request sent to the wrong region.
pub(crate) fn redirect_response(location: &str, bucket: &str) -> Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>TemporaryRedirect</Code><Message>Please re-send this request to the specified temporary endpoint. Continue to use the original request endpoint for future requests.</Message><Bucket>{}</Bucket><Endpoint>{}</Endpoint></Error>",
        xml_text(bucket),
        xml_text(location)
    );
    let mut r = plain(StatusCode::TEMPORARY_REDIRECT, &body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// The home region stopped answering in the middle of a forwarded request.
pub(crate) fn home_unreachable(id: &str) -> Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>ServiceUnavailable</Code><Message>The bucket's home region did not answer; retry.</Message><RequestId>{id}</RequestId></Error>"
    );
    let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, &body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn throttle_response(query_api: bool, wait: Duration, id: &str) -> Response<s3s::Body> {
    let (status, body) = if query_api {
        (
            StatusCode::BAD_REQUEST,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Too many failed authentications; retry later</Message></Error><RequestId>{id}</RequestId></ErrorResponse>"
            ),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Too many failed authentications; reduce your request rate.</Message><RequestId>{id}</RequestId></Error>"
            ),
        )
    };
    let mut r = plain(status, &body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = http::HeaderValue::from_str(&secs.max(1).to_string()) {
        r.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(id) {
        r.headers_mut().insert("x-amz-request-id", v);
    }
    r
}

pub(crate) fn plain(status: StatusCode, text: &str) -> Response<s3s::Body> {
    let mut r = Response::new(s3s::Body::from(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r
}

/// An S3 error document.
pub(crate) fn s3_error(
    status: StatusCode,
    code: &str,
    message: &str,
    id: &str,
) -> Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{}</Message><RequestId>{id}</RequestId></Error>",
        xml_text(message)
    );
    let mut r = plain(status, &body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    if let Ok(v) = http::HeaderValue::from_str(id) {
        r.headers_mut().insert("x-amz-request-id", v);
    }
    r
}

/// An S3 request whose signature breaks a screening rule, answered as S3 answers it.
pub(crate) fn screen_error(
    e: &feiyun_iam::screen::ScreenError,
    presigned: bool,
    id: &str,
) -> Response<s3s::Body> {
    use feiyun_iam::screen::ScreenError as E;
    let (status, code, message) = match e {
        E::SignatureV2 => (StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string()),
        E::HeadersNotSigned(_) => (StatusCode::FORBIDDEN, "AccessDenied", e.to_string()),
        E::WrongRegion { .. } | E::WrongService { .. } | E::Malformed(_) if !presigned => (
            StatusCode::BAD_REQUEST,
            "AuthorizationHeaderMalformed",
            format!("The authorization header is malformed; {e}"),
        ),
        E::WrongRegion { .. } | E::WrongService { .. } | E::Malformed(_) => (
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            format!("Error parsing the X-Amz-Credential parameter; {e}"),
        ),
        E::ExpiresTooLong | E::BadExpires => (
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            e.to_string(),
        ),
    };
    s3_error(status, code, &message, id)
}

/// A JSON API's error (`{"__type", "message"}`), for the `/fc/` and `/replication/` edges.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<s3s::Body> {
    let body = serde_json::json!({ "__type": code, "message": message }).to_string();
    let mut r = plain(status, &body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// An IAM/STS query-protocol error document.
pub(crate) fn query_error(
    status: StatusCode,
    code: &str,
    message: &str,
    id: &str,
) -> Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{id}</RequestId></ErrorResponse>",
        xml_text(message)
    );
    let mut r = plain(status, &body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    r
}

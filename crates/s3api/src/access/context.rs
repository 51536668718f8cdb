//! The condition keys a request itself supplies (`aws:SourceIp`, `s3:prefix`, the request's
//! tags, object lock headers, how it was signed); the principal adds its own.

use feiyun_iam::RequestContext;
use feiyun_iam::screen::AuthKind;
use http::HeaderMap;

use super::ClientAddr;
use super::actions::{header, query_value};

/// `aws:CurrentTime` for a second, formatted once per second per thread rather than per
/// request.
fn current_time(unix: i64) -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != unix {
            let t = time::OffsetDateTime::from_unix_timestamp(unix)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            c.1 = t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            c.0 = unix;
        }
        c.1.clone()
    })
}

/// The request-derived condition keys (the principal adds its own).
pub(super) fn request_context(
    headers: &HeaderMap,
    query: &str,
    peer: Option<ClientAddr>,
    secure: bool,
    auth: AuthKind,
) -> RequestContext {
    let mut cx = RequestContext::default();
    if let Some(p) = peer {
        cx.set_static("aws:sourceip", p.0.ip().to_string());
    }
    cx.set_static("aws:securetransport", if secure { "true" } else { "false" });
    let now = time::OffsetDateTime::now_utc();
    cx.set_static("aws:currenttime", current_time(now.unix_timestamp()));
    cx.set_static("aws:epochtime", now.unix_timestamp().to_string());
    if let Some(ua) = header(headers, "user-agent") {
        cx.set_static("aws:useragent", ua);
    }
    if let Some(r) = header(headers, "referer") {
        cx.set_static("aws:referer", r);
    }
    // From the signature actually verified (SigV2 is refused at the edge); an anonymous
    // request has neither key, so a policy requiring one denies it.
    if let Some(auth_type) = auth.s3_auth_type() {
        cx.set_static("s3:authtype", auth_type);
        cx.set_static("s3:signatureversion", "AWS4-HMAC-SHA256");
    }
    for (name, key) in [
        ("prefix", "s3:prefix"),
        ("delimiter", "s3:delimiter"),
        ("max-keys", "s3:max-keys"),
    ] {
        if let Some(v) = query_value(query, name) {
            cx.set_static(key, v);
        }
    }
    if let Some(v) = query_value(query, "versionId") {
        cx.set_static("s3:versionid", v);
    }
    for (h, key) in [
        (
            "x-amz-server-side-encryption",
            "s3:x-amz-server-side-encryption",
        ),
        (
            "x-amz-server-side-encryption-aws-kms-key-id",
            "s3:x-amz-server-side-encryption-aws-kms-key-id",
        ),
        ("x-amz-acl", "s3:x-amz-acl"),
        ("x-amz-storage-class", "s3:x-amz-storage-class"),
        ("x-amz-copy-source", "s3:x-amz-copy-source"),
        ("x-amz-metadata-directive", "s3:x-amz-metadata-directive"),
    ] {
        if let Some(v) = header(headers, h) {
            cx.set_static(key, v);
        }
    }
    if let Some(v) = header(headers, "x-amz-object-lock-mode") {
        cx.set_static("s3:object-lock-mode", v);
    }
    if let Some(v) = header(headers, "x-amz-object-lock-retain-until-date") {
        cx.set_static("s3:object-lock-retain-until-date", v);
        if let Some(until) = feiyun_iam::condition::parse_date(v) {
            let days = (until - now.unix_timestamp_nanos()).max(0) / (86_400 * 1_000_000_000);
            cx.set_static("s3:object-lock-remaining-retention-days", days.to_string());
        }
    }
    if let Some(v) = header(headers, "x-amz-object-lock-legal-hold") {
        cx.set_static("s3:object-lock-legal-hold", v);
    }
    if let Some(tagging) = header(headers, "x-amz-tagging") {
        let mut keys = Vec::new();
        for kv in tagging.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let k = feiyun_iam::sigv4::percent_decode(&k.replace('+', " "));
            let v = feiyun_iam::sigv4::percent_decode(&v.replace('+', " "));
            cx.set(&format!("s3:RequestObjectTag/{k}"), v);
            keys.push(k);
        }
        cx.set_many("s3:RequestObjectTagKeys", keys);
    }
    cx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_condition_keys() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-tagging",
            http::HeaderValue::from_static("team=red&cost%20center=42"),
        );
        h.insert(
            "x-amz-server-side-encryption",
            http::HeaderValue::from_static("AES256"),
        );
        let cx = request_context(
            &h,
            "list-type=2&prefix=home%2Falice%2F&max-keys=10",
            None,
            false,
            AuthKind::Header,
        );
        assert_eq!(cx.single_value("s3:prefix"), Some("home/alice/"));
        assert_eq!(cx.single_value("s3:max-keys"), Some("10"));
        assert_eq!(cx.single_value("s3:RequestObjectTag/team"), Some("red"));
        assert_eq!(
            cx.single_value("s3:RequestObjectTag/cost center"),
            Some("42")
        );
        assert_eq!(
            cx.single_value("s3:x-amz-server-side-encryption"),
            Some("AES256")
        );
        assert_eq!(cx.single_value("s3:authType"), Some("REST-HEADER"));
        assert_eq!(
            cx.single_value("s3:signatureversion"),
            Some("AWS4-HMAC-SHA256")
        );
        let q = "X-Amz-Signature=00";
        let presigned = request_context(&h, q, None, false, AuthKind::Presigned);
        assert_eq!(
            presigned.single_value("s3:authType"),
            Some("REST-QUERY-STRING")
        );
        // Anonymous requests carry neither key.
        let anonymous = request_context(&h, "", None, false, AuthKind::Anonymous);
        assert_eq!(anonymous.single_value("s3:authType"), None);
        assert_eq!(anonymous.single_value("s3:signatureversion"), None);
    }
}

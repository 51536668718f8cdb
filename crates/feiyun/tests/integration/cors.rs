//! CORS configuration through aws-sdk-s3, preflight and response headers over raw HTTP (as a
//! browser sends them: unsigned OPTIONS with Origin and Access-Control-Request-*).

use crate::common;

use crate::common::Region;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CorsConfiguration, CorsRule};

fn code<T, E: ProvideErrorMetadata>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(e) => e.code().unwrap_or("<none>").to_owned(),
    }
}

fn cors_rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
    let mut b = CorsRule::builder()
        .max_age_seconds(600)
        .expose_headers("ETag");
    for o in origins {
        b = b.allowed_origins(*o);
    }
    for m in methods {
        b = b.allowed_methods(*m);
    }
    for h in headers {
        b = b.allowed_headers(*h);
    }
    b.build().unwrap()
}

fn preflight(
    r: &Region,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> common::RawResponse {
    let mut req = format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\n",
        r.addr
    );
    if !headers.is_empty() {
        req.push_str(&format!("Access-Control-Request-Headers: {headers}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    common::raw(r.addr, &req)
}

#[tokio::test]
async fn cors_configuration_preflight_and_response_headers() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("web").send().await.unwrap();
    assert_eq!(
        code(c.get_bucket_cors().bucket("web").send().await),
        "NoSuchCORSConfiguration"
    );
    // Without a configuration every preflight is refused.
    let resp = preflight(&r, "/web/k", "https://app.example.com", "PUT", "");
    assert_eq!(resp.status, 403, "{}", resp.body_text());

    c.put_bucket_cors()
        .bucket("web")
        .cors_configuration(
            CorsConfiguration::builder()
                .cors_rules(cors_rule(
                    &["https://*.example.com"],
                    &["PUT", "GET"],
                    &["content-type", "x-amz-*"],
                ))
                .cors_rules(cors_rule(&["*"], &["GET"], &[]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let got = c.get_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(got.cors_rules().len(), 2);
    assert_eq!(got.cors_rules()[0].max_age_seconds(), Some(600));

    // Allowed preflight: the origin is echoed with credentials; the asked headers granted.
    let resp = preflight(
        &r,
        "/web/k",
        "https://app.example.com",
        "PUT",
        "content-type, x-amz-date",
    );
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        resp.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        resp.header("access-control-allow-methods"),
        Some("PUT, GET")
    );
    assert_eq!(
        resp.header("access-control-allow-headers"),
        Some("content-type, x-amz-date")
    );
    assert_eq!(resp.header("access-control-max-age"), Some("600"));
    // Refused: wrong origin, a method no rule allows, a header no rule allows.
    for (origin, method, headers) in [
        ("https://app.example.org", "PUT", ""),
        ("https://app.example.com", "DELETE", ""),
        ("https://app.example.com", "PUT", "authorization-extra"),
    ] {
        let resp = preflight(&r, "/web/k", origin, method, headers);
        assert_eq!(resp.status, 403, "{origin} {method} {headers}");
        assert_eq!(resp.code(), "AccessForbidden");
        assert!(resp.header("access-control-allow-origin").is_none());
    }
    // Any origin may GET (second rule): the answer is "*", without credentials.
    let resp = preflight(&r, "/web/k", "http://elsewhere.test", "GET", "");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert!(resp.header("access-control-allow-credentials").is_none());
    // A preflight without Origin is a bad request.
    let resp = common::raw(
        r.addr,
        &format!(
            "OPTIONS /web/k HTTP/1.1\r\nHost: {}\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
            r.addr
        ),
    );
    assert_eq!(resp.status, 400);

    // An actual request with an Origin gets the headers on its response.
    c.put_object()
        .bucket("web")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    // An anonymous GET is refused, but still carries the CORS headers so a page can read
    // why it failed.
    let resp = common::raw(
        r.addr,
        &format!(
            "GET /web/k HTTP/1.1\r\nHost: {}\r\nOrigin: https://app.example.com\r\nConnection: close\r\n\r\n",
            r.addr
        ),
    );
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(resp.header("access-control-expose-headers"), Some("ETag"));

    // Bad configurations are refused and leave the old one in place.
    for (rule, want) in [
        (cors_rule(&["*"], &["PATCH"], &[]), "InvalidRequest"),
        (
            cors_rule(&["https://*.*.com"], &["GET"], &[]),
            "InvalidRequest",
        ),
    ] {
        assert_eq!(
            code(
                c.put_bucket_cors()
                    .bucket("web")
                    .cors_configuration(
                        CorsConfiguration::builder()
                            .cors_rules(rule)
                            .build()
                            .unwrap()
                    )
                    .send()
                    .await
            ),
            want
        );
    }
    assert_eq!(
        c.get_bucket_cors()
            .bucket("web")
            .send()
            .await
            .unwrap()
            .cors_rules()
            .len(),
        2
    );
    c.delete_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(
        code(c.get_bucket_cors().bucket("web").send().await),
        "NoSuchCORSConfiguration"
    );
}

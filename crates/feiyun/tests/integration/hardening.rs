//! The hardening review's findings, each reproduced against the real binary over raw HTTP
//! (where a client library would refuse to send the bad request) or the SDK: signatures that
//! must cover what they authorize, work an unauthenticated client must not be able to force,
//! and races on one key that S3 accepts.

use crate::common;
use crate::common::sigv4;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::{ACCESS_KEY, RawResponse, Region, SECRET_KEY, raw};
use aws_sdk_s3::primitives::ByteStream;

fn signer(ak: &str, sk: &str) -> sigv4::Signer {
    sigv4::Signer {
        access_key: ak.into(),
        secret_key: sk.into(),
        region: "us-east-1".into(),
    }
}

/// A request signed over `signed` (and host, date, payload hash), with `unsigned` headers
/// added after signing — what an intermediary or a replayed log line could do.
fn signed_with_extra(
    addr: SocketAddr,
    (ak, sk): (&str, &str),
    method: &str,
    path: &str,
    signed: &[(&str, String)],
    unsigned: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let host = addr.to_string();
    let mut headers = vec![("host", host.clone())];
    headers.extend(signed.iter().cloned());
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let auth = signer(ak, sk).sign(
        method,
        path_only,
        query,
        &headers,
        &sigv4::sha256_hex(body),
        &sigv4::now_amz_date(),
    );
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in signed.iter().map(|(k, v)| (*k, v.as_str())).chain(
        auth.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(unsigned.iter().copied()),
    ) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    common::raw_bytes(addr, &bytes)
}

fn root() -> (&'static str, &'static str) {
    (ACCESS_KEY, SECRET_KEY)
}

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

/// A PUT signed over host, date and payload hash, with `x-amz-copy-source` added after
/// signing, once copied the secret object (review item 13). Every `x-amz-*` header must be
/// signed; the presigned form keeps refusing extras.
#[tokio::test]
async fn headers_added_after_signing_are_refused() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("secret").send().await.unwrap();
    c.create_bucket().bucket("drop").send().await.unwrap();
    put(&c, "secret", "k", b"the secret").await;
    let resp = signed_with_extra(
        r.addr,
        root(),
        "PUT",
        "/drop/copy",
        &[],
        &[("x-amz-copy-source", "/secret/k")],
        b"",
    );
    assert_eq!(resp.status, 403, "{}", resp.body_text());
    assert_eq!(resp.code(), "AccessDenied");
    assert!(resp.body_text().contains("x-amz-copy-source"));
    let gone = c.head_object().bucket("drop").key("copy").send().await;
    assert!(gone.is_err(), "the unsigned copy source was honoured");
    // Object Lock and replica headers the same way.
    for (h, v) in [
        ("x-amz-object-lock-mode", "COMPLIANCE"),
        ("x-feiyun-replica-version-id", "0"),
    ] {
        let resp = signed_with_extra(r.addr, root(), "PUT", "/drop/x", &[], &[(h, v)], b"data");
        assert_eq!(resp.status, 403, "{h}: {}", resp.body_text());
    }
    // The same header, signed, is an ordinary copy.
    let resp = signed_with_extra(
        r.addr,
        root(),
        "PUT",
        "/drop/copy",
        &[("x-amz-copy-source", "/secret/k".into())],
        &[],
        b"",
    );
    assert_eq!(resp.status, 200, "{}", resp.body_text());
}

/// SigV2 is refused; the scope must name this region and S3; presigned URLs live at most a
/// week; `host` must be signed (items 14, 15, 16). Screening happens before any secret is
/// looked up, so these need no valid signature at all.
#[test]
fn signatures_of_the_wrong_shape_are_refused_as_s3_does() {
    let r = Region::start();
    let host = r.addr.to_string();
    let date = sigv4::now_amz_date();
    let day = &date[..8];
    let get = |extra: &str, query: &str| -> RawResponse {
        raw(
            r.addr,
            &format!(
                "GET /bkt/k{query} HTTP/1.1\r\nHost: {host}\r\nx-amz-date: {date}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n{extra}Connection: close\r\n\r\n"
            ),
        )
    };
    let v2 = get(
        &format!("Authorization: AWS {ACCESS_KEY}:c2lnbmF0dXJl\r\n"),
        "",
    );
    assert_eq!((v2.status, v2.code()), (400, "InvalidRequest".into()));
    let v2q = get(
        "",
        &format!("?AWSAccessKeyId={ACCESS_KEY}&Expires=4102444800&Signature=abc"),
    );
    assert_eq!((v2q.status, v2q.code()), (400, "InvalidRequest".into()));
    let auth = |region: &str, service: &str, signed: &str| {
        format!(
            "Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{day}/{region}/{service}/aws4_request, SignedHeaders={signed}, Signature={}\r\n",
            "0".repeat(64)
        )
    };
    let other_region = get(
        &auth("eu-west-9", "s3", "host;x-amz-content-sha256;x-amz-date"),
        "",
    );
    assert_eq!(other_region.status, 400);
    assert_eq!(other_region.code(), "AuthorizationHeaderMalformed");
    assert!(other_region.body_text().contains("expecting 'us-east-1'"));
    let other_service = get(
        &auth("us-east-1", "iam", "host;x-amz-content-sha256;x-amz-date"),
        "",
    );
    assert_eq!(other_service.code(), "AuthorizationHeaderMalformed");
    let no_host = get(
        &auth("us-east-1", "s3", "x-amz-content-sha256;x-amz-date"),
        "",
    );
    assert_eq!(
        (no_host.status, no_host.code()),
        (403, "AccessDenied".into())
    );
    let presigned = |expires: &str| {
        format!(
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY}%2F{day}%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature={}",
            "0".repeat(64)
        )
    };
    let long = raw(
        r.addr,
        &format!(
            "GET /bkt/k{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            presigned("604801")
        ),
    );
    assert_eq!(long.status, 400);
    assert_eq!(long.code(), "AuthorizationQueryParametersError");
    // A week exactly passes screening (and then fails its made-up signature).
    let week = raw(
        r.addr,
        &format!(
            "GET /bkt/k{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            presigned("604800")
        ),
    );
    assert_eq!(week.code(), "SignatureDoesNotMatch", "{}", week.body_text());
}

/// POST Object used to buffer the whole form, file included, before any check (item 7):
/// it is refused on its headers, before one byte of a declared 5 GiB body is read.
#[test]
fn browser_form_uploads_are_refused_before_the_body_is_read() {
    let r = Region::start();
    let mut s = std::net::TcpStream::connect(r.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /anybucket HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 5368709120\r\n\r\n",
        r.addr
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).expect("an answer before the body");
    let resp = common::parse_response(&buf[..n]);
    assert_eq!(resp.status, 501, "{}", resp.body_text());
    assert_eq!(resp.code(), "NotImplemented");
}

/// Sends `head` (a request without its body) and reads the answer the server gives first.
fn answer_before_body(addr: SocketAddr, head: &str) -> RawResponse {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).expect("an answer before the body");
    common::parse_response(&buf[..n])
}

/// The region's audit records, one JSON value each (the region must be stopped).
fn audit_records(r: &Region) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(r.data_dir.join("audit")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                // `LINK JSON`: the chain's MAC, then the record.
                let json = line.split_once(' ').map_or(line, |(_, j)| j);
                out.push(serde_json::from_str(json).unwrap_or(serde_json::Value::Null));
            }
        }
    }
    out
}

/// Oversized XML, CORS preflights and refused form uploads were audited as "unknown" and
/// "AuthFailed" (or not at all): each is now recorded as what it was, under the key it
/// claimed, without charging that key's back-off.
#[test]
fn refusals_before_authentication_are_audited_as_what_they_were() {
    let mut r = Region::start();
    let host = r.addr.to_string();
    let auth = signer(ACCESS_KEY, "not-the-secret").sign(
        "PUT",
        "/anybucket",
        "",
        &[("host", host.clone())],
        sigv4::UNSIGNED,
        &sigv4::now_amz_date(),
    );
    let mut head =
        format!("PUT /anybucket HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5242880\r\n");
    for (k, v) in &auth {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let xml = answer_before_body(r.addr, &head);
    assert_eq!(
        xml.code(),
        "MaxMessageLengthExceeded",
        "{}",
        xml.body_text()
    );
    let form = answer_before_body(
        r.addr,
        &format!(
            "POST /anybucket HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 100\r\n\r\n"
        ),
    );
    assert_eq!(form.status, 501);
    let preflight = raw(
        r.addr,
        &format!(
            "OPTIONS /anybucket/k HTTP/1.1\r\nHost: {host}\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(preflight.status, 403, "{}", preflight.body_text());
    r.terminate();
    let records = audit_records(&r);
    let of = |resp: &RawResponse| {
        let id = resp.header("x-amz-request-id").expect("a request id");
        records
            .iter()
            .find(|rec| rec["request_id"] == id)
            .unwrap_or_else(|| panic!("no audit record for {id}: {records:?}"))
            .clone()
    };
    let rec = of(&xml);
    assert_eq!(
        (
            &rec["operation"],
            &rec["decision"],
            &rec["access_key"],
            &rec["status"]
        ),
        (
            &serde_json::json!("Rejected"),
            &serde_json::json!("Rejected"),
            &serde_json::json!(ACCESS_KEY),
            &serde_json::json!(400)
        ),
        "{rec}"
    );
    assert_eq!(rec["resource"], "/anybucket", "{rec}");
    let rec = of(&form);
    assert_eq!(
        (&rec["operation"], &rec["decision"], &rec["principal"]),
        (
            &serde_json::json!("PostObject"),
            &serde_json::json!("Rejected"),
            &serde_json::json!("anonymous")
        ),
        "{rec}"
    );
    let rec = of(&preflight);
    assert_eq!(
        (&rec["operation"], &rec["decision"]),
        (
            &serde_json::json!("PreflightRequest"),
            &serde_json::json!("ImplicitDeny")
        ),
        "{rec}"
    );
}

/// Ten garbage requests naming the root's key used to lock the root out everywhere
/// (item 10): the back-off is per claimed key *and* source, so the owner elsewhere is served.
#[tokio::test]
async fn garbage_naming_a_key_does_not_lock_its_owner_out() {
    let r = Region::start();
    let host = r.addr.to_string();
    let date = sigv4::now_amz_date();
    for _ in 0..30 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        // Another source address on loopback: the attacker.
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = sock.connect(r.addr).await.unwrap();
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nx-amz-date: {date}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nAuthorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{}/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}\r\nConnection: close\r\n\r\n",
            &date[..8],
            "0".repeat(64)
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
    }
    // The attacker is throttled...
    let metrics = r.metrics();
    assert!(
        metrics.contains("op=\"Throttled\""),
        "no throttling happened"
    );
    // ...the owner, from its own address, is not.
    let listed = r.client().list_buckets().send().await;
    assert!(listed.is_ok(), "{listed:?}");
}

/// A few silent sockets used to hold every connection permit (item 9): each phase before a
/// request has a timer, and one client may hold only so many connections.
#[tokio::test]
async fn silent_and_surplus_connections_are_closed() {
    let r = Region::start_env(&[
        ("FEIYUN_IDLE_TIMEOUT_SECS", "2"),
        ("FEIYUN_MAX_CONNECTIONS_PER_CLIENT", "4"),
    ]);
    let closed_within = |mut s: std::net::TcpStream, limit: Duration| {
        // The server may say something first (HTTP/2 SETTINGS); what matters is the close.
        let start = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            let left = limit.checked_sub(start.elapsed())?;
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match s.read(&mut buf) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(start.elapsed());
                }
                Err(_) => return None,
            }
        }
    };
    // Silent; half a request line; part of the HTTP/2 preface; a finished HTTP/2 preface
    // that never sends a request.
    let partial: [&[u8]; 4] = [
        b"",
        b"GET / HT",
        b"PRI * HTTP/2",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    ];
    for bytes in partial {
        let mut s = std::net::TcpStream::connect(r.addr).unwrap();
        s.write_all(bytes).unwrap();
        let t = closed_within(s, Duration::from_secs(40));
        assert!(
            t.is_some_and(|t| t < Duration::from_secs(35)),
            "{:?} kept its connection ({t:?})",
            String::from_utf8_lossy(bytes)
        );
    }
    // Four connections from one address are allowed; the fifth is closed at once, while
    // another address is still served.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.3", r.addr).await);
    }
    let fifth = connect_from("127.0.0.3", r.addr).await;
    assert!(
        closed_within(fifth, Duration::from_secs(5)).is_some_and(|t| t < Duration::from_secs(2)),
        "a fifth connection from one client was kept"
    );
    assert!(r.client().list_buckets().send().await.is_ok());
    drop(held);
}

/// A blocking TCP connection from a chosen loopback address.
async fn connect_from(ip: &str, to: SocketAddr) -> std::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
    let s = sock.connect(to).await.unwrap().into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// A client that reads nothing used to stall its response, and the blobs it leased, for
/// ever (item 4): after the write-stall limit the connection is closed.
#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_off() {
    let r = Region::start_env(&[("FEIYUN_WRITE_STALL_SECS", "1")]);
    let c = r.client();
    c.create_bucket().bucket("big").send().await.unwrap();
    let size = 48 << 20;
    put(&c, "big", "obj", &common::pattern(size, 3)).await;
    let url = c
        .get_object()
        .bucket("big")
        .key("obj")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(60)).unwrap(),
        )
        .await
        .unwrap();
    let uri: http::Uri = url.uri().parse().unwrap();
    let mut s = std::net::TcpStream::connect(r.addr).unwrap();
    // A small receive window, so the server's writes fill it quickly.
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        uri.path_and_query().unwrap(),
        r.addr
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < size,
        "the whole {size}-byte body arrived after a 5 s stall ({got})"
    );
}

/// Function and replication bodies used to be read (64 and 32 MiB) before the signature
/// was checked (item 8): a bad signature over a claimed payload hash is refused on the
/// headers, before the body is sent.
#[test]
fn large_bodies_of_unauthenticated_requests_are_not_read() {
    let r = Region::start();
    for path in ["/fc/functions/f", "/replication/site"] {
        let mut s = std::net::TcpStream::connect(r.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let date = sigv4::now_amz_date();
        write!(
            s,
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 33554432\r\nx-amz-date: {date}\r\nx-amz-content-sha256: {}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{}/us-east-1/{}/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}\r\n\r\n",
            r.addr,
            "a".repeat(64),
            &date[..8],
            if path.starts_with("/fc") { "fc" } else { "replication" },
            "0".repeat(64)
        )
        .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("an answer before the body");
        let resp = common::parse_response(&buf[..n]);
        assert_eq!(resp.status, 403, "{path}: {}", resp.body_text());
    }
}

/// A client could set `x-feiyun-forwarded` and so bypass a bucket's home region (item 24):
/// only a mark MACed by a peer's credentials is honoured.
#[test]
fn a_client_cannot_mark_its_request_as_relayed() {
    let r = Region::start();
    for mark in ["1", "peer", "v1;eu;AKID;0;10.0.0.1;1;00"] {
        let resp = raw(
            r.addr,
            &format!(
                "GET /b/k HTTP/1.1\r\nHost: {}\r\nx-feiyun-forwarded: {mark}\r\nConnection: close\r\n\r\n",
                r.addr
            ),
        );
        assert_eq!(resp.status, 403, "{mark}: {}", resp.body_text());
        assert_eq!(resp.code(), "AccessDenied");
    }
}

/// `/metrics` used to name functions and rates to anyone (the review's "also"): with a
/// token it needs the bearer; without one, loopback only.
#[test]
fn metrics_need_a_token_when_one_is_set() {
    let r = Region::start_env(&[("FEIYUN_METRICS_TOKEN", "t0ken")]);
    let get = |auth: &str| {
        raw(
            r.addr,
            &format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
                r.addr
            ),
        )
    };
    assert_eq!(get("").status, 401);
    assert_eq!(get("Authorization: Bearer nope\r\n").status, 401);
    let ok = get("Authorization: Bearer t0ken\r\n");
    assert_eq!(ok.status, 200);
    assert!(
        ok.body_text().contains("feiyun_corruption_events"),
        "{}",
        ok.body_text()
    );
}

/// Authorization split the copy source at the first `?` while the copy itself reads up to
/// `?versionId=` (item 18): `/src/x?y.key` names the key `x?y.key`, and a Deny on `*.key`
/// must stop it.
#[tokio::test]
async fn a_copy_source_is_authorized_as_it_is_read() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("src").send().await.unwrap();
    c.create_bucket().bucket("dst").send().await.unwrap();
    put(&c, "src", "x?y.key", b"private key material").await;
    let (ak, sk) = common::iam_user(
        &r,
        "copier",
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:*","Resource":"*"},
            {"Effect":"Deny","Action":"s3:GetObject","Resource":"arn:aws:s3:::src/*.key"}]}"#,
    );
    let resp = signed_with_extra(
        r.addr,
        (&ak, &sk),
        "PUT",
        "/dst/stolen",
        &[("x-amz-copy-source", "/src/x?y.key".into())],
        &[],
        b"",
    );
    assert_eq!(resp.status, 403, "{}", resp.body_text());
    assert!(
        c.head_object()
            .bucket("dst")
            .key("stolen")
            .send()
            .await
            .is_err()
    );
}

/// DeleteObjects did not see each key's tags, so a tag-based Deny missed (item 20); and
/// its audit record now lists what was decided for each key.
#[tokio::test]
async fn delete_objects_judges_each_key_by_its_tags() {
    let mut r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("tagged").send().await.unwrap();
    c.put_object()
        .bucket("tagged")
        .key("keep")
        .tagging("hold=yes")
        .body(ByteStream::from_static(b"1"))
        .send()
        .await
        .unwrap();
    put(&c, "tagged", "free", b"2").await;
    let (ak, sk) = common::iam_user(
        &r,
        "cleaner",
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:*","Resource":"*"},
            {"Effect":"Deny","Action":"s3:DeleteObject","Resource":"*",
             "Condition":{"StringEquals":{"s3:ExistingObjectTag/hold":"yes"}}}]}"#,
    );
    let user = common::client_for(&r.endpoint(), &ak, &sk);
    let out = user
        .delete_objects()
        .bucket("tagged")
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("keep")
                        .build()
                        .unwrap(),
                )
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("free")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let denied: Vec<_> = out.errors().iter().filter_map(|e| e.key()).collect();
    assert_eq!(denied, ["keep"]);
    let deleted: Vec<_> = out.deleted().iter().filter_map(|d| d.key()).collect();
    assert_eq!(deleted, ["free"]);
    assert!(
        c.head_object()
            .bucket("tagged")
            .key("keep")
            .send()
            .await
            .is_ok()
    );
    r.terminate();
    let log = std::fs::read_to_string(
        std::fs::read_dir(r.data_dir.join("audit"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap(),
    )
    .unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("\"DeleteObjects\""))
        .expect("a DeleteObjects record");
    assert!(
        line.contains("arn:aws:s3:::tagged/keep\",\"decision\":\"Deny"),
        "{line}"
    );
    assert!(
        line.contains("arn:aws:s3:::tagged/free\",\"decision\":\"Allow"),
        "{line}"
    );
}

/// S3 deletes a bucket that holds only unfinished uploads, discarding them (item 6).
#[tokio::test]
async fn a_bucket_with_only_unfinished_uploads_can_be_deleted() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("uploads").send().await.unwrap();
    let up = c
        .create_multipart_upload()
        .bucket("uploads")
        .key("half")
        .send()
        .await
        .unwrap();
    c.upload_part()
        .bucket("uploads")
        .key("half")
        .upload_id(up.upload_id().unwrap())
        .part_number(1)
        .body(ByteStream::from_static(b"part"))
        .send()
        .await
        .unwrap();
    c.delete_bucket().bucket("uploads").send().await.unwrap();
    assert!(c.head_bucket().bucket("uploads").send().await.is_err());
    // A new bucket of the same name starts empty.
    c.create_bucket().bucket("uploads").send().await.unwrap();
    let listed = c
        .list_multipart_uploads()
        .bucket("uploads")
        .send()
        .await
        .unwrap();
    assert!(listed.uploads().is_empty());
}

/// Sixteen to sixty-four clients overwriting one key used to get SlowDown and "corrupt"
/// errors (item 1): every write lands and every acknowledged version reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_overwriting_one_key_all_succeed() {
    let r = Region::start();
    let c = r.client();
    for (bucket, versioned) in [("plain", false), ("versioned", true)] {
        c.create_bucket().bucket(bucket).send().await.unwrap();
        if versioned {
            c.put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(
                    aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for w in 0..48 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..8 {
                    // Large enough for a blob file: the overwritten one is collected as
                    // the readers below race it.
                    let body = common::pattern(80 * 1024, (w * 100 + i) as u64);
                    let out = c
                        .put_object()
                        .bucket(bucket)
                        .key("hot")
                        .body(ByteStream::from(body.clone()))
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("writer {w} write {i}: {e:?}"));
                    acked.push((out.version_id().map(str::to_owned), body));
                }
                acked
            }));
        }
        for _ in 0..16 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    match c.get_object().bucket(bucket).key("hot").send().await {
                        Ok(o) => {
                            let bytes = o.body.collect().await.expect("body").into_bytes();
                            assert_eq!(bytes.len(), 80 * 1024);
                        }
                        Err(e) => {
                            let code = e.into_service_error().meta().code().map(str::to_owned);
                            assert_eq!(code.as_deref(), Some("NoSuchKey"), "a read failed");
                        }
                    }
                }
                Vec::new()
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        assert_eq!(all.len(), 48 * 8);
        if versioned {
            for (v, body) in all {
                let v = v.expect("a version id");
                let got = c
                    .get_object()
                    .bucket(bucket)
                    .key("hot")
                    .version_id(&v)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("version {v}: {e:?}"))
                    .body
                    .collect()
                    .await
                    .unwrap()
                    .into_bytes();
                assert!(
                    got.as_ref() == body.as_slice(),
                    "version {v} reads other bytes"
                );
            }
        }
    }
    assert!(r.metrics().contains("feiyun_corruption_events_total 0"));
}

/// CreateUser was authorized on path `/` whatever path it asked for, and its tags needed no
/// `iam:TagUser` (item 20); GetSessionToken needed no permission (item 11).
#[test]
fn iam_creation_is_authorized_as_requested() {
    let r = Region::start();
    let who = common::query_call(
        r.addr,
        root(),
        "sts",
        "2011-06-15",
        &[("Action", "GetCallerIdentity")],
    );
    let acct = who
        .body_text()
        .split("<Account>")
        .nth(1)
        .and_then(|s| s.split("</Account>").next())
        .unwrap()
        .to_owned();
    let (ak, sk) = common::iam_user(
        &r,
        "team-admin",
        &format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iam:CreateUser","Resource":"arn:aws:iam::{acct}:user/team/*"}}]}}"#
        ),
    );
    let call = |params: &[(&str, &str)]| {
        common::query_call(r.addr, (&ak, &sk), "iam", "2010-05-08", params)
    };
    let admin = call(&[
        ("Action", "CreateUser"),
        ("UserName", "x"),
        ("Path", "/admin/"),
    ]);
    assert_eq!(admin.status, 403, "{}", admin.body_text());
    let tagged = call(&[
        ("Action", "CreateUser"),
        ("UserName", "y"),
        ("Path", "/team/"),
        ("Tags.member.1.Key", "role"),
        ("Tags.member.1.Value", "admin"),
    ]);
    assert_eq!(tagged.status, 403, "{}", tagged.body_text());
    assert!(tagged.body_text().contains("iam:TagUser"));
    let ok = call(&[
        ("Action", "CreateUser"),
        ("UserName", "z"),
        ("Path", "/team/"),
    ]);
    assert_eq!(ok.status, 200, "{}", ok.body_text());
    let session = common::query_call(
        r.addr,
        (&ak, &sk),
        "sts",
        "2011-06-15",
        &[("Action", "GetSessionToken")],
    );
    assert_eq!(session.status, 403, "{}", session.body_text());
}

/// A signed call to the region's `/replication/` API as `(ak, sk)`.
fn replication_call(
    r: &Region,
    (ak, sk): (&str, &str),
    method: &str,
    path: &str,
    body: &str,
) -> RawResponse {
    let host = r.addr.to_string();
    let auth = signer(ak, sk).sign_as(
        "replication",
        method,
        path,
        "",
        &[("host", host.clone())],
        &sigv4::sha256_hex(body.as_bytes()),
        &sigv4::now_amz_date(),
    );
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in auth {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw(r.addr, &req)
}

/// Anyone allowed AddRegion could register a site peer at any URL and receive every secret
/// (item 22): site peers are root's to add, over verified HTTPS (or loopback), and pushes
/// are sealed for the peer and taken only by a region that joined a site itself.
#[test]
fn site_membership_is_roots_and_pushes_are_sealed() {
    let r = Region::start();
    let peer = |url: &str| {
        format!(
            r#"{{"endpoint":"{url}","access_key":"AKPEER","secret_key":"peer-secret-0123456789","site":true}}"#
        )
    };
    let (ak, sk) = common::iam_user(
        &r,
        "operator",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"replication:*","Resource":"*"}]}"#,
    );
    let by_user = replication_call(
        &r,
        (&ak, &sk),
        "PUT",
        "/replication/regions/dr",
        &peer("https://dr.example.test"),
    );
    assert_eq!(by_user.status, 403, "{}", by_user.body_text());
    let plain = replication_call(
        &r,
        root(),
        "PUT",
        "/replication/regions/dr",
        &peer("http://192.0.2.7:9000"),
    );
    assert_eq!(plain.status, 400, "{}", plain.body_text());
    assert!(plain.body_text().contains("https"), "{}", plain.body_text());
    // A push into a region that joined no site, even from its root, is refused; so is an
    // unsealed one.
    let push = replication_call(&r, root(), "POST", "/replication/site", "not sealed");
    assert_eq!(push.status, 403, "{}", push.body_text());
}

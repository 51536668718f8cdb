//! Bad input over raw HTTP (validly signed where it matters): each gets its S3 error, the
//! server stays up, and what was stored before is intact afterwards.

use crate::common;
use crate::common::sigv4;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::{RawResponse, Region, pattern};
use aws_sdk_s3::primitives::ByteStream;

fn signer() -> sigv4::Signer {
    sigv4::Signer {
        access_key: common::ACCESS_KEY.into(),
        secret_key: common::SECRET_KEY.into(),
        region: "us-east-1".into(),
    }
}

/// Builds a signed request. `declared_len` overrides Content-Length (to lie about it).
#[allow(clippy::too_many_arguments)]
fn signed_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    declared_len: Option<usize>,
    date: &str,
    payload_hash: &str,
) -> Vec<u8> {
    let host = addr.to_string();
    let headers = signer().sign(
        method,
        path,
        query,
        &[("host", host.clone())],
        payload_hash,
        date,
    );
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        declared_len.unwrap_or(body.len())
    ));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn send(addr: SocketAddr, method: &str, path: &str, query: &str, body: &[u8]) -> RawResponse {
    let req = signed_request(
        addr,
        method,
        path,
        query,
        body,
        None,
        &sigv4::now_amz_date(),
        &sigv4::sha256_hex(body),
    );
    common::raw_bytes(addr, &req)
}

async fn setup() -> (Region, aws_sdk_s3::Client, Vec<u8>) {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("bad").send().await.unwrap();
    let keep = pattern(300_000, 42);
    c.put_object()
        .bucket("bad")
        .key("keep")
        .body(ByteStream::from(keep.clone()))
        .send()
        .await
        .unwrap();
    (r, c, keep)
}

async fn still_intact(r: &Region, c: &aws_sdk_s3::Client, keep: &[u8]) {
    let live = common::raw(
        r.addr,
        "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(live.status, 200, "server is not alive");
    let got = c
        .get_object()
        .bucket("bad")
        .key("keep")
        .send()
        .await
        .unwrap();
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], keep, "stored data changed");
}

#[tokio::test]
async fn malformed_and_oversized_xml() {
    let (r, c, keep) = setup().await;
    let rows: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "delete=",
            b"<Delete><Object><Key>keep</Key>".to_vec(),
            400,
            "MalformedXML",
        ),
        (
            "POST",
            "delete=",
            b"not xml at all".to_vec(),
            400,
            "MalformedXML",
        ),
    ];
    for (method, query, body, status, code) in rows {
        let resp = send(r.addr, method, "/bad", query, &body);
        assert_eq!(resp.status, status, "{}", resp.body_text());
        if !code.is_empty() {
            assert_eq!(resp.code(), code);
        }
    }
    // An XML body over the 4 MiB limit is refused from its Content-Length, before it is read.
    let req = signed_request(
        r.addr,
        "POST",
        "/bad",
        "delete=",
        b"<Delete>",
        Some(5 * 1024 * 1024),
        &sigv4::now_amz_date(),
        sigv4::UNSIGNED,
    );
    let resp = common::raw_bytes(r.addr, &req);
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    assert_eq!(resp.code(), "MaxMessageLengthExceeded");
    // CompleteMultipartUpload with broken XML.
    let id = c
        .create_multipart_upload()
        .bucket("bad")
        .key("mp")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let resp = send(
        r.addr,
        "POST",
        "/bad/mp",
        &format!("uploadId={id}"),
        b"<CompleteMultipartUpload><Part>",
    );
    assert_eq!(resp.status, 400);
    assert_eq!(resp.code(), "MalformedXML");
    still_intact(&r, &c, &keep).await;
}

#[tokio::test]
async fn short_long_and_dropped_bodies_leave_nothing() {
    let (r, c, keep) = setup().await;
    // Body shorter than Content-Length, then the client closes its side.
    let body = pattern(100_000, 1);
    let req = signed_request(
        r.addr,
        "PUT",
        "/bad/short",
        "",
        &body[..50_000],
        Some(100_000),
        &sigv4::now_amz_date(),
        sigv4::UNSIGNED,
    );
    let mut s = TcpStream::connect(r.addr).unwrap();
    s.write_all(&req).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut sink);
    // Dropped mid-upload of a large body (blob path).
    let big = pattern(3 * 1024 * 1024, 2);
    let req = signed_request(
        r.addr,
        "PUT",
        "/bad/dropped",
        "",
        &big[..1024 * 1024],
        Some(big.len()),
        &sigv4::now_amz_date(),
        sigv4::UNSIGNED,
    );
    let mut s = TcpStream::connect(r.addr).unwrap();
    s.write_all(&req).unwrap();
    drop(s);
    // Body longer than Content-Length: only the declared bytes are the object.
    let req = signed_request(
        r.addr,
        "PUT",
        "/bad/long",
        "",
        b"0123456789EXTRA-BYTES",
        Some(10),
        &sigv4::now_amz_date(),
        sigv4::UNSIGNED,
    );
    let _ = common::raw_bytes(r.addr, &req);
    // A signed payload hash that does not match the body.
    let req = signed_request(
        r.addr,
        "PUT",
        "/bad/mismatch",
        "",
        b"actual body",
        None,
        &sigv4::now_amz_date(),
        &sigv4::sha256_hex(b"another body"),
    );
    let resp = common::raw_bytes(r.addr, &req);
    assert_eq!(resp.status, 400);
    assert_eq!(resp.code(), "XAmzContentSHA256Mismatch");

    for key in ["short", "dropped", "mismatch"] {
        let head = c.head_object().bucket("bad").key(key).send().await;
        assert!(head.is_err(), "{key} became visible");
    }
    let long = c
        .get_object()
        .bucket("bad")
        .key("long")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &long.body.collect().await.unwrap().into_bytes()[..],
        b"0123456789"
    );
    // The dropped upload's blob is cleaned up: only "keep"'s blob file remains.
    let mut files = 0;
    for _ in 0..50 {
        files = std::fs::read_dir(r.data_dir.join("blobs"))
            .unwrap()
            .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum::<usize>();
        if files == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(files, 1, "an aborted upload left its blob behind");
    still_intact(&r, &c, &keep).await;
}

#[tokio::test]
async fn bad_keys_ranges_and_signatures() {
    let (r, c, keep) = setup().await;
    // NUL and invalid UTF-8 in keys.
    for path in ["/bad/a%00b", "/bad/%FF%FE"] {
        let resp = send(r.addr, "PUT", path, "", b"x");
        assert_eq!(resp.status, 400, "{path}: {}", resp.body_text());
    }
    // Malformed and unsatisfiable ranges.
    // (S3 itself ignores a syntactically invalid Range; s3s refuses it, which no client
    // relies on either way — what matters is an S3 error, never a 5xx.)
    for (range, status, code) in [
        ("bytes=abc", 400, "InvalidArgument"),
        ("bytes=400000-", 416, "InvalidRange"),
        ("bytes=5-1", 400, "InvalidArgument"),
    ] {
        let got = c
            .get_object()
            .bucket("bad")
            .key("keep")
            .range(range)
            .send()
            .await;
        let e = got.expect_err(range);
        assert_eq!(
            e.raw_response().map(|r| r.status().as_u16()),
            Some(status),
            "{range}"
        );
        assert_eq!(
            aws_sdk_s3::error::ProvideErrorMetadata::code(&e),
            Some(code),
            "{range}"
        );
    }
    // Skewed clock: signed 20 minutes in the past.
    let old = sigv4::amz_date(time::OffsetDateTime::now_utc().unix_timestamp() - 20 * 60);
    let req = signed_request(r.addr, "GET", "/bad", "", b"", None, &old, sigv4::UNSIGNED);
    let resp = common::raw_bytes(r.addr, &req);
    assert_eq!(resp.status, 403, "{}", resp.body_text());
    assert_eq!(resp.code(), "RequestTimeTooSkewed");
    // Wrong signature.
    let mut req = signed_request(
        r.addr,
        "GET",
        "/bad",
        "",
        b"",
        None,
        &sigv4::now_amz_date(),
        sigv4::UNSIGNED,
    );
    let text = String::from_utf8(req.clone()).unwrap();
    let pos = text.find("Signature=").unwrap() + "Signature=".len();
    req[pos] = if req[pos] == b'0' { b'1' } else { b'0' };
    let resp = common::raw_bytes(r.addr, &req);
    assert_eq!(resp.code(), "SignatureDoesNotMatch");
    // An expired presigned URL.
    let cfg = aws_sdk_s3::presigning::PresigningConfig::builder()
        .expires_in(Duration::from_secs(1))
        .build()
        .unwrap();
    let pre = c
        .get_object()
        .bucket("bad")
        .key("keep")
        .presigned(cfg)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let uri: http::Uri = pre.uri().parse().unwrap();
    let resp = common::raw(
        r.addr,
        &format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            uri.path_and_query().unwrap().as_str(),
            r.addr
        ),
    );
    assert_eq!(resp.status, 403, "{}", resp.body_text());
    assert_eq!(resp.code(), "AccessDenied");
    // Garbage on the socket.
    let mut s = TcpStream::connect(r.addr).unwrap();
    s.write_all(b"\x00\x01\x02 not http\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"),
        "{answer:?}"
    );
    still_intact(&r, &c, &keep).await;
}

/// An `aws-chunked` body with per-chunk signatures, as SigV4 streaming clients send it.
fn chunked_upload(
    addr: SocketAddr,
    key: &str,
    data: &[u8],
    chunk: usize,
    tamper: bool,
) -> RawResponse {
    let s = signer();
    let date = sigv4::now_amz_date();
    let host = addr.to_string();
    let path = format!("/bad/{key}");
    // Encoded length: each chunk is "hex;chunk-signature=<64>\r\n" + data + "\r\n".
    let frame = |n: usize| format!("{n:x};chunk-signature=").len() + 64 + 2 + n + 2;
    let mut encoded_len: usize = data.chunks(chunk).map(|c| frame(c.len())).sum();
    encoded_len += frame(0);
    let headers = vec![
        ("host", host.clone()),
        ("content-encoding", "aws-chunked".to_owned()),
        ("content-length", encoded_len.to_string()),
        ("x-amz-decoded-content-length", data.len().to_string()),
    ];
    let signed = s.sign(
        "PUT",
        &path,
        "",
        &headers,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        &date,
    );
    let seed = signed
        .iter()
        .find(|(k, _)| k == "authorization")
        .and_then(|(_, v)| v.rsplit("Signature=").next())
        .unwrap()
        .to_owned();
    let mut req = format!("PUT {path} HTTP/1.1\r\n");
    for (k, v) in headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain(signed)
    {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    let body_start = bytes.len();
    let mut previous = seed;
    let mut pieces: Vec<&[u8]> = data.chunks(chunk).collect();
    pieces.push(b"");
    for (i, piece) in pieces.iter().enumerate() {
        let sig = s.chunk_signature(&date, &previous, piece);
        bytes.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", piece.len()).as_bytes());
        let start = bytes.len();
        bytes.extend_from_slice(piece);
        if tamper && i == 1 {
            bytes[start] ^= 0xff;
        }
        bytes.extend_from_slice(b"\r\n");
        previous = sig;
    }
    assert_eq!(bytes.len() - body_start, encoded_len);
    common::raw_bytes(addr, &bytes)
}

#[tokio::test]
async fn signed_streaming_chunks_are_verified() {
    let (r, c, keep) = setup().await;
    let data = pattern(200_000, 9);
    let resp = chunked_upload(r.addr, "chunked", &data, 64 * 1024, false);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let got = c
        .get_object()
        .bucket("bad")
        .key("chunked")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        &data[..]
    );
    // A chunk altered in flight fails its signature; nothing becomes visible.
    let resp = chunked_upload(r.addr, "tampered", &data, 64 * 1024, true);
    assert!(
        resp.status >= 400 && resp.status < 500,
        "{} {}",
        resp.status,
        resp.body_text()
    );
    assert!(
        c.head_object()
            .bucket("bad")
            .key("tampered")
            .send()
            .await
            .is_err()
    );
    still_intact(&r, &c, &keep).await;
}

#[tokio::test]
async fn malformed_subresource_xml_changes_nothing() {
    let (r, c, keep) = setup().await;
    let rows: Vec<(&str, &str, &[u8], &str)> = vec![
        (
            "/bad",
            "versioning=",
            b"<VersioningConfiguration><Status>",
            "MalformedXML",
        ),
        (
            "/bad",
            "versioning=",
            b"<VersioningConfiguration><Status>Sometimes</Status></VersioningConfiguration>",
            "MalformedXML",
        ),
        (
            "/bad/keep",
            "tagging=",
            b"<Tagging><TagSet><Tag>",
            "MalformedXML",
        ),
        ("/bad", "tagging=", b"garbage", "MalformedXML"),
        (
            "/bad/keep",
            "retention=",
            b"<Retention><Mode>",
            "MalformedXML",
        ),
        (
            "/bad",
            "object-lock=",
            b"<ObjectLockConfiguration>",
            "MalformedXML",
        ),
        ("/bad/keep", "legal-hold=", b"<LegalHold>", "MalformedXML"),
        (
            "/bad/keep",
            "tagging=",
            b"<Tagging><TagSet><Tag><Key>aws:x</Key><Value>v</Value></Tag></TagSet></Tagging>",
            "InvalidTag",
        ),
        (
            "/bad",
            "lifecycle=",
            b"<LifecycleConfiguration><Rule><ID>x</ID>",
            "MalformedXML",
        ),
        (
            "/bad",
            "lifecycle=",
            b"<LifecycleConfiguration><Rule><ID>x</ID><Filter><Prefix></Prefix></Filter>\
              <Status>Enabled</Status><Expiration><Days>-3</Days></Expiration></Rule>\
              </LifecycleConfiguration>",
            "InvalidArgument",
        ),
        (
            "/bad",
            "cors=",
            b"<CORSConfiguration><CORSRule>",
            "MalformedXML",
        ),
        (
            "/bad",
            "cors=",
            b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>\
              <AllowedMethod>PATCH</AllowedMethod></CORSRule></CORSConfiguration>",
            "InvalidRequest",
        ),
        (
            "/bad",
            "notification=",
            b"<NotificationConfiguration><QueueConfiguration>",
            "MalformedXML",
        ),
        (
            "/bad",
            "notification=",
            b"<NotificationConfiguration><QueueConfiguration><Id>q</Id>\
              <Queue>arn:aws:sqs:us-east-1:000000000000:nowhere</Queue>\
              <Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>",
            "InvalidArgument",
        ),
    ];
    for (path, query, body, code) in rows {
        let resp = send(r.addr, "PUT", path, query, body);
        assert_eq!(resp.status, 400, "{path}?{query}: {}", resp.body_text());
        assert_eq!(resp.code(), code, "{path}?{query}");
    }
    // Nothing changed: never versioned, no tags, object intact.
    let v = c
        .get_bucket_versioning()
        .bucket("bad")
        .send()
        .await
        .unwrap();
    assert!(v.status().is_none());
    let t = c
        .get_object_tagging()
        .bucket("bad")
        .key("keep")
        .send()
        .await
        .unwrap();
    assert!(t.tag_set().is_empty());
    assert!(
        c.get_bucket_lifecycle_configuration()
            .bucket("bad")
            .send()
            .await
            .is_err()
    );
    assert!(c.get_bucket_cors().bucket("bad").send().await.is_err());
    let n = c
        .get_bucket_notification_configuration()
        .bucket("bad")
        .send()
        .await
        .unwrap();
    assert!(n.queue_configurations().is_empty() && n.topic_configurations().is_empty());
    still_intact(&r, &c, &keep).await;
}

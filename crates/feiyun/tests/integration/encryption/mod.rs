//! Encryption at rest through aws-sdk-s3 against the real binary: every mode (the SSE-S3
//! default, SSE-KMS under a customer key, SSE-C) × single PUT, multipart, inline objects,
//! copies between modes and Range GETs across frame boundaries; no plaintext anywhere in
//! the data directory; swapped frames and a wrong master key refused; key rotation keeps
//! objects readable, a disabled key stops them and a deleted key erases them; bucket
//! default encryption; bad SSE input.

use crate::common;

use crate::common::{ACCESS_KEY, Region, SECRET_KEY, kms, md5_hex};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

mod defaults;
mod kms_keys;
mod master_key;
mod modes;

pub(super) const FRAME: usize = 64 * 1024;
pub(super) const MARKER: &[u8] = b"FEIYUN-SECRET-MARKER-";

/// `len` bytes of the marker repeated, so any plaintext fragment on disk is findable.
pub(super) fn secret(len: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(len).collect()
}

/// One IAM query call as root; returns the XML body (asserting success).
pub(super) fn iam(r: &Region, params: &[(&str, &str)]) -> String {
    let resp = common::query_call(
        r.addr,
        (ACCESS_KEY, SECRET_KEY),
        "iam",
        "2010-05-08",
        params,
    );
    assert_eq!(resp.status, 200, "{params:?}: {}", resp.body_text());
    resp.body_text()
}

pub(super) fn xml_field(xml: &str, tag: &str) -> String {
    xml.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|s| s.split(&format!("</{tag}>")).next())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        .to_owned()
}

/// Creates a customer key; returns its ARN.
pub(super) fn create_key(r: &Region) -> String {
    let (status, out) = kms(r, "CreateKey", serde_json::json!({"Description": "test"}));
    assert_eq!(status, 200, "{out}");
    out["KeyMetadata"]["Arn"].as_str().unwrap().to_owned()
}

#[derive(Clone)]
pub(super) enum Mode {
    /// No headers: the bucket default (SSE-S3 unless configured).
    Default,
    S3,
    Kms(String),
    Customer([u8; 32]),
}

pub(super) struct CustomerHeaders {
    pub(super) key: String,
    pub(super) md5: String,
}

pub(super) fn customer(k: &[u8; 32]) -> CustomerHeaders {
    CustomerHeaders {
        key: B64.encode(k),
        md5: B64.encode(md5::Md5::digest(k)),
    }
}

use md5::Digest as _;

pub(super) async fn put(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    data: &[u8],
    mode: &Mode,
) -> String {
    let mut p = c
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data.to_vec()));
    p = match mode {
        Mode::Default => p,
        Mode::S3 => p.server_side_encryption(ServerSideEncryption::Aes256),
        Mode::Kms(arn) => p
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(arn),
        Mode::Customer(k) => {
            let h = customer(k);
            p.sse_customer_algorithm("AES256")
                .sse_customer_key(h.key)
                .sse_customer_key_md5(h.md5)
        }
    };
    let out = p.send().await.unwrap_or_else(|e| panic!("{key}: {e:?}"));
    match mode {
        Mode::Default | Mode::S3 => {
            assert_eq!(
                out.server_side_encryption(),
                Some(&ServerSideEncryption::Aes256)
            );
            assert_eq!(out.e_tag().unwrap().trim_matches('"'), md5_hex(data));
        }
        Mode::Kms(arn) => {
            assert_eq!(
                out.server_side_encryption(),
                Some(&ServerSideEncryption::AwsKms)
            );
            assert_eq!(out.ssekms_key_id(), Some(arn.as_str()));
            // S3's SSE-KMS ETags are not the MD5 of the content.
            assert_ne!(out.e_tag().unwrap().trim_matches('"'), md5_hex(data));
        }
        Mode::Customer(k) => {
            assert_eq!(out.server_side_encryption(), None);
            assert_eq!(out.sse_customer_algorithm(), Some("AES256"));
            assert_eq!(out.sse_customer_key_md5(), Some(customer(k).md5.as_str()));
            assert_ne!(out.e_tag().unwrap().trim_matches('"'), md5_hex(data));
        }
    }
    out.e_tag().unwrap().to_owned()
}

/// The error code of a one-byte SSE-KMS PUT under `key_id`, which must be refused.
pub(super) async fn kms_put_refusal(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    key_id: &str,
) -> Option<String> {
    let e = c
        .put_object()
        .bucket(bucket)
        .key(key)
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(key_id)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("an SSE-KMS PUT that must be refused");
    e.code().map(str::to_owned)
}

/// GETs `[range]` of an object; `Err` is the S3 error code (or status).
pub(super) async fn get(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    range: Option<(usize, usize)>,
    key32: Option<&[u8; 32]>,
) -> Result<Vec<u8>, String> {
    let mut g = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_range(range.map(|(a, b)| format!("bytes={a}-{b}")));
    if let Some(k) = key32 {
        let h = customer(k);
        g = g
            .sse_customer_algorithm("AES256")
            .sse_customer_key(h.key)
            .sse_customer_key_md5(h.md5);
    }
    match g.send().await {
        Ok(out) => out
            .body
            .collect()
            .await
            .map(|b| b.into_bytes().to_vec())
            .map_err(|e| format!("body: {e}")),
        Err(e) => Err(e
            .code()
            .map(str::to_owned)
            .or_else(|| e.raw_response().map(|r| r.status().as_u16().to_string()))
            .unwrap_or_else(|| format!("{e:?}"))),
    }
}

/// Asserts a read returned exactly `want`, without printing megabytes when it did not.
#[track_caller]
pub(super) fn same(got: Result<Vec<u8>, String>, want: &[u8]) {
    match got {
        Ok(g) if g == want => {}
        Ok(g) => {
            let at = g.iter().zip(want).position(|(a, b)| a != b);
            panic!(
                "got {} bytes, want {}; first difference at {at:?}",
                g.len(),
                want.len()
            );
        }
        Err(e) => panic!("read failed: {e}"),
    }
}

/// The error code of a read, or a short note of its success.
pub(super) fn outcome(got: Result<Vec<u8>, String>) -> String {
    match got {
        Ok(b) => format!("ok ({} bytes)", b.len()),
        Err(e) => e,
    }
}

pub(super) fn key_of(mode: &Mode) -> Option<&[u8; 32]> {
    match mode {
        Mode::Customer(k) => Some(k),
        _ => None,
    }
}

pub(super) async fn multipart(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    parts: &[Vec<u8>],
    mode: &Mode,
) {
    let mut create = c.create_multipart_upload().bucket(bucket).key(key);
    create = match mode {
        Mode::Default => create,
        Mode::S3 => create.server_side_encryption(ServerSideEncryption::Aes256),
        Mode::Kms(arn) => create
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(arn),
        Mode::Customer(k) => {
            let h = customer(k);
            create
                .sse_customer_algorithm("AES256")
                .sse_customer_key(h.key)
                .sse_customer_key_md5(h.md5)
        }
    };
    let id = create.send().await.unwrap().upload_id().unwrap().to_owned();
    let mut done = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let mut up = c
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data.clone()));
        if let Mode::Customer(k) = mode {
            // A part sent with another key is refused.
            let wrong = customer(&[0xEE; 32]);
            let refused = c
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .part_number(n)
                .sse_customer_algorithm("AES256")
                .sse_customer_key(wrong.key)
                .sse_customer_key_md5(wrong.md5)
                // Small: the refusal comes before the body is read.
                .body(ByteStream::from_static(b"wrong key"))
                .send()
                .await
                .expect_err("a part under another SSE-C key");
            assert_eq!(refused.code(), Some("AccessDenied"));
            let h = customer(k);
            up = up
                .sse_customer_algorithm("AES256")
                .sse_customer_key(h.key)
                .sse_customer_key_md5(h.md5);
        }
        let etag = up.send().await.unwrap().e_tag().unwrap().to_owned();
        done.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
    }
    c.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Every regular file under `dir` that contains the marker.
pub(super) fn files_with_marker(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(MARKER.len()).any(|w| w == MARKER) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

pub(super) fn blob_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir.join("blobs")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

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

const FRAME: usize = 64 * 1024;
const MARKER: &[u8] = b"FEIYUN-SECRET-MARKER-";

/// `len` bytes of the marker repeated, so any plaintext fragment on disk is findable.
fn secret(len: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(len).collect()
}

/// One IAM query call as root; returns the XML body (asserting success).
fn iam(r: &Region, params: &[(&str, &str)]) -> String {
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

fn xml_field(xml: &str, tag: &str) -> String {
    xml.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|s| s.split(&format!("</{tag}>")).next())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        .to_owned()
}

/// Creates a customer key; returns its ARN.
fn create_key(r: &Region) -> String {
    let (status, out) = kms(r, "CreateKey", serde_json::json!({"Description": "test"}));
    assert_eq!(status, 200, "{out}");
    out["KeyMetadata"]["Arn"].as_str().unwrap().to_owned()
}

#[derive(Clone)]
enum Mode {
    /// No headers: the bucket default (SSE-S3 unless configured).
    Default,
    S3,
    Kms(String),
    Customer([u8; 32]),
}

struct CustomerHeaders {
    key: String,
    md5: String,
}

fn customer(k: &[u8; 32]) -> CustomerHeaders {
    CustomerHeaders {
        key: B64.encode(k),
        md5: B64.encode(md5::Md5::digest(k)),
    }
}

use md5::Digest as _;

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, data: &[u8], mode: &Mode) -> String {
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
async fn kms_put_refusal(
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
async fn get(
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
fn same(got: Result<Vec<u8>, String>, want: &[u8]) {
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
fn outcome(got: Result<Vec<u8>, String>) -> String {
    match got {
        Ok(b) => format!("ok ({} bytes)", b.len()),
        Err(e) => e,
    }
}

fn key_of(mode: &Mode) -> Option<&[u8; 32]> {
    match mode {
        Mode::Customer(k) => Some(k),
        _ => None,
    }
}

async fn multipart(
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
fn files_with_marker(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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

#[tokio::test]
async fn every_mode_round_trips_and_no_plaintext_reaches_the_disk() {
    let mut r = Region::start_env(&[("FEIYUN_SSE_C_OVER_HTTP", "true")]);
    let c = r.client();
    c.create_bucket().bucket("enc").send().await.unwrap();
    let arn = create_key(&r);
    let modes = [
        ("default", Mode::Default),
        ("s3", Mode::S3),
        ("kms", Mode::Kms(arn.clone())),
        ("c", Mode::Customer([0x42; 32])),
    ];
    let big = secret(3 * FRAME + 1234);
    let small = secret(2000);
    let parts = vec![secret(5 * 1024 * 1024), secret(FRAME + 7)];
    for (name, mode) in &modes {
        put(&c, "enc", &format!("{name}/big"), &big, mode).await;
        put(&c, "enc", &format!("{name}/small"), &small, mode).await;
        multipart(&c, "enc", &format!("{name}/multi"), &parts, mode).await;
        let k = key_of(mode);
        same(get(&c, "enc", &format!("{name}/big"), None, k).await, &big);
        same(
            get(&c, "enc", &format!("{name}/small"), None, k).await,
            &small,
        );
        // Ranges that end and start exactly at frame boundaries, span several frames, and
        // cross from one part into the next.
        for (a, b) in [
            (0, FRAME - 1),
            (FRAME - 1, FRAME),
            (FRAME, 2 * FRAME - 1),
            (FRAME - 5, 3 * FRAME + 5),
            (3 * FRAME, big.len() - 1),
            (100, 100),
        ] {
            let got = get(&c, "enc", &format!("{name}/big"), Some((a, b)), k).await;
            same(got, &big[a..=b]);
        }
        let whole: Vec<u8> = parts.concat();
        let edge = parts[0].len();
        let got = get(
            &c,
            "enc",
            &format!("{name}/multi"),
            Some((edge - 3, edge + FRAME)),
            k,
        )
        .await;
        same(got, &whole[edge - 3..=edge + FRAME]);
        same(
            get(&c, "enc", &format!("{name}/multi"), None, k).await,
            &whole,
        );
        let head = c.head_object().bucket("enc").key(format!("{name}/multi"));
        let head = match mode {
            Mode::Customer(key) => {
                let h = customer(key);
                head.sse_customer_algorithm("AES256")
                    .sse_customer_key(h.key)
                    .sse_customer_key_md5(h.md5)
            }
            _ => head,
        };
        let head = head.send().await.unwrap();
        match mode {
            Mode::Kms(a) => assert_eq!(head.ssekms_key_id(), Some(a.as_str())),
            Mode::Customer(_) => assert_eq!(head.sse_customer_algorithm(), Some("AES256")),
            _ => assert_eq!(
                head.server_side_encryption(),
                Some(&ServerSideEncryption::Aes256)
            ),
        }
    }

    // Copies between modes: SSE-KMS → SSE-C, SSE-C → SSE-S3, SSE-S3 → SSE-KMS in place.
    let ck = customer(&[0x42; 32]);
    let other = customer(&[0x17; 32]);
    let out = c
        .copy_object()
        .bucket("enc")
        .key("copied/c")
        .copy_source("enc/kms/big")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(other.key.clone())
        .sse_customer_key_md5(other.md5.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.sse_customer_key_md5(), Some(other.md5.as_str()));
    same(
        get(&c, "enc", "copied/c", None, Some(&[0x17; 32])).await,
        &big,
    );
    let refused = c
        .copy_object()
        .bucket("enc")
        .key("copied/s3")
        .copy_source("enc/c/big")
        .send()
        .await
        .expect_err("an SSE-C source without its key");
    assert_eq!(refused.code(), Some("InvalidRequest"));
    c.copy_object()
        .bucket("enc")
        .key("copied/s3")
        .copy_source("enc/c/big")
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(ck.key.clone())
        .copy_source_sse_customer_key_md5(ck.md5.clone())
        .server_side_encryption(ServerSideEncryption::Aes256)
        .send()
        .await
        .unwrap();
    same(get(&c, "enc", "copied/s3", None, None).await, &big);
    let out = c
        .copy_object()
        .bucket("enc")
        .key("s3/big")
        .copy_source("enc/s3/big")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(out.ssekms_key_id(), Some(arn.as_str()));
    let head = c
        .head_object()
        .bucket("enc")
        .key("s3/big")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    same(get(&c, "enc", "s3/big", None, None).await, &big);

    // Nothing the clients sent is readable in the data directory: not in blob files, not
    // in the metadata store (inline objects), not in the audit log.
    r.terminate();
    let hits = files_with_marker(&r.data_dir);
    assert!(hits.is_empty(), "plaintext found in {hits:?}");
}

#[tokio::test]
async fn sse_c_keys_are_checked_as_s3_checks_them() {
    let r = Region::start_env(&[("FEIYUN_SSE_C_OVER_HTTP", "true")]);
    let c = r.client();
    c.create_bucket().bucket("ssec").send().await.unwrap();
    let key = [0x33; 32];
    let data = secret(200_000);
    put(&c, "ssec", "obj", &data, &Mode::Customer(key)).await;
    put(&c, "ssec", "plain", &data, &Mode::S3).await;
    same(get(&c, "ssec", "obj", None, Some(&key)).await, &data);
    assert_eq!(
        outcome(get(&c, "ssec", "obj", None, Some(&[0x34; 32])).await),
        "AccessDenied"
    );
    assert_eq!(
        outcome(get(&c, "ssec", "obj", None, None).await),
        "InvalidRequest"
    );
    assert_eq!(
        outcome(get(&c, "ssec", "plain", None, Some(&key)).await),
        "InvalidRequest"
    );
    let head = c.head_object().bucket("ssec").key("obj").send().await;
    assert_eq!(
        head.expect_err("HEAD without the key")
            .raw_response()
            .map(|r| r.status().as_u16()),
        Some(400)
    );

    let h = customer(&key);
    let bad = |alg: &str, k: String, md5: String| {
        c.put_object()
            .bucket("ssec")
            .key("bad")
            .sse_customer_algorithm(alg)
            .sse_customer_key(k)
            .sse_customer_key_md5(md5)
            .body(ByteStream::from_static(b"x"))
            .send()
    };
    let e = bad("AES256", h.key.clone(), B64.encode([0u8; 16]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidArgument"), "bad MD5");
    let short = [1u8; 16];
    let e = bad(
        "AES256",
        B64.encode(short),
        B64.encode(md5::Md5::digest(short)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some("InvalidArgument"), "128-bit key");
    let e = bad("AES128", h.key.clone(), h.md5.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidEncryptionAlgorithmError"));
    let e = c
        .put_object()
        .bucket("ssec")
        .key("bad")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(h.key.clone())
        .sse_customer_key_md5(h.md5.clone())
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidArgument"), "SSE-C with AES256");
    let e = c
        .head_object()
        .bucket("ssec")
        .key("bad")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.raw_response().map(|r| r.status().as_u16()),
        Some(404),
        "nothing stored"
    );

    // Without the test switch, SSE-C over plain HTTP is refused, as S3 refuses it.
    let strict = Region::start();
    let sc = strict.client();
    sc.create_bucket().bucket("ssec").send().await.unwrap();
    let e = sc
        .put_object()
        .bucket("ssec")
        .key("k")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(h.key.clone())
        .sse_customer_key_md5(h.md5.clone())
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidRequest"));
}

#[tokio::test]
async fn kms_key_states_govern_the_objects_under_them() {
    // One "day" is a second, so a key's 7-day deletion window passes in 7 seconds.
    let r = Region::start_env(&[("FEIYUN_LIFECYCLE_DAY_SECS", "1")]);
    let c = r.client();
    c.create_bucket().bucket("keys").send().await.unwrap();
    let arn = create_key(&r);
    let data = secret(3 * FRAME);
    let small = secret(100);
    put(&c, "keys", "before", &data, &Mode::Kms(arn.clone())).await;
    put(&c, "keys", "small", &small, &Mode::Kms(arn.clone())).await;

    // Rotation: old objects keep opening (their data keys name the old key version), new
    // ones use the new version, and no object data was rewritten.
    let blobs_before = blob_files(&r.data_dir);
    let (s, out) = kms(&r, "RotateKeyOnDemand", serde_json::json!({"KeyId": arn}));
    assert_eq!(s, 200, "{out}");
    put(&c, "keys", "after", &data, &Mode::Kms(arn.clone())).await;
    same(get(&c, "keys", "before", None, None).await, &data);
    same(get(&c, "keys", "after", None, None).await, &data);
    let blobs_after = blob_files(&r.data_dir);
    assert!(
        blobs_before.iter().all(|b| blobs_after.contains(b)),
        "rotation rewrote data"
    );

    // Disabled: reads and writes under the key fail with KMS's error; enabling restores.
    let (s, _) = kms(&r, "DisableKey", serde_json::json!({"KeyId": arn}));
    assert_eq!(s, 200);
    assert_eq!(
        outcome(get(&c, "keys", "before", None, None).await),
        "KMS.DisabledException"
    );
    assert_eq!(
        kms_put_refusal(&c, "keys", "refused", &arn)
            .await
            .as_deref(),
        Some("KMS.DisabledException")
    );
    let (s, _) = kms(&r, "EnableKey", serde_json::json!({"KeyId": arn}));
    assert_eq!(s, 200);
    same(get(&c, "keys", "small", None, None).await, &small);

    // Unknown keys are refused before any data is stored.
    assert_eq!(
        kms_put_refusal(&c, "keys", "refused", "alias/no-such-key")
            .await
            .as_deref(),
        Some("KMS.NotFoundException")
    );

    // Deletion: pending → unreadable with KMSInvalidStateException; after the waiting
    // period the key material is gone and so is every object under it.
    let (s, out) = kms(
        &r,
        "ScheduleKeyDeletion",
        serde_json::json!({"KeyId": arn, "PendingWindowInDays": 7}),
    );
    assert_eq!(s, 200, "{out}");
    assert_eq!(
        outcome(get(&c, "keys", "before", None, None).await),
        "KMS.KMSInvalidStateException"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got = get(&c, "keys", "small", None, None).await;
        if outcome(got.clone()) == "KMS.NotFoundException" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "key never purged: {}",
            outcome(got)
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(
        outcome(get(&c, "keys", "before", None, None).await),
        "KMS.NotFoundException"
    );
    assert_eq!(
        outcome(get(&c, "keys", "after", None, None).await),
        "KMS.NotFoundException"
    );
}

/// Rotation re-wraps every data key under the key's new version in the background, without
/// rewriting object data; the dependents report names the buckets and counts the versions
/// (current and noncurrent, blob and inline) a key protects, and how many are still stale.
#[tokio::test]
async fn rotation_rewraps_data_keys_and_dependents_are_reported() {
    let r = Region::start_env(&[("FEIYUN_LIFECYCLE_INTERVAL_SECS", "1")]);
    let c = r.client();
    let arn = create_key(&r);
    for b in ["deps", "other"] {
        c.create_bucket().bucket(b).send().await.unwrap();
    }
    c.put_bucket_versioning()
        .bucket("deps")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    c.put_bucket_encryption()
        .bucket("deps")
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::AwsKms)
                                .kms_master_key_id(&arn)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let big = secret(3 * FRAME + 5);
    let small = secret(300);
    // Two versions of "big" (one noncurrent), one inline object, and an SSE-S3 object that
    // does not count.
    let kms_mode = Mode::Kms(arn.clone());
    put(&c, "deps", "big", &secret(2 * FRAME), &kms_mode).await;
    put(&c, "deps", "big", &big, &kms_mode).await;
    put(&c, "deps", "small", &small, &kms_mode).await;
    put(&c, "deps", "s3", &small, &Mode::S3).await;
    put(&c, "other", "x", &small, &Mode::S3).await;
    let deps = |r: &Region| {
        let (s, out) = kms(
            r,
            "FeiyunListKeyDependents",
            serde_json::json!({"KeyId": arn}),
        );
        assert_eq!(s, 200, "{out}");
        out["Buckets"].as_array().unwrap().clone()
    };
    let found = deps(&r);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["Bucket"], "deps");
    assert_eq!(found[0]["BucketDefault"], true);
    assert_eq!(found[0]["Versions"], 3);
    assert_eq!(
        found[0]["Bytes"],
        (2 * FRAME + big.len() + small.len()) as u64
    );
    assert_eq!(found[0]["StaleVersions"], 0);

    let files = |dir: &std::path::Path| {
        let mut v: Vec<_> = blob_files(dir)
            .into_iter()
            .map(|p| {
                let m = std::fs::metadata(&p).unwrap();
                (p, m.len(), m.modified().unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let before = files(&r.data_dir);
    let (s, out) = kms(&r, "RotateKeyOnDemand", serde_json::json!({"KeyId": arn}));
    assert_eq!(s, 200, "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let found = deps(&r);
        if found[0]["StaleVersions"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never re-wrapped: {found:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(
        files(&r.data_dir),
        before,
        "re-wrapping rewrote object data"
    );
    same(get(&c, "deps", "big", None, None).await, &big);
    same(get(&c, "deps", "small", None, None).await, &small);
    let versions = c
        .list_object_versions()
        .bucket("deps")
        .prefix("big")
        .send()
        .await
        .unwrap();
    let old = versions
        .versions()
        .iter()
        .find(|v| v.is_latest() == Some(false))
        .and_then(|v| v.version_id())
        .unwrap()
        .to_owned();
    let old_body = c
        .get_object()
        .bucket("deps")
        .key("big")
        .version_id(old)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(
        old_body.as_ref() == secret(2 * FRAME).as_slice(),
        "noncurrent version"
    );
}

fn blob_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir.join("blobs")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[tokio::test]
async fn bucket_default_encryption() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("dflt").send().await.unwrap();
    let rule_of = |out: aws_sdk_s3::operation::get_bucket_encryption::GetBucketEncryptionOutput| {
        let d = out.server_side_encryption_configuration().unwrap().rules()[0]
            .apply_server_side_encryption_by_default()
            .unwrap()
            .clone();
        (
            d.sse_algorithm().clone(),
            d.kms_master_key_id().map(str::to_owned),
        )
    };
    // New buckets encrypt with SSE-S3, and say so.
    let out = c
        .get_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    assert_eq!(rule_of(out), (ServerSideEncryption::Aes256, None));

    let arn = create_key(&r);
    let (s, _) = kms(
        &r,
        "CreateAlias",
        serde_json::json!({"AliasName": "alias/bucket-key", "TargetKeyId": arn}),
    );
    assert_eq!(s, 200);
    let config = |alg: ServerSideEncryption, key: Option<&str>| {
        ServerSideEncryptionConfiguration::builder()
            .rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(
                        ServerSideEncryptionByDefault::builder()
                            .sse_algorithm(alg)
                            .set_kms_master_key_id(key.map(str::to_owned))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build()
            .unwrap()
    };
    c.put_bucket_encryption()
        .bucket("dflt")
        .server_side_encryption_configuration(config(
            ServerSideEncryption::AwsKms,
            Some("alias/bucket-key"),
        ))
        .send()
        .await
        .unwrap();
    let out = c
        .get_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rule_of(out),
        (ServerSideEncryption::AwsKms, Some(arn.clone()))
    );
    // A PUT without headers now lands under the bucket's key.
    let data = secret(100_000);
    put(&c, "dflt", "k", &data, &Mode::Kms(arn.clone())).await;
    let out = c
        .put_object()
        .bucket("dflt")
        .key("no-headers")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.ssekms_key_id(), Some(arn.as_str()));
    same(get(&c, "dflt", "no-headers", None, None).await, &data);
    // aws:kms without a key id uses the account's aws/s3 key, made on first use.
    c.put_bucket_encryption()
        .bucket("dflt")
        .server_side_encryption_configuration(config(ServerSideEncryption::AwsKms, None))
        .send()
        .await
        .unwrap();
    let out = c
        .put_object()
        .bucket("dflt")
        .key("managed")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let managed = out.ssekms_key_id().unwrap().to_owned();
    assert_ne!(managed, arn);
    let (s, aliases) = kms(&r, "ListAliases", serde_json::json!({}));
    assert_eq!(s, 200);
    assert!(aliases.to_string().contains("alias/aws/s3"), "{aliases}");
    same(get(&c, "dflt", "managed", None, None).await, &data);

    // Unknown keys and unsupported algorithms are refused, and nothing changes.
    let e = c
        .put_bucket_encryption()
        .bucket("dflt")
        .server_side_encryption_configuration(config(
            ServerSideEncryption::AwsKms,
            Some("alias/missing"),
        ))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("KMS.NotFoundException"));
    let e = c
        .put_bucket_encryption()
        .bucket("dflt")
        .server_side_encryption_configuration(config(ServerSideEncryption::AwsKmsDsse, None))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidArgument"));
    let out = c
        .get_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    assert_eq!(rule_of(out).0, ServerSideEncryption::AwsKms);

    // Delete returns the bucket to SSE-S3.
    c.delete_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    let out = c
        .get_bucket_encryption()
        .bucket("dflt")
        .send()
        .await
        .unwrap();
    assert_eq!(rule_of(out), (ServerSideEncryption::Aes256, None));
    put(&c, "dflt", "back", &data, &Mode::Default).await;
    let e = c
        .get_bucket_encryption()
        .bucket("missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("NoSuchBucket"));
}

/// A generated master key lost (a power cut before its directory entry was synced, a
/// careless copy): the next start refuses instead of generating a new key over the data.
#[tokio::test]
async fn a_missing_generated_master_key_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        // No FEIYUN_MASTER_KEY: the region generates master.key beside the data.
        let mut r = Region::start_with(dir.path(), &[("FEIYUN_MASTER_KEY", "")]);
        let c = r.client();
        c.create_bucket().bucket("kept").send().await.unwrap();
        put(&c, "kept", "obj", &secret(100), &Mode::S3).await;
        r.terminate();
    }
    let key = dir.path().join("master.key");
    let text = std::fs::read(&key).expect("a generated master.key");
    std::fs::remove_file(&key).unwrap();
    let said = Region::start_refused(dir.path(), &[("FEIYUN_MASTER_KEY", "")]);
    assert!(said.contains("master.key is missing"), "{said}");
    assert!(!key.exists(), "a new key was generated over the data");
    // With the key back, everything opens again.
    std::fs::write(&key, text).unwrap();
    let r = Region::start_with(dir.path(), &[("FEIYUN_MASTER_KEY", "")]);
    let got = get(&r.client(), "kept", "obj", None, None).await;
    assert_eq!(outcome(got), "ok (100 bytes)");
}

#[tokio::test]
async fn swapped_frames_and_a_wrong_master_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = secret(4 * FRAME);
    {
        let mut r = Region::start_in(dir.path());
        let c = r.client();
        c.create_bucket().bucket("tamper").send().await.unwrap();
        put(&c, "tamper", "obj", &data, &Mode::S3).await;
        put(&c, "tamper", "inline", &secret(100), &Mode::S3).await;
        r.terminate();
    }
    // The data directory with another master key (a stolen disk, a mistyped key): the
    // region refuses to start rather than serve errors or seal new data under it.
    {
        let other = B64.encode([9u8; 32]);
        let said = Region::start_refused(dir.path(), &[("FEIYUN_MASTER_KEY", other.as_str())]);
        assert!(said.contains("not the one that sealed"), "{said}");
    }
    // Frames 1 and 2 swapped on disk: the right key, the wrong order — refused.
    let [file] = blob_files(dir.path()).try_into().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let (h, f) = (16, FRAME + 16);
    let (a, b) = bytes[h + f..h + 3 * f].split_at_mut(f);
    a.swap_with_slice(b);
    std::fs::write(&file, &bytes).unwrap();
    let r = Region::start_in(dir.path());
    let c = r.client();
    same(
        get(&c, "tamper", "obj", Some((0, 100)), None).await,
        &data[..=100],
    );
    assert!(
        get(&c, "tamper", "obj", Some((FRAME, FRAME + 10)), None)
            .await
            .is_err()
    );
    assert!(get(&c, "tamper", "obj", None, None).await.is_err());
}

/// A region told to store plaintext (disks that encrypt already) writes plaintext, says
/// its buckets have no default, and still encrypts what a request or bucket asks for.
#[tokio::test]
async fn a_plaintext_region_encrypts_only_on_request() {
    let mut r = Region::start_env(&[("FEIYUN_ENCRYPT_AT_REST", "false")]);
    let c = r.client();
    c.create_bucket()
        .bucket("plain-region")
        .send()
        .await
        .unwrap();
    let e = c
        .get_bucket_encryption()
        .bucket("plain-region")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some("ServerSideEncryptionConfigurationNotFoundError")
    );
    let data = secret(100_000);
    let out = c
        .put_object()
        .bucket("plain-region")
        .key("plain")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.server_side_encryption(), None);
    put(&c, "plain-region", "asked", &secret(100_000), &Mode::S3).await;
    same(get(&c, "plain-region", "plain", None, None).await, &data);
    r.terminate();
    // Exactly one blob holds readable bytes: the one nobody asked to encrypt.
    let hits = files_with_marker(&r.data_dir);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].starts_with(r.data_dir.join("blobs")));
}

/// S3 uses a KMS key as the caller: writing under it takes kms:GenerateDataKey and reading
/// kms:Decrypt on the key, besides the S3 permission; SSE-S3 needs neither.
#[tokio::test]
async fn sse_kms_needs_the_callers_kms_permissions() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("perm").send().await.unwrap();
    let arn = create_key(&r);
    let data = secret(200_000);
    put(&c, "perm", "by-root", &data, &Mode::Kms(arn.clone())).await;
    iam(&r, &[("Action", "CreateUser"), ("UserName", "writer")]);
    let s3_only =
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#;
    iam(
        &r,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "writer"),
            ("PolicyName", "s3"),
            ("PolicyDocument", s3_only),
        ],
    );
    let k = iam(&r, &[("Action", "CreateAccessKey"), ("UserName", "writer")]);
    let user = common::client_for(
        &r.endpoint(),
        &xml_field(&k, "AccessKeyId"),
        &xml_field(&k, "SecretAccessKey"),
    );
    put(&user, "perm", "sse-s3", &data, &Mode::S3).await;
    same(get(&user, "perm", "sse-s3", None, None).await, &data);
    assert_eq!(
        kms_put_refusal(&user, "perm", "kms", &arn).await.as_deref(),
        Some("AccessDenied"),
        "write without kms:GenerateDataKey"
    );
    assert_eq!(
        outcome(get(&user, "perm", "by-root", None, None).await),
        "AccessDenied",
        "read without kms:Decrypt"
    );
    let with_kms = format!(
        r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Action":["kms:GenerateDataKey","kms:Decrypt"],"Resource":"{arn}"}}}}"#
    );
    iam(
        &r,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "writer"),
            ("PolicyName", "kms"),
            ("PolicyDocument", &with_kms),
        ],
    );
    put(&user, "perm", "kms", &data, &Mode::Kms(arn.clone())).await;
    same(get(&user, "perm", "by-root", None, None).await, &data);
    same(get(&user, "perm", "kms", None, None).await, &data);
}

#[test]
fn kms_helper_reports_errors() {
    let r = Region::start();
    let (s, out) = kms(
        &r,
        "DescribeKey",
        serde_json::json!({"KeyId": "alias/none"}),
    );
    assert_eq!(s, 400);
    assert_eq!(out["__type"], "NotFoundException");
}

//! Every mode (SSE-S3, SSE-KMS, SSE-C) through every write path, and SSE-C keys checked as S3 checks them.

use super::*;

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

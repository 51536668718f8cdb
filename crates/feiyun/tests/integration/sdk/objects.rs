//! Objects through aws-sdk-s3: PUT and GET with metadata, checksums, ranges and conditions,
//! copies, awkward keys, and a read that outlives an overwrite.

use super::*;

#[tokio::test]
async fn put_get_small_and_large_with_metadata() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("bk1").send().await.unwrap();
    // Inline (small), just over the inline threshold, and multi-frame.
    for (i, len) in [0usize, 1, 4096, 64 * 1024 + 1, 3 * 1024 * 1024 + 17]
        .into_iter()
        .enumerate()
    {
        let data = pattern(len, i as u64);
        let key = format!("obj-{len}");
        let put = c
            .put_object()
            .bucket("bk1")
            .key(&key)
            .content_type("application/x-test")
            .cache_control("max-age=60")
            .content_disposition("attachment")
            .content_language("zh-CN")
            .content_encoding("identity")
            .expires(aws_sdk_s3::primitives::DateTime::from_secs(2_000_000_000))
            .metadata("color", "blue")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.e_tag(),
            Some(format!("\"{}\"", md5_hex(&data)).as_str())
        );
        let got = c
            .get_object()
            .bucket("bk1")
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_length(), Some(len as i64));
        assert_eq!(got.content_type(), Some("application/x-test"));
        assert_eq!(got.cache_control(), Some("max-age=60"));
        assert_eq!(got.content_disposition(), Some("attachment"));
        assert_eq!(got.content_language(), Some("zh-CN"));
        assert_eq!(got.content_encoding(), Some("identity"));
        assert_eq!(
            got.expires_string(),
            Some("Wed, 18 May 2033 03:33:20 GMT"),
            "Expires"
        );
        assert_eq!(
            got.metadata()
                .and_then(|m| m.get("color"))
                .map(String::as_str),
            Some("blue")
        );
        assert_eq!(got.e_tag(), put.e_tag());
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], &data[..], "len {len}");
        let head = c
            .head_object()
            .bucket("bk1")
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(len as i64));
    }
    assert_eq!(
        code_of(c.get_object().bucket("bk1").key("missing").send().await).await,
        "NoSuchKey"
    );
}

#[tokio::test]
async fn flexible_checksums_are_verified_and_returned() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("cks").send().await.unwrap();
    let data = pattern(200_000, 9);
    for alg in [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32C,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ] {
        let key = format!("k-{}", alg.as_str());
        let put = c
            .put_object()
            .bucket("cks")
            .key(&key)
            .checksum_algorithm(alg.clone())
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let got = c
            .get_object()
            .bucket("cks")
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let (sent, returned) = match alg {
            ChecksumAlgorithm::Crc32 => (put.checksum_crc32(), got.checksum_crc32()),
            ChecksumAlgorithm::Crc32C => (put.checksum_crc32_c(), got.checksum_crc32_c()),
            ChecksumAlgorithm::Crc64Nvme => (put.checksum_crc64_nvme(), got.checksum_crc64_nvme()),
            ChecksumAlgorithm::Sha1 => (put.checksum_sha1(), got.checksum_sha1()),
            _ => (put.checksum_sha256(), got.checksum_sha256()),
        };
        assert!(sent.is_some(), "{alg:?} missing in PUT response");
        assert_eq!(sent, returned, "{alg:?}");
        // The SDK validates the returned checksum against the body it reads.
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], &data[..]);
    }
    // A wrong checksum header is rejected and nothing is stored.
    let wrong = c
        .put_object()
        .bucket("cks")
        .key("wrong")
        .checksum_crc32("AAAAAA==")
        .body(ByteStream::from(data.clone()))
        .send()
        .await;
    assert_eq!(code_of(wrong).await, "BadDigest");
    let wrong_md5 = c
        .put_object()
        .bucket("cks")
        .key("wrong")
        .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
        .body(ByteStream::from_static(b"not empty"))
        .send()
        .await;
    assert_eq!(code_of(wrong_md5).await, "BadDigest");
    assert_eq!(
        code_of(c.head_object().bucket("cks").key("wrong").send().await).await,
        "NotFound"
    );
}

#[tokio::test]
async fn ranges_part_numbers_and_conditions() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("rng").send().await.unwrap();
    let data = pattern(300_000, 3);
    let put = c
        .put_object()
        .bucket("rng")
        .key("o")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_owned();
    for (range, lo, hi) in [
        ("bytes=0-0", 0, 1),
        ("bytes=65530-65545", 65530, 65546),
        ("bytes=299990-", 299990, 300000),
        ("bytes=-10", 299990, 300000),
        ("bytes=100-999999", 100, 300000),
    ] {
        let got = c
            .get_object()
            .bucket("rng")
            .key("o")
            .range(range)
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.content_range(),
            Some(format!("bytes {}-{}/300000", lo, hi - 1).as_str())
        );
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], &data[lo..hi], "{range}");
    }
    assert_eq!(
        code_of(
            c.get_object()
                .bucket("rng")
                .key("o")
                .range("bytes=300000-")
                .send()
                .await
        )
        .await,
        "InvalidRange"
    );
    let p1 = c
        .get_object()
        .bucket("rng")
        .key("o")
        .part_number(1)
        .send()
        .await
        .unwrap();
    assert_eq!(p1.content_length(), Some(300000));
    assert_eq!(
        code_of(
            c.get_object()
                .bucket("rng")
                .key("o")
                .part_number(2)
                .send()
                .await
        )
        .await,
        "InvalidRange"
    );
    // Conditionals.
    c.get_object()
        .bucket("rng")
        .key("o")
        .if_match(&etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code_of(
            c.get_object()
                .bucket("rng")
                .key("o")
                .if_match("\"nope\"")
                .send()
                .await
        )
        .await,
        "PreconditionFailed"
    );
    let not_modified = c
        .get_object()
        .bucket("rng")
        .key("o")
        .if_none_match(&etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        not_modified.raw_response().map(|r| r.status().as_u16()),
        Some(304)
    );
    let future = aws_sdk_s3::primitives::DateTime::from_secs(4_000_000_000);
    let past = aws_sdk_s3::primitives::DateTime::from_secs(1_000_000_000);
    assert_eq!(
        code_of(
            c.get_object()
                .bucket("rng")
                .key("o")
                .if_unmodified_since(past)
                .send()
                .await
        )
        .await,
        "PreconditionFailed"
    );
    let nm = c
        .get_object()
        .bucket("rng")
        .key("o")
        .if_modified_since(future)
        .send()
        .await
        .unwrap_err();
    assert_eq!(nm.raw_response().map(|r| r.status().as_u16()), Some(304));
    // response-* overrides.
    let ov = c
        .get_object()
        .bucket("rng")
        .key("o")
        .response_content_type("text/x-override")
        .response_content_disposition("inline; filename=x")
        .send()
        .await
        .unwrap();
    assert_eq!(ov.content_type(), Some("text/x-override"));
    assert_eq!(ov.content_disposition(), Some("inline; filename=x"));
}

#[tokio::test]
async fn copy_object_copy_and_replace() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("srcb").send().await.unwrap();
    c.create_bucket().bucket("dst").send().await.unwrap();
    let data = pattern(150_000, 5);
    c.put_object()
        .bucket("srcb")
        .key("a")
        .content_type("image/png")
        .metadata("m", "1")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let out = c
        .copy_object()
        .copy_source("srcb/a")
        .bucket("dst")
        .key("copied")
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.copy_object_result().and_then(|r| r.e_tag()),
        Some(format!("\"{}\"", md5_hex(&data)).as_str())
    );
    let head = c
        .head_object()
        .bucket("dst")
        .key("copied")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("image/png"));
    assert_eq!(
        head.metadata().and_then(|m| m.get("m")).map(String::as_str),
        Some("1")
    );
    assert_eq!(body_of(&c, "dst", "copied").await, data);

    c.copy_object()
        .copy_source("srcb/a")
        .bucket("srcb")
        .key("a")
        .metadata_directive(MetadataDirective::Replace)
        .content_type("text/plain")
        .metadata("m", "2")
        .send()
        .await
        .unwrap();
    let head = c
        .head_object()
        .bucket("srcb")
        .key("a")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(
        head.metadata().and_then(|m| m.get("m")).map(String::as_str),
        Some("2")
    );
    assert_eq!(body_of(&c, "srcb", "a").await, data);

    assert_eq!(
        code_of(
            c.copy_object()
                .copy_source("srcb/a")
                .bucket("srcb")
                .key("a")
                .send()
                .await
        )
        .await,
        "InvalidArgument"
    );
    assert_eq!(
        code_of(
            c.copy_object()
                .copy_source("srcb/a")
                .copy_source_if_match("\"nope\"")
                .bucket("dst")
                .key("x")
                .send()
                .await
        )
        .await,
        "PreconditionFailed"
    );
    assert_eq!(
        code_of(
            c.copy_object()
                .copy_source("srcb/none")
                .bucket("dst")
                .key("x")
                .send()
                .await
        )
        .await,
        "NoSuchKey"
    );
}

#[tokio::test]
async fn awkward_keys_are_plain_names() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("keys").send().await.unwrap();
    let keys = [
        "../../../../etc/passwd",
        "a//b///c",
        "back\\slash",
        "./dot",
        "sp ace/\u{4e2d}\u{6587}/\u{1f600}",
        "%2e%2e/encoded",
        &"k".repeat(1024),
    ];
    for (i, k) in keys.iter().enumerate() {
        let data = pattern(100 + i, i as u64);
        c.put_object()
            .bucket("keys")
            .key(*k)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{k}: {e:?}"));
        assert_eq!(body_of(&c, "keys", k).await, data, "{k}");
    }
    let listed = c.list_objects_v2().bucket("keys").send().await.unwrap();
    assert_eq!(listed.contents().len(), keys.len());
    assert_eq!(
        code_of(
            c.put_object()
                .bucket("keys")
                .key("k".repeat(1025))
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        )
        .await,
        "KeyTooLongError"
    );
    // Nothing escaped the data directory.
    assert!(!r.data_dir.join("etc").exists());
}

#[tokio::test]
async fn a_read_in_progress_survives_an_overwrite() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("lease").send().await.unwrap();
    let parts_data = [
        pattern(5 * 1024 * 1024, 41),
        pattern(5 * 1024 * 1024, 42),
        pattern(5 * 1024 * 1024, 43),
        pattern(5 * 1024 * 1024, 44),
    ];
    common::multipart_put(&c, "lease", "o", &parts_data)
        .await
        .unwrap();
    // Start reading, stop after the first chunk, overwrite the object (which frees the old
    // part files for garbage collection), give the janitor time, then read the rest.
    let mut got = c
        .get_object()
        .bucket("lease")
        .key("o")
        .send()
        .await
        .unwrap();
    let mut body = Vec::new();
    let first = got.body.next().await.unwrap().unwrap();
    body.extend_from_slice(&first);
    c.put_object()
        .bucket("lease")
        .key("o")
        .body(ByteStream::from_static(b"new"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    while let Some(chunk) = got.body.next().await {
        body.extend_from_slice(&chunk.expect("the read in progress was cut short"));
    }
    assert_eq!(
        body,
        parts_data.concat(),
        "the old version must be read to the end"
    );
    assert_eq!(body_of(&c, "lease", "o").await, b"new");
    // Once the reader is gone, the old parts are collected promptly (the new object is inline).
    drop(got);
    let blob_files = || -> usize {
        std::fs::read_dir(r.data_dir.join("blobs"))
            .unwrap()
            .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum()
    };
    let mut left = blob_files();
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = blob_files();
    }
    assert_eq!(left, 0, "released blobs were not collected");
}

//! Multipart uploads through aws-sdk-s3: complete, list and abort, UploadPartCopy, and
//! full-object CRCs.

use super::*;

#[tokio::test]
async fn multipart_upload_complete_list_abort() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("mpu").send().await.unwrap();
    let part1 = pattern(5 * 1024 * 1024, 11);
    let part2 = pattern(1234, 12);
    let create = c
        .create_multipart_upload()
        .bucket("mpu")
        .key("big")
        .content_type("video/mp4")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .unwrap();
    let id = create.upload_id().unwrap().to_owned();
    let mut etags = Vec::new();
    for (n, data) in [(1, &part1), (2, &part2)] {
        let up = c
            .upload_part()
            .bucket("mpu")
            .key("big")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(up.e_tag(), Some(format!("\"{}\"", md5_hex(data)).as_str()));
        etags.push((
            n,
            up.e_tag().unwrap().to_owned(),
            up.checksum_crc32().map(str::to_owned),
        ));
    }
    let parts = c
        .list_parts()
        .bucket("mpu")
        .key("big")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let nums: Vec<i32> = parts
        .parts()
        .iter()
        .filter_map(|p| p.part_number())
        .collect();
    assert_eq!(nums, vec![1, 2]);
    assert_eq!(parts.parts()[0].size(), Some(5 * 1024 * 1024));
    let uploads = c
        .list_multipart_uploads()
        .bucket("mpu")
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.uploads().len(), 1);

    // Out of order is refused.
    let (e1, e2) = (etags[0].1.as_str(), etags[1].1.as_str());
    assert_eq!(
        common::complete_code(&c, "mpu", "big", &id, &[(2, e2), (1, e1)]).await,
        "InvalidPartOrder"
    );
    assert_eq!(
        common::complete_code(&c, "mpu", "big", &id, &[(1, "\"00\"")]).await,
        "InvalidPart"
    );
    let good = CompletedMultipartUpload::builder()
        .set_parts(Some(
            etags
                .iter()
                .map(|(n, e, crc)| {
                    CompletedPart::builder()
                        .part_number(*n)
                        .e_tag(e)
                        .set_checksum_crc32(crc.clone())
                        .build()
                })
                .collect(),
        ))
        .build();
    let done = c
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(&id)
        .multipart_upload(good)
        .send()
        .await
        .unwrap();
    let etag = done.e_tag().unwrap();
    assert!(etag.ends_with("-2\""), "{etag}");
    let mut whole = part1.clone();
    whole.extend_from_slice(&part2);
    assert_eq!(body_of(&c, "mpu", "big").await, whole);
    let head = c
        .head_object()
        .bucket("mpu")
        .key("big")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("video/mp4"));
    assert_eq!(head.parts_count(), Some(2));
    let p2 = c
        .get_object()
        .bucket("mpu")
        .key("big")
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(p2.content_length(), Some(1234));
    assert_eq!(
        &p2.body.collect().await.unwrap().into_bytes()[..],
        &part2[..]
    );
    let ck = c
        .head_object()
        .bucket("mpu")
        .key("big")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert!(
        ck.checksum_crc32().is_some_and(|v| v.ends_with("-2")),
        "{ck:?}"
    );
    assert_eq!(
        code_of(
            c.list_parts()
                .bucket("mpu")
                .key("big")
                .upload_id(&id)
                .send()
                .await
        )
        .await,
        "NoSuchUpload"
    );

    // A too-small non-final part, and abort.
    let id2 = c
        .create_multipart_upload()
        .bucket("mpu")
        .key("small")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let mut small = Vec::new();
    for n in 1..=2 {
        let up = c
            .upload_part()
            .bucket("mpu")
            .key("small")
            .upload_id(&id2)
            .part_number(n)
            .body(ByteStream::from(pattern(100, n as u64)))
            .send()
            .await
            .unwrap();
        small.push((n, up.e_tag().unwrap().to_owned()));
    }
    let small: Vec<(i32, &str)> = small.iter().map(|(n, e)| (*n, e.as_str())).collect();
    assert_eq!(
        common::complete_code(&c, "mpu", "small", &id2, &small).await,
        "EntityTooSmall"
    );
    c.abort_multipart_upload()
        .bucket("mpu")
        .key("small")
        .upload_id(&id2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code_of(
            c.upload_part()
                .bucket("mpu")
                .key("small")
                .upload_id(&id2)
                .part_number(3)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        )
        .await,
        "NoSuchUpload"
    );
}

#[tokio::test]
async fn upload_part_copy_assembles_from_ranges() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("pcp").send().await.unwrap();
    let src = pattern(6 * 1024 * 1024 + 100, 21);
    c.put_object()
        .bucket("pcp")
        .key("src")
        .body(ByteStream::from(src.clone()))
        .send()
        .await
        .unwrap();
    let id = c
        .create_multipart_upload()
        .bucket("pcp")
        .key("dst")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let split = 5 * 1024 * 1024;
    let mut parts = Vec::new();
    for (n, range) in [
        (1, format!("bytes=0-{}", split - 1)),
        (2, format!("bytes={}-{}", split, src.len() - 1)),
    ] {
        let out = c
            .upload_part_copy()
            .bucket("pcp")
            .key("dst")
            .upload_id(&id)
            .part_number(n)
            .copy_source("pcp/src")
            .copy_source_range(range)
            .send()
            .await
            .unwrap();
        let etag = out
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .unwrap()
            .to_owned();
        parts.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
    }
    c.complete_multipart_upload()
        .bucket("pcp")
        .key("dst")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(&c, "pcp", "dst").await, src);
}

#[tokio::test]
async fn multipart_full_object_crc_is_validated_by_the_sdk() {
    use aws_sdk_s3::types::ChecksumType;
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("fullcrc").send().await.unwrap();
    let parts_data = [
        pattern(5 * 1024 * 1024, 31),
        pattern(5 * 1024 * 1024 + 7, 32),
        pattern(999, 33),
    ];
    let id = c
        .create_multipart_upload()
        .bucket("fullcrc")
        .key("o")
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .checksum_type(ChecksumType::FullObject)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let mut parts = Vec::new();
    for (i, data) in parts_data.iter().enumerate() {
        let n = i as i32 + 1;
        let up = c
            .upload_part()
            .bucket("fullcrc")
            .key("o")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(up.e_tag().unwrap())
                .set_checksum_crc32_c(up.checksum_crc32_c().map(str::to_owned))
                .build(),
        );
    }
    let done = c
        .complete_multipart_upload()
        .bucket("fullcrc")
        .key("o")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let full = done.checksum_crc32_c().unwrap().to_owned();
    assert!(
        !full.contains('-'),
        "a full-object checksum has no part count: {full}"
    );
    // The SDK checks a returned full-object checksum against the bytes it receives, so a
    // wrongly combined CRC fails this read.
    let got = c
        .get_object()
        .bucket("fullcrc")
        .key("o")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(got.checksum_crc32_c(), Some(full.as_str()));
    let body = got
        .body
        .collect()
        .await
        .expect("SDK checksum validation")
        .into_bytes();
    let whole: Vec<u8> = parts_data.concat();
    assert_eq!(&body[..], &whole[..]);
}

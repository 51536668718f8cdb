//! Buckets and listings through aws-sdk-s3: create and delete with their errors, list
//! v1/v2 with prefixes, delimiters and paging, DeleteObjects.

use super::*;

#[tokio::test]
async fn bucket_lifecycle_and_errors() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("alpha").send().await.unwrap();
    c.head_bucket().bucket("alpha").send().await.unwrap();
    assert_eq!(
        code_of(c.create_bucket().bucket("alpha").send().await).await,
        "BucketAlreadyOwnedByYou"
    );
    for bad in ["ab", "Upper", "a..b", "-x-", "192.168.0.1"] {
        assert_eq!(
            code_of(c.create_bucket().bucket(bad).send().await).await,
            "InvalidBucketName",
            "{bad}"
        );
    }
    let names: Vec<String> = c
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(names, vec!["alpha"]);
    let loc = c
        .get_bucket_location()
        .bucket("alpha")
        .send()
        .await
        .unwrap();
    // us-east-1 is reported as an empty constraint, as S3 does.
    assert!(
        loc.location_constraint()
            .is_none_or(|l| l.as_str().is_empty()),
        "{loc:?}"
    );
    c.put_object()
        .bucket("alpha")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code_of(c.delete_bucket().bucket("alpha").send().await).await,
        "BucketNotEmpty"
    );
    c.delete_object()
        .bucket("alpha")
        .key("k")
        .send()
        .await
        .unwrap();
    c.delete_bucket().bucket("alpha").send().await.unwrap();
    assert_eq!(
        code_of(c.head_bucket().bucket("alpha").send().await).await,
        "NotFound"
    );
    assert_eq!(
        code_of(c.get_object().bucket("alpha").key("k").send().await).await,
        "NoSuchBucket"
    );
}

#[tokio::test]
async fn listing_v1_v2_prefix_delimiter_pagination() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("lst").send().await.unwrap();
    let keys = [
        "a.txt",
        "dir/1",
        "dir/2",
        "dir/sub/3",
        "e f+g",
        "z",
        "\u{e9}t\u{e9}",
    ];
    for k in keys {
        c.put_object()
            .bucket("lst")
            .key(k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let out = c
        .list_objects_v2()
        .bucket("lst")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let got: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(got, vec!["a.txt", "e f+g", "z", "\u{e9}t\u{e9}"]);
    let cps: Vec<&str> = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(cps, vec!["dir/"]);
    assert_eq!(out.key_count(), Some(5));

    let sub = c
        .list_objects_v2()
        .bucket("lst")
        .prefix("dir/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let got: Vec<&str> = sub.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(got, vec!["dir/1", "dir/2"]);
    assert_eq!(sub.common_prefixes()[0].prefix(), Some("dir/sub/"));

    // Page through with max-keys 2 (v2 tokens), collecting everything.
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket("lst")
            .max_keys(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        assert!(page.contents().len() <= 2);
        all.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_owned);
    }
    let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    assert_eq!(all, sorted);

    // v1 with marker and start-after.
    let v1 = c
        .list_objects()
        .bucket("lst")
        .marker("dir/2")
        .send()
        .await
        .unwrap();
    let got: Vec<&str> = v1.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(got, vec!["dir/sub/3", "e f+g", "z", "\u{e9}t\u{e9}"]);
    let sa = c
        .list_objects_v2()
        .bucket("lst")
        .start_after("e f+g")
        .send()
        .await
        .unwrap();
    assert_eq!(sa.contents().len(), 2);
    assert_eq!(
        code_of(c.list_objects_v2().bucket("lst").max_keys(-1).send().await).await,
        "InvalidArgument"
    );
    assert_eq!(
        code_of(c.list_objects_v2().bucket("nobucket").send().await).await,
        "NoSuchBucket"
    );
}

#[tokio::test]
async fn delete_objects_quiet_and_limits() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("del").send().await.unwrap();
    for i in 0..5 {
        c.put_object()
            .bucket("del")
            .key(format!("k{i}"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let ids = |keys: &[&str]| {
        Delete::builder().set_objects(Some(
            keys.iter()
                .map(|k| ObjectIdentifier::builder().key(*k).build().unwrap())
                .collect(),
        ))
    };
    let out = c
        .delete_objects()
        .bucket("del")
        .delete(ids(&["k0", "k1", "never"]).build().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(out.deleted().len(), 3);
    let quiet = c
        .delete_objects()
        .bucket("del")
        .delete(ids(&["k2", "k3"]).quiet(true).build().unwrap())
        .send()
        .await
        .unwrap();
    assert!(quiet.deleted().is_empty());
    let left = c.list_objects_v2().bucket("del").send().await.unwrap();
    let keys: Vec<&str> = left.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, vec!["k4"]);
    let many: Vec<String> = (0..1001).map(|i| format!("x{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        code_of(
            c.delete_objects()
                .bucket("del")
                .delete(ids(&refs).build().unwrap())
                .send()
                .await
        )
        .await,
        "MalformedXML"
    );
    // Nothing was deleted by the refused request.
    assert_eq!(body_of(&c, "del", "k4").await, b"x");
}

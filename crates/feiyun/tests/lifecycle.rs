//! Lifecycle rules through aws-sdk-s3 against the real binary, with the lifecycle clock sped
//! up: a "day" is one second and the worker runs every second.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketVersioningStatus,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
    NoncurrentVersionExpiration, ObjectLockMode, Transition, TransitionStorageClass,
    VersioningConfiguration,
};
use common::Region;

fn fast_region() -> Region {
    Region::start_env(&[
        ("FEIYUN_LIFECYCLE_DAY_SECS", "1"),
        ("FEIYUN_LIFECYCLE_INTERVAL_SECS", "1"),
    ])
}

fn code<T, E: ProvideErrorMetadata>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(e) => e.code().unwrap_or("<none>").to_owned(),
    }
}

fn rule(id: &str, prefix: &str) -> aws_sdk_s3::types::builders::LifecycleRuleBuilder {
    LifecycleRule::builder()
        .id(id)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
}

async fn set_rules(c: &aws_sdk_s3::Client, bucket: &str, rules: Vec<LifecycleRule>) {
    c.put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("put lifecycle");
}

async fn put(c: &aws_sdk_s3::Client, b: &str, k: &str) -> Option<String> {
    c.put_object()
        .bucket(b)
        .key(k)
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .unwrap()
        .version_id
}

/// (key, version id, is marker) of every version in the bucket.
async fn all_versions(c: &aws_sdk_s3::Client, b: &str) -> Vec<(String, String, bool)> {
    let out = c.list_object_versions().bucket(b).send().await.unwrap();
    let mut v: Vec<(String, String, bool)> = out
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap().into(),
                v.version_id().unwrap().into(),
                false,
            )
        })
        .chain(out.delete_markers().iter().map(|m| {
            (
                m.key().unwrap().into(),
                m.version_id().unwrap().into(),
                true,
            )
        }))
        .collect();
    v.sort();
    v
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn expiration_noncurrent_markers_and_uploads() {
    let r = fast_region();
    let c = r.client();

    // Unversioned: objects under tmp/ expire after 2 "days"; others stay.
    c.create_bucket().bucket("lc1").send().await.unwrap();
    set_rules(
        &c,
        "lc1",
        vec![
            rule("tmp", "tmp/")
                .expiration(LifecycleExpiration::builder().days(2).build())
                .build()
                .unwrap(),
        ],
    )
    .await;
    put(&c, "lc1", "tmp/a").await;
    put(&c, "lc1", "keep/b").await;
    eventually("tmp/a expires", || async {
        code(c.head_object().bucket("lc1").key("tmp/a").send().await) == "NotFound"
    })
    .await;
    c.head_object()
        .bucket("lc1")
        .key("keep/b")
        .send()
        .await
        .unwrap();

    // Versioned: keep one noncurrent version under n/, drop lone markers under m/, abort
    // uploads older than a day.
    c.create_bucket().bucket("lcv").send().await.unwrap();
    c.put_bucket_versioning()
        .bucket("lcv")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let v1 = put(&c, "lcv", "n/k").await.unwrap();
    let v2 = put(&c, "lcv", "n/k").await.unwrap();
    let v3 = put(&c, "lcv", "n/k").await.unwrap();
    let m1 = put(&c, "lcv", "m/k").await.unwrap();
    c.delete_object()
        .bucket("lcv")
        .key("m/k")
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket("lcv")
        .key("m/k")
        .version_id(&m1)
        .send()
        .await
        .unwrap();
    let upload = c
        .create_multipart_upload()
        .bucket("lcv")
        .key("u/big")
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    set_rules(
        &c,
        "lcv",
        vec![
            rule("noncurrent", "n/")
                .noncurrent_version_expiration(
                    NoncurrentVersionExpiration::builder()
                        .noncurrent_days(1)
                        .newer_noncurrent_versions(1)
                        .build(),
                )
                .build()
                .unwrap(),
            rule("markers", "m/")
                .expiration(
                    LifecycleExpiration::builder()
                        .expired_object_delete_marker(true)
                        .build(),
                )
                .build()
                .unwrap(),
            rule("uploads", "u/")
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(1)
                        .build(),
                )
                .build()
                .unwrap(),
        ],
    )
    .await;
    let got = c
        .get_bucket_lifecycle_configuration()
        .bucket("lcv")
        .send()
        .await
        .unwrap();
    assert_eq!(got.rules().len(), 3);
    eventually(
        "noncurrent v1, the lone marker and the upload go",
        || async {
            let v = all_versions(&c, "lcv").await;
            let uploads = c
                .list_multipart_uploads()
                .bucket("lcv")
                .send()
                .await
                .unwrap();
            v.len() == 2 && uploads.uploads().is_empty()
        },
    )
    .await;
    let v = all_versions(&c, "lcv").await;
    assert_eq!(
        v,
        {
            let mut want = vec![
                ("n/k".to_owned(), v2.clone(), false),
                ("n/k".to_owned(), v3.clone(), false),
            ];
            want.sort();
            want
        },
        "v1 expired, v2 kept as the newest noncurrent, v3 current"
    );
    assert!(!v.iter().any(|x| x.1 == v1));
    assert_eq!(
        code(
            c.list_parts()
                .bucket("lcv")
                .key("u/big")
                .upload_id(&upload)
                .send()
                .await
        ),
        "NoSuchUpload"
    );
    let metrics = r.metrics();
    assert!(
        metrics.contains("feiyun_lifecycle_uploads_aborted_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn lifecycle_never_removes_locked_versions() {
    let r = fast_region();
    let c = r.client();
    c.create_bucket()
        .bucket("lcl")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let until = DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 86_400,
    );
    let locked = c
        .put_object()
        .bucket("lcl")
        .key("rec")
        .body(ByteStream::from_static(b"keep me"))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(until)
        .send()
        .await
        .unwrap()
        .version_id
        .unwrap();
    set_rules(
        &c,
        "lcl",
        vec![
            rule("all", "")
                .expiration(LifecycleExpiration::builder().days(1).build())
                .noncurrent_version_expiration(
                    NoncurrentVersionExpiration::builder()
                        .noncurrent_days(1)
                        .build(),
                )
                .build()
                .unwrap(),
        ],
    )
    .await;
    // Expiration of the current version adds a delete marker (allowed on a locked version);
    // the noncurrent rule then tries to remove the locked version and is refused.
    eventually("the locked version is skipped", || async {
        r.metrics()
            .lines()
            .any(|l| l.starts_with("feiyun_lifecycle_skipped_locked_total") && !l.ends_with(" 0"))
    })
    .await;
    let got = c
        .get_object()
        .bucket("lcl")
        .key("rec")
        .version_id(&locked)
        .send()
        .await
        .unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        b"keep me"
    );
}

#[tokio::test]
async fn bad_lifecycle_configurations_are_refused() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("bad").send().await.unwrap();
    assert_eq!(
        code(
            c.get_bucket_lifecycle_configuration()
                .bucket("bad")
                .send()
                .await
        ),
        "NoSuchLifecycleConfiguration"
    );
    let good = rule("ok", "a/")
        .expiration(LifecycleExpiration::builder().days(3).build())
        .build()
        .unwrap();
    set_rules(&c, "bad", vec![good.clone()]).await;
    let bad_sets: Vec<(Vec<LifecycleRule>, &str)> = vec![
        (
            vec![
                rule("z", "")
                    .expiration(LifecycleExpiration::builder().days(0).build())
                    .build()
                    .unwrap(),
            ],
            "InvalidArgument",
        ),
        (vec![good.clone(), good.clone()], "InvalidArgument"),
        (
            vec![
                rule(&"r".repeat(256), "")
                    .expiration(LifecycleExpiration::builder().days(1).build())
                    .build()
                    .unwrap(),
            ],
            "InvalidArgument",
        ),
        (vec![rule("none", "").build().unwrap()], "InvalidArgument"),
        (
            vec![
                rule("t", "")
                    .transitions(
                        Transition::builder()
                            .days(30)
                            .storage_class(TransitionStorageClass::Glacier)
                            .build(),
                    )
                    .build()
                    .unwrap(),
            ],
            "InvalidStorageClass",
        ),
        (
            vec![
                rule("noon", "")
                    .expiration(
                        LifecycleExpiration::builder()
                            .date(DateTime::from_secs(1_800_000_000 + 43_200))
                            .build(),
                    )
                    .build()
                    .unwrap(),
            ],
            "InvalidArgument",
        ),
    ];
    for (rules, want) in bad_sets {
        assert_eq!(
            code(
                c.put_bucket_lifecycle_configuration()
                    .bucket("bad")
                    .lifecycle_configuration(
                        BucketLifecycleConfiguration::builder()
                            .set_rules(Some(rules))
                            .build()
                            .unwrap()
                    )
                    .send()
                    .await
            ),
            want
        );
    }
    // The good configuration is untouched by the refused ones.
    let got = c
        .get_bucket_lifecycle_configuration()
        .bucket("bad")
        .send()
        .await
        .unwrap();
    assert_eq!(got.rules().len(), 1);
    assert_eq!(got.rules()[0].id(), Some("ok"));
    assert_eq!(got.rules()[0].expiration().and_then(|e| e.days()), Some(3));
    c.delete_bucket_lifecycle()
        .bucket("bad")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            c.get_bucket_lifecycle_configuration()
                .bucket("bad")
                .send()
                .await
        ),
        "NoSuchLifecycleConfiguration"
    );
}

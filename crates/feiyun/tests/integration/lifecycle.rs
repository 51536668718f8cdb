//! Lifecycle rules through aws-sdk-s3 against the real binary, with the lifecycle clock sped
//! up: a "day" is one second and the worker runs every second.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::Region;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketVersioningStatus,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
    NoncurrentVersionExpiration, ObjectLockMode, Transition, TransitionStorageClass,
    VersioningConfiguration,
};

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
                rule("ia-too-soon", "")
                    .transitions(
                        Transition::builder()
                            .days(10)
                            .storage_class(TransitionStorageClass::StandardIa)
                            .build(),
                    )
                    .build()
                    .unwrap(),
            ],
            "InvalidArgument",
        ),
        (
            vec![
                rule("expire-before-move", "")
                    .transitions(
                        Transition::builder()
                            .days(40)
                            .storage_class(TransitionStorageClass::GlacierIr)
                            .build(),
                    )
                    .expiration(LifecycleExpiration::builder().days(40).build())
                    .build()
                    .unwrap(),
            ],
            "InvalidArgument",
        ),
        (
            vec![
                rule("twice", "")
                    .transitions(
                        Transition::builder()
                            .days(30)
                            .storage_class(TransitionStorageClass::GlacierIr)
                            .build(),
                    )
                    .transitions(
                        Transition::builder()
                            .days(60)
                            .storage_class(TransitionStorageClass::GlacierIr)
                            .build(),
                    )
                    .build()
                    .unwrap(),
            ],
            "InvalidArgument",
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

/// Log-like text: compressible, as the data people tier usually is.
fn log_text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut i = seed;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "2026-11-24T10:{:02}:{:02}Z host-{} GET /api/v1/items/{} 200 {}ms\n",
                i / 60 % 60,
                i % 60,
                i % 7,
                i * 31 % 10_007,
                i % 97
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Bytes of blob files on disk.
fn blob_bytes(data_dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for shard in std::fs::read_dir(data_dir.join("blobs")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            total += f.unwrap().metadata().unwrap().len();
        }
    }
    total
}

async fn class_of(
    c: &aws_sdk_s3::Client,
    b: &str,
    k: &str,
) -> Option<aws_sdk_s3::types::StorageClass> {
    c.head_object()
        .bucket(b)
        .key(k)
        .send()
        .await
        .unwrap()
        .storage_class()
        .cloned()
}

async fn body_of(
    c: &aws_sdk_s3::Client,
    b: &str,
    k: &str,
    version: Option<&str>,
    range: Option<&str>,
) -> Vec<u8> {
    c.get_object()
        .bucket(b)
        .key(k)
        .set_version_id(version.map(str::to_owned))
        .set_range(range.map(str::to_owned))
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

#[tokio::test]
async fn transition_to_cold_class_and_read_back() {
    use aws_sdk_s3::types::{NoncurrentVersionTransition, StorageClass};
    let r = fast_region();
    let c = r.client();
    let b = "tier";
    c.create_bucket().bucket(b).send().await.unwrap();
    c.put_bucket_versioning()
        .bucket(b)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let a = log_text(1_500_000, 1);
    let old_b = log_text(400_000, 2);
    let new_b = log_text(400_000, 3);
    let parts = vec![log_text(5 * 1024 * 1024, 4), log_text(700_000, 5)];
    let whole: Vec<u8> = parts.concat();
    let small = log_text(1000, 6);
    let upload = |k: &'static str, data: Vec<u8>| {
        let c = c.clone();
        async move {
            c.put_object()
                .bucket(b)
                .key(k)
                .body(ByteStream::from(data))
                .send()
                .await
                .unwrap()
        }
    };
    let a_etag = upload("cold/a", a.clone()).await.e_tag.unwrap();
    let old_b_version = upload("cold/b", old_b.clone()).await.version_id.unwrap();
    upload("cold/b", new_b.clone()).await;
    upload("cold/small", small.clone()).await;
    upload("warm/x", a.clone()).await;
    let mp_etag = common::multipart_put(&c, b, "cold/mp", &parts)
        .await
        .unwrap();
    let before = blob_bytes(&r.data_dir);

    set_rules(
        &c,
        b,
        vec![
            rule("to-cold", "cold/")
                .transitions(
                    Transition::builder()
                        .days(1)
                        .storage_class(TransitionStorageClass::GlacierIr)
                        .build(),
                )
                .noncurrent_version_transitions(
                    NoncurrentVersionTransition::builder()
                        .noncurrent_days(1)
                        .storage_class(TransitionStorageClass::GlacierIr)
                        .build(),
                )
                .build()
                .unwrap(),
        ],
    )
    .await;
    let got = c
        .get_bucket_lifecycle_configuration()
        .bucket(b)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.rules()[0].transitions()[0].storage_class(),
        Some(&TransitionStorageClass::GlacierIr)
    );

    eventually("current versions move to GLACIER_IR", || async {
        class_of(&c, b, "cold/a").await == Some(StorageClass::GlacierIr)
            && class_of(&c, b, "cold/mp").await == Some(StorageClass::GlacierIr)
            && class_of(&c, b, "cold/b").await == Some(StorageClass::GlacierIr)
    })
    .await;
    eventually("the noncurrent version moves too", || async {
        let out = c
            .list_object_versions()
            .bucket(b)
            .prefix("cold/b")
            .send()
            .await
            .unwrap();
        out.versions().len() == 2
            && out
                .versions()
                .iter()
                .all(|v| v.storage_class().map(|s| s.as_str()) == Some("GLACIER_IR"))
    })
    .await;
    // Under the 128 KiB default minimum, and outside the rule: untouched.
    assert_eq!(class_of(&c, b, "cold/small").await, None);
    assert_eq!(class_of(&c, b, "warm/x").await, None);

    // Read-back: whole objects, ranges across frame edges, parts, old versions; same ETags.
    assert_eq!(body_of(&c, b, "cold/a", None, None).await, a);
    assert_eq!(
        body_of(&c, b, "cold/a", None, Some("bytes=65530-200000")).await,
        &a[65530..=200_000]
    );
    assert_eq!(
        body_of(&c, b, "cold/a", None, Some("bytes=-10")).await,
        &a[a.len() - 10..]
    );
    assert_eq!(body_of(&c, b, "cold/mp", None, None).await, whole);
    let p2 = c
        .get_object()
        .bucket(b)
        .key("cold/mp")
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(p2.e_tag(), Some(mp_etag.as_str()));
    assert_eq!(
        p2.body.collect().await.unwrap().into_bytes().to_vec(),
        parts[1]
    );
    assert_eq!(
        body_of(&c, b, "cold/b", Some(&old_b_version), None).await,
        old_b
    );
    assert_eq!(body_of(&c, b, "cold/b", None, None).await, new_b);
    let head = c
        .head_object()
        .bucket(b)
        .key("cold/a")
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), Some(a_etag.as_str()));
    let listed = c
        .list_objects_v2()
        .bucket(b)
        .prefix("cold/a")
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.contents()[0].storage_class().map(|s| s.as_str()),
        Some("GLACIER_IR")
    );

    // Compressed on disk: the collected originals give back more than the copies take.
    eventually("old blobs are collected", || async {
        blob_bytes(&r.data_dir) * 2 < before
    })
    .await;
    let metrics = r.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("feiyun_lifecycle_transitioned_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn storage_class_on_upload() {
    use aws_sdk_s3::types::StorageClass;
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("sclass").send().await.unwrap();
    let data = log_text(300_000, 9);
    c.put_object()
        .bucket("sclass")
        .key("ia")
        .storage_class(StorageClass::StandardIa)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        class_of(&c, "sclass", "ia").await,
        Some(StorageClass::StandardIa)
    );
    assert_eq!(
        body_of(&c, "sclass", "ia", None, Some("bytes=100-70000")).await,
        &data[100..=70000]
    );
    assert!(blob_bytes(&r.data_dir) < data.len() as u64 / 2);
    // Copying in place with STANDARD brings it back, uncompressed.
    c.copy_object()
        .bucket("sclass")
        .key("ia")
        .copy_source("sclass/ia")
        .storage_class(StorageClass::Standard)
        .send()
        .await
        .unwrap();
    assert_eq!(class_of(&c, "sclass", "ia").await, None);
    assert_eq!(body_of(&c, "sclass", "ia", None, None).await, data);
    // Classes that need a restore before reading are refused and store nothing.
    assert_eq!(
        code(
            c.put_object()
                .bucket("sclass")
                .key("deep")
                .storage_class(StorageClass::DeepArchive)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        "InvalidStorageClass"
    );
    assert_eq!(
        code(c.head_object().bucket("sclass").key("deep").send().await),
        "NotFound"
    );
}

/// kill -9 while the worker is moving objects to the cold class: after restarts every object
/// reads back whole, ends up cold, and no blob file is left behind.
#[tokio::test]
async fn transitions_survive_kill9() {
    use aws_sdk_s3::types::StorageClass;
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("FEIYUN_LIFECYCLE_DAY_SECS", "1"),
        ("FEIYUN_LIFECYCLE_INTERVAL_SECS", "1"),
    ];
    let mut r = Region::start_with(tmp.path(), &env);
    let c = r.client();
    c.create_bucket().bucket("crashy").send().await.unwrap();
    let objects: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| {
            (
                format!("cold/{i:02}"),
                log_text(700_000 + i * 4099, i as u64),
            )
        })
        .collect();
    for (k, data) in &objects {
        c.put_object()
            .bucket("crashy")
            .key(k)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
    }
    set_rules(
        &c,
        "crashy",
        vec![
            rule("cold", "cold/")
                .transitions(
                    Transition::builder()
                        .days(1)
                        .storage_class(TransitionStorageClass::GlacierIr)
                        .build(),
                )
                .build()
                .unwrap(),
        ],
    )
    .await;
    for pause_ms in [1300u64, 1700, 2100] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        r.kill9();
        r = Region::start_with(tmp.path(), &env);
    }
    let c = r.client();
    eventually("every object is cold after the restarts", || async {
        for (k, _) in &objects {
            if class_of(&c, "crashy", k).await != Some(StorageClass::GlacierIr) {
                return false;
            }
        }
        true
    })
    .await;
    for (k, data) in &objects {
        assert_eq!(&body_of(&c, "crashy", k, None, None).await, data, "{k}");
    }
    // One blob per object: copies from interrupted transitions and the replaced originals
    // are all collected.
    let count_blobs = || {
        std::fs::read_dir(tmp.path().join("blobs"))
            .unwrap()
            .map(|s| std::fs::read_dir(s.unwrap().path()).unwrap().count())
            .sum::<usize>()
    };
    eventually("no blob is left behind", || async {
        count_blobs() == objects.len()
    })
    .await;
}

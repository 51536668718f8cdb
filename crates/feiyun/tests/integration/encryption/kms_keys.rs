//! KMS key states, rotation and the caller's KMS permissions over the objects sealed under a key.

use super::*;

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

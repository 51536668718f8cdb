//! `feiyun migrate --bucket-config` between two regions: every bucket setting and each
//! object's retention and legal hold arrive, compared field by field; `verify
//! --bucket-config` finds a setting changed afterwards.

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketVersioningStatus, CorsConfiguration, CorsRule,
    DefaultRetention, ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
    ObjectLockConfiguration, ObjectLockEnabled, ObjectLockLegalHoldStatus, ObjectLockMode,
    ObjectLockRetentionMode, ObjectLockRule, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging,
    VersioningConfiguration,
};

use crate::common::{Region, pattern};
use crate::migrate::{feiyun, get, summary, text};

/// Until 2030-01-01, a date every run of this test precedes.
const UNTIL: i64 = 1_893_456_000;

async fn configure_legacy(lc: &aws_sdk_s3::Client) {
    lc.create_bucket()
        .bucket("old")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    lc.put_bucket_versioning()
        .bucket("old")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    lc.put_object_lock_configuration()
        .bucket("old")
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(ObjectLockRetentionMode::Governance)
                                .days(1)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    lc.put_bucket_encryption()
        .bucket("old")
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::Aes256)
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
    lc.put_bucket_cors()
        .bucket("old")
        .cors_configuration(
            CorsConfiguration::builder()
                .cors_rules(
                    CorsRule::builder()
                        .allowed_methods("GET")
                        .allowed_origins("https://app.example")
                        .max_age_seconds(600)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    lc.put_bucket_tagging()
        .bucket("old")
        .tagging(
            Tagging::builder()
                .tag_set(Tag::builder().key("cost").value("ledger").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    lc.put_bucket_lifecycle_configuration()
        .bucket("old")
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(
                    LifecycleRule::builder()
                        .id("tmp-expiry")
                        .status(ExpirationStatus::Enabled)
                        .filter(LifecycleRuleFilter::builder().prefix("tmp/").build())
                        .expiration(LifecycleExpiration::builder().days(30).build())
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // Denies uploads without an SSE header: the migrator's own copies carry none, so the
    // policy must arrive after the objects.
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"sse-only","Effect":"Deny",
        "Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::old/*",
        "Condition":{"Null":{"s3:x-amz-server-side-encryption":"true"}}}]}"#;
    lc.put_bucket_policy()
        .bucket("old")
        .policy(policy)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn bucket_settings_retention_and_legal_holds_move_with_the_objects() {
    let legacy = Region::start();
    let r = Region::start();
    let lc = legacy.client();
    configure_legacy(&lc).await;
    // "held": explicit retention and a legal hold; "plain": the bucket's default retention.
    lc.put_object()
        .bucket("old")
        .key("held")
        .body(ByteStream::from(pattern(5000, 1)))
        .server_side_encryption(ServerSideEncryption::Aes256)
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(DateTime::from_secs(UNTIL))
        .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
        .send()
        .await
        .unwrap();
    lc.put_object()
        .bucket("old")
        .key("plain")
        .body(ByteStream::from(pattern(300, 2)))
        .server_side_encryption(ServerSideEncryption::Aes256)
        .send()
        .await
        .unwrap();
    let src = lc
        .head_object()
        .bucket("old")
        .key("plain")
        .send()
        .await
        .unwrap();
    let default_until = src.object_lock_retain_until_date().cloned().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("j");
    let ends = [
        "s3://old",
        "s3://new",
        "--source-endpoint",
        &legacy.endpoint(),
    ];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = ends.to_vec();
        args.extend(["--bucket-config", "--state", st.to_str().unwrap()]);
        args.extend(extra);
        feiyun(&r, &args)
    };
    let o = run(&["--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("config versioning"), "{}", text(&o));
    let o = run(&["--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&o);
    assert_eq!(s["copied"], 2, "{s}");
    let settings: Vec<&str> = s["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        settings,
        [
            "config versioning",
            "config object-lock",
            "config encryption",
            "config cors",
            "config tagging",
            "config object-lock default retention",
            "config lifecycle",
            "config policy",
        ]
    );

    let c = r.client();
    assert_eq!(get(&c, "new", "held").await, pattern(5000, 1));
    let v = c
        .get_bucket_versioning()
        .bucket("new")
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), Some(&BucketVersioningStatus::Enabled));
    let lock = c
        .get_object_lock_configuration()
        .bucket("new")
        .send()
        .await
        .unwrap();
    let d = lock
        .object_lock_configuration()
        .and_then(|l| l.rule())
        .and_then(|r| r.default_retention())
        .unwrap();
    assert_eq!(d.mode(), Some(&ObjectLockRetentionMode::Governance));
    assert_eq!(d.days(), Some(1));
    let e = c
        .get_bucket_encryption()
        .bucket("new")
        .send()
        .await
        .unwrap();
    let rule = &e.server_side_encryption_configuration().unwrap().rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default()
            .unwrap()
            .sse_algorithm(),
        &ServerSideEncryption::Aes256
    );
    let cors = c.get_bucket_cors().bucket("new").send().await.unwrap();
    assert_eq!(
        cors.cors_rules()[0].allowed_origins(),
        ["https://app.example"]
    );
    assert_eq!(cors.cors_rules()[0].max_age_seconds(), Some(600));
    let tags = c.get_bucket_tagging().bucket("new").send().await.unwrap();
    assert_eq!(tags.tag_set()[0].key(), "cost");
    assert_eq!(tags.tag_set()[0].value(), "ledger");
    let lc_new = c
        .get_bucket_lifecycle_configuration()
        .bucket("new")
        .send()
        .await
        .unwrap();
    assert_eq!(lc_new.rules()[0].id(), Some("tmp-expiry"));
    assert_eq!(
        lc_new.rules()[0].expiration().and_then(|x| x.days()),
        Some(30)
    );
    let p = c.get_bucket_policy().bucket("new").send().await.unwrap();
    let p = p.policy().unwrap();
    assert!(p.contains("arn:aws:s3:::new/*"), "{p}");
    assert!(!p.contains("arn:aws:s3:::old"), "{p}");

    // Each object's lock state, field by field.
    let held = c
        .head_object()
        .bucket("new")
        .key("held")
        .send()
        .await
        .unwrap();
    assert_eq!(held.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    assert_eq!(
        held.object_lock_retain_until_date().map(|d| d.secs()),
        Some(UNTIL)
    );
    assert_eq!(
        held.object_lock_legal_hold_status(),
        Some(&ObjectLockLegalHoldStatus::On)
    );
    let plain = c
        .head_object()
        .bucket("new")
        .key("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.object_lock_mode(), Some(&ObjectLockMode::Governance));
    assert_eq!(
        plain.object_lock_retain_until_date().map(|d| d.secs()),
        Some(default_until.secs()),
        "the source's own retain-until, not the destination's default from the copy time"
    );

    let verify = |extra: &[&str]| {
        let mut args = vec!["verify"];
        args.extend(ends);
        args.push("--bucket-config");
        args.extend(extra);
        feiyun(&r, &args)
    };
    let o = verify(&[]);
    assert!(o.status.success(), "{}", text(&o));
    // A setting changed here, and a legal hold lifted: both are differences.
    c.put_bucket_cors()
        .bucket("new")
        .cors_configuration(
            CorsConfiguration::builder()
                .cors_rules(
                    CorsRule::builder()
                        .allowed_methods("PUT")
                        .allowed_origins("*")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    c.put_object_legal_hold()
        .bucket("new")
        .key("held")
        .legal_hold(
            aws_sdk_s3::types::ObjectLockLegalHold::builder()
                .status(ObjectLockLegalHoldStatus::Off)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let o = verify(&[]);
    assert!(!o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("bucket-config\tcors"), "{out}");
    assert!(out.contains("lock\theld"), "{out}");
    assert!(!out.contains("plain"), "{out}");

    // Settings belong to whole buckets: a prefix is refused before anything happens.
    let o = feiyun(
        &r,
        &[
            "s3://old/sub",
            "s3://other",
            "--source-endpoint",
            &legacy.endpoint(),
            "--bucket-config",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("whole bucket"), "{err}");
    assert!(
        c.head_bucket().bucket("other").send().await.is_err(),
        "nothing created"
    );
}

/// A key's versions newest first (objects: bytes, one metadata value, tags) and its delete
/// markers (count, and whether one is the latest), as the SDK reads them.
/// One object version: its bytes, its `m` metadata value, its tags.
type VersionView = (Vec<u8>, Option<String>, Vec<(String, String)>);

#[derive(Debug, PartialEq)]
struct History {
    versions: Vec<VersionView>,
    markers: usize,
    marker_latest: bool,
    /// Oldest first, `V` a version and `D` a delete marker, ordered by time (the tests
    /// write a key's changes milliseconds apart, and the migrator replays them so).
    order: String,
}

async fn history(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> History {
    let l = c
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .unwrap();
    let mut versions = Vec::new();
    for v in l.versions().iter().filter(|v| v.key() == Some(key)) {
        let id = v.version_id().unwrap();
        let o = c
            .get_object()
            .bucket(bucket)
            .key(key)
            .version_id(id)
            .send()
            .await
            .unwrap();
        let meta = o.metadata().and_then(|m| m.get("m").cloned());
        let bytes = o.body.collect().await.unwrap().into_bytes().to_vec();
        let t = c
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .version_id(id)
            .send()
            .await
            .unwrap();
        let tags = t
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        versions.push((bytes, meta, tags));
    }
    let markers: Vec<_> = l
        .delete_markers()
        .iter()
        .filter(|m| m.key() == Some(key))
        .collect();
    let mut timed: Vec<(i64, char)> = l
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key))
        .map(|v| (v.last_modified().unwrap().to_millis().unwrap(), 'V'))
        .chain(
            markers
                .iter()
                .map(|m| (m.last_modified().unwrap().to_millis().unwrap(), 'D')),
        )
        .collect();
    timed.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    let order: String = timed.iter().rev().map(|(_, c)| *c).collect();
    History {
        versions,
        markers: markers.len(),
        marker_latest: markers.iter().any(|m| m.is_latest() == Some(true)),
        order,
    }
}

async fn put(c: &aws_sdk_s3::Client, key: &str, body: Vec<u8>, meta: &str, tags: &str) {
    c.put_object()
        .bucket("hist")
        .key(key)
        .body(ByteStream::from(body))
        .metadata("m", meta)
        .tagging(tags)
        .send()
        .await
        .unwrap();
    // Distinct Last-Modified times, so any store's listing orders them one way.
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
}

async fn delete(c: &aws_sdk_s3::Client, key: &str) {
    c.delete_object()
        .bucket("hist")
        .key(key)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
}

#[tokio::test]
async fn every_version_and_delete_marker_moves_in_order_and_reruns_append_only_the_new() {
    let legacy = Region::start();
    let r = Region::start();
    let lc = legacy.client();
    lc.create_bucket().bucket("hist").send().await.unwrap();
    lc.put_bucket_versioning()
        .bucket("hist")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    put(&lc, "doc", pattern(1000, 1), "one", "t=1").await;
    put(&lc, "doc", pattern(2000, 2), "two", "t=2").await;
    delete(&lc, "doc").await;
    put(&lc, "doc", pattern(3000, 3), "three", "t=3&u=x").await;
    put(&lc, "gone", pattern(10, 4), "g", "").await;
    delete(&lc, "gone").await;
    // Larger than the part size given below: copied as a multipart upload.
    put(&lc, "large", pattern(6 << 20, 5), "big", "").await;

    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("j");
    let src_endpoint = legacy.endpoint();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "s3://hist",
            "s3://copy",
            "--source-endpoint",
            &src_endpoint,
            "--all-versions",
            "--part-size",
            "5M",
            "--state",
            st.to_str().unwrap(),
            "--json",
        ];
        args.extend(extra);
        feiyun(&r, &args)
    };
    let verify = || {
        feiyun(
            &r,
            &[
                "verify",
                "s3://hist",
                "s3://copy",
                "--source-endpoint",
                &legacy.endpoint(),
                "--all-versions",
            ],
        )
    };
    let o = run(&["--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("delete-marker doc"),
        "the plan names markers: {}",
        text(&o)
    );
    let o = run(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(summary(&o)["copied"], 7, "{}", text(&o));
    let c = r.client();
    for key in ["doc", "gone", "large"] {
        assert_eq!(
            history(&c, "copy", key).await,
            history(&lc, "hist", key).await,
            "{key}"
        );
    }
    let doc = history(&c, "copy", "doc").await;
    assert_eq!(doc.versions.len(), 3);
    assert_eq!(doc.versions[0].0, pattern(3000, 3), "newest first");
    assert_eq!(doc.markers, 1);
    assert_eq!(
        doc.order, "VVDV",
        "the marker between the second and third versions"
    );
    assert!(history(&c, "copy", "gone").await.marker_latest);
    let o = verify();
    assert!(o.status.success(), "{}", text(&o));

    // A second run copies nothing; then new versions, a new marker and a new key are
    // appended and nothing else is sent.
    let o = run(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(summary(&o)["copied"], 0, "{}", text(&o));
    assert_eq!(summary(&o)["skipped"], 7, "{}", text(&o));
    put(&lc, "doc", pattern(4000, 6), "four", "t=4").await;
    delete(&lc, "large").await;
    put(&lc, "fresh", pattern(50, 7), "f", "").await;
    let o = run(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(summary(&o)["copied"], 3, "{}", text(&o));
    for key in ["doc", "large", "fresh"] {
        assert_eq!(
            history(&c, "copy", key).await,
            history(&lc, "hist", key).await,
            "{key}"
        );
    }
    let o = verify();
    assert!(o.status.success(), "{}", text(&o));

    // A version written straight into the copy: that key's history departs from the
    // source's, so the run reports it and leaves it alone; verify lists it.
    c.put_object()
        .bucket("copy")
        .key("doc")
        .body(ByteStream::from_static(b"local"))
        .send()
        .await
        .unwrap();
    put(&lc, "doc", pattern(5000, 8), "five", "").await;
    let o = run(&[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("histories differ"), "{}", text(&o));
    assert_eq!(get(&c, "copy", "doc").await, b"local");
    let o = verify();
    assert!(!o.status.success());
    // Same shape (six versions, one marker third), so the difference is the sixth's size.
    assert!(
        text(&o).contains("size\tdoc (version 6 of 6)\t5000 at the source, 5 here"),
        "{}",
        text(&o)
    );

    // --delete cannot rewrite a history, and a directory has none.
    let o = run(&["--delete"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--delete is not available"),
        "{}",
        text(&o)
    );
}

#[tokio::test]
async fn a_history_longer_than_a_listing_page_stays_one_history() {
    let legacy = Region::start();
    let r = Region::start();
    let lc = legacy.client();
    lc.create_bucket().bucket("hist").send().await.unwrap();
    lc.put_bucket_versioning()
        .bucket("hist")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // "m" spans the first two pages of 1,000 entries, between keys on either side.
    put(&lc, "a", b"a".to_vec(), "a", "").await;
    for i in 0..1001 {
        lc.put_object()
            .bucket("hist")
            .key("m")
            .body(ByteStream::from(format!("{i}").into_bytes()))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    delete(&lc, "m").await;
    put(&lc, "z", b"z".to_vec(), "z", "").await;
    let src_endpoint = legacy.endpoint();
    let ends = [
        "s3://hist",
        "s3://copy",
        "--source-endpoint",
        &src_endpoint,
        "--all-versions",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("j");
    let mut args = ends.to_vec();
    args.extend(["--state", st.to_str().unwrap(), "--json"]);
    let o = feiyun(&r, &args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(summary(&o)["copied"], 1004, "{}", text(&o));
    let c = r.client();
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
    loop {
        let p = c
            .list_object_versions()
            .bucket("copy")
            .prefix("m")
            .set_key_marker(km.clone())
            .set_version_id_marker(vm.clone())
            .send()
            .await
            .unwrap();
        versions.extend(
            p.versions()
                .iter()
                .map(|v| v.version_id().unwrap().to_owned()),
        );
        markers.extend(p.delete_markers().iter().map(|m| m.is_latest()));
        if p.is_truncated() != Some(true) {
            break;
        }
        km = p.next_key_marker().map(str::to_owned);
        vm = p.next_version_id_marker().map(str::to_owned);
    }
    assert_eq!(versions.len(), 1001);
    assert_eq!(markers, [Some(true)]);
    // The newest version is the last one written.
    let newest = c
        .get_object()
        .bucket("copy")
        .key("m")
        .version_id(&versions[0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        newest.body.collect().await.unwrap().into_bytes().as_ref(),
        b"1000"
    );
    let mut args = vec!["verify"];
    args.extend(ends);
    let o = feiyun(&r, &args);
    assert!(o.status.success(), "{}", text(&o));
}

#[tokio::test]
async fn buckets_of_one_region_are_copied_inside_it() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("here").send().await.unwrap();
    c.put_bucket_versioning()
        .bucket("here")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let names = ["plain", "odd name+ü%.txt", "deep/er/key"];
    for (i, k) in names.iter().enumerate() {
        for v in 0..2u64 {
            c.put_object()
                .bucket("here")
                .key(*k)
                .body(ByteStream::from(pattern(3000 + i * 100, v)))
                .content_type("text/x-test")
                .metadata("n", format!("{i}-{v}"))
                .tagging(format!("v={v}"))
                .send()
                .await
                .unwrap();
        }
    }
    let endpoint = r.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    // The latest versions, then whole histories: every object copied by CopyObject.
    for (dest, extra, copies) in [("there", None, 3), ("history", Some("--all-versions"), 6)] {
        let st = tmp.path().join(dest);
        let d = format!("s3://{dest}");
        let mut args = vec!["s3://here", &d, "--source-endpoint", &endpoint];
        args.extend(["--state", st.to_str().unwrap(), "--json"]);
        args.extend(extra);
        let o = feiyun(&r, &args);
        assert!(o.status.success(), "{}", text(&o));
        let s = summary(&o);
        assert_eq!(s["copied"], copies, "{s}");
        assert_eq!(s["server_side"], copies, "{s}");
        assert_eq!(s["bytes"], 0, "no byte went through the migrator: {s}");
        let mut args = vec!["verify", "s3://here", &d, "--source-endpoint", &endpoint];
        args.extend(extra);
        let o = feiyun(&r, &args);
        assert!(o.status.success(), "{}", text(&o));
    }
    let h = c
        .head_object()
        .bucket("there")
        .key("odd name+ü%.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_type(), Some("text/x-test"));
    assert_eq!(h.metadata().unwrap()["n"], "1-1");
    assert_eq!(get(&c, "there", "odd name+ü%.txt").await, pattern(3100, 1));
    assert_eq!(
        history(&c, "history", "deep/er/key").await,
        history(&c, "here", "deep/er/key").await
    );
}

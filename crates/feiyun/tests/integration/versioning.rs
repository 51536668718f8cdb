//! Versioning, Object Lock, tagging and ACL probes through the AWS SDK for Rust, against the
//! real binary.

use crate::common::{Region, pattern};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketVersioningStatus, Delete, ObjectIdentifier, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode, ObjectLockRule, Tag, Tagging, VersioningConfiguration,
};

fn code<T, E: ProvideErrorMetadata>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(e) => e.code().unwrap_or("<none>").to_owned(),
    }
}

async fn put(c: &aws_sdk_s3::Client, b: &str, k: &str, body: &[u8]) -> Option<String> {
    c.put_object()
        .bucket(b)
        .key(k)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .expect("put")
        .version_id
}

async fn get(c: &aws_sdk_s3::Client, b: &str, k: &str, v: Option<&str>) -> Vec<u8> {
    let out = c
        .get_object()
        .bucket(b)
        .key(k)
        .set_version_id(v.map(str::to_owned))
        .send()
        .await
        .expect("get");
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn set_versioning(c: &aws_sdk_s3::Client, b: &str, status: BucketVersioningStatus) {
    c.put_bucket_versioning()
        .bucket(b)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build())
        .send()
        .await
        .expect("put versioning");
}

/// (key, version id, is delete marker, is latest), in listing order.
async fn versions(c: &aws_sdk_s3::Client, b: &str) -> Vec<(String, String, bool, bool)> {
    let out = c.list_object_versions().bucket(b).send().await.unwrap();
    let mut all: Vec<(String, String, bool, bool)> = out
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap().to_owned(),
                v.version_id().unwrap().to_owned(),
                false,
                v.is_latest().unwrap(),
            )
        })
        .chain(out.delete_markers().iter().map(|m| {
            (
                m.key().unwrap().to_owned(),
                m.version_id().unwrap().to_owned(),
                true,
                m.is_latest().unwrap(),
            )
        }))
        .collect();
    // Versions and markers arrive in two lists; S3 orders by key, then newest first, and
    // version ids here sort by time, "null" aside.
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[tokio::test]
async fn version_history_put_overwrite_delete_undelete_suspend() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("hist").send().await.unwrap();
    let v = c
        .get_bucket_versioning()
        .bucket("hist")
        .send()
        .await
        .unwrap();
    assert!(v.status().is_none(), "never versioned: no Status");

    // Unversioned: no version header; the object becomes the null version.
    assert_eq!(put(&c, "hist", "doc", b"zero").await, None);
    set_versioning(&c, "hist", BucketVersioningStatus::Enabled).await;
    let v = c
        .get_bucket_versioning()
        .bucket("hist")
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), Some(&BucketVersioningStatus::Enabled));

    let v1 = put(&c, "hist", "doc", b"one").await.expect("version id");
    let v2 = put(&c, "hist", "doc", b"two").await.expect("version id");
    assert_ne!(v1, v2);
    assert_eq!(get(&c, "hist", "doc", None).await, b"two");
    assert_eq!(get(&c, "hist", "doc", Some(&v1)).await, b"one");
    assert_eq!(get(&c, "hist", "doc", Some("null")).await, b"zero");
    let head = c
        .head_object()
        .bucket("hist")
        .key("doc")
        .version_id(&v1)
        .send()
        .await
        .unwrap();
    assert_eq!(head.version_id(), Some(v1.as_str()));
    assert_eq!(head.content_length(), Some(3));

    // Delete: a marker hides the key but keeps every version.
    let d = c
        .delete_object()
        .bucket("hist")
        .key("doc")
        .send()
        .await
        .unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    let marker = d.version_id().unwrap().to_owned();
    let err = c
        .get_object()
        .bucket("hist")
        .key("doc")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchKey"));
    let raw = err.raw_response().expect("raw response");
    assert_eq!(raw.headers().get("x-amz-delete-marker"), Some("true"));
    assert_eq!(raw.headers().get("x-amz-version-id"), Some(marker.as_str()));
    // GET of the marker by id: 405 MethodNotAllowed.
    assert_eq!(
        code(
            c.get_object()
                .bucket("hist")
                .key("doc")
                .version_id(&marker)
                .send()
                .await
        ),
        "MethodNotAllowed"
    );
    let listed = c.list_objects_v2().bucket("hist").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(0));
    let vs = versions(&c, "hist").await;
    assert_eq!(vs.len(), 4, "{vs:?}");
    assert!(
        vs.iter().any(|v| v.1 == marker && v.2 && v.3),
        "marker is latest"
    );
    assert!(vs.iter().filter(|v| v.3).count() == 1);

    // Undelete by removing the marker: v2 is current again.
    let d = c
        .delete_object()
        .bucket("hist")
        .key("doc")
        .version_id(&marker)
        .send()
        .await
        .unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    assert_eq!(d.version_id(), Some(marker.as_str()));
    assert_eq!(get(&c, "hist", "doc", None).await, b"two");

    // Restore v1 by copying it onto its own key: a new version with v1's bytes.
    let cp = c
        .copy_object()
        .bucket("hist")
        .key("doc")
        .copy_source(format!("hist/doc?versionId={v1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cp.copy_source_version_id(), Some(v1.as_str()));
    let v3 = cp.version_id().unwrap().to_owned();
    assert_eq!(get(&c, "hist", "doc", None).await, b"one");

    // Permanently delete v2; the others stay.
    c.delete_object()
        .bucket("hist")
        .key("doc")
        .version_id(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            c.get_object()
                .bucket("hist")
                .key("doc")
                .version_id(&v2)
                .send()
                .await
        ),
        "NoSuchVersion"
    );

    // Suspend: new writes replace the null version; older versions remain.
    set_versioning(&c, "hist", BucketVersioningStatus::Suspended).await;
    assert_eq!(
        put(&c, "hist", "doc", b"suspended").await.as_deref(),
        Some("null")
    );
    assert_eq!(get(&c, "hist", "doc", Some("null")).await, b"suspended");
    let ids: Vec<String> = versions(&c, "hist")
        .await
        .into_iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(ids.len(), 3, "null, v3, v1: {ids:?}");
    assert!(ids.contains(&v1) && ids.contains(&v3) && ids.contains(&"null".to_owned()));

    // A versioned bucket is not empty while versions remain.
    c.delete_object()
        .bucket("hist")
        .key("doc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(c.delete_bucket().bucket("hist").send().await),
        "BucketNotEmpty"
    );
    let all = versions(&c, "hist").await;
    let objects: Vec<ObjectIdentifier> = all
        .iter()
        .map(|v| {
            ObjectIdentifier::builder()
                .key(&v.0)
                .version_id(&v.1)
                .build()
                .unwrap()
        })
        .collect();
    let out = c
        .delete_objects()
        .bucket("hist")
        .delete(
            Delete::builder()
                .set_objects(Some(objects))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.deleted().len(), all.len());
    assert!(out.errors().is_empty());
    c.delete_bucket().bucket("hist").send().await.unwrap();
}

#[tokio::test]
async fn version_listing_pages_with_markers_and_prefixes() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("pages").send().await.unwrap();
    set_versioning(&c, "pages", BucketVersioningStatus::Enabled).await;
    for k in ["a", "dir/x", "dir/y", "z"] {
        for i in 0..3u8 {
            put(&c, "pages", k, &[i]).await;
        }
    }
    c.delete_object()
        .bucket("pages")
        .key("z")
        .send()
        .await
        .unwrap();
    // Page through 2 at a time; every version appears exactly once.
    let mut seen = Vec::new();
    let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
    loop {
        let out = c
            .list_object_versions()
            .bucket("pages")
            .max_keys(2)
            .set_key_marker(km.clone())
            .set_version_id_marker(vm.clone())
            .send()
            .await
            .unwrap();
        for v in out.versions() {
            seen.push((
                v.key().unwrap().to_owned(),
                v.version_id().unwrap().to_owned(),
            ));
        }
        for m in out.delete_markers() {
            seen.push((
                m.key().unwrap().to_owned(),
                m.version_id().unwrap().to_owned(),
            ));
        }
        if !out.is_truncated().unwrap_or(false) {
            break;
        }
        km = out.next_key_marker().map(str::to_owned);
        vm = out.next_version_id_marker().map(str::to_owned);
        assert!(seen.len() <= 13, "paging must advance");
    }
    assert_eq!(seen.len(), 13);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 13);

    // Delimiter: "dir/" folds into one prefix however many versions it holds.
    let out = c
        .list_object_versions()
        .bucket("pages")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<&str> = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, vec!["dir/"]);
    assert_eq!(out.versions().len(), 6, "a and z, three each");
    assert_eq!(out.delete_markers().len(), 1);

    // Prefix narrows to one key.
    let out = c
        .list_object_versions()
        .bucket("pages")
        .prefix("dir/y")
        .send()
        .await
        .unwrap();
    assert_eq!(out.versions().len(), 3);
    assert!(out.versions()[0].is_latest().unwrap());
    assert_eq!(out.versions()[0].size(), Some(1));

    // Bad version markers and ids are refused with S3's errors.
    assert_eq!(
        code(
            c.list_object_versions()
                .bucket("pages")
                .version_id_marker("null")
                .send()
                .await
        ),
        "InvalidArgument"
    );
    assert_eq!(
        code(
            c.get_object()
                .bucket("pages")
                .key("a")
                .version_id("not-a-version")
                .send()
                .await
        ),
        "InvalidArgument"
    );
    // Deleting a version that does not exist succeeds, as in S3.
    let d = c
        .delete_object()
        .bucket("pages")
        .key("a")
        .version_id("0000000000000000000000000000abcd")
        .send()
        .await
        .unwrap();
    assert_eq!(d.version_id(), Some("0000000000000000000000000000abcd"));
    assert_eq!(get(&c, "pages", "a", None).await, vec![2u8]);
}

fn in_days(days: i64) -> DateTime {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    DateTime::from_secs(now + days * 86_400)
}

#[tokio::test]
async fn object_lock_compliance_and_governance() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket()
        .bucket("vault")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let v = c
        .get_bucket_versioning()
        .bucket("vault")
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), Some(&BucketVersioningStatus::Enabled));
    // A lock bucket cannot be suspended.
    assert_eq!(
        code(
            c.put_bucket_versioning()
                .bucket("vault")
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Suspended)
                        .build()
                )
                .send()
                .await
        ),
        "InvalidBucketState"
    );

    // COMPLIANCE: root cannot delete the version or shorten its retention, bypass or not.
    let out = c
        .put_object()
        .bucket("vault")
        .key("ledger")
        .body(ByteStream::from_static(b"entries"))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(in_days(2))
        .send()
        .await
        .unwrap();
    let locked = out.version_id().unwrap().to_owned();
    let head = c
        .head_object()
        .bucket("vault")
        .key("ledger")
        .send()
        .await
        .unwrap();
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    for bypass in [false, true] {
        assert_eq!(
            code(
                c.delete_object()
                    .bucket("vault")
                    .key("ledger")
                    .version_id(&locked)
                    .bypass_governance_retention(bypass)
                    .send()
                    .await
            ),
            "AccessDenied"
        );
        assert_eq!(
            code(
                c.put_object_retention()
                    .bucket("vault")
                    .key("ledger")
                    .version_id(&locked)
                    .bypass_governance_retention(bypass)
                    .retention(
                        ObjectLockRetention::builder()
                            .mode(ObjectLockRetentionMode::Compliance)
                            .retain_until_date(in_days(1))
                            .build()
                    )
                    .send()
                    .await
            ),
            "AccessDenied"
        );
    }
    // Extending is allowed.
    c.put_object_retention()
        .bucket("vault")
        .key("ledger")
        .version_id(&locked)
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .retain_until_date(in_days(3))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // A plain DELETE only adds a marker; the locked version survives.
    c.delete_object()
        .bucket("vault")
        .key("ledger")
        .send()
        .await
        .unwrap();
    assert_eq!(get(&c, "vault", "ledger", Some(&locked)).await, b"entries");
    // An overwrite is a new version and leaves the locked one alone.
    put(&c, "vault", "ledger", b"changed").await;
    assert_eq!(get(&c, "vault", "ledger", Some(&locked)).await, b"entries");

    // GOVERNANCE: refused without bypass, allowed with it.
    let gov = c
        .put_object()
        .bucket("vault")
        .key("draft")
        .body(ByteStream::from_static(b"d"))
        .object_lock_mode(ObjectLockMode::Governance)
        .object_lock_retain_until_date(in_days(1))
        .send()
        .await
        .unwrap()
        .version_id
        .unwrap();
    assert_eq!(
        code(
            c.delete_object()
                .bucket("vault")
                .key("draft")
                .version_id(&gov)
                .send()
                .await
        ),
        "AccessDenied"
    );
    c.delete_object()
        .bucket("vault")
        .key("draft")
        .version_id(&gov)
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap();

    // Legal hold blocks deletion until released.
    let held = put(&c, "vault", "evidence", b"e").await.unwrap();
    c.put_object_legal_hold()
        .bucket("vault")
        .key("evidence")
        .version_id(&held)
        .legal_hold(
            ObjectLockLegalHold::builder()
                .status(ObjectLockLegalHoldStatus::On)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let lh = c
        .get_object_legal_hold()
        .bucket("vault")
        .key("evidence")
        .send()
        .await
        .unwrap();
    assert_eq!(
        lh.legal_hold().and_then(|h| h.status()),
        Some(&ObjectLockLegalHoldStatus::On)
    );
    assert_eq!(
        code(
            c.delete_object()
                .bucket("vault")
                .key("evidence")
                .version_id(&held)
                .bypass_governance_retention(true)
                .send()
                .await
        ),
        "AccessDenied"
    );
    c.put_object_legal_hold()
        .bucket("vault")
        .key("evidence")
        .version_id(&held)
        .legal_hold(
            ObjectLockLegalHold::builder()
                .status(ObjectLockLegalHoldStatus::Off)
                .build(),
        )
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket("vault")
        .key("evidence")
        .version_id(&held)
        .send()
        .await
        .unwrap();

    // Default retention applies to new versions.
    c.put_object_lock_configuration()
        .bucket("vault")
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            aws_sdk_s3::types::DefaultRetention::builder()
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
    let cfg = c
        .get_object_lock_configuration()
        .bucket("vault")
        .send()
        .await
        .unwrap();
    let rule = cfg.object_lock_configuration().unwrap().rule().unwrap();
    assert_eq!(rule.default_retention().unwrap().days(), Some(1));
    put(&c, "vault", "auto", b"a").await;
    let ret = c
        .get_object_retention()
        .bucket("vault")
        .key("auto")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ret.retention().unwrap().mode(),
        Some(&ObjectLockRetentionMode::Governance)
    );

    // Bad input: a date in the past, half a retention, lock on an ordinary bucket.
    assert_eq!(
        code(
            c.put_object()
                .bucket("vault")
                .key("past")
                .body(ByteStream::from_static(b"p"))
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(in_days(-1))
                .send()
                .await
        ),
        "InvalidArgument"
    );
    assert_eq!(
        code(
            c.put_object()
                .bucket("vault")
                .key("half")
                .body(ByteStream::from_static(b"p"))
                .object_lock_mode(ObjectLockMode::Compliance)
                .send()
                .await
        ),
        "InvalidArgument"
    );
    c.create_bucket().bucket("plain").send().await.unwrap();
    assert_eq!(
        code(
            c.put_object()
                .bucket("plain")
                .key("k")
                .body(ByteStream::from_static(b"p"))
                .object_lock_mode(ObjectLockMode::Governance)
                .object_lock_retain_until_date(in_days(1))
                .send()
                .await
        ),
        "InvalidRequest"
    );
    assert_eq!(
        code(
            c.get_object_lock_configuration()
                .bucket("plain")
                .send()
                .await
        ),
        "ObjectLockConfigurationNotFoundError"
    );
    assert_eq!(
        code(c.list_objects_v2().bucket("plain").send().await.map(|o| {
            assert_eq!(o.key_count(), Some(0), "refused PUTs stored nothing");
        })),
        "OK"
    );
}

#[tokio::test]
async fn lock_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let locked;
    {
        let mut r = Region::start_in(dir.path());
        let c = r.client();
        c.create_bucket()
            .bucket("keep")
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .unwrap();
        locked = c
            .put_object()
            .bucket("keep")
            .key("k")
            .body(ByteStream::from(pattern(200_000, 3)))
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(in_days(1))
            .send()
            .await
            .unwrap()
            .version_id
            .unwrap();
        r.kill9();
    }
    let r = Region::start_in(dir.path());
    let c = r.client();
    assert_eq!(
        code(
            c.delete_object()
                .bucket("keep")
                .key("k")
                .version_id(&locked)
                .bypass_governance_retention(true)
                .send()
                .await
        ),
        "AccessDenied"
    );
    assert_eq!(
        get(&c, "keep", "k", Some(&locked)).await,
        pattern(200_000, 3)
    );
}

fn tagging(pairs: &[(&str, &str)]) -> Tagging {
    Tagging::builder()
        .set_tag_set(Some(
            pairs
                .iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap())
                .collect(),
        ))
        .build()
        .unwrap()
}

#[tokio::test]
async fn object_and_bucket_tags() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("tags").send().await.unwrap();
    c.put_object()
        .bucket("tags")
        .key("t")
        .tagging("env=prod&team=data%20eng")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let got = c
        .get_object_tagging()
        .bucket("tags")
        .key("t")
        .send()
        .await
        .unwrap();
    let tags: Vec<(&str, &str)> = got.tag_set().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags, vec![("env", "prod"), ("team", "data eng")]);
    let obj = c.get_object().bucket("tags").key("t").send().await.unwrap();
    assert_eq!(obj.tag_count(), Some(2));

    c.put_object_tagging()
        .bucket("tags")
        .key("t")
        .tagging(tagging(&[("k", "v")]))
        .send()
        .await
        .unwrap();
    let got = c
        .get_object_tagging()
        .bucket("tags")
        .key("t")
        .send()
        .await
        .unwrap();
    assert_eq!(got.tag_set().len(), 1);

    // Limits: 11 tags, duplicate keys, a 129-character key, the aws: prefix.
    let eleven: Vec<(String, String)> = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
    let eleven: Vec<(&str, &str)> = eleven
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let long = "k".repeat(129);
    for bad in [
        eleven.clone(),
        vec![("a", "1"), ("a", "2")],
        vec![(long.as_str(), "v")],
        vec![("aws:owner", "v")],
    ] {
        assert_eq!(
            code(
                c.put_object_tagging()
                    .bucket("tags")
                    .key("t")
                    .tagging(tagging(&bad))
                    .send()
                    .await
            ),
            "InvalidTag"
        );
    }
    assert_eq!(
        code(
            c.put_object()
                .bucket("tags")
                .key("t2")
                .tagging("a=1&a=2")
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        "InvalidTag"
    );
    // Refused changes changed nothing.
    let got = c
        .get_object_tagging()
        .bucket("tags")
        .key("t")
        .send()
        .await
        .unwrap();
    assert_eq!(got.tag_set().len(), 1);
    assert_eq!(
        code(c.head_object().bucket("tags").key("t2").send().await),
        "NotFound"
    );
    c.delete_object_tagging()
        .bucket("tags")
        .key("t")
        .send()
        .await
        .unwrap();
    let got = c
        .get_object_tagging()
        .bucket("tags")
        .key("t")
        .send()
        .await
        .unwrap();
    assert!(got.tag_set().is_empty());

    // Bucket tags: up to 50, NoSuchTagSet when absent.
    assert_eq!(
        code(c.get_bucket_tagging().bucket("tags").send().await),
        "NoSuchTagSet"
    );
    c.put_bucket_tagging()
        .bucket("tags")
        .tagging(tagging(&eleven))
        .send()
        .await
        .unwrap();
    let got = c.get_bucket_tagging().bucket("tags").send().await.unwrap();
    assert_eq!(got.tag_set().len(), 11);
    c.delete_bucket_tagging()
        .bucket("tags")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(c.get_bucket_tagging().bucket("tags").send().await),
        "NoSuchTagSet"
    );
}

#[tokio::test]
async fn acl_probes() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("acl").send().await.unwrap();
    put(&c, "acl", "o", b"x").await;
    let acl = c.get_bucket_acl().bucket("acl").send().await.unwrap();
    assert_eq!(acl.grants().len(), 1);
    assert_eq!(
        acl.grants()[0].permission().map(|p| p.as_str()),
        Some("FULL_CONTROL")
    );
    let acl = c
        .get_object_acl()
        .bucket("acl")
        .key("o")
        .send()
        .await
        .unwrap();
    assert_eq!(acl.grants().len(), 1);
    c.put_bucket_acl()
        .bucket("acl")
        .acl(aws_sdk_s3::types::BucketCannedAcl::Private)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            c.put_bucket_acl()
                .bucket("acl")
                .acl(aws_sdk_s3::types::BucketCannedAcl::PublicRead)
                .send()
                .await
        ),
        "AccessDenied"
    );
    assert_eq!(
        code(
            c.put_object_acl()
                .bucket("acl")
                .key("o")
                .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
                .send()
                .await
        ),
        "AccessDenied"
    );
    // Without the public access block, a public ACL is not silently accepted either.
    c.delete_public_access_block()
        .bucket("acl")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            c.put_bucket_acl()
                .bucket("acl")
                .acl(aws_sdk_s3::types::BucketCannedAcl::PublicRead)
                .send()
                .await
        ),
        "NotImplemented"
    );
    assert_eq!(
        code(c.get_object_acl().bucket("acl").key("missing").send().await),
        "NoSuchKey"
    );
}

#[tokio::test]
async fn unconfigured_bucket_settings_say_so() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket().bucket("plain").send().await.unwrap();
    assert_eq!(
        code(c.get_bucket_policy().bucket("plain").send().await),
        "NoSuchBucketPolicy"
    );
    assert_eq!(
        code(c.get_bucket_policy_status().bucket("plain").send().await),
        "NoSuchBucketPolicy"
    );
    // New buckets block public access, as S3's do; deleting the block leaves none.
    let block = c
        .get_public_access_block()
        .bucket("plain")
        .send()
        .await
        .unwrap();
    let cfg = block.public_access_block_configuration().unwrap();
    assert_eq!(
        (
            cfg.block_public_acls(),
            cfg.ignore_public_acls(),
            cfg.block_public_policy(),
            cfg.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );
    c.delete_public_access_block()
        .bucket("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(c.get_public_access_block().bucket("plain").send().await),
        "NoSuchPublicAccessBlockConfiguration"
    );
    assert_eq!(
        code(c.get_bucket_encryption().bucket("missing").send().await),
        "NoSuchBucket"
    );
}

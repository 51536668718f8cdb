//! Cross-region replication between real `feiyun` processes on loopback: peers, the
//! replication configuration API and its refusals, what replicates (versions with their ids
//! and times, metadata, tags, delete markers) and what does not (version deletes), status
//! PENDING → COMPLETED / FAILED / REPLICA, a peer that is down or killed, and two regions
//! replicating one bucket to each other.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{ACCESS_KEY, Region, SECRET_KEY};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, Destination, ReplicationConfiguration, ReplicationRule,
    ReplicationRuleFilter, ReplicationRuleStatus, Tag, Tagging, VersioningConfiguration,
};
use md5::Digest as _;

/// `feiyun ARGS` against `r` as root; must succeed. Its stdout.
fn cli_ok(r: &Region, args: &[&str]) -> String {
    let out = cli(r, args);
    assert!(
        out.status.success(),
        "feiyun {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli(r: &Region, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(args)
        .env("FEIYUN_ENDPOINT", r.endpoint())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run feiyun")
}

/// Registers `peer` in `r` under `name`.
fn add_region(r: &Region, name: &str, peer: &str) {
    cli_ok(
        r,
        &[
            "region",
            "add",
            name,
            "--url",
            peer,
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ],
    );
}

async fn versioned_bucket(c: &aws_sdk_s3::Client, bucket: &str) {
    c.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create");
    c.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
}

fn rule(id: &str, priority: i32, prefix: &str, dest_arn: &str, markers: bool) -> ReplicationRule {
    ReplicationRule::builder()
        .id(id)
        .priority(priority)
        .status(ReplicationRuleStatus::Enabled)
        .filter(ReplicationRuleFilter::builder().prefix(prefix).build())
        .delete_marker_replication(
            aws_sdk_s3::types::DeleteMarkerReplication::builder()
                .status(if markers {
                    aws_sdk_s3::types::DeleteMarkerReplicationStatus::Enabled
                } else {
                    aws_sdk_s3::types::DeleteMarkerReplicationStatus::Disabled
                })
                .build(),
        )
        .destination(
            Destination::builder()
                .bucket(dest_arn)
                .build()
                .expect("dest"),
        )
        .build()
        .expect("rule")
}

async fn put_replication(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    rules: Vec<ReplicationRule>,
) -> Result<(), String> {
    c.put_bucket_replication()
        .bucket(bucket)
        .replication_configuration(
            ReplicationConfiguration::builder()
                .role("arn:aws:iam::000000000000:role/replication")
                .set_rules(Some(rules))
                .build()
                .expect("config"),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            use aws_sdk_s3::error::ProvideErrorMetadata;
            e.code().unwrap_or("?").to_owned()
        })
}

/// A key's versions as (version id, is delete marker, is latest), newest first.
type Versions = BTreeMap<String, Vec<(String, bool, bool)>>;

async fn versions(c: &aws_sdk_s3::Client, bucket: &str) -> Versions {
    all_versions(c, bucket, "").await
}

/// Waits (up to `secs`) until `f` holds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// A gauge's value from the region's /metrics.
fn metric(r: &Region, name: &str) -> f64 {
    r.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// A plain PUT; the new version's id.
async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, data: Vec<u8>) -> String {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data))
        .send()
        .await
        .expect("put")
        .version_id()
        .expect("version id")
        .to_owned()
}

/// Waits until every (key, version) of `bucket` shows replication status `want`.
async fn wait_status(
    secs: u64,
    c: &aws_sdk_s3::Client,
    bucket: &str,
    items: &[(String, String)],
    want: &str,
) {
    eventually(
        secs,
        &format!("{} versions {want}", items.len()),
        || async {
            for (k, v) in items {
                if status(c, bucket, k, v).await != want {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

async fn status(c: &aws_sdk_s3::Client, bucket: &str, key: &str, version: &str) -> String {
    c.head_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .send()
        .await
        .expect("head")
        .replication_status()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default()
}

async fn body(c: &aws_sdk_s3::Client, bucket: &str, key: &str, version: &str) -> Vec<u8> {
    c.get_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_markers_and_tags_replicate_with_their_ids() {
    let a = Region::start();
    let b = Region::start();
    let (ca, cb) = (a.client(), b.client());
    versioned_bucket(&ca, "src").await;
    versioned_bucket(&cb, "dst").await;
    ca.create_bucket()
        .bucket("plain")
        .send()
        .await
        .expect("plain");

    // Refused before the peer exists, and for what S3 refuses.
    let to_dr = || vec![rule("all", 1, "", "arn:aws:s3:dr::dst", true)];
    assert_eq!(
        put_replication(&ca, "src", to_dr()).await,
        Err("InvalidRequest".into())
    );
    add_region(&a, "dr", &b.endpoint());
    assert!(cli_ok(&a, &["region", "list"]).contains(&b.endpoint()));
    assert_eq!(
        put_replication(&ca, "plain", to_dr()).await,
        Err("InvalidRequest".into())
    );
    let no_region = vec![rule("all", 1, "", "arn:aws:s3:::dst", true)];
    assert_eq!(
        put_replication(&ca, "src", no_region).await,
        Err("InvalidArgument".into())
    );
    let same_priority = vec![
        rule("one", 1, "a/", "arn:aws:s3:dr::dst", true),
        rule("two", 1, "b/", "arn:aws:s3:dr::dst", true),
    ];
    assert_eq!(
        put_replication(&ca, "src", same_priority).await,
        Err("InvalidRequest".into())
    );
    let missing = ca.get_bucket_replication().bucket("src").send().await;
    assert!(format!("{missing:?}").contains("ReplicationConfigurationNotFoundError"));
    let bad_xml = common::raw(
        a.addr,
        "PUT /src?replication HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nConnection: close\r\n\r\n<oops/>",
    );
    assert!(
        bad_xml.status == 400 || bad_xml.status == 403,
        "{}",
        bad_xml.status
    );

    put_replication(&ca, "src", to_dr())
        .await
        .expect("replication on");
    let got = ca
        .get_bucket_replication()
        .bucket("src")
        .send()
        .await
        .expect("get");
    let rules = got.replication_configuration().expect("config").rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].destination().expect("d").bucket(),
        "arn:aws:s3:dr::dst"
    );
    // The region cannot go while a rule names it, nor the bucket's versioning be suspended.
    let busy = cli(&a, &["region", "remove", "dr"]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("RegionInUse"));
    let suspend = ca
        .put_bucket_versioning()
        .bucket("src")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await;
    assert!(format!("{suspend:?}").contains("InvalidBucketState"));

    // Writes: an overwrite, a blob-sized object with headers and tags, a multipart object.
    let v1 = put(&ca, "src", "k", b"one".to_vec()).await;
    let v2 = put(&ca, "src", "k", b"two".to_vec()).await;
    let big = common::pattern(300 * 1024, 7);
    let vb = ca
        .put_object()
        .bucket("src")
        .key("docs/big.bin")
        .content_type("application/x-test")
        .cache_control("max-age=60")
        .metadata("owner", "ops")
        .tagging("class=gold&team=a%20b")
        .body(ByteStream::from(big.clone()))
        .send()
        .await
        .expect("big")
        .version_id()
        .expect("id")
        .to_owned();
    let parts = vec![
        common::pattern(5 * 1024 * 1024, 1),
        common::pattern(1024, 2),
    ];
    common::multipart_put(&ca, "src", "mp.bin", &parts)
        .await
        .expect("multipart");
    // PENDING right after the write (the worker never holds the PUT).
    let s = status(&ca, "src", "k", &v2).await;
    assert!(s == "PENDING" || s == "COMPLETED", "{s}");

    eventually(30, "every version COMPLETED", || {
        let ca = ca.clone();
        async move {
            let all = versions(&ca, "src").await;
            for (key, vs) in &all {
                for (v, marker, _) in vs {
                    if !marker && status(&ca, "src", key, v).await != "COMPLETED" {
                        return false;
                    }
                }
            }
            true
        }
    })
    .await;
    assert_eq!(versions(&cb, "dst").await, versions(&ca, "src").await);
    assert_eq!(body(&cb, "dst", "k", &v1).await, b"one");
    assert_eq!(body(&cb, "dst", "k", &v2).await, b"two");
    assert_eq!(body(&cb, "dst", "docs/big.bin", &vb).await, big);
    let mp = cb
        .get_object()
        .bucket("dst")
        .key("mp.bin")
        .send()
        .await
        .expect("mp");
    assert_eq!(mp.replication_status().map(|s| s.as_str()), Some("REPLICA"));
    // Replicated in the same parts: the multipart ETag ("…-2") is the source's.
    let mp_a = ca
        .head_object()
        .bucket("src")
        .key("mp.bin")
        .send()
        .await
        .expect("mp head");
    assert!(
        mp_a.e_tag().is_some_and(|e| e.ends_with("-2\"")),
        "{:?}",
        mp_a.e_tag()
    );
    assert_eq!(mp.e_tag(), mp_a.e_tag());
    // The replica's upload is gone once completed.
    let uploads = cb
        .list_multipart_uploads()
        .bucket("dst")
        .send()
        .await
        .expect("uploads");
    assert!(uploads.uploads().is_empty());
    let whole: Vec<u8> = parts.concat();
    assert_eq!(
        mp.body.collect().await.expect("b").into_bytes().to_vec(),
        whole
    );
    let head_a = ca
        .head_object()
        .bucket("src")
        .key("docs/big.bin")
        .send()
        .await
        .expect("h");
    let head_b = cb
        .head_object()
        .bucket("dst")
        .key("docs/big.bin")
        .send()
        .await
        .expect("h");
    assert_eq!(
        head_b.replication_status().map(|s| s.as_str()),
        Some("REPLICA")
    );
    assert_eq!(head_b.last_modified(), head_a.last_modified());
    assert_eq!(head_b.e_tag(), head_a.e_tag());
    assert_eq!(head_b.content_type(), Some("application/x-test"));
    assert_eq!(head_b.content_encoding(), None);
    assert_eq!(head_b.cache_control(), Some("max-age=60"));
    assert_eq!(
        head_b
            .metadata()
            .and_then(|m| m.get("owner"))
            .map(String::as_str),
        Some("ops")
    );
    let tags = cb
        .get_object_tagging()
        .bucket("dst")
        .key("docs/big.bin")
        .send()
        .await
        .expect("t");
    let tags: Vec<(&str, &str)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags, vec![("class", "gold"), ("team", "a b")]);

    // A delete marker replicates with its id; deleting a version does not replicate; a tag
    // change does.
    let marker = ca
        .delete_object()
        .bucket("src")
        .key("k")
        .send()
        .await
        .expect("marker");
    let marker_id = marker.version_id().expect("marker id").to_owned();
    ca.delete_object()
        .bucket("src")
        .key("k")
        .version_id(&v1)
        .send()
        .await
        .expect("del v1");
    ca.put_object_tagging()
        .bucket("src")
        .key("docs/big.bin")
        .tagging(
            Tagging::builder()
                .tag_set(
                    Tag::builder()
                        .key("class")
                        .value("silver")
                        .build()
                        .expect("tag"),
                )
                .build()
                .expect("tagging"),
        )
        .send()
        .await
        .expect("retag");
    eventually(30, "the marker and the new tags at the destination", || {
        let cb = cb.clone();
        let marker_id = marker_id.clone();
        async move {
            let vs = versions(&cb, "dst").await;
            let marker_there = vs
                .get("k")
                .is_some_and(|k| k.first() == Some(&(marker_id.clone(), true, true)));
            let tags = cb
                .get_object_tagging()
                .bucket("dst")
                .key("docs/big.bin")
                .send()
                .await;
            let silver = tags.is_ok_and(|t| {
                t.tag_set().first().map(|t| t.value().to_owned()) == Some("silver".into())
            });
            marker_there && silver
        }
    })
    .await;
    let at_b = versions(&cb, "dst").await;
    let k_at_b: Vec<&str> = at_b["k"].iter().map(|v| v.0.as_str()).collect();
    assert_eq!(k_at_b, vec![marker_id.as_str(), v2.as_str(), v1.as_str()]);
    let k_at_a: Vec<String> = versions(&ca, "src").await["k"]
        .iter()
        .map(|v| v.0.clone())
        .collect();
    assert_eq!(k_at_a, vec![marker_id.clone(), v2.clone()]);

    // Status and metrics report the work.
    let st = cli_ok(&a, &["replication", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st).expect("status json");
    assert_eq!(st["pending_events"], 0);
    assert!(
        st["destinations"]["dr/dst"]["completed"]
            .as_u64()
            .unwrap_or(0)
            >= 6,
        "{st}"
    );
    let m = a.metrics();
    assert!(
        m.contains("feiyun_replication_peer_up{region=\"dr\"} 1"),
        "{m}"
    );
    assert!(m.contains("feiyun_replication_lag_seconds_count"));

    // Turning replication off stops it; the region can then be removed.
    ca.delete_bucket_replication()
        .bucket("src")
        .send()
        .await
        .expect("off");
    let after = put(&ca, "src", "late", b"x".to_vec()).await;
    assert_eq!(status(&ca, "src", "late", &after).await, "");
    cli_ok(&a, &["region", "remove", "dr"]);
    assert!(!cli_ok(&a, &["region", "list"]).contains("dr"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_destination_fails_and_a_dead_one_catches_up() {
    let a = Region::start();
    let b_dir = tempfile::tempdir().expect("tmp");
    let b_addr = common::free_addr();
    let mut b = Region::start_at(b_dir.path(), &b_addr, &[]);
    let (ca, cb) = (a.client(), b.client());
    versioned_bucket(&ca, "src").await;
    versioned_bucket(&cb, "dst").await;
    cb.create_bucket()
        .bucket("unversioned")
        .send()
        .await
        .expect("unversioned");
    add_region(&a, "dr", &b.endpoint());
    put_replication(
        &ca,
        "src",
        vec![
            rule("ok", 1, "ok/", "arn:aws:s3:dr::dst", false),
            rule("refused", 2, "no/", "arn:aws:s3:dr::unversioned", false),
        ],
    )
    .await
    .expect("rules");
    let refused = put(&ca, "src", "no/x", b"x".to_vec()).await;
    // A destination that refuses replicas leaves the version FAILED.
    wait_status(30, &ca, "src", &[("no/x".to_owned(), refused)], "FAILED").await;
    let st = cli_ok(&a, &["replication", "status", "--json"]);
    assert!(st.contains("InvalidRequest"), "{st}");

    // The destination dies (kill -9); writes go on and stay PENDING.
    b.kill9();
    let mut written = Vec::new();
    for i in 0..40 {
        let key = format!("ok/{i:02}");
        let v = put(&ca, "src", &key, key.clone().into_bytes()).await;
        written.push((key, v));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        status(&ca, "src", &written[0].0, &written[0].1).await,
        "PENDING"
    );
    let st: serde_json::Value =
        serde_json::from_str(&cli_ok(&a, &["replication", "status", "--json"])).expect("json");
    assert!(st["pending_events"].as_u64().unwrap_or(0) > 0, "{st}");
    eventually(10, "the lag metric to show the backlog", || async {
        metric(&a, "feiyun_replication_oldest_pending_seconds") >= 1.0
    })
    .await;

    // It comes back at the same address: everything arrives, once.
    let b = Region::start_at(b_dir.path(), &b_addr, &[]);
    let cb = b.client();
    // The backlog replicates once the peer is back.
    wait_status(60, &ca, "src", &written, "COMPLETED").await;
    eventually(10, "the lag metric back at zero", || async {
        metric(&a, "feiyun_replication_oldest_pending_seconds") == 0.0
            && metric(&a, "feiyun_replication_pending_events") == 0.0
    })
    .await;
    let at_b = versions(&cb, "dst").await;
    assert_eq!(at_b.len(), 40);
    for (k, v) in &written {
        assert_eq!(at_b[k], vec![(v.clone(), false, true)], "{k}");
        assert_eq!(body(&cb, "dst", k, v).await, k.as_bytes());
    }

    // The source is killed mid-stream; after its restart the rest arrives, nothing twice.
    let a_dir = a.data_dir.clone();
    let mut a = a;
    let mut more = Vec::new();
    for i in 0..60 {
        let key = format!("ok/m{i:02}");
        let v = put(&ca, "src", &key, common::pattern(70_000, i)).await;
        more.push((key, v));
    }
    a.kill9();
    let a2 = Region::start_in(&a_dir);
    let ca2 = a2.client();
    // Convergence after the source's kill -9.
    wait_status(60, &ca2, "src", &more, "COMPLETED").await;
    let at_b = versions(&cb, "dst").await;
    assert_eq!(at_b.len(), 100);
    for (i, (k, v)) in more.iter().enumerate() {
        assert_eq!(at_b[k], vec![(v.clone(), false, true)], "{k}");
        assert_eq!(
            body(&cb, "dst", k, v).await,
            common::pattern(70_000, i as u64)
        );
    }
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_replicating_to_each_other_converge() {
    let a = Region::start();
    let b = Region::start();
    let (ca, cb) = (a.client(), b.client());
    versioned_bucket(&ca, "shared").await;
    versioned_bucket(&cb, "shared").await;
    add_region(&a, "b", &b.endpoint());
    add_region(&b, "a", &a.endpoint());
    put_replication(
        &ca,
        "shared",
        vec![rule("to-b", 1, "", "arn:aws:s3:b::shared", true)],
    )
    .await
    .expect("a→b");
    put_replication(
        &cb,
        "shared",
        vec![rule("to-a", 1, "", "arn:aws:s3:a::shared", true)],
    )
    .await
    .expect("b→a");

    // Both regions write the same keys at once.
    let mut writers = Vec::new();
    for (c, who) in [(ca.clone(), "a"), (cb.clone(), "b")] {
        writers.push(tokio::spawn(async move {
            for round in 0..10 {
                for k in 0..5 {
                    let key = format!("key{k}");
                    c.put_object()
                        .bucket("shared")
                        .key(&key)
                        .body(ByteStream::from(format!("{who}-{round}").into_bytes()))
                        .send()
                        .await
                        .expect("concurrent put");
                }
            }
            c.delete_object()
                .bucket("shared")
                .key("key4")
                .send()
                .await
                .expect("marker");
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // Each key: 10 versions from each region (key4: plus one marker from each).
    let full = |v: &Versions| {
        (0..5)
            .all(|k| v.get(&format!("key{k}")).map(Vec::len) == Some(if k == 4 { 22 } else { 20 }))
    };
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let (va, vb) = (versions(&ca, "shared").await, versions(&cb, "shared").await);
        if full(&va) && full(&vb) {
            break;
        }
        assert!(
            Instant::now() < end,
            "not converged after 120 s:\nA {va:?}\nB {vb:?}\nA status {}\nB status {}",
            cli_ok(&a, &["replication", "status", "--json"]),
            cli_ok(&b, &["replication", "status", "--json"])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (va, vb) = (versions(&ca, "shared").await, versions(&cb, "shared").await);
    assert_eq!(va, vb, "same versions, same current version on both sides");
    for k in 0..4 {
        let key = format!("key{k}");
        let current_a = ca
            .get_object()
            .bucket("shared")
            .key(&key)
            .send()
            .await
            .expect("get a");
        let current_b = cb
            .get_object()
            .bucket("shared")
            .key(&key)
            .send()
            .await
            .expect("get b");
        assert_eq!(current_a.version_id(), current_b.version_id());
        assert_eq!(current_a.version_id(), Some(va[&key][0].0.as_str()));
    }
    // No loop: the counts stay put.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(versions(&ca, "shared").await, va);
    assert_eq!(versions(&cb, "shared").await, vb);
}

/// Every version and delete marker of `bucket` under `prefix`, across pages: key → (id,
/// marker?, latest?), newest first.
async fn all_versions(c: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Versions {
    let mut all: Versions = BTreeMap::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let out = c
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .expect("list versions");
        for v in out.versions() {
            all.entry(v.key().unwrap_or_default().to_owned())
                .or_default()
                .push((
                    v.version_id().unwrap_or_default().to_owned(),
                    false,
                    v.is_latest().unwrap_or(false),
                ));
        }
        for m in out.delete_markers() {
            all.entry(m.key().unwrap_or_default().to_owned())
                .or_default()
                .push((
                    m.version_id().unwrap_or_default().to_owned(),
                    true,
                    m.is_latest().unwrap_or(false),
                ));
        }
        if out.is_truncated() != Some(true) {
            break;
        }
        key_marker = out.next_key_marker().map(str::to_owned);
        version_marker = out.next_version_id_marker().map(str::to_owned);
    }
    for list in all.values_mut() {
        list.sort_by(|a, b| b.0.cmp(&a.0));
    }
    all
}

/// The resync jobs `r` reports for `destination`.
fn resyncs(r: &Region, destination: &str) -> Vec<serde_json::Value> {
    let st: serde_json::Value =
        serde_json::from_str(&cli_ok(r, &["replication", "status", "--json"])).expect("json");
    st["resyncs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["destination"] == destination)
        .cloned()
        .collect()
}

/// `feiyun replication resync … --wait --json`: the (sent, already there, failed) totals.
fn resync_wait(r: &Region, extra: &[&str]) -> (u64, u64, u64) {
    let mut args = vec![
        "replication",
        "--json",
        "resync",
        "src",
        "--to",
        "dr",
        "--wait",
    ];
    args.extend_from_slice(extra);
    let out: serde_json::Value = serde_json::from_str(&cli_ok(r, &args)).expect("json");
    let jobs = out["resyncs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{out}");
    assert!(!jobs[0]["finished"].is_null(), "{out}");
    let n = |f: &str| jobs[0][f].as_u64().expect("count");
    (n("sent"), n("present"), n("failed"))
}

/// Wipes a killed region's data and starts it empty at the same address.
fn rebuild(b: &mut Region, dir: &std::path::Path, addr: &str) -> Region {
    b.kill9();
    std::fs::remove_dir_all(dir).expect("wipe");
    std::fs::create_dir_all(dir).expect("mkdir");
    Region::start_at(dir, addr, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_backfills_existing_objects_and_rebuilds_a_lost_region() {
    let a_dir = tempfile::tempdir().expect("tmp");
    let mut a = Region::start_in(a_dir.path());
    let b_dir = tempfile::tempdir().expect("tmp");
    let b_addr = common::free_addr();
    let mut b = Region::start_at(b_dir.path(), &b_addr, &[]);
    let ca = a.client();
    versioned_bucket(&ca, "src").await;
    versioned_bucket(&b.client(), "dst").await;

    // Written before any rule: 1,100 keys, one with 30 versions (more than a listing page in
    // all, so a key's versions straddle pages), a delete marker, a tagged version, and keys
    // outside the rule's prefix.
    for chunk in 0..11 {
        let puts = (0..100).map(|i| {
            let key = format!("k/{:04}", chunk * 100 + i);
            let ca = ca.clone();
            async move { put(&ca, "src", &key, key.clone().into_bytes()).await }
        });
        futures::future::join_all(puts).await;
    }
    for i in 0..30 {
        put(
            &ca,
            "src",
            "k/0500-hot",
            common::pattern(1000 + i, i as u64),
        )
        .await;
    }
    ca.delete_object()
        .bucket("src")
        .key("k/0005")
        .send()
        .await
        .expect("marker");
    ca.put_object()
        .bucket("src")
        .key("k/0007")
        .tagging("team=blue")
        .body(ByteStream::from_static(b"tagged"))
        .send()
        .await
        .expect("tagged");
    put(&ca, "src", "other/x", b"stays".to_vec()).await;
    let at_a = all_versions(&ca, "src", "k/").await;
    let total: usize = at_a.values().map(Vec::len).sum();
    assert_eq!(total, 1100 + 30 + 1 + 1);

    // A rule with ExistingObjectReplication copies all of it.
    add_region(&a, "dr", &b.endpoint());
    let mut existing = rule("all", 1, "k/", "arn:aws:s3:dr::dst", true);
    existing.existing_object_replication = Some(
        aws_sdk_s3::types::ExistingObjectReplication::builder()
            .status(aws_sdk_s3::types::ExistingObjectReplicationStatus::Enabled)
            .build()
            .expect("existing"),
    );
    put_replication(&ca, "src", vec![existing])
        .await
        .expect("rules");
    eventually(120, "the backfill to finish", || async {
        resyncs(&a, "dr/dst")
            .first()
            .is_some_and(|j| !j["finished"].is_null())
    })
    .await;
    let job = &resyncs(&a, "dr/dst")[0];
    assert_eq!(job["sent"].as_u64(), Some(total as u64), "{job}");
    assert_eq!(job["failed"].as_u64(), Some(0), "{job}");
    let cb = b.client();
    assert_eq!(all_versions(&cb, "dst", "").await, at_a);
    // A version from before the rule is COMPLETED now, its replica REPLICA, same bytes.
    let hot = &at_a["k/0500-hot"];
    let oldest = &hot[29].0;
    assert_eq!(status(&ca, "src", "k/0500-hot", oldest).await, "COMPLETED");
    assert_eq!(status(&cb, "dst", "k/0500-hot", oldest).await, "REPLICA");
    assert_eq!(
        body(&cb, "dst", "k/0500-hot", oldest).await,
        common::pattern(1000, 0)
    );
    let tags = cb
        .get_object_tagging()
        .bucket("dst")
        .key("k/0007")
        .send()
        .await
        .expect("tags");
    assert_eq!(tags.tag_set()[0].value(), "blue");

    // The region is lost and rebuilt empty: a resync puts everything back.
    b = rebuild(&mut b, b_dir.path(), &b_addr);
    let cb = b.client();
    versioned_bucket(&cb, "dst").await;
    assert_eq!(resync_wait(&a, &[]), (total as u64, 0, 0));
    assert_eq!(all_versions(&cb, "dst", "").await, at_a);
    for (k, list) in [("k/0042", &at_a["k/0042"]), ("k/0500-hot", hot)] {
        assert_eq!(body(&cb, "dst", k, &list[0].0).await, {
            let b = body(&ca, "src", k, &list[0].0).await;
            assert!(!b.is_empty());
            b
        });
    }
    // Again: nothing is sent, everything is found there.
    assert_eq!(resync_wait(&a, &[]), (0, total as u64, 0));
    // Only versions older than an hour: none here.
    assert_eq!(resync_wait(&a, &["--older-than", "1h"]), (0, 0, 0));

    // Rebuilt again, and the source is killed -9 in the middle of the resync: after its
    // restart the job resumes and the destination ends identical.
    b = rebuild(&mut b, b_dir.path(), &b_addr);
    let cb = b.client();
    versioned_bucket(&cb, "dst").await;
    cli_ok(&a, &["replication", "resync", "src", "--to", "dr"]);
    eventually(60, "the resync to be under way", || async {
        resyncs(&a, "dr/dst")
            .first()
            .is_some_and(|j| j["sent"].as_u64().unwrap_or(0) > 0 || !j["finished"].is_null())
    })
    .await;
    a.kill9();
    let a = Region::start_in(a_dir.path());
    eventually(120, "the resumed resync to finish", || async {
        resyncs(&a, "dr/dst")
            .first()
            .is_some_and(|j| !j["finished"].is_null())
    })
    .await;
    assert_eq!(all_versions(&cb, "dst", "").await, at_a);
    let bad = cli(&a, &["replication", "resync", "src", "--to", "nowhere"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nowhere"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = cli(&a, &["replication", "resync", "nobucket", "--to", "dr"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NoSuchBucket"));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// The current objects of `bucket` and their bodies.
async fn contents(c: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let list = c
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .expect("list");
    for o in list.contents() {
        let key = o.key().unwrap_or_default().to_owned();
        let got = c
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .expect("get")
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .to_vec();
        out.insert(key, got);
    }
    out
}

/// `feiyun restore ARGS --json`.
fn restore(r: &Region, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["restore", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&cli_ok(r, &all)).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_restore_replays_a_recorded_history() {
    let a = Region::start();
    let c = a.client();
    versioned_bucket(&c, "hist").await;
    // A recorded history: 80 random puts, overwrites and deletes over 12 keys, with the
    // expected bucket contents after each step and the moment it was reached.
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut history: Vec<(i64, BTreeMap<String, Vec<u8>>)> = Vec::new();
    let mut seed = 0x5eed_u64;
    for step in 0..80u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!("k{}", (seed >> 33) % 12);
        if (seed >> 20).is_multiple_of(4) {
            c.delete_object()
                .bucket("hist")
                .key(&key)
                .send()
                .await
                .expect("delete");
            model.remove(&key);
        } else {
            let data = common::pattern(100 + (step as usize % 7) * 300, step);
            put(&c, "hist", &key, data.clone()).await;
            model.insert(key, data);
        }
        history.push((now_ms(), model.clone()));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let last = history.last().expect("history").clone();
    let versions_before = all_versions(&c, "hist", "").await;

    // A dry run lists exactly the keys that differ, and changes nothing.
    let (t20, at20) = history[20].clone();
    let t20s = t20.to_string();
    let plan = restore(&a, &["hist", "--to-time", &t20s, "--dry-run"]);
    let restores: Vec<String> = model
        .iter()
        .filter(|(k, v)| at20.get(*k).is_some_and(|old| old != *v))
        .chain(at20.iter().filter(|(k, _)| !model.contains_key(*k)))
        .map(|(k, _)| k.clone())
        .collect();
    let deletes = model.keys().filter(|k| !at20.contains_key(*k)).count();
    assert_eq!(
        plan["restored"].as_u64(),
        Some(restores.len() as u64),
        "{plan}"
    );
    assert_eq!(plan["deleted"].as_u64(), Some(deletes as u64), "{plan}");
    assert!(
        restores.len() + deletes > 0,
        "the history must have changed something"
    );
    assert_eq!(all_versions(&c, "hist", "").await, versions_before);

    // Into another bucket: it ends as the bucket was at step 20.
    c.create_bucket().bucket("copy").send().await.expect("copy");
    restore(&a, &["hist", "--to-time", &t20s, "--target", "copy"]);
    assert_eq!(contents(&c, "copy").await, at20);

    // In place, one prefix only: those keys go back to step 40, the others stay.
    let (t40, at40) = history[40].clone();
    let t40s = t40.to_string();
    restore(&a, &["hist", "--to-time", &t40s, "--prefix", "k1"]);
    let now = contents(&c, "hist").await;
    for k in (0..12).map(|i| format!("k{i}")) {
        let want = if k.starts_with("k1") { &at40 } else { &last.1 };
        assert_eq!(now.get(&k), want.get(&k), "{k}");
    }
    // Again: nothing left to change.
    let again = restore(&a, &["hist", "--to-time", &t40s, "--prefix", "k1"]);
    assert_eq!(
        (again["restored"].as_u64(), again["deleted"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );

    // The whole bucket back to step 20, then forward to the end again: a restore only adds
    // versions, so it can be undone.
    restore(&a, &["hist", "--to-time", &t20s]);
    assert_eq!(contents(&c, "hist").await, at20);
    let t_end = last.0.to_string();
    restore(&a, &["hist", "--to-time", &t_end]);
    assert_eq!(contents(&c, "hist").await, last.1);
    // RFC 3339 works as well as milliseconds.
    let rfc = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t20) * 1_000_000)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let plan = restore(&a, &["hist", "--to-time", &rfc, "--dry-run"]);
    assert!(plan["restored"].as_u64().unwrap_or(0) + plan["deleted"].as_u64().unwrap_or(0) > 0);

    // Object Lock: a locked version stays, the restore adds a version over its marker.
    c.create_bucket()
        .bucket("locked")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("lock bucket");
    let v = c
        .put_object()
        .bucket("locked")
        .key("ledger")
        .body(ByteStream::from_static(b"entry"))
        .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
        .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
            now_ms() / 1000 + 3600,
        ))
        .send()
        .await
        .expect("locked put")
        .version_id()
        .expect("version")
        .to_owned();
    let t_locked = now_ms().to_string();
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.delete_object()
        .bucket("locked")
        .key("ledger")
        .send()
        .await
        .expect("marker");
    let r = restore(&a, &["locked", "--to-time", &t_locked]);
    assert_eq!(r["restored"].as_u64(), Some(1), "{r}");
    assert_eq!(contents(&c, "locked").await["ledger"], b"entry");
    assert_eq!(body(&c, "locked", "ledger", &v).await, b"entry");

    // Bad input: one line on stderr, a non-zero exit.
    for (args, want) in [
        (
            vec!["restore", "hist", "--to-time", "yesterday"],
            "RFC 3339",
        ),
        (vec!["restore", "nope", "--to-time", "0"], "NoSuchBucket"),
        (
            vec!["restore", "hist", "--to-time", "0", "--target", "nope"],
            "NoSuchBucket",
        ),
    ] {
        let out = cli(&a, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// `feiyun iam create-user NAME` with an inline policy on `r`: its (access key, secret).
fn iam_user(r: &Region, name: &str, policy: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("policy.json");
    std::fs::write(&file, policy).expect("policy");
    let out: serde_json::Value = serde_json::from_str(&cli_ok(
        r,
        &[
            "iam",
            "--json",
            "create-user",
            name,
            "--policy-file",
            file.to_str().expect("path"),
        ],
    ))
    .expect("json");
    (
        out["AccessKeyId"].as_str().expect("key").to_owned(),
        out["SecretAccessKey"].as_str().expect("secret").to_owned(),
    )
}

/// Whether `c` may list `bucket` (the region knows its key and allows it).
async fn may_list(c: &aws_sdk_s3::Client, bucket: &str) -> bool {
    c.list_objects_v2().bucket(bucket).send().await.is_ok()
}

const APP_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
    "Action":"s3:*","Resource":["arn:aws:s3:::app","arn:aws:s3:::app/*"]},
    {"Effect":"Allow","Action":["kms:GenerateDataKey","kms:Decrypt"],"Resource":"*"}]}"#;

/// The documented failover drill (README "Disaster recovery"): two regions of one site, the
/// primary lost, the replica promoted and written to with the same credentials, the primary
/// back and caught up, failback — and identities follow in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_replica_and_failback_keep_data_and_credentials() {
    let site = [("FEIYUN_ACCOUNT_ID", "123456789012")];
    let a_dir = tempfile::tempdir().expect("tmp");
    let a_addr = common::free_addr();
    let mut a = Region::start_at(a_dir.path(), &a_addr, &site);
    let b = Region::start_env(&site);
    versioned_bucket(&a.client(), "app").await;
    versioned_bucket(&b.client(), "app").await;
    let site_region = |r: &Region, name: &str, peer: &str| {
        cli_ok(
            r,
            &[
                "region",
                "add",
                name,
                "--url",
                peer,
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
                "--site",
            ],
        );
    };
    site_region(&a, "dr", &b.endpoint());
    site_region(&b, "main", &a.endpoint());
    put_replication(
        &a.client(),
        "app",
        vec![rule("to-dr", 1, "", "arn:aws:s3:dr::app", true)],
    )
    .await
    .expect("rule");

    // A user made at the primary is accepted by the replica region too, and a KMS key's id
    // and alias are known there.
    let (ak, sk) = iam_user(&a, "alice", APP_POLICY);
    let (status, key) = common::kms(
        &a,
        "CreateKey",
        serde_json::json!({"Description": "app data"}),
    );
    assert_eq!(status, 200, "{key}");
    let key_id = key["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("key id")
        .to_owned();
    let (status, _) = common::kms(
        &a,
        "CreateAlias",
        serde_json::json!({"AliasName": "alias/app", "TargetKeyId": key_id}),
    );
    assert_eq!(status, 200);
    let alice_a = common::client_for(&a.endpoint(), &ak, &sk);
    let alice_b = common::client_for(&b.endpoint(), &ak, &sk);
    eventually(30, "alice's key at the replica region", || {
        may_list(&alice_b, "app")
    })
    .await;
    eventually(30, "the KMS alias at the replica region", || async {
        let (status, d) = common::kms(&b, "DescribeKey", serde_json::json!({"KeyId": "alias/app"}));
        status == 200 && d["KeyMetadata"]["KeyId"] == key_id.as_str()
    })
    .await;
    // Objects written at the replica region under that alias are sealed by its own copy.
    alice_b
        .put_object()
        .bucket("app")
        .key("sealed")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .ssekms_key_id("alias/app")
        .body(ByteStream::from_static(b"secret"))
        .send()
        .await
        .expect("SSE-KMS under the replicated alias");
    assert_eq!(contents(&alice_b, "app").await["sealed"], b"secret");
    alice_b
        .delete_object()
        .bucket("app")
        .key("sealed")
        .send()
        .await
        .expect("clean");
    let mut written = Vec::new();
    for i in 0..20 {
        let key = format!("doc/{i:02}");
        written.push((
            key.clone(),
            put(&alice_a, "app", &key, key.clone().into_bytes()).await,
        ));
    }
    wait_status(60, &a.client(), "app", &written, "COMPLETED").await;

    // The primary is lost. Promote the replica: it takes writes (it always could) and now
    // replicates them back to the primary's bucket.
    a.kill9();
    put_replication(
        &b.client(),
        "app",
        vec![rule("to-main", 1, "", "arn:aws:s3:main::app", true)],
    )
    .await
    .expect("promote");
    let mut failover = Vec::new();
    for i in 20..30 {
        let key = format!("doc/{i:02}");
        failover.push((
            key.clone(),
            put(&alice_b, "app", &key, key.clone().into_bytes()).await,
        ));
    }
    put(
        &alice_b,
        "app",
        "doc/00",
        b"changed during the failover".to_vec(),
    )
    .await;
    alice_b
        .delete_object()
        .bucket("app")
        .key("doc/01")
        .send()
        .await
        .expect("delete at the replica");
    // An identity change during the failover.
    let (bk, bs) = iam_user(&b, "bob", APP_POLICY);

    // The primary comes back with what it had; the replica's backlog and identities reach it.
    let a = Region::start_at(a_dir.path(), &a_addr, &site);
    wait_status(90, &b.client(), "app", &failover, "COMPLETED").await;
    let bob_a = common::client_for(&a.endpoint(), &bk, &bs);
    eventually(30, "bob's key at the primary", || may_list(&bob_a, "app")).await;
    // A resync finds nothing missing.
    let out: serde_json::Value = serde_json::from_str(&cli_ok(
        &b,
        &[
            "replication",
            "--json",
            "resync",
            "app",
            "--to",
            "main",
            "--wait",
        ],
    ))
    .expect("json");
    assert_eq!(out["resyncs"][0]["failed"], 0, "{out}");

    // Failback: writes stop at the replica, its backlog is empty, both hold the same versions;
    // clients go back to the primary and read what was written during the failover.
    eventually(30, "the replica's backlog to drain", || async {
        let st: serde_json::Value =
            serde_json::from_str(&cli_ok(&b, &["replication", "status", "--json"])).expect("json");
        st["pending_events"] == 0
    })
    .await;
    eventually(30, "identical version lists", || async {
        all_versions(&a.client(), "app", "").await == all_versions(&b.client(), "app", "").await
    })
    .await;
    let alice_a = common::client_for(&a.endpoint(), &ak, &sk);
    let now_a = contents(&alice_a, "app").await;
    assert_eq!(now_a.len(), 29);
    assert_eq!(now_a["doc/00"], b"changed during the failover");
    assert!(!now_a.contains_key("doc/01"));
    assert_eq!(now_a["doc/25"], b"doc/25");

    // A user removed at the primary loses access at the replica region too.
    cli_ok(&a, &["iam", "delete-user", "alice"]);
    eventually(30, "alice's key refused at the replica region", || async {
        !may_list(&alice_b, "app").await
    })
    .await;
    // Bob stays (once the region's throttle on alice's failed sign-ins has passed).
    let bob_b = common::client_for(&b.endpoint(), &bk, &bs);
    eventually(60, "bob still allowed at the replica region", || {
        may_list(&bob_b, "app")
    })
    .await;
    let st: serde_json::Value =
        serde_json::from_str(&cli_ok(&a, &["replication", "status", "--json"])).expect("json");
    assert!(st["site"]["last_error"].is_null(), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_replication_refuses_regions_of_different_accounts() {
    let a = Region::start_env(&[("FEIYUN_ACCOUNT_ID", "123456789012")]);
    let b = Region::start_env(&[("FEIYUN_ACCOUNT_ID", "210987654321")]);
    for (r, name, peer) in [(&a, "dr", b.endpoint()), (&b, "main", a.endpoint())] {
        cli_ok(
            r,
            &[
                "region",
                "add",
                name,
                "--url",
                &peer,
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
                "--site",
            ],
        );
    }
    iam_user(&a, "carol", APP_POLICY);
    eventually(30, "the mismatch in the status", || async {
        let st: serde_json::Value =
            serde_json::from_str(&cli_ok(&a, &["replication", "status", "--json"])).expect("json");
        st["site"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("SiteMismatch") && e.contains("account_id"))
    })
    .await;
    // An account id that is not 12 digits stops the server at start, with the reason.
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("FEIYUN_ACCOUNT_ID", "12345")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("account_id"));
}

/// The link between two regions fails for 60 s while the source takes a steady stream of
/// writes: the source keeps accepting them, marks the peer down, its lag metric climbs; after
/// the heal everything arrives once and the lag returns to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_partition_under_load_heals_and_converges() {
    let a = Region::start();
    let b = Region::start();
    let (ca, cb) = (a.client(), b.client());
    versioned_bucket(&ca, "src").await;
    versioned_bucket(&cb, "dst").await;
    let link = common::Link::open(b.addr).await;
    add_region(&a, "dr", &link.url());
    put_replication(
        &ca,
        "src",
        vec![rule("all", 1, "", "arn:aws:s3:dr::dst", true)],
    )
    .await
    .expect("rule");

    // A steady load of 10 PUT/s for the whole run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (ca, stop) = (ca.clone(), stop.clone());
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let key = format!("load/{i:05}");
                let v = put(&ca, "src", &key, common::pattern(4096, i)).await;
                written.push((key, v));
                i += 1;
            }
            written
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    link.cut();
    let cut_at = Instant::now();
    eventually(20, "the peer seen down", || async {
        metric(&a, "feiyun_replication_peer_up{region=\"dr\"}") == 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(cut_at.elapsed())).await;
    let lag = metric(&a, "feiyun_replication_oldest_pending_seconds");
    assert!(lag >= 50.0, "lag during the partition: {lag}");
    assert!(metric(&a, "feiyun_replication_pending_events") >= 400.0);
    link.heal();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(written.len() >= 600, "{} writes", written.len());

    wait_status(120, &ca, "src", &written, "COMPLETED").await;
    eventually(20, "the lag metric back at zero", || async {
        metric(&a, "feiyun_replication_oldest_pending_seconds") == 0.0
            && metric(&a, "feiyun_replication_pending_events") == 0.0
    })
    .await;
    let at_b = all_versions(&cb, "dst", "").await;
    assert_eq!(at_b.len(), written.len());
    for (k, v) in &written {
        assert_eq!(at_b[k], vec![(v.clone(), false, true)], "{k}");
    }
    assert_eq!(
        body(&cb, "dst", &written[42].0, &written[42].1).await,
        common::pattern(4096, 42)
    );
}

const BACKUP_KEY: &str = "YmFja3VwLWtleS1mb3ItdGVzdHMtMzItYnl0ZXMhISE=";

/// A PUT into an unversioned bucket.
async fn put_unversioned(c: &aws_sdk_s3::Client, bucket: &str, key: &str, data: Vec<u8>) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data))
        .send()
        .await
        .expect("put");
}

/// `feiyun backup ARGS --json` on `r`; must succeed.
fn backup(r: &Region, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["backup", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&cli_ok(r, &all)).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_incremental_deduplicated_verifiable_and_restore_anywhere() {
    let key = [("FEIYUN_BACKUP_KEY", BACKUP_KEY)];
    let a = Region::start_env(&key);
    let vault = Region::start();
    let (ca, cv) = (a.client(), vault.client());
    cv.create_bucket()
        .bucket("backups")
        .send()
        .await
        .expect("vault bucket");
    add_region(&a, "vault", &vault.endpoint());
    ca.create_bucket()
        .bucket("data")
        .send()
        .await
        .expect("data");
    let mut state: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..30u64 {
        let k = format!("small/{i:02}");
        let data = common::pattern(1000 + i as usize, i);
        put_unversioned(&ca, "data", &k, data.clone()).await;
        state.insert(k, data);
    }
    // 9 MiB: three chunks; the same bytes again under another key: no new chunk.
    let big = common::pattern(9 * 1024 * 1024, 99);
    ca.put_object()
        .bucket("data")
        .key("big")
        .content_type("application/x-test")
        .metadata("owner", "ops")
        .tagging("tier=gold")
        .body(ByteStream::from(big.clone()))
        .send()
        .await
        .expect("big");
    put_unversioned(&ca, "data", "copy-of-big", big.clone()).await;
    put_unversioned(&ca, "data", "empty", Vec::new()).await;
    state.insert("big".into(), big.clone());
    state.insert("copy-of-big".into(), big.clone());
    state.insert("empty".into(), Vec::new());

    let first = backup(&a, &["create", "data", "--to", "vault/backups/nightly"]);
    assert_eq!(first["objects"], 33, "{first}");
    assert_eq!(first["new_chunks"], 30 + 3, "{first}");
    assert_eq!(first["unchanged"], 0, "{first}");
    let state_1 = state.clone();

    // Two overwrites, a delete, a new key: the next snapshot reads and sends only those.
    for k in ["small/03", "small/04", "new"] {
        let data = format!("changed {k}").into_bytes();
        put_unversioned(&ca, "data", k, data.clone()).await;
        state.insert(k.into(), data);
    }
    ca.delete_object()
        .bucket("data")
        .key("small/05")
        .send()
        .await
        .expect("delete");
    state.remove("small/05");
    let second = backup(&a, &["create", "data", "--to", "vault/backups/nightly"]);
    assert_eq!(second["objects"], 33, "{second}");
    assert_eq!(second["unchanged"], 30, "{second}");
    assert_eq!(second["new_chunks"], 3, "{second}");
    let snaps = backup(&a, &["list", "data", "--from", "vault/backups/nightly"]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(2), "{snaps}");
    let first_id = first["id"].as_str().expect("id").to_owned();
    assert_eq!(snaps[0]["id"], first_id.as_str());
    // Nothing readable at the vault: names are hashes, contents sealed.
    let stored = all_versions(&cv, "backups", "").await;
    assert!(
        stored
            .keys()
            .all(|k| !k.contains("small") && !k.contains("big"))
    );
    let chunk_keys: Vec<&String> = stored.keys().filter(|k| k.contains("/chunks/")).collect();
    assert_eq!(chunk_keys.len(), 33 + 3);
    let needles = [&big[..64], &state_1["small/00"][..64]];
    for k in chunk_keys {
        let sealed = cv
            .get_object()
            .bucket("backups")
            .key(k)
            .send()
            .await
            .expect("chunk")
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes();
        for n in needles {
            assert!(!sealed.windows(n.len()).any(|w| w == n), "plaintext in {k}");
        }
    }

    // The bucket is lost; the latest snapshot brings it back byte for byte.
    for k in state.keys() {
        ca.delete_object()
            .bucket("data")
            .key(k)
            .send()
            .await
            .expect("rm");
    }
    ca.delete_bucket()
        .bucket("data")
        .send()
        .await
        .expect("rm bucket");
    ca.create_bucket()
        .bucket("data")
        .send()
        .await
        .expect("again");
    let r = backup(&a, &["restore", "data", "--from", "vault/backups/nightly"]);
    assert_eq!(r["objects"], 33, "{r}");
    assert_eq!(contents(&ca, "data").await, state);
    let head = ca
        .head_object()
        .bucket("data")
        .key("big")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("owner"))
            .map(String::as_str),
        Some("ops")
    );
    let tags = ca
        .get_object_tagging()
        .bucket("data")
        .key("big")
        .send()
        .await
        .expect("tags");
    assert_eq!(tags.tag_set()[0].value(), "gold");

    // Any region with the same backup key restores it, an older snapshot too.
    let c = Region::start_env(&key);
    add_region(&c, "vault", &vault.endpoint());
    c.client()
        .create_bucket()
        .bucket("older")
        .send()
        .await
        .expect("older");
    let r = backup(
        &c,
        &[
            "restore",
            "data",
            "--from",
            "vault/backups/nightly",
            "--snapshot",
            &first_id,
            "--into",
            "older",
        ],
    );
    assert_eq!(r["snapshot"], first_id.as_str(), "{r}");
    assert_eq!(contents(&c.client(), "older").await, state_1);
    // Without the key a region can do nothing with it.
    let keyless = Region::start();
    add_region(&keyless, "vault", &vault.endpoint());
    let out = cli(
        &keyless,
        &["backup", "list", "data", "--from", "vault/backups/nightly"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backup key"));

    // Retention: keep the newest; what only the first used goes.
    let pruned = backup(
        &a,
        &[
            "prune",
            "data",
            "--from",
            "vault/backups/nightly",
            "--keep-last",
            "1",
            "--chunk-grace",
            "0s",
        ],
    );
    assert_eq!(pruned["removed"], serde_json::json!([first_id]), "{pruned}");
    assert_eq!(pruned["chunks_removed"], 3, "{pruned}");
    let ok = backup(&a, &["verify", "data", "--from", "vault/backups/nightly"]);
    assert_eq!(
        (ok["snapshots"].as_u64(), ok["chunks"].as_u64()),
        (Some(1), Some(33)),
        "{ok}"
    );
    assert_eq!(ok["problems"], serde_json::json!([]), "{ok}");

    // One flipped byte in a stored chunk, and another chunk gone: verify names both.
    let chunks: Vec<String> = all_versions(&cv, "backups", "nightly/chunks/")
        .await
        .keys()
        .cloned()
        .collect();
    let mut bad = cv
        .get_object()
        .bucket("backups")
        .key(&chunks[0])
        .send()
        .await
        .expect("chunk")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    put_unversioned(&cv, "backups", &chunks[0], bad).await;
    cv.delete_object()
        .bucket("backups")
        .key(&chunks[1])
        .send()
        .await
        .expect("rm chunk");
    let out = cli(
        &a,
        &[
            "backup",
            "verify",
            "data",
            "--from",
            "vault/backups/nightly",
        ],
    );
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let id0 = chunks[0].rsplit('/').next().expect("id");
    let id1 = chunks[1].rsplit('/').next().expect("id");
    assert!(text.contains(id0) && text.contains("damaged"), "{text}");
    assert!(text.contains(id1) && text.contains("missing"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 damaged or missing"));
}

/// A replica region that names the bucket's home forwards requests there while it is up, so
/// clients may use either endpoint; with the home down it serves the replica (failover), and
/// forwards again once the home is back. Redirect mode answers 307 instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_the_home_region_and_fail_over_when_it_is_down() {
    let a_dir = tempfile::tempdir().expect("tmp");
    let a_addr = common::free_addr();
    let mut a = Region::start_at(a_dir.path(), &a_addr, &[]);
    let b = Region::start();
    let (ca, cb) = (a.client(), b.client());
    versioned_bucket(&ca, "app").await;
    versioned_bucket(&cb, "app").await;
    add_region(&a, "dr", &b.endpoint());
    add_region(&b, "main", &a.endpoint());
    put_replication(
        &ca,
        "app",
        vec![rule("to-dr", 1, "", "arn:aws:s3:dr::app", true)],
    )
    .await
    .expect("rule");
    let set = cli_ok(&b, &["replication", "home", "app", "--region", "main"]);
    assert!(set.contains("forwarded"), "{set}");

    // Written through the replica region's endpoint, it lands in the home region (which
    // replicates it back as usual), and reads through either endpoint agree.
    let v = put(&cb, "app", "via-dr", b"one".to_vec()).await;
    assert!(
        !status(&ca, "app", "via-dr", &v).await.is_empty(),
        "written at main"
    );
    wait_status(
        30,
        &ca,
        "app",
        &[("via-dr".to_owned(), v.clone())],
        "COMPLETED",
    )
    .await;
    assert_eq!(
        status(&cb, "app", "via-dr", &v).await,
        "COMPLETED",
        "a forwarded HEAD"
    );
    assert_eq!(body(&cb, "app", "via-dr", &v).await, b"one");
    let refusal = cli(&b, &["region", "remove", "main"]);
    assert!(String::from_utf8_lossy(&refusal.stderr).contains("home region"));

    // The home region is lost: the replica region serves what it holds and takes writes.
    a.kill9();
    eventually(20, "the home seen down", || async {
        metric(&b, "feiyun_replication_peer_up{region=\"main\"}") == 0.0
    })
    .await;
    let st = cli_ok(&b, &["replication", "status"]);
    assert!(st.contains("home app -> main\thome down"), "{st}");
    assert_eq!(body(&cb, "app", "via-dr", &v).await, b"one");
    assert_eq!(status(&cb, "app", "via-dr", &v).await, "REPLICA");
    let during = put(&cb, "app", "during-outage", b"two".to_vec()).await;
    assert_eq!(body(&cb, "app", "during-outage", &during).await, b"two");

    // Back: requests are forwarded again (the outage write is the replica region's own; it
    // goes home with a rule back to main, as in the failover drill).
    let a = Region::start_at(a_dir.path(), &a_addr, &[]);
    let ca = a.client();
    eventually(20, "the home seen up", || async {
        metric(&b, "feiyun_replication_peer_up{region=\"main\"}") == 1.0
    })
    .await;
    let v3 = put(&cb, "app", "after", b"three".to_vec()).await;
    assert_eq!(body(&ca, "app", "after", &v3).await, b"three");

    // Redirect mode: a 307 naming the home region, before any signature is checked.
    cli_ok(
        &b,
        &[
            "replication",
            "home",
            "app",
            "--region",
            "main",
            "--redirect",
        ],
    );
    let resp = common::raw(
        b.addr,
        "GET /app/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 307, "{}", resp.body_text());
    assert_eq!(
        resp.header("location"),
        Some(format!("{}/app/after", a.endpoint()).as_str())
    );
    assert!(resp.body_text().contains("TemporaryRedirect"));
    // Cleared: served here again.
    assert!(cli_ok(&b, &["replication", "home", "app", "--clear"]).contains("served here"));
    // (Served here, the version shows as this region's replica, not main's COMPLETED.)
    wait_status(30, &cb, "app", &[("after".to_owned(), v3)], "REPLICA").await;
}

/// The destination's KMS key (ReplicaKmsKeyID) seals replicas of SSE-KMS versions, Object
/// Lock retention and legal hold travel with them, and an SSE-C version, whose key the region
/// never keeps, ends FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_and_encrypted_versions_replicate_under_the_destinations_key() {
    let a = Region::start_env(&[("FEIYUN_SSE_C_OVER_HTTP", "true")]);
    let b = Region::start();
    let (ca, cb) = (a.client(), b.client());
    let key_arn = |r: &Region| {
        let (status, k) = common::kms(r, "CreateKey", serde_json::json!({"Description": "r"}));
        assert_eq!(status, 200, "{k}");
        k["KeyMetadata"]["Arn"].as_str().expect("arn").to_owned()
    };
    let (source_key, replica_key) = (key_arn(&a), key_arn(&b));
    for (c, bucket) in [(&ca, "src"), (&cb, "dst")] {
        c.create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .expect("lock bucket");
    }
    add_region(&a, "dr", &b.endpoint());
    let mut r = rule("all", 1, "", "arn:aws:s3:dr::dst", false);
    r.destination = Some(
        Destination::builder()
            .bucket("arn:aws:s3:dr::dst")
            .encryption_configuration(
                aws_sdk_s3::types::EncryptionConfiguration::builder()
                    .replica_kms_key_id(&replica_key)
                    .build(),
            )
            .build()
            .expect("dest"),
    );
    put_replication(&ca, "src", vec![r]).await.expect("rule");

    let until = aws_sdk_s3::primitives::DateTime::from_secs(now_ms() / 1000 + 3600);
    let locked = ca
        .put_object()
        .bucket("src")
        .key("ledger")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .ssekms_key_id(&source_key)
        .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
        .object_lock_retain_until_date(until)
        .object_lock_legal_hold_status(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On)
        .body(ByteStream::from_static(b"entry 1"))
        .send()
        .await
        .expect("locked put")
        .version_id()
        .expect("version")
        .to_owned();
    let customer_key = [7u8; 32];
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let customer = ca
        .put_object()
        .bucket("src")
        .key("customer")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(b64(&customer_key))
        .sse_customer_key_md5(b64(&md5::Md5::digest(customer_key)))
        .body(ByteStream::from_static(b"theirs"))
        .send()
        .await
        .expect("SSE-C put")
        .version_id()
        .expect("version")
        .to_owned();
    wait_status(
        30,
        &ca,
        "src",
        &[("ledger".to_owned(), locked.clone())],
        "COMPLETED",
    )
    .await;
    eventually(60, "the SSE-C version FAILED", || async {
        ca.head_object()
            .bucket("src")
            .key("customer")
            .version_id(&customer)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(b64(&customer_key))
            .sse_customer_key_md5(b64(&md5::Md5::digest(customer_key)))
            .send()
            .await
            .ok()
            .and_then(|h| h.replication_status().map(|s| s.as_str().to_owned()))
            .as_deref()
            == Some("FAILED")
    })
    .await;

    let head = cb
        .head_object()
        .bucket("dst")
        .key("ledger")
        .version_id(&locked)
        .send()
        .await
        .expect("replica");
    assert_eq!(
        head.replication_status().map(|s| s.as_str()),
        Some("REPLICA")
    );
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    assert_eq!(head.ssekms_key_id(), Some(replica_key.as_str()));
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    assert_eq!(
        head.object_lock_retain_until_date().map(|d| d.secs()),
        Some(until.secs())
    );
    assert_eq!(
        head.object_lock_legal_hold_status().map(|s| s.as_str()),
        Some("ON")
    );
    assert_eq!(body(&cb, "dst", "ledger", &locked).await, b"entry 1");
    // The replica is as locked as its source: its version cannot be deleted.
    let del = cb
        .delete_object()
        .bucket("dst")
        .key("ledger")
        .version_id(&locked)
        .send()
        .await;
    assert!(del.is_err(), "a locked replica was deleted");
    assert!(
        cb.head_object()
            .bucket("dst")
            .key("customer")
            .send()
            .await
            .is_err()
    );
}

/// With `replication_proxy_reads`, a read that finds nothing in a bucket replicating to a
/// same-named bucket of a peer is answered by that peer: a version written there and not
/// replicated here yet (the link is down) is readable here all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_versions_not_replicated_yet_are_answered_by_the_peer() {
    let a = Region::start();
    let b = Region::start_env(&[("FEIYUN_REPLICATION_PROXY_READS", "true")]);
    let (ca, cb) = (a.client(), b.client());
    versioned_bucket(&ca, "shared").await;
    versioned_bucket(&cb, "shared").await;
    let a_to_b = common::Link::open(b.addr).await;
    add_region(&a, "b", &a_to_b.url());
    add_region(&b, "a", &a.endpoint());
    put_replication(
        &ca,
        "shared",
        vec![rule("to-b", 1, "", "arn:aws:s3:b::shared", true)],
    )
    .await
    .expect("a→b");
    put_replication(
        &cb,
        "shared",
        vec![rule("to-a", 1, "", "arn:aws:s3:a::shared", true)],
    )
    .await
    .expect("b→a");
    a_to_b.cut();
    let v = put(&ca, "shared", "fresh", b"written at a".to_vec()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&ca, "shared", "fresh", &v).await, "PENDING");
    // Not at b yet; b's reads are answered by a.
    assert_eq!(body(&cb, "shared", "fresh", &v).await, b"written at a");
    let latest = cb
        .get_object()
        .bucket("shared")
        .key("fresh")
        .send()
        .await
        .expect("latest through b");
    assert_eq!(latest.version_id(), Some(v.as_str()));
    // What neither region has is still missing.
    let missing = cb.get_object().bucket("shared").key("nowhere").send().await;
    assert!(format!("{missing:?}").contains("NoSuchKey"));
    // The link heals: the version arrives and b serves its own replica.
    a_to_b.heal();
    wait_status(
        60,
        &ca,
        "shared",
        &[("fresh".to_owned(), v.clone())],
        "COMPLETED",
    )
    .await;
    assert_eq!(status(&cb, "shared", "fresh", &v).await, "REPLICA");
}

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

mod backup;
mod home;
mod live;
mod restore;
mod resync;
mod site;

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

/// Registers `peer` at `r` as a region of the same site (identities follow).
fn add_site_region(r: &Region, name: &str, peer: &str) {
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

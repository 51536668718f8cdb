//! A multi-node region on loopback: three `feiyun server` processes sharing one throwaway
//! PostgreSQL database, each with its own data directory and node id.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

use crate::common::{ACCESS_KEY, Region, SECRET_KEY, free_addr, iam_user, raw};

pub(crate) const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

pub(crate) fn pg() -> &'static feiyun_meta_pg::testkit::Throwaway {
    static PG: std::sync::OnceLock<feiyun_meta_pg::testkit::Throwaway> = std::sync::OnceLock::new();
    PG.get_or_init(feiyun_meta_pg::testkit::Throwaway::start)
}

pub(crate) struct Node {
    pub(crate) region: Region,
    pub(crate) id: String,
    pub(crate) advertise: String,
}

pub(crate) fn node_env<'a>(
    url: &'a str,
    id: &'a str,
    advertise: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("FEIYUN_META_URL", url),
        ("FEIYUN_NODE_ID", id),
        ("FEIYUN_ADVERTISE", advertise),
        ("FEIYUN_ZONE", "zone-a"),
        ("FEIYUN_NODE_DOWN_SECS", "3"),
        ("FEIYUN_CLUSTER_SECRET", CLUSTER_SECRET),
        ("FEIYUN_REPAIR_AFTER_SECS", "2"),
        ("FEIYUN_BLOB_DELETE_GRACE_SECS", "1"),
    ]
}

/// Three nodes `node-0`..`node-2` on the database at `url`, with their data directories.
fn three_nodes(url: &str) -> (Vec<tempfile::TempDir>, Vec<Node>) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = (0..3)
        .map(|i| start_node(dirs[i].path(), url, &format!("node-{i}")))
        .collect();
    (dirs, nodes)
}

pub(crate) fn start_node(dir: &Path, url: &str, id: &str) -> Node {
    start_node_at(dir, url, id, free_addr())
}

pub(crate) fn start_node_at(dir: &Path, url: &str, id: &str, advertise: String) -> Node {
    let region = Region::start_with(dir, &node_env(url, id, &advertise));
    Node {
        region,
        id: id.to_owned(),
        advertise,
    }
}

fn cli_as(r: &Region, keys: (&str, &str), args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(args)
        .env("FEIYUN_ENDPOINT", r.endpoint())
        .env("AWS_ACCESS_KEY_ID", keys.0)
        .env("AWS_SECRET_ACCESS_KEY", keys.1)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run feiyun")
}

pub(crate) fn cli(r: &Region, args: &[&str]) -> Output {
    cli_as(r, (ACCESS_KEY, SECRET_KEY), args)
}

pub(crate) fn status(r: &Region) -> Value {
    let out = cli(r, &["cluster", "status", "--json"]);
    assert!(
        out.status.success(),
        "cluster status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

pub(crate) fn node<'a>(s: &'a Value, id: &str) -> Option<&'a Value> {
    s["nodes"].as_array()?.iter().find(|n| n["id"] == id)
}

/// One line on stderr and a failing exit.
fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_join_heartbeat_drain_and_are_removed_once_down() {
    let url = pg().fresh_database("membership");
    let (dirs, mut nodes) = three_nodes(&url);

    // Every node lists all three, up, with their addresses, zone and disk.
    let s = status(&nodes[1].region);
    assert_eq!(s["answered_by"], "node-1");
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3, "{s}");
    for n in &nodes {
        let v = node(&s, &n.id).unwrap();
        assert_eq!(v["state"], "up", "{v}");
        assert_eq!(v["advertise"], n.advertise.as_str());
        assert_eq!(v["zone"], "zone-a");
        assert!(v["capacity_bytes"].as_u64().unwrap() > 0, "{v}");
    }
    let ready = raw(
        nodes[0].region.addr,
        "GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(ready.status, 200, "{}", ready.body_text());

    // They share one metadata store: a small object written through node 0 (kept in the
    // metadata itself) reads through node 2.
    let c0 = nodes[0].region.client();
    c0.create_bucket().bucket("shared").send().await.unwrap();
    c0.put_object()
        .bucket("shared")
        .key("k")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    let got = nodes[2]
        .region
        .client()
        .get_object()
        .bucket("shared")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"hello"
    );

    // A second machine claiming a running node's id is refused with one line.
    let other = tempfile::tempdir().unwrap();
    let taken = free_addr();
    let err = Region::start_refused(other.path(), &node_env(&url, "node-0", &taken));
    assert!(err.contains("held by a running node"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // So is a second node advertising a running node's address.
    let err = Region::start_refused(other.path(), &node_env(&url, "node-9", &nodes[0].advertise));
    assert!(err.contains("advertised by running node node-0"), "{err}");

    // Drain node 0 through node 1; it stays up and says so, across its own heartbeats.
    let out = cli(&nodes[1].region, &["cluster", "drain", "node-0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "node-0\tdraining"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let s = status(&nodes[2].region);
    assert_eq!(node(&s, "node-0").unwrap()["draining"], true);
    assert_eq!(node(&s, "node-0").unwrap()["state"], "up");

    // An up node cannot be removed.
    let err = refused(&cli(&nodes[1].region, &["cluster", "remove", "node-0"]));
    assert!(err.contains("NodeUp"), "{err}");

    // kill -9 node 2: within node_down_secs (3 s) plus a heartbeat it is down.
    nodes[2].region.kill9();
    let t = Instant::now();
    loop {
        let s = status(&nodes[0].region);
        if node(&s, "node-2").unwrap()["state"] == "down" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "node-2 never went down: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cli(&nodes[0].region, &["cluster", "remove", "node-2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = status(&nodes[0].region);
    assert!(node(&s, "node-2").is_none(), "{s}");
    let err = refused(&cli(&nodes[0].region, &["cluster", "remove", "node-2"]));
    assert!(err.contains("NoSuchNode"), "{err}");

    // Restarted on its own data directory, a node takes its id back at once.
    let again = start_node(dirs[2].path(), &url, "node-2");
    let s = status(&again.region);
    assert_eq!(node(&s, "node-2").unwrap()["state"], "up");
    assert_eq!(node(&s, "node-0").unwrap()["draining"], true);
    let out = cli(&again.region, &["cluster", "drain", "node-0", "--cancel"]);
    assert!(out.status.success());
    assert_eq!(
        node(&status(&again.region), "node-0").unwrap()["draining"],
        false
    );
    nodes[2] = again;

    // A kill -9 and an immediate restart on the same directory and address is not "a second
    // machine"; the same directory at another address while the record is live is a copy.
    nodes[1].region.kill9();
    let err = Region::start_refused(dirs[1].path(), &node_env(&url, "node-1", &free_addr()));
    assert!(err.contains("held by a running node"), "{err}");
    let back = start_node_at(dirs[1].path(), &url, "node-1", nodes[1].advertise.clone());
    assert_eq!(
        node(&status(&back.region), "node-1").unwrap()["state"],
        "up"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_api_is_denied_by_default_and_needs_a_signature() {
    let url = pg().fresh_database("cluster_authz");
    let dir = tempfile::tempdir().unwrap();
    let n = start_node(dir.path(), &url, "solo");
    let unsigned = raw(
        n.region.addr,
        "GET /cluster/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(unsigned.status, 403, "{}", unsigned.body_text());
    assert!(unsigned.body_text().contains("MissingAuthenticationToken"));

    let s3_only = iam_user(
        &n.region,
        "s3-only",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
    );
    let err = refused(&cli_as(
        &n.region,
        (&s3_only.0, &s3_only.1),
        &["cluster", "status"],
    ));
    assert!(err.contains("AccessDenied"), "{err}");
    let reader = iam_user(
        &n.region,
        "reader",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"cluster:ListNodes","Resource":"*"}]}"#,
    );
    let out = cli_as(&n.region, (&reader.0, &reader.1), &["cluster", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("solo\tup"));
    let err = refused(&cli_as(
        &n.region,
        (&reader.0, &reader.1),
        &["cluster", "drain", "solo"],
    ));
    assert!(err.contains("AccessDenied"), "{err}");
}

#[test]
fn a_node_without_a_shared_database_or_address_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = Region::start_refused(dir.path(), &[("FEIYUN_NODE_ID", "a")]);
    assert!(err.contains("--meta-url"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = Region::start_refused(dir.path(), &[("FEIYUN_NODE_ID", "Bad/Id")]);
    assert!(err.contains("node_id"), "{err}");

    // A process that is not a node, on the database of a region that has nodes: it would
    // commit without their cache invalidations, so it is refused.
    let url = pg().fresh_database("lone_process");
    let node_dir = tempfile::tempdir().unwrap();
    let _node = start_node(node_dir.path(), &url, "node-0");
    let lone = tempfile::tempdir().unwrap();
    let err = Region::start_refused(lone.path(), &[("FEIYUN_META_URL", &url)]);
    assert!(err.contains("--node-id"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_single_process_region_says_it_is_not_a_cluster() {
    let r = Region::start();
    let err = refused(&cli(&r, &["cluster", "status"]));
    assert!(err.contains("NotClustered"), "{err}");
}

#[test]
fn a_data_directory_serves_one_process() {
    let r = Region::start();
    let err = Region::start_refused(&r.data_dir, &[]);
    assert!(err.contains("in use by another running process"), "{err}");
}

/// Every node's caches follow changes made through any other within a second: a key
/// disabled through node 1 is refused by node 2, a bucket policy set through node 0 binds
/// on node 2, and a function deployed through node 0 answers on node 2.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_through_one_node_holds_on_every_node_within_a_second() {
    let url = pg().fresh_database("invalidation");
    let (dirs, nodes) = three_nodes(&url);
    let user = iam_user(
        &nodes[0].region,
        "app",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
    );
    nodes[0]
        .region
        .client()
        .create_bucket()
        .bucket("shared")
        .send()
        .await
        .unwrap();
    // The key, created through node 0, works through node 2 (once its cache followed).
    let as_user = |n: &Node| crate::common::client_for(&n.region.endpoint(), &user.0, &user.1);
    let lists = |n: &Node| {
        let c = as_user(n);
        async move { c.list_objects_v2().bucket("shared").send().await.is_ok() }
    };
    let t = Instant::now();
    while !lists(&nodes[2]).await {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "new key unknown on node 2"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Disabled through node 1: refused through node 2 within one second.
    let resp = crate::common::query_call(
        nodes[1].region.addr,
        (ACCESS_KEY, SECRET_KEY),
        "iam",
        "2010-05-08",
        &[
            ("Action", "UpdateAccessKey"),
            ("UserName", "app"),
            ("AccessKeyId", &user.0),
            ("Status", "Inactive"),
        ],
    );
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let t = Instant::now();
    while lists(&nodes[2]).await {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a disabled key still works on node 2 after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A bucket policy denying everyone's reads, set through node 0, binds on node 2.
    let root2 = nodes[2].region.client();
    root2
        .put_object()
        .bucket("shared")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
    let reader = iam_user(
        &nodes[0].region,
        "reader",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#,
    );
    let rc = crate::common::client_for(&nodes[2].region.endpoint(), &reader.0, &reader.1);
    let t = Instant::now();
    while rc
        .get_object()
        .bucket("shared")
        .key("k")
        .send()
        .await
        .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "reader unknown on node 2"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes[0]
        .region
        .client()
        .put_bucket_policy()
        .bucket("shared")
        .policy(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::shared/*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    while rc
        .get_object()
        .bucket("shared")
        .key("k")
        .send()
        .await
        .is_ok()
    {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the policy is not seen on node 2"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A function deployed through node 0 answers through node 2.
    let wasm = wat::parse_file(format!(
        "{}/../fc/tests/guests/hello.wat",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let file = dirs[0].path().join("hello.wasm");
    std::fs::write(&file, wasm).unwrap();
    let out = cli(
        &nodes[0].region,
        &["fc", "deploy", "hello", "--wasm", file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&nodes[2].region, &["fc", "invoke", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wasm\n");

    // A peer region registered through node 1 is known to node 2 (which may hold the lease
    // that runs the replication worker).
    let out = cli(
        &nodes[1].region,
        &[
            "region",
            "add",
            "dr",
            "--url",
            "http://127.0.0.1:9",
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    loop {
        let out = cli(&nodes[2].region, &["region", "list"]);
        if String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:9") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "peer unknown on node 2"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Background work runs once per region: each event reaches a webhook once, not once per
/// node, and when the node holding the background lease dies another takes over.
#[tokio::test(flavor = "multi_thread")]
async fn events_are_delivered_once_per_region_and_outlive_the_lease_holder() {
    use crate::notifications::{Receiver, notification};
    let url = pg().fresh_database("background");
    let hook = Receiver::start();
    let webhooks = format!("hook={}", hook.url);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let id = format!("node-{i}");
            let advertise = free_addr();
            let mut env = node_env(&url, &id, &advertise);
            env.push(("FEIYUN_WEBHOOKS", webhooks.as_str()));
            Node {
                region: Region::start_with(dirs[i].path(), &env),
                id,
                advertise,
            }
        })
        .collect();
    let c = nodes[0].region.client();
    c.create_bucket().bucket("events").send().await.unwrap();
    c.put_bucket_notification_configuration()
        .bucket("events")
        .notification_configuration(notification("", "arn:feiyun:sqs:us-east-1:0:hook"))
        .send()
        .await
        .unwrap();
    let put = |n: &Node, key: String| {
        let c = n.region.client();
        async move {
            c.put_object()
                .bucket("events")
                .key(key)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .unwrap();
        }
    };
    for i in 0..9 {
        put(&nodes[i % 3], format!("a{i}")).await;
    }
    let t = Instant::now();
    while hook.events().len() < 9 {
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", hook.events());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let mut keys: Vec<String> = hook.events().into_iter().map(|(_, k)| k).collect();
    keys.sort();
    assert_eq!(
        keys,
        (0..9).map(|i| format!("a{i}")).collect::<Vec<_>>(),
        "once each"
    );

    // kill -9 the lease holder: a survivor takes the lease over and delivers the rest.
    let s = status(&nodes[0].region);
    let holder = s["background_lease"]["holder"].as_str().unwrap().to_owned();
    let fence = s["background_lease"]["fence"].as_u64().unwrap();
    let h = nodes.iter().position(|n| n.id == holder).unwrap();
    nodes[h].region.kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != h).collect();
    for (j, i) in survivors.iter().enumerate() {
        put(&nodes[*i], format!("b{j}")).await;
    }
    let t = Instant::now();
    loop {
        let got: std::collections::BTreeSet<String> =
            hook.events().into_iter().map(|(_, k)| k).collect();
        if got.contains("b0") && got.contains("b1") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "not delivered: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = status(&nodes[survivors[0]].region);
    assert_ne!(s["background_lease"]["holder"], holder.as_str(), "{s}");
    assert!(
        s["background_lease"]["fence"].as_u64().unwrap() > fence,
        "{s}"
    );
}

/// PostgreSQL restarted under load: requests fail cleanly with 503 while it is down, the
/// nodes recover without a restart, and every write acknowledged reads back whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_restart_fails_requests_cleanly_and_the_nodes_recover() {
    // Its own server: the others' tests must not see it go down.
    let db = feiyun_meta_pg::testkit::Throwaway::start();
    let url = db.fresh_database("restart");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Node> = (0..2)
        .map(|i| start_node(dirs[i].path(), &url, &format!("node-{i}")))
        .collect();
    std::thread::sleep(Duration::from_millis(1200));
    let c: Vec<_> = nodes.iter().map(|n| n.region.client()).collect();
    c[0].create_bucket()
        .bucket("restarts")
        .send()
        .await
        .unwrap();
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let put = async |i: usize, key: String, acked: &mut Vec<(String, Vec<u8>)>| {
        let data =
            crate::common::pattern(if i.is_multiple_of(2) { 1000 } else { 150_000 }, i as u64);
        match c[i % 2]
            .put_object()
            .bucket("restarts")
            .key(&key)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
        {
            Ok(_) => {
                acked.push((key, data));
                None
            }
            Err(e) => Some(e.raw_response().map(|r| r.status().as_u16())),
        }
    };
    for i in 0..6 {
        assert_eq!(put(i, format!("before{i}"), &mut acked).await, None);
    }
    db.stop();
    let t = Instant::now();
    let mut i = 0;
    while t.elapsed() < Duration::from_secs(3) {
        let key = format!("during{i}");
        if let Some(status) = put(i, key.clone(), &mut acked).await {
            assert_eq!(
                status,
                Some(503),
                "{key}: a clean 503 while the database is down"
            );
            refused.push(key);
        }
        i += 1;
    }
    assert!(
        !refused.is_empty(),
        "nothing failed while the database was down"
    );
    let got = c[1]
        .get_object()
        .bucket("restarts")
        .key("before1")
        .send()
        .await;
    assert_eq!(
        got.unwrap_err().raw_response().map(|r| r.status().as_u16()),
        Some(503)
    );
    db.restart();
    // Both nodes come back by themselves.
    for (n, client) in c.iter().enumerate() {
        let t = Instant::now();
        loop {
            let r = client
                .put_object()
                .bucket("restarts")
                .key(format!("after{n}"))
                .body(ByteStream::from_static(b"back"))
                .send()
                .await;
            if r.is_ok() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "node-{n} did not recover: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    for (key, data) in &acked {
        let got = c[0]
            .get_object()
            .bucket("restarts")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            &got.body.collect().await.unwrap().into_bytes()[..],
            &data[..],
            "{key}"
        );
    }
    // A refused write is absent, or (its commit landed as the connection broke) whole.
    for key in &refused {
        if let Ok(got) = c[1].get_object().bucket("restarts").key(key).send().await {
            let i: usize = key.trim_start_matches("during").parse().unwrap();
            let want =
                crate::common::pattern(if i.is_multiple_of(2) { 1000 } else { 150_000 }, i as u64);
            assert_eq!(
                got.body.collect().await.unwrap().into_bytes().to_vec(),
                want
            );
        }
    }
}

/// Each node answers small GETs from its row cache, yet no node ever returns an object
/// older than the last write acknowledged before the GET began, through any node: the
/// writer's commit returns only after every node that may cache the key dropped it.
#[tokio::test(flavor = "multi_thread")]
async fn every_node_reads_the_last_acknowledged_write_though_it_caches() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let url = pg().fresh_database("row_cache");
    let (_dirs, nodes) = three_nodes(&url);
    let clients: Vec<_> = nodes.iter().map(|n| n.region.client()).collect();
    clients[0]
        .create_bucket()
        .bucket("hot")
        .send()
        .await
        .unwrap();
    let body = |n: u64| ByteStream::from(format!("{n:020}").into_bytes());
    let read = |c: aws_sdk_s3::Client, key: &'static str| async move {
        match c.get_object().bucket("hot").key(key).send().await {
            Ok(o) => {
                let b = o.body.collect().await.unwrap().into_bytes();
                Some(std::str::from_utf8(&b).unwrap().parse::<u64>().unwrap())
            }
            Err(e) => {
                let e = e.into_service_error();
                assert!(e.is_no_such_key(), "{e:?}");
                None
            }
        }
    };

    // Sequential: a write through one node, then reads through all three (warming their
    // caches with the old version first, so a missed invalidation would show).
    for n in 1..=30u64 {
        for c in &clients {
            read(c.clone(), "seq").await;
        }
        let w = &clients[n as usize % 3];
        if n % 10 == 0 {
            w.delete_object()
                .bucket("hot")
                .key("seq")
                .send()
                .await
                .unwrap();
            for (i, c) in clients.iter().enumerate() {
                assert_eq!(
                    read(c.clone(), "seq").await,
                    None,
                    "node {i} after delete {n}"
                );
            }
        } else {
            w.put_object()
                .bucket("hot")
                .key("seq")
                .body(body(n))
                .send()
                .await
                .unwrap();
            for (i, c) in clients.iter().enumerate() {
                assert_eq!(
                    read(c.clone(), "seq").await,
                    Some(n),
                    "node {i} after write {n}"
                );
            }
        }
    }

    // A PUT through a node that never read the key plans it as new from its cache; the
    // commit finds the key and plans again inside the transaction. A versioned key keeps
    // every version, in order, and an unversioned one is replaced.
    clients[0]
        .create_bucket()
        .bucket("kept")
        .send()
        .await
        .unwrap();
    clients[0]
        .put_bucket_versioning()
        .bucket("kept")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let put = c.put_object().bucket("kept").key("k").body(body(i as u64));
        ids.push(put.send().await.unwrap().version_id.unwrap());
        let other = &clients[(i + 1) % 3];
        let put = other.put_object().bucket("hot").key(format!("fresh-{i}"));
        put.body(body(i as u64)).send().await.unwrap();
    }
    let listed = clients[1]
        .list_object_versions()
        .bucket("kept")
        .send()
        .await
        .unwrap();
    let got: Vec<String> = listed
        .versions()
        .iter()
        .map(|v| v.version_id().unwrap().to_owned())
        .collect();
    ids.reverse();
    assert_eq!(got, ids, "versions newest first, none lost");
    for (i, c) in clients.iter().enumerate() {
        let put = c.put_object().bucket("hot").key("fresh-0");
        put.body(body(100 + i as u64)).send().await.unwrap();
        for (j, r) in clients.iter().enumerate() {
            assert_eq!(
                read(r.clone(), "fresh-0").await,
                Some(100 + i as u64),
                "node {j}"
            );
        }
    }

    // Concurrent: a writer through node 0 and one through node 1, each publishing
    // increasing numbers under its own key; readers through every node must never see a
    // number below what was acknowledged for that key when their GET began.
    let keys: [&'static str; 2] = ["race-0", "race-1"];
    let acked: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut tasks = Vec::new();
    for w in 0..2 {
        let (c, acked) = (clients[w].clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                c.put_object()
                    .bucket("hot")
                    .key(keys[w])
                    .body(body(n))
                    .send()
                    .await
                    .unwrap();
                acked[w].store(n, Ordering::SeqCst);
            }
        }));
    }
    for r in 0..6 {
        let (c, acked) = (clients[r % 3].clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut reads = 0;
            while Instant::now() < deadline {
                let k = reads % 2;
                let floor = acked[k].load(Ordering::SeqCst);
                let got = read(c.clone(), keys[k]).await.unwrap_or(0);
                assert!(
                    got >= floor,
                    "reader {r} saw {got} of {} after {floor} was acknowledged",
                    keys[k]
                );
                reads += 1;
            }
            assert!(reads > 10);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The reads above were served from the caches, not only from the database.
    let hits: u64 = nodes
        .iter()
        .map(|n| crate::cluster_blobs::counter(&n.region.metrics(), "feiyun_row_cache_hits_total"))
        .sum();
    assert!(hits > 50, "row caches answered {hits} reads");
}

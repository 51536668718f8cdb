//! Blobs across the nodes of a region: three `feiyun server` processes on loopback sharing
//! one throwaway PostgreSQL database, each blob stored on every node.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::cluster::{Node, node, node_env, pg, start_node, status};
use crate::common::{Region, pattern, raw};

/// The stored blob files of a node (never a partial `.part` upload).
pub(crate) fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir.join("blobs")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_none() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub(crate) async fn get(n: &Node, bucket: &str, key: &str) -> Vec<u8> {
    let got = n
        .region
        .client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key} through {}: {e:?}", n.id));
    got.body.collect().await.unwrap().into_bytes().to_vec()
}

/// A counter's value in a Prometheus text exposition.
pub(crate) fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Placement reads the node list at most a second old: a node that just joined gets
/// copies from the others a second later.
pub(crate) fn settle() {
    std::thread::sleep(Duration::from_millis(1200));
}

pub(crate) fn wait_until_down(by: &Node, id: &str) {
    let t = Instant::now();
    while node(&status(&by.region), id).unwrap()["state"] != "down" {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{id} never went down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_are_copied_to_every_node_and_read_through_any() {
    let url = pg().fresh_database("blobs");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start_node(dirs[i].path(), &url, &format!("node-{i}")))
        .collect();
    settle();
    let c: Vec<_> = nodes.iter().map(|n| n.region.client()).collect();
    c[0].create_bucket().bucket("data").send().await.unwrap();

    // An object too large to live in the metadata: a blob, copied to all three nodes.
    let big = pattern(1024 * 1024 + 17, 1);
    c[0].put_object()
        .bucket("data")
        .key("big")
        .body(ByteStream::from(big.clone()))
        .send()
        .await
        .unwrap();
    for d in &dirs {
        assert_eq!(blob_files(d.path()).len(), 1, "one copy on each node");
    }
    for n in &nodes {
        assert_eq!(get(n, "data", "big").await, big, "through {}", n.id);
    }

    // A multipart upload whose parts go through different nodes.
    let up = c[0]
        .create_multipart_upload()
        .bucket("data")
        .key("mp")
        .send()
        .await
        .unwrap();
    let upload_id = up.upload_id().unwrap();
    let parts = [pattern(5 * 1024 * 1024, 2), pattern(300_000, 3)];
    let mut done = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let out = c[i + 1]
            .upload_part()
            .bucket("data")
            .key("mp")
            .upload_id(upload_id)
            .part_number(i as i32 + 1)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .unwrap();
        done.push(
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    c[2].complete_multipart_upload()
        .bucket("data")
        .key("mp")
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let whole = [parts[0].clone(), parts[1].clone()].concat();
    assert_eq!(get(&nodes[0], "data", "mp").await, whole);
    let ranged = c[1]
        .get_object()
        .bucket("data")
        .key("mp")
        .range("bytes=5242000-5243999")
        .send()
        .await
        .unwrap();
    let ranged = ranged.body.collect().await.unwrap().into_bytes();
    assert_eq!(&ranged[..], &whole[5_242_000..5_244_000]);

    // A flipped byte in node 1's copies is never served: its reads fall back to another.
    for f in blob_files(dirs[1].path()) {
        let mut bytes = std::fs::read(&f).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        std::fs::write(&f, &bytes).unwrap();
    }
    assert_eq!(get(&nodes[1], "data", "big").await, big);
    assert_eq!(get(&nodes[1], "data", "mp").await, whole);
    // ... and repair rewrites each damaged copy from a good one: every copy of a blob holds
    // the same stored bytes.
    wait_for("node 1's copies rewritten", || {
        blob_files(dirs[1].path()).iter().all(|f| {
            let twin = dirs[0].path().join(f.strip_prefix(dirs[1].path()).unwrap());
            std::fs::read(f).unwrap() == std::fs::read(twin).unwrap()
        })
    });
    let m = nodes[1].region.metrics();
    assert!(
        counter(&m, "feiyun_cluster_read_fallbacks_total") >= 2,
        "{m}"
    );
    assert!(counter(&m, "feiyun_cluster_repaired_total") >= 3, "{m}");

    // One node down: writes keep two copies, and read through either survivor.
    nodes[2].region.kill9();
    wait_until_down(&nodes[0], "node-2");
    let before: Vec<usize> = dirs.iter().map(|d| blob_files(d.path()).len()).collect();
    let two = pattern(200_000, 4);
    c[0].put_object()
        .bucket("data")
        .key("two")
        .body(ByteStream::from(two.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(blob_files(dirs[0].path()).len(), before[0] + 1);
    assert_eq!(blob_files(dirs[1].path()).len(), before[1] + 1);
    assert_eq!(get(&nodes[1], "data", "two").await, two);
    // ... and a delete removes both copies once nothing references them.
    c[1].delete_object()
        .bucket("data")
        .key("two")
        .send()
        .await
        .unwrap();
    wait_for("both copies collected", || {
        blob_files(dirs[0].path()).len() == before[0]
            && blob_files(dirs[1].path()).len() == before[1]
    });

    // Two of three down: fewer than min_replicas (2) can take a copy, so a write is refused
    // with S3's 503, and nothing becomes visible.
    nodes[1].region.kill9();
    wait_until_down(&nodes[0], "node-1");
    let err = c[0]
        .put_object()
        .bucket("data")
        .key("refused")
        .body(ByteStream::from(pattern(100_000, 5)))
        .send()
        .await
        .unwrap_err();
    let raw_err = err.raw_response().expect("an HTTP answer");
    assert_eq!(raw_err.status().as_u16(), 503, "{err:?}");
    assert!(format!("{err:?}").contains("ServiceUnavailable"), "{err:?}");
    assert!(
        c[0].head_object()
            .bucket("data")
            .key("refused")
            .send()
            .await
            .is_err()
    );
    // The survivor still serves what it has a good copy of.
    assert_eq!(get(&nodes[0], "data", "big").await, big);
}

/// The cluster listener answers only requests signed with the region's secret, and a node
/// holding another secret can neither store copies on the others nor take theirs.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_cluster_secret_is_refused() {
    let url = pg().fresh_database("blob_secret");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let good: Vec<Node> = (0..2)
        .map(|i| start_node(dirs[i].path(), &url, &format!("node-{i}")))
        .collect();
    let addr: std::net::SocketAddr = good[0].advertise.parse().unwrap();
    let id = "0".repeat(32);
    for req in [
        format!("GET /blob/{id}?size HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!(
            "GET /blob/{id}?size HTTP/1.1\r\nHost: x\r\nx-feiyun-node: n\r\nx-feiyun-date: {}\r\n\
             x-feiyun-signature: {}\r\nConnection: close\r\n\r\n",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            "ab".repeat(32)
        ),
    ] {
        let r = raw(addr, &req);
        assert_eq!(r.status, 403, "{}", r.body_text());
    }

    let advertise = crate::common::free_addr();
    let mut env = node_env(&url, "node-x", &advertise);
    env.retain(|(k, _)| *k != "FEIYUN_CLUSTER_SECRET");
    env.push(("FEIYUN_CLUSTER_SECRET", "another-secret-entirely"));
    let stranger = Node {
        region: Region::start_with(dirs[2].path(), &env),
        id: "node-x".into(),
        advertise,
    };
    let cx = stranger.region.client();
    cx.create_bucket().bucket("sealed").send().await.unwrap();
    // Through the stranger: only its own copy lands, one short of min_replicas.
    let err = cx
        .put_object()
        .bucket("sealed")
        .key("k")
        .body(ByteStream::from(pattern(100_000, 6)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    // Through a good node: the stranger refuses its copy, the two good nodes hold it.
    let data = pattern(100_000, 7);
    good[1]
        .region
        .client()
        .put_object()
        .bucket("sealed")
        .key("k")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert!(
        blob_files(dirs[2].path()).is_empty(),
        "the stranger got a copy"
    );
    assert_eq!(get(&good[0], "sealed", "k").await, data);
    // The stranger cannot read the copies either.
    assert!(
        cx.get_object()
            .bucket("sealed")
            .key("k")
            .send()
            .await
            .is_err()
    );
}

/// kill -9 of one node under a write load, rotating the victim, 30 times: every write the
/// survivors acknowledged reads back, byte for byte, through every node.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9_of_any_node() {
    let url = pg().fresh_database("blob_kill");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start_node(dirs[i].path(), &url, &format!("node-{i}")))
        .collect();
    nodes[0]
        .region
        .client()
        .create_bucket()
        .bucket("load")
        .send()
        .await
        .unwrap();
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    for cycle in 0..30u64 {
        let victim = (cycle % 3) as usize;
        let survivors: Vec<_> = (0..3)
            .filter(|i| *i != victim)
            .map(|i| nodes[i].region.client())
            .collect();
        let mut writes = Vec::new();
        for w in 0..6u64 {
            let c = survivors[w as usize % 2].clone();
            let key = format!("c{cycle}-w{w}");
            let data = pattern(100_000 + (w as usize) * 7_000, cycle * 10 + w);
            writes.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(w * 15)).await;
                let r = c
                    .put_object()
                    .bucket("load")
                    .key(&key)
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await;
                (key, data, r.map(|_| ()).map_err(|e| format!("{e:?}")))
            }));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        nodes[victim].region.kill9();
        for w in writes {
            let (key, data, r) = w.await.unwrap();
            // Two nodes stay up, as min_replicas asks: no write through them may fail.
            r.unwrap_or_else(|e| panic!("cycle {cycle}: {key}: {e}"));
            acked.push((key, data));
        }
        let (id, advertise) = (nodes[victim].id.clone(), nodes[victim].advertise.clone());
        nodes[victim] = crate::cluster::start_node_at(dirs[victim].path(), &url, &id, advertise);
    }
    for n in &nodes {
        for (key, data) in &acked {
            assert_eq!(&get(n, "load", key).await, data, "{key} through {}", n.id);
        }
    }
    // Writes made while a node was down got two copies; repair gives them their third,
    // and no node ends up with a copy nothing names.
    wait_for("every blob on every node", || {
        dirs.iter()
            .all(|d| blob_files(d.path()).len() == acked.len())
    });
    wait_for("no repair backlog", || {
        let s = status(&nodes[0].region);
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["repair_backlog"] == 0)
    });
}

/// `feiyun cluster drain` moves a node's copies to the others; cancelled, nothing moves.
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_node_gives_its_copies_away() {
    let url = pg().fresh_database("blob_drain");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            let id = format!("node-{i}");
            let advertise = crate::common::free_addr();
            let mut env = node_env(&url, &id, &advertise);
            env.push(("FEIYUN_REPLICAS", "1"));
            Node {
                region: Region::start_with(dirs[i].path(), &env),
                id,
                advertise,
            }
        })
        .collect();
    settle();
    let c = nodes[0].region.client();
    c.create_bucket().bucket("drain").send().await.unwrap();
    let mut objects = Vec::new();
    for i in 0..12u64 {
        let data = pattern(80_000, 100 + i);
        c.put_object()
            .bucket("drain")
            .key(format!("k{i}"))
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        objects.push(data);
    }
    let on: Vec<usize> = dirs.iter().map(|d| blob_files(d.path()).len()).collect();
    assert_eq!(on[0] + on[1], 12, "one copy each: {on:?}");
    assert!(on[0] > 0 && on[1] > 0, "rendezvous spreads them: {on:?}");
    let out = crate::cluster::cli(&nodes[1].region, &["cluster", "drain", "node-0"]);
    assert!(out.status.success());
    wait_for("node-0 emptied", || {
        blob_files(dirs[0].path()).is_empty() && blob_files(dirs[1].path()).len() == 12
    });
    for (i, data) in objects.iter().enumerate() {
        assert_eq!(&get(&nodes[0], "drain", &format!("k{i}")).await, data);
    }
    // New writes skip the draining node, once the writer's node list (at most a second
    // old) shows the drain: the copies can move away faster than that.
    settle();
    c.put_object()
        .bucket("drain")
        .key("after")
        .body(ByteStream::from(pattern(80_000, 999)))
        .send()
        .await
        .unwrap();
    assert!(blob_files(dirs[0].path()).is_empty());
}

/// A node cut off from the database and from the other nodes during writes, then healed:
/// no acknowledged write is lost, its copies are made up, and an access key disabled
/// meanwhile is refused by it within a second of healing.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_during_writes_catches_up_when_healed() {
    use crate::common::{ACCESS_KEY, Link, SECRET_KEY, iam_user, query_call};
    let url = pg().fresh_database("blob_partition");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| start_node(dirs[i].path(), &url, &format!("node-{i}")))
        .collect();
    // Node 2 reaches the database, and is reached by the others, through links the test cuts.
    let pg_port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let db_link = Link::open(([127, 0, 0, 1], pg_port).into()).await;
    let listen = crate::common::free_addr();
    let peer_link = Link::open(listen.parse().unwrap()).await;
    let linked_url = url.replace(
        &format!(":{pg_port}/"),
        &format!(":{}/", db_link.addr.port()),
    );
    let advertise = peer_link.addr.to_string();
    let mut env = node_env(&linked_url, "node-2", &advertise);
    env.push(("FEIYUN_CLUSTER_LISTEN", &listen));
    nodes.push(Node {
        region: Region::start_with(dirs[2].path(), &env),
        id: "node-2".into(),
        advertise: advertise.clone(),
    });
    settle();
    let c0 = nodes[0].region.client();
    c0.create_bucket().bucket("cut").send().await.unwrap();
    let user = iam_user(
        &nodes[0].region,
        "app",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
    );
    let as_user = crate::common::client_for(&nodes[2].region.endpoint(), &user.0, &user.1);
    wait_for("node 2 knows the key", || {
        futures::executor::block_on(as_user.list_objects_v2().bucket("cut").send()).is_ok()
    });

    db_link.cut();
    peer_link.cut();
    let mut acked = Vec::new();
    for i in 0..4u64 {
        let data = pattern(120_000, 500 + i);
        c0.put_object()
            .bucket("cut")
            .key(format!("k{i}"))
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("k{i} through node 0 while node 2 is cut off: {e:?}"));
        acked.push(data);
    }
    let resp = query_call(
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

    db_link.heal();
    peer_link.heal();
    let healed = Instant::now();
    while as_user.list_objects_v2().bucket("cut").send().await.is_ok() {
        assert!(
            healed.elapsed() < Duration::from_secs(1),
            "node 2 still takes a disabled key {:?} after healing",
            healed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in &nodes {
        for (i, data) in acked.iter().enumerate() {
            assert_eq!(
                &get(n, "cut", &format!("k{i}")).await,
                data,
                "k{i} via {}",
                n.id
            );
        }
    }
    wait_for("node 2 got its copies", || {
        blob_files(dirs[2].path()).len() == acked.len()
    });
}

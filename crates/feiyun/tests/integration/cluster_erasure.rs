//! Erasure-coded blobs: a region of six nodes storing its cold storage classes as 4+2
//! shards, one shard on each node.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};

use crate::cluster::{Node, node_env, pg, status};
use crate::cluster_blobs::{blob_files, counter, get, settle, wait_for, wait_until_down};
use crate::common::{Region, free_addr, pattern};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn start(dir: &std::path::Path, url: &str, id: &str, advertise: String) -> Node {
    let mut env = node_env(url, id, &advertise);
    env.push(("FEIYUN_ERASURE", "4+2"));
    let region = Region::start_with(dir, &env);
    Node {
        region,
        id: id.to_owned(),
        advertise,
    }
}

/// The error code and message of a GET that failed.
async fn get_error(n: &Node, key: &str) -> (String, String) {
    let e = n
        .region
        .client()
        .get_object()
        .bucket("cold")
        .key(key)
        .send()
        .await
        .expect_err("the GET should fail");
    let e = e.into_service_error();
    let meta = aws_sdk_s3::error::ProvideErrorMetadata::meta(&e);
    (
        meta.code().unwrap_or_default().to_owned(),
        meta.message().unwrap_or_default().to_owned(),
    )
}

async fn read_all(n: &Option<Node>, objects: &[(&str, Vec<u8>)]) {
    let n = n.as_ref().unwrap();
    for (key, data) in objects {
        assert_eq!(&get(n, "cold", key).await, data, "{key} through {}", n.id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn coded_blobs_read_with_m_nodes_gone_and_refuse_clearly_with_more() {
    let url = pg().fresh_database("erasure");
    let dirs: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs: Vec<String> = (0..8).map(|_| free_addr()).collect();
    let mut nodes: Vec<Option<Node>> = (0..6)
        .map(|i| {
            Some(start(
                dirs[i].path(),
                &url,
                &format!("node-{i}"),
                addrs[i].clone(),
            ))
        })
        .collect();
    settle();
    let n0 = nodes[0].as_ref().unwrap().region.client();
    n0.create_bucket().bucket("cold").send().await.unwrap();

    // Objects of the infrequent-access class: shorter than a stripe, across stripes with an
    // odd tail, and a multipart upload whose parts are coded each.
    let objects: Vec<(&str, Vec<u8>)> = vec![
        ("small", pattern(100_000, 1)),
        ("stripes", pattern(3 * 1024 * 1024 + 5, 2)),
    ];
    for (key, data) in &objects {
        n0.put_object()
            .bucket("cold")
            .key(*key)
            .storage_class(StorageClass::StandardIa)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
    }
    let up = n0
        .create_multipart_upload()
        .bucket("cold")
        .key("mp")
        .storage_class(StorageClass::StandardIa)
        .send()
        .await
        .unwrap();
    let parts = [pattern(5 * 1024 * 1024, 3), pattern(700_001, 4)];
    let mut done = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let through = nodes[i + 1].as_ref().unwrap().region.client();
        let out = through
            .upload_part()
            .bucket("cold")
            .key("mp")
            .upload_id(up.upload_id().unwrap())
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
    n0.complete_multipart_upload()
        .bucket("cold")
        .key("mp")
        .upload_id(up.upload_id().unwrap())
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut objects = objects;
    objects.push(("mp", parts.concat()));
    // A STANDARD object stays replicated: three whole copies.
    let standard = pattern(2 * 1024 * 1024, 5);
    n0.put_object()
        .bucket("cold")
        .key("standard")
        .body(ByteStream::from(standard.clone()))
        .send()
        .await
        .unwrap();

    // Four coded blobs (two objects, two parts): one shard of each on every node, each a
    // quarter of its blob (plus its checksums), so the region holds 1.5x, not 3x.
    let coded_bytes: u64 = [100_000u64, 3 * 1024 * 1024 + 5, 5 * 1024 * 1024, 700_001]
        .iter()
        .sum();
    let mut stored = 0u64;
    let mut replicas = 0;
    for d in &dirs[..6] {
        let files = blob_files(d.path());
        let sizes: Vec<u64> = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .collect();
        let whole = sizes
            .iter()
            .filter(|s| **s >= standard.len() as u64)
            .count();
        replicas += whole;
        assert_eq!(
            files.len() - whole,
            4,
            "one shard of each coded blob on each node: {sizes:?}"
        );
        stored += sizes
            .iter()
            .filter(|s| **s < standard.len() as u64)
            .sum::<u64>();
    }
    assert_eq!(replicas, 3, "the STANDARD object has three copies");
    let ratio = stored as f64 / coded_bytes as f64;
    assert!(
        (1.45..1.6).contains(&ratio),
        "coded blobs take {ratio:.3}x their size"
    );

    // A flipped byte in each shard node-2 holds. Unread, the scrubber finds them (parity
    // shards are never read while the data shards are sound) and repair rewrites them in
    // place: every node holds a shard of each blob, so there is no other node to move them
    // to. Flipped again, they are never served: reads rebuild around them.
    let shards: Vec<(std::path::PathBuf, Vec<u8>)> = blob_files(dirs[2].path())
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .filter(|(_, b)| b.len() < standard.len())
        .collect();
    assert_eq!(shards.len(), 4);
    let flip = || {
        for (f, bytes) in &shards {
            let mut bad = bytes.clone();
            bad[100] ^= 0x20;
            std::fs::write(f, &bad).unwrap();
        }
    };
    let rewritten = || {
        shards
            .iter()
            .all(|(f, bytes)| std::fs::read(f).is_ok_and(|now| &now == bytes))
    };
    flip();
    wait_for(
        "damaged shards found by the scrubber and rewritten",
        rewritten,
    );
    let m = nodes[2].as_ref().unwrap().region.metrics();
    assert!(
        counter(&m, "feiyun_cluster_scrub_damaged_total") >= 4,
        "{m}"
    );
    // Only sound shards count as scrubbed bytes: the pass that found all four damaged
    // counted none, and a later pass verifies the rewritten ones.
    wait_for("a later scrub pass verifying the rewritten shards", || {
        let m = nodes[2].as_ref().unwrap().region.metrics();
        counter(&m, "feiyun_cluster_scrubbed_bytes_total") > 0
    });
    flip();
    read_all(&nodes[0], &objects).await;
    wait_for("damaged shards rewritten", rewritten);

    // m = 2 nodes gone (kill -9): every object reads, byte for byte, at once and once they
    // are known to be down.
    for i in [4, 5] {
        nodes[i].as_mut().unwrap().region.kill9();
    }
    read_all(&nodes[0], &objects).await;
    wait_until_down(nodes[0].as_ref().unwrap(), "node-5");
    read_all(&nodes[3], &objects).await;

    // m + 1 gone: a clear 503 naming the shortage, never bytes.
    nodes[3].as_mut().unwrap().region.kill9();
    let (code, message) = get_error(nodes[1].as_ref().unwrap(), "stripes").await;
    assert_eq!(code, "ServiceUnavailable", "{message}");
    wait_until_down(nodes[0].as_ref().unwrap(), "node-3");
    let (code, message) = get_error(nodes[1].as_ref().unwrap(), "mp").await;
    assert_eq!(code, "ServiceUnavailable", "{message}");
    // The client is told the region is short of nodes; which shards, only the log says.
    assert!(message.contains("storage nodes"), "{message}");

    // Back to m gone; two new nodes join. Once repair_after_secs has passed, the shards of
    // the two dead nodes are rebuilt on the new ones (the only nodes without a shard).
    nodes[3] = Some(start(dirs[3].path(), &url, "node-3", addrs[3].clone()));
    for i in [6, 7] {
        nodes.push(Some(start(
            dirs[i].path(),
            &url,
            &format!("node-{i}"),
            addrs[i].clone(),
        )));
    }
    read_all(&nodes[3], &objects).await;
    // Only shard-sized files count: a new node may also receive a whole copy of the
    // STANDARD object, which would make three shards look like four.
    let shard_files = |d: &std::path::Path| {
        blob_files(d)
            .iter()
            .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.len() < standard.len() as u64))
            .count()
    };
    wait_for("shards rebuilt on the new nodes", || {
        dirs[6..].iter().all(|d| shard_files(d.path()) == 4)
    });
    // A blob's record is rewritten only after all its lost shards are rebuilt, in the same
    // repair pass that wrote the last file. Passes run every second on each node; a pass
    // that ends with nothing short shows on the node's next heartbeat. So wait until every
    // up node has reported a zero backlog from a heartbeat well after the files appeared.
    let files_done = now_ms();
    wait_for("records naming the new nodes", || {
        let s = status(&nodes[0].as_ref().unwrap().region);
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"] == "up")
            .all(|n| {
                n["repair_backlog"] == 0
                    && n["heartbeat_ms"].as_i64().unwrap_or(0) > files_done + 3_000
            })
    });
    // With the rebuilt shards, two more original nodes may go: four good shards remain.
    for i in [2, 3] {
        nodes[i].as_mut().unwrap().region.kill9();
    }
    read_all(&nodes[0], &objects).await;
    read_all(&nodes[7], &objects).await;
}

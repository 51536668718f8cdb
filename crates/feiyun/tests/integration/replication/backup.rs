//! Backups to an S3 bucket: incremental, deduplicated, verified, restored anywhere.

use super::*;

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

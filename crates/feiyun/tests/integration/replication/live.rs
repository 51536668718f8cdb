//! Live replication between two regions: versions, markers and tags with their ids, a
//! refusing or dead destination, two-way convergence, a partition under load, and locked and
//! encrypted versions.

use super::*;

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

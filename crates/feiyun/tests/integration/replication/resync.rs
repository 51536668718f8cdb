//! Resync: existing objects backfilled to a new destination, and a lost region rebuilt.

use super::*;

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

//! Point-in-time restore from a bucket's recorded history.

use super::*;

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

//! Crash test: concurrent PUTs (small, blob-sized and multipart) with kill -9 at random
//! moments, 20 rounds on one data directory. Every acknowledged object must read back
//! byte-identical; a visible object must be exactly what some writer sent for that key;
//! after recovery no blob file is left that no object or upload references. Two of the
//! writers overwrite a few keys of a versioned bucket over and over: every acknowledged
//! version must stay readable by its id, and every listed version must be one that was sent.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Region, md5_hex, pattern};
use aws_sdk_s3::primitives::ByteStream;

const ROUNDS: u64 = 20;
const WRITERS: u64 = 6;

#[derive(Clone)]
struct Attempt {
    md5: String,
    /// Blob files the object owns when visible (0 when inline).
    blobs: usize,
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// Writes one object; returns its version id (None in an unversioned bucket).
async fn put_one(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    kind: u64,
    seed: u64,
) -> Result<Option<String>, String> {
    match kind {
        // Multipart: 5 MiB + a tail.
        0 => {
            let parts = [pattern(5 * 1024 * 1024, seed), pattern(3000, seed + 1)];
            common::multipart_put(c, bucket, key, &parts).await?;
            // multipart_put reports only success; read the version that is now current.
            let head = c
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            Ok(head.version_id().map(str::to_owned))
        }
        _ => {
            let out = c
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(pattern(size_of(kind), seed)))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            Ok(out.version_id().map(str::to_owned))
        }
    }
}

async fn md5_of(c: &aws_sdk_s3::Client, bucket: &str, key: &str, version: Option<&str>) -> String {
    let got = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{bucket}/{key} {version:?}: {e:?}"));
    md5_hex(&got.body.collect().await.unwrap().into_bytes())
}

fn size_of(kind: u64) -> usize {
    match kind {
        1 | 2 => 1000,
        3 => 70_000,
        _ => 700_000,
    }
}

fn expected(kind: u64, seed: u64) -> Attempt {
    if kind == 0 {
        let mut all = pattern(5 * 1024 * 1024, seed);
        all.extend(pattern(3000, seed + 1));
        Attempt {
            md5: md5_hex(&all),
            blobs: 2,
        }
    } else {
        let size = size_of(kind);
        Attempt {
            md5: md5_hex(&pattern(size, seed)),
            blobs: usize::from(size > 64 * 1024),
        }
    }
}

fn blob_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for shard in std::fs::read_dir(dir.join("blobs")).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            n += std::fs::read_dir(&shard).unwrap().count();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_concurrent_puts_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let attempted: Arc<Mutex<HashMap<String, Attempt>>> = Arc::default();
    let acked: Arc<Mutex<HashMap<String, Attempt>>> = Arc::default();
    // Versioned bucket: every attempt per key, and acknowledged (key, version id) pairs.
    let v_attempted: Arc<Mutex<HashMap<String, Vec<Attempt>>>> = Arc::default();
    let v_acked: Arc<Mutex<HashMap<(String, String), Attempt>>> = Arc::default();
    let mut rng = 0x5eed_u64;
    for round in 0..ROUNDS {
        let mut r = Region::start_in(dir.path());
        let c = r.client();
        if round == 0 {
            c.create_bucket().bucket("crash").send().await.unwrap();
            c.create_bucket().bucket("crashv").send().await.unwrap();
            c.put_bucket_versioning()
                .bucket("crashv")
                .versioning_configuration(
                    aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
        let v_snapshot: Vec<((String, String), Attempt)> = v_acked
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((key, vid), a) in &v_snapshot {
            assert_eq!(
                md5_of(&c, "crashv", key, Some(vid)).await,
                a.md5,
                "round {round}: acknowledged version {key}@{vid} changed or lost"
            );
        }
        // What was acknowledged before earlier crashes is still there, byte for byte.
        let snapshot: Vec<(String, Attempt)> = acked
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, a) in &snapshot {
            let got = c.get_object().bucket("crash").key(key).send().await;
            let got =
                got.unwrap_or_else(|e| panic!("round {round}: acknowledged {key} lost: {e:?}"));
            let body = got.body.collect().await.unwrap().into_bytes();
            assert_eq!(md5_hex(&body), a.md5, "round {round}: {key} changed");
        }
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let c = c.clone();
            let attempted = attempted.clone();
            let acked = acked.clone();
            let v_attempted = v_attempted.clone();
            let v_acked = v_acked.clone();
            let mut seed = rng ^ (w + 1).wrapping_mul(0x9e37_79b9);
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let kind = lcg(&mut seed) % 6;
                    let data_seed = lcg(&mut seed);
                    let a = expected(kind, data_seed);
                    if w >= WRITERS - 2 {
                        // Overwrites of three keys per writer, across all rounds.
                        let key = format!("w{w}/k{}", i % 3);
                        v_attempted
                            .lock()
                            .unwrap()
                            .entry(key.clone())
                            .or_default()
                            .push(a.clone());
                        if let Ok(Some(vid)) = put_one(&c, "crashv", &key, kind, data_seed).await {
                            v_acked.lock().unwrap().insert((key, vid), a);
                        }
                        continue;
                    }
                    let key = format!("r{round}/w{w}/{i}");
                    attempted.lock().unwrap().insert(key.clone(), a.clone());
                    if put_one(&c, "crash", &key, kind, data_seed).await.is_ok() {
                        acked.lock().unwrap().insert(key, a);
                    }
                }
            }));
        }
        let wait = 150 + lcg(&mut rng) % 700;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        r.kill9();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }

    // Final check after the last crash.
    let r = Region::start_in(dir.path());
    let c = r.client();
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes were acknowledged: {}",
        acked.len()
    );
    let mut visible = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket("crash")
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        visible.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    for key in acked.keys() {
        assert!(visible.contains(key), "acknowledged {key} is not listed");
    }
    let mut expected_blobs = 0;
    for key in &visible {
        let a = attempted
            .get(key)
            .unwrap_or_else(|| panic!("{key} is visible but was never written"));
        let body = c
            .get_object()
            .bucket("crash")
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(
            md5_hex(&body),
            a.md5,
            "{key}: visible content is not what was sent"
        );
        expected_blobs += a.blobs;
    }
    // Every version listed in the versioned bucket is one that was sent for its key, and
    // every acknowledged version is listed.
    let v_acked = v_acked.lock().unwrap().clone();
    let v_attempted = v_attempted.lock().unwrap().clone();
    assert!(!v_acked.is_empty(), "no versioned write was acknowledged");
    let mut listed = Vec::new();
    let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
    loop {
        let page = c
            .list_object_versions()
            .bucket("crashv")
            .set_key_marker(km)
            .set_version_id_marker(vm)
            .send()
            .await
            .unwrap();
        assert!(page.delete_markers().is_empty());
        for v in page.versions() {
            listed.push((
                v.key().unwrap().to_owned(),
                v.version_id().unwrap().to_owned(),
            ));
        }
        if !page.is_truncated().unwrap_or(false) {
            break;
        }
        km = page.next_key_marker().map(str::to_owned);
        vm = page.next_version_id_marker().map(str::to_owned);
    }
    for k in v_acked.keys() {
        assert!(
            listed.contains(k),
            "acknowledged version {k:?} is not listed"
        );
    }
    for (key, vid) in &listed {
        let md5 = md5_of(&c, "crashv", key, Some(vid)).await;
        let a = v_attempted[key]
            .iter()
            .find(|a| a.md5 == md5)
            .unwrap_or_else(|| panic!("{key}@{vid}: content no writer sent"));
        expected_blobs += a.blobs;
    }
    // Uploads that were in flight at a crash legitimately keep their parts; abort them, then
    // every remaining blob file must belong to a visible object or version.
    for bucket in ["crash", "crashv"] {
        let uploads = c
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        for u in uploads.uploads() {
            c.abort_multipart_upload()
                .bucket(bucket)
                .key(u.key().unwrap())
                .upload_id(u.upload_id().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    let mut files = blob_files(&r.data_dir);
    for _ in 0..100 {
        if files == expected_blobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        files = blob_files(&r.data_dir);
    }
    assert_eq!(
        files,
        expected_blobs,
        "orphan or missing blob files after recovery ({} visible objects, {} versions)",
        visible.len(),
        listed.len()
    );
}

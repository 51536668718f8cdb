//! Races and housekeeping that only the service's own tests can force deterministically:
//! a completion planned before a part is re-uploaded, garbage collection behind leased
//! blobs, many writers of one key, deleting a bucket that holds only uploads, and event-log
//! readers racing commits that land out of id order.

use std::sync::Arc;

use bytes::Bytes;
use feiyun_blob::{BlobId, BlobStore, BlobWriter, LocalBlobStore};
use feiyun_meta::{MetaRead, MetaStore, RedbStore, Table, WriteBatch};
use futures::StreamExt;

use crate::multipart::CompletePart;
use crate::{GetRequest, ObjectHeaders, ObjectService, OssConfig, OssError, WriteSpec};

type Svc = Arc<ObjectService<RedbStore, LocalBlobStore>>;

async fn service(dir: &std::path::Path) -> Svc {
    let meta = RedbStore::open(&dir.join("meta.redb")).unwrap();
    let blobs = LocalBlobStore::open(&dir.join("blobs")).unwrap();
    ObjectService::open(
        meta,
        blobs,
        OssConfig {
            region: "test".into(),
            inline_threshold: 4,
            lifecycle_day_ms: 86_400_000,
            node: None,
            encrypt_at_rest: true,
        },
        feiyun_kms::MasterKey::from_bytes(&[7; 32]).unwrap(),
    )
    .await
    .unwrap()
}

fn body(b: &[u8]) -> impl futures::Stream<Item = Result<Bytes, OssError>> + Send + Unpin {
    futures::stream::iter(vec![Ok(Bytes::copy_from_slice(b))])
}

async fn read_all(svc: &Svc, bucket: &str, key: &str) -> Result<Vec<u8>, OssError> {
    let read = svc.get_object(bucket, key, &GetRequest::default()).await?;
    let mut out = Vec::new();
    let mut s = read.body.expect("a GET has a body");
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn part(svc: &Svc, upload: &str, n: u32, data: &[u8]) -> String {
    svc.upload_part(
        "bkt",
        "k",
        upload,
        n,
        WriteSpec::default(),
        body(data),
        |_| Ok(()),
    )
    .await
    .unwrap()
    .etag
}

#[tokio::test]
async fn a_completion_planned_before_a_part_is_replaced_plans_again() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path()).await;
    svc.create_bucket("bkt", false).await.unwrap();
    let (upload, _) = svc
        .create_multipart_upload(
            "bkt",
            "k",
            ObjectHeaders::default(),
            None,
            None,
            &WriteSpec::default(),
        )
        .await
        .unwrap();
    let etag = part(&svc, &upload, 1, b"part one, first upload").await;
    let listed = [CompletePart {
        part_number: 1,
        etag: etag.clone(),
    }];
    // The window: completion has read the parts...
    let planned = svc
        .plan_completion("bkt", "k", &upload, &listed, None)
        .await
        .unwrap();
    // ...when an SDK retry uploads part 1 again, same bytes and so the same ETag; its old
    // blob becomes garbage.
    assert_eq!(
        part(&svc, &upload, 1, b"part one, first upload").await,
        etag
    );
    // Committing the stale plan would publish the collected blob: it must refuse.
    match svc.commit_completion("bkt", "k", &upload, planned).await {
        Err(OssError::Raced) => {}
        other => panic!("a stale completion committed: {other:?}"),
    }
    // The whole operation re-plans and lands on the new blob.
    svc.complete_multipart_upload("bkt", "k", &upload, &listed, None)
        .await
        .unwrap();
    svc.collect_garbage().await.unwrap();
    assert_eq!(
        read_all(&svc, "bkt", "k").await.unwrap(),
        b"part one, first upload"
    );
    // Nothing of the upload is left behind, and no part row leaks.
    let parts = svc
        .meta
        .scan(Table::Parts, b"", None, 10)
        .expect("parts table");
    assert!(parts.is_empty(), "{} part rows left", parts.len());
}

#[tokio::test]
async fn a_part_landing_during_abort_is_discarded_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path()).await;
    svc.create_bucket("bkt", false).await.unwrap();
    let (upload, _) = svc
        .create_multipart_upload(
            "bkt",
            "k",
            ObjectHeaders::default(),
            None,
            None,
            &WriteSpec::default(),
        )
        .await
        .unwrap();
    part(&svc, &upload, 1, b"one").await;
    let (ubytes, _) = svc.load_upload("bkt", "k", &upload).await.unwrap();
    let snapshot = svc.all_parts(&upload).await.unwrap();
    part(&svc, &upload, 2, b"two").await;
    // An abort planned on the old snapshot fails its checks instead of leaking part 2.
    let mut batch = WriteBatch::new();
    batch.check_value(
        Table::Uploads,
        crate::keys::upload("bkt", "k", &upload),
        Some(ubytes),
    );
    snapshot.discard(&mut batch, &upload, &[]);
    assert!(svc.meta.commit(batch).await.is_err());
    svc.abort_multipart_upload("bkt", "k", &upload)
        .await
        .unwrap();
    assert!(
        svc.meta
            .scan(Table::Parts, b"", None, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(svc.collect_garbage().await.unwrap(), 2);
}

#[tokio::test]
async fn garbage_collection_pages_past_leased_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path()).await;
    // 1,100 garbage blobs; the first 1,024 in key order (a whole collection page) are being
    // read by slow clients.
    let ids: Vec<BlobId> = (1..=1100u128).map(BlobId).collect();
    let mut batch = WriteBatch::new();
    for id in &ids {
        let mut w = svc.blobs.create(*id, None).unwrap();
        w.write(b"x").unwrap();
        w.finish().unwrap();
        batch.put(Table::Garbage, id.to_bytes().to_vec(), Vec::new());
    }
    svc.meta.commit(batch).await.unwrap();
    let lease = svc
        .leases
        .acquire(&*svc.blobs, ids[..1024].to_vec())
        .unwrap();
    assert_eq!(svc.collect_garbage().await.unwrap(), 76);
    for id in &ids[1024..] {
        assert!(!svc.blobs.exists(*id).unwrap());
    }
    for id in &ids[..1024] {
        assert!(svc.blobs.exists(*id).unwrap(), "a leased blob was deleted");
    }
    drop(lease);
    assert_eq!(svc.collect_garbage().await.unwrap(), 1024);
    assert!(
        svc.meta
            .scan(Table::Garbage, b"", None, 10)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn many_writers_of_one_key_all_land_and_reads_never_see_corruption() {
    for versioned in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let svc = service(tmp.path()).await;
        svc.create_bucket("bkt", false).await.unwrap();
        if versioned {
            svc.set_versioning("bkt", true).await.unwrap();
        }
        let writers = (0..64).map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let data = format!("writer {i:02} wrote this body");
                let out = svc
                    .put_object(
                        "bkt",
                        "k",
                        ObjectHeaders::default(),
                        WriteSpec::default(),
                        body(data.as_bytes()),
                        |_| Ok(()),
                    )
                    .await;
                (data, out)
            })
        });
        let readers = (0..16).map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    match read_all(&svc, "bkt", "k").await {
                        Ok(bytes) => assert!(bytes.starts_with(b"writer ")),
                        Err(OssError::NoSuchKey) => {}
                        Err(e) => panic!("a read during overwrites failed: {e}"),
                    }
                }
            })
        });
        let readers: Vec<_> = readers.collect();
        let mut acked = Vec::new();
        for w in writers {
            let (data, out) = w.await.unwrap();
            let out = out.unwrap_or_else(|e| panic!("a write lost its race: {e}"));
            acked.push((data, out.version_id));
        }
        for r in readers {
            r.await.unwrap();
        }
        if versioned {
            // Every acknowledged version reads back with its own bytes.
            for (data, version) in &acked {
                let v = crate::VersionSelector::parse(version.as_deref().unwrap()).unwrap();
                let read = svc
                    .get_object(
                        "bkt",
                        "k",
                        &GetRequest {
                            version: Some(v),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                let mut got = Vec::new();
                let mut s = read.body.unwrap();
                while let Some(c) = s.next().await {
                    got.extend_from_slice(&c.unwrap());
                }
                assert_eq!(got, data.as_bytes());
            }
        } else {
            let last = read_all(&svc, "bkt", "k").await.unwrap();
            assert!(acked.iter().any(|(d, _)| d.as_bytes() == last));
        }
    }
}

#[tokio::test]
async fn deleting_a_bucket_discards_its_unfinished_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path()).await;
    svc.create_bucket("bkt", false).await.unwrap();
    for _ in 0..3 {
        let (upload, _) = svc
            .create_multipart_upload(
                "bkt",
                "k",
                ObjectHeaders::default(),
                None,
                None,
                &WriteSpec::default(),
            )
            .await
            .unwrap();
        part(&svc, &upload, 1, b"some part").await;
    }
    svc.delete_bucket("bkt").await.unwrap();
    assert!(matches!(
        svc.bucket("bkt").await,
        Err(OssError::NoSuchBucket)
    ));
    assert_eq!(svc.collect_garbage().await.unwrap(), 3);
    assert!(
        svc.meta
            .scan(Table::Parts, b"", None, 10)
            .unwrap()
            .is_empty()
    );
    // An object still refuses the deletion, and its uploads stay.
    svc.create_bucket("bkt", false).await.unwrap();
    svc.put_object(
        "bkt",
        "obj",
        ObjectHeaders::default(),
        WriteSpec::default(),
        body(b"data"),
        |_| Ok(()),
    )
    .await
    .unwrap();
    assert!(matches!(
        svc.delete_bucket("bkt").await,
        Err(OssError::BucketNotEmpty)
    ));
}

async fn put(svc: &Svc, key: &str) {
    svc.put_object(
        "bkt",
        key,
        ObjectHeaders::default(),
        WriteSpec::default(),
        body(key.as_bytes()),
        |_| Ok(()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn event_readers_stop_below_a_commit_still_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path()).await;
    svc.create_bucket("bkt", false).await.unwrap();
    // A change took its id and has not committed yet; a later one commits first.
    let held = svc.event_ids.next();
    put(&svc, "later").await;
    assert!(
        svc.events_after(0, 100).await.unwrap().is_empty(),
        "a cursor moved past the later event would skip the held one"
    );
    drop(held);
    let seen = svc.events_after(0, 100).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].key, "later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_racing_many_writers_sees_every_event_once() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path()).await;
    svc.create_bucket("bkt", false).await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let (svc, done) = (svc.clone(), done.clone());
        tokio::spawn(async move {
            let (mut pos, mut seen) = (0u64, Vec::new());
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let batch = svc.events_after(pos, 7).await.unwrap();
                if batch.is_empty() && finished {
                    return seen;
                }
                for e in batch {
                    pos = e.id;
                    seen.push(e.key);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    put(&svc, &format!("w{w:02}/{i:02}")).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = follower.await.unwrap();
    assert_eq!(
        seen.len(),
        400,
        "every acknowledged write has its event, once"
    );
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 400);
}

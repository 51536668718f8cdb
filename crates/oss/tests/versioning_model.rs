//! Versioning against a model: random sequences of PUT, DELETE, DELETE-by-version and
//! versioning changes are applied both to a real object service (redb + blob files in a temp
//! directory) and to a plain list-per-key model written straight from the S3 documentation.
//! After every sequence the paged version listing, the current listing, every GET by version
//! and the set of blob files on disk must agree with the model.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use feiyun_blob::LocalBlobStore;
use feiyun_meta::RedbStore;
use feiyun_oss::{
    ListParams, ObjectHeaders, ObjectService, OssConfig, OssError, VersionEntry, VersionListParams,
    VersionSelector, WriteSpec,
};
use proptest::prelude::*;

type Svc = Arc<ObjectService<RedbStore, LocalBlobStore>>;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8, usize),
    Delete(u8),
    DeleteVersion(u8, usize),
    Versioning(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..4, any::<u8>(), 0usize..12).prop_map(|(k, c, n)| Op::Put(k, c, n)),
        2 => (0u8..4).prop_map(Op::Delete),
        2 => (0u8..4, 0usize..8).prop_map(|(k, i)| Op::DeleteVersion(k, i)),
        1 => any::<bool>().prop_map(Op::Versioning),
    ]
}

/// One version in the model, newest first per key.
#[derive(Debug, Clone, PartialEq)]
struct MVersion {
    label: String,
    /// `None` for a delete marker.
    content: Option<Vec<u8>>,
}

#[derive(Default)]
struct Model {
    /// None = never versioned, Some(true) = enabled, Some(false) = suspended.
    state: Option<bool>,
    keys: BTreeMap<String, Vec<MVersion>>,
}

fn key_name(k: u8) -> String {
    // Two keys share a "directory" so delimiter listings have something to fold.
    ["a", "d/x", "d/y", "z"][k as usize].to_owned()
}

async fn service(dir: &std::path::Path) -> Svc {
    let meta = RedbStore::open(&dir.join("meta.redb")).unwrap();
    let blobs = LocalBlobStore::open(&dir.join("blobs")).unwrap();
    ObjectService::open(
        meta,
        blobs,
        OssConfig {
            region: "test".into(),
            // Tiny threshold: bodies of 0–4 bytes are inline, longer ones are blob files.
            inline_threshold: 4,
            lifecycle_day_ms: 86_400_000,
            node: None,
            encrypt_at_rest: true,
        },
        // The same master key every time the service is opened, as an operator configures it.
        feiyun_kms::MasterKey::from_bytes(&[7; 32]).unwrap(),
    )
    .await
    .unwrap()
}

async fn put(svc: &Svc, key: &str, body: Vec<u8>) -> Result<feiyun_oss::PutOutcome, OssError> {
    let stream = futures::stream::iter(vec![Ok::<_, OssError>(Bytes::from(body))]);
    svc.put_object(
        "bkt",
        key,
        ObjectHeaders::default(),
        WriteSpec::default(),
        stream,
        |_| Ok(()),
    )
    .await
}

async fn apply(svc: &Svc, model: &mut Model, op: &Op) {
    match op {
        Op::Put(k, c, n) => {
            let key = key_name(*k);
            let body = vec![*c; *n];
            let out = put(svc, &key, body.clone()).await.unwrap();
            let versions = model.keys.entry(key).or_default();
            let label = if model.state == Some(true) {
                out.version_id.clone().unwrap()
            } else {
                versions.retain(|v| v.label != "null");
                "null".to_owned()
            };
            assert_eq!(
                out.version_id.is_some(),
                model.state.is_some(),
                "version header only once the bucket has been versioned"
            );
            versions.insert(
                0,
                MVersion {
                    label,
                    content: Some(body),
                },
            );
        }
        Op::Delete(k) => {
            let key = key_name(*k);
            let out = svc.delete_object("bkt", &key, None, false).await.unwrap();
            let versions = model.keys.entry(key).or_default();
            match model.state {
                None => {
                    assert!(!out.delete_marker);
                    versions.clear();
                }
                Some(enabled) => {
                    assert!(out.delete_marker);
                    let label = if enabled {
                        out.version_id.clone().unwrap()
                    } else {
                        versions.retain(|v| v.label != "null");
                        "null".to_owned()
                    };
                    assert_eq!(out.version_id.as_deref(), Some(label.as_str()));
                    versions.insert(
                        0,
                        MVersion {
                            label,
                            content: None,
                        },
                    );
                }
            }
        }
        Op::DeleteVersion(k, i) => {
            let key = key_name(*k);
            let versions = model.keys.entry(key.clone()).or_default();
            if versions.is_empty() {
                return;
            }
            let victim = versions.remove(i % versions.len());
            let sel = VersionSelector::parse(&victim.label).unwrap();
            let out = svc
                .delete_object("bkt", &key, Some(sel), false)
                .await
                .unwrap();
            assert_eq!(out.delete_marker, victim.content.is_none());
            assert_eq!(out.version_id.as_deref(), Some(victim.label.as_str()));
        }
        Op::Versioning(enabled) => {
            svc.set_versioning("bkt", *enabled).await.unwrap();
            model.state = Some(*enabled);
        }
    }
}

async fn read_all(svc: &Svc, key: &str, sel: Option<VersionSelector>) -> Result<Vec<u8>, OssError> {
    use futures::StreamExt;
    let mut read = svc
        .get_object(
            "bkt",
            key,
            &feiyun_oss::GetRequest {
                version: sel,
                ..Default::default()
            },
        )
        .await?;
    let mut out = Vec::new();
    let mut body = read.body.take().unwrap();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn check(svc: &Svc, model: &Model, dir: &std::path::Path) {
    // Every page size gives the same concatenated listing as the model.
    let expected: Vec<(String, String, bool, bool)> = model
        .keys
        .iter()
        .flat_map(|(k, vs)| {
            vs.iter()
                .enumerate()
                .map(move |(i, v)| (k.clone(), v.label.clone(), v.content.is_none(), i == 0))
        })
        .collect();
    for page_size in [1, 2, 3, 1000] {
        let mut got = Vec::new();
        let (mut km, mut vm) = (None, None);
        loop {
            let page = svc
                .list_object_versions(
                    "bkt",
                    VersionListParams {
                        key_marker: km.clone(),
                        version_marker: vm.map(|s: String| VersionSelector::parse(&s).unwrap()),
                        max_keys: page_size,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            for e in &page.entries {
                got.push(match e {
                    VersionEntry::Version {
                        key,
                        record,
                        latest,
                    } => (key.clone(), record.version_label(), false, *latest),
                    VersionEntry::Marker {
                        key,
                        marker,
                        latest,
                    } => (
                        key.clone(),
                        if marker.null_version {
                            "null".to_owned()
                        } else {
                            marker.version.render()
                        },
                        true,
                        *latest,
                    ),
                    VersionEntry::CommonPrefix(p) => panic!("no delimiter, got prefix {p}"),
                });
            }
            if !page.is_truncated {
                break;
            }
            assert!(page.entries.len() == page_size);
            assert!(got.len() <= expected.len(), "paging does not advance");
            km = page.next_key_marker.clone();
            vm = page.next_version_marker.clone();
        }
        assert_eq!(got, expected, "page size {page_size}");
    }
    // With a delimiter, "d/" folds into one common prefix.
    let folded = svc
        .list_object_versions(
            "bkt",
            VersionListParams {
                delimiter: Some("/".into()),
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let has_d = model
        .keys
        .iter()
        .any(|(k, v)| k.starts_with("d/") && !v.is_empty());
    let prefixes: Vec<_> = folded
        .entries
        .iter()
        .filter(|e| matches!(e, VersionEntry::CommonPrefix(_)))
        .collect();
    assert_eq!(prefixes.len(), usize::from(has_d));

    // The current listing holds exactly the keys whose newest version is an object.
    let current = svc
        .list_objects(
            "bkt",
            ListParams {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<String> = current
        .entries
        .iter()
        .map(|e| e.name().to_owned())
        .collect();
    let live: Vec<String> = model
        .keys
        .iter()
        .filter(|(_, vs)| vs.first().is_some_and(|v| v.content.is_some()))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(names, live);

    // GET current and GET by every version.
    for (key, versions) in &model.keys {
        match (versions.first(), read_all(svc, key, None).await) {
            (None, Err(OssError::NoSuchKey)) => {}
            (Some(v), Ok(body)) => assert_eq!(Some(body), v.content, "{key} current"),
            (
                Some(v),
                Err(OssError::DeleteMarker {
                    version_id,
                    by_version: false,
                    ..
                }),
            ) => {
                assert!(v.content.is_none());
                assert_eq!(version_id, v.label);
            }
            (want, got) => panic!("{key}: model {want:?}, service {got:?}"),
        }
        for v in versions {
            let sel = VersionSelector::parse(&v.label).unwrap();
            match (&v.content, read_all(svc, key, Some(sel)).await) {
                (Some(c), Ok(body)) => assert_eq!(&body, c, "{key} {}", v.label),
                (
                    None,
                    Err(OssError::DeleteMarker {
                        by_version: true, ..
                    }),
                ) => {}
                (want, got) => panic!("{key} {}: model {want:?}, service {got:?}", v.label),
            }
        }
    }

    // No blob leaks and none lost: after garbage collection, exactly the blob-backed
    // versions have files.
    svc.collect_garbage().await.unwrap();
    let want_blobs = model
        .keys
        .values()
        .flatten()
        .filter(|v| v.content.as_ref().is_some_and(|c| c.len() > 4))
        .count();
    let mut files = 0;
    for d in std::fs::read_dir(dir.join("blobs")).unwrap() {
        let d = d.unwrap();
        if d.file_type().unwrap().is_dir() {
            files += std::fs::read_dir(d.path()).unwrap().count();
        }
    }
    assert_eq!(files, want_blobs, "blob files on disk");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn versions_follow_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let svc = service(dir.path()).await;
            svc.create_bucket("bkt", false).await.unwrap();
            let mut model = Model::default();
            for op in &ops {
                apply(&svc, &mut model, op).await;
            }
            check(&svc, &model, dir.path()).await;
        });
    }
}

/// A restart keeps every version, marker and the null pointer.
#[test]
fn versions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let ops = [
        Op::Put(0, 1, 9),
        Op::Versioning(true),
        Op::Put(0, 2, 9),
        Op::Delete(0),
        Op::Versioning(false),
        Op::Put(1, 3, 2),
        Op::Delete(1),
        Op::Put(0, 4, 7),
    ];
    // Each runtime ends with its background tasks, so the second one opens the store afresh.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let svc = service(dir.path()).await;
        svc.create_bucket("bkt", false).await.unwrap();
        for op in &ops {
            apply(&svc, &mut model, op).await;
        }
    });
    drop(rt);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let svc = service(dir.path()).await;
        check(&svc, &model, dir.path()).await;
        assert_eq!(
            model.keys["a"].len(),
            3,
            "null object, v2, null marker replaced by null object"
        );
    });
}

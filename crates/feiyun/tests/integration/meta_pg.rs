//! A region whose metadata lives in PostgreSQL (`meta_url`): what only that engine meets.
//! The object, versioning, IAM, encryption and replication suites also run whole against it
//! (`FEIYUN_TEST_META=postgres`, from scripts/test.sh).

use crate::common::Region;
use aws_sdk_s3::primitives::ByteStream;

#[test]
fn a_malformed_or_unreachable_meta_url_refuses_to_start() {
    for (url, want) in [
        ("mysql://root@127.0.0.1/db", "expected postgres://"),
        (
            "postgres://feiyun@127.0.0.1:1/db",
            "connecting to the metadata database",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = Region::start_refused(dir.path(), &[("FEIYUN_META_URL", url)]);
        assert!(err.contains(want), "{url}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {err}");
        assert!(
            !dir.path().join("meta.redb").exists(),
            "no embedded store is made in its place"
        );
    }
}

/// Objects (inline ones included, which live in the metadata) and buckets survive a kill -9
/// and restart of a region on PostgreSQL, and the data directory holds no embedded store.
#[tokio::test(flavor = "multi_thread")]
async fn a_region_on_postgres_keeps_its_objects_across_a_crash() {
    let pg = feiyun_meta_pg::testkit::Throwaway::start();
    let url = pg.fresh_database("crash");
    let dir = tempfile::tempdir().unwrap();
    let env = [("FEIYUN_META_URL", url.as_str())];
    let mut r = Region::start_with(dir.path(), &env);
    let c = r.client();
    c.create_bucket().bucket("pg-meta").send().await.unwrap();
    let big = vec![7u8; 300_000];
    for (k, body) in [("small", b"tiny".to_vec()), ("big", big.clone())] {
        c.put_object()
            .bucket("pg-meta")
            .key(k)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }
    r.kill9();
    let r = Region::start_with(dir.path(), &env);
    let c = r.client();
    for (k, want) in [("small", b"tiny".to_vec()), ("big", big)] {
        let got = c
            .get_object()
            .bucket("pg-meta")
            .key(k)
            .send()
            .await
            .unwrap();
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(bytes.as_ref(), want.as_slice(), "{k}");
    }
    assert!(!dir.path().join("meta.redb").exists());
    // The bucket's row is in the database (beside the region's own functions bucket).
    let rows = pg.psql_in(
        "crash",
        "SELECT count(*) FROM feiyun_buckets WHERE k = convert_to('pg-meta', 'UTF8')",
    );
    assert_eq!(rows, "1");
}

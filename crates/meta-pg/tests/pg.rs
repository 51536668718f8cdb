//! The PostgreSQL engine against a real, throwaway PostgreSQL server: the conformance suite
//! every engine passes, then what only a networked engine meets — schema versions, a damaged
//! row, the database restarting under writers, bad URLs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use feiyun_meta::{MetaError, MetaRead, MetaStore, Table, WriteBatch};
use feiyun_meta_pg::testkit::Throwaway;
use feiyun_meta_pg::{PgError, PgStore, PoolOptions};

fn server() -> &'static Throwaway {
    static PG: std::sync::OnceLock<Throwaway> = std::sync::OnceLock::new();
    PG.get_or_init(Throwaway::start)
}

fn open(url: &str) -> PgStore {
    PgStore::open(url, PoolOptions::default()).expect("the store opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_engine_conformance_suite() {
    let url = server().fresh_database("conformance");
    feiyun_meta::conformance::run_all(Arc::new(open(&url))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_is_versioned_and_a_newer_one_is_refused() {
    let pg = server();
    let url = pg.fresh_database("schema");
    let s = open(&url);
    drop(s);
    // Opening again (another node, or a restart) finds it done and changes nothing.
    let s = open(&url);
    drop(s);
    let versions = pg.psql_in(
        "schema",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM feiyun_schema",
    );
    let all: Vec<String> = (1..=PgStore::schema_version())
        .map(|v| v.to_string())
        .collect();
    assert_eq!(versions, all.join(","));
    // Every table keeps rows up to a page whole (4 KiB objects are not TOASTed).
    let untuned = pg.psql_in(
        "schema",
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'feiyun\\_%' AND relkind = 'r' \
         AND relname NOT IN ('feiyun_schema', 'feiyun_commits') \
         AND NOT COALESCE(reloptions @> ARRAY['toast_tuple_target=8160'], false)",
    );
    assert_eq!(untuned, "0");
    // A database a version-1 binary made is brought forward step by step.
    pg.psql_in(
        "schema",
        "DROP TABLE feiyun_cluster; DELETE FROM feiyun_schema WHERE version > 1",
    );
    let s = open(&url);
    s.commit(feiyun_meta::WriteBatch {
        mutations: vec![feiyun_meta::Mutation::Put {
            table: feiyun_meta::Table::Cluster,
            key: b"n".to_vec(),
            value: b"v".to_vec(),
        }],
        ..Default::default()
    })
    .await
    .expect("the table version 2 adds is there");
    drop(s);
    pg.psql_in("schema", "INSERT INTO feiyun_schema VALUES (99, 0)");
    match PgStore::open(&url, PoolOptions::default()) {
        Err(PgError::SchemaTooNew { found: 99, .. }) => {}
        Err(e) => panic!("expected SchemaTooNew, got {e}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_migrating_at_once_apply_each_step_once() {
    let pg = server();
    let url = pg.fresh_database("racing");
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url, PoolOptions::default()).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().unwrap().expect("every racing node opens");
    }
    assert_eq!(
        pg.psql_in("racing", "SELECT count(*) FROM feiyun_schema"),
        PgStore::schema_version().to_string(),
        "one row per step"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_or_moved_row_is_corrupt_not_data() {
    let pg = server();
    let url = pg.fresh_database("damage");
    let s = open(&url);
    let mut b = WriteBatch::new();
    b.put(Table::Objects, "a", "alpha")
        .put(Table::Objects, "b", "beta");
    s.commit(b).await.unwrap();
    // One flipped byte inside the stored envelope.
    pg.psql_in(
        "damage",
        "UPDATE feiyun_objects SET v = set_byte(v, 2, get_byte(v, 2) # 1) WHERE k = 'a'::bytea",
    );
    assert!(matches!(
        s.get(Table::Objects, b"a"),
        Err(MetaError::Corrupt { table: "objects" })
    ));
    assert!(matches!(
        s.scan(Table::Objects, b"", None, 10),
        Err(MetaError::Corrupt { .. })
    ));
    // A valid envelope copied under another key is caught too.
    pg.psql_in(
        "damage",
        "UPDATE feiyun_objects SET v = (SELECT v FROM feiyun_objects WHERE k = 'b'::bytea) WHERE k = 'a'::bytea",
    );
    assert!(matches!(
        s.get(Table::Objects, b"a"),
        Err(MetaError::Corrupt { .. })
    ));
    assert_eq!(s.get(Table::Objects, b"b").unwrap(), Some(b"beta".to_vec()));
}

/// Writers keep committing while the database is stopped with `-m immediate` (a crash)
/// and started again: each commit either succeeds and is then found, or fails with an
/// error; none reports success without its row, and the store recovers on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_the_database_restarting_under_writers() {
    // Its own server: stopping the shared one would fail the other tests.
    let pg = Throwaway::start();
    let url = pg.fresh_database("restart");
    let s = Arc::new(open(&url));
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (s, acked, failed, stop) = (s.clone(), acked.clone(), failed.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}/{i:06}");
                let mut b = WriteBatch::new();
                b.check_absent(Table::Objects, key.clone()).put(
                    Table::Objects,
                    key.clone(),
                    key.clone(),
                );
                match s.commit(b).await {
                    Ok(()) => acked.lock().unwrap().push(key),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pg = Arc::new(pg);
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    // The writers' commits in flight may ride the outage out (their group settles once the
    // database is back); a commit begun while it is down must fail, and promptly.
    let probe_failed = Arc::new(AtomicUsize::new(0));
    let probe_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (s, failed, stop) = (s.clone(), probe_failed.clone(), probe_stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut b = WriteBatch::new();
                b.put(Table::Objects, format!("probe/{i}"), "x");
                let started = std::time::Instant::now();
                if s.commit(b).await.is_err() {
                    let took = started.elapsed();
                    assert!(took < Duration::from_secs(3), "a failure took {took:?}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(3000)).await;
    probe_stop.store(true, Ordering::Relaxed);
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.restart())
        .await
        .unwrap();
    // Writes succeed again without reopening the store.
    let before = acked.lock().unwrap().len();
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if acked.lock().unwrap().len() > before + 20 {
            recovered = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(recovered, "commits resume after the database comes back");
    tokio::time::timeout(Duration::from_secs(30), probe)
        .await
        .expect("a probe commit hung")
        .expect("a probe's failure was not prompt");
    assert!(
        probe_failed.load(Ordering::Relaxed) > 0,
        "no commit begun while the database was down failed"
    );
    // The writers' own commits may all have ridden the outage out (settled afterwards);
    // those that failed did so with an error, and none was lost (below).
    let acked = acked.lock().unwrap().clone();
    let s2 = s.clone();
    let missing = tokio::task::spawn_blocking(move || {
        acked
            .iter()
            .filter(|k| s2.get(Table::Objects, k.as_bytes()).unwrap().is_none())
            .cloned()
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

/// A batch the database refuses (a key past the btree's row limit) fails alone, whatever
/// group it was committed in: the writers beside it land, repeatedly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_batch_does_not_fail_its_group() {
    let url = server().fresh_database("refused");
    let s = Arc::new(open(&url));
    for round in 0..5u32 {
        let mut tasks = Vec::new();
        for i in 0..24u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let key = if i == 7 {
                    // PostgreSQL indexes at most about 2.7 KB per row, after compression:
                    // 16 KiB that do not compress.
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(round);
                    (0..16 * 1024)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x as u8
                        })
                        .collect()
                } else {
                    format!("r{round}/{i:02}").into_bytes()
                };
                let mut b = WriteBatch::new();
                b.check_absent(Table::Objects, key.clone())
                    .put(Table::Objects, key, b"v".to_vec());
                (i, s.commit(b).await)
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                (7, r) => assert!(
                    matches!(r, Err(MetaError::Storage(_))),
                    "the refused batch fails: {r:?}"
                ),
                (i, r) => r.unwrap_or_else(|e| panic!("writer {i} of round {round}: {e}")),
            }
        }
        let landed = s
            .scan(
                Table::Objects,
                format!("r{round}/").as_bytes(),
                Some(format!("r{round}0").as_bytes()),
                100,
            )
            .unwrap();
        assert_eq!(landed.len(), 23);
    }
    // The writers went to the database in groups, and the refused one failed alone.
    let stats = s.commit_stats();
    let groups = stats.groups.load(std::sync::atomic::Ordering::Relaxed);
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        batches,
        5 * 23,
        "every batch but the refused ones, counted once"
    );
    assert!(groups < batches, "{groups} groups for {batches} batches");
}

#[test]
fn bad_urls_fail_with_one_clear_error() {
    for (url, want) in [
        ("mysql://x@localhost/db", "expected postgres://"),
        (
            "postgres://feiyun@127.0.0.1:1/none",
            "connecting to the metadata database",
        ),
        (
            "postgres://feiyun@127.0.0.1:5432/db?sslrootcert=/nonexistent.pem&sslmode=require",
            "sslrootcert",
        ),
        (
            "postgres://feiyun@127.0.0.1:5432/db?bogus=1",
            "metadata database URL",
        ),
    ] {
        match PgStore::open(url, PoolOptions::default()) {
            Err(e) => assert!(e.to_string().contains(want), "{url}: {e}"),
            Ok(_) => panic!("{url} opened"),
        }
    }
}

/// A snapshot holds its session; when every session is held, a caller waits the checkout
/// timeout and fails instead of hanging.
#[tokio::test(flavor = "multi_thread")]
async fn the_pool_is_bounded() {
    let url = server().fresh_database("bounded");
    let s = PgStore::open(
        &url,
        PoolOptions {
            max_connections: 2,
            checkout_timeout: Duration::from_millis(300),
            ..PoolOptions::default()
        },
    )
    .unwrap();
    let a = s.snapshot().unwrap();
    let b = s.snapshot().unwrap();
    let t = std::time::Instant::now();
    assert!(s.get(Table::System, b"x").is_err());
    assert!(t.elapsed() >= Duration::from_millis(250));
    drop(a);
    assert_eq!(s.get(Table::System, b"x").unwrap(), None);
    drop(b);
}

/// A read from a task that has spent its cooperative budget (a long job that never yields
/// between ready futures) returns: the wait for the database does not depend on a wake-up the
/// caller's runtime defers until that task yields. The runtime lives on its own thread so a
/// hang fails the test instead of stalling the suite.
#[test]
fn a_read_from_a_task_that_spent_its_budget_returns() {
    let url = server().fresh_database("budget");
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async move {
            let s = Arc::new(open(&url));
            let mut b = WriteBatch::new();
            b.put(Table::System, b"k".to_vec(), b"v".to_vec());
            s.commit(b).await.unwrap();
            tokio::spawn(async move {
                // Each ready receive spends one unit of the task's budget (128 in tokio).
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                for i in 0..200 {
                    tx.send(i).unwrap();
                }
                for _ in 0..127 {
                    rx.recv().await.unwrap();
                }
                let mut got = Vec::new();
                for _ in 0..50 {
                    rx.recv().await.unwrap();
                    got.push(s.get(Table::System, b"k").unwrap());
                }
                got
            })
            .await
            .unwrap()
        });
        let _ = done.send(got);
        // A hung runtime is left behind with the thread; the test has failed by then.
    });
    let got = result
        .recv_timeout(Duration::from_secs(30))
        .expect("the reads return");
    assert!(got.iter().all(|v| v.as_deref() == Some(&b"v"[..])));
}

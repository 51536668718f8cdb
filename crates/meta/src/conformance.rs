//! The behaviour every [`MetaStore`] engine must have, as one suite each engine's tests run
//! against a fresh, empty store: bytewise key order, range bounds, checks that gate a whole
//! batch, re-planning inside the commit, snapshots that do not move, and concurrent writers
//! of one row of which exactly the right number win.

use std::sync::Arc;

use crate::{MetaError, MetaRead, MetaStore, Replan, Table, WriteBatch};

/// Runs every case; panics (as a test) on the first that fails.
pub async fn run_all<M: MetaStore>(m: Arc<M>) {
    ordered_bytewise(&*m).await;
    range_bounds_and_limits(&*m).await;
    checks_gate_the_whole_batch(&*m).await;
    prefix_checks(&*m).await;
    replan_inside_commit(m.clone()).await;
    snapshots_do_not_move(&*m).await;
    one_winner_per_row(m.clone()).await;
    deletes_and_overwrites(&*m).await;
    many_reads_in_one(&*m).await;
    independent_writers_all_land(m.clone()).await;
}

async fn put(m: &impl MetaStore, t: Table, k: &[u8], v: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(t, k.to_vec(), v.to_vec());
    m.commit(b).await.expect("a plain put commits");
}

/// Keys order as unsigned bytes (S3 listing order): 0x00 first, 0xFF last, a prefix before
/// its extensions, and nothing a text collation would do.
async fn ordered_bytewise(m: &impl MetaStore) {
    let keys: &[&[u8]] = &[
        b"b",
        b"a/\xff",
        b"a",
        b"A",
        b"a\x00",
        b"\x00",
        b"\xff\xfe",
        b"a/b",
    ];
    for k in keys {
        put(m, Table::Objects, k, k).await;
    }
    let got: Vec<Vec<u8>> = m
        .scan(Table::Objects, b"", None, 100)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(k, v, "each value is read back under its own key");
            k
        })
        .collect();
    let mut want: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    want.sort();
    assert_eq!(got, want, "scan order is bytewise");
    // Tables are separate.
    assert!(m.scan(Table::Versions, b"", None, 10).unwrap().is_empty());
}

async fn range_bounds_and_limits(m: &impl MetaStore) {
    for i in 0..20u8 {
        put(m, Table::Parts, &[b'p', i], &[i; 3]).await;
    }
    let rows = m
        .scan(Table::Parts, &[b'p', 5], Some(&[b'p', 9]), 100)
        .unwrap();
    let ids: Vec<u8> = rows.iter().map(|(k, _)| k[1]).collect();
    assert_eq!(ids, vec![5, 6, 7, 8], "start inclusive, end exclusive");
    assert_eq!(
        m.scan(Table::Parts, b"p", None, 3).unwrap().len(),
        3,
        "limit"
    );
    assert!(
        m.scan(Table::Parts, b"p", None, 0).unwrap().is_empty(),
        "limit 0"
    );
    assert!(m.scan(Table::Parts, b"q", None, 10).unwrap().is_empty());
    assert_eq!(m.get(Table::Parts, &[b'p', 19]).unwrap(), Some(vec![19; 3]));
    assert_eq!(m.get(Table::Parts, &[b'p', 20]).unwrap(), None);
    // An empty value is a value, not an absence.
    put(m, Table::Parts, b"empty", b"").await;
    assert_eq!(m.get(Table::Parts, b"empty").unwrap(), Some(Vec::new()));
}

async fn checks_gate_the_whole_batch(m: &impl MetaStore) {
    put(m, Table::Buckets, b"held", b"v1").await;
    let mut b = WriteBatch::new();
    b.check_absent(Table::Buckets, "held")
        .put(Table::Buckets, "other", "x")
        .put(Table::Uploads, "u", "y");
    assert!(matches!(m.commit(b).await, Err(MetaError::Conflict(_))));
    assert_eq!(
        m.get(Table::Buckets, b"other").unwrap(),
        None,
        "nothing applied"
    );
    assert_eq!(
        m.get(Table::Uploads, b"u").unwrap(),
        None,
        "nothing applied"
    );

    let mut b = WriteBatch::new();
    b.check_value(Table::Buckets, "held", Some(b"v0".to_vec()))
        .put(Table::Buckets, "held", "v2");
    assert!(matches!(m.commit(b).await, Err(MetaError::Conflict(_))));
    let mut b = WriteBatch::new();
    b.check_value(Table::Buckets, "held", Some(b"v1".to_vec()))
        .check_present(Table::Buckets, "held")
        .check_absent(Table::Buckets, "nope")
        .put(Table::Buckets, "held", "v2");
    m.commit(b).await.expect("checks that hold");
    assert_eq!(
        m.get(Table::Buckets, b"held").unwrap(),
        Some(b"v2".to_vec())
    );
    let mut b = WriteBatch::new();
    b.check_present(Table::Buckets, "nope")
        .delete(Table::Buckets, "held");
    assert!(matches!(m.commit(b).await, Err(MetaError::Conflict(_))));
    assert!(m.get(Table::Buckets, b"held").unwrap().is_some());
}

async fn prefix_checks(m: &impl MetaStore) {
    put(m, Table::Heads, b"bk/a", b"1").await;
    let mut b = WriteBatch::new();
    b.check_prefix_empty(Table::Heads, "bk/")
        .put(Table::Heads, "x", "1");
    assert!(matches!(m.commit(b).await, Err(MetaError::Conflict(_))));
    let mut b = WriteBatch::new();
    // "bk" + 0x2f is "bk/"; "bk0" sorts after every "bk/…" key and is not in the prefix.
    b.check_prefix_empty(Table::Heads, "bk0")
        .check_prefix_empty(Table::Heads, "bj")
        .check_prefix_empty(Table::Heads, [0xffu8, 0xff].to_vec())
        .put(Table::Heads, "x", "1");
    m.commit(b).await.expect("empty prefixes");
}

/// Sixteen concurrent increments all planned from the same stale value: each fails its
/// check, is planned again inside its commit, and lands.
async fn replan_inside_commit<M: MetaStore>(m: Arc<M>) {
    put(&*m, Table::System, b"n", b"0").await;
    let increment = |r: &dyn MetaRead| -> Result<Option<WriteBatch>, MetaError> {
        let cur = r.get(Table::System, b"n")?.unwrap_or_default();
        let n: u64 = String::from_utf8_lossy(&cur).parse().unwrap_or(0);
        let mut b = WriteBatch::new();
        b.check_value(Table::System, "n", Some(cur))
            .put(Table::System, "n", (n + 1).to_string());
        Ok(Some(b))
    };
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = WriteBatch::new();
            b.check_value(Table::System, "n", Some(b"0".to_vec()))
                .put(Table::System, "n", "1");
            b.replan = Some(Replan::new(increment));
            m.commit_replanning(b).await
        }));
    }
    let mut replanned = 0;
    for t in tasks {
        if t.await.unwrap().expect("every increment lands") {
            replanned += 1;
        }
    }
    assert!(
        replanned >= 15,
        "all but the first were re-planned: {replanned}"
    );
    assert_eq!(m.get(Table::System, b"n").unwrap(), Some(b"16".to_vec()));
}

async fn snapshots_do_not_move(m: &impl MetaStore) {
    put(m, Table::Kms, b"k", b"before").await;
    let snap = m.snapshot().unwrap();
    assert_eq!(
        snap.get(Table::Kms, b"k").unwrap(),
        Some(b"before".to_vec())
    );
    put(m, Table::Kms, b"k", b"after").await;
    put(m, Table::Kms, b"k2", b"new").await;
    assert_eq!(
        snap.get(Table::Kms, b"k").unwrap(),
        Some(b"before".to_vec())
    );
    assert_eq!(snap.scan(Table::Kms, b"", None, 10).unwrap().len(), 1);
    drop(snap);
    assert_eq!(m.get(Table::Kms, b"k").unwrap(), Some(b"after".to_vec()));
}

/// Thirty-two writers each try to create the same row: exactly one wins, the rest see a
/// conflict, and the row holds the winner's value.
async fn one_winner_per_row<M: MetaStore>(m: Arc<M>) {
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = WriteBatch::new();
            b.check_absent(Table::Iam, "user/alice")
                .put(Table::Iam, "user/alice", i.to_string())
                .put(Table::Iam, format!("by/{i}"), "1");
            (i, m.commit(b).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(())) => winners.push(i),
            (_, Err(MetaError::Conflict(_))) => {}
            (_, Err(e)) => panic!("a losing writer gets a conflict, not {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator wins: {winners:?}");
    let v = m.get(Table::Iam, b"user/alice").unwrap().unwrap();
    assert_eq!(v, winners[0].to_string().into_bytes());
    let marks = m.scan(Table::Iam, b"by/", Some(b"by0"), 100).unwrap();
    assert_eq!(marks.len(), 1, "only the winner's other rows landed");
}

async fn deletes_and_overwrites(m: &impl MetaStore) {
    put(m, Table::Garbage, b"g", b"1").await;
    put(m, Table::Garbage, b"g", b"2").await;
    assert_eq!(m.get(Table::Garbage, b"g").unwrap(), Some(b"2".to_vec()));
    let mut b = WriteBatch::new();
    b.delete(Table::Garbage, "g")
        .delete(Table::Garbage, "never-there");
    m.commit(b)
        .await
        .expect("deleting an absent key is not an error");
    assert_eq!(m.get(Table::Garbage, b"g").unwrap(), None);
    // Put then delete of one key in one batch applies in order.
    let mut b = WriteBatch::new();
    b.put(Table::Garbage, "h", "1")
        .delete(Table::Garbage, "h")
        .put(Table::Garbage, "i", "1");
    m.commit(b).await.unwrap();
    assert_eq!(m.get(Table::Garbage, b"h").unwrap(), None);
    assert_eq!(m.get(Table::Garbage, b"i").unwrap(), Some(b"1".to_vec()));
    // A large value round-trips.
    let big = vec![7u8; 3 << 20];
    put(m, Table::Functions, b"wasm", &big).await;
    assert_eq!(m.get(Table::Functions, b"wasm").unwrap(), Some(big));
}

/// `get_many` answers in the order asked, absent rows as `None`, across tables, through the
/// store and through a snapshot alike.
async fn many_reads_in_one(m: &impl MetaStore) {
    put(m, Table::Heads, b"h1", b"one").await;
    put(m, Table::Buckets, b"b1", b"bucket").await;
    let reads: &[(Table, &[u8])] = &[
        (Table::Buckets, b"b1"),
        (Table::Heads, b"nope"),
        (Table::Heads, b"h1"),
        (Table::Buckets, b"h1"),
    ];
    let want = vec![Some(b"bucket".to_vec()), None, Some(b"one".to_vec()), None];
    assert_eq!(m.get_many(reads).unwrap(), want);
    let snap = m.snapshot().unwrap();
    assert_eq!(snap.get_many(reads).unwrap(), want);
    put(m, Table::Heads, b"h1", b"two").await;
    assert_eq!(snap.get_many(reads).unwrap(), want, "the snapshot holds");
    assert!(m.get_many(&[]).unwrap().is_empty());
}

/// Many writers of distinct rows at once (one group, or several, in an engine that groups):
/// every one lands, and a row they all overwrite without a check holds one of their values.
async fn independent_writers_all_land<M: MetaStore>(m: Arc<M>) {
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = WriteBatch::new();
            b.check_absent(Table::Events, format!("w/{i:02}"))
                .put(Table::Events, format!("w/{i:02}"), i.to_string())
                .put(Table::System, "last-writer", i.to_string());
            m.commit(b).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("a writer of its own row lands");
    }
    let rows = m.scan(Table::Events, b"w/", None, 100).unwrap();
    assert_eq!(rows.len(), 64);
    for (i, (k, v)) in rows.iter().enumerate() {
        assert_eq!(k, format!("w/{i:02}").as_bytes());
        assert_eq!(v, i.to_string().as_bytes());
    }
    let last = m.get(Table::System, b"last-writer").unwrap().unwrap();
    let last: u32 = String::from_utf8_lossy(&last).parse().unwrap();
    assert!(last < 64);
}

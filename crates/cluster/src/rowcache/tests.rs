use super::*;
use crate::{ClusterSecret, PeerServer};
use tokio::runtime::Handle;

const SECRET: &str = "rowcache-test-secret-0123456789abcdef";

fn cache(me: &str) -> Arc<RowCache> {
    let client = PeerClient::new(ClusterSecret::new(SECRET), me, Handle::current());
    RowCache::new(me, 1 << 20, client)
}

const READS: [(Table, &[u8]); 2] = [(Table::Buckets, b"b"), (Table::Objects, b"b\0k")];

fn read_through(c: &RowCache, value: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
    match c.lookup(&READS) {
        Lookup::Hit(rows) => Some(rows),
        Lookup::Miss(ticket) => {
            if let Some(t) = ticket {
                c.fill(t, &[Some(b"bucket".to_vec()), Some(value.to_vec())]);
            }
            None
        }
    }
}

/// Makes `c` hold a lease from each of `writers` for a second.
fn leased(c: &RowCache, writers: &[&str]) {
    c.note_view(
        Instant::now(),
        writers.iter().map(|w| w.to_string()).collect(),
    );
    for w in writers {
        c.note_lease(w, "first", Instant::now() + LEASE);
    }
}

#[tokio::test]
async fn rows_are_served_only_under_every_writers_lease() {
    let c = cache("a");
    assert!(read_through(&c, b"v1").is_none(), "no node list read yet");
    assert!(read_through(&c, b"v1").is_none());
    leased(&c, &["b", "c"]);
    assert!(
        read_through(&c, b"v1").is_none(),
        "first read misses and fills"
    );
    let rows = read_through(&c, b"v2").expect("second read hits");
    assert_eq!(rows[1].as_deref(), Some(&b"v1"[..]));
    // A node that appears in the list without having granted a lease stops all serving.
    c.note_view(Instant::now(), vec!["b".into(), "c".into(), "d".into()]);
    assert!(read_through(&c, b"v3").is_none());
    // Once it grants one, the rows cached before the gap are gone: it may have committed.
    c.note_lease("d", "first", Instant::now() + LEASE);
    assert!(read_through(&c, b"v3").is_none(), "dropped at the gap");
    assert_eq!(
        read_through(&c, b"v4").expect("refilled")[1].as_deref(),
        Some(&b"v3"[..])
    );
}

#[tokio::test]
async fn a_lapsed_lease_drops_everything_even_if_renewed_before_the_next_read() {
    let c = cache("a");
    leased(&c, &["b"]);
    read_through(&c, b"old");
    assert!(read_through(&c, b"x").is_some());
    // The lease from b runs out (its renewal was lost), then a later renewal arrives.
    {
        let mut r = locked(&c.rows);
        r.held.insert("b".into(), (Instant::now(), "first".into()));
        r.valid_until = Some(Instant::now());
    }
    c.note_lease("b", "first", Instant::now() + LEASE);
    assert!(
        read_through(&c, b"new").is_none(),
        "nothing from before the lapse"
    );
    assert_eq!(
        read_through(&c, b"x").unwrap()[1].as_deref(),
        Some(&b"new"[..])
    );
}

#[tokio::test]
async fn a_read_that_raced_an_invalidation_is_not_stored() {
    let c = cache("a");
    leased(&c, &[]);
    let Lookup::Miss(Some(ticket)) = c.lookup(&READS) else {
        panic!("expected a miss with a ticket");
    };
    // The database answered with the old row, but the change's invalidation came first.
    c.apply_invalidation(&encode(&[row_key(Table::Objects, b"b\0k")]))
        .unwrap();
    c.fill(ticket, &[Some(b"bucket".to_vec()), Some(b"stale".to_vec())]);
    assert!(
        read_through(&c, b"fresh").is_none(),
        "stale answer was kept"
    );
    assert_eq!(
        read_through(&c, b"x").unwrap()[1].as_deref(),
        Some(&b"fresh"[..])
    );
    // Rows of other tables are never cached.
    assert!(matches!(
        c.lookup(&[(Table::Versions, b"k")]),
        Lookup::Miss(None)
    ));
    assert!(c.apply_invalidation(&[0, 0, 0, 9, 1]).is_err());
}

#[tokio::test]
async fn a_writer_that_restarted_is_a_lapse() {
    let c = cache("a");
    leased(&c, &["b"]);
    read_through(&c, b"old");
    assert!(read_through(&c, b"x").is_some());
    // The same id answers from a new process: its predecessor may have committed and died
    // before telling anyone.
    c.note_lease("b", "second", Instant::now() + LEASE);
    assert!(
        read_through(&c, b"new").is_none(),
        "kept rows across a restart"
    );
}

#[tokio::test]
async fn the_budget_bounds_what_is_kept() {
    let client = PeerClient::new(ClusterSecret::new(SECRET), "a", Handle::current());
    let c = RowCache::new("a", 64 * 1024, client);
    leased(&c, &[]);
    for i in 0..1000u32 {
        let key = format!("b\0key-{i}");
        let reads = [(Table::Objects, key.as_bytes())];
        if let Lookup::Miss(Some(t)) = c.lookup(&reads) {
            c.fill(t, &[Some(vec![7; 1000])]);
        }
        assert!(locked(&c.rows).bytes <= 64 * 1024);
    }
    let r = locked(&c.rows);
    let counted: usize = r
        .map
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD)
        .sum();
    assert_eq!(counted, r.bytes);
    assert!(!r.map.is_empty());
}

fn encode(keys: &[Vec<u8>]) -> Vec<u8> {
    let mut m = Vec::new();
    for k in keys {
        m.extend_from_slice(&(k.len() as u32).to_be_bytes());
        m.extend_from_slice(k);
    }
    m
}

async fn serve(c: &Arc<RowCache>, dir: &std::path::Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let blobs = Arc::new(feiyun_blob::LocalBlobStore::open(dir).unwrap());
    let server = PeerServer::new(blobs, ClusterSecret::new(SECRET), &addr);
    server.set_cache(c.clone());
    tokio::spawn(server.serve(listener));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_returns_only_once_every_lease_holder_dropped_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (cache("node-a"), cache("node-b"));
    let a_addr = serve(&a, &dir.path().join("a")).await;
    let b_addr = serve(&b, &dir.path().join("b")).await;
    // a asks b for a lease over the wire, as its renewal task does.
    leased(&a, &[]);
    a.note_view(Instant::now(), vec!["node-b".into()]);
    let path = format!("/cache/lease?from={a_addr}");
    let answer = a
        .client
        .post(&b_addr, &path, Vec::new(), RENEW_TIMEOUT)
        .await
        .unwrap();
    let answer = String::from_utf8(answer.to_vec()).unwrap();
    let (who, incarnation) = answer.split_once('\n').unwrap();
    assert_eq!((who, incarnation), ("node-b", b.incarnation.as_str()));
    a.note_lease("node-b", incarnation, Instant::now() + LEASE);
    read_through(&a, b"v1");
    assert!(read_through(&a, b"x").is_some());

    // b commits a change to the key: once publish returns, a no longer has it.
    let mut batch = WriteBatch::new();
    batch.put(Table::Objects, b"b\0k".to_vec(), b"v2".to_vec());
    batch.put(Table::Versions, b"b\0k\0v".to_vec(), b"v".to_vec());
    let touched = RowCache::watch(&mut batch);
    assert_eq!(locked(&touched).len(), 1, "only cached tables travel");
    b.publish(&touched, None).await;
    assert!(
        read_through(&a, b"v2").is_none(),
        "a still served the old row"
    );
    assert_eq!(
        b.stats()
            .lease_waits
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // A holder that does not answer: refused new leases, and the commit waits its lease out.
    assert!(b.grant("node-gone", "127.0.0.1:9").is_some());
    let started = Instant::now();
    let mut batch = WriteBatch::new();
    batch.delete(Table::Heads, b"b\0k".to_vec());
    b.publish(&RowCache::watch(&mut batch), None).await;
    assert!(
        started.elapsed() >= LEASE,
        "returned before the lease ran out"
    );
    assert_eq!(
        b.stats()
            .lease_waits
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Refused for longer than the lease it held (it missed an invalidation), so a holder
    // that can ask but not be told stalls commits rarely; no node takes a lease from itself.
    assert!(b.grant("node-gone", "127.0.0.1:9").is_none());
    assert!(b.grant("node-b", &b_addr).is_none());
}

#[tokio::test]
async fn a_revoked_holder_is_refused_until_its_lease_ran_out() {
    let b = cache("node-b");
    assert!(b.grant("node-x", "127.0.0.1:9").is_some());
    let holder = ("node-x".to_string(), "127.0.0.1:9".to_string());
    let until = locked(&b.grants)[&holder].until;
    locked(&b.grants).get_mut(&holder).unwrap().revoked_until = Some(until);
    assert!(b.grant("node-x", "127.0.0.1:9").is_none());
    tokio::time::sleep_until(until.into()).await;
    assert!(b.grant("node-x", "127.0.0.1:9").is_some());
}

#[tokio::test]
async fn a_replanned_batch_reports_the_rows_it_actually_wrote() {
    let mut batch = WriteBatch::new();
    batch.put(Table::Objects, b"b\0first".to_vec(), b"1".to_vec());
    batch.replan = Some(Replan::new(|_| {
        let mut again = WriteBatch::new();
        again.delete(Table::Heads, b"b\0second".to_vec());
        Ok(Some(again))
    }));
    let touched = RowCache::watch(&mut batch);
    let plan = batch.replan.take().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = feiyun_meta::RedbStore::open(&dir.path().join("meta.redb")).unwrap();
    (plan.0)(&store).unwrap();
    let got = locked(&touched).clone();
    assert_eq!(
        got,
        vec![
            row_key(Table::Objects, b"b\0first"),
            row_key(Table::Heads, b"b\0second")
        ]
    );
}

#[tokio::test]
async fn a_writer_keeps_what_it_committed_unless_a_later_change_came_first() {
    let mut c = cache("a");
    // Past the wait a starting node does before its first acknowledgement.
    Arc::get_mut(&mut c).unwrap().started = Instant::now() - 2 * LEASE;
    leased(&c, &[]);
    read_through(&c, b"old");
    let mut batch = WriteBatch::new();
    batch.put(Table::Objects, b"b\0k".to_vec(), b"mine".to_vec());
    batch.put(Table::Versions, b"b\0k\0v".to_vec(), b"v".to_vec());
    let fill = c.write_fill(&batch);
    c.publish(&RowCache::watch(&mut batch), fill).await;
    assert_eq!(
        read_through(&c, b"x").expect("the writer kept its row")[1].as_deref(),
        Some(&b"mine"[..])
    );
    assert!(matches!(
        c.lookup(&[(Table::Versions, b"b\0k\0v")]),
        Lookup::Miss(None)
    ));

    // Another node's invalidation between this commit and its publication comes from a
    // commit after it: what this node wrote is no longer the row.
    let mut batch = WriteBatch::new();
    batch.put(Table::Objects, b"b\0k".to_vec(), b"mine again".to_vec());
    let fill = c.write_fill(&batch);
    c.apply_invalidation(&encode(&[row_key(Table::Objects, b"b\0k")]))
        .unwrap();
    c.publish(&RowCache::watch(&mut batch), fill).await;
    assert!(
        read_through(&c, b"theirs").is_none(),
        "kept a row overtaken"
    );
    assert_eq!(
        read_through(&c, b"x").unwrap()[1].as_deref(),
        Some(&b"theirs"[..])
    );

    // A delete is kept as the row's absence; nothing is kept while the cache may not serve.
    let mut batch = WriteBatch::new();
    batch.delete(Table::Objects, b"b\0k".to_vec());
    let fill = c.write_fill(&batch);
    c.publish(&RowCache::watch(&mut batch), fill).await;
    assert_eq!(read_through(&c, b"x").unwrap()[1], None);
    locked(&c.rows).valid_until = None;
    assert!(c.write_fill(&batch).is_none());
}

#[tokio::test]
async fn a_writer_keeps_nothing_across_a_lapse_or_behind_its_own_later_commit() {
    let mut c = cache("a");
    Arc::get_mut(&mut c).unwrap().started = Instant::now() - 2 * LEASE;
    leased(&c, &[]);
    read_through(&c, b"old");
    let put = |v: &[u8]| {
        let mut b = WriteBatch::new();
        b.put(Table::Objects, b"b\0k".to_vec(), v.to_vec());
        b
    };
    // The leases lapsed (and came back) between the commit and its publication: another
    // node may have committed meanwhile without telling this one.
    let mut first = put(b"before the lapse");
    let fill = c.write_fill(&first);
    {
        let mut r = locked(&c.rows);
        r.valid_until = Some(Instant::now());
        let _ = recompute(&mut r);
    }
    leased(&c, &[]);
    read_through(&c, b"db");
    c.publish(&RowCache::watch(&mut first), fill).await;
    assert!(
        read_through(&c, b"db").is_none(),
        "kept a row across a lapse"
    );

    // Two commits of this node to one row, the later one published first: the earlier
    // one's values are not kept over it.
    let (mut older, mut newer) = (put(b"older"), put(b"newer"));
    let (f_old, f_new) = (c.write_fill(&older), c.write_fill(&newer));
    c.publish(&RowCache::watch(&mut newer), f_new).await;
    c.publish(&RowCache::watch(&mut older), f_old).await;
    let rows = read_through(&c, b"from the database");
    assert!(
        rows.is_none_or(|r| r[1].as_deref() != Some(&b"older"[..])),
        "the older commit's row was kept over the newer one"
    );
}

use super::*;
use feiyun_meta::{MetaRead, RedbStore};

struct Region {
    _dir: tempfile::TempDir,
    meta: Arc<RedbStore>,
    root: PathBuf,
}

fn region() -> Region {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(RedbStore::open(&dir.path().join("meta.redb")).unwrap());
    let root = dir.path().to_owned();
    Region {
        _dir: dir,
        meta,
        root,
    }
}

impl Region {
    /// A node's spec with its own data directory `machine`.
    fn spec(&self, id: &str, machine: &str, port: u16) -> NodeSpec {
        let data_dir = self.root.join(machine);
        std::fs::create_dir_all(&data_dir).unwrap();
        NodeSpec {
            id: id.into(),
            advertise: format!("10.0.0.1:{port}"),
            zone: Some("z1".into()),
            down_secs: 5,
            data_dir,
        }
    }

    async fn join(&self, spec: NodeSpec) -> Result<Arc<Membership<RedbStore>>, ClusterError> {
        Membership::join(self.meta.clone(), spec, LocalUsage::default()).await
    }

    /// Makes node `id` look silent for `secs` (as if its process died that long ago).
    async fn age(&self, id: &str, secs: i64) {
        let key = record_key(id);
        let mut r = decode(id, &self.meta.get(Table::Cluster, &key).unwrap().unwrap()).unwrap();
        r.heartbeat_ms -= secs * 1000;
        r.expires_ms -= secs * 1000;
        let mut b = WriteBatch::new();
        b.put(Table::Cluster, key, encode(&r));
        self.meta.commit(b).await.unwrap();
    }
}

#[tokio::test]
async fn a_node_registers_and_heartbeats() {
    let r = region();
    let a = r.join(r.spec("a", "m1", 1)).await.unwrap();
    assert!(a.is_ready());
    let nodes = a.nodes().unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].up);
    assert_eq!(nodes[0].record.zone.as_deref(), Some("z1"));
    let before = nodes[0].record.heartbeat_ms;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let usage = LocalUsage {
        capacity_bytes: 100,
        free_bytes: 40,
        blobs: 3,
        blob_bytes: 30,
    };
    a.heartbeat(Some(usage)).await.unwrap();
    let after = &a.nodes().unwrap()[0].record;
    assert!(after.heartbeat_ms > before);
    assert_eq!(
        (after.capacity_bytes, after.free_bytes, after.blobs),
        (100, 40, 3)
    );
}

#[tokio::test]
async fn a_second_machine_cannot_take_a_running_nodes_id_until_it_is_down() {
    let r = region();
    let first = r.join(r.spec("a", "m1", 1)).await.unwrap();
    match r.join(r.spec("a", "m2", 2)).await {
        Err(ClusterError::IdTaken { id, advertise, .. }) => {
            assert_eq!((id.as_str(), advertise.as_str()), ("a", "10.0.0.1:1"));
        }
        other => panic!("expected IdTaken, got {:?}", other.map(|_| ())),
    }
    // Down for longer than node_down_secs: the replacement machine takes the id.
    r.age("a", 6).await;
    let second = r.join(r.spec("a", "m2", 2)).await.unwrap();
    assert!(matches!(
        first.heartbeat(None).await,
        Err(ClusterError::Superseded)
    ));
    assert!(!first.is_ready());
    second.heartbeat(None).await.unwrap();
    assert_eq!(second.nodes().unwrap()[0].record.advertise, "10.0.0.1:2");
}

#[tokio::test]
async fn a_restart_on_the_same_data_directory_takes_its_record_back_at_once() {
    let r = region();
    let old = r.join(r.spec("a", "m1", 1)).await.unwrap();
    let new = r.join(r.spec("a", "m1", 1)).await.unwrap();
    assert!(matches!(
        old.heartbeat(None).await,
        Err(ClusterError::Superseded)
    ));
    new.heartbeat(None).await.unwrap();
}

#[tokio::test]
async fn a_copied_data_directory_cannot_take_a_running_node_over() {
    let r = region();
    let _a = r.join(r.spec("a", "m1", 1)).await.unwrap();
    // Same machine key (a cloned disk), another address.
    assert!(matches!(
        r.join(r.spec("a", "m1", 7)).await,
        Err(ClusterError::IdTaken { .. })
    ));
}

#[tokio::test]
async fn liveness_is_the_writers_lease_and_a_future_stamp_is_not_up() {
    let r = region();
    let mut long = r.spec("a", "m1", 1);
    long.down_secs = 60;
    let _a = r.join(long).await.unwrap();
    // Silent for 10 s: down for a reader with a 5 s window, but its own lease is 60 s.
    r.age("a", 10).await;
    assert!(matches!(
        r.join(r.spec("a", "m2", 2)).await,
        Err(ClusterError::IdTaken { .. })
    ));
    // A clock that jumped years ahead for one heartbeat does not pin the node up.
    r.age("a", -10 - 365 * 86_400).await;
    let n = list_nodes(&*r.meta).unwrap();
    assert!(!n[0].up);
}

#[tokio::test]
async fn two_running_nodes_cannot_advertise_one_address() {
    let r = region();
    let _a = r.join(r.spec("a", "m1", 1)).await.unwrap();
    match r.join(r.spec("b", "m2", 1)).await {
        Err(ClusterError::AddressTaken { other, .. }) => assert_eq!(other, "a"),
        other => panic!("expected AddressTaken, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn draining_survives_heartbeats_and_restarts() {
    let r = region();
    let a = r.join(r.spec("a", "m1", 1)).await.unwrap();
    let b = r.join(r.spec("b", "m2", 2)).await.unwrap();
    let view = b.set_draining("a", true).await.unwrap();
    assert!(view.record.draining && view.up);
    a.heartbeat(None).await.unwrap();
    assert!(
        a.nodes()
            .unwrap()
            .iter()
            .any(|n| n.record.id == "a" && n.record.draining)
    );
    let a = r.join(r.spec("a", "m1", 1)).await.unwrap();
    assert!(a.nodes().unwrap()[0].record.draining);
    b.set_draining("a", false).await.unwrap();
    assert!(!a.nodes().unwrap()[0].record.draining);
    assert!(matches!(
        b.set_draining("zz", true).await,
        Err(ClusterError::NoSuchNode(_))
    ));
}

#[tokio::test]
async fn only_a_down_node_is_removed_and_it_learns_so() {
    let r = region();
    let a = r.join(r.spec("a", "m1", 1)).await.unwrap();
    let b = r.join(r.spec("b", "m2", 2)).await.unwrap();
    assert!(matches!(b.remove("a").await, Err(ClusterError::NodeUp(_))));
    r.age("a", 6).await;
    assert!(
        !b.nodes()
            .unwrap()
            .iter()
            .find(|n| n.record.id == "a")
            .unwrap()
            .up
    );
    b.remove("a").await.unwrap();
    assert_eq!(b.nodes().unwrap().len(), 1);
    assert!(matches!(
        a.heartbeat(None).await,
        Err(ClusterError::Superseded)
    ));
    assert!(!a.is_ready());
    assert!(matches!(
        b.remove("a").await,
        Err(ClusterError::NoSuchNode(_))
    ));
}

#[test]
fn a_damaged_node_key_file_is_an_error_not_a_new_identity() {
    let dir = tempfile::tempdir().unwrap();
    let k = load_or_create_node_key(dir.path()).unwrap();
    assert_eq!(load_or_create_node_key(dir.path()).unwrap(), k);
    std::fs::write(dir.path().join("node-key"), "garbage").unwrap();
    assert!(matches!(
        load_or_create_node_key(dir.path()),
        Err(ClusterError::NodeKey(_))
    ));
}

#[test]
fn usage_counts_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ab")).unwrap();
    std::fs::write(dir.path().join("ab/1"), [0u8; 10]).unwrap();
    std::fs::write(dir.path().join("ab/2"), [0u8; 5]).unwrap();
    assert_eq!(dir_usage(dir.path()), (2, 15));
    let (cap, free) = disk_usage(dir.path());
    assert!(cap > 0 && free <= cap);
}

/// One node at a time holds the background lease; when its holder stops renewing, another
/// takes it once it expires, with a higher fencing token.
#[tokio::test]
async fn the_background_lease_has_one_holder_and_moves_when_it_lapses() {
    let r = region();
    let a = r.join(r.spec("a", "m1", 1)).await.unwrap();
    let b = r.join(r.spec("b", "m2", 2)).await.unwrap();
    assert!(a.try_lead().await.unwrap());
    assert!(a.leads());
    let first = a.fence();
    assert!(!b.try_lead().await.unwrap());
    assert!(!b.leads());
    // Renewing keeps the token.
    assert!(a.try_lead().await.unwrap());
    assert_eq!(a.fence(), first);
    // The holder goes silent: its lease, written with its own clock, runs out.
    let mut lease: LeaseRecord =
        serde_json::from_slice(&r.meta.get(Table::Cluster, LEASE_KEY).unwrap().unwrap()).unwrap();
    lease.expires_ms = now_ms() - 1;
    let mut batch = WriteBatch::new();
    batch.put(
        Table::Cluster,
        LEASE_KEY.to_vec(),
        serde_json::to_vec(&lease).unwrap(),
    );
    r.meta.commit(batch).await.unwrap();
    assert!(b.try_lead().await.unwrap());
    assert!(b.leads());
    assert_eq!(b.fence(), first + 1);
    // The old holder learns it at its next renewal and stops.
    assert!(!a.try_lead().await.unwrap());
    assert!(!a.leads());
}

/// A holder paused past its lease cannot land a fenced commit after its successor took
/// over: the fence row changed with the holder, and renewals leave it alone.
#[tokio::test]
async fn a_deposed_holders_fenced_commit_is_refused() {
    let r = region();
    let a = r.join(r.spec("a", "m1", 1)).await.unwrap();
    let b = r.join(r.spec("b", "m2", 2)).await.unwrap();
    assert!(a.try_lead().await.unwrap());
    let fenced = |token: u64| {
        let mut batch = WriteBatch::new();
        batch
            .check_value(
                Table::Cluster,
                FENCE_KEY,
                Some(token.to_be_bytes().to_vec()),
            )
            .put(
                Table::Cluster,
                b"work".to_vec(),
                token.to_be_bytes().to_vec(),
            );
        batch
    };
    r.meta.commit(fenced(a.fence())).await.unwrap();
    let row = r.meta.get(Table::Cluster, FENCE_KEY).unwrap();
    assert!(a.try_lead().await.unwrap());
    assert_eq!(r.meta.get(Table::Cluster, FENCE_KEY).unwrap(), row);
    let mut lease: LeaseRecord =
        serde_json::from_slice(&r.meta.get(Table::Cluster, LEASE_KEY).unwrap().unwrap()).unwrap();
    lease.expires_ms = now_ms() - 1;
    let mut batch = WriteBatch::new();
    batch.put(
        Table::Cluster,
        LEASE_KEY.to_vec(),
        serde_json::to_vec(&lease).unwrap(),
    );
    r.meta.commit(batch).await.unwrap();
    assert!(b.try_lead().await.unwrap());
    // `a` has not yet noticed (it still believes its token), and its late commit fails.
    assert!(matches!(
        r.meta.commit(fenced(a.fence())).await,
        Err(MetaError::Conflict(_))
    ));
    r.meta.commit(fenced(b.fence())).await.unwrap();
    assert_eq!(
        r.meta.get(Table::Cluster, b"work").unwrap(),
        Some(b.fence().to_be_bytes().to_vec())
    );
    // A lost lease row does not bring the token back: the next holder's is above the
    // fence row, so no deposed holder's token ever matches again.
    let mut batch = WriteBatch::new();
    batch.delete(Table::Cluster, LEASE_KEY.to_vec());
    r.meta.commit(batch).await.unwrap();
    let deposed = b.fence();
    assert!(a.try_lead().await.unwrap());
    assert!(a.fence() > deposed);
    assert!(matches!(
        r.meta.commit(fenced(deposed)).await,
        Err(MetaError::Conflict(_))
    ));
}

//! Site replication of identities: the failover drill and its refusals.

use super::*;

/// The documented failover drill (README "Disaster recovery"): two regions of one site, the
/// primary lost, the replica promoted and written to with the same credentials, the primary
/// back and caught up, failback — and identities follow in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_replica_and_failback_keep_data_and_credentials() {
    let site = [("FEIYUN_ACCOUNT_ID", "123456789012")];
    let a_dir = tempfile::tempdir().expect("tmp");
    let a_addr = common::free_addr();
    let mut a = Region::start_at(a_dir.path(), &a_addr, &site);
    let b = Region::start_env(&site);
    versioned_bucket(&a.client(), "app").await;
    versioned_bucket(&b.client(), "app").await;
    add_site_region(&a, "dr", &b.endpoint());
    add_site_region(&b, "main", &a.endpoint());
    put_replication(
        &a.client(),
        "app",
        vec![rule("to-dr", 1, "", "arn:aws:s3:dr::app", true)],
    )
    .await
    .expect("rule");

    // A user made at the primary is accepted by the replica region too, and a KMS key's id
    // and alias are known there.
    let (ak, sk) = iam_user(&a, "alice", APP_POLICY);
    let (status, key) = common::kms(
        &a,
        "CreateKey",
        serde_json::json!({"Description": "app data"}),
    );
    assert_eq!(status, 200, "{key}");
    let key_id = key["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("key id")
        .to_owned();
    let (status, _) = common::kms(
        &a,
        "CreateAlias",
        serde_json::json!({"AliasName": "alias/app", "TargetKeyId": key_id}),
    );
    assert_eq!(status, 200);
    let alice_a = common::client_for(&a.endpoint(), &ak, &sk);
    let alice_b = common::client_for(&b.endpoint(), &ak, &sk);
    // Watched as root: polling with alice's key before it arrives would be failed sign-ins,
    // and enough of them throttle the whole loopback source, the peer's pushes included.
    eventually(30, "alice at the replica region", || async {
        user_names(&b).contains(&"alice".to_owned())
    })
    .await;
    assert!(may_list(&alice_b, "app").await);
    eventually(30, "the KMS alias at the replica region", || async {
        let (status, d) = common::kms(&b, "DescribeKey", serde_json::json!({"KeyId": "alias/app"}));
        status == 200 && d["KeyMetadata"]["KeyId"] == key_id.as_str()
    })
    .await;
    // Objects written at the replica region under that alias are sealed by its own copy.
    alice_b
        .put_object()
        .bucket("app")
        .key("sealed")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .ssekms_key_id("alias/app")
        .body(ByteStream::from_static(b"secret"))
        .send()
        .await
        .expect("SSE-KMS under the replicated alias");
    assert_eq!(contents(&alice_b, "app").await["sealed"], b"secret");
    alice_b
        .delete_object()
        .bucket("app")
        .key("sealed")
        .send()
        .await
        .expect("clean");
    let mut written = Vec::new();
    for i in 0..20 {
        let key = format!("doc/{i:02}");
        written.push((
            key.clone(),
            put(&alice_a, "app", &key, key.clone().into_bytes()).await,
        ));
    }
    wait_status(60, &a.client(), "app", &written, "COMPLETED").await;

    // The primary is lost. Promote the replica: it takes writes (it always could) and now
    // replicates them back to the primary's bucket.
    a.kill9();
    put_replication(
        &b.client(),
        "app",
        vec![rule("to-main", 1, "", "arn:aws:s3:main::app", true)],
    )
    .await
    .expect("promote");
    let mut failover = Vec::new();
    for i in 20..30 {
        let key = format!("doc/{i:02}");
        failover.push((
            key.clone(),
            put(&alice_b, "app", &key, key.clone().into_bytes()).await,
        ));
    }
    put(
        &alice_b,
        "app",
        "doc/00",
        b"changed during the failover".to_vec(),
    )
    .await;
    alice_b
        .delete_object()
        .bucket("app")
        .key("doc/01")
        .send()
        .await
        .expect("delete at the replica");
    // An identity change during the failover.
    let (bk, bs) = iam_user(&b, "bob", APP_POLICY);

    // The primary comes back with what it had; the replica's backlog and identities reach it.
    let a = Region::start_at(a_dir.path(), &a_addr, &site);
    wait_status(90, &b.client(), "app", &failover, "COMPLETED").await;
    let bob_a = common::client_for(&a.endpoint(), &bk, &bs);
    eventually(30, "bob at the primary", || async {
        user_names(&a).contains(&"bob".to_owned())
    })
    .await;
    assert!(may_list(&bob_a, "app").await);
    // A resync finds nothing missing.
    let out: serde_json::Value = serde_json::from_str(&cli_ok(
        &b,
        &[
            "replication",
            "--json",
            "resync",
            "app",
            "--to",
            "main",
            "--wait",
        ],
    ))
    .expect("json");
    assert_eq!(out["resyncs"][0]["failed"], 0, "{out}");

    // Failback: writes stop at the replica, its backlog is empty, both hold the same versions;
    // clients go back to the primary and read what was written during the failover.
    eventually(30, "the replica's backlog to drain", || async {
        let st: serde_json::Value =
            serde_json::from_str(&cli_ok(&b, &["replication", "status", "--json"])).expect("json");
        st["pending_events"] == 0
    })
    .await;
    eventually(30, "identical version lists", || async {
        all_versions(&a.client(), "app", "").await == all_versions(&b.client(), "app", "").await
    })
    .await;
    let alice_a = common::client_for(&a.endpoint(), &ak, &sk);
    let now_a = contents(&alice_a, "app").await;
    assert_eq!(now_a.len(), 29);
    assert_eq!(now_a["doc/00"], b"changed during the failover");
    assert!(!now_a.contains_key("doc/01"));
    assert_eq!(now_a["doc/25"], b"doc/25");

    // A user removed at the primary loses access at the replica region too.
    cli_ok(&a, &["iam", "delete-user", "alice"]);
    eventually(30, "alice gone at the replica region", || async {
        !user_names(&b).contains(&"alice".to_owned())
    })
    .await;
    assert!(!may_list(&alice_b, "app").await);
    // Bob stays.
    let bob_b = common::client_for(&b.endpoint(), &bk, &bs);
    assert!(may_list(&bob_b, "app").await);
    let st: serde_json::Value =
        serde_json::from_str(&cli_ok(&a, &["replication", "status", "--json"])).expect("json");
    assert!(st["site"]["last_error"].is_null(), "{st}");
}

/// Two regions of a site that push their identities to each other at the same moment both
/// finish: a push must not hold what the other's import waits for. The links between them
/// are cut while both change, so both pushes are in flight together when they heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_site_pushes_both_complete() {
    let site = [("FEIYUN_ACCOUNT_ID", "123456789012")];
    let a = Region::start_env(&site);
    // Started in another second, b's account row differs from a's: two regions with nothing
    // of their own, at the same generation, must still agree which one yields.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = Region::start_env(&site);
    let (to_a, to_b) = (
        common::Link::open(a.addr).await,
        common::Link::open(b.addr).await,
    );
    for (r, name, peer) in [(&a, "dr", to_b.url()), (&b, "main", to_a.url())] {
        add_site_region(r, name, &peer);
    }
    let quiet = |r: &Region| -> bool {
        let st: serde_json::Value =
            serde_json::from_str(&cli_ok(r, &["replication", "status", "--json"])).expect("json");
        st["site"]["last_error"].is_null()
            && (!st["site"]["last_push"].is_null() || !st["site"]["last_import"].is_null())
    };
    eventually(30, "the first exchange", || async {
        quiet(&a) && quiet(&b)
    })
    .await;

    to_a.cut();
    to_b.cut();
    // Both change while cut; two push rounds later both pushes wait in the links. The site
    // keeps the change its regions noticed last, whichever that is (docs/limitations.md).
    iam_user(&b, "bob", APP_POLICY);
    iam_user(&a, "alice", APP_POLICY);
    tokio::time::sleep(Duration::from_secs(5)).await;
    to_a.heal();
    to_b.heal();
    // Held across the push, each import would wait for the other region's push to time out.
    eventually(15, "both regions to hold the same identities", || async {
        let held = user_names(&a);
        held == user_names(&b) && held.len() == 1
    })
    .await;
    eventually(15, "both pushes answered", || async {
        quiet(&a) && quiet(&b)
    })
    .await;
}

/// The users a region holds, asked as root.
fn user_names(r: &Region) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&cli_ok(r, &["iam", "--json", "list-users"])).expect("json");
    v.as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["UserName"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_replication_refuses_regions_of_different_accounts() {
    let a = Region::start_env(&[("FEIYUN_ACCOUNT_ID", "123456789012")]);
    let b = Region::start_env(&[("FEIYUN_ACCOUNT_ID", "210987654321")]);
    for (r, name, peer) in [(&a, "dr", b.endpoint()), (&b, "main", a.endpoint())] {
        add_site_region(r, name, &peer);
    }
    iam_user(&a, "carol", APP_POLICY);
    eventually(30, "the mismatch in the status", || async {
        let st: serde_json::Value =
            serde_json::from_str(&cli_ok(&a, &["replication", "status", "--json"])).expect("json");
        st["site"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("SiteMismatch") && e.contains("account_id"))
    })
    .await;
    // An account id that is not 12 digits stops the server at start, with the reason.
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("FEIYUN_ACCOUNT_ID", "12345")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("account_id"));
}

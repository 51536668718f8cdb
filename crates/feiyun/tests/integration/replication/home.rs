//! Home regions: requests forwarded or redirected to a bucket's home, failover when it is
//! down, and reads proxied to a peer.

use super::*;

/// A replica region that names the bucket's home forwards requests there while it is up, so
/// clients may use either endpoint; with the home down it serves the replica (failover), and
/// forwards again once the home is back. Redirect mode answers 307 instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_the_home_region_and_fail_over_when_it_is_down() {
    let a_dir = tempfile::tempdir().expect("tmp");
    let a_addr = common::free_addr();
    let mut a = Region::start_at(a_dir.path(), &a_addr, &[]);
    let b = Region::start();
    let (ca, cb) = (a.client(), b.client());
    versioned_bucket(&ca, "app").await;
    versioned_bucket(&cb, "app").await;
    add_region(&a, "dr", &b.endpoint());
    add_region(&b, "main", &a.endpoint());
    put_replication(
        &ca,
        "app",
        vec![rule("to-dr", 1, "", "arn:aws:s3:dr::app", true)],
    )
    .await
    .expect("rule");
    let set = cli_ok(&b, &["replication", "home", "app", "--region", "main"]);
    assert!(set.contains("forwarded"), "{set}");

    // Written through the replica region's endpoint, it lands in the home region (which
    // replicates it back as usual), and reads through either endpoint agree.
    let v = put(&cb, "app", "via-dr", b"one".to_vec()).await;
    assert!(
        !status(&ca, "app", "via-dr", &v).await.is_empty(),
        "written at main"
    );
    wait_status(
        30,
        &ca,
        "app",
        &[("via-dr".to_owned(), v.clone())],
        "COMPLETED",
    )
    .await;
    assert_eq!(
        status(&cb, "app", "via-dr", &v).await,
        "COMPLETED",
        "a forwarded HEAD"
    );
    assert_eq!(body(&cb, "app", "via-dr", &v).await, b"one");
    let refusal = cli(&b, &["region", "remove", "main"]);
    assert!(String::from_utf8_lossy(&refusal.stderr).contains("home region"));

    // The home region is lost: the replica region serves what it holds and takes writes.
    a.kill9();
    eventually(20, "the home seen down", || async {
        metric(&b, "feiyun_replication_peer_up{region=\"main\"}") == 0.0
    })
    .await;
    let st = cli_ok(&b, &["replication", "status"]);
    assert!(st.contains("home app -> main\thome down"), "{st}");
    assert_eq!(body(&cb, "app", "via-dr", &v).await, b"one");
    assert_eq!(status(&cb, "app", "via-dr", &v).await, "REPLICA");
    let during = put(&cb, "app", "during-outage", b"two".to_vec()).await;
    assert_eq!(body(&cb, "app", "during-outage", &during).await, b"two");

    // Back: requests are forwarded again (the outage write is the replica region's own; it
    // goes home with a rule back to main, as in the failover drill).
    let a = Region::start_at(a_dir.path(), &a_addr, &[]);
    let ca = a.client();
    eventually(20, "the home seen up", || async {
        metric(&b, "feiyun_replication_peer_up{region=\"main\"}") == 1.0
    })
    .await;
    let v3 = put(&cb, "app", "after", b"three".to_vec()).await;
    assert_eq!(body(&ca, "app", "after", &v3).await, b"three");

    // Redirect mode: a 307 naming the home region, before any signature is checked.
    cli_ok(
        &b,
        &[
            "replication",
            "home",
            "app",
            "--region",
            "main",
            "--redirect",
        ],
    );
    let resp = common::raw(
        b.addr,
        "GET /app/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 307, "{}", resp.body_text());
    assert_eq!(
        resp.header("location"),
        Some(format!("{}/app/after", a.endpoint()).as_str())
    );
    assert!(resp.body_text().contains("TemporaryRedirect"));
    // Cleared: served here again.
    assert!(cli_ok(&b, &["replication", "home", "app", "--clear"]).contains("served here"));
    // (Served here, the version shows as this region's replica, not main's COMPLETED.)
    wait_status(30, &cb, "app", &[("after".to_owned(), v3)], "REPLICA").await;
}

/// With `replication_proxy_reads`, a read that finds nothing in a bucket replicating to a
/// same-named bucket of a peer is answered by that peer: a version written there and not
/// replicated here yet (the link is down) is readable here all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_versions_not_replicated_yet_are_answered_by_the_peer() {
    let a = Region::start();
    let b = Region::start_env(&[("FEIYUN_REPLICATION_PROXY_READS", "true")]);
    let (ca, cb) = (a.client(), b.client());
    versioned_bucket(&ca, "shared").await;
    versioned_bucket(&cb, "shared").await;
    let a_to_b = common::Link::open(b.addr).await;
    add_region(&a, "b", &a_to_b.url());
    add_region(&b, "a", &a.endpoint());
    put_replication(
        &ca,
        "shared",
        vec![rule("to-b", 1, "", "arn:aws:s3:b::shared", true)],
    )
    .await
    .expect("a→b");
    put_replication(
        &cb,
        "shared",
        vec![rule("to-a", 1, "", "arn:aws:s3:a::shared", true)],
    )
    .await
    .expect("b→a");
    a_to_b.cut();
    let v = put(&ca, "shared", "fresh", b"written at a".to_vec()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&ca, "shared", "fresh", &v).await, "PENDING");
    // Not at b yet; b's reads are answered by a.
    assert_eq!(body(&cb, "shared", "fresh", &v).await, b"written at a");
    let latest = cb
        .get_object()
        .bucket("shared")
        .key("fresh")
        .send()
        .await
        .expect("latest through b");
    assert_eq!(latest.version_id(), Some(v.as_str()));
    // What neither region has is still missing.
    let missing = cb.get_object().bucket("shared").key("nowhere").send().await;
    assert!(format!("{missing:?}").contains("NoSuchKey"));
    // The link heals: the version arrives and b serves its own replica.
    a_to_b.heal();
    wait_status(
        60,
        &ca,
        "shared",
        &[("fresh".to_owned(), v.clone())],
        "COMPLETED",
    )
    .await;
    assert_eq!(status(&cb, "shared", "fresh", &v).await, "REPLICA");
}

/// Issue 19, item 24: a request forwarded to the home region was judged there with the
/// relaying region's address, so `aws:SourceIp` conditions were bypassed by asking another
/// region. The home region now judges the client the relay saw: a Deny on one client
/// address holds whichever region it asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_is_judged_by_its_original_client() {
    let a = Region::start();
    let b = Region::start();
    let (ca, cb) = (a.client(), b.client());
    versioned_bucket(&ca, "app").await;
    versioned_bucket(&cb, "app").await;
    add_region(&b, "main", &a.endpoint());
    cli_ok(&b, &["replication", "home", "app", "--region", "main"]);
    put(&ca, "app", "doc", b"home copy".to_vec()).await;
    ca.put_bucket_policy()
        .bucket("app")
        .policy(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::app/*","Condition":{"IpAddress":{"aws:SourceIp":"127.0.0.2/32"}}}]}"#,
        )
        .send()
        .await
        .expect("policy");
    // The relaying region connects from 127.0.0.1; the client from 127.0.0.2.
    let relayed = signed_get_from("127.0.0.2", b.addr, "/app/doc").await;
    assert_eq!(relayed.status, 403, "{}", relayed.body_text());
    assert_eq!(relayed.code(), "AccessDenied");
    let direct = signed_get_from("127.0.0.2", a.addr, "/app/doc").await;
    assert_eq!(direct.status, 403, "{}", direct.body_text());
    // Any other client is served through either region.
    for to in [a.addr, b.addr] {
        let ok = signed_get_from("127.0.0.1", to, "/app/doc").await;
        assert_eq!(ok.status, 200, "{}", ok.body_text());
        assert_eq!(ok.body_text(), "home copy");
    }
}

/// A GET signed by the root, sent from the local address `ip`.
async fn signed_get_from(ip: &str, to: std::net::SocketAddr, path: &str) -> common::RawResponse {
    use std::io::{Read, Write};
    let host = to.to_string();
    let auth = common::sigv4::Signer {
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        region: "us-east-1".into(),
    }
    .sign(
        "GET",
        path,
        "",
        &[("host", host.clone())],
        &common::sigv4::sha256_hex(b""),
        &common::sigv4::now_amz_date(),
    );
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in auth {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(std::net::SocketAddr::new(ip.parse().expect("ip"), 0))
        .expect("bind");
    let s = sock
        .connect(to)
        .await
        .expect("connect")
        .into_std()
        .expect("std");
    tokio::task::spawn_blocking(move || {
        let mut s = s;
        s.set_nonblocking(false).expect("blocking");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s.write_all(req.as_bytes()).expect("send");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("read");
        common::parse_response(&buf)
    })
    .await
    .expect("request")
}

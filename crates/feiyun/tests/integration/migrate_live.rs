//! `feiyun migrate live`: a bucket that serves a legacy store's keys before they are copied
//! (another Feiyun region as the legacy store), its copier, and the cut-over's edges: writes
//! and deletes here win, the legacy store going away, authorization and bad input.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;

use crate::common::{ACCESS_KEY, Region, SECRET_KEY, iam_user, pattern};
use crate::migrate::{get, keys, requests, text};

/// The legacy regions of these tests listen on loopback, which a region refuses to reach
/// for a live migration unless its operator allows it.
const LOOPBACK: (&str, &str) = ("FEIYUN_LIVE_ALLOWED_NETWORKS", "127.0.0.0/8");

/// `feiyun migrate live ARGS` against `r` as `(ak, sk)`, the legacy keys in the environment.
fn live_as(r: &Region, (ak, sk): (&str, &str), args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(["migrate", "live"])
        .args(args)
        .args(["--endpoint", &r.endpoint()])
        .env("AWS_ACCESS_KEY_ID", ak)
        .env("AWS_SECRET_ACCESS_KEY", sk)
        .env_remove("AWS_PROFILE")
        .env("FEIYUN_SOURCE_ACCESS_KEY", ACCESS_KEY)
        .env("FEIYUN_SOURCE_SECRET_KEY", SECRET_KEY)
        .output()
        .expect("run feiyun migrate live")
}

fn live(r: &Region, args: &[&str]) -> Output {
    live_as(r, (ACCESS_KEY, SECRET_KEY), args)
}

fn status(r: &Region, bucket: &str) -> serde_json::Value {
    let o = live(r, &["status", bucket, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

/// A legacy bucket `old` with `n` objects under `p/` (metadata, tags, one in a folder) and
/// one key outside the prefix.
async fn legacy_with(n: usize) -> (Region, Vec<(String, Vec<u8>)>) {
    let legacy = Region::start();
    let c = legacy.client();
    c.create_bucket().bucket("old").send().await.unwrap();
    let mut objects = Vec::new();
    for i in 0..n {
        let key = if i == 3 {
            "dir/nested ü+%.bin".to_owned()
        } else {
            format!("k{i:03}")
        };
        let body = pattern(1 + i * 997, i as u64);
        c.put_object()
            .bucket("old")
            .key(format!("p/{key}"))
            .body(ByteStream::from(body.clone()))
            .content_type("application/x-test")
            .metadata("n", i.to_string())
            .tagging(format!("n={i}"))
            .send()
            .await
            .unwrap();
        objects.push((key, body));
    }
    c.put_object()
        .bucket("old")
        .key("outside")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    (legacy, objects)
}

fn start(r: &Region, legacy: &Region, extra: &[&str]) {
    let url = legacy.endpoint();
    let mut args = vec![
        "start",
        "new",
        "--from",
        "s3://old/p",
        "--source-endpoint",
        &url,
    ];
    args.extend_from_slice(extra);
    let o = live(r, &args);
    assert!(o.status.success(), "{}", text(&o));
}

async fn status_code<T, E: std::fmt::Debug>(
    r: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0),
    }
}

#[tokio::test]
async fn a_live_bucket_serves_every_legacy_key_before_it_is_copied() {
    let (legacy, objects) = legacy_with(40).await;
    // No copier pass during this test: every read below goes through.
    let r = Region::start_env(&[("FEIYUN_LIVE_COPY_INTERVAL_SECS", "3600"), LOOPBACK]);
    let c = r.client();
    c.create_bucket().bucket("new").send().await.unwrap();
    start(&r, &legacy, &[]);

    // LIST before anything is here: the legacy keys, paged, folders folded.
    let listed = keys(&c, "new").await;
    let mut want: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(listed, want);
    let top = c
        .list_objects_v2()
        .bucket("new")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<_> = top
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["dir/"]);
    assert_eq!(top.contents().len(), objects.len() - 1);

    // A write here wins over the legacy copy; a delete here hides it for good.
    c.put_object()
        .bucket("new")
        .key("k005")
        .body(ByteStream::from_static(b"written in the region"))
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket("new")
        .key("k007")
        .send()
        .await
        .unwrap();

    // A policy that tests the tags of an object not copied yet sees its legacy tags.
    let deny = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::new/*","Condition":{"StringEquals":{"s3:ExistingObjectTag/n":"15"}}}]}"#;
    c.put_bucket_policy()
        .bucket("new")
        .policy(deny)
        .send()
        .await
        .unwrap();
    let denied = c.get_object().bucket("new").key("k015").send().await;
    assert_eq!(status_code(denied).await, 403);
    assert_eq!(get(&c, "new", "k016").await, objects[16].1);
    c.delete_bucket_policy().bucket("new").send().await.unwrap();

    // Sixteen readers of one key share one fetch.
    let before = requests(&legacy, "GetObject", "200");
    let reads = (0..16).map(|_| {
        let c = c.clone();
        async move { get(&c, "new", "k010").await }
    });
    for body in futures::future::join_all(reads).await {
        assert_eq!(body, objects[10].1);
    }
    assert_eq!(requests(&legacy, "GetObject", "200") - before, 1);

    // Every key, read in parallel through the new endpoint: no 404, the same bytes.
    let reads = objects
        .iter()
        .filter(|(k, _)| k != "k005" && k != "k007")
        .map(|(k, want)| {
            let c = c.clone();
            async move {
                assert_eq!(get(&c, "new", k).await, *want, "{k}");
            }
        });
    futures::future::join_all(reads).await;
    assert_eq!(get(&c, "new", "k005").await, b"written in the region");
    let gone = c.get_object().bucket("new").key("k007").send().await;
    assert_eq!(status_code(gone).await, 404);
    assert!(!keys(&c, "new").await.contains(&"k007".to_owned()));
    let outside = c.get_object().bucket("new").key("../outside").send().await;
    assert_eq!(status_code(outside).await, 404);

    // What was read through kept its metadata, tags and time.
    let h = c
        .head_object()
        .bucket("new")
        .key("k012")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_type(), Some("application/x-test"));
    assert_eq!(
        h.metadata().and_then(|m| m.get("n")).map(String::as_str),
        Some("12")
    );
    let lh = legacy
        .client()
        .head_object()
        .bucket("old")
        .key("p/k012")
        .send()
        .await
        .unwrap();
    assert_eq!(h.last_modified(), lh.last_modified());
    assert_eq!(h.e_tag(), lh.e_tag());
    let tags = c
        .get_object_tagging()
        .bucket("new")
        .key("k012")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tag_set()[0].value(), "12");
    // A HEAD of a key not read yet goes through too.
    let h = c
        .head_object()
        .bucket("new")
        .key("k020")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_length(), Some(objects[20].1.len() as i64));

    let st = status(&r, "new");
    assert_eq!(st["ready_to_finish"], false, "{st}");
    let o = live(&r, &["finish", "new"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not yet completed a pass"),
        "{}",
        text(&o)
    );

    // The legacy store gone: keys already here are served, the others fail clearly.
    legacy
        .client()
        .put_object()
        .bucket("old")
        .key("p/late")
        .body(ByteStream::from_static(b"never read"))
        .send()
        .await
        .unwrap();
    let mut legacy = legacy;
    legacy.kill9();
    assert_eq!(get(&c, "new", "k010").await, objects[10].1);
    let missing = c.get_object().bucket("new").key("late").send().await;
    let err = missing.expect_err("late was never copied");
    let raw = err.raw_response().expect("an answer");
    assert_eq!(raw.status().as_u16(), 503, "{err:?}");
    let e = err.into_service_error();
    assert_eq!(e.meta().code(), Some("ServiceUnavailable"));
    assert!(
        e.meta()
            .message()
            .unwrap_or_default()
            .contains("legacy store"),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_object_too_large_to_fetch_first_is_streamed_and_left_to_the_copier() {
    let legacy = Region::start();
    let lc = legacy.client();
    lc.create_bucket().bucket("old").send().await.unwrap();
    let big = pattern(65 * 1024 * 1024 + 7, 9);
    let parts: Vec<Vec<u8>> = big.chunks(16 << 20).map(<[u8]>::to_vec).collect();
    crate::common::multipart_put(&lc, "old", "p/big", &parts)
        .await
        .unwrap();
    let r = Region::start_env(&[("FEIYUN_LIVE_COPY_INTERVAL_SECS", "3600"), LOOPBACK]);
    let c = r.client();
    c.create_bucket().bucket("new").send().await.unwrap();
    start(&r, &legacy, &[]);
    let got = get(&c, "new", "big").await;
    assert!(got == big, "the streamed body differs");
    let part = c
        .get_object()
        .bucket("new")
        .key("big")
        .range("bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(
        part.content_range(),
        Some(format!("bytes 1000-1999/{}", big.len()).as_str())
    );
    let part = part.body.collect().await.unwrap().into_bytes();
    assert_eq!(&part[..], &big[1000..2000]);
    // Not stored by the reads: the region holds nothing of it yet.
    assert_eq!(requests(&r, "PutObject", "200"), 0);
}

#[tokio::test]
async fn the_copier_drains_the_legacy_bucket_and_finish_waits_for_a_clean_pass() {
    let (legacy, objects) = legacy_with(30).await;
    let r = Region::start_env(&[("FEIYUN_LIVE_COPY_INTERVAL_SECS", "1"), LOOPBACK]);
    let c = r.client();
    c.create_bucket().bucket("new").send().await.unwrap();
    c.put_object()
        .bucket("new")
        .key("k002")
        .body(ByteStream::from_static(b"here first"))
        .send()
        .await
        .unwrap();
    start(&r, &legacy, &[]);
    c.delete_object()
        .bucket("new")
        .key("k004")
        .send()
        .await
        .unwrap();
    // Readers of every key while the copier runs: no 404, the same bytes, whichever of the
    // two (a read-through or the copier) stores a key first.
    let deadline = Instant::now() + Duration::from_secs(90);
    let st = loop {
        let reads = objects.iter().map(|(k, want)| {
            let c = c.clone();
            async move {
                let got = c.get_object().bucket("new").key(k).send().await;
                match k.as_str() {
                    "k002" => assert_eq!(
                        got.unwrap()
                            .body
                            .collect()
                            .await
                            .unwrap()
                            .into_bytes()
                            .as_ref(),
                        b"here first"
                    ),
                    "k004" => assert_eq!(status_code(got).await, 404),
                    _ => assert_eq!(
                        got.unwrap_or_else(|e| panic!("{k}: {e:?}"))
                            .body
                            .collect()
                            .await
                            .unwrap()
                            .into_bytes()
                            .as_ref(),
                        want.as_slice(),
                        "{k}"
                    ),
                }
            }
        });
        futures::future::join_all(reads).await;
        let st = status(&r, "new");
        if st["ready_to_finish"] == true {
            break st;
        }
        assert!(Instant::now() < deadline, "no clean pass: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Each legacy key was copied by a reader or by the copier; the clean pass found them all.
    assert!(st["copied"].as_u64().unwrap() <= 28, "{st}");
    assert_eq!(st["deleted_here"], 1, "{st}");
    assert_eq!(st["present"], 29, "{st}");
    let o = live(&r, &["finish", "new"]);
    assert!(o.status.success(), "{}", text(&o));
    // Finished: the legacy store is no longer read at all.
    let mut legacy = legacy;
    legacy.kill9();
    let listed = keys(&c, "new").await;
    assert_eq!(listed.len(), 29);
    for (k, want) in &objects {
        match k.as_str() {
            "k002" => assert_eq!(get(&c, "new", k).await, b"here first"),
            "k004" => {
                let r = c.get_object().bucket("new").key(k).send().await;
                assert_eq!(status_code(r).await, 404);
            }
            _ => assert_eq!(get(&c, "new", k).await, *want, "{k}"),
        }
    }
    let o = live(&r, &["status", "new"]);
    assert!(!o.status.success(), "{}", text(&o));
}

#[tokio::test]
async fn starting_live_mode_is_refused_clearly() {
    let legacy = Region::start();
    legacy
        .client()
        .create_bucket()
        .bucket("old")
        .send()
        .await
        .unwrap();
    let r = Region::start_env(&[("FEIYUN_LIVE_COPY_INTERVAL_SECS", "3600"), LOOPBACK]);
    r.client()
        .create_bucket()
        .bucket("new")
        .send()
        .await
        .unwrap();
    let url = legacy.endpoint();
    let base = ["start", "new", "--from", "s3://old", "--source-endpoint"];

    // Wrong legacy credentials.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feiyun"));
    let o = cmd
        .args(["migrate", "live"])
        .args(base)
        .arg(&url)
        .args(["--endpoint", &r.endpoint()])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("FEIYUN_SOURCE_ACCESS_KEY", ACCESS_KEY)
        .env(
            "FEIYUN_SOURCE_SECRET_KEY",
            "wrong-secret-key-wrong-secret-key-xx",
        )
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("cannot list the legacy store"),
        "{}",
        text(&o)
    );
    // An unreachable legacy store, a missing bucket, no such bucket here.
    let dead = format!("http://{}", crate::common::free_addr());
    let o = live(
        &r,
        &[
            "start",
            "new",
            "--from",
            "s3://old",
            "--source-endpoint",
            &dead,
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let o = live(
        &r,
        &[
            "start",
            "new",
            "--from",
            "s3://nope",
            "--source-endpoint",
            &url,
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let o = live(
        &r,
        &[
            "start",
            "absent",
            "--from",
            "s3://old",
            "--source-endpoint",
            &url,
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("NoSuchBucket"), "{}", text(&o));
    // None of that left the bucket in live mode.
    let o = live(&r, &["status", "new"]);
    assert!(!o.status.success(), "{}", text(&o));

    // A region whose operator did not allow loopback refuses to reach it.
    let closed = Region::start();
    closed
        .client()
        .create_bucket()
        .bucket("new")
        .send()
        .await
        .unwrap();
    let o = live(
        &closed,
        &[
            "start",
            "new",
            "--from",
            "s3://old",
            "--source-endpoint",
            &url,
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not an address this server may reach"),
        "{}",
        text(&o)
    );

    // A user without migrate:StartLive is refused; with it, allowed.
    let none = iam_user(
        &r,
        "reader",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
    );
    let o = live_as(
        &r,
        (&none.0, &none.1),
        &[
            "start",
            "new",
            "--from",
            "s3://old",
            "--source-endpoint",
            &url,
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("AccessDenied"), "{}", text(&o));
    // migrate:* alone is not enough: the migration writes the bucket in the caller's name.
    let url2 = url.clone();
    let start_as = |keys: &(String, String)| {
        live_as(
            &r,
            (&keys.0, &keys.1),
            &[
                "start",
                "new",
                "--from",
                "s3://old",
                "--source-endpoint",
                &url2,
            ],
        )
    };
    let half = iam_user(
        &r,
        "half",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"migrate:*","Resource":"arn:aws:s3:::new"}]}"#,
    );
    let o = start_as(&half);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("s3:ListBucket"), "{}", text(&o));
    let ops = iam_user(
        &r,
        "migrator",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"migrate:*","Resource":"arn:aws:s3:::new"},{"Effect":"Allow","Action":"s3:*","Resource":["arn:aws:s3:::new","arn:aws:s3:::new/*"]}]}"#,
    );
    let o = live_as(
        &r,
        (&ops.0, &ops.1),
        &[
            "start",
            "new",
            "--from",
            "s3://old",
            "--source-endpoint",
            &url,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Twice is refused; a live bucket cannot be deleted.
    let o = live(
        &r,
        &[
            "start",
            "new",
            "--from",
            "s3://old",
            "--source-endpoint",
            &url,
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("already in live migration"),
        "{}",
        text(&o)
    );
    let del = r.client().delete_bucket().bucket("new").send().await;
    assert_eq!(status_code(del).await, 409);
}

#[tokio::test]
async fn write_through_replays_writes_and_deletes_to_the_legacy_store() {
    let (legacy, objects) = legacy_with(12).await;
    let r = Region::start_env(&[("FEIYUN_LIVE_COPY_INTERVAL_SECS", "3600"), LOOPBACK]);
    let c = r.client();
    c.create_bucket().bucket("new").send().await.unwrap();
    start(&r, &legacy, &["--write-through"]);
    let lc = legacy.client();
    let puts_before = requests(&legacy, "PutObject", "200");
    // Read through (not to be written back), then change things here.
    assert_eq!(get(&c, "new", "k001").await, objects[1].1);
    c.put_object()
        .bucket("new")
        .key("fresh")
        .body(ByteStream::from_static(b"made in the region"))
        .content_type("text/plain")
        .metadata("who", "app")
        .tagging("a=b c")
        .send()
        .await
        .unwrap();
    c.put_object()
        .bucket("new")
        .key("k002")
        .body(ByteStream::from_static(b"overwritten"))
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket("new")
        .key("k001")
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket("new")
        .key("k005")
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gone = lc
            .head_object()
            .bucket("old")
            .key("p/k005")
            .send()
            .await
            .is_err()
            && lc
                .head_object()
                .bucket("old")
                .key("p/k001")
                .send()
                .await
                .is_err();
        let fresh = lc
            .head_object()
            .bucket("old")
            .key("p/fresh")
            .send()
            .await
            .is_ok();
        if gone && fresh {
            break;
        }
        assert!(Instant::now() < deadline, "write-through did not arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&lc, "old", "p/fresh").await, b"made in the region");
    assert_eq!(get(&lc, "old", "p/k002").await, b"overwritten");
    let h = lc
        .head_object()
        .bucket("old")
        .key("p/fresh")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_type(), Some("text/plain"));
    assert_eq!(
        h.metadata().and_then(|m| m.get("who")).map(String::as_str),
        Some("app")
    );
    let t = lc
        .get_object_tagging()
        .bucket("old")
        .key("p/fresh")
        .send()
        .await
        .unwrap();
    assert_eq!(t.tag_set()[0].value(), "b c");
    // Exactly the two writes made here: the read-through copy was not written back.
    assert_eq!(requests(&legacy, "PutObject", "200") - puts_before, 2);
    assert_eq!(get(&lc, "old", "p/k004").await, objects[4].1);
}

#[tokio::test]
async fn listing_pages_skip_nothing_when_most_legacy_keys_were_deleted_here() {
    let (legacy, objects) = legacy_with(40).await;
    let r = Region::start_env(&[("FEIYUN_LIVE_COPY_INTERVAL_SECS", "3600"), LOOPBACK]);
    let c = r.client();
    c.create_bucket().bucket("new").send().await.unwrap();
    start(&r, &legacy, &[]);
    let mut want: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    // Deleted here without ever being read: whole legacy pages of tombstones.
    for k in want.iter().take(25).chain(want.iter().skip(30).take(6)) {
        c.delete_object().bucket("new").key(k).send().await.unwrap();
    }
    c.put_object()
        .bucket("new")
        .key("k999 here only")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let mut expect: Vec<String> = want[25..30].iter().chain(&want[36..]).cloned().collect();
    expect.push("k999 here only".into());
    expect.sort();
    for page_size in [1, 3, 5, 7, 1000] {
        let mut listed = Vec::new();
        let mut pages = c
            .list_objects_v2()
            .bucket("new")
            .max_keys(page_size)
            .into_paginator()
            .send();
        while let Some(p) = pages.next().await {
            let p = p.unwrap();
            listed.extend(
                p.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(str::to_owned),
            );
        }
        assert_eq!(listed, expect, "page size {page_size}");
    }
}

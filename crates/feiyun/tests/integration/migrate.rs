//! `feiyun migrate` through the real binary: a directory of awkward names into a region, a
//! second region as an S3 source with metadata and tags, incremental reruns with --delete,
//! kill -9 mid-multipart and the resume, and the errors a user meets.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;

use crate::common::{ACCESS_KEY, Region, SECRET_KEY, pattern};

pub(crate) fn feiyun(r: &Region, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(["migrate"])
        .args(args)
        .args(["--endpoint", &r.endpoint()])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_PROFILE")
        .env("FEIYUN_SOURCE_ACCESS_KEY", ACCESS_KEY)
        .env("FEIYUN_SOURCE_SECRET_KEY", SECRET_KEY)
        .output()
        .expect("run feiyun migrate")
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub(crate) fn summary(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

pub(crate) async fn get(c: &aws_sdk_s3::Client, b: &str, k: &str) -> Vec<u8> {
    c.get_object()
        .bucket(b)
        .key(k)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {k}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

pub(crate) async fn keys(c: &aws_sdk_s3::Client, b: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pages = c.list_objects_v2().bucket(b).into_paginator().send();
    while let Some(p) = pages.next().await {
        for o in p.unwrap().contents() {
            out.push(o.key().unwrap().to_owned());
        }
    }
    out
}

fn awkward_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let long = format!("deep/{}", "n".repeat(200));
    let files: Vec<(String, Vec<u8>)> = vec![
        ("a b/with space.txt".into(), b"spaces".to_vec()),
        ("ünï/cödé+plus%pct.bin".into(), pattern(3000, 1)),
        ("empty".into(), Vec::new()),
        ("nested/1/2/3/leaf.csv".into(), b"a,b\n1,2\n".to_vec()),
        (long, b"long".to_vec()),
        // Above the 5 MiB part size the test uses: a multipart copy of 3 parts.
        ("big/blob.dat".into(), pattern(12 << 20, 7)),
        ("a-c".into(), b"sorts before a/".to_vec()),
    ];
    for (k, v) in &files {
        let p = root.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink(root.join("nested"), root.join("nested/1/loop")).unwrap();
    files
}

#[tokio::test]
async fn a_directory_moves_in_verified_and_reruns_copy_only_what_changed() {
    let r = Region::start();
    let c = r.client();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let state = tmp.path().join("state");
    let files = awkward_tree(&src);
    let (s, st) = (src.to_str().unwrap(), state.to_str().unwrap());

    let o = feiyun(
        &r,
        &[
            s,
            "s3://moved/in",
            "--state",
            st,
            "--part-size",
            "5M",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let sum = summary(&o);
    assert_eq!(sum["copied"], files.len(), "{sum}");
    assert_eq!(sum["failed"], 0);
    for (k, v) in &files {
        assert_eq!(&get(&c, "moved", &format!("in/{k}")).await, v, "{k}");
    }
    let head = c
        .head_object()
        .bucket("moved")
        .key("in/nested/1/2/3/leaf.csv")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/csv"));
    assert!(head.metadata().unwrap().contains_key("mtime"));
    let o = feiyun(&r, &["verify", s, "s3://moved/in"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 difference(s)"), "{}", text(&o));

    // A rerun copies nothing; a same-size change, an addition and a deletion are caught.
    let o = feiyun(&r, &[s, "s3://moved/in", "--state", st, "--json"]);
    assert_eq!(summary(&o)["copied"], 0, "{}", text(&o));
    assert_eq!(summary(&o)["skipped"], files.len());
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(src.join("a b/with space.txt"), b"SPACES").unwrap();
    std::fs::write(src.join("added"), b"new").unwrap();
    std::fs::remove_file(src.join("a-c")).unwrap();
    let o = feiyun(&r, &["verify", s, "s3://moved/in", "--json"]);
    assert!(!o.status.success());
    let kinds: Vec<(String, String)> = summary(&o)["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().into(),
                d["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("missing".into(), "added".into())),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("extra".into(), "a-c".into())), "{kinds:?}");
    assert!(
        kinds.contains(&("checksum".into(), "a b/with space.txt".into())),
        "{kinds:?}"
    );
    let o = feiyun(&r, &[s, "s3://moved/in", "--state", st, "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(plan.contains("copy added (new"), "{plan}");
    // Without --delete nothing is planned for removal (the summary's "0 deleted" aside).
    assert!(!plan.lines().any(|l| l.starts_with("delete ")), "{plan}");
    let o = feiyun(
        &r,
        &[s, "s3://moved/in", "--state", st, "--delete", "--json"],
    );
    let sum = summary(&o);
    assert_eq!(
        (sum["copied"].as_u64(), sum["deleted"].as_u64()),
        (Some(2), Some(1)),
        "{sum}"
    );
    assert_eq!(get(&c, "moved", "in/a b/with space.txt").await, b"SPACES");
    let o = feiyun(&r, &["verify", s, "s3://moved/in"]);
    assert!(o.status.success(), "{}", text(&o));

    // Without the journal, the objects already there are recognised, not copied again.
    let o = feiyun(
        &r,
        &[
            s,
            "s3://moved/in",
            "--state",
            tmp.path().join("other").to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(summary(&o)["copied"], 0, "{}", text(&o));
}

#[tokio::test]
async fn unusable_names_and_bad_ends_fail_loudly() {
    let r = Region::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("good"), b"g").unwrap();
    use std::os::unix::ffi::OsStrExt;
    std::fs::write(src.join(std::ffi::OsStr::from_bytes(b"bad\xff")), b"b").unwrap();
    std::os::unix::fs::symlink("/nonexistent", src.join("dangling")).unwrap();
    let state = tmp.path().join("j");
    let (s, st) = (src.to_str().unwrap(), state.to_str().unwrap());
    let o = feiyun(&r, &[s, "s3://names", "--state", st, "--follow-symlinks"]);
    assert!(!o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("not UTF-8"), "{out}");
    assert!(out.contains("1 copied"), "{out}");
    let report = std::fs::read_to_string(state.with_extension("failures")).unwrap();
    assert_eq!(report.lines().count(), 2, "{report}");
    assert_eq!(get(&r.client(), "names", "good").await, b"g");

    // A source that is not there, a source nobody answers at, wrong source credentials.
    let o = feiyun(&r, &["/nonexistent/dir", "s3://names"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a directory"), "{}", text(&o));
    let o = feiyun(
        &r,
        &[
            "s3://x",
            "s3://names",
            "--source-endpoint",
            "http://127.0.0.1:1",
            "--state",
            tmp.path().join("u").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let o = Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args([
            "migrate",
            "s3://names",
            "s3://copy",
            "--source-endpoint",
            &r.endpoint(),
        ])
        .args([
            "--endpoint",
            &r.endpoint(),
            "--state",
            tmp.path().join("k").to_str().unwrap(),
        ])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("FEIYUN_SOURCE_ACCESS_KEY", "FYNOSUCHKEY000000001")
        .env("FEIYUN_SOURCE_SECRET_KEY", "wrong")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("InvalidAccessKeyId"), "{}", text(&o));
    // Neither left a bucket behind: the source is tried before the destination is touched.
    let buckets = r.client().list_buckets().send().await.unwrap();
    let names: Vec<&str> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["names"]);
    // A bucket into itself (or a prefix of itself) in one region is refused up front.
    let o = Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(["migrate", "s3://names", "s3://names/copy"])
        .args([
            "--source-endpoint",
            &r.endpoint(),
            "--endpoint",
            &r.endpoint(),
        ])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("FEIYUN_SOURCE_ACCESS_KEY", ACCESS_KEY)
        .env("FEIYUN_SOURCE_SECRET_KEY", SECRET_KEY)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("overlap"), "{}", text(&o));
    assert_eq!(keys(&r.client(), "names").await, ["good"]);
    // A journal belongs to one migration.
    let o = feiyun(&r, &[s, "s3://other", "--state", st]);
    assert!(text(&o).contains("another --state"), "{}", text(&o));
}

#[tokio::test]
async fn a_bucket_of_another_region_moves_with_metadata_and_tags() {
    let legacy = Region::start();
    let r = Region::start();
    let lc = legacy.client();
    lc.create_bucket().bucket("old").send().await.unwrap();
    for i in 0..25 {
        lc.put_object()
            .bucket("old")
            .key(format!("p/obj {i:02}+ü"))
            .body(ByteStream::from(pattern(100 + i * 37, i as u64)))
            .content_type("application/x-test")
            .cache_control("max-age=60")
            .metadata("owner", format!("team-{i}"))
            .tagging(format!("tier=gold&n={i}"))
            .send()
            .await
            .unwrap();
    }
    lc.put_object()
        .bucket("old")
        .key("outside-the-prefix")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("j");
    let o = feiyun(
        &r,
        &[
            "s3://old/p",
            "s3://new",
            "--source-endpoint",
            &legacy.endpoint(),
            "--state",
            st.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(summary(&o)["copied"], 25);
    let c = r.client();
    assert_eq!(keys(&c, "new").await.len(), 25);
    for i in [0usize, 13, 24] {
        let k = format!("obj {i:02}+ü");
        assert_eq!(get(&c, "new", &k).await, pattern(100 + i * 37, i as u64));
        let h = c.head_object().bucket("new").key(&k).send().await.unwrap();
        assert_eq!(h.content_type(), Some("application/x-test"));
        assert_eq!(h.cache_control(), Some("max-age=60"));
        assert_eq!(h.metadata().unwrap()["owner"], format!("team-{i}"));
        let t = c
            .get_object_tagging()
            .bucket("new")
            .key(&k)
            .send()
            .await
            .unwrap();
        let mut tags: Vec<(String, String)> = t
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        tags.sort();
        assert_eq!(
            tags,
            [
                ("n".to_owned(), i.to_string()),
                ("tier".into(), "gold".into())
            ]
        );
    }
    let o = feiyun(
        &r,
        &[
            "verify",
            "s3://old/p",
            "s3://new",
            "--source-endpoint",
            &legacy.endpoint(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // A tag changed at the destination is a difference.
    c.put_object_tagging()
        .bucket("new")
        .key("obj 03+ü")
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(
                    aws_sdk_s3::types::Tag::builder()
                        .key("tier")
                        .value("tin")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let o = feiyun(
        &r,
        &[
            "verify",
            "s3://old/p",
            "s3://new",
            "--source-endpoint",
            &legacy.endpoint(),
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("tags\tobj 03+ü"), "{}", text(&o));
}

/// A large S3 object is read part by part with ranged GETs, several at once, and arrives
/// whole, with its metadata, checked against the source.
#[tokio::test]
async fn a_large_object_of_another_region_is_read_by_ranges_in_parallel() {
    let legacy = Region::start();
    let r = Region::start();
    let lc = legacy.client();
    lc.create_bucket().bucket("old").send().await.unwrap();
    let big = pattern((23 << 20) + 12345, 9);
    lc.put_object()
        .bucket("old")
        .key("big")
        .body(ByteStream::from(big.clone()))
        .content_type("application/x-big")
        .metadata("owner", "lake")
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc64Nvme)
        .send()
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = |bucket: &str, concurrency: &str| {
        let st = tmp.path().join(bucket);
        feiyun(
            &r,
            &[
                "s3://old",
                &format!("s3://{bucket}"),
                "--source-endpoint",
                &legacy.endpoint(),
                "--state",
                st.to_str().unwrap(),
                "--part-size",
                "5M",
                "--part-concurrency",
                concurrency,
                "--json",
            ],
        )
    };
    let o = run("new", "3");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(summary(&o)["copied"], 1, "{}", text(&o));
    // Five parts, each one ranged GET; no whole-object GET.
    assert_eq!(
        requests(&legacy, "GetObject", "206"),
        5,
        "{}",
        legacy.metrics()
    );
    assert_eq!(requests(&legacy, "GetObject", "200"), 0);
    let c = r.client();
    assert_eq!(get(&c, "new", "big").await, big);
    let h = c
        .head_object()
        .bucket("new")
        .key("big")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_type(), Some("application/x-big"));
    assert_eq!(h.metadata().unwrap()["owner"], "lake");
    // One part at a time reads the object as one stream, as before.
    let o = run("one-stream", "1");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(requests(&legacy, "GetObject", "200"), 1);
    assert_eq!(get(&c, "one-stream", "big").await, big);
}

#[tokio::test]
async fn kill_9_mid_multipart_resumes_sending_only_what_was_missing() {
    let r = Region::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big = pattern(40 << 20, 3);
    std::fs::write(src.join("big"), &big).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("small{i}")), pattern(1000, i)).unwrap();
    }
    let st = tmp.path().join("j");
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = vec![
            "migrate".into(),
            src.to_str().unwrap().into(),
            "s3://resume".into(),
            "--state".into(),
            st.to_str().unwrap().into(),
            "--part-size".into(),
            "5M".into(),
            "--part-concurrency".into(),
            "1".into(),
            "--endpoint".into(),
            r.endpoint(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // 8 MiB/s: the 40 MiB object takes about five seconds; kill it half-way.
    let mut child = Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(args(&["--bandwidth", "8M"]))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();
    let c = r.client();
    // Nothing half-visible: the large object is not there until it is whole.
    let listed = keys(&c, "resume").await;
    assert!(!listed.contains(&"big".to_owned()), "{listed:?}");
    let o = Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(args(&["--json"]))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let sum = summary(&o);
    let sent = sum["bytes"].as_u64().unwrap();
    assert!(
        sent < (40 << 20) - (5 << 20),
        "the resumed run sent {sent} bytes: {sum}"
    );
    assert_eq!(get(&c, "resume", "big").await, big);
    assert_eq!(keys(&c, "resume").await.len(), 21);
    let o = feiyun(&r, &["verify", src.to_str().unwrap(), "s3://resume"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// A counter of the region's S3 requests: `op` answered with `status`.
pub(crate) fn requests(r: &Region, op: &str, status: &str) -> u64 {
    let want = format!("feiyun_s3_requests_total{{op=\"{op}\",status=\"{status}\"}} ");
    r.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&want)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn kill_9_at_random_moments_never_copies_an_object_twice() {
    let r = Region::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("deep/er")).unwrap();
    let mut files = Vec::new();
    for i in 0..240u64 {
        let name = match i % 3 {
            0 => format!("f{i:03}"),
            1 => format!("deep/f{i:03}"),
            _ => format!("deep/er/f {i:03}"),
        };
        let data = pattern(500 + (i as usize * 97) % 7000, i);
        std::fs::write(src.join(&name), &data).unwrap();
        files.push((name, data));
    }
    for i in 0..3u64 {
        let name = format!("large{i}");
        let data = pattern(12 << 20, 100 + i);
        std::fs::write(src.join(&name), &data).unwrap();
        files.push((name, data));
    }
    let st = tmp.path().join("j");
    let command = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_feiyun"));
        c.args(["migrate", src.to_str().unwrap(), "s3://crash"])
            .args(["--state", st.to_str().unwrap(), "--part-size", "5M"])
            .args(["--endpoint", &r.endpoint(), "--transfers", "4"])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        c
    };
    let c = r.client();
    // Kill -9 at pseudo-random moments (a fixed seed: a failure replays), each round
    // throttled so that it is still copying when it dies.
    let mut seed = 0x9e37_79b9_u64;
    let mut finished = false;
    for round in 0..10 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let after = Duration::from_millis(150 + (seed >> 33) % 1200);
        let mut child = command(&["--bandwidth", "6M"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(after);
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Nothing half-visible: whatever is listed is whole.
        let listed = keys(&c, "crash").await;
        for (name, data) in files.iter().filter(|(n, _)| listed.contains(n)) {
            assert_eq!(
                &get(&c, "crash", name).await,
                data,
                "{name} after round {round}"
            );
        }
    }
    let o = command(&["--json"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = feiyun(&r, &["verify", src.to_str().unwrap(), "s3://crash"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(finished || requests(&r, "PutObject", "200") > 0);
    // Each small file was PUT once and each large one completed once, however many runs
    // died around them: a copy acknowledged but not journaled is recognised, not resent.
    assert_eq!(requests(&r, "PutObject", "200"), 240, "{}", r.metrics());
    assert_eq!(requests(&r, "CompleteMultipartUpload", "200"), 3);
}

//! Event sources: object uploads firing a function across a crash, and timers.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn uploads_fire_a_function_that_writes_a_derived_object_across_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut r = Region::start_with(&data, &[]);
    let c = r.client();
    for b in ["photos", "derived"] {
        c.create_bucket().bucket(b).send().await.expect("bucket");
    }
    let checksum = wasm_file(dir.path(), "checksum", &guest("checksum"));
    fc_ok(
        &r,
        &["deploy", "checksum", "--wasm", checksum.to_str().unwrap()],
    );
    fc_ok(
        &r,
        &[
            "trigger",
            "checksum",
            "sums",
            "--bucket",
            "photos",
            "--prefix",
            "in/",
            "--output-bucket",
            "derived",
            "--output-prefix",
            "sums/",
        ],
    );

    let a = common::pattern(300_000, 1);
    c.put_object()
        .bucket("photos")
        .key("in/a.bin")
        .body(a.clone().into())
        .send()
        .await
        .expect("put");
    c.put_object()
        .bucket("photos")
        .key("other/b.bin")
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect("put");
    let got = eventually(15, || object_text(&c, "derived", "sums/in/a.bin")).await;
    assert_eq!(got, Some(format!("fnv1a32 {:08x}\n", fnv1a32(&a))));
    // Outside the prefix: nothing derived.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(object_text(&c, "derived", "sums/other/b.bin").await, None);
    let logs = fc_ok(&r, &["logs", "checksum", "--json"]);
    assert!(
        logs.contains("\"object\":{\"bucket\":\"photos\",\"key\":\"in/a.bin\"}"),
        "{logs}"
    );

    // Upload, then kill -9 at once: the event is in the log with the object, so after the
    // restart the trigger still fires (at least once).
    let b = common::pattern(10_000, 2);
    c.put_object()
        .bucket("photos")
        .key("in/b.bin")
        .body(b.clone().into())
        .send()
        .await
        .expect("put");
    r.kill9();
    let r = Region::start_with(&data, &[]);
    let c = r.client();
    let got = eventually(15, || object_text(&c, "derived", "sums/in/b.bin")).await;
    assert_eq!(got, Some(format!("fnv1a32 {:08x}\n", fnv1a32(&b))));
    // Triggers survive the restart.
    let d = b"after the restart".to_vec();
    c.put_object()
        .bucket("photos")
        .key("in/d.txt")
        .body(d.clone().into())
        .send()
        .await
        .expect("put");
    let got = eventually(15, || object_text(&c, "derived", "sums/in/d.txt")).await;
    assert_eq!(got, Some(format!("fnv1a32 {:08x}\n", fnv1a32(&d))));

    // A function that keeps failing: tried max-attempts times, then a dead letter.
    let trap = wasm_file(
        dir.path(),
        "trap",
        &wat::parse_str(r#"(module (func (export "_start") unreachable))"#).expect("trap"),
    );
    fc_ok(&r, &["deploy", "broken", "--wasm", trap.to_str().unwrap()]);
    fc_ok(
        &r,
        &[
            "trigger",
            "broken",
            "t1",
            "--bucket",
            "photos",
            "--prefix",
            "bad/",
            "--max-attempts",
            "2",
        ],
    );
    c.put_object()
        .bucket("photos")
        .key("bad/x")
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect("put");
    let letter = eventually(15, || async {
        let out = fc(&r, &["dead-letters", "broken", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.is_empty()).then_some(text)
    })
    .await
    .expect("a dead letter");
    let letter: serde_json::Value =
        serde_json::from_str(letter.lines().next().unwrap_or("")).expect("json");
    assert_eq!(letter["key"], "bad/x");
    assert_eq!(letter["attempts"], 2);
    assert!(
        letter["error"]
            .as_str()
            .unwrap_or_default()
            .contains("trapped"),
        "{letter}"
    );
    let logs = fc_ok(&r, &["logs", "broken", "--json"]);
    assert_eq!(logs.lines().count(), 2, "{logs}");

    // Bad triggers change nothing.
    let err = fc_err(
        &r,
        &[
            "trigger",
            "checksum",
            "loop",
            "--bucket",
            "photos",
            "--prefix",
            "in/",
            "--output-bucket",
            "photos",
            "--output-prefix",
            "in/sums/",
        ],
    );
    assert!(err.contains("fire it again"), "{err}");
    let err = fc_err(&r, &["trigger", "checksum", "x", "--bucket", "nope"]);
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    let err = fc_err(&r, &["trigger", "checksum", "x", "--cron", "61 * * * *"]);
    assert!(err.contains("cron"), "{err}");
    let err = fc_err(
        &r,
        &[
            "trigger", "checksum", "x", "--bucket", "photos", "--event", "Nonsense",
        ],
    );
    assert!(err.contains("event name"), "{err}");
    let d: serde_json::Value =
        serde_json::from_str(&fc_ok(&r, &["describe", "checksum", "--json"])).expect("json");
    assert_eq!(d["triggers"].as_array().map(Vec::len), Some(1), "{d}");

    fc_ok(&r, &["untrigger", "checksum", "sums"]);
    c.put_object()
        .bucket("photos")
        .key("in/e.bin")
        .body(b"e".to_vec().into())
        .send()
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(object_text(&c, "derived", "sums/in/e.bin").await, None);
}

#[test]
fn a_timer_fires_on_its_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Region::start();
    let echo = wasm_file(dir.path(), "echo", &guest("echo"));
    fc_ok(&r, &["deploy", "tick", "--wasm", echo.to_str().unwrap()]);
    fc_ok(
        &r,
        &["trigger", "tick", "every-second", "--cron", "* * * * * *"],
    );
    let mut records = Vec::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        records = fc_ok(&r, &["logs", "tick", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("record"))
            .collect();
        if records.len() >= 3 {
            break;
        }
    }
    assert!(records.len() >= 3, "{records:?}");
    for i in &records {
        assert_eq!(i["trigger"]["timer"]["schedule"], "* * * * * *");
        assert_eq!(i["result"], "ok");
    }
    // Firings are about a second apart.
    let starts: Vec<i64> = records
        .iter()
        .filter_map(|i| i["started_ms"].as_i64())
        .collect();
    for w in starts.windows(2) {
        assert!((500..2000).contains(&(w[1] - w[0])), "{starts:?}");
    }
    fc_ok(&r, &["untrigger", "tick", "every-second"]);
    std::thread::sleep(Duration::from_millis(500));
    let n = fc_ok(&r, &["logs", "tick"])
        .lines()
        .filter(|l| !l.starts_with("  |"))
        .count();
    std::thread::sleep(Duration::from_millis(1500));
    let m = fc_ok(&r, &["logs", "tick"])
        .lines()
        .filter(|l| !l.starts_with("  |"))
        .count();
    assert_eq!(n, m);
}

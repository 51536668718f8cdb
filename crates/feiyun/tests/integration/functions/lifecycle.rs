//! A function's life through the CLI: deploy, invoke, versions and aliases, logs, restart and
//! delete; limits that stop a guest; concurrency caps, the memory budget and scale to zero.

use super::*;

#[test]
fn deploy_invoke_publish_alias_roll_back_logs_restart_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut r = Region::start_with(&data, &[]);
    let hello = wasm_file(dir.path(), "hello", &guest("hello"));
    let v2 = wasm_file(dir.path(), "hello2", &hello_v2());

    let out = fc_ok(
        &r,
        &[
            "deploy",
            "hello",
            "--wasm",
            hello.to_str().unwrap(),
            "--memory",
            "16M",
            "--timeout",
            "5s",
            "--env",
            "GREETING=hi",
        ],
    );
    assert!(out.contains("arn:aws:fc:us-east-1:"), "{out}");
    assert_eq!(fc_ok(&r, &["invoke", "hello"]), "hello from wasm\n");

    // Signed with fc:InvokeFunction (root): the function's own HTTP response.
    let resp = request(&r, root(), "GET", "/fc/invoke/hello/some/path?x=1", b"");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.body_text(), "hello from wasm\n");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("x-fc-version"), Some("$LATEST"));
    assert!(resp.header("x-fc-invocation-id").is_some());
    // Unsigned: not public, so it does not exist for an anonymous caller.
    let resp = request(&r, None, "GET", "/fc/invoke/hello", b"");
    assert_eq!(resp.status, 404, "{}", resp.body_text());

    // Versions and an alias: roll out v2, roll back to v1.
    assert!(fc_ok(&r, &["publish", "hello"]).contains("version 1"));
    fc_ok(&r, &["deploy", "hello", "--wasm", v2.to_str().unwrap()]);
    assert_eq!(fc_ok(&r, &["invoke", "hello"]), "HELLO FROM WASM\n");
    assert!(fc_ok(&r, &["publish", "hello"]).contains("version 2"));
    // Publishing an unchanged $LATEST returns the same version, as Lambda does.
    assert!(fc_ok(&r, &["publish", "hello"]).contains("version 2"));
    fc_ok(&r, &["alias", "hello", "live", "2"]);
    assert_eq!(
        fc_ok(&r, &["invoke", "hello", "--qualifier", "live"]),
        "HELLO FROM WASM\n"
    );
    fc_ok(&r, &["alias", "hello", "live", "1"]);
    assert_eq!(
        fc_ok(&r, &["invoke", "hello", "--qualifier", "live"]),
        "hello from wasm\n"
    );
    let resp = request(&r, root(), "POST", "/fc/invoke/hello:live", b"");
    assert_eq!(resp.body_text(), "hello from wasm\n");
    assert_eq!(resp.header("x-fc-version"), Some("1"));
    assert_eq!(
        fc_ok(&r, &["invoke", "hello", "--qualifier", "2"]),
        "HELLO FROM WASM\n"
    );
    let err = fc_err(&r, &["invoke", "hello", "--qualifier", "canary"]);
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    // A version an alias points to cannot be deleted.
    let resp = request(&r, root(), "DELETE", "/fc/functions/hello/versions/1", b"");
    assert_eq!(resp.status, 409, "{}", resp.body_text());

    // Describe: configuration kept across the code-only deploy, versions, aliases, totals.
    let d: serde_json::Value =
        serde_json::from_str(&fc_ok(&r, &["describe", "hello", "--json"])).expect("json");
    assert_eq!(d["config"]["memory"], 16 << 20);
    assert_eq!(d["config"]["timeout_ms"], 5000);
    assert_eq!(d["config"]["env"]["GREETING"], "hi");
    assert_eq!(d["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(d["aliases"]["live"], 1);
    assert!(d["totals"]["invocations"].as_u64() >= Some(7), "{d}");
    assert!(fc_ok(&r, &["list"]).starts_with("hello\t16M\t5000ms"));

    // Logs: one record per invocation with its version and result, oldest first.
    let logs = fc_ok(&r, &["logs", "hello", "--json"]);
    let records: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert_eq!(records.len(), 7, "{logs}");
    assert!(
        records
            .iter()
            .all(|i| i["result"] == "ok" && i["status"] == 200)
    );
    assert_eq!(records[0]["version"], "$LATEST");
    assert!(
        records
            .iter()
            .any(|i| i["version"] == "1" && i["qualifier"] == "live")
    );
    assert!(records.iter().all(|i| i["gb_seconds"].as_f64() > Some(0.0)));
    let ids: Vec<&str> = records.iter().filter_map(|i| i["id"].as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert!(
        metric(
            &r,
            "feiyun_fc_invocations_total{function=\"hello\",result=\"ok\"}"
        ) == Some(7.0)
    );

    // A restart without the compiled cache: code comes back from the system bucket.
    r.terminate();
    std::fs::remove_dir_all(data.join("fc-cache")).expect("cache was written");
    let r = Region::start_with(&data, &[]);
    assert_eq!(
        fc_ok(&r, &["invoke", "hello", "--qualifier", "live"]),
        "hello from wasm\n"
    );
    assert_eq!(fc_ok(&r, &["invoke", "hello"]), "HELLO FROM WASM\n");
    assert!(data.join("fc-cache").read_dir().expect("cache").count() >= 2);
    // Function code is not reachable as a bucket: the system bucket is nobody's.
    let resp = request(&r, None, "GET", "/.feiyun-functions/", b"");
    assert_ne!(resp.status, 200);

    fc_ok(&r, &["alias", "hello", "live", "--delete"]);
    fc_ok(&r, &["delete", "hello"]);
    let err = fc_err(&r, &["invoke", "hello"]);
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    assert_eq!(fc_ok(&r, &["list"]), "");
    // A new function of the same name starts with no logs of the old one.
    fc_ok(&r, &["deploy", "hello", "--wasm", hello.to_str().unwrap()]);
    assert_eq!(fc_ok(&r, &["logs", "hello"]), "");
}

#[test]
fn limits_stop_guests_with_a_clear_error_and_others_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Region::start();
    let looping =
        wat::parse_str(r#"(module (func (export "_start") (loop $l (br $l))))"#).expect("loop");
    let hog = wat::parse_str(
        r#"(module (memory 1) (func (export "_start") (drop (memory.grow (i32.const 100)))
             (i32.store (i32.const 3000000) (i32.const 1))))"#,
    )
    .expect("hog");
    let trap = wat::parse_str(r#"(module (func (export "_start") unreachable))"#).expect("trap");
    for (name, wasm) in [
        ("hello", guest("hello")),
        ("loop", looping),
        ("hog", hog),
        ("trap", trap),
        ("escape", guest("escape")),
        ("echo", guest("echo")),
    ] {
        let f = wasm_file(dir.path(), name, &wasm);
        fc_ok(
            &r,
            &[
                "deploy",
                name,
                "--wasm",
                f.to_str().unwrap(),
                "--timeout",
                "300ms",
                "--memory",
                "2M",
            ],
        );
    }
    let addr = r.addr;
    let loop_call =
        std::thread::spawn(move || request_at(addr, root(), "POST", "/fc/invoke/loop", b""));
    // While the loop runs, others answer.
    assert_eq!(fc_ok(&r, &["invoke", "hello"]), "hello from wasm\n");
    let resp = loop_call.join().expect("loop call");
    assert_eq!(resp.status, 504, "{}", resp.body_text());
    assert_eq!(resp.header("x-fc-function-error"), Some("Timeout"));
    assert!(
        json(&resp)["message"]
            .as_str()
            .unwrap_or_default()
            .contains("time limit")
    );

    let err = fc_err(&r, &["invoke", "hog"]);
    assert!(
        err.contains("MemoryLimit") && err.contains("memory"),
        "{err}"
    );
    let err = fc_err(&r, &["invoke", "trap"]);
    assert!(err.contains("Trap"), "{err}");
    // No file, no socket unless granted.
    assert_eq!(
        fc_ok(&r, &["invoke", "escape"]),
        "file denied\nsocket denied\n"
    );
    // The body reaches the guest; its stderr is the invocation's log.
    let body = common::pattern(200_000, 7);
    let resp = request(&r, root(), "PUT", "/fc/invoke/echo", &body);
    assert_eq!(resp.status, 200);
    assert!(resp.body == body, "echo differs");
    let logs = fc_ok(&r, &["logs", "echo"]);
    assert!(logs.contains("  | echoing"), "{logs}");
    let logs = fc_ok(&r, &["logs", "loop", "--json"]);
    assert!(logs.contains("\"result\":\"Timeout\""), "{logs}");
    // The host is fine and counted each failure.
    assert_eq!(fc_ok(&r, &["invoke", "hello"]), "hello from wasm\n");
    assert_eq!(
        metric(
            &r,
            "feiyun_fc_invocations_total{function=\"hog\",result=\"MemoryLimit\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn beyond_the_maximum_requests_get_429_and_idle_functions_scale_to_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Region::start_env(&[
        ("FEIYUN_FC_SCALE_WINDOW_SECS", "2"),
        ("FEIYUN_FC_IDLE_SECS", "1"),
    ]);
    let sleep = wasm_file(dir.path(), "sleep", &guest("sleep"));
    fc_ok(
        &r,
        &[
            "deploy",
            "sleep",
            "--wasm",
            sleep.to_str().unwrap(),
            "--max-concurrency",
            "1",
            "--max-instances",
            "2",
        ],
    );
    let addr = r.addr;
    let calls: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || request_at(addr, root(), "GET", "/fc/invoke/sleep", b""))
        })
        .collect();
    let answers: Vec<RawResponse> = calls.into_iter().map(|t| t.join().expect("call")).collect();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<&RawResponse> = answers.iter().filter(|a| a.status == 429).collect();
    // Two instances of one request each, 400 ms per request, at most 1 s in the queue: of
    // sixteen arriving at once, about six can be served (at 0, 0.4 and 0.8 s) and the rest
    // wait past the bound and are refused. (Bounds are loose for a loaded 2-core machine,
    // where arrivals spread out.)
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(ok + refused.len(), 16, "{statuses:?}");
    assert!((2..=12).contains(&ok), "{statuses:?}");
    assert!(refused.len() >= 4, "{statuses:?}");
    for a in &refused {
        assert_eq!(a.header("retry-after"), Some("1"));
        assert_eq!(json(a)["__type"], "TooManyRequestsException");
    }
    assert_eq!(fc_ok(&r, &["invoke", "sleep"]), "awake\n");
    assert!(
        metric(
            &r,
            "feiyun_fc_instances{function=\"sleep\",version=\"$LATEST\"}"
        ) >= Some(1.0)
    );

    // Idle past the grace period (and a calm window): scaled to zero, seen in the metrics.
    let mut zero = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if metric(
            &r,
            "feiyun_fc_instances{function=\"sleep\",version=\"$LATEST\"}",
        ) == Some(0.0)
        {
            zero = true;
            break;
        }
    }
    assert!(zero, "{}", r.metrics());
    assert!(
        metric(
            &r,
            "feiyun_fc_scale_events_total{function=\"sleep\",direction=\"down\",reason=\"scale-to-zero\"}"
        ) >= Some(1.0)
    );
    let cold_before = metric(&r, "feiyun_fc_cold_starts_total{function=\"sleep\"}").unwrap_or(0.0);
    let resp = request(&r, root(), "GET", "/fc/invoke/sleep", b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-fc-cold-start"), Some("true"));
    assert_eq!(
        metric(&r, "feiyun_fc_cold_starts_total{function=\"sleep\"}"),
        Some(cold_before + 1.0)
    );
    // Provisioned instances stay warm.
    fc_ok(
        &r,
        &[
            "deploy",
            "sleep",
            "--wasm",
            sleep.to_str().unwrap(),
            "--min-instances",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        metric(
            &r,
            "feiyun_fc_instances{function=\"sleep\",version=\"$LATEST\"}"
        ),
        Some(1.0)
    );
    let resp = request(&r, root(), "GET", "/fc/invoke/sleep", b"");
    assert_eq!(resp.header("x-fc-cold-start"), None);
}

/// Issue 19, item 26: one function could take every instance slot at up to 4 GiB each. With
/// a budget of 256 MiB, a function of 128 MiB per invocation may hold half of it: one call
/// at a time runs, the others of that function get 429, and another function still runs.
#[test]
fn one_function_holds_at_most_its_share_of_the_memory_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Region::start_env(&[("FEIYUN_FC_MEMORY_BUDGET_MIB", "256")]);
    let sleep = wasm_file(dir.path(), "sleep", &guest("sleep"));
    for (name, memory) in [("greedy", "128M"), ("modest", "64M")] {
        fc_ok(
            &r,
            &[
                "deploy",
                name,
                "--wasm",
                sleep.to_str().unwrap(),
                "--memory",
                memory,
                "--max-concurrency",
                "1",
                "--max-instances",
                "8",
            ],
        );
        // Warm, so that the calls below overlap in the guest rather than in compilation.
        assert_eq!(fc_ok(&r, &["invoke", name]), "awake\n");
    }
    let addr = r.addr;
    let greedy: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || request_at(addr, root(), "GET", "/fc/invoke/greedy", b""))
        })
        .collect();
    // While greedy holds its whole share, modest still gets memory.
    std::thread::sleep(Duration::from_millis(100));
    let modest = request_at(addr, root(), "GET", "/fc/invoke/modest", b"");
    assert_eq!(
        modest.status,
        200,
        "{}",
        String::from_utf8_lossy(&modest.body)
    );
    let answers: Vec<RawResponse> = greedy
        .into_iter()
        .map(|t| t.join().expect("call"))
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused: Vec<&RawResponse> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok + refused.len(), 6, "{statuses:?}");
    // Six calls of 400 ms each arriving together: one runs, the rest find the share taken.
    // (Arrivals spread out on a loaded machine, so a second may start after the first ends.)
    assert!((1..=3).contains(&ok), "{statuses:?}");
    for a in &refused {
        assert_eq!(json(a)["__type"], "TooManyRequestsException");
    }
    // The share is given back: the function runs again.
    assert_eq!(fc_ok(&r, &["invoke", "greedy"]), "awake\n");
}

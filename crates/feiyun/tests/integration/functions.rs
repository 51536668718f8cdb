//! Function Compute against the real binary: `feiyun fc` deploys, invokes, publishes,
//! aliases, reads logs and deletes; `/fc/invoke/NAME` answers signed callers with
//! `fc:InvokeFunction` and unsigned ones only for public functions; limits stop guests with a
//! clear error while the host and other functions go on; concurrency beyond the maximum is
//! refused with 429 and Retry-After; scaling to zero and back is seen in the metrics; code
//! and versions survive a restart without the compiled cache; bad input changes nothing.

use crate::common;

use crate::common::sigv4;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{ACCESS_KEY, RawResponse, Region, SECRET_KEY, raw_bytes};

fn guest(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fc/tests/guests/{name}.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Writes a module to a file the CLI can deploy.
fn wasm_file(dir: &std::path::Path, name: &str, wasm: &[u8]) -> PathBuf {
    let p = dir.join(format!("{name}.wasm"));
    std::fs::write(&p, wasm).expect("write wasm");
    p
}

/// `hello` with another greeting of the same length, to tell versions apart.
fn hello_v2() -> Vec<u8> {
    let path = format!(
        "{}/../fc/tests/guests/hello.wat",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("hello.wat");
    assert!(text.contains("hello from wasm"));
    wat::parse_str(text.replace("hello from wasm", "HELLO FROM WASM")).expect("v2")
}

/// Runs `feiyun fc ARGS` against the region as `(ak, sk)`.
fn fc_as(r: &Region, (ak, sk): (&str, &str), args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .arg("fc")
        .args(args)
        .env("FEIYUN_ENDPOINT", r.endpoint())
        .env("AWS_ACCESS_KEY_ID", ak)
        .env("AWS_SECRET_ACCESS_KEY", sk)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run feiyun fc")
}

fn fc(r: &Region, args: &[&str]) -> Output {
    fc_as(r, (ACCESS_KEY, SECRET_KEY), args)
}

/// `feiyun fc ARGS`, which must succeed; its stdout.
fn fc_ok(r: &Region, args: &[&str]) -> String {
    let out = fc(r, args);
    assert!(
        out.status.success(),
        "feiyun fc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `feiyun fc ARGS`, which must fail with one line on stderr; that line.
fn fc_err(r: &Region, args: &[&str]) -> String {
    let out = fc(r, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "feiyun fc {args:?} succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

/// A request to the region, signed as `(ak, sk)` for service `fc` when given.
fn request(
    r: &Region,
    creds: Option<(&str, &str)>,
    method: &str,
    path: &str,
    body: &[u8],
) -> RawResponse {
    request_at(r.addr, creds, method, path, body)
}

/// [`request`] by address, for threads.
fn request_at(
    addr: std::net::SocketAddr,
    creds: Option<(&str, &str)>,
    method: &str,
    path: &str,
    body: &[u8],
) -> RawResponse {
    send(addr, &addr.to_string(), creds, method, path, body)
}

/// [`request`] with another `Host` header (an HTTP route's host name).
fn request_host(
    r: &Region,
    host: &str,
    creds: Option<(&str, &str)>,
    method: &str,
    path: &str,
) -> RawResponse {
    send(r.addr, host, creds, method, path, b"")
}

/// One HTTP/1.1 request to `addr` naming `host`, signed for service `fc` when `creds` are
/// given.
fn send(
    addr: std::net::SocketAddr,
    host: &str,
    creds: Option<(&str, &str)>,
    method: &str,
    path: &str,
    body: &[u8],
) -> RawResponse {
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some((ak, sk)) = creds {
        let signer = sigv4::Signer {
            access_key: ak.into(),
            secret_key: sk.into(),
            region: "us-east-1".into(),
        };
        let auth = signer.sign_as(
            "fc",
            method,
            path_only,
            query,
            &[("host", host.to_owned())],
            &sigv4::sha256_hex(body),
            &sigv4::now_amz_date(),
        );
        for (k, v) in auth {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    raw_bytes(addr, &req)
}

fn root() -> Option<(&'static str, &'static str)> {
    Some((ACCESS_KEY, SECRET_KEY))
}

/// One IAM query call signed as root; the XML answer (asserting success).
fn iam(r: &Region, params: &[(&str, &str)]) -> String {
    let resp = common::query_call(
        r.addr,
        (ACCESS_KEY, SECRET_KEY),
        "iam",
        "2010-05-08",
        params,
    );
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    resp.body_text()
}

fn xml_field(xml: &str, tag: &str) -> String {
    xml.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|r| r.split(&format!("</{tag}>")).next())
        .unwrap_or_default()
        .to_owned()
}

fn json(resp: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null)
}

/// The value of one Prometheus sample whose line starts with `series`.
fn metric(r: &Region, series: &str) -> Option<f64> {
    r.metrics()
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

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

#[test]
fn access_is_denied_by_default_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Region::start();
    let hello = wasm_file(dir.path(), "hello", &guest("hello"));
    fc_ok(&r, &["deploy", "hello", "--wasm", hello.to_str().unwrap()]);

    // Invalid wasm, a component, a module that is not a command, a bad name: refused, and
    // the deployed function is untouched.
    let junk = wasm_file(dir.path(), "junk", b"\0asm\x01\0\0\0garbage");
    let err = fc_err(&r, &["deploy", "hello", "--wasm", junk.to_str().unwrap()]);
    assert!(err.contains("InvalidCodeException"), "{err}");
    let component = wasm_file(dir.path(), "component", b"\0asm\x0d\0\x01\0");
    let err = fc_err(
        &r,
        &["deploy", "hello", "--wasm", component.to_str().unwrap()],
    );
    assert!(
        err.contains("InvalidCodeException") && err.contains("component"),
        "{err}"
    );
    let reactor = wasm_file(
        dir.path(),
        "reactor",
        &wat::parse_str(r#"(module (func (export "run")))"#).expect("reactor"),
    );
    let err = fc_err(
        &r,
        &["deploy", "hello", "--wasm", reactor.to_str().unwrap()],
    );
    assert!(err.contains("_start"), "{err}");
    let err = fc_err(
        &r,
        &["deploy", "bad.name", "--wasm", hello.to_str().unwrap()],
    );
    assert!(err.contains("InvalidParameterValueException"), "{err}");
    let err = fc_err(
        &r,
        &[
            "deploy",
            "hello",
            "--wasm",
            hello.to_str().unwrap(),
            "--memory",
            "1K",
        ],
    );
    assert!(err.contains("memory"), "{err}");
    let err = fc_err(
        &r,
        &[
            "deploy",
            "hello",
            "--wasm",
            hello.to_str().unwrap(),
            "--min-instances",
            "5",
            "--max-instances",
            "2",
        ],
    );
    assert!(err.contains("min-instances"), "{err}");
    let resp = request(
        &r,
        root(),
        "PUT",
        "/fc/functions/hello?colour=red",
        &guest("hello"),
    );
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    let resp = request(&r, root(), "PUT", "/fc/functions/hello", b"");
    assert_eq!(resp.status, 400);
    let resp = request(&r, root(), "GET", "/fc/functions/hello/logs?after=zzz", b"");
    assert_eq!(resp.status, 400);
    let resp = request(
        &r,
        root(),
        "PUT",
        "/fc/functions/hello/aliases/7?version=1",
        b"",
    );
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    let resp = request(&r, root(), "PATCH", "/fc/functions/hello", b"");
    assert_eq!(resp.status, 404);
    assert_eq!(fc_ok(&r, &["invoke", "hello"]), "hello from wasm\n");
    let d: serde_json::Value =
        serde_json::from_str(&fc_ok(&r, &["describe", "hello", "--json"])).expect("json");
    assert_eq!(d["config"]["memory"], 128 << 20);

    // Oversized bodies are refused before they are read whole.
    let big = vec![0u8; feiyun_fc_limits::MAX_REQUEST + 1];
    let resp = request(&r, root(), "POST", "/fc/invoke/hello", &big);
    assert_eq!(resp.status, 413, "{}", resp.body_text());

    // Unsigned: only invocation of a public function; the API itself needs a signature.
    let resp = request(&r, None, "GET", "/fc/functions", b"");
    assert_eq!(resp.status, 403);
    let resp = request(&r, None, "GET", "/fc/invoke/hello", b"");
    assert_eq!(resp.status, 404);
    fc_ok(
        &r,
        &[
            "deploy",
            "hello",
            "--wasm",
            hello.to_str().unwrap(),
            "--public",
            "true",
        ],
    );
    let resp = request(&r, None, "GET", "/fc/invoke/hello", b"");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.body_text(), "hello from wasm\n");
    fc_ok(
        &r,
        &[
            "deploy",
            "hello",
            "--wasm",
            hello.to_str().unwrap(),
            "--public",
            "false",
        ],
    );

    // An IAM user: nothing until a policy allows it; then exactly what it allows.
    iam(&r, &[("Action", "CreateUser"), ("UserName", "dev")]);
    let k = iam(&r, &[("Action", "CreateAccessKey"), ("UserName", "dev")]);
    let (ak, sk) = (
        xml_field(&k, "AccessKeyId"),
        xml_field(&k, "SecretAccessKey"),
    );
    let dev = (ak.as_str(), sk.as_str());
    let err = String::from_utf8_lossy(&fc_as(&r, dev, &["invoke", "hello"]).stderr).into_owned();
    assert!(err.contains("AccessDenied"), "{err}");
    let out = fc_as(&r, dev, &["list"]);
    assert!(!out.status.success());
    iam(
        &r,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "dev"),
            ("PolicyName", "invoke-hello"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"fc:InvokeFunction","Resource":"arn:aws:fc:*:*:function:hello*"}]}"#,
            ),
        ],
    );
    let out = fc_as(&r, dev, &["invoke", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wasm\n");
    let out = fc_as(
        &r,
        dev,
        &["deploy", "hello", "--wasm", hello.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("AccessDenied"));
    let out = fc_as(&r, dev, &["delete", "hello"]);
    assert!(!out.status.success());
    assert_eq!(fc_ok(&r, &["invoke", "hello"]), "hello from wasm\n");
    // A wrong signature is refused.
    let resp = request(
        &r,
        Some((ACCESS_KEY, "not-the-secret-key-0123456789abcdefgh")),
        "GET",
        "/fc/functions",
        b"",
    );
    assert_eq!(resp.status, 403);
}

/// The service's limits as the tests need them.
mod feiyun_fc_limits {
    /// Largest invocation body (Lambda's synchronous payload limit).
    pub const MAX_REQUEST: usize = 6 << 20;
}

fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Polls `get` every 100 ms for up to `secs`; the first `Some`.
async fn eventually<T, F, Fut>(secs: u64, mut get: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..secs * 10 {
        if let Some(v) = get().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn object_text(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let o = c.get_object().bucket(bucket).key(key).send().await.ok()?;
    let bytes = o.body.collect().await.ok()?.into_bytes();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

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

/// `NAME=VALUE` lines as a function printed them.
fn env_of(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_run_as_their_role_with_temporary_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Region::start();
    let c = r.client();
    for b in ["fc-data", "fc-other"] {
        c.create_bucket().bucket(b).send().await.expect("bucket");
        c.put_object()
            .bucket(b)
            .key("in/data.txt")
            .body(format!("data of {b}").into_bytes().into())
            .send()
            .await
            .expect("put");
    }
    let trust_fc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"fc.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let role = iam(
        &r,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "fc-reader"),
            ("AssumeRolePolicyDocument", trust_fc),
        ],
    );
    let role_arn = xml_field(&role, "Arn");
    iam(
        &r,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "fc-reader"),
            ("PolicyName", "read-in-write-out"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::fc-data/in/*"},{"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::fc-data/out/*"}]}"#,
            ),
        ],
    );
    let account = role_arn.split(':').nth(4).unwrap_or_default().to_owned();
    iam(
        &r,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "people-only"),
            (
                "AssumeRolePolicyDocument",
                &format!(
                    r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{account}"}},"Action":"sts:AssumeRole"}}]}}"#
                ),
            ),
        ],
    );

    let env = wasm_file(dir.path(), "env", &guest("env"));
    let env = env.to_str().unwrap();
    // Without a role a function gets its name, version and region, and no credentials.
    fc_ok(
        &r,
        &["deploy", "whoami", "--wasm", env, "--env", "GREETING=hi"],
    );
    let plain = env_of(&fc_ok(&r, &["invoke", "whoami"]));
    assert_eq!(plain.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(
        plain.get("FC_FUNCTION_NAME").map(String::as_str),
        Some("whoami")
    );
    assert_eq!(
        plain.get("FC_FUNCTION_VERSION").map(String::as_str),
        Some("$LATEST")
    );
    assert_eq!(
        plain.get("AWS_REGION").map(String::as_str),
        Some("us-east-1")
    );
    assert!(!plain.contains_key("AWS_ACCESS_KEY_ID"), "{plain:?}");
    assert!(!plain.contains_key("AWS_ENDPOINT_URL"), "{plain:?}");

    // Roles the function service may not assume, or that do not exist, are refused and the
    // function keeps running as before; so are the variables the region sets.
    let err = fc_err(
        &r,
        &["deploy", "whoami", "--wasm", env, "--role", "people-only"],
    );
    assert!(
        err.contains("InvalidParameterValueException") && err.contains("fc.amazonaws.com"),
        "{err}"
    );
    let err = fc_err(
        &r,
        &["deploy", "whoami", "--wasm", env, "--role", "no-such-role"],
    );
    assert!(err.contains("does not exist"), "{err}");
    let other_account = "arn:aws:iam::999999999999:role/fc-reader";
    let err = fc_err(
        &r,
        &["deploy", "whoami", "--wasm", env, "--role", other_account],
    );
    assert!(err.contains("another account"), "{err}");
    let err = fc_err(
        &r,
        &[
            "deploy",
            "whoami",
            "--wasm",
            env,
            "--env",
            "AWS_SECRET_ACCESS_KEY=x",
        ],
    );
    assert!(err.contains("reserved"), "{err}");
    let still = env_of(&fc_ok(&r, &["invoke", "whoami"]));
    assert!(!still.contains_key("AWS_ACCESS_KEY_ID"));

    // Passing a role needs iam:PassRole on it, besides fc:CreateFunction.
    iam(&r, &[("Action", "CreateUser"), ("UserName", "deployer")]);
    let k = iam(
        &r,
        &[("Action", "CreateAccessKey"), ("UserName", "deployer")],
    );
    let (ak, sk) = (
        xml_field(&k, "AccessKeyId"),
        xml_field(&k, "SecretAccessKey"),
    );
    let deployer = (ak.as_str(), sk.as_str());
    let put_policy = |doc: &str| {
        iam(
            &r,
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", "deployer"),
                ("PolicyName", "deploy"),
                ("PolicyDocument", doc),
            ],
        );
    };
    put_policy(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"fc:*","Resource":"*"}]}"#,
    );
    let out = fc_as(
        &r,
        deployer,
        &["deploy", "whoami", "--wasm", env, "--role", "fc-reader"],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && err.contains("iam:PassRole"),
        "{err}"
    );
    put_policy(&format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"fc:*","Resource":"*"}},{{"Effect":"Allow","Action":"iam:PassRole","Resource":"{role_arn}"}}]}}"#
    ));
    let out = fc_as(
        &r,
        deployer,
        &["deploy", "whoami", "--wasm", env, "--role", "fc-reader"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let described = fc_ok(&r, &["describe", "whoami"]);
    assert!(described.contains(&role_arn), "{described}");

    // The function now runs with a session of its role, and the region's own endpoint.
    let vars = env_of(&fc_ok(&r, &["invoke", "whoami"]));
    let (fak, fsk, token) = (
        vars.get("AWS_ACCESS_KEY_ID").cloned().unwrap_or_default(),
        vars.get("AWS_SECRET_ACCESS_KEY")
            .cloned()
            .unwrap_or_default(),
        vars.get("AWS_SESSION_TOKEN").cloned().unwrap_or_default(),
    );
    assert!(
        fak.starts_with("ASIA") && !fsk.is_empty() && !token.is_empty(),
        "{vars:?}"
    );
    assert_eq!(vars.get("AWS_ENDPOINT_URL"), Some(&r.endpoint()));
    assert_eq!(vars.get("GREETING").map(String::as_str), Some("hi"));
    // One session serves invocations while it has time left.
    let again = env_of(&fc_ok(&r, &["invoke", "whoami"]));
    assert_eq!(again.get("AWS_ACCESS_KEY_ID"), Some(&fak));

    // The credentials are the role's: exactly what its policy allows.
    let s3 = common::session_client(&r.endpoint(), &fak, &fsk, &token);
    let got = s3
        .get_object()
        .bucket("fc-data")
        .key("in/data.txt")
        .send()
        .await
        .expect("the role may read fc-data/in/");
    let body = got.body.collect().await.expect("body").into_bytes();
    assert_eq!(&body[..], b"data of fc-data");
    s3.put_object()
        .bucket("fc-data")
        .key("out/result.txt")
        .body(b"derived".to_vec().into())
        .send()
        .await
        .expect("the role may write fc-data/out/");
    assert_eq!(
        object_text(&c, "fc-data", "out/result.txt")
            .await
            .as_deref(),
        Some("derived")
    );
    let denied = s3
        .get_object()
        .bucket("fc-other")
        .key("in/data.txt")
        .send()
        .await
        .expect_err("another bucket");
    assert_eq!(
        denied.into_service_error().meta().code(),
        Some("AccessDenied")
    );
    let denied = s3
        .put_object()
        .bucket("fc-data")
        .key("in/data.txt")
        .body(b"overwritten".to_vec().into())
        .send()
        .await
        .expect_err("outside out/");
    assert_eq!(
        denied.into_service_error().meta().code(),
        Some("AccessDenied")
    );
    assert_eq!(
        object_text(&c, "fc-data", "in/data.txt").await.as_deref(),
        Some("data of fc-data")
    );

    // Removing the role removes the credentials.
    fc_ok(&r, &["deploy", "whoami", "--wasm", env, "--role", ""]);
    let after = env_of(&fc_ok(&r, &["invoke", "whoami"]));
    assert!(!after.contains_key("AWS_ACCESS_KEY_ID"), "{after:?}");
    assert!(!after.contains_key("AWS_ENDPOINT_URL"), "{after:?}");
}

#[test]
fn functions_answer_on_their_own_host_names_and_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("data");
    let routing = [
        ("FEIYUN_DOMAINS", "s3.example.test"),
        ("FEIYUN_FC_DOMAINS", "example.test"),
    ];
    let mut r = Region::start_with(data.path(), &routing);
    let hello = wasm_file(dir.path(), "hello", &guest("hello"));
    let env = wasm_file(dir.path(), "env", &guest("env"));
    let (hello, env) = (hello.to_str().unwrap(), env.to_str().unwrap());
    fc_ok(&r, &["deploy", "site", "--wasm", hello, "--public", "true"]);
    fc_ok(&r, &["deploy", "api", "--wasm", env]);
    fc_ok(&r, &["publish", "api"]);
    fc_ok(&r, &["alias", "api", "live", "1"]);
    fc_ok(
        &r,
        &["trigger", "site", "www", "--host", "WWW.Example.TEST"],
    );
    fc_ok(
        &r,
        &[
            "trigger",
            "api",
            "v1",
            "--host",
            "www.example.test",
            "--path",
            "/api/v1/",
            "--qualifier",
            "live",
        ],
    );

    // The whole host answers from `site`, any path, port or case; unsigned, as it is public.
    for (host, path) in [
        ("www.example.test", "/"),
        ("www.example.test:8080", "/index.html?x=1"),
        ("WWW.EXAMPLE.TEST", "/api/v10"),
        ("www.example.test", "/api"),
    ] {
        let resp = request_host(&r, host, None, "GET", path);
        assert_eq!(resp.status, 200, "{host}{path}: {}", resp.body_text());
        assert_eq!(resp.body_text(), "hello from wasm\n", "{host}{path}");
    }
    // Under /api/v1, `api` (not public: signed callers with fc:InvokeFunction only) gets
    // the path as it was sent, through its alias.
    let resp = request_host(&r, "www.example.test", None, "GET", "/api/v1/users");
    assert_eq!(resp.status, 404, "{}", resp.body_text());
    let resp = request_host(&r, "www.example.test", root(), "GET", "/api/v1/users?id=7");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.header("x-fc-version"), Some("1"));
    let vars = env_of(&resp.body_text());
    assert_eq!(
        vars.get("PATH_INFO").map(String::as_str),
        Some("/api/v1/users")
    );
    assert_eq!(vars.get("QUERY_STRING").map(String::as_str), Some("id=7"));
    assert_eq!(
        vars.get("FC_FUNCTION_NAME").map(String::as_str),
        Some("api")
    );

    // Routes that cannot be: the region's own names, taken routes, bad hosts and paths.
    for (host, path, code) in [
        ("s3.example.test", "/", "InvalidParameterValueException"),
        (
            "photos.s3.example.test",
            "/",
            "InvalidParameterValueException",
        ),
        ("www.example.test", "/api/v1", "ResourceConflictException"),
        ("localhost", "/", "InvalidParameterValueException"),
        ("10.0.0.1", "/", "InvalidParameterValueException"),
        // Outside the functions domain: the name peers or other services use.
        ("replica.peer.test", "/", "not under a functions domain"),
        (
            "www.example.test",
            "/a/../b",
            "InvalidParameterValueException",
        ),
    ] {
        let err = fc_err(
            &r,
            &["trigger", "site", "bad", "--host", host, "--path", path],
        );
        assert!(err.contains(code), "{host}{path}: {err}");
    }
    let described = fc_ok(&r, &["describe", "site"]);
    assert!(!described.contains("\"bad\""), "{described}");

    // Everything else is S3 as before: a bucket on the region's domain, path-style on the
    // address.
    let c = common::client_for(&r.endpoint(), ACCESS_KEY, SECRET_KEY);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        c.create_bucket()
            .bucket("photos")
            .send()
            .await
            .expect("bucket");
    });
    let resp = request_host(&r, "photos.s3.example.test", None, "GET", "/");
    assert_eq!(resp.code(), "AccessDenied", "{}", resp.body_text());

    // Routes survive a restart.
    r.terminate();
    let r = Region::start_with(data.path(), &routing);
    let resp = request_host(&r, "www.example.test", None, "GET", "/");
    assert_eq!(resp.body_text(), "hello from wasm\n");
    let resp = request_host(&r, "www.example.test", root(), "GET", "/api/v1");
    assert_eq!(
        env_of(&resp.body_text())
            .get("PATH_INFO")
            .map(String::as_str),
        Some("/api/v1")
    );

    // Removing a route gives its requests back to the next one, then to S3.
    fc_ok(&r, &["untrigger", "api", "v1"]);
    let resp = request_host(&r, "www.example.test", root(), "GET", "/api/v1/users");
    assert_eq!(resp.body_text(), "hello from wasm\n");
    fc_ok(&r, &["untrigger", "site", "www"]);
    let resp = request_host(&r, "www.example.test", None, "GET", "/");
    assert!(resp.body_text().contains("<Error>"), "{}", resp.body_text());

    // A reader that goes away (`feiyun fc describe site | head -1`) ends the command quietly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(["fc", "describe", "site"])
        .env("FEIYUN_ENDPOINT", r.endpoint())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("panicked"),
        "{:?} {err}",
        out.status
    );
}

/// A trigger's reads were authorized once, on `bucket/prefix*`, as whoever set it up
/// (review item 19): a Deny on part of the prefix was missed, and revoking that principal's
/// rights did not stop it. Each object is now authorized when it is read, as that principal
/// as it is at that moment.
#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_reads_each_object_as_its_principal_at_read_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Region::start();
    let c = r.client();
    for b in ["photos", "derived"] {
        c.create_bucket().bucket(b).send().await.expect("bucket");
    }
    let checksum = wasm_file(dir.path(), "checksum", &guest("checksum"));
    fc_ok(
        &r,
        &["deploy", "checksum", "--wasm", checksum.to_str().unwrap()],
    );
    let policy = |s3: bool| {
        let s3 = if s3 {
            r#",{"Effect":"Allow","Action":"s3:*","Resource":["arn:aws:s3:::photos/*","arn:aws:s3:::derived/*"]},
               {"Effect":"Deny","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/in/secret/*"}"#
        } else {
            ""
        };
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"fc:*","Resource":"*"}}{s3}]}}"#
        )
    };
    let (ak, sk) = common::iam_user(&r, "wirer", &policy(true));
    let out = fc_as(
        &r,
        (&ak, &sk),
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put = |key: &'static str, body: &'static [u8]| {
        let c = c.clone();
        async move {
            c.put_object()
                .bucket("photos")
                .key(key)
                .body(body.to_vec().into())
                .send()
                .await
                .expect("put");
        }
    };
    put("in/a.txt", b"allowed").await;
    let got = eventually(15, || object_text(&c, "derived", "sums/in/a.txt")).await;
    assert_eq!(got, Some(format!("fnv1a32 {:08x}\n", fnv1a32(b"allowed"))));
    // Under the prefix, but denied to the principal: never read, never derived.
    put("in/secret/plan.txt", b"denied").await;
    // Its rights revoked: the trigger stops reading.
    iam(
        &r,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "wirer"),
            ("PolicyName", "inline"),
            ("PolicyDocument", &policy(false)),
        ],
    );
    put("in/b.txt", b"after revocation").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        object_text(&c, "derived", "sums/in/secret/plan.txt").await,
        None
    );
    assert_eq!(object_text(&c, "derived", "sums/in/b.txt").await, None);
}

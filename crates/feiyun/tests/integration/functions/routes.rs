//! HTTP routes: functions answering on their own host names and paths.

use super::*;

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

//! The migration journal kept in the region (`feiyun migrate` without `--state`): records
//! reach the region, a run from another machine resumes from them, and a caller the region
//! will not keep a journal for is told so before anything is copied.

use std::process::{Command, Output};

use crate::common::{ACCESS_KEY, Region, SECRET_KEY, iam_user, sigv4_get};
use crate::migrate::{requests, summary, text};

/// `feiyun migrate SRC s3://jrn --json` as `(ak, sk)` with `home` as the machine's home.
fn run_from(
    r: &Region,
    (ak, sk): (&str, &str),
    src: &std::path::Path,
    home: &std::path::Path,
) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(["migrate"])
        .arg(src)
        .args(["s3://jrn", "--json", "--endpoint", &r.endpoint()])
        .env("AWS_ACCESS_KEY_ID", ak)
        .env("AWS_SECRET_ACCESS_KEY", sk)
        .env_remove("AWS_PROFILE")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", home)
        .output()
        .expect("run feiyun migrate")
}

/// The records of journal `id` in the region, as root.
fn journal_records(r: &Region, id: &str) -> Vec<serde_json::Value> {
    let resp = sigv4_get(
        r,
        (ACCESS_KEY, SECRET_KEY),
        "migrate",
        &format!("/migrate/journal/{id}"),
    );
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let v: serde_json::Value = serde_json::from_str(&resp.body_text()).unwrap();
    v["records"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn the_journal_is_kept_in_the_region_and_another_machine_resumes_from_it() {
    let r = Region::start();
    let src = tempfile::tempdir().unwrap();
    for i in 0..12 {
        std::fs::write(
            src.path().join(format!("f{i:02}")),
            vec![b'a' + i as u8; 100 + i],
        )
        .unwrap();
    }
    let first = tempfile::tempdir().unwrap();
    let o = run_from(&r, (ACCESS_KEY, SECRET_KEY), src.path(), first.path());
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&o);
    assert_eq!(s["copied"], 12, "{}", text(&o));
    let journal = s["journal"].as_str().unwrap().to_owned();
    assert!(
        journal.starts_with(first.path().to_str().unwrap()),
        "{journal}"
    );
    let id = std::path::Path::new(&journal)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let records = journal_records(&r, &id);
    assert_eq!(records.len(), 12, "{records:?}");
    assert!(records.iter().all(|x| x["t"] == "d"));

    // Another machine, with no local journal: one file added, nothing else sent again.
    std::fs::write(src.path().join("f99"), b"new").unwrap();
    let puts = requests(&r, "PutObject", "200");
    let heads = requests(&r, "HeadObject", "200");
    let second = tempfile::tempdir().unwrap();
    let o = run_from(&r, (ACCESS_KEY, SECRET_KEY), src.path(), second.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(summary(&o)["copied"], 1, "{}", text(&o));
    assert_eq!(requests(&r, "PutObject", "200") - puts, 1);
    // The journal read from the region vouched for the twelve: none was looked at again.
    assert_eq!(requests(&r, "HeadObject", "200") - heads, 0);
    assert_eq!(journal_records(&r, &id).len(), 13);

    // A user the region keeps no journal for is told before anything is copied.
    let (ak, sk) = iam_user(
        &r,
        "copier",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
    );
    let third = tempfile::tempdir().unwrap();
    let o = run_from(&r, (&ak, &sk), src.path(), third.path());
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("migrate:ReadJournal"), "{}", text(&o));
}

/// A signed request with a body to the region's `migrate` API, as root.
fn journal_call(r: &Region, method: &str, path_and_query: &str, body: &str) -> (u16, String) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let signer = crate::common::sigv4::Signer {
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        region: "us-east-1".into(),
    };
    let host = r.addr.to_string();
    let auth = signer.sign_as(
        "migrate",
        method,
        path,
        query,
        &[("host", host.clone())],
        &crate::common::sigv4::sha256_hex(body.as_bytes()),
        &crate::common::sigv4::now_amz_date(),
    );
    let mut req = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in auth {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let resp = crate::common::raw(r.addr, &req);
    (resp.status, resp.body_text())
}

#[tokio::test]
async fn the_journal_api_refuses_bad_input_and_keeps_what_it_holds() {
    let r = Region::start();
    let good = r#"{"records":[{"t":"d","k":"a/b","v":"AAEC"}]}"#;
    assert_eq!(
        journal_call(&r, "POST", "/migrate/journal/abc123", good).0,
        200
    );
    for (path, body) in [
        ("/migrate/journal/abc123", "not json"),
        ("/migrate/journal/abc123", r#"{"records":[0,0,0]}"#),
        (
            "/migrate/journal/abc123",
            r#"{"records":[{"t":"x","k":"a","v":null}]}"#,
        ),
        (
            "/migrate/journal/abc123",
            r#"{"records":[{"t":"d","k":"a","v":"%%%"}]}"#,
        ),
        ("/migrate/journal/not-hex", good),
        (
            "/migrate/journal/abc123",
            &format!(
                r#"{{"records":[{{"t":"d","k":"{}","v":null}}]}}"#,
                "k".repeat(3000)
            ),
        ),
    ] {
        let (status, text) = journal_call(&r, "POST", path, body);
        assert_eq!(status, 400, "{path} {body:.60}: {text}");
    }
    let (status, _) = journal_call(&r, "GET", "/migrate/journal/abc123?after=eA", "");
    assert_eq!(status, 400);
    // Nothing of that touched the record already there.
    let (status, text) = journal_call(&r, "GET", "/migrate/journal/abc123", "");
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["records"].as_array().map(Vec::len), Some(1), "{text}");
    assert_eq!(v["records"][0]["k"], "a/b");
    assert_eq!(v["records"][0]["v"], "AAEC");
    let (status, text) = journal_call(&r, "DELETE", "/migrate/journal/abc123", "");
    assert_eq!(
        (status, text.contains(r#""deleted":1"#)),
        (200, true),
        "{text}"
    );
}

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

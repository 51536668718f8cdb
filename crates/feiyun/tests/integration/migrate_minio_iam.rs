//! `feiyun migrate --iam-export`: a MinIO deployment's identities, from the zip its admin
//! tool writes (`mc admin cluster iam export`), with each user's own access key.

use std::path::Path;

use crate::common::{Region, client_for, query_call};
use crate::migrate::{feiyun, text};
use crate::migrate_iam::iam;

/// Writes `files` (name, JSON) under `iam-assets/` as a deflated zip, as MinIO does.
fn export_zip(path: &Path, files: &[(&str, serde_json::Value)]) {
    let mut script = String::from(
        "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n",
    );
    for (name, json) in files {
        script.push_str(&format!(
            "z.writestr('iam-assets/{name}', {:?})\n",
            json.to_string()
        ));
    }
    script.push_str("z.close()\n");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(path)
        .output()
        .expect("python3 (the test command installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn allow(actions: &str, resource: &str) -> serde_json::Value {
    serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": [actions], "Resource": [resource]}]})
}

#[tokio::test]
async fn users_keep_their_own_keys_and_policies_come_along() {
    let r = Region::start();
    r.client()
        .create_bucket()
        .bucket("lake")
        .send()
        .await
        .unwrap();
    r.client()
        .put_object()
        .bucket("lake")
        .key("data.csv")
        .body(b"a,b\n".to_vec().into())
        .send()
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let zip = tmp.path().join("minio-iam.zip");
    export_zip(
        &zip,
        &[
            (
                "policies.json",
                serde_json::json!({
                    "lake-read": allow("s3:GetObject", "arn:aws:s3:::lake/*"),
                    "readwrite": allow("s3:*", "arn:aws:s3:::*"),
                }),
            ),
            (
                "users.json",
                serde_json::json!({
                    "appkey01": {"secretKey": "app-secret-0123456789", "status": "enabled"},
                    "offkey01": {"secretKey": "off-secret-0123456789", "status": "disabled"},
                    // Keys this region cannot hold: a comma splits a credential's fields.
                    "bad,key": {"secretKey": "bad-secret-0123456789", "status": "enabled"},
                    "shortkey": {"secretKey": "short", "status": "enabled"},
                }),
            ),
            (
                "groups.json",
                serde_json::json!({"analysts": {"version": 1, "status": "enabled",
                    "members": ["appkey01"], "updatedAt": "2026-01-01T00:00:00Z"}}),
            ),
            (
                "user_mappings.json",
                serde_json::json!({"offkey01": {"version": 1, "policy": "readwrite"}}),
            ),
            (
                "group_mappings.json",
                serde_json::json!({"analysts": {"version": 1, "policy": "lake-read"}}),
            ),
            (
                "svcaccts.json",
                serde_json::json!({"svc-key-1": {"parent": "appkey01", "accessKey": "svc-key-1",
                    "secretKey": "svc-secret-0123456789", "status": "on"}}),
            ),
            ("stsuser_mappings.json", serde_json::json!({})),
        ],
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let state = tmp.path().join("j");
    let run = |dry: bool| {
        let mut args = vec![
            empty.to_str().unwrap(),
            "s3://lake/imported/",
            "--iam-export",
            zip.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--json",
        ];
        if dry {
            args.push("--dry-run");
        }
        feiyun(&r, &args)
    };
    // A dry run names what it would create and creates nothing.
    let o = run(true);
    assert!(
        text(&o).contains(r#""created":["policy lake-read""#),
        "{}",
        text(&o)
    );
    let listed = iam(&r, &[("Action", "ListUsers")]);
    assert!(!listed.contains("appkey01"), "{listed}");

    let o = run(false);
    assert!(!o.status.success(), "two users failed, so the run fails");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.trim(),
        "feiyun: 2 identity change(s) failed (listed above)",
        "the objects' report holds no identity"
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let s = &first["iam"];
    assert_eq!(
        s["created"],
        serde_json::json!([
            "policy lake-read",
            "policy readwrite",
            "user appkey01",
            "user offkey01",
            "group analysts"
        ]),
        "{s}"
    );
    let failed: Vec<&str> = s["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["(iam) user bad,key", "(iam) user shortkey"], "{s}");
    let reported = s["keys_not_copied"].to_string();
    assert!(reported.contains("svc-key-1"), "{reported}");

    // The application's own credentials work here, with its group's policy and no more.
    let app = client_for(&r.endpoint(), "appkey01", "app-secret-0123456789");
    let got = app
        .get_object()
        .bucket("lake")
        .key("data.csv")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        b"a,b\n"
    );
    let put = app
        .put_object()
        .bucket("lake")
        .key("x")
        .body(b"x".to_vec().into())
        .send()
        .await;
    assert!(put.is_err(), "lake-read allowed a write");
    // The disabled user's key is refused, though its policy would allow everything.
    let off = client_for(&r.endpoint(), "offkey01", "off-secret-0123456789");
    assert!(
        off.list_buckets().send().await.is_err(),
        "a disabled key signed in"
    );
    // Choosing a user's secret is the account root's alone.
    let denied = query_call(
        r.addr,
        ("appkey01", "app-secret-0123456789"),
        "iam",
        "2010-05-08",
        &[
            ("Action", "ImportAccessKey"),
            ("UserName", "appkey01"),
            ("AccessKeyId", "chosen-by-app"),
            ("SecretAccessKey", "chosen-secret-0123"),
        ],
    );
    assert_eq!(denied.status, 403, "{}", denied.body_text());

    // Again: everything exists, nothing is changed or duplicated.
    let o = run(false);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let again: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(again["iam"]["created"], serde_json::json!([]), "{again}");
    assert_eq!(again["iam"]["links"], 0, "{again}");
}

#[tokio::test]
async fn only_the_account_root_may_import_keys_and_nothing_is_created_otherwise() {
    let r = Region::start();
    r.client()
        .create_bucket()
        .bucket("lake")
        .send()
        .await
        .unwrap();
    let admin = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:*","s3:*","sts:*"],"Resource":"*"}]}"#;
    let (ak, sk) = crate::common::iam_user(&r, "operator", admin);
    let tmp = tempfile::tempdir().unwrap();
    let zip = tmp.path().join("e.zip");
    export_zip(
        &zip,
        &[
            (
                "policies.json",
                serde_json::json!({"p1": allow("s3:GetObject", "*")}),
            ),
            (
                "users.json",
                serde_json::json!({"appkey01": {"secretKey": "app-secret-0123456789"}}),
            ),
        ],
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args([
            "migrate",
            empty.to_str().unwrap(),
            "s3://lake",
            "--iam-export",
        ])
        .arg(&zip)
        .args(["--state", tmp.path().join("j").to_str().unwrap()])
        .args(["--endpoint", &r.endpoint()])
        .env("AWS_ACCESS_KEY_ID", &ak)
        .env("AWS_SECRET_ACCESS_KEY", &sk)
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("root"), "{}", text(&o));
    let listed = iam(&r, &[("Action", "ListPolicies"), ("Scope", "Local")]);
    assert!(!listed.contains("p1"), "{listed}");
}

#[test]
fn a_file_that_is_not_an_export_is_refused_before_anything_is_created() {
    let r = Region::start();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (name, bytes) in [
        ("text.zip", b"not a zip at all".to_vec()),
        ("truncated.zip", {
            let p = tmp.path().join("full.zip");
            export_zip(
                &p,
                &[(
                    "users.json",
                    serde_json::json!({"k1": {"secretKey": "s-0123456789"}}),
                )],
            );
            let full = std::fs::read(&p).unwrap();
            full[..full.len() - 30].to_vec()
        }),
    ] {
        let file = tmp.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let o = feiyun(
            &r,
            &[
                empty.to_str().unwrap(),
                "s3://lake",
                "--iam-export",
                file.to_str().unwrap(),
                "--state",
                tmp.path().join("j").to_str().unwrap(),
            ],
        );
        assert!(!o.status.success(), "{name}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("not a MinIO IAM export"), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
    }
    let listed = iam(&r, &[("Action", "ListUsers")]);
    assert!(!listed.contains("k1"), "{listed}");
}

//! Identity against the real binary: identities and sessions survive a restart, failed
//! authentication backs off, and a tampered audit record is named by `feiyun audit verify`.

use crate::common;

use crate::common::*;

fn iam(r: &Region, ak: &str, sk: &str, service: &str, params: &[(&str, &str)]) -> RawResponse {
    let version = if service == "sts" {
        "2011-06-15"
    } else {
        "2010-05-08"
    };
    query_call(r.addr, (ak, sk), service, version, params)
}

fn field(xml: &str, tag: &str) -> String {
    xml.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|s| s.split(&format!("</{tag}>")).next())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        .to_owned()
}

fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(p);
            }
        }
    }
    hits
}

fn root(r: &Region, params: &[(&str, &str)]) -> String {
    let resp = iam(r, ACCESS_KEY, SECRET_KEY, "iam", params);
    assert_eq!(resp.status, 200, "{params:?}: {}", resp.body_text());
    resp.body_text()
}

#[tokio::test]
async fn identities_and_sessions_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, secret, session) = {
        let r = Region::start_in(tmp.path());
        // The master key came from FEIYUN_MASTER_KEY: none is written beside the data.
        assert!(!tmp.path().join("master.key").exists());
        root(&r, &[("Action", "CreateUser"), ("UserName", "keeper")]);
        root(
            &r,
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", "keeper"),
                ("PolicyName", "list"),
                (
                    "PolicyDocument",
                    r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["s3:ListAllMyBuckets","sts:GetSessionToken"],"Resource":"*"}}"#,
                ),
            ],
        );
        let k = root(&r, &[("Action", "CreateAccessKey"), ("UserName", "keeper")]);
        let (key, secret) = (field(&k, "AccessKeyId"), field(&k, "SecretAccessKey"));
        let s = iam(&r, &key, &secret, "sts", &[("Action", "GetSessionToken")]);
        assert_eq!(s.status, 200, "{}", s.body_text());
        let s = s.body_text();
        let session = (
            field(&s, "AccessKeyId"),
            field(&s, "SecretAccessKey"),
            field(&s, "SessionToken"),
        );
        (key, secret, session)
    };
    // Secrets are stored sealed by the master key: no file in the data directory (the
    // metadata store, the audit log) holds the user's secret, the session's or its token.
    for (what, secret) in [
        ("secret", &secret),
        ("session secret", &session.1),
        ("token", &session.2),
    ] {
        let hits = files_containing(tmp.path(), secret.as_bytes());
        assert!(hits.is_empty(), "{what} readable in {hits:?}");
    }
    // Killed without a chance to flush anything but what was committed.
    let r = Region::start_in(tmp.path());
    let c = client_for(&r.endpoint(), &key, &secret);
    c.list_buckets()
        .send()
        .await
        .expect("the user's key and policy are back");
    assert!(
        c.create_bucket()
            .bucket("nope-bucket")
            .send()
            .await
            .is_err(),
        "and still only that policy"
    );
    common::session_client(&r.endpoint(), &session.0, &session.1, &session.2)
        .list_buckets()
        .send()
        .await
        .expect("the session survives the restart too");
    let who = iam(
        &r,
        &session.0,
        &session.1,
        "sts",
        &[("Action", "GetCallerIdentity")],
    );
    // Without its token the session key is refused.
    assert_eq!(who.status, 403, "{}", who.body_text());
}

#[tokio::test]
async fn failed_authentication_backs_off() {
    let r = Region::start();
    let good = r.client();
    good.create_bucket().bucket("guarded").send().await.unwrap();
    let bad = client_for(
        &r.endpoint(),
        ACCESS_KEY,
        "not-the-secret-at-all-000000000000000000",
    );
    for _ in 0..10 {
        assert!(bad.list_buckets().send().await.is_err());
    }
    // Now even the right secret from this source waits.
    let resp = raw(
        r.addr,
        "GET /guarded HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 Credential=FYTESTACCESSKEY00001/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 503);
    assert_eq!(resp.code(), "SlowDown");
    let wait: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=300).contains(&wait));
    let err = good.list_buckets().send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    tokio::time::sleep(std::time::Duration::from_secs(wait + 1)).await;
    let out = good
        .list_buckets()
        .send()
        .await
        .expect("back after the back-off");
    assert_eq!(out.buckets().len(), 1);
    // The throttled and failed attempts are in the audit log.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let tail = std::process::Command::new(env!("CARGO_BIN_EXE_feiyun"))
        .args(["audit", "tail", "-n", "100", "--json", "--data-dir"])
        .arg(&r.data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tail.stdout);
    assert!(text.matches("\"AuthFailed\"").count() >= 10, "{text}");
    assert!(text.contains("\"Throttled\""), "{text}");
}

#[tokio::test]
async fn tampered_audit_record_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut r = Region::start_in(tmp.path());
        let c = r.client();
        c.create_bucket().bucket("audited").send().await.unwrap();
        for i in 0..20 {
            c.put_object()
                .bucket("audited")
                .key(format!("k{i}"))
                .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
                .send()
                .await
                .unwrap();
        }
        assert!(r.terminate().success());
    }
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_feiyun"))
            .args(["audit", "verify", "--data-dir"])
            .arg(tmp.path())
            // The chain is keyed from the master key; verification needs it.
            .env("FEIYUN_MASTER_KEY", common::MASTER_KEY)
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(out.starts_with("ok: 21 records"), "{out}");
    // Change who did record 8 (a PutObject): the chain names exactly that record.
    let seg = tmp.path().join("audit/audit-00000001.log");
    let text = std::fs::read_to_string(&seg).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[7].contains("\"PutObject\""));
    let forged = lines[7].replacen("\"status\":200", "\"status\":404", 1);
    assert_ne!(forged, lines[7]);
    let mut tampered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    tampered[7] = forged;
    std::fs::write(&seg, tampered.join("\n") + "\n").unwrap();
    let bad = verify();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("record 8 "), "{err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
}

#[tokio::test]
async fn web_identity_from_the_configured_issuer() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let keys = tempfile::tempdir().unwrap();
    let jwks = keys.path().join("jwks.json");
    std::fs::write(
        &jwks,
        format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
            b64(&point[1..33]),
            b64(&point[33..65])
        ),
    )
    .unwrap();
    let r = Region::start_env(&[
        ("FEIYUN_OIDC_ISSUER", "https://idp.example.com"),
        ("FEIYUN_OIDC_JWKS", jwks.to_str().unwrap()),
        ("FEIYUN_OIDC_AUDIENCES", "app"),
    ]);
    let account = field(
        &iam(
            &r,
            ACCESS_KEY,
            SECRET_KEY,
            "sts",
            &[("Action", "GetCallerIdentity")],
        )
        .body_text(),
        "Account",
    );
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Federated":"arn:aws:iam::{account}:oidc-provider/idp.example.com"}},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{{"StringEquals":{{"idp.example.com:aud":"app"}},"StringLike":{{"idp.example.com:sub":"user-*"}}}}}}]}}"#
    );
    root(
        &r,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "web"),
            ("AssumeRolePolicyDocument", &trust),
        ],
    );
    root(
        &r,
        &[
            ("Action", "AttachRolePolicy"),
            ("RoleName", "web"),
            (
                "PolicyArn",
                "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
            ),
        ],
    );
    r.client()
        .create_bucket()
        .bucket("web-data")
        .send()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = |sub: &str, exp: i64| {
        let h = b64(br#"{"alg":"ES256","kid":"k1"}"#);
        let p = b64(format!(
            r#"{{"iss":"https://idp.example.com","sub":"{sub}","aud":"app","exp":{exp}}}"#
        )
        .as_bytes());
        let sig = pair
            .sign(&SystemRandom::new(), format!("{h}.{p}").as_bytes())
            .unwrap();
        format!("{h}.{p}.{}", b64(sig.as_ref()))
    };
    let assume = |tok: &str| {
        let role = format!("arn:aws:iam::{account}:role/web");
        let body = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName=browser&WebIdentityToken={}",
            form_encode(&role),
            form_encode(tok)
        );
        raw(
            r.addr,
            &format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let ok = assume(&token("user-7", now + 600));
    assert_eq!(ok.status, 200, "{}", ok.body_text());
    let x = ok.body_text();
    assert_eq!(field(&x, "SubjectFromWebIdentityToken"), "user-7");
    assert!(field(&x, "Arn").ends_with(":assumed-role/web/browser"));
    let web = common::session_client(
        &r.endpoint(),
        &field(&x, "AccessKeyId"),
        &field(&x, "SecretAccessKey"),
        &field(&x, "SessionToken"),
    );
    web.list_objects_v2()
        .bucket("web-data")
        .send()
        .await
        .expect("read-only role can list");
    assert!(
        web.create_bucket().bucket("web-new").send().await.is_err(),
        "but not write"
    );
    // The trust policy's conditions, expiry and the signature all decide.
    let denied = assume(&token("admin", now + 600));
    assert_eq!(
        (denied.status, denied.code_iam()),
        (403, "AccessDenied".to_string()),
        "{}",
        denied.body_text()
    );
    let expired = assume(&token("user-7", now - 3600));
    assert_eq!(expired.code_iam(), "ExpiredTokenException");
    let mut forged = token("user-7", now + 600);
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(assume(&forged).code_iam(), "InvalidIdentityToken");
}

trait IamCode {
    fn code_iam(&self) -> String;
}

impl IamCode for RawResponse {
    fn code_iam(&self) -> String {
        let t = self.body_text();
        t.split("<Code>")
            .nth(1)
            .and_then(|s| s.split("</Code>").next())
            .unwrap_or("")
            .to_owned()
    }
}

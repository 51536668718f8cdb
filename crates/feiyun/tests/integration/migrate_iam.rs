//! `feiyun migrate --iam`: identities from another region — policies, groups, roles, users,
//! their tags and memberships — without their secrets.

use crate::common::Region;
use crate::migrate::{feiyun, text};

/// `%XX` escapes decoded, as IAM encodes policy documents inside its XML.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(h)) => {
                out.push(u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap());
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A query call to `r`'s IAM as root; the answer's body, after checking it is a 200.
pub(crate) fn iam(r: &Region, params: &[(&str, &str)]) -> String {
    let resp = crate::common::query_call(
        r.addr,
        (crate::common::ACCESS_KEY, crate::common::SECRET_KEY),
        "iam",
        "2010-05-08",
        params,
    );
    assert_eq!(resp.status, 200, "{params:?}: {}", resp.body_text());
    resp.body_text()
}

/// A query call to `r`'s STS as root.
fn iam_sts(r: &Region, params: &[(&str, &str)]) -> String {
    let resp = crate::common::query_call(
        r.addr,
        (crate::common::ACCESS_KEY, crate::common::SECRET_KEY),
        "sts",
        "2011-06-15",
        params,
    );
    assert_eq!(resp.status, 200, "{params:?}: {}", resp.body_text());
    resp.body_text()
}

fn between(text: &str, open: &str, close: &str) -> String {
    text.split(open)
        .nth(1)
        .and_then(|s| s.split(close).next())
        .unwrap_or_else(|| panic!("no {open} in {text}"))
        .to_owned()
}

/// Gives `user` a virtual MFA device, enabled with two consecutive codes of its seed.
fn enrol_mfa(r: &Region, user: &str) {
    use base64::Engine;
    let made = iam(
        r,
        &[
            ("Action", "CreateVirtualMFADevice"),
            ("VirtualMFADeviceName", user),
        ],
    );
    let serial = between(&made, "<SerialNumber>", "</SerialNumber>");
    let b32 = base64::engine::general_purpose::STANDARD
        .decode(between(&made, "<Base32StringSeed>", "</Base32StringSeed>"))
        .unwrap();
    let seed = base32_decode(&String::from_utf8(b32).unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let c = feiyun_iam::totp::counter_at(now);
    let code = |n: u64| format!("{:06}", feiyun_iam::totp::code_at(&seed, n));
    iam(
        r,
        &[
            ("Action", "EnableMFADevice"),
            ("UserName", user),
            ("SerialNumber", &serial),
            ("AuthenticationCode1", &code(c - 1)),
            ("AuthenticationCode2", &code(c)),
        ],
    );
}

fn base32_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut bits, mut n) = (0u64, 0u32);
    for ch in s.trim_end_matches('=').bytes() {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'2'..=b'7' => ch - b'2' + 26,
            _ => panic!("not base32: {s}"),
        };
        bits = (bits << 5) | v as u64;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

#[tokio::test]
async fn identities_move_without_their_secrets() {
    let legacy = Region::start();
    let r = Region::start();
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::lake/*"}]}"#;
    let inline = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::lake"}]}"#;
    let created = iam(
        &legacy,
        &[
            ("Action", "CreatePolicy"),
            ("PolicyName", "lake-readers"),
            ("PolicyDocument", doc),
        ],
    );
    let src_arn = created
        .split("<Arn>")
        .nth(1)
        .and_then(|s| s.split("</Arn>").next())
        .unwrap()
        .to_owned();
    iam(
        &legacy,
        &[("Action", "CreateGroup"), ("GroupName", "analysts")],
    );
    iam(
        &legacy,
        &[
            ("Action", "AttachGroupPolicy"),
            ("GroupName", "analysts"),
            ("PolicyArn", &src_arn),
        ],
    );
    for user in ["ana", "bob"] {
        iam(&legacy, &[("Action", "CreateUser"), ("UserName", user)]);
    }
    iam(
        &legacy,
        &[
            ("Action", "AddUserToGroup"),
            ("UserName", "ana"),
            ("GroupName", "analysts"),
        ],
    );
    iam(
        &legacy,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "ana"),
            ("PolicyName", "list-lake"),
            ("PolicyDocument", inline),
        ],
    );
    iam(
        &legacy,
        &[
            ("Action", "AttachUserPolicy"),
            ("UserName", "bob"),
            (
                "PolicyArn",
                "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
            ),
        ],
    );
    iam(
        &legacy,
        &[
            ("Action", "AttachUserPolicy"),
            ("UserName", "ana"),
            (
                "PolicyArn",
                "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
            ),
        ],
    );
    iam(
        &legacy,
        &[("Action", "CreateAccessKey"), ("UserName", "ana")],
    );
    iam(
        &legacy,
        &[
            ("Action", "TagUser"),
            ("UserName", "ana"),
            ("Tags.member.1.Key", "team"),
            ("Tags.member.1.Value", "lake & co"),
        ],
    );
    enrol_mfa(&legacy, "ana");
    // A role the source's account may assume, with its policies and tags; and one whose
    // trust names an account that is neither side's.
    let me = iam_sts(&legacy, &[("Action", "GetCallerIdentity")]);
    let src_account = between(&me, "<Account>", "</Account>");
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{src_account}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    iam(
        &legacy,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "loader"),
            ("AssumeRolePolicyDocument", &trust),
            ("Description", "loads the lake"),
            ("MaxSessionDuration", "7200"),
            ("Tags.member.1.Key", "owner"),
            ("Tags.member.1.Value", "data"),
        ],
    );
    iam(
        &legacy,
        &[
            ("Action", "AttachRolePolicy"),
            ("RoleName", "loader"),
            ("PolicyArn", &src_arn),
        ],
    );
    iam(
        &legacy,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "loader"),
            ("PolicyName", "list-lake"),
            ("PolicyDocument", inline),
        ],
    );
    let foreign = trust.replace(&src_account, "999999999999");
    iam(
        &legacy,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "outsider"),
            ("AssumeRolePolicyDocument", &foreign),
        ],
    );
    legacy
        .client()
        .create_bucket()
        .bucket("lake")
        .send()
        .await
        .unwrap();

    // "bob" exists here already: the source is not trusted to change him.
    iam(&r, &[("Action", "CreateUser"), ("UserName", "bob")]);
    let endpoint = legacy.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("j");
    let run = || {
        feiyun(
            &r,
            &[
                "s3://lake",
                "s3://lake",
                "--source-endpoint",
                &endpoint,
                "--iam",
                "--state",
                st.to_str().unwrap(),
                "--json",
            ],
        )
    };
    // The role refused below fails the run, everything else having been done.
    let o = run();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("1 identity change(s) failed"),
        "{}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let s = &first["iam"];
    assert_eq!(
        s["created"],
        serde_json::json!([
            "policy lake-readers",
            "group analysts",
            "role loader",
            "user ana"
        ]),
        "{s}"
    );
    assert_eq!(s["existing"], serde_json::json!(["user bob"]), "{s}");
    assert_eq!(
        s["keys_not_copied"],
        serde_json::json!(["ana: 1 access key(s)"])
    );
    assert_eq!(
        s["mfa_not_copied"],
        serde_json::json!(["ana: 1 MFA device(s)"])
    );
    let failures = s["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{s}");
    assert_eq!(failures[0]["key"], "(iam) role outsider");
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap()
            .contains("999999999999"),
        "{s}"
    );

    // The role, its trust now naming this region's account, its policies and tags.
    let here = iam_sts(&r, &[("Action", "GetCallerIdentity")]);
    let here_account = between(&here, "<Account>", "</Account>");
    let role = iam(&r, &[("Action", "GetRole"), ("RoleName", "loader")]);
    let role_trust = percent_decode(&between(
        &role,
        "<AssumeRolePolicyDocument>",
        "</AssumeRolePolicyDocument>",
    ));
    let want = trust.replace(&src_account, &here_account);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&role_trust).unwrap(),
        serde_json::from_str::<serde_json::Value>(&want).unwrap()
    );
    assert!(
        role.contains("<Description>loads the lake</Description>"),
        "{role}"
    );
    assert!(
        role.contains("<MaxSessionDuration>7200</MaxSessionDuration>"),
        "{role}"
    );
    let role_tags = iam(&r, &[("Action", "ListRoleTags"), ("RoleName", "loader")]);
    assert!(
        role_tags.contains("<Key>owner</Key>") && role_tags.contains("<Value>data</Value>"),
        "{role_tags}"
    );
    let role_attached = iam(
        &r,
        &[
            ("Action", "ListAttachedRolePolicies"),
            ("RoleName", "loader"),
        ],
    );
    assert!(role_attached.contains("lake-readers"), "{role_attached}");
    assert!(!role_attached.contains(&src_arn), "{role_attached}");
    let role_inline = iam(
        &r,
        &[("Action", "ListRolePolicies"), ("RoleName", "loader")],
    );
    assert!(role_inline.contains("list-lake"), "{role_inline}");
    let user_tags = iam(&r, &[("Action", "ListUserTags"), ("UserName", "ana")]);
    assert!(
        user_tags.contains("<Value>lake &amp; co</Value>"),
        "{user_tags}"
    );
    let no_outsider = crate::common::query_call(
        r.addr,
        (crate::common::ACCESS_KEY, crate::common::SECRET_KEY),
        "iam",
        "2010-05-08",
        &[("Action", "GetRole"), ("RoleName", "outsider")],
    );
    assert_eq!(no_outsider.status, 404, "{}", no_outsider.body_text());

    // Here, under this region's account: the group's policy, the membership, the inline
    // policy word for word, the AWS managed attachment; and no access key.
    let attached = iam(
        &r,
        &[
            ("Action", "ListAttachedGroupPolicies"),
            ("GroupName", "analysts"),
        ],
    );
    assert!(attached.contains("lake-readers"), "{attached}");
    assert!(
        !attached.contains(&src_arn),
        "the source's account: {attached}"
    );
    let groups = iam(&r, &[("Action", "ListGroupsForUser"), ("UserName", "ana")]);
    assert!(
        groups.contains("<GroupName>analysts</GroupName>"),
        "{groups}"
    );
    let got = iam(
        &r,
        &[
            ("Action", "GetUserPolicy"),
            ("UserName", "ana"),
            ("PolicyName", "list-lake"),
        ],
    );
    let got_doc = got
        .split("<PolicyDocument>")
        .nth(1)
        .and_then(|s| s.split("</PolicyDocument>").next())
        .unwrap();
    let decoded = percent_decode(got_doc);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&decoded).unwrap(),
        serde_json::from_str::<serde_json::Value>(inline).unwrap()
    );
    let ana = iam(
        &r,
        &[("Action", "ListAttachedUserPolicies"), ("UserName", "ana")],
    );
    assert!(ana.contains("AmazonS3ReadOnlyAccess"), "{ana}");
    let bob = iam(
        &r,
        &[("Action", "ListAttachedUserPolicies"), ("UserName", "bob")],
    );
    assert!(
        !bob.contains("AmazonS3ReadOnlyAccess"),
        "an existing user was changed: {bob}"
    );
    let keys = iam(&r, &[("Action", "ListAccessKeys"), ("UserName", "ana")]);
    assert!(!keys.contains("<AccessKeyId>"), "{keys}");

    // Again: everything is there already, nothing is duplicated; the refused role is
    // refused again.
    let o = run();
    assert!(!o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["iam"]["created"], serde_json::json!([]), "{first}");
    assert_eq!(first["iam"]["existing"].as_array().unwrap().len(), 5);
    assert_eq!(
        first["iam"]["links"], 0,
        "nothing added to what exists: {first}"
    );
    let attached = iam(
        &r,
        &[
            ("Action", "ListAttachedGroupPolicies"),
            ("GroupName", "analysts"),
        ],
    );
    assert_eq!(attached.matches("<PolicyName>").count(), 1, "{attached}");
}

//! The access matrix: principals × S3 operations × resources × conditions, each row with the
//! decision AWS would make, run against the real server through aws-sdk-s3. Users, keys,
//! groups and policies are created through the IAM query API, as `aws iam` would.

use std::collections::HashMap;

use crate::common::*;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum D {
    Allow,
    Deny,
}
use D::*;

mod ops;
use ops::{Fixture, Op, every_operation, run};

/// Calls the IAM (or STS) query API as root; panics unless it answers 200.
fn iam_call(r: &Region, service: &str, params: &[(&str, &str)]) -> String {
    let resp = iam_raw(r, service, ACCESS_KEY, SECRET_KEY, params);
    assert_eq!(resp.status, 200, "{params:?}: {}", resp.body_text());
    resp.body_text()
}

fn iam_raw(r: &Region, service: &str, ak: &str, sk: &str, params: &[(&str, &str)]) -> RawResponse {
    query_call(r.addr, (ak, sk), service, "2010-05-08", params)
}

fn field(xml: &str, tag: &str) -> String {
    xml.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|s| s.split(&format!("</{tag}>")).next())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        .to_owned()
}

/// A user with an access key, inline policies, managed policy ARNs and tags.
fn user(r: &Region, name: &str, inline: &[&str], attach: &[&str], tags: &[(&str, &str)]) -> Client {
    let mut p: Vec<(String, String)> = vec![
        ("Action".into(), "CreateUser".into()),
        ("UserName".into(), name.into()),
    ];
    for (i, (k, v)) in tags.iter().enumerate() {
        p.push((format!("Tags.member.{}.Key", i + 1), (*k).into()));
        p.push((format!("Tags.member.{}.Value", i + 1), (*v).into()));
    }
    let refs: Vec<(&str, &str)> = p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    iam_call(r, "iam", &refs);
    for (i, doc) in inline.iter().enumerate() {
        let pname = format!("p{i}");
        iam_call(
            r,
            "iam",
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", name),
                ("PolicyName", &pname),
                ("PolicyDocument", doc),
            ],
        );
    }
    for arn in attach {
        iam_call(
            r,
            "iam",
            &[
                ("Action", "AttachUserPolicy"),
                ("UserName", name),
                ("PolicyArn", arn),
            ],
        );
    }
    let key = iam_call(
        r,
        "iam",
        &[("Action", "CreateAccessKey"), ("UserName", name)],
    );
    client_for(
        &r.endpoint(),
        &field(&key, "AccessKeyId"),
        &field(&key, "SecretAccessKey"),
    )
}

fn in_days(days: i64) -> DateTime {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    DateTime::from_secs(now + days * 86_400)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_matrix() {
    let r = Region::start();
    let root = r.client();
    let account = field(
        &iam_call(
            &r,
            "sts",
            &[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")],
        ),
        "Account",
    );

    // Fixture, made by root.
    for b in ["shared", "eng-data", "ops-data"] {
        root.create_bucket().bucket(b).send().await.unwrap();
    }
    root.create_bucket()
        .bucket("locked")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    root.put_bucket_versioning()
        .bucket("shared")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut versions = HashMap::new();
    for (k, tags) in [
        ("public.txt", "public=yes"),
        ("private.txt", "public=no"),
        ("home/alice/a.txt", ""),
        ("home/bob/b.txt", ""),
        ("data/x", ""),
        ("shared/s.txt", ""),
    ] {
        let out = root
            .put_object()
            .bucket("shared")
            .key(k)
            .tagging(tags)
            .body(ByteStream::from_static(b"fixture"))
            .send()
            .await
            .unwrap();
        versions.insert(k, out.version_id().unwrap().to_owned());
    }
    for b in ["eng-data", "ops-data"] {
        root.put_object()
            .bucket(b)
            .key("k")
            .body(ByteStream::from_static(b"k"))
            .send()
            .await
            .unwrap();
    }
    root.put_object()
        .bucket("locked")
        .key("l")
        .body(ByteStream::from_static(b"l"))
        .send()
        .await
        .unwrap();
    let upload = root
        .create_multipart_upload()
        .bucket("shared")
        .key("mp")
        .send()
        .await
        .unwrap();
    let fx = Fixture {
        version_of_public: versions["public.txt"].clone(),
        upload_id: upload.upload_id().unwrap().to_owned(),
    };

    // Principals.
    let admin = user(
        &r,
        "admin",
        &[],
        &["arn:aws:iam::aws:policy/AdministratorAccess"],
        &[],
    );
    let nobody = user(&r, "nobody", &[], &[], &[]);
    let reader = user(
        &r,
        "reader",
        &[],
        &["arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"],
        &[],
    );
    let alice = user(
        &r,
        "alice",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::shared",
             "Condition":{"StringLike":{"s3:prefix":["","home/","home/${aws:username}/*"]}}},
            {"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject"],"Resource":"arn:aws:s3:::shared/home/${aws:username}/*"}]}"#],
        &[],
        &[],
    );
    let denier = user(
        &r,
        "denier",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Sid":"NoDeletes","Effect":"Deny","Action":"s3:Delete*","Resource":"*"},
            {"Sid":"PutOnlyData","Effect":"Deny","Action":"s3:PutObject","NotResource":"arn:aws:s3:::shared/data/*"},
            {"Sid":"ReadOnlyElsewhere","Effect":"Deny","NotAction":["s3:Get*","s3:List*","s3:PutObject","s3:Delete*"],"Resource":"*"}]}"#],
        &["arn:aws:iam::aws:policy/AdministratorAccess"],
        &[],
    );
    let versioner = user(
        &r,
        "versioner",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["s3:GetObject","s3:DeleteObject","s3:PutObjectTagging"],"Resource":"arn:aws:s3:::shared/*"},
            {"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::shared"}]}"#],
        &[],
        &[],
    );
    let tagger = user(
        &r,
        "tagger",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::shared/*",
             "Condition":{"StringEquals":{"s3:RequestObjectTag/team":"red"},
                          "ForAllValues:StringEquals":{"s3:RequestObjectTagKeys":["team","env"]}}},
            {"Effect":"Allow","Action":"s3:PutObjectTagging","Resource":"arn:aws:s3:::shared/*"},
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::shared/*",
             "Condition":{"StringEquals":{"s3:ExistingObjectTag/public":"yes"}}},
            {"Effect":"Allow","Action":"s3:GetObjectTagging","Resource":"arn:aws:s3:::shared/*",
             "Condition":{"StringNotEquals":{"s3:ExistingObjectTag/public":"no"}}}]}"#],
        &[],
        &[],
    );
    let anytag = user(
        &r,
        "anytag",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["s3:PutObject","s3:PutObjectTagging"],"Resource":"arn:aws:s3:::shared/*",
             "Condition":{"ForAnyValue:StringLike":{"s3:RequestObjectTagKeys":"env*"}}}]}"#],
        &[],
        &[],
    );
    let lister = user(
        &r,
        "lister",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::shared",
             "Condition":{"NumericLessThanEquals":{"s3:max-keys":"10"},"StringEqualsIfExists":{"s3:delimiter":"/"}}},
            {"Effect":"Allow","Action":"s3:ListBucketVersions","Resource":"arn:aws:s3:::shared",
             "Condition":{"Null":{"s3:prefix":"false"}}}]}"#],
        &[],
        &[],
    );
    let net = user(
        &r,
        "net",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"127.0.0.0/8"}}},
            {"Effect":"Allow","Action":"s3:PutObject","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}},
            {"Effect":"Allow","Action":"s3:ListBucket","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":"192.168.0.0/16"}}},
            {"Effect":"Allow","Action":"s3:DeleteObject","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":"127.0.0.1/32"}}}]}"#],
        &[],
        &[],
    );
    let tls = user(
        &r,
        "tls",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:*","Resource":"*"},
            {"Effect":"Deny","Action":["s3:PutObject","s3:DeleteObject"],"Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}},
            {"Effect":"Deny","Action":"s3:PutBucketTagging","Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}]}"#],
        &[],
        &[],
    );
    let clock = user(
        &r,
        "clock",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2000-01-01T00:00:00Z"}}},
            {"Effect":"Allow","Action":"s3:ListBucket","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"}}},
            {"Effect":"Allow","Action":"s3:GetBucketLocation","Resource":"*","Condition":{"DateLessThanEquals":{"aws:EpochTime":"4102444800"}}},
            {"Effect":"Allow","Action":"s3:GetBucketVersioning","Resource":"*","Condition":{"DateEquals":{"aws:CurrentTime":"2020-01-01"}}},
            {"Effect":"Allow","Action":"s3:GetBucketTagging","Resource":"*","Condition":{"DateNotEquals":{"aws:CurrentTime":"2020-01-01"}}},
            {"Effect":"Allow","Action":"s3:GetBucketAcl","Resource":"*","Condition":{"DateGreaterThanEquals":{"aws:CurrentTime":"2100-01-01"}}}]}"#],
        &[],
        &[],
    );
    let engineer = user(
        &r,
        "engineer",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:*","Resource":["arn:aws:s3:::${aws:PrincipalTag/dept}-data","arn:aws:s3:::${aws:PrincipalTag/dept}-data/*"]},
            {"Effect":"Allow","Action":"s3:ListAllMyBuckets","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalTag/dept":"eng"}}},
            {"Effect":"Allow","Action":"s3:GetBucketLocation","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalTag/dept":"ops"}}}]}"#],
        &[],
        &[("dept", "eng")],
    );
    let arn_policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{{"ArnLike":{{"aws:PrincipalArn":"arn:aws:iam::*:user/arn*"}}}}}},
            {{"Effect":"Allow","Action":"s3:PutObject","Resource":"*","Condition":{{"ArnNotLike":{{"aws:PrincipalArn":"arn:aws:iam::*:user/arn*"}}}}}},
            {{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*","Condition":{{"ArnEquals":{{"aws:PrincipalArn":"arn:aws:iam::{account}:user/arnie"}}}}}},
            {{"Effect":"Allow","Action":"s3:GetBucketLocation","Resource":"*","Condition":{{"ArnNotEquals":{{"aws:PrincipalArn":"arn:aws:iam::{account}:user/arnie"}}}}}},
            {{"Effect":"Allow","Action":"s3:GetObjectTagging","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalAccount":"{account}"}}}}}}]}}"#
    );
    let arnie = user(&r, "arnie", &[&arn_policy], &[], &[]);
    let whoami = user(
        &r,
        "whoami",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"StringEquals":{"aws:username":"whoami"}}},
            {"Effect":"Allow","Action":"s3:PutObject","Resource":"*","Condition":{"StringEquals":{"aws:username":"someoneelse"}}},
            {"Effect":"Allow","Action":"s3:ListBucket","Resource":"*","Condition":{"StringLike":{"aws:userid":"AIDA*"}}},
            {"Effect":"Allow","Action":"s3:DeleteObject","Resource":"*","Condition":{"StringNotEqualsIgnoreCase":{"aws:username":"WHOAMI"}}},
            {"Effect":"Allow","Action":"s3:GetObjectTagging","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"aws:username":"WHOAMI"}}},
            {"Effect":"Allow","Action":"s3:GetObjectAcl","Resource":"*","Condition":{"StringNotLike":{"aws:username":"who*"}}},
            {"Effect":"Allow","Action":"s3:GetBucketAcl","Resource":"*","Condition":{"StringNotEquals":{"aws:username":"nobody"}}},
            {"Effect":"Allow","Action":"s3:GetBucketCors","Resource":"*","Condition":{"NumericGreaterThan":{"s3:max-keys":"1"}}},
            {"Effect":"Allow","Action":"s3:GetBucketLifecycleConfiguration","Resource":"*"}]}"#],
        &[],
        &[],
    );
    let locker = user(
        &r,
        "locker",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["s3:PutObject","s3:GetObject","s3:GetObjectRetention"],"Resource":"arn:aws:s3:::locked/*"},
            {"Effect":"Allow","Action":"s3:PutObjectRetention","Resource":"arn:aws:s3:::locked/*",
             "Condition":{"StringEqualsIfExists":{"s3:object-lock-mode":"GOVERNANCE"},
                          "NumericLessThanEqualsIfExists":{"s3:object-lock-remaining-retention-days":"30"}}},
            {"Effect":"Allow","Action":"s3:PutObjectLegalHold","Resource":"arn:aws:s3:::locked/*",
             "Condition":{"StringEqualsIfExists":{"s3:object-lock-legal-hold":"OFF"}}},
            {"Effect":"Deny","Action":"s3:BypassGovernanceRetention","Resource":"*"}]}"#],
        &[],
        &[],
    );
    let sse = user(
        &r,
        "sse",
        &[r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:PutObject","Resource":"*"},
            {"Effect":"Deny","Action":"s3:PutObject","Resource":"*",
             "Condition":{"StringNotEqualsIfExists":{"s3:x-amz-server-side-encryption":"AES256"}}}]}"#],
        &[],
        &[],
    );
    // Group membership: an inline group policy and a customer managed policy on the group.
    iam_call(
        &r,
        "iam",
        &[("Action", "CreateGroup"), ("GroupName", "devs")],
    );
    iam_call(
        &r,
        "iam",
        &[
            ("Action", "PutGroupPolicy"),
            ("GroupName", "devs"),
            ("PolicyName", "shared-read"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::shared/shared/*"}}"#,
            ),
        ],
    );
    let managed = iam_call(
        &r,
        "iam",
        &[
            ("Action", "CreatePolicy"),
            ("PolicyName", "ListShared"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::shared"}}"#,
            ),
        ],
    );
    iam_call(
        &r,
        "iam",
        &[
            ("Action", "AttachGroupPolicy"),
            ("GroupName", "devs"),
            ("PolicyArn", &field(&managed, "Arn")),
        ],
    );
    let grouped = user(&r, "grouped", &[], &[], &[]);
    iam_call(
        &r,
        "iam",
        &[
            ("Action", "AddUserToGroup"),
            ("GroupName", "devs"),
            ("UserName", "grouped"),
        ],
    );

    // Bucket policies: a public website bucket with its public access block removed, and
    // one whose public policy RestrictPublicBuckets neutralizes.
    for b in ["pubsite", "restricted"] {
        root.create_bucket().bucket(b).send().await.unwrap();
        root.put_object()
            .bucket(b)
            .key("index.html")
            .body(ByteStream::from_static(b"<h1>hi</h1>"))
            .send()
            .await
            .unwrap();
        root.put_object()
            .bucket(b)
            .key("keep/a")
            .body(ByteStream::from_static(b"keep"))
            .send()
            .await
            .unwrap();
    }
    root.delete_public_access_block()
        .bucket("pubsite")
        .send()
        .await
        .unwrap();
    root.put_public_access_block()
        .bucket("restricted")
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_policy(false)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let partner = user(&r, "partner", &[], &[], &[]);
    let site_policy = |b: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[
            {{"Sid":"PublicRead","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{b}/*"}},
            {{"Sid":"KeepForever","Effect":"Deny","Principal":"*","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::{b}/keep/*"}},
            {{"Sid":"PartnerDrop","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:user/partner"}},"Action":"s3:PutObject","Resource":"arn:aws:s3:::{b}/in/*"}},
            {{"Sid":"AccountList","Effect":"Allow","Principal":{{"AWS":"{account}"}},"Action":"s3:ListBucket","Resource":"arn:aws:s3:::{b}"}}]}}"#
        )
    };
    for b in ["pubsite", "restricted"] {
        root.put_bucket_policy()
            .bucket(b)
            .policy(site_policy(b))
            .send()
            .await
            .unwrap();
    }
    // BlockPublicPolicy (on by default) refuses a public policy outright.
    let refused = root
        .put_bucket_policy()
        .bucket("shared")
        .policy(site_policy("shared"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("AccessDenied"));
    let status = root
        .get_bucket_policy_status()
        .bucket("pubsite")
        .send()
        .await
        .unwrap();
    assert_eq!(
        status.policy_status().and_then(|s| s.is_public()),
        Some(true)
    );

    // Anonymous requests, as a browser or curl sends them.
    let anon = |method: &str, path: &str| {
        let resp = raw(
            r.addr,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                r.addr
            ),
        );
        assert!(resp.status < 500, "{method} {path}: {}", resp.status);
        if resp.status == 403 { Deny } else { Allow }
    };
    let anon_rows: Vec<(&str, &str, D)> = vec![
        ("GET", "/pubsite/index.html", Allow),
        ("HEAD", "/pubsite/index.html", Allow),
        ("GET", "/pubsite/keep/a", Allow),
        ("PUT", "/pubsite/new.html", Deny),
        ("DELETE", "/pubsite/index.html", Deny),
        ("GET", "/pubsite?list-type=2", Deny),
        ("GET", "/pubsite?acl", Deny),
        ("GET", "/restricted/index.html", Deny),
        ("GET", "/shared/public.txt", Deny),
        ("GET", "/", Deny),
        ("PUT", "/anon-bucket", Deny),
    ];
    let mut failures = Vec::new();
    for (method, path, want) in &anon_rows {
        let got = anon(method, path);
        if got != *want {
            failures.push(format!(
                "anonymous {method} {path}: want {want:?}, got {got:?}"
            ));
        }
    }

    use Op::*;
    let mut rows: Vec<(&str, &Client, Op, D)> = Vec::new();
    for op in every_operation() {
        rows.push(("admin", &admin, op.clone(), Allow));
        rows.push(("nobody", &nobody, op, Deny));
    }
    let more: Vec<(&str, &Client, Op, D)> = vec![
        // AWS managed read-only policy: Get*/List* only.
        ("reader", &reader, ListBuckets, Allow),
        ("reader", &reader, Get("shared", "private.txt"), Allow),
        ("reader", &reader, GetVersion("shared", "public.txt"), Allow),
        ("reader", &reader, ListVersions("shared", None), Allow),
        (
            "reader",
            &reader,
            GetObjectTagging("shared", "public.txt"),
            Allow,
        ),
        ("reader", &reader, Put("shared", "scratch/r"), Deny),
        ("reader", &reader, Delete("shared", "scratch/r"), Deny),
        ("reader", &reader, PutBucketTagging("shared"), Deny),
        ("reader", &reader, CreateBucket("reader-bucket"), Deny),
        // Policy variables: a home folder per user.
        (
            "alice",
            &alice,
            ListV2 {
                b: "shared",
                prefix: Some("home/alice/"),
                delimiter: Some("/"),
                max_keys: None,
            },
            Allow,
        ),
        (
            "alice",
            &alice,
            ListV2 {
                b: "shared",
                prefix: Some("home/"),
                delimiter: Some("/"),
                max_keys: None,
            },
            Allow,
        ),
        (
            "alice",
            &alice,
            ListV2 {
                b: "shared",
                prefix: None,
                delimiter: Some("/"),
                max_keys: None,
            },
            Deny,
        ),
        (
            "alice",
            &alice,
            ListV2 {
                b: "shared",
                prefix: Some("home/bob/"),
                delimiter: None,
                max_keys: None,
            },
            Deny,
        ),
        ("alice", &alice, Get("shared", "home/alice/a.txt"), Allow),
        ("alice", &alice, Get("shared", "home/bob/b.txt"), Deny),
        ("alice", &alice, Put("shared", "home/alice/new.txt"), Allow),
        ("alice", &alice, Put("shared", "home/bob/new.txt"), Deny),
        (
            "alice",
            &alice,
            Delete("shared", "home/alice/new.txt"),
            Allow,
        ),
        (
            "alice",
            &alice,
            DeleteMany("shared", "home/alice/gone.txt"),
            Allow,
        ),
        (
            "alice",
            &alice,
            DeleteMany("shared", "home/bob/b.txt"),
            Deny,
        ),
        (
            "alice",
            &alice,
            GetObjectAcl("shared", "home/alice/a.txt"),
            Deny,
        ),
        (
            "alice",
            &alice,
            GetVersion("shared", "home/alice/a.txt"),
            Deny,
        ),
        // Explicit deny wins over AdministratorAccess; NotResource and NotAction.
        ("denier", &denier, Get("shared", "public.txt"), Allow),
        ("denier", &denier, Delete("shared", "data/x"), Deny),
        ("denier", &denier, DeleteMany("shared", "data/x"), Deny),
        ("denier", &denier, DeleteBucket("shared"), Deny),
        ("denier", &denier, Put("shared", "data/new"), Allow),
        ("denier", &denier, Put("shared", "other/new"), Deny),
        ("denier", &denier, PutBucketTagging("shared"), Deny),
        ("denier", &denier, ListVersions("shared", None), Allow),
        ("denier", &denier, PutRetention("locked", "l", false), Deny),
        // Version-specific actions are separate from the plain ones.
        ("versioner", &versioner, Get("shared", "public.txt"), Allow),
        (
            "versioner",
            &versioner,
            GetVersion("shared", "public.txt"),
            Deny,
        ),
        ("versioner", &versioner, Head("shared", "public.txt"), Allow),
        (
            "versioner",
            &versioner,
            HeadVersion("shared", "public.txt"),
            Deny,
        ),
        ("versioner", &versioner, HeadBucket("shared"), Allow),
        ("versioner", &versioner, ListObjects("shared"), Allow),
        ("versioner", &versioner, ListVersions("shared", None), Deny),
        (
            "versioner",
            &versioner,
            Delete("shared", "scratch/v"),
            Allow,
        ),
        (
            "versioner",
            &versioner,
            DeleteVersion("shared", "scratch/v"),
            Deny,
        ),
        (
            "versioner",
            &versioner,
            PutObjectTagging("shared", "scratch/v"),
            Allow,
        ),
        ("versioner", &versioner, Put("shared", "scratch/v"), Deny),
        (
            "versioner",
            &versioner,
            GetObjectTagging("shared", "public.txt"),
            Deny,
        ),
        // Request and existing object tags.
        (
            "tagger",
            &tagger,
            PutTagged("shared", "scratch/t1", "team=red"),
            Allow,
        ),
        (
            "tagger",
            &tagger,
            PutTagged("shared", "scratch/t2", "team=red&env=prod"),
            Allow,
        ),
        (
            "tagger",
            &tagger,
            PutTagged("shared", "scratch/t3", "team=blue"),
            Deny,
        ),
        (
            "tagger",
            &tagger,
            PutTagged("shared", "scratch/t4", "team=red&cost=1"),
            Deny,
        ),
        ("tagger", &tagger, Put("shared", "scratch/t5"), Deny),
        ("tagger", &tagger, Get("shared", "public.txt"), Allow),
        ("tagger", &tagger, Get("shared", "private.txt"), Deny),
        ("tagger", &tagger, Get("shared", "data/x"), Deny),
        (
            "tagger",
            &tagger,
            GetObjectTagging("shared", "public.txt"),
            Allow,
        ),
        (
            "tagger",
            &tagger,
            GetObjectTagging("shared", "private.txt"),
            Deny,
        ),
        (
            "tagger",
            &tagger,
            GetObjectTagging("shared", "data/x"),
            Allow,
        ),
        (
            "anytag",
            &anytag,
            PutTagged("shared", "scratch/a1", "environment=prod"),
            Allow,
        ),
        (
            "anytag",
            &anytag,
            PutTagged("shared", "scratch/a2", "team=x&env=dev"),
            Allow,
        ),
        (
            "anytag",
            &anytag,
            PutTagged("shared", "scratch/a3", "team=x"),
            Deny,
        ),
        ("anytag", &anytag, Put("shared", "scratch/a4"), Deny),
        // s3:max-keys, s3:delimiter, s3:prefix with Numeric, IfExists and Null.
        (
            "lister",
            &lister,
            ListV2 {
                b: "shared",
                prefix: None,
                delimiter: None,
                max_keys: Some(10),
            },
            Allow,
        ),
        (
            "lister",
            &lister,
            ListV2 {
                b: "shared",
                prefix: None,
                delimiter: None,
                max_keys: Some(11),
            },
            Deny,
        ),
        (
            "lister",
            &lister,
            ListV2 {
                b: "shared",
                prefix: None,
                delimiter: Some("/"),
                max_keys: Some(5),
            },
            Allow,
        ),
        (
            "lister",
            &lister,
            ListV2 {
                b: "shared",
                prefix: None,
                delimiter: Some("-"),
                max_keys: Some(5),
            },
            Deny,
        ),
        (
            "lister",
            &lister,
            ListV2 {
                b: "shared",
                prefix: None,
                delimiter: None,
                max_keys: None,
            },
            Deny,
        ),
        (
            "lister",
            &lister,
            ListVersions("shared", Some("home/")),
            Allow,
        ),
        ("lister", &lister, ListVersions("shared", None), Deny),
        // aws:SourceIp (tests connect from 127.0.0.1).
        ("net", &net, Get("shared", "public.txt"), Allow),
        ("net", &net, Put("shared", "scratch/n"), Deny),
        ("net", &net, ListObjects("shared"), Allow),
        ("net", &net, Delete("shared", "scratch/n"), Deny),
        // aws:SecureTransport (plain HTTP here) and MFA absence.
        ("tls", &tls, Get("shared", "public.txt"), Allow),
        ("tls", &tls, Put("shared", "scratch/tls"), Deny),
        ("tls", &tls, Delete("shared", "scratch/tls"), Deny),
        ("tls", &tls, PutBucketTagging("shared"), Deny),
        ("tls", &tls, GetBucketTagging("shared"), Allow),
        // Date operators on aws:CurrentTime and aws:EpochTime.
        ("clock", &clock, Get("shared", "public.txt"), Deny),
        ("clock", &clock, ListObjects("shared"), Allow),
        ("clock", &clock, GetBucketLocation("shared"), Allow),
        ("clock", &clock, GetVersioning("shared"), Deny),
        ("clock", &clock, GetBucketTagging("shared"), Allow),
        ("clock", &clock, GetBucketAcl("shared"), Deny),
        // aws:PrincipalTag in a condition and as a policy variable in Resource.
        ("engineer", &engineer, Get("eng-data", "k"), Allow),
        ("engineer", &engineer, Get("ops-data", "k"), Deny),
        ("engineer", &engineer, Put("eng-data", "k2"), Allow),
        ("engineer", &engineer, ListObjects("ops-data"), Deny),
        ("engineer", &engineer, ListBuckets, Allow),
        ("engineer", &engineer, GetBucketLocation("ops-data"), Deny),
        // ARN operators on aws:PrincipalArn; aws:PrincipalAccount.
        ("arnie", &arnie, Get("shared", "public.txt"), Allow),
        ("arnie", &arnie, Put("shared", "scratch/arn"), Deny),
        ("arnie", &arnie, ListObjects("shared"), Allow),
        ("arnie", &arnie, GetBucketLocation("shared"), Deny),
        (
            "arnie",
            &arnie,
            GetObjectTagging("shared", "public.txt"),
            Allow,
        ),
        // aws:username and aws:userid with the string operators.
        ("whoami", &whoami, Get("shared", "public.txt"), Allow),
        ("whoami", &whoami, Put("shared", "scratch/w"), Deny),
        ("whoami", &whoami, ListObjects("shared"), Allow),
        ("whoami", &whoami, Delete("shared", "scratch/w"), Deny),
        (
            "whoami",
            &whoami,
            GetObjectTagging("shared", "public.txt"),
            Allow,
        ),
        (
            "whoami",
            &whoami,
            GetObjectAcl("shared", "public.txt"),
            Deny,
        ),
        ("whoami", &whoami, GetBucketAcl("shared"), Allow),
        ("whoami", &whoami, GetCors("shared"), Deny),
        ("whoami", &whoami, GetLifecycle("shared"), Deny),
        // Object Lock condition keys and BypassGovernanceRetention.
        (
            "locker",
            &locker,
            PutLocked("locked", "g10", "GOVERNANCE", 10),
            Allow,
        ),
        (
            "locker",
            &locker,
            PutLocked("locked", "c10", "COMPLIANCE", 10),
            Deny,
        ),
        (
            "locker",
            &locker,
            PutLocked("locked", "g60", "GOVERNANCE", 60),
            Deny,
        ),
        ("locker", &locker, Put("locked", "plain"), Allow),
        ("locker", &locker, PutLegalHoldOn("locked", "held"), Deny),
        ("locker", &locker, PutRetention("locked", "l", false), Allow),
        ("locker", &locker, PutRetention("locked", "l", true), Deny),
        ("locker", &locker, GetRetention("locked", "l"), Allow),
        ("locker", &locker, GetLegalHold("locked", "l"), Deny),
        ("locker", &locker, Delete("locked", "plain"), Deny),
        // s3:x-amz-server-side-encryption: the required-encryption policy shape.
        ("sse", &sse, PutSse("shared", "scratch/s1", "AES256"), Allow),
        ("sse", &sse, PutSse("shared", "scratch/s2", "aws:kms"), Deny),
        // IfExists makes a missing key true, so the Deny applies to unencrypted PUTs too.
        ("sse", &sse, Put("shared", "scratch/s3"), Deny),
        // Policies reached through a group: inline and customer managed.
        ("grouped", &grouped, Get("shared", "shared/s.txt"), Allow),
        ("grouped", &grouped, Get("shared", "public.txt"), Deny),
        ("grouped", &grouped, ListObjects("shared"), Allow),
        ("grouped", &grouped, ListObjects("eng-data"), Deny),
        ("grouped", &grouped, Put("shared", "shared/new"), Deny),
        // Bucket policy grants and denies, for users and for root.
        ("partner", &partner, Put("pubsite", "in/drop"), Allow),
        ("partner", &partner, Put("pubsite", "out/drop"), Deny),
        ("partner", &partner, Get("pubsite", "index.html"), Allow),
        ("partner", &partner, Get("shared", "public.txt"), Deny),
        ("partner", &partner, Put("restricted", "in/drop"), Allow),
        ("partner", &partner, ListObjects("pubsite"), Deny),
        ("nobody", &nobody, ListObjects("pubsite"), Deny),
        ("reader", &reader, ListObjects("pubsite"), Allow),
        ("root", &root, Delete("pubsite", "keep/a"), Deny),
        ("root", &root, DeleteMany("pubsite", "keep/a"), Deny),
        ("root", &root, Delete("pubsite", "in/drop"), Allow),
        ("admin", &admin, Delete("pubsite", "keep/a"), Deny),
        ("admin", &admin, Get("pubsite", "keep/a"), Allow),
        ("root", &root, GetPolicy("pubsite"), Allow),
        // Copy needs read on the source as well as write on the target.
        (
            "alice",
            &alice,
            Copy("shared", "home/alice/copy", "shared/home/alice/a.txt"),
            Allow,
        ),
        (
            "alice",
            &alice,
            Copy("shared", "home/alice/copy2", "shared/public.txt"),
            Deny,
        ),
        (
            "denier",
            &denier,
            Copy("shared", "data/copy", "shared/public.txt"),
            Allow,
        ),
        (
            "denier",
            &denier,
            Copy("shared", "other/copy", "shared/public.txt"),
            Deny,
        ),
    ];
    rows.extend(more);
    assert!(
        rows.len() + anon_rows.len() >= 150,
        "the matrix has {} rows",
        rows.len()
    );

    for (who, client, op, want) in &rows {
        let got = run(client, op, &fx).await;
        if got != *want {
            failures.push(format!("{who:>9} {op:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    // Denials changed nothing: the objects others could not touch are intact.
    let body = root
        .get_object()
        .bucket("shared")
        .key("home/bob/b.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        body.body.collect().await.unwrap().into_bytes().as_ref(),
        b"fixture"
    );
    assert!(
        root.head_object()
            .bucket("shared")
            .key("other/new")
            .send()
            .await
            .is_err()
    );
    assert!(
        root.head_object()
            .bucket("shared")
            .key("data/new")
            .send()
            .await
            .is_ok()
    );
}

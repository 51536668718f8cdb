//! The operations of the matrix: each S3 operation the server implements, how it is sent on
//! the shared fixture, and how its answer reads as Allow or Deny.

use super::*;

/// Ids the fixture created that some operations need.
pub(super) struct Fixture {
    pub(super) version_of_public: String,
    pub(super) upload_id: String,
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    ListBuckets,
    CreateBucket(&'static str),
    DeleteBucket(&'static str),
    HeadBucket(&'static str),
    GetBucketLocation(&'static str),
    ListObjects(&'static str),
    ListV2 {
        b: &'static str,
        prefix: Option<&'static str>,
        delimiter: Option<&'static str>,
        max_keys: Option<i32>,
    },
    ListVersions(&'static str, Option<&'static str>),
    ListUploads(&'static str),
    GetVersioning(&'static str),
    PutVersioning(&'static str),
    GetBucketAcl(&'static str),
    PutBucketAcl(&'static str),
    GetCors(&'static str),
    PutCors(&'static str),
    DeleteCors(&'static str),
    GetLifecycle(&'static str),
    PutLifecycle(&'static str),
    DeleteLifecycle(&'static str),
    GetBucketTagging(&'static str),
    PutBucketTagging(&'static str),
    DeleteBucketTagging(&'static str),
    GetNotification(&'static str),
    PutNotification(&'static str),
    GetPolicy(&'static str),
    GetPolicyStatus(&'static str),
    GetPublicAccessBlock(&'static str),
    GetEncryption(&'static str),
    GetLockConfig(&'static str),
    PutLockConfig(&'static str),
    Put(&'static str, &'static str),
    PutTagged(&'static str, &'static str, &'static str),
    PutSse(&'static str, &'static str, &'static str),
    PutLocked(&'static str, &'static str, &'static str, i64),
    PutLegalHoldOn(&'static str, &'static str),
    Get(&'static str, &'static str),
    GetVersion(&'static str, &'static str),
    Head(&'static str, &'static str),
    HeadVersion(&'static str, &'static str),
    Delete(&'static str, &'static str),
    DeleteVersion(&'static str, &'static str),
    DeleteMany(&'static str, &'static str),
    Copy(&'static str, &'static str, &'static str),
    GetObjectAcl(&'static str, &'static str),
    PutObjectAcl(&'static str, &'static str),
    GetObjectTagging(&'static str, &'static str),
    PutObjectTagging(&'static str, &'static str),
    DeleteObjectTagging(&'static str, &'static str),
    GetRetention(&'static str, &'static str),
    PutRetention(&'static str, &'static str, bool),
    GetLegalHold(&'static str, &'static str),
    PutLegalHold(&'static str, &'static str),
    CreateUpload(&'static str, &'static str),
    UploadPart(&'static str, &'static str),
    UploadPartCopy(&'static str, &'static str, &'static str),
    Complete(&'static str, &'static str),
    Abort(&'static str, &'static str),
    ListParts(&'static str, &'static str),
}

macro_rules! outcome {
    ($e:expr) => {
        match $e.await {
            Ok(_) => Allow,
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                decide(status, e.code(), e.message())
            }
        }
    };
}

fn decide(status: Option<u16>, code: Option<&str>, message: Option<&str>) -> D {
    match status {
        Some(403) => {
            // HEAD has no body; every other denial must be the policy's, not Object Lock's.
            if let Some(m) = message {
                assert!(
                    m.contains("not authorized") || m == "Access Denied",
                    "403 for another reason: {code:?} {m}"
                );
            }
            Deny
        }
        Some(s) if s >= 500 => panic!("server error {s}: {code:?} {message:?}"),
        Some(_) => Allow,
        None => panic!("no response: {code:?} {message:?}"),
    }
}

pub(super) async fn run(c: &Client, op: &Op, fx: &Fixture) -> D {
    use Op::*;
    match op.clone() {
        ListBuckets => outcome!(c.list_buckets().send()),
        CreateBucket(b) => outcome!(c.create_bucket().bucket(b).send()),
        DeleteBucket(b) => outcome!(c.delete_bucket().bucket(b).send()),
        HeadBucket(b) => outcome!(c.head_bucket().bucket(b).send()),
        GetBucketLocation(b) => outcome!(c.get_bucket_location().bucket(b).send()),
        ListObjects(b) => outcome!(c.list_objects().bucket(b).send()),
        ListV2 {
            b,
            prefix,
            delimiter,
            max_keys,
        } => outcome!(
            c.list_objects_v2()
                .bucket(b)
                .set_prefix(prefix.map(Into::into))
                .set_delimiter(delimiter.map(Into::into))
                .set_max_keys(max_keys)
                .send()
        ),
        ListVersions(b, prefix) => outcome!(
            c.list_object_versions()
                .bucket(b)
                .set_prefix(prefix.map(Into::into))
                .send()
        ),
        ListUploads(b) => outcome!(c.list_multipart_uploads().bucket(b).send()),
        GetVersioning(b) => outcome!(c.get_bucket_versioning().bucket(b).send()),
        PutVersioning(b) => outcome!(
            c.put_bucket_versioning()
                .bucket(b)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build()
                )
                .send()
        ),
        GetBucketAcl(b) => outcome!(c.get_bucket_acl().bucket(b).send()),
        PutBucketAcl(b) => outcome!(
            c.put_bucket_acl()
                .bucket(b)
                .acl(BucketCannedAcl::Private)
                .send()
        ),
        GetCors(b) => outcome!(c.get_bucket_cors().bucket(b).send()),
        PutCors(b) => outcome!(
            c.put_bucket_cors()
                .bucket(b)
                .cors_configuration(
                    CorsConfiguration::builder()
                        .cors_rules(
                            CorsRule::builder()
                                .allowed_methods("GET")
                                .allowed_origins("*")
                                .build()
                                .unwrap()
                        )
                        .build()
                        .unwrap()
                )
                .send()
        ),
        DeleteCors(b) => outcome!(c.delete_bucket_cors().bucket(b).send()),
        GetLifecycle(b) => outcome!(c.get_bucket_lifecycle_configuration().bucket(b).send()),
        PutLifecycle(b) => outcome!(
            c.put_bucket_lifecycle_configuration()
                .bucket(b)
                .lifecycle_configuration(
                    BucketLifecycleConfiguration::builder()
                        .rules(
                            LifecycleRule::builder()
                                .id("r")
                                .status(ExpirationStatus::Enabled)
                                .filter(LifecycleRuleFilter::builder().prefix("tmp/").build())
                                .expiration(LifecycleExpiration::builder().days(3650).build())
                                .build()
                                .unwrap()
                        )
                        .build()
                        .unwrap()
                )
                .send()
        ),
        DeleteLifecycle(b) => outcome!(c.delete_bucket_lifecycle().bucket(b).send()),
        GetBucketTagging(b) => outcome!(c.get_bucket_tagging().bucket(b).send()),
        PutBucketTagging(b) => outcome!(
            c.put_bucket_tagging()
                .bucket(b)
                .tagging(tagging("a", "b"))
                .send()
        ),
        DeleteBucketTagging(b) => outcome!(c.delete_bucket_tagging().bucket(b).send()),
        GetNotification(b) => outcome!(c.get_bucket_notification_configuration().bucket(b).send()),
        PutNotification(b) => outcome!(
            c.put_bucket_notification_configuration()
                .bucket(b)
                .notification_configuration(NotificationConfiguration::builder().build())
                .send()
        ),
        GetPolicy(b) => outcome!(c.get_bucket_policy().bucket(b).send()),
        GetPolicyStatus(b) => outcome!(c.get_bucket_policy_status().bucket(b).send()),
        GetPublicAccessBlock(b) => outcome!(c.get_public_access_block().bucket(b).send()),
        GetEncryption(b) => outcome!(c.get_bucket_encryption().bucket(b).send()),
        GetLockConfig(b) => outcome!(c.get_object_lock_configuration().bucket(b).send()),
        PutLockConfig(b) => outcome!(
            c.put_object_lock_configuration()
                .bucket(b)
                .object_lock_configuration(
                    ObjectLockConfiguration::builder()
                        .object_lock_enabled(ObjectLockEnabled::Enabled)
                        .build()
                )
                .send()
        ),
        Put(b, k) => outcome!(
            c.put_object()
                .bucket(b)
                .key(k)
                .body(ByteStream::from_static(b"x"))
                .send()
        ),
        PutTagged(b, k, t) => outcome!(
            c.put_object()
                .bucket(b)
                .key(k)
                .tagging(t)
                .body(ByteStream::from_static(b"x"))
                .send()
        ),
        PutSse(b, k, sse) => outcome!(
            c.put_object()
                .bucket(b)
                .key(k)
                .server_side_encryption(ServerSideEncryption::from(sse))
                .body(ByteStream::from_static(b"x"))
                .send()
        ),
        PutLocked(b, k, mode, days) => outcome!(
            c.put_object()
                .bucket(b)
                .key(k)
                .object_lock_mode(ObjectLockMode::from(mode))
                .object_lock_retain_until_date(in_days(days))
                .body(ByteStream::from_static(b"x"))
                .send()
        ),
        PutLegalHoldOn(b, k) => outcome!(
            c.put_object()
                .bucket(b)
                .key(k)
                .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
                .body(ByteStream::from_static(b"x"))
                .send()
        ),
        Get(b, k) => outcome!(c.get_object().bucket(b).key(k).send()),
        GetVersion(b, k) => outcome!(
            c.get_object()
                .bucket(b)
                .key(k)
                .version_id(&fx.version_of_public)
                .send()
        ),
        Head(b, k) => outcome!(c.head_object().bucket(b).key(k).send()),
        HeadVersion(b, k) => outcome!(
            c.head_object()
                .bucket(b)
                .key(k)
                .version_id(&fx.version_of_public)
                .send()
        ),
        Delete(b, k) => outcome!(c.delete_object().bucket(b).key(k).send()),
        DeleteVersion(b, k) => outcome!(
            c.delete_object()
                .bucket(b)
                .key(k)
                .version_id("0000000000000000000000000000aaaa")
                .send()
        ),
        DeleteMany(b, k) => {
            let out = c
                .delete_objects()
                .bucket(b)
                .delete(
                    aws_sdk_s3::types::Delete::builder()
                        .objects(ObjectIdentifier::builder().key(k).build().unwrap())
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .expect("DeleteObjects itself needs only a signature");
            if out
                .errors()
                .iter()
                .any(|e| e.code() == Some("AccessDenied"))
            {
                Deny
            } else {
                Allow
            }
        }
        Copy(b, k, src) => outcome!(c.copy_object().bucket(b).key(k).copy_source(src).send()),
        GetObjectAcl(b, k) => outcome!(c.get_object_acl().bucket(b).key(k).send()),
        PutObjectAcl(b, k) => outcome!(
            c.put_object_acl()
                .bucket(b)
                .key(k)
                .acl(ObjectCannedAcl::Private)
                .send()
        ),
        GetObjectTagging(b, k) => outcome!(c.get_object_tagging().bucket(b).key(k).send()),
        PutObjectTagging(b, k) => outcome!(
            c.put_object_tagging()
                .bucket(b)
                .key(k)
                .tagging(tagging("public", "yes"))
                .send()
        ),
        DeleteObjectTagging(b, k) => outcome!(c.delete_object_tagging().bucket(b).key(k).send()),
        GetRetention(b, k) => outcome!(c.get_object_retention().bucket(b).key(k).send()),
        PutRetention(b, k, bypass) => outcome!(
            c.put_object_retention()
                .bucket(b)
                .key(k)
                .retention(
                    ObjectLockRetention::builder()
                        .mode(ObjectLockRetentionMode::Governance)
                        .retain_until_date(in_days(2))
                        .build()
                )
                .set_bypass_governance_retention(bypass.then_some(true))
                .send()
        ),
        GetLegalHold(b, k) => outcome!(c.get_object_legal_hold().bucket(b).key(k).send()),
        PutLegalHold(b, k) => outcome!(
            c.put_object_legal_hold()
                .bucket(b)
                .key(k)
                .legal_hold(
                    ObjectLockLegalHold::builder()
                        .status(ObjectLockLegalHoldStatus::Off)
                        .build()
                )
                .send()
        ),
        CreateUpload(b, k) => outcome!(c.create_multipart_upload().bucket(b).key(k).send()),
        UploadPart(b, k) => outcome!(
            c.upload_part()
                .bucket(b)
                .key(k)
                .upload_id(&fx.upload_id)
                .part_number(1)
                .body(ByteStream::from_static(b"part"))
                .send()
        ),
        UploadPartCopy(b, k, src) => outcome!(
            c.upload_part_copy()
                .bucket(b)
                .key(k)
                .upload_id(&fx.upload_id)
                .part_number(2)
                .copy_source(src)
                .send()
        ),
        Complete(b, k) => outcome!(
            c.complete_multipart_upload()
                .bucket(b)
                .key(k)
                .upload_id("no-such-upload")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .parts(
                            CompletedPart::builder()
                                .part_number(1)
                                .e_tag("\"00\"")
                                .build()
                        )
                        .build()
                )
                .send()
        ),
        Abort(b, k) => outcome!(
            c.abort_multipart_upload()
                .bucket(b)
                .key(k)
                .upload_id("no-such-upload")
                .send()
        ),
        ListParts(b, k) => outcome!(
            c.list_parts()
                .bucket(b)
                .key(k)
                .upload_id(&fx.upload_id)
                .send()
        ),
    }
}

fn tagging(k: &str, v: &str) -> Tagging {
    Tagging::builder()
        .tag_set(Tag::builder().key(k).value(v).build().unwrap())
        .build()
        .unwrap()
}

/// Every S3 operation the server implements, on the shared fixture, with harmless targets.
pub(super) fn every_operation() -> Vec<Op> {
    use Op::*;
    vec![
        ListBuckets,
        CreateBucket("made-by-test"),
        DeleteBucket("no-such-bucket-here"),
        HeadBucket("shared"),
        GetBucketLocation("shared"),
        ListObjects("shared"),
        ListV2 {
            b: "shared",
            prefix: None,
            delimiter: None,
            max_keys: None,
        },
        ListVersions("shared", None),
        ListUploads("shared"),
        GetVersioning("shared"),
        PutVersioning("shared"),
        GetBucketAcl("shared"),
        PutBucketAcl("shared"),
        GetCors("shared"),
        PutCors("shared"),
        DeleteCors("shared"),
        GetLifecycle("shared"),
        PutLifecycle("shared"),
        DeleteLifecycle("shared"),
        GetBucketTagging("shared"),
        PutBucketTagging("shared"),
        DeleteBucketTagging("shared"),
        GetNotification("shared"),
        PutNotification("shared"),
        GetPolicy("shared"),
        GetPolicyStatus("shared"),
        GetPublicAccessBlock("shared"),
        GetEncryption("shared"),
        GetLockConfig("locked"),
        PutLockConfig("shared"),
        Put("shared", "scratch/put"),
        Get("shared", "public.txt"),
        GetVersion("shared", "public.txt"),
        Head("shared", "public.txt"),
        HeadVersion("shared", "public.txt"),
        Delete("shared", "scratch/none"),
        DeleteVersion("shared", "scratch/none"),
        DeleteMany("shared", "scratch/none2"),
        Copy("shared", "scratch/copy", "shared/public.txt"),
        GetObjectAcl("shared", "public.txt"),
        PutObjectAcl("shared", "public.txt"),
        GetObjectTagging("shared", "public.txt"),
        PutObjectTagging("shared", "scratch/none3"),
        DeleteObjectTagging("shared", "scratch/none3"),
        GetRetention("locked", "l"),
        PutRetention("locked", "l2", false),
        GetLegalHold("locked", "l"),
        PutLegalHold("locked", "l"),
        CreateUpload("shared", "scratch/mp"),
        UploadPart("shared", "mp"),
        UploadPartCopy("shared", "mp", "shared/public.txt"),
        Complete("shared", "mp"),
        Abort("shared", "mp"),
        ListParts("shared", "mp"),
    ]
}

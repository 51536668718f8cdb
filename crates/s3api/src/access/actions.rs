//! Which IAM actions, on which resources, each S3 operation needs: the table AWS documents,
//! including what a request's headers add (tags, retention, legal hold, ACLs, a copy's source).

use http::HeaderMap;

pub fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

pub fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

fn has_query(query: &str, name: &str) -> bool {
    query_value(query, name).is_some()
}

pub(super) fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| feiyun_iam::sigv4::percent_decode(&v.replace('+', " ")))
    })
}

pub(super) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn is_replica(h: &HeaderMap) -> bool {
    h.contains_key(feiyun_oss::replication::REPLICA_VERSION_HEADER)
}

/// The IAM actions (with their resources) an S3 operation needs; all must be allowed.
pub fn required_actions(
    op: &str,
    bucket: Option<&str>,
    key: Option<&str>,
    headers: &HeaderMap,
    query: &str,
) -> Vec<(&'static str, String)> {
    let b = bucket.map(bucket_arn).unwrap_or_else(|| "*".into());
    let o = match (bucket, key) {
        (Some(bk), Some(k)) => object_arn(bk, k),
        _ => b.clone(),
    };
    let versioned = has_query(query, "versionId");
    let v = |plain: &'static str, version: &'static str| if versioned { version } else { plain };
    let mut out: Vec<(&'static str, String)> = Vec::new();
    match op {
        "ListBuckets" => out.push(("s3:ListAllMyBuckets", "*".into())),
        "CreateBucket" => {
            out.push(("s3:CreateBucket", b.clone()));
            if header(headers, "x-amz-bucket-object-lock-enabled")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                out.push(("s3:PutBucketObjectLockConfiguration", b.clone()));
                out.push(("s3:PutBucketVersioning", b.clone()));
            }
        }
        "DeleteBucket" => out.push(("s3:DeleteBucket", b)),
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => out.push(("s3:ListBucket", b)),
        "ListObjectVersions" => out.push(("s3:ListBucketVersions", b)),
        "ListMultipartUploads" => out.push(("s3:ListBucketMultipartUploads", b)),
        "GetBucketLocation" => out.push(("s3:GetBucketLocation", b)),
        "GetBucketVersioning" => out.push(("s3:GetBucketVersioning", b)),
        "PutBucketVersioning" => out.push(("s3:PutBucketVersioning", b)),
        "GetBucketAcl" => out.push(("s3:GetBucketAcl", b)),
        "PutBucketAcl" => out.push(("s3:PutBucketAcl", b)),
        "GetBucketCors" => out.push(("s3:GetBucketCORS", b)),
        "PutBucketCors" | "DeleteBucketCors" => out.push(("s3:PutBucketCORS", b)),
        "GetBucketLifecycleConfiguration" => out.push(("s3:GetLifecycleConfiguration", b)),
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => {
            out.push(("s3:PutLifecycleConfiguration", b))
        }
        "GetBucketReplication" => out.push(("s3:GetReplicationConfiguration", b)),
        "PutBucketReplication" | "DeleteBucketReplication" => {
            out.push(("s3:PutReplicationConfiguration", b))
        }
        "GetBucketTagging" => out.push(("s3:GetBucketTagging", b)),
        "PutBucketTagging" | "DeleteBucketTagging" => out.push(("s3:PutBucketTagging", b)),
        "GetBucketNotificationConfiguration" => out.push(("s3:GetBucketNotification", b)),
        "PutBucketNotificationConfiguration" => out.push(("s3:PutBucketNotification", b)),
        "GetBucketPolicy" => out.push(("s3:GetBucketPolicy", b)),
        "PutBucketPolicy" => out.push(("s3:PutBucketPolicy", b)),
        "DeleteBucketPolicy" => out.push(("s3:DeleteBucketPolicy", b)),
        "GetBucketPolicyStatus" => out.push(("s3:GetBucketPolicyStatus", b)),
        "GetPublicAccessBlock" => out.push(("s3:GetBucketPublicAccessBlock", b)),
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => {
            out.push(("s3:PutBucketPublicAccessBlock", b))
        }
        "GetBucketEncryption" => out.push(("s3:GetEncryptionConfiguration", b)),
        "PutBucketEncryption" | "DeleteBucketEncryption" => {
            out.push(("s3:PutEncryptionConfiguration", b))
        }
        "GetObjectLockConfiguration" => out.push(("s3:GetBucketObjectLockConfiguration", b)),
        "PutObjectLockConfiguration" => out.push(("s3:PutBucketObjectLockConfiguration", b)),
        "GetObject" | "HeadObject" => out.push((v("s3:GetObject", "s3:GetObjectVersion"), o)),
        "GetObjectAttributes" => out.push((
            v("s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"),
            o,
        )),
        "GetObjectAcl" => out.push((v("s3:GetObjectAcl", "s3:GetObjectVersionAcl"), o)),
        "PutObjectAcl" => out.push((v("s3:PutObjectAcl", "s3:PutObjectVersionAcl"), o)),
        "GetObjectTagging" => out.push((v("s3:GetObjectTagging", "s3:GetObjectVersionTagging"), o)),
        "PutObjectTagging" => out.push((v("s3:PutObjectTagging", "s3:PutObjectVersionTagging"), o)),
        "DeleteObjectTagging" => out.push((
            v("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),
            o,
        )),
        "GetObjectRetention" => out.push(("s3:GetObjectRetention", o)),
        "PutObjectRetention" => {
            out.push(("s3:PutObjectRetention", o.clone()));
            if bypass(headers) {
                out.push(("s3:BypassGovernanceRetention", o));
            }
        }
        "GetObjectLegalHold" => out.push(("s3:GetObjectLegalHold", o)),
        "PutObjectLegalHold" => out.push(("s3:PutObjectLegalHold", o)),
        // A peer region's replica keeps its source's version id: only replication may.
        "DeleteObject" if is_replica(headers) => out.push(("s3:ReplicateDelete", o)),
        "PutObject" | "CreateMultipartUpload" if is_replica(headers) => {
            out.push(("s3:ReplicateObject", o.clone()));
            if header(headers, "x-amz-tagging").is_some() {
                out.push(("s3:ReplicateTags", o.clone()));
            }
            put_extras(&mut out, headers, &o);
        }
        "DeleteObject" => {
            out.push((v("s3:DeleteObject", "s3:DeleteObjectVersion"), o.clone()));
            if bypass(headers) {
                out.push(("s3:BypassGovernanceRetention", o));
            }
        }
        // Each key is checked on its own inside the operation (see `Grant`); the request
        // itself needs nothing more than a signature.
        "DeleteObjects" => {}
        "PutObject" | "CreateMultipartUpload" => {
            out.push(("s3:PutObject", o.clone()));
            put_extras(&mut out, headers, &o);
        }
        // The parts of a replica's upload carry the replica header too.
        "UploadPart" | "CompleteMultipartUpload" if is_replica(headers) => {
            out.push(("s3:ReplicateObject", o))
        }
        "UploadPart" | "CompleteMultipartUpload" => out.push(("s3:PutObject", o)),
        "AbortMultipartUpload" => out.push(("s3:AbortMultipartUpload", o)),
        "ListParts" => out.push(("s3:ListMultipartUploadParts", o)),
        "CopyObject" | "UploadPartCopy" => {
            out.push(("s3:PutObject", o.clone()));
            if op == "CopyObject" {
                put_extras(&mut out, headers, &o);
            }
            if let Some((src, src_versioned)) =
                header(headers, "x-amz-copy-source").and_then(copy_source)
            {
                out.push((
                    if src_versioned {
                        "s3:GetObjectVersion"
                    } else {
                        "s3:GetObject"
                    },
                    src,
                ));
            }
        }
        // An operation not listed is denied to everyone but root rather than allowed by
        // accident; `s3:*` does not reach it either.
        other => out.push(("s3:UnmappedOperation", format!("{b}#{other}"))),
    }
    out
}

fn bypass(headers: &HeaderMap) -> bool {
    header(headers, "x-amz-bypass-governance-retention")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// What a PUT or copy needs beyond `s3:PutObject` for the headers it carries.
fn put_extras(out: &mut Vec<(&'static str, String)>, headers: &HeaderMap, o: &str) {
    if headers.contains_key("x-amz-tagging") {
        out.push(("s3:PutObjectTagging", o.to_owned()));
    }
    if headers.contains_key("x-amz-object-lock-mode")
        || headers.contains_key("x-amz-object-lock-retain-until-date")
    {
        out.push(("s3:PutObjectRetention", o.to_owned()));
    }
    if headers.contains_key("x-amz-object-lock-legal-hold") {
        out.push(("s3:PutObjectLegalHold", o.to_owned()));
    }
    if header(headers, "x-amz-acl").is_some_and(|a| a != "private") {
        out.push(("s3:PutObjectAcl", o.to_owned()));
    }
}

/// `x-amz-copy-source: /bucket/key?versionId=…` → the source object's ARN and whether a
/// version was named, parsed by the very parser the copy itself uses (s3s's), so what is
/// authorized is what is read: a key containing `?` is one key, not a key and a query. A
/// header that does not parse authorizes nothing (the copy then fails on its own).
fn copy_source(v: &str) -> Option<(String, bool)> {
    match s3s::dto::CopySource::parse(v) {
        Ok(s3s::dto::CopySource::Bucket {
            bucket,
            key,
            version_id,
        }) => Some((object_arn(&bucket, &key), version_id.is_some())),
        // Access points are not served here; nothing to authorize against.
        Ok(_) | Err(_) => Some(("arn:aws:s3:::invalid-copy-source".into(), false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(
        op: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        query: &str,
    ) -> Vec<(&'static str, String)> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        required_actions(op, Some("b"), key, &h, query)
    }

    #[test]
    fn s3_operations_map_to_their_iam_actions() {
        let o = "arn:aws:s3:::b/k".to_string();
        let b = "arn:aws:s3:::b".to_string();
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            Vec<(&'a str, &'a str)>,
            &'a str,
            Vec<(&'a str, String)>,
        );
        let rows: Vec<Row> = vec![
            (
                "HeadBucket",
                None,
                vec![],
                "",
                vec![("s3:ListBucket", b.clone())],
            ),
            (
                "ListObjectsV2",
                None,
                vec![],
                "list-type=2",
                vec![("s3:ListBucket", b.clone())],
            ),
            (
                "ListObjectVersions",
                None,
                vec![],
                "versions",
                vec![("s3:ListBucketVersions", b.clone())],
            ),
            (
                "GetObject",
                Some("k"),
                vec![],
                "",
                vec![("s3:GetObject", o.clone())],
            ),
            (
                "GetObject",
                Some("k"),
                vec![],
                "versionId=abc",
                vec![("s3:GetObjectVersion", o.clone())],
            ),
            (
                "HeadObject",
                Some("k"),
                vec![],
                "versionId=abc",
                vec![("s3:GetObjectVersion", o.clone())],
            ),
            (
                "DeleteObject",
                Some("k"),
                vec![],
                "versionId=abc",
                vec![("s3:DeleteObjectVersion", o.clone())],
            ),
            (
                "DeleteObject",
                Some("k"),
                vec![("x-amz-bypass-governance-retention", "true")],
                "versionId=abc",
                vec![
                    ("s3:DeleteObjectVersion", o.clone()),
                    ("s3:BypassGovernanceRetention", o.clone()),
                ],
            ),
            (
                "PutObjectRetention",
                Some("k"),
                vec![("x-amz-bypass-governance-retention", "true")],
                "retention",
                vec![
                    ("s3:PutObjectRetention", o.clone()),
                    ("s3:BypassGovernanceRetention", o.clone()),
                ],
            ),
            (
                "PutObject",
                Some("k"),
                vec![
                    ("x-amz-tagging", "a=b"),
                    ("x-amz-object-lock-legal-hold", "ON"),
                ],
                "",
                vec![
                    ("s3:PutObject", o.clone()),
                    ("s3:PutObjectTagging", o.clone()),
                    ("s3:PutObjectLegalHold", o.clone()),
                ],
            ),
            (
                "CopyObject",
                Some("k"),
                vec![("x-amz-copy-source", "/src/a%20b?versionId=1")],
                "",
                vec![
                    ("s3:PutObject", o.clone()),
                    ("s3:GetObjectVersion", "arn:aws:s3:::src/a b".into()),
                ],
            ),
            (
                "CopyObject",
                Some("k"),
                vec![("x-amz-copy-source", "/src/x?y.key")],
                "",
                vec![
                    ("s3:PutObject", o.clone()),
                    // One key with a `?` in it, as the copy reads it.
                    ("s3:GetObject", "arn:aws:s3:::src/x?y.key".into()),
                ],
            ),
            (
                "UploadPart",
                Some("k"),
                vec![],
                "partNumber=1&uploadId=x",
                vec![("s3:PutObject", o.clone())],
            ),
            (
                "CompleteMultipartUpload",
                Some("k"),
                vec![],
                "uploadId=x",
                vec![("s3:PutObject", o.clone())],
            ),
            (
                "ListParts",
                Some("k"),
                vec![],
                "uploadId=x",
                vec![("s3:ListMultipartUploadParts", o.clone())],
            ),
            (
                "PutBucketCors",
                None,
                vec![],
                "cors",
                vec![("s3:PutBucketCORS", b.clone())],
            ),
            (
                "DeleteBucketLifecycle",
                None,
                vec![],
                "lifecycle",
                vec![("s3:PutLifecycleConfiguration", b.clone())],
            ),
            (
                "GetObjectLockConfiguration",
                None,
                vec![],
                "object-lock",
                vec![("s3:GetBucketObjectLockConfiguration", b.clone())],
            ),
            (
                "CreateBucket",
                None,
                vec![("x-amz-bucket-object-lock-enabled", "true")],
                "",
                vec![
                    ("s3:CreateBucket", b.clone()),
                    ("s3:PutBucketObjectLockConfiguration", b.clone()),
                    ("s3:PutBucketVersioning", b.clone()),
                ],
            ),
        ];
        for (op, key, headers, query, want) in rows {
            assert_eq!(actions(op, key, &headers, query), want, "{op} {query}");
        }
        assert_eq!(
            required_actions("ListBuckets", None, None, &HeaderMap::new(), ""),
            vec![("s3:ListAllMyBuckets", "*".to_string())]
        );
    }
}

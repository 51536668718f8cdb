//! The one place where service errors become S3 errors (code, status, message).

use feiyun_oss::OssError;
use s3s::{S3Error, S3ErrorCode};

/// Maps a service error to the S3 error a client expects, tagged with the request id.
pub fn to_s3(e: OssError, request_id: Option<&str>) -> S3Error {
    use S3ErrorCode as C;
    let (code, msg): (S3ErrorCode, String) = match &e {
        OssError::NoSuchBucket => (
            C::NoSuchBucket,
            "The specified bucket does not exist".into(),
        ),
        OssError::NoSuchKey => (C::NoSuchKey, "The specified key does not exist.".into()),
        OssError::NoSuchUpload => (
            C::NoSuchUpload,
            "The specified multipart upload does not exist.".into(),
        ),
        OssError::BucketNotEmpty => (
            C::BucketNotEmpty,
            "The bucket you tried to delete is not empty".into(),
        ),
        OssError::BucketAlreadyOwnedByYou => (
            C::BucketAlreadyOwnedByYou,
            "Your previous request to create the named bucket succeeded and you already own it."
                .into(),
        ),
        OssError::BucketAlreadyExists => (
            C::BucketAlreadyExists,
            "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again."
                .into(),
        ),
        OssError::InvalidBucketName(m) => (C::InvalidBucketName, m.clone()),
        OssError::KeyTooLong => (C::KeyTooLongError, "Your key is too long".into()),
        OssError::InvalidArgument(m) => (C::InvalidArgument, m.clone()),
        OssError::InvalidRange { .. } => (
            C::InvalidRange,
            "The requested range is not satisfiable".into(),
        ),
        OssError::PreconditionFailed => (
            C::PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold".into(),
        ),
        OssError::NotModified { .. } => (C::NotModified, "Not Modified".into()),
        OssError::InvalidPart(m) => (C::InvalidPart, m.clone()),
        OssError::InvalidPartOrder => (
            C::InvalidPartOrder,
            "The list of parts was not in ascending order.".into(),
        ),
        OssError::EntityTooSmall { part } => (
            C::EntityTooSmall,
            format!("Your proposed upload is smaller than the minimum allowed size (part {part})"),
        ),
        OssError::EntityTooLarge => (
            C::EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size".into(),
        ),
        OssError::BadDigest(m) => (C::BadDigest, m.clone()),
        OssError::ContentSha256Mismatch => (
            C::Custom("XAmzContentSHA256Mismatch".into()),
            "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
        ),
        OssError::IncompleteBody => (
            C::IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header"
                .into(),
        ),
        OssError::Body(m) => (C::IncompleteBody, format!("request body failed: {m}")),
        OssError::NoSuchVersion => (
            C::NoSuchVersion,
            "The specified version does not exist.".into(),
        ),
        OssError::DeleteMarker { by_version, .. } => {
            if *by_version {
                (
                    C::MethodNotAllowed,
                    "The specified method is not allowed against this resource.".into(),
                )
            } else {
                (C::NoSuchKey, "The specified key does not exist.".into())
            }
        }
        OssError::AccessDenied(m) => (C::AccessDenied, m.clone()),
        OssError::InvalidBucketState(m) => (C::InvalidBucketState, m.clone()),
        OssError::InvalidStorageClass(m) => (C::InvalidStorageClass, m.clone()),
        OssError::NotImplemented(m) => (C::NotImplemented, m.clone()),
        OssError::InvalidTag(m) => (C::InvalidTag, m.clone()),
        OssError::NotConfigured(what) => match what {
            feiyun_oss::Unconfigured::Encryption => (
                C::ServerSideEncryptionConfigurationNotFoundError,
                "The server side encryption configuration was not found".into(),
            ),
            feiyun_oss::Unconfigured::BucketPolicy => (
                C::NoSuchBucketPolicy,
                "The bucket policy does not exist".into(),
            ),
            feiyun_oss::Unconfigured::Replication => (
                C::ReplicationConfigurationNotFoundError,
                "The replication configuration was not found".into(),
            ),
            feiyun_oss::Unconfigured::PublicAccessBlock => (
                C::Custom("NoSuchPublicAccessBlockConfiguration".into()),
                "The public access block configuration was not found".into(),
            ),
        },
        OssError::NoSuchCorsConfiguration => (
            C::NoSuchCORSConfiguration,
            "The CORS configuration does not exist".into(),
        ),
        OssError::NoSuchLifecycleConfiguration => (
            C::NoSuchLifecycleConfiguration,
            "The lifecycle configuration does not exist".into(),
        ),
        OssError::NoSuchTagSet => (C::NoSuchTagSet, "The TagSet does not exist".into()),
        OssError::InvalidRequest(m) => (C::InvalidRequest, m.clone()),
        OssError::InvalidEncryptionAlgorithm(m) => (C::InvalidEncryptionAlgorithmError, m.clone()),
        OssError::Kms { code, message } => (C::Custom((*code).into()), message.clone()),
        OssError::MalformedXml(m) => (
            C::MalformedXML,
            format!(
                "The XML you provided was not well-formed or did not validate against our published schema: {m}"
            ),
        ),
        OssError::ObjectLockConfigurationNotFound => (
            C::ObjectLockConfigurationNotFoundError,
            "Object Lock configuration does not exist for this bucket".into(),
        ),
        OssError::NoSuchObjectLockConfiguration => (
            C::NoSuchObjectLockConfiguration,
            "The specified object does not have a ObjectLock configuration".into(),
        ),
        // Raced is re-planned inside the service; were it to escape, the client may retry.
        OssError::Busy | OssError::Raced => {
            (C::SlowDown, "Please reduce your request rate.".into())
        }
        OssError::Legacy(m) => {
            // The legacy store's name and answer go to the log, not to the client.
            tracing::warn!(error = %m, "live migration: legacy store failed");
            (
                C::ServiceUnavailable,
                "The object is not in this region yet and its legacy store cannot be read now. Please try again.".into(),
            )
        }
        OssError::Unavailable(m) => {
            tracing::warn!(error = %m, "storage unavailable");
            (
                C::ServiceUnavailable,
                "Too few storage nodes are reachable. Please try again.".into(),
            )
        }
        OssError::Corrupt(_) | OssError::BlobGone(_) | OssError::Internal(_) => {
            // Details go to the log, not to the client.
            tracing::error!(error = %e, "internal error");
            (
                C::InternalError,
                "We encountered an internal error. Please try again.".into(),
            )
        }
    };
    let mut err = S3Error::with_message(code, msg);
    match &e {
        OssError::ContentSha256Mismatch => err.set_status_code(http::StatusCode::BAD_REQUEST),
        OssError::Kms { .. } => err.set_status_code(http::StatusCode::BAD_REQUEST),
        OssError::NotModified { .. } => err.set_status_code(http::StatusCode::NOT_MODIFIED),
        OssError::NotConfigured(_) => err.set_status_code(http::StatusCode::NOT_FOUND),
        OssError::DeleteMarker {
            version_id,
            last_modified_ms,
            by_version,
        } => {
            // Clients tell "deleted" from "never existed" by these headers.
            let mut h = http::HeaderMap::new();
            h.insert(
                "x-amz-delete-marker",
                http::HeaderValue::from_static("true"),
            );
            if let Ok(v) = http::HeaderValue::from_str(version_id) {
                h.insert("x-amz-version-id", v);
            }
            if *by_version
                && let Some(d) =
                    crate::headers::http_date(&crate::headers::timestamp(*last_modified_ms))
                && let Ok(v) = http::HeaderValue::from_str(&d)
            {
                h.insert(http::header::LAST_MODIFIED, v);
            }
            err.set_headers(h);
        }
        _ => {}
    }
    if let Some(id) = request_id {
        err.set_request_id(id);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let rows: Vec<(OssError, &str, u16)> = vec![
            (OssError::NoSuchBucket, "NoSuchBucket", 404),
            (OssError::NoSuchKey, "NoSuchKey", 404),
            (OssError::NoSuchUpload, "NoSuchUpload", 404),
            (OssError::BucketNotEmpty, "BucketNotEmpty", 409),
            (
                OssError::BucketAlreadyOwnedByYou,
                "BucketAlreadyOwnedByYou",
                409,
            ),
            (OssError::BucketAlreadyExists, "BucketAlreadyExists", 409),
            (
                OssError::InvalidBucketName("x".into()),
                "InvalidBucketName",
                400,
            ),
            (OssError::KeyTooLong, "KeyTooLongError", 400),
            (
                OssError::InvalidRange { object_size: 1 },
                "InvalidRange",
                416,
            ),
            (OssError::PreconditionFailed, "PreconditionFailed", 412),
            (OssError::InvalidPartOrder, "InvalidPartOrder", 400),
            (OssError::EntityTooSmall { part: 1 }, "EntityTooSmall", 400),
            (OssError::BadDigest("x".into()), "BadDigest", 400),
            (
                OssError::ContentSha256Mismatch,
                "XAmzContentSHA256Mismatch",
                400,
            ),
            (OssError::Corrupt("disk".into()), "InternalError", 500),
        ];
        for (e, code, status) in rows {
            let s = to_s3(e, Some("req-1"));
            assert_eq!(s.code().as_str(), code);
            let got = s
                .status_code()
                .or_else(|| s.code().status_code())
                .map(|c| c.as_u16());
            assert_eq!(got, Some(status), "{code}");
            assert_eq!(s.request_id(), Some("req-1"));
        }
    }
}

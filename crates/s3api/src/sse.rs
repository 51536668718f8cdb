//! Server-side encryption at the edge: the SSE request headers as S3 validates them, the
//! SSE response headers, and the bucket default (Get/Put/DeleteBucketEncryption).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use feiyun_oss::sse::Context;
use feiyun_oss::{
    BlobStore, BucketEncryption, CustomerKey, DefaultSse, KeyCheck, MetaStore, OssError, SseMode,
    SseRequest,
};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::{FeiyunS3, fail};

/// The SSE headers of a request that writes an object.
pub(crate) struct SseHeaders<'a> {
    pub sse: &'a Option<ServerSideEncryption>,
    pub kms_key: &'a Option<String>,
    pub context: &'a Option<String>,
    pub bucket_key: Option<bool>,
    pub customer: CustomerHeaders<'a>,
}

/// The three `…-customer-*` headers (or their `x-amz-copy-source-…` twins).
#[derive(Clone, Copy)]
pub(crate) struct CustomerHeaders<'a> {
    pub algorithm: &'a Option<String>,
    pub key: &'a Option<String>,
    pub md5: &'a Option<String>,
}

/// The `…-customer-*` headers of any s3s input that has them.
macro_rules! customer_headers {
    ($i:expr) => {
        $crate::sse::CustomerHeaders {
            algorithm: &$i.sse_customer_algorithm,
            key: &$i.sse_customer_key,
            md5: &$i.sse_customer_key_md5,
        }
    };
}

/// The `x-amz-copy-source-…-customer-*` headers of a copy.
macro_rules! copy_source_customer_headers {
    ($i:expr) => {
        $crate::sse::CustomerHeaders {
            algorithm: &$i.copy_source_sse_customer_algorithm,
            key: &$i.copy_source_sse_customer_key,
            md5: &$i.copy_source_sse_customer_key_md5,
        }
    };
}

/// Every SSE header of an object-writing input (PutObject, CopyObject,
/// CreateMultipartUpload name them alike).
macro_rules! sse_headers {
    ($i:expr) => {
        $crate::sse::SseHeaders {
            sse: &$i.server_side_encryption,
            kms_key: &$i.ssekms_key_id,
            context: &$i.ssekms_encryption_context,
            bucket_key: $i.bucket_key_enabled,
            customer: $crate::sse::customer_headers!($i),
        }
    };
}

pub(crate) use {copy_source_customer_headers, customer_headers, sse_headers};

/// The SSE headers of a response, for any output type.
#[derive(Default)]
pub(crate) struct SseOut {
    pub sse: Option<ServerSideEncryption>,
    pub kms_key: Option<String>,
    pub bucket_key: Option<bool>,
    pub customer_algorithm: Option<String>,
    pub customer_md5: Option<String>,
}

pub(crate) fn sse_out(mode: Option<&SseMode>) -> SseOut {
    let Some(mode) = mode else {
        return SseOut::default();
    };
    SseOut {
        sse: mode.algorithm().map(ServerSideEncryption::from_static),
        kms_key: mode.kms_key().map(str::to_owned),
        bucket_key: mode.bucket_key().then_some(true),
        customer_algorithm: mode.customer_md5().map(|_| "AES256".to_owned()),
        customer_md5: mode.customer_md5().map(str::to_owned),
    }
}

/// The caller's permission to use a KMS key, decided by the same policies as the request
/// (S3 asks KMS as the caller: `kms:GenerateDataKey` to write, `kms:Decrypt` to read).
/// Without a grant nothing is allowed.
pub(crate) fn key_check<T>(req: &S3Request<T>) -> Option<KeyCheck> {
    let grant = req.extensions.get::<crate::access::Grant>().cloned();
    Some(KeyCheck(std::sync::Arc::new(move |action, arn| {
        grant
            .as_ref()
            .is_some_and(|g| g.decide(action, arn).allowed())
    })))
}

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    /// The caller's account (for KMS key names), or the region's default.
    pub(crate) fn caller_account<T>(&self, req: &S3Request<T>) -> String {
        req.extensions
            .get::<crate::access::Grant>()
            .and_then(|g| g.account().map(str::to_owned))
            .unwrap_or_else(|| self.default_account.clone())
    }

    /// An SSE-C key from its three headers: all or none, AES256, 32 bytes whose MD5 matches,
    /// and only over TLS unless the region allows plain HTTP (tests).
    pub(crate) fn customer_key<T>(
        &self,
        req: &S3Request<T>,
        h: CustomerHeaders<'_>,
    ) -> Result<Option<CustomerKey>, OssError> {
        let (alg, key, md5) = match (h.algorithm, h.key, h.md5) {
            (None, None, None) => return Ok(None),
            (Some(a), Some(k), Some(m)) => (a, k, m),
            _ => {
                return Err(OssError::InvalidArgument(
                    "Requests specifying Server Side Encryption with Customer provided keys must provide the algorithm, the key and the key's MD5.".into(),
                ));
            }
        };
        let secure = req
            .extensions
            .get::<feiyun_iam::SecureTransport>()
            .is_some_and(|s| s.0);
        if !secure && !self.sse_c_over_http {
            return Err(OssError::InvalidRequest(
                "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.".into(),
            ));
        }
        CustomerKey::parse(alg, key, md5).map(Some)
    }

    /// Fills a write's encryption request, the caller's account (for KMS key names) and the
    /// caller's KMS permission check.
    pub(crate) fn fill_sse<T>(
        &self,
        req: &S3Request<T>,
        h: SseHeaders<'_>,
        spec: &mut feiyun_oss::WriteSpec,
    ) -> Result<(), OssError> {
        spec.sse = self.sse_request(req, h)?;
        spec.account = self.caller_account(req);
        spec.key_check = key_check(req);
        Ok(())
    }

    /// What a writing request asks for, checked as S3 checks the combinations.
    pub(crate) fn sse_request<T>(
        &self,
        req: &S3Request<T>,
        h: SseHeaders<'_>,
    ) -> Result<Option<SseRequest>, OssError> {
        let customer = self.customer_key(req, h.customer)?;
        let kms_only = h.kms_key.is_some() || h.context.is_some();
        match (h.sse.as_ref().map(|s| s.as_str()), customer) {
            (Some(_), Some(_)) => Err(OssError::InvalidArgument(
                "Server Side Encryption with Customer provided key is incompatible with the encryption method specified".into(),
            )),
            (None, Some(c)) if !kms_only => Ok(Some(SseRequest::Customer(c))),
            (Some(ServerSideEncryption::AWS_KMS), None) => Ok(Some(SseRequest::Kms {
                key_id: h.kms_key.clone().filter(|k| !k.is_empty()),
                context: parse_context(h.context.as_deref())?,
                bucket_key: h.bucket_key.unwrap_or(false),
            })),
            (_, _) if kms_only => Err(OssError::InvalidArgument(
                "x-amz-server-side-encryption-aws-kms-key-id and -context are only valid with x-amz-server-side-encryption: aws:kms".into(),
            )),
            (Some(ServerSideEncryption::AES256), None) => Ok(Some(SseRequest::S3)),
            (Some(other), None) => Err(OssError::InvalidArgument(format!(
                "The encryption method {other:?} is not supported (AES256 or aws:kms)"
            ))),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(OssError::Internal("unreachable SSE combination".into())),
        }
    }

    pub(crate) async fn op_get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let config = self
            .oss
            .bucket_encryption(&req.input.bucket)
            .await
            .map_err(fail(&req))?
            .ok_or_else(|| {
                fail(&req)(OssError::NotConfigured(
                    feiyun_oss::Unconfigured::Encryption,
                ))
            })?;
        let (algorithm, key) = match &config.algorithm {
            DefaultSse::S3 => (ServerSideEncryption::AES256, None),
            DefaultSse::Kms { key } => (ServerSideEncryption::AWS_KMS, key.clone()),
        };
        Ok(S3Response::new(GetBucketEncryptionOutput {
            server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
                rules: vec![ServerSideEncryptionRule {
                    apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                        kms_master_key_id: key,
                        sse_algorithm: ServerSideEncryption::from_static(algorithm),
                    }),
                    bucket_key_enabled: Some(config.bucket_key),
                }],
            }),
        }))
    }

    pub(crate) async fn op_put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        let config = bucket_encryption(&req.input.server_side_encryption_configuration)
            .map_err(fail(&req))?;
        let account = self.caller_account(&req);
        self.oss
            .set_bucket_encryption(&req.input.bucket, Some(config), &account)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(PutBucketEncryptionOutput::default()))
    }

    pub(crate) async fn op_delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        let account = self.caller_account(&req);
        self.oss
            .set_bucket_encryption(&req.input.bucket, None, &account)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(DeleteBucketEncryptionOutput::default()))
    }
}

/// PutBucketEncryption's body: exactly one rule, AES256 or aws:kms (with an optional key).
fn bucket_encryption(c: &ServerSideEncryptionConfiguration) -> Result<BucketEncryption, OssError> {
    let [rule] = c.rules.as_slice() else {
        return Err(OssError::MalformedXml(
            "exactly one ServerSideEncryptionRule is required".into(),
        ));
    };
    let Some(by_default) = &rule.apply_server_side_encryption_by_default else {
        return Err(OssError::MalformedXml(
            "ApplyServerSideEncryptionByDefault is required".into(),
        ));
    };
    let bucket_key = rule.bucket_key_enabled.unwrap_or(false);
    match (
        by_default.sse_algorithm.as_str(),
        &by_default.kms_master_key_id,
    ) {
        (ServerSideEncryption::AES256, None) => Ok(BucketEncryption {
            algorithm: DefaultSse::S3,
            bucket_key,
        }),
        (ServerSideEncryption::AES256, Some(_)) => Err(OssError::InvalidArgument(
            "a KMSMasterKeyID is only allowed with the aws:kms algorithm".into(),
        )),
        (ServerSideEncryption::AWS_KMS, key) => Ok(BucketEncryption {
            algorithm: DefaultSse::Kms {
                key: key.clone().filter(|k| !k.is_empty()),
            },
            bucket_key,
        }),
        (other, _) => Err(OssError::InvalidArgument(format!(
            "The encryption method {other:?} is not supported (AES256 or aws:kms)"
        ))),
    }
}

/// `x-amz-server-side-encryption-context`: base64 of a JSON object of strings.
fn parse_context(header: Option<&str>) -> Result<Context, OssError> {
    let Some(h) = header else {
        return Ok(Context::new());
    };
    let bad = || {
        OssError::InvalidArgument(
            "x-amz-server-side-encryption-context must be base64-encoded JSON of string pairs"
                .into(),
        )
    };
    let raw = B64.decode(h.trim()).map_err(|_| bad())?;
    let ctx: Context = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if ctx.keys().any(|k| k.starts_with("aws:")) {
        return Err(OssError::InvalidArgument(
            "encryption context keys beginning with aws: are reserved".into(),
        ));
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_base64_json_of_strings() {
        let enc = |s: &str| B64.encode(s);
        let ctx = parse_context(Some(&enc(r#"{"dept":"x","b":"y"}"#))).unwrap();
        assert_eq!(ctx.len(), 2);
        assert!(parse_context(Some("%%%")).is_err());
        assert!(parse_context(Some(&enc(r#"{"a":1}"#))).is_err());
        assert!(parse_context(Some(&enc(r#"["a"]"#))).is_err());
        assert!(parse_context(Some(&enc(r#"{"aws:s3:arn":"x"}"#))).is_err());
        assert!(parse_context(None).unwrap().is_empty());
    }

    #[test]
    fn bucket_rules_are_checked() {
        let rule = |alg: &'static str, key: Option<&str>| ServerSideEncryptionConfiguration {
            rules: vec![ServerSideEncryptionRule {
                apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                    kms_master_key_id: key.map(str::to_owned),
                    sse_algorithm: ServerSideEncryption::from_static(alg),
                }),
                bucket_key_enabled: Some(true),
            }],
        };
        assert_eq!(
            bucket_encryption(&rule("AES256", None)).unwrap(),
            BucketEncryption {
                algorithm: DefaultSse::S3,
                bucket_key: true
            }
        );
        assert_eq!(
            bucket_encryption(&rule("aws:kms", Some("alias/x")))
                .unwrap()
                .algorithm,
            DefaultSse::Kms {
                key: Some("alias/x".into())
            }
        );
        assert!(bucket_encryption(&rule("AES256", Some("k"))).is_err());
        assert!(bucket_encryption(&rule("aws:kms:dsse", None)).is_err());
        assert!(bucket_encryption(&ServerSideEncryptionConfiguration::default()).is_err());
    }
}

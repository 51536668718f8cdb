//! Bucket policies and public access blocks: Put/Get/DeleteBucketPolicy,
//! GetBucketPolicyStatus, Put/Get/DeletePublicAccessBlock. Validation and the "is it public"
//! test live in `feiyun_iam::bucket`; this file stores the documents and keeps the access
//! check's cache exact.

use feiyun_iam::PolicyError;
use feiyun_iam::bucket::{
    POLICY_CONFIG, PUBLIC_ACCESS_BLOCK_CONFIG, PublicAccessBlock, is_public, parse_bucket_policy,
};
use feiyun_oss::{BlobStore, MetaStore, OssError, Unconfigured};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::{FeiyunS3, fail, request_id};

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let i = &req.input;
        let policy = parse_bucket_policy(&i.bucket, &i.policy).map_err(|e| {
            let mut err = match e {
                PolicyError::Malformed(m) => s3s::s3_error!(MalformedPolicy, "{m}"),
                PolicyError::TooLarge { .. } => {
                    s3s::s3_error!(MalformedPolicy, "Policies must be less than 20 KB")
                }
            };
            if let Some(id) = request_id(&req) {
                err.set_request_id(id);
            }
            err
        })?;
        let block = self
            .public_access_block(&i.bucket)
            .await
            .map_err(fail(&req))?;
        if block.is_some_and(|b| b.block_public_policy) && is_public(&policy) {
            // S3 refuses a public policy outright while BlockPublicPolicy is on.
            return Err(fail(&req)(OssError::AccessDenied(
                "public policies are blocked by the bucket's public access block".into(),
            )));
        }
        self.oss
            .set_bucket_config(&i.bucket, POLICY_CONFIG, Some(i.policy.as_bytes().to_vec()))
            .await
            .map_err(fail(&req))?;
        self.buckets.invalidate(&i.bucket);
        Ok(S3Response::new(PutBucketPolicyOutput::default()))
    }

    pub(crate) async fn op_get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let text = self
            .oss
            .bucket_config(&req.input.bucket, POLICY_CONFIG)
            .await
            .map_err(fail(&req))?
            .ok_or(OssError::NotConfigured(Unconfigured::BucketPolicy))
            .map_err(fail(&req))?;
        Ok(S3Response::new(GetBucketPolicyOutput {
            policy: Some(String::from_utf8_lossy(&text).into_owned()),
        }))
    }

    pub(crate) async fn op_delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        self.oss
            .set_bucket_config(&req.input.bucket, POLICY_CONFIG, None)
            .await
            .map_err(fail(&req))?;
        self.buckets.invalidate(&req.input.bucket);
        Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
    }

    pub(crate) async fn op_get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        let b = &req.input.bucket;
        let text = self
            .oss
            .bucket_config(b, POLICY_CONFIG)
            .await
            .map_err(fail(&req))?
            .ok_or(OssError::NotConfigured(Unconfigured::BucketPolicy))
            .map_err(fail(&req))?;
        let public = parse_bucket_policy(b, &String::from_utf8_lossy(&text))
            .map(|p| is_public(&p))
            .map_err(|e| fail(&req)(OssError::Internal(format!("stored bucket policy: {e}"))))?;
        Ok(S3Response::new(GetBucketPolicyStatusOutput {
            policy_status: Some(PolicyStatus {
                is_public: Some(public),
            }),
        }))
    }

    pub(crate) async fn op_put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        let c = &req.input.public_access_block_configuration;
        let block = PublicAccessBlock {
            block_public_acls: c.block_public_acls.unwrap_or(false),
            ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
            block_public_policy: c.block_public_policy.unwrap_or(false),
            restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
        };
        self.oss
            .set_bucket_config(
                &req.input.bucket,
                PUBLIC_ACCESS_BLOCK_CONFIG,
                Some(block.encode()),
            )
            .await
            .map_err(fail(&req))?;
        self.buckets.invalidate(&req.input.bucket);
        Ok(S3Response::new(PutPublicAccessBlockOutput::default()))
    }

    pub(crate) async fn op_get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        let block = self
            .public_access_block(&req.input.bucket)
            .await
            .map_err(fail(&req))?
            .ok_or(OssError::NotConfigured(Unconfigured::PublicAccessBlock))
            .map_err(fail(&req))?;
        Ok(S3Response::new(GetPublicAccessBlockOutput {
            public_access_block_configuration: Some(PublicAccessBlockConfiguration {
                block_public_acls: Some(block.block_public_acls),
                ignore_public_acls: Some(block.ignore_public_acls),
                block_public_policy: Some(block.block_public_policy),
                restrict_public_buckets: Some(block.restrict_public_buckets),
            }),
        }))
    }

    pub(crate) async fn op_delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        self.oss
            .set_bucket_config(&req.input.bucket, PUBLIC_ACCESS_BLOCK_CONFIG, None)
            .await
            .map_err(fail(&req))?;
        self.buckets.invalidate(&req.input.bucket);
        Ok(S3Response::new(DeletePublicAccessBlockOutput::default()))
    }

    pub(crate) async fn public_access_block(
        &self,
        bucket: &str,
    ) -> Result<Option<PublicAccessBlock>, OssError> {
        Ok(self
            .oss
            .bucket_config(bucket, PUBLIC_ACCESS_BLOCK_CONFIG)
            .await?
            .as_deref()
            .and_then(PublicAccessBlock::decode))
    }
}

//! ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation.

use feiyun_oss::{BlobStore, MetaStore};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::headers;
use crate::{FeiyunS3, fail};

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let all = self.oss.list_buckets().await.map_err(fail(&req))?;
        let prefix = req.input.prefix.clone().unwrap_or_default();
        // Each account lists its own buckets; names stay unique across the region.
        let account = req
            .extensions
            .get::<crate::access::Grant>()
            .and_then(|g| g.account().map(str::to_owned));
        let buckets = all
            .into_iter()
            .filter(|(name, r)| {
                let owner = r.owner.as_deref().unwrap_or(&self.default_account);
                // System buckets (a leading dot) belong to the region, not to an account.
                !name.starts_with('.')
                    && name.starts_with(&prefix)
                    && account.as_deref().is_none_or(|a| a == owner)
            })
            .map(|(name, r)| Bucket {
                name: Some(name),
                creation_date: Some(headers::timestamp(r.created_ms)),
                bucket_region: Some(r.region),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            prefix: req.input.prefix.clone(),
            ..Default::default()
        }))
    }

    pub(crate) async fn op_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let i = &req.input;
        if let Some(loc) = i
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            && loc.as_str() != self.oss.region()
        {
            let mut e = s3s::s3_error!(
                IllegalLocationConstraintException,
                "The {} location constraint is incompatible for the region specific endpoint this request was sent to.",
                loc.as_str()
            );
            if let Some(id) = crate::request_id(&req) {
                e.set_request_id(id);
            }
            return Err(e);
        }
        let owner = req
            .extensions
            .get::<crate::access::Grant>()
            .and_then(|g| g.account().map(str::to_owned));
        // New buckets block public access, as S3's have since April 2023.
        let block = feiyun_iam::bucket::PublicAccessBlock::ALL_ON.encode();
        self.buckets.invalidate(&i.bucket);
        self.oss
            .create_bucket_with(
                &i.bucket,
                i.object_lock_enabled_for_bucket == Some(true),
                owner,
                vec![(feiyun_iam::bucket::PUBLIC_ACCESS_BLOCK_CONFIG, block)],
            )
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", i.bucket)),
        }))
    }

    pub(crate) async fn op_head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let r = self
            .oss
            .bucket(&req.input.bucket)
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(r.region),
            ..Default::default()
        }))
    }

    pub(crate) async fn op_delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.oss
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(fail(&req))?;
        self.buckets.invalidate(&req.input.bucket);
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    pub(crate) async fn op_get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let r = self
            .oss
            .bucket(&req.input.bucket)
            .await
            .map_err(fail(&req))?;
        // S3 reports us-east-1 as an empty constraint.
        let location_constraint =
            (r.region != "us-east-1").then(|| BucketLocationConstraint::from(r.region));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint,
        }))
    }
}

pub(crate) fn owner() -> Owner {
    Owner {
        display_name: Some("feiyun".into()),
        id: Some("feiyun-root".into()),
    }
}

//! The S3 protocol edge: `s3s` parses and signs the wire protocol; this crate maps each S3
//! operation onto the object service and maps results and errors back.
//!
//! One file per operation family (`bucket`, `object`, `copy`, `list`, `multipart`), with the
//! shared header and checksum plumbing in `headers`. Authentication is in `auth`; it is the
//! seam where IAM policy evaluation will plug in.
//!
//! Architecture invariant: no S3 error code is chosen outside `error.rs`, and this crate
//! never touches storage directly — only through [`feiyun_oss::ObjectService`].

pub mod access;
mod bucket;
mod copy;
mod error;
mod headers;
mod lifecycle;
mod list;
mod multipart;
mod notification;
mod object;
mod policy;
mod replication;
mod sse;
mod subresources;
mod versioning;

use std::sync::Arc;

use feiyun_oss::{BlobStore, MetaStore, ObjectService, OssError};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

pub use access::{Authorize, BucketAccessCache, ClientAddr, IamAuth, OpSlot, Origin};
pub use error::to_s3;

/// Per-request id, inserted into request extensions by the server and echoed in errors.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The S3 implementation over an object service with engines `M` and `B`.
pub struct FeiyunS3<M, B> {
    oss: Arc<ObjectService<M, B>>,
    /// Shared with the access check, which reads bucket policies through it.
    buckets: Arc<access::BucketAccessCache>,
    /// Owner of buckets created before accounts existed.
    default_account: String,
    /// Ids of the webhook targets configured on this server (notification destinations).
    webhook_targets: Vec<String>,
    /// Accept SSE-C keys over plain HTTP (tests only; S3 refuses them).
    sse_c_over_http: bool,
    /// The regions a replication rule may name.
    peers: Arc<dyn feiyun_oss::replication::PeerDirectory>,
}

/// Knows no region: every replication destination is refused.
struct NoPeers;

impl feiyun_oss::replication::PeerDirectory for NoPeers {
    fn has_peer(&self, _: &str) -> bool {
        false
    }
}

impl<M, B> FeiyunS3<M, B> {
    pub fn new(oss: Arc<ObjectService<M, B>>) -> Self {
        Self {
            oss,
            buckets: Arc::default(),
            default_account: String::new(),
            webhook_targets: Vec::new(),
            sse_c_over_http: false,
            peers: Arc::new(NoPeers),
        }
    }

    /// Accepts SSE-C keys on plain HTTP connections, which S3 refuses: for tests only.
    #[must_use]
    pub fn with_sse_c_over_http(mut self, allow: bool) -> Self {
        self.sse_c_over_http = allow;
        self
    }

    #[must_use]
    pub fn with_default_account(mut self, account: String) -> Self {
        self.default_account = account;
        self
    }

    /// Uses the same bucket-settings cache as the access check, so a policy change is seen
    /// by the next request.
    #[must_use]
    pub fn with_bucket_access(mut self, cache: Arc<access::BucketAccessCache>) -> Self {
        self.buckets = cache;
        self
    }

    /// The registered peer regions replication destinations are checked against.
    #[must_use]
    pub fn with_peers(mut self, peers: Arc<dyn feiyun_oss::replication::PeerDirectory>) -> Self {
        self.peers = peers;
        self
    }

    #[must_use]
    pub fn with_webhook_targets(mut self, ids: Vec<String>) -> Self {
        self.webhook_targets = ids;
        self
    }
}

pub(crate) fn request_id<T>(req: &S3Request<T>) -> Option<String> {
    req.extensions.get::<RequestId>().map(|r| r.0.clone())
}

/// Maps a service error for this request.
pub(crate) fn fail<T>(req: &S3Request<T>) -> impl Fn(OssError) -> s3s::S3Error + '_ {
    move |e| {
        let id = req.extensions.get::<RequestId>().map(|r| r.0.as_str());
        error::to_s3(e, id)
    }
}

type Out<T> = S3Result<S3Response<T>>;

#[async_trait::async_trait]
impl<M, B> S3 for FeiyunS3<M, B>
where
    M: MetaStore,
    B: BlobStore,
{
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> Out<ListBucketsOutput> {
        self.op_list_buckets(req).await
    }
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> Out<CreateBucketOutput> {
        self.op_create_bucket(req).await
    }
    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> Out<HeadBucketOutput> {
        self.op_head_bucket(req).await
    }
    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> Out<DeleteBucketOutput> {
        self.op_delete_bucket(req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> Out<GetBucketLocationOutput> {
        self.op_get_bucket_location(req).await
    }
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> Out<GetBucketVersioningOutput> {
        self.op_get_bucket_versioning(req).await
    }
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> Out<PutObjectOutput> {
        self.op_put_object(req).await
    }
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> Out<GetObjectOutput> {
        self.op_get_object(req).await
    }
    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> Out<HeadObjectOutput> {
        self.op_head_object(req).await
    }
    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> Out<DeleteObjectOutput> {
        self.op_delete_object(req).await
    }
    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> Out<DeleteObjectsOutput> {
        self.op_delete_objects(req).await
    }
    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> Out<CopyObjectOutput> {
        self.op_copy_object(req).await
    }
    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> Out<ListObjectsOutput> {
        self.op_list_objects(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> Out<ListObjectsV2Output> {
        self.op_list_objects_v2(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> Out<CreateMultipartUploadOutput> {
        self.op_create_multipart_upload(req).await
    }
    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> Out<UploadPartOutput> {
        self.op_upload_part(req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> Out<UploadPartCopyOutput> {
        self.op_upload_part_copy(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> Out<CompleteMultipartUploadOutput> {
        self.op_complete_multipart_upload(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> Out<AbortMultipartUploadOutput> {
        self.op_abort_multipart_upload(req).await
    }
    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> Out<ListPartsOutput> {
        self.op_list_parts(req).await
    }
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> Out<ListMultipartUploadsOutput> {
        self.op_list_multipart_uploads(req).await
    }
    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> Out<PutBucketVersioningOutput> {
        self.op_put_bucket_versioning(req).await
    }
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> Out<ListObjectVersionsOutput> {
        self.op_list_object_versions(req).await
    }
    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> Out<PutObjectTaggingOutput> {
        self.op_put_object_tagging(req).await
    }
    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> Out<GetObjectTaggingOutput> {
        self.op_get_object_tagging(req).await
    }
    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> Out<DeleteObjectTaggingOutput> {
        self.op_delete_object_tagging(req).await
    }
    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> Out<PutBucketTaggingOutput> {
        self.op_put_bucket_tagging(req).await
    }
    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> Out<GetBucketTaggingOutput> {
        self.op_get_bucket_tagging(req).await
    }
    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> Out<DeleteBucketTaggingOutput> {
        self.op_delete_bucket_tagging(req).await
    }
    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> Out<PutObjectLockConfigurationOutput> {
        self.op_put_object_lock_configuration(req).await
    }
    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> Out<GetObjectLockConfigurationOutput> {
        self.op_get_object_lock_configuration(req).await
    }
    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> Out<PutObjectRetentionOutput> {
        self.op_put_object_retention(req).await
    }
    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> Out<GetObjectRetentionOutput> {
        self.op_get_object_retention(req).await
    }
    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> Out<PutObjectLegalHoldOutput> {
        self.op_put_object_legal_hold(req).await
    }
    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> Out<GetObjectLegalHoldOutput> {
        self.op_get_object_legal_hold(req).await
    }
    async fn get_bucket_acl(&self, req: S3Request<GetBucketAclInput>) -> Out<GetBucketAclOutput> {
        self.op_get_bucket_acl(req).await
    }
    async fn get_object_acl(&self, req: S3Request<GetObjectAclInput>) -> Out<GetObjectAclOutput> {
        self.op_get_object_acl(req).await
    }
    async fn put_bucket_acl(&self, req: S3Request<PutBucketAclInput>) -> Out<PutBucketAclOutput> {
        self.op_put_bucket_acl(req).await
    }
    async fn put_object_acl(&self, req: S3Request<PutObjectAclInput>) -> Out<PutObjectAclOutput> {
        self.op_put_object_acl(req).await
    }
    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> Out<PutBucketLifecycleConfigurationOutput> {
        self.op_put_bucket_lifecycle_configuration(req).await
    }
    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> Out<GetBucketLifecycleConfigurationOutput> {
        self.op_get_bucket_lifecycle_configuration(req).await
    }
    async fn put_bucket_replication(
        &self,
        req: S3Request<PutBucketReplicationInput>,
    ) -> Out<PutBucketReplicationOutput> {
        self.op_put_bucket_replication(req).await
    }
    async fn get_bucket_replication(
        &self,
        req: S3Request<GetBucketReplicationInput>,
    ) -> Out<GetBucketReplicationOutput> {
        self.op_get_bucket_replication(req).await
    }
    async fn delete_bucket_replication(
        &self,
        req: S3Request<DeleteBucketReplicationInput>,
    ) -> Out<DeleteBucketReplicationOutput> {
        self.op_delete_bucket_replication(req).await
    }
    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> Out<DeleteBucketLifecycleOutput> {
        self.op_delete_bucket_lifecycle(req).await
    }
    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> Out<PutBucketCorsOutput> {
        self.op_put_bucket_cors(req).await
    }
    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> Out<GetBucketCorsOutput> {
        self.op_get_bucket_cors(req).await
    }
    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> Out<DeleteBucketCorsOutput> {
        self.op_delete_bucket_cors(req).await
    }
    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> Out<GetBucketEncryptionOutput> {
        self.op_get_bucket_encryption(req).await
    }
    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> Out<PutBucketEncryptionOutput> {
        self.op_put_bucket_encryption(req).await
    }
    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> Out<DeleteBucketEncryptionOutput> {
        self.op_delete_bucket_encryption(req).await
    }
    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> Out<GetBucketPolicyOutput> {
        self.op_get_bucket_policy(req).await
    }
    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> Out<GetBucketPolicyStatusOutput> {
        self.op_get_bucket_policy_status(req).await
    }
    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> Out<PutBucketPolicyOutput> {
        self.op_put_bucket_policy(req).await
    }
    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> Out<DeleteBucketPolicyOutput> {
        self.op_delete_bucket_policy(req).await
    }
    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> Out<PutPublicAccessBlockOutput> {
        self.op_put_public_access_block(req).await
    }
    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> Out<DeletePublicAccessBlockOutput> {
        self.op_delete_public_access_block(req).await
    }
    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> Out<GetPublicAccessBlockOutput> {
        self.op_get_public_access_block(req).await
    }
    async fn put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> Out<PutBucketNotificationConfigurationOutput> {
        self.op_put_bucket_notification_configuration(req).await
    }
    async fn get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> Out<GetBucketNotificationConfigurationOutput> {
        self.op_get_bucket_notification_configuration(req).await
    }
}

//! What the function service needs from the rest of the region, behind one trait: function
//! code kept as objects of the region's own system bucket (so code is stored, checksummed,
//! encrypted — and later replicated and backed up — like any data), the objects triggers
//! read and write, and the durable object event log triggers follow.

use std::sync::Arc;

use bytes::Bytes;
use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;
use feiyun_oss::events::EventRecord;
use feiyun_oss::{GetRequest, ObjectHeaders, ObjectService, OssError, WriteSpec};
use futures::StreamExt;

/// The system bucket holding every function's code (a leading dot: no S3 client can name it).
pub const CODE_BUCKET: &str = ".feiyun-functions";

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("no such bucket or object: {0}")]
    NotFound(String),
    #[error("{0} is larger than the limit of {1} bytes")]
    TooLarge(String, u64),
    #[error("{0}")]
    Failed(String),
}

fn failed(e: OssError) -> HostError {
    match e {
        OssError::NoSuchBucket | OssError::NoSuchKey | OssError::NoSuchVersion => {
            HostError::NotFound(e.to_string())
        }
        e => HostError::Failed(e.to_string()),
    }
}

#[async_trait::async_trait]
pub trait Host: Send + Sync + 'static {
    async fn put_code(&self, key: &str, code: Bytes) -> Result<(), HostError>;
    /// At most `limit` bytes; a larger object is an error.
    async fn get_code(&self, key: &str, limit: usize) -> Result<Vec<u8>, HostError>;
    async fn delete_code(&self, key: &str) -> Result<(), HostError>;
    /// The account owning a bucket; `None` when there is no such bucket.
    async fn bucket_owner(&self, bucket: &str) -> Result<Option<String>, HostError>;
    /// An object's bytes (the current version, or `version`) and content type.
    /// Reads an object; `key_check` answers the KMS permissions of whoever the read is for.
    async fn read_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        limit: usize,
        key_check: Option<feiyun_oss::KeyCheck>,
    ) -> Result<(Vec<u8>, Option<String>), HostError>;
    async fn write_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: Option<String>,
    ) -> Result<(), HostError>;
    /// Up to `limit` object events after `after`, oldest first.
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>, HostError>;
    /// Every event id below this has landed.
    fn events_landed_below(&self) -> u64;
    async fn cursor(&self, consumer: &str) -> Result<u64, HostError>;
    async fn set_cursor(&self, consumer: &str, id: u64) -> Result<(), HostError>;
    /// Moves the cursor past events that asked for no work (durable with the next commit).
    async fn skip_to(&self, consumer: &str, id: u64) -> Result<(), HostError>;
}

/// Temporary credentials a function runs with: a session of its execution role.
#[derive(Clone)]
pub struct RoleCredentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: String,
    /// Unix seconds.
    pub expires: i64,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("access_key", &self.access_key)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Function identities: the region's IAM, as the function service needs it.
#[async_trait::async_trait]
pub trait Identities: Send + Sync + 'static {
    /// The ARN of `role` (a name or an ARN) in `account`, when the role exists there and its
    /// trust policy lets the function service (`fc.amazonaws.com`) assume it; else why not.
    fn resolve_role(&self, account: &str, role: &str) -> Result<String, String>;
    /// A new session of `role_arn` named `session` (the function's name), valid `secs`.
    async fn assume(
        &self,
        role_arn: &str,
        session: &str,
        secs: i64,
    ) -> Result<RoleCredentials, String>;
    /// Whether `principal` (a user, role or root ARN, as it stands now) may `action` the
    /// object, judged as an S3 request of it would be — identity and bucket policies, the
    /// object's tags; with the KMS check to read it under (`kms:Decrypt` on its key).
    async fn authorize_object(
        &self,
        principal: &str,
        action: &str,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<feiyun_oss::KeyCheck, String>;
}

/// The embedded host: the region's object service.
pub struct ObjectHost<M: MetaStore, B: BlobStore> {
    oss: Arc<ObjectService<M, B>>,
    /// Who owns a bucket created before accounts were recorded.
    default_account: String,
}

impl<M: MetaStore, B: BlobStore> ObjectHost<M, B> {
    /// Opens the host, creating the system bucket on first use.
    pub async fn open(
        oss: Arc<ObjectService<M, B>>,
        default_account: String,
    ) -> Result<Self, HostError> {
        oss.ensure_system_bucket(CODE_BUCKET)
            .await
            .map_err(failed)?;
        Ok(Self {
            oss,
            default_account,
        })
    }

    async fn read(
        &self,
        bucket: &str,
        key: &str,
        req: GetRequest,
        limit: usize,
    ) -> Result<(Vec<u8>, Option<String>), HostError> {
        let read = self
            .oss
            .get_object(bucket, key, &req)
            .await
            .map_err(failed)?;
        if read.content_length > limit as u64 {
            return Err(HostError::TooLarge(format!("{bucket}/{key}"), limit as u64));
        }
        let mut out = Vec::with_capacity(read.content_length as usize);
        let mut body = read
            .body
            .ok_or_else(|| HostError::Failed(format!("{key} has no body")))?;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.map_err(failed)?);
        }
        Ok((out, read.record.content_type.clone()))
    }

    async fn write(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: Option<String>,
    ) -> Result<(), HostError> {
        let stream = futures::stream::iter([Ok::<_, OssError>(body)]);
        self.oss
            .put_object(
                bucket,
                key,
                ObjectHeaders {
                    content_type,
                    ..Default::default()
                },
                WriteSpec::default(),
                stream,
                |_| Ok(()),
            )
            .await
            .map_err(failed)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl<M: MetaStore, B: BlobStore> Host for ObjectHost<M, B> {
    async fn put_code(&self, key: &str, code: Bytes) -> Result<(), HostError> {
        self.write(CODE_BUCKET, key, code, Some("application/wasm".into()))
            .await
    }

    async fn get_code(&self, key: &str, limit: usize) -> Result<Vec<u8>, HostError> {
        Ok(self
            .read(CODE_BUCKET, key, GetRequest::default(), limit)
            .await?
            .0)
    }

    async fn delete_code(&self, key: &str) -> Result<(), HostError> {
        self.oss
            .delete_object(CODE_BUCKET, key, None, false)
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn bucket_owner(&self, bucket: &str) -> Result<Option<String>, HostError> {
        if bucket.starts_with('.') {
            return Ok(None);
        }
        match self.oss.bucket(bucket).await {
            Ok(b) => Ok(Some(
                b.owner.unwrap_or_else(|| self.default_account.clone()),
            )),
            Err(OssError::NoSuchBucket) => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }

    async fn read_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        limit: usize,
        key_check: Option<feiyun_oss::KeyCheck>,
    ) -> Result<(Vec<u8>, Option<String>), HostError> {
        let version = match version {
            Some(v) => Some(feiyun_oss::VersionSelector::parse(v).map_err(failed)?),
            None => None,
        };
        let req = GetRequest {
            version,
            key_check,
            ..Default::default()
        };
        self.read(bucket, key, req, limit).await
    }

    async fn write_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: Option<String>,
    ) -> Result<(), HostError> {
        self.write(bucket, key, body, content_type).await
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>, HostError> {
        self.oss.events_after(after, limit).await.map_err(failed)
    }

    fn events_landed_below(&self) -> u64 {
        self.oss.events_landed_below()
    }

    async fn cursor(&self, consumer: &str) -> Result<u64, HostError> {
        self.oss.event_cursor(consumer).await.map_err(failed)
    }

    async fn set_cursor(&self, consumer: &str, id: u64) -> Result<(), HostError> {
        self.oss
            .set_event_cursor(consumer, id)
            .await
            .map_err(failed)
    }

    async fn skip_to(&self, consumer: &str, id: u64) -> Result<(), HostError> {
        self.oss.skip_events_to(consumer, id).await.map_err(failed)
    }
}

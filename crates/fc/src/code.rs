//! Where function code lives: objects in the region's own system bucket, so code is stored,
//! checksummed, encrypted (and later replicated and backed up) like any data.

use std::sync::Arc;

use bytes::Bytes;
use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;
use feiyun_oss::{GetRequest, ObjectHeaders, ObjectService, OssError, WriteSpec};
use futures::StreamExt;

/// The system bucket holding every function's code (a leading dot: no S3 client can name it).
pub const CODE_BUCKET: &str = ".feiyun-functions";

#[derive(Debug, thiserror::Error)]
#[error("function code store: {0}")]
pub struct CodeError(pub String);

/// Stores and fetches code by key. The embedded store is the object service; a test or
/// another deployment may keep code elsewhere.
#[async_trait::async_trait]
pub trait CodeStore: Send + Sync + 'static {
    async fn put(&self, key: &str, code: Bytes) -> Result<(), CodeError>;
    /// At most `limit` bytes; a larger object is an error.
    async fn get(&self, key: &str, limit: usize) -> Result<Vec<u8>, CodeError>;
    async fn delete(&self, key: &str) -> Result<(), CodeError>;
}

/// Function code as objects of [`CODE_BUCKET`].
pub struct ObjectCode<M: MetaStore, B: BlobStore>(pub Arc<ObjectService<M, B>>);

impl<M: MetaStore, B: BlobStore> ObjectCode<M, B> {
    /// Opens the store, creating the system bucket on first use.
    pub async fn open(oss: Arc<ObjectService<M, B>>) -> Result<Self, CodeError> {
        oss.ensure_system_bucket(CODE_BUCKET).await.map_err(err)?;
        Ok(Self(oss))
    }
}

fn err(e: OssError) -> CodeError {
    CodeError(e.to_string())
}

#[async_trait::async_trait]
impl<M: MetaStore, B: BlobStore> CodeStore for ObjectCode<M, B> {
    async fn put(&self, key: &str, code: Bytes) -> Result<(), CodeError> {
        let body = futures::stream::iter([Ok::<_, OssError>(code)]);
        self.0
            .put_object(
                CODE_BUCKET,
                key,
                ObjectHeaders {
                    content_type: Some("application/wasm".into()),
                    ..Default::default()
                },
                WriteSpec::default(),
                body,
                |_| Ok(()),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn get(&self, key: &str, limit: usize) -> Result<Vec<u8>, CodeError> {
        let read = self
            .0
            .get_object(CODE_BUCKET, key, &GetRequest::default())
            .await
            .map_err(err)?;
        if read.content_length > limit as u64 {
            return Err(CodeError(format!(
                "{key} is {} bytes, more than {limit}",
                read.content_length
            )));
        }
        let mut out = Vec::with_capacity(read.content_length as usize);
        let mut body = read
            .body
            .ok_or_else(|| CodeError(format!("{key} has no body")))?;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.map_err(err)?);
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), CodeError> {
        self.0
            .delete_object(CODE_BUCKET, key, None, false)
            .await
            .map_err(err)?;
        Ok(())
    }
}

//! Authentication: who signed the request.
//!
//! Until the identity service lands, the root credentials are the only identity and may do
//! everything. `s3s` verifies the SigV4 signature (headers, presigned URLs, aws-chunked
//! payloads) against the secret returned here; a policy check will plug in next to it as an
//! `s3s::access::S3Access` implementation, so every operation passes one authorization point.

use s3s::S3Result;
use s3s::auth::{S3Auth, SecretKey};
use subtle_eq::constant_time_eq;

pub struct RootAuth {
    access_key: String,
    secret_key: SecretKey,
}

impl RootAuth {
    pub fn new(access_key: String, secret_key: String) -> Self {
        Self {
            access_key,
            secret_key: SecretKey::from(secret_key),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for RootAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if constant_time_eq(access_key.as_bytes(), self.access_key.as_bytes()) {
            Ok(self.secret_key.clone())
        } else {
            Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            ))
        }
    }
}

mod subtle_eq {
    /// Compares without an early exit, so timing does not reveal how much of a key matched.
    pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

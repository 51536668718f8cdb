//! What depends on a key. The KMS does not know which objects its keys protect; the services
//! that seal data under them answer, through [`KeyUsers`], so an operator sees what deleting
//! a key would erase before scheduling it.

use std::future::Future;
use std::pin::Pin;

/// One bucket's dependence on a key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyUse {
    pub bucket: String,
    /// The bucket's default encryption names the key.
    pub bucket_default: bool,
    /// Object versions whose data keys the key seals, and their bytes.
    pub versions: u64,
    pub bytes: u64,
    /// Of those, versions whose data keys are still sealed under an older key version
    /// (re-wrapped in the background after a rotation).
    pub stale: u64,
}

pub type KeyUsersFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<KeyUse>, String>> + Send + 'a>>;

/// Implemented by the object service.
pub trait KeyUsers: Send + Sync + 'static {
    /// Every bucket that depends on the key `key_arn`, by a full walk of its records.
    fn key_users(&self, key_arn: String) -> KeyUsersFuture<'_>;
}

//! Identity and access: AWS policy documents and their evaluation, the identity model
//! (accounts, users, groups, roles, access keys) and the service that stores it.

pub mod bucket;
pub mod condition;
pub mod eval;
pub mod model;
pub mod oidc;
pub mod pattern;
pub mod policy;
pub mod relay;
pub mod screen;
mod sessions;
pub mod sigv4;
pub mod site;
pub mod store;
#[cfg(test)]
mod store_tests;
pub mod totp;

pub use eval::{DecidedBy, Decision, PolicySet, Principal, Request, RequestContext};
pub use policy::{Policy, PolicyError, PolicyKind};
pub use store::{Caller, EntityKind, Iam, IamState, RootKey};

/// Whether the request arrived over TLS (`aws:SecureTransport`); the server puts it in each
/// request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecureTransport(pub bool);

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    MalformedPolicy(String),
    #[error("{0}")]
    InvalidAuthenticationCode(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    PackedPolicyTooLarge(String),
    /// Site replication between regions whose default accounts differ.
    #[error("{0}")]
    SiteMismatch(String),
    /// Another change to identities (through another node of the region) landed between
    /// this one's read and its commit; the caller may retry.
    #[error("{0}")]
    ConcurrentModification(String),
    #[error("stored identity record is damaged: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Meta(#[from] feiyun_meta::MetaError),
}

impl From<PolicyError> for IamError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Malformed(m) => IamError::MalformedPolicy(m),
            PolicyError::TooLarge { .. } => IamError::LimitExceeded(e.to_string()),
        }
    }
}

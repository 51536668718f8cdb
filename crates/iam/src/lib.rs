//! Identity and access: AWS policy documents and their evaluation, the identity model
//! (accounts, users, groups, roles, keys, sessions) and the IAM/STS query API.

pub mod condition;
pub mod eval;
pub mod pattern;
pub mod policy;

pub use eval::{DecidedBy, Decision, PolicySet, Principal, Request, RequestContext};
pub use policy::{Policy, PolicyError, PolicyKind};

//! Configuration and the few types every Feiyun crate shares.
//!
//! This crate owns the layering of settings (flags > `FEIYUN_*` environment > TOML file >
//! defaults) and the root credential file. It has no I/O beyond reading the config file and
//! the credential file, and it never depends on another Feiyun crate.

pub mod background;
pub mod config;
pub mod credentials;
pub mod durable;
mod secret;

pub use config::{Config, ConfigError, ConfigOverrides, DEFAULT_NODE_DOWN_SECS, NodeConfig};
pub use credentials::{CredentialError, CredentialSource, RootCredentials};
pub use secret::Secret;

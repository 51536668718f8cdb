//! The identity records as stored (CBOR in the `iam` table) and the names, ids and ARNs
//! derived from them.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::IamError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    pub name: String,
    pub created: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub id: String,
    pub path: String,
    pub created: i64,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Inline policies by name (the document text as the client sent it).
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    /// Managed policy ARNs.
    #[serde(default)]
    pub attached: Vec<String>,
    /// Group names (as created).
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub id: String,
    pub path: String,
    pub created: i64,
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    #[serde(default)]
    pub attached: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleRecord {
    pub name: String,
    pub id: String,
    pub path: String,
    pub created: i64,
    pub trust_policy: String,
    #[serde(default)]
    pub description: Option<String>,
    pub max_session_secs: u32,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    #[serde(default)]
    pub attached: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManagedPolicyRecord {
    pub name: String,
    pub id: String,
    pub path: String,
    pub created: i64,
    pub updated: i64,
    #[serde(default)]
    pub description: Option<String>,
    pub document: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    pub access_key: String,
    pub secret: String,
    pub account: String,
    pub user: String,
    pub status: KeyStatus,
    pub created: i64,
}

impl std::fmt::Debug for AccessKeyRecord {
    /// Never prints the secret, so a stray `{:?}` cannot leak it into a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyRecord")
            .field("access_key", &self.access_key)
            .field("account", &self.account)
            .field("user", &self.user)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Limits AWS documents for IAM, enforced with `LimitExceeded` / `ValidationError`.
pub mod limits {
    pub const ACCESS_KEYS_PER_USER: usize = 2;
    pub const GROUPS_PER_USER: usize = 10;
    pub const MANAGED_POLICIES_PER_ENTITY: usize = 10;
    pub const TAGS_PER_ENTITY: usize = 50;
    pub const TAG_KEY_LEN: usize = 128;
    pub const TAG_VALUE_LEN: usize = 256;
    pub const USER_NAME_LEN: usize = 64;
    pub const ROLE_NAME_LEN: usize = 64;
    pub const GROUP_NAME_LEN: usize = 128;
    pub const POLICY_NAME_LEN: usize = 128;
    pub const PATH_LEN: usize = 512;
    pub const MIN_SESSION_SECS: u32 = 3600;
    pub const MAX_SESSION_SECS: u32 = 43200;
}

/// IAM names: letters, digits and `+=,.@_-`, within a length.
pub fn check_name(kind: &str, name: &str, max: usize) -> Result<(), IamError> {
    let ok = !name.is_empty()
        && name.chars().count() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "The specified value for {kind} is invalid. It must contain only alphanumeric characters and/or the following: +=,.@_- and be 1 to {max} characters long."
        )))
    }
}

/// `/` or `/a/b/`: starts and ends with a slash, printable ASCII in between.
pub fn check_path(path: &str) -> Result<(), IamError> {
    let ok = path.starts_with('/')
        && path.ends_with('/')
        && path.len() <= limits::PATH_LEN
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "The specified value for path is invalid: {path:?}. It must begin and end with / and contain only printable ASCII characters."
        )))
    }
}

pub fn check_tags(tags: &[Tag]) -> Result<(), IamError> {
    if tags.len() > limits::TAGS_PER_ENTITY {
        return Err(IamError::LimitExceeded(format!(
            "Cannot exceed quota for TagsPerEntity: {}",
            limits::TAGS_PER_ENTITY
        )));
    }
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > limits::TAG_KEY_LEN {
            return Err(IamError::Validation(format!(
                "Tag key must be 1 to {} characters: {:?}",
                limits::TAG_KEY_LEN,
                t.key
            )));
        }
        if t.value.chars().count() > limits::TAG_VALUE_LEN {
            return Err(IamError::Validation(format!(
                "Tag value must be at most {} characters",
                limits::TAG_VALUE_LEN
            )));
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(IamError::InvalidInput(
                "Tag keys starting with aws: are reserved".into(),
            ));
        }
    }
    let mut keys: Vec<String> = tags.iter().map(|t| t.key.to_lowercase()).collect();
    keys.sort();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(IamError::InvalidInput("Duplicate tag keys found".into()));
    }
    Ok(())
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// `AIDA…`, `AGPA…`, `AROA…`, `ANPA…`, `AKIA…`, `ASIA…`: a four-letter kind then random
/// base-32 characters, as AWS's ids look (tools sometimes check the prefix).
pub fn new_id(prefix: &str, len: usize) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        s.push(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char);
    }
    s
}

/// 40 characters of base64 alphabet, like AWS secret keys.
pub fn new_secret() -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    (0..40)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

pub fn new_account_id() -> String {
    let mut rng = rand::rng();
    // A leading non-zero digit keeps it 12 digits in any tool that parses it as a number.
    let first = rng.random_range(1..10u8);
    let mut s = first.to_string();
    for _ in 0..11 {
        s.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    s
}

pub fn user_arn(account: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:user{path}{name}")
}

pub fn group_arn(account: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:group{path}{name}")
}

pub fn role_arn(account: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role{path}{name}")
}

pub fn policy_arn(account: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:policy{path}{name}")
}

pub fn root_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

/// A virtual MFA device: its TOTP seed and, once enabled, the user it belongs to.
#[derive(Clone, Serialize, Deserialize)]
pub struct MfaDeviceRecord {
    pub name: String,
    pub path: String,
    pub account: String,
    #[serde(with = "serde_bytes")]
    pub seed: Vec<u8>,
    pub created: i64,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub enabled: Option<i64>,
    /// The last time step whose code was accepted; no code is accepted twice.
    #[serde(default)]
    pub last_step: Option<u64>,
}

impl MfaDeviceRecord {
    pub fn serial(&self) -> String {
        format!(
            "arn:aws:iam::{}:mfa{}{}",
            self.account, self.path, self.name
        )
    }
}

impl std::fmt::Debug for MfaDeviceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaDeviceRecord")
            .field("serial", &self.serial())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Who a set of temporary credentials speaks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum SessionSubject {
    /// AssumeRole / AssumeRoleWithWebIdentity.
    Role {
        role: String,
        session_name: String,
        #[serde(default)]
        federated: Option<String>,
    },
    /// GetSessionToken: the user's own permissions, typically with MFA.
    User { user: String },
}

/// Temporary credentials issued by STS.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub access_key: String,
    pub secret: String,
    pub token: String,
    pub account: String,
    pub subject: SessionSubject,
    pub issued: i64,
    pub expires: i64,
    #[serde(default)]
    pub session_policy: Option<String>,
    /// When the caller proved MFA for this session (unix seconds).
    #[serde(default)]
    pub mfa_at: Option<i64>,
    #[serde(default)]
    pub source_identity: Option<String>,
    /// The principal that asked for the session, which the per-principal quota counts.
    #[serde(default)]
    pub issued_by: Option<String>,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("access_key", &self.access_key)
            .field("subject", &self.subject)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// A long random session token, base64 like AWS's.
pub fn new_session_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 96];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    base64::engine::general_purpose::STANDARD.encode(b)
}

//! The identity service: owns the `iam` table, keeps an in-memory snapshot of it for the
//! request path (rebuilt after every change, so a disabled key fails on the very next
//! request), and performs every IAM change as one metadata commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use feiyun_meta::{MetaStore, Table, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::IamError;
use crate::eval::{Principal, RequestContext};
use crate::model::*;
use crate::policy::{Policy, PolicyKind, limits as plimits};

mod groups_roles;
mod mfa;
mod policies;
mod session_ops;
mod users;
pub use users::check_imported_key;

use session_ops::session_caller;

/// Key prefixes inside the `iam` table. Names are stored lowercased in keys because IAM
/// names are unique regardless of case; records keep the case they were created with.
const ACCOUNT: &str = "a";
const USER: &str = "u";
const GROUP: &str = "g";
const ROLE: &str = "r";
const POLICY: &str = "p";
const KEY: &str = "k";
const MFA: &str = "m";
const SESSION: &str = "s";
/// Most live STS sessions; beyond it AssumeRole/GetSessionToken answer LimitExceeded.
pub use crate::sessions::{MAX_SESSIONS, MAX_SESSIONS_PER_ISSUER};
const DEFAULT_ACCOUNT: &str = "default-account";
/// A random value every change of identities replaces, checked by the next: the nodes of
/// a region change identities through their own snapshots, and this makes a plan built on
/// a snapshot that missed another node's change fail instead of undoing it. (Not a kind
/// of row: site replication leaves it alone.)
const REVISION: &[u8] = b"revision";

/// A metadata row as stored: key and value bytes.
type RawRow = (Vec<u8>, Vec<u8>);

fn key(parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

fn entity_key(prefix: &str, account: &str, name: &str) -> Vec<u8> {
    key(&[prefix, account, &name.to_lowercase()])
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, IamError> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(|e| IamError::Corrupt(e.to_string()))?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, IamError> {
    ciborium::from_reader(b).map_err(|e| IamError::Corrupt(e.to_string()))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Which kind of identity an inline or attached policy belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    User,
    Group,
    Role,
}

impl EntityKind {
    fn prefix(self) -> &'static str {
        match self {
            EntityKind::User => USER,
            EntityKind::Group => GROUP,
            EntityKind::Role => ROLE,
        }
    }

    fn inline_limit(self) -> usize {
        match self {
            EntityKind::User => plimits::USER_INLINE_TOTAL,
            EntityKind::Group => plimits::GROUP_INLINE_TOTAL,
            EntityKind::Role => plimits::ROLE_INLINE_TOTAL,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Group => "group",
            EntityKind::Role => "role",
        }
    }
}

/// Who signed a request, resolved from its access key, with everything evaluation needs.
pub struct Caller {
    pub access_key: String,
    secret: String,
    pub principal: Principal,
    /// Identity policies (inline, attached, through groups), labelled for the audit record.
    pub policies: Vec<(String, Arc<Policy>)>,
    pub username: Option<String>,
    pub userid: String,
    pub tags: Vec<Tag>,
    /// For temporary credentials: the token every request must carry, and what the
    /// session adds (a session policy, MFA time, expiry, source identity).
    pub session: Option<SessionInfo>,
}

#[derive(Debug)]
pub struct SessionInfo {
    token: String,
    pub policy: Option<Arc<Policy>>,
    pub mfa_at: Option<i64>,
    pub issued: i64,
    pub expires: i64,
    pub source_identity: Option<String>,
}

impl Caller {
    /// Checks the session token a request carries against the one issued (constant time);
    /// long-term keys must carry none.
    pub fn token_matches(&self, presented: Option<&str>) -> bool {
        match (&self.session, presented) {
            (None, None) => true,
            (Some(s), Some(p)) => crate::sigv4::constant_time_eq(s.token.as_bytes(), p.as_bytes()),
            _ => false,
        }
    }

    pub fn expired(&self, now: i64) -> bool {
        self.session.as_ref().is_some_and(|s| now >= s.expires)
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Adds the principal's global condition keys (`aws:username`, `aws:userid`,
    /// `aws:PrincipalArn`, `aws:PrincipalTag/…`, …).
    pub fn fill_context(&self, cx: &mut RequestContext) {
        if let Some(u) = &self.username {
            cx.set_static("aws:username", u.clone());
        }
        cx.set_static("aws:userid", self.userid.clone());
        cx.set_static("aws:principalarn", self.principal.arn.clone());
        cx.set_static("aws:principalaccount", self.principal.account.clone());
        let kind = if self.principal.is_root {
            "Account"
        } else if self.principal.role_arn.is_some() {
            "AssumedRole"
        } else {
            "User"
        };
        cx.set_static("aws:principaltype", kind);
        for t in &self.tags {
            cx.set(&format!("aws:PrincipalTag/{}", t.key), t.value.clone());
        }
        // MFA keys exist only for temporary credentials, as in AWS: long-term keys leave
        // them absent, which `BoolIfExists` policies rely on.
        if let Some(s) = &self.session {
            let now = now();
            cx.set_static("aws:multifactorauthpresent", s.mfa_at.is_some().to_string());
            if let Some(at) = s.mfa_at {
                cx.set_static("aws:multifactorauthage", (now - at).max(0).to_string());
            }
            cx.set(
                "aws:TokenIssueTime",
                time::OffsetDateTime::from_unix_timestamp(s.issued)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default(),
            );
            if let Some(si) = &s.source_identity {
                cx.set_static("aws:sourceidentity", si.clone());
            }
        }
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("access_key", &self.access_key)
            .field("principal", &self.principal.arn)
            .finish_non_exhaustive()
    }
}

/// Everything in the `iam` table, decoded, plus the callers built from it.
#[derive(Default)]
pub struct IamState {
    pub default_account: String,
    pub accounts: BTreeMap<String, AccountRecord>,
    /// By (account, lowercase name).
    pub users: BTreeMap<(String, String), UserRecord>,
    pub groups: BTreeMap<(String, String), GroupRecord>,
    pub roles: BTreeMap<(String, String), RoleRecord>,
    pub policies: BTreeMap<(String, String), ManagedPolicyRecord>,
    pub keys: BTreeMap<String, AccessKeyRecord>,
    /// Virtual MFA devices by (account, lowercase name).
    pub mfa: BTreeMap<(String, String), MfaDeviceRecord>,
    callers: HashMap<String, Arc<Caller>>,
}

impl IamState {
    pub fn user(&self, account: &str, name: &str) -> Result<&UserRecord, IamError> {
        self.users
            .get(&(account.to_owned(), name.to_lowercase()))
            .ok_or_else(|| no_such("user", name))
    }

    pub fn group(&self, account: &str, name: &str) -> Result<&GroupRecord, IamError> {
        self.groups
            .get(&(account.to_owned(), name.to_lowercase()))
            .ok_or_else(|| no_such("group", name))
    }

    pub fn role(&self, account: &str, name: &str) -> Result<&RoleRecord, IamError> {
        self.roles
            .get(&(account.to_owned(), name.to_lowercase()))
            .ok_or_else(|| no_such("role", name))
    }

    /// The caller behind a key; an expired session has none (it is swept later).
    pub fn caller(&self, access_key: &str) -> Option<Arc<Caller>> {
        self.callers
            .get(access_key)
            .filter(|c| !c.expired(now()))
            .cloned()
    }

    pub fn mfa_device(&self, account: &str, serial: &str) -> Result<&MfaDeviceRecord, IamError> {
        let name = serial.rsplit('/').next().unwrap_or(serial);
        self.mfa
            .get(&(account.to_owned(), name.to_lowercase()))
            .filter(|d| d.serial() == serial || !serial.starts_with("arn:"))
            .ok_or_else(|| IamError::NoSuchEntity(format!("MFA device {serial} cannot be found.")))
    }

    /// The identity policies of a role, labelled.
    pub fn role_policies(&self, r: &RoleRecord) -> Vec<(String, Arc<Policy>)> {
        let mut out = Vec::new();
        self.compile_entity(
            &mut out,
            &format!("role/{}", r.name),
            &r.inline,
            &r.attached,
        );
        out
    }

    /// The document of a managed policy by ARN: the account's own or a built-in AWS one.
    pub fn managed_policy(&self, arn: &str) -> Option<ManagedPolicyView> {
        if let Some(name) = arn.strip_prefix("arn:aws:iam::aws:policy/") {
            let name = name.rsplit('/').next().unwrap_or(name);
            return AWS_MANAGED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(n, doc)| ManagedPolicyView {
                    arn: arn.to_owned(),
                    name: (*n).to_owned(),
                    id: format!("ANPAFEIYUNAWS{}", n.len()),
                    path: "/".into(),
                    document: (*doc).to_owned(),
                    created: 0,
                    updated: 0,
                    description: None,
                    aws_managed: true,
                });
        }
        let parsed = crate::pattern::Arn::parse(arn)?;
        let name = parsed.resource.strip_prefix("policy")?.rsplit('/').next()?;
        let r = self
            .policies
            .get(&(parsed.account.to_owned(), name.to_lowercase()))?;
        (policy_arn(parsed.account, &r.path, &r.name) == arn).then(|| ManagedPolicyView {
            arn: arn.to_owned(),
            name: r.name.clone(),
            id: r.id.clone(),
            path: r.path.clone(),
            document: r.document.clone(),
            created: r.created,
            updated: r.updated,
            description: r.description.clone(),
            aws_managed: false,
        })
    }

    /// How many users, groups and roles attach `arn`.
    pub fn attachment_count(&self, arn: &str) -> usize {
        self.users
            .values()
            .filter(|u| u.attached.iter().any(|a| a == arn))
            .count()
            + self
                .groups
                .values()
                .filter(|g| g.attached.iter().any(|a| a == arn))
                .count()
            + self
                .roles
                .values()
                .filter(|r| r.attached.iter().any(|a| a == arn))
                .count()
    }

    pub fn group_members(&self, account: &str, group: &str) -> Vec<&UserRecord> {
        self.users
            .iter()
            .filter(|((a, _), u)| {
                a == account && u.groups.iter().any(|g| g.eq_ignore_ascii_case(group))
            })
            .map(|(_, u)| u)
            .collect()
    }

    fn compile_user(&self, account: &str, u: &UserRecord) -> Vec<(String, Arc<Policy>)> {
        let mut out = Vec::new();
        self.compile_entity(
            &mut out,
            &format!("user/{}", u.name),
            &u.inline,
            &u.attached,
        );
        for g in &u.groups {
            if let Ok(g) = self.group(account, g) {
                self.compile_entity(
                    &mut out,
                    &format!("group/{}", g.name),
                    &g.inline,
                    &g.attached,
                );
            }
        }
        out
    }

    fn compile_entity(
        &self,
        out: &mut Vec<(String, Arc<Policy>)>,
        label: &str,
        inline: &BTreeMap<String, String>,
        attached: &[String],
    ) {
        for (name, doc) in inline {
            match Policy::parse(doc, PolicyKind::Identity) {
                Ok(p) => out.push((format!("{label}:inline/{name}"), Arc::new(p))),
                Err(e) => {
                    tracing::error!(label, name, error = %e, "stored inline policy no longer parses; ignored")
                }
            }
        }
        for arn in attached {
            match self
                .managed_policy(arn)
                .map(|m| Policy::parse(&m.document, PolicyKind::Identity))
            {
                Some(Ok(p)) => out.push((arn.clone(), Arc::new(p))),
                Some(Err(e)) => {
                    tracing::error!(arn, error = %e, "stored managed policy no longer parses; ignored")
                }
                None => tracing::warn!(arn, label, "attached policy does not exist; ignored"),
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ManagedPolicyView {
    pub arn: String,
    pub name: String,
    pub id: String,
    pub path: String,
    pub document: String,
    pub created: i64,
    pub updated: i64,
    pub description: Option<String>,
    pub aws_managed: bool,
}

fn no_such(kind: &str, name: &str) -> IamError {
    IamError::NoSuchEntity(format!("The {kind} with name {name} cannot be found."))
}

/// The AWS managed policies tools attach most, so tutorials and Terraform modules that name
/// them work unchanged.
const AWS_MANAGED: &[(&str, &str)] = &[
    (
        "AdministratorAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    ),
    (
        "AmazonS3FullAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","s3-object-lambda:*"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonS3ReadOnlyAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:Get*","s3:List*","s3:Describe*","s3-object-lambda:Get*","s3-object-lambda:List*"],"Resource":"*"}]}"#,
    ),
    (
        "IAMFullAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:*","organizations:DescribeAccount","organizations:DescribeOrganization","organizations:DescribeOrganizationalUnit","organizations:DescribePolicy","organizations:ListChildren","organizations:ListParents","organizations:ListPoliciesForTarget","organizations:ListRoots","organizations:ListPolicies","organizations:ListTargetsForPolicy"],"Resource":"*"}]}"#,
    ),
    (
        "IAMReadOnlyAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:GenerateCredentialReport","iam:GenerateServiceLastAccessedDetails","iam:Get*","iam:List*","iam:SimulateCustomPolicy","iam:SimulatePrincipalPolicy"],"Resource":"*"}]}"#,
    ),
];

/// What CreateRole is given.
pub struct NewRole<'a> {
    pub name: &'a str,
    pub path: Option<&'a str>,
    pub trust_policy: &'a str,
    pub description: Option<String>,
    pub max_session_secs: Option<u32>,
    pub tags: Vec<Tag>,
}

/// The root credentials of the default account, from the credential file.
pub struct RootKey {
    pub access_key: String,
    pub secret_key: String,
}

pub struct Iam<M> {
    meta: Arc<M>,
    /// Its master key seals the records that hold secrets.
    kms: Arc<feiyun_kms::Kms<M>>,
    root: RootKey,
    state: RwLock<Arc<IamState>>,
    /// The identities' revision the snapshot was built from (see [`REVISION`]).
    revision: std::sync::Mutex<Option<Vec<u8>>>,
    writer: tokio::sync::Mutex<()>,
    /// Live STS sessions, outside the snapshot (see `sessions`).
    sessions: RwLock<crate::sessions::Sessions>,
    /// Recent wrong MFA codes per device.
    mfa_failures: std::sync::Mutex<HashMap<(String, String), (u32, i64)>>,
}

/// Wrong codes a device accepts within [`MFA_WINDOW_SECS`] before it refuses every code (a
/// six-digit code falls to about a million guesses; this makes that take years).
pub const MAX_MFA_FAILURES: u32 = 5;
pub const MFA_WINDOW_SECS: i64 = 300;

impl<M: MetaStore> Iam<M> {
    /// Loads the identities, creating the default account on first start.
    /// `account_id` names the default account when it is first created (random if `None`).
    pub async fn open(
        meta: Arc<M>,
        root: RootKey,
        kms: Arc<feiyun_kms::Kms<M>>,
        account_id: Option<String>,
    ) -> Result<Arc<Self>, IamError> {
        let iam = Arc::new(Iam {
            meta,
            kms,
            root,
            state: RwLock::new(Arc::new(IamState::default())),
            revision: std::sync::Mutex::new(None),
            writer: tokio::sync::Mutex::new(()),
            sessions: RwLock::new(crate::sessions::Sessions::default()),
            mfa_failures: std::sync::Mutex::default(),
        });
        if iam
            .meta
            .get(Table::Iam, DEFAULT_ACCOUNT.as_bytes())?
            .is_none()
        {
            let id = account_id.unwrap_or_else(new_account_id);
            let mut b = WriteBatch::new();
            b.check_absent(Table::Iam, DEFAULT_ACCOUNT.as_bytes());
            b.put(
                Table::Iam,
                DEFAULT_ACCOUNT.as_bytes(),
                id.as_bytes().to_vec(),
            );
            b.put(
                Table::Iam,
                key(&[ACCOUNT, &id]),
                encode(&AccountRecord {
                    id: id.clone(),
                    name: "default".into(),
                    created: now(),
                })?,
            );
            match iam.meta.commit(b).await {
                // Another node of the region, starting at the same moment, made it first.
                Ok(_) | Err(feiyun_meta::MetaError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut plain = iam.reload()?;
        plain.extend(iam.load_sessions()?);
        iam.seal_plain_rows(plain).await?;
        Ok(iam)
    }

    /// Rebuilds the snapshot and reads the stored sessions again: another node of the
    /// region changed an identity or issued a session.
    pub fn refresh(&self) -> Result<(), IamError> {
        self.reload()?;
        self.load_sessions()?;
        Ok(())
    }

    /// Reads the stored STS sessions again: another node issued one.
    pub fn refresh_sessions(&self) -> Result<(), IamError> {
        self.load_sessions()?;
        Ok(())
    }

    /// Records that hold secrets (access keys, STS sessions, MFA seeds) are stored sealed by
    /// the region master key and bound to their row, so a copy of the metadata file without
    /// the master key yields no credential, and a sealed value moved to another row fails.
    fn sealed<T: Serialize>(&self, row: &[u8], v: &T) -> Result<Vec<u8>, IamError> {
        self.kms
            .master()
            .seal(row, &encode(v)?)
            .map_err(|e| IamError::Corrupt(e.to_string()))
    }

    /// A stored value in plaintext (sealed rows opened).
    pub(crate) fn open_row(&self, row: &[u8], v: &[u8]) -> Result<Vec<u8>, IamError> {
        if feiyun_kms::MasterKey::is_sealed(v) {
            self.kms
                .master()
                .unseal(row, v)
                .map_err(|e| IamError::Corrupt(e.to_string()))
        } else {
            Ok(v.to_vec())
        }
    }

    pub(crate) fn seal_row(&self, row: &[u8], plain: &[u8]) -> Result<Vec<u8>, IamError> {
        self.kms
            .master()
            .seal(row, plain)
            .map_err(|e| IamError::Corrupt(e.to_string()))
    }

    /// Every row of the identity table, as stored.
    pub(crate) fn raw_rows(&self) -> Result<Vec<RawRow>, IamError> {
        let mut out = Vec::new();
        let mut start: Vec<u8> = Vec::new();
        loop {
            let page = self.meta.scan(Table::Iam, &start, None, 1000)?;
            let Some(last) = page.last() else { break };
            start = last.0.clone();
            start.push(0);
            out.extend(page);
        }
        Ok(out)
    }

    /// A change planned from the stored rows rather than the snapshot (site imports).
    pub(crate) async fn change_raw<R>(
        &self,
        plan: impl FnOnce(Vec<RawRow>, &mut WriteBatch) -> Result<R, IamError>,
    ) -> Result<R, IamError> {
        let _one_writer = self.writer.lock().await;
        let stored = self.meta.get(Table::Iam, REVISION)?;
        let mut batch = WriteBatch::new();
        let r = plan(self.raw_rows()?, &mut batch)?;
        self.revise(&mut batch, stored);
        match self.meta.commit(batch).await {
            Err(feiyun_meta::MetaError::Conflict(_)) => {
                self.reload()?;
                return Err(IamError::ConcurrentModification(
                    "Identities were changed by another request at the same time; retry.".into(),
                ));
            }
            r => r?,
        }
        self.reload()?;
        Ok(r)
    }

    /// Opens a secret-holding record; `plain` collects rows written before sealing existed.
    fn unsealed<T: DeserializeOwned>(
        &self,
        row: &[u8],
        v: &[u8],
        plain: &mut Vec<RawRow>,
    ) -> Result<T, IamError> {
        if feiyun_kms::MasterKey::is_sealed(v) {
            let bytes = self
                .kms
                .master()
                .unseal(row, v)
                .map_err(|e| IamError::Corrupt(e.to_string()))?;
            decode(&bytes)
        } else {
            plain.push((row.to_vec(), v.to_vec()));
            decode(v)
        }
    }

    /// Seals, once, the secret-holding rows an older version stored in plaintext.
    async fn seal_plain_rows(&self, rows: Vec<RawRow>) -> Result<(), IamError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut b = WriteBatch::new();
        for (row, v) in &rows {
            let sealed = self.seal_row(row, v)?;
            b.check_value(Table::Iam, row.clone(), Some(v.clone()));
            b.put(Table::Iam, row.clone(), sealed);
        }
        self.meta.commit(b).await?;
        tracing::info!(
            rows = rows.len(),
            "sealed IAM secrets stored by an older version"
        );
        Ok(())
    }

    pub fn snapshot(&self) -> Arc<IamState> {
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn default_account(&self) -> String {
        self.snapshot().default_account.clone()
    }

    /// The caller behind an access key, or `None` when the key is unknown or inactive.
    pub fn caller(&self, access_key: &str) -> Option<Arc<Caller>> {
        self.snapshot().caller(access_key).or_else(|| {
            self.sessions_read()
                .caller(access_key)
                .filter(|c| !c.expired(now()))
        })
    }

    /// The caller a principal ARN stands for as it is now — a user's or role's current
    /// policies, or an account's root — for work the region does on its behalf (function
    /// triggers). `None` when it no longer exists. `acting` names the work, for a role
    /// (`assumed-role/ROLE/ACTING`).
    pub fn principal_caller(&self, arn: &str, acting: &str) -> Option<Arc<Caller>> {
        let a = crate::pattern::Arn::parse(arn)?;
        let st = self.snapshot();
        let account = a.account.to_owned();
        let name = a.resource.rsplit('/').next().unwrap_or_default();
        let base = |principal: Principal, policies, userid: String, tags| Caller {
            access_key: String::new(),
            secret: String::new(),
            principal,
            policies,
            username: None,
            userid,
            tags,
            session: None,
        };
        let caller = if a.resource == "root" {
            base(
                Principal {
                    account: account.clone(),
                    arn: root_arn(&account),
                    role_arn: None,
                    is_root: true,
                    federated: None,
                },
                Vec::new(),
                account.clone(),
                Vec::new(),
            )
        } else if a.resource.starts_with("user/") {
            let u = st.user(&account, name).ok()?;
            if user_arn(&account, &u.path, &u.name) != arn {
                return None;
            }
            let mut c = base(
                Principal {
                    account: account.clone(),
                    arn: arn.to_owned(),
                    role_arn: None,
                    is_root: false,
                    federated: None,
                },
                st.compile_user(&account, u),
                u.id.clone(),
                u.tags.clone(),
            );
            c.username = Some(u.name.clone());
            c
        } else if a.resource.starts_with("role/") {
            let r = st.role(&account, name).ok()?;
            if role_arn(&account, &r.path, &r.name) != arn {
                return None;
            }
            base(
                Principal {
                    account: account.clone(),
                    arn: format!("arn:aws:sts::{account}:assumed-role/{}/{acting}", r.name),
                    role_arn: Some(arn.to_owned()),
                    is_root: false,
                    federated: None,
                },
                st.role_policies(r),
                format!("{}:{acting}", r.id),
                r.tags.clone(),
            )
        } else {
            return None;
        };
        Some(Arc::new(caller))
    }

    fn sessions_read(&self) -> std::sync::RwLockReadGuard<'_, crate::sessions::Sessions> {
        self.sessions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions_write(&self) -> std::sync::RwLockWriteGuard<'_, crate::sessions::Sessions> {
        self.sessions.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the stored STS sessions (at open); returns rows still in plaintext.
    fn load_sessions(&self) -> Result<Vec<RawRow>, IamError> {
        let mut plain = Vec::new();
        let prefix = key(&[SESSION, ""]);
        let end = feiyun_meta::prefix_end(&prefix);
        let rows = feiyun_meta::scan_bounded(
            &*self.meta,
            Table::Iam,
            &prefix,
            end.as_deref(),
            // Expired rows wait for the sweep: allow a backlog beyond the live quota.
            MAX_SESSIONS * 4,
        )?;
        let st = self.snapshot();
        let mut sessions = self.sessions_write();
        for (k, v) in &rows {
            let r: SessionRecord = self.unsealed(k, v, &mut plain)?;
            let caller = session_caller(&st, &r);
            sessions.insert(r, caller);
        }
        Ok(plain)
    }

    /// Rebuilds the snapshot; returns the secret-holding rows still stored in plaintext.
    fn reload(&self) -> Result<Vec<RawRow>, IamError> {
        // Read before the rows: a change landing in between makes the next change reload.
        let revision = self.meta.get(Table::Iam, REVISION)?;
        let mut plain = Vec::new();
        let mut st = IamState::default();
        if let Some(id) = self.meta.get(Table::Iam, DEFAULT_ACCOUNT.as_bytes())? {
            st.default_account = String::from_utf8_lossy(&id).into_owned();
        }
        for (k, v) in &self.raw_rows()? {
            let mut parts = k.split(|b| *b == 0);
            let kind = parts.next().unwrap_or_default();
            let account = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            match kind {
                b"a" => {
                    st.accounts.insert(account, decode(v)?);
                }
                b"u" => {
                    st.users.insert((account, name), decode(v)?);
                }
                b"g" => {
                    st.groups.insert((account, name), decode(v)?);
                }
                b"r" => {
                    st.roles.insert((account, name), decode(v)?);
                }
                b"p" => {
                    st.policies.insert((account, name), decode(v)?);
                }
                b"k" => {
                    let r: AccessKeyRecord = self.unsealed(k, v, &mut plain)?;
                    st.keys.insert(r.access_key.clone(), r);
                }
                b"m" => {
                    let r: MfaDeviceRecord = self.unsealed(k, v, &mut plain)?;
                    st.mfa.insert((account, name), r);
                }
                // Sessions live apart (`sessions`), rebuilt below from memory.
                _ => {}
            }
        }
        let mut callers = HashMap::new();
        let account = st.default_account.clone();
        callers.insert(
            self.root.access_key.clone(),
            Arc::new(Caller {
                access_key: self.root.access_key.clone(),
                secret: self.root.secret_key.clone(),
                principal: Principal {
                    account: account.clone(),
                    arn: root_arn(&account),
                    role_arn: None,
                    is_root: true,
                    federated: None,
                },
                policies: Vec::new(),
                username: None,
                userid: account.clone(),
                tags: Vec::new(),
                session: None,
            }),
        );
        for k in st.keys.values().filter(|k| k.status == KeyStatus::Active) {
            let Ok(u) = st.user(&k.account, &k.user) else {
                continue;
            };
            // A user's key never stands in for the root's (one imported or pushed by a
            // peer before this region's root key was changed to the same id).
            if k.access_key == self.root.access_key {
                tracing::error!(key = %k.access_key, "a user's access key has the root's id; ignored");
                continue;
            }
            callers.insert(
                k.access_key.clone(),
                Arc::new(Caller {
                    access_key: k.access_key.clone(),
                    secret: k.secret.clone(),
                    principal: Principal {
                        account: k.account.clone(),
                        arn: user_arn(&k.account, &u.path, &u.name),
                        role_arn: None,
                        is_root: false,
                        federated: None,
                    },
                    policies: st.compile_user(&k.account, u),
                    username: Some(u.name.clone()),
                    userid: u.id.clone(),
                    tags: u.tags.clone(),
                    session: None,
                }),
            );
        }
        st.callers = callers;
        // The roles and users sessions stand for may have changed: recompile them and swap
        // the snapshot under one lock, which a new session's caller is compiled under too.
        let mut sessions = self.sessions_write();
        sessions.recompile(|r| session_caller(&st, r));
        let st = Arc::new(st);
        match self.state.write() {
            Ok(mut g) => *g = st,
            Err(p) => *p.into_inner() = st,
        }
        *self.revision.lock().unwrap_or_else(|p| p.into_inner()) = revision;
        drop(sessions);
        Ok(plain)
    }

    /// Runs one change: `plan` reads the current snapshot and fills a batch; the batch is
    /// committed and the snapshot rebuilt before the next change may start. The snapshot is
    /// first brought up to the stored revision, and the commit checks that revision, so a
    /// change made meanwhile through another node of the region is never overwritten by a
    /// plan that did not see it (the loser gets `ConcurrentModification`).
    async fn change<R>(
        &self,
        plan: impl FnOnce(&IamState, &mut WriteBatch) -> Result<R, IamError>,
    ) -> Result<R, IamError> {
        let _one_writer = self.writer.lock().await;
        let stored = self.meta.get(Table::Iam, REVISION)?;
        if *self.revision.lock().unwrap_or_else(|p| p.into_inner()) != stored {
            self.reload()?;
        }
        let st = self.snapshot();
        let mut batch = WriteBatch::new();
        let r = plan(&st, &mut batch)?;
        self.revise(&mut batch, stored);
        match self.meta.commit(batch).await {
            Err(feiyun_meta::MetaError::Conflict(_)) => {
                self.reload()?;
                return Err(IamError::ConcurrentModification(
                    "Identities were changed by another request at the same time; retry.".into(),
                ));
            }
            r => r?,
        }
        self.reload()?;
        Ok(r)
    }

    /// Makes `batch` move the revision on from `stored`, which it checks.
    fn revise(&self, batch: &mut WriteBatch, stored: Option<Vec<u8>>) {
        batch
            .check_value(Table::Iam, REVISION.to_vec(), stored)
            .put(
                Table::Iam,
                REVISION.to_vec(),
                rand::random::<u128>().to_be_bytes().to_vec(),
            );
    }

    // ---- MFA devices ----

    // ---- STS sessions ----

    // ---- users ----

    // ---- access keys ----

    // ---- groups ----

    // ---- roles ----

    // ---- inline policies (users, groups, roles alike) ----

    // ---- managed policies ----
}

fn merge_tags(existing: &[Tag], new: Vec<Tag>) -> Result<Vec<Tag>, IamError> {
    check_tags(&new)?;
    let mut out: Vec<Tag> = existing
        .iter()
        .filter(|t| !new.iter().any(|n| n.key == t.key))
        .cloned()
        .collect();
    out.extend(new);
    check_tags(&out)?;
    Ok(out)
}

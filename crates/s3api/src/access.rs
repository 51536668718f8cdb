//! Authorization of S3 requests: maps each S3 operation to the IAM actions and resource ARNs
//! AWS checks for it (including the non-obvious ones: HeadBucket is `s3:ListBucket`, a
//! versioned GET is `s3:GetObjectVersion`, a copy also reads its source), fills the S3
//! condition keys from the request, and asks the policy evaluator. The single authorization
//! point every S3 operation passes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use feiyun_audit::Decided;
use feiyun_iam::bucket::{
    POLICY_CONFIG, PUBLIC_ACCESS_BLOCK_CONFIG, PublicAccessBlock, is_public, parse_bucket_policy,
};
use feiyun_iam::screen::AuthKind;
use feiyun_iam::{Caller, Decision, Iam, Policy, PolicySet, Request, RequestContext};
use feiyun_oss::{BlobStore, MetaStore, ObjectService, VersionSelector};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;

mod actions;
mod context;

pub use actions::{bucket_arn, object_arn, required_actions};
use actions::{header, query_value};
use context::request_context;

/// The client's address, inserted by the server (for `aws:SourceIp`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Filled in by the access check with the operation s3s resolved, for metrics.
#[derive(Clone, Default)]
pub struct OpSlot(pub Arc<Mutex<Option<String>>>);

/// Where a request that started work came from: its address and whether it came over TLS.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub peer: SocketAddr,
    pub secure: bool,
}

fn origin_context(origin: Option<Origin>) -> RequestContext {
    let mut cx = RequestContext::default();
    if let Some(o) = origin {
        cx.set_static("aws:sourceip", o.peer.ip().to_string());
        cx.set_static(
            "aws:securetransport",
            if o.secure { "true" } else { "false" },
        );
        let now = time::OffsetDateTime::now_utc();
        cx.set_static("aws:epochtime", now.unix_timestamp().to_string());
        if let Ok(t) = now.format(&time::format_description::well_known::Rfc3339) {
            cx.set_static("aws:currenttime", t);
        }
    }
    cx
}

/// What an authorized request may still need: DeleteObjects checks each key on its own.
#[derive(Clone)]
pub struct Grant {
    /// `None` for an anonymous request.
    caller: Option<Arc<Caller>>,
    bucket: Option<Arc<BucketAccess>>,
    context: Arc<RequestContext>,
}

impl Grant {
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        decide(
            self.caller.as_deref(),
            self.bucket.as_deref(),
            action,
            resource,
            &self.context,
        )
    }

    /// DeleteObjects authorizes each key as a DeleteObject request for it would be: the same
    /// actions, and the key's own tags when a policy conditions on `s3:ExistingObjectTag`.
    pub async fn decide_delete<M: MetaStore, B: BlobStore>(
        &self,
        oss: &ObjectService<M, B>,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
        bypass: bool,
    ) -> Decision {
        let arn = object_arn(bucket, key);
        let action = if version.is_some() {
            "s3:DeleteObjectVersion"
        } else {
            "s3:DeleteObject"
        };
        let wants_tags = |p: &Policy| p.mentions_key_prefix("s3:existingobjecttag/");
        let tagged = self
            .caller
            .as_ref()
            .is_some_and(|c| c.policies.iter().any(|(_, p)| wants_tags(p)))
            || self
                .bucket
                .as_ref()
                .and_then(|b| b.policy.as_deref())
                .is_some_and(wants_tags);
        let keyed;
        let context = if tagged {
            let mut cx = (*self.context).clone();
            if let Ok((tags, _)) = oss.object_tags(bucket, key, version).await {
                for (k, v) in tags {
                    cx.set(&format!("s3:ExistingObjectTag/{k}"), v);
                }
            }
            keyed = cx;
            &keyed
        } else {
            &*self.context
        };
        let decide = |action: &str| {
            decide(
                self.caller.as_deref(),
                self.bucket.as_deref(),
                action,
                &arn,
                context,
            )
        };
        let d = decide(action);
        if !d.allowed() || !bypass {
            return d;
        }
        decide("s3:BypassGovernanceRetention")
    }

    /// The KMS permission check of this grant (for reading SSE-KMS objects as its caller).
    pub fn key_check(&self) -> feiyun_oss::KeyCheck {
        let grant = self.clone();
        feiyun_oss::KeyCheck(Arc::new(move |action, arn| {
            grant.decide(action, arn).allowed()
        }))
    }

    /// The account a new bucket belongs to: the caller's.
    pub fn account(&self) -> Option<&str> {
        self.caller.as_ref().map(|c| c.principal.account.as_str())
    }
}

/// A bucket's owner, policy and public access block, as authorization needs them.
#[derive(Debug)]
pub struct BucketAccess {
    pub owner: String,
    pub policy: Option<Arc<Policy>>,
    /// A stored policy that no longer parses: only the owner's root may act until it is
    /// replaced (failing closed, since the broken policy might have denied something).
    pub broken_policy: bool,
    pub public_access_block: Option<PublicAccessBlock>,
}

impl BucketAccess {
    /// The policy as evaluation sees it: a public policy is ignored for callers outside the
    /// owning account when RestrictPublicBuckets is on.
    fn effective_policy(&self, same_account: bool) -> Option<&Policy> {
        let p = self.policy.as_deref()?;
        let restricted = self
            .public_access_block
            .is_some_and(|b| b.restrict_public_buckets);
        if restricted && !same_account && is_public(p) {
            // Only the policy's grants are dropped; its denies still bind.
            return None;
        }
        Some(p)
    }
}

/// Most buckets whose access settings are cached; past it the cache starts over.
const MAX_CACHED_BUCKETS: usize = 100_000;

/// Bucket access settings by bucket name, shared by the access check (reads) and the bucket
/// policy / public access block / bucket lifecycle operations (which invalidate). One
/// process writes them, so invalidating here keeps the cache exact.
#[derive(Default)]
pub struct BucketAccessCache {
    map: RwLock<HashMap<String, Arc<BucketAccess>>>,
}

impl BucketAccessCache {
    pub fn invalidate(&self, bucket: &str) {
        if let Ok(mut m) = self.map.write() {
            m.remove(bucket);
        }
    }

    /// Forgets every bucket: another node of the region changed bucket settings.
    pub fn clear(&self) {
        if let Ok(mut m) = self.map.write() {
            m.clear();
        }
    }

    /// `None` when the bucket does not exist (the operation then reports that itself).
    pub async fn get<M: MetaStore, B: BlobStore>(
        &self,
        oss: &ObjectService<M, B>,
        bucket: &str,
        default_account: &str,
    ) -> Option<Arc<BucketAccess>> {
        if let Some(hit) = self.map.read().ok().and_then(|m| m.get(bucket).cloned()) {
            return Some(hit);
        }
        // A bucket that does not exist has no access settings; one whose settings cannot
        // be read right now is closed to everyone (not cached): a policy that could not be
        // read might have denied, and the owner is unknown.
        let unreadable = || {
            Some(Arc::new(BucketAccess {
                owner: String::new(),
                policy: None,
                broken_policy: true,
                public_access_block: None,
            }))
        };
        let record = match oss.bucket(bucket).await {
            Ok(r) => r,
            Err(feiyun_oss::OssError::NoSuchBucket) => return None,
            Err(e) => {
                tracing::error!(bucket, error = %e, "bucket settings cannot be read; refusing");
                return unreadable();
            }
        };
        let (Ok(policy_text), Ok(pab)) = (
            oss.bucket_config(bucket, POLICY_CONFIG).await,
            oss.bucket_config(bucket, PUBLIC_ACCESS_BLOCK_CONFIG).await,
        ) else {
            tracing::error!(
                bucket,
                "bucket policy or public access block cannot be read; refusing"
            );
            return unreadable();
        };
        let (policy, broken_policy) = match policy_text {
            None => (None, false),
            Some(bytes) => match parse_bucket_policy(bucket, &String::from_utf8_lossy(&bytes)) {
                Ok(p) => (Some(Arc::new(p)), false),
                Err(e) => {
                    tracing::error!(bucket, error = %e, "stored bucket policy does not parse; only the owner's root may act");
                    (None, true)
                }
            },
        };
        let access = Arc::new(BucketAccess {
            owner: record.owner.unwrap_or_else(|| default_account.to_owned()),
            policy,
            broken_policy,
            public_access_block: pab.as_deref().and_then(PublicAccessBlock::decode),
        });
        if let Ok(mut m) = self.map.write() {
            if m.len() >= MAX_CACHED_BUCKETS {
                m.clear();
            }
            m.insert(bucket.to_owned(), access.clone());
        }
        Some(access)
    }
}

/// Looks up the secret of an access key for s3s's signature check.
pub struct IamAuth<M> {
    iam: Arc<Iam<M>>,
}

impl<M> IamAuth<M> {
    pub fn new(iam: Arc<Iam<M>>) -> Self {
        Self { iam }
    }
}

#[async_trait::async_trait]
impl<M: MetaStore> S3Auth for IamAuth<M> {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<SecretKey> {
        match self.iam.caller(access_key) {
            Some(c) => Ok(SecretKey::from(c.secret().to_owned())),
            None if self.iam.session_expired(access_key) => Err(s3s::s3_error!(
                ExpiredToken,
                "The provided token has expired."
            )),
            None => Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

pub struct Authorize<M, B> {
    iam: Arc<Iam<M>>,
    /// Owner of buckets made before accounts existed; fixed at first start.
    default_account: String,
    /// For `s3:ExistingObjectTag/…` (read only when a policy mentions it) and bucket settings.
    oss: Arc<ObjectService<M, B>>,
    buckets: Arc<BucketAccessCache>,
}

impl<M: MetaStore, B> Authorize<M, B> {
    pub fn new(
        iam: Arc<Iam<M>>,
        oss: Arc<ObjectService<M, B>>,
        buckets: Arc<BucketAccessCache>,
    ) -> Self {
        Self {
            default_account: iam.default_account(),
            iam,
            oss,
            buckets,
        }
    }
}

#[async_trait::async_trait]
impl<M: MetaStore, B: BlobStore> S3Access for Authorize<M, B> {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> s3s::S3Result<()> {
        let mut d = Decided::default();
        let r = self.check_inner(cx, &mut d).await;
        if let Some(slot) = cx.extensions_mut().get::<feiyun_audit::Slot>().cloned() {
            if d.decision.is_empty() {
                d.decision = if r.is_ok() { "Allow" } else { "AuthFailed" }.into();
            }
            slot.set(d);
        }
        r
    }
}

impl<M: MetaStore, B: BlobStore> Authorize<M, B> {
    /// Authorizes `action` on one object as `caller`, the way an S3 request of it would be
    /// (identity and bucket policies, the public access block, the object's tags), for
    /// work the region does on a principal's behalf. The grant answers KMS checks too.
    pub async fn object_grant(
        &self,
        caller: Arc<Caller>,
        action: &str,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
    ) -> Result<Grant, String> {
        self.object_grant_from(caller, action, bucket, key, version, None)
            .await
    }

    /// [`Self::object_grant`] for work a request started (a SQL statement): the request's
    /// `aws:SourceIp` and `aws:SecureTransport` take part, so a policy conditioned on them
    /// binds the statement as it binds the caller's own S3 requests.
    pub async fn object_grant_from(
        &self,
        caller: Arc<Caller>,
        action: &str,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
        origin: Option<Origin>,
    ) -> Result<Grant, String> {
        let bucket_access = self
            .buckets
            .get(&self.oss, bucket, &self.default_account)
            .await;
        let mut context = origin_context(origin);
        caller.fill_context(&mut context);
        let wants_tags = |p: &Policy| p.mentions_key_prefix("s3:existingobjecttag/");
        let tagged = caller.policies.iter().any(|(_, p)| wants_tags(p))
            || bucket_access
                .as_ref()
                .and_then(|b| b.policy.as_deref())
                .is_some_and(wants_tags);
        if tagged {
            let tags = self
                .oss
                .existing_tags(bucket, key, version)
                .await
                .map_err(|e| {
                    format!("the tags of {key}, which a policy tests, cannot be read: {e}")
                })?;
            for (k, v) in tags.unwrap_or_default() {
                context.set(&format!("s3:ExistingObjectTag/{k}"), v);
            }
        }
        let resource = object_arn(bucket, key);
        allowed_for(
            &caller,
            bucket_access.as_deref(),
            action,
            &resource,
            &context,
        )?;
        Ok(Grant {
            caller: Some(caller),
            bucket: bucket_access,
            context: Arc::new(context),
        })
    }

    /// Authorizes a bucket-level `action` (`s3:ListBucket` of `prefix`) as `caller`, for
    /// work a request started.
    pub async fn bucket_grant(
        &self,
        caller: Arc<Caller>,
        action: &str,
        bucket: &str,
        prefix: &str,
        origin: Option<Origin>,
    ) -> Result<(), String> {
        let bucket_access = self
            .buckets
            .get(&self.oss, bucket, &self.default_account)
            .await;
        let mut context = origin_context(origin);
        caller.fill_context(&mut context);
        context.set_static("s3:prefix", prefix.to_owned());
        allowed_for(
            &caller,
            bucket_access.as_deref(),
            action,
            &bucket_arn(bucket),
            &context,
        )
    }

    /// Decides a non-S3 action (`sql:CreateTable` on a table ARN) by the caller's identity
    /// and session policies alone.
    pub fn identity_grant(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
        origin: Option<Origin>,
    ) -> Result<(), String> {
        let mut context = origin_context(origin);
        caller.fill_context(&mut context);
        allowed_for(caller, None, action, resource, &context)
    }

    async fn check_inner(
        &self,
        cx: &mut S3AccessContext<'_>,
        audit: &mut Decided,
    ) -> s3s::S3Result<()> {
        let op = cx.s3_op().name().to_owned();
        if let Some(slot) = cx.extensions_mut().get::<OpSlot>().cloned()
            && let Ok(mut g) = slot.0.lock()
        {
            *g = Some(op.clone());
        }
        let peer = cx.extensions_mut().get::<ClientAddr>().copied();
        let secure = cx
            .extensions_mut()
            .get::<feiyun_iam::SecureTransport>()
            .is_some_and(|s| s.0);
        let caller = match cx.credentials() {
            None => None,
            Some(creds) => {
                audit.principal = creds.access_key.clone();
                audit.access_key = creds.access_key.clone();
                let c = self.iam.caller(&creds.access_key).ok_or_else(|| {
                    s3s::s3_error!(
                        InvalidAccessKeyId,
                        "The AWS Access Key Id you provided does not exist in our records."
                    )
                })?;
                let presented = header(cx.headers(), "x-amz-security-token")
                    .map(str::to_owned)
                    .or_else(|| {
                        query_value(cx.uri().query().unwrap_or(""), "X-Amz-Security-Token")
                    });
                audit.tenant = c.principal.account.clone();
                audit.principal = c.principal.arn.clone();
                audit.access_key = c.access_key.clone();
                if !c.token_matches(presented.as_deref()) {
                    return Err(s3s::s3_error!(
                        InvalidToken,
                        "The provided token is malformed or otherwise invalid."
                    ));
                }
                Some(c)
            }
        };
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(bucket.as_ref()), None),
            S3Path::Object { bucket, key } => (Some(bucket.as_ref()), Some(key.as_ref())),
        };
        let bucket_access = match bucket {
            Some(b) if op != "CreateBucket" => {
                self.buckets.get(&self.oss, b, &self.default_account).await
            }
            _ => None,
        };
        let query = cx.uri().query().unwrap_or("");
        let required = required_actions(&op, bucket, key, cx.headers(), query);
        audit.action = required
            .iter()
            .map(|(a, _)| *a)
            .collect::<Vec<_>>()
            .join(",");
        audit.resource = required
            .iter()
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
            .join(",");
        if caller.is_none() {
            audit.principal = "anonymous".into();
        }
        if let Some(c) = &caller
            && c.principal.is_root
            && bucket_access.as_ref().is_none_or(|b| {
                b.owner == c.principal.account && b.policy.is_none() && !b.broken_policy
            })
        {
            // Root acting in its own account with no bucket policy: nothing can deny it, so
            // no condition context is built.
            cx.extensions_mut().insert(Grant {
                caller,
                bucket: bucket_access,
                context: Arc::default(),
            });
            return Ok(());
        }
        let auth = match &caller {
            None => AuthKind::Anonymous,
            Some(_) if query.contains("X-Amz-Signature=") => AuthKind::Presigned,
            Some(_) => AuthKind::Header,
        };
        let mut context = request_context(cx.headers(), query, peer, secure, auth);
        if let Some(c) = &caller {
            c.fill_context(&mut context);
        }
        let wants_tags = |p: &Policy| p.mentions_key_prefix("s3:existingobjecttag/");
        if let (Some(bucket), Some(key)) = (bucket, key)
            && (caller
                .as_ref()
                .is_some_and(|c| c.policies.iter().any(|(_, p)| wants_tags(p)))
                || bucket_access
                    .as_ref()
                    .and_then(|b| b.policy.as_deref())
                    .is_some_and(wants_tags))
        {
            let version =
                query_value(query, "versionId").and_then(|v| VersionSelector::parse(&v).ok());
            // A missing object simply has no tags; the operation reports NoSuchKey itself.
            // A key a live bucket would read through carries its legacy tags; when those
            // cannot be read the request is denied rather than judged without them.
            match self.oss.existing_tags(bucket, key, version).await {
                Ok(Some(tags)) => {
                    for (k, v) in tags {
                        context.set(&format!("s3:ExistingObjectTag/{k}"), v);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(bucket, key, error = %e, "object tags unknown; denied");
                    audit.decision = "Deny".into();
                    return Err(s3s::s3_error!(
                        AccessDenied,
                        "Access Denied: the object's tags, which a policy tests, cannot be read now"
                    ));
                }
            }
        }
        let who = caller
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |c| c.principal.arn.clone());
        let mut decided_by = Vec::new();
        for (action, resource) in required {
            let d = decide(
                caller.as_deref(),
                bucket_access.as_deref(),
                action,
                &resource,
                &context,
            );
            match &d {
                Decision::Allow(Some(by)) => decided_by.push(by.to_string()),
                Decision::Deny(by) => {
                    audit.decision = "Deny".into();
                    audit.statement = by.to_string();
                }
                Decision::ImplicitDeny => audit.decision = "ImplicitDeny".into(),
                Decision::Allow(None) => {}
            }
            if !d.allowed() {
                tracing::debug!(principal = %who, action, resource, decision = ?d, "denied");
                return Err(if caller.is_none() {
                    s3s::s3_error!(AccessDenied, "Access Denied")
                } else {
                    access_denied(&who, action, &resource, &d)
                });
            }
        }
        audit.decision = "Allow".into();
        audit.statement = decided_by.join(",");
        cx.extensions_mut().insert(Grant {
            caller,
            bucket: bucket_access,
            context: Arc::new(context),
        });
        Ok(())
    }
}

pub(crate) fn access_denied(who: &str, action: &str, resource: &str, d: &Decision) -> s3s::S3Error {
    let why = match d {
        Decision::Deny(by) => format!("with an explicit deny in {by}"),
        _ => format!("because no identity-based policy allows the {action} action"),
    };
    s3s::s3_error!(
        AccessDenied,
        "User: {who} is not authorized to perform: {action} on resource: \"{resource}\" {why}"
    )
}

/// [`decide`] for work done on a caller's behalf: the refusal as its message.
fn allowed_for(
    caller: &Caller,
    bucket: Option<&BucketAccess>,
    action: &str,
    resource: &str,
    context: &RequestContext,
) -> Result<(), String> {
    let d = decide(Some(caller), bucket, action, resource, context);
    if d.allowed() {
        return Ok(());
    }
    Err(access_denied(&caller.principal.arn, action, resource, &d)
        .message()
        .unwrap_or("Access Denied")
        .to_owned())
}

/// One action on one resource, by the caller's identity policies and the bucket's policy.
fn decide(
    caller: Option<&Caller>,
    bucket: Option<&BucketAccess>,
    action: &str,
    resource: &str,
    context: &RequestContext,
) -> Decision {
    let same_account = match (caller, bucket) {
        (Some(c), Some(b)) => c.principal.account == b.owner,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if let Some(b) = bucket
        && b.broken_policy
    {
        let owner_root = caller.is_some_and(|c| c.principal.is_root && same_account);
        return if owner_root {
            Decision::Allow(None)
        } else {
            Decision::ImplicitDeny
        };
    }
    let set = PolicySet {
        identity: caller
            .map(|c| {
                c.policies
                    .iter()
                    .map(|(l, p)| (l.as_str(), p.as_ref()))
                    .collect()
            })
            .unwrap_or_default(),
        resource: bucket
            .and_then(|b| b.effective_policy(same_account))
            .map(|p| ("bucket-policy", p)),
        session: caller
            .and_then(|c| c.session.as_ref())
            .and_then(|s| s.policy.as_deref()),
        same_account,
    };
    set.decide(&Request {
        action,
        resource,
        principal: caller.map(|c| &c.principal),
        context,
    })
}

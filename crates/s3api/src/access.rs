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
use http::HeaderMap;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;

/// The client's address, inserted by the server (for `aws:SourceIp`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Filled in by the access check with the operation s3s resolved, for metrics.
#[derive(Clone, Default)]
pub struct OpSlot(pub Arc<Mutex<Option<String>>>);

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
        let record = oss.bucket(bucket).await.ok()?;
        let policy_text = oss.bucket_config(bucket, POLICY_CONFIG).await.ok()?;
        let pab = oss
            .bucket_config(bucket, PUBLIC_ACCESS_BLOCK_CONFIG)
            .await
            .ok()?;
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
        let bucket_access = self
            .buckets
            .get(&self.oss, bucket, &self.default_account)
            .await;
        let mut context = RequestContext::default();
        caller.fill_context(&mut context);
        let wants_tags = |p: &Policy| p.mentions_key_prefix("s3:existingobjecttag/");
        let tagged = caller.policies.iter().any(|(_, p)| wants_tags(p))
            || bucket_access
                .as_ref()
                .and_then(|b| b.policy.as_deref())
                .is_some_and(wants_tags);
        if tagged && let Ok((tags, _)) = self.oss.object_tags(bucket, key, version).await {
            for (k, v) in tags {
                context.set(&format!("s3:ExistingObjectTag/{k}"), v);
            }
        }
        let resource = object_arn(bucket, key);
        let d = decide(
            Some(&caller),
            bucket_access.as_deref(),
            action,
            &resource,
            &context,
        );
        if !d.allowed() {
            return Err(access_denied(&caller.principal.arn, action, &resource, &d)
                .message()
                .unwrap_or("Access Denied")
                .to_owned());
        }
        Ok(Grant {
            caller: Some(caller),
            bucket: bucket_access,
            context: Arc::new(context),
        })
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
            if let Ok((tags, _)) = self.oss.object_tags(bucket, key, version).await {
                for (k, v) in tags {
                    context.set(&format!("s3:ExistingObjectTag/{k}"), v);
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

pub fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

pub fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

fn has_query(query: &str, name: &str) -> bool {
    query_value(query, name).is_some()
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| feiyun_iam::sigv4::percent_decode(&v.replace('+', " ")))
    })
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn is_replica(h: &HeaderMap) -> bool {
    h.contains_key(feiyun_oss::replication::REPLICA_VERSION_HEADER)
}

/// The IAM actions (with their resources) an S3 operation needs; all must be allowed.
pub fn required_actions(
    op: &str,
    bucket: Option<&str>,
    key: Option<&str>,
    headers: &HeaderMap,
    query: &str,
) -> Vec<(&'static str, String)> {
    let b = bucket.map(bucket_arn).unwrap_or_else(|| "*".into());
    let o = match (bucket, key) {
        (Some(bk), Some(k)) => object_arn(bk, k),
        _ => b.clone(),
    };
    let versioned = has_query(query, "versionId");
    let v = |plain: &'static str, version: &'static str| if versioned { version } else { plain };
    let mut out: Vec<(&'static str, String)> = Vec::new();
    match op {
        "ListBuckets" => out.push(("s3:ListAllMyBuckets", "*".into())),
        "CreateBucket" => {
            out.push(("s3:CreateBucket", b.clone()));
            if header(headers, "x-amz-bucket-object-lock-enabled")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                out.push(("s3:PutBucketObjectLockConfiguration", b.clone()));
                out.push(("s3:PutBucketVersioning", b.clone()));
            }
        }
        "DeleteBucket" => out.push(("s3:DeleteBucket", b)),
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => out.push(("s3:ListBucket", b)),
        "ListObjectVersions" => out.push(("s3:ListBucketVersions", b)),
        "ListMultipartUploads" => out.push(("s3:ListBucketMultipartUploads", b)),
        "GetBucketLocation" => out.push(("s3:GetBucketLocation", b)),
        "GetBucketVersioning" => out.push(("s3:GetBucketVersioning", b)),
        "PutBucketVersioning" => out.push(("s3:PutBucketVersioning", b)),
        "GetBucketAcl" => out.push(("s3:GetBucketAcl", b)),
        "PutBucketAcl" => out.push(("s3:PutBucketAcl", b)),
        "GetBucketCors" => out.push(("s3:GetBucketCORS", b)),
        "PutBucketCors" | "DeleteBucketCors" => out.push(("s3:PutBucketCORS", b)),
        "GetBucketLifecycleConfiguration" => out.push(("s3:GetLifecycleConfiguration", b)),
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => {
            out.push(("s3:PutLifecycleConfiguration", b))
        }
        "GetBucketReplication" => out.push(("s3:GetReplicationConfiguration", b)),
        "PutBucketReplication" | "DeleteBucketReplication" => {
            out.push(("s3:PutReplicationConfiguration", b))
        }
        "GetBucketTagging" => out.push(("s3:GetBucketTagging", b)),
        "PutBucketTagging" | "DeleteBucketTagging" => out.push(("s3:PutBucketTagging", b)),
        "GetBucketNotificationConfiguration" => out.push(("s3:GetBucketNotification", b)),
        "PutBucketNotificationConfiguration" => out.push(("s3:PutBucketNotification", b)),
        "GetBucketPolicy" => out.push(("s3:GetBucketPolicy", b)),
        "PutBucketPolicy" => out.push(("s3:PutBucketPolicy", b)),
        "DeleteBucketPolicy" => out.push(("s3:DeleteBucketPolicy", b)),
        "GetBucketPolicyStatus" => out.push(("s3:GetBucketPolicyStatus", b)),
        "GetPublicAccessBlock" => out.push(("s3:GetBucketPublicAccessBlock", b)),
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => {
            out.push(("s3:PutBucketPublicAccessBlock", b))
        }
        "GetBucketEncryption" => out.push(("s3:GetEncryptionConfiguration", b)),
        "PutBucketEncryption" | "DeleteBucketEncryption" => {
            out.push(("s3:PutEncryptionConfiguration", b))
        }
        "GetObjectLockConfiguration" => out.push(("s3:GetBucketObjectLockConfiguration", b)),
        "PutObjectLockConfiguration" => out.push(("s3:PutBucketObjectLockConfiguration", b)),
        "GetObject" | "HeadObject" => out.push((v("s3:GetObject", "s3:GetObjectVersion"), o)),
        "GetObjectAttributes" => out.push((
            v("s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"),
            o,
        )),
        "GetObjectAcl" => out.push((v("s3:GetObjectAcl", "s3:GetObjectVersionAcl"), o)),
        "PutObjectAcl" => out.push((v("s3:PutObjectAcl", "s3:PutObjectVersionAcl"), o)),
        "GetObjectTagging" => out.push((v("s3:GetObjectTagging", "s3:GetObjectVersionTagging"), o)),
        "PutObjectTagging" => out.push((v("s3:PutObjectTagging", "s3:PutObjectVersionTagging"), o)),
        "DeleteObjectTagging" => out.push((
            v("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),
            o,
        )),
        "GetObjectRetention" => out.push(("s3:GetObjectRetention", o)),
        "PutObjectRetention" => {
            out.push(("s3:PutObjectRetention", o.clone()));
            if bypass(headers) {
                out.push(("s3:BypassGovernanceRetention", o));
            }
        }
        "GetObjectLegalHold" => out.push(("s3:GetObjectLegalHold", o)),
        "PutObjectLegalHold" => out.push(("s3:PutObjectLegalHold", o)),
        // A peer region's replica keeps its source's version id: only replication may.
        "DeleteObject" if is_replica(headers) => out.push(("s3:ReplicateDelete", o)),
        "PutObject" | "CreateMultipartUpload" if is_replica(headers) => {
            out.push(("s3:ReplicateObject", o.clone()));
            if header(headers, "x-amz-tagging").is_some() {
                out.push(("s3:ReplicateTags", o.clone()));
            }
            put_extras(&mut out, headers, &o);
        }
        "DeleteObject" => {
            out.push((v("s3:DeleteObject", "s3:DeleteObjectVersion"), o.clone()));
            if bypass(headers) {
                out.push(("s3:BypassGovernanceRetention", o));
            }
        }
        // Each key is checked on its own inside the operation (see `Grant`); the request
        // itself needs nothing more than a signature.
        "DeleteObjects" => {}
        "PutObject" | "CreateMultipartUpload" => {
            out.push(("s3:PutObject", o.clone()));
            put_extras(&mut out, headers, &o);
        }
        // The parts of a replica's upload carry the replica header too.
        "UploadPart" | "CompleteMultipartUpload" if is_replica(headers) => {
            out.push(("s3:ReplicateObject", o))
        }
        "UploadPart" | "CompleteMultipartUpload" => out.push(("s3:PutObject", o)),
        "AbortMultipartUpload" => out.push(("s3:AbortMultipartUpload", o)),
        "ListParts" => out.push(("s3:ListMultipartUploadParts", o)),
        "CopyObject" | "UploadPartCopy" => {
            out.push(("s3:PutObject", o.clone()));
            if op == "CopyObject" {
                put_extras(&mut out, headers, &o);
            }
            if let Some((src, src_versioned)) =
                header(headers, "x-amz-copy-source").and_then(copy_source)
            {
                out.push((
                    if src_versioned {
                        "s3:GetObjectVersion"
                    } else {
                        "s3:GetObject"
                    },
                    src,
                ));
            }
        }
        // An operation not listed is denied to everyone but root rather than allowed by
        // accident; `s3:*` does not reach it either.
        other => out.push(("s3:UnmappedOperation", format!("{b}#{other}"))),
    }
    out
}

fn bypass(headers: &HeaderMap) -> bool {
    header(headers, "x-amz-bypass-governance-retention")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// What a PUT or copy needs beyond `s3:PutObject` for the headers it carries.
fn put_extras(out: &mut Vec<(&'static str, String)>, headers: &HeaderMap, o: &str) {
    if headers.contains_key("x-amz-tagging") {
        out.push(("s3:PutObjectTagging", o.to_owned()));
    }
    if headers.contains_key("x-amz-object-lock-mode")
        || headers.contains_key("x-amz-object-lock-retain-until-date")
    {
        out.push(("s3:PutObjectRetention", o.to_owned()));
    }
    if headers.contains_key("x-amz-object-lock-legal-hold") {
        out.push(("s3:PutObjectLegalHold", o.to_owned()));
    }
    if header(headers, "x-amz-acl").is_some_and(|a| a != "private") {
        out.push(("s3:PutObjectAcl", o.to_owned()));
    }
}

/// `x-amz-copy-source: /bucket/key?versionId=…` → the source object's ARN and whether a
/// version was named, parsed by the very parser the copy itself uses (s3s's), so what is
/// authorized is what is read: a key containing `?` is one key, not a key and a query. A
/// header that does not parse authorizes nothing (the copy then fails on its own).
fn copy_source(v: &str) -> Option<(String, bool)> {
    match s3s::dto::CopySource::parse(v) {
        Ok(s3s::dto::CopySource::Bucket {
            bucket,
            key,
            version_id,
        }) => Some((object_arn(&bucket, &key), version_id.is_some())),
        // Access points are not served here; nothing to authorize against.
        Ok(_) | Err(_) => Some(("arn:aws:s3:::invalid-copy-source".into(), false)),
    }
}

/// `aws:CurrentTime` for a second, formatted once per second per thread rather than per
/// request.
fn current_time(unix: i64) -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != unix {
            let t = time::OffsetDateTime::from_unix_timestamp(unix)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            c.1 = t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            c.0 = unix;
        }
        c.1.clone()
    })
}

/// The request-derived condition keys (the principal adds its own).
fn request_context(
    headers: &HeaderMap,
    query: &str,
    peer: Option<ClientAddr>,
    secure: bool,
    auth: AuthKind,
) -> RequestContext {
    let mut cx = RequestContext::default();
    if let Some(p) = peer {
        cx.set_static("aws:sourceip", p.0.ip().to_string());
    }
    cx.set_static("aws:securetransport", if secure { "true" } else { "false" });
    let now = time::OffsetDateTime::now_utc();
    cx.set_static("aws:currenttime", current_time(now.unix_timestamp()));
    cx.set_static("aws:epochtime", now.unix_timestamp().to_string());
    if let Some(ua) = header(headers, "user-agent") {
        cx.set_static("aws:useragent", ua);
    }
    if let Some(r) = header(headers, "referer") {
        cx.set_static("aws:referer", r);
    }
    // From the signature actually verified (SigV2 is refused at the edge); an anonymous
    // request has neither key, so a policy requiring one denies it.
    if let Some(auth_type) = auth.s3_auth_type() {
        cx.set_static("s3:authtype", auth_type);
        cx.set_static("s3:signatureversion", "AWS4-HMAC-SHA256");
    }
    for (name, key) in [
        ("prefix", "s3:prefix"),
        ("delimiter", "s3:delimiter"),
        ("max-keys", "s3:max-keys"),
    ] {
        if let Some(v) = query_value(query, name) {
            cx.set_static(key, v);
        }
    }
    if let Some(v) = query_value(query, "versionId") {
        cx.set_static("s3:versionid", v);
    }
    for (h, key) in [
        (
            "x-amz-server-side-encryption",
            "s3:x-amz-server-side-encryption",
        ),
        (
            "x-amz-server-side-encryption-aws-kms-key-id",
            "s3:x-amz-server-side-encryption-aws-kms-key-id",
        ),
        ("x-amz-acl", "s3:x-amz-acl"),
        ("x-amz-storage-class", "s3:x-amz-storage-class"),
        ("x-amz-copy-source", "s3:x-amz-copy-source"),
        ("x-amz-metadata-directive", "s3:x-amz-metadata-directive"),
    ] {
        if let Some(v) = header(headers, h) {
            cx.set_static(key, v);
        }
    }
    if let Some(v) = header(headers, "x-amz-object-lock-mode") {
        cx.set_static("s3:object-lock-mode", v);
    }
    if let Some(v) = header(headers, "x-amz-object-lock-retain-until-date") {
        cx.set_static("s3:object-lock-retain-until-date", v);
        if let Some(until) = feiyun_iam::condition::parse_date(v) {
            let days = (until - now.unix_timestamp_nanos()).max(0) / (86_400 * 1_000_000_000);
            cx.set_static("s3:object-lock-remaining-retention-days", days.to_string());
        }
    }
    if let Some(v) = header(headers, "x-amz-object-lock-legal-hold") {
        cx.set_static("s3:object-lock-legal-hold", v);
    }
    if let Some(tagging) = header(headers, "x-amz-tagging") {
        let mut keys = Vec::new();
        for kv in tagging.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let k = feiyun_iam::sigv4::percent_decode(&k.replace('+', " "));
            let v = feiyun_iam::sigv4::percent_decode(&v.replace('+', " "));
            cx.set(&format!("s3:RequestObjectTag/{k}"), v);
            keys.push(k);
        }
        cx.set_many("s3:RequestObjectTagKeys", keys);
    }
    cx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(
        op: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        query: &str,
    ) -> Vec<(&'static str, String)> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        required_actions(op, Some("b"), key, &h, query)
    }

    #[test]
    fn s3_operations_map_to_their_iam_actions() {
        let o = "arn:aws:s3:::b/k".to_string();
        let b = "arn:aws:s3:::b".to_string();
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            Vec<(&'a str, &'a str)>,
            &'a str,
            Vec<(&'a str, String)>,
        );
        let rows: Vec<Row> = vec![
            (
                "HeadBucket",
                None,
                vec![],
                "",
                vec![("s3:ListBucket", b.clone())],
            ),
            (
                "ListObjectsV2",
                None,
                vec![],
                "list-type=2",
                vec![("s3:ListBucket", b.clone())],
            ),
            (
                "ListObjectVersions",
                None,
                vec![],
                "versions",
                vec![("s3:ListBucketVersions", b.clone())],
            ),
            (
                "GetObject",
                Some("k"),
                vec![],
                "",
                vec![("s3:GetObject", o.clone())],
            ),
            (
                "GetObject",
                Some("k"),
                vec![],
                "versionId=abc",
                vec![("s3:GetObjectVersion", o.clone())],
            ),
            (
                "HeadObject",
                Some("k"),
                vec![],
                "versionId=abc",
                vec![("s3:GetObjectVersion", o.clone())],
            ),
            (
                "DeleteObject",
                Some("k"),
                vec![],
                "versionId=abc",
                vec![("s3:DeleteObjectVersion", o.clone())],
            ),
            (
                "DeleteObject",
                Some("k"),
                vec![("x-amz-bypass-governance-retention", "true")],
                "versionId=abc",
                vec![
                    ("s3:DeleteObjectVersion", o.clone()),
                    ("s3:BypassGovernanceRetention", o.clone()),
                ],
            ),
            (
                "PutObjectRetention",
                Some("k"),
                vec![("x-amz-bypass-governance-retention", "true")],
                "retention",
                vec![
                    ("s3:PutObjectRetention", o.clone()),
                    ("s3:BypassGovernanceRetention", o.clone()),
                ],
            ),
            (
                "PutObject",
                Some("k"),
                vec![
                    ("x-amz-tagging", "a=b"),
                    ("x-amz-object-lock-legal-hold", "ON"),
                ],
                "",
                vec![
                    ("s3:PutObject", o.clone()),
                    ("s3:PutObjectTagging", o.clone()),
                    ("s3:PutObjectLegalHold", o.clone()),
                ],
            ),
            (
                "CopyObject",
                Some("k"),
                vec![("x-amz-copy-source", "/src/a%20b?versionId=1")],
                "",
                vec![
                    ("s3:PutObject", o.clone()),
                    ("s3:GetObjectVersion", "arn:aws:s3:::src/a b".into()),
                ],
            ),
            (
                "CopyObject",
                Some("k"),
                vec![("x-amz-copy-source", "/src/x?y.key")],
                "",
                vec![
                    ("s3:PutObject", o.clone()),
                    // One key with a `?` in it, as the copy reads it.
                    ("s3:GetObject", "arn:aws:s3:::src/x?y.key".into()),
                ],
            ),
            (
                "UploadPart",
                Some("k"),
                vec![],
                "partNumber=1&uploadId=x",
                vec![("s3:PutObject", o.clone())],
            ),
            (
                "CompleteMultipartUpload",
                Some("k"),
                vec![],
                "uploadId=x",
                vec![("s3:PutObject", o.clone())],
            ),
            (
                "ListParts",
                Some("k"),
                vec![],
                "uploadId=x",
                vec![("s3:ListMultipartUploadParts", o.clone())],
            ),
            (
                "PutBucketCors",
                None,
                vec![],
                "cors",
                vec![("s3:PutBucketCORS", b.clone())],
            ),
            (
                "DeleteBucketLifecycle",
                None,
                vec![],
                "lifecycle",
                vec![("s3:PutLifecycleConfiguration", b.clone())],
            ),
            (
                "GetObjectLockConfiguration",
                None,
                vec![],
                "object-lock",
                vec![("s3:GetBucketObjectLockConfiguration", b.clone())],
            ),
            (
                "CreateBucket",
                None,
                vec![("x-amz-bucket-object-lock-enabled", "true")],
                "",
                vec![
                    ("s3:CreateBucket", b.clone()),
                    ("s3:PutBucketObjectLockConfiguration", b.clone()),
                    ("s3:PutBucketVersioning", b.clone()),
                ],
            ),
        ];
        for (op, key, headers, query, want) in rows {
            assert_eq!(actions(op, key, &headers, query), want, "{op} {query}");
        }
        assert_eq!(
            required_actions("ListBuckets", None, None, &HeaderMap::new(), ""),
            vec![("s3:ListAllMyBuckets", "*".to_string())]
        );
    }

    #[test]
    fn request_condition_keys() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-tagging",
            http::HeaderValue::from_static("team=red&cost%20center=42"),
        );
        h.insert(
            "x-amz-server-side-encryption",
            http::HeaderValue::from_static("AES256"),
        );
        let cx = request_context(
            &h,
            "list-type=2&prefix=home%2Falice%2F&max-keys=10",
            None,
            false,
            AuthKind::Header,
        );
        assert_eq!(cx.single_value("s3:prefix"), Some("home/alice/"));
        assert_eq!(cx.single_value("s3:max-keys"), Some("10"));
        assert_eq!(cx.single_value("s3:RequestObjectTag/team"), Some("red"));
        assert_eq!(
            cx.single_value("s3:RequestObjectTag/cost center"),
            Some("42")
        );
        assert_eq!(
            cx.single_value("s3:x-amz-server-side-encryption"),
            Some("AES256")
        );
        assert_eq!(cx.single_value("s3:authType"), Some("REST-HEADER"));
        assert_eq!(
            cx.single_value("s3:signatureversion"),
            Some("AWS4-HMAC-SHA256")
        );
        let q = "X-Amz-Signature=00";
        let presigned = request_context(&h, q, None, false, AuthKind::Presigned);
        assert_eq!(
            presigned.single_value("s3:authType"),
            Some("REST-QUERY-STRING")
        );
        // Anonymous requests carry neither key.
        let anonymous = request_context(&h, "", None, false, AuthKind::Anonymous);
        assert_eq!(anonymous.single_value("s3:authType"), None);
        assert_eq!(anonymous.single_value("s3:signatureversion"), None);
    }
}

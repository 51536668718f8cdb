//! The AWS query-protocol edge for IAM and STS on the S3 listener: recognises their requests,
//! verifies SigV4 with their credential scope, authorizes each action through the same
//! policy evaluator as S3, and renders results and errors as the AWS CLI and SDKs expect.

mod iam_ops;
mod kms_ops;
mod sts_ops;
mod xml;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use feiyun_iam::sigv4::{self, CanonicalInput, SigError};
use feiyun_iam::{Caller, Decision, Iam, IamError, PolicySet, Request, RequestContext};
use feiyun_meta::MetaStore;
use http::{HeaderMap, Method, StatusCode};
use sha2::{Digest, Sha256};

/// The largest form body accepted (a 10 KiB role policy URL-encoded fits many times over).
pub const MAX_BODY: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Iam,
    Sts,
    /// The AWS KMS JSON protocol (`X-Amz-Target: TrentService.*`).
    Kms,
}

impl Service {
    fn ns(self) -> &'static str {
        match self {
            Service::Iam => xml::IAM_NS,
            Service::Sts | Service::Kms => xml::STS_NS,
        }
    }
}

/// Whether a request belongs to IAM or STS rather than S3: a form POST (or GET) to `/` whose
/// signature names the `iam` or `sts` service, or an unsigned form POST to `/` (STS's
/// AssumeRoleWithWebIdentity is unsigned). S3 has no operation on `POST /`.
pub fn service_of(method: &Method, path: &str, headers: &HeaderMap) -> Option<Service> {
    if path != "/" {
        return None;
    }
    let scope = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3));
    match scope {
        Some("iam") => return Some(Service::Iam),
        Some("sts") => return Some(Service::Sts),
        Some("kms") => return Some(Service::Kms),
        Some(_) => return None,
        None => {}
    }
    let form = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    (*method == Method::POST && form).then_some(Service::Sts)
}

pub struct QueryApi<M> {
    iam: Arc<Iam<M>>,
    min_session_secs: i64,
    /// The identity provider AssumeRoleWithWebIdentity trusts, when configured.
    oidc: Option<Arc<feiyun_iam::oidc::Oidc>>,
    kms: Option<Arc<feiyun_kms::Kms<M>>>,
    /// Who can say which buckets depend on a key (the object service).
    key_users: Option<Arc<dyn feiyun_kms::KeyUsers>>,
}

/// An error in the query protocol's terms.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }
}

impl From<IamError> for ApiError {
    fn from(e: IamError) -> Self {
        let (status, code) = match &e {
            IamError::NoSuchEntity(_) => (StatusCode::NOT_FOUND, "NoSuchEntity"),
            IamError::EntityAlreadyExists(_) => (StatusCode::CONFLICT, "EntityAlreadyExists"),
            IamError::DeleteConflict(_) => (StatusCode::CONFLICT, "DeleteConflict"),
            IamError::LimitExceeded(_) => (StatusCode::CONFLICT, "LimitExceeded"),
            IamError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "InvalidInput"),
            IamError::Validation(_) => (StatusCode::BAD_REQUEST, "ValidationError"),
            IamError::MalformedPolicy(_) => (StatusCode::BAD_REQUEST, "MalformedPolicyDocument"),
            IamError::InvalidAuthenticationCode(_) => {
                (StatusCode::FORBIDDEN, "InvalidAuthenticationCode")
            }
            IamError::AccessDenied(_) => (StatusCode::FORBIDDEN, "AccessDenied"),
            IamError::PackedPolicyTooLarge(_) => (StatusCode::BAD_REQUEST, "PackedPolicyTooLarge"),
            IamError::SiteMismatch(_) => (StatusCode::CONFLICT, "SiteMismatch"),
            IamError::ConcurrentModification(_) => (StatusCode::CONFLICT, "ConcurrentModification"),
            IamError::Meta(feiyun_meta::MetaError::Unavailable(_)) => {
                tracing::warn!(error = %e, "identity store unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is unavailable. Please try again.",
                );
            }
            IamError::Corrupt(_) | IamError::Meta(_) => {
                tracing::error!(error = %e, "identity store failure");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceFailure",
                    "The request processing has failed because of an unknown error.",
                );
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The decoded form parameters of one request.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: &str, body: &[u8]) -> Self {
        let mut m = HashMap::new();
        for part in [query.as_bytes(), body] {
            for kv in part.split(|b| *b == b'&').filter(|kv| !kv.is_empty()) {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
                m.insert(form_decode(k), form_decode(v));
            }
        }
        Params(m)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| {
            let lower = {
                let mut c = name.chars();
                c.next()
                    .map(|f| f.to_lowercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            };
            ApiError::validation(format!(
                "1 validation error detected: Value null at '{lower}' failed to satisfy constraint: Member must not be null"
            ))
        })
    }

    /// `Prefix.member.1`, `Prefix.member.2`, … in order.
    pub(crate) fn members(&self, prefix: &str) -> Vec<&str> {
        (1..)
            .map_while(|i| self.get(&format!("{prefix}.member.{i}")))
            .collect()
    }

    /// `Tags.member.N.Key` / `.Value`.
    pub(crate) fn tags(&self) -> Vec<feiyun_iam::model::Tag> {
        (1..)
            .map_while(|i| {
                let key = self.get(&format!("Tags.member.{i}.Key"))?;
                let value = self.get(&format!("Tags.member.{i}.Value")).unwrap_or("");
                Some(feiyun_iam::model::Tag {
                    key: key.to_owned(),
                    value: value.to_owned(),
                })
            })
            .collect()
    }

    pub(crate) fn max_items(&self) -> Result<usize, ApiError> {
        match self.get("MaxItems") {
            None => Ok(100),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| ApiError::validation("MaxItems must be between 1 and 1000")),
        }
    }
}

fn form_decode(s: &str) -> String {
    sigv4::percent_decode(&s.replace('+', " "))
}

/// What an authenticated request carries into an action.
pub(crate) struct Ctx<'a> {
    pub caller: Arc<Caller>,
    pub account: String,
    pub params: &'a Params,
    pub context: RequestContext,
    /// What authorization decided, for the audit record.
    pub audit: std::sync::Mutex<feiyun_audit::Decided>,
    pub min_session_secs: i64,
}

impl Ctx<'_> {
    /// Authorizes `action` on `resource` by the caller's identity policies.
    pub(crate) fn authorize(&self, action: &str, resource: &str) -> Result<(), ApiError> {
        authorize(&self.caller, &self.context, &self.audit, action, resource)
    }
}

/// A signed-in caller of a JSON API served outside this crate (Function Compute): whose
/// account it is, and authorization by its policies, each decision kept for the audit.
pub struct Authenticated {
    caller: Arc<Caller>,
    context: RequestContext,
    audit: std::sync::Mutex<feiyun_audit::Decided>,
}

impl Authenticated {
    pub fn account(&self) -> &str {
        &self.caller.principal.account
    }

    /// The caller's ARN.
    pub fn principal_arn(&self) -> &str {
        &self.caller.principal.arn
    }

    pub fn is_root(&self) -> bool {
        self.caller.principal.is_root
    }

    /// HMAC-SHA256 of `purpose` under the caller's secret: a key only the caller and this
    /// region hold (site pushes are sealed with it), without handing out the secret.
    pub fn shared_key(&self, purpose: &str) -> [u8; 32] {
        feiyun_iam::relay::shared_key(self.caller.secret(), purpose)
    }

    pub fn authorize(&self, action: &str, resource: &str) -> Result<(), ApiError> {
        authorize(&self.caller, &self.context, &self.audit, action, resource)
    }

    /// The caller, for work the request starts on its behalf (a SQL statement).
    pub fn caller(&self) -> Arc<Caller> {
        self.caller.clone()
    }

    /// Adds to the request's audit record (a statement's text and what it read).
    pub fn note(&self, f: impl FnOnce(&mut feiyun_audit::Decided)) {
        let mut d = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut d);
    }

    /// Hands over the audit record; `status` is what the request was answered with.
    pub fn finish(self, audit: &feiyun_audit::Slot, status: StatusCode) {
        let mut d = self.audit.into_inner().unwrap_or_else(|p| p.into_inner());
        if status == StatusCode::FORBIDDEN && d.decision == "Allow" {
            d.decision = "Deny".into();
        }
        audit.set(d);
    }
}

/// Authorizes `action` on `resource` by the caller's identity and session policies.
fn authorize(
    caller: &Caller,
    context: &RequestContext,
    audit: &std::sync::Mutex<feiyun_audit::Decided>,
    action: &str,
    resource: &str,
) -> Result<(), ApiError> {
    {
        let set = PolicySet {
            identity: caller
                .policies
                .iter()
                .map(|(l, p)| (l.as_str(), p.as_ref()))
                .collect(),
            session: caller.session.as_ref().and_then(|s| s.policy.as_deref()),
            same_account: true,
            ..Default::default()
        };
        let decision = set.decide(&Request {
            action,
            resource,
            principal: Some(&caller.principal),
            context,
        });
        if let Ok(mut a) = audit.lock() {
            a.action = action.to_owned();
            a.resource = resource.to_owned();
            (a.decision, a.statement) = match &decision {
                Decision::Allow(by) => (
                    "Allow".into(),
                    by.as_ref().map(|b| b.to_string()).unwrap_or_default(),
                ),
                Decision::Deny(by) => ("Deny".into(), by.to_string()),
                Decision::ImplicitDeny => ("ImplicitDeny".into(), String::new()),
            };
        }
        match decision {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(by) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!(
                    "User: {} is not authorized to perform: {action} on resource: {resource} with an explicit deny in {by}",
                    caller.principal.arn
                ),
            )),
            Decision::ImplicitDeny => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!(
                    "User: {} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action",
                    caller.principal.arn
                ),
            )),
        }
    }
}

impl<M: MetaStore> QueryApi<M> {
    pub fn new(iam: Arc<Iam<M>>) -> Self {
        Self {
            iam,
            min_session_secs: 900,
            oidc: None,
            kms: None,
            key_users: None,
        }
    }

    #[must_use]
    pub fn with_key_users(mut self, users: Arc<dyn feiyun_kms::KeyUsers>) -> Self {
        self.key_users = Some(users);
        self
    }

    #[must_use]
    pub fn with_kms(mut self, kms: Arc<feiyun_kms::Kms<M>>) -> Self {
        self.kms = Some(kms);
        self
    }

    #[must_use]
    pub fn with_oidc(mut self, oidc: Option<Arc<feiyun_iam::oidc::Oidc>>) -> Self {
        self.oidc = oidc;
        self
    }

    /// The shortest session STS grants (AWS's 900 s unless a test shortens it).
    #[must_use]
    pub fn with_min_session_secs(mut self, secs: u64) -> Self {
        self.min_session_secs = secs.clamp(1, 900) as i64;
        self
    }

    /// Answers one IAM or STS request whose body has already been read (at most
    /// [`MAX_BODY`]).
    pub async fn handle(
        &self,
        service: Service,
        parts: &http::request::Parts,
        body: Bytes,
        peer: SocketAddr,
        request_id: &str,
        audit: &feiyun_audit::Slot,
    ) -> (StatusCode, String, &'static str) {
        if service == Service::Kms {
            return match self.kms_dispatch(parts, &body, peer, audit).await {
                Ok(v) => (StatusCode::OK, v.to_string(), ""),
                Err(mut e) => {
                    // KMS reports denials as a client error of its own type.
                    if e.code == "AccessDenied" {
                        e.code = "AccessDeniedException";
                        e.status = StatusCode::BAD_REQUEST;
                    }
                    let body = serde_json::json!({ "__type": e.code, "message": e.message });
                    (e.status, body.to_string(), e.code)
                }
            };
        }
        let params = Params::parse(parts.uri.query().unwrap_or(""), &body);
        let action = params.get("Action").unwrap_or("").to_owned();
        let result = self
            .dispatch(service, parts, &body, &params, peer, audit)
            .await;
        match result {
            Ok(xml) => (
                StatusCode::OK,
                xml::response(&action, service.ns(), xml, request_id),
                "",
            ),
            Err(e) => (
                e.status,
                xml::error(
                    service.ns(),
                    e.status.is_client_error(),
                    e.code,
                    &e.message,
                    request_id,
                ),
                e.code,
            ),
        }
    }

    async fn dispatch(
        &self,
        service: Service,
        parts: &http::request::Parts,
        body: &[u8],
        params: &Params,
        peer: SocketAddr,
        audit: &feiyun_audit::Slot,
    ) -> Result<xml::Xml, ApiError> {
        let action = params.get("Action").unwrap_or("");
        if action.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "MissingAction",
                "Missing Action",
            ));
        }
        if service == Service::Sts && action == "AssumeRoleWithWebIdentity" {
            // Unsigned by design: the web identity token is the credential.
            let mut decided = feiyun_audit::Decided {
                principal: "web-identity".into(),
                action: "sts:AssumeRoleWithWebIdentity".into(),
                decision: "AuthFailed".into(),
                ..Default::default()
            };
            let r = sts_ops::assume_role_with_web_identity(
                &self.iam,
                self.oidc.as_deref(),
                params,
                self.min_session_secs,
                &mut decided,
            )
            .await;
            audit.set(decided);
            return r;
        }
        let prefix = match service {
            Service::Iam => "iam",
            Service::Sts => "sts",
            Service::Kms => "kms",
        };
        let (caller, decided) = self.sign_in(
            parts,
            Payload::Body(body),
            format!("{prefix}:{action}"),
            audit,
        )?;
        let context = self.context_for(parts, peer, &caller);
        let cx = Ctx {
            account: caller.principal.account.clone(),
            caller,
            params,
            context,
            audit: std::sync::Mutex::new(decided),
            min_session_secs: self.min_session_secs,
        };
        let r = match service {
            Service::Iam => iam_ops::run(&self.iam, action, &cx).await,
            Service::Sts => sts_ops::run(&self.iam, action, &cx).await,
            Service::Kms => unreachable_kms(),
        };
        finish(&cx, audit, r)
    }

    /// Authenticates a request to a JSON API served elsewhere (Function Compute), for
    /// actions that API authorizes itself. A failure is recorded in `audit` here.
    pub fn sign_in_caller(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        peer: SocketAddr,
        action: String,
        audit: &feiyun_audit::Slot,
    ) -> Result<Authenticated, ApiError> {
        self.sign_in_caller_with(parts, Payload::Body(body), peer, action, audit)
    }

    /// Checks a request's relay mark (`x-feiyun-forwarded`): its MAC under the secret of the
    /// access key it names, its time, and that the key's holder may relay for the region it
    /// names (`replication:RelayRequest` on `arn:aws:replication:::region/REGION`).
    pub fn verify_relay(
        &self,
        mark: &str,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Result<feiyun_iam::relay::RelayMark, ApiError> {
        use feiyun_iam::relay::{Bound, RelayMark, request_signature};
        let refused = |why: String| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!("the relay mark is not vouched for by a peer region: {why}"),
            )
        };
        let m = RelayMark::parse(mark).map_err(|e| refused(e.to_string()))?;
        let caller = self
            .iam
            .caller(&m.access_key)
            .ok_or_else(|| refused("unknown access key".into()))?;
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let query = uri.query().unwrap_or("");
        // A region's own requests are signed after their mark is made: only a relayed
        // client request (which carries the client's address) binds its signature.
        let signature = if m.client_ip.is_some() {
            request_signature(authorization, query)
        } else {
            String::new()
        };
        let bound = Bound {
            method: method.as_str(),
            path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()),
            signature: &signature,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        m.verify(caller.secret(), &bound, now)
            .map_err(|e| refused(e.to_string()))?;
        let mut context = RequestContext::default();
        caller.fill_context(&mut context);
        let audit = std::sync::Mutex::new(feiyun_audit::Decided::default());
        authorize(
            &caller,
            &context,
            &audit,
            "replication:RelayRequest",
            &format!("arn:aws:replication:::region/{}", m.region),
        )
        .map_err(|e| refused(e.message))?;
        Ok(m)
    }

    /// [`Self::sign_in_caller`] before the body is read: the signature is checked over the
    /// payload hash the request claims in `x-amz-content-sha256`, so a large body is only
    /// read for a caller who signed; [`check_payload`] then holds the body to that claim.
    pub fn sign_in_caller_head(
        &self,
        parts: &http::request::Parts,
        peer: SocketAddr,
        action: String,
        audit: &feiyun_audit::Slot,
    ) -> Result<Authenticated, ApiError> {
        self.sign_in_caller_with(parts, Payload::Claimed, peer, action, audit)
    }

    fn sign_in_caller_with(
        &self,
        parts: &http::request::Parts,
        payload: Payload<'_>,
        peer: SocketAddr,
        action: String,
        audit: &feiyun_audit::Slot,
    ) -> Result<Authenticated, ApiError> {
        let (caller, decided) = self.sign_in(parts, payload, action, audit)?;
        Ok(Authenticated {
            context: self.context_for(parts, peer, &caller),
            caller,
            audit: std::sync::Mutex::new(decided),
        })
    }

    /// Authenticates a signed request and starts its audit record (a failure is recorded
    /// here); the caller is allowed until a policy says otherwise.
    fn sign_in(
        &self,
        parts: &http::request::Parts,
        payload: Payload<'_>,
        action: String,
        audit: &feiyun_audit::Slot,
    ) -> Result<(Arc<Caller>, feiyun_audit::Decided), ApiError> {
        let claimed = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(sigv4::parse_authorization)
            .and_then(Result::ok)
            .map(|s| s.access_key.to_owned())
            .unwrap_or_default();
        let mut decided = feiyun_audit::Decided {
            principal: if claimed.is_empty() {
                "anonymous".into()
            } else {
                claimed.clone()
            },
            access_key: claimed,
            action,
            decision: "AuthFailed".into(),
            ..Default::default()
        };
        match self.authenticate(&parts.method, &parts.uri, &parts.headers, payload) {
            Ok(caller) => {
                decided.tenant = caller.principal.account.clone();
                decided.principal = caller.principal.arn.clone();
                // Actions that need no permission (GetCallerIdentity) stay "Allow".
                decided.decision = "Allow".into();
                Ok((caller, decided))
            }
            Err(e) => {
                audit.set(decided);
                Err(e)
            }
        }
    }

    async fn kms_dispatch(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        peer: SocketAddr,
        audit: &feiyun_audit::Slot,
    ) -> Result<serde_json::Value, ApiError> {
        let action = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix("TrentService."))
            .unwrap_or("")
            .to_owned();
        let (caller, decided) =
            self.sign_in(parts, Payload::Body(body), format!("kms:{action}"), audit)?;
        let Some(kms) = &self.kms else {
            audit.set(decided);
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "UnsupportedOperationException",
                "KMS is not enabled on this region",
            ));
        };
        if action.is_empty() {
            audit.set(decided);
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                "X-Amz-Target must name a TrentService operation",
            ));
        }
        let json: serde_json::Value = if body.is_empty() {
            serde_json::json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                _ => {
                    audit.set(decided);
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "SerializationException",
                        "The request body is not a JSON object",
                    ));
                }
            }
        };
        let params = Params::parse("", b"");
        let cx = Ctx {
            account: caller.principal.account.clone(),
            context: self.context_for(parts, peer, &caller),
            caller,
            params: &params,
            audit: std::sync::Mutex::new(decided),
            min_session_secs: self.min_session_secs,
        };
        let r = kms_ops::run(kms, self.key_users.as_deref(), &action, &cx, &json).await;
        finish(&cx, audit, r)
    }

    /// The condition keys every authenticated IAM, STS or KMS request carries.
    fn context_for(
        &self,
        parts: &http::request::Parts,
        peer: SocketAddr,
        caller: &Caller,
    ) -> RequestContext {
        let mut context = RequestContext::default();
        context.set("aws:SourceIp", peer.ip().to_string());
        let secure = parts
            .extensions
            .get::<feiyun_iam::SecureTransport>()
            .is_some_and(|s| s.0);
        context.set("aws:SecureTransport", if secure { "true" } else { "false" });
        let now = time::OffsetDateTime::now_utc();
        context.set("aws:CurrentTime", xml::iso8601(now.unix_timestamp()));
        context.set("aws:EpochTime", now.unix_timestamp().to_string());
        caller.fill_context(&mut context);
        context
    }

    fn authenticate(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        payload: Payload<'_>,
    ) -> Result<Arc<Caller>, ApiError> {
        let forbidden =
            |code: &'static str, msg: &str| ApiError::new(StatusCode::FORBIDDEN, code, msg);
        let Some(auth) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(forbidden(
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            ));
        };
        let signed = match sigv4::parse_authorization(auth) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "IncompleteSignature",
                    e.to_string(),
                ));
            }
            None => {
                return Err(forbidden(
                    "MissingAuthenticationToken",
                    "Only AWS4-HMAC-SHA256 signatures are accepted",
                ));
            }
        };
        let Some(caller) = self.iam.caller(signed.access_key) else {
            if self.iam.session_expired(signed.access_key) {
                return Err(forbidden(
                    "ExpiredToken",
                    "The security token included in the request is expired",
                ));
            }
            return Err(forbidden(
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ));
        };
        let presented = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if !caller.token_matches(presented) {
            return Err(forbidden(
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ));
        }
        let header = |name: &str| -> Option<String> {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        };
        let payload_sha256 = match payload {
            Payload::Body(body) => {
                let actual = hex::encode(Sha256::digest(body));
                match header("x-amz-content-sha256") {
                    // The body is here whole: a claimed hash must be its hash.
                    Some(claimed) if claimed != "UNSIGNED-PAYLOAD" && claimed != actual => {
                        return Err(payload_mismatch());
                    }
                    Some(claimed) => claimed,
                    None => actual,
                }
            }
            Payload::Claimed => header("x-amz-content-sha256").ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "MissingContentSHA256",
                    "x-amz-content-sha256 is required for a body this large",
                )
            })?,
        };
        let input = CanonicalInput {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            header: &header,
            payload_sha256,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match sigv4::verify(&signed, &input, caller.secret(), now) {
            Ok(()) => Ok(caller),
            Err(e @ (SigError::Expired | SigError::BadDate)) => {
                Err(forbidden("SignatureDoesNotMatch", &e.to_string()))
            }
            Err(e) => Err(forbidden("SignatureDoesNotMatch", &e.to_string())),
        }
    }
}

/// What a signature is checked over: the body itself, or the hash the request claims for it
/// (checked against the body once it is read, by [`check_payload`]).
enum Payload<'a> {
    Body(&'a [u8]),
    Claimed,
}

fn payload_mismatch() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "XAmzContentSHA256Mismatch",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    )
}

/// Whether a request's body matches the payload hash its signature covered.
pub fn check_payload(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let claimed = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if claimed == "UNSIGNED-PAYLOAD" || claimed == hex::encode(Sha256::digest(body)) {
        Ok(())
    } else {
        Err(payload_mismatch())
    }
}

/// The page of `items` after `marker` (by `name`), at most `max` long, and the next marker.
pub(crate) fn page<'a, T>(
    items: Vec<&'a T>,
    name: impl Fn(&T) -> String,
    marker: Option<&str>,
    max: usize,
) -> (Vec<&'a T>, Option<String>) {
    let mut rest: Vec<&T> = items
        .into_iter()
        .filter(|i| marker.is_none_or(|m| name(i).as_str() > m))
        .collect();
    let next = (rest.len() > max).then(|| name(rest[max - 1]));
    rest.truncate(max);
    (rest, next)
}

pub(crate) fn truncation(x: &mut xml::Xml, next: Option<String>) {
    match next {
        Some(m) => {
            x.leaf("IsTruncated", "true").leaf("Marker", &m);
        }
        None => {
            x.leaf("IsTruncated", "false");
        }
    }
}

/// Hands the request's audit record over, marked Deny when a policy refused it.
fn finish<T>(
    cx: &Ctx<'_>,
    audit: &feiyun_audit::Slot,
    r: Result<T, ApiError>,
) -> Result<T, ApiError> {
    if let Ok(mut d) = cx.audit.lock() {
        if r.as_ref().is_err_and(|e| e.status == StatusCode::FORBIDDEN) && d.decision == "Allow" {
            d.decision = "Deny".into();
        }
        audit.set(std::mem::take(&mut d));
    }
    r
}

/// `dispatch` never sees KMS requests (`handle` routes them to `kms_dispatch`).
fn unreachable_kms() -> Result<xml::Xml, ApiError> {
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidAction",
        "KMS requests use the JSON protocol",
    ))
}

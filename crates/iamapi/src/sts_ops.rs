//! STS actions: GetCallerIdentity (no permission needed, as in AWS), AssumeRole (the role's
//! trust policy must allow, and the caller's own policies too unless the trust policy names
//! the caller), and GetSessionToken (an IAM user's own permissions, with MFA when a code is
//! given).

use feiyun_iam::model::{SessionRecord, SessionSubject, role_arn};
use feiyun_iam::pattern::Arn;
use feiyun_iam::policy::Statement;
use feiyun_iam::{Decision, Iam, Policy, PolicyKind, PolicySet, Request};
use feiyun_meta::MetaStore;
use http::StatusCode;

use crate::xml::{Xml, iso8601};
use crate::{ApiError, Ctx};

const DEFAULT_ROLE_SESSION_SECS: i64 = 3600;
/// A role session assuming another role gets at most an hour (AWS's role-chaining rule).
const CHAINED_MAX_SECS: i64 = 3600;
const USER_SESSION_DEFAULT_SECS: i64 = 43_200;
const USER_SESSION_MAX_SECS: i64 = 129_600;

pub(crate) async fn run<M: MetaStore>(
    iam: &Iam<M>,
    action: &str,
    cx: &Ctx<'_>,
) -> Result<Xml, ApiError> {
    let mut x = Xml::default();
    match action {
        "GetCallerIdentity" => {
            x.leaf("Arn", &cx.caller.principal.arn)
                .leaf("UserId", &cx.caller.userid)
                .leaf("Account", &cx.caller.principal.account);
        }
        "AssumeRole" => assume_role(iam, cx, &mut x).await?,
        "GetSessionToken" => get_session_token(iam, cx, &mut x).await?,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("Could not find operation {action} for version 2011-06-15"),
            ));
        }
    }
    Ok(x)
}

fn denied(cx: &Ctx<'_>, action: &str, resource: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "AccessDenied",
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource}{why}",
            cx.caller.principal.arn
        ),
    )
}

fn duration(cx: &Ctx<'_>, default: i64, max: i64) -> Result<i64, ApiError> {
    let d = match cx.params.get("DurationSeconds") {
        None => default.min(max),
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| ApiError::validation("DurationSeconds must be a number"))?,
    };
    let min = cx.min_session_secs;
    if d < min || d > max {
        return Err(ApiError::validation(format!(
            "The requested DurationSeconds exceeds the allowed range: {min} to {max} seconds."
        )));
    }
    Ok(d)
}

/// Verifies `SerialNumber` + `TokenCode` when given; otherwise the MFA time the calling
/// session already carries.
async fn mfa<M: MetaStore>(iam: &Iam<M>, cx: &Ctx<'_>) -> Result<Option<i64>, ApiError> {
    match (cx.params.get("SerialNumber"), cx.params.get("TokenCode")) {
        (Some(serial), Some(code)) => {
            let user = cx.caller.username.as_deref().ok_or_else(|| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "MFA devices belong to IAM users",
                )
            })?;
            Ok(Some(iam.prove_mfa(&cx.account, user, serial, code).await?))
        }
        (Some(_), None) | (None, Some(_)) => Err(ApiError::validation(
            "SerialNumber and TokenCode must be given together",
        )),
        (None, None) => Ok(cx.caller.session.as_ref().and_then(|s| s.mfa_at)),
    }
}

fn check_session_name(name: &str) -> Result<(), ApiError> {
    let ok = (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "1 validation error detected: Value '{name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* and length 2 to 64"
        )))
    }
}

async fn assume_role<M: MetaStore>(
    iam: &Iam<M>,
    cx: &Ctx<'_>,
    x: &mut Xml,
) -> Result<(), ApiError> {
    let p = cx.params;
    let arn = p.required("RoleArn")?;
    let session_name = p.required("RoleSessionName")?;
    check_session_name(session_name)?;
    if cx.caller.principal.is_root {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Roles may not be assumed by root accounts.",
        ));
    }
    let (role_account, role_name) = role_of(arn)?;
    let st = iam.snapshot();
    let role = st
        .role(&role_account, &role_name)
        .ok()
        .filter(|r| role_arn(&role_account, &r.path, &r.name) == arn)
        .ok_or_else(|| denied(cx, "sts:AssumeRole", arn, ""))?
        .clone();
    let mfa_at = mfa(iam, cx).await?;
    let mut context = cx.context.clone();
    if let Some(at) = mfa_at {
        context.set("aws:MultiFactorAuthPresent", "true");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        context.set("aws:MultiFactorAuthAge", (now - at).max(0).to_string());
    }
    if let Some(si) = p.get("SourceIdentity") {
        context.set("sts:SourceIdentity", si);
    }
    if let Some(ext) = p.get("ExternalId") {
        context.set("sts:ExternalId", ext);
    }
    let req = Request {
        action: "sts:AssumeRole",
        resource: arn,
        principal: Some(&cx.caller.principal),
        context: &context,
    };
    // The trust policy is the role's resource policy, and it must always allow.
    let trust = Policy::parse(&role.trust_policy, PolicyKind::Trust)
        .map_err(|e| ApiError::from(feiyun_iam::IamError::from(e)))?;
    let trusted_statement: &Statement = match trust.evaluate(&req) {
        feiyun_iam::eval::Verdict::Allow(i) => &trust.statements[i],
        feiyun_iam::eval::Verdict::Deny(_) => {
            return Err(denied(
                cx,
                "sts:AssumeRole",
                arn,
                " with an explicit deny in the role's trust policy",
            ));
        }
        feiyun_iam::eval::Verdict::NotApplicable => {
            return Err(denied(
                cx,
                "sts:AssumeRole",
                arn,
                ": the role's trust policy does not allow it",
            ));
        }
    };
    let identity = PolicySet {
        identity: cx
            .caller
            .policies
            .iter()
            .map(|(l, p)| (l.as_str(), p.as_ref()))
            .collect(),
        session: cx.caller.session.as_ref().and_then(|s| s.policy.as_deref()),
        same_account: true,
        ..Default::default()
    }
    .decide(&req);
    let named = feiyun_iam::eval::names_directly(trusted_statement, Some(&cx.caller.principal));
    let same_account = role_account == cx.caller.principal.account;
    match identity {
        Decision::Deny(by) => {
            return Err(denied(
                cx,
                "sts:AssumeRole",
                arn,
                &format!(" with an explicit deny in {by}"),
            ));
        }
        Decision::Allow(_) => {}
        Decision::ImplicitDeny if named && same_account => {}
        Decision::ImplicitDeny => {
            return Err(denied(
                cx,
                "sts:AssumeRole",
                arn,
                " because no identity-based policy allows the sts:AssumeRole action",
            ));
        }
    }
    let max = if cx.caller.session.is_some() {
        CHAINED_MAX_SECS
    } else {
        role.max_session_secs as i64
    };
    let secs = duration(cx, DEFAULT_ROLE_SESSION_SECS, max)?;
    let source_identity = p.get("SourceIdentity").map(str::to_owned).or_else(|| {
        cx.caller
            .session
            .as_ref()
            .and_then(|s| s.source_identity.clone())
    });
    let s = iam
        .issue_session(
            &role_account,
            SessionSubject::Role {
                role: role.name.clone(),
                session_name: session_name.to_owned(),
                federated: None,
            },
            secs,
            p.get("Policy").map(str::to_owned),
            mfa_at,
            source_identity.clone(),
            &cx.caller.principal.arn,
        )
        .await?;
    x.opt("SourceIdentity", source_identity.as_deref())
        .open("AssumedRoleUser")
        .leaf(
            "Arn",
            &format!(
                "arn:aws:sts::{role_account}:assumed-role/{}/{session_name}",
                role.name
            ),
        )
        .leaf("AssumedRoleId", &format!("{}:{session_name}", role.id))
        .close("AssumedRoleUser");
    credentials(x, &s);
    if let Some(pol) = p.get("Policy") {
        // Percent of the packed-policy quota used, as AWS reports it.
        let pct =
            feiyun_iam::policy::non_whitespace_len(pol) * 100 / feiyun_iam::policy::limits::SESSION;
        x.leaf("PackedPolicySize", &pct.to_string());
    }
    Ok(())
}

async fn get_session_token<M: MetaStore>(
    iam: &Iam<M>,
    cx: &Ctx<'_>,
    x: &mut Xml,
) -> Result<(), ApiError> {
    if cx.caller.session.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Cannot call GetSessionToken with session credentials",
        ));
    }
    let Some(user) = cx.caller.username.clone() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "GetSessionToken is for IAM users; the root identity should not hold sessions",
        ));
    };
    // Denied by default like every action: a session multiplies a user's credentials.
    cx.authorize("sts:GetSessionToken", "*")?;
    let secs = duration(cx, USER_SESSION_DEFAULT_SECS, USER_SESSION_MAX_SECS)?;
    let mfa_at = mfa(iam, cx).await?;
    let s = iam
        .issue_session(
            &cx.account,
            SessionSubject::User { user },
            secs,
            None,
            mfa_at,
            None,
            &cx.caller.principal.arn,
        )
        .await?;
    credentials(x, &s);
    Ok(())
}

/// AssumeRoleWithWebIdentity: an OIDC token from the configured provider, which the role's
/// trust policy must accept (`Federated` principal = the provider's ARN, conditions on
/// `PROVIDER:sub`, `PROVIDER:aud`, `PROVIDER:amr`).
pub(crate) async fn assume_role_with_web_identity<M: MetaStore>(
    iam: &Iam<M>,
    oidc: Option<&feiyun_iam::oidc::Oidc>,
    p: &crate::Params,
    min_session_secs: i64,
    audit: &mut feiyun_audit::Decided,
) -> Result<Xml, ApiError> {
    use feiyun_iam::oidc::OidcError;
    let oidc = oidc.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "No OpenID Connect provider is configured on this region",
        )
    })?;
    let arn = p.required("RoleArn")?;
    let session_name = p.required("RoleSessionName")?;
    check_session_name(session_name)?;
    let token = p.required("WebIdentityToken")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Verification never touches the network; a key not loaded yet (the issuer rotated)
    // asks the background refresher and waits a little for it.
    let verified = match oidc.verify(token, now) {
        Err(OidcError::UnknownKey) if oidc.want_refresh() => {
            oidc.wait_installed(std::time::Duration::from_secs(5)).await;
            oidc.verify(token, now)
        }
        other => other,
    };
    let claims = verified.map_err(|e| match e {
        OidcError::Expired => ApiError::new(
            StatusCode::BAD_REQUEST,
            "ExpiredTokenException",
            e.to_string(),
        ),
        OidcError::Rejected(m) => ApiError::new(StatusCode::FORBIDDEN, "IDPRejectedClaim", m),
        OidcError::InvalidToken(m) => {
            ApiError::new(StatusCode::BAD_REQUEST, "InvalidIdentityToken", m)
        }
        OidcError::Keys(m) => {
            tracing::warn!(error = %m, "cannot load the OIDC provider's keys");
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "IDPCommunicationError",
                "The identity provider could not be reached",
            )
        }
        OidcError::UnknownKey => ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "the token is signed with a key the identity provider has not published",
        ),
    })?;
    let (role_account, role_name) = role_of(arn)?;
    let provider_arn = oidc.provider_arn(&role_account);
    audit.tenant = role_account.clone();
    audit.principal = format!("{provider_arn}:{}", claims.sub);
    audit.resource = arn.to_owned();
    let not_allowed = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        )
    };
    let st = iam.snapshot();
    let role = st
        .role(&role_account, &role_name)
        .ok()
        .filter(|r| role_arn(&role_account, &r.path, &r.name) == arn)
        .ok_or_else(|| {
            audit.decision = "ImplicitDeny".into();
            not_allowed()
        })?
        .clone();
    let principal = feiyun_iam::Principal {
        account: role_account.clone(),
        arn: provider_arn.clone(),
        role_arn: None,
        is_root: false,
        federated: Some(provider_arn.clone()),
    };
    let mut context = feiyun_iam::RequestContext::default();
    let provider = oidc.provider().to_owned();
    context.set(&format!("{provider}:sub"), claims.sub.clone());
    context.set_many(&format!("{provider}:aud"), claims.aud.clone());
    context.set_many(&format!("{provider}:amr"), claims.amr.clone());
    context.set("aws:FederatedProvider", provider_arn.clone());
    context.set("aws:CurrentTime", iso8601(now));
    context.set("aws:EpochTime", now.to_string());
    let trust = Policy::parse(&role.trust_policy, PolicyKind::Trust)
        .map_err(|e| ApiError::from(feiyun_iam::IamError::from(e)))?;
    let verdict = trust.evaluate(&Request {
        action: "sts:AssumeRoleWithWebIdentity",
        resource: arn,
        principal: Some(&principal),
        context: &context,
    });
    match verdict {
        feiyun_iam::eval::Verdict::Allow(i) => {
            audit.decision = "Allow".into();
            audit.statement = format!(
                "{arn}:trust#{}",
                trust.statements[i]
                    .sid
                    .clone()
                    .unwrap_or_else(|| i.to_string())
            );
        }
        feiyun_iam::eval::Verdict::Deny(_) => {
            audit.decision = "Deny".into();
            return Err(not_allowed());
        }
        feiyun_iam::eval::Verdict::NotApplicable => {
            audit.decision = "ImplicitDeny".into();
            return Err(not_allowed());
        }
    }
    let max = role.max_session_secs as i64;
    let secs = match p.get("DurationSeconds") {
        None => DEFAULT_ROLE_SESSION_SECS.min(max),
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| ApiError::validation("DurationSeconds must be a number"))?,
    };
    if secs < min_session_secs || secs > max {
        return Err(ApiError::validation(format!(
            "The requested DurationSeconds exceeds the allowed range: {min_session_secs} to {max} seconds."
        )));
    }
    let s = iam
        .issue_session(
            &role_account,
            SessionSubject::Role {
                role: role.name.clone(),
                session_name: session_name.to_owned(),
                federated: Some(provider_arn.clone()),
            },
            secs,
            p.get("Policy").map(str::to_owned),
            None,
            None,
            &format!("{provider_arn}:{}", claims.sub),
        )
        .await?;
    let mut x = Xml::default();
    credentials(&mut x, &s);
    x.leaf("SubjectFromWebIdentityToken", &claims.sub)
        .open("AssumedRoleUser")
        .leaf(
            "Arn",
            &format!(
                "arn:aws:sts::{role_account}:assumed-role/{}/{session_name}",
                role.name
            ),
        )
        .leaf("AssumedRoleId", &format!("{}:{session_name}", role.id))
        .close("AssumedRoleUser")
        .leaf("Provider", oidc.provider())
        .opt("Audience", claims.aud.first().map(String::as_str));
    Ok(x)
}

fn credentials(x: &mut Xml, s: &SessionRecord) {
    x.open("Credentials")
        .leaf("AccessKeyId", &s.access_key)
        .leaf("SecretAccessKey", &s.secret)
        .leaf("SessionToken", &s.token)
        .leaf("Expiration", &iso8601(s.expires))
        .close("Credentials");
}

/// The account and name a role ARN names (`arn:aws:iam::ACCOUNT:role/PATH/NAME`).
fn role_of(arn: &str) -> Result<(String, String), ApiError> {
    let parsed = Arn::parse(arn)
        .filter(|a| a.service == "iam" && a.resource.starts_with("role/"))
        .ok_or_else(|| ApiError::validation(format!("{arn} is not a valid role ARN")))?;
    let name = parsed.resource.rsplit('/').next().unwrap_or_default();
    Ok((parsed.account.to_owned(), name.to_owned()))
}

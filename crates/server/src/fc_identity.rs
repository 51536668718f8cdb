//! Function identities: the function service assumes a function's execution role through
//! the region's IAM, as Lambda does through STS. The role must trust the service principal
//! `fc.amazonaws.com`; the sessions it gets are ordinary STS sessions, so the credentials a
//! function holds are checked and audited like any caller's.

use crate::Store;
use feiyun_fc::host::{Identities, RoleCredentials};
use feiyun_iam::model::{SessionSubject, role_arn};
use feiyun_iam::pattern::Arn;
use feiyun_iam::{Iam, Policy, PolicyKind, Principal, RequestContext};

/// The principal a role's trust policy names to let functions run as it.
pub const SERVICE: &str = "fc.amazonaws.com";

pub struct FcIdentities {
    pub iam: std::sync::Arc<Iam<Store>>,
    /// The S3 authorization, for objects triggers read and write as a principal.
    pub authorize: feiyun_s3api::Authorize<Store, crate::Blobs>,
}

impl FcIdentities {
    /// The role and its ARN, when it exists in `account` and trusts the function service.
    fn trusted(&self, account: &str, role: &str) -> Result<(String, i64), String> {
        let name = if role.starts_with("arn:") {
            let a = Arn::parse(role)
                .filter(|a| a.service == "iam" && a.resource.starts_with("role/"))
                .ok_or_else(|| format!("{role} is not a role ARN"))?;
            if a.account != account {
                return Err(format!(
                    "the role {role} belongs to another account; a function runs as a role of its own account"
                ));
            }
            a.resource.rsplit('/').next().unwrap_or_default().to_owned()
        } else {
            role.to_owned()
        };
        let st = self.iam.snapshot();
        let r = st
            .role(account, &name)
            .map_err(|_| format!("the role {role} does not exist"))?;
        let arn = role_arn(account, &r.path, &r.name);
        if role.starts_with("arn:") && arn != role {
            return Err(format!("the role {role} does not exist"));
        }
        let trust = Policy::parse(&r.trust_policy, PolicyKind::Trust)
            .map_err(|e| format!("the trust policy of {arn} cannot be read: {e}"))?;
        let verdict = trust.evaluate(&feiyun_iam::Request {
            action: "sts:AssumeRole",
            resource: &arn,
            principal: Some(&Principal::service(SERVICE)),
            context: &RequestContext::default(),
        });
        if !matches!(verdict, feiyun_iam::eval::Verdict::Allow(_)) {
            return Err(format!(
                "the role {arn} cannot be assumed by Function Compute: its trust policy must allow sts:AssumeRole to the service principal {SERVICE}"
            ));
        }
        Ok((arn, i64::from(r.max_session_secs)))
    }
}

#[async_trait::async_trait]
impl Identities for FcIdentities {
    async fn authorize_object(
        &self,
        principal: &str,
        action: &str,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<feiyun_oss::KeyCheck, String> {
        let caller = self
            .iam
            .principal_caller(principal, "trigger")
            .ok_or_else(|| format!("{principal} no longer exists"))?;
        let version = match version {
            Some(v) => Some(feiyun_oss::VersionSelector::parse(v).map_err(|e| e.to_string())?),
            None => None,
        };
        let grant = self
            .authorize
            .object_grant(caller, action, bucket, key, version)
            .await?;
        Ok(grant.key_check())
    }

    fn resolve_role(&self, account: &str, role: &str) -> Result<String, String> {
        self.trusted(account, role).map(|(arn, _)| arn)
    }

    async fn assume(
        &self,
        role_arn: &str,
        session: &str,
        secs: i64,
    ) -> Result<RoleCredentials, String> {
        let account = Arn::parse(role_arn)
            .map(|a| a.account.to_owned())
            .ok_or_else(|| format!("{role_arn} is not a role ARN"))?;
        // Checked again at every new session: a role that stopped trusting the service, or
        // was deleted, stops handing out credentials.
        let (arn, max) = self.trusted(&account, role_arn)?;
        let role = arn.rsplit('/').next().unwrap_or_default().to_owned();
        let s = self
            .iam
            .issue_session(
                &account,
                SessionSubject::Role {
                    role,
                    session_name: session.to_owned(),
                    federated: None,
                },
                secs.min(max.max(900)),
                None,
                None,
                None,
                &format!("{SERVICE}/{session}"),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(RoleCredentials {
            access_key: s.access_key,
            secret_key: s.secret,
            session_token: s.token,
            expires: s.expires,
        })
    }
}

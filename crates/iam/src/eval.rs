//! Policy evaluation as AWS documents it: deny by default, an explicit Deny anywhere wins,
//! identity-based and resource-based Allows combine within an account (both are needed
//! across accounts), and a session policy intersects with the identity's own.

use std::borrow::Cow;

use crate::pattern::{self, Substituted};
use crate::policy::{Effect, Negatable, Policy, PrincipalPattern, Statement};

/// The condition keys of one request, by lowercase name. Multi-valued keys (`aws:TagKeys`)
/// hold several values. A request carries a dozen or two keys, so a vector searched in
/// order beats a hash map, and static key names cost no allocation.
#[derive(Debug, Default, Clone)]
pub struct RequestContext {
    keys: Vec<(Cow<'static, str>, Vec<String>)>,
}

impl RequestContext {
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.put(Cow::Owned(key.to_ascii_lowercase()), vec![value.into()]);
    }

    /// For a key name known at compile time; it must already be lowercase.
    pub fn set_static(&mut self, key: &'static str, value: impl Into<String>) {
        debug_assert_eq!(key, key.to_ascii_lowercase());
        self.put(Cow::Borrowed(key), vec![value.into()]);
    }

    pub fn set_many(&mut self, key: &str, values: Vec<String>) {
        self.put(Cow::Owned(key.to_ascii_lowercase()), values);
    }

    fn put(&mut self, key: Cow<'static, str>, values: Vec<String>) {
        match self.keys.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = values,
            None => self.keys.push((key, values)),
        }
    }

    /// `key` must be lowercase.
    pub fn values(&self, key: &str) -> Option<&[String]> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of a single-valued key, for policy variables (any case).
    pub fn single_value(&self, key: &str) -> Option<&str> {
        let found = self
            .keys
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))?;
        match found.1.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Who is asking. `None` in [`Request::principal`] means anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account: String,
    /// `arn:aws:iam::ACCOUNT:root`, `…:user/NAME` or `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub arn: String,
    /// For a role session, the role's own ARN, which resource policies may name instead of
    /// the session.
    pub role_arn: Option<String>,
    /// The account's root identity, which identity policies do not restrict.
    pub is_root: bool,
    /// For web-identity sessions: the issuer, matched by `Federated` principals.
    pub federated: Option<String>,
}

impl Principal {
    /// A service of the region acting on its own (`fc.amazonaws.com` assuming a function's
    /// role): no account, its name in place of an ARN, matched only by `Service` principals.
    pub fn service(name: &str) -> Self {
        Self {
            account: String::new(),
            arn: name.to_owned(),
            role_arn: None,
            is_root: false,
            federated: None,
        }
    }
}

pub struct Request<'a> {
    /// `service:Action`, e.g. `s3:GetObject`.
    pub action: &'a str,
    /// The resource ARN, or `*` for actions without one (`s3:ListAllMyBuckets`).
    pub resource: &'a str,
    pub principal: Option<&'a Principal>,
    pub context: &'a RequestContext,
}

/// Which statement decided, for the audit record and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedBy {
    /// A label the caller gave the policy, e.g. `user/alice:inline/readonly`.
    pub policy: String,
    pub sid: Option<String>,
    pub index: usize,
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sid {
            Some(sid) => write!(f, "{}#{sid}", self.policy),
            None => write!(f, "{}#{}", self.policy, self.index),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Option<DecidedBy>),
    /// An explicit Deny statement matched.
    Deny(DecidedBy),
    /// Nothing allowed it.
    ImplicitDeny,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// One policy's verdict on a request, before combining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Deny(usize),
    Allow(usize),
    NotApplicable,
}

impl Policy {
    /// Deny statements win over Allow statements within one policy too.
    pub fn evaluate(&self, req: &Request) -> Verdict {
        let mut allow = None;
        for (i, s) in self.statements.iter().enumerate() {
            if !statement_applies(s, req, self.variables) {
                continue;
            }
            match s.effect {
                Effect::Deny => return Verdict::Deny(i),
                Effect::Allow => {
                    allow.get_or_insert(i);
                }
            }
        }
        match allow {
            Some(i) => Verdict::Allow(i),
            None => Verdict::NotApplicable,
        }
    }

    fn decided_by(&self, label: &str, index: usize) -> DecidedBy {
        DecidedBy {
            policy: label.to_owned(),
            sid: self.statements.get(index).and_then(|s| s.sid.clone()),
            index,
        }
    }
}

/// Every policy that bears on one request.
#[derive(Default)]
pub struct PolicySet<'a> {
    /// The principal's own policies (inline, attached, through groups), with labels.
    pub identity: Vec<(&'a str, &'a Policy)>,
    /// The resource's policy (a bucket policy), if any.
    pub resource: Option<(&'a str, &'a Policy)>,
    /// The session policy passed to AssumeRole, if any.
    pub session: Option<&'a Policy>,
    /// Whether the principal belongs to the account that owns the resource. Across accounts
    /// both sides must allow.
    pub same_account: bool,
}

impl PolicySet<'_> {
    pub fn decide(&self, req: &Request) -> Decision {
        let mut identity_allow = None;
        for (label, p) in &self.identity {
            match p.evaluate(req) {
                Verdict::Deny(i) => return Decision::Deny(p.decided_by(label, i)),
                Verdict::Allow(i) => {
                    identity_allow.get_or_insert_with(|| p.decided_by(label, i));
                }
                Verdict::NotApplicable => {}
            }
        }
        let mut resource_allow = None;
        if let Some((label, p)) = self.resource {
            match p.evaluate(req) {
                Verdict::Deny(i) => return Decision::Deny(p.decided_by(label, i)),
                Verdict::Allow(i) => resource_allow = Some((p.decided_by(label, i), i)),
                Verdict::NotApplicable => {}
            }
        }
        let mut session_allows = true;
        if let Some(p) = self.session {
            match p.evaluate(req) {
                Verdict::Deny(i) => return Decision::Deny(p.decided_by("session-policy", i)),
                Verdict::Allow(_) => {}
                Verdict::NotApplicable => session_allows = false,
            }
        }
        let is_root = req.principal.is_some_and(|p| p.is_root);
        if is_root && self.same_account {
            return Decision::Allow(None);
        }
        // A statement that names only the caller's account delegates to that account: its
        // users still need their own identity policy (AWS's account-principal rule), so by
        // itself it grants only the account's root.
        if let (Some((_, p)), Some((_, i))) = (self.resource, resource_allow.as_ref())
            && !is_root
            && self.same_account
            && p.statements
                .get(*i)
                .is_some_and(|s| !names_directly(s, req.principal))
        {
            resource_allow = None;
        }
        let identity_ok = identity_allow.is_some() && session_allows;
        // A resource policy that names the role (not the session) is limited by the session
        // policy; one naming the session itself is not (AWS's documented exception).
        let resource_ok = resource_allow.as_ref().is_some_and(|(_, i)| {
            session_allows || self.session.is_none() || self.names_session_directly(*i, req)
        });
        if self.same_account {
            if identity_ok {
                return Decision::Allow(identity_allow);
            }
            if resource_ok {
                return Decision::Allow(resource_allow.map(|(d, _)| d));
            }
        } else if (identity_ok || req.principal.is_none()) && resource_ok {
            // Anonymous requests have no identity side; only the resource policy speaks.
            return Decision::Allow(resource_allow.map(|(d, _)| d));
        }
        Decision::ImplicitDeny
    }

    fn names_session_directly(&self, index: usize, req: &Request) -> bool {
        let (Some((_, p)), Some(principal)) = (self.resource, req.principal) else {
            return false;
        };
        p.statements
            .get(index)
            .and_then(|s| s.principal.as_ref())
            .is_some_and(|pp| {
                pp.items
                    .iter()
                    .any(|x| matches!(x, PrincipalPattern::Arn(a) if *a == principal.arn))
            })
    }
}

fn statement_applies(s: &Statement, req: &Request, variables: bool) -> bool {
    if let Some(p) = &s.principal {
        let hit = p
            .items
            .iter()
            .any(|pp| principal_matches(pp, req.principal));
        if hit == p.negated {
            return false;
        }
    }
    let action_hit = s
        .action
        .items
        .iter()
        .any(|a| pattern::glob(a, req.action, true));
    if action_hit == s.action.negated {
        return false;
    }
    if let Some(r) = &s.resource
        && !resource_applies(r, req, variables)
    {
        return false;
    }
    s.conditions.iter().all(|c| c.holds(req.context, variables))
}

fn resource_applies(r: &Negatable<Vec<String>>, req: &Request, variables: bool) -> bool {
    let hit = r.items.iter().any(|pat| {
        if pat == "*" {
            return true;
        }
        if !variables || !pat.contains("${") {
            return pattern::arn_like(pat, req.resource);
        }
        match pattern::substitute(pat, req.context) {
            Substituted::Pattern(pieces) => pattern::arn_like_pieces(&pieces, req.resource),
            Substituted::Unresolved => false,
        }
    });
    hit != r.negated
}

/// Whether a statement's principal matches the caller other than through a whole-account
/// entry.
pub fn names_directly(s: &Statement, who: Option<&Principal>) -> bool {
    let Some(p) = &s.principal else { return false };
    if p.negated {
        return true;
    }
    p.items
        .iter()
        .any(|pp| !matches!(pp, PrincipalPattern::Account(_)) && principal_matches(pp, who))
}

fn principal_matches(pattern: &PrincipalPattern, who: Option<&Principal>) -> bool {
    match (pattern, who) {
        (PrincipalPattern::Anyone, _) => true,
        (_, None) => false,
        (PrincipalPattern::Account(a), Some(p)) => *a == p.account,
        (PrincipalPattern::Arn(a), Some(p)) => {
            *a == p.arn || p.role_arn.as_deref() == Some(a.as_str())
        }
        (PrincipalPattern::Federated(f), Some(p)) => p.federated.as_deref() == Some(f.as_str()),
        (PrincipalPattern::Service(s), Some(p)) => p.account.is_empty() && p.arn == *s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyKind;

    fn user(name: &str) -> Principal {
        Principal {
            account: "111122223333".into(),
            arn: format!("arn:aws:iam::111122223333:user/{name}"),
            role_arn: None,
            is_root: false,
            federated: None,
        }
    }

    fn identity(text: &str) -> Policy {
        Policy::parse(text, PolicyKind::Identity).unwrap()
    }

    fn ctx_for(p: &Principal) -> RequestContext {
        let mut c = RequestContext::default();
        if let Some(name) = p.arn.strip_prefix("arn:aws:iam::111122223333:user/") {
            c.set("aws:username", name);
        }
        c
    }

    fn decide(
        set: &PolicySet,
        who: Option<&Principal>,
        action: &str,
        resource: &str,
        cx: &RequestContext,
    ) -> Decision {
        set.decide(&Request {
            action,
            resource,
            principal: who,
            context: cx,
        })
    }

    #[test]
    fn default_deny_and_explicit_deny_wins() {
        let allow_all = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#,
        );
        let deny_delete = identity(
            r#"{"Version":"2012-10-17","Statement":{"Sid":"NoDelete","Effect":"Deny","Action":"s3:Delete*","Resource":"arn:aws:s3:::prod/*"}}"#,
        );
        let alice = user("alice");
        let cx = ctx_for(&alice);
        let none = PolicySet {
            same_account: true,
            ..Default::default()
        };
        assert_eq!(
            decide(&none, Some(&alice), "s3:GetObject", "arn:aws:s3:::b/k", &cx),
            Decision::ImplicitDeny
        );
        let set = PolicySet {
            identity: vec![("a", &allow_all), ("d", &deny_delete)],
            same_account: true,
            ..Default::default()
        };
        assert!(
            decide(
                &set,
                Some(&alice),
                "s3:GetObject",
                "arn:aws:s3:::prod/k",
                &cx
            )
            .allowed()
        );
        assert!(
            decide(
                &set,
                Some(&alice),
                "s3:DeleteObject",
                "arn:aws:s3:::dev/k",
                &cx
            )
            .allowed()
        );
        match decide(
            &set,
            Some(&alice),
            "s3:DeleteObject",
            "arn:aws:s3:::prod/k",
            &cx,
        ) {
            Decision::Deny(by) => assert_eq!(by.to_string(), "d#NoDelete"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn service_principals_match_only_their_service() {
        let trust = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"fc.amazonaws.com"},"Action":"sts:AssumeRole"}}"#,
            PolicyKind::Trust,
        )
        .unwrap();
        let cx = RequestContext::default();
        let ask = |who: &Principal| {
            trust.evaluate(&Request {
                action: "sts:AssumeRole",
                resource: "arn:aws:iam::111122223333:role/r",
                principal: Some(who),
                context: &cx,
            })
        };
        assert!(matches!(
            ask(&Principal::service("fc.amazonaws.com")),
            Verdict::Allow(0)
        ));
        assert!(matches!(
            ask(&Principal::service("lambda.amazonaws.com")),
            Verdict::NotApplicable
        ));
        // A user whose ARN happened to spell the service name is still not the service.
        let mut impostor = user("x");
        impostor.arn = "fc.amazonaws.com".into();
        assert!(matches!(ask(&impostor), Verdict::NotApplicable));
        let by_account = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole"}}"#,
            PolicyKind::Trust,
        )
        .unwrap();
        assert!(matches!(
            by_account.evaluate(&Request {
                action: "sts:AssumeRole",
                resource: "arn:aws:iam::111122223333:role/r",
                principal: Some(&Principal::service("fc.amazonaws.com")),
                context: &cx,
            }),
            Verdict::NotApplicable
        ));
    }

    /// The IAM User Guide's per-user home folder example with `${aws:username}`.
    #[test]
    fn home_directory_with_policy_variables() {
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":[
              {"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::demo",
               "Condition":{"StringLike":{"s3:prefix":["","home/","home/${aws:username}/*"]}}},
              {"Effect":"Allow","Action":"s3:*Object","Resource":"arn:aws:s3:::demo/home/${aws:username}/*"}]}"#,
        );
        let set = PolicySet {
            identity: vec![("p", &p)],
            same_account: true,
            ..Default::default()
        };
        let alice = user("alice");
        let mut cx = ctx_for(&alice);
        assert!(
            decide(
                &set,
                Some(&alice),
                "s3:GetObject",
                "arn:aws:s3:::demo/home/alice/a.txt",
                &cx
            )
            .allowed()
        );
        assert!(
            !decide(
                &set,
                Some(&alice),
                "s3:GetObject",
                "arn:aws:s3:::demo/home/bob/a.txt",
                &cx
            )
            .allowed()
        );
        assert!(
            !decide(
                &set,
                Some(&alice),
                "s3:GetObjectAcl",
                "arn:aws:s3:::demo/home/alice/a.txt",
                &cx
            )
            .allowed()
        );
        cx.set("s3:prefix", "home/alice/");
        assert!(
            decide(
                &set,
                Some(&alice),
                "s3:ListBucket",
                "arn:aws:s3:::demo",
                &cx
            )
            .allowed()
        );
        cx.set("s3:prefix", "home/bob/");
        assert!(
            !decide(
                &set,
                Some(&alice),
                "s3:ListBucket",
                "arn:aws:s3:::demo",
                &cx
            )
            .allowed()
        );
        cx.set("s3:prefix", "");
        assert!(
            decide(
                &set,
                Some(&alice),
                "s3:ListBucket",
                "arn:aws:s3:::demo",
                &cx
            )
            .allowed()
        );
    }

    #[test]
    fn not_action_and_not_resource() {
        // "Deny everything except IAM self-service" shape from the User Guide.
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":[
              {"Effect":"Allow","Action":"*","Resource":"*"},
              {"Effect":"Deny","NotAction":["s3:Get*","s3:List*"],"NotResource":"arn:aws:s3:::scratch/*"}]}"#,
        );
        let set = PolicySet {
            identity: vec![("p", &p)],
            same_account: true,
            ..Default::default()
        };
        let u = user("u");
        let cx = ctx_for(&u);
        assert!(decide(&set, Some(&u), "s3:GetObject", "arn:aws:s3:::prod/k", &cx).allowed());
        assert!(!decide(&set, Some(&u), "s3:PutObject", "arn:aws:s3:::prod/k", &cx).allowed());
        assert!(
            decide(
                &set,
                Some(&u),
                "s3:PutObject",
                "arn:aws:s3:::scratch/k",
                &cx
            )
            .allowed()
        );
    }

    #[test]
    fn bucket_policy_public_read_and_cross_account() {
        let bucket = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[
              {"Sid":"PublicRead","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/*"},
              {"Sid":"Partner","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:user/partner"},"Action":"s3:PutObject","Resource":"arn:aws:s3:::site/in/*"}]}"#,
            PolicyKind::Resource,
        )
        .unwrap();
        let cx = RequestContext::default();
        let anon = PolicySet {
            resource: Some(("bucket/site", &bucket)),
            same_account: false,
            ..Default::default()
        };
        assert!(
            decide(
                &anon,
                None,
                "s3:GetObject",
                "arn:aws:s3:::site/index.html",
                &cx
            )
            .allowed()
        );
        assert!(
            !decide(
                &anon,
                None,
                "s3:PutObject",
                "arn:aws:s3:::site/index.html",
                &cx
            )
            .allowed()
        );
        // Cross-account: the partner's own account must allow too.
        let partner = Principal {
            account: "444455556666".into(),
            arn: "arn:aws:iam::444455556666:user/partner".into(),
            role_arn: None,
            is_root: false,
            federated: None,
        };
        let own = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:PutObject","Resource":"*"}}"#,
        );
        let without = PolicySet {
            resource: Some(("b", &bucket)),
            same_account: false,
            ..Default::default()
        };
        assert!(
            !decide(
                &without,
                Some(&partner),
                "s3:PutObject",
                "arn:aws:s3:::site/in/x",
                &cx
            )
            .allowed()
        );
        let with = PolicySet {
            identity: vec![("own", &own)],
            resource: Some(("b", &bucket)),
            same_account: false,
            ..Default::default()
        };
        assert!(
            decide(
                &with,
                Some(&partner),
                "s3:PutObject",
                "arn:aws:s3:::site/in/x",
                &cx
            )
            .allowed()
        );
        assert!(
            !decide(
                &with,
                Some(&partner),
                "s3:PutObject",
                "arn:aws:s3:::site/out/x",
                &cx
            )
            .allowed()
        );
    }

    #[test]
    fn same_account_bucket_policy_alone_suffices_and_its_deny_binds_root() {
        let bucket = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[
              {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"},
              {"Sid":"TLSOnly","Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"],
               "Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#,
            PolicyKind::Resource,
        )
        .unwrap();
        let set = PolicySet {
            resource: Some(("b", &bucket)),
            same_account: true,
            ..Default::default()
        };
        let bob = user("bob");
        let mut cx = ctx_for(&bob);
        cx.set("aws:SecureTransport", "true");
        assert!(decide(&set, Some(&bob), "s3:GetObject", "arn:aws:s3:::b/k", &cx).allowed());
        assert!(
            !decide(
                &set,
                Some(&user("carol")),
                "s3:GetObject",
                "arn:aws:s3:::b/k",
                &cx
            )
            .allowed()
        );
        let root = Principal {
            account: "111122223333".into(),
            arn: "arn:aws:iam::111122223333:root".into(),
            role_arn: None,
            is_root: true,
            federated: None,
        };
        assert!(
            decide(
                &set,
                Some(&root),
                "s3:DeleteObject",
                "arn:aws:s3:::b/k",
                &cx
            )
            .allowed()
        );
        cx.set("aws:SecureTransport", "false");
        assert!(matches!(
            decide(&set, Some(&root), "s3:GetObject", "arn:aws:s3:::b/k", &cx),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn account_principal_delegates_to_identity_policies() {
        let bucket = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#,
            PolicyKind::Resource,
        )
        .unwrap();
        let cx = RequestContext::default();
        let u = user("u");
        let alone = PolicySet {
            resource: Some(("b", &bucket)),
            same_account: true,
            ..Default::default()
        };
        assert_eq!(
            decide(&alone, Some(&u), "s3:GetObject", "arn:aws:s3:::b/k", &cx),
            Decision::ImplicitDeny
        );
        // Across accounts the same statement is the resource side of a two-sided grant.
        let own = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}}"#,
        );
        let other = Principal {
            account: "111122223333".into(),
            ..u.clone()
        };
        let cross = PolicySet {
            identity: vec![("own", &own)],
            resource: Some(("b", &bucket)),
            same_account: false,
            ..Default::default()
        };
        assert!(
            decide(
                &cross,
                Some(&other),
                "s3:GetObject",
                "arn:aws:s3:::b/k",
                &cx
            )
            .allowed()
        );
    }

    #[test]
    fn session_policy_intersects() {
        let role_policy = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#,
        );
        let session = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}}"#,
        );
        let who = Principal {
            account: "111122223333".into(),
            arn: "arn:aws:sts::111122223333:assumed-role/ops/s1".into(),
            role_arn: Some("arn:aws:iam::111122223333:role/ops".into()),
            is_root: false,
            federated: None,
        };
        let cx = RequestContext::default();
        let set = PolicySet {
            identity: vec![("r", &role_policy)],
            session: Some(&session),
            same_account: true,
            ..Default::default()
        };
        assert!(decide(&set, Some(&who), "s3:GetObject", "arn:aws:s3:::b/k", &cx).allowed());
        assert!(!decide(&set, Some(&who), "s3:PutObject", "arn:aws:s3:::b/k", &cx).allowed());
        // A bucket policy naming the role is limited by the session policy; naming the
        // session is not.
        let by_role = Policy::parse(
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/ops"},"Action":"s3:PutObject","Resource":"*"}}"#,
            PolicyKind::Resource,
        ).unwrap();
        let by_session = Policy::parse(
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/ops/s1"},"Action":"s3:PutObject","Resource":"*"}}"#,
            PolicyKind::Resource,
        ).unwrap();
        let s1 = PolicySet {
            resource: Some(("b", &by_role)),
            session: Some(&session),
            same_account: true,
            ..Default::default()
        };
        assert!(!decide(&s1, Some(&who), "s3:PutObject", "arn:aws:s3:::b/k", &cx).allowed());
        let s2 = PolicySet {
            resource: Some(("b", &by_session)),
            session: Some(&session),
            same_account: true,
            ..Default::default()
        };
        assert!(decide(&s2, Some(&who), "s3:PutObject", "arn:aws:s3:::b/k", &cx).allowed());
    }

    #[test]
    fn require_mfa_for_deletes() {
        // From the User Guide: deny when MFA is absent, with BoolIfExists.
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":[
              {"Effect":"Allow","Action":"s3:*","Resource":"*"},
              {"Effect":"Deny","Action":"s3:DeleteObject*","Resource":"*",
               "Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}]}"#,
        );
        let set = PolicySet {
            identity: vec![("p", &p)],
            same_account: true,
            ..Default::default()
        };
        let u = user("u");
        let mut cx = ctx_for(&u);
        assert!(!decide(&set, Some(&u), "s3:DeleteObject", "arn:aws:s3:::b/k", &cx).allowed());
        cx.set("aws:MultiFactorAuthPresent", "false");
        assert!(!decide(&set, Some(&u), "s3:DeleteObject", "arn:aws:s3:::b/k", &cx).allowed());
        cx.set("aws:MultiFactorAuthPresent", "true");
        assert!(decide(&set, Some(&u), "s3:DeleteObject", "arn:aws:s3:::b/k", &cx).allowed());
    }

    #[test]
    fn actions_match_case_insensitively_resources_do_not() {
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"S3:getobject","Resource":"arn:aws:s3:::B/*"}}"#,
        );
        let set = PolicySet {
            identity: vec![("p", &p)],
            same_account: true,
            ..Default::default()
        };
        let u = user("u");
        let cx = ctx_for(&u);
        assert!(decide(&set, Some(&u), "s3:GetObject", "arn:aws:s3:::B/k", &cx).allowed());
        assert!(!decide(&set, Some(&u), "s3:GetObject", "arn:aws:s3:::b/k", &cx).allowed());
    }
}

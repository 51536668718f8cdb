//! What a bucket says about access to itself: its bucket policy (validated the way S3
//! validates one) and its public access block, plus S3's test for whether a policy is public.

use serde::{Deserialize, Serialize};

use crate::pattern;
use crate::policy::{Effect, Policy, PolicyError, PolicyKind, PrincipalPattern, limits};

/// S3's four public-access switches. New buckets get all four on, as AWS does since 2023.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAccessBlock {
    pub block_public_acls: bool,
    pub ignore_public_acls: bool,
    pub block_public_policy: bool,
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    pub const ALL_ON: Self = PublicAccessBlock {
        block_public_acls: true,
        ignore_public_acls: true,
        block_public_policy: true,
        restrict_public_buckets: true,
    };

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The bucket subresource names these are stored under.
pub const POLICY_CONFIG: &str = "policy";
pub const PUBLIC_ACCESS_BLOCK_CONFIG: &str = "public-access-block";

/// Parses a bucket policy for `bucket`: a resource policy whose actions are S3's and whose
/// resources are this bucket or its objects.
pub fn parse_bucket_policy(bucket: &str, text: &str) -> Result<Policy, PolicyError> {
    if text.len() > limits::BUCKET_POLICY_BYTES {
        return Err(PolicyError::TooLarge {
            limit: limits::BUCKET_POLICY_BYTES,
        });
    }
    if !text.trim_start().starts_with('{') {
        return Err(PolicyError::Malformed(
            "Policies must be valid JSON and the first byte must be '{'".into(),
        ));
    }
    let policy = Policy::parse(text, PolicyKind::Resource)?;
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let objects = format!("{bucket_arn}/");
    for s in &policy.statements {
        for a in &s.action.items {
            let lower = a.to_ascii_lowercase();
            if lower != "*" && !lower.starts_with("s3:") {
                return Err(PolicyError::Malformed(format!(
                    "Policy has invalid action: {a}"
                )));
            }
        }
        if let Some(r) = &s.resource {
            for res in &r.items {
                if *res != bucket_arn && !res.starts_with(&objects) {
                    return Err(PolicyError::Malformed(format!(
                        "Policy has invalid resource: {res}"
                    )));
                }
            }
        }
    }
    Ok(policy)
}

/// Condition keys that pin a grant to known callers, so a `"Principal": "*"` statement using
/// one (with a positive operator) is not public.
const NARROWING_KEYS: &[&str] = &[
    "aws:sourceip",
    "aws:sourcearn",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceowner",
    "aws:sourceaccount",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:userid",
];

/// Whether a policy grants access to everyone, as S3's GetBucketPolicyStatus and
/// BlockPublicPolicy judge it.
pub fn is_public(policy: &Policy) -> bool {
    policy.statements.iter().any(|s| {
        let everyone = s
            .principal
            .as_ref()
            .is_some_and(|p| !p.negated && p.items.contains(&PrincipalPattern::Anyone));
        let narrowed = s.conditions.iter().any(|c| {
            !c.op.negated
                && NARROWING_KEYS.contains(&c.key.as_str())
                && c.values.iter().all(|v| {
                    !(v == "*"
                        || v == "0.0.0.0/0"
                        || v == "::/0"
                        || (v.contains('*') && pattern::glob(v, "", false)))
                })
        });
        s.effect == Effect::Allow && everyone && !narrowed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_policy_validation() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/*"}]}"#;
        assert!(parse_bucket_policy("site", ok).is_ok());
        let rows = [
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::other/*"}]}"#,
                "invalid resource",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::sitex/*"}]}"#,
                "invalid resource",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"iam:CreateUser","Resource":"arn:aws:s3:::site"}]}"#,
                "invalid action",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/*"}]}"#,
                "Principal",
            ),
            (r#"  ["not an object"]"#, "first byte"),
        ];
        for (text, want) in rows {
            match parse_bucket_policy("site", text) {
                Err(PolicyError::Malformed(m)) => assert!(m.contains(want), "{m} vs {want}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let huge = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"{}","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/*"}}]}}"#,
            "a".repeat(21 * 1024)
        );
        assert_eq!(
            parse_bucket_policy("site", &huge),
            Err(PolicyError::TooLarge { limit: 20480 })
        );
    }

    #[test]
    fn public_or_not() {
        let p = |text: &str| parse_bucket_policy("b", text).unwrap();
        assert!(is_public(&p(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#
        )));
        assert!(is_public(&p(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#
        )));
        assert!(!is_public(&p(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#
        )));
        assert!(is_public(&p(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}}]}"#
        )));
        assert!(!is_public(&p(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#
        )));
        assert!(!is_public(&p(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*"}]}"#
        )));
    }
}

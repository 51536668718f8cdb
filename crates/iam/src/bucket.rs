//! What a bucket says about access to itself: its bucket policy (validated the way S3
//! validates one) and its public access block, plus S3's test for whether a policy is public.

use serde::{Deserialize, Serialize};

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

/// Condition keys that pin a grant to known callers, so a `"Principal": "*"` statement that
/// fixes one of them is not public — AWS's list ("The meaning of public"), lowercase.
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
    "s3:x-amz-server-side-encryption-aws-kms-key-id",
];

/// Whether a policy grants access to everyone, as S3's GetBucketPolicyStatus and
/// BlockPublicPolicy judge it: an `Allow` to `"*"` is public unless one of its conditions
/// fixes a narrowing key.
pub fn is_public(policy: &Policy) -> bool {
    policy.statements.iter().any(|s| {
        let everyone = s
            .principal
            .as_ref()
            .is_some_and(|p| !p.negated && p.items.contains(&PrincipalPattern::Anyone));
        s.effect == Effect::Allow && everyone && !s.conditions.iter().any(fixes_a_caller)
    })
}

/// Whether a condition limits a statement to fixed callers for an anonymous request too.
///
/// Anonymous callers carry none of the narrowing keys except `aws:SourceIp`, so a condition
/// narrows only if it fails when its key is absent and passes only for the fixed values it
/// names: a positive operator (a `Not…` form passes for every value but those); no
/// `…IfExists` (it passes when the key is absent); no `ForAllValues:` (it passes on an empty
/// set); values without wildcards or policy variables; and for `aws:SourceIp`, ranges that
/// are not the whole address space or most of it.
fn fixes_a_caller(c: &crate::condition::Condition) -> bool {
    use crate::condition::{Family, SetQualifier};
    let op = &c.op;
    if op.negated || op.if_exists || op.qualifier == SetQualifier::ForAllValues {
        return false;
    }
    if !NARROWING_KEYS.contains(&c.key.as_str()) || c.values.is_empty() {
        return false;
    }
    let fixed = |v: &str| !v.contains('*') && !v.contains('?') && !v.contains("${");
    match op.family {
        Family::IpAddress => c.values.iter().all(|v| narrow_cidr(v)),
        Family::StringEquals | Family::StringEqualsIgnoreCase | Family::StringLike => {
            c.values.iter().all(|v| fixed(v))
        }
        Family::ArnLike => c.values.iter().all(|v| fixed(v)),
        // Null, dates, numbers, Bool and binary never pin a caller.
        _ => false,
    }
}

/// A CIDR narrow enough to name a known network: at least a /8 of IPv4 or a /32 of IPv6
/// (anything wider, up to `0.0.0.0/0`, is most of the internet).
fn narrow_cidr(v: &str) -> bool {
    let (addr, bits) = match v.split_once('/') {
        Some((a, b)) => (a, b.parse::<u8>().ok()),
        None => (v, None),
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits.unwrap_or(32) >= 8,
        Ok(std::net::IpAddr::V6(_)) => bits.unwrap_or(128) >= 32,
        Err(_) => false,
    }
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

    /// AWS's definition, row by row: (condition block, public?).
    #[test]
    fn public_policy_table() {
        let rows: &[(&str, bool)] = &[
            ("", true),
            (r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, false),
            (r#"{"IpAddress":{"aws:SourceIp":"192.0.2.7"}}"#, false),
            (r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#, true),
            (r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/1"}}"#, true),
            (r#"{"IpAddress":{"aws:SourceIp":"::/0"}}"#, true),
            (r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#, false),
            (
                r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","0.0.0.0/0"]}}"#,
                true,
            ),
            // Absent for anonymous callers: the condition passes.
            (
                r#"{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#,
                true,
            ),
            (
                r#"{"StringEqualsIfExists":{"aws:SourceAccount":"123456789012"}}"#,
                true,
            ),
            (
                r#"{"ForAllValues:StringEquals":{"aws:SourceAccount":"123456789012"}}"#,
                true,
            ),
            (
                r#"{"ForAnyValue:StringEquals":{"aws:SourceAccount":"123456789012"}}"#,
                false,
            ),
            (r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, true),
            (r#"{"StringNotEquals":{"aws:SourceVpc":"vpc-1"}}"#, true),
            (r#"{"StringEquals":{"aws:SourceVpce":"vpce-1"}}"#, false),
            (r#"{"StringEquals":{"aws:PrincipalOrgID":"o-123"}}"#, false),
            (r#"{"StringLike":{"aws:SourceVpc":"vpc-*"}}"#, true),
            (
                r#"{"StringEquals":{"aws:SourceAccount":"${aws:username}"}}"#,
                true,
            ),
            (
                r#"{"ArnEquals":{"aws:SourceArn":"arn:aws:sns:us-east-1:123456789012:t"}}"#,
                false,
            ),
            (
                r#"{"ArnLike":{"aws:SourceArn":"arn:aws:sns:*:123456789012:t"}}"#,
                true,
            ),
            (
                r#"{"StringEquals":{"s3:x-amz-server-side-encryption-aws-kms-key-id":"arn:aws:kms:us-east-1:123456789012:key/k"}}"#,
                false,
            ),
            // Not a narrowing key.
            (r#"{"StringEquals":{"aws:UserAgent":"curl"}}"#, true),
            (r#"{"Null":{"aws:SourceIp":"false"}}"#, true),
            (r#"{"Bool":{"aws:SecureTransport":"true"}}"#, true),
            // One narrowing condition among others narrows the statement.
            (
                r#"{"Bool":{"aws:SecureTransport":"true"},"StringEquals":{"aws:SourceVpc":"vpc-1"}}"#,
                false,
            ),
        ];
        for (cond, public) in rows {
            let text = if cond.is_empty() {
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#.to_owned()
            } else {
                format!(
                    r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{cond}}}]}}"#
                )
            };
            let p = parse_bucket_policy("b", &text).unwrap_or_else(|e| panic!("{cond}: {e}"));
            assert_eq!(is_public(&p), *public, "{cond}");
        }
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

//! AWS policy documents (JSON, version 2012-10-17): parsing, validation with the errors IAM
//! and S3 give, and the parsed form the evaluator runs on. Nothing here decides access.

use serde_json::{Map, Value};

use crate::condition::{Condition, Operator};
use crate::pattern::Arn;

/// The three places a policy document appears; each allows different elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a user, group or role, or passed as a session policy: no `Principal`,
    /// `Resource` required.
    Identity,
    /// A bucket policy: `Principal` required.
    Resource,
    /// A role's trust policy: `Principal` required, no `Resource`.
    Trust,
}

/// The most characters (whitespace excluded) AWS accepts, per place.
pub mod limits {
    pub const USER_INLINE_TOTAL: usize = 2048;
    pub const GROUP_INLINE_TOTAL: usize = 5120;
    pub const ROLE_INLINE_TOTAL: usize = 10240;
    pub const MANAGED: usize = 6144;
    pub const TRUST: usize = 2048;
    pub const SESSION: usize = 2048;
    /// Bucket policies are limited in bytes, whitespace included.
    pub const BUCKET_POLICY_BYTES: usize = 20 * 1024;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The document is not a policy: bad JSON, missing or unknown elements, bad values.
    #[error("{0}")]
    Malformed(String),
    /// The document is larger than the place it is put allows.
    #[error("Cannot exceed quota for PolicySize: {limit}")]
    TooLarge { limit: usize },
}

fn malformed(msg: impl Into<String>) -> PolicyError {
    PolicyError::Malformed(msg.into())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Only 2012-10-17 policies expand `${…}` variables; older ones match them literally.
    pub variables: bool,
    pub id: Option<String>,
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// `Principal` (`negated == false`) or `NotPrincipal`; `None` in identity policies.
    pub principal: Option<Negatable<Vec<PrincipalPattern>>>,
    pub action: Negatable<Vec<String>>,
    /// `None` in trust policies, where the statement applies to the role itself.
    pub resource: Option<Negatable<Vec<String>>>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Negatable<T> {
    pub negated: bool,
    pub items: T,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalPattern {
    /// `"*"` or `{"AWS": "*"}`: everyone, anonymous included.
    Anyone,
    /// A whole account (`123456789012` or `arn:aws:iam::123456789012:root`).
    Account(String),
    /// A user, role or assumed-role session ARN.
    Arn(String),
    Service(String),
    Federated(String),
}

impl Policy {
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Self, PolicyError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| malformed(format!("Syntax errors in policy: {e}")))?;
        let Value::Object(top) = value else {
            return Err(malformed("Policy document must be a JSON object"));
        };
        let mut variables = false;
        let mut id = None;
        let mut statements = None;
        for (k, v) in &top {
            match k.as_str() {
                "Version" => {
                    variables = match v.as_str() {
                        Some("2012-10-17") => true,
                        Some("2008-10-17") => false,
                        _ => {
                            return Err(malformed(
                                "The policy must contain a valid version string",
                            ));
                        }
                    }
                }
                "Id" => id = Some(string(v, "Id")?),
                "Statement" => statements = Some(v),
                other => return Err(malformed(format!("Unknown field {other}"))),
            }
        }
        let statements = match statements {
            Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
            Some(v @ Value::Object(_)) => vec![v],
            Some(_) => return Err(malformed("Statement must be an object or an array")),
            None => return Err(malformed("Missing required field Statement")),
        };
        if statements.is_empty() {
            return Err(malformed("Missing required field Statement"));
        }
        let statements = statements
            .into_iter()
            .map(|s| parse_statement(s, kind))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sids: Vec<&str> = statements.iter().filter_map(|s| s.sid.as_deref()).collect();
        sids.sort_unstable();
        if sids.windows(2).any(|w| w[0] == w[1]) {
            return Err(malformed(
                "Statement IDs (SID) in a single policy must be unique",
            ));
        }
        Ok(Policy {
            variables,
            id,
            statements,
        })
    }

    /// Parses and checks the size against `limit` characters, not counting whitespace (how
    /// IAM counts).
    pub fn parse_limited(text: &str, kind: PolicyKind, limit: usize) -> Result<Self, PolicyError> {
        if non_whitespace_len(text) > limit {
            return Err(PolicyError::TooLarge { limit });
        }
        Self::parse(text, kind)
    }

    /// Whether any condition reads a key starting with `prefix` (lowercase), so callers can
    /// skip fetching expensive context (an object's tags) that no policy asks for.
    pub fn mentions_key_prefix(&self, prefix: &str) -> bool {
        self.statements
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.key.starts_with(prefix))
    }
}

pub fn non_whitespace_len(text: &str) -> usize {
    text.chars().filter(|c| !c.is_whitespace()).count()
}

const STATEMENT_FIELDS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

fn parse_statement(v: &Value, kind: PolicyKind) -> Result<Statement, PolicyError> {
    let Value::Object(m) = v else {
        return Err(malformed("Each statement must be a JSON object"));
    };
    if let Some(k) = m.keys().find(|k| !STATEMENT_FIELDS.contains(&k.as_str())) {
        return Err(malformed(format!("Statement contains unknown field {k}")));
    }
    let sid = m.get("Sid").map(|v| string(v, "Sid")).transpose()?;
    if let Some(s) = &sid
        && !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-' || c == '_')
    {
        // IAM accepts only alphanumerics in Sid; bucket policies are laxer, spaces included.
        if kind == PolicyKind::Identity {
            return Err(malformed(format!(
                "Statement IDs (SID) must be alpha-numeric: {s}"
            )));
        }
    }
    let effect = match m.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => return Err(malformed(format!("Invalid effect: {other}"))),
        None => return Err(malformed("Missing required field Effect")),
    };
    let principal = either(m, "Principal", "NotPrincipal")?
        .map(|(negated, v)| {
            Ok::<_, PolicyError>(Negatable {
                negated,
                items: parse_principal(v)?,
            })
        })
        .transpose()?;
    match (kind, &principal) {
        (PolicyKind::Identity, Some(_)) => {
            return Err(malformed("Policy document should not specify a principal."));
        }
        (PolicyKind::Resource | PolicyKind::Trust, None) => {
            return Err(malformed("Missing required field Principal"));
        }
        _ => {}
    }
    if principal.as_ref().is_some_and(|p| p.negated) && effect == Effect::Allow {
        // AWS forbids NotPrincipal with Allow: it would grant everyone else.
        return Err(malformed("NotPrincipal cannot be used with Effect Allow"));
    }
    let (negated, actions) = either(m, "Action", "NotAction")?
        .ok_or_else(|| malformed("Missing required field Action"))?;
    let actions = strings(actions, "Action")?;
    for a in &actions {
        validate_action(a)?;
    }
    let action = Negatable {
        negated,
        items: actions,
    };
    let resource = match either(m, "Resource", "NotResource")? {
        Some(_) if kind == PolicyKind::Trust => {
            return Err(malformed("Has prohibited field Resource"));
        }
        Some((negated, v)) => {
            let items = strings(v, "Resource")?;
            for r in &items {
                if r != "*" && Arn::parse(r).is_none() {
                    return Err(malformed(format!(
                        "Resource {r} must be in ARN format or \"*\"."
                    )));
                }
            }
            Some(Negatable { negated, items })
        }
        None if kind == PolicyKind::Trust => None,
        None => return Err(malformed("Missing required field Resource")),
    };
    let conditions = match m.get("Condition") {
        None => Vec::new(),
        Some(Value::Object(ops)) => parse_conditions(ops)?,
        Some(_) => return Err(malformed("Condition must be a JSON object")),
    };
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions,
    })
}

fn either<'a>(
    m: &'a Map<String, Value>,
    plain: &str,
    not: &str,
) -> Result<Option<(bool, &'a Value)>, PolicyError> {
    match (m.get(plain), m.get(not)) {
        (Some(_), Some(_)) => Err(malformed(format!(
            "Statement cannot contain both {plain} and {not}"
        ))),
        (Some(v), None) => Ok(Some((false, v))),
        (None, Some(v)) => Ok(Some((true, v))),
        (None, None) => Ok(None),
    }
}

fn string(v: &Value, field: &str) -> Result<String, PolicyError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| malformed(format!("{field} must be a string")))
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, PolicyError> {
    let out = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| string(x, field))
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(malformed(format!(
                "{field} must be a string or an array of strings"
            )));
        }
    };
    if out.is_empty() {
        return Err(malformed(format!("Missing required field {field}")));
    }
    Ok(out)
}

fn validate_action(a: &str) -> Result<(), PolicyError> {
    if a == "*" {
        return Ok(());
    }
    let ok = a.split_once(':').is_some_and(|(svc, name)| {
        !svc.is_empty()
            && svc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(malformed(format!(
            "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.: {a}"
        )))
    }
}

fn parse_principal(v: &Value) -> Result<Vec<PrincipalPattern>, PolicyError> {
    if v.as_str() == Some("*") {
        return Ok(vec![PrincipalPattern::Anyone]);
    }
    let Value::Object(m) = v else {
        return Err(malformed("Invalid principal in policy"));
    };
    let mut out = Vec::new();
    for (kind, values) in m {
        for p in strings(values, "Principal")? {
            out.push(match kind.as_str() {
                "AWS" => aws_principal(&p)?,
                "Service" => PrincipalPattern::Service(p),
                "Federated" => PrincipalPattern::Federated(p),
                _ => return Err(malformed(format!("Invalid principal in policy: {kind}"))),
            });
        }
    }
    if out.is_empty() {
        return Err(malformed("Invalid principal in policy"));
    }
    Ok(out)
}

fn aws_principal(p: &str) -> Result<PrincipalPattern, PolicyError> {
    if p == "*" {
        return Ok(PrincipalPattern::Anyone);
    }
    if is_account_id(p) {
        return Ok(PrincipalPattern::Account(p.to_owned()));
    }
    let bad = || malformed(format!("Invalid principal in policy: \"AWS\":\"{p}\""));
    let arn = Arn::parse(p).ok_or_else(bad)?;
    if p.contains(['*', '?']) || !is_account_id(arn.account) {
        return Err(bad());
    }
    match (arn.service, arn.resource) {
        ("iam", "root") => Ok(PrincipalPattern::Account(arn.account.to_owned())),
        ("iam", r) if r.starts_with("user/") || r.starts_with("role/") => {
            Ok(PrincipalPattern::Arn(p.to_owned()))
        }
        ("sts", r) if r.starts_with("assumed-role/") => Ok(PrincipalPattern::Arn(p.to_owned())),
        _ => Err(bad()),
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_conditions(ops: &Map<String, Value>) -> Result<Vec<Condition>, PolicyError> {
    let mut out = Vec::new();
    for (op_name, block) in ops {
        let op = Operator::parse(op_name)
            .ok_or_else(|| malformed(format!("Invalid Condition type : {op_name}")))?;
        let Value::Object(keys) = block else {
            return Err(malformed(format!(
                "Condition {op_name} must map keys to values"
            )));
        };
        for (key, values) in keys {
            if !key.contains(':') {
                return Err(malformed(format!("Invalid Condition key : {key}")));
            }
            let values = match values {
                Value::Array(a) => a.iter().map(scalar).collect::<Result<Vec<_>, _>>()?,
                v => vec![scalar(v)?],
            };
            out.push(Condition::new(op, key, values)?);
        }
    }
    Ok(out)
}

fn scalar(v: &Value) -> Result<String, PolicyError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(malformed(
            "Condition values must be strings, numbers or booleans",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, kind: PolicyKind) -> String {
        match Policy::parse(text, kind) {
            Err(PolicyError::Malformed(m)) => m,
            other => panic!("expected Malformed for {text}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_iam_user_guide_s3_home_directory_example() {
        let p = Policy::parse(
            r#"{
              "Version": "2012-10-17",
              "Statement": [
                {"Sid": "ListHome", "Effect": "Allow", "Action": "s3:ListBucket",
                 "Resource": "arn:aws:s3:::amzn-s3-demo-bucket",
                 "Condition": {"StringLike": {"s3:prefix": ["home/${aws:username}/*"]}}},
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                 "Resource": "arn:aws:s3:::amzn-s3-demo-bucket/home/${aws:username}/*"}
              ]}"#,
            PolicyKind::Identity,
        )
        .unwrap();
        assert!(p.variables);
        assert_eq!(p.statements.len(), 2);
        assert_eq!(p.statements[0].conditions[0].key, "s3:prefix");
        assert_eq!(
            p.statements[1].action.items,
            vec!["s3:GetObject", "s3:PutObject"]
        );
    }

    #[test]
    fn rejects_malformed_documents() {
        use PolicyKind::*;
        let rows: &[(&str, PolicyKind, &str)] = &[
            ("not json", Identity, "Syntax errors"),
            ("[]", Identity, "JSON object"),
            (
                r#"{"Version":"2012-10-17"}"#,
                Identity,
                "Missing required field Statement",
            ),
            (
                r#"{"Version":"2020-01-01","Statement":[]}"#,
                Identity,
                "valid version",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*"}}"#,
                Identity,
                "Resource",
            ),
            (
                r#"{"Statement":{"Effect":"Maybe","Action":"s3:*","Resource":"*"}}"#,
                Identity,
                "Invalid effect",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#,
                Identity,
                "Action",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"GetObject","Resource":"*"}}"#,
                Identity,
                "vendor",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"bucket"}}"#,
                Identity,
                "ARN format",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}}"#,
                Identity,
                "principal",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#,
                Resource,
                "Principal",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"s3:*","Resource":"*"}}"#,
                Resource,
                "Invalid principal",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::1234:user/x"},"Action":"s3:*","Resource":"*"}}"#,
                Resource,
                "Invalid principal",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","NotPrincipal":{"AWS":"123456789012"},"Action":"s3:*","Resource":"*"}}"#,
                Resource,
                "NotPrincipal",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","NotAction":"s3:Get*","Resource":"*"}}"#,
                Identity,
                "both",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringFoo":{"aws:username":"a"}}}}"#,
                Identity,
                "Invalid Condition type : StringFoo",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"NumericLessThan":{"s3:max-keys":"ten"}}}}"#,
                Identity,
                "number",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}}}"#,
                Identity,
                "IP",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"yesterday"}}}}"#,
                Identity,
                "date",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"yes"}}}}"#,
                Identity,
                "true or false",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"NullIfExists":{"aws:username":"true"}}}}"#,
                Identity,
                "Invalid Condition type",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringEquals":{"nokey":"a"}}}}"#,
                Identity,
                "Condition key",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"AWS":"123456789012"},"Resource":"*"}}"#,
                Trust,
                "prohibited",
            ),
            (
                r#"{"Statement":[{"Sid":"a","Effect":"Allow","Action":"s3:*","Resource":"*"},{"Sid":"a","Effect":"Deny","Action":"s3:*","Resource":"*"}]}"#,
                Identity,
                "unique",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Extra":1}}"#,
                Identity,
                "unknown field Extra",
            ),
        ];
        for (text, kind, want) in rows {
            let got = err(text, *kind);
            assert!(
                got.contains(want),
                "{text}: {got:?} should mention {want:?}"
            );
        }
    }

    #[test]
    fn size_limits_count_non_whitespace() {
        let stmt = r#"{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/k"}"#;
        let big = format!(
            r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
            vec![stmt; 40].join(",")
        );
        assert_eq!(
            Policy::parse_limited(&big, PolicyKind::Identity, limits::USER_INLINE_TOTAL),
            Err(PolicyError::TooLarge { limit: 2048 })
        );
        let padded = format!(
            "{}{}",
            " ".repeat(5000),
            r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#
        );
        assert!(
            Policy::parse_limited(&padded, PolicyKind::Identity, limits::USER_INLINE_TOTAL).is_ok()
        );
    }

    #[test]
    fn principals() {
        let p = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*",
               "Principal":{"AWS":["123456789012","arn:aws:iam::111122223333:root","arn:aws:iam::111122223333:user/bob","*"]}}}"#,
            PolicyKind::Resource,
        )
        .unwrap();
        assert_eq!(
            p.statements[0].principal.as_ref().unwrap().items,
            vec![
                PrincipalPattern::Account("123456789012".into()),
                PrincipalPattern::Account("111122223333".into()),
                PrincipalPattern::Arn("arn:aws:iam::111122223333:user/bob".into()),
                PrincipalPattern::Anyone,
            ]
        );
    }
}

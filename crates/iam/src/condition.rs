//! Condition operators: parsing their names (`ForAnyValue:StringLikeIfExists`), checking the
//! policy's values when the policy is stored, and deciding one condition against a request.

use std::net::IpAddr;

use base64::Engine;

use crate::eval::RequestContext;
use crate::pattern::{self, Substituted};
use crate::policy::PolicyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    ArnLike,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetQualifier {
    /// A plain operator: any of the request's values may match.
    Single,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator {
    pub family: Family,
    /// `StringNotEquals`, `NotIpAddress`, `ArnNotLike`, …: true when no policy value matches.
    pub negated: bool,
    pub if_exists: bool,
    pub qualifier: SetQualifier,
}

/// Operator names and what they mean; `Not` forms are the negations.
const NAMES: &[(&str, Family, bool)] = &[
    ("StringEquals", Family::StringEquals, false),
    ("StringNotEquals", Family::StringEquals, true),
    (
        "StringEqualsIgnoreCase",
        Family::StringEqualsIgnoreCase,
        false,
    ),
    (
        "StringNotEqualsIgnoreCase",
        Family::StringEqualsIgnoreCase,
        true,
    ),
    ("StringLike", Family::StringLike, false),
    ("StringNotLike", Family::StringLike, true),
    ("NumericEquals", Family::NumericEquals, false),
    ("NumericNotEquals", Family::NumericEquals, true),
    ("NumericLessThan", Family::NumericLessThan, false),
    (
        "NumericLessThanEquals",
        Family::NumericLessThanEquals,
        false,
    ),
    ("NumericGreaterThan", Family::NumericGreaterThan, false),
    (
        "NumericGreaterThanEquals",
        Family::NumericGreaterThanEquals,
        false,
    ),
    ("DateEquals", Family::DateEquals, false),
    ("DateNotEquals", Family::DateEquals, true),
    ("DateLessThan", Family::DateLessThan, false),
    ("DateLessThanEquals", Family::DateLessThanEquals, false),
    ("DateGreaterThan", Family::DateGreaterThan, false),
    (
        "DateGreaterThanEquals",
        Family::DateGreaterThanEquals,
        false,
    ),
    ("Bool", Family::Bool, false),
    ("BinaryEquals", Family::BinaryEquals, false),
    ("IpAddress", Family::IpAddress, false),
    ("NotIpAddress", Family::IpAddress, true),
    ("ArnEquals", Family::ArnLike, false),
    ("ArnNotEquals", Family::ArnLike, true),
    ("ArnLike", Family::ArnLike, false),
    ("ArnNotLike", Family::ArnLike, true),
    ("Null", Family::Null, false),
];

impl Operator {
    pub fn parse(name: &str) -> Option<Self> {
        let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (SetQualifier::ForAnyValue, r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (SetQualifier::ForAllValues, r)
        } else {
            (SetQualifier::Single, name)
        };
        let (if_exists, base) = match rest.strip_suffix("IfExists") {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let &(_, family, negated) = NAMES.iter().find(|(n, _, _)| *n == base)?;
        if family == Family::Null && (if_exists || qualifier != SetQualifier::Single) {
            return None;
        }
        Some(Operator {
            family,
            negated,
            if_exists,
            qualifier,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub op: Operator,
    /// Lowercase: condition keys are case-insensitive.
    pub key: String,
    pub values: Vec<String>,
}

impl Condition {
    /// Checks every value parses for its operator, so a stored policy never fails at request
    /// time.
    pub fn new(op: Operator, key: &str, values: Vec<String>) -> Result<Self, PolicyError> {
        let bad = |what: &str, v: &str| {
            PolicyError::Malformed(format!("Condition {key} expects {what}; got {v:?}"))
        };
        if values.is_empty() {
            return Err(PolicyError::Malformed(format!(
                "Condition {key} has no values"
            )));
        }
        for v in &values {
            let ok = match op.family {
                Family::NumericEquals
                | Family::NumericLessThan
                | Family::NumericLessThanEquals
                | Family::NumericGreaterThan
                | Family::NumericGreaterThanEquals => v
                    .parse::<f64>()
                    .is_ok_and(f64::is_finite)
                    .then_some(())
                    .ok_or_else(|| bad("a number", v)),
                Family::DateEquals
                | Family::DateLessThan
                | Family::DateLessThanEquals
                | Family::DateGreaterThan
                | Family::DateGreaterThanEquals => parse_date(v)
                    .map(|_| ())
                    .ok_or_else(|| bad("an ISO 8601 date or epoch seconds", v)),
                Family::Bool | Family::Null => {
                    matches!(v.to_ascii_lowercase().as_str(), "true" | "false")
                        .then_some(())
                        .ok_or_else(|| bad("true or false", v))
                }
                Family::IpAddress => parse_cidr(v)
                    .map(|_| ())
                    .ok_or_else(|| bad("an IP address or CIDR block", v)),
                Family::BinaryEquals => base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(|_| ())
                    .map_err(|_| bad("base64", v)),
                Family::StringEquals
                | Family::StringEqualsIgnoreCase
                | Family::StringLike
                | Family::ArnLike => Ok(()),
            };
            ok?;
        }
        Ok(Condition {
            op,
            key: key.to_ascii_lowercase(),
            values,
        })
    }

    /// Decides this condition for a request, following AWS: a missing key fails a positive
    /// operator and passes a negated one; `…IfExists` passes when the key is missing;
    /// `ForAllValues` passes on an empty set, `ForAnyValue` fails on one; `Null` tests
    /// presence only.
    pub fn holds(&self, cx: &RequestContext, variables: bool) -> bool {
        let present = cx.values(&self.key).filter(|v| !v.is_empty());
        if self.op.family == Family::Null {
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return present.is_none() == want_absent;
        }
        let Some(values) = present else {
            if self.op.if_exists {
                return true;
            }
            return match self.op.qualifier {
                SetQualifier::ForAllValues => true,
                SetQualifier::ForAnyValue => false,
                SetQualifier::Single => self.op.negated,
            };
        };
        // For one request value: does it pass the operator (negation applied per value)?
        let passes = |v: &str| self.matches_any(v, cx, variables) != self.op.negated;
        match self.op.qualifier {
            SetQualifier::Single if self.op.negated => {
                !values.iter().any(|v| self.matches_any(v, cx, variables))
            }
            SetQualifier::Single | SetQualifier::ForAnyValue => values.iter().any(|v| passes(v)),
            SetQualifier::ForAllValues => values.iter().all(|v| passes(v)),
        }
    }

    /// Whether the request value matches at least one of the policy's values (positive
    /// sense; negation is applied by the caller).
    fn matches_any(&self, actual: &str, cx: &RequestContext, variables: bool) -> bool {
        self.values
            .iter()
            .any(|want| self.matches(want, actual, cx, variables))
    }

    fn matches(&self, want: &str, actual: &str, cx: &RequestContext, variables: bool) -> bool {
        use Family::*;
        match self.op.family {
            StringEquals | StringEqualsIgnoreCase | StringLike | ArnLike
                if !variables || !want.contains("${") =>
            {
                // No variables: compare in place, without building pieces.
                match self.op.family {
                    StringEquals => want == actual,
                    StringEqualsIgnoreCase => pattern::glob_free_eq_ignore_case(want, actual),
                    StringLike => pattern::glob(want, actual, false),
                    _ => pattern::arn_like(want, actual),
                }
            }
            StringEquals | StringEqualsIgnoreCase | StringLike | ArnLike => {
                let pieces = if variables {
                    match pattern::substitute(want, cx) {
                        Substituted::Pattern(p) => p,
                        Substituted::Unresolved => return false,
                    }
                } else {
                    vec![pattern::Piece::Literal(want.to_owned())]
                };
                match self.op.family {
                    StringEquals => joined(&pieces) == actual,
                    StringEqualsIgnoreCase => {
                        joined(&pieces).to_lowercase() == actual.to_lowercase()
                    }
                    StringLike => pattern::glob_pieces(&pieces, actual, false),
                    _ => pattern::arn_like_pieces(&pieces, actual),
                }
            }
            NumericEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => {
                let (Ok(w), Ok(a)) = (want.parse::<f64>(), actual.parse::<f64>()) else {
                    return false;
                };
                compare(self.op.family, a.partial_cmp(&w))
            }
            DateEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => {
                let (Some(w), Some(a)) = (parse_date(want), parse_date(actual)) else {
                    return false;
                };
                compare(self.op.family, Some(a.cmp(&w)))
            }
            Bool => want.eq_ignore_ascii_case(actual),
            BinaryEquals => base64::engine::general_purpose::STANDARD
                .decode(want)
                .is_ok_and(|w| w == actual.as_bytes()),
            IpAddress => match (parse_cidr(want), actual.parse::<IpAddr>()) {
                (Some(net), Ok(ip)) => net.contains(ip),
                _ => false,
            },
            Null => false,
        }
    }
}

fn joined(pieces: &[pattern::Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            pattern::Piece::Literal(s) | pattern::Piece::Pattern(s) => s.as_str(),
        })
        .collect()
}

fn compare(family: Family, ord: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    let Some(ord) = ord else { return false };
    match family {
        Family::NumericEquals | Family::DateEquals => ord == Equal,
        Family::NumericLessThan | Family::DateLessThan => ord == Less,
        Family::NumericLessThanEquals | Family::DateLessThanEquals => ord != Greater,
        Family::NumericGreaterThan | Family::DateGreaterThan => ord == Greater,
        Family::NumericGreaterThanEquals | Family::DateGreaterThanEquals => ord != Less,
        _ => false,
    }
}

/// A date as IAM accepts it: ISO 8601 with time and zone, a bare date, or epoch seconds.
/// Returned as nanoseconds since the epoch.
pub fn parse_date(s: &str) -> Option<i128> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs as i128 * 1_000_000_000);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    // `2026-01-01T00:00:00` without a zone is UTC, as is a bare date.
    let (date, rest) = s.split_once('T').unwrap_or((s, ""));
    let d = time::Date::parse(
        date,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    let t = if rest.is_empty() {
        time::Time::MIDNIGHT
    } else {
        let rest = rest.strip_suffix('Z').unwrap_or(rest);
        time::Time::parse(
            rest,
            time::macros::format_description!("[hour]:[minute]:[second]"),
        )
        .ok()?
    };
    Some(
        time::PrimitiveDateTime::new(d, t)
            .assume_utc()
            .unix_timestamp_nanos(),
    )
}

#[derive(Debug, Clone, Copy)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen on an IPv6 socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

pub fn parse_cidr(s: &str) -> Option<Cidr> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some(Cidr { addr, bits })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(op: &str, key: &str, values: &[&str]) -> Condition {
        Condition::new(
            Operator::parse(op).unwrap_or_else(|| panic!("operator {op}")),
            key,
            values.iter().map(|s| s.to_string()).collect(),
        )
        .unwrap()
    }

    fn cx(pairs: &[(&str, &[&str])]) -> RequestContext {
        let mut c = RequestContext::default();
        for (k, vs) in pairs {
            c.set_many(k, vs.iter().map(|s| s.to_string()).collect());
        }
        c
    }

    /// One row: operator, key, policy values, request context, expected result.
    #[test]
    fn operator_table() {
        type Row<'a> = (
            &'a str,
            &'a str,
            &'a [&'a str],
            &'a [(&'a str, &'a [&'a str])],
            bool,
        );
        let rows: &[Row] = &[
            (
                "StringEquals",
                "aws:username",
                &["alice"],
                &[("aws:username", &["alice"])],
                true,
            ),
            (
                "StringEquals",
                "aws:username",
                &["alice"],
                &[("aws:username", &["Alice"])],
                false,
            ),
            ("StringEquals", "aws:username", &["alice"], &[], false),
            ("StringNotEquals", "aws:username", &["alice"], &[], true),
            (
                "StringNotEquals",
                "aws:username",
                &["alice", "bob"],
                &[("aws:username", &["bob"])],
                false,
            ),
            (
                "StringNotEquals",
                "aws:username",
                &["alice", "bob"],
                &[("aws:username", &["carol"])],
                true,
            ),
            (
                "StringEqualsIgnoreCase",
                "aws:username",
                &["ALICE"],
                &[("aws:username", &["alice"])],
                true,
            ),
            (
                "StringNotEqualsIgnoreCase",
                "aws:username",
                &["ALICE"],
                &[("aws:username", &["alice"])],
                false,
            ),
            (
                "StringLike",
                "s3:prefix",
                &["home/*"],
                &[("s3:prefix", &["home/a/b"])],
                true,
            ),
            (
                "StringLike",
                "s3:prefix",
                &["home/*"],
                &[("s3:prefix", &["work/a"])],
                false,
            ),
            (
                "StringNotLike",
                "s3:prefix",
                &["home/*"],
                &[("s3:prefix", &["work/a"])],
                true,
            ),
            (
                "StringLike",
                "s3:prefix",
                &["home/${aws:username}/*"],
                &[
                    ("s3:prefix", &["home/alice/x"]),
                    ("aws:username", &["alice"]),
                ],
                true,
            ),
            (
                "StringLike",
                "s3:prefix",
                &["home/${aws:username}/*"],
                &[("s3:prefix", &["home/bob/x"]), ("aws:username", &["alice"])],
                false,
            ),
            (
                "StringLike",
                "s3:prefix",
                &["home/${aws:username}/*"],
                &[("s3:prefix", &["home/alice/x"])],
                false,
            ),
            (
                "StringEquals",
                "s3:prefix",
                &["home/${aws:username, 'guest'}"],
                &[("s3:prefix", &["home/guest"])],
                true,
            ),
            (
                "StringEqualsIfExists",
                "s3:x-amz-server-side-encryption",
                &["AES256"],
                &[],
                true,
            ),
            (
                "StringEqualsIfExists",
                "s3:x-amz-server-side-encryption",
                &["AES256"],
                &[("s3:x-amz-server-side-encryption", &["aws:kms"])],
                false,
            ),
            (
                "NumericLessThanEquals",
                "s3:max-keys",
                &["10"],
                &[("s3:max-keys", &["10"])],
                true,
            ),
            (
                "NumericLessThanEquals",
                "s3:max-keys",
                &["10"],
                &[("s3:max-keys", &["11"])],
                false,
            ),
            (
                "NumericLessThan",
                "s3:max-keys",
                &["10"],
                &[("s3:max-keys", &["9.5"])],
                true,
            ),
            (
                "NumericGreaterThan",
                "s3:max-keys",
                &["10"],
                &[("s3:max-keys", &["11"])],
                true,
            ),
            (
                "NumericGreaterThanEquals",
                "s3:max-keys",
                &["10"],
                &[("s3:max-keys", &["9"])],
                false,
            ),
            (
                "NumericEquals",
                "s3:max-keys",
                &["10"],
                &[("s3:max-keys", &["10"])],
                true,
            ),
            (
                "NumericNotEquals",
                "s3:max-keys",
                &["10"],
                &[("s3:max-keys", &["10"])],
                false,
            ),
            (
                "NumericEquals",
                "s3:max-keys",
                &["10"],
                &[("s3:max-keys", &["ten"])],
                false,
            ),
            (
                "DateLessThan",
                "aws:CurrentTime",
                &["2027-01-01T00:00:00Z"],
                &[("aws:CurrentTime", &["2026-11-24T10:00:00Z"])],
                true,
            ),
            (
                "DateGreaterThan",
                "aws:CurrentTime",
                &["2027-01-01"],
                &[("aws:CurrentTime", &["2026-11-24T10:00:00Z"])],
                false,
            ),
            (
                "DateGreaterThanEquals",
                "aws:EpochTime",
                &["1700000000"],
                &[("aws:EpochTime", &["1800000000"])],
                true,
            ),
            (
                "DateEquals",
                "aws:CurrentTime",
                &["2026-11-24T10:00:00+01:00"],
                &[("aws:CurrentTime", &["2026-11-24T09:00:00Z"])],
                true,
            ),
            (
                "DateNotEquals",
                "aws:CurrentTime",
                &["2026-11-24"],
                &[("aws:CurrentTime", &["2026-11-24T00:00:00Z"])],
                false,
            ),
            (
                "DateLessThanEquals",
                "s3:object-lock-retain-until-date",
                &["2030-01-01T00:00:00Z"],
                &[(
                    "s3:object-lock-retain-until-date",
                    &["2030-01-01T00:00:00.000Z"],
                )],
                true,
            ),
            (
                "Bool",
                "aws:SecureTransport",
                &["true"],
                &[("aws:SecureTransport", &["false"])],
                false,
            ),
            (
                "Bool",
                "aws:SecureTransport",
                &["false"],
                &[("aws:SecureTransport", &["false"])],
                true,
            ),
            ("Bool", "aws:MultiFactorAuthPresent", &["true"], &[], false),
            (
                "BoolIfExists",
                "aws:MultiFactorAuthPresent",
                &["false"],
                &[],
                true,
            ),
            (
                "BinaryEquals",
                "s3:x",
                &["aGVsbG8="],
                &[("s3:x", &["hello"])],
                true,
            ),
            (
                "IpAddress",
                "aws:SourceIp",
                &["203.0.113.0/24"],
                &[("aws:SourceIp", &["203.0.113.7"])],
                true,
            ),
            (
                "IpAddress",
                "aws:SourceIp",
                &["203.0.113.0/24"],
                &[("aws:SourceIp", &["203.0.114.7"])],
                false,
            ),
            (
                "IpAddress",
                "aws:SourceIp",
                &["203.0.113.0/24"],
                &[("aws:SourceIp", &["::ffff:203.0.113.9"])],
                true,
            ),
            (
                "IpAddress",
                "aws:SourceIp",
                &["2001:db8::/32"],
                &[("aws:SourceIp", &["2001:db8:1::1"])],
                true,
            ),
            (
                "IpAddress",
                "aws:SourceIp",
                &["0.0.0.0/0"],
                &[("aws:SourceIp", &["8.8.8.8"])],
                true,
            ),
            (
                "IpAddress",
                "aws:SourceIp",
                &["127.0.0.1"],
                &[("aws:SourceIp", &["127.0.0.2"])],
                false,
            ),
            (
                "NotIpAddress",
                "aws:SourceIp",
                &["10.0.0.0/8"],
                &[("aws:SourceIp", &["10.1.2.3"])],
                false,
            ),
            (
                "NotIpAddress",
                "aws:SourceIp",
                &["10.0.0.0/8"],
                &[("aws:SourceIp", &["192.168.1.1"])],
                true,
            ),
            (
                "ArnLike",
                "aws:PrincipalArn",
                &["arn:aws:iam::*:role/admin-*"],
                &[(
                    "aws:PrincipalArn",
                    &["arn:aws:iam::123456789012:role/admin-ops"],
                )],
                true,
            ),
            (
                "ArnEquals",
                "aws:PrincipalArn",
                &["arn:aws:iam::123456789012:user/bob"],
                &[(
                    "aws:PrincipalArn",
                    &["arn:aws:iam::123456789012:user/alice"],
                )],
                false,
            ),
            (
                "ArnNotLike",
                "aws:PrincipalArn",
                &["arn:aws:iam::*:role/*"],
                &[("aws:PrincipalArn", &["arn:aws:iam::123456789012:user/a"])],
                true,
            ),
            (
                "ArnNotEquals",
                "aws:PrincipalArn",
                &["arn:aws:iam::123456789012:user/a"],
                &[],
                true,
            ),
            (
                "Null",
                "s3:x-amz-server-side-encryption",
                &["true"],
                &[],
                true,
            ),
            (
                "Null",
                "s3:x-amz-server-side-encryption",
                &["true"],
                &[("s3:x-amz-server-side-encryption", &["AES256"])],
                false,
            ),
            (
                "Null",
                "s3:x-amz-server-side-encryption",
                &["false"],
                &[("s3:x-amz-server-side-encryption", &["AES256"])],
                true,
            ),
            (
                "ForAnyValue:StringEquals",
                "aws:TagKeys",
                &["env", "team"],
                &[("aws:TagKeys", &["team", "cost"])],
                true,
            ),
            (
                "ForAnyValue:StringEquals",
                "aws:TagKeys",
                &["env"],
                &[("aws:TagKeys", &["team", "cost"])],
                false,
            ),
            (
                "ForAnyValue:StringEquals",
                "aws:TagKeys",
                &["env"],
                &[],
                false,
            ),
            (
                "ForAllValues:StringEquals",
                "aws:TagKeys",
                &["env", "team"],
                &[("aws:TagKeys", &["team", "env"])],
                true,
            ),
            (
                "ForAllValues:StringEquals",
                "aws:TagKeys",
                &["env", "team"],
                &[("aws:TagKeys", &["team", "cost"])],
                false,
            ),
            (
                "ForAllValues:StringEquals",
                "aws:TagKeys",
                &["env"],
                &[],
                true,
            ),
            (
                "ForAllValues:StringLike",
                "aws:TagKeys",
                &["app-*"],
                &[("aws:TagKeys", &["app-a", "app-b"])],
                true,
            ),
            (
                "ForAnyValue:StringNotEquals",
                "aws:TagKeys",
                &["env"],
                &[("aws:TagKeys", &["env", "x"])],
                true,
            ),
            (
                "ForAllValues:StringNotEquals",
                "aws:TagKeys",
                &["env"],
                &[("aws:TagKeys", &["env", "x"])],
                false,
            ),
            (
                "ForAnyValue:StringEqualsIfExists",
                "aws:TagKeys",
                &["env"],
                &[],
                true,
            ),
        ];
        for (op, key, values, context, want) in rows {
            let c = cond(op, key, values);
            assert_eq!(
                c.holds(&cx(context), true),
                *want,
                "{op} {key} {values:?} vs {context:?}"
            );
        }
    }

    #[test]
    fn condition_keys_are_case_insensitive() {
        let c = cond("StringEquals", "AWS:UserName", &["alice"]);
        assert!(c.holds(&cx(&[("aws:username", &["alice"])]), true));
    }

    #[test]
    fn old_version_policies_match_variables_literally() {
        let c = cond("StringEquals", "s3:prefix", &["${aws:username}"]);
        let context = cx(&[
            ("s3:prefix", &["${aws:username}"]),
            ("aws:username", &["alice"]),
        ]);
        assert!(c.holds(&context, false));
        assert!(!c.holds(&context, true));
    }

    #[test]
    fn operator_names() {
        assert!(Operator::parse("ForAllValues:StringNotLikeIfExists").is_some());
        assert!(Operator::parse("StringEqualsIgnoreCaseIfExists").is_some());
        assert!(Operator::parse("Null").is_some());
        assert!(Operator::parse("ForAnyValue:Null").is_none());
        assert!(Operator::parse("stringequals").is_none());
        assert!(Operator::parse("StringMatches").is_none());
    }
}

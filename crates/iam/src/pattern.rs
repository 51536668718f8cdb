//! Matching of the strings a policy names against the strings a request carries: `*`/`?`
//! wildcards, ARNs compared field by field, and policy variables (`${aws:username}`).

use crate::eval::RequestContext;

/// Glob match with `*` (any run, including empty) and `?` (exactly one character), as IAM
/// uses in `Action`, `Resource`, `StringLike` and `ArnLike`. Iterative with one backtrack
/// point, so a hostile pattern like `*a*a*a*b` stays linear-ish instead of exponential.
pub fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    if !pattern.contains(['*', '?']) {
        return if ignore_case {
            glob_free_eq_ignore_case(pattern, text)
        } else {
            pattern == text
        };
    }
    if pattern.is_ascii() && text.is_ascii() {
        // The hot path (actions, ARNs, most condition values): bytes, no allocation.
        return glob_bytes(pattern.as_bytes(), text.as_bytes(), ignore_case);
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if ignore_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Case-insensitive equality, allocation-free for ASCII.
pub fn glob_free_eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

fn glob_bytes(p: &[u8], t: &[u8], ignore_case: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// `arn:partition:service:region:account:resource` — the resource part may itself contain
/// colons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    pub fn parse(s: &'a str) -> Option<Self> {
        let mut it = s.splitn(6, ':');
        if it.next()? != "arn" {
            return None;
        }
        let arn = Arn {
            partition: it.next()?,
            service: it.next()?,
            region: it.next()?,
            account: it.next()?,
            resource: it.next()?,
        };
        (!arn.partition.is_empty() && !arn.service.is_empty() && !arn.resource.is_empty())
            .then_some(arn)
    }
}

/// `ArnLike`/`ArnEquals` and `Resource` matching: each of the six fields is compared on its
/// own, so a `*` in the account field cannot swallow the colon into the resource.
pub fn arn_like(pattern: &str, arn: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let mut p = pattern.splitn(6, ':');
    let mut a = arn.splitn(6, ':');
    for _ in 0..6 {
        match (p.next(), a.next()) {
            (Some(pp), Some(aa)) => {
                if !glob(pp, aa, false) {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
    true
}

/// What a policy string becomes once its `${…}` variables are replaced.
#[derive(Debug, PartialEq, Eq)]
pub enum Substituted {
    /// The text to match, with `${*}`, `${?}` and `${$}` turned into literal characters
    /// where the matcher must not treat them as wildcards: those are returned escaped as
    /// `Literal` pieces.
    Pattern(Vec<Piece>),
    /// A variable had no value and no default: the element cannot match (AWS treats it as a
    /// non-match rather than an error).
    Unresolved,
}

#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Piece {
    /// Pattern text where `*` and `?` are wildcards.
    Pattern(String),
    /// Text matched exactly (a variable's value, or an escaped `*`/`?`/`$`).
    Literal(String),
}

/// Replaces policy variables in `s` using the request context. Only policies of version
/// 2012-10-17 have variables; callers skip this for older ones.
pub fn substitute(s: &str, cx: &RequestContext) -> Substituted {
    if !s.contains("${") {
        return Substituted::Pattern(vec![Piece::Pattern(s.to_owned())]);
    }
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push(Piece::Pattern(rest[..start].to_owned()));
        let inner = &rest[start + 2..start + len];
        rest = &rest[start + len + 1..];
        match inner {
            "*" | "?" | "$" => out.push(Piece::Literal(inner.to_owned())),
            _ => {
                let (name, default) = match inner.split_once(',') {
                    Some((n, d)) => {
                        let d = d.trim();
                        let d = d
                            .strip_prefix('\'')
                            .and_then(|d| d.strip_suffix('\''))
                            .unwrap_or(d);
                        (n.trim(), Some(d))
                    }
                    None => (inner.trim(), None),
                };
                match cx.single_value(name).or(default) {
                    Some(v) => out.push(Piece::Literal(v.to_owned())),
                    None => return Substituted::Unresolved,
                }
            }
        }
    }
    out.push(Piece::Pattern(rest.to_owned()));
    Substituted::Pattern(out)
}

/// Joins pieces into a glob pattern in which literal pieces cannot act as wildcards. A
/// literal `*` or `?` is matched by turning the whole match into a piecewise check.
pub fn glob_pieces(pieces: &[Piece], text: &str, ignore_case: bool) -> bool {
    // Common case: no literal contains a wildcard character, so concatenation is exact.
    if pieces.iter().all(|p| match p {
        Piece::Literal(l) => !l.contains(['*', '?']),
        Piece::Pattern(_) => true,
    }) {
        let joined: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(l) | Piece::Pattern(l) => l.as_str(),
            })
            .collect();
        return glob(&joined, text, ignore_case);
    }
    glob_tokens(
        &tokens(pieces),
        &text.chars().collect::<Vec<_>>(),
        ignore_case,
    )
}

/// Like [`glob_pieces`] for ARNs: field-wise, with variables substituted.
pub fn arn_like_pieces(pieces: &[Piece], arn: &str) -> bool {
    if pieces.iter().all(|p| match p {
        Piece::Literal(l) => !l.contains(['*', '?']),
        Piece::Pattern(_) => true,
    }) {
        let joined: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(l) | Piece::Pattern(l) => l.as_str(),
            })
            .collect();
        return arn_like(&joined, arn);
    }
    // A variable value with a wildcard character in an ARN is rare; compare whole-string.
    glob_tokens(&tokens(pieces), &arn.chars().collect::<Vec<_>>(), false)
}

#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Char(char),
    Any,
    One,
}

fn tokens(pieces: &[Piece]) -> Vec<Tok> {
    let mut v = Vec::new();
    for p in pieces {
        match p {
            Piece::Literal(l) => v.extend(l.chars().map(Tok::Char)),
            Piece::Pattern(s) => v.extend(s.chars().map(|c| match c {
                '*' => Tok::Any,
                '?' => Tok::One,
                c => Tok::Char(c),
            })),
        }
    }
    v
}

fn glob_tokens(p: &[Tok], t: &[char], ignore_case: bool) -> bool {
    let eq = |a: char, b: char| {
        if ignore_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(Tok::One) => {
                pi += 1;
                ti += 1;
            }
            Some(Tok::Char(c)) if eq(*c, t[ti]) => {
                pi += 1;
                ti += 1;
            }
            Some(Tok::Any) => {
                star = Some((pi, ti));
                pi += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == Tok::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let rows: &[(&str, &str, bool, bool)] = &[
            ("*", "", false, true),
            ("*", "anything", false, true),
            ("s3:Get*", "s3:GetObject", false, true),
            ("s3:get*", "s3:GetObject", true, true),
            ("s3:get*", "s3:GetObject", false, false),
            ("s3:*Object", "s3:PutObject", false, true),
            ("s3:*Object", "s3:PutObjectAcl", false, false),
            ("a?c", "abc", false, true),
            ("a?c", "ac", false, false),
            ("a*b*c", "axxbyyc", false, true),
            ("a*b*c", "axxbyy", false, false),
            (
                "*a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
                false,
            ),
            ("home/*", "home/", false, true),
            ("日本*", "日本語", false, true),
        ];
        for (p, t, ic, want) in rows {
            assert_eq!(glob(p, t, *ic), *want, "{p} vs {t}");
        }
    }

    #[test]
    fn arn_fields_match_separately() {
        assert!(arn_like(
            "arn:aws:s3:::bucket/*",
            "arn:aws:s3:::bucket/a/b:c"
        ));
        assert!(arn_like(
            "arn:aws:iam::*:user/alice",
            "arn:aws:iam::123456789012:user/alice"
        ));
        // A `*` in the account field cannot reach into the resource.
        assert!(!arn_like(
            "arn:aws:iam::*",
            "arn:aws:iam::123456789012:user/alice"
        ));
        assert!(!arn_like("arn:aws:s3:::bucket", "arn:aws:s3:::bucket/key"));
        assert!(arn_like("*", "arn:aws:s3:::bucket"));
        assert_eq!(
            Arn::parse("arn:aws:s3:::b/k:1").map(|a| a.resource),
            Some("b/k:1")
        );
        assert!(Arn::parse("arn:aws:s3").is_none());
        assert!(Arn::parse("nope:aws:s3:::b").is_none());
    }

    #[test]
    fn literal_wildcards_from_variables_do_not_glob() {
        let pieces = vec![
            Piece::Pattern("home/".into()),
            Piece::Literal("*".into()),
            Piece::Pattern("/x".into()),
        ];
        assert!(glob_pieces(&pieces, "home/*/x", false));
        assert!(!glob_pieces(&pieces, "home/abc/x", false));
    }
}

//! The few S3 XML documents a migration reads (listings, multipart answers, errors): small
//! tag scanners rather than a schema, since only a handful of fields matter.

/// The unescaped text of the first `<tag>` in `xml`.
pub fn field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(unescape(&xml[start..end]))
}

/// Every `<tag>…</tag>` block's inner text, in order.
pub fn blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        // The element's own end, past any nested elements of the same name (IAM's role
        // `member` holds its tags' `member`s).
        let mut depth = 1usize;
        let mut pos = 0;
        let end = loop {
            let Some(c) = after[pos..].find(&close) else {
                break None;
            };
            match after[pos..].find(&open) {
                Some(o) if o < c => {
                    depth += 1;
                    pos += o + open.len();
                }
                _ => {
                    depth -= 1;
                    if depth == 0 {
                        break Some(pos + c);
                    }
                    pos += c + close.len();
                }
            }
        };
        let Some(j) = end else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// XML's five entities and numeric character references.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let ent = &tail[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// `%XX` escapes as S3's `encoding-type=url` writes them (a `+` is a space there too).
pub fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_blocks() {
        let x = "<R><Contents><Key>a&amp;b</Key></Contents><Contents><Key>c&#x20;d</Key></Contents><Next>t</Next></R>";
        let keys: Vec<_> = blocks(x, "Contents")
            .iter()
            .filter_map(|b| field(b, "Key"))
            .collect();
        assert_eq!(keys, ["a&b", "c d"]);
        assert_eq!(field(x, "Next").as_deref(), Some("t"));
        assert_eq!(field(x, "Missing"), None);
        assert_eq!(unescape("&bogus; &amp"), "&bogus; &amp");
    }

    #[test]
    fn a_block_holds_nested_elements_of_its_own_name() {
        let x = "<Roles><member><RoleName>a</RoleName><Tags><member><Key>k</Key></member>\
                 <member><Key>l</Key></member></Tags><MaxSessionDuration>3600</MaxSessionDuration>\
                 </member><member><RoleName>b</RoleName></member></Roles>";
        let roles = blocks(x, "member");
        assert_eq!(roles.len(), 2, "{roles:?}");
        assert_eq!(
            field(roles[0], "MaxSessionDuration").as_deref(),
            Some("3600")
        );
        assert_eq!(blocks(roles[0], "member").len(), 2);
        assert_eq!(field(roles[1], "RoleName").as_deref(), Some("b"));
        assert!(blocks("<member><member>", "member").is_empty());
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode("a%2Fb+c%C3%BC").as_deref(), Some("a/b cü"));
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_decode("%FF"), None);
    }

    proptest::proptest! {
        #[test]
        fn escape_round_trips(s in "\\PC*") {
            proptest::prop_assert_eq!(unescape(&escape(&s)), s);
        }
    }
}

//! Conditional requests (RFC 9110 §13 as S3 applies them) for GET, HEAD and copy sources.

use crate::OssError;

/// Preconditions from `If-*` (or `x-amz-copy-source-if-*`) headers. Times are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub if_match: Option<Vec<String>>,
    pub if_none_match: Option<Vec<String>>,
    pub if_modified_since: Option<i64>,
    pub if_unmodified_since: Option<i64>,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// For GET/HEAD: `PreconditionFailed` (412) or `NotModified` (304), as S3 decides them.
    pub fn check_read(&self, etag: &str, last_modified_ms: i64) -> Result<(), OssError> {
        let modified = last_modified_ms.div_euclid(1000);
        let not_modified = || OssError::NotModified {
            etag: etag.to_owned(),
            last_modified: last_modified_ms,
        };
        match &self.if_match {
            Some(tags) => {
                if !matches_any(tags, etag) {
                    return Err(OssError::PreconditionFailed);
                }
            }
            None => {
                if let Some(t) = self.if_unmodified_since
                    && modified > t
                {
                    return Err(OssError::PreconditionFailed);
                }
            }
        }
        match &self.if_none_match {
            Some(tags) => {
                if matches_any(tags, etag) {
                    return Err(not_modified());
                }
            }
            None => {
                if let Some(t) = self.if_modified_since
                    && modified <= t
                {
                    return Err(not_modified());
                }
            }
        }
        Ok(())
    }

    /// For copy sources every failed condition is a 412.
    pub fn check_copy_source(&self, etag: &str, last_modified_ms: i64) -> Result<(), OssError> {
        match self.check_read(etag, last_modified_ms) {
            Err(OssError::NotModified { .. }) => Err(OssError::PreconditionFailed),
            other => other,
        }
    }
}

fn matches_any(tags: &[String], etag: &str) -> bool {
    tags.iter().any(|t| {
        let t = t.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t.trim_matches('"') == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        let etag = "abc";
        let lm = 1_000_000; // ms → 1000 s
        type Row = (Conditions, &'static str);
        let c = |m: Option<&str>, n: Option<&str>, ms: Option<i64>, us: Option<i64>| Conditions {
            if_match: m.map(|s| vec![s.to_owned()]),
            if_none_match: n.map(|s| vec![s.to_owned()]),
            if_modified_since: ms,
            if_unmodified_since: us,
        };
        let rows: Vec<Row> = vec![
            (c(None, None, None, None), "ok"),
            (c(Some("\"abc\""), None, None, None), "ok"),
            (c(Some("*"), None, None, None), "ok"),
            (c(Some("\"zzz\""), None, None, None), "412"),
            (c(None, Some("\"abc\""), None, None), "304"),
            (c(None, Some("\"zzz\""), None, None), "ok"),
            (c(None, None, Some(1000), None), "304"),
            (c(None, None, Some(999), None), "ok"),
            (c(None, None, None, Some(999)), "412"),
            (c(None, None, None, Some(1000)), "ok"),
            // If-Match true overrides a failing If-Unmodified-Since.
            (c(Some("\"abc\""), None, None, Some(999)), "ok"),
            // If-None-Match false overrides an If-Modified-Since that would say 304.
            (c(None, Some("\"zzz\""), Some(1000), None), "ok"),
        ];
        for (i, (cond, expected)) in rows.iter().enumerate() {
            let got = match cond.check_read(etag, lm) {
                Ok(()) => "ok",
                Err(OssError::PreconditionFailed) => "412",
                Err(OssError::NotModified { .. }) => "304",
                Err(_) => "other",
            };
            assert_eq!(got, *expected, "row {i}: {cond:?}");
        }
        assert!(matches!(
            c(None, Some("\"abc\""), None, None).check_copy_source(etag, lm),
            Err(OssError::PreconditionFailed)
        ));
    }
}

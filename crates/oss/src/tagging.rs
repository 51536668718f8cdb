//! Object and bucket tags: validation with S3's limits, and the Put/Get/Delete operations.

use std::collections::HashSet;

use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;

use crate::versions::VersionSelector;
use crate::{ObjectService, OssError, records};

pub const MAX_OBJECT_TAGS: usize = 10;
pub const MAX_BUCKET_TAGS: usize = 50;
const MAX_TAG_KEY_CHARS: usize = 128;
const MAX_TAG_VALUE_CHARS: usize = 256;
const BUCKET_TAGS: &str = "tagging";

pub type Tags = Vec<(String, String)>;

/// Checks a tag set against S3's rules: count, lengths (in characters), allowed characters,
/// unique keys, and the reserved `aws:` prefix.
pub fn validate_tags(tags: &[(String, String)], max: usize) -> Result<(), OssError> {
    if tags.len() > max {
        return Err(OssError::InvalidTag(format!(
            "Object tags cannot be greater than {max}"
        )));
    }
    let allowed = |s: &str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c))
    };
    let mut seen = HashSet::new();
    for (k, v) in tags {
        let kc = k.chars().count();
        if kc == 0 || kc > MAX_TAG_KEY_CHARS {
            return Err(OssError::InvalidTag(
                "The TagKey you have provided is invalid".into(),
            ));
        }
        if v.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(OssError::InvalidTag(
                "The TagValue you have provided is invalid".into(),
            ));
        }
        if !allowed(k) || !allowed(v) {
            return Err(OssError::InvalidTag(
                "The TagKey or TagValue you have provided contains invalid characters".into(),
            ));
        }
        if k.starts_with("aws:") {
            return Err(OssError::InvalidTag(
                "Your TagKey cannot be prefixed with aws:".into(),
            ));
        }
        if !seen.insert(k.as_str()) {
            return Err(OssError::InvalidTag(
                "Cannot provide multiple Tags with the same key".into(),
            ));
        }
    }
    Ok(())
}

/// Parses the `x-amz-tagging` header (a URL-encoded query string) and validates it.
pub fn parse_tagging_header(s: &str) -> Result<Tags, OssError> {
    let mut tags = Vec::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |x: &str| {
            percent_decode(x).ok_or_else(|| {
                OssError::InvalidArgument("The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates.".into())
            })
        };
        tags.push((dec(k)?, dec(v)?));
    }
    validate_tags(&tags, MAX_OBJECT_TAGS)?;
    Ok(tags)
}

/// Decodes `%XX` escapes and `+` (a space in query strings); `None` on bad escapes or UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
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

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    /// PutObjectTagging; returns the version label of the tagged version.
    pub async fn put_object_tags(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
        tags: Tags,
    ) -> Result<String, OssError> {
        validate_tags(&tags, MAX_OBJECT_TAGS)?;
        // The event carries the change to followers (replication re-sends the tags).
        let event = if tags.is_empty() {
            "ObjectTagging:Delete"
        } else {
            "ObjectTagging:Put"
        };
        let rec = self
            .update_version_with(
                bucket,
                key,
                version,
                move |_, r, _| {
                    r.tags = tags.clone();
                    Ok(())
                },
                feiyun_meta::WriteBatch::new(),
                Some(event),
            )
            .await?;
        Ok(rec.version_label())
    }

    /// GetObjectTagging: the tags and the version label.
    pub async fn object_tags(
        &self,
        bucket: &str,
        key: &str,
        version: Option<VersionSelector>,
    ) -> Result<(Tags, String), OssError> {
        let (rec, _) = self.load_version(bucket, key, version).await?;
        Ok((rec.tags.clone(), rec.version_label()))
    }

    pub async fn put_bucket_tags(&self, bucket: &str, tags: Option<Tags>) -> Result<(), OssError> {
        let value = match tags {
            Some(t) => {
                validate_tags(&t, MAX_BUCKET_TAGS).map_err(|e| match e {
                    OssError::InvalidTag(m) => {
                        OssError::InvalidTag(m.replace("Object tags", "Bucket tag count"))
                    }
                    other => other,
                })?;
                Some(records::encode(&t)?)
            }
            None => None,
        };
        self.set_bucket_config(bucket, BUCKET_TAGS, value).await
    }

    /// GetBucketTagging; `NoSuchTagSet` when none were set.
    pub async fn bucket_tags(&self, bucket: &str) -> Result<Tags, OssError> {
        match self.bucket_config(bucket, BUCKET_TAGS).await? {
            Some(v) => records::decode(&v),
            None => Err(OssError::NoSuchTagSet),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn tag_rules() {
        assert!(validate_tags(&[t("env", "prod"), t("team", "a b+c")], 10).is_ok());
        assert!(validate_tags(&[t("", "x")], 10).is_err());
        assert!(validate_tags(&[t(&"k".repeat(129), "x")], 10).is_err());
        assert!(validate_tags(&[t(&"ä".repeat(128), "x")], 10).is_ok());
        assert!(validate_tags(&[t("k", &"v".repeat(257))], 10).is_err());
        assert!(validate_tags(&[t("aws:x", "v")], 10).is_err());
        assert!(validate_tags(&[t("a", "1"), t("a", "2")], 10).is_err());
        assert!(validate_tags(&[t("a<b", "1")], 10).is_err());
        let eleven: Vec<_> = (0..11).map(|i| t(&format!("k{i}"), "v")).collect();
        assert!(validate_tags(&eleven, 10).is_err());
        assert!(validate_tags(&eleven, 50).is_ok());
    }

    #[test]
    fn tagging_header() {
        assert_eq!(
            parse_tagging_header("a=1&b=x%20y&c=").unwrap(),
            vec![t("a", "1"), t("b", "x y"), t("c", "")]
        );
        assert!(parse_tagging_header("a=1&a=2").is_err());
        assert!(parse_tagging_header("a=%zz").is_err());
        assert!(parse_tagging_header("").unwrap().is_empty());
    }
}

//! Key encodings in the metadata tables, and validation of names clients choose.
//!
//! `objects`: `bucket 0x00 key` — bucket names never contain NUL and keys are refused if they
//! do, so the separator is unambiguous and byte order equals S3 listing order (UTF-8 binary).
//! `uploads`: `bucket 0x00 key 0x00 upload_id` — upload ids are time-ordered, so uploads of
//! one key list in initiation order. `parts`: `upload_id 0x00 part_number(u32 BE)`.
//! `versions`: `bucket 0x00 key 0x00 !version(u128 BE)` — inverted so a key's newest version
//! sorts first; `heads` uses the `objects` key. `bucket_configs`: `bucket 0x00 name`.

use crate::{MAX_KEY_LEN, OssError};

pub fn bucket(name: &str) -> Vec<u8> {
    name.as_bytes().to_vec()
}

pub fn object(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Prefix of every object key of a bucket.
pub fn bucket_objects(bucket: &str) -> Vec<u8> {
    object(bucket, "")
}

/// Prefix of every version row of one key.
pub fn key_versions(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = object(bucket, key);
    k.push(0);
    k
}

pub fn version(bucket: &str, key: &str, v: crate::records::VersionId) -> Vec<u8> {
    let mut k = key_versions(bucket, key);
    k.extend_from_slice(&(u128::MAX - v.0).to_be_bytes());
    k
}

/// Splits a `versions` row key of `bucket` into the object key and version.
pub fn parse_version(
    bucket: &str,
    raw: &[u8],
) -> Result<(String, crate::records::VersionId), OssError> {
    let bad = || OssError::Corrupt("version row key".into());
    let base = bucket.len() + 1;
    if raw.len() < base + 17 || raw[raw.len() - 17] != 0 {
        return Err(bad());
    }
    let key = String::from_utf8(raw[base..raw.len() - 17].to_vec()).map_err(|_| bad())?;
    let inv: [u8; 16] = raw[raw.len() - 16..].try_into().map_err(|_| bad())?;
    Ok((
        key,
        crate::records::VersionId(u128::MAX - u128::from_be_bytes(inv)),
    ))
}

pub fn bucket_config(bucket: &str, name: &str) -> Vec<u8> {
    object(bucket, name)
}

pub fn upload(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    let mut k = object(bucket, key);
    k.push(0);
    k.extend_from_slice(upload_id.as_bytes());
    k
}

pub fn part(upload_id: &str, part_number: u32) -> Vec<u8> {
    let mut k = upload_parts(upload_id);
    k.extend_from_slice(&part_number.to_be_bytes());
    k
}

pub fn upload_parts(upload_id: &str) -> Vec<u8> {
    let mut k = upload_id.as_bytes().to_vec();
    k.push(0);
    k
}

/// Bucket naming rules for general-purpose buckets, as AWS documents them.
pub fn validate_bucket_name(name: &str) -> Result<(), OssError> {
    let bad = |why: &str| Err(OssError::InvalidBucketName(format!("{name:?}: {why}")));
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    let b = name.as_bytes();
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
    {
        return bad("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let edge_ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !edge_ok(b[0]) || !edge_ok(b[b.len() - 1]) {
        return bad("must begin and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("adjacent periods or period-dash are not allowed");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be formatted as an IP address");
    }
    for p in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(p) {
            return bad("reserved prefix");
        }
    }
    for s in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(s) {
            return bad("reserved suffix");
        }
    }
    Ok(())
}

/// Object keys: any UTF-8 up to 1024 bytes except NUL (which no XML listing can carry).
/// `..`, runs of `/` and `\` are ordinary characters here: keys are never paths.
pub fn validate_object_key(key: &str) -> Result<(), OssError> {
    if key.is_empty() {
        return Err(OssError::InvalidArgument(
            "object key must not be empty".into(),
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(OssError::KeyTooLong);
    }
    if key.contains('\0') {
        return Err(OssError::InvalidArgument(
            "object key must not contain NUL".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        let rows: &[(&str, bool)] = &[
            ("abc", true),
            ("my.bucket-1", true),
            ("ab", false),
            (&"a".repeat(64), false),
            ("Upper", false),
            ("-abc", false),
            ("abc-", false),
            ("a..b", false),
            ("a.-b", false),
            ("192.168.1.1", false),
            ("xn--abc", false),
            ("abc-s3alias", false),
            ("under_score", false),
            ("a b", false),
        ];
        for (name, ok) in rows {
            assert_eq!(validate_bucket_name(name).is_ok(), *ok, "{name}");
        }
    }

    #[test]
    fn object_keys() {
        assert!(validate_object_key("../../etc/passwd").is_ok());
        assert!(validate_object_key("a//b\\c").is_ok());
        assert!(validate_object_key(&"k".repeat(1024)).is_ok());
        assert!(matches!(
            validate_object_key(&"k".repeat(1025)),
            Err(OssError::KeyTooLong)
        ));
        assert!(validate_object_key("a\0b").is_err());
        assert!(validate_object_key("").is_err());
    }

    #[test]
    fn encodings_sort_like_s3() {
        // "a" < "a/b" < "a0" in both raw keys and encoded keys, and no bucket bleeds into
        // another: "b" objects never sort inside "b-2"'s range.
        assert!(object("b", "a") < object("b", "a/b"));
        assert!(object("b", "a/b") < object("b", "a0"));
        let end = feiyun_meta::prefix_end(&bucket_objects("b")).unwrap();
        assert!(object("b-2", "x") >= end || !object("b-2", "x").starts_with(&bucket_objects("b")));
        assert!(part("u", 2) < part("u", 10));
    }

    #[test]
    fn versions_sort_by_key_then_newest_first() {
        use crate::records::VersionId;
        let (old, new) = (VersionId(5), VersionId(9));
        assert!(version("b", "a", new) < version("b", "a", old));
        // Every version of "a" sorts before any version of "a/b" and "a\u{1}".
        assert!(version("b", "a", VersionId(0)) < version("b", "a/b", VersionId(u128::MAX)));
        assert!(version("b", "a", VersionId(0)) < version("b", "a\u{1}", VersionId(u128::MAX)));
        let raw = version("b", "x/y", new);
        assert_eq!(parse_version("b", &raw).unwrap(), ("x/y".to_string(), new));
        assert!(parse_version("b", b"b\0short").is_err());
    }
}

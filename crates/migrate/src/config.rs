//! `--bucket-config`: a source bucket's settings written to the destination bucket —
//! versioning, object lock, default encryption, CORS, tags, lifecycle and policy — and
//! compared by `verify`. Each setting travels as the document S3 defines for it, so any S3
//! source works; a setting the region refuses (a KMS key that exists only at the source, a
//! policy naming foreign accounts) is a failure of that setting, reported, never a reason
//! to drop the others.
//!
//! Order matters. Versioning and object lock are switched on before any object is copied
//! (per-object retention needs a lock-enabled bucket), and default encryption, CORS and tags
//! too, so the copies are encrypted as the source's bucket would encrypt them. The default
//! retention rule, lifecycle and policy come after the objects: a default retention would
//! lock copies that had none at the source, an expiration rule could remove copies before
//! the run ends, and a policy may deny the migrator's own writes (a common "deny uploads
//! without SSE headers" statement, say).

use bytes::Bytes;
use http::Method;
use md5::{Digest as _, Md5};

use crate::client::{S3Client, retry};
use crate::dest::Dest;
use crate::limit::Limits;
use crate::{Error, Failure};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One bucket setting: its subresource and the error codes that mean "none set".
struct Setting {
    name: &'static str,
    absent: &'static [&'static str],
}

const VERSIONING: Setting = Setting {
    name: "versioning",
    absent: &[],
};
const OBJECT_LOCK: Setting = Setting {
    name: "object-lock",
    absent: &["ObjectLockConfigurationNotFoundError"],
};
const ENCRYPTION: Setting = Setting {
    name: "encryption",
    absent: &["ServerSideEncryptionConfigurationNotFoundError"],
};
const CORS: Setting = Setting {
    name: "cors",
    absent: &["NoSuchCORSConfiguration"],
};
const TAGGING: Setting = Setting {
    name: "tagging",
    absent: &["NoSuchTagSet", "NoSuchTagSetError"],
};
const LIFECYCLE: Setting = Setting {
    name: "lifecycle",
    absent: &["NoSuchLifecycleConfiguration"],
};
const POLICY: Setting = Setting {
    name: "policy",
    absent: &["NoSuchBucketPolicy"],
};

/// Every setting, in the order `verify` reports them.
const ALL: [&Setting; 7] = [
    &VERSIONING,
    &OBJECT_LOCK,
    &ENCRYPTION,
    &CORS,
    &TAGGING,
    &LIFECYCLE,
    &POLICY,
];

/// The source bucket whose settings travel.
#[derive(Clone)]
pub struct ConfigSource {
    pub client: S3Client,
    pub bucket: String,
}

/// Which half of the settings to write: before the objects or after them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage {
    BeforeObjects,
    AfterObjects,
}

/// Reads one setting's document; `None` when the bucket has none.
async fn read(
    client: &S3Client,
    bucket: &str,
    s: &Setting,
    limits: &Limits,
) -> Result<Option<Bytes>, String> {
    limits.request().await;
    let q = [(s.name, "")];
    let r = retry(|| {
        client.call(
            Method::GET,
            Some(bucket),
            None,
            &q,
            Vec::new(),
            Bytes::new(),
        )
    })
    .await;
    match r {
        Ok((_, body)) if s.name == VERSIONING.name => {
            // A bucket never versioned answers an empty configuration.
            let text = String::from_utf8_lossy(&body);
            Ok(crate::xml::field(&text, "Status").map(|_| body))
        }
        Ok((_, body)) => Ok(Some(body)),
        Err(e) if e.code().is_some_and(|c| s.absent.contains(&c)) => Ok(None),
        Err(e) => Err(format!("GET ?{}: {e}", s.name)),
    }
}

async fn write(dest: &Dest, s: &Setting, body: Bytes) -> Result<(), String> {
    let md5: [u8; 16] = Md5::digest(&body).into();
    let headers = vec![("content-md5".to_owned(), base64_encode(&md5))];
    let q = [(s.name, "")];
    retry(|| {
        dest.client.call(
            Method::PUT,
            Some(&dest.bucket),
            None,
            &q,
            headers.clone(),
            body.clone(),
        )
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("PUT ?{}: {e}", s.name))
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    B64.encode(b)
}

/// The document that enables object lock with no default retention: written before the
/// objects, the source's own rule after them.
const LOCK_ONLY: &str = "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
<ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>";

/// Writes one stage's settings. Answers what was done (for `--dry-run`, what would be) and
/// the settings that failed.
///
/// With `all_versions` a source whose versioning is suspended is suspended at the
/// destination only after the objects: histories are replayed into a versioned bucket.
pub async fn copy_stage(
    src: &ConfigSource,
    dest: &Dest,
    stage: Stage,
    limits: &Limits,
    dry_run: bool,
    all_versions: bool,
) -> (Vec<String>, Vec<Failure>) {
    let settings: &[&Setting] = match stage {
        Stage::BeforeObjects => &[&VERSIONING, &OBJECT_LOCK, &ENCRYPTION, &CORS, &TAGGING],
        Stage::AfterObjects => &[&VERSIONING, &OBJECT_LOCK, &LIFECYCLE, &POLICY],
    };
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for s in settings {
        let fail = |error: String| Failure {
            key: format!("(bucket {}) {}", src.bucket, s.name),
            error,
        };
        let doc = match read(&src.client, &src.bucket, s, limits).await {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                failed.push(fail(e));
                continue;
            }
        };
        let suspended = s.name == VERSIONING.name
            && crate::xml::field(&String::from_utf8_lossy(&doc), "Status").as_deref()
                == Some("Suspended");
        let late = all_versions && suspended;
        if s.name == VERSIONING.name && late != (stage == Stage::AfterObjects) {
            continue;
        }
        let body = match (s.name, stage) {
            ("object-lock", Stage::BeforeObjects) => Bytes::from_static(LOCK_ONLY.as_bytes()),
            ("object-lock", Stage::AfterObjects) => {
                if crate::xml::field(&String::from_utf8_lossy(&doc), "DefaultRetention").is_none() {
                    continue;
                }
                doc
            }
            ("policy", _) => Bytes::from(rebase_policy(
                &String::from_utf8_lossy(&doc),
                &src.bucket,
                &dest.bucket,
            )),
            _ => doc,
        };
        let what = match (s.name, stage) {
            ("object-lock", Stage::AfterObjects) => "object-lock default retention",
            _ => s.name,
        };
        if dry_run {
            done.push(format!("config {what}"));
            continue;
        }
        match write(dest, s, body).await {
            Ok(()) => done.push(format!("config {what}")),
            Err(e) => failed.push(fail(e)),
        }
    }
    (done, failed)
}

/// A policy's resources name its bucket: the copy names the destination's. The document is
/// parsed, so escapes (`\/`) cannot hide an ARN, and only `Resource` and `NotResource`
/// values are rewritten: the bucket itself or a key under it, never `arn:aws:s3:::from2`.
/// Text that is not JSON is left for the region to refuse.
fn rebase_policy(policy: &str, from: &str, to: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(policy) else {
        return policy.to_owned();
    };
    if from == to {
        return policy.to_owned();
    }
    let old = format!("arn:aws:s3:::{from}");
    let new = format!("arn:aws:s3:::{to}");
    let rebase = |v: &mut serde_json::Value| {
        if let serde_json::Value::String(s) = v
            && let Some(rest) = s.strip_prefix(&old)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            *s = format!("{new}{rest}");
        }
    };
    let statements = match doc.get_mut("Statement") {
        Some(serde_json::Value::Array(a)) => a.iter_mut().collect::<Vec<_>>(),
        Some(one @ serde_json::Value::Object(_)) => vec![one],
        _ => Vec::new(),
    };
    for st in statements {
        for field in ["Resource", "NotResource"] {
            match st.get_mut(field) {
                Some(serde_json::Value::Array(a)) => a.iter_mut().for_each(rebase),
                Some(v) => rebase(v),
                None => {}
            }
        }
    }
    doc.to_string()
}

/// The settings that differ between the two buckets, as `(setting, detail)`.
pub async fn compare(
    src: &ConfigSource,
    dest: &Dest,
    limits: &Limits,
) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for s in ALL {
        let a = read(&src.client, &src.bucket, s, limits)
            .await
            .map_err(Error::Source)?;
        let b = read(&dest.client, &dest.bucket, s, &Limits::default())
            .await
            .map_err(Error::Dest)?;
        let (a, b) = match s.name {
            "policy" => (
                a.map(|d| {
                    canonical_json(&rebase_policy(
                        &String::from_utf8_lossy(&d),
                        &src.bucket,
                        &dest.bucket,
                    ))
                }),
                b.map(|d| canonical_json(&String::from_utf8_lossy(&d))),
            ),
            // S3 encrypts every bucket with SSE-S3 unless told otherwise (since 2023), so a
            // store that answers "none" and one that answers that default agree.
            "encryption" => (
                Some(
                    a.map(|d| leaves(&String::from_utf8_lossy(&d)))
                        .unwrap_or_else(sse_s3_default),
                ),
                Some(
                    b.map(|d| leaves(&String::from_utf8_lossy(&d)))
                        .unwrap_or_else(sse_s3_default),
                ),
            ),
            _ => (
                a.map(|d| leaves(&String::from_utf8_lossy(&d))),
                b.map(|d| leaves(&String::from_utf8_lossy(&d))),
            ),
        };
        if a != b {
            let detail = match (&a, &b) {
                (Some(_), None) => "set at the source only".to_owned(),
                (None, Some(_)) => "set at the destination only".to_owned(),
                _ => format!(
                    "source {} / destination {}",
                    a.unwrap_or_default(),
                    b.unwrap_or_default()
                ),
            };
            out.push((s.name.to_owned(), detail));
        }
    }
    Ok(out)
}

fn sse_s3_default() -> String {
    leaves(
        "<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>\
         <SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>\
         </ServerSideEncryptionConfiguration>",
    )
}

fn canonical_json(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v.to_string(),
        Err(_) => text.trim().to_owned(),
    }
}

/// An XML document as its sorted leaves (`path=text`, empty ones left out): equal for two
/// documents that say the same thing in another element order, with other whitespace, or
/// with and without a namespace — how two S3 implementations answer one configuration.
fn leaves(doc: &str) -> String {
    let mut path: Vec<&str> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut rest = doc;
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        let Some(gt) = rest[lt..].find('>') else {
            break;
        };
        let tag = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let t = text.trim();
            // An S3 Bucket Key off is what a document without one means.
            let default = name.trim() == "BucketKeyEnabled" && t == "false";
            if !t.is_empty() && !default {
                out.push(format!("{}={}", path.join("/"), crate::xml::unescape(t)));
            }
            text.clear();
            if path.last() == Some(&name.trim()) {
                path.pop();
            }
            continue;
        }
        text.clear();
        let self_closing = tag.ends_with('/');
        let name = tag
            .trim_end_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or("");
        if !self_closing {
            path.push(name);
        }
    }
    out.sort();
    out.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_rebased_onto_the_destination_bucket_only() {
        let p = r#"{"Statement":[{"Resource":["arn:aws:s3:::old","arn:aws:s3:::old\/*","arn:aws:s3:::old2/*"],"Sid":"arn:aws:s3:::old"}]}"#;
        let got: serde_json::Value = serde_json::from_str(&rebase_policy(p, "old", "new")).unwrap();
        assert_eq!(
            got["Statement"][0]["Resource"],
            serde_json::json!([
                "arn:aws:s3:::new",
                "arn:aws:s3:::new/*",
                "arn:aws:s3:::old2/*"
            ]),
            "escaped slashes are rewritten too, a longer bucket name is not"
        );
        assert_eq!(
            got["Statement"][0]["Sid"], "arn:aws:s3:::old",
            "only resources"
        );
        let one = r#"{"Statement":{"NotResource":"arn:aws:s3:::old/x"}}"#;
        let got: serde_json::Value =
            serde_json::from_str(&rebase_policy(one, "old", "new")).unwrap();
        assert_eq!(got["Statement"]["NotResource"], "arn:aws:s3:::new/x");
        assert_eq!(rebase_policy(p, "old", "old"), p);
        assert_eq!(rebase_policy("not json", "old", "new"), "not json");
    }

    #[test]
    fn documents_compare_by_what_they_say() {
        let a = r#"<?xml version="1.0" encoding="UTF-8"?>
<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>*</AllowedOrigin></CORSRule>
</CORSConfiguration>"#;
        let b = "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>\
                 <AllowedMethod>GET</AllowedMethod><ID></ID></CORSRule></CORSConfiguration>";
        assert_eq!(leaves(a), leaves(b));
        let c = "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>\
                 <AllowedMethod>PUT</AllowedMethod></CORSRule></CORSConfiguration>";
        assert_ne!(leaves(a), leaves(c));
        assert_eq!(
            leaves("<A><B>x &amp; y</B><C/></A>"),
            "A/B=x & y".to_owned()
        );
    }
}

//! Bucket CORS: the configuration (validated with S3's limits) and rule matching for preflight
//! (OPTIONS) and actual cross-origin requests. The server applies the result to responses.

use feiyun_blob::BlobStore;
use feiyun_meta::MetaStore;
use serde::{Deserialize, Serialize};

use crate::{ObjectService, OssError, records};

const CONFIG: &str = "cors";
const MAX_RULES: usize = 100;
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsConfig {
    pub rules: Vec<CorsRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_secs: Option<u32>,
}

/// `*` matches any run of characters; at most one is allowed per pattern.
fn wildcard(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.starts_with(head)
                && value.ends_with(tail)
        }
    }
}

impl CorsRule {
    fn origin_ok(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|p| wildcard(p, origin))
    }

    /// Header names compare case-insensitively.
    fn header_ok(&self, header: &str) -> bool {
        let h = header.to_ascii_lowercase();
        self.allowed_headers
            .iter()
            .any(|p| wildcard(&p.to_ascii_lowercase(), &h))
    }

    /// True when the rule allows any origin, so the response may say `*`.
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }
}

impl CorsConfig {
    pub fn validate(&self) -> Result<(), OssError> {
        if self.rules.is_empty() || self.rules.len() > MAX_RULES {
            return Err(OssError::MalformedXml(format!(
                "a CORS configuration holds 1 to {MAX_RULES} rules"
            )));
        }
        for r in &self.rules {
            if r.allowed_origins.is_empty() || r.allowed_methods.is_empty() {
                return Err(OssError::MalformedXml(
                    "each CORSRule needs AllowedOrigin and AllowedMethod".into(),
                ));
            }
            for m in &r.allowed_methods {
                if !METHODS.contains(&m.as_str()) {
                    return Err(OssError::InvalidRequest(format!(
                        "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                    )));
                }
            }
            for o in &r.allowed_origins {
                if o.matches('*').count() > 1 {
                    return Err(OssError::InvalidRequest(format!(
                        "AllowedOrigin \"{o}\" can not have more than one wildcard."
                    )));
                }
            }
            for h in &r.allowed_headers {
                if h.matches('*').count() > 1 {
                    return Err(OssError::InvalidRequest(format!(
                        "AllowedHeader \"{h}\" can not have more than one wildcard."
                    )));
                }
            }
            if r.id.as_ref().is_some_and(|i| i.chars().count() > 255) {
                return Err(OssError::InvalidArgument(
                    "ID is longer than 255 characters".into(),
                ));
            }
        }
        Ok(())
    }

    /// The first rule that allows this request. `request_headers` are the headers a preflight
    /// asks for (empty for an actual request, whose headers CORS does not restrict).
    pub fn find(
        &self,
        origin: &str,
        method: &str,
        request_headers: &[String],
    ) -> Option<&CorsRule> {
        self.rules.iter().find(|r| {
            r.origin_ok(origin)
                && r.allowed_methods.iter().any(|m| m == method)
                && request_headers.iter().all(|h| r.header_ok(h))
        })
    }
}

impl<M: MetaStore, B: BlobStore> ObjectService<M, B> {
    pub async fn put_cors(&self, bucket: &str, config: Option<CorsConfig>) -> Result<(), OssError> {
        let value = match config {
            Some(c) => {
                c.validate()?;
                Some(records::encode(&c)?)
            }
            None => None,
        };
        self.set_bucket_config(bucket, CONFIG, value).await
    }

    pub async fn cors(&self, bucket: &str) -> Result<Option<CorsConfig>, OssError> {
        match self.bucket_config(bucket, CONFIG).await? {
            Some(v) => Ok(Some(records::decode(&v)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CorsConfig {
        CorsConfig {
            rules: vec![
                CorsRule {
                    allowed_origins: vec!["https://*.example.com".into()],
                    allowed_methods: vec!["PUT".into(), "GET".into()],
                    allowed_headers: vec!["content-*".into(), "x-amz-*".into()],
                    ..Default::default()
                },
                CorsRule {
                    allowed_origins: vec!["*".into()],
                    allowed_methods: vec!["GET".into()],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn matching() {
        let c = config();
        let hdrs = vec!["Content-Type".to_string(), "x-amz-date".to_string()];
        assert!(c.find("https://app.example.com", "PUT", &hdrs).is_some());
        assert!(c.find("https://app.example.org", "PUT", &[]).is_none());
        assert!(c.find("https://app.example.com", "DELETE", &[]).is_none());
        let bad = vec!["authorization-x".to_string()];
        assert!(c.find("https://app.example.com", "PUT", &bad).is_none());
        // The second rule: any origin may GET, without extra headers.
        let r = c.find("http://elsewhere", "GET", &[]).unwrap();
        assert!(r.any_origin());
        assert!(c.find("http://elsewhere", "GET", &hdrs).is_none());
    }

    #[test]
    fn validation() {
        assert!(config().validate().is_ok());
        let mut bad = config();
        bad.rules[0].allowed_methods.push("PATCH".into());
        assert!(bad.validate().is_err());
        let mut bad = config();
        bad.rules[0].allowed_origins = vec!["https://*.*.com".into()];
        assert!(bad.validate().is_err());
        assert!(CorsConfig::default().validate().is_err());
        assert!(wildcard("*", ""));
        assert!(!wildcard("ab*ba", "aba"));
    }
}

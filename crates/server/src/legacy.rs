//! The legacy stores of live migrations (`feiyun migrate live`), reached with the migrate
//! crate's S3 client: what the object service's [`Legacy`] trait asks, on the S3 wire.
//! Every answer is untrusted input: sizes and times are parsed or refused, never assumed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use feiyun_iam::sigv4::uri_encode;
use feiyun_migrate::client::{ClientError, EndpointConfig, S3Client, header};
use feiyun_migrate::xml;
use feiyun_oss::live::{
    Legacy, LegacyBody, LegacyConnector, LegacyEntry, LegacyError, LegacyObject, LegacyPage,
    LiveSetting,
};
use feiyun_oss::{ChecksumAlgorithm, ObjectHeaders, OssError};
use futures::StreamExt;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;

/// Longest wait for the next piece of a legacy body before the read is abandoned.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Connector {
    tls: rustls::ClientConfig,
    /// Legacy stores may be at public addresses, and in these networks (`live_allowed_networks`).
    allowed: Arc<Vec<feiyun_fc::outbound::Network>>,
}

impl Connector {
    pub(crate) fn new(networks: &[String]) -> Result<Self, String> {
        let allowed = networks
            .iter()
            .map(|n| {
                feiyun_fc::outbound::Network::parse(n)
                    .ok_or_else(|| format!("live_allowed_networks: {n:?} is not a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls,
            allowed: Arc::new(allowed),
        })
    }
}

impl LegacyConnector for Connector {
    fn connect(&self, s: &LiveSetting, secret: &str) -> Result<Arc<dyn Legacy>, OssError> {
        let client = S3Client::new(EndpointConfig {
            url: s.endpoint.clone(),
            access_key: s.access_key.clone(),
            secret_key: secret.to_owned(),
            session_token: None,
            region: s.region.clone(),
            virtual_hosted: s.virtual_hosted,
            tls: self.tls.clone(),
            allow: Some({
                let allowed = self.allowed.clone();
                Arc::new(move |ip| {
                    feiyun_fc::outbound::is_public(ip) || allowed.iter().any(|n| n.contains(ip))
                })
            }),
        })
        .map_err(|e| OssError::Legacy(format!("legacy store {}: {e}", s.endpoint)))?;
        Ok(Arc::new(S3Legacy {
            client,
            bucket: s.bucket.clone(),
            prefix: s.prefix.clone(),
        }))
    }
}

struct S3Legacy {
    client: S3Client,
    bucket: String,
    prefix: String,
}

fn legacy_error(what: &str, e: ClientError) -> LegacyError {
    match e.status() {
        Some(404) => LegacyError::NotFound,
        Some(412) => LegacyError::Changed,
        Some(401 | 403) => LegacyError::Denied(format!("{what}: {e}")),
        Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
            LegacyError::Rejected(format!("{what}: {e}"))
        }
        _ => LegacyError::Unavailable(format!("{what}: {e}")),
    }
}

/// The object an answer's headers describe; `size` from Content-Range on a ranged answer.
fn object_of(h: &HeaderMap) -> Result<LegacyObject, LegacyError> {
    let bad = |m: &str| LegacyError::Unavailable(format!("the legacy store answered {m}"));
    let size = match header(h, "content-range") {
        Some(r) => r.rsplit('/').next().and_then(|n| n.parse().ok()),
        None => header(h, "content-length").and_then(|n| n.parse().ok()),
    }
    .ok_or_else(|| bad("no object size"))?;
    let etag = header(h, "etag")
        .map(|e| e.trim_matches('"').to_owned())
        .ok_or_else(|| bad("no ETag"))?;
    let last_modified_ms = header(h, "last-modified")
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc2822).ok()
        })
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or_else(feiyun_oss::now_millis);
    let meta = feiyun_migrate::source::object_meta(h, 0);
    let mut headers = ObjectHeaders::default();
    for (name, value) in meta.headers {
        let v = Some(value.clone());
        match name.as_str() {
            "content-type" => headers.content_type = v,
            "cache-control" => headers.cache_control = v,
            "content-disposition" => headers.content_disposition = v,
            "content-encoding" => headers.content_encoding = v,
            "content-language" => headers.content_language = v,
            "expires" => headers.expires = v,
            n => {
                if let Some(user) = n.strip_prefix("x-amz-meta-") {
                    headers.user_metadata.push((user.to_owned(), value));
                }
            }
        }
    }
    let checksum = meta.checksum.and_then(|(name, value)| {
        let alg = name.strip_prefix("x-amz-checksum-")?;
        Some((ChecksumAlgorithm::parse(alg)?, value))
    });
    Ok(LegacyObject {
        size,
        etag,
        etag_is_md5: meta.etag_is_md5,
        last_modified_ms,
        headers,
        tag_count: meta.tag_count,
        checksum,
    })
}

impl S3Legacy {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait::async_trait]
impl Legacy for S3Legacy {
    async fn head(&self, key: &str) -> Result<LegacyObject, LegacyError> {
        let k = self.key(key);
        let (h, _) = self
            .client
            .call(
                Method::HEAD,
                Some(&self.bucket),
                Some(&k),
                &[],
                vec![("x-amz-checksum-mode".into(), "ENABLED".into())],
                Bytes::new(),
            )
            .await
            .map_err(|e| legacy_error(&format!("HEAD {k}"), e))?;
        object_of(&h)
    }

    async fn get(
        &self,
        key: &str,
        etag: Option<&str>,
        span: Option<(u64, u64)>,
    ) -> Result<(LegacyObject, LegacyBody), LegacyError> {
        let k = self.key(key);
        let mut hdrs = vec![("x-amz-checksum-mode".to_owned(), "ENABLED".to_owned())];
        if let Some(e) = etag {
            hdrs.push(("if-match".into(), format!("\"{e}\"")));
        }
        if let Some((start, end)) = span {
            if end <= start {
                return Ok((LegacyObject::default(), Box::pin(futures::stream::empty())));
            }
            hdrs.push(("range".into(), format!("bytes={start}-{}", end - 1)));
        }
        let resp = self
            .client
            .stream(Method::GET, &self.bucket, &k, &[], hdrs)
            .await
            .map_err(|e| legacy_error(&format!("GET {k}"), e))?;
        let obj = object_of(&resp.headers)?;
        let expect = match span {
            Some((start, end)) => {
                let want = format!("bytes {start}-{}/{}", end - 1, obj.size);
                if header(&resp.headers, "content-range") != Some(want.as_str()) {
                    return Err(LegacyError::Unavailable(format!(
                        "GET {k}: the legacy store answered Content-Range {:?} for {want}",
                        header(&resp.headers, "content-range")
                    )));
                }
                end - start
            }
            None => obj.size,
        };
        let what = k.clone();
        // Exactly `expect` bytes, or an error: a body that ends early or runs long never
        // passes for the object.
        let body = resp.body.into_data_stream();
        let body = futures::stream::unfold(Some((body, expect)), move |state| {
            let what = what.clone();
            async move {
                let (mut b, left) = state?;
                let fail = |m: String| Some((Err(LegacyError::Unavailable(m)), None));
                match tokio::time::timeout(FRAME_TIMEOUT, b.next()).await {
                    Err(_) => fail(format!("GET {what}: the body stalled")),
                    Ok(None) if left == 0 => None,
                    Ok(None) => fail(format!("GET {what}: the body ended {left} bytes short")),
                    Ok(Some(Err(e))) => fail(format!("GET {what}: {e}")),
                    Ok(Some(Ok(chunk))) if chunk.len() as u64 > left => {
                        fail(format!("GET {what}: the body is longer than declared"))
                    }
                    Ok(Some(Ok(chunk))) => {
                        let left = left - chunk.len() as u64;
                        Some((Ok(chunk), Some((b, left))))
                    }
                }
            }
        });
        Ok((obj, Box::pin(body)))
    }

    async fn tags(&self, key: &str) -> Result<Vec<(String, String)>, LegacyError> {
        let k = self.key(key);
        let (_, body) = self
            .client
            .call(
                Method::GET,
                Some(&self.bucket),
                Some(&k),
                &[("tagging", "")],
                Vec::new(),
                Bytes::new(),
            )
            .await
            .map_err(|e| legacy_error(&format!("GET {k}?tagging"), e))?;
        let doc = String::from_utf8_lossy(&body);
        Ok(xml::blocks(&doc, "Tag")
            .iter()
            .filter_map(|t| Some((xml::field(t, "Key")?, xml::field(t, "Value")?)))
            .collect())
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        delimiter: Option<&str>,
        max: usize,
    ) -> Result<LegacyPage, LegacyError> {
        let full_prefix = self.key(prefix);
        let start_after = after.map(|a| self.key(a));
        let max_keys = max.clamp(1, 1000).to_string();
        let mut q = vec![
            ("list-type", "2"),
            ("encoding-type", "url"),
            ("prefix", full_prefix.as_str()),
            ("max-keys", max_keys.as_str()),
        ];
        if let Some(a) = &start_after {
            q.push(("start-after", a));
        }
        if let Some(d) = delimiter {
            q.push(("delimiter", d));
        }
        let (_, body) = self
            .client
            .call(
                Method::GET,
                Some(&self.bucket),
                None,
                &q,
                Vec::new(),
                Bytes::new(),
            )
            .await
            .map_err(|e| legacy_error(&format!("listing s3://{}", self.bucket), e))?;
        let doc = String::from_utf8_lossy(&body);
        let encoded = xml::field(&doc, "EncodingType").as_deref() == Some("url");
        let name = |raw: String| -> Result<Option<String>, LegacyError> {
            let full = if encoded {
                xml::url_decode(&raw).ok_or_else(|| {
                    LegacyError::Unavailable(format!("a listed key does not decode: {raw}"))
                })?
            } else {
                raw
            };
            Ok(full.strip_prefix(&self.prefix).map(str::to_owned))
        };
        let mut entries = Vec::new();
        for c in xml::blocks(&doc, "Contents") {
            // The prefix's own folder marker is no key of the bucket.
            let Some(key) =
                name(xml::field(c, "Key").unwrap_or_default())?.filter(|k| !k.is_empty())
            else {
                continue;
            };
            let last_modified_ms = xml::field(c, "LastModified")
                .and_then(|t| {
                    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .unwrap_or_default();
            entries.push(LegacyEntry::Object {
                key,
                size: xml::field(c, "Size")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                etag: xml::field(c, "ETag")
                    .map(|e| e.trim_matches('"').to_owned())
                    .unwrap_or_default(),
                last_modified_ms,
            });
        }
        for p in xml::blocks(&doc, "CommonPrefixes") {
            if let Some(p) = name(xml::field(p, "Prefix").unwrap_or_default())? {
                entries.push(LegacyEntry::CommonPrefix(p));
            }
        }
        // Objects and prefixes arrive as two lists; S3 orders them as one. A store that sent
        // more than asked is cut to the page asked for (and the rest listed again later).
        entries.sort_by(|a, b| a.name().cmp(b.name()));
        entries.dedup_by(|a, b| a.name() == b.name());
        let over = entries.len() > max;
        entries.truncate(max.max(1));
        Ok(LegacyPage {
            entries,
            truncated: over || xml::field(&doc, "IsTruncated").as_deref() == Some("true"),
        })
    }

    async fn put(
        &self,
        key: &str,
        headers: &ObjectHeaders,
        body: Bytes,
    ) -> Result<(), LegacyError> {
        let k = self.key(key);
        let mut h: Vec<(String, String)> = Vec::new();
        let system = [
            ("content-type", &headers.content_type),
            ("cache-control", &headers.cache_control),
            ("content-disposition", &headers.content_disposition),
            ("content-encoding", &headers.content_encoding),
            ("content-language", &headers.content_language),
            ("expires", &headers.expires),
        ];
        for (name, v) in system {
            if let Some(v) = v {
                h.push((name.to_owned(), v.clone()));
            }
        }
        for (name, v) in &headers.user_metadata {
            h.push((format!("x-amz-meta-{name}"), v.clone()));
        }
        if !headers.tags.is_empty() {
            let tags: Vec<String> = headers
                .tags
                .iter()
                .map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v)))
                .collect();
            h.push(("x-amz-tagging".into(), tags.join("&")));
        }
        self.client
            .call(Method::PUT, Some(&self.bucket), Some(&k), &[], h, body)
            .await
            .map(|_| ())
            .map_err(|e| legacy_error(&format!("PUT {k}"), e))
    }

    async fn delete(&self, key: &str) -> Result<(), LegacyError> {
        let k = self.key(key);
        match self
            .client
            .call(
                Method::DELETE,
                Some(&self.bucket),
                Some(&k),
                &[],
                Vec::new(),
                Bytes::new(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(legacy_error(&format!("DELETE {k}"), e)),
        }
    }
}

/// Authorizes what a live migration does in the region as the principal that started it,
/// through the same S3 policy evaluation as its own requests. The object service holds
/// this, so it holds the service weakly: a cycle would keep the metadata store open past
/// shutdown (and a start after it would then run the full recovery check).
pub(crate) struct LiveAuthority {
    pub iam: Arc<feiyun_iam::Iam<crate::Store>>,
    pub oss: std::sync::Weak<crate::EmbeddedOss>,
    pub buckets: Arc<feiyun_s3api::BucketAccessCache>,
}

#[async_trait::async_trait]
impl feiyun_oss::live::ActingAs for LiveAuthority {
    async fn object(
        &self,
        principal: &str,
        action: &str,
        bucket: &str,
        key: &str,
    ) -> Result<feiyun_oss::KeyCheck, String> {
        let caller = self
            .iam
            .principal_caller(principal, "live-migration")
            .ok_or_else(|| format!("{principal} no longer exists"))?;
        let oss = self.oss.upgrade().ok_or("the region is stopping")?;
        let authorize = feiyun_s3api::Authorize::new(self.iam.clone(), oss, self.buckets.clone());
        let grant = authorize
            .object_grant(caller, action, bucket, key, None)
            .await?;
        Ok(grant.key_check())
    }
}

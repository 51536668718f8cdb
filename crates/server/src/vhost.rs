//! Virtual-hosted-style addressing: which host names name a bucket.

use crate::ServerError;

/// Virtual-hosted-style addressing: `BUCKET.DOMAIN[:port]` for a configured `DOMAIN` names a
/// bucket; every other host (an IP, the bare domain, an unknown name) is path-style. Unlike a
/// catch-all, an unconfigured DNS name never turns into a bucket name.
pub(crate) struct VirtualHosts {
    domains: Vec<String>,
}

impl VirtualHosts {
    pub(crate) fn new(domains: &[String]) -> Result<Self, ServerError> {
        for d in domains {
            if d.is_empty() || d.contains(':') || d.starts_with('.') {
                return Err(ServerError::Domain(d.clone()));
            }
        }
        Ok(Self {
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        })
    }

    pub(crate) fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        if host.starts_with('[') {
            return None; // An IPv6 literal never names a bucket.
        }
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        self.domains.iter().find_map(|d| {
            let bucket = name.strip_suffix(d.as_str())?.strip_suffix('.')?;
            (!bucket.is_empty()).then_some(bucket)
        })
    }
}

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let vh = s3s::host::VirtualHost::new(host);
        Ok(match self.bucket_of(host) {
            Some(bucket) => vh.with_bucket(bucket),
            None => vh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_host_table() {
        let v = VirtualHosts::new(&["localhost".into(), "s3.example.com".into()]).unwrap();
        let rows: &[(&str, Option<&str>)] = &[
            ("localhost:9000", None),
            ("localhost", None),
            ("127.0.0.1:9000", None),
            ("[::1]:9000", None),
            ("my-bucket.localhost:9000", Some("my-bucket")),
            ("a.b.s3.example.com", Some("a.b")),
            ("other.example.org", None),
            (".localhost", None),
        ];
        for (host, bucket) in rows {
            assert_eq!(v.bucket_of(host), *bucket, "{host}");
        }
    }
}

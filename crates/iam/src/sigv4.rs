//! Verifying AWS Signature Version 4 for the query APIs (IAM, STS) that share the S3
//! listener. S3 requests are verified by `s3s`; these services sign form bodies with their own
//! credential scope, which `s3s` does not accept.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Requests older or newer than this are refused, as AWS does.
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    pub access_key: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    #[error(
        "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters"
    )]
    Incomplete,
    #[error("Request is missing the X-Amz-Date header or it is not a valid date")]
    BadDate,
    #[error(
        "Signature expired: the request time is more than 15 minutes away from the server's time"
    )]
    Expired,
    #[error("The request signature we calculated does not match the signature you provided.")]
    Mismatch,
}

/// Parses the Authorization header; `None` when it is not SigV4 at all.
pub fn parse_authorization(value: &str) -> Option<Result<SignedRequest<'_>, SigError>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256")?;
    Some(parse_fields(rest))
}

fn parse_fields(rest: &str) -> Result<SignedRequest<'_>, SigError> {
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            cred = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            sig = Some(v);
        }
    }
    let (Some(cred), Some(signed), Some(signature)) = (cred, signed, sig) else {
        return Err(SigError::Incomplete);
    };
    let mut c = cred.split('/');
    let (Some(access_key), Some(date), Some(region), Some(service), Some("aws4_request"), None) =
        (c.next(), c.next(), c.next(), c.next(), c.next(), c.next())
    else {
        return Err(SigError::Incomplete);
    };
    Ok(SignedRequest {
        access_key,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// Everything needed to recompute the signature.
pub struct CanonicalInput<'a> {
    pub method: &'a str,
    /// The path as sent (already URI-encoded).
    pub path: &'a str,
    pub query: &'a str,
    /// Lowercase name → value, for every header of the request.
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub payload_sha256: String,
}

/// Checks the signature with `secret`, and the request time against `now_unix`.
pub fn verify(
    signed: &SignedRequest,
    input: &CanonicalInput,
    secret: &str,
    now_unix: i64,
) -> Result<(), SigError> {
    let amz_date = (input.header)("x-amz-date").ok_or(SigError::BadDate)?;
    let t = parse_amz_date(&amz_date).ok_or(SigError::BadDate)?;
    if (now_unix - t).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(SigError::Expired);
    }
    if !amz_date.starts_with(signed.date) {
        return Err(SigError::Mismatch);
    }
    let mut canonical_headers = String::new();
    for h in &signed.signed_headers {
        let v = (input.header)(h).unwrap_or_default();
        canonical_headers.push_str(h);
        canonical_headers.push(':');
        canonical_headers.push_str(&collapse_spaces(v.trim()));
        canonical_headers.push('\n');
    }
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method,
        if input.path.is_empty() {
            "/"
        } else {
            input.path
        },
        canonical_query(input.query),
        canonical_headers,
        signed.signed_headers.join(";"),
        input.payload_sha256
    );
    let expected = signature(secret, &amz_date, signed.region, signed.service, &canonical);
    if constant_time_eq(expected.as_bytes(), signed.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigError::Mismatch)
    }
}

/// The signature of a canonical request made at `amz_date` (`YYYYMMDDTHHMMSSZ`).
fn signature(secret: &str, amz_date: &str, region: &str, service: &str, canonical: &str) -> String {
    let date = amz_date.get(..8).unwrap_or_default();
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(secret, date, region, service);
    hex::encode(hmac(&key, to_sign.as_bytes()))
}

/// Derived signing keys by secret, day, region and service. The derivation is four of a
/// request's five HMACs, and one credential signs (or is checked on) every request of a
/// client or peer for a whole day.
type KeyCache = std::collections::HashMap<(String, String, String, String), Vec<u8>>;
static SIGNING_KEYS: std::sync::Mutex<Option<KeyCache>> = std::sync::Mutex::new(None);
/// Beyond this many the cache starts over: a day's keys are few, and many means churn.
const SIGNING_KEYS_KEPT: usize = 1024;

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let id = (
        secret.to_owned(),
        date.to_owned(),
        region.to_owned(),
        service.to_owned(),
    );
    let mut cache = match SIGNING_KEYS.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let cache = cache.get_or_insert_with(Default::default);
    if let Some(k) = cache.get(&id) {
        return k.clone();
    }
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    if cache.len() >= SIGNING_KEYS_KEPT {
        cache.clear();
    }
    cache.insert(id, key.clone());
    key
}

/// Credentials and scope for signing outbound requests (replication to a peer region).
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub service: String,
}

impl Signer {
    /// The `authorization` header for a request. `path` is the URI-encoded path as sent,
    /// `query` the encoded query string as sent; `headers` are every header to sign
    /// (lowercase names, `host`, `x-amz-date` and `x-amz-content-sha256` included), and the
    /// payload hash is the value of `x-amz-content-sha256`.
    pub fn authorization(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, String)],
        payload_sha256: &str,
        amz_date: &str,
    ) -> String {
        let mut sorted: Vec<(&str, String)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), collapse_spaces(v.trim())))
            .collect();
        sorted.sort();
        let canonical_headers: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed: Vec<&str> = sorted.iter().map(|(k, _)| *k).collect();
        let signed = signed.join(";");
        let canonical = format!(
            "{method}\n{path}\n{}\n{canonical_headers}\n{signed}\n{payload_sha256}",
            canonical_query(query)
        );
        let sig = signature(
            &self.secret_key,
            amz_date,
            &self.region,
            &self.service,
            &canonical,
        );
        let date = amz_date.get(..8).unwrap_or_default();
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{date}/{}/{}/aws4_request, SignedHeaders={signed}, Signature={sig}",
            self.access_key, self.region, self.service
        )
    }
}

/// `YYYYMMDDTHHMMSSZ` now.
pub fn amz_date_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Compares without an early exit, so timing does not reveal how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_amz_date(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

fn collapse_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c == ' ' {
            if !space {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    out
}

fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 encoding as SigV4 wants it: everything but unreserved characters.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (and nothing else); invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC-SHA256 accepts keys of any length.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("hmac takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IAM ListUsers example from the SigV4 documentation (2015-08-30).
    #[test]
    fn aws_documented_iam_example() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        let signed = parse_authorization(auth).unwrap().unwrap();
        assert_eq!(signed.service, "iam");
        let headers = |h: &str| -> Option<String> {
            match h {
                "content-type" => Some("application/x-www-form-urlencoded; charset=utf-8".into()),
                "host" => Some("iam.amazonaws.com".into()),
                "x-amz-date" => Some("20150830T123600Z".into()),
                _ => None,
            }
        };
        let input = CanonicalInput {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            header: &headers,
            payload_sha256: hex::encode(Sha256::digest(b"")),
        };
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let now = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(verify(&signed, &input, secret, now), Ok(()));
        assert_eq!(
            verify(&signed, &input, "wrong", now),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(&signed, &input, secret, now + 3600),
            Err(SigError::Expired)
        );
    }

    /// The signer reproduces the documented example's Authorization header exactly.
    #[test]
    fn signer_matches_the_documented_iam_example() {
        let signer = Signer {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            service: "iam".into(),
        };
        let headers = vec![
            (
                "content-type".to_owned(),
                "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
            ),
            ("host".to_owned(), "iam.amazonaws.com".to_owned()),
            ("x-amz-date".to_owned(), "20150830T123600Z".to_owned()),
        ];
        let auth = signer.authorization(
            "GET",
            "/",
            "Version=2010-05-08&Action=ListUsers",
            &headers,
            &hex::encode(Sha256::digest(b"")),
            "20150830T123600Z",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn incomplete_headers() {
        assert_eq!(
            parse_authorization(
                "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/iam/aws4_request"
            ),
            Some(Err(SigError::Incomplete))
        );
        assert!(parse_authorization("Bearer x").is_none());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}

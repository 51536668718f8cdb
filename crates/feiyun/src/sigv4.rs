//! A small AWS Signature V4 signer for the load generator and the raw-HTTP tests, which need
//! to send exactly the bytes they choose (including malformed ones) with a valid signature.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

pub const UNSIGNED: &str = "UNSIGNED-PAYLOAD";

#[derive(Clone)]
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl Signer {
    /// Returns the headers to add (`x-amz-date`, `x-amz-content-sha256`, `authorization`).
    /// `path` must already be URI-encoded as sent; `query` is the raw query string.
    /// `headers` are the other signed headers (lowercase names), `host` included.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        payload_sha256: &str,
        amz_date: &str,
    ) -> Vec<(String, String)> {
        self.sign_as("s3", method, path, query, headers, payload_sha256, amz_date)
    }

    /// Signs for another service sharing the endpoint (`iam`, `sts`).
    #[allow(clippy::too_many_arguments)]
    pub fn sign_as(
        &self,
        service: &str,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        payload_sha256: &str,
        amz_date: &str,
    ) -> Vec<(String, String)> {
        let date = &amz_date[..8];
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        all.push(("x-amz-date".into(), amz_date.to_owned()));
        all.push(("x-amz-content-sha256".into(), payload_sha256.to_owned()));
        all.sort();
        let canonical_headers: String = all.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let canonical_query = canonical_query(query);
        let canonical = format!(
            "{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload_sha256}"
        );
        let scope = format!("{date}/{}/{service}/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let key = self.signing_key(date, service);
        let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        vec![
            ("x-amz-date".into(), amz_date.to_owned()),
            ("x-amz-content-sha256".into(), payload_sha256.to_owned()),
            (
                "authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                    self.access_key
                ),
            ),
        ]
    }
}

impl Signer {
    /// The query string of a presigned request (`query`, then the `X-Amz-*` parameters and
    /// the signature), valid for `expires` seconds from `amz_date`. `headers` are the
    /// signed headers, `host` included; the payload is `UNSIGNED-PAYLOAD`.
    // The raw-HTTP tests include this file without presigning.
    #[allow(dead_code)]
    pub fn presign(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        expires: u32,
        amz_date: &str,
    ) -> String {
        let date = &amz_date[..8];
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        all.sort();
        let canonical_headers: String = all.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed = all
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let mut q = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}%2F{}&X-Amz-Date={amz_date}\
             &X-Amz-Expires={expires}&X-Amz-SignedHeaders={}",
            self.access_key,
            scope.replace('/', "%2F"),
            signed.replace(';', "%3B")
        );
        if !query.is_empty() {
            q = format!("{query}&{q}");
        }
        let canonical = format!(
            "{method}\n{path}\n{}\n{canonical_headers}\n{signed}\n{UNSIGNED}",
            canonical_query(&q)
        );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let signature = hex::encode(hmac(&self.signing_key(date, "s3"), to_sign.as_bytes()));
        format!("{q}&X-Amz-Signature={signature}")
    }

    fn signing_key(&self, date: &str, service: &str) -> Vec<u8> {
        let mut key = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [self.region.as_bytes(), service.as_bytes(), b"aws4_request"] {
            key = hmac(&key, part);
        }
        key
    }

    /// Signs one chunk of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` body, chained to the
    /// previous signature (the request's own signature for the first chunk).
    // Used by the raw-HTTP tests, which include this file.
    #[allow(dead_code)]
    pub fn chunk_signature(&self, amz_date: &str, previous: &str, chunk: &[u8]) -> String {
        let date = &amz_date[..8];
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{}\n{}",
            hex::encode(Sha256::digest(b"")),
            hex::encode(Sha256::digest(chunk))
        );
        hex::encode(hmac(&self.signing_key(date, "s3"), to_sign.as_bytes()))
    }
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time.
pub fn amz_date(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
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

pub fn now_amz_date() -> String {
    amz_date(time::OffsetDateTime::now_utc().unix_timestamp())
}

// Used by the raw-HTTP tests, which include this file.
#[allow(dead_code)]
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("hmac key");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.to_owned(), String::new()),
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_documented_get_object_example() {
        // The GET Object example from the SigV4 documentation for S3 (examplebucket, 2013).
        let s = Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        };
        let h = s.sign(
            "GET",
            "/test.txt",
            "",
            &[
                ("host", "examplebucket.s3.amazonaws.com".into()),
                ("range", "bytes=0-9".into()),
            ],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "20130524T000000Z",
        );
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(
            auth.ends_with(
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
            "{auth}"
        );
    }

    #[test]
    fn aws_documented_presigned_url_example() {
        // The presigned GET example from the S3 SigV4 query-string documentation.
        let s = Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        };
        let q = s.presign(
            "GET",
            "/test.txt",
            "",
            &[("host", "examplebucket.s3.amazonaws.com".into())],
            86400,
            "20130524T000000Z",
        );
        assert!(
            q.ends_with(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{q}"
        );
        assert!(q.starts_with(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&"
        ));
    }
}

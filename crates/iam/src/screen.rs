//! What a signed request must show before any secret is looked up: the one place that
//! decides which signing schemes the region accepts and what a signature has to cover.
//!
//! Every listener path (S3, the IAM/STS/KMS query APIs, Function Compute, replication)
//! screens its requests here, so the rules cannot drift apart:
//!
//! - Signature Version 2 is refused (no date, no body coverage, replayable forever).
//! - Every `x-amz-*` and `x-feiyun-*` header present is named in the signed headers, so an
//!   intermediary cannot add a copy source, an Object Lock setting or a replica marker to a
//!   request someone else signed. `host` is always signed.
//! - The credential scope names this region and a service the endpoint serves, so a request
//!   captured at another region (regions of a site share credentials) does not replay here.
//! - A presigned URL lives at most [`MAX_PRESIGNED_EXPIRES_SECS`] (seven days, as in S3).

/// The longest `X-Amz-Expires` S3 accepts.
pub const MAX_PRESIGNED_EXPIRES_SECS: u64 = 7 * 24 * 3600;

/// Headers exempt from the signed-headers rule because they carry their own proof: the
/// relay mark of a peer region and the mark on a function's call to its region are MACs of
/// their own, added after the request was signed (`iam::relay`, `fc::outbound`).
const SELF_AUTHENTICATED: &[&str] = &["x-feiyun-forwarded", "x-feiyun-function-call"];

/// How the request was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// No signature: an anonymous request.
    Anonymous,
    /// `Authorization: AWS4-HMAC-SHA256 …` (S3's `REST-HEADER`).
    Header,
    /// `X-Amz-Signature` in the query (S3's `REST-QUERY-STRING`).
    Presigned,
}

impl AuthKind {
    /// The value of `s3:authType`, absent for anonymous requests.
    pub fn s3_auth_type(self) -> Option<&'static str> {
        match self {
            AuthKind::Anonymous => None,
            AuthKind::Header => Some("REST-HEADER"),
            AuthKind::Presigned => Some("REST-QUERY-STRING"),
        }
    }
}

/// What the endpoint a request reached accepts.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The region's own name.
    pub region: &'a str,
    /// Scope services this endpoint serves (`s3`; `iam`, `sts`; `kms`; `fc`; …).
    pub services: &'a [&'a str],
    /// Also accept `us-east-1` in the scope: IAM is global in AWS and clients sign it there.
    pub global: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScreenError {
    #[error(
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
    )]
    SignatureV2,
    #[error("There were headers present in the request which were not signed: {0}")]
    HeadersNotSigned(String),
    #[error("the region '{got}' is wrong; expecting '{want}'")]
    WrongRegion { got: String, want: String },
    #[error("incorrect service '{got}'; this endpoint belongs to '{want}'")]
    WrongService { got: String, want: String },
    #[error("X-Amz-Expires must be less than a week (in seconds) that is 604800")]
    ExpiresTooLong,
    #[error("X-Amz-Expires should be a number")]
    BadExpires,
    #[error("{0}")]
    Malformed(&'static str),
}

/// The request as screening sees it.
pub struct Shape<'a> {
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The raw query string.
    pub query: &'a str,
    /// Every header name present, lowercase.
    pub header_names: &'a [&'a str],
}

/// Screens a request; returns how it is signed. `Err` names the first rule it breaks.
pub fn screen(shape: &Shape, expect: &Expect) -> Result<AuthKind, ScreenError> {
    let presigned_v4 = query_param(shape.query, "X-Amz-Signature").is_some();
    let presigned_v2 = !presigned_v4
        && query_param(shape.query, "Signature").is_some()
        && query_param(shape.query, "AWSAccessKeyId").is_some();
    if presigned_v2 {
        return Err(ScreenError::SignatureV2);
    }
    if let Some(auth) = shape.authorization {
        // "AWS AKID:signature" is V2; "AWS4-HMAC-SHA256 …" is V4.
        if auth.starts_with("AWS ") {
            return Err(ScreenError::SignatureV2);
        }
        if presigned_v4 {
            return Err(ScreenError::Malformed(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
            ));
        }
        let signed = match crate::sigv4::parse_authorization(auth) {
            Some(Ok(s)) => s,
            Some(Err(_)) => {
                return Err(ScreenError::Malformed(
                    "The authorization header is malformed",
                ));
            }
            // Another scheme (say ECDSA): the verifier refuses it with its own error.
            None => return Ok(AuthKind::Header),
        };
        check_scope(signed.region, signed.service, expect)?;
        check_signed_headers(&signed.signed_headers, shape.header_names)?;
        return Ok(AuthKind::Header);
    }
    if !presigned_v4 {
        return Ok(AuthKind::Anonymous);
    }
    let credential = query_param(shape.query, "X-Amz-Credential")
        .map(crate::sigv4::percent_decode)
        .ok_or(ScreenError::Malformed(
            "Query-string authentication requires the X-Amz-Credential parameter",
        ))?;
    let mut parts = credential.split('/');
    let (Some(_key), Some(_date), Some(region), Some(service), Some("aws4_request"), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(ScreenError::Malformed(
            "Error parsing the X-Amz-Credential parameter",
        ));
    };
    check_scope(region, service, expect)?;
    let expires = query_param(shape.query, "X-Amz-Expires").ok_or(ScreenError::Malformed(
        "Query-string authentication requires the X-Amz-Expires parameter",
    ))?;
    let expires: u64 = expires.parse().map_err(|_| ScreenError::BadExpires)?;
    if expires > MAX_PRESIGNED_EXPIRES_SECS {
        return Err(ScreenError::ExpiresTooLong);
    }
    let signed = query_param(shape.query, "X-Amz-SignedHeaders")
        .map(crate::sigv4::percent_decode)
        .ok_or(ScreenError::Malformed(
            "Query-string authentication requires the X-Amz-SignedHeaders parameter",
        ))?;
    let signed: Vec<&str> = signed.split(';').collect();
    check_signed_headers(&signed, shape.header_names)?;
    Ok(AuthKind::Presigned)
}

fn check_scope(region: &str, service: &str, expect: &Expect) -> Result<(), ScreenError> {
    if !expect.services.contains(&service) {
        return Err(ScreenError::WrongService {
            got: service.to_owned(),
            want: expect.services.first().copied().unwrap_or("s3").to_owned(),
        });
    }
    if region != expect.region && !(expect.global && region == "us-east-1") {
        return Err(ScreenError::WrongRegion {
            got: region.to_owned(),
            want: expect.region.to_owned(),
        });
    }
    Ok(())
}

fn check_signed_headers(signed: &[&str], present: &[&str]) -> Result<(), ScreenError> {
    let is_signed = |name: &str| signed.iter().any(|s| s.eq_ignore_ascii_case(name));
    if !is_signed("host") {
        return Err(ScreenError::HeadersNotSigned("host".into()));
    }
    let unsigned: Vec<&str> = present
        .iter()
        .copied()
        .filter(|h| h.starts_with("x-amz-") || h.starts_with("x-feiyun-"))
        .filter(|h| !SELF_AUTHENTICATED.contains(h))
        .filter(|h| !is_signed(h))
        .collect();
    if unsigned.is_empty() {
        Ok(())
    } else {
        Err(ScreenError::HeadersNotSigned(unsigned.join(",")))
    }
}

/// A query parameter's raw (still encoded) value.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3: Expect = Expect {
        region: "eu-1",
        services: &["s3"],
        global: false,
    };

    fn header_auth(signed: &str, region: &str, service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20261201/{region}/{service}/aws4_request, SignedHeaders={signed}, Signature=00"
        )
    }

    #[test]
    fn screening_table() {
        let ok_auth = header_auth("host;x-amz-content-sha256;x-amz-date", "eu-1", "s3");
        let presigned = |expires: &str, region: &str, signed: &str| {
            format!(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261201%2F{region}%2Fs3%2Faws4_request&X-Amz-Date=20261201T000000Z&X-Amz-Expires={expires}&X-Amz-SignedHeaders={signed}&X-Amz-Signature=00"
            )
        };
        let base = ["host", "x-amz-content-sha256", "x-amz-date"];
        let with_copy = [
            "host",
            "x-amz-content-sha256",
            "x-amz-date",
            "x-amz-copy-source",
        ];
        let replica = [
            "host",
            "x-amz-date",
            "x-amz-content-sha256",
            "x-feiyun-replica-version-id",
        ];
        let forwarded = [
            "host",
            "x-amz-content-sha256",
            "x-amz-date",
            "x-feiyun-forwarded",
        ];
        let wrong_region = header_auth("host;x-amz-content-sha256;x-amz-date", "us-east-1", "s3");
        let wrong_service = header_auth("host;x-amz-content-sha256;x-amz-date", "eu-1", "iam");
        let no_host = header_auth("x-amz-content-sha256;x-amz-date", "eu-1", "s3");
        // (Authorization, query, header names present, verdict)
        type Row<'a> = (
            Option<&'a str>,
            String,
            &'a [&'a str],
            Result<AuthKind, ScreenError>,
        );
        let rows: Vec<Row> = vec![
            (None, String::new(), &["host"], Ok(AuthKind::Anonymous)),
            (Some(&ok_auth), String::new(), &base, Ok(AuthKind::Header)),
            // Added after signing: refused.
            (
                Some(&ok_auth),
                String::new(),
                &with_copy,
                Err(ScreenError::HeadersNotSigned("x-amz-copy-source".into())),
            ),
            (
                Some(&ok_auth),
                String::new(),
                &replica,
                Err(ScreenError::HeadersNotSigned(
                    "x-feiyun-replica-version-id".into(),
                )),
            ),
            // The relay marker proves itself.
            (
                Some(&ok_auth),
                String::new(),
                &forwarded,
                Ok(AuthKind::Header),
            ),
            (
                Some(&no_host),
                String::new(),
                &base,
                Err(ScreenError::HeadersNotSigned("host".into())),
            ),
            (
                Some(&wrong_region),
                String::new(),
                &base,
                Err(ScreenError::WrongRegion {
                    got: "us-east-1".into(),
                    want: "eu-1".into(),
                }),
            ),
            (
                Some(&wrong_service),
                String::new(),
                &base,
                Err(ScreenError::WrongService {
                    got: "iam".into(),
                    want: "s3".into(),
                }),
            ),
            (
                Some("AWS AKID:c2lnbmF0dXJl"),
                String::new(),
                &["host", "date"],
                Err(ScreenError::SignatureV2),
            ),
            (
                None,
                "AWSAccessKeyId=AKID&Expires=9999999999&Signature=abc".into(),
                &["host"],
                Err(ScreenError::SignatureV2),
            ),
            (
                None,
                presigned("604800", "eu-1", "host"),
                &["host"],
                Ok(AuthKind::Presigned),
            ),
            (
                None,
                presigned("604801", "eu-1", "host"),
                &["host"],
                Err(ScreenError::ExpiresTooLong),
            ),
            (
                None,
                presigned("4294967295", "eu-1", "host"),
                &["host"],
                Err(ScreenError::ExpiresTooLong),
            ),
            (
                None,
                presigned("soon", "eu-1", "host"),
                &["host"],
                Err(ScreenError::BadExpires),
            ),
            (
                None,
                presigned("60", "ap-2", "host"),
                &["host"],
                Err(ScreenError::WrongRegion {
                    got: "ap-2".into(),
                    want: "eu-1".into(),
                }),
            ),
            (
                None,
                presigned("60", "eu-1", "host"),
                &["host", "x-amz-copy-source"],
                Err(ScreenError::HeadersNotSigned("x-amz-copy-source".into())),
            ),
            (
                None,
                presigned("60", "eu-1", "host%3Bx-amz-copy-source"),
                &["host", "x-amz-copy-source"],
                Ok(AuthKind::Presigned),
            ),
        ];
        for (auth, query, names, want) in rows {
            let got = screen(
                &Shape {
                    authorization: auth,
                    query: &query,
                    header_names: names,
                },
                &S3,
            );
            assert_eq!(got, want, "{auth:?} {query} {names:?}");
        }
    }

    #[test]
    fn iam_also_accepts_the_global_region() {
        let iam = Expect {
            region: "eu-1",
            services: &["iam", "sts"],
            global: true,
        };
        let auth = header_auth("host;x-amz-date", "us-east-1", "iam");
        let shape = Shape {
            authorization: Some(&auth),
            query: "",
            header_names: &["host", "x-amz-date"],
        };
        assert_eq!(screen(&shape, &iam), Ok(AuthKind::Header));
        let other = header_auth("host;x-amz-date", "ap-2", "sts");
        let shape = Shape {
            authorization: Some(&other),
            ..shape
        };
        assert!(matches!(
            screen(&shape, &iam),
            Err(ScreenError::WrongRegion { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The bounded, always-on part of fuzzing the request edge (the open-ended part is
        /// `fuzz/`, under cargo-fuzz): arbitrary headers and queries never panic screening
        /// or the parsers behind it.
        #[test]
        fn arbitrary_requests_never_panic(
            auth in proptest::option::of("(AWS4-HMAC-SHA256 |AWS )?[ -~]{0,120}"),
            query in "[ -~]{0,160}",
            names in proptest::collection::vec("(x-amz-|x-feiyun-)?[a-z-]{0,12}", 0..6),
        ) {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let shape = Shape { authorization: auth.as_deref(), query: &query, header_names: &names };
            let expect = Expect { region: "us-east-1", services: &["s3"], global: false };
            let _ = screen(&shape, &expect);
            let _ = crate::relay::RelayMark::parse(&query);
            if let Some(a) = &auth {
                let _ = crate::sigv4::parse_authorization(a);
            }
        }
    }
}

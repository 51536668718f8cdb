//! OpenID Connect web identities for AssumeRoleWithWebIdentity: the configured issuer's
//! signing keys (a JWKS document from a file or an `http(s)://` URL, reloaded when a token names
//! a key it has not seen, at most once a minute) and the checks a JWT must pass — signature
//! (RS256 or ES256, by aws-lc-rs), issuer, audience, expiry and not-before.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use serde_json::Value;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: i64 = 60;
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Largest token and JWKS document accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
const MAX_JWKS_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OidcError {
    #[error("{0}")]
    InvalidToken(String),
    #[error("Token is expired")]
    Expired,
    #[error("{0}")]
    Rejected(String),
    #[error("cannot load the identity provider's keys: {0}")]
    Keys(String),
}

#[derive(Debug, Clone)]
enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { point: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: Key,
}

/// A verified token's claims.
#[derive(Debug, Clone)]
pub struct Claims {
    pub sub: String,
    pub aud: Vec<String>,
    pub amr: Vec<String>,
}

pub struct Oidc {
    issuer: String,
    audiences: Vec<String>,
    source: String,
    keys: RwLock<(Vec<Jwk>, Option<Instant>)>,
    reload_every: Duration,
    /// CAs for an https JWKS URL; `None` means the system's (`SSL_CERT_FILE` honoured).
    roots: Option<Arc<rustls::RootCertStore>>,
}

fn b64url(s: &str) -> Result<Vec<u8>, OidcError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| OidcError::InvalidToken("the token is not base64url".into()))
}

impl Oidc {
    /// `source` is a JWKS file path or an `http://` or `https://` URL.
    pub fn new(issuer: &str, source: &str, audiences: Vec<String>) -> Result<Self, OidcError> {
        Self::with_roots(issuer, source, audiences, None)
    }

    fn with_roots(
        issuer: &str,
        source: &str,
        audiences: Vec<String>,
        roots: Option<Arc<rustls::RootCertStore>>,
    ) -> Result<Self, OidcError> {
        let o = Oidc {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audiences,
            source: source.to_owned(),
            keys: RwLock::new((Vec::new(), None)),
            reload_every: RELOAD_AT_MOST_EVERY,
            roots,
        };
        o.reload()?;
        Ok(o)
    }

    /// The provider's name in ARNs and condition keys: the issuer without its scheme.
    pub fn provider(&self) -> &str {
        self.issuer
            .strip_prefix("https://")
            .or_else(|| self.issuer.strip_prefix("http://"))
            .unwrap_or(&self.issuer)
    }

    pub fn provider_arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:oidc-provider/{}", self.provider())
    }

    fn reload(&self) -> Result<(), OidcError> {
        let text = if let Some(rest) = self.source.strip_prefix("http://") {
            http_get(rest, None)?
        } else if let Some(rest) = self.source.strip_prefix("https://") {
            let roots = match &self.roots {
                Some(r) => r.clone(),
                None => Arc::new(system_roots()),
            };
            http_get(rest, Some(roots))?
        } else {
            std::fs::read_to_string(&self.source)
                .map_err(|e| OidcError::Keys(format!("{}: {e}", self.source)))?
        };
        let keys = parse_jwks(&text)?;
        if let Ok(mut g) = self.keys.write() {
            *g = (keys, Some(Instant::now()));
        }
        Ok(())
    }

    /// Verifies a JWT and returns its claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, OidcError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(OidcError::InvalidToken("the token is too large".into()));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OidcError::InvalidToken(
                "a JWT has three dot-separated parts".into(),
            ));
        };
        let header: Value = serde_json::from_slice(&b64url(h)?)
            .map_err(|_| OidcError::InvalidToken("the token header is not JSON".into()))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
        let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
        let signature = b64url(sig)?;
        let mut verified = self.check_signature(alg, kid.as_deref(), signing_input, &signature)?;
        if !verified {
            // A key rotation at the issuer: look again, at most once a minute.
            let stale = self
                .keys
                .read()
                .ok()
                .and_then(|g| g.1)
                .is_none_or(|t| t.elapsed() >= self.reload_every);
            if stale {
                self.reload()?;
                verified = self.check_signature(alg, kid.as_deref(), signing_input, &signature)?;
            }
        }
        if !verified {
            return Err(OidcError::InvalidToken(
                "the token's signature does not verify with the issuer's keys".into(),
            ));
        }
        let claims: Value = serde_json::from_slice(&b64url(p)?)
            .map_err(|_| OidcError::InvalidToken("the token payload is not JSON".into()))?;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss.trim_end_matches('/') != self.issuer {
            return Err(OidcError::Rejected(format!(
                "the token's issuer {iss:?} is not the configured provider"
            )));
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| OidcError::InvalidToken("the token has no exp".into()))?;
        if now > exp + LEEWAY_SECS {
            return Err(OidcError::Expired);
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
            && now + LEEWAY_SECS < nbf
        {
            return Err(OidcError::InvalidToken("the token is not valid yet".into()));
        }
        let strings = |v: Option<&Value>| -> Vec<String> {
            match v {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let aud = strings(claims.get("aud"));
        if !self.audiences.is_empty() && !aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(OidcError::Rejected(
                "the token's audience is not an accepted client id".into(),
            ));
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OidcError::InvalidToken("the token has no sub".into()))?
            .to_owned();
        Ok(Claims {
            sub,
            aud,
            amr: strings(claims.get("amr")),
        })
    }

    fn check_signature(
        &self,
        alg: &str,
        kid: Option<&str>,
        input: &[u8],
        sig: &[u8],
    ) -> Result<bool, OidcError> {
        let keys = self.keys.read().map(|g| g.0.clone()).unwrap_or_default();
        let candidates = keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
        for k in candidates {
            let ok = match (alg, &k.key) {
                ("RS256", Key::Rsa { n, e }) => signature::RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, input, sig)
                .is_ok(),
                ("ES256", Key::Ec { point }) => {
                    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(input, sig)
                        .is_ok()
                }
                ("RS256" | "ES256", _) => false,
                _ => {
                    return Err(OidcError::InvalidToken(format!(
                        "unsupported token algorithm {alg:?}; RS256 and ES256 are accepted"
                    )));
                }
            };
            if ok {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn parse_jwks(text: &str) -> Result<Vec<Jwk>, OidcError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| OidcError::Keys(format!("JWKS is not JSON: {e}")))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| OidcError::Keys("JWKS has no keys".into()))?;
    let field = |k: &Value, name: &str| -> Option<Vec<u8>> { b64url(k.get(name)?.as_str()?).ok() };
    let mut out = Vec::new();
    for k in keys {
        let kid = k.get("kid").and_then(Value::as_str).map(str::to_owned);
        let key = match k.get("kty").and_then(Value::as_str) {
            Some("RSA") => match (field(k, "n"), field(k, "e")) {
                (Some(n), Some(e)) => Key::Rsa { n, e },
                _ => continue,
            },
            Some("EC") if k.get("crv").and_then(Value::as_str) == Some("P-256") => {
                match (field(k, "x"), field(k, "y")) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut point = vec![4u8];
                        point.extend_from_slice(&x);
                        point.extend_from_slice(&y);
                        Key::Ec { point }
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        out.push(Jwk { kid, key });
    }
    if out.is_empty() {
        return Err(OidcError::Keys("JWKS holds no RSA or P-256 key".into()));
    }
    Ok(out)
}

fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// A minimal HTTP/1.0 GET for `host[:port]/path`, over TLS when `tls` gives the CAs to trust:
/// enough for a JWKS document, which is small and public.
fn http_get(rest: &str, tls: Option<Arc<rustls::RootCertStore>>) -> Result<String, OidcError> {
    use std::io::{Read, Write};
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let explicit_port = authority.rsplit_once(':').filter(|(h, p)| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (!h.contains(':') || h.ends_with(']'))
    });
    let (host, addr) = match explicit_port {
        Some((h, _)) => (h, authority.to_owned()),
        None => (
            authority,
            format!("{authority}:{}", if tls.is_some() { 443 } else { 80 }),
        ),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let err = |e: std::io::Error| OidcError::Keys(format!("http://{rest}: {e}"));
    // Bounded waits: a token request blocks on this fetch, so a dead issuer must fail fast.
    let wait = Duration::from_secs(5);
    let target = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .map_err(err)?
        .next()
        .ok_or_else(|| OidcError::Keys(format!("http://{rest}: no address")))?;
    let mut s = std::net::TcpStream::connect_timeout(&target, wait).map_err(err)?;
    s.set_read_timeout(Some(wait)).map_err(err)?;
    s.set_write_timeout(Some(wait)).map_err(err)?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n");
    let mut buf = Vec::new();
    match tls {
        None => {
            s.write_all(request.as_bytes()).map_err(err)?;
            s.take(MAX_JWKS_BYTES as u64)
                .read_to_end(&mut buf)
                .map_err(err)?;
        }
        Some(roots) => {
            let keys = |e: &dyn std::fmt::Display| OidcError::Keys(format!("https://{rest}: {e}"));
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| keys(&e))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name =
                rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| keys(&e))?;
            let conn =
                rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| keys(&e))?;
            let mut t = rustls::StreamOwned::new(conn, s);
            t.write_all(request.as_bytes()).map_err(err)?;
            match t.take(MAX_JWKS_BYTES as u64).read_to_end(&mut buf) {
                Ok(_) => {}
                // Servers that close without close_notify: the body is complete for HTTP/1.0
                // once the headers and content arrived; a cut body fails JSON parsing.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
                Err(e) => return Err(err(e)),
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| OidcError::Keys("bad HTTP response".into()))?;
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(OidcError::Keys(format!(
            "http://{rest} answered {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};

    fn enc(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn setup() -> (EcdsaKeyPair, tempfile::TempDir, Oidc) {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": enc(&point[1..33]), "y": enc(&point[33..65])}]});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        let o = Oidc::new(
            "https://idp.example.com",
            path.to_str().unwrap(),
            vec!["app".into()],
        )
        .unwrap();
        (pair, dir, o)
    }

    fn token(pair: &EcdsaKeyPair, claims: Value) -> String {
        let h = enc(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
        let p = enc(claims.to_string().as_bytes());
        let input = format!("{h}.{p}");
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", enc(sig.as_ref()))
    }

    #[test]
    fn es256_tokens_are_checked_claim_by_claim() {
        let (pair, _dir, o) = setup();
        let now = 1_800_000_000;
        let good = serde_json::json!({"iss": "https://idp.example.com", "sub": "u-1", "aud": "app", "exp": now + 600});
        let c = o.verify(&token(&pair, good.clone()), now).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.aud.as_slice()),
            ("u-1", &["app".to_string()][..])
        );
        assert_eq!(
            o.provider_arn("123456789012"),
            "arn:aws:iam::123456789012:oidc-provider/idp.example.com"
        );
        let mut expired = good.clone();
        expired["exp"] = (now - 3600).into();
        assert_eq!(
            o.verify(&token(&pair, expired), now).unwrap_err(),
            OidcError::Expired
        );
        let mut other_aud = good.clone();
        other_aud["aud"] = "someone-else".into();
        assert!(matches!(
            o.verify(&token(&pair, other_aud), now),
            Err(OidcError::Rejected(_))
        ));
        let mut other_iss = good.clone();
        other_iss["iss"] = "https://evil.example.com".into();
        assert!(matches!(
            o.verify(&token(&pair, other_iss), now),
            Err(OidcError::Rejected(_))
        ));
        // A flipped signature byte, or a payload swapped under a valid signature.
        let t = token(&pair, good.clone());
        let mut bytes = t.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(matches!(
            o.verify(&String::from_utf8(bytes).unwrap(), now),
            Err(OidcError::InvalidToken(_))
        ));
        let forged_payload = enc(serde_json::json!({"iss": "https://idp.example.com", "sub": "admin", "aud": "app", "exp": now + 600}).to_string().as_bytes());
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[1] = &forged_payload;
        assert!(matches!(
            o.verify(&parts.join("."), now),
            Err(OidcError::InvalidToken(_))
        ));
        assert!(matches!(
            o.verify("not.a.jwt.at-all", now),
            Err(OidcError::InvalidToken(_))
        ));
        let none_alg = format!(
            "{}.{}.",
            enc(br#"{"alg":"none"}"#),
            enc(good.to_string().as_bytes())
        );
        assert!(o.verify(&none_alg, now).is_err());
    }

    /// A JWKS served over HTTP is fetched at start and again when a token names a new key
    /// (the issuer rotated), but not more often than the reload interval.
    #[test]
    fn jwks_over_http_is_refetched_for_an_unknown_key() {
        use std::io::{BufRead, BufReader, Write};
        let first = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let second = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let jwk = |pair: &EcdsaKeyPair, kid: &str| {
            let point = pair.public_key().as_ref().to_vec();
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid,
                "x": enc(&point[1..33]), "y": enc(&point[33..65])})
        };
        let docs = [
            serde_json::json!({"keys": [jwk(&first, "k1")]}).to_string(),
            serde_json::json!({"keys": [jwk(&first, "k1"), jwk(&second, "k2")]}).to_string(),
        ];
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut paths = Vec::new();
            for doc in docs {
                let (mut conn, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&conn).read_line(&mut line).unwrap();
                paths.push(line.split_whitespace().nth(1).unwrap_or("").to_owned());
                write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{doc}"
                )
                .unwrap();
            }
            paths
        });
        let mut o = Oidc::new(
            "https://idp.example.com",
            &format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
            vec!["app".into()],
        )
        .unwrap();
        o.reload_every = Duration::from_millis(300);
        let now = 1_800_000_000;
        let claims = serde_json::json!({"iss": "https://idp.example.com", "sub": "u", "aud": "app", "exp": now + 600});
        assert!(o.verify(&token(&first, claims.clone()), now).is_ok());
        let h = enc(br#"{"alg":"ES256","kid":"k2"}"#);
        let p = enc(claims.to_string().as_bytes());
        let sig = second
            .sign(&SystemRandom::new(), format!("{h}.{p}").as_bytes())
            .unwrap();
        let rotated = format!("{h}.{p}.{}", enc(sig.as_ref()));
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(o.verify(&rotated, now).map(|c| c.sub), Ok("u".to_string()));
        assert_eq!(
            server.join().unwrap(),
            vec!["/.well-known/jwks.json".to_string(); 2]
        );
        // No third fetch within the interval (the server is gone, so a fetch would fail with
        // a key-source error): a key the issuer never published is just an invalid token.
        let third = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let h = enc(br#"{"alg":"ES256","kid":"k3"}"#);
        let sig = third
            .sign(&SystemRandom::new(), format!("{h}.{p}").as_bytes())
            .unwrap();
        assert!(matches!(
            o.verify(&format!("{h}.{p}.{}", enc(sig.as_ref())), now),
            Err(OidcError::InvalidToken(_))
        ));
    }

    /// An https JWKS URL: the issuer's certificate is checked against the trusted CAs; an
    /// untrusted one is a key-source error, not a silent fallback.
    #[test]
    fn jwks_over_https_checks_the_issuer_certificate() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use std::io::{BufRead, BufReader, Write};
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let doc = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": enc(&point[1..33]), "y": enc(&point[33..65])}]})
        .to_string();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::from(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
                )
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let conn = rustls::ServerConnection::new(server.clone()).unwrap();
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
                let mut line = String::new();
                while tls.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let s = tls.get_mut();
                let _ = write!(s, "HTTP/1.0 200 OK\r\n\r\n{doc}");
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        });
        let url = format!("https://localhost:{port}/jwks");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let o = Oidc::with_roots(
            "https://idp.example.com",
            &url,
            vec!["app".into()],
            Some(Arc::new(roots)),
        )
        .unwrap();
        let now = 1_800_000_000;
        let claims = serde_json::json!({"iss": "https://idp.example.com", "sub": "u", "aud": "app", "exp": now + 600});
        assert_eq!(
            o.verify(&token(&pair, claims), now).map(|c| c.sub),
            Ok("u".to_string())
        );
        // Another CA: the handshake fails and the provider cannot start.
        let other_key = rcgen::KeyPair::generate().unwrap();
        let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let other = other.self_signed(&other_key).unwrap();
        let mut wrong = rustls::RootCertStore::empty();
        wrong.add(other.der().clone()).unwrap();
        assert!(matches!(
            Oidc::with_roots(
                "https://idp.example.com",
                &url,
                vec![],
                Some(Arc::new(wrong))
            ),
            Err(OidcError::Keys(_))
        ));
    }

    /// RFC 7515 appendix A.2: an RS256 JWS and its key.
    #[test]
    fn rfc7515_rs256_example_verifies() {
        let n = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
        let jwks = serde_json::json!({"keys": [{"kty": "RSA", "n": n, "e": "AQAB"}]});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        let o = Oidc::new("joe", path.to_str().unwrap(), vec![]).unwrap();
        let jws = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
        // The example token has no sub and expired in 2011: signature checks, claims do not.
        assert!(
            matches!(o.verify(jws, 1_300_000_000), Err(OidcError::InvalidToken(m)) if m.contains("sub"))
        );
    }
}

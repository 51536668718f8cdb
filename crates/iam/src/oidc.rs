//! OpenID Connect web identities for AssumeRoleWithWebIdentity: the configured issuer's
//! signing keys and the checks a JWT must pass — signature (RS256 or ES256, by aws-lc-rs),
//! issuer, audience (at least one accepted client id is required), expiry and not-before.
//!
//! Verification is pure computation and never waits on the network. The keys (a JWKS
//! document from a file or an `http(s)://` URL) are loaded by the server's refresher in the
//! background ([`Oidc::install`]): periodically, and early when a token names a key not seen
//! yet ([`Oidc::want_refresh`], at most once a minute), so an issuer's key rotation is picked
//! up while a trickling or dead issuer delays no request.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use serde_json::Value;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: i64 = 60;
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Largest token and JWKS document accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

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
    /// The token names a key the region has not loaded (yet): worth a refresh and a retry.
    #[error("the token is signed with a key the region does not hold (yet)")]
    UnknownKey,
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
    /// Wakes the refresher early (a token named an unknown key).
    wanted: tokio::sync::Notify,
    /// Told when new keys are installed.
    installed: tokio::sync::Notify,
}

fn b64url(s: &str) -> Result<Vec<u8>, OidcError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| OidcError::InvalidToken("the token is not base64url".into()))
}

impl Oidc {
    /// `source` is a JWKS file path (read now) or an `http://` or `https://` URL (fetched by
    /// the server's refresher). `audiences` are the accepted client ids: one at least, or
    /// tokens minted for any client of the issuer would pass.
    pub fn new(issuer: &str, source: &str, audiences: Vec<String>) -> Result<Self, OidcError> {
        if audiences.iter().all(|a| a.trim().is_empty()) {
            return Err(OidcError::Keys(
                "oidc_audiences (FEIYUN_OIDC_AUDIENCES) must name the accepted client ids".into(),
            ));
        }
        let o = Oidc {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audiences,
            source: source.to_owned(),
            keys: RwLock::new((Vec::new(), None)),
            reload_every: RELOAD_AT_MOST_EVERY,
            wanted: tokio::sync::Notify::new(),
            installed: tokio::sync::Notify::new(),
        };
        if o.url().is_none() {
            let text = std::fs::read_to_string(&o.source)
                .map_err(|e| OidcError::Keys(format!("{}: {e}", o.source)))?;
            o.install(&text)?;
        }
        Ok(o)
    }

    /// The JWKS URL, when the keys come from one.
    pub fn url(&self) -> Option<&str> {
        (self.source.starts_with("http://") || self.source.starts_with("https://"))
            .then_some(self.source.as_str())
    }

    /// The JWKS file, when the keys come from one.
    pub fn file(&self) -> Option<&str> {
        self.url().is_none().then_some(self.source.as_str())
    }

    /// Replaces the keys with those of a JWKS document.
    pub fn install(&self, jwks: &str) -> Result<(), OidcError> {
        let keys = parse_jwks(jwks)?;
        if let Ok(mut g) = self.keys.write() {
            *g = (keys, Some(Instant::now()));
        }
        self.installed.notify_waiters();
        Ok(())
    }

    /// Asks the refresher for the keys again, unless it loaded them within the last minute
    /// (a stream of tokens with made-up key ids must not turn into a stream of fetches).
    /// Returns whether a refresh was asked for.
    pub fn want_refresh(&self) -> bool {
        let stale = self
            .keys
            .read()
            .ok()
            .and_then(|g| g.1)
            .is_none_or(|t| t.elapsed() >= self.reload_every);
        if stale {
            self.wanted.notify_one();
        }
        stale
    }

    /// Resolves when a refresh is wanted (for the refresher).
    pub async fn refresh_wanted(&self) {
        self.wanted.notified().await
    }

    /// Waits (at most `limit`) for the next installed keys.
    pub async fn wait_installed(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.installed.notified()).await;
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
        let verified = self.check_signature(alg, kid.as_deref(), signing_input, &signature)?;
        if !verified && !self.knows(kid.as_deref()) {
            // A key rotation at the issuer, perhaps: the caller may refresh and retry.
            return Err(OidcError::UnknownKey);
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
        if !aud.iter().any(|a| self.audiences.contains(a)) {
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

    /// Whether a key with this id (any key, for a token naming none) is loaded.
    fn knows(&self, kid: Option<&str>) -> bool {
        self.keys
            .read()
            .map(|g| g.0.iter().any(|k| kid.is_none() || k.kid.as_deref() == kid))
            .unwrap_or(false)
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
    /// A token signed with a key not loaded yet asks for a refresh (at most once a minute)
    /// and verifies once the refresher installs the issuer's new document.
    #[tokio::test]
    async fn an_unknown_key_asks_for_a_refresh() {
        let first = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let second = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let jwk = |pair: &EcdsaKeyPair, kid: &str| {
            let point = pair.public_key().as_ref().to_vec();
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid,
                "x": enc(&point[1..33]), "y": enc(&point[33..65])})
        };
        let mut o = Oidc::new(
            "https://idp.example.com",
            "https://idp.example.com/jwks",
            vec!["app".into()],
        )
        .unwrap();
        o.reload_every = Duration::from_millis(200);
        o.install(&serde_json::json!({"keys": [jwk(&first, "k1")]}).to_string())
            .unwrap();
        let now = 1_800_000_000;
        let claims = serde_json::json!({"iss": "https://idp.example.com", "sub": "u", "aud": "app", "exp": now + 600});
        assert!(o.verify(&token(&first, claims.clone()), now).is_ok());
        let h = enc(br#"{"alg":"ES256","kid":"k2"}"#);
        let p = enc(claims.to_string().as_bytes());
        let sig = second
            .sign(&SystemRandom::new(), format!("{h}.{p}").as_bytes())
            .unwrap();
        let rotated = format!("{h}.{p}.{}", enc(sig.as_ref()));
        assert!(matches!(
            o.verify(&rotated, now),
            Err(OidcError::UnknownKey)
        ));
        // Just loaded: no refresh yet; later, one.
        assert!(!o.want_refresh());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(o.want_refresh());
        tokio::time::timeout(Duration::from_secs(1), o.refresh_wanted())
            .await
            .expect("the refresher is woken");
        o.install(
            &serde_json::json!({"keys": [jwk(&first, "k1"), jwk(&second, "k2")]}).to_string(),
        )
        .unwrap();
        assert_eq!(o.verify(&rotated, now).map(|c| c.sub), Ok("u".to_string()));
        // A known key id with a bad signature is plainly invalid, not a refresh.
        let bad = format!("{h}.{p}.{}", enc(&[0u8; 64]));
        assert!(matches!(
            o.verify(&bad, now),
            Err(OidcError::InvalidToken(_))
        ));
    }

    #[test]
    fn an_audience_is_required() {
        assert!(matches!(
            Oidc::new("https://idp.example.com", "https://idp/jwks", vec![]),
            Err(OidcError::Keys(m)) if m.contains("oidc_audiences")
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
        let o = Oidc::new("joe", path.to_str().unwrap(), vec!["x".into()]).unwrap();
        let jws = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
        // The example token names no audience and no sub: its signature checks, its claims
        // do not.
        assert!(
            matches!(o.verify(jws, 1_300_000_000), Err(OidcError::Rejected(m)) if m.contains("audience"))
        );
    }
}

//! The relay mark: how one region tells another "I relayed this request, for this client".
//!
//! A region forwards S3 requests for a bucket whose home is elsewhere, and its replication
//! sends its own requests to peers; both carry `x-feiyun-forwarded` so the receiver serves
//! them itself instead of forwarding again. A client must not be able to set that header
//! (it would write to a replica behind its home region's back), nor the client context it
//! carries (`aws:SourceIp` and `aws:SecureTransport` of the original client), so the mark is a
//! MAC under the secret of an access key of the receiving region — the credentials the
//! sending region holds for it as a peer — and its holder must be allowed
//! `replication:RelayRequest` there.
//!
//! `v1;REGION;ACCESS_KEY;UNIX_TIME;CLIENT_IP;SECURE;MAC` where SECURE is `1`, `0` or empty,
//! CLIENT_IP may be empty (the region's own requests), and MAC is hex HMAC-SHA256 under the
//! secret over every field before it, the method, the path and query, and the signature of
//! the relayed request (so a mark cannot be moved onto another signed request).

use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// How far a mark's time may be from the receiver's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// The client a relayed request came from, as the relaying region saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayMark {
    /// The relaying region's name.
    pub region: String,
    /// The access key (of the receiving region) whose secret made the MAC.
    pub access_key: String,
    pub time: i64,
    /// `None` for a region's own requests (replication, listings, backups).
    pub client_ip: Option<std::net::IpAddr>,
    pub secure: Option<bool>,
    mac: String,
}

/// What the mark is bound to.
pub struct Bound<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// The relayed request's own signature (`Signature=` of its Authorization header or
    /// `X-Amz-Signature`); empty for an anonymous request or a region's own.
    pub signature: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("the relay mark is malformed")]
    Malformed,
    #[error("the relay mark's time is too far from the server's")]
    Expired,
    #[error("the relay mark's MAC does not match")]
    Mismatch,
}

impl RelayMark {
    /// A mark for a request this region relays (or sends) to a peer.
    #[allow(clippy::too_many_arguments)]
    pub fn make(
        region: &str,
        access_key: &str,
        secret: &str,
        time: i64,
        client_ip: Option<std::net::IpAddr>,
        secure: Option<bool>,
        bound: &Bound,
    ) -> String {
        let head = head(region, access_key, time, client_ip, secure);
        let mac = mac(secret, &head, bound);
        format!("{head};{mac}")
    }

    pub fn parse(value: &str) -> Result<Self, RelayError> {
        let f: Vec<&str> = value.split(';').collect();
        let [v, region, access_key, time, ip, secure, mac] = f.as_slice() else {
            return Err(RelayError::Malformed);
        };
        if *v != "v1" || region.is_empty() || access_key.is_empty() || mac.len() != 64 {
            return Err(RelayError::Malformed);
        }
        let client_ip = match *ip {
            "" => None,
            ip => Some(ip.parse().map_err(|_| RelayError::Malformed)?),
        };
        let secure = match *secure {
            "" => None,
            "1" => Some(true),
            "0" => Some(false),
            _ => return Err(RelayError::Malformed),
        };
        Ok(Self {
            region: (*region).to_owned(),
            access_key: (*access_key).to_owned(),
            time: time.parse().map_err(|_| RelayError::Malformed)?,
            client_ip,
            secure,
            mac: (*mac).to_owned(),
        })
    }

    /// Checks the MAC under the access key's `secret` and the time against `now`.
    pub fn verify(&self, secret: &str, bound: &Bound, now: i64) -> Result<(), RelayError> {
        if (now - self.time).abs() > MAX_SKEW_SECS {
            return Err(RelayError::Expired);
        }
        let head = head(
            &self.region,
            &self.access_key,
            self.time,
            self.client_ip,
            self.secure,
        );
        let want = mac(secret, &head, bound);
        if crate::sigv4::constant_time_eq(want.as_bytes(), self.mac.as_bytes()) {
            Ok(())
        } else {
            Err(RelayError::Mismatch)
        }
    }
}

/// A key both ends of a credential derive for `purpose`: HMAC-SHA256 of it under the
/// credential's secret (the sender holds the secret for the peer, the peer in its IAM).
pub fn shared_key(secret: &str, purpose: &str) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 takes any key length");
    m.update(purpose.as_bytes());
    m.finalize().into_bytes().into()
}

/// The signature a request carries, for [`Bound::signature`].
pub fn request_signature(authorization: Option<&str>, query: &str) -> String {
    if let Some(a) = authorization
        && let Some(sig) = a.split("Signature=").nth(1)
    {
        return sig.trim().to_owned();
    }
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-Signature="))
        .unwrap_or("")
        .to_owned()
}

fn head(
    region: &str,
    access_key: &str,
    time: i64,
    client_ip: Option<std::net::IpAddr>,
    secure: Option<bool>,
) -> String {
    let ip = client_ip.map(|i| i.to_string()).unwrap_or_default();
    let secure = match secure {
        Some(true) => "1",
        Some(false) => "0",
        None => "",
    };
    format!("v1;{region};{access_key};{time};{ip};{secure}")
}

fn mac(secret: &str, head: &str, bound: &Bound) -> String {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 takes any key length");
    for part in [
        b"feiyun relay v1\n".as_slice(),
        head.as_bytes(),
        b"\n",
        bound.method.as_bytes(),
        b"\n",
        bound.path_and_query.as_bytes(),
        b"\n",
        bound.signature.as_bytes(),
    ] {
        m.update(part);
    }
    hex::encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_verifies_only_for_its_request_secret_and_time() {
        let bound = Bound {
            method: "PUT",
            path_and_query: "/b/k",
            signature: "abc",
        };
        let ip = Some("203.0.113.7".parse().unwrap());
        let text = RelayMark::make("eu-1", "AKPEER", "s3cret", 1000, ip, Some(true), &bound);
        let m = RelayMark::parse(&text).unwrap();
        assert_eq!(m.client_ip, ip);
        assert_eq!(m.secure, Some(true));
        assert_eq!(m.verify("s3cret", &bound, 1000 + 60), Ok(()));
        assert_eq!(m.verify("other", &bound, 1000), Err(RelayError::Mismatch));
        assert_eq!(
            m.verify("s3cret", &bound, 1000 + MAX_SKEW_SECS + 1),
            Err(RelayError::Expired)
        );
        let other = Bound {
            signature: "def",
            ..bound
        };
        assert_eq!(m.verify("s3cret", &other, 1000), Err(RelayError::Mismatch));
        // Changing the client context breaks the MAC.
        let forged = text.replace("203.0.113.7", "10.0.0.1");
        assert_eq!(
            RelayMark::parse(&forged)
                .unwrap()
                .verify("s3cret", &bound, 1000),
            Err(RelayError::Mismatch)
        );
        for bad in ["1", "peer", "v1;;AK;1;;;00", "v2;r;AK;1;;;x"] {
            assert_eq!(RelayMark::parse(bad), Err(RelayError::Malformed), "{bad}");
        }
    }
}

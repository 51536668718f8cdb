//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA1, 30-second steps, six
//! digits, as every authenticator app implements them, and the base32 seeds and `otpauth://`
//! URIs that provision those apps.

use hmac::{KeyInit, Mac};

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

pub const STEP_SECS: i64 = 30;
pub const DIGITS: u32 = 6;
/// Codes one step early or late are accepted, for clock drift between phone and server.
pub const DRIFT_STEPS: i64 = 1;

/// The code for one time step (RFC 4226 dynamic truncation).
pub fn code_at(seed: &[u8], counter: u64) -> u32 {
    // HMAC accepts keys of any length.
    let mut mac = <HmacSha1 as KeyInit>::new_from_slice(seed).expect("hmac takes any key length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = (h[h.len() - 1] & 0x0f) as usize;
    let bin = ((h[offset] as u32 & 0x7f) << 24)
        | ((h[offset + 1] as u32) << 16)
        | ((h[offset + 2] as u32) << 8)
        | h[offset + 3] as u32;
    bin % 10u32.pow(DIGITS)
}

pub fn counter_at(unix: i64) -> u64 {
    (unix.max(0) / STEP_SECS) as u64
}

/// The time step a six-digit `code` belongs to, within the drift window around `now`, if it
/// is valid and newer than `last_used` (a code is never accepted twice).
pub fn verify(seed: &[u8], code: &str, now: i64, last_used: Option<u64>) -> Option<u64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let want: u32 = code.parse().ok()?;
    let now_step = counter_at(now) as i64;
    let mut found = None;
    for d in -DRIFT_STEPS..=DRIFT_STEPS {
        let c = now_step + d;
        if c < 0 {
            continue;
        }
        // Check every step of the window so timing does not say which one matched.
        if code_at(seed, c as u64) == want {
            found = Some(c as u64);
        }
    }
    found.filter(|c| last_used.is_none_or(|l| *c > l))
}

/// For enabling a device: `first` and `second` must be the codes of two consecutive steps
/// ending no later than one step after `now` (apps show the next code 30 s later). Returns
/// the second step.
pub fn consecutive(seed: &[u8], first: &str, second: &str, now: i64) -> Option<u64> {
    let (Ok(a), Ok(b)) = (first.parse::<u32>(), second.parse::<u32>()) else {
        return None;
    };
    if first.len() != DIGITS as usize || second.len() != DIGITS as usize {
        return None;
    }
    let now_step = counter_at(now);
    (now_step.saturating_sub(3)..=now_step)
        .find(|&c| code_at(seed, c) == a && code_at(seed, c + 1) == b)
        .map(|c| c + 1)
}

/// RFC 4648 base32 without padding, as `otpauth://` URIs and authenticator apps use.
pub fn base32(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buf: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(A[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The provisioning URI an authenticator app reads (usually from a QR code).
pub fn provisioning_uri(issuer: &str, account_name: &str, seed: &[u8]) -> String {
    let enc = crate::sigv4::uri_encode;
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account_name),
        base32(seed),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits there; the last six are ours).
    #[test]
    fn rfc6238_test_vectors() {
        let seed = b"12345678901234567890";
        for (t, eight) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(code_at(seed, counter_at(t)), eight % 1_000_000, "t={t}");
        }
    }

    #[test]
    fn verify_window_and_replay() {
        let seed = b"12345678901234567890";
        let now = 1_111_111_111;
        let code = format!("{:06}", code_at(seed, counter_at(now)));
        let step = verify(seed, &code, now, None).unwrap();
        assert_eq!(verify(seed, &code, now + 30, None), Some(step));
        assert_eq!(verify(seed, &code, now + 90, None), None);
        assert_eq!(
            verify(seed, &code, now, Some(step)),
            None,
            "a code works once"
        );
        assert_eq!(verify(seed, "12345", now, None), None);
        assert_eq!(verify(seed, "abcdef", now, None), None);
    }

    #[test]
    fn two_consecutive_codes() {
        let seed = b"12345678901234567890";
        let now = 1_111_111_111;
        let c = counter_at(now);
        let a = format!("{:06}", code_at(seed, c - 1));
        let b = format!("{:06}", code_at(seed, c));
        assert_eq!(consecutive(seed, &a, &b, now), Some(c));
        assert_eq!(consecutive(seed, &b, &a, now), None);
        assert_eq!(consecutive(seed, &a, &a, now), None);
    }

    #[test]
    fn base32_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(raw.as_bytes()), enc);
        }
        assert!(
            provisioning_uri("Feiyun", "alice", b"12345")
                .starts_with("otpauth://totp/Feiyun:alice?secret=GEZDGNBV&")
        );
    }
}

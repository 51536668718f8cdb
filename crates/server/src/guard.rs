//! Failed-authentication throttling. Repeated failures (bad signatures, unknown or disabled
//! keys, invalid tokens) from one source address, or against one access key from one source
//! address, earn that source (or that key at that source) a back-off that doubles with each
//! further burst, so guessing secrets online is slow while a legitimate client that mistyped
//! once is barely affected.
//!
//! A key's back-off is per source on purpose: anyone can send garbage naming someone else's
//! access key (the root's, a peer region's), and that must not lock the key's owner out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Failures allowed per source or key within [`WINDOW`] before a back-off starts.
pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first back-off; each further burst doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Most sources and keys tracked; past it the oldest half is forgotten.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Source(IpAddr),
    /// A claimed access key, as seen from one source address.
    Key(String, IpAddr),
}

struct Entry {
    failures: u32,
    window_start: Instant,
    strikes: u32,
    blocked_until: Option<Instant>,
    last_seen: Instant,
}

#[derive(Default)]
pub struct AuthGuard {
    entries: Mutex<HashMap<Subject, Entry>>,
    /// How many entries exist, so the common case (nobody failing) takes no lock at all.
    tracked: AtomicUsize,
}

impl AuthGuard {
    /// How long `s` must still wait, if it is backing off.
    /// Whether anything is backing off at all: when not, a request skips the lookups (and
    /// the key it would build for them).
    pub fn idle(&self) -> bool {
        self.tracked.load(Ordering::Relaxed) == 0
    }

    pub fn blocked(&self, s: &Subject, now: Instant) -> Option<Duration> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let m = self.entries.lock().ok()?;
        let until = m.get(s)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    pub fn failure(&self, s: Subject, now: Instant) {
        let Ok(mut m) = self.entries.lock() else {
            return;
        };
        if m.len() >= MAX_TRACKED && !m.contains_key(&s) {
            let mut ages: Vec<Instant> = m.values().map(|e| e.last_seen).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            m.retain(|_, e| e.last_seen > cutoff || e.blocked_until.is_some_and(|b| b > now));
        }
        let e = m.entry(s).or_insert(Entry {
            failures: 0,
            window_start: now,
            strikes: 0,
            blocked_until: None,
            last_seen: now,
        });
        e.last_seen = now;
        if now.duration_since(e.window_start) > WINDOW {
            e.failures = 0;
            e.window_start = now;
        }
        e.failures += 1;
        if e.failures >= MAX_FAILURES {
            e.strikes += 1;
            let backoff = FIRST_BACKOFF
                .saturating_mul(1u32 << (e.strikes - 1).min(16))
                .min(MAX_BACKOFF);
            e.blocked_until = Some(now + backoff);
            e.failures = 0;
            e.window_start = now;
        }
        self.tracked.store(m.len(), Ordering::Relaxed);
    }

    /// A key that authenticated is forgiven at that source; the source itself is not (one
    /// good key must not let its holder keep guessing others).
    pub fn success(&self, key: &str, source: IpAddr) {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Ok(mut m) = self.entries.lock() {
            m.remove(&Subject::Key(key.to_owned(), source));
            self.tracked.store(m.len(), Ordering::Relaxed);
        }
    }
}

/// The access key id a request claims, from its Authorization header or presigned query.
pub fn claimed_key(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(a) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let cred = a.split("Credential=").nth(1)?;
        return cred.split('/').next().map(str::to_owned);
    }
    let q = query?;
    let v = q
        .split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))?;
    let v = v.replace("%2F", "/").replace("%2f", "/");
    v.split('/').next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_success_forgives_keys() {
        let g = AuthGuard::default();
        let t0 = Instant::now();
        let ip = Subject::Source("10.0.0.1".parse().unwrap());
        for _ in 0..MAX_FAILURES - 1 {
            g.failure(ip.clone(), t0);
        }
        assert_eq!(g.blocked(&ip, t0), None);
        g.failure(ip.clone(), t0);
        assert_eq!(g.blocked(&ip, t0), Some(FIRST_BACKOFF));
        assert_eq!(g.blocked(&ip, t0 + FIRST_BACKOFF), None);
        for _ in 0..MAX_FAILURES {
            g.failure(ip.clone(), t0 + FIRST_BACKOFF);
        }
        assert_eq!(g.blocked(&ip, t0 + FIRST_BACKOFF), Some(FIRST_BACKOFF * 2));
        // Failures spread beyond the window never add up.
        let slow = Subject::Source("10.0.0.2".parse().unwrap());
        for i in 0..(MAX_FAILURES * 3) {
            g.failure(slow.clone(), t0 + WINDOW * i);
        }
        assert_eq!(g.blocked(&slow, t0 + WINDOW * 40), None);
        let attacker: IpAddr = "10.0.0.9".parse().unwrap();
        let owner: IpAddr = "10.0.0.10".parse().unwrap();
        let key = Subject::Key("AKIAEXAMPLE".into(), attacker);
        for _ in 0..MAX_FAILURES {
            g.failure(key.clone(), t0);
        }
        assert!(g.blocked(&key, t0).is_some());
        // The key's owner, elsewhere, is not locked out by someone else's garbage.
        assert_eq!(
            g.blocked(&Subject::Key("AKIAEXAMPLE".into(), owner), t0),
            None
        );
        g.success("AKIAEXAMPLE", attacker);
        assert_eq!(g.blocked(&key, t0), None);
    }

    #[test]
    fn claimed_keys() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=AKIDX/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"),
        );
        assert_eq!(claimed_key(&h, None).as_deref(), Some("AKIDX"));
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDQ%2F20260101%2Fus-east-1%2Fs3%2Faws4_request";
        assert_eq!(
            claimed_key(&http::HeaderMap::new(), Some(q)).as_deref(),
            Some("AKIDQ")
        );
        assert_eq!(claimed_key(&http::HeaderMap::new(), None), None);
    }
}

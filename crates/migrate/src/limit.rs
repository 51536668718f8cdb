//! Politeness toward a source in production: a byte rate (`--bandwidth`) and a request rate
//! (`--source-qps`), each a token bucket shared by every task, holding at most one second of
//! burst.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Default)]
pub struct Limits {
    bytes: Option<Arc<Bucket>>,
    requests: Option<Arc<Bucket>>,
}

struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: f64) -> Arc<Self> {
        Arc::new(Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        })
    }

    /// Takes `n` tokens, going into debt if need be, and returns how long to wait until the
    /// debt is paid: a request larger than the bucket still passes, at the rate.
    fn take(&self, n: f64) -> Duration {
        self.take_at(n, Instant::now())
    }

    fn take_at(&self, n: f64, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.rate) - n;
        s.1 = now;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate)
        }
    }
}

impl Limits {
    /// `bandwidth` in bytes per second, `qps` in requests per second; `None` is unlimited.
    pub fn new(bandwidth: Option<u64>, qps: Option<u32>) -> Self {
        Self {
            bytes: bandwidth.filter(|b| *b > 0).map(|b| Bucket::new(b as f64)),
            requests: qps.filter(|q| *q > 0).map(|q| Bucket::new(f64::from(q))),
        }
    }

    pub async fn bytes(&self, n: usize) {
        if let Some(b) = &self.bytes {
            let wait = b.take(n as f64);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    pub async fn request(&self) {
        if let Some(b) = &self.requests {
            let wait = b.take(1.0);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// `100M`, `1.5G`, `512k`, `1000`: bytes per second (binary multiples, as rclone reads them).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                'b' => 1,
                _ => return None,
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100M"), Some(100 << 20));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("5x"), None);
        assert_eq!(parse_size("-1M"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn the_byte_rate_holds() {
        let b = Bucket::new(1000.0);
        let t0 = b.state.lock().unwrap().1;
        // One second of burst, then each 1,000 bytes waits a further second.
        let waits: Vec<f64> = (0..5)
            .map(|_| b.take_at(1000.0, t0).as_secs_f64())
            .collect();
        assert_eq!(waits, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        // Time refills the bucket, never beyond one second's worth.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.take_at(0.0, later), Duration::ZERO);
        assert_eq!(b.take_at(1000.0, later), Duration::ZERO);
        assert_eq!(b.take_at(500.0, later), Duration::from_millis(500));
    }
}

//! Re-planning after a lost race, bounded by time rather than by a count of attempts.
//!
//! Writers are optimistic: a change reads the rows it decides on and its batch checks each
//! of them, so when two writers of one key commit together the loser's checks fail and it
//! plans again from the new rows. Under load (sixteen or more clients overwriting one key)
//! one writer may lose many rounds in a row; S3 accepts every such write (last writer wins),
//! so a fixed handful of attempts is the wrong bound. A change keeps re-planning until
//! [`COMMIT_DEADLINE`] has passed, backing off with jitter after the first few rounds so that
//! the losers of one round do not all collide again in the next.

use std::time::{Duration, Instant};

/// How long a change keeps re-planning before it answers `Busy` (S3's `SlowDown`).
pub(crate) const COMMIT_DEADLINE: Duration = Duration::from_secs(30);
/// Rounds retried at once, before any back-off.
const EAGER_ROUNDS: u32 = 4;
/// The longest pause between two rounds.
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// The state of one change's retries.
pub(crate) struct Retry {
    started: Instant,
    deadline: Duration,
    round: u32,
}

impl Retry {
    pub fn new() -> Self {
        Self::within(COMMIT_DEADLINE)
    }

    pub fn within(deadline: Duration) -> Self {
        Self {
            started: Instant::now(),
            deadline,
            round: 0,
        }
    }

    /// After a lost race: waits a little (more each round, with jitter) and says whether to
    /// plan again, or `false` once the deadline has passed.
    pub async fn again(&mut self) -> bool {
        self.round += 1;
        if self.started.elapsed() >= self.deadline {
            return false;
        }
        if let Some(pause) = self.pause() {
            tokio::time::sleep(pause).await;
        }
        self.started.elapsed() < self.deadline
    }

    /// Rounds lost so far.
    #[cfg(test)]
    pub fn rounds(&self) -> u32 {
        self.round
    }

    fn pause(&self) -> Option<Duration> {
        if self.round <= EAGER_ROUNDS {
            return None;
        }
        let exp = (self.round - EAGER_ROUNDS).min(10);
        let ceiling = Duration::from_micros(50u64 << exp).min(MAX_PAUSE);
        // Full jitter: anywhere in [0, ceiling], so colliding writers spread out.
        let micros = rand::random_range(0..=ceiling.as_micros() as u64);
        Some(Duration::from_micros(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_until_the_deadline_not_a_count() {
        let mut r = Retry::within(Duration::from_millis(200));
        let start = Instant::now();
        while r.again().await {}
        assert!(start.elapsed() >= Duration::from_millis(200));
        // Far more rounds than the old fixed bound of 16 fit in the deadline.
        assert!(r.rounds() > 16, "{} rounds", r.rounds());
    }

    #[test]
    fn pauses_grow_but_stay_bounded() {
        let mut r = Retry::new();
        for round in 1..=64 {
            r.round = round;
            match r.pause() {
                None => assert!(round <= EAGER_ROUNDS),
                Some(p) => assert!(p <= MAX_PAUSE, "{p:?}"),
            }
        }
    }
}

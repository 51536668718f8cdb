//! The autoscaler's arithmetic, after Knative's: instances follow the average in-flight
//! concurrency over a stable window (60 s by default), divided by a target per instance of
//! 70 % of its hard concurrency limit. A burst — the panic window's average (a tenth of the
//! stable window) needing twice the current instances — switches to panic mode, which scales
//! to the burst at once and does not scale down until a whole stable window has passed calm;
//! a request that finds every instance full adds one at once (and counts as a burst).
//! Outside panic, scale-down at most halves per decision. With no request for the idle grace
//! period and nothing in flight, a function without provisioned instances scales to zero.
//!
//! An instance here is a unit of warm capacity: the compiled function loaded and
//! `max_concurrency` admission slots. Each request still runs in a fresh WebAssembly
//! instance, as `wasmtime serve` does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Knative's default target utilisation of an instance's concurrency limit.
const TARGET_UTILISATION: f64 = 0.7;
/// The panic window's need, as a multiple of current instances, that starts panic mode.
const PANIC_THRESHOLD: f64 = 2.0;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Hard limit of concurrent requests per instance.
    pub per_instance: u32,
    pub min: u32,
    pub max: u32,
    pub stable_window: Duration,
    pub idle: Duration,
}

impl Policy {
    fn panic_window(&self) -> Duration {
        self.stable_window / 10
    }

    fn target(&self) -> f64 {
        (f64::from(self.per_instance) * TARGET_UTILISATION).max(1.0)
    }
}

/// Why the instance count changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A request found every instance full and capacity to spare.
    Burst,
    Panic,
    Stable,
    ScaleToZero,
    Provisioned,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Burst => "burst",
            Reason::Panic => "panic",
            Reason::Stable => "stable",
            Reason::ScaleToZero => "scale-to-zero",
            Reason::Provisioned => "provisioned",
        }
    }
}

/// Every instance is full and the maximum is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtCapacity;

/// One function's scaling state.
#[derive(Debug)]
pub struct Scaler {
    pub policy: Policy,
    pub instances: u32,
    pub in_flight: u32,
    /// Average concurrency per decision period, newest last.
    samples: VecDeque<(Instant, f64)>,
    /// In-flight × seconds since the last sample.
    area: f64,
    last_change: Instant,
    last_sample: Instant,
    last_request: Instant,
    panic_until: Option<Instant>,
}

impl Scaler {
    pub fn new(policy: Policy, now: Instant) -> Self {
        Self {
            policy,
            instances: policy.min,
            in_flight: 0,
            samples: VecDeque::new(),
            area: 0.0,
            last_change: now,
            last_sample: now,
            last_request: now,
            panic_until: None,
        }
    }

    fn integrate(&mut self, now: Instant) {
        self.area += f64::from(self.in_flight) * (now - self.last_change).as_secs_f64();
        self.last_change = now;
    }

    /// Admits a request if an instance has room, adding one when all are full and the
    /// maximum allows it. `Some(reason)` when the instance count changed.
    pub fn try_admit(&mut self, now: Instant) -> Result<Option<Reason>, AtCapacity> {
        let capacity = self.instances.saturating_mul(self.policy.per_instance);
        let mut changed = None;
        if self.in_flight >= capacity {
            if self.instances >= self.policy.max {
                return Err(AtCapacity);
            }
            // Outgrowing warm instances is a burst: hold what it needs for a stable window
            // (panic mode). Growing from zero is just a cold start.
            if self.instances > 0 {
                self.panic_until = Some(now + self.policy.stable_window);
            }
            self.instances += 1;
            changed = Some(Reason::Burst);
        }
        self.integrate(now);
        self.in_flight += 1;
        self.last_request = now;
        Ok(changed)
    }

    pub fn release(&mut self, now: Instant) {
        self.integrate(now);
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Records the average concurrency since the last call and decides the instance count.
    /// `Some((from, reason))` when it changed.
    pub fn tick(&mut self, now: Instant) -> Option<(u32, Reason)> {
        self.integrate(now);
        let elapsed = (now - self.last_sample).as_secs_f64();
        if elapsed > 0.0 {
            self.samples.push_back((now, self.area / elapsed));
        }
        self.area = 0.0;
        self.last_sample = now;
        let p = self.policy;
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > p.stable_window)
        {
            self.samples.pop_front();
        }
        let avg = |window: Duration| {
            let v: Vec<f64> = self
                .samples
                .iter()
                .filter(|(t, _)| now.duration_since(*t) <= window)
                .map(|(_, c)| *c)
                .collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let want_stable = (avg(p.stable_window) / p.target()).ceil() as u32;
        let want_panic = (avg(p.panic_window()) / p.target()).ceil() as u32;
        if self.instances > 0
            && f64::from(want_panic) >= PANIC_THRESHOLD * f64::from(self.instances)
        {
            self.panic_until = Some(now + p.stable_window);
        }
        let panicking = self.panic_until.is_some_and(|t| now < t);
        if !panicking {
            self.panic_until = None;
        }
        let (mut desired, mut reason) = if panicking {
            (self.instances.max(want_panic), Reason::Panic)
        } else {
            (want_stable.max(self.instances.div_ceil(2)), Reason::Stable)
        };
        let idle = self.in_flight == 0 && now.duration_since(self.last_request) >= p.idle;
        if idle && !panicking && want_stable == 0 {
            desired = 0;
            reason = Reason::ScaleToZero;
        }
        // What is in flight keeps its room.
        desired = desired.max(self.in_flight.div_ceil(p.per_instance.max(1)));
        if desired < p.min {
            desired = p.min;
            reason = Reason::Provisioned;
        }
        desired = desired.min(p.max.max(p.min));
        if desired == self.instances {
            return None;
        }
        let from = self.instances;
        self.instances = desired;
        Some((from, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            per_instance: 10,
            min: 0,
            max: 5,
            stable_window: Duration::from_secs(60),
            idle: Duration::from_secs(30),
        }
    }

    #[test]
    fn requests_beyond_every_instance_and_the_maximum_are_refused() {
        let t = Instant::now();
        let mut s = Scaler::new(policy(), t);
        assert_eq!(s.instances, 0);
        assert_eq!(s.try_admit(t), Ok(Some(Reason::Burst)));
        for _ in 1..10 {
            assert_eq!(s.try_admit(t), Ok(None));
        }
        assert_eq!(s.try_admit(t), Ok(Some(Reason::Burst)));
        assert_eq!(s.instances, 2);
        for _ in 11..50 {
            s.try_admit(t).expect("room up to five instances");
        }
        assert_eq!(s.instances, 5);
        assert_eq!(s.try_admit(t), Err(AtCapacity));
        s.release(t);
        assert_eq!(s.try_admit(t), Ok(None));
    }

    #[test]
    fn steady_load_keeps_its_instances_and_idleness_scales_to_zero() {
        let t0 = Instant::now();
        let mut s = Scaler::new(policy(), t0);
        // 14 requests in flight for a minute: target 7 per instance → 2 instances.
        for _ in 0..14 {
            s.try_admit(t0).expect("admitted");
        }
        let mut t = t0;
        for _ in 0..30 {
            t += Duration::from_secs(2);
            s.tick(t);
        }
        assert_eq!(s.instances, 2);
        for _ in 0..14 {
            s.release(t);
        }
        // Calm: scale-down halves per decision, and only to zero after the idle grace once
        // the stable window has forgotten the load.
        t += Duration::from_secs(2);
        s.tick(t);
        assert!(s.instances >= 1, "{}", s.instances);
        for _ in 0..40 {
            t += Duration::from_secs(2);
            s.tick(t);
        }
        assert_eq!(s.instances, 0);
    }

    #[test]
    fn a_burst_panics_up_and_holds_until_a_calm_window() {
        let t0 = Instant::now();
        let mut s = Scaler::new(policy(), t0);
        s.try_admit(t0).expect("admitted");
        let mut t = t0;
        for _ in 0..10 {
            t += Duration::from_secs(2);
            s.tick(t);
        }
        assert_eq!(s.instances, 1);
        for _ in 0..30 {
            let _ = s.try_admit(t);
        }
        t += Duration::from_secs(2);
        let changed = s.tick(t);
        assert!(
            matches!(changed, None | Some((_, Reason::Panic))),
            "{changed:?}"
        );
        assert!(s.instances >= 4, "{}", s.instances);
        let high = s.instances;
        // The burst ends; panic mode holds the instances for a stable window.
        for _ in 0..31 {
            s.release(t);
        }
        t += Duration::from_secs(2);
        s.tick(t);
        assert_eq!(s.instances, high);
    }

    #[test]
    fn provisioned_instances_stay_warm() {
        let t0 = Instant::now();
        let mut s = Scaler::new(Policy { min: 2, ..policy() }, t0);
        assert_eq!(s.instances, 2);
        let mut t = t0;
        for _ in 0..100 {
            t += Duration::from_secs(2);
            s.tick(t);
        }
        assert_eq!(s.instances, 2);
    }
}

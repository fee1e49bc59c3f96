//! When a shared camera should be connected, and how long to wait before trying again.
//!
//! Two policies, kept apart from the RTSP dialogue so each is tested alone:
//! - [`Demand`]: an on-demand route opens its camera with the first viewer and keeps it
//!   `linger` after the last one leaves (a viewer who reconnects, or zaps back, finds it still
//!   open, and a camera that allows few sessions is not hammered with open/close cycles); an
//!   always-on route keeps it from start-up. A camera lost while nobody watches is not reopened
//!   for nobody.
//! - [`Backoff`]: capped exponential delays between reconnects, with random jitter so that
//!   cameras that fell together (a switch reboots) do not all retry in the same millisecond.

use super::rng::SplitMix64;
use std::time::{Duration, Instant};

/// A shared route's camera policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connected while viewers watch, and `linger` after the last leaves.
    OnDemand { linger: Duration },
    /// Connected from start-up, reconnected forever.
    AlwaysOn,
}

/// Who wants the camera now.
#[derive(Debug, Clone)]
pub struct Demand {
    mode: Mode,
    viewers: usize,
    /// When the last viewer left (on demand), while the linger runs.
    idle_since: Option<Instant>,
}

impl Demand {
    pub fn new(mode: Mode) -> Self {
        Demand { mode, viewers: 0, idle_since: None }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn viewers(&self) -> usize {
        self.viewers
    }

    /// The number of viewers changed.
    pub fn set_viewers(&mut self, viewers: usize, now: Instant) {
        if viewers == 0 && self.viewers > 0 {
            self.idle_since = Some(now);
        } else if viewers > 0 {
            self.idle_since = None;
        }
        self.viewers = viewers;
    }

    /// Whether the camera should be connected at `now` (viewers, a linger running, or always on).
    pub fn wants_camera(&self, now: Instant) -> bool {
        self.viewers > 0 || self.linger_deadline().is_some_and(|d| now < d) || self.mode == Mode::AlwaysOn
    }

    /// Whether a lost camera should be reconnected: someone watches, or the route is always on.
    pub fn wants_reconnect(&self) -> bool {
        self.viewers > 0 || self.mode == Mode::AlwaysOn
    }

    /// When the running linger ends (on demand, no viewers).
    pub fn linger_deadline(&self) -> Option<Instant> {
        match self.mode {
            Mode::OnDemand { linger } if self.viewers == 0 => self.idle_since.map(|t| t + linger),
            _ => None,
        }
    }
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempts: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// `seed`: randomness from the shell (the core reads no entropy source).
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff { initial, max: max.max(initial), attempts: 0, rng: SplitMix64::new(seed) }
    }

    /// The wait before the next attempt: anywhere from nothing to `initial · 2^n` (n failures
    /// so far) capped at `max` (`[limits] camera_reconnect_max_ms`), uniformly at random ("full
    /// jitter"): 5,000 cameras lost together come back spread evenly over the whole first wait
    /// (a second), then over each longer one, never later than `max`. Shortening each wait by
    /// only up to half left them all in the wait's second half: after a network blip every
    /// camera of the relay reconnected within the same half second (measured with
    /// `scripts/reconnect-storm.py`).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.initial.saturating_mul(1u32 << self.attempts.min(20)).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        // SplitMix64: enough to spread retries, and reproducible from the seed in tests.
        let z = self.rng.next_u64();
        base.mul_f64((z >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// The camera has been playing long enough: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn on_demand_lingers_after_the_last_viewer() {
        let t0 = crate::test_fixtures::t0();
        let mut d = Demand::new(Mode::OnDemand { linger: 10 * S });
        assert!(!d.wants_camera(t0) && !d.wants_reconnect(), "nobody has asked yet");
        d.set_viewers(2, t0);
        assert!(d.wants_camera(t0) && d.wants_reconnect() && d.linger_deadline().is_none());
        d.set_viewers(0, t0 + S);
        assert_eq!(d.linger_deadline(), Some(t0 + 11 * S));
        assert!(d.wants_camera(t0 + 10 * S) && !d.wants_camera(t0 + 11 * S));
        assert!(!d.wants_reconnect(), "a camera lost during the linger is not reopened for nobody");
        // A viewer back within the linger cancels it; leaving again restarts it.
        d.set_viewers(1, t0 + 5 * S);
        assert_eq!(d.linger_deadline(), None);
        d.set_viewers(0, t0 + 20 * S);
        assert_eq!(d.linger_deadline(), Some(t0 + 30 * S));
        // Reporting zero again does not move it.
        d.set_viewers(0, t0 + 25 * S);
        assert_eq!(d.linger_deadline(), Some(t0 + 30 * S));
    }

    #[test]
    fn always_on_always_wants_the_camera() {
        let t0 = crate::test_fixtures::t0();
        let mut d = Demand::new(Mode::AlwaysOn);
        assert!(d.wants_camera(t0) && d.wants_reconnect());
        d.set_viewers(3, t0);
        d.set_viewers(0, t0);
        assert!(d.wants_camera(t0 + 1000 * S) && d.linger_deadline().is_none());
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(S, 30 * S, 42);
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let bases = [1, 2, 4, 8, 16, 30, 30, 30];
        for (d, base) in delays.iter().zip(bases) {
            assert!(*d <= base * S, "{d:?} vs {base} s");
        }
        assert!(delays[5..].iter().sum::<Duration>() > 30 * S, "the waits grow to the cap: {delays:?}");
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert!(b.next_delay() <= S);
        // Two cameras with different seeds do not retry in lockstep.
        let (mut x, mut y) = (Backoff::new(S, 30 * S, 1), Backoff::new(S, 30 * S, 2));
        assert_ne!(x.next_delay(), y.next_delay());
        // Thousands of failures neither overflow nor pass the cap.
        let mut z = Backoff::new(S, 30 * S, 3);
        for _ in 0..5000 {
            assert!(z.next_delay() <= 30 * S);
        }
    }

    #[test]
    fn cameras_lost_together_retry_spread_over_the_whole_wait() {
        // 5,000 cameras dropped at once: their first retries fall in 20 buckets of 50 ms across
        // [0, 1 s], none of them holding more than twice its share (250). The first half of the
        // wait gets its share too (with waits shortened by at most half it got none, and the
        // second half twice the load).
        let mut buckets = [0u32; 20];
        for seed in 0..5000u64 {
            let d = Backoff::new(S, 30 * S, seed.wrapping_mul(0x2545_f491_4f6c_dd1d)).next_delay();
            assert!(d <= S, "{d:?}");
            let i = (d.as_micros() / 50_000).min(19) as usize;
            buckets[i] += 1;
        }
        assert!(buckets.iter().all(|n| *n > 0 && *n < 500), "{buckets:?}");
        let first_half: u32 = buckets[..10].iter().sum();
        assert!((2000..3000).contains(&first_half), "{buckets:?}");
    }
}

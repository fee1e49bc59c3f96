//! One latency histogram: HDR for quantiles, plus an exact count and sum, in microseconds.

use hdrhistogram::Histogram;

/// Highest value tracked (1 hour in µs); larger observations are clamped to it.
const MAX_US: u64 = 3_600_000_000;

#[derive(Debug, Clone)]
pub struct Latency {
    hdr: Histogram<u64>,
    sum_us: u64,
}

impl Default for Latency {
    fn default() -> Self {
        // 3 significant digits: 0.1% resolution across 1 µs .. 1 h.
        let hdr = Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid");
        Latency { hdr, sum_us: 0 }
    }
}

impl Latency {
    pub fn record(&mut self, us: u64) {
        let v = us.clamp(1, MAX_US);
        // In bounds by the clamp, so recording cannot fail.
        let _ = self.hdr.record(v);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// `n` observations of the same value.
    pub fn record_n(&mut self, us: u64, n: u64) {
        let v = us.clamp(1, MAX_US);
        let _ = self.hdr.record_n(v, n);
        self.sum_us = self.sum_us.saturating_add(us.saturating_mul(n));
    }

    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hdr.add(&other.hdr);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    pub fn count(&self) -> u64 {
        self.hdr.len()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// Observations at or below `seconds` (cumulative, for a Prometheus bucket).
    pub fn count_at_or_below(&self, seconds: f64) -> u64 {
        let us = (seconds * 1e6) as u64;
        self.hdr.count_between(0, us.min(MAX_US))
    }

    pub fn quantile_seconds(&self, q: f64) -> f64 {
        if self.count() == 0 {
            return 0.0;
        }
        self.hdr.value_at_quantile(q) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sum_is_exact() {
        let mut h = Latency::default();
        for us in [100, 200, 5_000, 2_000_000] {
            h.record(us);
        }
        assert_eq!(h.count(), 4);
        assert!((h.sum_seconds() - 2.0053).abs() < 1e-9);
        assert_eq!(h.count_at_or_below(0.0001), 1);
        assert_eq!(h.count_at_or_below(0.001), 2);
        assert_eq!(h.count_at_or_below(0.01), 3);
        assert_eq!(h.count_at_or_below(10.0), 4);
        let p50 = h.quantile_seconds(0.5);
        assert!((0.000199..0.000201).contains(&p50), "{p50}");
        let mut merged = Latency::default();
        merged.add(&h);
        merged.add(&h);
        assert_eq!((merged.count(), merged.count_at_or_below(0.001)), (8, 4));
    }
}

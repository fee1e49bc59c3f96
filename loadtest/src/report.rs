//! Counters shared by a process's viewers, the once-a-second progress line, and the JSON report
//! (mergeable across worker processes: histograms travel as value/count pairs).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const WINDOW_SHARDS: usize = 16;

/// Live counters, updated by every viewer task.
pub struct Shared {
    pub bytes: AtomicU64,
    pub packets: AtomicU64,
    pub lost: AtomicU64,
    pub established: AtomicU64,
    pub failed: AtomicU64,
    /// Media latency of the current second, sharded to keep viewer tasks off one lock.
    window: Vec<Mutex<Histogram<u64>>>,
    next_shard: AtomicU64,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds")
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            established: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            window: (0..WINDOW_SHARDS).map(|_| Mutex::new(histogram())).collect(),
            next_shard: AtomicU64::new(0),
        }
    }
}

impl Shared {
    pub fn record_latency(&self, us: u64) {
        let i = self.next_shard.fetch_add(1, Ordering::Relaxed) as usize % WINDOW_SHARDS;
        if let Ok(mut h) = self.window[i].try_lock() {
            let _ = h.record(us.clamp(1, 60_000_000));
        }
    }

    /// p99 of the window since the last call, in ms, and resets it.
    pub fn take_window_p99_ms(&self) -> f64 {
        let mut all = histogram();
        for w in &self.window {
            let mut h = w.lock().unwrap_or_else(|e| e.into_inner());
            let _ = all.add(&*h);
            h.reset();
        }
        if all.is_empty() { 0.0 } else { all.value_at_quantile(0.99) as f64 / 1000.0 }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Quantiles {
    pub fn of_us(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Quantiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    pub t: u64,
    pub mbps: f64,
    pub packets_per_s: u64,
    pub established: u64,
    pub p99_ms: f64,
}

/// The JSON report of `loadtest viewers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub mode: String,
    pub target: String,
    pub processes: usize,
    pub sessions_requested: u64,
    pub sessions_established: u64,
    pub sessions_failed: u64,
    pub failures_by_reason: BTreeMap<String, u64>,
    /// Connect to PLAY answered, milliseconds.
    pub setup_latency_ms: Quantiles,
    /// Camera send to viewer receipt, milliseconds.
    pub media_latency_ms: Quantiles,
    pub bytes_received: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub duration_s: f64,
    pub throughput: Vec<Second>,
    /// Raw histograms (µs: value, count) so worker reports merge exactly.
    pub setup_hist_us: Vec<(u64, u64)>,
    pub media_hist_us: Vec<(u64, u64)>,
}

pub fn to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

pub fn from_pairs(pairs: &[(u64, u64)]) -> Histogram<u64> {
    let mut h = histogram();
    for (v, c) in pairs {
        let _ = h.record_n((*v).clamp(1, 60_000_000), *c);
    }
    h
}

impl Report {
    /// Folds a worker's report into this one.
    pub fn merge(&mut self, other: &Report) {
        self.sessions_requested += other.sessions_requested;
        self.sessions_established += other.sessions_established;
        self.sessions_failed += other.sessions_failed;
        for (k, v) in &other.failures_by_reason {
            *self.failures_by_reason.entry(k.clone()).or_default() += v;
        }
        self.bytes_received += other.bytes_received;
        self.packets_received += other.packets_received;
        self.packets_lost += other.packets_lost;
        self.duration_s = self.duration_s.max(other.duration_s);
        for s in &other.throughput {
            match self.throughput.iter_mut().find(|m| m.t == s.t) {
                Some(m) => {
                    m.mbps += s.mbps;
                    m.packets_per_s += s.packets_per_s;
                    m.established += s.established;
                    m.p99_ms = m.p99_ms.max(s.p99_ms);
                }
                None => self.throughput.push(s.clone()),
            }
        }
        self.throughput.sort_by_key(|s| s.t);
        let mut setup = from_pairs(&self.setup_hist_us);
        let _ = setup.add(from_pairs(&other.setup_hist_us));
        let mut media = from_pairs(&self.media_hist_us);
        let _ = media.add(from_pairs(&other.media_hist_us));
        self.setup_latency_ms = Quantiles::of_us(&setup);
        self.media_latency_ms = Quantiles::of_us(&media);
        self.setup_hist_us = to_pairs(&setup);
        self.media_hist_us = to_pairs(&media);
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} sessions ({}) to {} in {} process(es): {} established, {} failed\n",
            self.sessions_requested,
            self.mode,
            self.target,
            self.processes,
            self.sessions_established,
            self.sessions_failed
        );
        for (k, v) in &self.failures_by_reason {
            s.push_str(&format!("  failed {k}: {v}\n"));
        }
        let l = &self.media_latency_ms;
        let st = &self.setup_latency_ms;
        s.push_str(&format!(
            "setup latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n",
            st.p50, st.p90, st.p99, st.p999, st.max
        ));
        s.push_str(&format!(
            "media latency ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}\n",
            l.p50, l.p90, l.p99, l.p999, l.max
        ));
        let mbps = self.bytes_received as f64 * 8.0 / 1e6 / self.duration_s.max(1e-9);
        s.push_str(&format!(
            "received {} packets, {:.1} MB ({:.1} Mbit/s average), lost {} packets\n",
            self.packets_received,
            self.bytes_received as f64 / 1e6,
            mbps,
            self.packets_lost
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_worker_reports_adds_counts_and_histograms() {
        let mut h = histogram();
        h.record(1000).unwrap();
        let a =
            Report { sessions_requested: 2, sessions_established: 2, media_hist_us: to_pairs(&h), ..Report::default() };
        let mut h2 = histogram();
        h2.record(3000).unwrap();
        let mut b = Report {
            sessions_requested: 3,
            sessions_established: 2,
            sessions_failed: 1,
            media_hist_us: to_pairs(&h2),
            ..Report::default()
        };
        b.failures_by_reason.insert("http_503".into(), 1);
        let mut total = Report::default();
        total.merge(&a);
        total.merge(&b);
        assert_eq!((total.sessions_requested, total.sessions_established, total.sessions_failed), (5, 4, 1));
        assert_eq!(total.failures_by_reason["http_503"], 1);
        assert!((total.media_latency_ms.max - 3.0).abs() < 0.01);
        assert!((total.media_latency_ms.p50 - 1.0).abs() < 0.01);
    }
}

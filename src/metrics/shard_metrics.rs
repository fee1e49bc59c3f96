//! One shard's counters and histograms. The shard is the only writer; the scraper only reads
//! (counters) or briefly locks to copy (histograms), so recording never waits on another core.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::Latency;
use super::{ConnKind, Direction, Hist, Label, Rejection, SessionOutcome, UpstreamErrorKind};
use crate::proto::viewer_auth::AuthFailure;

/// Counters indexed by label value. One cache-line-aligned block per shard, so two shards'
/// counters never share a line.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub sessions_started: AtomicU64,
    pub sessions_ended: [AtomicU64; 7],
    pub connections: [AtomicU64; 5],
    pub bytes: [AtomicU64; 2],
    pub frames: [AtomicU64; 2],
    pub frames_dropped: AtomicU64,
    pub rejections: [AtomicU64; 24],
    pub upstream_errors: [AtomicU64; 8],
    pub auth_failures: [AtomicU64; 7],
    pub backpressure_pauses: AtomicU64,
    pub ring_copies: AtomicU64,
}

#[derive(Debug)]
pub struct ShardMetrics {
    pub shard: usize,
    pub(super) counters: Counters,
    /// Locked by the shard for each observation and by the scraper only to copy.
    pub(super) latency: Mutex<Vec<Latency>>,
}

fn bump(c: &AtomicU64, n: u64) {
    // Single writer per shard: relaxed is enough; readers only need eventual values.
    c.fetch_add(n, Ordering::Relaxed);
}

impl ShardMetrics {
    pub fn new(shard: usize) -> Self {
        ShardMetrics {
            shard,
            counters: Counters::default(),
            latency: Mutex::new((0..Hist::SLOTS).map(|_| Latency::default()).collect()),
        }
    }

    pub fn connection_accepted(&self, kind: ConnKind) {
        bump(&self.counters.connections[kind.index()], 1);
    }

    pub fn session_started(&self) {
        bump(&self.counters.sessions_started, 1);
    }

    pub fn session_ended(&self, outcome: SessionOutcome) {
        bump(&self.counters.sessions_ended[outcome.index()], 1);
    }

    pub fn bytes(&self, dir: Direction, n: u64) {
        bump(&self.counters.bytes[dir.index()], n);
    }

    pub fn frames(&self, dir: Direction, n: u64) {
        bump(&self.counters.frames[dir.index()], n);
    }

    pub fn frames_dropped(&self, n: u64) {
        bump(&self.counters.frames_dropped, n);
    }

    pub fn rejected(&self, reason: Rejection) {
        bump(&self.counters.rejections[reason.index()], 1);
    }

    pub fn upstream_error(&self, reason: UpstreamErrorKind) {
        bump(&self.counters.upstream_errors[reason.index()], 1);
    }

    /// `relay_auth_failures_total{reason}`.
    pub fn auth_failure(&self, reason: AuthFailure) {
        bump(&self.counters.auth_failures[reason.index()], 1);
    }

    /// `relay_backpressure_pauses_total`: a viewer fell `max_viewer_backlog_bytes` behind and
    /// its camera's reads were paused.
    pub fn backpressure_pause(&self) {
        bump(&self.counters.backpressure_pauses, 1);
    }

    /// Ring buffers whose queued media was copied out to relieve ring pressure.
    pub fn ring_buffers_copied_out(&self, n: u64) {
        bump(&self.counters.ring_copies, n);
    }

    pub fn observe(&self, hist: Hist, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        // Uncontended except for the instant a scrape copies the table.
        let mut table = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        table[hist.slot()].record(us);
    }

    /// `n` observations of one duration under one lock (the packets of one forwarded chunk).
    pub fn observe_n(&self, hist: Hist, d: Duration, n: u32) {
        if n == 0 {
            return;
        }
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let mut table = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        table[hist.slot()].record_n(us, u64::from(n));
    }

    /// Sessions open on this shard now.
    pub fn sessions_active(&self) -> u64 {
        let ended: u64 = self.counters.sessions_ended.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        self.counters.sessions_started.load(Ordering::Relaxed).saturating_sub(ended)
    }

    pub(super) fn latency_snapshot(&self) -> Vec<Latency> {
        self.latency.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_tables_fit_their_enums() {
        let c = Counters::default();
        assert_eq!(c.sessions_ended.len(), SessionOutcome::ALL.len());
        assert_eq!(c.connections.len(), ConnKind::ALL.len());
        assert_eq!(c.rejections.len(), Rejection::ALL.len());
        assert_eq!(c.upstream_errors.len(), UpstreamErrorKind::ALL.len());
        assert_eq!(c.auth_failures.len(), AuthFailure::ALL.len());
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{}", r.as_str());
        }
    }

    #[test]
    fn sessions_active_counts_started_minus_ended() {
        let m = ShardMetrics::new(0);
        m.session_started();
        m.session_started();
        m.session_ended(SessionOutcome::Completed);
        assert_eq!(m.sessions_active(), 1);
    }
}

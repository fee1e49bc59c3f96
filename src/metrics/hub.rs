//! Every shard's metrics and the relay's readiness, merged at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use super::{PortDrop, ShardMetrics};

#[derive(Debug)]
pub struct MetricsHub {
    pub(super) shards: Vec<Arc<ShardMetrics>>,
    listeners_bound: AtomicBool,
    shards_running: AtomicBool,
    pub(super) started: Instant,
    /// Metrics-port connections closed without an answer, by [`PortDrop`].
    pub(super) port_drops: [AtomicU64; 3],
}

impl MetricsHub {
    pub fn new(shards: Vec<Arc<ShardMetrics>>) -> MetricsHub {
        MetricsHub {
            shards,
            listeners_bound: AtomicBool::new(false),
            shards_running: AtomicBool::new(false),
            started: Instant::now(),
            port_drops: Default::default(),
        }
    }

    pub fn set_listeners_bound(&self, v: bool) {
        self.listeners_bound.store(v, Ordering::Release);
    }

    pub fn set_shards_running(&self, v: bool) {
        self.shards_running.store(v, Ordering::Release);
    }

    /// `/readyz`: listeners bound and every shard running (false again while draining).
    pub fn ready(&self) -> bool {
        self.listeners_bound.load(Ordering::Acquire) && self.shards_running.load(Ordering::Acquire)
    }

    pub(super) fn port_dropped(&self, why: PortDrop) {
        use super::Label;
        self.port_drops[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        super::render::render(self)
    }
}

//! Every shard's metrics and the relay's readiness, merged at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::ShardMetrics;

#[derive(Debug)]
pub struct MetricsHub {
    pub(super) shards: Vec<Arc<ShardMetrics>>,
    listeners_bound: AtomicBool,
    shards_running: AtomicBool,
    pub(super) started: Instant,
}

impl MetricsHub {
    pub fn new(shards: Vec<Arc<ShardMetrics>>) -> MetricsHub {
        MetricsHub {
            shards,
            listeners_bound: AtomicBool::new(false),
            shards_running: AtomicBool::new(false),
            started: Instant::now(),
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

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        super::render::render(self)
    }
}

//! Every shard's metrics and the relay's readiness, merged at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus::{Registry, TextEncoder};

use super::collector::RelayCollector;
use super::shard_metrics::{PerLabel, zeroed};
use super::{Label, PortDrop, ShardMetrics};

#[derive(Debug)]
pub struct MetricsHub {
    state: Arc<HubState>,
    /// Holds the [`RelayCollector`] over `state`.
    registry: Registry,
}

/// What the collector reads at scrape time.
#[derive(Debug)]
pub(super) struct HubState {
    pub shards: Vec<Arc<ShardMetrics>>,
    listeners_bound: AtomicBool,
    shards_running: AtomicBool,
    pub started: Instant,
    /// Metrics-port connections closed without an answer, by [`PortDrop`].
    pub port_drops: PerLabel<{ PortDrop::COUNT }>,
}

impl HubState {
    pub fn ready(&self) -> bool {
        self.listeners_bound.load(Ordering::Acquire) && self.shards_running.load(Ordering::Acquire)
    }
}

impl MetricsHub {
    pub fn new(shards: Vec<Arc<ShardMetrics>>) -> MetricsHub {
        let state = Arc::new(HubState {
            shards,
            listeners_bound: AtomicBool::new(false),
            shards_running: AtomicBool::new(false),
            started: Instant::now(),
            port_drops: zeroed(),
        });
        let registry = Registry::new();
        // Names, help texts and labels are constants checked by the tests: registering can only
        // fail on a programming error.
        registry
            .register(Box::new(RelayCollector::new(state.clone()).expect("relay metric descriptors are valid")))
            .expect("the relay collector registers once");
        MetricsHub { state, registry }
    }

    pub fn set_listeners_bound(&self, v: bool) {
        self.state.listeners_bound.store(v, Ordering::Release);
    }

    pub fn set_shards_running(&self, v: bool) {
        self.state.shards_running.store(v, Ordering::Release);
    }

    /// `/readyz`: listeners bound and every shard running (false again while draining).
    pub fn ready(&self) -> bool {
        self.state.ready()
    }

    pub(super) fn port_dropped(&self, why: PortDrop) {
        self.state.port_drops[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of everything.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        // Encoding fails only on a family without samples or name, which the collector never
        // builds; what was encoded before such an error is still served.
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics: exposition incomplete");
        }
        out
    }
}

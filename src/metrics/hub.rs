//! Every shard's metrics and the relay's readiness, merged at scrape time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use prometheus::{Registry, TextEncoder};

use super::collector::RelayCollector;
use super::shard_metrics::{PerLabel, zeroed};
use super::{Label, PortDrop, ShardMetrics, ShardStop};

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
    /// The relay is stopping (SIGTERM, or a shard stopped): unready whatever else holds.
    draining: AtomicBool,
    /// Shards that stopped on their own, by [`ShardStop`], and which ones (for `/readyz`).
    pub shard_stops: PerLabel<{ ShardStop::COUNT }>,
    stopped_shards: Mutex<Vec<(u16, ShardStop)>>,
    /// The routes the per-route families export, sorted (empty: `[metrics] per_route` off).
    pub routes: Mutex<Arc<Vec<String>>>,
    pub reloads: ReloadStats,
}

/// The configuration's loads: `relay_config_*`.
#[derive(Debug)]
pub(super) struct ReloadStats {
    /// Whether the last load (start-up counts as one) was taken.
    pub last_successful: AtomicBool,
    /// When the configuration in force was loaded, in seconds since the Unix epoch.
    pub last_success_unix: AtomicU64,
    /// Reloads asked for (SIGHUP), and those rejected.
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl HubState {
    pub fn ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Ready, or why not (the text `/readyz` answers with).
    pub fn readiness(&self) -> Result<(), String> {
        let stopped = self.stopped_shards.lock().unwrap_or_else(|e| e.into_inner());
        if !stopped.is_empty() {
            let names: Vec<String> =
                stopped.iter().map(|(shard, why)| format!("shard {shard} stopped ({})", why.as_str())).collect();
            return Err(names.join(", "));
        }
        if self.draining.load(Ordering::Acquire) {
            return Err("draining".into());
        }
        if !self.listeners_bound.load(Ordering::Acquire) || !self.shards_running.load(Ordering::Acquire) {
            return Err("starting".into());
        }
        Ok(())
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
            draining: AtomicBool::new(false),
            shard_stops: zeroed(),
            stopped_shards: Mutex::new(Vec::new()),
            routes: Mutex::new(Arc::new(Vec::new())),
            reloads: ReloadStats {
                last_successful: AtomicBool::new(true),
                last_success_unix: AtomicU64::new(unix_now()),
                attempts: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            },
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

    /// [`MetricsHub::ready`], or why not: "draining", "shard 1 stopped (panic)".
    pub fn readiness(&self) -> Result<(), String> {
        self.state.readiness()
    }

    /// The relay began to stop: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.state.draining.store(true, Ordering::Release);
    }

    /// A shard stopped on its own: counted, and the relay is unready from now on, naming it.
    pub fn shard_stopped(&self, shard: u16, why: ShardStop) {
        self.state.shard_stops[why.index()].fetch_add(1, Ordering::Relaxed);
        self.state.stopped_shards.lock().unwrap_or_else(|e| e.into_inner()).push((shard, why));
    }

    /// The routes the per-route families export from now on (`[metrics] per_route`): every
    /// configured route, idle or not, from start-up and after each reload; a route no longer
    /// listed loses its series.
    pub fn set_routes(&self, routes: impl IntoIterator<Item = String>) {
        let mut list: Vec<String> = routes.into_iter().collect();
        list.sort_unstable();
        list.dedup();
        *self.state.routes.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(list);
    }

    /// A reload was asked for and taken (`ok`) or rejected: `relay_config_last_reload_*`.
    pub fn reload_done(&self, ok: bool) {
        let r = &self.state.reloads;
        r.attempts.fetch_add(1, Ordering::Relaxed);
        if ok {
            r.last_success_unix.store(unix_now(), Ordering::Relaxed);
        } else {
            r.failures.fetch_add(1, Ordering::Relaxed);
        }
        r.last_successful.store(ok, Ordering::Relaxed);
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

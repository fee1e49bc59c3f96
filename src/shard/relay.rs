//! The shard's relay part: the sessions, the shared routes, the passthrough routes' health, the
//! parked POSTs and the settings in force.
//!
//! Its state is [`Relay`]; its code (in `relay/`) turns what the I/O part reports about a
//! connection into inputs of the `proto` values it holds (`proto::tunnel::Tunnel`,
//! `proto::shared_route::SharedRoute`), and their outputs into I/O asked of the driver.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Settings;
use crate::proto::session::AuthGate;

use super::Shared;
use super::camera_table::CameraTable;
use super::session_table::SessionTable;

/// What the relay part owns.
pub(in crate::shard) struct Relay {
    /// The configuration in force: swapped whole on reload.
    pub settings: Arc<Settings>,
    /// `[metrics] per_route`, as the last reload said (route health re-exports every route's
    /// state when it turns on).
    pub per_route_metrics: bool,
    /// The address failure limiter with the settings' limits, handed to every new session.
    pub auth_gate: Arc<dyn AuthGate>,
    /// The first listener's address: the authority of the relay's own URLs.
    pub local_authority: String,
    pub sessions: SessionTable,
    /// The shared routes this shard owns.
    pub cameras: CameraTable,
    /// Each passthrough route's camera health on this shard, by path.
    pub route_health: HashMap<String, crate::proto::camera_health::PassthroughHealth>,
    /// Parked POSTs by cookie.
    pub parked: HashMap<String, usize>,
    /// Seeds each session's randomness (seeded from the OS).
    pub rng: crate::proto::rng::Rng,
    pub draining_until: Option<Instant>,
}

impl Relay {
    pub fn new(settings: &Arc<Settings>, shared: &Shared, local_authority: String, seed: u64) -> Relay {
        Relay {
            settings: settings.clone(),
            per_route_metrics: settings.metrics_port.per_route,
            auth_gate: shared.auth_failures.gate(settings.auth.max_failures_per_ip, settings.core.failure_window),
            local_authority,
            sessions: SessionTable::new(),
            cameras: CameraTable::new(),
            route_health: HashMap::new(),
            parked: HashMap::new(),
            rng: crate::proto::rng::Rng::new(seed),
            draining_until: None,
        }
    }
}

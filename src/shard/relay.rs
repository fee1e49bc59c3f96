//! The shard's relay part: the sessions, the shared routes, the passthrough routes' health, the
//! parked POSTs and the settings in force.
//!
//! Its state is [`Relay`]; its code (in `relay/`, `impl Shard` blocks that own `self.relay`)
//! turns what the I/O part reports about a connection into inputs of the `proto` values it holds
//! (`proto::tunnel::Tunnel`, `proto::shared_route::SharedRoute`), and their outputs into
//! connection work asked of the I/O part: `Io`'s methods (`event_loop/io_api.rs`) and the
//! driver's `close_conn`, `refuse`, `queue_ring`, `connect_camera_link` and the like. It cannot
//! name the ring or the buffers, and has no `unsafe`. See `docs/architecture.md`, "The shard:
//! an I/O part and a relay part".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Route, Settings};
use crate::metrics::{Direction, Hist, Rejection, SessionOutcome, UpstreamErrorKind};
use crate::pairing::{GetRegistration, PostLookup, SessionRef};
use crate::proto::closing::flush_deadline;
use crate::proto::http_head;
use crate::proto::session::{self, AuthGate, Session, SessionParams, ViewerStream};
use crate::proto::tunnel::{self, CameraClose, Input, Tunnel};
use crate::proto::upstream_link::UpstreamLink;

mod camera_probe;
mod cameras;
mod connection_events;
mod fanout;
mod gop_budget;
mod housekeeping;
mod queries;
mod replicas;
mod route_health;
mod session_start;
mod tunnels;
mod web;

pub(in crate::shard) use fanout::CameraBytes;
pub(in crate::shard) use tunnels::Fed;

use super::Shared;
use super::camera_table::CameraTable;
use super::conn::{AfterFlush, Move, Phase, RecvState, Role, SessionKey};
use super::conn_table::Queued;
use super::event_loop::{Shard, http_date, send_now};
use super::mailbox::ShardMsg;
use super::send_queue::Timed;
use super::session_table::{SessionSlot, SessionTable};

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

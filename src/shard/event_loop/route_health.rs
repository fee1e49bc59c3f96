//! Each route's camera health as this shard sees it: the failure and recovery log lines
//! (`proto::camera_health` decides which), and the per-route series (`[metrics] per_route`),
//! set only when a route's state or viewer count changes, never per packet.
//!
//! A shared route's camera lives on one shard, and its route reports its own health
//! (`proto::shared_route`, logged here); a passthrough route's camera connections (one per
//! viewer) on any, so each shard keeps its own count here and the scrape merges them: a
//! passthrough route is up while any of its camera connections is open.

use super::*;
use crate::proto::camera_health::{CameraHealth, CameraState, HealthEvent};
use crate::proto::camera_session::CameraOutcome;

/// One passthrough route on this shard.
pub(super) struct RouteHealth {
    health: CameraHealth,
    /// Passthrough: camera connections open, and opening.
    open: u32,
    connecting: u32,
    /// Passthrough: sessions on the route.
    viewers: u32,
    /// Words to go with the next failure (the connect error the kernel gave).
    detail: Option<String>,
    /// Viewers and state as last seen: the metrics are set only when they change (and all of
    /// them again when a reload turns `per_route` on).
    seen: Option<(u64, CameraState)>,
}

impl RouteHealth {
    fn new(now: Instant) -> RouteHealth {
        RouteHealth { health: CameraHealth::new(now), open: 0, connecting: 0, viewers: 0, detail: None, seen: None }
    }
}

/// What happened to one passthrough camera connection or session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PassthroughEvent {
    SessionStarted,
    SessionEnded,
    Connecting,
    Connected,
    /// Its connect failed (the words were given with [`Shard::camera_failure_detail`]).
    ConnectFailed,
    /// An open connection closed (`failed`: the camera closed or reset it).
    Closed {
        failed: bool,
    },
    /// A connection still opening was abandoned (its session ended).
    Abandoned,
}

impl Shard {
    /// Words for the next failure of a passthrough `route`'s camera (a connect error, a name
    /// that did not resolve).
    pub(super) fn camera_failure_detail(&mut self, route: &str, detail: String) {
        let now = Instant::now();
        self.route_health.entry(route.to_owned()).or_insert_with(|| RouteHealth::new(now)).detail = Some(detail);
    }

    /// A passthrough session or camera connection of `route` changed.
    pub(super) fn passthrough_health(&mut self, route: &Route, event: PassthroughEvent) {
        if route.shared().is_some() {
            return;
        }
        let now = Instant::now();
        let opens = matches!(event, PassthroughEvent::SessionStarted | PassthroughEvent::Connecting);
        if opens && !self.route_health.contains_key(&route.path) {
            self.route_health.insert(route.path.clone(), RouteHealth::new(now));
        }
        // Nothing to take away from a route this shard forgot (removed by a reload).
        let Some(rh) = self.route_health.get_mut(&route.path) else { return };
        let mut events = [None, None];
        match event {
            PassthroughEvent::SessionStarted => rh.viewers += 1,
            PassthroughEvent::SessionEnded => rh.viewers = rh.viewers.saturating_sub(1),
            PassthroughEvent::Connecting => rh.connecting += 1,
            PassthroughEvent::Connected => {
                rh.connecting = rh.connecting.saturating_sub(1);
                rh.open += 1;
            }
            PassthroughEvent::Abandoned => rh.connecting = rh.connecting.saturating_sub(1),
            PassthroughEvent::ConnectFailed => {
                rh.connecting = rh.connecting.saturating_sub(1);
                let reason = match rh.detail.take() {
                    Some(d) => format!("{}: {d}", CameraOutcome::ConnectFailed.label()),
                    None => CameraOutcome::ConnectFailed.label().to_owned(),
                };
                events[0] = rh.health.failed(reason, now);
            }
            PassthroughEvent::Closed { failed } => {
                rh.open = rh.open.saturating_sub(1);
                if failed && rh.open == 0 {
                    events[0] = rh.health.failed(CameraOutcome::ClosedByCamera.label().to_owned(), now);
                }
            }
        }
        let state = CameraState::of_passthrough(rh.open, rh.connecting, rh.health.failing());
        events[1] = rh.health.set_state(state, now);
        let viewers = u64::from(rh.viewers);
        let changed = rh.seen != Some((viewers, state));
        rh.seen = Some((viewers, state));
        if self.per_route_metrics && changed {
            self.metrics.set_route(&route.path, viewers, state);
        }
        self.log_health(&route.path, "passthrough", events);
    }

    /// A camera failing is worth a warning once per state change; its recovery, a line at info.
    pub(super) fn log_health(&self, route: &str, mode: &'static str, events: [Option<HealthEvent>; 2]) {
        for event in events.into_iter().flatten() {
            match event {
                HealthEvent::Failing { reason, first: true } => {
                    tracing::warn!(shard = self.id, route = %route, mode, reason = %reason, "camera failing")
                }
                HealthEvent::Failing { reason, first: false } => {
                    tracing::warn!(shard = self.id, route = %route, mode, reason = %reason, "camera still failing, now for another reason")
                }
                HealthEvent::Recovered { failures, down_for } => tracing::info!(
                    shard = self.id,
                    route = %route,
                    mode,
                    failures,
                    down_secs = down_for.as_secs(),
                    "camera recovered"
                ),
            }
        }
    }

    /// After a reload: routes no longer configured are forgotten here and in the metrics.
    pub(super) fn prune_route_health(&mut self) {
        let routes = self.settings.routes.clone();
        let configured = |path: &str| routes.lookup(path).is_some_and(|r| r.path == path);
        self.route_health.retain(|path, _| configured(path));
        if !self.per_route_metrics {
            self.metrics.retain_routes(|_| false);
            return;
        }
        self.metrics.retain_routes(configured);
        // `per_route` may have just been turned on: every route's state as it stands.
        for (path, rh) in &self.route_health {
            if let Some((viewers, state)) = rh.seen {
                self.metrics.set_route(path, viewers, state);
            }
        }
        for ck in self.cameras.keys() {
            let Some(slot) = self.cameras.get(ck).filter(|s| !s.shared.is_closed()) else { continue };
            if let Some((viewers, state)) = slot.shared.health().seen() {
                self.metrics.set_route(&slot.route.path, viewers, state);
            }
        }
    }
}

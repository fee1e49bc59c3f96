//! Each route's camera health as this shard reports it: the per-route series (`[metrics]
//! per_route`), set only when a route's state or viewer count changes, never per packet, and
//! the failure and recovery log lines. What is news is the core's (`proto::camera_health`): a
//! shared route reports its own (`proto::shared_route`); a passthrough route's camera
//! connections (one per viewer) live on any shard, so each shard keeps its own count here and
//! the scrape merges them.

use super::*;
use crate::proto::camera_health::{CameraState, HealthEvent, HealthReport, PassthroughEvent, PassthroughHealth};

impl Shard {
    /// A passthrough session or camera connection of `route` changed.
    pub(in crate::shard) fn passthrough_health(&mut self, route: &Route, event: PassthroughEvent) {
        if route.shared().is_some() {
            return;
        }
        let now = Instant::now();
        if event.opens() && !self.relay.route_health.contains_key(&route.path) {
            self.relay.route_health.insert(route.path.clone(), PassthroughHealth::new(now));
        }
        // Nothing to take away from a route this shard forgot (removed by a reload).
        let Some(rh) = self.relay.route_health.get_mut(&route.path) else { return };
        let report = rh.on_event(event, now);
        self.report_health(&route.path, "passthrough", report);
    }

    /// Sets a route's series if they changed; a camera failing is worth a warning once per
    /// state change, its recovery a line at info.
    pub(in crate::shard) fn report_health(&self, route: &str, mode: &'static str, report: HealthReport) {
        if self.relay.per_route_metrics && report.changed {
            self.metrics.set_route(route, report.viewers, report.state);
        }
        for event in report.logs.into_iter().flatten() {
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
    pub(in crate::shard) fn prune_route_health(&mut self) {
        let routes = self.relay.settings.routes.clone();
        let configured = |path: &str| routes.lookup(path).is_some_and(|r| r.path == path);
        self.relay.route_health.retain(|path, _| configured(path));
        if !self.relay.per_route_metrics {
            self.metrics.retain_routes(|_| false);
            return;
        }
        self.metrics.retain_routes(configured);
        // `per_route` may have just been turned on: every route's state as it stands.
        let passthrough = self.relay.route_health.iter().map(|(path, rh)| (path.as_str(), rh.seen()));
        let shared = self
            .relay
            .cameras
            .keys()
            .into_iter()
            .filter_map(|ck| self.relay.cameras.get(ck))
            .filter(|s| !s.shared.is_closed());
        // A replica counts its viewers, its camera state is its home route's; the home route
        // counts each replica as one viewer.
        let shared = shared.map(|s| {
            let seen = s.shared.health().seen().map(|(viewers, state)| match s.home {
                Some(_) => (viewers, CameraState::Idle),
                None => (viewers.saturating_sub(s.replicas.len() as u64), state),
            });
            (s.route.path.as_str(), seen)
        });
        for (path, seen) in passthrough.chain(shared) {
            if let Some((viewers, state)) = seen {
                self.metrics.set_route(path, viewers, state);
            }
        }
    }
}

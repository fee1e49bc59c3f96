//! The relay part's share of the shard's housekeeping: its timers at each tick, a reload of the
//! configuration, the start of a drain, and the drain's end.

use super::*;

impl Relay {
    /// Starts draining by `grace` from now: every tunnel learns its deadline. `false` if the
    /// shard was draining already.
    pub(in crate::shard) fn begin_drain(&mut self, grace: Duration) -> bool {
        if self.draining_until.is_some() {
            return false;
        }
        let now = Instant::now();
        let deadline = now + grace;
        self.draining_until = Some(deadline);
        for (_, s) in self.sessions.iter_mut() {
            // Nothing to carry out: the tunnel only learns when it ends.
            s.tunnel.handle(Input::Drain { deadline }, now);
        }
        true
    }
}

impl Shard {
    /// The sessions' and shared routes' timers that are due.
    pub(in crate::shard) fn on_relay_tick(&mut self, now: Instant) {
        for key in self.relay.sessions.keys() {
            let Some(s) = self.session(key) else { continue };
            if s.tunnel.poll_timeout().is_some_and(|t| t <= now) {
                s.tunnel.handle_timeout(now);
                self.apply(key, Fed::Nothing);
            }
        }
        self.camera_timers(now);
    }

    /// Whether a draining shard's relay part is done: once the last viewer is gone, its cameras
    /// say TEARDOWN and close.
    pub(in crate::shard) fn relay_drained(&mut self) -> bool {
        if self.relay.draining_until.is_none() || !self.relay.sessions.is_empty() {
            return false;
        }
        let now = Instant::now();
        for ck in self.relay.cameras.keys() {
            self.close_camera(ck, now);
        }
        true
    }

    /// A reloaded configuration: one input to every tunnel, then one swap.
    pub(in crate::shard) fn reload(&mut self, settings: Arc<Settings>) {
        self.relay.auth_gate =
            self.shared.auth_failures.gate(settings.auth.max_failures_per_ip, settings.core.failure_window);
        // The rest (new WebSocket limits, PROXY sources, caps) applies to new connections
        // from the swap on.
        self.relay.per_route_metrics = settings.metrics_port.per_route;
        let now = Instant::now();
        let policy = settings.core.tunnel;
        for key in self.relay.sessions.keys() {
            if let Some(s) = self.session(key) {
                s.tunnel.handle(Input::Reload { routes: &settings.routes, policy }, now);
                self.apply(key, Fed::Nothing);
            }
        }
        self.relay.settings = settings;
        self.reload_cameras();
        self.prune_route_health();
    }
}

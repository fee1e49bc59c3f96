//! Shared cameras: one [`CameraSession`] per shared route, on the shard that owns the route
//! (a stable hash of its path), so that every viewer of a camera lives beside its connection
//! and one receive buffer is sent to all of them with no locks. A viewer's first connection
//! that reaches another shard moves there, head and all, before its session starts.
//!
//! A camera is driven like a tunnel: its outputs are carried out here, its timer checked at the
//! tick, and the viewers waiting on it (a DESCRIBE while it starts, a PLAY while it reconnects)
//! are told whenever it moves on. What each viewer receives is `fanout`'s.

use super::*;
use crate::config::SharedRoute;
use crate::proto::camera_demand::Mode;
use crate::proto::camera_session::{CameraOutput, CameraParams, CameraPhase, CameraSession, Reconfigured};
use crate::proto::shared_viewer::ViewerParams;
use crate::proto::tunnel::SharedInput;
use crate::shard::camera_table::CameraKey;

/// Announced to viewers as their session timeout (`Session: id;timeout=60`); a viewer silent for
/// 1.25 × this is closed.
const VIEWER_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
const RECONNECT_FIRST: Duration = Duration::from_secs(1);

impl Shard {
    /// The shard that owns a shared route's camera, and so its viewers.
    pub(super) fn owner_of(&self, route: &Route) -> u16 {
        crate::proto::route::home_shard(&route.path, self.shared.mailboxes.len())
    }

    /// A viewer's first connection moved here from another shard: its head is handled as if
    /// it had been read here.
    pub(super) fn adopt_viewer(&mut self, v: super::super::mailbox::AdoptViewer) {
        let from =
            Departing { fd: v.fd, peer: v.peer, accepted_at: v.accepted_at, tls: v.tls, counted_ip: v.counted_ip };
        let idx = self.conns.adopt(from, Some(crate::proto::greeting::Greeting::adopted(v.head)));
        match self.greet(idx, None) {
            Some(verdict) if verdict.is_final() => self.on_verdict(idx, verdict),
            // It was judged whole on the shard that read it.
            _ => self.close_conn(idx),
        }
    }

    fn camera_params(&mut self, route: &Route, shared: SharedRoute) -> CameraParams {
        let l = &self.settings.limits;
        CameraParams {
            url: route.upstream_url.clone(),
            addr: route.upstream_addr,
            credentials: route.credentials.clone(),
            mode: if shared.always_on { Mode::AlwaysOn } else { Mode::OnDemand { linger: shared.linger } },
            gop_cache_bytes: shared.gop_cache.then_some(l.gop_cache_bytes),
            gop_cache_packets: l.gop_cache_packets,
            limits: l.message_limits(),
            connect_timeout: self.settings.core.connect_timeout,
            response_timeout: self.settings.core.response_timeout,
            media_timeout: self.settings.core.camera_media_timeout,
            backoff_initial: RECONNECT_FIRST,
            backoff_max: Duration::from_millis(l.camera_reconnect_max_ms),
            seed: self.rng.next_u64(),
            fallback: route.fallback.as_ref().map(|f| crate::proto::camera_session::FallbackParams {
                url: f.url.clone(),
                addr: f.addr,
                credentials: f.credentials.clone(),
            }),
        }
    }

    /// How the relay answers a viewer of a shared route.
    pub(super) fn viewer_params(&mut self) -> ViewerParams {
        ViewerParams {
            session_seed: self.rng.next_u64(),
            session_timeout: VIEWER_SESSION_TIMEOUT,
            // As long as a camera may take to connect and answer.
            camera_wait: self.settings.core.connect_timeout + self.settings.core.response_timeout,
            max_pending: self.settings.limits.max_pending_requests,
        }
    }

    /// The camera of a shared route, created (its demand decides when it connects) if none.
    fn camera_for(&mut self, route: &Arc<Route>) -> Option<CameraKey> {
        let shared = route.shared()?;
        if let Some(ck) = self.cameras.find(&route.path) {
            return Some(ck);
        }
        let params = self.camera_params(route, shared);
        let camera = CameraSession::new(params, Instant::now());
        tracing::debug!(shard = self.id, route = %route.path, "shared camera opened");
        Some(self.cameras.insert(route.clone(), camera))
    }

    /// A tunnel of a shared route had its first request admitted: it counts towards its
    /// camera's demand from now (an on-demand camera starts connecting while the request waits).
    pub(super) fn attach_viewer(&mut self, key: SessionKey, route: &Arc<Route>) {
        let Some(ck) = self.camera_for(route) else { return };
        let Some(slot) = self.cameras.get_mut(ck) else { return };
        slot.attached.push(key);
        let viewers = slot.attached.len();
        slot.camera.set_viewers(viewers, Instant::now());
        self.metrics.viewer_attached();
        if let Some(s) = self.sessions.get_mut(key) {
            s.camera = Some(ck);
        }
        self.drive_camera(ck);
    }

    /// A tunnel of a shared route ended.
    pub(super) fn detach_viewer(&mut self, key: SessionKey, ck: CameraKey) {
        let Some(slot) = self.cameras.get_mut(ck) else { return };
        let before = slot.attached.len();
        slot.attached.retain(|k| *k != key);
        if slot.attached.len() == before {
            return;
        }
        slot.fanout.retain(|v| v.key != key);
        let viewers = slot.attached.len();
        slot.camera.set_viewers(viewers, Instant::now());
        self.metrics.viewer_detached();
        self.drive_camera(ck);
    }

    /// Hands a tunnel's input to its shared viewer with the camera's view, then carries out
    /// what the viewer asks for.
    pub(super) fn shared_input(&mut self, key: SessionKey, input: SharedInput) {
        let Some(ck) = self.sessions.get(key).and_then(|s| s.camera) else { return };
        let Some(slot) = self.cameras.get(ck) else { return };
        let Some(s) = self.sessions.get_mut(key) else { return };
        s.tunnel.handle_shared(input, &slot.camera.view(), Instant::now());
    }

    /// Carries out what a camera asked for.
    pub(super) fn drive_camera(&mut self, ck: CameraKey) {
        let mut changed = false;
        let mut failure = None;
        loop {
            let Some(slot) = self.cameras.get_mut(ck) else { return };
            let Some(o) = slot.camera.poll_output() else { break };
            match o {
                CameraOutput::Connect(addr) => self.connect_camera(ck, addr),
                CameraOutput::Send(bytes) => {
                    if let Some(c) = slot.conn {
                        self.queue_to_camera(c, bytes);
                    }
                }
                CameraOutput::Disconnect => {
                    if let Some(c) = slot.conn.take() {
                        self.let_camera_go(c);
                    }
                }
                CameraOutput::Up => {
                    if !slot.up {
                        slot.up = true;
                        self.metrics.camera_up();
                    }
                    changed = true;
                }
                CameraOutput::Down => {
                    if slot.up {
                        slot.up = false;
                        self.metrics.camera_down();
                    }
                    changed = true;
                }
                CameraOutput::PresentationChanged => {
                    // Viewers set up on the old tracks cannot go on: they reconnect.
                    for key in slot.attached.clone() {
                        self.end_session(key, SessionOutcome::CameraChanged);
                    }
                }
                CameraOutput::Ended(outcome) => {
                    self.metrics.camera_session_ended(outcome);
                    let route = &slot.route.path;
                    // A failure's warning (once per state change) is `route_health`'s.
                    tracing::debug!(shard = self.id, route = %route, outcome = outcome.label(), "camera session ended");
                    if outcome.is_failure() {
                        failure = Some(outcome);
                    }
                    changed = true;
                }
                CameraOutput::Reconnecting => self.metrics.camera_reconnect(),
                CameraOutput::SourceChanged(source) => self.camera_source_changed(ck, source),
                CameraOutput::GopCacheOverflow(bound) => self.metrics.gop_cache_overflow(bound),
                CameraOutput::Exchange(e) => {
                    tracing::debug!(
                        shard = self.id,
                        route = %slot.route.path,
                        method = e.method,
                        uri = %e.uri,
                        status = e.status,
                        latency_ms = %format_args!("{:.3}", e.latency.as_secs_f64() * 1e3),
                        "camera rtsp"
                    );
                    changed = true;
                }
            }
        }
        if changed {
            self.notify_viewers(ck);
        }
        self.sync_probe(ck);
        self.shared_camera_health(ck, failure);
        self.retire_camera_if_unused(ck);
    }

    /// The camera moved on: requests waiting on it are answered if they can be now.
    fn notify_viewers(&mut self, ck: CameraKey) {
        let Some(keys) = self.cameras.get(ck).map(|s| s.attached.clone()) else { return };
        for key in keys {
            self.shared_input(key, SharedInput::CameraChanged);
            self.apply(key, Fed::Nothing);
        }
    }

    /// A camera nobody attaches to, not connected and not always on, is forgotten.
    fn retire_camera_if_unused(&mut self, ck: CameraKey) {
        let Some(slot) = self.cameras.get(ck) else { return };
        let idle = matches!(slot.camera.phase(), CameraPhase::Idle | CameraPhase::Stopped);
        let always_on = slot.route.shared().is_some_and(|s| s.always_on) && slot.camera.phase() != CameraPhase::Stopped;
        if !idle || always_on || !slot.attached.is_empty() || slot.conn.is_some() {
            return;
        }
        if let Some(slot) = self.cameras.remove(ck) {
            if slot.up {
                self.metrics.camera_down();
            }
            if self.cameras.find(&slot.route.path).is_none() {
                self.shared_camera_retired(&slot.route.path);
            }
            tracing::debug!(shard = self.id, route = %slot.route.path, "shared camera closed");
        }
    }

    fn connect_camera(&mut self, ck: CameraKey, addr: SocketAddr) {
        // A camera whose name did not resolve when the configuration was loaded fails here, as
        // a refused connect would, and is retried (a reload resolves it again).
        let (link, unresolved) = self.live_camera_link(ck);
        let unresolved = unresolved.and_then(|why| Some((self.cameras.get(ck)?.route.path.clone(), why)));
        let idx = match unresolved {
            None => self.connect_camera_link(addr, Role::Camera(ck), &link),
            Some((path, why)) => {
                self.camera_failure_detail(&path, why.to_string());
                None
            }
        };
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.conn = idx;
            if idx.is_none() {
                slot.camera.handle_connect_failed(Instant::now());
            }
        }
    }

    /// A camera connection the camera session is done with: what was queued (its TEARDOWN)
    /// goes out, then it is half-closed and read to its end within `camera_close_grace_ms`.
    pub(super) fn let_camera_go(&mut self, idx: usize) {
        let grace = self.settings.core.tunnel.camera_close_grace;
        let Some(c) = self.conns.get_mut(idx) else { return };
        if c.is_closing() {
            return;
        }
        if c.connecting() {
            // Still connecting: nothing to say to it.
            self.close_conn(idx);
            return;
        }
        // No longer the camera's: what it still sends is read and dropped.
        self.linger_then_close(idx, grace, false);
        // A tunnel's TEARDOWN went up its POST: that one lingers too.
        if let Some(post) = self.camera_post_of(idx) {
            self.linger_then_close(post, grace, false);
        }
    }

    pub(super) fn on_camera_connect(&mut self, idx: usize, ck: CameraKey, res: i32) {
        if self.is_probe_conn(ck, idx) {
            return self.on_probe_connect(idx, ck, res);
        }
        let now = Instant::now();
        let current = self.cameras.get(ck).is_some_and(|s| s.conn == Some(idx));
        if !current {
            self.close_conn(idx);
            return;
        }
        if res == 0 {
            self.arm_recv(idx);
            if self.camera_link_connected(idx) {
                if let Some(slot) = self.cameras.get_mut(ck) {
                    slot.camera.handle_connected(now);
                }
            }
        } else {
            let error = std::io::Error::from_raw_os_error(-res);
            tracing::debug!(shard = self.id, camera = %self.conns[idx].peer(), error = %error, "camera connect failed");
            if let Some(path) = self.cameras.get(ck).map(|s| s.route.path.clone()) {
                self.camera_failure_detail(&path, error.to_string());
            }
            self.close_conn(idx);
            if let Some(slot) = self.cameras.get_mut(ck) {
                slot.conn = None;
                slot.camera.handle_connect_failed(now);
            }
        }
        self.drive_camera(ck);
    }

    /// The camera closed its connection, or it failed.
    pub(super) fn on_camera_closed(&mut self, idx: usize, ck: CameraKey) {
        if self.is_probe_conn(ck, idx) {
            return self.on_probe_closed(idx, ck, None);
        }
        self.close_conn(idx);
        let Some(slot) = self.cameras.get_mut(ck) else { return };
        if slot.conn != Some(idx) {
            return;
        }
        slot.conn = None;
        slot.camera.handle_camera_closed(Instant::now());
        self.drive_camera(ck);
    }

    /// Deadlines of the shard's cameras (connect, answers, keepalives, media, linger, backoff).
    pub(super) fn camera_timers(&mut self, now: Instant) {
        for ck in self.cameras.keys() {
            let Some(slot) = self.cameras.get_mut(ck) else { continue };
            if slot.camera.poll_timeout().is_some_and(|t| t <= now) {
                slot.camera.handle_timeout(now);
                self.drive_camera(ck);
            }
        }
    }

    /// Always-on routes this shard owns get their camera (at start-up and after a reload).
    pub(super) fn open_always_on_cameras(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        let routes = self.settings.routes.clone();
        for route in routes.routes() {
            let always_on = route.shared().is_some_and(|s| s.always_on);
            if always_on && self.owner_of(route) == self.id && self.cameras.find(&route.path).is_none() {
                let route = Arc::new(route.clone());
                if let Some(ck) = self.camera_for(&route) {
                    self.drive_camera(ck);
                }
            }
        }
    }

    /// After a reload: a camera whose route is gone, or no longer shared the same way, closes
    /// (its viewers' tunnels end on their own, as for any route removed); a kept one takes the
    /// new settings, and its camera session decides what a changed camera means for its viewers
    /// (`CameraSession::reconfigure`); new always-on routes open theirs.
    pub(super) fn reload_cameras(&mut self) {
        let now = Instant::now();
        for ck in self.cameras.keys() {
            let Some(slot) = self.cameras.get(ck) else { continue };
            // A camera already closing for an earlier reload is left to finish.
            if self.cameras.find(&slot.route.path) != Some(ck) {
                continue;
            }
            let next = self.settings.routes.routes().iter().find(|r| slot.route.keeps_sessions_under(r));
            let Some((route, shared)) = next.and_then(|r| Some((r.clone(), r.shared()?))) else {
                self.close_camera(ck, now);
                continue;
            };
            let params = self.camera_params(&route, shared);
            if let Some(slot) = self.cameras.get_mut(ck) {
                slot.route = route;
                if slot.camera.reconfigure(params, now) == Reconfigured::Reopened {
                    tracing::info!(shard = self.id, route = %slot.route.path, "camera changed by reload: reopened");
                }
            }
            self.drive_camera(ck);
        }
        self.open_always_on_cameras();
    }

    /// Closes a camera for good (TEARDOWN if a session is up): its route changed, or the shard
    /// stops. Its viewers' tunnels have ended by then (the same rule ends them); one still
    /// attached is ended rather than left with no camera.
    pub(super) fn close_camera(&mut self, ck: CameraKey, now: Instant) {
        self.cameras.unlist(ck);
        let attached = self.cameras.get(ck).map(|s| s.attached.clone()).unwrap_or_default();
        for key in attached {
            self.end_session(key, SessionOutcome::RouteRemoved);
        }
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.camera.close(now);
        }
        self.drive_camera(ck);
    }
}

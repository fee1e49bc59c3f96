//! Shared routes: one [`SharedRoute`] per shared route, on the shard that owns the route (a
//! stable hash of its path), so that every viewer of a camera lives beside its connection and
//! one receive buffer is sent to all of them with no locks. A viewer's first connection that
//! reaches another shard moves there, head and all, before its session starts, unless the route
//! is hot (`[runtime] hot_route_viewers`): then that shard serves it from a replica of the route
//! (`replicas.rs`), a `SharedRoute` like this one whose camera is a link to the home route.
//!
//! The route decides everything (the camera's dialogue, timers and backoff, each viewer's
//! answers and media, when its camera is retired, its health); this hands it session keys,
//! bytes and the time, and carries out its actions (`fanout` its receives' plans).

use super::replicas::replica_params;
use super::*;
use crate::proto::camera_health::CameraState;
use crate::proto::camera_session::Reconfigured;
use crate::proto::camera_source::Source;
use crate::proto::gop_budget::GopAccount;
use crate::proto::rtsp::Message;
use crate::proto::shared_route::{Action, RouteEvent, RouteParams, SharedRoute, ViewerEnd};
use crate::shard::camera_table::CameraKey;
use crate::shard::replica_link::RouteViewer;

impl Shard {
    /// The shard that owns a shared route's camera, and so its viewers.
    pub(in crate::shard) fn owner_of(&self, route: &Route) -> u16 {
        crate::proto::route::home_shard(&route.path, self.shared.mailboxes.len())
    }

    /// A shared route's parameters from the settings in force; its GOP cache draws from the
    /// relay-wide budget, counted in this shard's tally.
    fn route_params(&mut self, route: &Route) -> Option<RouteParams> {
        let account = GopAccount::new(self.shared.gop_budget.clone(), self.metrics.gop.clone());
        self.relay.settings.shared_route_params(
            route,
            [self.relay.rng.next_u64(), self.relay.rng.next_u64()],
            Some(account),
        )
    }

    /// The shared route at `route`'s path, made if none: on another shard than its home, a
    /// replica of it (`relay/replicas.rs`).
    pub(in crate::shard) fn camera_for(&mut self, route: &Arc<Route>) -> Option<CameraKey> {
        if let Some(ck) = self.relay.cameras.find(&route.path) {
            return Some(ck);
        }
        let home = Some(self.owner_of(route)).filter(|h| *h != self.id);
        let mut params = self.route_params(route)?;
        if home.is_some() {
            replica_params(&mut params);
            self.metrics.replica_opened();
        }
        Some(self.relay.cameras.insert(route.clone(), SharedRoute::new(params, Instant::now()), home))
    }

    /// A request a shared route's session admitted: its first one attaches the tunnel to the
    /// route (its demand: an on-demand camera starts connecting while the request waits; an
    /// unauthenticated viewer makes no camera connection), then the route answers it.
    pub(in crate::shard) fn shared_request(&mut self, key: SessionKey, msg: Message) {
        let now = Instant::now();
        let Some(s) = self.relay.sessions.get(key) else { return };
        let ck = match s.camera {
            Some(ck) => ck,
            None => {
                let Some(route) = s.tunnel.session().route().cloned() else { return };
                let (map, started_at) = (s.tunnel.session().url_map().cloned(), s.started_at);
                let Some(ck) = self.camera_for(&route) else { return };
                let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
                if slot.shared.attach(RouteViewer::Session(key), map, started_at, now) {
                    self.metrics.viewer_attached();
                }
                if let Some(s) = self.relay.sessions.get_mut(key) {
                    s.camera = Some(ck);
                }
                ck
            }
        };
        if let Some(slot) = self.relay.cameras.get_mut(ck) {
            slot.shared.handle_request(RouteViewer::Session(key), msg, now);
        }
        // Its tunnel's outputs are being carried out: it is told its backlog after them, not
        // here (its next pipelined request would be handled inside this one's).
        self.drive_route(ck, Some(key));
    }

    /// A shared route's viewer sent an RTCP report.
    pub(in crate::shard) fn shared_viewer_frame(&mut self, key: SessionKey) {
        let Some(ck) = self.relay.sessions.get(key).and_then(|s| s.camera) else { return };
        if let Some(slot) = self.relay.cameras.get_mut(ck) {
            slot.shared.handle_viewer_frame(RouteViewer::Session(key), Instant::now());
        }
    }

    /// A tunnel of a shared route ended.
    pub(in crate::shard) fn detach_viewer(&mut self, key: SessionKey, ck: CameraKey) {
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        if slot.shared.detach(RouteViewer::Session(key), Instant::now()) {
            self.metrics.viewer_detached();
            self.drive_camera(ck);
        }
    }

    /// Carries out what a shared route asked for, and counts and logs what happened.
    pub(in crate::shard) fn drive_camera(&mut self, ck: CameraKey) {
        self.drive_route(ck, None);
    }

    /// [`Shard::drive_camera`]; `carrying`: the session whose tunnel's outputs are being
    /// carried out (told its backlog by that, after).
    fn drive_route(&mut self, ck: CameraKey, carrying: Option<SessionKey>) {
        // Viewers given answers or replays: their tunnels are told their backlog after.
        let mut fed: Vec<SessionKey> = Vec::new();
        loop {
            let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
            if let Some(e) = slot.shared.poll_event() {
                self.on_route_event(ck, e);
                continue;
            }
            let Some(a) = slot.shared.poll_action() else { break };
            let replica = slot.home.is_some();
            match a {
                // A replica's camera is the link to its home route.
                Action::Connect { .. } if replica => self.open_link(ck),
                Action::SendToCamera(bytes) if replica => self.send_on_link(ck, bytes),
                Action::CloseCamera if replica => self.close_link(ck),
                Action::Connect { addr, source } => self.connect_camera(ck, addr, source),
                Action::SendToCamera(bytes) => {
                    if let Some(c) = slot.conn {
                        // Only the route's own requests: viewers' bytes never reach a shared camera.
                        let _ = self.queue_to_camera(c, bytes);
                    }
                }
                Action::CloseCamera => {
                    if let Some(c) = slot.conn.take() {
                        self.let_camera_go(c);
                    }
                }
                Action::ToViewer { viewer: RouteViewer::Replica(shard), bytes } => {
                    if let Some(feed) = slot.replicas.iter_mut().find(|f| f.replica == shard) {
                        feed.out.extend_from_slice(&bytes);
                    }
                }
                Action::ToViewer { viewer: RouteViewer::Session(viewer), bytes } => {
                    if let Some(v) = self.relay.sessions.get(viewer).and_then(|s| s.viewer) {
                        self.io.queue_answer(v, bytes);
                        if !fed.contains(&viewer) && carrying != Some(viewer) {
                            fed.push(viewer);
                        }
                    }
                }
                Action::Deliver(d) => {
                    let (sent, copied) = self.carry_out_plan(ck, std::slice::from_ref(&d), None, Instant::now());
                    self.count_sent(sent, copied);
                }
                Action::ConnectProbe(addr) => self.connect_probe(ck, addr),
                Action::SendToProbe(bytes) => {
                    if let Some(c) = slot.probe_conn {
                        self.queue_to_camera(c, bytes);
                    }
                }
                Action::CloseProbe => {
                    if let Some(c) = slot.probe_conn.take() {
                        self.let_camera_go(c);
                    }
                }
                Action::ProbeIsCamera => slot.conn = slot.probe_conn.take(),
                Action::EndViewer { viewer: RouteViewer::Replica(shard), .. } => self.end_replica(ck, shard),
                Action::EndViewer { viewer: RouteViewer::Session(viewer), reason } => {
                    let outcome = match reason {
                        ViewerEnd::Timeout => {
                            self.metrics.rejected(Rejection::IdleTimeout);
                            SessionOutcome::Timeout
                        }
                        ViewerEnd::ProtocolError => SessionOutcome::ProtocolError,
                        ViewerEnd::CameraChanged => SessionOutcome::CameraChanged,
                        ViewerEnd::RouteRemoved => SessionOutcome::RouteRemoved,
                    };
                    self.end_session(viewer, outcome);
                }
            }
        }
        for key in fed {
            self.update_upstream_flow(key);
        }
        self.post_to_replicas(ck);
        if self.relay.cameras.get(ck).is_some_and(|s| s.shared.is_done()) {
            if let Some(slot) = self.relay.cameras.remove(ck) {
                if slot.home.is_some() {
                    self.metrics.replica_closed();
                }
                tracing::debug!(shard = self.id, route = %slot.route.path, "shared route closed");
            }
        }
    }

    fn on_route_event(&mut self, ck: CameraKey, e: RouteEvent<RouteViewer>) {
        let Some(slot) = self.relay.cameras.get(ck) else { return };
        let route = &slot.route.path;
        if slot.home.is_some() {
            // A replica's camera is a link to the home route, which reports the camera.
            match e {
                RouteEvent::Reconnecting => return self.metrics.replica_reconnect(),
                RouteEvent::CameraExchange(e) => {
                    return tracing::debug!(shard = self.id, route = %route, method = e.method, status = e.status, "replica rtsp");
                }
                RouteEvent::CameraOpened
                | RouteEvent::CameraRetired
                | RouteEvent::CameraUp
                | RouteEvent::CameraDown
                | RouteEvent::CameraEnded(_)
                | RouteEvent::SourceChanged(_)
                | RouteEvent::ProbeEnded(_) => return,
                // Its viewers count towards the route's; its camera state is the home's.
                RouteEvent::Health(report) => {
                    if self.relay.per_route_metrics && report.changed {
                        self.metrics.set_route(route, report.viewers, CameraState::Idle);
                    }
                    return;
                }
                _ => {}
            }
        }
        match e {
            RouteEvent::CameraOpened => tracing::debug!(shard = self.id, route = %route, "shared camera opened"),
            RouteEvent::CameraRetired => tracing::debug!(shard = self.id, route = %route, "shared camera closed"),
            RouteEvent::CameraUp => self.metrics.camera_up(),
            RouteEvent::CameraDown => self.metrics.camera_down(),
            RouteEvent::CameraEnded(outcome) => {
                self.metrics.camera_session_ended(outcome);
                // A failure's warning (once per state change) is the route's `HealthLog`.
                tracing::debug!(shard = self.id, route = %route, outcome = outcome.label(), "camera session ended");
            }
            RouteEvent::Reconnecting => self.metrics.camera_reconnect(),
            RouteEvent::SourceChanged(source) => self.camera_source_changed(ck, source),
            RouteEvent::ProbeEnded(outcome) => {
                self.metrics.camera_session_ended(outcome);
                tracing::debug!(shard = self.id, route = %route, outcome = outcome.label(), "primary camera probe ended");
            }
            RouteEvent::GopCacheOverflow(bound) => self.metrics.gop_cache_overflow(bound),
            RouteEvent::CameraExchange(e) => tracing::debug!(
                shard = self.id,
                route = %route,
                method = e.method,
                uri = %e.uri,
                status = e.status,
                latency_ms = %format_args!("{:.3}", e.latency.as_secs_f64() * 1e3),
                "camera rtsp"
            ),
            // A route closing for a reload speaks for its path only while no other does.
            RouteEvent::Health(mut report) if self.relay.cameras.find(route).is_none_or(|c| c == ck) => {
                // Each replica is one viewer here; its shard counts its own viewers.
                report.viewers = report.viewers.saturating_sub(slot.replicas.len() as u64);
                self.report_health(route, "shared", report)
            }
            RouteEvent::Health(_) => {}
            // The replica's own dialogue with the home route is not a viewer's.
            RouteEvent::ViewerExchange { viewer: RouteViewer::Replica(_), .. }
            | RouteEvent::ViewerPlaying { viewer: RouteViewer::Replica(_), .. } => {}
            RouteEvent::ViewerExchange { viewer: RouteViewer::Session(viewer), exchange: e } => {
                let method = crate::proto::outcome::RtspMethod::from_name(&e.method);
                self.metrics.observe(Hist::RtspRequest(method), e.waited);
                let id = self.relay.sessions.get(viewer).map_or(0, |s| s.id);
                let e = session::Exchange {
                    method: e.method,
                    uri: e.uri,
                    status: e.status,
                    latency: e.waited,
                    by_relay: true,
                };
                super::tunnels::log_exchange(self.id, id, route, &e);
            }
            RouteEvent::ViewerRefused { reason, .. } => self.metrics.rejected(reason),
            RouteEvent::ViewerPlaying { setup, .. } => self.metrics.observe(Hist::SessionSetup, setup),
        }
    }

    fn connect_camera(&mut self, ck: CameraKey, addr: SocketAddr, source: Source) {
        let link = self.camera_link_of(ck, source);
        let idx = self.connect_camera_link(addr, Role::Camera(ck), &link);
        if let Some(slot) = self.relay.cameras.get_mut(ck) {
            slot.conn = idx;
            if idx.is_none() {
                slot.shared.handle_connect_failed(None, Instant::now());
            }
        }
    }

    /// A camera connection the route is done with: what was queued (its TEARDOWN) goes out,
    /// then it is half-closed and read to its end within `camera_close_grace_ms`.
    pub(in crate::shard) fn let_camera_go(&mut self, idx: usize) {
        let grace = self.relay.settings.core.tunnel.camera_close_grace;
        let Some(c) = self.io.conn(idx) else { return };
        if c.is_closing() {
            return;
        }
        if c.connecting() {
            // Still connecting: nothing to say to it.
            self.close_conn(idx);
            return;
        }
        // No longer the camera's: what it still sends is read and dropped.
        self.io.linger_then_close(idx, grace, false);
        // A tunnel's TEARDOWN went up its POST: that one lingers too.
        if let Some(post) = self.camera_post_of(idx) {
            self.io.linger_then_close(post, grace, false);
        }
    }

    pub(in crate::shard) fn on_camera_connect(&mut self, idx: usize, ck: CameraKey, res: i32) {
        if self.is_probe_conn(ck, idx) {
            return self.on_probe_connect(idx, ck, res);
        }
        let now = Instant::now();
        let current = self.relay.cameras.get(ck).is_some_and(|s| s.conn == Some(idx));
        if !current {
            self.close_conn(idx);
            return;
        }
        if res == 0 {
            self.io.arm_recv(idx);
            if self.camera_link_connected(idx) {
                if let Some(slot) = self.relay.cameras.get_mut(ck) {
                    slot.shared.handle_connected(now);
                }
            }
        } else {
            let error = std::io::Error::from_raw_os_error(-res);
            if let Some(c) = self.io.conn(idx) {
                tracing::debug!(shard = self.id, camera = %c.peer(), error = %error, "camera connect failed");
            }
            self.close_conn(idx);
            if let Some(slot) = self.relay.cameras.get_mut(ck) {
                slot.conn = None;
                slot.shared.handle_connect_failed(Some(error.to_string()), now);
            }
        }
        self.drive_camera(ck);
    }

    /// The camera closed its connection, or it failed.
    pub(in crate::shard) fn on_camera_closed(&mut self, idx: usize, ck: CameraKey) {
        if self.is_probe_conn(ck, idx) {
            return self.on_probe_closed(idx, ck);
        }
        self.close_conn(idx);
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        if slot.conn != Some(idx) {
            return;
        }
        slot.conn = None;
        slot.shared.handle_camera_closed(Instant::now());
        self.drive_camera(ck);
    }

    /// Deadlines of the shard's shared routes (the camera's, its viewers').
    pub(in crate::shard) fn camera_timers(&mut self, now: Instant) {
        for ck in self.relay.cameras.keys() {
            let Some(slot) = self.relay.cameras.get_mut(ck) else { continue };
            if slot.shared.poll_timeout().is_some_and(|t| t <= now) {
                slot.shared.handle_timeout(now);
                self.drive_camera(ck);
            }
        }
    }

    /// Always-on routes this shard owns get their camera (at start-up and after a reload).
    pub(in crate::shard) fn open_always_on_cameras(&mut self) {
        if self.relay.draining_until.is_some() {
            return;
        }
        let routes = self.relay.settings.routes.clone();
        for route in routes.routes() {
            let always_on = route.shared().is_some_and(|s| s.always_on);
            if always_on && self.owner_of(route) == self.id && self.relay.cameras.find(&route.path).is_none() {
                if let Some(ck) = self.camera_for(route) {
                    self.drive_camera(ck);
                }
            }
        }
    }

    /// After a reload: a route gone, or no longer shared the same way, closes (its viewers'
    /// tunnels end on their own, as for any route removed); a kept one takes the new settings
    /// (`SharedRoute::reconfigure`), its viewers' URLs mapped as their sessions now map them;
    /// new always-on routes open theirs.
    pub(in crate::shard) fn reload_cameras(&mut self) {
        let now = Instant::now();
        for ck in self.relay.cameras.keys() {
            let Some(slot) = self.relay.cameras.get(ck) else { continue };
            // A route already closing for an earlier reload is left to finish.
            if slot.shared.is_closed() {
                continue;
            }
            let next = self.relay.settings.routes.routes().iter().find(|r| slot.route.keeps_sessions_under(r)).cloned();
            let replica = slot.home.is_some();
            let Some((route, mut params)) = next.and_then(|r| Some((r.clone(), self.route_params(&r)?))) else {
                self.close_camera(ck, now);
                continue;
            };
            if replica {
                replica_params(&mut params);
            }
            let Some(slot) = self.relay.cameras.get_mut(ck) else { continue };
            slot.route = route;
            if slot.shared.reconfigure(params, now) == Reconfigured::Reopened {
                tracing::info!(shard = self.id, route = %slot.route.path, "camera changed by reload: reopened");
            }
            let viewers: Vec<SessionKey> = slot.shared.viewers().filter_map(RouteViewer::session).collect();
            for key in viewers {
                let map = self.relay.sessions.get(key).and_then(|s| s.tunnel.session().url_map().cloned());
                if let (Some(map), Some(slot)) = (map, self.relay.cameras.get_mut(ck)) {
                    slot.shared.set_url_map(RouteViewer::Session(key), map);
                }
            }
            self.drive_camera(ck);
        }
        self.open_always_on_cameras();
    }

    /// Closes a shared route for good (TEARDOWN if its camera is up): its route changed, or
    /// the shard stops. Its viewers' tunnels have ended by then (the same rule ends them); one
    /// still attached is ended rather than left with no camera.
    pub(in crate::shard) fn close_camera(&mut self, ck: CameraKey, now: Instant) {
        self.relay.cameras.unlist(ck);
        if let Some(slot) = self.relay.cameras.get_mut(ck) {
            slot.shared.close(now);
        }
        self.drive_camera(ck);
    }
}

//! Tunnels: created, fed, their outputs carried out, ended. What a tunnel decides is in
//! `proto::tunnel`; this file turns its outputs into connection work.

use super::*;
use crate::proto::camera_health::PassthroughEvent;
use crate::shard::conn_table::FrameBytes;

/// What the outputs being carried out refer to.
#[derive(Clone, Copy)]
pub(in crate::shard) enum Fed {
    Nothing,
    /// Camera bytes in this ring buffer, received at this instant.
    CameraChunk(u16, Instant),
    /// Camera bytes decrypted into the shard's `plain` buffer (a TLS camera), received then.
    CameraPlain(Instant),
    /// The POST connection just reported to the tunnel.
    Post(usize),
}

/// How a session's viewer came, as logged.
fn mode_label(kind: tunnel::Kind) -> &'static str {
    match kind {
        tunnel::Kind::Http => "tunnel",
        tunnel::Kind::Plain => "rtsp",
        tunnel::Kind::WebSocket => "websocket",
    }
}

/// One request and its answer, at debug.
pub(in crate::shard) fn log_exchange(shard: u16, session: u64, route: &str, e: &session::Exchange) {
    tracing::debug!(
        shard,
        session = %format_args!("{shard}-{session}"),
        route,
        method = %e.method,
        // A `?jwt=` token never reaches the log.
        uri = %crate::proto::external_auth::without_token(&e.uri),
        status = e.status,
        latency_ms = %format_args!("{:.3}", e.latency.as_secs_f64() * 1e3),
        answered_by = if e.by_relay { "relay" } else { "camera" },
        "rtsp"
    )
}

impl Shard {
    pub(in crate::shard) fn new_session(
        &mut self,
        route: Option<Arc<Route>>,
        kind: tunnel::Kind,
        viewer_tls: bool,
        peer: SocketAddr,
        started_at: Instant,
        bearer: Option<String>,
    ) -> SessionKey {
        let params = SessionParams {
            limits: self.relay.settings.limits.message_limits(),
            response_timeout: self.relay.settings.core.response_timeout,
            request_timeout: self.relay.settings.core.request_timeout,
            // Per-session seeds for Digest cnonces and nonces, from the shard's OS-seeded generator.
            cnonce_seed: self.relay.rng.next_u64(),
            viewer_ip: peer.ip(),
            viewer_tls,
            nonce_ttl: self.relay.settings.core.nonce_ttl,
            max_pending_requests: self.relay.settings.limits.max_pending_requests,
            post_from_any_address: self.relay.settings.auth.post_from_any_address,
            auth_gate: self.relay.auth_gate.clone(),
            access: session::AccessParams {
                method: self.relay.settings.auth.method.method(),
                basic_over_plain: self.relay.settings.auth.basic_over_plain,
                // The authorizer's own timeouts come first; this only bounds a lost answer.
                verdict_timeout: self.relay.settings.auth.verdict_timeout(),
                bearer,
                caps: self.shared.viewer_caps.clone(),
                realm: self.relay.settings.auth.realm.clone(),
            },
        };
        let route_path = route.as_ref().map(|r| r.path.clone());
        let proto = Session::new(params, route, &self.relay.local_authority, started_at);
        let mut t = Tunnel::new(proto, kind, self.relay.settings.core.tunnel, started_at);
        if let Some(deadline) = self.relay.draining_until {
            t.handle(Input::Drain { deadline }, started_at);
        }
        let (key, id) = self.relay.sessions.insert(t, peer, started_at);
        self.metrics.session_started();
        self.passthrough_route(key);
        tracing::info!(
            target: "session",
            session = %format_args!("{}-{}", self.id, id),
            route = route_path.as_deref().unwrap_or("-"),
            peer = %peer,
            mode = mode_label(kind),
            "session started"
        );
        key
    }

    /// The external authorizer answered: the session's waiting requests go on or are refused.
    pub(in crate::shard) fn on_auth_verdict(
        &mut self,
        key: SessionKey,
        id: u64,
        verdict: crate::proto::external_auth::Verdict,
    ) {
        let routes = &*self.relay.settings.routes;
        let Some(s) = self.relay.sessions.get_mut(key) else { return };
        s.tunnel.handle(Input::AuthVerdict { id, verdict, routes }, self.io.reaped_at);
        self.apply(key, Fed::Nothing);
    }

    /// Sends a session's question to the authorizer; the answer comes back by the mailbox.
    fn ask_authorizer(&mut self, key: SessionKey, query: crate::proto::external_auth::AuthQuery) {
        use crate::proto::external_auth::{Protocol, Verdict};
        let Some(s) = self.relay.sessions.get(key) else { return };
        let protocol = match s.tunnel.kind() {
            tunnel::Kind::Http => Protocol::Tunnel,
            tunnel::Kind::Plain => Protocol::Rtsp,
            tunnel::Kind::WebSocket => Protocol::WebSocket,
        };
        let id = query.id;
        let mailbox = self.shared.mailboxes[self.id as usize].clone();
        let session_key = key.pack();
        let reply: crate::auth_worker::Reply = Box::new(move |verdict| {
            // A stopped shard has no session to tell.
            let _ = mailbox.post(ShardMsg::AuthVerdict { session_key, id, verdict });
        });
        let job = crate::auth_worker::AuthJob { query, protocol, session: format!("{}-{}", self.id, s.id), reply };
        if !self.shared.authorizer.submit(job) {
            let routes = &*self.relay.settings.routes;
            if let Some(s) = self.relay.sessions.get_mut(key) {
                s.tunnel.handle(Input::AuthVerdict { id, verdict: Verdict::Error, routes }, self.io.reaped_at);
            }
        }
    }

    /// The passthrough route a session counts towards in its route's health, from when its route
    /// is known (its head, or a plain RTSP connection's first request).
    pub(in crate::shard) fn passthrough_route(&mut self, key: SessionKey) -> Option<Arc<Route>> {
        let s = self.relay.sessions.get(key)?;
        if let Some(r) = &s.health_route {
            return Some(r.clone());
        }
        let route = s.tunnel.session().route().filter(|r| r.shared().is_none()).cloned()?;
        self.passthrough_health(&route, PassthroughEvent::SessionStarted);
        if let Some(s) = self.relay.sessions.get_mut(key) {
            s.health_route = Some(route.clone());
        }
        Some(route)
    }

    pub(in crate::shard) fn session(&mut self, key: SessionKey) -> Option<&mut SessionSlot> {
        self.relay.sessions.get_mut(key)
    }

    pub(in crate::shard) fn feed_viewer(&mut self, key: SessionKey, stream: ViewerStream, bytes: &[u8]) {
        let routes = &*self.relay.settings.routes;
        if let Some(s) = self.relay.sessions.get_mut(key) {
            // Viewer activity is the tunnel's to judge (whole messages and frames only).
            s.tunnel.handle(Input::ViewerBytes { stream, bytes, routes }, self.io.reaped_at);
        }
        self.apply(key, Fed::Nothing);
    }

    /// Carries out what the tunnel asked for, then tells it how far behind its viewer is (which
    /// may pause or resume the camera).
    pub(in crate::shard) fn apply(&mut self, key: SessionKey, fed: Fed) {
        self.carry_out(key, fed);
        self.update_upstream_flow(key);
    }

    /// Reports the viewer's backlog to the tunnel: backpressure is its decision. A shared
    /// camera is never held back for one viewer (`fanout` judges each alone; the tunnel has no
    /// camera of its own to pause), but the viewer's own reading is, on every route.
    pub(in crate::shard) fn update_upstream_flow(&mut self, key: SessionKey) {
        let Some(s) = self.relay.sessions.get_mut(key) else {
            return;
        };
        let Some(queued) = s.viewer.and_then(|v| self.io.conn(v)).map(|c| c.send().queued()) else {
            return;
        };
        s.tunnel.handle(Input::ViewerBacklog(queued), self.io.reaped_at);
        self.carry_out(key, Fed::Nothing);
    }

    /// What the tunnel counts and logs: metrics and the request log, never connection work.
    fn record_events(&mut self, key: SessionKey) {
        use tunnel::Event;
        let Some(s) = self.relay.sessions.get_mut(key) else { return };
        while let Some(e) = s.tunnel.poll_event() {
            match e {
                Event::FramesToCamera(n) => self.metrics.frames(Direction::ToCamera, n as u64),
                Event::Observe(h, d) => self.metrics.observe(h, d),
                Event::Rejected(r) => self.metrics.rejected(r),
                // The session recorded it with the address's failures (its `AuthGate`).
                Event::AuthFailed(f) => self.metrics.auth_failure(f),
                Event::UpstreamError(k) => self.metrics.upstream_error(k),
                Event::Exchange(e) => {
                    log_exchange(self.id, s.id, s.tunnel.session().route().map_or("-", |r| r.path.as_str()), &e)
                }
            }
        }
    }

    fn carry_out(&mut self, key: SessionKey, fed: Fed) {
        use tunnel::Output as Out;
        loop {
            // Events first: an action may end the session, and its tunnel with it.
            self.record_events(key);
            let Some(s) = self.relay.sessions.get_mut(key) else {
                return;
            };
            let Some(o) = s.tunnel.poll_output() else { return };
            match o {
                Out::ToViewer(bytes) => {
                    if let Some(v) = s.viewer {
                        self.io.queue_answer(v, bytes);
                    }
                }
                Out::ForwardToViewer { range, frames } if matches!(fed, Fed::CameraPlain(_)) => {
                    let (Some(v), Fed::CameraPlain(at), Some(bytes)) = (s.viewer, fed, self.io.plain.get(range)) else {
                        continue;
                    };
                    if bytes.is_empty() {
                        continue;
                    }
                    let header = match self.io.ws_header(v, bytes.len()) {
                        None => None,
                        Some(Some(header)) => Some(header),
                        Some(None) => continue,
                    };
                    let bytes = bytes::Bytes::copy_from_slice(bytes);
                    let timed = Timed { received_at: at, frames };
                    self.io.queue_frame(v, header, None, FrameBytes::Shared(&bytes), timed);
                    if frames > 0 {
                        self.metrics.frames(Direction::ToViewer, frames as u64);
                    }
                }
                Out::ForwardToViewer { range, frames } => {
                    let (Some(v), Fed::CameraChunk(bid, at)) = (s.viewer, fed) else {
                        continue;
                    };
                    if range.is_empty() {
                        continue;
                    }
                    let header = match self.io.ws_header(v, range.len()) {
                        None => None,
                        Some(Some(header)) => Some(header),
                        Some(None) => continue,
                    };
                    self.queue_ring(v, header, bid, range, Timed { received_at: at, frames });
                    if frames > 0 {
                        self.metrics.frames(Direction::ToViewer, frames as u64);
                    }
                }
                Out::ToCamera(bytes) => {
                    if let Some(u) = s.upstream {
                        if let Some(queued) = self.queue_to_camera(u, bytes) {
                            if let Some(s) = self.relay.sessions.get_mut(key) {
                                s.tunnel.handle(Input::CameraBacklog(queued), self.io.reaped_at);
                            }
                        }
                    }
                }
                Out::ConnectCamera(addr) => self.connect_upstream(key, addr),
                Out::Authorize(query) => self.ask_authorizer(key, query),
                Out::End(outcome) => self.end_session(key, outcome),
                Out::BindPost => {
                    let Fed::Post(idx) = fed else { continue };
                    let old = s.post.replace(idx);
                    self.io.go_live(idx, Role::TunnelPost(key));
                    if let Some(old) = old.filter(|&old| old != idx) {
                        self.close_conn(old);
                    }
                }
                // Its reason was counted as an event.
                Out::RefusePost => {
                    let Fed::Post(idx) = fed else { continue };
                    if let Some(c) = self.io.conn(idx) {
                        tracing::debug!(shard = self.id, peer = %c.peer(), "POST refused by its tunnel");
                    }
                    self.close_conn(idx);
                }
                // A shared route's: its route answers it, and judges the viewer's liveness.
                Out::SharedRequest(msg) => self.shared_request(key, *msg),
                Out::SharedViewerFrame => self.shared_viewer_frame(key),
                Out::PauseCamera => {
                    let upstream = s.upstream;
                    self.pause_camera(upstream);
                }
                Out::ResumeCamera => {
                    if let Some(u) = s.upstream.filter(|&u| self.io.conn(u).is_some_and(|c| c.recv() == RecvState::Off))
                    {
                        self.io.arm_recv(u);
                    }
                }
                Out::PauseViewer => {
                    let conns = [s.viewer, s.post];
                    tracing::debug!(shard = self.id, session = %format_args!("{}-{}", self.id, s.id), "viewer behind: not read until it catches up");
                    for idx in conns.into_iter().flatten() {
                        self.io.stop_reading(idx);
                    }
                }
                Out::ResumeViewer => {
                    for idx in [s.viewer, s.post].into_iter().flatten() {
                        if self.io.conn(idx).is_some_and(|c| c.recv() == RecvState::Off) {
                            self.io.arm_recv(idx);
                        }
                    }
                }
            }
        }
    }

    /// Stops reading a camera.
    fn pause_camera(&mut self, upstream: Option<usize>) {
        self.metrics.backpressure_pause();
        if let Some(u) = upstream {
            self.io.stop_reading(u);
        }
    }

    pub(in crate::shard) fn end_session(&mut self, key: SessionKey, outcome: SessionOutcome) {
        let Some(mut s) = self.relay.sessions.remove(key) else {
            return;
        };
        if let Some(cookie) = &s.cookie {
            self.shared.cookies.remove_get(cookie, SessionRef { shard: self.id, key: key.pack() });
        }
        self.shared.admission.close_session();
        self.metrics.session_ended(outcome);
        let route = s.tunnel.session().route().map_or("-", |r| r.path.as_str());
        let mode = match (s.camera, s.tunnel.kind()) {
            (Some(_), tunnel::Kind::Http) => "tunnel shared",
            (Some(_), tunnel::Kind::Plain) => "rtsp shared",
            (Some(_), tunnel::Kind::WebSocket) => "websocket shared",
            (None, kind) => mode_label(kind),
        };
        tracing::info!(
            target: "session",
            session = %format_args!("{}-{}", self.id, s.id),
            cookie = s.cookie.as_deref().map(|c| &c[..c.len().min(6)]).unwrap_or("-"),
            route,
            peer = %s.peer,
            mode,
            duration_ms = s.started_at.elapsed().as_millis() as u64,
            bytes_to_viewer = s.to_viewer,
            bytes_to_camera = s.to_camera,
            outcome = ?outcome,
            "session ended"
        );
        if let Some(post) = s.post {
            self.close_conn(post);
        }
        if let Some(ck) = s.camera {
            self.detach_viewer(key, ck);
        }
        if let Some(route) = s.health_route.take() {
            if s.upstream.is_some() {
                let event = if s.upstream_open {
                    PassthroughEvent::Closed { failed: false }
                } else {
                    PassthroughEvent::Abandoned
                };
                self.passthrough_health(&route, event);
            }
            self.passthrough_health(&route, PassthroughEvent::SessionEnded);
        }
        if let Some(upstream) = s.upstream {
            self.end_upstream(upstream, &mut s, outcome);
        }
        if let Some(v) = s.viewer {
            // The viewer gets what was queued for it (a final error reply, say), then the close;
            // a viewer that never reads it is closed by the tick after `proto::closing::FLUSH_GRACE`.
            self.io.websocket_close(v, outcome);
            self.io.flush_then(v, AfterFlush::Close, flush_deadline(self.io.reaped_at), true);
        }
    }

    /// The camera connection of an ended session. What was queued for it (a TEARDOWN the viewer
    /// sent just before leaving) goes out first, plus the relay's own TEARDOWN when the viewer
    /// left a camera session behind, so the camera frees it now rather than at its own timeout;
    /// then the connection is half-closed and read to its end, within `camera_close_grace_ms`.
    /// A camera that failed, or is still connecting, is closed at once.
    fn end_upstream(&mut self, idx: usize, s: &mut SessionSlot, outcome: SessionOutcome) {
        if self.io.conn(idx).is_none_or(|c| c.is_closing()) {
            self.close_conn(idx);
            return;
        }
        let grace = match s.tunnel.camera_close(outcome) {
            CameraClose::Now => {
                self.close_conn(idx);
                return;
            }
            CameraClose::Linger { teardown, grace } => {
                if let Some(teardown) = teardown {
                    tracing::debug!(
                        shard = self.id,
                        session = %format_args!("{}-{}", self.id, s.id),
                        "viewer left without TEARDOWN; the relay sends one to the camera"
                    );
                    self.io.queue_owned(idx, teardown);
                }
                grace
            }
        };
        self.io.linger_then_close(idx, grace, true);
    }
}

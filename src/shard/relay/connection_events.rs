//! What the I/O part reports about a session's or a shared camera's connection, turned into
//! inputs of its tunnel or shared route: bytes received (past TLS and a camera tunnel's
//! answer), a camera connect's result, a camera link opened or failed, a connection's end.

use super::*;
use crate::proto::camera_health::PassthroughEvent;
use crate::shard::camera_table::CameraKey;
use crate::shard::event_loop::CameraRx;

impl Shard {
    /// Whether a session's connection in `role` is not to be read: a camera whose viewer is
    /// behind, or a viewer behind on what is queued for it.
    pub(in crate::shard) fn paused_for_backpressure(&self, role: Option<Role>) -> bool {
        match role {
            Some(Role::Upstream(key)) => self.relay.sessions.get(key).is_some_and(|s| s.tunnel.camera_paused()),
            Some(Role::TunnelGet(key) | Role::TunnelPost(key) | Role::PlainRtsp(key)) => {
                self.relay.sessions.get(key).is_some_and(|s| s.tunnel.viewer_paused())
            }
            _ => false,
        }
    }

    /// A session connection's bytes, in ring buffer `bid` or (`tls`) decrypted into `io.plain`.
    pub(in crate::shard) fn on_session_bytes(
        &mut self,
        idx: usize,
        role: Role,
        key: SessionKey,
        bid: u16,
        len: usize,
        tls: bool,
    ) {
        let now = self.io.reaped_at;
        // Disjoint field borrows: no per-packet clone of the shared route table.
        let routes = &*self.relay.settings.routes;
        let bytes = if tls { &self.io.plain[..] } else { self.io.received(bid, len) };
        if self.io.conn(idx).is_some_and(|c| c.is_websocket()) {
            // Copied out of the ring buffer: the decoder unmasks into its own output anyway.
            let bytes = bytes.to_vec();
            self.websocket_bytes(idx, key, &bytes);
            return;
        }
        let Some(s) = self.relay.sessions.get_mut(key) else {
            return;
        };
        let (input, fed) = match role {
            Role::Upstream(_) => (Input::CameraBytes(bytes), Fed::CameraChunk(bid, self.io.reaped_at)),
            Role::TunnelGet(_) => {
                (Input::ViewerBytes { stream: ViewerStream::TunnelData, bytes, routes }, Fed::Nothing)
            }
            Role::TunnelPost(_) => {
                (Input::ViewerBytes { stream: ViewerStream::TunnelCommands, bytes, routes }, Fed::Nothing)
            }
            Role::PlainRtsp(_) => (Input::ViewerBytes { stream: ViewerStream::Plain, bytes, routes }, Fed::Nothing),
            Role::Camera(_) | Role::CameraPost { .. } => return,
        };
        s.tunnel.handle(input, now);
        self.apply(key, fed);
    }

    /// A connection reached end of stream or failed.
    pub(in crate::shard) fn on_conn_ended(&mut self, idx: usize, role: Option<Role>, res: i32) {
        let now = self.io.reaped_at;
        let key = role.and_then(|r| r.session());
        if let Some(Role::Camera(ck)) = role {
            self.on_camera_closed(idx, ck);
            return;
        }
        if let Some(Role::CameraPost { get, generation }) = role {
            self.camera_post_ended(idx, get, generation);
            return;
        }
        match role {
            Some(Role::Upstream(k)) => {
                let kind = if res == 0 { UpstreamErrorKind::Closed } else { UpstreamErrorKind::Reset };
                let mut closed = None;
                if let Some(s) = self.relay.sessions.get_mut(k) {
                    if s.upstream.take().is_some() {
                        let open = std::mem::take(&mut s.upstream_open);
                        closed = s.health_route.clone().map(|r| (r, open));
                    }
                    s.tunnel.handle(Input::CameraClosed(kind), now);
                }
                if let Some((route, open)) = closed {
                    let event =
                        if open { PassthroughEvent::Closed { failed: res != 0 } } else { PassthroughEvent::Abandoned };
                    self.passthrough_health(&route, event);
                }
            }
            Some(Role::TunnelPost(k)) => {
                if let Some(s) = self.relay.sessions.get_mut(k) {
                    if s.post == Some(idx) {
                        s.post = None;
                    }
                    s.tunnel.handle(Input::ViewerClosed(ViewerStream::TunnelCommands), now);
                }
            }
            Some(Role::TunnelGet(k) | Role::PlainRtsp(k)) => {
                let stream = if matches!(role, Some(Role::TunnelGet(_))) {
                    ViewerStream::TunnelData
                } else {
                    ViewerStream::Plain
                };
                if let Some(s) = self.relay.sessions.get_mut(k) {
                    s.viewer = None;
                    s.tunnel.handle(Input::ViewerClosed(stream), now);
                }
            }
            _ => {}
        }
        self.close_conn(idx);
        if let Some(key) = key {
            self.apply(key, Fed::Nothing);
        }
    }

    pub(in crate::shard) fn connect_upstream(&mut self, key: SessionKey, addr: SocketAddr) {
        let route = self.passthrough_route(key);
        if let Some(route) = &route {
            self.passthrough_health(route, PassthroughEvent::Connecting);
        }
        let limit = self.relay.settings.limits.max_camera_sessions;
        let admitted = self.shared.camera_hosts.lock().map(|mut h| h.try_open(addr.ip(), limit)).unwrap_or(true);
        if !admitted {
            tracing::info!(shard = self.id, camera = %addr, limit, "max_camera_sessions reached for this camera: 453");
            if let Some(s) = self.relay.sessions.get_mut(key) {
                s.tunnel.handle(Input::CameraHostFull, self.io.reaped_at);
            }
            self.apply(key, Fed::Nothing);
            return;
        }
        // The session's own camera: its route's, or the fallback's once the route's upstream
        // could not be reached (`proto::session::fallback`).
        let camera = self.relay.sessions.get(key).and_then(|s| s.tunnel.session().route().cloned()).or(route.clone());
        if let (Some(c), Some(r)) = (&camera, &route) {
            if c.upstream_url != r.upstream_url {
                tracing::debug!(shard = self.id, route = %r.path, source = "fallback", camera = %c.upstream_url, "passthrough session on the fallback camera");
            }
        }
        let link = camera.as_ref().map(|r| r.upstream_link.clone()).unwrap_or_default();
        let unresolved = camera.as_ref().and_then(|r| r.resolve_error.clone());
        let connected = match unresolved {
            None => self.connect_camera_link(addr, Role::Upstream(key), &link),
            Some(_) => None,
        };
        match connected {
            Some(idx) => {
                // Released when the connection is freed, however it ends.
                self.io.hold_camera_host(idx, addr.ip());
                if let Some(s) = self.relay.sessions.get_mut(key) {
                    s.upstream = Some(idx);
                }
            }
            None => {
                if let Ok(mut hosts) = self.shared.camera_hosts.lock() {
                    hosts.close(addr.ip());
                }
                if let Some(route) = &route {
                    let why = route.resolve_error.as_deref().unwrap_or("no socket").to_owned();
                    self.passthrough_health(route, PassthroughEvent::ConnectFailed(Some(why)));
                }
                if let Some(s) = self.relay.sessions.get_mut(key) {
                    s.tunnel.handle(Input::CameraConnectFailed(UpstreamErrorKind::Unreachable), self.io.reaped_at);
                }
                self.apply(key, Fed::Nothing);
            }
        }
    }

    /// The connect of a passthrough session's camera completed (`res`: 0 or an errno).
    pub(in crate::shard) fn on_upstream_connect(&mut self, idx: usize, key: SessionKey, res: i32) {
        let now = self.io.reaped_at;
        let route = self.relay.sessions.get(key).and_then(|s| s.health_route.clone());
        if res == 0 {
            self.io.arm_recv(idx);
            // Behind an HTTP tunnel the camera is reached once the tunnel answers (camera_link.rs).
            if self.camera_link_connected(idx) {
                if let Some(s) = self.relay.sessions.get_mut(key) {
                    s.upstream_open = true;
                    s.tunnel.handle(Input::CameraConnected, now);
                }
                if let Some(route) = &route {
                    self.passthrough_health(route, PassthroughEvent::Connected);
                }
            }
        } else {
            if let Some(route) = &route {
                let why = std::io::Error::from_raw_os_error(-res).to_string();
                self.passthrough_health(route, PassthroughEvent::ConnectFailed(Some(why)));
            }
            // `res` is a kernel errno (never i32::MIN): the negation cannot overflow.
            let kind = match -res {
                libc::ECONNREFUSED => UpstreamErrorKind::ConnectRefused,
                libc::ECANCELED | libc::ETIMEDOUT => UpstreamErrorKind::ConnectTimeout,
                _ => UpstreamErrorKind::Unreachable,
            };
            if let Some(c) = self.io.conn(idx) {
                tracing::debug!(shard = self.id, camera = %c.peer(), error = %std::io::Error::from_raw_os_error(-res), "camera connect failed");
            }
            if let Some(s) = self.relay.sessions.get_mut(key) {
                s.upstream = None;
                s.tunnel.handle(Input::CameraConnectFailed(kind), now);
            }
            self.close_conn(idx);
        }
        self.apply(key, Fed::Nothing);
    }

    /// A camera tunnel is open (its GET answered, its POST connected): RTSP may start.
    pub(in crate::shard) fn on_camera_link_open(&mut self, idx: usize) {
        // The batch's one `now`, as for every tunnel input.
        let now = self.io.reaped_at;
        match self.io.conn(idx).and_then(|c| c.role()) {
            Some(Role::Camera(ck)) if self.is_probe_conn(ck, idx) => self.on_probe_link_open(ck),
            Some(Role::Camera(ck)) => {
                if let Some(slot) = self.relay.cameras.get_mut(ck).filter(|s| s.conn == Some(idx)) {
                    slot.shared.handle_connected(now);
                }
                self.drive_camera(ck);
            }
            Some(Role::Upstream(key)) => {
                let mut route = None;
                if let Some(s) = self.session(key) {
                    s.upstream_open = true;
                    s.tunnel.handle(Input::CameraConnected, now);
                    route = s.health_route.clone();
                }
                if let Some(route) = route {
                    self.passthrough_health(&route, PassthroughEvent::Connected);
                }
                self.apply(key, Fed::Nothing);
            }
            _ => {}
        }
    }

    /// Bytes from a shared camera's connection: past TLS and the tunnel's answer first (the
    /// media then goes to viewers from copies, the plaintext not being in the ring).
    pub(in crate::shard) fn on_camera_recv(&mut self, idx: usize, ck: CameraKey, bid: u16, len: usize) {
        if self.is_probe_conn(ck, idx) {
            return self.on_probe_recv(idx, ck, bid, len);
        }
        match self.camera_rx(idx, bid, len) {
            CameraRx::Ring => self.on_camera_data(ck, bid, len, CameraBytes::Ring),
            CameraRx::Plain { closed } => {
                if !self.io.plain.is_empty() {
                    self.on_camera_data(ck, bid, len, CameraBytes::Plain);
                }
                if closed {
                    self.on_camera_closed(idx, ck);
                }
            }
            CameraRx::Failed(f) => {
                let peer = self.io.conn(idx).map(|c| c.peer());
                let route = self.relay.cameras.get(ck).map(|s| s.route.path.clone()).unwrap_or_default();
                tracing::warn!(shard = self.id, route = %route, camera = ?peer, error = %f.reason, "camera link failed");
                self.close_conn(idx);
                let outcome = f.outcome();
                if let Some(slot) = self.relay.cameras.get_mut(ck).filter(|s| s.conn == Some(idx)) {
                    slot.conn = None;
                    // The reason in words (which certificate check failed) for the route's health.
                    slot.shared.handle_link_failed(outcome, f.reason, Instant::now());
                }
                self.drive_camera(ck);
            }
        }
    }

    /// Bytes of a shared route's probe of its primary camera (`camera_probe.rs`): its route
    /// reads them, and plans them for viewers if they brought the route back to its primary.
    fn on_probe_recv(&mut self, idx: usize, ck: CameraKey, bid: u16, len: usize) {
        match self.camera_rx(idx, bid, len) {
            CameraRx::Ring => self.on_camera_data(ck, bid, len, CameraBytes::Probe),
            CameraRx::Plain { closed } => {
                if !self.io.plain.is_empty() {
                    self.on_camera_data(ck, bid, len, CameraBytes::ProbePlain);
                }
                // Taken over meanwhile: the camera's own connection now.
                if closed {
                    self.on_camera_closed(idx, ck);
                }
            }
            CameraRx::Failed(f) => {
                let route = self.relay.cameras.get(ck).map(|s| s.route.path.clone()).unwrap_or_default();
                tracing::debug!(shard = self.id, route = %route, error = %f.reason, "primary camera probe link failed");
                self.close_conn(idx);
                if let Some(slot) = self.relay.cameras.get_mut(ck).filter(|s| s.probe_conn == Some(idx)) {
                    slot.probe_conn = None;
                    slot.shared.handle_probe_link_failed(f.outcome(), Instant::now());
                }
                self.drive_camera(ck);
            }
        }
    }

    /// Bytes from a passthrough session's camera connection with TLS or a tunnel under RTSP.
    /// `false`: plain TCP, handled by the caller from the ring.
    pub(in crate::shard) fn on_upstream_link_data(
        &mut self,
        idx: usize,
        key: SessionKey,
        bid: u16,
        len: usize,
    ) -> bool {
        match self.camera_rx(idx, bid, len) {
            CameraRx::Ring => false,
            CameraRx::Plain { closed } => {
                if !self.io.plain.is_empty() {
                    let plain = std::mem::take(&mut self.io.plain);
                    if let Some(s) = self.relay.sessions.get_mut(key) {
                        s.tunnel.handle(Input::CameraBytes(&plain), self.io.reaped_at);
                    }
                    self.io.plain = plain;
                    // Decrypted bytes are not in the ring: what is forwarded is copied.
                    self.apply(key, Fed::CameraPlain(self.io.reaped_at));
                }
                if closed {
                    self.on_conn_ended(idx, Some(Role::Upstream(key)), 0);
                }
                true
            }
            CameraRx::Failed(f) => {
                let peer = self.io.conn(idx).map(|c| c.peer());
                tracing::warn!(shard = self.id, camera = ?peer, error = %f.reason, "camera link failed");
                let (mut failed, now) = (None, self.io.reaped_at);
                if let Some(s) = self.session(key) {
                    if s.upstream.take().is_some() {
                        let open = std::mem::take(&mut s.upstream_open);
                        failed = s.health_route.clone().map(|r| (r, open));
                    }
                    s.tunnel.handle(Input::CameraClosed(f.upstream_kind()), now);
                }
                // The route's health says why (the API's last error), as for a shared camera.
                if let Some((route, open)) = failed {
                    let event = PassthroughEvent::LinkFailed { outcome: f.outcome(), reason: f.reason.clone(), open };
                    self.passthrough_health(&route, event);
                }
                self.close_conn(idx);
                self.apply(key, Fed::Nothing);
                true
            }
        }
    }

    /// `n` bytes went out on a connection in `role`: counted, and a viewer's send progress
    /// given to its tunnel's flow control.
    pub(in crate::shard) fn on_sent(&mut self, role: Option<Role>, n: u64) {
        match role {
            Some(Role::TunnelGet(k) | Role::PlainRtsp(k)) => {
                self.metrics.bytes(Direction::ToViewer, n);
                if let Some(s) = self.session(k) {
                    s.to_viewer += n;
                }
                self.update_upstream_flow(k);
            }
            Some(Role::Camera(_)) => self.metrics.bytes(Direction::ToCamera, n),
            Some(Role::Upstream(k)) => {
                self.metrics.bytes(Direction::ToCamera, n);
                if let Some(s) = self.session(k) {
                    s.to_camera += n;
                }
            }
            _ => {}
        }
    }
}

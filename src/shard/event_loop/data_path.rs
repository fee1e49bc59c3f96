//! Bytes through a live session: receives fed to the protocol core, its outputs applied
//! (queued sends, camera connects, backpressure), connections that end.

use super::*;
use crate::proto::camera_health::PassthroughEvent;

/// How a receive completion ended, for [`Shard::after_recv`].
#[derive(Debug, Clone, Copy)]
pub(in crate::shard) struct RecvEnd {
    pub res: i32,
    /// The multishot receive goes on.
    pub more: bool,
    /// It had been cancelled for backpressure.
    pub was_paused: bool,
    /// The connection was closing when the completion arrived.
    pub closing: bool,
}

impl Shard {
    pub(in crate::shard) fn on_recv(&mut self, idx: usize, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if let Some(bid) = bid {
            self.io.bufs.on_received(bid);
        }
        // `dispatch` found it current and nothing has run since: a missing slot is a stale
        // completion, whose buffer goes back.
        let Some(generation) = self.io.conns.get(idx).map(|c| c.generation()) else {
            if let Some(bid) = bid {
                self.io.bufs.release(bid);
            }
            return;
        };
        let was_paused = !more && self.io.conns.recv_ended(idx, res);
        let (role, closing) = self.io.conns.get(idx).map_or((None, true), |c| (c.role(), c.is_closing()));
        if res > 0 && !closing {
            match (bid, role) {
                (Some(bid), Some(Role::Camera(ck))) => self.on_camera_recv(idx, ck, bid, res as usize),
                (Some(bid), Some(Role::CameraPost { .. })) => self.on_camera_post_recv(idx, bid, res as usize),
                (Some(bid), Some(role)) => {
                    if let Some(key) = role.session() {
                        self.on_data(idx, role, key, bid, res as usize);
                    }
                }
                _ => {}
            }
        }
        if let Some(bid) = bid {
            self.io.bufs.release(bid);
        }
        self.after_recv(idx, generation, role, RecvEnd { res, more, was_paused, closing });
    }

    /// What follows a receive once its bytes went through the session. Handling them may have
    /// closed and freed the connection, and its slot may hold a new one by now: it is looked up
    /// again by index and generation, never by index alone.
    pub(in crate::shard) fn after_recv(&mut self, idx: usize, generation: u32, role: Option<Role>, end: RecvEnd) {
        let Some(c) = self.io.conns.current(idx, generation) else {
            return;
        };
        if end.closing || c.is_closing() {
            self.maybe_free(idx);
            return;
        }
        let res = end.res;
        let ended = res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED);
        if ended {
            self.on_conn_ended(idx, role, res);
        } else if !end.more && end.was_paused {
            // Paused for backpressure: resuming is the tunnel's decision, which may have come
            // while the cancel was on its way.
            if let Some(key) = role.and_then(|r| r.session()) {
                self.update_upstream_flow(key);
                if !self.paused_for_backpressure(role)
                    && self.io.conns.get(idx).is_some_and(|c| c.recv() == RecvState::Off)
                {
                    self.io.arm_recv(idx);
                }
            }
        } else if !end.more && c.recv() == RecvState::Off {
            // The multishot receive stopped on its own: keep reading, unless the bytes of its
            // last completion got it paused (then `ResumeCamera` / `ResumeViewer` arms it).
            if !self.paused_for_backpressure(role) {
                self.io.arm_recv(idx);
            }
        }
    }

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

    pub(in crate::shard) fn on_data(&mut self, idx: usize, role: Role, key: SessionKey, bid: u16, len: usize) {
        if matches!(role, Role::Upstream(_)) && self.on_upstream_link_data(idx, key, bid, len) {
            return;
        }
        let now = self.io.reaped_at;
        // The upstream link's handling may have ended the connection.
        let Some(c) = self.io.conns.get_mut(idx) else { return };
        let tls = c.has_tls();
        if let Some(tls) = c.tls_mut() {
            self.io.plain.clear();
            // Acknowledgements, key updates: whatever rustls has to say goes out.
            let received = tls
                .receive(self.io.bufs.bytes(bid, len), &mut self.io.plain)
                .map(|closed| (closed, tls.take_outgoing()));
            match received {
                Ok((peer_closed, cipher)) => {
                    if let Some(cipher) = cipher {
                        c.send_mut().push_owned(cipher);
                        self.io.conns.dirty.push(idx);
                    }
                    if peer_closed {
                        self.on_conn_ended(idx, Some(role), 0);
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(shard = self.id, error = %e, "TLS error on a session connection");
                    self.metrics.rejected(Rejection::TlsRecord);
                    self.on_conn_ended(idx, Some(role), -libc::EPROTO);
                    return;
                }
            }
        }
        // Disjoint field borrows: no per-packet clone of the shared route table.
        let routes = &*self.relay.settings.routes;
        let bytes = if tls { &self.io.plain[..] } else { self.io.bufs.bytes(bid, len) };
        if self.io.conns.get(idx).is_some_and(|c| c.is_websocket()) {
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
                if let Some(c) = self.io.conns.get_mut(idx) {
                    c.camera_host = Some(addr.ip());
                }
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

    /// A camera connection (`role`: a passthrough session's or a shared camera's) with its
    /// connect submitted; `None` when no socket could be made.
    pub(in crate::shard) fn connect_camera_socket(&mut self, addr: SocketAddr, role: Role) -> Option<usize> {
        // The placeholder of a name that did not resolve: connecting to it would reach this host.
        if addr.ip().is_unspecified() {
            return None;
        }
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            Some(socket2::Protocol::TCP),
        );
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard = self.id, error = %e, "cannot create camera socket");
                return None;
            }
        };
        let _ = sock.set_nodelay(true);
        let idx = self.io.conns.insert_live(OwnedFd::from(sock), addr, role, self.io.reaped_at);
        self.metrics.connection_accepted(ConnKind::Upstream);
        let timeout = self.relay.settings.core.connect_timeout;
        if let Some(sub) = self.io.conns.connect_op(idx, addr, timeout) {
            self.io.ring.push(sub);
        }
        Some(idx)
    }

    pub(in crate::shard) fn on_connect(&mut self, idx: usize, res: i32) {
        self.io.conns.completed(idx);
        let Some(c) = self.io.conns.get(idx) else { return };
        if c.is_closing() {
            self.maybe_free(idx);
            return;
        }
        let key = match c.role() {
            Some(Role::Upstream(key)) => key,
            Some(Role::Camera(ck)) => return self.on_camera_connect(idx, ck, res),
            Some(Role::CameraPost { get, generation }) => {
                return self.on_camera_post_connect(idx, get, generation, res);
            }
            _ => return,
        };
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
            if let Some(c) = self.io.conns.get(idx) {
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
}

//! Receives: a completion's buffer matched to its connection, a session connection's TLS taken
//! off, the bytes handed to the relay part by the connection's role; what follows a receive
//! (re-armed, paused, ended); camera sockets and their connects.

use super::*;

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

    pub(in crate::shard) fn on_data(&mut self, idx: usize, role: Role, key: SessionKey, bid: u16, len: usize) {
        if matches!(role, Role::Upstream(_)) && self.on_upstream_link_data(idx, key, bid, len) {
            return;
        }
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
        self.on_session_bytes(idx, role, key, bid, len, tls);
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
        self.on_upstream_connect(idx, key, res);
    }
}

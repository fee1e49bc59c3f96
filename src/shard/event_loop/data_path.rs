//! Bytes through a live session: receives fed to the protocol core, its outputs applied
//! (queued sends, camera connects, backpressure), connections that end.

use super::*;

impl Shard {
    pub(super) fn feed_viewer(&mut self, key: SessionKey, stream: ViewerStream, bytes: &[u8]) {
        let now = Instant::now();
        let mut out = std::mem::take(&mut self.out);
        let routes = self.routes.clone();
        if let Some(s) = self.session(key) {
            s.last_activity = now;
            s.proto.on_viewer_bytes(stream, bytes, now, &routes, &mut out);
        }
        self.apply(key, &mut out, None);
        self.out = out;
    }

    pub(super) fn on_recv(&mut self, idx: usize, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if let Some(bid) = bid {
            self.bufs.on_received(bid);
        }
        let mut was_paused = false;
        if !more {
            let c = &mut self.conns[idx];
            c.ops -= 1;
            was_paused = c.recv == RecvState::Cancelling;
            c.recv = if res == -libc::ENOBUFS && !c.closing { RecvState::WaitingForBuffers } else { RecvState::Off };
            if c.recv == RecvState::WaitingForBuffers {
                self.starved.push(idx);
            }
        }
        let role = self.conns[idx].role.clone();
        let closing = self.conns[idx].closing;
        if res > 0 && !closing {
            if let (Some(bid), Some(key)) = (bid, role.session()) {
                self.on_data(idx, &role, key, bid, res as usize);
            }
        }
        if let Some(bid) = bid {
            self.bufs.release(bid);
        }
        if closing || self.conns.get(idx).is_none_or(|c| c.closing) {
            self.maybe_free(idx);
            return;
        }
        let ended = res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED);
        if ended {
            self.on_conn_ended(idx, &role, res);
        } else if !more && was_paused {
            // Paused for backpressure: resuming is the flow control's decision.
            if let Role::Upstream(key) = role {
                self.update_upstream_flow(key);
            }
        } else if !more && self.conns[idx].recv == RecvState::Off {
            // The multishot receive stopped on its own: keep reading.
            self.arm_recv(idx);
        }
    }

    pub(super) fn on_data(&mut self, idx: usize, role: &Role, key: SessionKey, bid: u16, len: usize) {
        let now = Instant::now();
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        let tls = self.conns[idx].tls.as_mut().map(|tls| tls.receive(self.bufs.bytes(bid, len), &mut plain));
        match tls {
            None => {}
            Some(Ok(peer_closed)) => {
                // Acknowledgements, key updates: whatever rustls has to say goes out.
                self.queue_owned(idx, Vec::new());
                if peer_closed {
                    self.plain = plain;
                    self.on_conn_ended(idx, role, 0);
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::debug!(shard = self.id, error = %e, "TLS error on a session connection");
                self.metrics.rejected(Rejection::TlsRecord);
                self.plain = plain;
                self.on_conn_ended(idx, role, -libc::EPROTO);
                return;
            }
        }
        let mut out = std::mem::take(&mut self.out);
        // Disjoint field borrows: no per-packet clone of the shared route table.
        let routes = &*self.routes;
        let data = if tls.is_some() { &plain[..] } else { self.bufs.bytes(bid, len) };
        let Some(s) = self.sessions.get_mut(key.index).filter(|s| s.generation == key.generation) else {
            self.out = out;
            self.plain = plain;
            return;
        };
        s.last_activity = now;
        let ring = match role {
            Role::Upstream(_) => {
                s.proto.on_upstream_bytes(data, now, &mut out);
                Some((bid, self.reaped_at))
            }
            Role::TunnelGet(_) => {
                s.proto.on_viewer_bytes(ViewerStream::TunnelData, data, now, routes, &mut out);
                None
            }
            Role::TunnelPost(_) => {
                s.proto.on_viewer_bytes(ViewerStream::TunnelCommands, data, now, routes, &mut out);
                None
            }
            Role::PlainRtsp(_) => {
                s.proto.on_viewer_bytes(ViewerStream::Plain, data, now, routes, &mut out);
                None
            }
            _ => None,
        };
        self.apply(key, &mut out, ring);
        self.out = out;
        self.plain = plain;
    }

    /// A connection reached end of stream or failed.
    pub(super) fn on_conn_ended(&mut self, idx: usize, role: &Role, res: i32) {
        let mut out = std::mem::take(&mut self.out);
        let key = role.session();
        match role {
            Role::Upstream(k) => {
                let kind = if res == 0 { UpstreamErrorKind::Closed } else { UpstreamErrorKind::Reset };
                if let Some(s) = self.session(*k) {
                    s.upstream = None;
                    s.proto.on_upstream_closed(kind, &mut out);
                }
            }
            Role::TunnelPost(k) => {
                if let Some(s) = self.session(*k) {
                    if s.post == Some(idx) {
                        s.post = None;
                    }
                    s.proto.on_viewer_closed(ViewerStream::TunnelCommands, &mut out);
                }
            }
            Role::TunnelGet(k) | Role::PlainRtsp(k) => {
                let stream =
                    if matches!(role, Role::TunnelGet(_)) { ViewerStream::TunnelData } else { ViewerStream::Plain };
                if let Some(s) = self.session(*k) {
                    s.viewer = None;
                    s.proto.on_viewer_closed(stream, &mut out);
                }
            }
            _ => {}
        }
        self.close_conn(idx);
        if let Some(key) = key {
            self.apply(key, &mut out, None);
        }
        self.out = out;
    }

    /// Carries out what the session asked for.
    pub(super) fn apply(&mut self, key: SessionKey, out: &mut Vec<Output>, ring: Option<(u16, Instant)>) {
        for o in out.drain(..) {
            let Some(s) = self.sessions.get_mut(key.index).filter(|s| s.generation == key.generation) else {
                continue;
            };
            match o {
                Output::ToViewer(bytes) => {
                    if let Some(v) = s.viewer {
                        self.queue_owned(v, bytes);
                    }
                }
                Output::ForwardToViewer { range, frames } => {
                    let (Some(v), Some((bid, at))) = (s.viewer, ring) else {
                        continue;
                    };
                    if range.is_empty() {
                        continue;
                    }
                    self.queue_ring(v, bid, range, Timed { received_at: at, frames });
                    if frames > 0 {
                        self.metrics.frames(Direction::ToViewer, frames as u64);
                    }
                }
                Output::ToUpstream(bytes) => {
                    if let Some(u) = s.upstream {
                        self.queue_owned(u, bytes);
                        if self.conns.get(u).is_some_and(|c| c.send.queued() > self.limits.max_camera_backlog_bytes) {
                            // Nothing paces the viewer's bytes but the camera's reading: bound them.
                            self.metrics.rejected(Rejection::CameraBacklog);
                            self.end_session(key, SessionOutcome::UpstreamError);
                            return;
                        }
                    }
                }
                Output::ConnectUpstream(addr) => self.connect_upstream(key, addr),
                Output::FramesToCamera(n) => self.metrics.frames(Direction::ToCamera, n as u64),
                Output::Observe(h, d) => self.metrics.observe(h, d),
                Output::Rejected(r) => self.metrics.rejected(r),
                Output::AuthFailed(f) => {
                    self.metrics.auth_failure(f);
                    if !matches!(f, AuthFailure::NoCredentials | AuthFailure::StaleNonce) {
                        let window = Duration::from_secs(self.auth.failure_window_secs);
                        self.shared.auth_failures.record(s.peer.ip(), Instant::now(), window);
                    }
                }
                Output::UpstreamError(k) => self.metrics.upstream_error(k),
                Output::Close(outcome) => self.end_session(key, outcome),
            }
        }
        self.update_upstream_flow(key);
    }

    /// Backpressure: stop reading the camera while the viewer is behind; resume at half.
    pub(super) fn update_upstream_flow(&mut self, key: SessionKey) {
        let limit = self.limits.max_viewer_backlog_bytes;
        let Some(s) = self.sessions.get_mut(key.index).filter(|s| s.generation == key.generation) else {
            return;
        };
        let (Some(v), Some(u)) = (s.viewer, s.upstream) else {
            return;
        };
        let backlog = self.conns[v].send.queued();
        let up = &self.conns[u];
        if up.closing || s.connect_started.is_some() {
            return;
        }
        if backlog > limit && up.recv == RecvState::Armed {
            s.upstream_paused = true;
            self.metrics.backpressure_pause();
            let generation = up.generation;
            self.conns[u].recv = RecvState::Cancelling;
            let target = sqe_token(Op::Recv, u, generation);
            self.push(opcode::AsyncCancel::new(target).build().user_data(sqe_token(Op::Cancel, 0, 0)));
        } else if backlog <= limit / 2 && s.upstream_paused && up.recv == RecvState::Off {
            s.upstream_paused = false;
            self.arm_recv(u);
        }
    }

    pub(super) fn connect_upstream(&mut self, key: SessionKey, addr: SocketAddr) {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            Some(socket2::Protocol::TCP),
        );
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard = self.id, error = %e, "cannot create camera socket");
                let mut out = std::mem::take(&mut self.out);
                if let Some(s) = self.session(key) {
                    s.proto.on_upstream_connect_failed(UpstreamErrorKind::Unreachable, &mut out);
                }
                self.apply(key, &mut out, None);
                self.out = out;
                return;
            }
        };
        let _ = sock.set_nodelay(true);
        let idx = self.insert_conn(OwnedFd::from(sock), addr, Role::Upstream(key));
        self.metrics.connection_accepted(ConnKind::Upstream);
        let now = Instant::now();
        if let Some(s) = self.session(key) {
            s.upstream = Some(idx);
            s.connect_started = Some(now);
        }
        let timeout = Duration::from_millis(self.limits.upstream_connect_timeout_ms);
        let c = &mut self.conns[idx];
        let sa = c.connect_addr.insert(Box::new(socket2::SockAddr::from(addr)));
        let (sa_ptr, sa_len) = (sa.as_ptr(), sa.len());
        let ts: *const types::Timespec = &**c.connect_timeout.insert(Box::new(types::Timespec::from(timeout)));
        c.ops += 2;
        let generation = c.generation;
        let fd = c.raw();
        self.push_together(&[
            opcode::Connect::new(types::Fd(fd), sa_ptr.cast(), sa_len)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(sqe_token(Op::Connect, idx, generation)),
            opcode::LinkTimeout::new(ts).build().user_data(sqe_token(Op::ConnectTimeout, idx, generation)),
        ]);
    }

    pub(super) fn on_connect(&mut self, idx: usize, res: i32) {
        self.conns[idx].ops -= 1;
        if self.conns[idx].closing {
            self.maybe_free(idx);
            return;
        }
        let Role::Upstream(key) = self.conns[idx].role.clone() else {
            return;
        };
        let now = Instant::now();
        let mut out = std::mem::take(&mut self.out);
        let started = self.session(key).and_then(|s| s.connect_started.take());
        if res == 0 {
            if let Some(t) = started {
                self.metrics.observe(Hist::UpstreamConnect, now.saturating_duration_since(t));
            }
            self.arm_recv(idx);
            if let Some(s) = self.session(key) {
                s.proto.on_upstream_connected(now, &mut out);
            }
        } else {
            let kind = match -res {
                libc::ECONNREFUSED => UpstreamErrorKind::ConnectRefused,
                libc::ECANCELED | libc::ETIMEDOUT => UpstreamErrorKind::ConnectTimeout,
                _ => UpstreamErrorKind::Unreachable,
            };
            tracing::info!(shard = self.id, camera = %self.conns[idx].peer, error = %std::io::Error::from_raw_os_error(-res), "camera connect failed");
            if let Some(s) = self.session(key) {
                s.upstream = None;
                s.proto.on_upstream_connect_failed(kind, &mut out);
            }
            self.close_conn(idx);
        }
        self.apply(key, &mut out, None);
        self.out = out;
    }
}

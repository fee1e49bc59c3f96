//! Accepting connections and reading their first head: address lists, rate limits and
//! admission are applied here, before a session exists.

use super::*;

impl Shard {
    pub(super) fn arm_accept(&mut self, i: usize) {
        if let Some(l) = &self.listeners.open[i] {
            self.ring.push(ops::accept(l, i));
        }
    }

    pub(super) fn on_accept(&mut self, listener: usize, res: i32, flags: u32) {
        let failed = res < 0 && !(res == -libc::ECANCELED && self.draining_until.is_some());
        if failed {
            self.metrics.accept_error();
        }
        if !cqueue::more(flags) {
            if self.draining_until.is_some() {
                // Cancelled at shutdown: the listener goes.
                self.listeners.open[listener] = None;
            } else if failed {
                // Re-arming now would most likely fail again at once, and again: a hot loop.
                // The tick re-arms it; out of descriptors, closing sessions may have freed some.
                if res == -libc::EMFILE || res == -libc::ENFILE {
                    tracing::warn!(shard = self.id, "out of file descriptors: accepting paused for a tick");
                } else {
                    tracing::warn!(shard = self.id, error = %std::io::Error::from_raw_os_error(-res), "accept failed: accepting paused for a tick");
                }
                if !self.listeners.paused.contains(&listener) {
                    self.listeners.paused.push(listener);
                }
                return;
            } else {
                // The multishot accept ended after a success (a full completion queue, say).
                self.arm_accept(listener);
            }
        }
        if res < 0 {
            if failed {
                tracing::warn!(shard = self.id, error = %std::io::Error::from_raw_os_error(-res), "accept failed");
            }
            return;
        }
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        let Some(peer) = peer_of(&fd) else { return };
        if self.draining_until.is_some() {
            self.metrics.rejected(Rejection::ShuttingDown);
            send_now(&fd, &http_head::http_error_reply(503, "Service Unavailable"));
            return;
        }
        if self.listeners.open[listener].as_ref().is_some_and(|l| !l.acl.permits(peer.ip())) {
            // Refused before reading a byte: nothing about the relay is revealed.
            self.metrics.rejected(Rejection::AddressDenied);
            return;
        }
        let window = Duration::from_secs(self.auth.failure_window_secs);
        if self.shared.auth_failures.is_blocked(peer.ip(), Instant::now(), self.auth.max_failures_per_ip, window) {
            self.metrics.rejected(Rejection::AuthRateLimited);
            send_now(&fd, &http_head::http_error_reply(429, "Too Many Requests"));
            return;
        }
        if !self.shared.admission.try_open_connection(peer.ip(), self.limits.max_connections_per_ip) {
            self.metrics.rejected(Rejection::PerIpLimit);
            send_now(&fd, &http_head::http_error_reply(503, "Service Unavailable"));
            return;
        }
        let tls = match self.listeners.open[listener].as_ref().and_then(|l| l.tls.clone()) {
            None => None,
            Some(cfg) => match TlsStream::new(cfg) {
                Ok(t) => Some(Box::new(t)),
                Err(e) => {
                    tracing::warn!(shard = self.id, error = %e, "cannot start a TLS session");
                    self.shared.admission.close_connection(peer.ip());
                    return;
                }
            },
        };
        let _ = socket2::SockRef::from(&fd).set_nodelay(true);
        let idx = self.insert_conn(fd, peer, Role::Head);
        self.conns[idx].counted_ip = true;
        self.conns[idx].tls = tls;
        self.arm_head_recv(idx);
    }

    pub(super) fn insert_conn(&mut self, fd: OwnedFd, peer: SocketAddr, role: Role) -> usize {
        self.conns.insert(fd, peer, role, Instant::now())
    }

    pub(super) fn arm_head_recv(&mut self, idx: usize) {
        let sub = ops::head_recv(&mut self.conns[idx], idx, &self.bufs);
        self.ring.push(sub);
    }

    pub(super) fn on_head_recv(&mut self, idx: usize, res: i32, flags: u32) {
        self.conns[idx].ops -= 1;
        let mut tls_failed = false;
        if let Some(bid) = cqueue::buffer_select(flags) {
            self.bufs.on_received(bid);
            if res > 0 && !self.conns[idx].closing {
                let data = self.bufs.bytes(bid, res as usize);
                let c = &mut self.conns[idx];
                match c.tls.as_mut() {
                    None => c.head.extend_from_slice(data),
                    Some(tls) => tls_failed = tls.receive(data, &mut c.head).is_err(),
                }
            }
            self.bufs.release(bid);
        }
        if tls_failed {
            // Not TLS, or a failed handshake: the alert rustls queued goes out, then the close.
            self.metrics.rejected(Rejection::TlsHandshake);
            let c = &mut self.conns[idx];
            c.role = Role::Refusing;
            c.close_after_flush = true;
            c.flush_deadline = Some(Instant::now() + FLUSH_GRACE);
            self.queue_owned(idx, Vec::new());
            return;
        }
        if self.conns[idx].closing {
            self.maybe_free(idx);
            return;
        }
        if res == -libc::ENOBUFS {
            self.conns[idx].recv = RecvState::WaitingForBuffers;
            self.conns.starved.push(idx);
            return;
        }
        if res <= 0 {
            self.close_conn(idx);
            return;
        }
        let limits =
            HeadLimits { max_header_bytes: self.limits.max_header_bytes, max_cookie_len: self.limits.max_cookie_len };
        // Handshake messages rustls wants to send.
        self.queue_owned(idx, Vec::new());
        if self.conns[idx].head.is_empty() {
            self.arm_head_recv(idx);
            return;
        }
        match http_head::parse_head(&self.conns[idx].head, &limits) {
            Ok(None) => self.arm_head_recv(idx),
            Ok(Some(head)) => self.on_head(idx, head),
            Err(e) => {
                let reject = e.rejection();
                tracing::debug!(shard = self.id, peer = %self.conns[idx].peer, error = %e, "refused request head");
                let status = if reject == Rejection::HeaderTooLarge {
                    (431, "Request Header Fields Too Large")
                } else {
                    (400, "Bad Request")
                };
                self.refuse(idx, reject, http_head::http_error_reply(status.0, status.1));
            }
        }
    }

    /// Answers with `reply`, counts `reason`, and closes once the reply is out.
    pub(super) fn refuse(&mut self, idx: usize, reason: Rejection, reply: Vec<u8>) {
        self.metrics.rejected(reason);
        let c = &mut self.conns[idx];
        c.role = Role::Refusing;
        c.close_after_flush = true;
        c.flush_deadline = Some(Instant::now() + FLUSH_GRACE);
        self.queue_owned(idx, reply);
    }

    pub(super) fn on_head(&mut self, idx: usize, head: RequestHead) {
        match head.kind {
            HeadKind::TunnelGet => self.on_tunnel_get(idx, head),
            HeadKind::TunnelPost => self.on_tunnel_post(idx, head),
            HeadKind::PlainRtsp => self.on_plain_rtsp(idx),
            HeadKind::OtherHttp => self.on_other_http(idx, head),
        }
    }
}

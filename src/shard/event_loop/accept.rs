//! Accepting connections and reading their first head: address lists, rate limits and
//! admission are applied here, before a session exists.

use std::net::IpAddr;

use crate::proto::proxy_header::{self, Gate, Refusal};

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
                    if !std::mem::replace(&mut self.listeners.out_of_fds, true) {
                        tracing::warn!(
                            shard = self.id,
                            "out of file descriptors: accepting paused, retried every tick"
                        );
                    }
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
        if std::mem::replace(&mut self.listeners.out_of_fds, false) {
            tracing::info!(shard = self.id, "descriptors available again: accepting resumed");
        }
        let Some(peer) = peer_of(&fd) else { return };
        if self.draining_until.is_some() {
            self.metrics.rejected(Rejection::ShuttingDown);
            send_now(&fd, &http_head::http_error_reply(503, "Service Unavailable"));
            return;
        }
        let stage = match self.proxy.expect(peer.ip()) {
            ProxyExpect::Header => ProxyStage::Header { listener },
            ProxyExpect::NoHeader if self.proxy.enabled => ProxyStage::Untrusted,
            ProxyExpect::NoHeader => ProxyStage::Done,
        };
        // Behind a balancer the checks wait for the viewer's address in the PROXY header.
        let counted = !matches!(stage, ProxyStage::Header { .. });
        if counted {
            if let Err((reason, reply)) = self.admit(listener, peer.ip()) {
                self.metrics.rejected(reason);
                if let Some(reply) = reply {
                    send_now(&fd, &reply);
                }
                return;
            }
        }
        let tls = match self.listeners.open[listener].as_ref().and_then(|l| l.tls.clone()) {
            None => None,
            Some(cfg) => match TlsStream::new(cfg) {
                Ok(t) => Some(Box::new(t)),
                Err(e) => {
                    tracing::warn!(shard = self.id, error = %e, "cannot start a TLS session");
                    if counted {
                        self.shared.admission.close_connection(peer.ip());
                    }
                    return;
                }
            },
        };
        let _ = socket2::SockRef::from(&fd).set_nodelay(true);
        let idx = self.insert_conn(fd, peer, Role::Head);
        self.conns[idx].counted_ip = counted;
        self.conns[idx].tls = tls;
        self.conns[idx].proxy = stage;
        self.arm_head_recv(idx);
    }

    /// The checks on a new connection's source address (the viewer's, behind a balancer)
    /// before its request is read: the listener's address list, the failed-login limiter and
    /// the per-address connection cap (counted on success). On refusal: the reason and the
    /// reply to send, if any.
    fn admit(&self, listener: usize, ip: IpAddr) -> Result<(), (Rejection, Option<Vec<u8>>)> {
        if self.listeners.open[listener].as_ref().is_some_and(|l| !l.acl.permits(ip)) {
            // Refused before reading a byte: nothing about the relay is revealed.
            return Err((Rejection::AddressDenied, None));
        }
        let window = Duration::from_secs(self.auth.failure_window_secs);
        if self.shared.auth_failures.is_blocked(ip, Instant::now(), self.auth.max_failures_per_ip, window) {
            return Err((Rejection::AuthRateLimited, Some(http_head::http_error_reply(429, "Too Many Requests"))));
        }
        if !self.shared.admission.try_open_connection(ip, self.limits.max_connections_per_ip) {
            return Err((Rejection::PerIpLimit, Some(http_head::http_error_reply(503, "Service Unavailable"))));
        }
        Ok(())
    }

    /// Settles a new connection's PROXY header from the raw bytes in `head`: true when the
    /// head (decrypted, on TLS) can be read now; false when more bytes are needed or the
    /// connection was refused.
    fn settle_proxy_header(&mut self, idx: usize) -> bool {
        let stage = self.conns[idx].proxy;
        let trusted = matches!(stage, ProxyStage::Header { .. });
        let c = &mut self.conns[idx];
        let (skip, source) = match proxy_header::gate(trusted, &c.head, self.limits.max_header_bytes) {
            Gate::NeedMore => {
                self.arm_head_recv(idx);
                return false;
            }
            Gate::Proceed { skip, source } => (skip, source),
            Gate::Refuse(why) => {
                let (reason, detail) = match why {
                    Refusal::BadHeader(invalid) => (Rejection::ProxyHeader, invalid.as_str()),
                    Refusal::Untrusted => (Rejection::ProxyUntrusted, "untrusted_source"),
                };
                tracing::debug!(shard = self.id, peer = %c.peer, reason = detail, "refused PROXY header");
                self.metrics.rejected(reason);
                self.close_conn(idx);
                return false;
            }
        };
        c.proxy = ProxyStage::Done;
        if let Some(viewer) = source {
            tracing::debug!(shard = self.id, balancer = %c.peer, peer = %viewer, "PROXY header");
            c.peer = viewer;
        }
        let raw = c.head.split_off(skip);
        c.head.clear();
        if let ProxyStage::Header { listener } = stage {
            let ip = c.peer.ip();
            if let Err((reason, reply)) = self.admit(listener, ip) {
                // Nothing went through TLS yet: the same plain reply as at accept.
                self.conns[idx].tls = None;
                match reply {
                    Some(reply) => self.refuse(idx, reason, reply),
                    None => {
                        self.metrics.rejected(reason);
                        self.close_conn(idx);
                    }
                }
                return false;
            }
            self.conns[idx].counted_ip = true;
        }
        let c = &mut self.conns[idx];
        match c.tls.as_mut() {
            None => c.head = raw,
            Some(tls) => {
                if tls.receive(&raw, &mut c.head).is_err() {
                    self.refuse_tls(idx);
                    return false;
                }
            }
        }
        true
    }

    /// Not TLS, or a failed handshake: the alert rustls queued goes out, then the close.
    fn refuse_tls(&mut self, idx: usize) {
        self.metrics.rejected(Rejection::TlsHandshake);
        let c = &mut self.conns[idx];
        c.role = Role::Refusing;
        c.close_after_flush = true;
        c.flush_deadline = Some(Instant::now() + FLUSH_GRACE);
        self.queue_owned(idx, Vec::new());
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
                    // Raw bytes until the PROXY header is settled: it comes before TLS.
                    Some(tls) if c.proxy == ProxyStage::Done => tls_failed = tls.receive(data, &mut c.head).is_err(),
                    _ => c.head.extend_from_slice(data),
                }
            }
            self.bufs.release(bid);
        }
        if tls_failed {
            self.refuse_tls(idx);
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
        if self.conns[idx].proxy != ProxyStage::Done && !self.settle_proxy_header(idx) {
            return;
        }
        let limits = self.limits.head_limits();
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
            HeadKind::PlainRtsp => self.on_plain_rtsp(idx, head),
            HeadKind::OtherHttp => self.on_other_http(idx, head),
        }
    }
}

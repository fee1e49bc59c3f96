//! Accepting connections and reading their first bytes. What those bytes decide (PROXY
//! header, TLS plaintext, request head, route, address lists, caps) is
//! `proto::greeting::Greeting`'s; this file feeds it and carries its verdict out.

use crate::proto::descriptor_budget;
use crate::proto::greeting::{self, Greeting, Proxy, Refusal, Reply, Rules, Verdict};

use super::*;

impl Shard {
    /// A viewer's first connection moved here from another shard: its head is handled as if
    /// it had been read here.
    pub(in crate::shard) fn adopt_viewer(&mut self, v: super::super::mailbox::AdoptViewer) {
        let from =
            Departing { fd: v.fd, peer: v.peer, accepted_at: v.accepted_at, tls: v.tls, counted_ip: v.counted_ip };
        let idx = self.io.conns.adopt(from, Some(crate::proto::greeting::Greeting::adopted(v.head)));
        match self.greet(idx, None) {
            Some(verdict) if verdict.is_final() => self.on_verdict(idx, verdict),
            // It was judged whole on the shard that read it.
            _ => self.close_conn(idx),
        }
    }

    pub(in crate::shard) fn arm_accept(&mut self, i: usize) {
        if let Some(l) = &self.io.listeners.open[i] {
            self.io.ring.push(ops::accept(l, i));
        }
    }

    pub(in crate::shard) fn on_accept(&mut self, listener: usize, res: i32, flags: u32) {
        let failed = res < 0 && !(res == -libc::ECANCELED && self.relay.draining_until.is_some());
        if failed {
            self.metrics.accept_error();
        } else {
            // The new connection's head follows at once: not held for a batch.
            self.io.ring.expedite();
        }
        if !cqueue::more(flags) {
            if self.relay.draining_until.is_some() {
                // Cancelled at shutdown: the listener goes.
                self.io.listeners.open[listener] = None;
            } else if failed {
                // Re-arming now would most likely fail again at once, and again: a hot loop.
                // The tick re-arms it; out of descriptors, closing sessions may have freed some.
                if res == -libc::EMFILE || res == -libc::ENFILE {
                    if !std::mem::replace(&mut self.io.listeners.out_of_fds, true) {
                        tracing::warn!(
                            shard = self.id,
                            "out of file descriptors: accepting paused, retried every tick"
                        );
                    }
                } else {
                    tracing::warn!(shard = self.id, error = %std::io::Error::from_raw_os_error(-res), "accept failed: accepting paused for a tick");
                }
                if !self.io.listeners.paused.contains(&listener) {
                    self.io.listeners.paused.push(listener);
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
        if std::mem::replace(&mut self.io.listeners.out_of_fds, false) {
            tracing::info!(shard = self.id, "descriptors available again: accepting resumed");
        }
        let Some(peer) = peer_of(&fd) else { return };
        if self.relay.draining_until.is_some() {
            self.metrics.rejected(Rejection::ShuttingDown);
            send_now(&fd, &http_head::http_error_reply(503, "Service Unavailable"));
            return;
        }
        if self.at_socket_cap() {
            // Accepted and refused at once, so the listen queue keeps draining; the
            // descriptors above the cap stay for admitted tunnels' camera connections.
            self.metrics.rejected(Rejection::MaxConnections);
            refuse_unread(&fd, &descriptor_budget::refusal_reply());
            return;
        }
        let proxy = match self.relay.settings.proxy.expect(peer.ip()) {
            ProxyExpect::Header => Proxy::Required { listener },
            ProxyExpect::NoHeader if self.relay.settings.proxy.enabled => Proxy::Refused,
            ProxyExpect::NoHeader => Proxy::Off,
        };
        // Behind a balancer the checks wait for the viewer's address in the PROXY header.
        let counted = !matches!(proxy, Proxy::Required { .. });
        if counted {
            let mut gate = ShardGate {
                id: self.id,
                shared: &self.shared,
                listeners: &self.io.listeners.open,
                settings: &self.relay.settings,
            };
            if let Err(r) = greeting::admit_address(listener, peer.ip(), &mut gate) {
                self.metrics.rejected(r.reason);
                if let Reply::Send(reply) | Reply::Plain(reply) = r.reply {
                    send_now(&fd, &reply);
                }
                return;
            }
        }
        let tls = match self.io.listeners.open[listener].as_ref().and_then(|l| l.tls.clone()) {
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
        // TCP_NODELAY comes from the listener (`bind_listeners` sets it; Linux copies it to
        // every accepted socket): no setsockopt per connection.
        let idx = self.io.conns.insert_greeting(fd, peer, Greeting::new(proxy), tls, counted, self.io.reaped_at);
        self.arm_head_recv(idx);
    }

    /// Whether the relay's sockets have reached `[limits] max_connections` (a connection just
    /// accepted not counted); logs the start and end of a stretch at the cap.
    fn at_socket_cap(&mut self) -> bool {
        self.publish_sockets();
        let cap = self.socket_cap();
        let open = self.shared.admission.sockets();
        let at_cap = descriptor_budget::refuses(open, cap);
        if at_cap != std::mem::replace(&mut self.io.listeners.at_socket_cap, at_cap) {
            if at_cap {
                tracing::warn!(shard = self.id, open, cap, "at [limits] max_connections: new connections answered 503");
            } else {
                tracing::info!(shard = self.id, open, cap, "below [limits] max_connections: accepting again");
            }
        }
        at_cap
    }

    /// Whether the relay's sockets (a connection just read included) leave no room for a new
    /// tunnel under `[limits] max_connections` (the rest is for POSTs of tunnels begun).
    fn no_room_for_new_tunnels(&mut self) -> bool {
        self.publish_sockets();
        let cap = self.socket_cap();
        descriptor_budget::refuses_new_tunnel(self.shared.admission.sockets(), cap)
    }

    /// `[limits] max_connections`, or what it derives to; the routes are looked at only when
    /// the settings changed (a reload, a route added), not per connection.
    fn socket_cap(&mut self) -> usize {
        match &self.io.listeners.socket_cap {
            Some((from, cap)) if Arc::ptr_eq(from, &self.relay.settings) => *cap,
            _ => {
                let settings = self.relay.settings.clone();
                let cameras = descriptor_budget::CameraSockets::of(settings.routes.routes());
                let cap = self.shared.admission.socket_cap(settings.limits.max_connections, cameras);
                self.io.listeners.socket_cap = Some((settings, cap));
                cap
            }
        }
    }

    /// Adds the change in this shard's socket count since it last did to the process-wide
    /// count every shard's accept reads: called per accept, per free and per loop turn, so
    /// camera connections and hand-offs are counted within a turn.
    pub(in crate::shard) fn publish_sockets(&mut self) {
        let now = self.io.conns.len();
        let was = std::mem::replace(&mut self.io.listeners.sockets_published, now);
        if now != was {
            self.shared.admission.sockets_moved(was, now);
        }
    }

    /// Accepting stopped out of descriptors: a connection just closed gave one back, so the
    /// listeners are re-armed now rather than at the next tick (a tick's worth of a setup burst
    /// would overflow the listen queue). Bounded: one failed accept per close at worst.
    pub(in crate::shard) fn resume_accepting_after_close(&mut self) {
        if !self.io.listeners.out_of_fds || self.relay.draining_until.is_some() {
            return;
        }
        for listener in std::mem::take(&mut self.io.listeners.paused) {
            self.arm_accept(listener);
        }
    }

    pub(in crate::shard) fn arm_head_recv(&mut self, idx: usize) {
        if let Some(sub) = self.io.conns.head_recv(idx, &self.io.bufs) {
            self.io.ring.push(sub);
        }
    }

    /// Feeds a greeting connection's received bytes (`data`: a ring buffer and a length; none
    /// to judge what it holds already) to its greeting. `None`: it is not greeting.
    pub(in crate::shard) fn greet(&mut self, idx: usize, data: Option<(u16, usize)>) -> Option<Verdict> {
        let raw = match data {
            Some((bid, len)) => self.io.bufs.bytes(bid, len),
            None => &[],
        };
        let rules = Rules {
            routes: &self.relay.settings.routes,
            head: self.relay.settings.limits.head_limits(),
            messages: self.relay.settings.limits.message_limits(),
            web: self.relay.settings.web.enabled,
        };
        let mut gate = ShardGate {
            id: self.id,
            shared: &self.shared,
            listeners: &self.io.listeners.open,
            settings: &self.relay.settings,
        };
        self.io.conns.greet(idx, raw, &rules, &mut gate)
    }

    pub(in crate::shard) fn on_head_recv(&mut self, idx: usize, res: i32, flags: u32) {
        self.io.conns.completed(idx);
        let bid = cqueue::buffer_select(flags);
        if let Some(bid) = bid {
            self.io.bufs.on_received(bid);
        }
        // The head receive was in flight on it, so the slot still holds it; gone, there is
        // nothing to greet.
        let closing = self.io.conns.get(idx).is_none_or(|c| c.is_closing());
        let verdict = match bid {
            Some(bid) if res > 0 && !closing => self.greet(idx, Some((bid, res as usize))),
            _ => None,
        };
        if let Some(bid) = bid {
            self.io.bufs.release(bid);
        }
        if let Some(verdict) = verdict {
            self.on_verdict(idx, verdict);
            return;
        }
        if closing {
            self.maybe_free(idx);
        } else if res == -libc::ENOBUFS {
            self.io.conns.starve(idx);
        } else if res <= 0 {
            self.close_conn(idx);
        }
    }

    /// Carries out what a connection's first bytes decided.
    pub(in crate::shard) fn on_verdict(&mut self, idx: usize, verdict: Verdict) {
        if let Some(kind) = verdict.counted_as() {
            self.metrics.connection_accepted(kind);
        }
        if self.io.conns.get(idx).is_some_and(|c| c.has_tls()) {
            // Handshake messages rustls wants to send (session tickets), before anything else.
            self.io.queue_owned(idx, Vec::new());
        }
        let opens_tunnel =
            matches!(verdict, Verdict::TunnelGet { .. } | Verdict::PlainRtsp { .. } | Verdict::WebSocket { .. });
        if opens_tunnel && self.no_room_for_new_tunnels() {
            let reply = descriptor_budget::refusal_reply();
            self.refuse(idx, Rejection::MaxConnections, reply);
            return;
        }
        match verdict {
            Verdict::NeedMore | Verdict::Admitted { .. } => self.arm_head_recv(idx),
            Verdict::Refuse(r) => self.refuse_greeting(idx, r),
            Verdict::MoveTo { shard, head } => {
                self.io.conns.start_move(idx, Move::Viewer { shard, head });
                self.hand_off_if_quiet(idx);
            }
            Verdict::TunnelGet { route, cookie, rest } => self.on_tunnel_get(idx, route, cookie, rest),
            Verdict::TunnelPost { cookie, expect_continue, rest } => {
                self.on_tunnel_post(idx, cookie, expect_continue, rest)
            }
            Verdict::PlainRtsp { route, bytes } => self.on_plain_rtsp(idx, route, bytes),
            Verdict::WebSocket { route, upgrade, rest } => self.on_websocket(idx, route, *upgrade, rest),
            Verdict::PlayerFile { target, head_only } => match crate::web_assets::asset_reply(&target, head_only) {
                Some(reply) => self.answer(idx, reply),
                None => self.refuse(idx, Rejection::UnknownRoute, http_head::http_error_reply(404, "Not Found")),
            },
            Verdict::RoutesPage { visible, host } => {
                let authority = host.as_deref().unwrap_or(&self.relay.local_authority);
                let at =
                    crate::web_assets::ListedAt { authority, tls: self.io.conns.get(idx).is_some_and(|c| c.has_tls()) };
                self.answer(idx, crate::web_assets::routes_page_reply(visible.iter().map(String::as_str), at, false))
            }
            Verdict::PlayerPage => self.answer(idx, crate::web_assets::player_page_reply(false)),
        }
    }

    fn refuse_greeting(&mut self, idx: usize, r: Refusal) {
        if let Some(c) = self.io.conns.get(idx).filter(|_| !r.detail.is_empty()) {
            tracing::debug!(shard = self.id, peer = %c.peer(), reason = ?r.reason, detail = %r.detail, "refused first request");
        }
        match r.reply {
            Reply::Close => {
                self.metrics.rejected(r.reason);
                self.close_conn(idx);
            }
            Reply::Send(reply) | Reply::Plain(reply) => self.refuse(idx, r.reason, reply),
        }
    }

    /// Answers with `reply`, counts `reason`, and closes once the reply is out.
    pub(in crate::shard) fn refuse(&mut self, idx: usize, reason: Rejection, reply: Vec<u8>) {
        self.metrics.rejected(reason);
        self.io.conns.refuse(idx, reply, FLUSH_GRACE);
    }

    /// Writes a successful answer (a page, a file), then closes.
    pub(in crate::shard) fn answer(&mut self, idx: usize, reply: Vec<u8>) {
        self.io.conns.refuse(idx, reply, FLUSH_GRACE);
    }
}

/// Answers a connection refused before anything of it was read, and reads away what it sent
/// already (its request head, usually): closing a socket with unread bytes resets it, and a
/// reset can beat the answer to the client.
fn refuse_unread(fd: &OwnedFd, reply: &[u8]) {
    send_now(fd, reply);
    let sock = socket2::SockRef::from(fd);
    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    for _ in 0..16 {
        match sock.recv_with_flags(&mut scratch, libc::MSG_DONTWAIT) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

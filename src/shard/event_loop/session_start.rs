//! Heads that start sessions: a tunnel GET, its POST (bound here, parked until the GET comes,
//! or handed to the GET's shard), or a plain RTSP connection.

use super::*;
use crate::proto::route::is_route_spelling;

impl Shard {
    pub(super) fn on_tunnel_get(&mut self, idx: usize, head: RequestHead) {
        let path = crate::proto::route::uri_path(&head.target);
        // A GET of `/` (older gortsplib) is routed by its first RTSP request instead (and
        // served 1:1: its camera's shard is not known when it arrives).
        let route = self.routes.lookup(&head.target);
        let misspelled = route.as_ref().is_some_and(|r| !is_route_spelling(&head.target, &r.path));
        if !misspelled && self.move_to_owner(idx, route.as_ref()) {
            return;
        }
        self.metrics.connection_accepted(ConnKind::TunnelGet);
        if misspelled {
            self.refuse(idx, Rejection::RouteSpelling, http_head::http_error_reply(404, "Not Found"));
            return;
        }
        if route.is_none() && path != "/" {
            self.refuse(idx, Rejection::UnknownRoute, http_head::http_error_reply(404, "Not Found"));
            return;
        }
        // The classifier only calls a GET a tunnel when it carries a valid cookie.
        let Some(cookie) = head.cookie.clone() else {
            self.refuse(idx, Rejection::BadCookie, http_head::http_error_reply(400, "Bad Request"));
            return;
        };
        if self.shared.cookies.lookup_get(&cookie).is_some() {
            // The usual duplicate, refused before a session exists (so it is not counted as one);
            // two GETs racing with one cookie are caught again at registration below.
            self.refuse(idx, Rejection::DuplicateCookie, http_head::http_error_reply(409, "Conflict"));
            return;
        }
        if !self.shared.admission.try_open_session(self.limits.max_sessions) {
            self.refuse(idx, Rejection::MaxSessions, http_head::http_error_reply(503, "Service Unavailable"));
            return;
        }
        let (peer, accepted_at) = (self.conns[idx].peer, self.conns[idx].accepted_at);
        if route.as_ref().is_some_and(|r| !r.acl.permits(peer.ip())) {
            // Refused before any camera connection.
            self.shared.admission.close_session();
            self.refuse(idx, Rejection::AddressDenied, http_head::http_error_reply(403, "Forbidden"));
            return;
        }
        let tls = self.conns[idx].tls.is_some();
        let key = self.new_session(route, tunnel::Kind::Http, tls, peer, accepted_at, None);
        let me = SessionRef { shard: self.id, key: key.pack() };
        match self.shared.cookies.register_get(&cookie, me) {
            GetRegistration::Duplicate => {
                self.sessions.remove(key);
                self.metrics.session_ended(SessionOutcome::ProtocolError);
                self.shared.admission.close_session();
                self.refuse(idx, Rejection::DuplicateCookie, http_head::http_error_reply(409, "Conflict"));
                return;
            }
            GetRegistration::Registered { wake_parked_on } => {
                if let Some(shard) = wake_parked_on {
                    // A stopped shard's parked POST went with it.
                    let _ = self.shared.mailboxes[shard as usize].post(ShardMsg::WakeParked { cookie: cookie.clone() });
                }
            }
        }
        let leftover = self.conns[idx].head.split_off(head.consumed);
        self.conns[idx].head = Vec::new();
        let Some(s) = self.sessions.get_mut(key) else { return };
        s.cookie = Some(cookie);
        s.viewer = Some(idx);
        let c = &mut self.conns[idx];
        c.role = Role::TunnelGet(key);
        let reply = http_head::tunnel_get_reply(&http_date(), self.public_address.as_deref());
        self.queue_owned(idx, reply);
        self.arm_recv(idx);
        if !leftover.is_empty() {
            self.feed_viewer(key, ViewerStream::TunnelData, &leftover);
        }
    }

    pub(super) fn on_tunnel_post(&mut self, idx: usize, head: RequestHead) {
        self.metrics.connection_accepted(ConnKind::TunnelPost);
        if head.expect_continue {
            if self.conns[idx].tls.is_some() {
                // Inside the TLS stream; a hand-off waits for this send to complete.
                self.queue_owned(idx, http_head::CONTINUE_REPLY.to_vec());
            } else {
                send_now(&self.conns[idx].fd, http_head::CONTINUE_REPLY);
            }
        }
        let leftover = self.conns[idx].head.split_off(head.consumed);
        self.conns[idx].head = Vec::new();
        let Some(cookie) = head.cookie else {
            self.metrics.rejected(Rejection::BadCookie);
            self.close_conn(idx);
            return;
        };
        self.find_get_for_post(idx, cookie, leftover);
    }

    /// Binds a POST to its GET (here or on another shard), or parks it until the GET comes.
    pub(super) fn find_get_for_post(&mut self, idx: usize, cookie: String, leftover: Vec<u8>) {
        match self.shared.cookies.post_arrived(&cookie, self.id) {
            PostLookup::Found(r) if r.shard == self.id => {
                self.parked.remove(&cookie);
                self.bind_post(SessionKey::unpack(r.key), idx, leftover);
            }
            PostLookup::Found(r) if self.shard_stopped(r.shard) => {
                // Its GET died with its shard: nothing will ever take this POST.
                self.parked.remove(&cookie);
                self.refuse(idx, Rejection::ShuttingDown, http_head::http_error_reply(503, "Service Unavailable"));
            }
            PostLookup::Found(r) => {
                self.parked.remove(&cookie);
                self.conns[idx].role = Role::HandingOff { shard: r.shard, session_key: r.key, leftover };
                self.hand_off_if_quiet(idx);
            }
            PostLookup::Parked => {
                self.parked.insert(cookie.clone(), idx);
                self.conns[idx].role = Role::ParkedPost { cookie, leftover };
            }
            PostLookup::AlreadyParked => {
                self.metrics.rejected(Rejection::DuplicateCookie);
                self.close_conn(idx);
            }
        }
    }

    /// Moves a POST to the GET's shard once nothing of ours is in flight on it. Its head receive
    /// has completed and no receive is armed, but a TLS POST may still be sending (session
    /// tickets): the kernel must be done with those buffers before the connection leaves the
    /// slab, so the hand-off waits for the last send completion (see `on_send`).
    pub(super) fn hand_off_if_quiet(&mut self, idx: usize) {
        let Some(conn) = self.conns.take_quiet(idx) else {
            if self.conns.get(idx).is_some_and(|c| !c.send.is_empty()) {
                self.conns.dirty.push(idx);
            }
            return;
        };
        let (shard, msg) = match conn.role {
            Role::HandingOff { shard, session_key, leftover } => (
                shard,
                ShardMsg::AdoptPost(AdoptPost {
                    fd: conn.fd,
                    peer: conn.peer,
                    session_key,
                    leftover,
                    accepted_at: conn.accepted_at,
                    tls: conn.tls,
                }),
            ),
            Role::MovingViewer { shard } => (
                shard,
                ShardMsg::AdoptViewer(AdoptViewer {
                    fd: conn.fd,
                    peer: conn.peer,
                    head: conn.head,
                    accepted_at: conn.accepted_at,
                    tls: conn.tls,
                    counted_ip: conn.counted_ip,
                }),
            ),
            _ => return,
        };
        if let Err(msg) = self.shared.mailboxes[shard as usize].post(msg) {
            self.refuse_handed_back(msg);
        }
    }

    /// Whether `shard` has stopped (its mailbox is closed): it must be handed no more work.
    pub(super) fn shard_stopped(&self, shard: u16) -> bool {
        self.shared.mailboxes.get(shard as usize).is_none_or(|m| m.is_closed())
    }

    /// A hand-off whose shard stopped after it was decided: the connection is out of our table
    /// already, so it is answered (plain ones) and closed here.
    fn refuse_handed_back(&mut self, msg: ShardMsg) {
        let (fd, peer, tls, counted_ip) = match msg {
            // A POST is always counted once its head is read (see `adopt_conn`'s callers).
            ShardMsg::AdoptPost(p) => (p.fd, p.peer, p.tls.is_some(), true),
            ShardMsg::AdoptViewer(v) => (v.fd, v.peer, v.tls.is_some(), v.counted_ip),
            _ => return,
        };
        self.metrics.rejected(Rejection::ShuttingDown);
        if !tls {
            send_now(&fd, &http_head::http_error_reply(503, "Service Unavailable"));
        }
        if counted_ip {
            self.shared.admission.close_connection(peer.ip());
        }
    }

    pub(super) fn bind_post(&mut self, key: SessionKey, idx: usize, leftover: Vec<u8>) {
        let (peer, tls) = (self.conns[idx].peer, self.conns[idx].tls.is_some());
        let Some(s) = self.session(key) else {
            // The GET went away between lookup and bind.
            self.metrics.rejected(Rejection::PostWithoutGet);
            self.close_conn(idx);
            return;
        };
        s.tunnel.handle(Input::PostArrived { ip: peer.ip(), tls }, Instant::now());
        self.apply(key, Fed::Post(idx));
        // Bound, unless the tunnel refused it.
        if self.conns.get(idx).is_some_and(|c| !c.closing && c.role == Role::TunnelPost(key)) {
            // A viewer behind on its GET is not read on a new POST either.
            if !self.paused_for_backpressure(&Role::TunnelPost(key)) {
                self.arm_recv(idx);
            }
            if !leftover.is_empty() {
                self.feed_viewer(key, ViewerStream::TunnelCommands, &leftover);
            }
        }
    }

    pub(super) fn on_plain_rtsp(&mut self, idx: usize, head: RequestHead) {
        // The first request names the route; a shared one is served on its camera's shard.
        // Another spelling of the route is refused by the session (it looks the route up again).
        let route = self
            .routes
            .lookup(&head.target)
            .filter(|r| r.shared().is_some() && is_route_spelling(&head.target, &r.path));
        if self.move_to_owner(idx, route.as_ref()) {
            return;
        }
        self.metrics.connection_accepted(ConnKind::PlainRtsp);
        if !self.shared.admission.try_open_session(self.limits.max_sessions) {
            let limits = self.limits.message_limits();
            let cseq = rtsp::parse_message(&self.conns[idx].head, &limits).ok().flatten().and_then(|(m, _)| m.cseq());
            self.refuse(idx, Rejection::MaxSessions, local_reply(503, "Service Unavailable", cseq));
            return;
        }
        let (peer, accepted_at) = (self.conns[idx].peer, self.conns[idx].accepted_at);
        let tls = self.conns[idx].tls.is_some();
        let key = self.new_session(route, tunnel::Kind::Plain, tls, peer, accepted_at, None);
        if let Some(s) = self.sessions.get_mut(key) {
            s.viewer = Some(idx);
        }
        self.conns[idx].role = Role::PlainRtsp(key);
        let head = std::mem::take(&mut self.conns[idx].head);
        self.arm_recv(idx);
        self.feed_viewer(key, ViewerStream::Plain, &head);
    }
}

//! First requests that start sessions, as their greeting's verdict has them: a tunnel GET, its
//! POST (bound here, parked until the GET comes, or handed to the GET's shard), plain RTSP.

use super::*;

impl Shard {
    /// A tunnel GET, admitted (its session counted): the session starts and its cookie is
    /// registered for the POST.
    pub(in crate::shard) fn on_tunnel_get(
        &mut self,
        idx: usize,
        route: Option<Arc<Route>>,
        cookie: String,
        rest: Vec<u8>,
    ) {
        let Some(c) = self.io.conn(idx) else {
            // Not reached while a verdict is carried out at once; its session was counted.
            self.shared.admission.close_session();
            return;
        };
        let (peer, accepted_at, tls) = (c.peer(), c.accepted_at(), c.has_tls());
        let key = self.new_session(route, tunnel::Kind::Http, tls, peer, accepted_at, None);
        let me = SessionRef { shard: self.id, key: key.pack() };
        match self.shared.cookies.register_get(&cookie, me) {
            GetRegistration::Duplicate => {
                self.relay.sessions.remove(key);
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
        let Some(s) = self.relay.sessions.get_mut(key) else { return };
        s.cookie = Some(cookie);
        s.viewer = Some(idx);
        self.io.go_live(idx, Role::TunnelGet(key));
        let reply = http_head::tunnel_get_reply(&http_date(), self.relay.settings.public_address.as_deref());
        self.io.queue_owned(idx, reply);
        self.io.arm_recv(idx);
        if !rest.is_empty() {
            self.feed_viewer(key, ViewerStream::TunnelData, &rest);
        }
    }

    pub(in crate::shard) fn on_tunnel_post(
        &mut self,
        idx: usize,
        cookie: String,
        expect_continue: bool,
        rest: Vec<u8>,
    ) {
        if let Some(c) = self.io.conn(idx).filter(|_| expect_continue) {
            if c.has_tls() {
                // Inside the TLS stream; a hand-off waits for this send to complete.
                self.io.queue_owned(idx, http_head::CONTINUE_REPLY.to_vec());
            } else {
                send_now(&c.fd(), http_head::CONTINUE_REPLY);
            }
        }
        self.io.unbind(idx);
        self.find_get_for_post(idx, cookie, rest);
    }

    /// A parked POST is looked up again (its GET may have come, here or elsewhere).
    pub(in crate::shard) fn wake_parked(&mut self, idx: usize, cookie: String) {
        if !self.io.conn(idx).is_some_and(|c| matches!(c.phase(), Phase::Parked { .. })) {
            return;
        }
        if self.shared.cookies.post_arrived(&cookie, self.id) == PostLookup::Parked {
            return;
        }
        let Some(leftover) = self.io.unpark(idx) else { return };
        self.relay.parked.remove(&cookie);
        self.find_get_for_post(idx, cookie, leftover);
    }

    /// Binds a POST to its GET (here or on another shard), or parks it until the GET comes.
    pub(in crate::shard) fn find_get_for_post(&mut self, idx: usize, cookie: String, leftover: Vec<u8>) {
        match self.shared.cookies.post_arrived(&cookie, self.id) {
            PostLookup::Found(r) if r.shard == self.id => {
                self.relay.parked.remove(&cookie);
                self.bind_post(SessionKey::unpack(r.key), idx, leftover);
            }
            PostLookup::Found(r) if self.shard_stopped(r.shard) => {
                // Its GET died with its shard: nothing will ever take this POST.
                self.relay.parked.remove(&cookie);
                self.refuse(idx, Rejection::ShuttingDown, http_head::http_error_reply(503, "Service Unavailable"));
            }
            PostLookup::Found(r) => {
                self.relay.parked.remove(&cookie);
                self.io.start_move(idx, Move::Post { shard: r.shard, session_key: r.key, leftover });
                self.hand_off_if_quiet(idx);
            }
            PostLookup::Parked => {
                self.relay.parked.insert(cookie.clone(), idx);
                self.io.park(idx, cookie, leftover);
            }
            PostLookup::AlreadyParked => {
                self.metrics.rejected(Rejection::DuplicateCookie);
                self.close_conn(idx);
            }
        }
    }

    /// Whether `shard` has stopped (its mailbox is closed): it must be handed no more work.
    pub(in crate::shard) fn shard_stopped(&self, shard: u16) -> bool {
        self.shared.mailboxes.get(shard as usize).is_none_or(|m| m.is_closed())
    }

    pub(in crate::shard) fn bind_post(&mut self, key: SessionKey, idx: usize, leftover: Vec<u8>) {
        let Some((peer, tls)) = self.io.conn(idx).map(|c| (c.peer(), c.has_tls())) else { return };
        let Some(s) = self.relay.sessions.get_mut(key) else {
            // The GET went away between lookup and bind.
            self.metrics.rejected(Rejection::PostWithoutGet);
            self.close_conn(idx);
            return;
        };
        s.tunnel.handle(Input::PostArrived { ip: peer.ip(), tls }, self.io.reaped_at);
        self.apply(key, Fed::Post(idx));
        // Bound, unless the tunnel refused it.
        let role = Role::TunnelPost(key);
        if self.io.conn(idx).is_some_and(|c| matches!(c.phase(), Phase::Live(r) if *r == role)) {
            // A viewer behind on its GET is not read on a new POST either.
            if !self.paused_for_backpressure(Some(role)) {
                self.io.arm_recv(idx);
            }
            if !leftover.is_empty() {
                self.feed_viewer(key, ViewerStream::TunnelCommands, &leftover);
            }
        }
    }

    /// Plain RTSP, admitted (its session counted): `bytes` (its first request and whatever
    /// followed) go to the new session.
    pub(in crate::shard) fn on_plain_rtsp(&mut self, idx: usize, route: Option<Arc<Route>>, bytes: Vec<u8>) {
        let Some(c) = self.io.conn(idx) else {
            // Not reached while a verdict is carried out at once; its session was counted.
            self.shared.admission.close_session();
            return;
        };
        let (peer, accepted_at, tls) = (c.peer(), c.accepted_at(), c.has_tls());
        let key = self.new_session(route, tunnel::Kind::Plain, tls, peer, accepted_at, None);
        if let Some(s) = self.relay.sessions.get_mut(key) {
            s.viewer = Some(idx);
        }
        self.io.go_live(idx, Role::PlainRtsp(key));
        self.io.arm_recv(idx);
        self.feed_viewer(key, ViewerStream::Plain, &bytes);
    }
}

//! Browsers on the tunnel port (`[web]`): the player page, its files, the route list, and RTSP
//! over WebSocket (`rtsp.onvif.org`) — a session like plain RTSP whose bytes go through a
//! [`WsEndpoint`] each way. What a request asks for, and whether it is served, is
//! `proto::greeting`'s to decide (pages and files are answered in `accept`); the WebSocket
//! framing rules are `WsEndpoint`'s.

use super::*;
use crate::proto::websocket::{self, WsEnd, WsEndpoint};

impl Shard {
    /// An acceptable upgrade, admitted as a tunnel GET is (its greeting judged the route, the
    /// address lists and the session cap): answered 101, then a session like plain RTSP on
    /// this one connection.
    pub(in crate::shard) fn on_websocket(
        &mut self,
        idx: usize,
        route: Option<Arc<Route>>,
        upgrade: websocket::Upgrade,
        rest: Vec<u8>,
    ) {
        let Some(c) = self.io.conn(idx) else {
            // Not reached while a verdict is carried out at once; its session was counted.
            self.shared.admission.close_session();
            return;
        };
        let (peer, accepted_at, tls) = (c.peer(), c.accepted_at(), c.has_tls());
        tracing::debug!(
            shard = self.id,
            peer = %peer,
            target = crate::proto::route::uri_path(&upgrade.target),
            user_agent = upgrade.user_agent.as_deref().unwrap_or("-"),
            "WebSocket accepted"
        );
        // `?jwt=`: the player's token, for routes an external method guards.
        let bearer = crate::proto::external_auth::bearer_from_target(&upgrade.target);
        let key = self.new_session(route, tunnel::Kind::WebSocket, tls, peer, accepted_at, bearer);
        if let Some(s) = self.relay.sessions.get_mut(key) {
            s.viewer = Some(idx);
        }
        self.io.go_live(idx, Role::PlainRtsp(key));
        self.io.queue_owned(idx, websocket::accept_reply(&upgrade));
        self.io.speak_websocket(idx, WsEndpoint::new(self.relay.settings.web.websocket_limits()));
        self.io.arm_recv(idx);
        if !rest.is_empty() {
            self.websocket_bytes(idx, key, &rest);
        }
    }

    /// A WebSocket viewer's bytes: unframed, answered (pongs, the close handshake), the RTSP
    /// bytes fed to the session as plain RTSP.
    pub(in crate::shard) fn websocket_bytes(&mut self, idx: usize, key: SessionKey, bytes: &[u8]) {
        let mut data = std::mem::take(&mut self.io.ws_data);
        data.clear();
        let end = self.io.unframe_websocket(idx, bytes, &mut data);
        if !data.is_empty() {
            let routes = &*self.relay.settings.routes;
            if let Some(s) = self.relay.sessions.get_mut(key) {
                s.tunnel.handle(
                    Input::ViewerBytes { stream: ViewerStream::Plain, bytes: &data, routes },
                    self.io.reaped_at,
                );
            }
            self.apply(key, Fed::Nothing);
        } else {
            // Pongs count towards the viewer's backlog like anything else queued for it: a
            // client that pings and never reads is paused, then closed, as any other.
            self.update_upstream_flow(key);
        }
        self.io.ws_data = data;
        if let Some(end) = end {
            self.websocket_ended(idx, key, end);
        }
    }

    /// The WebSocket is over (the client closed it, or broke the framing rules): the viewer is
    /// gone as if it had closed TCP, but its last frames (the close echo) go out first, then the
    /// relay half-closes and reads (discarding) until the client closes or `proto::closing::FLUSH_GRACE` ends.
    /// Closing at once could leave a client that is still sending (an oversized frame) stuck:
    /// a closed socket that has read everything may keep advertising a zero window, so the
    /// client's send never completes and it never reads the close frame.
    fn websocket_ended(&mut self, idx: usize, key: SessionKey, end: WsEnd) {
        if let WsEnd::ProtocolError(e) = &end {
            if let Some(c) = self.io.conn(idx) {
                tracing::debug!(shard = self.id, peer = %c.peer(), error = %e, "WebSocket closed for a framing error");
            }
            self.metrics.rejected(e.rejection());
        }
        if let Some(s) = self.relay.sessions.get_mut(key) {
            if s.viewer == Some(idx) {
                s.viewer = None;
            }
            s.tunnel.handle(Input::ViewerClosed(ViewerStream::Plain), self.io.reaped_at);
        }
        if self.io.conn(idx).is_some() {
            // Nothing more is read into the session; the close (and a TLS connection's
            // close_notify) goes out, then the half-close.
            self.io.flush_then(idx, AfterFlush::HalfClose, flush_deadline(self.io.reaped_at), false);
            // Queues the close_notify alert on a TLS connection (nothing on a plain one).
            self.io.queue_owned(idx, Vec::new());
        }
        self.apply(key, Fed::Nothing);
    }
}

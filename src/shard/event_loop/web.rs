//! Browsers on the tunnel port (`[web]`): the player page, its files, the route list, and RTSP
//! over WebSocket (`rtsp.onvif.org`) — a session like plain RTSP whose bytes go through a
//! [`WsEndpoint`] each way. What a request asks for is `proto::websocket::classify`'s to decide;
//! the WebSocket framing rules are `WsEndpoint`'s.

use super::*;
use crate::proto::route::is_route_spelling;
use crate::proto::websocket::{self, WebRequest, WsEnd, WsEndpoint, close_code};

impl Shard {
    /// An HTTP request that is not a tunnel GET or POST.
    pub(super) fn on_other_http(&mut self, idx: usize, head: RequestHead) {
        let request = if self.web.enabled {
            websocket::classify(&self.conns[idx].head[..head.consumed])
        } else {
            WebRequest::Other
        };
        match request {
            WebRequest::WebSocket(upgrade)
                if !crate::proto::origin::websocket_origin_allowed(
                    upgrade.origin.as_deref(),
                    upgrade.host.as_deref(),
                    &self.web.origins(),
                ) =>
            {
                self.metrics.connection_accepted(ConnKind::OtherHttp);
                tracing::debug!(shard = self.id, peer = %self.conns[idx].peer, origin = upgrade.origin.as_deref().unwrap_or("-"), "refused WebSocket from another origin");
                self.refuse(idx, Rejection::WebSocketOrigin, http_head::http_error_reply(403, "Forbidden"));
            }
            WebRequest::WebSocket(upgrade) => self.on_websocket(idx, head.consumed, upgrade),
            WebRequest::BadUpgrade(e) => {
                self.metrics.connection_accepted(ConnKind::OtherHttp);
                tracing::debug!(shard = self.id, peer = %self.conns[idx].peer, error = %e, "refused WebSocket upgrade");
                self.refuse(idx, e.rejection(), e.reply());
            }
            WebRequest::PlayerFile { target, head_only } => {
                self.metrics.connection_accepted(ConnKind::OtherHttp);
                match crate::web_assets::asset_reply(&target, head_only) {
                    Some(reply) => self.answer(idx, reply),
                    None => self.refuse(idx, Rejection::UnknownRoute, http_head::http_error_reply(404, "Not Found")),
                }
            }
            WebRequest::Page { target } => {
                self.metrics.connection_accepted(ConnKind::OtherHttp);
                self.on_page(idx, &target);
            }
            WebRequest::Other => {
                self.metrics.connection_accepted(ConnKind::OtherHttp);
                let reply = http_head::not_a_tunnel_reply(head.method == "HEAD");
                self.refuse(idx, Rejection::NotATunnel, reply);
            }
        }
    }

    /// Writes a successful answer (a page, a file), then closes.
    fn answer(&mut self, idx: usize, reply: Vec<u8>) {
        let c = &mut self.conns[idx];
        c.role = Role::Refusing;
        c.close_after_flush = true;
        c.flush_deadline = Some(Instant::now() + FLUSH_GRACE);
        self.queue_owned(idx, reply);
    }

    /// `/`: the routes this address may watch (a route with users is listed: the login happens
    /// inside the WebSocket). A route's path: the player page, if this address may watch it.
    fn on_page(&mut self, idx: usize, target: &str) {
        let ip = self.conns[idx].peer.ip();
        if crate::proto::route::uri_path(target) == "/" {
            let routes = self.routes.clone();
            let visible = routes.routes().iter().filter(|r| r.acl.permits(ip)).map(|r| r.path.as_str());
            let host = websocket::page_host(&self.conns[idx].head);
            let authority = host.as_deref().unwrap_or(&self.local_authority);
            let at = crate::web_assets::ListedAt { authority, tls: self.conns[idx].tls.is_some() };
            let reply = crate::web_assets::routes_page_reply(visible, at, false);
            self.answer(idx, reply);
            return;
        }
        match self.routes.lookup(target) {
            None => self.refuse(idx, Rejection::UnknownRoute, http_head::http_error_reply(404, "Not Found")),
            // Its WebSocket (the page plays its own path) would be refused: so is the page.
            Some(r) if !is_route_spelling(target, &r.path) => {
                self.refuse(idx, Rejection::RouteSpelling, http_head::http_error_reply(404, "Not Found"))
            }
            // As for a tunnel GET from that address.
            Some(r) if !r.acl.permits(ip) => {
                self.refuse(idx, Rejection::AddressDenied, http_head::http_error_reply(403, "Forbidden"))
            }
            Some(_) => self.answer(idx, crate::web_assets::player_page_reply(false)),
        }
    }

    /// An acceptable upgrade: admitted as a tunnel GET is (route, address lists, session cap;
    /// the address's auth block was checked at accept), answered 101, then a session like plain
    /// RTSP on this one connection.
    fn on_websocket(&mut self, idx: usize, consumed: usize, upgrade: websocket::Upgrade) {
        let path = crate::proto::route::uri_path(&upgrade.target);
        // `/` is routed by the first RTSP request's URI, as plain RTSP is (and served 1:1).
        let route = self.routes.lookup(&upgrade.target);
        let misspelled = route.as_ref().is_some_and(|r| !is_route_spelling(&upgrade.target, &r.path));
        if !misspelled && self.move_to_owner(idx, route.as_ref()) {
            return;
        }
        self.metrics.connection_accepted(ConnKind::WebSocket);
        if misspelled {
            self.refuse(idx, Rejection::RouteSpelling, http_head::http_error_reply(404, "Not Found"));
            return;
        }
        if route.is_none() && path != "/" {
            self.refuse(idx, Rejection::UnknownRoute, http_head::http_error_reply(404, "Not Found"));
            return;
        }
        let (peer, accepted_at) = (self.conns[idx].peer, self.conns[idx].accepted_at);
        if route.as_ref().is_some_and(|r| !r.acl.permits(peer.ip())) {
            self.refuse(idx, Rejection::AddressDenied, http_head::http_error_reply(403, "Forbidden"));
            return;
        }
        if !self.shared.admission.try_open_session(self.limits.max_sessions) {
            self.refuse(idx, Rejection::MaxSessions, http_head::http_error_reply(503, "Service Unavailable"));
            return;
        }
        tracing::debug!(
            shard = self.id,
            peer = %peer,
            target = %upgrade.target,
            user_agent = upgrade.user_agent.as_deref().unwrap_or("-"),
            "WebSocket accepted"
        );
        let tls = self.conns[idx].tls.is_some();
        let key = self.new_session(route, tunnel::Kind::WebSocket, tls, peer, accepted_at);
        if let Some(s) = self.sessions.get_mut(key) {
            s.viewer = Some(idx);
        }
        let leftover = self.conns[idx].head.split_off(consumed);
        let c = &mut self.conns[idx];
        c.head = Vec::new();
        c.role = Role::PlainRtsp(key);
        self.queue_owned(idx, websocket::accept_reply(&upgrade));
        self.conns[idx].ws = Some(Box::new(WsEndpoint::new(self.web.websocket_limits())));
        self.arm_recv(idx);
        if !leftover.is_empty() {
            self.websocket_bytes(idx, key, &leftover);
        }
    }

    /// A WebSocket viewer's bytes: unframed, answered (pongs, the close handshake), the RTSP
    /// bytes fed to the session as plain RTSP.
    pub(super) fn websocket_bytes(&mut self, idx: usize, key: SessionKey, bytes: &[u8]) {
        let mut data = std::mem::take(&mut self.ws_data);
        data.clear();
        let mut to_client = Vec::new();
        let end = match self.conns.get_mut(idx).and_then(|c| c.ws.as_mut()) {
            Some(ws) => ws.on_bytes(bytes, &mut data, &mut to_client),
            None => None,
        };
        if !to_client.is_empty() {
            self.queue_owned(idx, to_client);
        }
        if !data.is_empty() {
            let routes = &*self.routes;
            if let Some(s) = self.sessions.get_mut(key) {
                s.tunnel
                    .handle(Input::ViewerBytes { stream: ViewerStream::Plain, bytes: &data, routes }, Instant::now());
            }
            self.apply(key, Fed::Nothing);
        } else {
            // Pongs count towards the viewer's backlog like anything else queued for it: a
            // client that pings and never reads is paused, then closed, as any other.
            self.update_upstream_flow(key);
        }
        self.ws_data = data;
        if let Some(end) = end {
            self.websocket_ended(idx, key, end);
        }
    }

    /// The WebSocket is over (the client closed it, or broke the framing rules): the viewer is
    /// gone as if it had closed TCP, but its last frames (the close echo) go out first, then the
    /// relay half-closes and reads (discarding) until the client closes or `FLUSH_GRACE` ends.
    /// Closing at once could leave a client that is still sending (an oversized frame) stuck:
    /// a closed socket that has read everything may keep advertising a zero window, so the
    /// client's send never completes and it never reads the close frame.
    fn websocket_ended(&mut self, idx: usize, key: SessionKey, end: WsEnd) {
        if let WsEnd::ProtocolError(e) = &end {
            tracing::debug!(shard = self.id, peer = %self.conns[idx].peer, error = %e, "WebSocket closed for a framing error");
            self.metrics.rejected(e.rejection());
        }
        if let Some(s) = self.session(key) {
            if s.viewer == Some(idx) {
                s.viewer = None;
            }
            s.tunnel.handle(Input::ViewerClosed(ViewerStream::Plain), Instant::now());
        }
        if let Some(c) = self.conns.get_mut(idx) {
            if let Some(tls) = c.tls.as_mut() {
                tls.close_notify();
            }
            // Nothing more is read into the session; the close goes out, then the half-close.
            c.role = Role::Refusing;
            c.linger_after_flush = true;
            c.flush_deadline = Some(Instant::now() + FLUSH_GRACE);
            // Queues the close_notify alert on a TLS connection (nothing on a plain one).
            self.queue_owned(idx, Vec::new());
        }
        self.apply(key, Fed::Nothing);
    }

    /// The binary frame header to send before a chunk of `len` bytes to connection `idx`, if it
    /// is a WebSocket: `Some(None)` means nothing may be sent any more (its close is out).
    pub(super) fn ws_header(&self, idx: usize, len: usize) -> Option<Option<websocket::FrameHeader>> {
        self.conns.get(idx)?.ws_header(len)
    }

    /// The relay ends a WebSocket viewer's session: its close frame (1001 when the relay is
    /// stopping, 1000 otherwise) goes after what is queued.
    pub(super) fn websocket_close(&mut self, idx: usize, outcome: SessionOutcome) {
        let code = if outcome == SessionOutcome::Shutdown { close_code::GOING_AWAY } else { close_code::NORMAL };
        let mut frame = Vec::new();
        match self.conns.get_mut(idx).and_then(|c| c.ws.as_mut()) {
            Some(ws) => ws.close(code, "", &mut frame),
            None => return,
        }
        if !frame.is_empty() {
            self.queue_owned(idx, frame);
        }
    }
}

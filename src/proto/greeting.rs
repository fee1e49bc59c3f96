//! The first bytes of a viewer's connection, judged once: the PROXY header (when a balancer
//! stands in front), the TLS plaintext, the request head, then what the head asks for. A
//! [`Greeting`] is fed the bytes as they come and hands back one [`Verdict`]: a tunnel GET, its
//! POST with the cookie, plain RTSP, a WebSocket, a page, a refusal with its reply, or a move to
//! the shard that owns the route's shared camera.
//!
//! The route, address-list and session-cap checks a first request passes are all here, in one
//! place; what they consult (process-wide counters, the cookie table, the listener's address
//! list, which shard owns a route) comes in through [`Gatekeeper`], so the value stays
//! sans-IO. The shell carries the verdict out: it creates the session, writes the reply, hands
//! the connection to another shard.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::http_head::{self, HeadKind, HeadLimits, RequestHead};
use super::origin::{Origin, websocket_origin_allowed};
use super::outcome::{ConnKind, Rejection};
use super::proxy_header::{self, Gate};
use super::route::{Route, RouteTable, is_route_spelling, uri_path};
use super::rtsp::{self, MessageLimits};
use super::websocket::{self, Upgrade, WebRequest};

/// What the greeting asks of the process around it. Counting methods count only on success.
pub trait Gatekeeper {
    /// Whether listener `listener`'s address list lets `ip` in.
    fn listener_permits(&self, listener: usize, ip: IpAddr) -> bool;
    /// Whether `ip` is blocked for failed logins.
    fn login_blocked(&self, ip: IpAddr) -> bool;
    /// Counts a connection from `ip` against its per-address cap; false (not counted) when full.
    fn open_connection(&mut self, ip: IpAddr) -> bool;
    /// Counts a session against the session cap; false (not counted) when full.
    fn open_session(&mut self) -> bool;
    /// Whether a tunnel GET holds `cookie` already.
    fn cookie_in_use(&self, cookie: &str) -> bool;
    /// Where a shared route's camera (and so its viewers) lives.
    fn home_of(&self, route: &Route) -> Home;
    /// `[web] allowed_origins`, asked only for a WebSocket upgrade.
    fn allowed_origins(&self) -> Vec<Origin>;
}

/// Where a shared route's camera lives, seen from the shard asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    Here,
    Shard(u16),
    /// Its shard has stopped (the relay is unready and ending).
    Stopped,
}

/// TLS between the socket and the greeting: ciphertext in, plaintext appended to `plain`.
pub trait Decrypt {
    fn decrypt(&mut self, cipher: &[u8], plain: &mut Vec<u8>) -> Result<(), HandshakeFailed>;
}

/// The TLS handshake failed (or it was not TLS); its alert is queued for the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeFailed;

/// The rules a greeting is judged by, as configured now.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    pub routes: &'a RouteTable,
    pub head: HeadLimits,
    /// For the `CSeq` of a refused plain RTSP request.
    pub messages: MessageLimits,
    /// `[web] enabled`: pages and WebSocket upgrades are served.
    pub web: bool,
}

/// What a new connection must send before its request, with `[listen] proxy_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// PROXY protocol off.
    Off,
    /// From a trusted balancer: a header comes first; the address checks of `listener` judge
    /// the viewer's address it names, so they wait for it.
    Required { listener: usize },
    /// From anyone else with PROXY protocol on: a header is refused.
    Refused,
}

/// A refusal: what to count and what to answer before closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Rejection,
    pub reply: Reply,
    /// The connection counted as accepted before it was refused (`relay_connections_total`).
    pub counted_as: Option<ConnKind>,
    /// For the log: what was wrong, when there is more to say than `reason`.
    pub detail: String,
}

/// How a refused connection is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Closed without a word (an address list refusal reveals nothing about the relay).
    Close,
    /// These bytes go out (through TLS, if the connection has it), then the close.
    Send(Vec<u8>),
    /// These bytes go out in clear, any TLS state dropped: nothing went through TLS yet.
    Plain(Vec<u8>),
}

/// The one thing a connection's first bytes decide.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Nothing decided yet: read more (the head timeout still applies).
    NeedMore,
    /// A balancer's PROXY header named the viewer (`None`: a LOCAL header, the balancer's own
    /// check) and the address passed the checks and is counted. Call again: the bytes after the
    /// header are judged next.
    Admitted {
        viewer: Option<SocketAddr>,
    },
    Refuse(Refusal),
    /// The route's shared camera lives on `shard`: the connection moves there with `head` (the
    /// plaintext read so far), where it is judged again.
    MoveTo {
        shard: u16,
        head: Vec<u8>,
    },
    /// A tunnel GET, admitted (a session counted); `rest`: the bytes after its head.
    TunnelGet {
        route: Option<Arc<Route>>,
        cookie: String,
        rest: Vec<u8>,
    },
    /// A tunnel POST, to be bound to the GET with `cookie`.
    TunnelPost {
        cookie: String,
        expect_continue: bool,
        rest: Vec<u8>,
    },
    /// Plain RTSP, admitted (a session counted); `route`: a shared route already looked up,
    /// else the session finds it; `bytes`: everything read, its first request included.
    PlainRtsp {
        route: Option<Arc<Route>>,
        bytes: Vec<u8>,
    },
    /// An RTSP-over-WebSocket upgrade, admitted (a session counted).
    WebSocket {
        route: Option<Arc<Route>>,
        upgrade: Box<Upgrade>,
        rest: Vec<u8>,
    },
    /// One of the player's files.
    PlayerFile {
        target: String,
        head_only: bool,
    },
    /// `/`: the routes this address may watch, listed with URLs on the `Host` the request
    /// named (when it is a plain authority).
    RoutesPage {
        visible: Vec<String>,
        host: Option<String>,
    },
    /// A route's player page.
    PlayerPage,
}

impl Verdict {
    /// Whether this verdict ends the greeting (anything but `NeedMore` and `Admitted`).
    pub fn is_final(&self) -> bool {
        !matches!(self, Verdict::NeedMore | Verdict::Admitted { .. })
    }

    /// What the connection counts as accepted as (`relay_connections_total{kind}`), if anything.
    pub fn counted_as(&self) -> Option<ConnKind> {
        match self {
            Verdict::NeedMore | Verdict::Admitted { .. } | Verdict::MoveTo { .. } => None,
            Verdict::Refuse(r) => r.counted_as,
            Verdict::TunnelGet { .. } => Some(ConnKind::TunnelGet),
            Verdict::TunnelPost { .. } => Some(ConnKind::TunnelPost),
            Verdict::PlainRtsp { .. } => Some(ConnKind::PlainRtsp),
            Verdict::WebSocket { .. } => Some(ConnKind::WebSocket),
            Verdict::PlayerFile { .. } | Verdict::RoutesPage { .. } | Verdict::PlayerPage => Some(ConnKind::OtherHttp),
        }
    }
}

/// The checks on a connection's source address before its request is read (the viewer's
/// address, behind a balancer): the listener's address list, the failed-login block and the
/// per-address connection cap (counted on success).
pub fn admit_address(listener: usize, ip: IpAddr, gate: &mut dyn Gatekeeper) -> Result<(), Refusal> {
    if !gate.listener_permits(listener, ip) {
        // Refused before reading a byte: nothing about the relay is revealed.
        return Err(refusal(Rejection::AddressDenied, Reply::Close, None));
    }
    if gate.login_blocked(ip) {
        let reply = Reply::Plain(http_head::http_error_reply(429, "Too Many Requests"));
        return Err(refusal(Rejection::AuthRateLimited, reply, None));
    }
    if !gate.open_connection(ip) {
        let reply = Reply::Plain(http_head::http_error_reply(503, "Service Unavailable"));
        return Err(refusal(Rejection::PerIpLimit, reply, None));
    }
    Ok(())
}

fn refusal(reason: Rejection, reply: Reply, counted_as: Option<ConnKind>) -> Refusal {
    Refusal { reason, reply, counted_as, detail: String::new() }
}

fn http_refusal(reason: Rejection, status: u16, text: &str, counted_as: Option<ConnKind>) -> Verdict {
    Verdict::Refuse(refusal(reason, Reply::Send(http_head::http_error_reply(status, text)), counted_as))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Raw bytes until the PROXY header is settled (it comes before TLS).
    Proxy { trusted: Option<usize> },
    /// The PROXY header was settled; `pending` raw bytes after it are still to go through TLS.
    Settled,
    /// Reading the request head (plaintext).
    Head,
    /// A verdict was given; nothing more is judged.
    Done,
}

/// A connection's first bytes and where they stand.
#[derive(Debug)]
pub struct Greeting {
    stage: Stage,
    /// Raw bytes while the PROXY header is read, then the plaintext of the head so far.
    bytes: Vec<u8>,
    /// Raw bytes after a PROXY header, not yet decrypted.
    pending: Vec<u8>,
}

impl Greeting {
    pub fn new(proxy: Proxy) -> Greeting {
        let stage = match proxy {
            Proxy::Off => Stage::Head,
            Proxy::Required { listener } => Stage::Proxy { trusted: Some(listener) },
            Proxy::Refused => Stage::Proxy { trusted: None },
        };
        Greeting { stage, bytes: Vec::new(), pending: Vec::new() }
    }

    /// A connection another shard read the head of (plaintext, PROXY header settled): judged
    /// here as if read here.
    pub fn adopted(head: Vec<u8>) -> Greeting {
        Greeting { stage: Stage::Head, bytes: head, pending: Vec::new() }
    }

    /// Whether the PROXY header is still to come: raw bytes, not yet for TLS.
    pub fn before_proxy_header(&self) -> bool {
        matches!(self.stage, Stage::Proxy { .. })
    }

    /// Feeds the bytes just received (`raw`: as read from the socket, before TLS; may be empty to
    /// go on after [`Verdict::Admitted`]) from the address `peer` and judges them. After a final
    /// verdict, further calls answer `NeedMore` and judge nothing.
    pub fn on_bytes(
        &mut self,
        raw: &[u8],
        tls: Option<&mut dyn Decrypt>,
        peer: IpAddr,
        rules: &Rules<'_>,
        gate: &mut dyn Gatekeeper,
    ) -> Verdict {
        let verdict = self.judge(raw, tls, peer, rules, gate);
        if verdict.is_final() {
            self.stage = Stage::Done;
            self.bytes = Vec::new();
            self.pending = Vec::new();
        }
        verdict
    }

    fn judge(
        &mut self,
        raw: &[u8],
        tls: Option<&mut dyn Decrypt>,
        peer: IpAddr,
        rules: &Rules<'_>,
        gate: &mut dyn Gatekeeper,
    ) -> Verdict {
        let mut raw = raw;
        let pending;
        match self.stage {
            Stage::Done => return Verdict::NeedMore,
            Stage::Proxy { trusted } => {
                self.bytes.extend_from_slice(raw);
                let (skip, source) =
                    match proxy_header::gate(trusted.is_some(), &self.bytes, rules.head.max_header_bytes) {
                        Gate::NeedMore => return Verdict::NeedMore,
                        Gate::Proceed { skip, source } => (skip, source),
                        Gate::Refuse(why) => {
                            let (reason, detail) = match why {
                                proxy_header::Refusal::BadHeader(invalid) => (Rejection::ProxyHeader, invalid.as_str()),
                                proxy_header::Refusal::Untrusted => (Rejection::ProxyUntrusted, "untrusted_source"),
                            };
                            let mut r = refusal(reason, Reply::Close, None);
                            r.detail = detail.to_owned();
                            return Verdict::Refuse(r);
                        }
                    };
                self.pending = self.bytes.get(skip..).unwrap_or_default().to_vec();
                self.bytes.clear();
                self.stage = Stage::Settled;
                if let Some(listener) = trusted {
                    let ip = source.map_or(peer, |s| s.ip());
                    return match admit_address(listener, ip, gate) {
                        Ok(()) => Verdict::Admitted { viewer: source },
                        Err(r) => Verdict::Refuse(r),
                    };
                }
                pending = std::mem::take(&mut self.pending);
                raw = &pending;
            }
            Stage::Settled => {
                let mut after_header = std::mem::take(&mut self.pending);
                after_header.extend_from_slice(raw);
                pending = after_header;
                raw = &pending;
            }
            Stage::Head => {}
        }
        self.stage = Stage::Head;
        match tls {
            None => self.bytes.extend_from_slice(raw),
            Some(tls) => {
                if tls.decrypt(raw, &mut self.bytes).is_err() {
                    // The alert rustls queued goes out, then the close.
                    return Verdict::Refuse(refusal(Rejection::TlsHandshake, Reply::Send(Vec::new()), None));
                }
            }
        }
        if self.bytes.is_empty() {
            return Verdict::NeedMore;
        }
        match http_head::parse_head(&self.bytes, &rules.head) {
            Ok(None) => Verdict::NeedMore,
            Ok(Some(head)) => self.classify(head, peer, rules, gate),
            Err(e) => {
                let reason = e.rejection();
                let (status, text) = if reason == Rejection::HeaderTooLarge {
                    (431, "Request Header Fields Too Large")
                } else {
                    (400, "Bad Request")
                };
                let mut r = refusal(reason, Reply::Send(http_head::http_error_reply(status, text)), None);
                r.detail = e.to_string();
                Verdict::Refuse(r)
            }
        }
    }

    /// The bytes after the head's first `consumed`.
    fn rest(&mut self, consumed: usize) -> Vec<u8> {
        let rest = self.bytes.get(consumed..).unwrap_or_default().to_vec();
        self.bytes.clear();
        rest
    }

    fn classify(&mut self, head: RequestHead, peer: IpAddr, rules: &Rules<'_>, gate: &mut dyn Gatekeeper) -> Verdict {
        match head.kind {
            HeadKind::TunnelGet => self.tunnel_get(head, peer, rules, gate),
            HeadKind::TunnelPost => {
                let Some(cookie) = head.cookie else {
                    // The head classifier calls a POST a tunnel's only with a cookie.
                    return Verdict::Refuse(refusal(Rejection::BadCookie, Reply::Close, Some(ConnKind::TunnelPost)));
                };
                Verdict::TunnelPost { cookie, expect_continue: head.expect_continue, rest: self.rest(head.consumed) }
            }
            HeadKind::PlainRtsp => self.plain_rtsp(&head, rules, gate),
            HeadKind::OtherHttp => self.other_http(head.consumed, peer, rules, gate),
        }
    }

    /// A viewer's first connection on a shared route owned by another shard moves there.
    fn moves(&mut self, route: Option<&Arc<Route>>, gate: &dyn Gatekeeper) -> Option<Verdict> {
        let route = route.filter(|r| r.shared().is_some())?;
        match gate.home_of(route) {
            Home::Here => None,
            Home::Shard(shard) => Some(Verdict::MoveTo { shard, head: std::mem::take(&mut self.bytes) }),
            // The camera's shard is gone: the relay is unready and ending, refuse plainly.
            Home::Stopped => Some(http_refusal(Rejection::ShuttingDown, 503, "Service Unavailable", None)),
        }
    }

    /// The route a tunnel GET or a WebSocket names, judged: its spelling, its existence (`/`
    /// is routed later, by the first RTSP request's URI, and served 1:1), and a shared route's
    /// home. `Err`: the verdict already reached.
    fn named_route(
        &mut self,
        target: &str,
        kind: ConnKind,
        rules: &Rules<'_>,
        gate: &dyn Gatekeeper,
    ) -> Result<Option<Arc<Route>>, Verdict> {
        let route = rules.routes.lookup(target);
        let misspelled = route.as_ref().is_some_and(|r| !is_route_spelling(target, &r.path));
        if !misspelled {
            if let Some(v) = self.moves(route.as_ref(), gate) {
                return Err(v);
            }
        }
        if misspelled {
            return Err(http_refusal(Rejection::RouteSpelling, 404, "Not Found", Some(kind)));
        }
        if route.is_none() && uri_path(target) != "/" {
            return Err(http_refusal(Rejection::UnknownRoute, 404, "Not Found", Some(kind)));
        }
        Ok(route)
    }

    /// The session checks of a tunnel GET or a WebSocket: the route's address list, then the
    /// session cap (counted on success).
    fn admit_session(
        route: Option<&Arc<Route>>,
        peer: IpAddr,
        kind: ConnKind,
        gate: &mut dyn Gatekeeper,
    ) -> Result<(), Verdict> {
        if route.is_some_and(|r| !r.acl.permits(peer)) {
            // Refused before any camera connection.
            return Err(http_refusal(Rejection::AddressDenied, 403, "Forbidden", Some(kind)));
        }
        if !gate.open_session() {
            return Err(http_refusal(Rejection::MaxSessions, 503, "Service Unavailable", Some(kind)));
        }
        Ok(())
    }

    fn tunnel_get(&mut self, head: RequestHead, peer: IpAddr, rules: &Rules<'_>, gate: &mut dyn Gatekeeper) -> Verdict {
        let kind = ConnKind::TunnelGet;
        let route = match self.named_route(&head.target, kind, rules, gate) {
            Ok(route) => route,
            Err(v) => return v,
        };
        // The classifier only calls a GET a tunnel when it carries a valid cookie.
        let Some(cookie) = head.cookie else {
            return http_refusal(Rejection::BadCookie, 400, "Bad Request", Some(kind));
        };
        if gate.cookie_in_use(&cookie) {
            // The usual duplicate, refused before a session exists (so it is not counted as one);
            // two GETs racing with one cookie are caught again when the shell registers it.
            return http_refusal(Rejection::DuplicateCookie, 409, "Conflict", Some(kind));
        }
        if let Err(v) = Self::admit_session(route.as_ref(), peer, kind, gate) {
            return v;
        }
        Verdict::TunnelGet { route, cookie, rest: self.rest(head.consumed) }
    }

    fn plain_rtsp(&mut self, head: &RequestHead, rules: &Rules<'_>, gate: &mut dyn Gatekeeper) -> Verdict {
        // The first request names the route; a shared one is served on its camera's shard.
        // Another spelling of the route is refused by the session (it looks the route up again,
        // and judges the address lists with the viewer's credentials).
        let route = rules
            .routes
            .lookup(&head.target)
            .filter(|r| r.shared().is_some() && is_route_spelling(&head.target, &r.path));
        if let Some(v) = self.moves(route.as_ref(), gate) {
            return v;
        }
        if !gate.open_session() {
            let cseq = rtsp::parse_message(&self.bytes, &rules.messages).ok().flatten().and_then(|(m, _)| m.cseq());
            let reply = Reply::Send(super::session::local_reply(503, "Service Unavailable", cseq));
            return Verdict::Refuse(refusal(Rejection::MaxSessions, reply, Some(ConnKind::PlainRtsp)));
        }
        Verdict::PlainRtsp { route, bytes: std::mem::take(&mut self.bytes) }
    }

    /// An HTTP request that is not a tunnel's: a page, a player file, a WebSocket upgrade.
    fn other_http(&mut self, consumed: usize, peer: IpAddr, rules: &Rules<'_>, gate: &mut dyn Gatekeeper) -> Verdict {
        let other = Some(ConnKind::OtherHttp);
        let request = match self.bytes.get(..consumed) {
            Some(head) if rules.web => websocket::classify(head),
            _ => WebRequest::Other,
        };
        match request {
            WebRequest::WebSocket(upgrade) => {
                if !websocket_origin_allowed(
                    upgrade.origin.as_deref(),
                    upgrade.host.as_deref(),
                    &gate.allowed_origins(),
                ) {
                    let reply = Reply::Send(http_head::http_error_reply(403, "Forbidden"));
                    let mut r = refusal(Rejection::WebSocketOrigin, reply, other);
                    r.detail = format!("origin {}", upgrade.origin.as_deref().unwrap_or("-"));
                    return Verdict::Refuse(r);
                }
                self.websocket(consumed, upgrade, peer, rules, gate)
            }
            WebRequest::BadUpgrade(e) => {
                let mut r = refusal(e.rejection(), Reply::Send(e.reply()), other);
                r.detail = e.to_string();
                Verdict::Refuse(r)
            }
            WebRequest::PlayerFile { target, head_only } => Verdict::PlayerFile { target, head_only },
            WebRequest::Page { target } => {
                let host = self.bytes.get(..consumed).and_then(websocket::page_host);
                page(&target, host, peer, rules)
            }
            WebRequest::Other => {
                // A bare `curl` of the port: say what the port is and how to play a route.
                let reply = http_head::not_a_tunnel_reply(self.bytes.starts_with(b"HEAD "));
                Verdict::Refuse(refusal(Rejection::NotATunnel, Reply::Send(reply), other))
            }
        }
    }

    /// An acceptable upgrade: admitted as a tunnel GET is (route, address lists, session cap;
    /// the address's login block was checked at accept).
    fn websocket(
        &mut self,
        consumed: usize,
        upgrade: Upgrade,
        peer: IpAddr,
        rules: &Rules<'_>,
        gate: &mut dyn Gatekeeper,
    ) -> Verdict {
        let kind = ConnKind::WebSocket;
        let route = match self.named_route(&upgrade.target, kind, rules, gate) {
            Ok(route) => route,
            Err(v) => return v,
        };
        if let Err(v) = Self::admit_session(route.as_ref(), peer, kind, gate) {
            return v;
        }
        Verdict::WebSocket { route, upgrade: Box::new(upgrade), rest: self.rest(consumed) }
    }
}

/// `/`: the routes this address may watch (a route with users is listed: the login happens
/// inside the WebSocket). A route's path: the player page, if this address may watch it.
fn page(target: &str, host: Option<String>, peer: IpAddr, rules: &Rules<'_>) -> Verdict {
    let other = Some(ConnKind::OtherHttp);
    if uri_path(target) == "/" {
        let visible = rules.routes.routes().iter().filter(|r| r.acl.permits(peer)).map(|r| r.path.clone()).collect();
        return Verdict::RoutesPage { visible, host };
    }
    match rules.routes.lookup(target) {
        None => http_refusal(Rejection::UnknownRoute, 404, "Not Found", other),
        // Its WebSocket (the page plays its own path) would be refused: so is the page.
        Some(r) if !is_route_spelling(target, &r.path) => {
            http_refusal(Rejection::RouteSpelling, 404, "Not Found", other)
        }
        // As for a tunnel GET from that address.
        Some(r) if !r.acl.permits(peer) => http_refusal(Rejection::AddressDenied, 403, "Forbidden", other),
        Some(_) => Verdict::PlayerPage,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::proto::proxy_header::encode_v1;
    use crate::proto::route::{Acl, SharedRoute, Sharing};

    /// A gatekeeper with room for `connections` and `sessions`, counting what it lets in.
    struct TestGate {
        listener_denies: Option<IpAddr>,
        blocked: Option<IpAddr>,
        connections: usize,
        sessions: usize,
        cookies: Vec<String>,
        homes: HashMap<String, Home>,
    }

    impl Default for TestGate {
        fn default() -> Self {
            TestGate {
                listener_denies: None,
                blocked: None,
                connections: 10,
                sessions: 10,
                cookies: Vec::new(),
                homes: HashMap::new(),
            }
        }
    }

    impl Gatekeeper for TestGate {
        fn listener_permits(&self, _listener: usize, ip: IpAddr) -> bool {
            self.listener_denies != Some(ip)
        }
        fn login_blocked(&self, ip: IpAddr) -> bool {
            self.blocked == Some(ip)
        }
        fn open_connection(&mut self, _ip: IpAddr) -> bool {
            self.connections.checked_sub(1).map(|n| self.connections = n).is_some()
        }
        fn open_session(&mut self) -> bool {
            self.sessions.checked_sub(1).map(|n| self.sessions = n).is_some()
        }
        fn cookie_in_use(&self, cookie: &str) -> bool {
            self.cookies.iter().any(|c| c == cookie)
        }
        fn home_of(&self, route: &Route) -> Home {
            self.homes.get(&route.path).copied().unwrap_or(Home::Here)
        }
        fn allowed_origins(&self) -> Vec<Origin> {
            Vec::new()
        }
    }

    fn route(path: &str, shared: bool, deny: &[&str]) -> Route {
        let deny: Vec<String> = deny.iter().map(|s| s.to_string()).collect();
        Route {
            path: path.into(),
            upstream_url: format!("rtsp://127.0.0.1:8554{path}"),
            upstream_addr: "127.0.0.1:8554".parse().unwrap(),
            credentials: None,
            users: None,
            acl: Acl::parse(&[], &deny).unwrap(),
            sharing: if shared {
                Sharing::Shared(SharedRoute { linger: Duration::from_secs(1), always_on: false, gop_cache: true })
            } else {
                Sharing::Passthrough
            },
            resolve_error: None,
            guard: crate::proto::route::Guard::Open,
            max_viewers: None,
            upstream_link: Default::default(),
            fallback: None,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("/cam1", false, &[]),
            route("/shared", true, &[]),
            route("/secret", false, &["10.0.0.0/8"]),
        ])
    }

    fn rules(routes: &RouteTable, web: bool) -> Rules<'_> {
        Rules {
            routes,
            head: HeadLimits { max_header_bytes: 4096, max_cookie_len: 64 },
            messages: MessageLimits { max_head_bytes: 4096, max_body_bytes: 4096 },
            web,
        }
    }

    const VIEWER: &str = "127.0.0.1";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Feeds `input` whole from `VIEWER`.
    fn judge(proxy: Proxy, input: &[u8], gate: &mut TestGate, web: bool) -> Verdict {
        let routes = table();
        let mut g = Greeting::new(proxy);
        let mut v = g.on_bytes(input, None, ip(VIEWER), &rules(&routes, web), gate);
        while let Verdict::Admitted { .. } = v {
            v = g.on_bytes(&[], None, ip(VIEWER), &rules(&routes, web), gate);
        }
        v
    }

    fn get(path: &str, cookie: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nx-sessioncookie: {cookie}\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n")
            .into_bytes()
    }

    fn refused(v: &Verdict) -> (Rejection, Option<u16>, Option<ConnKind>) {
        let Verdict::Refuse(r) = v else { panic!("not refused: {v:?}") };
        let status = match &r.reply {
            Reply::Close => None,
            Reply::Send(b) | Reply::Plain(b) => {
                std::str::from_utf8(b).ok().and_then(|s| s.split(' ').nth(1)).and_then(|s| s.parse().ok())
            }
        };
        (r.reason, status, r.counted_as)
    }

    #[test]
    fn a_tunnel_get_on_a_route_is_admitted_with_what_followed_its_head() {
        let mut gate = TestGate::default();
        let mut input = get("/cam1", "abc123");
        input.extend_from_slice(b"extra");
        let v = judge(Proxy::Off, &input, &mut gate, false);
        let Verdict::TunnelGet { route, cookie, rest } = &v else { panic!("{v:?}") };
        assert_eq!(
            (route.as_ref().map(|r| r.path.as_str()), cookie.as_str(), &rest[..]),
            (Some("/cam1"), "abc123", &b"extra"[..])
        );
        assert_eq!(v.counted_as(), Some(ConnKind::TunnelGet));
        assert_eq!(gate.sessions, 9, "one session counted");
    }

    #[test]
    fn a_head_read_a_byte_at_a_time_is_judged_once_whole() {
        let routes = table();
        let mut gate = TestGate::default();
        let mut g = Greeting::new(Proxy::Off);
        let input = get("/cam1", "abc123");
        for (i, b) in input.iter().enumerate() {
            let v = g.on_bytes(&[*b], None, ip(VIEWER), &rules(&routes, false), &mut gate);
            assert_eq!(v.is_final(), i == input.len() - 1, "byte {i}: {v:?}");
        }
        // Judged once: nothing more is decided, nothing more counted.
        assert!(!g.on_bytes(b"more", None, ip(VIEWER), &rules(&routes, false), &mut gate).is_final());
        assert_eq!(gate.sessions, 9);
    }

    #[test]
    fn a_tunnel_get_names_an_existing_route_by_its_own_spelling() {
        let mut gate = TestGate::default();
        let v = judge(Proxy::Off, &get("/cam1/../cam1", "abc"), &mut gate, false);
        assert_eq!(refused(&v), (Rejection::RouteSpelling, Some(404), Some(ConnKind::TunnelGet)));
        let v = judge(Proxy::Off, &get("/nowhere", "abc"), &mut gate, false);
        assert_eq!(refused(&v), (Rejection::UnknownRoute, Some(404), Some(ConnKind::TunnelGet)));
        // `/` is routed later, by the first RTSP request.
        let v = judge(Proxy::Off, &get("/", "abc"), &mut gate, false);
        assert!(matches!(v, Verdict::TunnelGet { route: None, .. }), "{v:?}");
    }

    #[test]
    fn a_duplicate_cookie_a_denied_address_and_a_full_relay_are_refused_before_a_session() {
        let mut gate = TestGate { cookies: vec!["taken".into()], ..TestGate::default() };
        let v = judge(Proxy::Off, &get("/cam1", "taken"), &mut gate, false);
        assert_eq!(refused(&v), (Rejection::DuplicateCookie, Some(409), Some(ConnKind::TunnelGet)));
        let routes = table();
        let mut g = Greeting::new(Proxy::Off);
        let v = g.on_bytes(&get("/secret", "abc"), None, ip("10.1.2.3"), &rules(&routes, false), &mut gate);
        assert_eq!(refused(&v), (Rejection::AddressDenied, Some(403), Some(ConnKind::TunnelGet)));
        assert_eq!(gate.sessions, 10, "no session counted for refused viewers");
        let mut full = TestGate { sessions: 0, ..TestGate::default() };
        let v = judge(Proxy::Off, &get("/cam1", "abc"), &mut full, false);
        assert_eq!(refused(&v), (Rejection::MaxSessions, Some(503), Some(ConnKind::TunnelGet)));
    }

    #[test]
    fn a_viewer_of_a_shared_route_moves_to_its_cameras_shard_head_and_all() {
        let mut gate = TestGate::default();
        gate.homes.insert("/shared".into(), Home::Shard(3));
        let input = get("/shared", "abc");
        let v = judge(Proxy::Off, &input, &mut gate, false);
        let Verdict::MoveTo { shard, head } = &v else { panic!("{v:?}") };
        assert_eq!((*shard, &head[..]), (3, &input[..]));
        assert_eq!((v.counted_as(), gate.sessions), (None, 10), "counted where it lands");
        // There, the same head is judged again.
        let routes = table();
        let mut there = TestGate::default();
        let mut g = Greeting::adopted(head.clone());
        let v = g.on_bytes(&[], None, ip(VIEWER), &rules(&routes, false), &mut there);
        assert!(matches!(v, Verdict::TunnelGet { .. }), "{v:?}");
        // Its shard stopped: refused plainly.
        gate.homes.insert("/shared".into(), Home::Stopped);
        let v = judge(Proxy::Off, &input, &mut gate, false);
        assert_eq!(refused(&v), (Rejection::ShuttingDown, Some(503), None));
    }

    #[test]
    fn a_post_carries_its_cookie_and_what_followed_its_head() {
        let mut gate = TestGate::default();
        let input = b"POST /cam1 HTTP/1.0\r\nx-sessioncookie: abc\r\nExpect: 100-continue\r\n\r\nREVTQ1JJQkU=";
        let v = judge(Proxy::Off, input, &mut gate, false);
        let Verdict::TunnelPost { cookie, expect_continue, rest } = &v else { panic!("{v:?}") };
        assert_eq!((cookie.as_str(), *expect_continue, &rest[..]), ("abc", true, &b"REVTQ1JJQkU="[..]));
        assert_eq!(gate.sessions, 10, "a POST joins its GET's session");
    }

    #[test]
    fn plain_rtsp_keeps_its_first_request_and_a_full_relay_answers_in_rtsp() {
        let input = b"OPTIONS rtsp://relay/cam1 RTSP/1.0\r\nCSeq: 7\r\n\r\n";
        let mut gate = TestGate::default();
        let v = judge(Proxy::Off, input, &mut gate, false);
        let Verdict::PlainRtsp { route: None, bytes } = &v else { panic!("{v:?}") };
        assert_eq!(&bytes[..], &input[..]);
        let mut full = TestGate { sessions: 0, ..TestGate::default() };
        let Verdict::Refuse(r) = judge(Proxy::Off, input, &mut full, false) else { panic!() };
        let Reply::Send(reply) = &r.reply else { panic!("{r:?}") };
        let reply = String::from_utf8_lossy(reply);
        assert!(reply.starts_with("RTSP/1.0 503") && reply.contains("CSeq: 7"), "{reply}");
    }

    #[test]
    fn a_balancers_header_names_the_viewer_whose_address_is_then_judged() {
        let viewer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let mut input = encode_v1(viewer, "127.0.0.1:8080".parse().unwrap());
        input.extend_from_slice(&get("/cam1", "abc"));
        let routes = table();
        let mut gate = TestGate::default();
        let mut g = Greeting::new(Proxy::Required { listener: 0 });
        let v = g.on_bytes(&input, None, ip(VIEWER), &rules(&routes, false), &mut gate);
        assert!(matches!(v, Verdict::Admitted { viewer: Some(a) } if a == viewer), "{v:?}");
        assert_eq!(gate.connections, 9, "the viewer's address is counted");
        let v = g.on_bytes(&[], None, ip(VIEWER), &rules(&routes, false), &mut gate);
        assert!(matches!(v, Verdict::TunnelGet { .. }), "{v:?}");
        // The listener's list and the per-address cap judge the viewer, not the balancer.
        let mut gate = TestGate { listener_denies: Some(viewer.ip()), ..TestGate::default() };
        let v = judge(Proxy::Required { listener: 0 }, &input, &mut gate, false);
        assert_eq!(refused(&v), (Rejection::AddressDenied, None, None));
        let mut gate = TestGate { connections: 0, ..TestGate::default() };
        let v = judge(Proxy::Required { listener: 0 }, &input, &mut gate, false);
        assert!(matches!(&v, Verdict::Refuse(Refusal { reason: Rejection::PerIpLimit, reply: Reply::Plain(_), .. })));
        // A header from anyone else is refused; a request starting with `P` is not a header.
        let v = judge(Proxy::Refused, &input, &mut TestGate::default(), false);
        assert_eq!(refused(&v), (Rejection::ProxyUntrusted, None, None));
        let post = b"POST /cam1 HTTP/1.0\r\nx-sessioncookie: abc\r\n\r\n";
        assert!(matches!(judge(Proxy::Refused, post, &mut TestGate::default(), false), Verdict::TunnelPost { .. }));
    }

    #[test]
    fn other_http_is_a_page_a_file_an_upgrade_or_refused() {
        let mut gate = TestGate::default();
        let page = b"GET / HTTP/1.1\r\nAccept: text/html\r\n\r\n";
        assert_eq!(refused(&judge(Proxy::Off, page, &mut gate, false)).0, Rejection::NotATunnel);
        let routes = table();
        let mut g = Greeting::new(Proxy::Off);
        let v = g.on_bytes(page, None, ip("10.0.0.1"), &rules(&routes, true), &mut gate);
        let Verdict::RoutesPage { visible, .. } = v else { panic!("{v:?}") };
        assert!(visible.contains(&"/cam1".to_owned()) && !visible.contains(&"/secret".to_owned()));
        let player = b"GET /cam1 HTTP/1.1\r\nAccept: text/html\r\n\r\n";
        assert!(matches!(judge(Proxy::Off, player, &mut gate, true), Verdict::PlayerPage));
        let upgrade = b"GET /cam1 HTTP/1.1\r\nHost: relay\r\nOrigin: http://evil.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: rtsp.onvif.org\r\n\r\n";
        let v = judge(Proxy::Off, upgrade, &mut gate, true);
        assert_eq!(refused(&v), (Rejection::WebSocketOrigin, Some(403), Some(ConnKind::OtherHttp)));
        let same_origin = String::from_utf8_lossy(upgrade).replace("http://evil.example", "http://relay");
        let v = judge(Proxy::Off, same_origin.as_bytes(), &mut gate, true);
        assert!(matches!(v, Verdict::WebSocket { .. }), "{v:?}");
        assert_eq!(v.counted_as(), Some(ConnKind::WebSocket));
    }

    #[test]
    fn bad_heads_are_answered_with_their_status() {
        let mut gate = TestGate::default();
        assert_eq!(refused(&judge(Proxy::Off, b"GET / HTTP/1.1\r\nbad header\r\n\r\n", &mut gate, false)).1, Some(400));
        let huge = vec![b'a'; 5000];
        assert_eq!(refused(&judge(Proxy::Off, &huge, &mut gate, false)), (Rejection::HeaderTooLarge, Some(431), None));
    }

    /// "Decrypts" by copying, and fails on a 0xff byte (not a TLS record).
    struct FakeTls;
    impl Decrypt for FakeTls {
        fn decrypt(&mut self, cipher: &[u8], plain: &mut Vec<u8>) -> Result<(), HandshakeFailed> {
            if cipher.contains(&0xff) {
                return Err(HandshakeFailed);
            }
            plain.extend_from_slice(cipher);
            Ok(())
        }
    }

    #[test]
    fn a_head_is_read_from_the_tls_plaintext_and_a_failed_handshake_sends_its_alert() {
        let routes = table();
        let mut gate = TestGate::default();
        let mut g = Greeting::new(Proxy::Off);
        let v = g.on_bytes(&get("/cam1", "abc"), Some(&mut FakeTls), ip(VIEWER), &rules(&routes, false), &mut gate);
        assert!(matches!(v, Verdict::TunnelGet { .. }), "{v:?}");
        let mut g = Greeting::new(Proxy::Off);
        let v = g.on_bytes(&[0x16, 0xff], Some(&mut FakeTls), ip(VIEWER), &rules(&routes, false), &mut gate);
        assert!(
            matches!(&v, Verdict::Refuse(Refusal { reason: Rejection::TlsHandshake, reply: Reply::Send(b), .. }) if b.is_empty())
        );
    }

    /// A verdict's kind: what must not depend on how the bytes were cut.
    fn kind(v: &Verdict) -> String {
        match v {
            Verdict::Refuse(r) => format!("refuse {:?}", r.reason),
            Verdict::TunnelGet { cookie, .. } => format!("get {cookie}"),
            Verdict::TunnelPost { cookie, .. } => format!("post {cookie}"),
            other => format!("{other:?}").split([' ', '{', '(']).next().unwrap_or_default().to_owned(),
        }
    }

    fn feed(proxy: Proxy, web: bool, chunks: &[&[u8]]) -> (Option<String>, usize) {
        let routes = table();
        let mut gate = TestGate::default();
        gate.homes.insert("/shared".into(), Home::Shard(1));
        let mut g = Greeting::new(proxy);
        let mut verdict = None;
        let mut finals = 0;
        for chunk in chunks {
            let mut v = g.on_bytes(chunk, None, ip(VIEWER), &rules(&routes, web), &mut gate);
            while let Verdict::Admitted { .. } = v {
                v = g.on_bytes(&[], None, ip(VIEWER), &rules(&routes, web), &mut gate);
            }
            if v.is_final() {
                finals += 1;
                verdict.get_or_insert(kind(&v));
            }
        }
        (verdict, finals)
    }

    fn first_bytes() -> impl Strategy<Value = Vec<u8>> {
        let known = prop_oneof![
            Just(get("/cam1", "abc")),
            Just(get("/shared", "abc")),
            Just(b"POST /cam1 HTTP/1.0\r\nx-sessioncookie: abc\r\n\r\nAAAA".to_vec()),
            Just(b"DESCRIBE rtsp://h/shared RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_vec()),
            Just(b"GET / HTTP/1.1\r\nAccept: text/html\r\n\r\n".to_vec()),
            Just(encode_v1("192.0.2.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap())),
            Just(crate::proto::proxy_header::encode_v2(
                "192.0.2.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
                &[]
            )),
        ];
        let parts = proptest::collection::vec(prop_oneof![known, proptest::collection::vec(any::<u8>(), 0..64)], 1..4);
        parts.prop_map(|p| p.concat())
    }

    proptest! {
        /// Any bytes, cut anywhere, under any PROXY setting: no panic, one verdict at most, and
        /// the same one however the bytes were cut.
        #[test]
        fn any_bytes_cut_anywhere_get_one_verdict(
            input in first_bytes(),
            cuts in proptest::collection::vec(0usize..400, 0..6),
            proxy in 0u8..3,
            web in any::<bool>(),
        ) {
            let proxy = match proxy { 0 => Proxy::Off, 1 => Proxy::Required { listener: 0 }, _ => Proxy::Refused };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([input.len()]) {
                chunks.push(&input[at..c]);
                at = c;
            }
            let (whole, whole_finals) = feed(proxy, web, &[&input]);
            let (cut, finals) = feed(proxy, web, &chunks);
            prop_assert!(whole_finals <= 1 && finals <= 1);
            prop_assert_eq!(cut.clone(), whole.clone());
        }
    }
}

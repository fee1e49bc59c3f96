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
    /// Err: the handshake failed (or it was not TLS); the alert is queued for the peer.
    fn decrypt(&mut self, cipher: &[u8], plain: &mut Vec<u8>) -> Result<(), ()>;
}

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
        upgrade: Upgrade,
        rest: Vec<u8>,
    },
    /// One of the player's files.
    PlayerFile {
        target: String,
        head_only: bool,
    },
    /// `/`: the routes this address may watch.
    RoutesPage {
        visible: Vec<String>,
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
            WebRequest::Page { target } => page(&target, peer, rules),
            WebRequest::Other => http_refusal(Rejection::NotATunnel, 400, "Bad Request", other),
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
        Verdict::WebSocket { route, upgrade, rest: self.rest(consumed) }
    }
}

/// `/`: the routes this address may watch (a route with users is listed: the login happens
/// inside the WebSocket). A route's path: the player page, if this address may watch it.
fn page(target: &str, peer: IpAddr, rules: &Rules<'_>) -> Verdict {
    let other = Some(ConnKind::OtherHttp);
    if uri_path(target) == "/" {
        let visible = rules.routes.routes().iter().filter(|r| r.acl.permits(peer)).map(|r| r.path.clone()).collect();
        return Verdict::RoutesPage { visible };
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

//! The RTSP dialogue of one viewer ↔ one camera; [`super::tunnel::Tunnel`] wraps it with the
//! policies around it (pairing, deadlines, drain, backpressure).
//!
//! A [`Session`] is fed what the shell reads — viewer bytes (the POST's base64 body, raw bytes
//! up the GET, or a plain RTSP socket), camera bytes, connection events and the current time —
//! and appends [`Output`]s: bytes for either side, a camera connection to open, observations for
//! the metrics, and finally the end of the session. It never touches a socket or a clock.
//!
//! Camera media is not copied: [`Output::ForwardToViewer`] names a range of the camera chunk just
//! fed, which the shell sends straight from its receive buffer.

use core::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outcome::{Hist, Rejection, RtspMethod, SessionOutcome, UpstreamErrorKind};
use super::route::{Route, RouteTable, is_route_spelling};
use super::rtsp_headers::{SessionHeader, Transport, TransportSpec};

use super::base64_stream::Base64StreamDecoder;
use super::camera_request::{self, Refusal};
use super::external_auth::{AuthQuery, Method, Presented, Verdict, bearer_from_target, presented};
use super::interleaved::{Demux, Event};
use super::permissions::Action;
use super::rewrite::{HandedOut, UriRefusal, UrlMap, rewrite_to_client};
use super::route::Guard;
use super::rtsp::{Message, MessageLimits, ParseError};
use super::upstream_auth::{AuthVerdict, UpstreamAuth};
use super::viewer_auth::{AuthFailure, ViewerAuth};
use super::viewer_caps::{CapHit, CapTicket, NoCaps, ViewerCaps};

/// Failed authentications one session may make before it is closed.
const MAX_AUTH_FAILURES_PER_SESSION: u32 = 5;
/// Camera URLs one session remembers as handed out by the camera (the viewer may ask for them).
const MAX_HANDED_OUT: usize = 64;

/// The process-wide record of failed logins per address: consulted and fed on every request
/// that needs credentials, so tunnels opened before an address was blocked stop guessing too.
pub trait AuthGate: Send + Sync {
    /// Too many failures from `ip` recently: refuse it without evaluating its credentials.
    fn is_blocked(&self, ip: core::net::IpAddr, now: Instant) -> bool;
    fn record_failure(&self, ip: core::net::IpAddr, now: Instant);
}

impl std::fmt::Debug for dyn AuthGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthGate")
    }
}

/// A gate that never blocks (tests, fuzzing, tools).
#[derive(Debug, Default)]
pub struct OpenGate;

impl AuthGate for OpenGate {
    fn is_blocked(&self, _: core::net::IpAddr, _: Instant) -> bool {
        false
    }
    fn record_failure(&self, _: core::net::IpAddr, _: Instant) {}
}

/// Which viewer byte stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerStream {
    /// The tunnel POST body: base64 of RTSP requests and `$` frames.
    TunnelCommands,
    /// Bytes the viewer sends up the tunnel GET (live555 sends raw `$` RTCP there).
    TunnelData,
    /// A plain RTSP/TCP connection.
    Plain,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue these bytes to the viewer.
    ToViewer(Vec<u8>),
    /// Queue `range` of the camera chunk just fed to the viewer, verbatim.
    ForwardToViewer {
        range: Range<usize>,
        frames: u32,
    },
    /// Queue these bytes to the camera.
    ToUpstream(Vec<u8>),
    /// Open the camera connection; report with `on_upstream_connected` or `..._failed`.
    ConnectUpstream(SocketAddr),
    /// Interleaved frames the viewer sent that went to the camera.
    FramesToCamera(u32),
    Observe(Hist, Duration),
    Rejected(Rejection),
    /// A viewer failed to authenticate (the shell also rate-limits its address).
    AuthFailed(AuthFailure),
    UpstreamError(UpstreamErrorKind),
    /// A viewer request was answered (by the camera or the relay): one debug log line.
    Exchange(Exchange),
    /// End the session once the bytes queued to the viewer are flushed.
    Close(SessionOutcome),
    /// Ask the external authorizer; its answer comes back as [`Session::on_verdict`]. The
    /// viewer's requests wait meanwhile (a deadline applies).
    Authorize(AuthQuery),
    /// A shared route: an admitted request (clean, the viewer authenticated, its route's
    /// address lists passed) for the relay to answer from the camera session it shares.
    SharedRequest(Box<Message>),
    /// A shared route: the viewer sent an interleaved frame (an RTCP report): it is alive.
    SharedViewerFrame,
}

/// One RTSP request and its answer, for the operator's debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    /// The request URI as the viewer sent it.
    pub uri: String,
    pub status: u16,
    /// From the request's arrival (or its forwarding, for camera answers) to its answer.
    pub latency: Duration,
    /// The relay answered itself (refused, or the camera failed); otherwise the camera did.
    pub by_relay: bool,
}

/// Fixed parameters of a session.
#[derive(Debug, Clone)]
pub struct SessionParams {
    pub limits: MessageLimits,
    /// How long the camera may take to answer one request.
    pub response_timeout: Duration,
    /// How long a viewer's RTSP message or `$` frame may stay unfinished once begun.
    pub request_timeout: Duration,
    /// Randomness for Digest cnonces and nonces (the core reads no entropy source itself).
    pub cnonce_seed: u64,
    /// The viewer's address (the GET's, for a tunnel), for the route's allow/deny lists.
    pub viewer_ip: core::net::IpAddr,
    /// The viewer's first connection (the GET, or the plain RTSP socket) came over TLS. Basic
    /// authentication is accepted only when every connection a credential travels on did.
    pub viewer_tls: bool,
    /// A tunnel POST may come from another address than its GET (carrier NAT pools).
    pub post_from_any_address: bool,
    /// Failed logins per address, shared by every session.
    pub auth_gate: Arc<dyn AuthGate>,
    /// How long a Digest nonce the relay issues stays valid.
    pub nonce_ttl: Duration,
    /// Requests forwarded to the camera and not yet answered; more get `503` at once.
    pub max_pending_requests: usize,
    /// External authorization and viewer caps.
    pub access: AccessParams,
}

/// How viewers are let in beyond a route's own `users` list.
#[derive(Debug, Clone)]
pub struct AccessParams {
    /// `[auth] method`: who decides for routes guarded by [`Guard::External`].
    pub method: Method,
    /// Basic credentials accepted on a plain connection (`[auth] basic_over_plain`).
    pub basic_over_plain: bool,
    /// How long a session waits for a verdict before it refuses (`timeout`).
    pub verdict_timeout: Duration,
    /// A token the viewer brought outside RTSP (`?jwt=` on the WebSocket URL).
    pub bearer: Option<String>,
    /// Viewers per route, sessions per user and per address (process-wide).
    pub caps: Arc<dyn ViewerCaps>,
    /// The realm of the Basic challenge (`[auth] realm`).
    pub realm: String,
}

impl Default for AccessParams {
    fn default() -> Self {
        AccessParams {
            method: Method::Internal,
            basic_over_plain: false,
            verdict_timeout: Duration::from_secs(3),
            bearer: None,
            caps: Arc::new(NoCaps),
            realm: "rtsp-tunnel-relay".to_owned(),
        }
    }
}

/// A question to the external authorizer, and the requests that wait for its answer.
#[derive(Debug)]
struct Awaiting {
    id: u64,
    since: Instant,
    queued: Vec<(Message, ViewerStream)>,
}

/// What [`Session::admit`] decided for one request.
enum Admit {
    Pass,
    /// Answered (or the session closed): nothing more to do with it.
    Stop,
    /// Waits for the external verdict: queue it.
    Wait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    Idle,
    Connecting,
    Connected,
    Gone,
}

/// A request forwarded to the camera and not yet answered.
#[derive(Debug)]
struct Pending {
    cseq: u32,
    method: RtspMethod,
    /// The method and URI as the viewer sent them, for the log.
    viewer_request: (String, String),
    /// The rewritten request, kept to retry it after an authentication challenge.
    request: Message,
    authorized: bool,
    sent_at: Instant,
}

pub struct Session {
    params: SessionParams,
    started_at: Instant,
    route: Option<Arc<Route>>,
    /// Authority (`host:port`) the viewer used, for URIs that don't carry one (`*`).
    viewer_authority: String,
    map: Option<UrlMap>,
    /// Boxed: only routes with camera credentials use it, and every viewer's session would
    /// carry its room inline.
    auth: Option<Box<UpstreamAuth>>,
    base64: Base64StreamDecoder,
    decoded: Vec<u8>,
    commands: Demux,
    data: Demux,
    camera: Demux,
    upstream: Upstream,
    /// Bytes for the camera queued while its connection opens.
    upstream_backlog: Vec<Vec<u8>>,
    pending: Vec<Pending>,
    played: bool,
    closed: bool,
    events: Vec<Event>,
    viewer_auth: Option<ViewerAuth>,
    /// The authenticated viewer, once the route's users admitted one.
    user: Option<String>,
    auth_failures: u32,
    /// The external verdict this session waits for.
    awaiting: Option<Awaiting>,
    queries: u64,
    /// The place this session holds under the viewer caps, once admitted.
    cap_ticket: Option<CapTicket>,
    /// Camera URLs the camera's answers handed out (the viewer may ask for them).
    handed_out: Vec<HandedOut>,
    /// Whether the tunnel POST now bound came over TLS (`None` before one binds).
    commands_tls: Option<bool>,
    /// Viewer frame bytes (POST or plain stream, and GET) until a whole frame is in: the camera
    /// gets whole frames only, so nothing the relay writes can land inside one.
    viewer_frames: [Vec<u8>; 2],
    /// The relay's own replies held while the camera's stream to the viewer is mid-frame.
    held_for_viewer: Vec<Vec<u8>>,
    progress: ViewerProgress,
    camera_session: CameraSession,
    /// The route, known from the start, shares its camera: admitted requests go to the shell
    /// ([`Output::SharedRequest`]), nothing to a camera of this session's own.
    shared: bool,
}

/// The session the camera holds for this viewer, so that the relay can free it when the viewer
/// leaves without a TEARDOWN.
#[derive(Debug, Clone, Default)]
struct CameraSession {
    /// The camera's session id, from its answer to a SETUP; gone once a TEARDOWN was answered.
    id: Option<String>,
    /// The camera URI the last successful PLAY named: the aggregate a TEARDOWN addresses.
    aggregate_uri: Option<String>,
    /// The highest CSeq the camera has answered, so the relay's own request does not reuse one.
    last_cseq: u32,
}

/// What the viewer's input has achieved: bytes that complete nothing are not activity.
#[derive(Debug, Clone, Copy)]
struct ViewerProgress {
    /// When the last whole message or frame from the viewer arrived (or the session began).
    last: Instant,
    /// When the unfinished message or frame on the command stream (POST body or plain socket)
    /// began, and likewise on the tunnel GET.
    commands_partial: Option<Instant>,
    data_partial: Option<Instant>,
}

impl ViewerProgress {
    /// After a chunk: `partial` says whether the stream now holds an unfinished item, and
    /// `completed` whether the chunk finished one (then any unfinished item began in it).
    fn note(since: &mut Option<Instant>, partial: bool, completed: bool, now: Instant) {
        *since = match *since {
            _ if !partial => None,
            Some(t) if !completed => Some(t),
            _ => Some(now),
        };
    }
}

impl Session {
    /// `route`: resolved from the tunnel GET's path, or `None` to resolve it from the first RTSP
    /// request (plain RTSP, or a GET of `/`). `viewer_authority`: the `Host` the viewer used.
    pub fn new(params: SessionParams, route: Option<Arc<Route>>, viewer_authority: &str, started_at: Instant) -> Self {
        let limits = params.limits;
        // A route found later (plain RTSP's first request, a GET of `/`) is served 1:1: the shell
        // places shared viewers on the camera's shard before the session starts.
        let shared = route.as_ref().is_some_and(|r| r.shared().is_some());
        Session {
            shared,
            params,
            started_at,
            route,
            viewer_authority: viewer_authority.to_owned(),
            map: None,
            auth: None,
            base64: Base64StreamDecoder::new(),
            decoded: Vec::new(),
            commands: Demux::new(limits),
            data: Demux::new(limits),
            camera: Demux::new(limits),
            upstream: Upstream::Idle,
            upstream_backlog: Vec::new(),
            pending: Vec::new(),
            played: false,
            closed: false,
            events: Vec::new(),
            viewer_auth: None,
            user: None,
            handed_out: Vec::new(),
            auth_failures: 0,
            awaiting: None,
            queries: 0,
            cap_ticket: None,
            commands_tls: None,
            viewer_frames: [Vec::new(), Vec::new()],
            held_for_viewer: Vec::new(),
            progress: ViewerProgress { last: started_at, commands_partial: None, data_partial: None },
            camera_session: CameraSession::default(),
        }
    }

    pub fn route(&self) -> Option<&Arc<Route>> {
        self.route.as_ref()
    }

    /// A reload gave this shared route another camera (URL, address or credentials): the route
    /// in force from now on, and the viewer's URLs mapped to the new camera. Only a shared
    /// session follows its route this way; a passthrough session's camera connection is its
    /// own and ends with its route instead.
    pub fn follow_route(&mut self, route: Arc<Route>) {
        if !self.shared {
            return;
        }
        // Validated with the configuration: a URL that does not map keeps the old map.
        if let Some(map) = self.map.as_ref().and_then(|m| m.with_upstream(&route.upstream_url).ok()) {
            self.map = Some(map);
        }
        self.route = Some(route);
    }

    /// Whether admitted requests are for the relay to answer from a shared camera session.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The route as this viewer addresses it and the camera URL, once its first request came.
    pub fn url_map(&self) -> Option<&UrlMap> {
        self.map.as_ref()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The authenticated viewer, if the route asked for one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether PLAY has been answered with success.
    pub fn is_playing(&self) -> bool {
        self.played
    }

    /// Bytes from the viewer.
    pub fn on_viewer_bytes(
        &mut self,
        stream: ViewerStream,
        chunk: &[u8],
        now: Instant,
        routes: &RouteTable,
        out: &mut Vec<Output>,
    ) {
        if self.closed {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        // Frame ranges index the decoded POST body, or the chunk itself for raw streams.
        let mut decoded = std::mem::take(&mut self.decoded);
        events.clear();
        decoded.clear();
        let fed = match stream {
            ViewerStream::TunnelCommands => match self.base64.decode(chunk, &mut decoded) {
                Ok(()) => self.commands.feed(&decoded, &mut events).map_err(Some),
                Err(_) => Err(None),
            },
            ViewerStream::TunnelData => self.data.feed(chunk, &mut events).map_err(Some),
            ViewerStream::Plain => self.commands.feed(chunk, &mut events).map_err(Some),
        };
        let input: &[u8] = if stream == ViewerStream::TunnelCommands { &decoded } else { chunk };
        let first_output = out.len();
        if fed.is_ok() {
            self.note_progress(stream, &events, now);
        }
        match fed {
            Ok(()) => {
                for event in events.drain(..) {
                    self.on_viewer_event(event, stream, input, now, routes, out);
                    if self.closed {
                        break;
                    }
                }
            }
            Err(err) => {
                let reason = match err {
                    None => Rejection::BadBase64,
                    Some(ParseError::Malformed(_)) => Rejection::MalformedRtsp,
                    Some(_) => Rejection::RtspTooLarge,
                };
                out.push(Output::Rejected(reason));
                self.close(SessionOutcome::ProtocolError, out);
            }
        }
        // A viewer sends a request or an RTCP report now and then, never media: the room of its
        // last one goes back (the camera's side keeps its own, reused at every receive).
        decoded.clear();
        events.clear();
        super::room::release_if_empty_vec(&mut decoded);
        super::room::release_if_empty_vec(&mut events);
        self.decoded = decoded;
        self.events = events;
        self.hold_replies_mid_frame(first_output, out);
    }

    /// The relay's replies in `out[from..]` wait while the camera's media to the viewer is
    /// mid-frame (they would corrupt it); they go out at the next frame boundary.
    fn hold_replies_mid_frame(&mut self, from: usize, out: &mut Vec<Output>) {
        if !self.camera.mid_frame() || !out[from..].iter().any(|o| matches!(o, Output::ToViewer(_))) {
            return;
        }
        let mut i = from;
        while i < out.len() {
            if matches!(out[i], Output::ToViewer(_)) {
                if let Output::ToViewer(bytes) = out.remove(i) {
                    self.held_for_viewer.push(bytes);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Updates the viewer's activity and its unfinished-input clock after a chunk was parsed.
    fn note_progress(&mut self, stream: ViewerStream, events: &[Event], now: Instant) {
        let completed = events.iter().any(|e| match e {
            Event::Message(_) => true,
            Event::Frames { frames_completed, .. } => *frames_completed > 0,
        });
        if completed {
            self.progress.last = now;
        }
        let (since, partial) = match stream {
            ViewerStream::TunnelCommands => {
                (&mut self.progress.commands_partial, self.base64.pending() > 0 || self.commands.holds_partial())
            }
            ViewerStream::Plain => (&mut self.progress.commands_partial, self.commands.holds_partial()),
            ViewerStream::TunnelData => (&mut self.progress.data_partial, self.data.holds_partial()),
        };
        ViewerProgress::note(since, partial, completed, now);
    }

    /// When the viewer last sent a whole RTSP message or `$` frame (the session's start before
    /// that). Bytes that complete nothing do not move it, so they do not keep a session alive.
    pub fn last_viewer_progress(&self) -> Instant {
        self.progress.last
    }

    /// Since when the viewer has held an RTSP message or `$` frame begun and not finished.
    pub fn partial_since(&self) -> Option<Instant> {
        match (self.progress.commands_partial, self.progress.data_partial) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_viewer_event(
        &mut self,
        event: Event,
        stream: ViewerStream,
        input: &[u8],
        now: Instant,
        routes: &RouteTable,
        out: &mut Vec<Output>,
    ) {
        match event {
            Event::Frames { range, .. } => {
                let buf = &mut self.viewer_frames[(stream == ViewerStream::TunnelData) as usize];
                buf.extend_from_slice(&input[range]);
                let (whole, frames) = whole_frames(buf);
                if whole == 0 {
                    return;
                }
                if self.shared {
                    buf.drain(..whole);
                    out.push(Output::SharedViewerFrame);
                    return;
                }
                let frames_bytes: Vec<u8> = buf.drain(..whole).collect();
                // RTCP receiver reports keep the camera's session alive; before the camera
                // connection exists there is nothing they could refer to.
                if self.upstream == Upstream::Connected {
                    out.push(Output::ToUpstream(frames_bytes));
                    out.push(Output::FramesToCamera(frames));
                }
            }
            Event::Message(msg) if msg.is_request() => {
                let asked = (msg.method().unwrap_or("").to_owned(), msg.uri().unwrap_or("").to_owned());
                let before = out.len();
                self.on_viewer_request(msg, stream, now, routes, out);
                // A reply the relay wrote itself answers it here; camera answers are logged as
                // they come.
                let reply = out[before..].iter().enumerate().find_map(|(i, o)| match o {
                    Output::ToViewer(b) => {
                        b.get(9..12).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()).map(|s| (before + i, s))
                    }
                    _ => None,
                });
                if let Some((at, status)) = reply {
                    let (method, uri) = asked;
                    let e = Exchange { method, uri, status, latency: Duration::ZERO, by_relay: true };
                    out.insert(at + 1, Output::Exchange(e));
                }
            }
            Event::Message(msg) => {
                // The viewer answering a request the camera sent it. Only a camera connection an
                // admitted request opened can have asked; a response never opens one.
                if self.upstream == Upstream::Connected {
                    match camera_request::rebuild_response(&msg) {
                        Ok(answer) => out.push(Output::ToUpstream(answer.to_bytes())),
                        Err(_) => out.push(Output::Rejected(Rejection::BadHeaderValue)),
                    }
                }
            }
        }
    }

    fn on_viewer_request(
        &mut self,
        mut msg: Message,
        stream: ViewerStream,
        now: Instant,
        routes: &RouteTable,
        out: &mut Vec<Output>,
    ) {
        let cseq = msg.cseq();
        let Some(cseq) = cseq else {
            out.push(Output::Rejected(Rejection::MalformedRtsp));
            out.push(Output::ToViewer(local_reply(400, "Bad Request", None)));
            self.close(SessionOutcome::ProtocolError, out);
            return;
        };
        if !camera_request::is_clean(&msg) {
            self.refuse(Rejection::BadHeaderValue, Refusal::BadHeaderValue.status(), cseq, out);
            return;
        }
        if self.map.is_none() {
            let uri = msg.uri().unwrap_or("*").to_owned();
            if self.route.is_none() {
                // The first request routes this connection: only by the route's own spelling.
                let found = routes.lookup(&uri);
                if found.as_ref().is_some_and(|r| !is_route_spelling(&uri, &r.path)) {
                    out.push(Output::Rejected(Rejection::RouteSpelling));
                    out.push(Output::ToViewer(local_reply(404, "Not Found", Some(cseq))));
                    self.close(SessionOutcome::ProtocolError, out);
                    return;
                }
                self.route = found;
            }
            let Some(route) = self.route.clone() else {
                out.push(Output::Rejected(Rejection::UnknownRoute));
                out.push(Output::ToViewer(local_reply(404, "Not Found", Some(cseq))));
                self.close(SessionOutcome::ProtocolError, out);
                return;
            };
            let client_base = client_base(&uri, &self.viewer_authority, &route.path);
            match UrlMap::new(&client_base, &route.upstream_url) {
                Ok(map) => self.map = Some(map),
                Err(_) => {
                    out.push(Output::Rejected(Rejection::MalformedRtsp));
                    out.push(Output::ToViewer(local_reply(400, "Bad Request", Some(cseq))));
                    self.close(SessionOutcome::ProtocolError, out);
                    return;
                }
            }
            self.auth = route.credentials.clone().map(|c| Box::new(UpstreamAuth::new(c, self.params.cnonce_seed)));
        }
        match self.admit(&msg, self.is_tls(stream), cseq, now, routes, out) {
            Admit::Pass => {}
            Admit::Stop => return,
            Admit::Wait => {
                let Some(aw) = self.awaiting.as_mut() else { return };
                if aw.queued.len() >= self.params.max_pending_requests {
                    self.refuse(Rejection::TooManyPendingRequests, (503, "Service Unavailable"), cseq, out);
                } else {
                    aw.queued.push((msg, stream));
                }
                return;
            }
        }
        if self.shared {
            out.push(Output::SharedRequest(Box::new(msg)));
            return;
        }
        let Some(map) = &self.map else { return };
        let method = msg.method().unwrap_or("");
        let camera_uri = match map.camera_uri(msg.uri().unwrap_or(""), method == "OPTIONS", &self.handed_out) {
            Ok(uri) => uri,
            Err(UriRefusal::OutsideRoute) => {
                self.refuse(Rejection::OutsideRoute, (404, "Not Found"), cseq, out);
                return;
            }
            Err(UriRefusal::Malformed) => {
                self.refuse(Rejection::BadRequestUri, (400, "Bad Request"), cseq, out);
                return;
            }
        };
        let method = RtspMethod::from_name(method);
        if method == RtspMethod::Setup && !steer_to_interleaved(&mut msg) {
            self.refuse(Rejection::UnsupportedTransport, (461, "Unsupported Transport"), cseq, out);
            return;
        }
        let request = match camera_request::rebuild_request(&msg, cseq, &camera_uri) {
            Ok(request) => request,
            Err(Refusal::MethodNotAllowed) => {
                out.push(Output::Rejected(Rejection::MethodNotAllowed));
                out.push(Output::ToViewer(method_not_allowed(cseq)));
                return;
            }
            Err(refusal @ Refusal::BadHeaderValue) => {
                self.refuse(Rejection::BadHeaderValue, refusal.status(), cseq, out);
                return;
            }
        };
        self.pending.retain(|p| p.cseq != cseq);
        if self.pending.len() >= self.params.max_pending_requests {
            // A viewer that does not wait for answers must not queue without bound.
            self.refuse(Rejection::TooManyPendingRequests, (503, "Service Unavailable"), cseq, out);
            return;
        }
        let mut wire = request.clone();
        let authorized = self.auth.as_mut().is_some_and(|a| a.authorize(&mut wire));
        let viewer_request = (msg.method().unwrap_or("").to_owned(), msg.uri().unwrap_or("").to_owned());
        self.pending.push(Pending { cseq, method, viewer_request, request, authorized, sent_at: now });
        self.send_upstream(wire.to_bytes(), out);
    }

    /// Answers a request the relay will not pass on; the session goes on.
    fn refuse(&mut self, reason: Rejection, (status, text): (u16, &str), cseq: u32, out: &mut Vec<Output>) {
        out.push(Output::Rejected(reason));
        out.push(Output::ToViewer(local_reply(status, text, Some(cseq))));
    }

    /// Whether a credential on `stream` travels over TLS end to end: a tunnel's requests come up
    /// the POST and its challenges go down the GET, so both must be.
    fn is_tls(&self, stream: ViewerStream) -> bool {
        match stream {
            ViewerStream::TunnelCommands => self.params.viewer_tls && self.commands_tls == Some(true),
            ViewerStream::TunnelData | ViewerStream::Plain => self.params.viewer_tls,
        }
    }

    /// The route's address lists, who may watch, and the viewer caps: whether this request may
    /// go further (answered otherwise, or queued for an external verdict). Nothing reaches the
    /// camera before this passes. `tls`: the request came over TLS end to end (Basic is offered
    /// and accepted only then, unless `basic_over_plain`).
    fn admit(
        &mut self,
        msg: &Message,
        tls: bool,
        cseq: u32,
        now: Instant,
        routes: &RouteTable,
        out: &mut Vec<Output>,
    ) -> Admit {
        let Some(route) = self.route.clone() else { return Admit::Stop };
        if !route.acl.permits(self.params.viewer_ip) {
            out.push(Output::Rejected(Rejection::AddressDenied));
            out.push(Output::ToViewer(local_reply(403, "Forbidden", Some(cseq))));
            self.close(SessionOutcome::ProtocolError, out);
            return Admit::Stop;
        }
        let checked = match (route.users.as_deref(), route.guard) {
            _ if self.user.is_some() => Admit::Pass,
            (None, Guard::Open) => Admit::Pass,
            (Some(list), _) => self.internal(msg, tls, cseq, now, routes, Some(list), None, out),
            (None, Guard::UsersByRoute) => self.internal(msg, tls, cseq, now, routes, None, Some(&route.path), out),
            (None, Guard::External) => self.external(msg, tls, cseq, now, &route.path, out),
        };
        if !matches!(checked, Admit::Pass) || self.cap_ticket.is_some() {
            return checked;
        }
        let caps = self.params.access.caps.clone();
        match CapTicket::take(&caps, &route.path, route.max_viewers, self.user.as_deref(), self.params.viewer_ip) {
            Ok(ticket) => {
                self.cap_ticket = Some(ticket);
                Admit::Pass
            }
            Err(hit) => {
                let reason = match hit {
                    CapHit::Route => Rejection::MaxViewers,
                    CapHit::User => Rejection::MaxSessionsPerUser,
                    CapHit::Address => Rejection::MaxSessionsPerIp,
                };
                self.refuse(reason, (453, "Not Enough Bandwidth"), cseq, out);
                Admit::Stop
            }
        }
    }

    /// Refuses a viewer whose address failed too often lately (checked on every request, so a
    /// tunnel opened before the block guesses no more).
    fn blocked(&mut self, cseq: u32, now: Instant, out: &mut Vec<Output>) -> bool {
        if !self.params.auth_gate.is_blocked(self.params.viewer_ip, now) {
            return false;
        }
        out.push(Output::Rejected(Rejection::AuthRateLimited));
        out.push(Output::ToViewer(local_reply(429, "Too Many Requests", Some(cseq))));
        self.close(SessionOutcome::ProtocolError, out);
        true
    }

    /// A failed login other than the normal first step: counted against the address, and a
    /// session that keeps guessing is closed.
    fn count_failure(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.params.auth_gate.record_failure(self.params.viewer_ip, now);
        self.auth_failures += 1;
        if self.auth_failures >= MAX_AUTH_FAILURES_PER_SESSION {
            self.close(SessionOutcome::ProtocolError, out);
        }
    }

    /// Internal users: the route's `allowed` names, or (`by_route`) any user whose route globs
    /// cover this route.
    #[allow(clippy::too_many_arguments)]
    fn internal(
        &mut self,
        msg: &Message,
        tls: bool,
        cseq: u32,
        now: Instant,
        routes: &RouteTable,
        allowed: Option<&[String]>,
        by_route: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Admit {
        if self.blocked(cseq, now, out) {
            return Admit::Stop;
        }
        let users = routes.users();
        let seed = self.params.cnonce_seed.rotate_left(17);
        let auth = self.viewer_auth.get_or_insert_with(|| ViewerAuth::new(seed, tls, self.params.nonce_ttl, now));
        auth.set_tls(tls);
        let verdict = auth.verify(msg, users, allowed, now).and_then(|user| match by_route {
            Some(path) if !users.may_read(&user, path) => Err(AuthFailure::NotAllowed),
            _ => Ok(user),
        });
        match verdict {
            Ok(user) => {
                self.user = Some(user);
                Admit::Pass
            }
            Err(failure) => {
                out.push(Output::AuthFailed(failure));
                let mut reply = Message::response(401, "Unauthorized");
                reply.set_header("CSeq", cseq.to_string());
                reply.set_header("Server", "rtsp-tunnel-relay");
                for challenge in auth.challenge(users, failure == AuthFailure::StaleNonce, now) {
                    reply.headers.push(("WWW-Authenticate".to_owned(), challenge));
                }
                out.push(Output::ToViewer(reply.to_bytes()));
                // Asking for credentials is the normal first step; guessing is not.
                if !matches!(failure, AuthFailure::NoCredentials | AuthFailure::StaleNonce) {
                    self.count_failure(now, out);
                }
                Admit::Stop
            }
        }
    }

    /// An external method decides: the credentials (Basic, or a token brought outside RTSP) go
    /// out as an [`Output::Authorize`], and this request waits with any that follow.
    fn external(
        &mut self,
        msg: &Message,
        tls: bool,
        cseq: u32,
        now: Instant,
        route: &str,
        out: &mut Vec<Output>,
    ) -> Admit {
        if self.awaiting.is_some() {
            return Admit::Wait;
        }
        if self.blocked(cseq, now, out) {
            return Admit::Stop;
        }
        let basic_ok = tls || self.params.access.basic_over_plain;
        let (user, password, token) = match presented(msg) {
            Presented::Basic { .. } if !basic_ok => {
                // Already sent in the clear; it goes no further.
                self.refuse_credentials(AuthFailure::BasicWithoutTls, cseq, basic_ok, out);
                return Admit::Stop;
            }
            Presented::Basic { user, password } => (user, password, String::new()),
            // A token outside the Authorization header: from the WebSocket URL, or the RTSP
            // URL's own `?jwt=` (FFmpeg keeps at most 127 bytes of `user:password`, less than
            // a signed token).
            Presented::None => match self.params.access.bearer.clone().or_else(|| bearer_from_target(msg.uri()?)) {
                Some(token) => (String::new(), String::new(), token),
                None => {
                    self.refuse_credentials(AuthFailure::NoCredentials, cseq, basic_ok, out);
                    return Admit::Stop;
                }
            },
            Presented::Unusable => {
                self.refuse_credentials(AuthFailure::Malformed, cseq, basic_ok, out);
                self.count_failure(now, out);
                return Admit::Stop;
            }
        };
        self.queries = self.queries.wrapping_add(1);
        let query = AuthQuery {
            id: self.queries,
            user,
            password,
            token,
            ip: self.params.viewer_ip,
            route: route.to_owned(),
            tls,
            action: Action::Read,
        };
        out.push(Output::Authorize(query));
        self.awaiting = Some(Awaiting { id: self.queries, since: now, queued: Vec::new() });
        Admit::Wait
    }

    /// Asks for credentials an external method can use: a Basic challenge where Basic may travel
    /// (401), a refusal where it may not (403: no client should send a password there).
    fn refuse_credentials(&mut self, failure: AuthFailure, cseq: u32, basic_ok: bool, out: &mut Vec<Output>) {
        out.push(Output::AuthFailed(failure));
        if !basic_ok {
            out.push(Output::ToViewer(local_reply(403, "Forbidden", Some(cseq))));
            return;
        }
        let mut reply = Message::response(401, "Unauthorized");
        reply.set_header("CSeq", cseq.to_string());
        reply.set_header("Server", "rtsp-tunnel-relay");
        reply.set_header("WWW-Authenticate", format!("Basic realm=\"{}\"", self.params.access.realm));
        out.push(Output::ToViewer(reply.to_bytes()));
    }

    /// The external authorizer's answer to query `id`: the waiting requests go on, or are
    /// refused (401 for a refusal, 503 when the authorizer failed or was too slow).
    pub fn on_verdict(&mut self, id: u64, verdict: Verdict, now: Instant, routes: &RouteTable, out: &mut Vec<Output>) {
        if self.closed || self.awaiting.as_ref().is_none_or(|a| a.id != id) {
            return;
        }
        let Some(aw) = self.awaiting.take() else { return };
        let failure = match verdict {
            Verdict::Allow { user } => {
                self.user = Some(user);
                for (msg, stream) in aw.queued {
                    self.on_viewer_event(Event::Message(msg), stream, &[], now, routes, out);
                    if self.closed {
                        break;
                    }
                }
                return;
            }
            Verdict::Refused => AuthFailure::Refused,
            Verdict::Timeout => AuthFailure::Timeout,
            Verdict::Error => AuthFailure::Error,
        };
        out.push(Output::AuthFailed(failure));
        for (msg, stream) in aw.queued {
            let Some(cseq) = msg.cseq() else { continue };
            let status = if failure == AuthFailure::Refused {
                let basic_ok = self.is_tls(stream) || self.params.access.basic_over_plain;
                let before = out.len();
                self.refuse_credentials(failure, cseq, basic_ok, out);
                // Counted once above.
                out.remove(before);
                if basic_ok { 401 } else { 403 }
            } else {
                out.push(Output::ToViewer(local_reply(503, "Service Unavailable", Some(cseq))));
                503
            };
            let (method, uri) = (msg.method().unwrap_or("").to_owned(), msg.uri().unwrap_or("").to_owned());
            out.push(Output::Exchange(Exchange { method, uri, status, latency: Duration::ZERO, by_relay: true }));
        }
        if failure == AuthFailure::Refused {
            self.count_failure(now, out);
        }
    }

    /// When the external verdict this session waits for is overdue.
    fn verdict_deadline(&self) -> Option<Instant> {
        self.awaiting.as_ref().map(|a| a.since + self.params.access.verdict_timeout)
    }

    /// Camera URLs in `msg` become the viewer's; the URLs it hands out are noted.
    fn rewrite_for_viewer(&mut self, msg: &mut Message) {
        let Some(map) = &self.map else { return };
        for h in rewrite_to_client(msg, map) {
            if self.handed_out.len() < MAX_HANDED_OUT && !self.handed_out.contains(&h) {
                self.handed_out.push(h);
            }
        }
    }

    fn send_upstream(&mut self, bytes: Vec<u8>, out: &mut Vec<Output>) {
        match self.upstream {
            Upstream::Connected => out.push(Output::ToUpstream(bytes)),
            Upstream::Connecting => self.upstream_backlog.push(bytes),
            Upstream::Idle => {
                let Some(route) = &self.route else { return };
                self.upstream_backlog.push(bytes);
                self.upstream = Upstream::Connecting;
                out.push(Output::ConnectUpstream(route.upstream_addr));
            }
            Upstream::Gone => {}
        }
    }

    /// The camera connection is open: what was queued goes out.
    pub fn on_upstream_connected(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.upstream != Upstream::Connecting {
            return;
        }
        self.upstream = Upstream::Connected;
        for p in &mut self.pending {
            // The camera's clock starts when it can hear the request.
            p.sent_at = now;
        }
        out.extend(self.upstream_backlog.drain(..).map(Output::ToUpstream));
    }

    /// The camera could not be reached: the route's fallback is tried (passthrough, once), else
    /// every waiting request gets a 503.
    pub fn on_upstream_connect_failed(&mut self, kind: UpstreamErrorKind, out: &mut Vec<Output>) {
        if self.try_fallback(out) {
            out.push(Output::UpstreamError(kind));
            return;
        }
        self.upstream = Upstream::Gone;
        self.upstream_backlog.clear();
        out.push(Output::UpstreamError(kind));
        self.fail_pending(503, "Service Unavailable", out);
        self.close(SessionOutcome::UpstreamError, out);
    }

    /// The camera's host already holds `[limits] max_camera_sessions` sessions: the waiting
    /// requests are answered 453 Not Enough Bandwidth (before the camera would refuse the
    /// session mid-dialogue) and the session ends.
    pub fn on_camera_host_full(&mut self, out: &mut Vec<Output>) {
        self.upstream = Upstream::Gone;
        self.upstream_backlog.clear();
        out.push(Output::Rejected(Rejection::CameraSessionLimit));
        self.fail_pending(453, "Not Enough Bandwidth", out);
        self.close(SessionOutcome::UpstreamError, out);
    }

    /// The camera closed its connection (or reset it).
    pub fn on_upstream_closed(&mut self, kind: UpstreamErrorKind, out: &mut Vec<Output>) {
        if self.closed {
            return;
        }
        self.upstream = Upstream::Gone;
        out.push(Output::UpstreamError(kind));
        self.fail_pending(503, "Service Unavailable", out);
        self.close(SessionOutcome::UpstreamClosed, out);
    }

    /// A viewer socket reached end of stream.
    pub fn on_viewer_closed(&mut self, stream: ViewerStream, out: &mut Vec<Output>) {
        // A tunnel POST may close and reopen with the same cookie; the GET and camera stay up.
        if stream != ViewerStream::TunnelCommands {
            self.close(SessionOutcome::Completed, out);
        } else {
            // What the closed POST left unfinished can never complete: a new POST starts afresh.
            self.reset_command_stream();
        }
    }

    /// A tunnel POST from `ip` (over TLS or not) wants to carry this tunnel's commands. It must
    /// come from the GET's address (unless `post_from_any_address`); a POST that replaces
    /// another starts its base64 stream afresh and, on an authenticated tunnel, must
    /// authenticate again. `Err` leaves the tunnel as it was: the shell closes the new POST.
    pub fn on_commands_bound(&mut self, ip: core::net::IpAddr, tls: bool) -> Result<(), Rejection> {
        if !self.params.post_from_any_address && ip != self.params.viewer_ip {
            return Err(Rejection::PostFromOtherAddress);
        }
        if self.commands_tls.is_some() {
            self.reset_command_stream();
            self.user = None;
        }
        self.commands_tls = Some(tls);
        Ok(())
    }

    /// The POST's stream starts afresh: what an old POST left unfinished can never complete.
    fn reset_command_stream(&mut self) {
        self.base64 = Base64StreamDecoder::new();
        self.commands = Demux::new(self.params.limits);
        self.viewer_frames[0].clear();
        self.progress.commands_partial = None;
    }

    /// Bytes from the camera; frame ranges refer to `chunk`.
    pub fn on_upstream_bytes(&mut self, chunk: &[u8], now: Instant, out: &mut Vec<Output>) {
        if self.closed {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        if self.camera.feed(chunk, &mut events).is_err() {
            self.events = events;
            out.push(Output::UpstreamError(UpstreamErrorKind::Garbage));
            self.fail_pending(502, "Bad Gateway", out);
            self.close(SessionOutcome::UpstreamError, out);
            return;
        }
        for event in events.drain(..) {
            match event {
                Event::Frames { range, frames_completed } => {
                    out.push(Output::ForwardToViewer { range, frames: frames_completed })
                }
                Event::Message(msg) if msg.is_request() => {
                    let mut msg = msg;
                    self.rewrite_for_viewer(&mut msg);
                    out.push(Output::ToViewer(msg.to_bytes()));
                }
                Event::Message(msg) => self.on_camera_response(msg, now, out),
            }
            if self.closed {
                break;
            }
        }
        self.events = events;
        if !self.camera.mid_frame() {
            out.extend(self.held_for_viewer.drain(..).map(Output::ToViewer));
        }
    }

    fn on_camera_response(&mut self, mut msg: Message, now: Instant, out: &mut Vec<Output>) {
        let idx = msg.cseq().and_then(|c| self.pending.iter().position(|p| p.cseq == c));
        if let (Some(i), Some(401)) = (idx, msg.status()) {
            let was_authorized = self.pending[i].authorized;
            if let Some(auth) = self.auth.as_mut() {
                if auth.on_unauthorized(&msg, was_authorized) == AuthVerdict::Retry {
                    let p = &mut self.pending[i];
                    let mut wire = p.request.clone();
                    p.authorized = auth.authorize(&mut wire);
                    out.push(Output::ToUpstream(wire.to_bytes()));
                    return;
                }
            }
            // The camera refused the relay's credentials (or the route has none): the viewer
            // learns it failed, never the camera's realm or nonce.
            out.push(Output::UpstreamError(UpstreamErrorKind::AuthFailed));
            msg.remove_header("WWW-Authenticate");
        }
        if let Some(i) = idx {
            let p = self.pending.swap_remove(i);
            if p.authorized && msg.status() != Some(401) {
                if let Some(auth) = self.auth.as_mut() {
                    auth.on_accepted();
                }
            }
            let latency = now.saturating_duration_since(p.sent_at);
            out.push(Output::Observe(Hist::RtspRequest(p.method), latency));
            let (method, uri) = p.viewer_request.clone();
            let status = msg.status().unwrap_or(0);
            out.push(Output::Exchange(Exchange { method, uri, status, latency, by_relay: false }));
            let ok = msg.status().is_some_and(|s| (200..300).contains(&s));
            self.note_camera_session(&p, &msg, ok);
            if p.method == RtspMethod::Play && ok && !self.played {
                self.played = true;
                out.push(Output::Observe(Hist::SessionSetup, now.saturating_duration_since(self.started_at)));
            }
        }
        self.rewrite_for_viewer(&mut msg);
        out.push(Output::ToViewer(msg.to_bytes()));
    }

    /// Follows the camera's session through the answers to SETUP, PLAY and TEARDOWN.
    fn note_camera_session(&mut self, p: &Pending, answer: &Message, ok: bool) {
        let cam = &mut self.camera_session;
        cam.last_cseq = cam.last_cseq.max(p.cseq);
        if !ok {
            return;
        }
        match p.method {
            RtspMethod::Setup => {
                let id = answer.header("Session").map(SessionHeader::id_of);
                // The id goes back to the camera in a request the relay writes: a token only.
                if let Some(id) = id.filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic())) {
                    cam.id = Some(id.to_owned());
                }
            }
            RtspMethod::Play => cam.aggregate_uri = p.request.uri().map(str::to_owned),
            RtspMethod::Teardown => cam.id = None,
            _ => {}
        }
    }

    /// The relay's own TEARDOWN for the camera session this viewer leaves behind, to send as the
    /// session ends: the camera set one up, and no TEARDOWN of the viewer's was answered or is
    /// on its way. Built from what the relay knows (the camera's own URI and session id, the
    /// route's credentials), never from viewer bytes. Returns it once.
    pub fn teardown_for_camera(&mut self) -> Option<Vec<u8>> {
        if self.upstream != Upstream::Connected || self.pending.iter().any(|p| p.method == RtspMethod::Teardown) {
            return None;
        }
        let id = self.camera_session.id.take()?;
        let uri = match &self.camera_session.aggregate_uri {
            Some(uri) => uri.clone(),
            None => self.route.as_ref()?.upstream_url.clone(),
        };
        let cseq = self.pending.iter().map(|p| p.cseq).fold(self.camera_session.last_cseq, u32::max).saturating_add(1);
        let mut msg = Message::request("TEARDOWN", &uri);
        msg.set_header("CSeq", cseq.to_string());
        msg.set_header("Session", id);
        msg.set_header("User-Agent", "rtsp-tunnel-relay");
        if let Some(auth) = self.auth.as_mut() {
            auth.authorize(&mut msg);
        }
        Some(msg.to_bytes())
    }

    /// When [`Session::on_tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.request_deadline(), self.response_deadline(), self.verdict_deadline()].into_iter().flatten().min()
    }

    /// When the viewer's unfinished message or frame must be complete.
    fn request_deadline(&self) -> Option<Instant> {
        self.partial_since().map(|t| t + self.params.request_timeout)
    }

    /// When the oldest request the camera heard must be answered.
    fn response_deadline(&self) -> Option<Instant> {
        if self.upstream != Upstream::Connected {
            return None;
        }
        self.pending.iter().map(|p| p.sent_at + self.params.response_timeout).min()
    }

    /// Time passes: a viewer that leaves a message or frame unfinished too long, or a camera
    /// that leaves a request unanswered too long, ends the session.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.closed {
            return;
        }
        if self.request_deadline().is_some_and(|d| d <= now) {
            // A trickle that never completes a request must not hold a session (and a slot
            // of max_sessions) for ever.
            out.push(Output::Rejected(Rejection::RequestTimeout));
            if !self.camera.holds_partial() {
                // Not in the middle of a camera frame on its way down: the viewer may hear why.
                out.push(Output::ToViewer(local_reply(408, "Request Timeout", None)));
            }
            self.close(SessionOutcome::Timeout, out);
            return;
        }
        if let Some(id) =
            self.awaiting.as_ref().map(|a| a.id).filter(|_| self.verdict_deadline().is_some_and(|d| d <= now))
        {
            // No verdict in time: fail closed. The routes are not needed to refuse.
            self.on_verdict(id, Verdict::Timeout, now, &RouteTable::default(), out);
            if self.closed {
                return;
            }
        }
        if self.response_deadline().is_none_or(|d| d > now) {
            return;
        }
        out.push(Output::UpstreamError(UpstreamErrorKind::ResponseTimeout));
        self.fail_pending(504, "Gateway Timeout", out);
        self.close(SessionOutcome::UpstreamError, out);
    }

    fn fail_pending(&mut self, status: u16, reason: &str, out: &mut Vec<Output>) {
        for p in self.pending.drain(..) {
            out.push(Output::ToViewer(local_reply(status, reason, Some(p.cseq))));
            let (method, uri) = p.viewer_request;
            out.push(Output::Exchange(Exchange { method, uri, status, latency: Duration::ZERO, by_relay: true }));
        }
    }

    fn close(&mut self, outcome: SessionOutcome, out: &mut Vec<Output>) {
        if !self.closed {
            self.closed = true;
            out.extend(self.held_for_viewer.drain(..).map(Output::ToViewer));
            out.push(Output::Close(outcome));
        }
    }
}

/// How many leading bytes of `buf` (which starts at a frame header) are whole `$` frames, and
/// how many frames that is.
fn whole_frames(buf: &[u8]) -> (usize, u32) {
    let (mut at, mut frames) = (0, 0);
    while let Some(h) = buf.get(at..at + 4) {
        let end = at + 4 + u16::from_be_bytes([h[2], h[3]]) as usize;
        if end > buf.len() {
            break;
        }
        at = end;
        frames += 1;
    }
    (at, frames)
}

/// `405` with the methods the relay passes on.
fn method_not_allowed(cseq: u32) -> Vec<u8> {
    let mut msg = Message::response(405, "Method Not Allowed");
    msg.set_header("CSeq", cseq.to_string());
    msg.set_header("Server", "rtsp-tunnel-relay");
    msg.set_header("Allow", camera_request::public().to_string());
    msg.to_bytes()
}

/// An RTSP reply written by the relay itself.
pub fn local_reply(status: u16, reason: &str, cseq: Option<u32>) -> Vec<u8> {
    let mut msg = Message::response(status, reason);
    if let Some(c) = cseq {
        msg.set_header("CSeq", c.to_string());
    }
    msg.set_header("Server", "rtsp-tunnel-relay");
    msg.to_bytes()
}

/// The viewer's view of the route: scheme and authority as the viewer spoke them.
fn client_base(uri: &str, viewer_authority: &str, route_path: &str) -> String {
    // Viewer credentials in the URI are for the relay: `host_port` keeps them out of
    // rewritten URLs.
    let url = super::rtsp_url::RtspUrl::parse(uri);
    let (scheme, authority) = url.scheme().zip(url.host_port()).unwrap_or(("rtsp", viewer_authority));
    let path = if route_path == "/" { "" } else { route_path };
    format!("{scheme}://{authority}{path}")
}

/// Keeps only the TCP-interleaved transports a SETUP offers; false if none is left. The camera
/// side is always interleaved TCP: UDP could not cross the tunnel nor the relay.
fn steer_to_interleaved(msg: &mut Message) -> bool {
    let Some(mut transport) = msg.header("Transport").map(Transport::parse) else {
        return false;
    };
    transport.specs.retain(TransportSpec::is_interleaved_tcp);
    if transport.specs.is_empty() {
        return false;
    }
    msg.set_header("Transport", transport.to_string());
    true
}

mod fallback;

#[cfg(test)]
mod tests;

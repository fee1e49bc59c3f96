//! One tunnel, sans-IO: the RTSP dialogue ([`Session`]) and every policy around it — pairing of
//! the tunnel's GET and POST, the pairing, idle, request and response deadlines, drain, route
//! removal on reload, viewer backpressure and the camera backlog limit.
//!
//! In the style of quinn-proto's `Connection`. The shell, for each batch of completions (one
//! `now` for the whole batch):
//!
//! 1. feeds what it observed with [`Tunnel::handle`] (bytes read, a connection opened or
//!    closed, how much is queued towards either side after queueing), or
//!    [`Tunnel::handle_timeout`] once [`Tunnel::poll_timeout`] has passed;
//! 2. takes what to count and log from [`Tunnel::poll_event`] until `None` (metrics, the
//!    request log: nothing it must do), and what to do from [`Tunnel::poll_output`] until
//!    `None` (send, connect, pause, bind, end: actions only), events first;
//! 3. asks [`Tunnel::poll_timeout`] for the next deadline ([`Tunnel::timers`] names them).
//!
//! The tunnel never touches a socket or reads a clock; the shell keeps only descriptors, slab
//! indices and generations per tunnel, and the numbers it logs. After
//! [`Output::End`] nothing more comes out but [`Tunnel::camera_close`]'s answer.
//!
//! Connections are addressed by role, not by descriptor: "the viewer", "the POST", "the
//! camera". On a shared route (one camera connection, many viewers) the tunnel keeps the
//! viewer-side policies (pairing, POST rebinding, request deadline, drain, reload, viewer
//! backlog) and hands each request its session admitted out as [`Output::SharedRequest`]: the
//! shell gives it to the route's [`super::shared_route::SharedRoute`], which answers it (the
//! viewer's dialogue, its liveness and its media are the route's).

use core::net::{IpAddr, SocketAddr};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::outcome::{Hist, Rejection, SessionOutcome, UpstreamErrorKind};
use super::route::RouteTable;
use super::rtsp::Message;
use super::session::{self, Session, ViewerStream};

/// Limits a tunnel enforces; a reload replaces them for tunnels already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a tunnel GET waits for its first POST.
    pub pairing_timeout: Duration,
    /// No camera bytes and no whole viewer message or frame for this long ends the tunnel.
    pub idle_timeout: Duration,
    /// How long the camera connection of an ended tunnel may take to take its last bytes.
    pub camera_close_grace: Duration,
    /// Bytes queued towards the viewer (media, answers, WebSocket pongs and closes) beyond
    /// which neither the camera nor the viewer is read; a viewer that stays beyond it for
    /// `idle_timeout` is closed.
    pub max_viewer_backlog: usize,
    /// Bytes queued towards the camera beyond which the tunnel ends.
    pub max_camera_backlog: usize,
}

/// How the viewer reached the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RTSP over HTTP: a GET for the camera's answers and media, POSTs for the requests.
    Http,
    /// One RTSP/TCP connection.
    Plain,
    /// RTSP over WebSocket (`rtsp.onvif.org`): one connection both ways, as `Plain`; the shell
    /// frames and unframes the bytes.
    WebSocket,
}

/// What the shell observed.
#[derive(Debug)]
pub enum Input<'a> {
    /// Bytes a viewer connection delivered (plaintext, on a TLS connection).
    ViewerBytes {
        stream: ViewerStream,
        bytes: &'a [u8],
        routes: &'a RouteTable,
    },
    /// A viewer connection reached its end (or failed).
    ViewerClosed(ViewerStream),
    /// A tunnel POST with this tunnel's cookie arrived from `ip`.
    PostArrived {
        ip: IpAddr,
        tls: bool,
    },
    /// The camera connection asked for by [`Output::ConnectCamera`] is open.
    CameraConnected,
    CameraConnectFailed(UpstreamErrorKind),
    /// The camera's host already has `[limits] max_camera_sessions` sessions: not connected.
    CameraHostFull,
    /// Bytes from the camera; [`Output::ForwardToViewer`] ranges refer to them.
    CameraBytes(&'a [u8]),
    /// The camera connection reached its end (or failed).
    CameraClosed(UpstreamErrorKind),
    /// Bytes now queued towards the viewer.
    ViewerBacklog(usize),
    /// Bytes now queued towards the camera.
    CameraBacklog(usize),
    /// The relay stops: the tunnel ends at `deadline` unless it ends first.
    Drain {
        deadline: Instant,
    },
    /// The configuration was reloaded: a tunnel whose route is gone or changed ends (a shared
    /// route's camera may change under its viewers: [`super::route::Route::keeps_sessions_under`]).
    Reload {
        routes: &'a RouteTable,
        policy: Policy,
    },
    /// The external authorizer answered the tunnel's [`Output::Authorize`].
    AuthVerdict {
        id: u64,
        verdict: super::external_auth::Verdict,
        routes: &'a RouteTable,
    },
    /// [`Tunnel::poll_timeout`] has passed: the same as [`Tunnel::handle_timeout`].
    Timer,
}

/// A tunnel's deadlines, by what each one guards ([`Tunnel::timers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A tunnel GET waits for its first POST (`pairing_timeout_ms`).
    Pairing,
    /// No camera bytes and no whole viewer message or frame (`idle_timeout_secs`); not running
    /// on a shared route that admitted a request (the route judges the viewer's liveness).
    Idle,
    /// The viewer has stayed over `max_viewer_backlog_bytes` (closed after `idle_timeout_secs`).
    Backlog,
    /// The dialogue's: an unfinished request, a camera's answer, an external verdict.
    Dialogue,
    /// The relay stops (drain).
    Drain,
}

/// What the shell counts or logs: nothing it must do ([`Tunnel::poll_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One observation of a histogram (pairing, connect, setup, request latency).
    Observe(Hist, Duration),
    /// Something was refused or cut, counted with this reason.
    Rejected(Rejection),
    /// A viewer failed to authenticate (the session recorded it with its `AuthGate`).
    AuthFailed(super::viewer_auth::AuthFailure),
    UpstreamError(UpstreamErrorKind),
    /// Interleaved frames the viewer sent that went to the camera.
    FramesToCamera(u32),
    /// A viewer request was answered (by the camera or the relay): one debug log line.
    Exchange(session::Exchange),
}

/// What the shell must do, in order: actions only (what it counts and logs is an [`Event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue these bytes to the viewer.
    ToViewer(Vec<u8>),
    /// Queue `range` of the camera chunk just fed (`Input::CameraBytes`) to the viewer,
    /// verbatim; `frames`: the `$` frames it completes.
    ForwardToViewer { range: core::ops::Range<usize>, frames: u32 },
    /// Queue these bytes to the camera, then report its queue (`Input::CameraBacklog`).
    ToCamera(Vec<u8>),
    /// Open the camera connection; report `Input::CameraConnected` or `CameraConnectFailed`.
    ConnectCamera(SocketAddr),
    /// Ask the external authorizer; its answer comes back as `Input::AuthVerdict`.
    Authorize(super::external_auth::AuthQuery),
    /// The POST just reported carries the commands from now on; a POST bound before is closed.
    BindPost,
    /// The POST just reported is turned away (its reason came as [`Event::Rejected`]); the
    /// tunnel goes on.
    RefusePost,
    /// Stop reading the camera: the viewer is behind.
    PauseCamera,
    /// Read the camera again.
    ResumeCamera,
    /// Stop reading the viewer's connections: it does not take what the relay queues for it,
    /// and whatever it sends (requests, pings) would only add to that.
    PauseViewer,
    /// Read the viewer's connections again.
    ResumeViewer,
    /// The tunnel is over: flush what was queued to the viewer, close the rest, and close the
    /// camera connection as [`Tunnel::camera_close`] says. Nothing follows.
    End(SessionOutcome),
    /// A shared route: an admitted request, for the route to answer
    /// ([`super::shared_route::SharedRoute::handle_request`]); the viewer's liveness is the
    /// route's to judge from now on. Its RTCP reports come as [`Output::SharedViewerFrame`].
    SharedRequest(Box<Message>),
    /// A shared route: the viewer sent a whole interleaved frame (its RTCP report); tell the
    /// route, which keeps the viewer alive by it.
    SharedViewerFrame,
}

/// How to close the camera connection of an ended tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraClose {
    /// At once: it failed, or it is still connecting.
    Now,
    /// Send what is queued plus `teardown` (the relay's own TEARDOWN when the viewer left a
    /// camera session behind), half-close, and read to the camera's end within `grace`.
    Linger { teardown: Option<Vec<u8>>, grace: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Camera {
    None,
    Connecting { since: Instant },
    Up,
}

pub struct Tunnel {
    session: Session,
    kind: Kind,
    policy: Policy,
    started_at: Instant,
    /// Last bytes from the camera (the viewer's side: `Session::last_viewer_progress`).
    last_camera_bytes: Instant,
    /// A POST has bound at least once.
    paired: bool,
    camera: Camera,
    camera_paused: bool,
    /// The viewer's connections are not read (its backlog is over the limit)...
    viewer_paused: bool,
    /// ...and since when it has been over the limit without falling back under it.
    backlog_over_since: Option<Instant>,
    drain_deadline: Option<Instant>,
    /// The time of the input being handled.
    now: Instant,
    ended: bool,
    out: VecDeque<Output>,
    events: VecDeque<Event>,
    /// Scratch for the session's outputs, kept for its capacity.
    core: Vec<session::Output>,
    /// A shared route that admitted a request: the route answers the viewer, and judges its
    /// liveness (its requests and RTCP), not the idle rule here.
    relay_answers: bool,
}

impl Tunnel {
    pub fn new(session: Session, kind: Kind, policy: Policy, started_at: Instant) -> Tunnel {
        Tunnel {
            session,
            kind,
            policy,
            started_at,
            last_camera_bytes: started_at,
            paired: false,
            camera: Camera::None,
            camera_paused: false,
            viewer_paused: false,
            backlog_over_since: None,
            drain_deadline: None,
            now: started_at,
            ended: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
            core: Vec::new(),
            relay_answers: false,
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether the camera is not to be read (the viewer is behind).
    pub fn camera_paused(&self) -> bool {
        self.camera_paused
    }

    /// Whether the viewer's connections are not to be read (it is behind).
    pub fn viewer_paused(&self) -> bool {
        self.viewer_paused
    }

    pub fn handle(&mut self, input: Input<'_>, now: Instant) {
        if self.ended {
            return;
        }
        self.now = now;
        let mut core = std::mem::take(&mut self.core);
        match input {
            Input::ViewerBytes { stream, bytes, routes } => {
                self.session.on_viewer_bytes(stream, bytes, now, routes, &mut core)
            }
            Input::ViewerClosed(stream) => self.session.on_viewer_closed(stream, &mut core),
            Input::PostArrived { ip, tls } => match self.session.on_commands_bound(ip, tls) {
                Err(reason) => {
                    self.events.push_back(Event::Rejected(reason));
                    self.out.push_back(Output::RefusePost);
                }
                Ok(()) => {
                    if !self.paired {
                        self.paired = true;
                        let waited = now.saturating_duration_since(self.started_at);
                        self.events.push_back(Event::Observe(Hist::Pairing, waited));
                    }
                    self.out.push_back(Output::BindPost);
                }
            },
            Input::CameraConnected => {
                if let Camera::Connecting { since } = self.camera {
                    let took = now.saturating_duration_since(since);
                    self.events.push_back(Event::Observe(Hist::UpstreamConnect, took));
                }
                self.camera = Camera::Up;
                self.session.on_upstream_connected(now, &mut core);
            }
            Input::CameraConnectFailed(kind) => {
                self.camera = Camera::None;
                self.session.on_upstream_connect_failed(kind, &mut core);
            }
            Input::CameraHostFull => {
                self.camera = Camera::None;
                self.session.on_camera_host_full(&mut core);
            }
            Input::CameraBytes(bytes) => {
                self.last_camera_bytes = now;
                self.session.on_upstream_bytes(bytes, now, &mut core);
            }
            Input::CameraClosed(kind) => {
                self.camera = Camera::None;
                self.session.on_upstream_closed(kind, &mut core);
            }
            Input::ViewerBacklog(queued) => self.viewer_backlog(queued),
            Input::CameraBacklog(queued) => {
                if queued > self.policy.max_camera_backlog {
                    // Nothing paces the viewer's bytes but the camera's reading: bound them. The
                    // end comes before anything still queued, which would only add to it.
                    self.out.push_front(Output::End(SessionOutcome::UpstreamError));
                    self.events.push_back(Event::Rejected(Rejection::CameraBacklog));
                    self.ended = true;
                }
            }
            Input::Drain { deadline } => {
                self.drain_deadline = Some(self.drain_deadline.map_or(deadline, |d| d.min(deadline)));
            }
            Input::Reload { routes, policy } => {
                self.policy = policy;
                if let Some(current) = self.session.route().cloned() {
                    match routes.routes().iter().find(|r| current.keeps_sessions_under(r)) {
                        None => self.end(SessionOutcome::RouteRemoved),
                        // A shared route's camera changed: its camera session reopens it and
                        // carries this viewer over (or ends it as `camera_changed`); the
                        // viewer's URLs now map to the new camera.
                        Some(next) if self.session.is_shared() && next.camera_differs_from(&current) => {
                            // The shell hands the new map to the route's viewer.
                            self.session.follow_route(next.clone());
                        }
                        Some(_) => {}
                    }
                }
            }
            Input::AuthVerdict { id, verdict, routes } => self.session.on_verdict(id, verdict, now, routes, &mut core),
            Input::Timer => self.on_timer(now, &mut core),
        }
        for o in core.drain(..) {
            self.push_core(o);
        }
        self.core = core;
        if self.relay_answers {
            // A shared viewer's media never passes here (its route queues it): this scratch
            // serves its few requests, and would otherwise stay with each of thousands of viewers.
            super::room::release_if_empty_vec(&mut self.core);
        }
    }

    /// A deadline of [`Tunnel::poll_timeout`] has passed (a shared viewer's dialogue keeps its
    /// own timers: they are its route's).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle(Input::Timer, now);
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        let next = self.out.pop_front();
        if next.is_none() && self.relay_answers {
            // As `core` in `handle`: no media passes through a shared viewer's tunnel.
            super::room::release_if_empty(&mut self.out);
        }
        next
    }

    /// The next thing for the shell to count or log.
    pub fn poll_event(&mut self) -> Option<Event> {
        let next = self.events.pop_front();
        if next.is_none() && self.relay_answers {
            super::room::release_if_empty(&mut self.events);
        }
        next
    }

    /// When [`Tunnel::handle_timeout`] next has something to do: the earliest of
    /// [`Tunnel::timers`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers().map(|(_, at)| at).min()
    }

    /// Every deadline running now, by name (none once the tunnel ended).
    pub fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + use<> {
        let running = !self.ended;
        let idle = (running && !self.relay_answers)
            .then(|| self.last_camera_bytes.max(self.session.last_viewer_progress()) + self.policy.idle_timeout);
        let pairing =
            (running && self.kind == Kind::Http && !self.paired).then(|| self.started_at + self.policy.pairing_timeout);
        let backlog = self.backlog_over_since.filter(|_| running).map(|t| t + self.policy.idle_timeout);
        let dialogue = self.session.next_deadline().filter(|_| running);
        let drain = self.drain_deadline.filter(|_| running);
        [
            (Timer::Idle, idle),
            (Timer::Pairing, pairing),
            (Timer::Backlog, backlog),
            (Timer::Dialogue, dialogue),
            (Timer::Drain, drain),
        ]
        .into_iter()
        .filter_map(|(name, at)| Some((name, at?)))
    }

    /// How to close the camera connection once the tunnel ended with `outcome`.
    pub fn camera_close(&mut self, outcome: SessionOutcome) -> CameraClose {
        let failed = matches!(outcome, SessionOutcome::UpstreamClosed | SessionOutcome::UpstreamError);
        if failed || matches!(self.camera, Camera::Connecting { .. }) {
            return CameraClose::Now;
        }
        CameraClose::Linger { teardown: self.session.teardown_for_camera(), grace: self.policy.camera_close_grace }
    }

    fn on_timer(&mut self, now: Instant, core: &mut Vec<session::Output>) {
        if self.kind == Kind::Http
            && !self.paired
            && now.saturating_duration_since(self.started_at) > self.policy.pairing_timeout
        {
            self.reject_and_end(Rejection::GetWithoutPost, SessionOutcome::Timeout);
            return;
        }
        // A viewer that takes nothing of what is queued for it holds memory however active it
        // looks (pings answered, requests pipelined): it is closed, shared route or not.
        if self.backlog_over_since.is_some_and(|t| now.saturating_duration_since(t) >= self.policy.idle_timeout) {
            self.reject_and_end(Rejection::ViewerBacklog, SessionOutcome::Timeout);
            return;
        }
        // A viewer's bytes count once they complete a message or frame: a trickle that never
        // does is not activity (nor are WebSocket pings: they never reach the dialogue).
        let active = self.last_camera_bytes.max(self.session.last_viewer_progress());
        if !self.relay_answers && now.saturating_duration_since(active) > self.policy.idle_timeout {
            self.reject_and_end(Rejection::IdleTimeout, SessionOutcome::Timeout);
            return;
        }
        self.session.on_tick(now, core);
        if self.session.is_closed() {
            return;
        }
        if self.drain_deadline.is_some_and(|d| now >= d) {
            self.end(SessionOutcome::Shutdown);
        }
    }

    /// Backpressure: while the viewer is behind, stop reading it (everything it sends is
    /// answered into the same queue) and its camera (passthrough); resume at half.
    fn viewer_backlog(&mut self, queued: usize) {
        let limit = self.policy.max_viewer_backlog;
        if queued > limit {
            self.backlog_over_since.get_or_insert(self.now);
            if !self.viewer_paused {
                self.viewer_paused = true;
                self.out.push_back(Output::PauseViewer);
            }
        } else {
            self.backlog_over_since = None;
            if queued <= limit / 2 && self.viewer_paused {
                self.viewer_paused = false;
                self.out.push_back(Output::ResumeViewer);
            }
        }
        if self.camera != Camera::Up {
            return;
        }
        if queued > limit && !self.camera_paused {
            self.camera_paused = true;
            self.out.push_back(Output::PauseCamera);
        } else if queued <= limit / 2 && self.camera_paused {
            self.camera_paused = false;
            self.out.push_back(Output::ResumeCamera);
        }
    }

    /// The dialogue's outputs: actions to `out`, what is counted or logged to `events`.
    fn push_core(&mut self, o: session::Output) {
        use session::Output as Core;
        match o {
            Core::Close(outcome) => self.end(outcome),
            Core::ConnectUpstream(addr) => self.connect(addr),
            Core::SharedRequest(msg) => {
                self.relay_answers = true;
                self.out.push_back(Output::SharedRequest(msg))
            }
            Core::SharedViewerFrame => self.out.push_back(Output::SharedViewerFrame),
            Core::ToViewer(bytes) => self.out.push_back(Output::ToViewer(bytes)),
            Core::ForwardToViewer { range, frames } => self.out.push_back(Output::ForwardToViewer { range, frames }),
            Core::ToUpstream(bytes) => self.out.push_back(Output::ToCamera(bytes)),
            Core::Authorize(query) => self.out.push_back(Output::Authorize(query)),
            Core::FramesToCamera(n) => self.events.push_back(Event::FramesToCamera(n)),
            Core::Observe(h, d) => self.events.push_back(Event::Observe(h, d)),
            Core::Rejected(r) => self.events.push_back(Event::Rejected(r)),
            Core::AuthFailed(f) => self.events.push_back(Event::AuthFailed(f)),
            Core::UpstreamError(k) => self.events.push_back(Event::UpstreamError(k)),
            Core::Exchange(e) => self.events.push_back(Event::Exchange(e)),
        }
    }

    fn connect(&mut self, addr: SocketAddr) {
        self.camera = Camera::Connecting { since: self.now };
        self.out.push_back(Output::ConnectCamera(addr));
    }

    fn reject_and_end(&mut self, reason: Rejection, outcome: SessionOutcome) {
        self.events.push_back(Event::Rejected(reason));
        self.end(outcome);
    }

    fn end(&mut self, outcome: SessionOutcome) {
        if !self.ended {
            self.ended = true;
            self.out.push_back(Output::End(outcome));
        }
    }
}

#[cfg(test)]
mod tests;

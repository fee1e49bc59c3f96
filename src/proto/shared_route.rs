//! One shared route, as one value: the relay's camera session for the route, every viewer
//! attached to it (its RTSP dialogue, the channels it set up, whether it plays, whether it
//! waits for a keyframe, its slow-viewer judgement), the camera's timers, reconnect backoff and
//! retire rule, and the route's camera health as operators see it.
//!
//! # The shell's part
//! The shell owns sockets, receive buffers and clocks. It names each viewer with an id of its
//! own (`V`), feeds what it observed, and carries out what comes back; it decides nothing. In
//! the style of quinn-proto's `Connection`, the call order is:
//!
//! 1. [`SharedRoute::new`] when the route's first viewer comes (or at once for an always-on
//!    route, whose camera then connects without any viewer).
//! 2. Inputs, each with the time:
//!    - viewers: [`attach`](SharedRoute::attach) at a viewer's first admitted request (its
//!      demand starts an on-demand camera), then every admitted request with
//!      [`handle_request`](SharedRoute::handle_request), its RTCP reports with
//!      [`handle_viewer_frame`](SharedRoute::handle_viewer_frame), and
//!      [`detach`](SharedRoute::detach) when its session ends;
//!    - the camera connection: [`handle_connected`](SharedRoute::handle_connected),
//!      [`handle_connect_failed`](SharedRoute::handle_connect_failed),
//!      [`handle_link_failed`](SharedRoute::handle_link_failed),
//!      [`handle_camera_closed`](SharedRoute::handle_camera_closed);
//!    - a receive from the camera: [`handle_camera_bytes`](SharedRoute::handle_camera_bytes)
//!      (or [`handle_camera_plaintext`](SharedRoute::handle_camera_plaintext) for bytes not in
//!      the buffer viewers are sent from), then [`plan_next`](SharedRoute::plan_next) until it
//!      returns `None`, carrying out each plan before asking for the next: one plan per frame,
//!      each viewer judged on its send queue as it really is then (the viewers' send progress);
//!    - the probe of the primary while the route's fallback is live (`probe.rs`): the same
//!      inputs for its connection, `handle_probe_*`;
//!    - a reload: [`reconfigure`](SharedRoute::reconfigure), and
//!      [`set_url_map`](SharedRoute::set_url_map) for each viewer whose URLs changed;
//!      [`close`](SharedRoute::close) when the route goes or the relay stops.
//! 3. After every input, [`poll_action`](SharedRoute::poll_action) until `None` (the camera's
//!    I/O, answers and join plans for viewers, viewers to end, in order), and
//!    [`poll_event`](SharedRoute::poll_event) until `None` (metrics, logs, health).
//! 4. [`poll_timeout`](SharedRoute::poll_timeout) for the next deadline; once it has passed,
//!    [`handle_timeout`](SharedRoute::handle_timeout), then step 3.
//! 5. Once [`is_done`](SharedRoute::is_done) (closed, no viewer, no camera connection), drop it.
//!
//! A viewer the route ends ([`Action::EndViewer`], or a [`Delivery::Disconnect`] in a plan)
//! gets nothing more; it stays counted towards the camera's demand until the shell detaches it.
//!
//! # Ordering
//! A receive's frames are planned before anything they changed is told to viewers: the camera's
//! outputs of a receive (its answers, `Up`) are handled once the last frame is planned, so a
//! PLAY answered then finds the GOP cache and the next RTP positions exactly as its first live
//! frame will follow them (no frame twice, none missed). Answers to a viewer come before the
//! frames its PLAY joins it to.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::camera_demand::Mode;
use super::camera_health::{CameraState, HealthReport, RouteHealth};
use super::camera_session::{
    CameraExchange, CameraOutcome, CameraOutput, CameraParams, CameraPhase, CameraSession, CameraView, MediaFrame,
    Reconfigured,
};
use super::camera_source::Source;
use super::fanout_policy::{FanoutLimits, QueueState};
use super::frame_split::FramePayload;
use super::gop_cache::GopBound;
use super::outcome::Rejection;
use super::rewrite::UrlMap;
use super::rng::SplitMix64;
use super::rtsp::Message;
use super::shared_fanout::{Delivery, JoinParams, PlanStats, SharedFanout};
use super::shared_viewer::{SharedViewer, ViewerExchange, ViewerOutcome, ViewerOutput, ViewerParams};

mod probe;
mod viewers;

#[cfg(any(test, fuzzing))]
pub mod harness;
#[cfg(test)]
mod tests;

use probe::Probe;
use viewers::Attached;

/// Announced to viewers as their session timeout (`Session: id;timeout=60`); a viewer silent for
/// 1.25 × this is closed.
pub const VIEWER_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// The first reconnect waits this long (doubling, with jitter, up to the route's maximum).
pub const RECONNECT_FIRST: Duration = Duration::from_secs(1);

/// What a shared route is made of; a reload replaces it ([`SharedRoute::reconfigure`]).
#[derive(Debug, Clone)]
pub struct RouteParams {
    /// The camera session's (its `seed` varies per camera session the route opens).
    pub camera: CameraParams,
    /// How viewers are answered (`session_seed` is the base each viewer's seed is drawn from).
    pub viewer: ViewerParams,
    /// The slow-viewer bounds a viewer joins with.
    pub fanout: FanoutLimits,
    /// The camera's name did not resolve when the configuration was loaded: each connect fails
    /// with these words, and is retried as a refused connect would be (a reload resolves again).
    pub unresolved: Option<String>,
    /// The same for the route's fallback camera (`camera.fallback`).
    pub fallback_unresolved: Option<String>,
}

/// Why the route ends a viewer's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerEnd {
    /// Silent past 1.25 × its session timeout (`relay_rejections_total{reason="idle_timeout"}`).
    Timeout,
    /// A request without `CSeq`.
    ProtocolError,
    /// The camera came back describing other tracks: viewers set up on the old ones reconnect.
    CameraChanged,
    /// The route was closed ([`SharedRoute::close`]).
    RouteRemoved,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<V> {
    /// Open the camera connection to `source` (with that camera's TLS and HTTP tunnel); report
    /// with `handle_connected`, `handle_connect_failed` or `handle_link_failed`.
    Connect { addr: SocketAddr, source: Source },
    /// Queue these bytes to the camera.
    SendToCamera(Vec<u8>),
    /// Let the camera connection go: what is queued to it (a TEARDOWN) goes out, then it closes.
    CloseCamera,
    /// Queue this RTSP answer to the viewer.
    ToViewer { viewer: V, bytes: Vec<u8> },
    /// One step of a joining viewer's plan (the GOP cache replayed, its first picture), as a
    /// receive's plan ([`SharedRoute::plan_next`]) but with shared bytes only.
    Deliver(Delivery<V>),
    /// End the viewer's session: it gets nothing more. It stays attached until `detach`.
    EndViewer { viewer: V, reason: ViewerEnd },
    /// Open the connection of the probe of the primary camera (the route's own TLS and HTTP
    /// tunnel); report with the `handle_probe_*` inputs.
    ConnectProbe(SocketAddr),
    /// Queue these bytes to the probe's connection.
    SendToProbe(Vec<u8>),
    /// Let the probe's connection go, as [`Action::CloseCamera`].
    CloseProbe,
    /// The probe's connection is the camera connection from now on (the route is back on its
    /// primary; the fallback's was let go just before): its bytes are the camera's.
    ProbeIsCamera,
}

/// What happened, for metrics and logs ([`SharedRoute::poll_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent<V> {
    /// A camera session was opened for the route (its first viewer, or always on).
    CameraOpened,
    /// The camera session was closed and forgotten (nobody wants it, or the route closed).
    CameraRetired,
    /// The camera plays (`relay_cameras_active` +1).
    CameraUp,
    /// It stopped playing (`relay_cameras_active` -1).
    CameraDown,
    /// One camera connection ended (`relay_camera_sessions_total{outcome}`).
    CameraEnded(CameraOutcome),
    /// A reconnect starts (`relay_camera_reconnects_total`), of the camera or of its probe.
    Reconnecting,
    /// Another of the route's cameras is live from now on (an info line,
    /// `relay_route_camera_source`).
    SourceChanged(Source),
    /// One connection of the probe of the primary ended (`relay_camera_sessions_total{outcome}`,
    /// a debug line; not the route's health).
    ProbeEnded(CameraOutcome),
    GopCacheOverflow(GopBound),
    /// One request to the camera and its answer (debug log).
    CameraExchange(CameraExchange),
    /// The route's camera state or viewer count changed (`relay_route_camera_state`,
    /// `relay_route_viewers`), or its health has a line worth logging (a failure once per
    /// state change or reason, a recovery).
    Health(HealthReport),
    /// A viewer's request and its answer (`relay_rtsp_request_seconds`, debug log).
    ViewerExchange {
        viewer: V,
        exchange: ViewerExchange,
    },
    /// A viewer's request refused for this reason (counted); its session goes on.
    ViewerRefused {
        viewer: V,
        reason: Rejection,
    },
    /// A viewer's PLAY was answered, `setup` after its session started.
    ViewerPlaying {
        viewer: V,
        setup: Duration,
    },
}

/// The camera as viewers see it while the route has no camera session.
const NO_CAMERA: CameraView<'static> =
    CameraView { phase: CameraPhase::Idle, presentation: None, gop: None, next_rtp: &[] };

/// See the module documentation. `V` is the shell's name for a viewer.
#[derive(Debug)]
pub struct SharedRoute<V> {
    params: RouteParams,
    /// While the camera is wanted or being let go; `None` once retired (nobody wants it).
    camera: Option<CameraSession>,
    /// Camera sessions opened so far (each one's randomness is drawn from the route's).
    cameras_made: u64,
    viewers: Vec<Attached<V>>,
    viewers_made: u64,
    fanout: SharedFanout<V>,
    /// The frames of the receive being planned, and the next one to plan.
    media: Vec<MediaFrame>,
    next_frame: usize,
    /// A receive whose camera outputs are still to be handled (after its last plan).
    receiving: bool,
    /// The shell holds a camera connection (asked for, not yet let go or lost).
    camera_open: bool,
    /// Counted in `relay_cameras_active`.
    up: bool,
    closed: bool,
    health: RouteHealth,
    /// Words for the next failure (a connect error, a certificate that did not verify).
    detail: Option<String>,
    now: Instant,
    actions: VecDeque<Action<V>>,
    events: VecDeque<RouteEvent<V>>,
    /// Scratch for a join's plan.
    join_plan: Vec<Delivery<V>>,
    /// The probe of the primary while the fallback is live (`probe.rs`).
    probe: Option<Probe>,
    probes_made: u64,
    /// A receive of the probe handed its connection to the camera session: carried out once
    /// the receive is planned.
    probe_taken: bool,
}

impl<V: Copy + Eq + std::fmt::Debug> SharedRoute<V> {
    /// An always-on route's camera connects at once; an on-demand one waits for a viewer.
    pub fn new(params: RouteParams, now: Instant) -> Self {
        let mut r = SharedRoute {
            params,
            camera: None,
            cameras_made: 0,
            viewers: Vec::new(),
            viewers_made: 0,
            fanout: SharedFanout::new(),
            media: Vec::new(),
            next_frame: 0,
            receiving: false,
            camera_open: false,
            up: false,
            closed: false,
            health: RouteHealth::new(now),
            detail: None,
            now,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            join_plan: Vec::new(),
            probe: None,
            probes_made: 0,
            probe_taken: false,
        };
        if r.always_on() {
            r.open_camera(now);
        }
        r.settle();
        r
    }

    fn always_on(&self) -> bool {
        self.params.camera.mode == Mode::AlwaysOn
    }

    /// The next thing the shell must do.
    /// Between two plans of a receive, only what was asked before it (a viewer cut by a plan
    /// may be ended, and what its detaching asks carried out, while the receive goes on).
    pub fn poll_action(&mut self) -> Option<Action<V>> {
        let a = self.actions.pop_front();
        if a.is_none() && self.actions.capacity() > 1024 {
            // A large GOP replay pins no room after it was carried out.
            self.actions.shrink_to(64);
        }
        a
    }

    /// The next thing to count or log.
    pub fn poll_event(&mut self) -> Option<RouteEvent<V>> {
        self.events.pop_front()
    }

    /// When [`SharedRoute::handle_timeout`] next has work: the camera's deadline (connect,
    /// answer, keepalive, media, linger, reconnect) or a viewer's (its requests' wait for the
    /// camera, its silence).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let camera = self.camera.as_ref().and_then(CameraSession::poll_timeout);
        let probe = self.probe.as_ref().and_then(|p| p.camera.poll_timeout());
        let viewers = self.viewers.iter().filter(|v| !v.ending).filter_map(|v| v.dialogue.as_ref()?.poll_timeout());
        camera.into_iter().chain(probe).chain(viewers).min()
    }

    /// Time passes.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.begin(now);
        for i in 0..self.viewers.len() {
            let view = self.camera.as_ref().map_or(NO_CAMERA, CameraSession::view);
            let Some(v) = self.viewers.get_mut(i).filter(|v| !v.ending) else { continue };
            let Some(d) = v.dialogue.as_mut().filter(|d| d.poll_timeout().is_some_and(|t| t <= now)) else {
                continue;
            };
            d.handle_timeout(&view, now);
            let id = v.id;
            self.drain_viewer(id);
        }
        if let Some(c) = self.camera.as_mut().filter(|c| c.poll_timeout().is_some_and(|t| t <= now)) {
            c.handle_timeout(now);
        }
        if let Some(p) = self.probe.as_mut().filter(|p| p.camera.poll_timeout().is_some_and(|t| t <= now)) {
            p.camera.handle_timeout(now);
        }
        self.settle();
    }

    // ---- viewers ----

    /// A viewer's first admitted request is coming: it counts towards the camera's demand from
    /// now (an on-demand camera starts connecting while the request waits). `map`: the route
    /// as the viewer addresses it and the camera URL (no dialogue without one). `started_at`:
    /// when its session started (for the setup time). Returns whether it was not attached yet.
    pub fn attach(&mut self, viewer: V, map: Option<UrlMap>, started_at: Instant, now: Instant) -> bool {
        self.begin(now);
        if self.viewers.iter().any(|v| v.id == viewer) {
            return false;
        }
        self.viewers_made += 1;
        let mut params = self.params.viewer.clone();
        params.session_seed = SplitMix64::nth(self.params.viewer.session_seed, self.viewers_made);
        let dialogue = map.map(|m| SharedViewer::new(params, m, now));
        self.viewers.push(Attached { id: viewer, dialogue, started_at, ending: false });
        if self.camera.is_none() && !self.closed {
            self.open_camera(now);
        }
        let n = self.viewers.len();
        if let Some(c) = self.camera.as_mut() {
            c.set_viewers(n, now);
        }
        self.settle();
        true
    }

    /// A viewer's session ended. Returns whether it was attached.
    /// May be called between two plans of a receive (a viewer the plan cut): the receive
    /// goes on without it.
    pub fn detach(&mut self, viewer: V, now: Instant) -> bool {
        if !self.receiving {
            self.now = now;
        }
        let before = self.viewers.len();
        self.viewers.retain(|v| v.id != viewer);
        if self.viewers.len() == before {
            return false;
        }
        self.fanout.retain(|v| *v != viewer);
        let n = self.viewers.len();
        if let Some(c) = self.camera.as_mut() {
            c.set_viewers(n, now);
        }
        if !self.receiving {
            self.settle();
        }
        true
    }

    /// An admitted request from an attached viewer (its route's address lists and users
    /// passed): answered from what the camera session knows, or kept waiting while it starts.
    pub fn handle_request(&mut self, viewer: V, msg: Message, now: Instant) {
        self.begin(now);
        let view = self.camera.as_ref().map_or(NO_CAMERA, CameraSession::view);
        let v = self.viewers.iter_mut().find(|v| v.id == viewer && !v.ending);
        if let Some(d) = v.and_then(|v| v.dialogue.as_mut()) {
            d.handle_request(msg, &view, now);
            self.drain_viewer(viewer);
        }
        self.settle();
    }

    /// The viewer sent an interleaved frame (an RTCP report): it is alive.
    pub fn handle_viewer_frame(&mut self, viewer: V, now: Instant) {
        if let Some(d) = self.viewers.iter_mut().find(|v| v.id == viewer).and_then(|v| v.dialogue.as_mut()) {
            d.handle_viewer_frame(now);
        }
    }

    /// A reload mapped the viewer's URLs to another camera URL.
    pub fn set_url_map(&mut self, viewer: V, map: UrlMap) {
        if let Some(d) = self.viewers.iter_mut().find(|v| v.id == viewer).and_then(|v| v.dialogue.as_mut()) {
            d.set_url_map(map);
        }
    }

    // ---- the camera connection ----

    /// The camera connection asked for by [`Action::Connect`] is open (and, through TLS or an
    /// HTTP tunnel, ready for RTSP).
    pub fn handle_connected(&mut self, now: Instant) {
        self.begin(now);
        if let Some(c) = self.camera.as_mut() {
            c.handle_connected(now);
        }
        self.settle();
    }

    /// The camera connection could not be opened; `detail`: why, in words (for the logs and
    /// the route's health).
    pub fn handle_connect_failed(&mut self, detail: Option<String>, now: Instant) {
        self.begin(now);
        if self.camera_open {
            self.camera_open = false;
            self.detail = detail;
            if let Some(c) = self.camera.as_mut() {
                c.handle_connect_failed(now);
            }
        }
        self.settle();
    }

    /// What lies under RTSP failed (TLS, the HTTP tunnel's answer), the connection with it.
    pub fn handle_link_failed(&mut self, outcome: CameraOutcome, detail: String, now: Instant) {
        self.begin(now);
        if self.camera_open {
            self.camera_open = false;
            self.detail = Some(detail);
            if let Some(c) = self.camera.as_mut() {
                c.handle_link_failed(outcome, now);
            }
        }
        self.settle();
    }

    /// The camera closed its connection, or it failed.
    pub fn handle_camera_closed(&mut self, now: Instant) {
        self.begin(now);
        if self.camera_open {
            self.camera_open = false;
            if let Some(c) = self.camera.as_mut() {
                c.handle_camera_closed(now);
            }
        }
        self.settle();
    }

    /// One receive from the camera, in the buffer viewers will be sent from: read in place
    /// (RTP headers may be rewritten for continuity after a reconnect, before any viewer's
    /// send names the buffer). Plan its frames with [`SharedRoute::plan_next`] (their
    /// [`Body::Chunk`](super::shared_fanout::Body::Chunk) ranges index `chunk`).
    pub fn handle_camera_bytes(&mut self, now: Instant, chunk: &mut [u8]) {
        self.begin(now);
        self.receiving = true;
        if let Some(c) = self.camera.as_mut() {
            c.handle_camera_bytes(now, chunk, &mut self.media);
        }
    }

    /// One receive whose RTSP bytes are not in the buffer viewers are sent from (decrypted,
    /// or past an HTTP tunnel's answer): as [`SharedRoute::handle_camera_bytes`], every frame
    /// copied out of `plain` (plans then hold shared bytes only).
    pub fn handle_camera_plaintext(&mut self, now: Instant, plain: &mut [u8]) {
        self.handle_camera_bytes(now, plain);
        for f in self.media.iter_mut() {
            if let FramePayload::InChunk(r) = &f.payload {
                let copy = plain.get(r.clone()).map(bytes::Bytes::copy_from_slice).unwrap_or_default();
                f.payload = FramePayload::Assembled(copy);
            }
        }
    }

    /// The plan of the receive's next frame: what each playing viewer gets (one whole `$`
    /// frame on its own channels, or nothing: it is skipping to a keyframe), who is cut.
    /// `queue`: what is queued to a viewer now, `None` when it takes nothing (its connection
    /// is closing). `None` once every frame was planned (the camera's other outputs are then
    /// handled: poll them).
    pub fn plan_next(
        &mut self,
        chunk: &[u8],
        queue: impl FnMut(&V) -> Option<QueueState>,
        out: &mut Vec<Delivery<V>>,
    ) -> Option<PlanStats> {
        out.clear();
        let Some(f) = self.media.get(self.next_frame) else {
            self.finish_receive();
            return None;
        };
        self.next_frame += 1;
        Some(self.fanout.plan(std::slice::from_ref(f), chunk, self.now, queue, out))
    }

    // ---- the route ----

    /// A reload kept the route, shared the same way: `params` from now on (a changed camera is
    /// reopened and its viewers carried over or ended, see [`CameraSession::reconfigure`]).
    pub fn reconfigure(&mut self, params: RouteParams, now: Instant) -> Reconfigured {
        self.begin(now);
        let seed = self.params.camera.seed;
        self.params = params;
        self.params.camera.seed = seed;
        let mut done = Reconfigured::Kept;
        if let Some(c) = self.camera.as_mut() {
            let mut camera = self.params.camera.clone();
            camera.seed = SplitMix64::nth(seed, self.cameras_made);
            done = c.reconfigure(camera, now);
        }
        self.settle();
        done
    }

    /// Closes the route for good (it was removed or changed, or the relay stops): its viewers
    /// are ended, the camera session says TEARDOWN if it is up. No health is reported after.
    pub fn close(&mut self, now: Instant) {
        self.begin(now);
        if self.closed {
            return;
        }
        self.closed = true;
        self.end_all(ViewerEnd::RouteRemoved);
        if let Some(c) = self.camera.as_mut() {
            c.close(now);
        }
        self.settle();
    }

    /// Closed, no viewer left and no camera connection: the shell may drop it.
    pub fn is_done(&self) -> bool {
        self.closed && self.viewers.is_empty() && !self.camera_open && !self.probe.as_ref().is_some_and(|p| p.open)
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The camera session, while the route has one (its health, description, counters).
    pub fn camera(&self) -> Option<&CameraSession> {
        self.camera.as_ref()
    }

    /// The viewers attached, in the order they came.
    pub fn viewers(&self) -> impl Iterator<Item = V> + '_ {
        self.viewers.iter().map(|v| v.id)
    }

    /// Viewers attached.
    pub fn viewer_count(&self) -> usize {
        self.viewers.len()
    }

    /// Whether the viewer receives the camera's frames.
    pub fn is_playing(&self, viewer: V) -> bool {
        self.fanout.contains(&viewer)
    }

    /// The route's camera health: state, last error, and the series last reported.
    pub fn health(&self) -> &RouteHealth {
        &self.health
    }

    // ---- inside ----

    fn begin(&mut self, now: Instant) {
        self.finish_receive();
        self.now = now;
    }

    /// A receive's frames are all planned (or abandoned): its camera outputs are handled now.
    fn finish_receive(&mut self) {
        if self.receiving {
            self.receiving = false;
            self.media.clear();
            self.next_frame = 0;
            self.settle();
        }
    }

    fn open_camera(&mut self, now: Instant) {
        let mut params = self.params.camera.clone();
        params.seed = SplitMix64::nth(self.params.camera.seed, self.cameras_made);
        self.cameras_made += 1;
        self.camera = Some(CameraSession::new(params, now));
        self.events.push_back(RouteEvent::CameraOpened);
    }

    /// Carries the camera session's outputs into actions and events, tells viewers waiting on
    /// the camera when it moved on, reports health and retires a camera nobody wants.
    fn settle(&mut self) {
        let now = self.now;
        let mut changed = false;
        let mut failure = None;
        while let Some(o) = self.camera.as_mut().and_then(CameraSession::poll_output) {
            match o {
                CameraOutput::Connect(addr) => match self.unresolved_live() {
                    None => {
                        self.camera_open = true;
                        let source = self.camera.as_ref().map_or(Source::Primary, CameraSession::live_source);
                        self.actions.push_back(Action::Connect { addr, source });
                    }
                    // Fails as a refused connect would, and is retried.
                    Some(why) => {
                        self.detail = Some(why);
                        if let Some(c) = self.camera.as_mut() {
                            c.handle_connect_failed(now);
                        }
                    }
                },
                CameraOutput::Send(bytes) => {
                    if self.camera_open {
                        self.actions.push_back(Action::SendToCamera(bytes));
                    }
                }
                CameraOutput::Disconnect => {
                    if std::mem::take(&mut self.camera_open) {
                        self.actions.push_back(Action::CloseCamera);
                    }
                }
                CameraOutput::Up => {
                    if !std::mem::replace(&mut self.up, true) {
                        self.events.push_back(RouteEvent::CameraUp);
                    }
                    changed = true;
                }
                CameraOutput::Down => {
                    if std::mem::take(&mut self.up) {
                        self.events.push_back(RouteEvent::CameraDown);
                    }
                    changed = true;
                }
                // Viewers set up on the old tracks cannot go on: they reconnect.
                CameraOutput::PresentationChanged => self.end_all(ViewerEnd::CameraChanged),
                CameraOutput::Ended(outcome) => {
                    self.events.push_back(RouteEvent::CameraEnded(outcome));
                    if outcome.is_failure() {
                        failure = Some(outcome);
                    }
                    changed = true;
                }
                CameraOutput::Reconnecting => self.events.push_back(RouteEvent::Reconnecting),
                CameraOutput::SourceChanged(source) => self.events.push_back(RouteEvent::SourceChanged(source)),
                CameraOutput::GopCacheOverflow(bound) => self.events.push_back(RouteEvent::GopCacheOverflow(bound)),
                CameraOutput::Exchange(e) => {
                    self.events.push_back(RouteEvent::CameraExchange(e));
                    changed = true;
                }
            }
        }
        self.settle_probe();
        if changed {
            self.notify_viewers();
        }
        self.report_health(failure);
        self.retire_if_unwanted();
    }

    /// Why the live source's name did not resolve, if it did not.
    fn unresolved_live(&self) -> Option<String> {
        match self.camera.as_ref().map(CameraSession::live_source) {
            Some(Source::Fallback) => self.params.fallback_unresolved.clone(),
            _ => self.params.unresolved.clone(),
        }
    }

    /// The camera moved on: requests waiting on it are answered if they can be now.
    fn notify_viewers(&mut self) {
        for i in 0..self.viewers.len() {
            let view = self.camera.as_ref().map_or(NO_CAMERA, CameraSession::view);
            let Some(v) = self.viewers.get_mut(i).filter(|v| !v.ending) else { continue };
            let Some(d) = v.dialogue.as_mut() else { continue };
            d.handle_camera_change(&view, self.now);
            let id = v.id;
            self.drain_viewer(id);
        }
    }

    /// Carries a viewer's dialogue outputs into actions and events.
    fn drain_viewer(&mut self, viewer: V) {
        let now = self.now;
        loop {
            let Some(v) = self.viewers.iter_mut().find(|v| v.id == viewer) else { return };
            let started_at = v.started_at;
            let Some(o) = v.dialogue.as_mut().and_then(SharedViewer::poll_output) else { return };
            match o {
                ViewerOutput::Send(bytes) => self.actions.push_back(Action::ToViewer { viewer, bytes }),
                ViewerOutput::Play { replay, asked_at, .. } => {
                    let setup = now.saturating_duration_since(started_at);
                    self.events.push_back(RouteEvent::ViewerPlaying { viewer, setup });
                    self.join(viewer, &replay, asked_at);
                }
                ViewerOutput::Stop => self.fanout.retain(|v| *v != viewer),
                ViewerOutput::Refused(reason) => self.events.push_back(RouteEvent::ViewerRefused { viewer, reason }),
                ViewerOutput::Exchange(exchange) => {
                    self.events.push_back(RouteEvent::ViewerExchange { viewer, exchange })
                }
                ViewerOutput::Close(ViewerOutcome::Timeout) => self.end_viewer(viewer, ViewerEnd::Timeout),
                ViewerOutput::Close(ViewerOutcome::ProtocolError) => self.end_viewer(viewer, ViewerEnd::ProtocolError),
            }
        }
    }

    /// A viewer's PLAY was answered: it joins the fan-out on the channels it set up, the GOP
    /// cache first.
    fn join(&mut self, viewer: V, replay: &[super::gop_cache::CachedFrame], asked_at: Instant) {
        let Some(presentation) = self.camera.as_ref().and_then(CameraSession::presentation) else { return };
        let Some(d) = self.viewers.iter().find(|v| v.id == viewer).and_then(|v| v.dialogue.as_ref()) else { return };
        let channels =
            (0..presentation.tracks.len()).map(|t| Some((d.channel_for(t, false)?, d.channel_for(t, true)?))).collect();
        let key_track = presentation.key_track;
        let params = JoinParams { channels, key_track, limits: self.params.fanout, asked_at };
        let mut plan = std::mem::take(&mut self.join_plan);
        plan.clear();
        self.fanout.join(viewer, params, replay, self.now, &mut plan);
        self.actions.extend(plan.drain(..).map(Action::Deliver));
        if plan.capacity() > 1024 {
            plan.shrink_to(64);
        }
        self.join_plan = plan;
    }

    fn end_viewer(&mut self, viewer: V, reason: ViewerEnd) {
        let Some(v) = self.viewers.iter_mut().find(|v| v.id == viewer && !v.ending) else { return };
        v.ending = true;
        self.fanout.retain(|v| *v != viewer);
        self.actions.push_back(Action::EndViewer { viewer, reason });
    }

    fn end_all(&mut self, reason: ViewerEnd) {
        let ids: Vec<V> = self.viewers.iter().filter(|v| !v.ending).map(|v| v.id).collect();
        for id in ids {
            self.end_viewer(id, reason);
        }
    }

    /// The route's camera state after the camera moved on; `failure`: how its last connection
    /// ended, if that was a failure. A closed route no longer speaks for its path.
    fn report_health(&mut self, failure: Option<CameraOutcome>) {
        // A closed route no longer speaks for its path (another may have taken it), but for
        // its last state once its camera is gone.
        if self.closed && self.camera.is_some() {
            return;
        }
        let phase = self.camera.as_ref().map_or(CameraPhase::Idle, CameraSession::phase);
        // Words are given just before the failure they explain; unused ones are stale.
        let detail = self.detail.take();
        let failed = failure.and_then(|o| self.health.failed(o, detail, self.now));
        let state = CameraState::of_shared(phase, self.health.camera().failing());
        let report = self.health.report(state, self.viewers.len() as u64, failed, self.now);
        if !report.is_quiet() {
            self.events.push_back(RouteEvent::Health(report));
        }
    }

    /// A camera nobody attaches to, not connected and not always on (or closed), is forgotten;
    /// the route keeps its health, and a new viewer opens a new camera session.
    fn retire_if_unwanted(&mut self) {
        let Some(c) = self.camera.as_ref() else { return };
        let idle = matches!(c.phase(), CameraPhase::Idle | CameraPhase::Stopped);
        let kept = self.always_on() && c.phase() != CameraPhase::Stopped;
        if !idle || kept || !self.viewers.is_empty() || self.camera_open || self.probe.is_some() {
            return;
        }
        self.camera = None;
        self.fanout = SharedFanout::new();
        if std::mem::take(&mut self.up) {
            self.events.push_back(RouteEvent::CameraDown);
        }
        self.events.push_back(RouteEvent::CameraRetired);
        self.report_health(None);
    }
}

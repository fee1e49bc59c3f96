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
//!      [`close`](SharedRoute::close) when the route goes or the relay stops;
//!    - the relay-wide GOP cache budget over (`gop_cache_total_bytes`), at any time (also
//!      between a receive and its plans): the shell weighs the route's cache with
//!      [`gop_eviction_candidate`](SharedRoute::gop_eviction_candidate) and drops it with
//!      [`evict_gop_cache`](SharedRoute::evict_gop_cache).
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
use std::time::Instant;

use super::camera_demand::Mode;
use super::camera_health::{CameraState, RouteHealth};
use super::camera_session::{
    CameraOutcome, CameraOutput, CameraPhase, CameraSession, CameraView, MediaFrame, Reconfigured,
};
use super::camera_source::Source;
use super::fanout_policy::QueueState;
use super::frame_split::FramePayload;
use super::gop_budget::EvictionCandidate;
use super::rng::SplitMix64;
use super::shared_fanout::{Delivery, PlanStats, SharedFanout};

mod probe;
mod viewers;
mod vocabulary;

#[cfg(any(test, fuzzing))]
pub mod harness;
#[cfg(test)]
mod tests;

use probe::Probe;
use viewers::Attached;
pub use vocabulary::{Action, RECONNECT_FIRST, RouteEvent, RouteParams, VIEWER_SESSION_TIMEOUT, ViewerEnd};

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

    /// One receive handed over as owned bytes (a replica's, from its home shard): read in place
    /// as [`SharedRoute::handle_camera_bytes`], then every frame becomes a slice of the same
    /// shared buffer (no copy; plans hold shared bytes only).
    pub fn handle_camera_owned(&mut self, now: Instant, mut chunk: bytes::BytesMut) {
        self.handle_camera_bytes(now, &mut chunk);
        let chunk = chunk.freeze();
        for f in self.media.iter_mut() {
            if let FramePayload::InChunk(r) = &f.payload {
                let whole = r.start <= r.end && r.end <= chunk.len();
                f.payload = FramePayload::Assembled(if whole { chunk.slice(r.clone()) } else { bytes::Bytes::new() });
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

    // ---- the relay-wide GOP cache budget ----

    /// The route's GOP cache as the relay-wide budget (`gop_cache_total_bytes`) weighs it for
    /// eviction, named `key`: when a joiner last started from it and what it holds. `None`: the
    /// route has no cache (none configured, or no camera session).
    pub fn gop_eviction_candidate<K>(&self, key: K) -> Option<EvictionCandidate<K>> {
        let gop = self.camera.as_ref()?.gop_cache()?;
        Some(EvictionCandidate { key, used_at: gop.used_at(), held: gop.held() })
    }

    /// The relay-wide budget needs room: the route's GOP cache is dropped, and starts again at
    /// a later keyframe when there is room. Its viewers are served as before; joiners start
    /// with live packets meanwhile.
    pub fn evict_gop_cache(&mut self) {
        if let Some(c) = self.camera.as_mut() {
            c.evict_gop_cache();
        }
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

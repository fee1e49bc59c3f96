//! The viewers of a shared route: attached by the shell's id at their first admitted request,
//! each with the relay's RTSP dialogue with it ([`SharedViewer`]); their requests, liveness and
//! answers, their joining the fan-out when a PLAY is answered, and their end.

use std::time::Instant;

use super::{Action, NO_CAMERA, RouteEvent, SharedRoute, ViewerEnd};
use crate::proto::camera_session::CameraSession;
use crate::proto::gop_cache::CachedFrame;
use crate::proto::rewrite::UrlMap;
use crate::proto::rng::SplitMix64;
use crate::proto::rtsp::Message;
use crate::proto::shared_fanout::JoinParams;
use crate::proto::shared_viewer::{SharedViewer, ViewerOutcome, ViewerOutput};

/// A viewer attached to the route.
#[derive(Debug)]
pub(super) struct Attached<V> {
    /// The shell's name for it.
    pub id: V,
    /// `None` only when its session had no URL map to answer with (it then gets no answer,
    /// but still counts towards the camera's demand).
    pub dialogue: Option<SharedViewer>,
    /// When its session started (its setup time is measured from here).
    pub started_at: Instant,
    /// The route ended it: it gets nothing more, and waits to be detached.
    pub ending: bool,
}

impl<V: Copy + Eq + std::fmt::Debug> SharedRoute<V> {
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

    /// The camera moved on: requests waiting on it are answered if they can be now.
    pub(super) fn notify_viewers(&mut self) {
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
    pub(super) fn drain_viewer(&mut self, viewer: V) {
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
    fn join(&mut self, viewer: V, replay: &[CachedFrame], asked_at: Instant) {
        let Some(presentation) = self.camera.as_ref().and_then(CameraSession::presentation) else { return };
        let Some(d) = self.viewers.iter().find(|v| v.id == viewer).and_then(|v| v.dialogue.as_ref()) else { return };
        let channels =
            (0..presentation.tracks.len()).map(|t| Some((d.channel_for(t, false)?, d.channel_for(t, true)?))).collect();
        let key_track = presentation.key_track;
        let params = JoinParams { channels, key_track, limits: self.params.fanout, asked_at };
        let mut plan = std::mem::take(&mut self.join_plan);
        plan.clear();
        if !replay.is_empty() {
            // In use: the relay-wide GOP cache budget evicts it last.
            if let Some(c) = self.camera.as_mut() {
                c.gop_cache_used(self.now);
            }
        }
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

    pub(super) fn end_all(&mut self, reason: ViewerEnd) {
        let ids: Vec<V> = self.viewers.iter().filter(|v| !v.ending).map(|v| v.id).collect();
        for id in ids {
            self.end_viewer(id, reason);
        }
    }
}

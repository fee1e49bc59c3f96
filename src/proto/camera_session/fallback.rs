//! A shared camera's fallback source, carried out ([`super::super::camera_source`] decides):
//! which camera the next connection goes to, the probe of the primary while the fallback is
//! live, and the probe's connection taken over at its first keyframe.
//!
//! The probe is a `CameraSession` of its own (on the primary, always on, no GOP cache, its own
//! backoff) that the shared route drives beside this one (`shared_route/probe.rs`) while
//! [`CameraSession::wants_probe`] holds; its media feeds nobody. When a receive of the probe holds the primary's first keyframe,
//! [`CameraSession::take_over`] moves the probe's connection (its RTSP session, playing) into
//! this session, leaves the fallback, and hands back that receive's frames from the keyframe on
//! as this session's own: rewritten for continuity, so viewers go from the fallback's pictures
//! straight to the primary's keyframe with no gap in sequence numbers or timestamps.

use std::net::SocketAddr;
use std::time::Instant;

use super::super::camera_demand::Mode;
use super::super::camera_source::Source;
use super::super::fanout_policy::FrameKind;
use super::super::frame_split::SplitFrame;
use super::super::rtp_continuity::TrackContinuity;
use super::super::upstream_auth::Credentials;
use super::{CameraOutcome, CameraOutput, CameraParams, CameraSession, MediaFrame, State};

impl CameraSession {
    /// Which of the route's cameras is live.
    pub fn live_source(&self) -> Source {
        self.source.live()
    }

    /// The URL the live source is asked for.
    pub(super) fn live_url(&self) -> &str {
        match (self.source.live(), &self.params.fallback) {
            (Source::Fallback, Some(f)) => &f.url,
            _ => &self.params.url,
        }
    }

    pub(super) fn live_addr(&self) -> SocketAddr {
        match (self.source.live(), &self.params.fallback) {
            (Source::Fallback, Some(f)) => f.addr,
            _ => self.params.addr,
        }
    }

    pub(super) fn live_credentials(&self) -> Option<&Credentials> {
        match (self.source.live(), &self.params.fallback) {
            (Source::Fallback, Some(f)) => f.credentials.as_ref(),
            _ => self.params.credentials.as_ref(),
        }
    }

    /// Whether the primary should be probed in the background now (the fallback is live and
    /// the camera is wanted).
    pub fn wants_probe(&self) -> bool {
        self.source.wants_probe(!matches!(self.state, State::Idle | State::Stopped))
    }

    /// Changes when a reload changes the primary: a probe made before is of the old one.
    pub fn probe_epoch(&self) -> u64 {
        self.probe_epoch
    }

    /// The probe's parameters: the primary, always on while the probe lives, no GOP cache,
    /// `seed` its own randomness.
    pub fn probe_params(&self, seed: u64) -> CameraParams {
        let mut p = self.params.clone();
        p.fallback = None;
        p.mode = Mode::AlwaysOn;
        p.gop_cache_bytes = None;
        p.seed = seed;
        p
    }

    /// `media`: the frames `probe` made of its latest receive (`chunk`). If they hold the
    /// primary's first keyframe and the fallback is live, the probe's connection becomes this
    /// session's: the fallback's is left (TEARDOWN, `Disconnect`: the route lets its connection
    /// go before it makes the probe's connection this camera's), `probe` is stopped, and
    /// `media` is replaced by the frames from the keyframe on, rewritten as this session's, for
    /// the viewers. Returns whether it did.
    pub fn take_over(
        &mut self,
        probe: &mut CameraSession,
        now: Instant,
        chunk: &mut [u8],
        media: &mut Vec<MediaFrame>,
    ) -> bool {
        let Some(start) = media.iter().position(|f| f.kind == FrameKind::KeyframeStart) else { return false };
        let ready = probe.state == State::Playing && probe.conn.is_some() && probe.presentation.is_some();
        if !ready || self.source.live() != Source::Fallback {
            return false;
        }
        let (Some(mut conn), Some(presentation)) = (probe.conn.take(), probe.presentation.take()) else {
            return false;
        };
        self.source.on_probe_keyframe();
        probe.enter(State::Stopped, now);
        // Leave the fallback: the relay closes it, no failure.
        self.teardown();
        self.drop_connection(CameraOutcome::Completed, now, true);
        self.backoff.reset();
        self.out.push_back(CameraOutput::SourceChanged(Source::Primary));
        if self.presentation.as_ref().is_some_and(|old| !old.compatible(&presentation)) {
            self.out.push_back(CameraOutput::PresentationChanged);
            self.continuity.clear();
        }
        if self.continuity.len() != presentation.tracks.len() {
            self.continuity =
                presentation.tracks.iter().map(|t| TrackContinuity::new(t.sdp.clock_rate.unwrap_or(90_000))).collect();
        }
        self.continuity.iter_mut().for_each(TrackContinuity::reconnected);
        self.next_rtp = vec![None; presentation.tracks.len()];
        self.presentation = Some(presentation);
        // Viewers are mid-stream: the key track resumes at the keyframe (the first frame fed
        // below), its access unit read afresh.
        conn.resync = !self.continuity.is_empty();
        conn.key_timestamp = None;
        conn.key_start_seen = false;
        conn.playing_since = Some(now);
        conn.last_frame = now;
        self.conn = Some(conn);
        self.stats.connections += 1;
        self.enter(State::Playing, now);
        self.out.push_back(CameraOutput::Up);
        let frames: Vec<MediaFrame> = media.drain(..).skip(start).collect();
        for f in frames {
            self.on_frame(SplitFrame { channel: f.channel, payload: f.payload }, chunk, now, media);
        }
        true
    }
}

//! A shared route's fallback (issue 26): while the route's `fallback` camera is live, the route
//! probes its primary with a second camera session of its own, and switches back at the
//! probe's first keyframe.
//!
//! Which camera is live is decided by [`crate::proto::camera_source`] inside the route's
//! camera session (a primary failure switches to the fallback at once); the camera session
//! says whether it wants a probe ([`CameraSession::wants_probe`]). The route keeps the probe in
//! step with that (made, replaced after a reload changed the primary, closed), drives it (its
//! connection is the shell's second camera connection of the route: [`Action::ConnectProbe`],
//! [`Action::SendToProbe`], [`Action::CloseProbe`], reported back with the `handle_probe_*`
//! inputs), and when a receive of the probe holds the primary's first keyframe,
//! [`CameraSession::take_over`] moves the probe's playing connection into the camera session:
//! the fallback's connection is let go ([`Action::CloseCamera`]), then the shell names the
//! probe's connection the camera's ([`Action::ProbeIsCamera`]), and that receive's frames from
//! the keyframe on, rewritten for RTP continuity, are planned for the viewers like any receive.
//! The probe's media otherwise feeds nobody.

use std::time::Instant;

use super::{Action, RouteEvent, SharedRoute};
use crate::proto::camera_session::{CameraOutcome, CameraOutput, CameraSession};
use crate::proto::frame_split::FramePayload;
use crate::proto::rng::SplitMix64;

/// Spreads probes' seeds away from the camera sessions'.
const PROBE_SEED_SALT: u64 = 0x7072_6f62_655f_7365;

/// The route's probe of its primary camera.
#[derive(Debug)]
pub(super) struct Probe {
    pub camera: CameraSession,
    /// The shell holds the probe's connection (asked for, not yet let go or lost).
    pub open: bool,
    /// The camera session's `probe_epoch` it was made for.
    pub epoch: u64,
}

impl<V: Copy + Eq + std::fmt::Debug> SharedRoute<V> {
    /// The probe's connection asked for by [`Action::ConnectProbe`] is open (and ready for
    /// RTSP).
    pub fn handle_probe_connected(&mut self, now: Instant) {
        self.begin(now);
        if let Some(p) = self.probe.as_mut().filter(|p| p.open) {
            p.camera.handle_connected(now);
        }
        self.settle();
    }

    /// The probe's connection could not be opened.
    pub fn handle_probe_connect_failed(&mut self, now: Instant) {
        self.begin(now);
        if let Some(p) = self.probe.as_mut().filter(|p| p.open) {
            p.open = false;
            p.camera.handle_connect_failed(now);
        }
        self.settle();
    }

    /// What lies under RTSP on the probe's connection failed (TLS, the tunnel's answer).
    pub fn handle_probe_link_failed(&mut self, outcome: CameraOutcome, now: Instant) {
        self.begin(now);
        if let Some(p) = self.probe.as_mut().filter(|p| p.open) {
            p.open = false;
            p.camera.handle_link_failed(outcome, now);
        }
        self.settle();
    }

    /// The primary closed the probe's connection, or it failed.
    pub fn handle_probe_closed(&mut self, now: Instant) {
        self.begin(now);
        if let Some(p) = self.probe.as_mut().filter(|p| p.open) {
            p.open = false;
            p.camera.handle_camera_closed(now);
        }
        self.settle();
    }

    /// One receive of the probe, in the buffer viewers are sent from. If it holds the primary's
    /// first keyframe the route switches back to it: then, as after
    /// [`SharedRoute::handle_camera_bytes`], plan its frames with [`SharedRoute::plan_next`]
    /// (there are none otherwise; call it all the same: it ends the receive).
    pub fn handle_probe_bytes(&mut self, now: Instant, chunk: &mut [u8]) {
        self.begin(now);
        self.receiving = true;
        let (Some(p), Some(camera)) = (self.probe.as_mut(), self.camera.as_mut()) else { return };
        if !p.open {
            return;
        }
        let mut media = std::mem::take(&mut self.media);
        media.clear();
        p.camera.handle_camera_bytes(now, chunk, &mut media);
        if camera.take_over(&mut p.camera, now, chunk, &mut media) {
            // Carried out once the receive is planned (`settle`): the fallback's connection
            // goes first, then the probe's becomes the camera's.
            self.probe_taken = true;
        } else {
            // The probe's pictures are nobody's.
            media.clear();
        }
        self.media = media;
    }

    /// As [`SharedRoute::handle_probe_bytes`] for bytes not in the buffer viewers are sent
    /// from (decrypted, or past an HTTP tunnel's answer): frames are copied out of `plain`.
    pub fn handle_probe_plaintext(&mut self, now: Instant, plain: &mut [u8]) {
        self.handle_probe_bytes(now, plain);
        for f in self.media.iter_mut() {
            if let FramePayload::InChunk(r) = &f.payload {
                let copy = plain.get(r.clone()).map(bytes::Bytes::copy_from_slice).unwrap_or_default();
                f.payload = FramePayload::Assembled(copy);
            }
        }
    }

    /// Whether the route probes its primary now (its fallback is live).
    pub fn is_probing(&self) -> bool {
        self.probe.is_some()
    }

    /// After the camera's outputs: a probe taken over is the camera's connection now; the
    /// probe is made, replaced or closed as the camera session wants; its outputs carried into
    /// actions and events.
    pub(super) fn settle_probe(&mut self) {
        let now = self.now;
        if std::mem::take(&mut self.probe_taken) {
            // Its connection moved into the camera session: nothing of the probe is left to
            // close.
            if self.probe.take().is_some_and(|p| p.open) {
                self.camera_open = true;
                self.actions.push_back(Action::ProbeIsCamera);
            }
        }
        let (wants, epoch) = self.camera.as_ref().map_or((false, 0), |c| (c.wants_probe(), c.probe_epoch()));
        let current = self.probe.as_ref().is_some_and(|p| p.epoch == epoch);
        if self.probe.is_some() && !(wants && current) {
            // Not wanted any more, or of a primary a reload replaced: TEARDOWN, closed.
            if let Some(p) = self.probe.as_mut() {
                p.camera.close(now);
            }
            self.drain_probe();
            if self.probe.take().is_some_and(|p| p.open) {
                self.actions.push_back(Action::CloseProbe);
            }
        }
        if wants && self.probe.is_none() {
            if let Some(c) = self.camera.as_ref() {
                let seed = SplitMix64::nth(self.params.camera.seed ^ PROBE_SEED_SALT, self.probes_made);
                self.probes_made += 1;
                self.probe = Some(Probe { camera: CameraSession::new(c.probe_params(seed), now), open: false, epoch });
            }
        }
        self.drain_probe();
    }

    /// Carries the probe's outputs into actions and events. What it would tell viewers is not
    /// the route's.
    fn drain_probe(&mut self) {
        let now = self.now;
        while let Some(o) = self.probe.as_mut().and_then(|p| p.camera.poll_output()) {
            let Some(p) = self.probe.as_mut() else { return };
            match o {
                CameraOutput::Connect(addr) => match self.params.unresolved.is_some() {
                    false => {
                        p.open = true;
                        self.actions.push_back(Action::ConnectProbe(addr));
                    }
                    // The primary's name did not resolve: as a refused connect, retried.
                    true => p.camera.handle_connect_failed(now),
                },
                CameraOutput::Send(bytes) => {
                    if p.open {
                        self.actions.push_back(Action::SendToProbe(bytes));
                    }
                }
                CameraOutput::Disconnect => {
                    if std::mem::take(&mut p.open) {
                        self.actions.push_back(Action::CloseProbe);
                    }
                }
                CameraOutput::Ended(outcome) => self.events.push_back(RouteEvent::ProbeEnded(outcome)),
                CameraOutput::Reconnecting => self.events.push_back(RouteEvent::Reconnecting),
                CameraOutput::Up
                | CameraOutput::Down
                | CameraOutput::PresentationChanged
                | CameraOutput::SourceChanged(_)
                | CameraOutput::Exchange(_)
                | CameraOutput::GopCacheOverflow(_) => {}
            }
        }
    }
}

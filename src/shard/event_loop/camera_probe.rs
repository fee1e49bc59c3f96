//! A shared route's fallback, carried out: the probe of the primary camera while the fallback is
//! live (a second camera connection of the same `CameraSlot`, `Role::Camera` like the live
//! one, told apart by `ProbeSlot::conn`), its outputs, receives and timers, and the switch back
//! when `CameraSession::take_over` takes the probe's connection at its first keyframe. The
//! decisions are the core's (`proto::camera_source`, `camera_session/fallback.rs`); each
//! switch is a log line and `relay_route_camera_source`.

use super::*;
use crate::proto::camera_session::{CameraOutput, CameraSession, MediaFrame};
use crate::proto::camera_source::Source;
use crate::proto::frame_split::FramePayload;
use crate::shard::camera_table::{CameraKey, ProbeSlot};

impl Shard {
    /// Whether `idx` is the connection of `ck`'s probe.
    pub(super) fn is_probe_conn(&self, ck: CameraKey, idx: usize) -> bool {
        self.cameras.get(ck).and_then(|s| s.probe.as_ref()).is_some_and(|p| p.conn == Some(idx))
    }

    /// Which link reaches the live source of `ck` (the fallback's, or the route's own), and why
    /// its name did not resolve, if it did not.
    pub(super) fn live_camera_link(&self, ck: CameraKey) -> (UpstreamLink, Option<Arc<str>>) {
        let Some(slot) = self.cameras.get(ck) else { return Default::default() };
        match (slot.camera.live_source(), &slot.route.fallback) {
            (Source::Fallback, Some(f)) => (f.link.clone(), f.resolve_error.clone()),
            _ => (slot.route.upstream_link.clone(), slot.route.resolve_error.clone()),
        }
    }

    /// The live source changed: a line at info and `relay_route_camera_source`.
    pub(super) fn camera_source_changed(&mut self, ck: CameraKey, source: Source) {
        let Some(slot) = self.cameras.get(ck) else { return };
        let path = slot.route.path.clone();
        let url = match (source, &slot.route.fallback) {
            (Source::Fallback, Some(f)) => f.url.clone(),
            _ => slot.route.upstream_url.clone(),
        };
        tracing::info!(shard = self.id, route = %path, source = source.label(), camera = %url, "camera source switched");
        if self.per_route_metrics {
            self.metrics.set_route_source(&path, source);
        }
    }

    /// Opens or closes `ck`'s probe as its camera session wants (after its outputs ran).
    pub(super) fn sync_probe(&mut self, ck: CameraKey) {
        // Called after every receive of the camera: nothing to do in the common case.
        let Some(slot) = self.cameras.get(ck) else { return };
        let epoch = slot.camera.probe_epoch();
        let current = slot.probe.as_ref().is_some_and(|p| p.epoch == epoch);
        if slot.camera.wants_probe() == current && slot.probe.is_some() == current {
            return;
        }
        let now = Instant::now();
        // A probe not wanted, or of a primary a reload replaced: closed first.
        if let Some(p) = self.cameras.get_mut(ck).and_then(|s| s.probe.as_mut()) {
            p.camera.close(now);
            self.drive_probe(ck);
            if let Some(slot) = self.cameras.get_mut(ck) {
                slot.probe = None;
            }
        }
        let seed = self.rng.next_u64();
        let Some(slot) = self.cameras.get_mut(ck) else { return };
        if slot.camera.wants_probe() {
            let params = slot.camera.probe_params(seed);
            slot.probe = Some(ProbeSlot { camera: CameraSession::new(params, now), conn: None, epoch });
            tracing::debug!(shard = self.id, route = %slot.route.path, "probing the primary camera");
            self.drive_probe(ck);
        }
    }

    /// Carries out what `ck`'s probe asked for. Its media feeds nobody; `Up`, `Down` and what
    /// viewers would be told are not the route's.
    pub(super) fn drive_probe(&mut self, ck: CameraKey) {
        loop {
            let Some(slot) = self.cameras.get_mut(ck) else { return };
            let Some(probe) = slot.probe.as_mut() else { return };
            let Some(o) = probe.camera.poll_output() else { return };
            match o {
                CameraOutput::Connect(addr) => {
                    let (link, unresolved) = (slot.route.upstream_link.clone(), slot.route.resolve_error.clone());
                    let idx = match unresolved {
                        None => self.connect_camera_link(addr, Role::Camera(ck), &link),
                        Some(_) => None,
                    };
                    if let Some(probe) = self.cameras.get_mut(ck).and_then(|s| s.probe.as_mut()) {
                        probe.conn = idx;
                        if idx.is_none() {
                            probe.camera.handle_connect_failed(Instant::now());
                        }
                    }
                }
                CameraOutput::Send(bytes) => {
                    if let Some(c) = probe.conn {
                        self.queue_to_camera(c, bytes);
                    }
                }
                CameraOutput::Disconnect => {
                    if let Some(c) = probe.conn.take() {
                        self.let_camera_go(c);
                    }
                }
                CameraOutput::Ended(outcome) => {
                    self.metrics.camera_session_ended(outcome);
                    tracing::debug!(shard = self.id, route = %slot.route.path, outcome = outcome.label(), "primary camera probe ended");
                }
                CameraOutput::Reconnecting => self.metrics.camera_reconnect(),
                CameraOutput::Up
                | CameraOutput::Down
                | CameraOutput::PresentationChanged
                | CameraOutput::SourceChanged(_)
                | CameraOutput::Exchange(_)
                | CameraOutput::GopCacheOverflow(_) => {}
            }
        }
    }

    /// The probe's connect completed.
    pub(super) fn on_probe_connect(&mut self, idx: usize, ck: CameraKey, res: i32) {
        let now = Instant::now();
        if res == 0 {
            self.arm_recv(idx);
            if self.camera_link_connected(idx) {
                if let Some(p) = self.cameras.get_mut(ck).and_then(|s| s.probe.as_mut()) {
                    p.camera.handle_connected(now);
                }
            }
        } else {
            self.close_conn(idx);
            if let Some(p) = self.cameras.get_mut(ck).and_then(|s| s.probe.as_mut()) {
                p.conn = None;
                p.camera.handle_connect_failed(now);
            }
        }
        self.drive_probe(ck);
    }

    /// The probe's connection closed or failed (`outcome`: how, when under RTSP).
    pub(super) fn on_probe_closed(
        &mut self,
        idx: usize,
        ck: CameraKey,
        outcome: Option<crate::proto::camera_session::CameraOutcome>,
    ) {
        self.close_conn(idx);
        if let Some(p) = self.cameras.get_mut(ck).and_then(|s| s.probe.as_mut()).filter(|p| p.conn == Some(idx)) {
            p.conn = None;
            match outcome {
                Some(o) => p.camera.handle_link_failed(o, Instant::now()),
                None => p.camera.handle_camera_closed(Instant::now()),
            }
        }
        self.drive_probe(ck);
    }

    /// The probe's TLS or tunnel link opened under RTSP.
    pub(super) fn on_probe_link_open(&mut self, ck: CameraKey) {
        if let Some(p) = self.cameras.get_mut(ck).and_then(|s| s.probe.as_mut()) {
            p.camera.handle_connected(Instant::now());
        }
        self.drive_probe(ck);
    }

    /// Bytes of the probe: read by the probe's session; at the primary's first keyframe the
    /// route's camera takes the probe's connection over and that receive's frames from the
    /// keyframe on go to the viewers. `plain`: the decrypted bytes of a TLS camera (else the
    /// ring buffer's).
    pub(super) fn on_probe_data(&mut self, ck: CameraKey, idx: usize, bid: u16, len: usize, plain: Option<&mut [u8]>) {
        let now = self.reaped_at;
        let mut media: Vec<MediaFrame> = Vec::new();
        let Some(slot) = self.cameras.get_mut(ck) else { return };
        let Some(probe) = slot.probe.as_mut() else { return };
        let copied = plain.is_some();
        let chunk = match plain {
            Some(p) => p,
            // Only this processing holds the buffer (see `on_camera_data`).
            None => self.bufs.bytes_mut(bid, len),
        };
        probe.camera.handle_camera_bytes(now, chunk, &mut media);
        let taken = slot.camera.take_over(&mut probe.camera, now, chunk, &mut media);
        if copied {
            for f in media.iter_mut() {
                if let FramePayload::InChunk(r) = &f.payload {
                    let copy = chunk.get(r.clone()).map(bytes::Bytes::copy_from_slice).unwrap_or_default();
                    f.payload = FramePayload::Assembled(copy);
                }
            }
        }
        if !taken {
            self.drive_probe(ck);
            return;
        }
        // The probe's connection is the camera's now: the fallback's is let go first (the
        // camera's outputs: TEARDOWN, Disconnect), then the probe's takes its place.
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.probe = None;
        }
        self.drive_camera(ck);
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.conn = Some(idx);
        }
        if !media.is_empty() {
            self.fan_out(ck, bid, len, &media, now);
        }
        self.drive_camera(ck);
    }

    /// Deadlines of the shard's probes (connect, answers, keepalives, media, backoff).
    pub(super) fn probe_timers(&mut self, now: Instant) {
        for ck in self.cameras.keys() {
            let Some(p) = self.cameras.get_mut(ck).and_then(|s| s.probe.as_mut()) else { continue };
            if p.camera.poll_timeout().is_some_and(|t| t <= now) {
                p.camera.handle_timeout(now);
                self.drive_probe(ck);
            }
        }
    }
}

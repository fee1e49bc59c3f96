//! A shared camera's media to its viewers, as the core plans it: each receive is read once by
//! the camera session (frames split, keyframes found, the GOP cache fed, RTP rewritten for
//! continuity after a reconnect), the route's [`SharedFanout`] plans what every playing viewer
//! gets (whole frames on its own channels, slow viewers skipped or cut, the GOP cache replayed
//! at a join), and this carries the plan out: each delivery queued by reference to the same
//! ring buffer or shared bytes, each cut viewer's session ended. No decision is made here.
//!
//! [`SharedFanout`]: crate::proto::shared_fanout::SharedFanout

use super::*;
use crate::proto::camera_session::MediaFrame;
use crate::proto::fanout_policy::{FanoutLimits, QueueState};
use crate::proto::gop_cache::CachedFrame;
use crate::proto::shared_fanout::{Body, Delivery, JoinParams};
use crate::shard::camera_table::{CameraKey, FanoutViewer};
use crate::shard::conn_table::{ConnTable, FrameBytes, Queued};

/// What is queued to a viewer now, or `None` when nothing more may go to it (its connection is
/// gone or closing, or its WebSocket close is out).
fn queue_of(conns: &ConnTable, v: &FanoutViewer) -> Option<QueueState> {
    let c = conns.get(v.conn)?;
    if c.is_closing() || c.ws_header(0) == Some(None) {
        return None;
    }
    Some(QueueState { bytes: c.send().queued(), entries: c.send().entries() })
}

/// Empties a join's plan, keeping the room of a receive's (one delivery per viewer and a few):
/// the replay of a large cache would otherwise pin room for all of its deliveries.
fn keep_room(plan: &mut Vec<Delivery<FanoutViewer>>) {
    const KEPT: usize = 1024;
    plan.clear();
    plan.shrink_to(KEPT);
}

impl Shard {
    /// Camera bytes in ring buffer `bid`: read by the camera session, its frames fanned out,
    /// then its other outputs (answers, keepalives) carried out.
    pub(super) fn on_camera_data(&mut self, ck: CameraKey, bid: u16, len: usize) {
        let now = self.reaped_at;
        let mut media = std::mem::take(&mut self.media);
        media.clear();
        if let Some(slot) = self.cameras.get_mut(ck) {
            // Only this processing holds the buffer: the camera session may rewrite RTP headers
            // in it before any viewer's send names it.
            let chunk = self.bufs.bytes_mut(bid, len);
            slot.camera.handle_camera_bytes(now, chunk, &mut media);
        }
        if !media.is_empty() {
            self.fan_out(ck, bid, len, &media, now);
        }
        self.media = media;
        self.drive_camera(ck);
    }

    /// Decrypted bytes of a TLS camera: as [`Shard::on_camera_data`], the media copied out of
    /// `plain` for the viewers.
    /// `bid`/`len`: the receive the plaintext came from (still held; no frame indexes it).
    pub(super) fn on_camera_plain(&mut self, ck: CameraKey, bid: u16, len: usize, plain: &mut [u8]) {
        let now = self.reaped_at;
        let mut media = std::mem::take(&mut self.media);
        media.clear();
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.camera.handle_camera_bytes(now, plain, &mut media);
        }
        for f in media.iter_mut() {
            if let crate::proto::frame_split::FramePayload::InChunk(r) = &f.payload {
                let copy = plain.get(r.clone()).map(bytes::Bytes::copy_from_slice).unwrap_or_default();
                f.payload = crate::proto::frame_split::FramePayload::Assembled(copy);
            }
        }
        if !media.is_empty() {
            // Every frame is a copy: the receive's buffer is named but never read for them.
            self.fan_out(ck, bid, len, &media, now);
        }
        self.media = media;
        self.drive_camera(ck);
    }

    pub(super) fn fan_out(&mut self, ck: CameraKey, bid: u16, len: usize, media: &[MediaFrame], received_at: Instant) {
        let Some(slot) = self.cameras.get_mut(ck) else { return };
        let mut plan = std::mem::take(&mut slot.plan);
        let (mut dropped, mut sent, mut copied) = (0, 0, 0);
        // Frame by frame: each viewer is judged on its queue as it really is, and a plan holds
        // one delivery per viewer at most, however many frames the receive carries.
        for f in media {
            let Some(slot) = self.cameras.get_mut(ck) else { break };
            plan.clear();
            let conns = &self.conns;
            let chunk = self.bufs.bytes_at(bid, 0, len);
            dropped += slot
                .fanout
                .plan(std::slice::from_ref(f), chunk, received_at, |v| queue_of(conns, v), &mut plan)
                .dropped;
            let (s, c) = self.carry_out_plan(&plan, Some(bid), received_at);
            (sent, copied) = (sent + s, copied + c);
        }
        self.count_sent(sent, copied);
        if dropped > 0 {
            self.metrics.frames_dropped(dropped);
        }
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.plan = plan;
        }
    }

    fn count_sent(&mut self, sent: u64, copied: u64) {
        if sent > 0 {
            self.metrics.frames(Direction::ToViewer, sent);
        }
        if copied > 0 {
            self.metrics.ring_ranges_copied(copied);
        }
    }

    /// Queues each delivery of a plan (ranges of ring buffer `bid`), records first pictures,
    /// and ends the sessions of viewers the plan cut. Returns the frames queued and, of those,
    /// the ring ranges copied.
    fn carry_out_plan(
        &mut self,
        plan: &[Delivery<FanoutViewer>],
        bid: Option<u16>,
        received_at: Instant,
    ) -> (u64, u64) {
        let (mut sent, mut copied) = (0u64, 0u64);
        let mut slow = Vec::new();
        for d in plan {
            match d {
                Delivery::Deliver { viewer, header, body, live } => {
                    let Some(c) = self.conns.get(viewer.conn) else { continue };
                    if c.is_closing() {
                        continue;
                    }
                    let ws = match c.ws_header(d.len()) {
                        None => None,
                        Some(Some(h)) => Some(h),
                        // Its close is out: nothing more goes to it.
                        Some(None) => continue,
                    };
                    // Replayed frames are not timed: they were received long ago on purpose.
                    let timed = Timed { received_at, frames: u32::from(*live) };
                    let (prefix, frame) = match (header, body) {
                        (Some(h), Some(Body::Chunk(range))) => {
                            let Some(bid) = bid else { continue };
                            (Some(h), FrameBytes::Ring { bid, range: range.clone() })
                        }
                        (None, Some(Body::Chunk(range))) => {
                            let Some(bid) = bid else { continue };
                            (None, FrameBytes::Ring { bid, range: range.clone() })
                        }
                        (h, Some(Body::Shared(b))) => (h.as_ref(), FrameBytes::Shared(b)),
                        // A zero-length frame: its header alone.
                        (Some(h), None) => (None, FrameBytes::Shared(h)),
                        (None, None) => continue,
                    };
                    if self.conns.queue_frame(viewer.conn, ws, prefix, frame, &mut self.bufs, timed)
                        == Some(Queued::Copied)
                    {
                        copied += 1;
                    }
                    sent += 1;
                }
                Delivery::FirstPicture { waited, .. } => self.metrics.observe(Hist::TimeToFirstFrame, *waited),
                Delivery::Disconnect { viewer, .. } => slow.push(viewer.key),
            }
        }
        for key in slow {
            tracing::debug!(shard = self.id, "a viewer of a shared camera stayed too far behind: disconnected");
            self.metrics.rejected(Rejection::SlowViewer);
            self.end_session(key, SessionOutcome::SlowViewer);
        }
        (sent, copied)
    }

    /// A viewer's PLAY was answered: it joins the fan-out, the GOP cache first.
    pub(super) fn join_fanout(&mut self, key: SessionKey, replay: Vec<CachedFrame>, asked_at: Instant) {
        let Some(s) = self.sessions.get(key) else { return };
        let (Some(ck), Some(conn)) = (s.camera, s.viewer) else { return };
        let Some(viewer) = s.tunnel.shared_viewer() else { return };
        let Some(slot) = self.cameras.get_mut(ck) else { return };
        let Some(presentation) = slot.camera.presentation() else { return };
        let channels: Vec<Option<(u8, u8)>> = (0..presentation.tracks.len())
            .map(|t| Some((viewer.channel_for(t, false)?, viewer.channel_for(t, true)?)))
            .collect();
        let limits = FanoutLimits {
            drop_above: self.settings.limits.fanout_drop_above_bytes,
            disconnect_above: self.settings.limits.fanout_disconnect_above_bytes,
            max_behind: self.settings.core.fanout_max_behind,
        };
        let params = JoinParams { channels, key_track: presentation.key_track, limits, asked_at };
        let mut plan = std::mem::take(&mut slot.plan);
        plan.clear();
        let now = Instant::now();
        slot.fanout.join(FanoutViewer { key, conn }, params, &replay, now, &mut plan);
        drop(replay);
        let (sent, copied) = self.carry_out_plan(&plan, None, now);
        self.count_sent(sent, copied);
        keep_room(&mut plan);
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.plan = plan;
        }
    }

    /// The viewer paused or tore down: no more media for it; its tunnel goes on.
    pub(super) fn leave_fanout(&mut self, key: SessionKey) {
        let Some(ck) = self.sessions.get(key).and_then(|s| s.camera) else { return };
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.fanout.retain(|v| v.key != key);
        }
    }
}

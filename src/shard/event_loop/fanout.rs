//! A shared camera's media to its viewers: each receive is read once by the camera session
//! (frames split, keyframes found, the GOP cache fed, RTP rewritten for continuity after a
//! reconnect) and then queued to every playing viewer by reference to the same ring buffer.
//!
//! A viewer that receives a track on the channels the camera sends it on (the usual case:
//! FFmpeg and GStreamer ask for `0-1`, `2-3`, … as the relay asks the camera) gets the camera's
//! own `$` header and payload as one range, and consecutive frames of one receive merge into one
//! iovec; a viewer on other channels gets a 4-byte header shared by all viewers on those
//! channels, then the payload range. Each viewer is judged alone for slowness
//! ([`ViewerFanout`]): it skips whole frames up to a keyframe, or is cut; the camera is read at
//! its own pace whatever the viewers do.

use super::*;
use crate::proto::camera_session::MediaFrame;
use crate::proto::fanout_policy::{FanoutLimits, FrameKind, Verdict, ViewerFanout};
use crate::proto::frame_split::FramePayload;
use crate::proto::gop_cache::CachedFrame;
use crate::proto::interleaved;
use crate::shard::camera_table::{CameraKey, Player};
use crate::shard::conn_table::{FrameBytes, Queued};

/// The `$` header of a frame on `channel`, shared by every viewer that receives it there.
fn dollar_header(channel: u8, len: usize) -> Option<bytes::Bytes> {
    Some(bytes::Bytes::copy_from_slice(&interleaved::frame_header(channel, len)?))
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
            self.fan_out(ck, bid, &media, now);
        }
        self.media = media;
        self.drive_camera(ck);
    }

    /// Decrypted bytes of a TLS camera: as [`Shard::on_camera_data`], the media copied out of
    /// `plain` for the viewers.
    pub(super) fn on_camera_plain(&mut self, ck: CameraKey, plain: &mut [u8]) {
        let now = self.reaped_at;
        let mut media = std::mem::take(&mut self.media);
        media.clear();
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.camera.handle_camera_bytes(now, plain, &mut media);
        }
        for f in media.iter_mut() {
            if let FramePayload::InChunk(r) = &f.payload {
                let copy = plain.get(r.clone()).map(bytes::Bytes::copy_from_slice).unwrap_or_default();
                f.payload = FramePayload::Assembled(copy);
            }
        }
        if !media.is_empty() {
            // No ring buffer holds these frames: the buffer id is never used for them.
            self.fan_out(ck, 0, &media, now);
        }
        self.media = media;
        self.drive_camera(ck);
    }

    fn fan_out(&mut self, ck: CameraKey, bid: u16, media: &[MediaFrame], received_at: Instant) {
        let Some(slot) = self.cameras.get_mut(ck) else { return };
        let mut slow = Vec::new();
        let (mut sent, mut dropped, mut copied) = (0u64, 0u64, 0u64);
        // Per frame: the `$` headers made for viewers on other channels, one per channel.
        let mut headers: Vec<(u8, bytes::Bytes)> = Vec::new();
        for f in media {
            headers.clear();
            let payload_len = match &f.payload {
                FramePayload::InChunk(r) => r.len(),
                FramePayload::Assembled(b) => b.len(),
            };
            // The camera's own header sits just before an in-chunk payload when the frame
            // began in this receive.
            let own_header = match &f.payload {
                FramePayload::InChunk(r) if r.start >= 4 => {
                    let h = self.bufs.bytes_at(bid, (r.start - 4) as u32, 4);
                    h[0] == b'$' && h[1] == f.channel && usize::from(u16::from_be_bytes([h[2], h[3]])) == r.len()
                }
                _ => false,
            };
            for p in slot.players.iter_mut() {
                let Some(channel) = p.channel(f.track, f.rtcp) else { continue };
                let Some(conn) = self.conns.get(p.conn) else { continue };
                if conn.closing {
                    continue;
                }
                match p.fanout.decide(conn.send.queued(), f.kind, received_at) {
                    Verdict::Forward => {}
                    Verdict::Drop => {
                        dropped += 1;
                        continue;
                    }
                    Verdict::Disconnect => {
                        slow.push(p.key);
                        continue;
                    }
                }
                let ws = match conn.ws_header(4 + payload_len) {
                    None => None,
                    Some(Some(h)) => Some(h),
                    // Its close is out: nothing more goes to it.
                    Some(None) => continue,
                };
                let timed = Timed { received_at, frames: 1 };
                let (prefix, frame) = match &f.payload {
                    FramePayload::InChunk(r) if own_header && channel == f.channel => {
                        (None, FrameBytes::Ring { bid, range: r.start - 4..r.end })
                    }
                    payload => {
                        let header = match headers.iter().find(|(c, _)| *c == channel) {
                            Some((_, h)) => h.clone(),
                            None => {
                                // A `$` frame's payload fits its 16-bit length.
                                let Some(h) = dollar_header(channel, payload_len) else { continue };
                                headers.push((channel, h.clone()));
                                h
                            }
                        };
                        let frame = match payload {
                            FramePayload::InChunk(r) => FrameBytes::Ring { bid, range: r.clone() },
                            FramePayload::Assembled(b) => FrameBytes::Shared(b),
                        };
                        (Some(header), frame)
                    }
                };
                if self.conns.queue_frame(p.conn, ws, prefix.as_ref(), frame, &mut self.bufs, timed)
                    == Some(Queued::Copied)
                {
                    copied += 1;
                }
                sent += 1;
                if f.kind == FrameKind::KeyframeStart {
                    if let Some(asked_at) = p.awaiting_keyframe.take() {
                        self.metrics.observe(Hist::TimeToFirstFrame, received_at.saturating_duration_since(asked_at));
                    }
                }
            }
        }
        if sent > 0 {
            self.metrics.frames(Direction::ToViewer, sent);
        }
        if dropped > 0 {
            self.metrics.frames_dropped(dropped);
        }
        if copied > 0 {
            self.metrics.ring_ranges_copied(copied);
        }
        for key in slow {
            tracing::debug!(shard = self.id, "a viewer of a shared camera stayed too far behind: disconnected");
            self.metrics.rejected(Rejection::SlowViewer);
            self.end_session(key, SessionOutcome::SlowViewer);
        }
    }

    /// A viewer's PLAY was answered: it joins the fan-out, the GOP cache first.
    pub(super) fn join_fanout(
        &mut self,
        key: SessionKey,
        replay: Vec<CachedFrame>,
        replay_bytes: usize,
        asked_at: Instant,
    ) {
        let Some(s) = self.sessions.get(key) else { return };
        let (Some(ck), Some(conn)) = (s.camera, s.viewer) else { return };
        let Some(viewer) = s.tunnel.shared_viewer() else { return };
        let Some(slot) = self.cameras.get_mut(ck) else { return };
        let Some(presentation) = slot.camera.presentation() else { return };
        let channels: Vec<Option<(u8, u8)>> = (0..presentation.tracks.len())
            .map(|t| Some((viewer.channel_for(t, false)?, viewer.channel_for(t, true)?)))
            .collect();
        let watches_video = presentation.key_track.is_some_and(|t| channels.get(t).copied().flatten().is_some());
        let limits = FanoutLimits {
            drop_above: self.limits.fanout_drop_above_bytes,
            disconnect_above: self.limits.fanout_disconnect_above_bytes,
            max_behind: Duration::from_millis(self.limits.fanout_max_behind_ms),
        };
        let mut fanout = ViewerFanout::new(limits, presentation.key_track.is_some());
        fanout.allow_burst(replay_bytes);
        let mut player = Player { key, conn, channels, fanout, awaiting_keyframe: watches_video.then_some(asked_at) };
        let now = Instant::now();
        if !replay.is_empty() && player.awaiting_keyframe.take().is_some() {
            // The cache starts with a keyframe (or the parameter sets just before it).
            self.metrics.observe(Hist::TimeToFirstFrame, now.saturating_duration_since(asked_at));
        }
        slot.players.retain(|p| p.key != key);
        // Cached frames are not timed: they were received long ago on purpose.
        let untimed = Timed { received_at: now, frames: 0 };
        for f in &replay {
            let Some(channel) = player.channel(f.track, false) else { continue };
            let Some(c) = self.conns.get(conn) else { break };
            let ws = match c.ws_header(4 + f.payload.len()) {
                None => None,
                Some(Some(h)) => Some(h),
                Some(None) => break,
            };
            let Some(header) = dollar_header(channel, f.payload.len()) else { continue };
            self.conns.queue_frame(conn, ws, Some(&header), FrameBytes::Shared(&f.payload), &mut self.bufs, untimed);
        }
        if !replay.is_empty() {
            self.metrics.frames(Direction::ToViewer, replay.len() as u64);
        }
        slot.players.push(player);
    }

    /// The viewer paused or tore down: no more media for it; its tunnel goes on.
    pub(super) fn leave_fanout(&mut self, key: SessionKey) {
        let Some(ck) = self.sessions.get(key).and_then(|s| s.camera) else { return };
        if let Some(slot) = self.cameras.get_mut(ck) {
            slot.players.retain(|p| p.key != key);
        }
    }
}

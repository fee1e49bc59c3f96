//! A shared camera's media to its viewers, as its route plans it: each receive is read once by
//! the route's camera session (frames split, keyframes found, the GOP cache fed, RTP rewritten
//! for continuity after a reconnect), the route plans what every playing viewer gets, frame by
//! frame (whole frames on its own channels, slow viewers skipped or cut), and this carries each
//! plan out: each delivery queued by reference to the same ring buffer or shared bytes, each cut
//! viewer's session ended. No decision is made here.

use super::*;
use crate::proto::fanout_policy::QueueState;
use crate::proto::shared_fanout::{Body, Delivery};
use crate::shard::camera_table::{CameraKey, CameraSlot};
use crate::shard::conn_table::FrameBytes;
use crate::shard::replica_link::RouteViewer;

/// Where a receive of a shared route's camera connection is, and which connection it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::shard) enum CameraBytes {
    /// The camera's, in the ring buffer.
    Ring,
    /// The camera's, decrypted or past a tunnel's answer, in `self.io.plain`.
    Plain,
    /// The probe's of the primary, in the ring buffer.
    Probe,
    /// The probe's, in `self.io.plain`.
    ProbePlain,
}

impl Shard {
    /// Camera bytes in ring buffer `bid`, or in `self.io.plain` (then copied for the viewers), of
    /// the camera's connection or its probe's (`from`): read by the route, its frames planned
    /// one by one and each plan carried out, then the route's other actions (answers,
    /// keepalives).
    pub(in crate::shard) fn on_camera_data(&mut self, ck: CameraKey, bid: u16, len: usize, from: CameraBytes) {
        let now = self.io.reaped_at;
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        // Only this processing holds the buffer: the camera session may rewrite RTP headers in
        // it before any viewer's send names it.
        match from {
            CameraBytes::Ring => slot.shared.handle_camera_bytes(now, self.io.received_mut(bid, len)),
            CameraBytes::Plain => slot.shared.handle_camera_plaintext(now, &mut self.io.plain),
            CameraBytes::Probe => slot.shared.handle_probe_bytes(now, self.io.received_mut(bid, len)),
            CameraBytes::ProbePlain => slot.shared.handle_probe_plaintext(now, &mut self.io.plain),
        }
        self.plan_receive(ck, Some((bid, len)), now);
    }

    /// A receive the route has read (in ring buffer `chunk`, or in shared bytes only): its
    /// frames planned one by one and each plan carried out, then the route's other actions
    /// (answers, keepalives).
    pub(in crate::shard) fn plan_receive(&mut self, ck: CameraKey, chunk: Option<(u16, usize)>, now: Instant) {
        // The receive may have grown this route's GOP cache past the relay-wide budget.
        self.enforce_gop_budget();
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        let mut plan = std::mem::take(&mut slot.plan);
        let (mut dropped, mut sent, mut copied) = (0, 0, 0);
        // Each viewer is judged on its queue as it really is after the frame before, and a
        // plan holds one delivery per viewer at most, however many frames the receive carries.
        while let Some(slot) = self.relay.cameras.get_mut(ck) {
            let bytes = chunk.map_or(&[][..], |(bid, len)| self.io.received(bid, len));
            let (io, sessions) = (&self.io, &self.relay.sessions);
            let CameraSlot { shared, replicas, .. } = slot;
            // What is queued to a viewer now; `None`: nothing more may go to it (its connection
            // is gone or closing, or its WebSocket close is out). A replica's queue is what was
            // posted to its shard and not yet read there.
            let queue = |v: &RouteViewer| match *v {
                RouteViewer::Session(k) => {
                    let c = io.conn(sessions.get(k)?.viewer?)?;
                    if c.is_closing() || c.ws_header(0) == Some(None) {
                        return None;
                    }
                    Some(QueueState { bytes: c.send().queued(), entries: c.send().entries() })
                }
                RouteViewer::Replica(shard) => {
                    let feed = replicas.iter().find(|f| f.replica == shard)?;
                    Some(QueueState { bytes: feed.queued(), entries: 0 })
                }
            };
            let Some(stats) = shared.plan_next(bytes, queue, &mut plan) else { break };
            dropped += stats.dropped;
            let (s, c) = self.carry_out_plan(ck, &plan, chunk, now);
            (sent, copied) = (sent + s, copied + c);
        }
        self.count_sent(sent, copied);
        if dropped > 0 {
            self.metrics.frames_dropped(dropped);
        }
        if let Some(slot) = self.relay.cameras.get_mut(ck) {
            slot.plan = plan;
        }
        self.drive_camera(ck);
    }

    pub(in crate::shard) fn count_sent(&mut self, sent: u64, copied: u64) {
        if sent > 0 {
            self.metrics.frames(Direction::ToViewer, sent);
        }
        if copied > 0 {
            self.metrics.ring_ranges_copied(copied);
        }
    }

    /// Queues each delivery of a plan (ranges of ring buffer `chunk`), records first pictures,
    /// and ends the sessions of viewers the plan cut. A replica's deliveries are gathered for
    /// its shard (posted when the route's actions are carried out). Returns the frames queued
    /// and, of those, the ring ranges copied.
    pub(in crate::shard) fn carry_out_plan(
        &mut self,
        ck: CameraKey,
        plan: &[Delivery<RouteViewer>],
        chunk: Option<(u16, usize)>,
        received_at: Instant,
    ) -> (u64, u64) {
        let (mut sent, mut copied) = (0u64, 0u64);
        let mut slow = Vec::new();
        let bid = chunk.map(|(bid, _)| bid);
        for d in plan {
            match d {
                Delivery::Deliver { viewer: RouteViewer::Replica(shard), header, body, .. } => {
                    let feed = self
                        .relay
                        .cameras
                        .get_mut(ck)
                        .and_then(|slot| slot.replicas.iter_mut().find(|f| f.replica == *shard));
                    let Some(feed) = feed else { continue };
                    if let Some(h) = header {
                        feed.out.extend_from_slice(h);
                    }
                    match body {
                        Some(Body::Chunk(range)) => {
                            let bytes = chunk.map_or(&[][..], |(bid, len)| self.io.received(bid, len));
                            feed.out.extend_from_slice(bytes.get(range.clone()).unwrap_or_default());
                        }
                        Some(Body::Shared(b)) => feed.out.extend_from_slice(b),
                        None => {}
                    }
                    // Not a viewer's frame: the replica's shard counts what its viewers get.
                }
                Delivery::Deliver { viewer: RouteViewer::Session(viewer), header, body, live } => {
                    let Some(conn) = self.relay.sessions.get(*viewer).and_then(|s| s.viewer) else { continue };
                    let Some(c) = self.io.conn(conn) else { continue };
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
                        (h, Some(Body::Chunk(range))) => {
                            let Some(bid) = bid else { continue };
                            (h.as_ref(), FrameBytes::Ring { bid, range: range.clone() })
                        }
                        (h, Some(Body::Shared(b))) => (h.as_ref(), FrameBytes::Shared(b)),
                        // A zero-length frame: its header alone.
                        (Some(h), None) => (None, FrameBytes::Shared(h)),
                        (None, None) => continue,
                    };
                    if self.io.queue_frame(conn, ws, prefix, frame, timed) == Some(Queued::Copied) {
                        copied += 1;
                    }
                    sent += 1;
                }
                Delivery::FirstPicture { viewer: RouteViewer::Session(_), waited } => {
                    self.metrics.observe(Hist::TimeToFirstFrame, *waited)
                }
                Delivery::FirstPicture { viewer: RouteViewer::Replica(_), .. } => {}
                Delivery::Disconnect { viewer: RouteViewer::Session(key), .. } => slow.push(*key),
                Delivery::Disconnect { viewer: RouteViewer::Replica(shard), .. } => {
                    tracing::debug!(shard = self.id, replica = shard, "a replica stayed too far behind: cut");
                    self.end_replica(ck, *shard);
                }
            }
        }
        for key in slow {
            tracing::debug!(shard = self.id, "a viewer of a shared camera stayed too far behind: disconnected");
            self.metrics.rejected(Rejection::SlowViewer);
            self.end_session(key, SessionOutcome::SlowViewer);
        }
        (sent, copied)
    }
}

//! Queueing bytes for a connection and driving its one `sendmsg` in flight.

use super::*;
use crate::proto::websocket::FrameHeader;

impl Shard {
    /// `header`: a WebSocket frame header to send just before the range.
    pub(in crate::shard) fn queue_ring(
        &mut self,
        idx: usize,
        header: Option<FrameHeader>,
        bid: u16,
        range: std::ops::Range<usize>,
        at: Timed,
    ) {
        if self.io.conns.queue_ring(idx, header, &mut self.io.bufs, bid, range, at) == Some(Queued::Copied) {
            self.metrics.ring_ranges_copied(1);
        }
    }

    pub(in crate::shard) fn flush_dirty(&mut self) {
        // By index: a send that completes a close never queues more, but the list may grow.
        let mut i = 0;
        while let Some(&idx) = self.io.conns.dirty.get(i) {
            self.start_send(idx);
            i += 1;
        }
        self.io.conns.dirty.clear();
    }

    pub(in crate::shard) fn start_send(&mut self, idx: usize) {
        let Some(c) = self.io.conns.get(idx) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        if c.send().is_empty() && !c.send().in_flight() {
            // A flushing connection goes on to what follows.
            if self.io.conns.flushed(idx) {
                self.close_conn(idx);
            }
            return;
        }
        if let Some(sub) = self.io.conns.send_op(idx, &self.io.bufs) {
            self.io.ring.push(sub);
        }
    }

    pub(in crate::shard) fn on_send(&mut self, idx: usize, res: i32) {
        // The receive side is timed at its batch's reaping too (see `Shard::reaped_at`).
        let now = self.io.reaped_at;
        self.io.conns.completed(idx);
        let Some(c) = self.io.conns.get_mut(idx) else { return };
        if res < 0 {
            c.send_mut().abort_in_flight();
            if c.is_closing() {
                self.maybe_free(idx);
                return;
            }
            let role = c.role();
            self.on_conn_ended(idx, role, res);
            return;
        }
        c.send_mut().complete(res as usize, &mut self.io.bufs, &mut self.io.latencies);
        let role = c.role();
        for t in self.io.latencies.drain(..) {
            self.metrics.observe_n(Hist::ForwardLatency, now.saturating_duration_since(t.received_at), t.frames);
        }
        self.on_sent(role, res as u64);
        // The flow update may have closed it, and with nothing in flight freed it.
        let Some(c) = self.io.conns.get(idx) else { return };
        if c.is_closing() {
            self.maybe_free(idx);
        } else if matches!(c.phase(), Phase::Moving(_)) {
            self.start_send(idx);
            self.hand_off_if_quiet(idx);
        } else {
            self.start_send(idx);
        }
    }
}

//! The provided-buffer ring under pressure: slow viewers' media copied out, receives that ran
//! dry re-armed.

use super::*;

impl Shard {
    /// When the ring runs short, viewers that hold many ring buffers (slow ones, paused
    /// behind backpressure) get their queued media copied out so the buffers go back to the
    /// kernel: one slow viewer must not starve every other connection of the shard.
    pub(in crate::shard) fn relieve_ring_pressure(&mut self) {
        let total = self.io.bufs.capacity();
        if self.io.bufs.available() >= total / 8 {
            return;
        }
        // More buffers first: copying is for a ring that has lent all it has.
        if self.io.bufs.grow() {
            tracing::debug!(shard = self.id, buffers = self.io.bufs.capacity(), "receive ring grown");
            return;
        }
        let mut freed = 0;
        for (_, c) in self.io.conns.iter_mut() {
            if c.send().ring_segments() >= RING_SEGMENTS_BEFORE_COPY {
                freed += c.send_mut().copy_out_ring_segments(&mut self.io.bufs);
            }
        }
        if freed > 0 {
            self.metrics.ring_buffers_copied_out(freed as u64);
        }
    }

    pub(in crate::shard) fn feed_starved(&mut self) {
        if !self.io.conns.any_starved() || self.io.bufs.available() < 16 {
            return;
        }
        for idx in self.io.conns.take_starved() {
            let Some(c) = self.io.conns.get(idx) else {
                continue;
            };
            // A camera paused for backpressure meanwhile stays paused: the flow control resumes it.
            if matches!(c.role(), Some(Role::Upstream(_))) && self.paused_for_backpressure(c.role()) {
                continue;
            }
            if matches!(c.phase(), Phase::Greeting(_)) {
                self.arm_head_recv(idx);
            } else {
                self.io.arm_recv(idx);
            }
        }
    }
}

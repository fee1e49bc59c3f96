//! The I/O part's interface to the relay part: what the relay may ask of a connection. Each
//! call queues work on the connection (bytes to send, a receive armed or stopped); the ring
//! submissions are made by the driver. The fan-out judges each viewer on its send queue as it
//! really is after the frame before, so a call acts at once rather than being queued for later.

use super::*;
use crate::proto::websocket::FrameHeader;
use crate::shard::conn_table::FrameBytes;

impl Io {
    /// Arms a connection's multishot receive.
    pub(in crate::shard) fn arm_recv(&mut self, idx: usize) {
        if let Some(sub) = self.conns.recv(idx, &self.bufs) {
            self.ring.push(sub);
        }
    }

    /// Stops reading a connection (backpressure): its multishot receive is cancelled, or left
    /// off if it was waiting for buffers. Its tunnel's flow decides when it is armed again.
    pub(in crate::shard) fn stop_reading(&mut self, idx: usize) {
        // Nothing in flight to cancel when it waits for buffers: it just stays off.
        if let Some(sub) = self.conns.stop_recv(idx) {
            self.ring.push(sub);
        }
    }

    /// The bytes a receive left in ring buffer `bid`.
    pub(in crate::shard) fn received(&self, bid: u16, len: usize) -> &[u8] {
        self.bufs.bytes_at(bid, 0, len)
    }

    /// The same, writable: only the receive's handling holds the buffer until a send names it.
    pub(in crate::shard) fn received_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        self.bufs.bytes_mut(bid, len)
    }

    /// Queues a frame (a range of a ring buffer or shared bytes) to a connection, after its
    /// WebSocket header `ws` and `prefix` if any.
    pub(in crate::shard) fn queue_frame(
        &mut self,
        idx: usize,
        ws: Option<FrameHeader>,
        prefix: Option<&bytes::Bytes>,
        frame: FrameBytes<'_>,
        at: Timed,
    ) -> Option<Queued> {
        self.conns.queue_frame(idx, ws, prefix, frame, &mut self.bufs, at)
    }
}

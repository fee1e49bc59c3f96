//! The I/O part's interface to the relay part: what the relay may ask of a connection. Each
//! call queues work on the connection (bytes to send, a receive armed or stopped); the ring
//! submissions are made by the driver. The fan-out judges each viewer on its send queue as it
//! really is after the frame before, so a call acts at once rather than being queued for later.

use super::*;
use crate::metrics::SessionOutcome;
use crate::proto::websocket::{self, FrameHeader, close_code};
use crate::shard::conn::AfterFlush;
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

    /// Queues bytes to a connection as they are: an answer, a request, a head. Their reply is
    /// not held back by the next wait's batching.
    pub(in crate::shard) fn queue_owned(&mut self, idx: usize, bytes: Vec<u8>) {
        self.conns.queue_owned(idx, bytes);
        self.ring.expedite();
    }

    /// Queues an RTSP answer to a viewer connection (in its own WebSocket frame on one).
    pub(in crate::shard) fn queue_answer(&mut self, v: usize, bytes: Vec<u8>) {
        match self.ws_header(v, bytes.len()) {
            None => self.queue_owned(v, bytes),
            // An answer is small: header and answer in one buffer.
            Some(Some(header)) => {
                let mut framed = Vec::with_capacity(header.as_bytes().len() + bytes.len());
                framed.extend_from_slice(header.as_bytes());
                framed.extend_from_slice(&bytes);
                self.queue_owned(v, framed);
            }
            Some(None) => {}
        }
    }

    /// The binary frame header to send before a chunk of `len` bytes to connection `idx`, if it
    /// is a WebSocket: `Some(None)` means nothing may be sent any more (its close is out).
    pub(in crate::shard) fn ws_header(&self, idx: usize, len: usize) -> Option<Option<websocket::FrameHeader>> {
        self.conns.get(idx)?.ws_header(len)
    }

    /// The relay ends a WebSocket viewer's session: its close frame (1001 when the relay is
    /// stopping, 1000 otherwise) goes after what is queued.
    pub(in crate::shard) fn websocket_close(&mut self, idx: usize, outcome: SessionOutcome) {
        let code = if outcome == SessionOutcome::Shutdown { close_code::GOING_AWAY } else { close_code::NORMAL };
        let mut frame = Vec::new();
        match self.conns.get_mut(idx).and_then(|c| c.ws_mut()) {
            Some(ws) => ws.close(code, "", &mut frame),
            None => return,
        }
        if !frame.is_empty() {
            self.queue_owned(idx, frame);
        }
    }

    /// A WebSocket connection's bytes unframed: the RTSP bytes into `data`, its own answers
    /// (pongs, the close handshake) queued to it. `Some` when the WebSocket is over.
    pub(in crate::shard) fn unframe_websocket(
        &mut self,
        idx: usize,
        bytes: &[u8],
        data: &mut Vec<u8>,
    ) -> Option<websocket::WsEnd> {
        let mut to_client = Vec::new();
        let end = match self.conns.get_mut(idx).and_then(|c| c.ws_mut()) {
            Some(ws) => ws.on_bytes(bytes, data, &mut to_client),
            None => None,
        };
        if !to_client.is_empty() {
            self.queue_owned(idx, to_client);
        }
        end
    }

    /// A camera connection's last steps: what is queued goes out, then it is half-closed and
    /// read to its end, within `grace`. `keep_role`: what it still sends counts as its
    /// session's camera traffic.
    pub(in crate::shard) fn linger_then_close(&mut self, idx: usize, grace: Duration, keep_role: bool) {
        self.conns.flush_then(idx, AfterFlush::HalfClose, self.reaped_at + grace, keep_role);
        // Not reading (paused for a slow viewer): read again, so the camera's close is seen.
        if self.conns.get(idx).is_some_and(|c| c.recv() == RecvState::Off) {
            self.arm_recv(idx);
        }
    }

    /// A connection, to look at (its role, its send queue, whether it is closing).
    pub(in crate::shard) fn conn(&self, idx: usize) -> Option<&crate::shard::conn_table::Conn> {
        self.conns.get(idx)
    }

    /// A connection starts its live role (its session's viewer, POST or camera).
    pub(in crate::shard) fn go_live(&mut self, idx: usize, role: Role) {
        self.conns.go_live(idx, role);
    }

    /// A WebSocket connection from now on: its bytes go through `ws` each way.
    pub(in crate::shard) fn speak_websocket(&mut self, idx: usize, ws: websocket::WsEndpoint) {
        self.conns.speak_websocket(idx, ws);
    }

    /// What is queued goes out, then `after` (a close or a half-close), by `deadline` at the
    /// latest; a TLS connection says close_notify first. `keep_role`: what the peer still sends
    /// counts as its role's.
    pub(in crate::shard) fn flush_then(&mut self, idx: usize, after: AfterFlush, deadline: Instant, keep_role: bool) {
        if let Some(tls) = self.conns.get_mut(idx).and_then(|c| c.tls_mut()) {
            tls.close_notify();
        }
        self.conns.flush_then(idx, after, deadline, keep_role);
    }

    /// A POST's connection waits for its GET (its head read, `leftover` after it).
    pub(in crate::shard) fn park(&mut self, idx: usize, cookie: String, leftover: Vec<u8>) {
        self.conns.park(idx, cookie, leftover);
    }

    /// A parked POST is looked up again: what followed its head, if it was still parked.
    pub(in crate::shard) fn unpark(&mut self, idx: usize) -> Option<Vec<u8>> {
        self.conns.unpark(idx)
    }

    /// A POST's connection, its head read, is bound to no session yet.
    pub(in crate::shard) fn unbind(&mut self, idx: usize) {
        self.conns.unbind(idx);
    }

    /// A connection is to move to another shard (sent once nothing of ours is in flight on it).
    pub(in crate::shard) fn start_move(&mut self, idx: usize, to: Move) {
        self.conns.start_move(idx, to);
    }

    /// A passthrough camera connection counts towards its host's `max_camera_sessions` until
    /// it is freed.
    pub(in crate::shard) fn hold_camera_host(&mut self, idx: usize, host: std::net::IpAddr) {
        if let Some(c) = self.conns.get_mut(idx) {
            c.camera_host = Some(host);
        }
    }
}

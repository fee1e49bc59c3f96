//! Queueing bytes for a connection and driving its one `sendmsg` in flight.

use super::*;

impl Shard {
    /// Queues bytes for a connection (encrypting them on a TLS connection, along with any
    /// handshake data rustls has pending); it is sent at the end of the completion batch.
    pub(super) fn queue_owned(&mut self, idx: usize, bytes: Vec<u8>) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        match c.tls.as_mut() {
            None => c.send.push_owned(bytes),
            Some(tls) => {
                if !bytes.is_empty() {
                    tls.send(&bytes);
                }
                if let Some(cipher) = tls.take_outgoing() {
                    c.send.push_owned(cipher);
                }
            }
        }
        self.dirty.push(idx);
    }

    /// Queues camera media for a viewer straight from its ring buffer; a TLS viewer gets it
    /// encrypted instead (the ciphertext is necessarily a new buffer).
    pub(super) fn queue_ring(&mut self, idx: usize, bid: u16, range: std::ops::Range<usize>, at: Timed) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if let Some(tls) = c.tls.as_mut() {
            tls.send(self.bufs.bytes_at(bid, range.start as u32, range.len()));
            if let Some(cipher) = tls.take_outgoing() {
                c.send.push_media(cipher, at);
            }
        } else {
            self.bufs.retain(bid);
            c.send.push_ring(bid, range.start as u32, range.end as u32, at);
        }
        self.dirty.push(idx);
    }

    pub(super) fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            self.start_send(idx);
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    pub(super) fn start_send(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if c.closing {
            return;
        }
        if c.send.is_empty() && !c.send.in_flight() {
            if c.close_after_flush {
                self.close_conn(idx);
            }
            return;
        }
        let Some(hdr) = c.send.prepare(&self.bufs) else {
            return;
        };
        c.ops += 1;
        let sqe = opcode::SendMsg::new(types::Fd(c.raw()), hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(sqe_token(Op::Send, idx, c.generation));
        self.push(sqe);
    }

    pub(super) fn on_send(&mut self, idx: usize, res: i32) {
        // The receive side is timed at its batch's reaping too (see `reaped_at`).
        let now = self.reaped_at;
        let c = &mut self.conns[idx];
        c.ops -= 1;
        if res < 0 {
            c.send.abort_in_flight();
            if c.closing {
                self.maybe_free(idx);
                return;
            }
            let role = c.role.clone();
            self.on_conn_ended(idx, &role, res);
            return;
        }
        let mut done = std::mem::take(&mut self.latencies);
        c.send.complete(res as usize, &mut self.bufs, &mut done);
        let role = c.role.clone();
        for t in done.drain(..) {
            self.metrics.observe_n(Hist::ForwardLatency, now.saturating_duration_since(t.received_at), t.frames);
        }
        self.latencies = done;
        let n = res as u64;
        match role {
            Role::TunnelGet(k) | Role::PlainRtsp(k) => {
                self.metrics.bytes(Direction::ToViewer, n);
                if let Some(s) = self.session(k) {
                    s.to_viewer += n;
                }
                self.update_upstream_flow(k);
            }
            Role::Upstream(k) => {
                self.metrics.bytes(Direction::ToCamera, n);
                if let Some(s) = self.session(k) {
                    s.to_camera += n;
                }
            }
            _ => {}
        }
        if self.conns[idx].closing {
            self.maybe_free(idx);
        } else if matches!(self.conns[idx].role, Role::HandingOff { .. }) {
            self.start_send(idx);
            self.hand_off_if_quiet(idx);
        } else {
            self.start_send(idx);
        }
    }
}

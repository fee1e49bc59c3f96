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
    pub(super) fn queue_ring(&mut self, idx: usize, bid: u16, range: std::ops::Range<usize>, at: Instant) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        let (start, end) = match (u32::try_from(range.start), u32::try_from(range.end)) {
            (Ok(s), Ok(e)) => (s, e),
            _ => panic!("range {range:?} outside any receive buffer"),
        };
        // Checks the range against the buffer before anything refers to it.
        let bytes = self.bufs.bytes_at(bid, start, range.len());
        if let Some(tls) = c.tls.as_mut() {
            tls.send(bytes);
            if let Some(cipher) = tls.take_outgoing() {
                c.send.push_media(cipher, at);
            }
        } else if self.bufs.try_retain(bid) {
            c.send.push_ring(bid, start, end, at);
        } else {
            // The buffer already backs MAX_BUFFER_REFS queued ranges (a camera sending tiny
            // frames between line breaks): copy this one rather than count another reference.
            c.send.push_media_copy(self.bufs.bytes_at(bid, start, range.len()), at);
            self.metrics.ring_ranges_copied(1);
        }
        // One entry per connection and batch of ranges, not one per range.
        if self.dirty.last() != Some(&idx) {
            self.dirty.push(idx);
        }
    }

    pub(super) fn flush_dirty(&mut self) {
        // By index: a send that completes a close never queues more, but the list may grow.
        let mut i = 0;
        while let Some(&idx) = self.dirty.get(i) {
            self.start_send(idx);
            i += 1;
        }
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
            } else if c.linger_after_flush {
                c.linger_after_flush = false;
                // SAFETY: shutdown on a descriptor we own; nothing is being sent on it.
                unsafe { libc::shutdown(c.raw(), libc::SHUT_WR) };
            }
            return;
        }
        if let Some(sub) = ops::send(c, idx, &self.bufs) {
            self.ring.push(sub);
        }
    }

    pub(super) fn on_send(&mut self, idx: usize, res: i32) {
        let now = Instant::now();
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
        c.send.complete(res as usize, &mut self.bufs, &mut self.latencies);
        let role = c.role.clone();
        for t in self.latencies.drain(..) {
            self.metrics.observe(Hist::ForwardLatency, now.saturating_duration_since(t));
        }
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

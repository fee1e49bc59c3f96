//! Ending sessions and connections; a connection is freed once nothing in flight names it.

use super::*;

impl Shard {
    pub(super) fn end_session(&mut self, key: SessionKey, outcome: SessionOutcome) {
        if self.sessions.get(key.index).is_none_or(|s| s.generation != key.generation) {
            return;
        }
        let mut s = self.sessions.remove(key.index);
        if let Some(cookie) = &s.cookie {
            self.shared.cookies.remove_get(cookie, SessionRef { shard: self.id, key: key.pack() });
        }
        self.shared.admission.close_session();
        self.metrics.session_ended(outcome);
        let route = s.tunnel.session().route().map_or("-", |r| r.path.as_str());
        tracing::info!(
            target: "session",
            session = %format_args!("{}-{}", self.id, s.id),
            cookie = s.cookie.as_deref().map(|c| &c[..c.len().min(6)]).unwrap_or("-"),
            route,
            peer = %s.peer,
            mode = if s.tunnel.kind() == tunnel::Kind::Http { "tunnel" } else { "rtsp" },
            duration_ms = s.started_at.elapsed().as_millis() as u64,
            bytes_to_viewer = s.to_viewer,
            bytes_to_camera = s.to_camera,
            outcome = ?outcome,
            "session ended"
        );
        if let Some(post) = s.post {
            self.close_conn(post);
        }
        if let Some(upstream) = s.upstream {
            self.end_upstream(upstream, &mut s, outcome);
        }
        if let Some(v) = s.viewer {
            // The viewer gets what was queued for it (a final error reply, say), then the close;
            // a viewer that never reads it is closed by the tick after FLUSH_GRACE.
            if let Some(c) = self.conns.get_mut(v) {
                if let Some(tls) = c.tls.as_mut() {
                    tls.close_notify();
                }
                c.close_after_flush = true;
                c.flush_deadline = Some(Instant::now() + FLUSH_GRACE);
                self.conns.dirty.push(v);
            }
        }
    }

    /// The camera connection of an ended session. What was queued for it (a TEARDOWN the viewer
    /// sent just before leaving) goes out first, plus the relay's own TEARDOWN when the viewer
    /// left a camera session behind, so the camera frees it now rather than at its own timeout;
    /// then the connection is half-closed and read to its end, within `camera_close_grace_ms`.
    /// A camera that failed, or is still connecting, is closed at once.
    fn end_upstream(&mut self, idx: usize, s: &mut SessionSlot, outcome: SessionOutcome) {
        if self.conns.get(idx).is_none_or(|c| c.closing) {
            self.close_conn(idx);
            return;
        }
        let grace = match s.tunnel.camera_close(outcome) {
            CameraClose::Now => {
                self.close_conn(idx);
                return;
            }
            CameraClose::Linger { teardown, grace } => {
                if let Some(teardown) = teardown {
                    tracing::debug!(
                        shard = self.id,
                        session = %format_args!("{}-{}", self.id, s.id),
                        "viewer left without TEARDOWN; the relay sends one to the camera"
                    );
                    self.queue_owned(idx, teardown);
                }
                grace
            }
        };
        let c = &mut self.conns[idx];
        c.linger_after_flush = true;
        c.flush_deadline = Some(Instant::now() + grace);
        // Paused for a slow viewer: read again, so the camera's close is seen.
        if c.recv == RecvState::Off {
            self.arm_recv(idx);
        }
        self.conns.dirty.push(idx);
    }

    /// Shuts a connection down; it is freed once its in-flight operations have completed.
    pub(super) fn close_conn(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        if let Role::ParkedPost { cookie, .. } = &c.role {
            self.shared.cookies.unpark(cookie, self.id);
            self.parked.remove(cookie);
        }
        // Completes the receives and sends in flight on it.
        c.shutdown();
        if c.connect.is_some() && c.ops > 0 {
            // A connecting socket ignores shutdown: cancel the connect itself.
            self.ring.push(ops::cancel(Op::Connect, idx, c.generation));
        }
        self.maybe_free(idx);
    }

    pub(super) fn maybe_free(&mut self, idx: usize) {
        let Some(c) = self.conns.remove_if_idle(idx, &mut self.bufs) else { return };
        if c.counted_ip {
            self.shared.admission.close_connection(c.peer.ip());
        }
        // Dropping `c` closes the descriptor: nothing in flight names it any more.
    }
}

//! Closing connections; a connection is freed once nothing in flight names it.

use super::*;

impl Shard {
    /// Shuts a connection down; it is freed once its in-flight operations have completed.
    pub(in crate::shard) fn close_conn(&mut self, idx: usize) {
        // A camera's tunnel GET and POST end together.
        let post = self.io.conns.get(idx).and_then(|c| c.camera_tunnel.as_ref().map(|t| t.post));
        let Some(closed) = self.io.conns.close(idx) else {
            return;
        };
        if let Phase::Parked { cookie, .. } = &closed.was {
            self.shared.cookies.unpark(cookie, self.id);
            self.relay.parked.remove(cookie);
        }
        if let Some(generation) = closed.cancel_connect {
            // A connecting socket ignores shutdown: cancel the connect itself.
            self.io.ring.push(ops::cancel(Op::Connect, idx, generation));
        }
        self.maybe_free(idx);
        if let Some((post, generation)) = post {
            if self.io.conns.current(post, generation).is_some() {
                self.close_conn(post);
            }
        }
    }

    pub(in crate::shard) fn maybe_free(&mut self, idx: usize) {
        let Some(c) = self.io.conns.remove_if_idle(idx, &mut self.io.bufs) else { return };
        if c.counted_ip() {
            self.shared.admission.close_connection(c.peer().ip());
        }
        if let Some(host) = c.camera_host {
            if let Ok(mut hosts) = self.shared.camera_hosts.lock() {
                hosts.close(host);
            }
        }
        // Dropping `c` closes the descriptor: nothing in flight names it any more.
        drop(c);
        self.publish_sockets();
        self.resume_accepting_after_close();
    }
}

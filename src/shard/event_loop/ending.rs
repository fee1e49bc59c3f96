//! Ending sessions and connections; a connection is freed once nothing in flight names it.

use super::*;

impl Shard {
    /// Shuts a connection down; it is freed once its in-flight operations have completed.
    pub(super) fn close_conn(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        // A camera's tunnel GET and POST end together.
        let post = c.camera_tunnel.as_ref().map(|t| t.post);
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
        if let Some((post, generation)) = post {
            if self.conns.current(post, generation).is_some() {
                self.close_conn(post);
            }
        }
    }

    pub(super) fn maybe_free(&mut self, idx: usize) {
        let Some(c) = self.conns.remove_if_idle(idx, &mut self.bufs) else { return };
        if c.counted_ip {
            self.shared.admission.close_connection(c.peer.ip());
        }
        if let Some(host) = c.camera_host {
            if let Ok(mut hosts) = self.shared.camera_hosts.lock() {
                hosts.close(host);
            }
        }
        // Dropping `c` closes the descriptor: nothing in flight names it any more.
    }
}

//! Ending sessions and connections; a connection is freed once nothing in flight names it.

use super::*;

impl Shard {
    /// Shuts a connection down; it is freed once its in-flight operations have completed.
    pub(super) fn close_conn(&mut self, idx: usize) {
        let Some(closed) = self.conns.close(idx) else {
            return;
        };
        if let Phase::Parked { cookie, .. } = &closed.was {
            self.shared.cookies.unpark(cookie, self.id);
            self.parked.remove(cookie);
        }
        if let Some(generation) = closed.cancel_connect {
            // A connecting socket ignores shutdown: cancel the connect itself.
            self.ring.push(ops::cancel(Op::Connect, idx, generation));
        }
        self.maybe_free(idx);
    }

    pub(super) fn maybe_free(&mut self, idx: usize) {
        let Some(c) = self.conns.remove_if_idle(idx, &mut self.bufs) else { return };
        if c.counted_ip() {
            self.shared.admission.close_connection(c.peer().ip());
        }
        // Dropping `c` closes the descriptor: nothing in flight names it any more.
    }
}

//! Connections handed to another shard (a POST to its GET's shard, a viewer to its shared
//! route's): moved once nothing of ours is in flight on them, or refused if that shard stopped.

use super::*;

impl Shard {
    /// Moves a connection to another shard once nothing of ours is in flight on it. Its head
    /// receive has completed and no receive is armed, but a TLS connection may still be sending
    /// (session tickets): the kernel must be done with those buffers before the connection
    /// leaves the slab, so the hand-off waits for the last send completion (see `on_send`).
    pub(in crate::shard) fn hand_off_if_quiet(&mut self, idx: usize) {
        let Some((to, conn)) = self.io.conns.take_moving(idx) else {
            if self.io.conns.get(idx).is_some_and(|c| !c.send().is_empty()) {
                self.io.conns.dirty.push(idx);
            }
            return;
        };
        let shard = to.shard();
        let msg = match to {
            Move::Post { session_key, leftover, .. } => ShardMsg::AdoptPost(AdoptPost {
                fd: conn.fd,
                peer: conn.peer,
                session_key,
                leftover,
                accepted_at: conn.accepted_at,
                tls: conn.tls,
            }),
            Move::Viewer { head, .. } => ShardMsg::AdoptViewer(AdoptViewer {
                fd: conn.fd,
                peer: conn.peer,
                head,
                accepted_at: conn.accepted_at,
                tls: conn.tls,
                counted_ip: conn.counted_ip,
            }),
        };
        if let Err(msg) = self.shared.mailboxes[shard as usize].post(msg) {
            self.refuse_handed_back(msg);
        }
    }

    /// A hand-off whose shard stopped after it was decided: the connection is out of our table
    /// already, so it is answered (plain ones) and closed here.
    fn refuse_handed_back(&mut self, msg: ShardMsg) {
        let (fd, peer, tls, counted_ip) = match msg {
            // A POST is always counted once its head is read (see `on_mailbox`).
            ShardMsg::AdoptPost(p) => (p.fd, p.peer, p.tls.is_some(), true),
            ShardMsg::AdoptViewer(v) => (v.fd, v.peer, v.tls.is_some(), v.counted_ip),
            _ => return,
        };
        self.metrics.rejected(Rejection::ShuttingDown);
        if !tls {
            send_now(&fd, &http_head::http_error_reply(503, "Service Unavailable"));
        }
        if counted_ip {
            self.shared.admission.close_connection(peer.ip());
        }
    }
}

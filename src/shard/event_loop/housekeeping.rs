//! The tick (flush deadlines, head timeouts, parked POSTs' pairing window, paused listeners; then
//! the relay part's timers) and the mailbox (adopted POSTs and viewers, wake-ups, reloads,
//! verdicts, queries, shutdown), and the I/O side of a drain.

use super::*;

impl Shard {
    pub(in crate::shard) fn arm_tick(&mut self) {
        self.io.ring.push(ops::tick());
    }

    pub(in crate::shard) fn arm_mailbox(&mut self) {
        self.io.ring.push(ops::mailbox(&self.shared.mailboxes[self.id as usize]));
    }

    pub(in crate::shard) fn on_tick(&mut self) {
        let now = self.io.reaped_at;
        if self.relay.draining_until.is_none() {
            for listener in std::mem::take(&mut self.io.listeners.paused) {
                self.arm_accept(listener);
            }
        }
        let head_timeout = self.relay.settings.core.head_timeout;
        // A POST waits for its GET as long as a GET for its POST (the GET's wait is its tunnel's).
        let pairing = self.relay.settings.core.tunnel.pairing_timeout;
        let mut expired_heads = Vec::new();
        let mut parked = Vec::new();
        let mut stuck = Vec::new();
        for (idx, c) in self.io.conns.iter() {
            match c.phase() {
                Phase::Closing { .. } => {}
                Phase::Flushing { role, deadline, .. } if now >= *deadline => {
                    if matches!(role, Some(Role::Upstream(_))) && (!c.send().is_empty() || c.send().in_flight()) {
                        self.metrics.upstream_error(UpstreamErrorKind::CloseTimeout);
                    }
                    stuck.push(idx);
                }
                Phase::Flushing { .. } => {}
                // A hand-off waits only for its own sends; a peer that never reads them is
                // treated like a slow head.
                phase if phase.before_role() && now.saturating_duration_since(c.accepted_at()) > head_timeout => {
                    expired_heads.push(idx)
                }
                Phase::Parked { cookie, .. } => {
                    parked.push((idx, cookie.clone(), now.saturating_duration_since(c.accepted_at()) > pairing))
                }
                _ => {}
            }
        }
        for idx in stuck {
            self.close_conn(idx);
        }
        for idx in expired_heads {
            self.metrics.rejected(Rejection::HeadTimeout);
            self.close_conn(idx);
        }
        for (idx, cookie, expired) in parked {
            if expired {
                self.metrics.rejected(Rejection::PostWithoutGet);
                self.close_conn(idx);
            } else {
                self.wake_parked(idx, cookie);
            }
        }
        self.on_relay_tick(now);
        // Freed memory goes back to the kernel within about a tick past its delay.
        super::super::heap_purge::collect_on_tick();
    }

    pub(in crate::shard) fn on_mailbox(&mut self) {
        let msgs = self.shared.mailboxes[self.id as usize].drain();
        for msg in msgs {
            match msg {
                ShardMsg::AdoptPost(p) => {
                    // A POST is counted at its accept (or PROXY header), before its head is read.
                    let from =
                        Departing { fd: p.fd, peer: p.peer, accepted_at: p.accepted_at, tls: p.tls, counted_ip: true };
                    let idx = self.io.conns.adopt(from, None);
                    self.bind_post(SessionKey::unpack(p.session_key), idx, p.leftover);
                }
                ShardMsg::AdoptViewer(v) => self.adopt_viewer(v),
                ShardMsg::WakeParked { cookie } => {
                    if let Some(&idx) = self.relay.parked.get(&cookie) {
                        self.wake_parked(idx, cookie);
                    }
                }
                ShardMsg::Reload { settings } => {
                    // New certificates apply to new connections. Listeners are bound in
                    // `settings.listeners` order and their addresses change only on restart.
                    for (l, fresh) in self.io.listeners.open.iter_mut().zip(&settings.listeners) {
                        if let (Some(l), Some(cfg)) = (l.as_mut().filter(|l| l.tls.is_some()), &fresh.tls) {
                            l.tls = Some(cfg.clone());
                        }
                    }
                    self.reload(settings);
                }
                ShardMsg::AuthVerdict { session_key, id, verdict } => {
                    self.on_auth_verdict(SessionKey::unpack(session_key), id, verdict)
                }
                ShardMsg::Shutdown { grace } => self.begin_drain(grace),
                ShardMsg::Query(query) => self.answer_query(query),
                ShardMsg::Replica(msg) => self.on_replica_msg(msg),
                // Posted only when the process was started with the test hook enabled.
                // Sent only by the test hook `RTR_TEST_STOP_SHARD`; no peer can post it.
                ShardMsg::TestPanic => panic!("shard {} stopped by the test hook", self.id),
            }
        }
    }

    pub(in crate::shard) fn begin_drain(&mut self, grace: Duration) {
        if !self.relay.begin_drain(grace) {
            return;
        }
        for i in 0..self.io.listeners.open.len() {
            if self.io.listeners.open[i].is_some() {
                self.io.ring.push(ops::cancel(Op::Accept, i, 0));
            }
        }
        // Connections still reading their head, or parked, are not sessions yet: drop them.
        let idle: Vec<usize> = self
            .io
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase(), Phase::Greeting(_) | Phase::Unbound | Phase::Parked { .. }))
            .map(|(i, _)| i)
            .collect();
        for idx in idle {
            self.close_conn(idx);
        }
        tracing::info!(
            shard = self.id,
            sessions = self.relay.sessions.len(),
            grace_ms = grace.as_millis() as u64,
            "draining"
        );
    }
}

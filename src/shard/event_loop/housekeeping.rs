//! The tick (timeouts, pairing windows, drain deadline) and the mailbox (adopted POSTs, wake-ups,
//! reloads, shutdown).

use super::*;

impl Shard {
    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        if self.draining_until.is_none() {
            for listener in std::mem::take(&mut self.accept_paused) {
                self.arm_accept(listener);
            }
        }
        let head_timeout = Duration::from_millis(self.limits.head_read_timeout_ms);
        let pairing = Duration::from_millis(self.limits.pairing_timeout_ms);
        let idle = Duration::from_secs(self.limits.idle_timeout_secs);
        let mut expired_heads = Vec::new();
        let mut parked = Vec::new();
        let mut stuck = Vec::new();
        for (idx, c) in self.conns.iter() {
            if c.closing {
                continue;
            }
            if c.flush_deadline.is_some_and(|d| now >= d) {
                if matches!(c.role, Role::Upstream(_)) && (!c.send.is_empty() || c.send.in_flight()) {
                    self.metrics.upstream_error(UpstreamErrorKind::CloseTimeout);
                }
                stuck.push(idx);
                continue;
            }
            match &c.role {
                // A hand-off waits only for its own sends; a peer that never reads them is
                // treated like a slow head.
                Role::Head | Role::HandingOff { .. } if now.saturating_duration_since(c.accepted_at) > head_timeout => {
                    expired_heads.push(idx)
                }
                Role::ParkedPost { cookie, .. } => {
                    parked.push((idx, cookie.clone(), now.saturating_duration_since(c.accepted_at) > pairing))
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
        let keys: Vec<SessionKey> =
            self.sessions.iter().map(|(index, s)| SessionKey { index, generation: s.generation }).collect();
        let mut out = std::mem::take(&mut self.out);
        for key in keys {
            let Some(s) = self.session(key) else { continue };
            if s.tunnel && !s.paired && now.saturating_duration_since(s.started_at) > pairing {
                self.metrics.rejected(Rejection::GetWithoutPost);
                self.end_session(key, SessionOutcome::Timeout);
                continue;
            }
            // A viewer's bytes count once they complete a message or frame: a trickle that
            // never does is not activity.
            let active = s.last_activity.max(s.proto.last_viewer_progress());
            if now.saturating_duration_since(active) > idle {
                self.metrics.rejected(Rejection::IdleTimeout);
                self.end_session(key, SessionOutcome::Timeout);
                continue;
            }
            s.proto.on_tick(now, &mut out);
            self.apply(key, &mut out, None);
        }
        self.out = out;
        if let Some(deadline) = self.draining_until {
            if now >= deadline {
                let keys: Vec<SessionKey> =
                    self.sessions.iter().map(|(index, s)| SessionKey { index, generation: s.generation }).collect();
                for key in keys {
                    self.end_session(key, SessionOutcome::Shutdown);
                }
            }
        }
    }

    pub(super) fn wake_parked(&mut self, idx: usize, cookie: String) {
        let Some(Role::ParkedPost { leftover, .. }) = self.conns.get_mut(idx).map(|c| &mut c.role) else {
            return;
        };
        let leftover = std::mem::take(leftover);
        match self.shared.cookies.post_arrived(&cookie, self.id) {
            PostLookup::Parked => {
                if let Some(Role::ParkedPost { leftover: l, .. }) = self.conns.get_mut(idx).map(|c| &mut c.role) {
                    *l = leftover;
                }
            }
            _ => {
                self.conns[idx].role = Role::Head;
                self.parked.remove(&cookie);
                self.find_get_for_post(idx, cookie, leftover);
            }
        }
    }

    pub(super) fn on_mailbox(&mut self) {
        let msgs = self.shared.mailboxes[self.id as usize].drain();
        for msg in msgs {
            match msg {
                ShardMsg::AdoptPost(p) => {
                    let idx = self.insert_conn(p.fd, p.peer, Role::Head);
                    let c = &mut self.conns[idx];
                    c.counted_ip = true;
                    c.accepted_at = p.accepted_at;
                    c.tls = p.tls;
                    self.bind_post(SessionKey::unpack(p.session_key), idx, p.leftover);
                }
                ShardMsg::WakeParked { cookie } => {
                    if let Some(&idx) = self.parked.get(&cookie) {
                        self.wake_parked(idx, cookie);
                    }
                }
                ShardMsg::Reload { settings } => {
                    let auth = &settings.auth;
                    let window = Duration::from_secs(auth.failure_window_secs);
                    self.auth_gate = self.shared.auth_failures.gate(auth.max_failures_per_ip, window);
                    self.auth = auth.clone();
                    // New certificates apply to new connections. Listeners are bound in
                    // `settings.listeners` order and their addresses change only on restart.
                    for (l, fresh) in self.listeners.iter_mut().zip(&settings.listeners) {
                        if let (Some(l), Some(cfg)) = (l.as_mut().filter(|l| l.tls.is_some()), &fresh.tls) {
                            l.tls = Some(cfg.clone());
                        }
                    }
                    self.reload(settings.routes.clone(), settings.limits.clone())
                }
                ShardMsg::Shutdown { grace } => self.begin_drain(grace),
            }
        }
    }

    pub(super) fn reload(&mut self, routes: Arc<RouteTable>, limits: Limits) {
        let keys: Vec<SessionKey> =
            self.sessions.iter().map(|(index, s)| SessionKey { index, generation: s.generation }).collect();
        for key in keys {
            let Some(current) = self.sessions[key.index].proto.route().cloned() else {
                continue;
            };
            let kept = routes.routes().iter().any(|r| {
                r.path == current.path
                    && r.upstream_url == current.upstream_url
                    && r.upstream_addr == current.upstream_addr
            });
            if !kept {
                self.end_session(key, SessionOutcome::RouteRemoved);
            }
        }
        self.routes = routes;
        self.limits = limits;
    }

    pub(super) fn begin_drain(&mut self, grace: Duration) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(Instant::now() + grace);
        for i in 0..self.listeners.len() {
            if self.listeners[i].is_some() {
                let target = sqe_token(Op::Accept, i, 0);
                self.push(opcode::AsyncCancel::new(target).build().user_data(sqe_token(Op::Cancel, 0, 0)));
            }
        }
        // Connections still reading their head, or parked, are not sessions yet: drop them.
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::Head | Role::ParkedPost { .. }))
            .map(|(i, _)| i)
            .collect();
        for idx in idle {
            self.close_conn(idx);
        }
        tracing::info!(
            shard = self.id,
            sessions = self.sessions.len(),
            grace_ms = grace.as_millis() as u64,
            "draining"
        );
    }
}

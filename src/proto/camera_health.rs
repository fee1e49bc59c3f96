//! A route's camera as an operator sees it: one of five states, since when, the last error in
//! words, and which changes deserve a log line.
//!
//! The shard feeds it what happened (a connection failed, with its reason; the camera's state
//! now) and logs what it hands back: a failure once when the camera starts failing and again
//! only when the reason changes, never per retry (a camera down for a night would otherwise
//! write a line every 30 s), and the recovery once. The same state is what the per-route
//! metrics export (`relay_route_camera_state{route,state}`).

use std::time::{Duration, Instant};

use super::camera_session::{CameraOutcome, CameraPhase};

/// `relay_route_camera_state{state}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CameraState {
    /// Not connected and not wanted (an on-demand camera with no viewer).
    Idle,
    /// Connecting, or in the RTSP dialogue before PLAY is answered.
    Connecting,
    /// Playing (shared), or at least one camera connection open (passthrough).
    Ready,
    /// Failed, wanted, and waiting to reconnect.
    Retrying,
    /// Its last connection failed and nobody waits for it (no reconnect is scheduled).
    Failed,
}

impl CameraState {
    pub const ALL: [CameraState; 5] =
        [CameraState::Idle, CameraState::Connecting, CameraState::Ready, CameraState::Retrying, CameraState::Failed];

    pub fn label(self) -> &'static str {
        match self {
            CameraState::Idle => "idle",
            CameraState::Connecting => "connecting",
            CameraState::Ready => "ready",
            CameraState::Retrying => "retrying",
            CameraState::Failed => "failed",
        }
    }

    /// A shared camera's state from its session's phase; `failing`: its last connection failed
    /// and it has not played since.
    pub fn of_shared(phase: CameraPhase, failing: bool) -> CameraState {
        match phase {
            CameraPhase::Starting => CameraState::Connecting,
            CameraPhase::Playing => CameraState::Ready,
            CameraPhase::Retrying => CameraState::Retrying,
            CameraPhase::Idle | CameraPhase::Stopped if failing => CameraState::Failed,
            CameraPhase::Idle | CameraPhase::Stopped => CameraState::Idle,
        }
    }

    /// A passthrough route's state: each viewer has its own camera connection, so the route is
    /// up while any of them is open.
    pub fn of_passthrough(open: u32, connecting: u32, failing: bool) -> CameraState {
        if open > 0 {
            CameraState::Ready
        } else if connecting > 0 {
            CameraState::Connecting
        } else if failing {
            CameraState::Failed
        } else {
            CameraState::Idle
        }
    }

    /// Two shards' views of one route, as one: up if either is up, else the one an operator
    /// most needs to see.
    pub fn merge(self, other: CameraState) -> CameraState {
        let rank = |s: CameraState| match s {
            CameraState::Ready => 4,
            CameraState::Retrying => 3,
            CameraState::Connecting => 2,
            CameraState::Failed => 1,
            CameraState::Idle => 0,
        };
        if rank(other) > rank(self) { other } else { self }
    }
}

impl CameraOutcome {
    /// Whether a connection that ended so failed (a reload or the relay leaving is no failure).
    pub fn is_failure(self) -> bool {
        !matches!(self, CameraOutcome::Completed | CameraOutcome::Reloaded)
    }
}

/// A line worth logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// The camera started failing (`first`), or fails now for another reason than the one
    /// last logged.
    Failing { reason: String, first: bool },
    /// It plays again after `failures` failed connections over `down_for`.
    Recovered { failures: u32, down_for: Duration },
}

/// One route's camera health. See the module documentation.
#[derive(Debug, Clone)]
pub struct CameraHealth {
    state: CameraState,
    since: Instant,
    last_error: Option<String>,
    /// Since when it has been failing (no success since its first failure).
    failing_since: Option<Instant>,
    failures: u32,
    /// The reason last handed back as [`HealthEvent::Failing`].
    logged_reason: Option<String>,
}

impl CameraHealth {
    pub fn new(now: Instant) -> CameraHealth {
        CameraHealth {
            state: CameraState::Idle,
            since: now,
            last_error: None,
            failing_since: None,
            failures: 0,
            logged_reason: None,
        }
    }

    pub fn state(&self) -> CameraState {
        self.state
    }

    /// When the camera entered its current state.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The last failure, in words; kept after a recovery (it says what happened last).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Failing since its last failure and not up since.
    pub fn failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// A connection failed for `reason`.
    pub fn failed(&mut self, reason: String, now: Instant) -> Option<HealthEvent> {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(reason.clone());
        let first = self.failing_since.is_none();
        if first {
            self.failing_since = Some(now);
        } else if self.logged_reason.as_deref() == Some(reason.as_str()) {
            // The same failure again (a retry): already said.
            return None;
        }
        self.logged_reason = Some(reason.clone());
        Some(HealthEvent::Failing { reason, first })
    }

    /// The camera's state now.
    pub fn set_state(&mut self, state: CameraState, now: Instant) -> Option<HealthEvent> {
        if state != self.state {
            self.state = state;
            self.since = now;
        }
        if state != CameraState::Ready {
            return None;
        }
        let began = self.failing_since.take()?;
        let failures = std::mem::take(&mut self.failures);
        self.logged_reason = None;
        Some(HealthEvent::Recovered { failures, down_for: now.saturating_duration_since(began) })
    }
}

/// What one update of a route's health found: the state, whether the per-route series
/// (`relay_route_camera_state`, `relay_route_viewers`) must be set, and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub state: CameraState,
    pub viewers: u64,
    /// The state or the viewer count differs from the last report.
    pub changed: bool,
    pub logs: [Option<HealthEvent>; 2],
}

impl HealthReport {
    /// Nothing to set, nothing to log (the common case: a media chunk).
    pub fn is_quiet(&self) -> bool {
        !self.changed && self.logs.iter().all(Option::is_none)
    }
}

/// A route's camera health and what was last reported of it.
#[derive(Debug, Clone)]
pub struct RouteHealth {
    health: CameraHealth,
    /// Viewers and state as last reported.
    seen: Option<(u64, CameraState)>,
}

impl RouteHealth {
    pub fn new(now: Instant) -> RouteHealth {
        RouteHealth { health: CameraHealth::new(now), seen: None }
    }

    /// The camera health itself (state, since when, last error).
    pub fn camera(&self) -> &CameraHealth {
        &self.health
    }

    /// Viewers and state as last reported (all set again when per-route series are turned on).
    pub fn seen(&self) -> Option<(u64, CameraState)> {
        self.seen
    }

    /// A camera connection ended as `outcome`; `detail`: why, in words (a connect error, a
    /// certificate that did not verify).
    pub fn failed(&mut self, outcome: CameraOutcome, detail: Option<String>, now: Instant) -> Option<HealthEvent> {
        let reason = match detail {
            Some(d) => format!("{}: {d}", outcome.label()),
            None => outcome.label().to_owned(),
        };
        self.health.failed(reason, now)
    }

    /// The camera's state and viewers now, after `failure` (what [`RouteHealth::failed`] said).
    pub fn report(
        &mut self,
        state: CameraState,
        viewers: u64,
        failure: Option<HealthEvent>,
        now: Instant,
    ) -> HealthReport {
        let recovered = self.health.set_state(state, now);
        let changed = self.seen != Some((viewers, state));
        self.seen = Some((viewers, state));
        HealthReport { state, viewers, changed, logs: [failure, recovered] }
    }
}

/// What happened to one passthrough camera connection or session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassthroughEvent {
    SessionStarted,
    SessionEnded,
    Connecting,
    Connected,
    /// Its connect failed, with why in words when known.
    ConnectFailed(Option<String>),
    /// An open connection closed (`failed`: the camera closed or reset it).
    Closed {
        failed: bool,
    },
    /// A connection still opening was abandoned (its session ended).
    Abandoned,
    /// A connection's TLS or HTTP tunnel failed (a certificate not trusted, a refused tunnel):
    /// the camera's failure with why in words; `open`: it had been counted as open.
    LinkFailed {
        outcome: CameraOutcome,
        reason: String,
        open: bool,
    },
}

impl PassthroughEvent {
    /// Whether it may be a route's first on this shard (the others take away from one seen).
    pub fn opens(&self) -> bool {
        matches!(self, PassthroughEvent::SessionStarted | PassthroughEvent::Connecting)
    }
}

/// A passthrough route's camera side on one shard: each viewer has its own camera connection,
/// so the route is up while any of them is open (the scrape merges the shards' views).
#[derive(Debug, Clone)]
pub struct PassthroughHealth {
    route: RouteHealth,
    /// Camera connections open, and opening.
    open: u32,
    connecting: u32,
    /// Sessions on the route.
    viewers: u32,
}

impl PassthroughHealth {
    pub fn new(now: Instant) -> PassthroughHealth {
        PassthroughHealth { route: RouteHealth::new(now), open: 0, connecting: 0, viewers: 0 }
    }

    pub fn seen(&self) -> Option<(u64, CameraState)> {
        self.route.seen()
    }

    pub fn on_event(&mut self, event: PassthroughEvent, now: Instant) -> HealthReport {
        let mut failure = None;
        match event {
            PassthroughEvent::SessionStarted => self.viewers += 1,
            PassthroughEvent::SessionEnded => self.viewers = self.viewers.saturating_sub(1),
            PassthroughEvent::Connecting => self.connecting += 1,
            PassthroughEvent::Connected => {
                self.connecting = self.connecting.saturating_sub(1);
                self.open += 1;
            }
            PassthroughEvent::Abandoned => self.connecting = self.connecting.saturating_sub(1),
            PassthroughEvent::ConnectFailed(detail) => {
                self.connecting = self.connecting.saturating_sub(1);
                failure = self.route.failed(CameraOutcome::ConnectFailed, detail, now);
            }
            PassthroughEvent::LinkFailed { outcome, reason, open } => {
                if open {
                    self.open = self.open.saturating_sub(1);
                } else {
                    self.connecting = self.connecting.saturating_sub(1);
                }
                failure = self.route.failed(outcome, Some(reason), now);
            }
            PassthroughEvent::Closed { failed } => {
                self.open = self.open.saturating_sub(1);
                if failed && self.open == 0 {
                    failure = self.route.failed(CameraOutcome::ClosedByCamera, None, now);
                }
            }
        }
        let state = CameraState::of_passthrough(self.open, self.connecting, self.route.camera().failing());
        self.route.report(state, u64::from(self.viewers), failure, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_once_per_reason_not_per_retry_and_the_recovery_once() {
        let t0 = Instant::now();
        let mut h = CameraHealth::new(t0);
        assert_eq!(h.set_state(CameraState::Connecting, t0), None);
        assert_eq!(
            h.failed("connect_failed: refused".into(), t0),
            Some(HealthEvent::Failing { reason: "connect_failed: refused".into(), first: true })
        );
        assert_eq!(h.set_state(CameraState::Retrying, t0), None);
        for i in 1..20 {
            let t = t0 + Duration::from_secs(i);
            assert_eq!(h.set_state(CameraState::Connecting, t), None);
            assert_eq!(h.failed("connect_failed: refused".into(), t), None, "retry {i} logged again");
            assert_eq!(h.set_state(CameraState::Retrying, t), None);
        }
        // Another reason while still failing is news.
        let t = t0 + Duration::from_secs(30);
        assert_eq!(
            h.failed("auth_failed".into(), t),
            Some(HealthEvent::Failing { reason: "auth_failed".into(), first: false })
        );
        assert_eq!((h.state(), h.last_error(), h.failing()), (CameraState::Retrying, Some("auth_failed"), true));
        let up = t0 + Duration::from_secs(40);
        assert_eq!(
            h.set_state(CameraState::Ready, up),
            Some(HealthEvent::Recovered { failures: 21, down_for: Duration::from_secs(40) })
        );
        assert_eq!((h.since(), h.failing()), (up, false));
        // Up again without a failure in between: nothing to say.
        assert_eq!(h.set_state(CameraState::Connecting, up), None);
        assert_eq!(h.set_state(CameraState::Ready, up), None);
        // The next failure is a first one again, even for the old reason.
        assert!(matches!(h.failed("auth_failed".into(), up), Some(HealthEvent::Failing { first: true, .. })));
    }

    #[test]
    fn states_follow_the_camera_and_merge_towards_up() {
        assert_eq!(CameraState::of_shared(CameraPhase::Idle, false), CameraState::Idle);
        assert_eq!(CameraState::of_shared(CameraPhase::Idle, true), CameraState::Failed);
        assert_eq!(CameraState::of_shared(CameraPhase::Starting, true), CameraState::Connecting);
        assert_eq!(CameraState::of_shared(CameraPhase::Retrying, true), CameraState::Retrying);
        assert_eq!(CameraState::of_shared(CameraPhase::Playing, false), CameraState::Ready);
        assert_eq!(CameraState::of_passthrough(1, 3, true), CameraState::Ready);
        assert_eq!(CameraState::of_passthrough(0, 1, true), CameraState::Connecting);
        assert_eq!(CameraState::of_passthrough(0, 0, true), CameraState::Failed);
        assert_eq!(CameraState::of_passthrough(0, 0, false), CameraState::Idle);
        for s in CameraState::ALL {
            assert_eq!(s.merge(CameraState::Ready), CameraState::Ready);
            assert_eq!(CameraState::Idle.merge(s), s);
            assert_eq!(s.merge(s), s);
        }
        assert_eq!(CameraState::Failed.merge(CameraState::Retrying), CameraState::Retrying);
        assert!(!CameraOutcome::Completed.is_failure() && !CameraOutcome::Reloaded.is_failure());
        assert!(CameraOutcome::ConnectFailed.is_failure() && CameraOutcome::MediaTimeout.is_failure());
    }

    #[test]
    fn a_passthrough_route_is_up_while_one_connection_is_open_and_reports_only_changes() {
        let t0 = Instant::now();
        let mut p = PassthroughHealth::new(t0);
        let r = p.on_event(PassthroughEvent::SessionStarted, t0);
        assert_eq!((r.state, r.viewers, r.changed), (CameraState::Idle, 1, true));
        assert!(p.on_event(PassthroughEvent::Connecting, t0).state == CameraState::Connecting);
        let r = p.on_event(PassthroughEvent::ConnectFailed(Some("refused".into())), t0);
        assert_eq!(r.state, CameraState::Failed);
        assert_eq!(r.logs[0], Some(HealthEvent::Failing { reason: "connect_failed: refused".into(), first: true }));
        p.on_event(PassthroughEvent::Connecting, t0);
        let r = p.on_event(PassthroughEvent::Connected, t0);
        assert_eq!(r.state, CameraState::Ready);
        assert!(matches!(r.logs[1], Some(HealthEvent::Recovered { failures: 1, .. })));
        assert!(p.on_event(PassthroughEvent::SessionStarted, t0).changed, "another viewer");
        let r = p.on_event(PassthroughEvent::Closed { failed: false }, t0);
        assert_eq!((r.state, r.logs.clone()), (CameraState::Idle, [None, None]));
        assert_eq!(p.seen(), Some((2, CameraState::Idle)));
        assert!(PassthroughEvent::Connecting.opens() && !PassthroughEvent::Abandoned.opens());
    }

    #[test]
    fn a_passthrough_link_that_fails_at_tls_is_the_routes_failure_with_its_reason() {
        let t0 = Instant::now();
        let mut p = PassthroughHealth::new(t0);
        p.on_event(PassthroughEvent::SessionStarted, t0);
        p.on_event(PassthroughEvent::Connecting, t0);
        assert_eq!(p.on_event(PassthroughEvent::Connected, t0).state, CameraState::Ready);
        let reason = "TLS: the camera's certificate is not trusted".to_owned();
        let r = p.on_event(PassthroughEvent::LinkFailed { outcome: CameraOutcome::TlsFailed, reason, open: true }, t0);
        assert_eq!(r.state, CameraState::Failed, "no connection left open");
        let Some(HealthEvent::Failing { reason, first: true }) = &r.logs[0] else { panic!("{:?}", r.logs) };
        assert!(reason.contains("not trusted"), "{reason}");
        // A tunnel refused before it opened takes away from those opening, not from the open.
        p.on_event(PassthroughEvent::Connecting, t0);
        let refused =
            PassthroughEvent::LinkFailed { outcome: CameraOutcome::Refused, reason: "HTTP 403".into(), open: false };
        assert_eq!(p.on_event(refused, t0).state, CameraState::Failed, "nothing opening either");
    }
}

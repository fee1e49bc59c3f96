//! A shared route's camera health as the route reports it: the camera's state for
//! `relay_route_camera_state` and `/v1/cameras`, reported only when it or the viewer count
//! changes (never per packet), and the lines worth logging ([`CameraHealth`] decides which).
//! It outlives the route's camera sessions, so a camera that fails again after it was retired
//! is not news.

use std::time::Instant;

use crate::proto::camera_health::{CameraHealth, CameraState, HealthEvent};
use crate::proto::camera_session::{CameraOutcome, CameraPhase};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct RouteHealth {
    health: CameraHealth,
    /// Viewers and state as last reported.
    seen: Option<(u64, CameraState)>,
}

/// What one update found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HealthReport {
    pub state: CameraState,
    /// The state or the viewer count differs from the last report.
    pub changed: bool,
    pub logs: [Option<HealthEvent>; 2],
}

impl RouteHealth {
    pub fn new(now: Instant) -> RouteHealth {
        RouteHealth { health: CameraHealth::new(now), seen: None }
    }

    /// The camera health itself (state, since when, last error).
    pub fn camera(&self) -> &CameraHealth {
        &self.health
    }

    /// Viewers and state as last reported (re-exported when per-route series are turned on).
    pub fn seen(&self) -> Option<(u64, CameraState)> {
        self.seen
    }

    /// The camera moved on: its `phase` now, `viewers` attached, and how its last connection
    /// ended if that was a failure (with words given just before it: a connect error).
    pub(super) fn update(
        &mut self,
        phase: CameraPhase,
        viewers: u64,
        failure: Option<(CameraOutcome, Option<String>)>,
        now: Instant,
    ) -> HealthReport {
        let mut logs = [None, None];
        if let Some((outcome, detail)) = failure {
            let reason = match detail {
                Some(d) => format!("{}: {d}", outcome.label()),
                None => outcome.label().to_owned(),
            };
            logs[0] = self.health.failed(reason, now);
        }
        let state = CameraState::of_shared(phase, self.health.failing());
        logs[1] = self.health.set_state(state, now);
        let changed = self.seen != Some((viewers, state));
        self.seen = Some((viewers, state));
        HealthReport { state, changed, logs }
    }
}

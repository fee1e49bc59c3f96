//! One shard's counters and histograms. The shard is the only writer; the scraper only reads
//! (counters) or briefly locks to copy (histograms), so recording never waits on another core.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::Latency;
use super::{
    AuthFailure, CameraOutcome, CameraState, ConnKind, Direction, GopBound, Hist, Label, Rejection, SessionOutcome,
    UpstreamErrorKind,
};

/// One counter per value of a label enum, sized by it: `PerLabel<{ Rejection::COUNT }>`.
pub(super) type PerLabel<const N: usize> = [AtomicU64; N];

/// Counters indexed by label value. One cache-line-aligned block per shard, so two shards'
/// counters never share a line.
#[repr(align(128))]
#[derive(Debug)]
pub(super) struct Counters {
    pub sessions_started: AtomicU64,
    pub sessions_ended: PerLabel<{ SessionOutcome::COUNT }>,
    pub connections: PerLabel<{ ConnKind::COUNT }>,
    pub bytes: PerLabel<{ Direction::COUNT }>,
    pub frames: PerLabel<{ Direction::COUNT }>,
    pub frames_dropped: AtomicU64,
    pub rejections: PerLabel<{ Rejection::COUNT }>,
    pub upstream_errors: PerLabel<{ UpstreamErrorKind::COUNT }>,
    pub auth_failures: PerLabel<{ AuthFailure::COUNT }>,
    pub backpressure_pauses: AtomicU64,
    pub ring_copies: AtomicU64,
    pub ring_range_copies: AtomicU64,
    pub accept_errors: AtomicU64,
    /// Gauges kept as two counters (ups, downs), so a scrape sums shards without a sign and
    /// an up on one shard and a down on another still net out.
    pub cameras_up: AtomicU64,
    pub cameras_down: AtomicU64,
    pub camera_sessions: PerLabel<{ CameraOutcome::COUNT }>,
    pub camera_reconnects: AtomicU64,
    /// Camera connections opened with `upstream_insecure_tls` (no certificate check).
    pub upstream_insecure_tls: AtomicU64,
    pub gop_cache_overflows: PerLabel<{ GopBound::COUNT }>,
    pub viewers_attached: AtomicU64,
    pub viewers_detached: AtomicU64,
    /// Replicas of hot shared routes on this shard (`relay_replicas_active`, as ups and downs),
    /// links their home routes cut and links the replicas reopened.
    pub replicas_opened: AtomicU64,
    pub replicas_closed: AtomicU64,
    pub replica_links_cut: AtomicU64,
    pub replica_reconnects: AtomicU64,
}

/// A zeroed counter table (`Default` for arrays stops at 32 entries).
pub(super) fn zeroed<const N: usize>() -> PerLabel<N> {
    std::array::from_fn(|_| AtomicU64::new(0))
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            sessions_started: AtomicU64::new(0),
            sessions_ended: zeroed(),
            connections: zeroed(),
            bytes: zeroed(),
            frames: zeroed(),
            frames_dropped: AtomicU64::new(0),
            rejections: zeroed(),
            upstream_errors: zeroed(),
            auth_failures: zeroed(),
            backpressure_pauses: AtomicU64::new(0),
            ring_copies: AtomicU64::new(0),
            ring_range_copies: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            cameras_up: AtomicU64::new(0),
            cameras_down: AtomicU64::new(0),
            camera_sessions: zeroed(),
            camera_reconnects: AtomicU64::new(0),
            upstream_insecure_tls: AtomicU64::new(0),
            gop_cache_overflows: zeroed(),
            viewers_attached: AtomicU64::new(0),
            viewers_detached: AtomicU64::new(0),
            replicas_opened: AtomicU64::new(0),
            replicas_closed: AtomicU64::new(0),
            replica_links_cut: AtomicU64::new(0),
            replica_reconnects: AtomicU64::new(0),
        }
    }
}

#[derive(Debug)]
pub struct ShardMetrics {
    pub shard: usize,
    pub(super) counters: Counters,
    /// Locked by the shard for each observation and by the scraper only to copy.
    pub(super) latency: Mutex<Vec<Latency>>,
    /// This shard's GOP caches: the bytes they hold and the evictions (`relay_gop_cache_*`);
    /// the caches update it themselves as they take and give back memory.
    pub gop: std::sync::Arc<crate::proto::gop_budget::GopShardTally>,
    /// Per-route state for `relay_route_*{route}`, set by the shard only when a route's viewers
    /// or camera change (never per packet), and only when `[metrics] per_route` is on.
    pub(super) routes: Mutex<HashMap<String, RouteGauges>>,
    /// Shared routes of this shard whose fallback camera is live (`relay_route_camera_source`),
    /// set on each switch, only when `[metrics] per_route` is on.
    pub(super) on_fallback: Mutex<std::collections::HashSet<String>>,
}

/// One route's series on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RouteGauges {
    pub viewers: u64,
    pub state: CameraState,
}

fn bump(c: &AtomicU64, n: u64) {
    // Single writer per shard: relaxed is enough; readers only need eventual values.
    c.fetch_add(n, Ordering::Relaxed);
}

impl ShardMetrics {
    pub fn new(shard: usize) -> Self {
        ShardMetrics {
            shard,
            counters: Counters::default(),
            latency: Mutex::new((0..Hist::SLOTS).map(|_| Latency::default()).collect()),
            routes: Mutex::new(HashMap::new()),
            gop: Default::default(),
            on_fallback: Mutex::new(std::collections::HashSet::new()),
        }
    }

    pub fn connection_accepted(&self, kind: ConnKind) {
        bump(&self.counters.connections[kind.index()], 1);
    }

    pub fn session_started(&self) {
        bump(&self.counters.sessions_started, 1);
    }

    pub fn session_ended(&self, outcome: SessionOutcome) {
        bump(&self.counters.sessions_ended[outcome.index()], 1);
    }

    pub fn bytes(&self, dir: Direction, n: u64) {
        bump(&self.counters.bytes[dir.index()], n);
    }

    pub fn frames(&self, dir: Direction, n: u64) {
        bump(&self.counters.frames[dir.index()], n);
    }

    pub fn frames_dropped(&self, n: u64) {
        bump(&self.counters.frames_dropped, n);
    }

    pub fn rejected(&self, reason: Rejection) {
        bump(&self.counters.rejections[reason.index()], 1);
    }

    pub fn upstream_error(&self, reason: UpstreamErrorKind) {
        bump(&self.counters.upstream_errors[reason.index()], 1);
    }

    /// `relay_auth_failures_total{reason}`.
    pub fn auth_failure(&self, reason: AuthFailure) {
        bump(&self.counters.auth_failures[reason.index()], 1);
    }

    /// `relay_backpressure_pauses_total`: a viewer fell `max_viewer_backlog_bytes` behind and
    /// its camera's reads were paused.
    pub fn backpressure_pause(&self) {
        bump(&self.counters.backpressure_pauses, 1);
    }

    /// Ring buffers whose queued media was copied out to relieve ring pressure.
    pub fn ring_buffers_copied_out(&self, n: u64) {
        bump(&self.counters.ring_copies, n);
    }

    /// Media ranges copied because their receive buffer already had `MAX_BUFFER_REFS`
    /// references (a camera sending tiny frames).
    pub fn ring_ranges_copied(&self, n: u64) {
        bump(&self.counters.ring_range_copies, n);
    }

    /// A listener's accept failed (out of descriptors or otherwise); it is re-armed at the next
    /// tick.
    pub fn accept_error(&self) {
        bump(&self.counters.accept_errors, 1);
    }

    /// `relay_accept_errors_total` of this shard.
    pub fn accept_errors(&self) -> u64 {
        self.counters.accept_errors.load(Ordering::Relaxed)
    }

    /// A shared camera started playing: `relay_cameras_active` +1.
    pub fn camera_up(&self) {
        bump(&self.counters.cameras_up, 1);
    }

    /// A shared camera stopped playing: `relay_cameras_active` -1.
    pub fn camera_down(&self) {
        bump(&self.counters.cameras_down, 1);
    }

    /// One camera connection ended: `relay_camera_sessions_total{outcome}`.
    pub fn camera_session_ended(&self, outcome: CameraOutcome) {
        bump(&self.counters.camera_sessions[outcome.index()], 1);
    }

    /// A reconnect attempt to a shared camera started: `relay_camera_reconnects_total`.
    pub fn camera_reconnect(&self) {
        bump(&self.counters.camera_reconnects, 1);
    }

    /// A camera connection opened without checking the camera's certificate.
    pub fn upstream_insecure_tls(&self) {
        bump(&self.counters.upstream_insecure_tls, 1);
    }

    /// A shared camera's GOP cache outgrew `bound` and was dropped.
    pub fn gop_cache_overflow(&self, bound: GopBound) {
        bump(&self.counters.gop_cache_overflows[bound.index()], 1);
    }

    /// A viewer joined a shared route: `relay_viewers_active` +1.
    pub fn viewer_attached(&self) {
        bump(&self.counters.viewers_attached, 1);
    }

    /// A viewer left a shared route: `relay_viewers_active` -1.
    pub fn viewer_detached(&self) {
        bump(&self.counters.viewers_detached, 1);
    }

    /// A replica of a hot shared route was made on this shard: `relay_replicas_active` +1.
    pub fn replica_opened(&self) {
        bump(&self.counters.replicas_opened, 1);
    }

    /// A replica was dropped: `relay_replicas_active` -1.
    pub fn replica_closed(&self) {
        bump(&self.counters.replicas_closed, 1);
    }

    /// A home route cut a replica's link: `relay_replica_links_cut_total`.
    pub fn replica_link_cut(&self) {
        bump(&self.counters.replica_links_cut, 1);
    }

    /// A replica reopens its link to its home route: `relay_replica_reconnects_total`.
    pub fn replica_reconnect(&self) {
        bump(&self.counters.replica_reconnects, 1);
    }

    /// Replicas on this shard now (made minus dropped).
    pub fn replicas_active(&self) -> u64 {
        let c = &self.counters;
        c.replicas_opened.load(Ordering::Relaxed).saturating_sub(c.replicas_closed.load(Ordering::Relaxed))
    }

    /// Shared cameras playing on this shard now (ups minus downs).
    pub fn cameras_active(&self) -> u64 {
        let c = &self.counters;
        c.cameras_up.load(Ordering::Relaxed).saturating_sub(c.cameras_down.load(Ordering::Relaxed))
    }

    /// Viewers on shared routes of this shard now (attached minus detached).
    pub fn viewers_active(&self) -> u64 {
        let c = &self.counters;
        c.viewers_attached.load(Ordering::Relaxed).saturating_sub(c.viewers_detached.load(Ordering::Relaxed))
    }

    /// `relay_route_viewers{route}`, `relay_route_camera_up{route}` and
    /// `relay_route_camera_state{route,state}` for `route` from now on, as this shard sees it
    /// (replacing what it set before). Call on changes only, and only with `[metrics] per_route`
    /// on. Which routes are exported is the configuration's ([`super::MetricsHub::set_routes`]):
    /// a route this shard never set is exported idle.
    pub fn set_route(&self, route: &str, viewers: u64, state: CameraState) {
        let gauges = RouteGauges { viewers, state };
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        // Allocates the key only the first time a route is set.
        match routes.get_mut(route) {
            Some(r) => *r = gauges,
            None => {
                routes.insert(route.to_owned(), gauges);
            }
        }
    }

    /// Forgets what this shard set for routes `keep` rejects (removed by a reload).
    pub fn retain_routes(&self, mut keep: impl FnMut(&str) -> bool) {
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).retain(|r, _| keep(r));
        self.on_fallback.lock().unwrap_or_else(|e| e.into_inner()).retain(|r| keep(r));
    }

    /// `relay_route_camera_source{route,source}`: which of `route`'s cameras is live now, as
    /// this shard (the shared route's own) sees it. Call on switches only, with `per_route` on.
    pub fn set_route_source(&self, route: &str, source: crate::proto::camera_source::Source) {
        let mut on = self.on_fallback.lock().unwrap_or_else(|e| e.into_inner());
        match source {
            crate::proto::camera_source::Source::Fallback => {
                if !on.contains(route) {
                    on.insert(route.to_owned());
                }
            }
            crate::proto::camera_source::Source::Primary => {
                on.remove(route);
            }
        }
    }

    /// Whether this shard has `route` on its fallback camera.
    pub(super) fn route_on_fallback(&self, route: &str) -> bool {
        self.on_fallback.lock().unwrap_or_else(|e| e.into_inner()).contains(route)
    }

    /// Merges this shard's view of `route` into `merged` (viewers added, states merged).
    pub(super) fn merge_route_into(&self, route: &str, merged: &mut (u64, CameraState)) {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = routes.get(route) {
            merged.0 += r.viewers;
            merged.1 = merged.1.merge(r.state);
        }
    }

    pub fn observe(&self, hist: Hist, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        // Uncontended except for the instant a scrape copies the table.
        let mut table = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        table[hist.slot()].record(us);
    }

    /// `n` observations of one duration under one lock (the packets of one forwarded chunk).
    pub fn observe_n(&self, hist: Hist, d: Duration, n: u32) {
        if n == 0 {
            return;
        }
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let mut table = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        table[hist.slot()].record_n(us, u64::from(n));
    }

    /// Sessions open on this shard now.
    pub fn sessions_active(&self) -> u64 {
        let ended: u64 = self.counters.sessions_ended.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        self.counters.sessions_started.load(Ordering::Relaxed).saturating_sub(ended)
    }

    /// Adds this shard's histograms into `merged` (one per slot) under the lock: no copy of
    /// the table, which would cost as much again and allocate.
    pub(super) fn add_latency_into(&self, merged: &mut [Latency]) {
        let table = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for (m, h) in merged.iter_mut().zip(table.iter()) {
            m.add(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_value_has_its_own_counter() {
        let m = ShardMetrics::new(0);
        for r in Rejection::ALL {
            m.rejected(*r);
        }
        for a in AuthFailure::ALL {
            m.auth_failure(*a);
        }
        for o in CameraOutcome::ALL {
            m.camera_session_ended(o);
        }
        let ones = |t: &[AtomicU64]| t.iter().all(|c| c.load(Ordering::Relaxed) == 1);
        assert!(ones(&m.counters.rejections) && ones(&m.counters.auth_failures));
        assert!(ones(&m.counters.camera_sessions));
    }

    #[test]
    fn sessions_active_counts_started_minus_ended() {
        let m = ShardMetrics::new(0);
        m.session_started();
        m.session_started();
        m.session_ended(SessionOutcome::Completed);
        assert_eq!(m.sessions_active(), 1);
    }

    #[test]
    fn cameras_and_viewers_active_count_ups_minus_downs() {
        let m = ShardMetrics::new(0);
        m.camera_up();
        m.camera_up();
        m.camera_down();
        m.viewer_attached();
        m.viewer_attached();
        m.viewer_attached();
        m.viewer_detached();
        assert_eq!((m.cameras_active(), m.viewers_active()), (1, 2));
    }

    #[test]
    fn set_route_replaces_and_retain_routes_forgets() {
        let m = ShardMetrics::new(0);
        m.set_route("cam1", 4, CameraState::Connecting);
        m.set_route("cam1", 5, CameraState::Ready);
        m.set_route("cam2", 1, CameraState::Retrying);
        let route = |m: &ShardMetrics, r: &str| {
            let mut merged = (0, CameraState::Idle);
            m.merge_route_into(r, &mut merged);
            merged
        };
        assert_eq!(route(&m, "cam1"), (5, CameraState::Ready));
        assert_eq!(route(&m, "cam2"), (1, CameraState::Retrying));
        m.retain_routes(|r| r != "cam1");
        assert_eq!(route(&m, "cam1"), (0, CameraState::Idle));
        assert_eq!(route(&m, "cam2"), (1, CameraState::Retrying));
    }
}

//! The Prometheus exposition of a [`super::MetricsHub`]: a custom collector over the shards'
//! own counters and HDR histograms, encoded by the `prometheus` crate.
//!
//! The shards record into plain atomics and HDR histograms (one writer each, nothing shared
//! between cores); at scrape time this collector sums the counters, merges the histograms and
//! hands the registry metric families. Every value of every label is exported from the start,
//! at 0, so an alert on a reason that has not happened yet already sees its series.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary,
};

use super::histogram::Latency;
use super::hub::HubState;
use super::shard_metrics::Counters;
use super::{
    AuthFailure, CameraOutcome, CameraState, ConnKind, Direction, FIXED_HISTS, GopBound, Hist, Label, PortDrop,
    Rejection, RtspMethod, SessionOutcome, ShardStop, UpstreamErrorKind, process,
};
use crate::proto::camera_source::Source;

/// Bucket bounds in seconds: media forwarding is sub-millisecond; control-plane steps are
/// milliseconds to seconds.
const FORWARD_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
const CONTROL_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// A viewer's first picture: a GOP-cache hit is milliseconds, a wait for the next keyframe up to
/// a GOP (seconds).
const FIRST_FRAME_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0];
/// The label of the per-route families.
const ROUTE_LABEL: &str = "route";
/// The one-hot per-route state family (labels `route` and `state`).
const ROUTE_STATE_FAMILY: &str = "relay_route_camera_state";
/// The one-hot per-route source family (labels `route` and `source`).
const ROUTE_SOURCE_FAMILY: &str = "relay_route_camera_source";
const QUANTILES: &[f64] = &[0.5, 0.9, 0.99, 0.999];

fn hist_name(h: Hist) -> (&'static str, &'static str, &'static [f64]) {
    match h {
        Hist::Pairing => ("relay_pairing_seconds", "Tunnel GET accepted to POST bound.", CONTROL_BUCKETS),
        Hist::UpstreamConnect => ("relay_upstream_connect_seconds", "Camera TCP connect time.", CONTROL_BUCKETS),
        Hist::ForwardLatency => (
            "relay_forward_latency_seconds",
            "Per packet: the receive of camera media completing to the viewer's send completing.",
            FORWARD_BUCKETS,
        ),
        Hist::SessionSetup => ("relay_session_setup_seconds", "Tunnel GET accepted to PLAY answered.", CONTROL_BUCKETS),
        Hist::TimeToFirstFrame => (
            "relay_time_to_first_frame_seconds",
            "Viewer PLAY received to the first keyframe byte queued to it (shared routes).",
            FIRST_FRAME_BUCKETS,
        ),
        Hist::RtspRequest(_) => (
            "relay_rtsp_request_seconds",
            "RTSP request forwarded to the camera until its response was relayed (on shared routes: received until the relay answered it).",
            CONTROL_BUCKETS,
        ),
    }
}

/// The relay's metrics as one `prometheus` collector.
pub(super) struct RelayCollector {
    state: Arc<HubState>,
    descs: Vec<Desc>,
}

impl RelayCollector {
    pub fn new(state: Arc<HubState>) -> prometheus::Result<RelayCollector> {
        // Described by one collection, so the descriptors cannot disagree with what is
        // collected (the registry checks their names and labels).
        let descs = families(&state)
            .iter()
            .map(|f| {
                let labels = match f.get_metric().first() {
                    Some(m) => m.get_label().iter().map(|l| l.name().to_owned()).collect(),
                    // Only the per-route families can be empty (no route set yet).
                    None if f.name() == ROUTE_STATE_FAMILY => vec![ROUTE_LABEL.to_owned(), "state".to_owned()],
                    None if f.name() == ROUTE_SOURCE_FAMILY => vec![ROUTE_LABEL.to_owned(), "source".to_owned()],
                    None => vec![ROUTE_LABEL.to_owned()],
                };
                Desc::new(f.name().to_owned(), f.help().to_owned(), labels, HashMap::new())
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(RelayCollector { state, descs })
    }
}

impl std::fmt::Debug for RelayCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayCollector").field("families", &self.descs.len()).finish()
    }
}

impl Collector for RelayCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.state)
    }
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn labelled(labels: &[(&str, &str)]) -> Metric {
    Metric::from_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut l = LabelPair::default();
                l.set_name((*name).to_owned());
                l.set_value((*value).to_owned());
                l
            })
            .collect(),
    )
}

fn counter(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = labelled(labels);
    m.set_counter(c);
    m
}

fn gauge(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = labelled(labels);
    m.set_gauge(g);
    m
}

/// A histogram over `buckets` (the encoder adds `+Inf`), counted from the HDR histogram.
fn histogram(labels: &[(&str, &str)], buckets: &[f64], lat: &Latency) -> Metric {
    let mut h = Histogram::default();
    h.set_bucket(
        buckets
            .iter()
            .map(|le| {
                let mut b = Bucket::default();
                b.set_upper_bound(*le);
                b.set_cumulative_count(lat.count_at_or_below(*le));
                b
            })
            .collect(),
    );
    h.set_sample_count(lat.count());
    h.set_sample_sum(lat.sum_seconds());
    let mut m = labelled(labels);
    m.set_histogram(h);
    m
}

/// The quantiles the HDR histogram knows exactly, as a summary beside the histogram.
fn summary(labels: &[(&str, &str)], lat: &Latency) -> Metric {
    let mut s = Summary::default();
    s.set_quantile(
        QUANTILES
            .iter()
            .map(|q| {
                let mut v = Quantile::default();
                v.set_quantile(*q);
                v.set_value(lat.quantile_seconds(*q));
                v
            })
            .collect(),
    );
    s.set_sample_count(lat.count());
    s.set_sample_sum(lat.sum_seconds());
    let mut m = labelled(labels);
    m.set_summary(s);
    m
}

/// A counter family over label `L`, summed across shards: every value, zeros included.
fn counter_by<L: Label>(
    name: &str,
    help: &str,
    label: &str,
    state: &HubState,
    pick: impl Fn(&Counters) -> &[AtomicU64],
) -> MetricFamily {
    let metrics = L::ALL
        .iter()
        .map(|v| {
            let total: u64 = state.shards.iter().map(|s| pick(&s.counters)[v.index()].load(Ordering::Relaxed)).sum();
            counter(&[(label, v.as_str())], total as f64)
        })
        .collect();
    family(name, help, MetricType::COUNTER, metrics)
}

/// A gauge kept as ups and downs per shard: all ups minus all downs.
fn gauge_up_down(
    name: &str,
    help: &str,
    state: &HubState,
    up: impl Fn(&Counters) -> &AtomicU64,
    down: impl Fn(&Counters) -> &AtomicU64,
) -> MetricFamily {
    let sum = |f: &dyn Fn(&Counters) -> &AtomicU64| -> u64 {
        state.shards.iter().map(|s| f(&s.counters).load(Ordering::Relaxed)).sum()
    };
    // Read downs first: a down never precedes its up, so the difference cannot dip below the
    // truth by a pair that completed between the two reads.
    let downs = sum(&down);
    let ups = sum(&up);
    single_gauge(name, help, ups.saturating_sub(downs) as f64)
}

/// An unlabelled counter summed across shards.
fn counter_total(name: &str, help: &str, state: &HubState, pick: impl Fn(&Counters) -> &AtomicU64) -> MetricFamily {
    let total: u64 = state.shards.iter().map(|s| pick(&s.counters).load(Ordering::Relaxed)).sum();
    family(name, help, MetricType::COUNTER, vec![counter(&[], total as f64)])
}

fn single_gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    family(name, help, MetricType::GAUGE, vec![gauge(&[], value)])
}

/// The per-route families: one series per configured route (`[metrics] per_route`; none when it
/// is off), idle until a shard reports otherwise, the shards' views merged.
fn route_families(state: &HubState, out: &mut Vec<MetricFamily>) {
    let routes = state.routes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let merged: Vec<(u64, CameraState)> = routes
        .iter()
        .map(|r| {
            let mut m = (0, CameraState::Idle);
            for s in &state.shards {
                s.merge_route_into(r, &mut m);
            }
            m
        })
        .collect();
    let each = || routes.iter().zip(&merged);
    out.push(family(
        "relay_route_viewers",
        "Viewers of each route now (only with [metrics] per_route).",
        MetricType::GAUGE,
        each().map(|(r, (viewers, _))| gauge(&[(ROUTE_LABEL, r)], *viewers as f64)).collect(),
    ));
    out.push(family(
        "relay_route_camera_up",
        "1 while each route's camera plays (passthrough: while any of its camera connections is open); only with [metrics] per_route.",
        MetricType::GAUGE,
        each().map(|(r, (_, s))| gauge(&[(ROUTE_LABEL, r)], f64::from(u8::from(*s == CameraState::Ready)))).collect(),
    ));
    out.push(family(
        ROUTE_STATE_FAMILY,
        "Each route's camera state, one-hot over idle, connecting, ready, retrying, failed (only with [metrics] per_route).",
        MetricType::GAUGE,
        each()
            .flat_map(|(r, (_, s))| {
                CameraState::ALL.iter().map(move |v| {
                    gauge(&[(ROUTE_LABEL, r), ("state", v.label())], f64::from(u8::from(v == s)))
                })
            })
            .collect(),
    ));
    // A shared route's camera lives on one shard: the fallback is live if that shard says so.
    let on_fallback = |r: &str| state.shards.iter().any(|s| s.route_on_fallback(r));
    out.push(family(
        ROUTE_SOURCE_FAMILY,
        "Which of each route's cameras is live, one-hot over primary (its upstream) and fallback (only with [metrics] per_route).",
        MetricType::GAUGE,
        routes
            .iter()
            .flat_map(|r| {
                let live = if on_fallback(r) { Source::Fallback } else { Source::Primary };
                Source::ALL
                    .iter()
                    .map(move |v| gauge(&[(ROUTE_LABEL, r), ("source", v.label())], f64::from(u8::from(*v == live))))
            })
            .collect(),
    ));
}

/// `relay_config_*`: whether the configuration's last load was taken, and when one last was.
fn reload_families(state: &HubState, out: &mut Vec<MetricFamily>) {
    let r = &state.reloads;
    out.push(single_gauge(
        "relay_config_last_reload_successful",
        "1 when the last configuration load (start-up or reload) was taken, 0 when it was rejected.",
        f64::from(u8::from(r.last_successful.load(Ordering::Relaxed))),
    ));
    out.push(single_gauge(
        "relay_config_last_reload_success_timestamp_seconds",
        "When the configuration in force was loaded (Unix time).",
        r.last_success_unix.load(Ordering::Relaxed) as f64,
    ));
    out.push(family(
        "relay_config_reloads_total",
        "Configuration reloads asked for.",
        MetricType::COUNTER,
        vec![counter(&[], r.attempts.load(Ordering::Relaxed) as f64)],
    ));
    out.push(family(
        "relay_config_reload_failures_total",
        "Configuration reloads rejected (the running configuration stayed).",
        MetricType::COUNTER,
        vec![counter(&[], r.failures.load(Ordering::Relaxed) as f64)],
    ));
}

/// Every family, read from the shards now.
fn families(state: &HubState) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(40);
    out.push(family(
        "relay_build_info",
        "Build information.",
        MetricType::GAUGE,
        vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    ));
    out.push(single_gauge("relay_shards", "io_uring shards.", state.shards.len() as f64));
    out.push(single_gauge(
        "relay_ready",
        "1 when listeners are bound and every shard runs.",
        f64::from(u8::from(state.ready())),
    ));
    out.push(single_gauge("relay_uptime_seconds", "Seconds since start.", state.started.elapsed().as_secs_f64()));
    reload_families(state, &mut out);

    let active: u64 = state.shards.iter().map(|s| s.sessions_active()).sum();
    out.push(single_gauge("relay_sessions_active", "Sessions open now.", active as f64));
    out.push(counter_by::<SessionOutcome>(
        "relay_sessions_total",
        "Sessions ended, by outcome.",
        "outcome",
        state,
        |c| &c.sessions_ended,
    ));
    out.push(counter_by::<ConnKind>(
        "relay_connections_total",
        "Connections accepted (or opened to cameras), by kind.",
        "kind",
        state,
        |c| &c.connections,
    ));
    out.push(counter_by::<Direction>("relay_bytes_total", "Bytes relayed, by direction.", "direction", state, |c| {
        &c.bytes
    }));
    out.push(counter_by::<Direction>(
        "relay_frames_total",
        "Interleaved frames relayed, by direction.",
        "direction",
        state,
        |c| &c.frames,
    ));
    out.push(gauge_up_down(
        "relay_cameras_active",
        "Shared cameras playing now.",
        state,
        |c| &c.cameras_up,
        |c| &c.cameras_down,
    ));
    out.push(counter_by::<CameraOutcome>(
        "relay_camera_sessions_total",
        "Shared camera connections ended, by outcome.",
        "outcome",
        state,
        |c| &c.camera_sessions,
    ));
    out.push(counter_total("relay_camera_reconnects_total", "Reconnect attempts to shared cameras.", state, |c| {
        &c.camera_reconnects
    }));
    out.push(gauge_up_down(
        "relay_replicas_active",
        "Replicas of hot shared routes ([runtime] hot_route_viewers), each serving its shard's viewers of the route.",
        state,
        |c| &c.replicas_opened,
        |c| &c.replicas_closed,
    ));
    out.push(counter_total(
        "relay_replica_links_cut_total",
        "Replica links a hot route's home cut (replica too far behind, camera changed, route closed).",
        state,
        |c| &c.replica_links_cut,
    ));
    out.push(counter_total(
        "relay_replica_reconnects_total",
        "Reconnects of replicas to their home routes.",
        state,
        |c| &c.replica_reconnects,
    ));
    out.push(counter_total(
        "relay_upstream_insecure_tls_total",
        "Camera connections opened with upstream_insecure_tls (the certificate not checked).",
        state,
        |c| &c.upstream_insecure_tls,
    ));
    out.push(counter_by::<GopBound>(
        "relay_gop_cache_overflows_total",
        "Shared cameras' GOP caches dropped for outgrowing a bound ([limits] gop_cache_bytes or gop_cache_packets).",
        "bound",
        state,
        |c| &c.gop_cache_overflows,
    ));
    let gop = |f: fn(&crate::proto::gop_budget::GopShardTally) -> &AtomicU64| -> u64 {
        state.shards.iter().map(|s| f(&s.gop).load(Ordering::Relaxed)).sum()
    };
    out.push(single_gauge(
        "relay_gop_cache_bytes",
        "Memory shared cameras' GOP caches hold now, across shards (against [limits] gop_cache_total_bytes).",
        gop(|t| &t.bytes) as f64,
    ));
    out.push(family(
        "relay_gop_cache_evictions_total",
        "GOP caches dropped, or not started at a keyframe, to keep within [limits] gop_cache_total_bytes.",
        MetricType::COUNTER,
        vec![counter(&[], gop(|t| &t.evictions) as f64)],
    ));
    out.push(gauge_up_down(
        "relay_viewers_active",
        "Viewers on shared routes now.",
        state,
        |c| &c.viewers_attached,
        |c| &c.viewers_detached,
    ));
    route_families(state, &mut out);
    out.push(counter_total(
        "relay_frames_dropped_total",
        "Interleaved frames dropped: no peer to take them, or a slow viewer of a shared camera skipped to the next keyframe.",
        state,
        |c| &c.frames_dropped,
    ));
    out.push(counter_by::<Rejection>("relay_rejections_total", "Input refused, by reason.", "reason", state, |c| {
        &c.rejections
    }));
    out.push(counter_by::<UpstreamErrorKind>(
        "relay_upstream_errors_total",
        "Camera failures, by reason.",
        "reason",
        state,
        |c| &c.upstream_errors,
    ));
    out.push(counter_by::<AuthFailure>(
        "relay_auth_failures_total",
        "Failed viewer authentications, by reason.",
        "reason",
        state,
        |c| &c.auth_failures,
    ));
    out.push(counter_total(
        "relay_backpressure_pauses_total",
        "Camera reads paused because a viewer fell behind.",
        state,
        |c| &c.backpressure_pauses,
    ));
    out.push(counter_total(
        "relay_ring_buffers_copied_total",
        "Receive buffers copied out of slow viewers' queues under ring pressure.",
        state,
        |c| &c.ring_copies,
    ));
    out.push(counter_total(
        "relay_ring_ranges_copied_total",
        "Media ranges copied because their receive buffer already backed the most queued sends allowed.",
        state,
        |c| &c.ring_range_copies,
    ));
    out.push(counter_total(
        "relay_accept_errors_total",
        "Failed accepts (the listener is re-armed at the next tick).",
        state,
        |c| &c.accept_errors,
    ));
    out.push(family(
        "relay_metrics_requests_dropped_total",
        "Metrics-port connections closed without an answer (deadline, shed to make room) or refused (too_large).",
        MetricType::COUNTER,
        PortDrop::ALL
            .iter()
            .map(|why| {
                counter(&[("reason", why.as_str())], state.port_drops[why.index()].load(Ordering::Relaxed) as f64)
            })
            .collect(),
    ));

    out.push(family(
        "relay_shard_stops_total",
        "Shards that stopped on their own (the relay turns unready and exits after draining the others), by reason.",
        MetricType::COUNTER,
        ShardStop::ALL
            .iter()
            .map(|why| {
                counter(&[("reason", why.as_str())], state.shard_stops[why.index()].load(Ordering::Relaxed) as f64)
            })
            .collect(),
    ));

    let shard_ids: Vec<String> = state.shards.iter().map(|s| s.shard.to_string()).collect();
    out.push(family(
        "relay_shard_sessions_active",
        "Sessions open now, per shard.",
        MetricType::GAUGE,
        state
            .shards
            .iter()
            .zip(&shard_ids)
            .map(|(s, id)| gauge(&[("shard", id)], s.sessions_active() as f64))
            .collect(),
    ));
    out.push(family(
        "relay_shard_bytes_total",
        "Bytes relayed, per shard and direction.",
        MetricType::COUNTER,
        state
            .shards
            .iter()
            .zip(&shard_ids)
            .flat_map(|(s, id)| {
                Direction::ALL.iter().map(move |d| {
                    let n = s.counters.bytes[d.index()].load(Ordering::Relaxed);
                    counter(&[("shard", id), ("direction", d.as_str())], n as f64)
                })
            })
            .collect(),
    ));

    // Histograms: merged across shards, each exported with its quantiles beside it.
    let mut merged: Vec<Latency> = (0..Hist::SLOTS).map(|_| Latency::default()).collect();
    for s in &state.shards {
        s.add_latency_into(&mut merged);
    }
    for h in FIXED_HISTS {
        let (name, help, buckets) = hist_name(h);
        let lat = &merged[h.slot()];
        out.push(family(name, help, MetricType::HISTOGRAM, vec![histogram(&[], buckets, lat)]));
        out.push(quantiles_family(name, vec![summary(&[], lat)]));
    }
    let (name, help, buckets) = hist_name(Hist::RtspRequest(RtspMethod::Options));
    let methods = || RtspMethod::ALL.iter().map(|m| ([("method", m.as_str())], &merged[Hist::RtspRequest(*m).slot()]));
    out.push(family(
        name,
        help,
        MetricType::HISTOGRAM,
        methods().map(|(l, lat)| histogram(&l, buckets, lat)).collect(),
    ));
    out.push(quantiles_family(name, methods().map(|(l, lat)| summary(&l, lat)).collect()));

    if let Some(v) = process::cpu_seconds() {
        out.push(family(
            "process_cpu_seconds_total",
            "User and system CPU time spent in seconds.",
            MetricType::COUNTER,
            vec![counter(&[], v)],
        ));
    }
    if let Some(v) = process::resident_bytes() {
        out.push(single_gauge("process_resident_memory_bytes", "Resident memory size in bytes.", v as f64));
    }
    if let Some(v) = process::open_fds() {
        out.push(single_gauge("process_open_fds", "Number of open file descriptors.", v as f64));
    }
    if let Some(v) = process::max_fds() {
        out.push(single_gauge("process_max_fds", "Maximum number of open file descriptors.", v as f64));
    }
    out
}

/// `relay_X_quantiles_seconds`, the summary beside histogram `relay_X_seconds`.
fn quantiles_family(hist: &str, metrics: Vec<Metric>) -> MetricFamily {
    let name = format!("{}_quantiles_seconds", hist.trim_end_matches("_seconds"));
    family(&name, &format!("Quantiles of {hist} since start."), MetricType::SUMMARY, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{MetricsHub, ShardMetrics};
    use std::sync::Arc;
    use std::time::Duration;

    fn hub_with_data() -> MetricsHub {
        let shards: Vec<_> = (0..2).map(|i| Arc::new(ShardMetrics::new(i))).collect();
        for s in &shards {
            s.session_started();
            s.bytes(Direction::ToViewer, 1000);
            s.rejected(Rejection::BadCookie);
            s.observe(Hist::ForwardLatency, Duration::from_micros(80));
            s.observe(Hist::RtspRequest(RtspMethod::Play), Duration::from_millis(3));
            s.camera_up();
            s.viewer_attached();
            s.set_route("/cam1", 1, CameraState::Ready);
            s.observe(Hist::TimeToFirstFrame, Duration::from_millis(40));
        }
        shards[1].session_ended(SessionOutcome::Completed);
        let hub = MetricsHub::new(shards);
        hub.set_routes(["/cam1".to_owned(), "/idle".to_owned()]);
        hub
    }

    #[test]
    fn counters_merge_across_shards() {
        let text = hub_with_data().render();
        for line in [
            "relay_sessions_active 1",
            "relay_sessions_total{outcome=\"completed\"} 1",
            "relay_bytes_total{direction=\"to_viewer\"} 2000",
            "relay_rejections_total{reason=\"bad_cookie\"} 2",
            "relay_rejections_total{reason=\"max_sessions\"} 0",
            "relay_shard_sessions_active{shard=\"1\"} 0",
            "relay_forward_latency_seconds_bucket{le=\"0.0001\"} 2",
            "relay_forward_latency_seconds_bucket{le=\"0.00005\"} 0",
            "relay_forward_latency_seconds_count 2",
            "relay_rtsp_request_seconds_bucket{method=\"PLAY\",le=\"0.005\"} 2",
            "relay_rtsp_request_seconds_count{method=\"OPTIONS\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        assert!(text.contains("relay_forward_latency_quantiles_seconds{quantile=\"0.99\"} 0.00008"));
    }

    #[test]
    fn every_label_value_is_exported_at_zero_from_the_start() {
        let text = MetricsHub::new(vec![Arc::new(ShardMetrics::new(0))]).render();
        fn all<L: Label>(text: &str, series: &str, label: &str) {
            for v in L::ALL {
                let line = format!("{series}{{{label}=\"{}\"}} 0", v.as_str());
                assert!(text.lines().any(|l| l == line), "missing {line:?}");
            }
        }
        all::<SessionOutcome>(&text, "relay_sessions_total", "outcome");
        all::<ConnKind>(&text, "relay_connections_total", "kind");
        all::<Direction>(&text, "relay_bytes_total", "direction");
        all::<Direction>(&text, "relay_frames_total", "direction");
        all::<Rejection>(&text, "relay_rejections_total", "reason");
        all::<UpstreamErrorKind>(&text, "relay_upstream_errors_total", "reason");
        all::<AuthFailure>(&text, "relay_auth_failures_total", "reason");
        all::<PortDrop>(&text, "relay_metrics_requests_dropped_total", "reason");
        all::<ShardStop>(&text, "relay_shard_stops_total", "reason");
        all::<RtspMethod>(&text, "relay_rtsp_request_seconds_count", "method");
        all::<RtspMethod>(&text, "relay_rtsp_request_quantiles_seconds_count", "method");
        all::<CameraOutcome>(&text, "relay_camera_sessions_total", "outcome");
        all::<GopBound>(&text, "relay_gop_cache_overflows_total", "bound");
        for line in [
            "relay_cameras_active 0",
            "relay_viewers_active 0",
            "relay_camera_reconnects_total 0",
            "relay_frames_dropped_total 0",
            "relay_time_to_first_frame_seconds_count 0",
            "relay_time_to_first_frame_seconds_bucket{le=\"0.001\"} 0",
            "relay_time_to_first_frame_seconds_bucket{le=\"10\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        // No route was set: the per-route families are absent, not exported empty.
        assert!(!text.contains("relay_route_"), "{text}");
    }

    /// The lines of `text` for one family's samples (`name` then `{` or a space).
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
            .collect()
    }

    #[test]
    fn shared_camera_gauges_counters_and_first_frame_histogram_move_and_merge() {
        let shards: Vec<_> = (0..2).map(|i| Arc::new(ShardMetrics::new(i))).collect();
        let hub = MetricsHub::new(shards.clone());
        shards[0].camera_up();
        shards[1].camera_up();
        shards[1].camera_down();
        shards[1].camera_up();
        for _ in 0..5 {
            shards[0].viewer_attached();
        }
        shards[1].viewer_attached();
        shards[0].viewer_detached();
        shards[0].camera_session_ended(CameraOutcome::MediaTimeout);
        shards[1].camera_session_ended(CameraOutcome::MediaTimeout);
        shards[1].camera_session_ended(CameraOutcome::ClosedByCamera);
        shards[0].camera_reconnect();
        shards[1].camera_reconnect();
        shards[1].camera_reconnect();
        shards[0].rejected(Rejection::SlowViewer);
        shards[1].session_started();
        shards[1].session_ended(SessionOutcome::CameraChanged);
        shards[0].frames_dropped(7);
        shards[1].gop_cache_overflow(GopBound::Packets);
        shards[0].gop.bytes.fetch_add(300, Ordering::Relaxed);
        shards[1].gop.bytes.fetch_add(200, Ordering::Relaxed);
        shards[1].gop.evicted(2);
        shards[0].observe(Hist::TimeToFirstFrame, Duration::from_millis(40));
        shards[1].observe(Hist::TimeToFirstFrame, Duration::from_millis(1500));
        assert_eq!((shards[1].cameras_active(), shards[0].viewers_active()), (1, 4));

        let text = hub.render();
        for line in [
            "relay_cameras_active 2",
            "relay_viewers_active 5",
            "relay_camera_sessions_total{outcome=\"media_timeout\"} 2",
            "relay_camera_sessions_total{outcome=\"closed_by_camera\"} 1",
            "relay_camera_sessions_total{outcome=\"completed\"} 0",
            "relay_camera_reconnects_total 3",
            "relay_gop_cache_overflows_total{bound=\"packets\"} 1",
            "relay_gop_cache_overflows_total{bound=\"bytes\"} 0",
            "relay_gop_cache_bytes 500",
            "relay_gop_cache_evictions_total 2",
            "relay_rejections_total{reason=\"slow_viewer\"} 1",
            "relay_sessions_total{outcome=\"camera_changed\"} 1",
            "relay_frames_dropped_total 7",
            "relay_time_to_first_frame_seconds_bucket{le=\"0.025\"} 0",
            "relay_time_to_first_frame_seconds_bucket{le=\"0.05\"} 1",
            "relay_time_to_first_frame_seconds_bucket{le=\"1\"} 1",
            "relay_time_to_first_frame_seconds_bucket{le=\"2\"} 2",
            "relay_time_to_first_frame_seconds_count 2",
            "relay_time_to_first_frame_seconds_sum 1.54",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }

        // Every down after its up: the gauges return to 0, never below.
        shards[0].camera_down();
        shards[1].camera_down();
        shards[1].camera_down();
        shards[0].viewer_detached();
        for _ in 0..4 {
            shards[1].viewer_detached();
        }
        let text = hub.render();
        assert_eq!(samples(&text, "relay_cameras_active"), ["relay_cameras_active 0"]);
        assert_eq!(samples(&text, "relay_viewers_active"), ["relay_viewers_active 0"]);
    }

    /// `relay_route_camera_source`: every configured route on its primary until the shard of a
    /// shared route says its fallback is live, and back.
    #[test]
    fn each_route_says_which_of_its_cameras_is_live() {
        use crate::proto::camera_source::Source;
        let shards: Vec<_> = (0..2).map(|i| Arc::new(ShardMetrics::new(i))).collect();
        let hub = MetricsHub::new(shards.clone());
        hub.set_routes(["/cam1".to_owned(), "/cam2".to_owned()]);
        let live = |hub: &MetricsHub| -> Vec<String> {
            let text = hub.render();
            samples(&text, "relay_route_camera_source")
                .into_iter()
                .filter(|l| l.ends_with(" 1"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            live(&hub),
            [
                "relay_route_camera_source{route=\"/cam1\",source=\"primary\"} 1",
                "relay_route_camera_source{route=\"/cam2\",source=\"primary\"} 1"
            ]
        );
        shards[1].set_route_source("/cam2", Source::Fallback);
        assert_eq!(live(&hub)[1], "relay_route_camera_source{route=\"/cam2\",source=\"fallback\"} 1");
        assert_eq!(samples(&hub.render(), "relay_route_camera_source").len(), 4, "one-hot: two series per route");
        shards[1].set_route_source("/cam2", Source::Primary);
        assert_eq!(live(&hub)[1], "relay_route_camera_source{route=\"/cam2\",source=\"primary\"} 1");
        assert!(hub.render().contains("# TYPE relay_route_camera_source gauge"));
    }

    #[test]
    fn every_configured_route_has_its_series_from_the_start_merged_over_shards_and_following_reloads() {
        let shards: Vec<_> = (0..2).map(|i| Arc::new(ShardMetrics::new(i))).collect();
        let hub = MetricsHub::new(shards.clone());
        hub.set_routes(["/cam1".to_owned(), "/lobby/door".to_owned()]);
        // Nothing happened on any shard yet: both routes are there, idle.
        let text = hub.render();
        assert_eq!(
            samples(&text, "relay_route_camera_up"),
            ["relay_route_camera_up{route=\"/cam1\"} 0", "relay_route_camera_up{route=\"/lobby/door\"} 0"]
        );
        assert_eq!(
            samples(&text, "relay_route_camera_state")
                .into_iter()
                .filter(|l| l.contains("/lobby/door"))
                .collect::<Vec<_>>(),
            [
                "relay_route_camera_state{route=\"/lobby/door\",state=\"connecting\"} 0",
                "relay_route_camera_state{route=\"/lobby/door\",state=\"failed\"} 0",
                "relay_route_camera_state{route=\"/lobby/door\",state=\"idle\"} 1",
                "relay_route_camera_state{route=\"/lobby/door\",state=\"ready\"} 0",
                "relay_route_camera_state{route=\"/lobby/door\",state=\"retrying\"} 0",
            ]
        );

        shards[0].set_route("/cam1", 9, CameraState::Connecting);
        // Set again: replaced, not added.
        shards[0].set_route("/cam1", 3, CameraState::Ready);
        shards[1].set_route("/cam1", 2, CameraState::Failed);
        shards[1].set_route("/lobby/door", 0, CameraState::Retrying);
        // A route no longer configured (a shard's stale view) is not exported.
        shards[1].set_route("/gone", 1, CameraState::Ready);
        let text = hub.render();
        assert_eq!(
            samples(&text, "relay_route_viewers"),
            ["relay_route_viewers{route=\"/cam1\"} 5", "relay_route_viewers{route=\"/lobby/door\"} 0"]
        );
        assert_eq!(
            samples(&text, "relay_route_camera_up"),
            ["relay_route_camera_up{route=\"/cam1\"} 1", "relay_route_camera_up{route=\"/lobby/door\"} 0"]
        );
        let on: Vec<_> = samples(&text, "relay_route_camera_state").into_iter().filter(|l| l.ends_with(" 1")).collect();
        assert_eq!(
            on,
            [
                "relay_route_camera_state{route=\"/cam1\",state=\"ready\"} 1",
                "relay_route_camera_state{route=\"/lobby/door\",state=\"retrying\"} 1"
            ]
        );
        assert!(!text.contains("/gone"), "{text}");
        assert!(text.contains("# TYPE relay_route_camera_state gauge"));

        // A reload removed /cam1: its series go.
        hub.set_routes(["/lobby/door".to_owned()]);
        let text = hub.render();
        assert!(!text.contains("/cam1"), "{text}");
        assert_eq!(samples(&text, "relay_route_viewers"), ["relay_route_viewers{route=\"/lobby/door\"} 0"]);

        // per_route off: no route listed, no per-route family at all.
        hub.set_routes([]);
        let text = hub.render();
        assert!(!text.contains("relay_route_"), "{text}");
    }

    #[test]
    fn reloads_are_counted_and_the_last_result_is_visible() {
        let hub = MetricsHub::new(vec![Arc::new(ShardMetrics::new(0))]);
        let text = hub.render();
        let value = |text: &str, name: &str| -> f64 {
            let line = samples(text, name);
            assert_eq!(line.len(), 1, "{name}: {line:?}");
            line[0].rsplit(' ').next().unwrap().parse().unwrap()
        };
        // Start-up loaded the configuration in force.
        assert_eq!(value(&text, "relay_config_last_reload_successful"), 1.0);
        let loaded = value(&text, "relay_config_last_reload_success_timestamp_seconds");
        assert!(loaded > 1.7e9, "{loaded}");
        assert_eq!(value(&text, "relay_config_reload_failures_total"), 0.0);
        hub.reload_done(false);
        hub.reload_done(false);
        let text = hub.render();
        assert_eq!(value(&text, "relay_config_last_reload_successful"), 0.0);
        assert_eq!(value(&text, "relay_config_last_reload_success_timestamp_seconds"), loaded);
        assert_eq!(value(&text, "relay_config_reload_failures_total"), 2.0);
        assert_eq!(value(&text, "relay_config_reloads_total"), 2.0);
        hub.reload_done(true);
        let text = hub.render();
        assert_eq!(value(&text, "relay_config_last_reload_successful"), 1.0);
        assert!(value(&text, "relay_config_last_reload_success_timestamp_seconds") >= loaded);
        assert_eq!(value(&text, "relay_config_reload_failures_total"), 2.0);
        assert_eq!(value(&text, "relay_config_reloads_total"), 3.0);
    }

    #[test]
    fn family_names_types_and_help_texts_are_the_published_ones() {
        let mut lines: Vec<String> =
            hub_with_data().render().lines().filter(|l| l.starts_with("# ")).map(str::to_owned).collect();
        lines.sort();
        let published = String::from_utf8(crate::test_fixtures::bytes("metrics/families.txt")).unwrap();
        assert_eq!(lines.join("\n"), published.trim_end(), "fixtures/metrics/families.txt");
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("skipped: promtool not installed (Debian package prometheus; scripts/install-test-deps.sh)");
            return;
        };
        use std::io::Write;
        child.stdin.take().unwrap().write_all(hub_with_data().render().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let msg = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool: {msg}");
    }
}

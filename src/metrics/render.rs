//! The Prometheus text exposition (format 0.0.4) of a [`MetricsHub`].

use std::fmt::Write;

use super::histogram::Latency;
use super::{
    ConnKind, Direction, FIXED_HISTS, Hist, Label, MetricsHub, Rejection, RtspMethod, SessionOutcome,
    UpstreamErrorKind, process,
};
use crate::proto::viewer_auth::AuthFailure;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket bounds in seconds: media forwarding is sub-millisecond; control-plane steps are
/// milliseconds to seconds.
const FORWARD_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
const CONTROL_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
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
        Hist::RtspRequest(_) => (
            "relay_rtsp_request_seconds",
            "RTSP request forwarded to the camera until its response was relayed.",
            CONTROL_BUCKETS,
        ),
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    /// A counter family over a label enum, summed across shards.
    fn counter_by<L: Label>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        hub: &MetricsHub,
        pick: impl Fn(&super::shard_metrics::Counters) -> &[AtomicU64],
    ) {
        self.family(name, "counter", help);
        for v in L::ALL {
            let total: u64 = hub.shards.iter().map(|s| pick(&s.counters)[v.index()].load(Ordering::Relaxed)).sum();
            self.sample(name, &format!("{label}=\"{}\"", v.as_str()), total);
        }
    }

    fn counter(
        &mut self,
        name: &str,
        help: &str,
        hub: &MetricsHub,
        pick: impl Fn(&super::shard_metrics::Counters) -> &AtomicU64,
    ) {
        self.family(name, "counter", help);
        let total: u64 = hub.shards.iter().map(|s| pick(&s.counters).load(Ordering::Relaxed)).sum();
        self.sample(name, "", total);
    }

    /// Quantile gauges beside a histogram, as a summary family (quantiles, `_sum`, `_count`).
    fn summary(&mut self, name: &str, labels: &str, h: &Latency) {
        let sep = if labels.is_empty() { "" } else { "," };
        for q in QUANTILES {
            self.sample(name, &format!("{labels}{sep}quantile=\"{q}\""), h.quantile_seconds(*q));
        }
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds());
        self.sample(&format!("{name}_count"), labels, h.count());
    }

    fn histogram(&mut self, name: &str, labels: &str, buckets: &[f64], h: &Latency) {
        let sep = if labels.is_empty() { "" } else { "," };
        for b in buckets {
            self.sample(&format!("{name}_bucket"), &format!("{labels}{sep}le=\"{b}\""), h.count_at_or_below(*b));
        }
        self.sample(&format!("{name}_bucket"), &format!("{labels}{sep}le=\"+Inf\""), h.count());
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds());
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

pub fn render(hub: &MetricsHub) -> String {
    let mut o = Out(String::with_capacity(32 * 1024));
    o.family("relay_build_info", "gauge", "Build information.");
    o.sample("relay_build_info", &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1);
    o.family("relay_shards", "gauge", "io_uring shards.");
    o.sample("relay_shards", "", hub.shards.len());
    o.family("relay_ready", "gauge", "1 when listeners are bound and every shard runs.");
    o.sample("relay_ready", "", u8::from(hub.ready()));
    o.family("relay_uptime_seconds", "gauge", "Seconds since start.");
    o.sample("relay_uptime_seconds", "", hub.started.elapsed().as_secs_f64());

    o.family("relay_sessions_active", "gauge", "Sessions open now.");
    o.sample("relay_sessions_active", "", hub.shards.iter().map(|s| s.sessions_active()).sum::<u64>());
    o.counter_by::<SessionOutcome>("relay_sessions_total", "Sessions ended, by outcome.", "outcome", hub, |c| {
        &c.sessions_ended
    });
    o.counter_by::<ConnKind>(
        "relay_connections_total",
        "Connections accepted (or opened to cameras), by kind.",
        "kind",
        hub,
        |c| &c.connections,
    );
    o.counter_by::<Direction>("relay_bytes_total", "Bytes relayed, by direction.", "direction", hub, |c| &c.bytes);
    o.counter_by::<Direction>(
        "relay_frames_total",
        "Interleaved frames relayed, by direction.",
        "direction",
        hub,
        |c| &c.frames,
    );
    o.counter("relay_frames_dropped_total", "Interleaved frames dropped (no peer to take them).", hub, |c| {
        &c.frames_dropped
    });
    o.counter_by::<Rejection>("relay_rejections_total", "Input refused, by reason.", "reason", hub, |c| &c.rejections);
    o.counter_by::<UpstreamErrorKind>(
        "relay_upstream_errors_total",
        "Camera failures, by reason.",
        "reason",
        hub,
        |c| &c.upstream_errors,
    );
    o.counter_by::<AuthFailure>(
        "relay_auth_failures_total",
        "Failed viewer authentications, by reason.",
        "reason",
        hub,
        |c| &c.auth_failures,
    );
    o.counter("relay_backpressure_pauses_total", "Camera reads paused because a viewer fell behind.", hub, |c| {
        &c.backpressure_pauses
    });
    o.counter(
        "relay_ring_buffers_copied_total",
        "Receive buffers copied out of slow viewers' queues under ring pressure.",
        hub,
        |c| &c.ring_copies,
    );

    o.family("relay_shard_sessions_active", "gauge", "Sessions open now, per shard.");
    for s in &hub.shards {
        o.sample("relay_shard_sessions_active", &format!("shard=\"{}\"", s.shard), s.sessions_active());
    }
    o.family("relay_shard_bytes_total", "counter", "Bytes relayed, per shard and direction.");
    for s in &hub.shards {
        for d in Direction::ALL {
            let n = s.counters.bytes[d.index()].load(Ordering::Relaxed);
            o.sample("relay_shard_bytes_total", &format!("shard=\"{}\",direction=\"{}\"", s.shard, d.as_str()), n);
        }
    }

    // Histograms: merged across shards, then exported with quantile gauges beside them.
    let mut merged: Vec<Latency> = (0..Hist::SLOTS).map(|_| Latency::default()).collect();
    for s in &hub.shards {
        for (m, h) in merged.iter_mut().zip(s.latency_snapshot()) {
            m.add(&h);
        }
    }
    for h in FIXED_HISTS {
        let (name, help, buckets) = hist_name(h);
        let lat = &merged[h.slot()];
        o.family(name, "histogram", help);
        o.histogram(name, "", buckets, lat);
        let qname = format!("{}_quantiles_seconds", name.trim_end_matches("_seconds"));
        o.family(&qname, "summary", &format!("Quantiles of {name} since start."));
        o.summary(&qname, "", lat);
    }
    let (name, help, buckets) = hist_name(Hist::RtspRequest(RtspMethod::Options));
    o.family(name, "histogram", help);
    for m in RtspMethod::ALL {
        o.histogram(name, &format!("method=\"{}\"", m.as_str()), buckets, &merged[Hist::RtspRequest(*m).slot()]);
    }
    o.family("relay_rtsp_request_quantiles_seconds", "summary", "Quantiles of relay_rtsp_request_seconds since start.");
    for m in RtspMethod::ALL {
        o.summary(
            "relay_rtsp_request_quantiles_seconds",
            &format!("method=\"{}\"", m.as_str()),
            &merged[Hist::RtspRequest(*m).slot()],
        );
    }

    if let Some(v) = process::cpu_seconds() {
        o.family("process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
        o.sample("process_cpu_seconds_total", "", v);
    }
    if let Some(v) = process::resident_bytes() {
        o.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        o.sample("process_resident_memory_bytes", "", v);
    }
    if let Some(v) = process::open_fds() {
        o.family("process_open_fds", "gauge", "Number of open file descriptors.");
        o.sample("process_open_fds", "", v);
    }
    if let Some(v) = process::max_fds() {
        o.family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
        o.sample("process_max_fds", "", v);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardMetrics;
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
        }
        shards[1].session_ended(SessionOutcome::Completed);
        MetricsHub::new(shards)
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

//! The Grafana dashboard is importable and every metric it queries exists in `/metrics`.

use std::collections::BTreeSet;
use std::sync::Arc;

use rtsp_tunnel_relay::metrics::{CameraState, MetricsHub, ShardMetrics};

/// Metric names in a PromQL expression: identifiers that start like ours.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let word = &expr[start..i];
        let quoted = start > 0 && (bytes[start - 1] == b'"' || bytes[start - 1] == b'$');
        if !quoted && (word.starts_with("relay_") || word.starts_with("process_")) {
            names.push(word.to_owned());
        }
        i += 1;
    }
    names
}

/// `label="value"` matchers in a PromQL expression (exact matches only; `=~` and variables
/// are skipped).
fn label_matchers(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(eq) = rest.find("=\"") {
        let name_start = rest[..eq].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let name = &rest[name_start..eq];
        let value_start = eq + 2;
        let value_end = value_start + rest[value_start..].find('"').expect("closed label value");
        let value = &rest[value_start..value_end];
        if !name.is_empty() && !value.contains('$') {
            out.push((name.to_owned(), value.to_owned()));
        }
        rest = &rest[value_end + 1..];
    }
    out
}

#[test]
fn label_matchers_are_found() {
    assert_eq!(
        label_matchers(r#"sum(rate(x{instance=~"$instance",reason="slow_viewer"}[1m])) / y{a="b"}"#),
        [("reason".to_owned(), "slow_viewer".to_owned()), ("a".to_owned(), "b".to_owned())]
    );
}

#[test]
fn every_queried_metric_is_exported() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/rtsp-tunnel-relay.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS", "datasource must be an input variable");
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 30);
    let shard = Arc::new(ShardMetrics::new(0));
    // Per-route families exist only for configured routes (`[metrics] per_route`).
    shard.set_route("/cam1", 1, CameraState::Ready);
    let hub = MetricsHub::new(vec![shard]);
    hub.set_routes(["/cam1".to_owned()]);
    let exposition = hub.render();
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|r| r.split_whitespace().next()).map(str::to_owned))
        .collect();
    let mut queried = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            // A label value the relay never exports (a misspelt reason) would chart nothing.
            for (label, value) in label_matchers(expr) {
                let series = format!("{label}=\"{value}\"");
                assert!(exposition.contains(&series), "{:?} queries {series}, never exported", p["title"]);
            }
            if expr.contains("relay_route_") {
                let desc = p["description"].as_str().unwrap_or("");
                assert!(desc.contains("per_route"), "{:?} must say it needs [metrics] per_route", p["title"]);
            }
            for name in metric_names(expr) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| exported.contains(*b));
                queried.insert(base.map(str::to_owned).unwrap_or(name));
            }
        }
    }
    let missing: Vec<_> = queried.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "dashboard queries metrics /metrics lacks: {missing:?}");
    for needed in [
        "relay_sessions_active",
        "relay_forward_latency_seconds",
        "relay_session_setup_seconds",
        "relay_rejections_total",
        "relay_shard_bytes_total",
        "relay_cameras_active",
        "relay_camera_sessions_total",
        "relay_camera_reconnects_total",
        "relay_viewers_active",
        "relay_time_to_first_frame_seconds",
        "relay_frames_dropped_total",
        "relay_route_viewers",
        "relay_route_camera_up",
        "relay_route_camera_state",
        "relay_route_camera_source",
        "relay_config_last_reload_successful",
        "relay_config_reload_failures_total",
        "relay_shard_stops_total",
    ] {
        assert!(queried.contains(needed), "dashboard lacks {needed}");
    }
}

/// The camera-health row: a row header, then the panels an on-call engineer opens first.
#[test]
fn a_camera_health_row_shows_cameras_down_reloads_and_shard_stops() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/rtsp-tunnel-relay.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let at = panels
        .iter()
        .position(|p| p["type"] == "row" && p["title"] == "Camera health")
        .expect("a row titled \"Camera health\"");
    let row_y = panels[at]["gridPos"]["y"].as_u64().unwrap();
    let below: Vec<&serde_json::Value> = panels[at + 1..].iter().take_while(|p| p["type"] != "row").collect();
    assert!(below.iter().all(|p| p["gridPos"]["y"].as_u64().unwrap() > row_y), "panels sit below their row");
    let exprs: Vec<&str> =
        below.iter().flat_map(|p| p["targets"].as_array().unwrap()).map(|t| t["expr"].as_str().unwrap()).collect();
    for needed in [
        "relay_route_camera_state",
        "relay_route_camera_up",
        "relay_config_last_reload_successful",
        "relay_shard_stops_total",
    ] {
        assert!(exprs.iter().any(|e| e.contains(needed)), "the camera-health row lacks {needed}: {exprs:?}");
    }
    // No two panels of the dashboard overlap.
    let boxes: Vec<(u64, u64, u64, u64)> = panels
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            let v = |k: &str| g[k].as_u64().unwrap();
            (v("x"), v("y"), v("w"), v("h"))
        })
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let apart = a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
            assert!(apart, "panels overlap: {a:?} {b:?}");
        }
    }
}

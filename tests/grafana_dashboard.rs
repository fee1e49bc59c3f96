//! The Grafana dashboard is importable and every metric it queries exists in `/metrics`.

use std::collections::BTreeSet;
use std::sync::Arc;

use rtsp_tunnel_relay::metrics::{MetricsHub, ShardMetrics};

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

#[test]
fn every_queried_metric_is_exported() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/rtsp-tunnel-relay.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS", "datasource must be an input variable");
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 15);
    let exported: BTreeSet<String> = MetricsHub::new(vec![Arc::new(ShardMetrics::new(0))])
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|r| r.split_whitespace().next()).map(str::to_owned))
        .collect();
    let mut queried = BTreeSet::new();
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            for name in metric_names(t["expr"].as_str().unwrap()) {
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
    ] {
        assert!(queried.contains(needed), "dashboard lacks {needed}");
    }
}

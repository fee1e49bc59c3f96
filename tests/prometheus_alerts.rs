//! The shipped Prometheus alerting rules (deploy/prometheus/): promtool accepts them, their unit
//! tests pass (each alert fires when it should and not before), and every relay metric they
//! query is one the relay exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use rtsp_tunnel_relay::metrics::{CameraState, MetricsHub, ShardMetrics};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

/// Runs promtool with `args` in deploy/prometheus; `None` when promtool is not installed.
fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("promtool").args(args).current_dir(dir()).output().ok()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), text))
}

#[test]
fn promtool_accepts_the_rules_the_config_and_the_rule_unit_tests() {
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let Some((ok, text)) = promtool(args) else {
            eprintln!("skipped: promtool not installed (Debian package prometheus; scripts/install-test-deps.sh)");
            return;
        };
        assert!(ok, "promtool {args:?}:\n{text}");
    }
}

#[test]
fn the_rules_alert_on_cameras_reloads_shards_and_readiness_with_exported_metrics() {
    let rules = std::fs::read_to_string(dir().join("alerts.yml")).unwrap();
    for alert in ["RelayCameraDown", "RelayConfigReloadFailed", "RelayShardStopped", "RelayNotReady", "RelayDown"] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "alerts.yml lacks {alert}");
    }
    let shard = Arc::new(ShardMetrics::new(0));
    shard.set_route("/cam1", 0, CameraState::Retrying);
    let hub = MetricsHub::new(vec![shard]);
    hub.set_routes(["/cam1".to_owned()]);
    let exposition = hub.render();
    let exported: BTreeSet<&str> =
        exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next()).collect();
    let queried: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("relay_") || w.starts_with("process_"))
        .collect();
    assert!(queried.contains("relay_route_camera_state") && queried.contains("relay_shard_stops_total"));
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(missing.is_empty(), "alerts.yml queries metrics the relay does not export: {missing:?}");
    // The states the camera alert matches are ones the relay exports.
    for state in ["retrying", "failed"] {
        assert!(exposition.contains(&format!("state=\"{state}\"")), "{state}");
    }
}

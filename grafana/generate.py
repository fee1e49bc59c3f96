#!/usr/bin/env python3
"""Writes grafana/rtsp-tunnel-relay.json. Edit the panels here, then run this script."""
import json
import os

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SEL = 'instance=~"$instance"'
panels = []
row_y = [0]


def panel(title, exprs, unit="short", kind="timeseries", w=12, h=8, legend=None, desc=None):
    x = sum(p["gridPos"]["w"] for p in panels if p["gridPos"]["y"] == row_y[0])
    if x + w > 24:
        row_y[0] += h
        x = 0
    targets = [
        {"datasource": DS, "expr": e, "legendFormat": (legend or [None] * len(exprs))[i] or "", "refId": chr(65 + i)}
        for i, e in enumerate(exprs)
    ]
    panels.append({
        "id": len(panels) + 1,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": row_y[0], "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": targets,
    })
    if desc:
        panels[-1]["description"] = desc


def row(title):
    """A Grafana row header across the full width; the panels after it start below it."""
    row_y[0] = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels), default=0)
    panels.append({"id": len(panels) + 1, "type": "row", "title": title, "collapsed": False,
                   "gridPos": {"x": 0, "y": row_y[0], "w": 24, "h": 1}, "panels": []})
    row_y[0] += 1


def q(name, quantile, by=""):
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({quantile}, sum by ({group}) (rate({name}_bucket{{{SEL}}}[$__rate_interval])))"


panel("Active sessions", [f"sum(relay_sessions_active{{{SEL}}})"], kind="stat", w=6, h=4)
panel("Throughput to viewers", [f"sum(rate(relay_bytes_total{{{SEL},direction=\"to_viewer\"}}[$__rate_interval])) * 8"], unit="bps", kind="stat", w=6, h=4)
panel("Open file descriptors", [f"sum(process_open_fds{{{SEL}}})"], kind="stat", w=6, h=4)
panel("Ready", [f"min(relay_ready{{{SEL}}})"], kind="stat", w=6, h=4)
row_y[0] += 4
panel("Sessions per shard", [f"relay_shard_sessions_active{{{SEL}}}"], legend=["{{instance}} shard {{shard}}"])
panel("Sessions ended by outcome", [f"sum by (outcome) (rate(relay_sessions_total{{{SEL}}}[$__rate_interval]))"], unit="ops", legend=["{{outcome}}"])
panel("Throughput by direction", [f"sum by (direction) (rate(relay_bytes_total{{{SEL}}}[$__rate_interval])) * 8"], unit="bps", legend=["{{direction}}"])
panel("Throughput per shard", [f"sum by (instance, shard) (rate(relay_shard_bytes_total{{{SEL}}}[$__rate_interval])) * 8"], unit="bps", legend=["{{instance}} shard {{shard}}"])
panel("Frames by direction", [f"sum by (direction) (rate(relay_frames_total{{{SEL}}}[$__rate_interval]))"], unit="ops", legend=["{{direction}}"])
panel("Drops and backpressure", [
    f"sum(rate(relay_frames_dropped_total{{{SEL}}}[$__rate_interval]))",
    f"sum(rate(relay_backpressure_pauses_total{{{SEL}}}[$__rate_interval]))",
    f"sum(rate(relay_ring_buffers_copied_total{{{SEL}}}[$__rate_interval]))",
], unit="ops", legend=["frames dropped", "camera paused (slow viewer)", "ring buffers copied out"])
panel("Session setup latency (GET to PLAY answered)", [q("relay_session_setup_seconds", x) for x in (0.5, 0.9, 0.99)], unit="s", legend=["p50", "p90", "p99"])
panel("Forward latency (camera to viewer send)", [q("relay_forward_latency_seconds", x) for x in (0.5, 0.9, 0.99)]
      + [f"max(relay_forward_latency_quantiles_seconds{{{SEL},quantile=\"0.999\"}})"], unit="s", legend=["p50", "p90", "p99", "p99.9 since start"])
panel("RTSP request latency p99 by method", [q("relay_rtsp_request_seconds", 0.99, "method")], unit="s", legend=["{{method}}"])
panel("Pairing and camera connect p99", [q("relay_pairing_seconds", 0.99), q("relay_upstream_connect_seconds", 0.99)], unit="s", legend=["GET to POST bound", "camera connect"])
panel("Rejections by reason", [f"sum by (reason) (rate(relay_rejections_total{{{SEL}}}[$__rate_interval]))"], unit="ops", legend=["{{reason}}"])
panel("Camera errors by reason", [f"sum by (reason) (rate(relay_upstream_errors_total{{{SEL}}}[$__rate_interval]))"], unit="ops", legend=["{{reason}}"])
panel("Failed viewer logins by reason", [f"sum by (reason) (rate(relay_auth_failures_total{{{SEL}}}[$__rate_interval]))"], unit="ops", legend=["{{reason}}"])
panel("Connections by kind", [f"sum by (kind) (rate(relay_connections_total{{{SEL}}}[$__rate_interval]))"], unit="ops", legend=["{{kind}}"])
panel("CPU", [f"rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval])"], unit="percentunit", legend=["{{instance}}"])
panel("Memory and descriptors", [f"process_resident_memory_bytes{{{SEL}}}", f"process_open_fds{{{SEL}}}"], legend=["RSS {{instance}}", "fds {{instance}}"])

# Shared cameras: one camera connection per route, fanned out to every viewer of it.
row_y[0] += 8
CAMS = f"sum(relay_cameras_active{{{SEL}}})"
VIEWERS = f"sum(relay_viewers_active{{{SEL}}})"
PER_CAMERA = f"{VIEWERS} / ({CAMS} > 0)"
PER_ROUTE = "Per-route series exist only with [metrics] per_route = true (off by default: one series per route); empty otherwise."
panel("Cameras active", [CAMS], kind="stat", w=6, h=4, desc="Shared cameras playing now (one camera connection each).")
panel("Viewers active (shared routes)", [VIEWERS], kind="stat", w=6, h=4)
panel("Viewers per camera", [PER_CAMERA], kind="stat", w=6, h=4, desc="Viewers on shared routes / cameras playing; empty while no camera plays.")
panel("Time to first frame p50", [q("relay_time_to_first_frame_seconds", 0.5)], unit="s", kind="stat", w=6, h=4)
row_y[0] += 4
panel("Shared cameras and viewers", [CAMS, VIEWERS], legend=["cameras playing", "viewers"])
panel("Viewers per camera", [PER_CAMERA], legend=["viewers per camera"], desc="Viewers on shared routes / cameras playing; empty while no camera plays.")
panel("Camera sessions ended by outcome", [f"sum by (outcome) (rate(relay_camera_sessions_total{{{SEL}}}[$__rate_interval]))"], unit="ops", legend=["{{outcome}}"],
      desc="Shared camera connections ended (completed = closed by the relay after linger or at shutdown).")
panel("Camera reconnects", [f"sum(rate(relay_camera_reconnects_total{{{SEL}}}[$__rate_interval]))"], unit="ops", legend=["reconnect attempts"])
panel("Time to first frame (viewer PLAY to first keyframe byte)", [q("relay_time_to_first_frame_seconds", x) for x in (0.5, 0.99)], unit="s", w=24, legend=["p50", "p99"],
      desc="Milliseconds when the GOP cache holds a keyframe; up to a GOP without it.")
panel("Frames dropped", [f"sum(rate(relay_frames_dropped_total{{{SEL}}}[$__rate_interval]))"], unit="ops", legend=["frames dropped"],
      desc="Frames not sent to a viewer: a slow viewer of a shared camera skips to the next keyframe, or no peer took them.")
panel("Shared viewers cut", [
    f"sum(rate(relay_rejections_total{{{SEL},reason=\"slow_viewer\"}}[$__rate_interval]))",
    f"sum(rate(relay_sessions_total{{{SEL},outcome=\"camera_changed\"}}[$__rate_interval]))",
], unit="ops", legend=["slow viewer disconnected", "camera came back changed"],
      desc="Viewers disconnected for staying too far behind, and viewers closed because their camera came back with another description.")
panel("Viewers per route", [f"sum by (route) (relay_route_viewers{{{SEL}}})"], legend=["{{route}}"], desc=PER_ROUTE)
panel("Camera up per route", [f"max by (route) (relay_route_camera_up{{{SEL}}})"], legend=["{{route}}"], desc=PER_ROUTE)

# Camera health: what the alerting rules (deploy/prometheus/alerts.yml) watch, per route.
row("Camera health")
DOWN = f"relay_route_camera_state{{{SEL},state=~\"retrying|failed\"}}"
panel("Cameras down", [f"sum({DOWN}) or vector(0)"], kind="stat", w=6, h=4,
      desc="Routes whose camera is retrying or failed. " + PER_ROUTE)
panel("Cameras up", [f"sum(relay_route_camera_up{{{SEL}}}) or vector(0)"], kind="stat", w=6, h=4,
      desc="Routes whose camera plays (passthrough: any camera connection open). " + PER_ROUTE)
panel("Last reload taken", [f"min(relay_config_last_reload_successful{{{SEL}}})"], kind="stat", w=6, h=4,
      desc="0 when the last SIGHUP's file was rejected: the running configuration is older than the file.")
panel("Shard stops", [f"sum(increase(relay_shard_stops_total{{{SEL}}}[$__range]))"], kind="stat", w=6, h=4,
      desc="Shards that stopped on their own in the range (the relay exits and systemd restarts it).")
row_y[0] += 4
panel("Routes by camera state", [f"sum by (state) (relay_route_camera_state{{{SEL}}})"], legend=["{{state}}"],
      desc="How many routes are idle, connecting, ready, retrying or failed. " + PER_ROUTE)
panel("Cameras down per route", [f"max by (route) ({DOWN}) == 1"], legend=["{{route}}"],
      desc="Each route while its camera is retrying or failed (see the relay's log for the reason). " + PER_ROUTE)
panel("Routes on their fallback", [f"max by (route) (relay_route_camera_source{{{SEL},source=\"fallback\"}}) == 1"],
      legend=["{{route}}"],
      desc="Each route while its fallback camera is live: its primary failed, and it returns at the primary's first keyframe. " + PER_ROUTE)
panel("Configuration reloads", [
    f"sum(increase(relay_config_reloads_total{{{SEL}}}[$__rate_interval]))",
    f"sum(increase(relay_config_reload_failures_total{{{SEL}}}[$__rate_interval]))",
], legend=["reloads", "rejected"])
panel("Configuration age", [f"time() - max by (instance) (relay_config_last_reload_success_timestamp_seconds{{{SEL}}})"], unit="s",
      legend=["{{instance}}"], desc="Since the configuration in force was loaded.")

dashboard = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "__requires": [{"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
    "title": "rtsp-tunnel-relay",
    "uid": "rtsp-tunnel-relay",
    "tags": ["rtsp", "relay"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "refresh": "10s",
    "time": {"from": "now-1h", "to": "now"},
    "templating": {"list": [
        {"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {"name": "instance", "type": "query", "datasource": DS, "label": "Instance", "multi": True, "includeAll": True,
         "query": {"query": "label_values(relay_build_info, instance)", "refId": "instance"}, "refresh": 2},
    ]},
    "panels": panels,
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rtsp-tunnel-relay.json")
with open(out, "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
print(f"wrote {out}: {len(panels)} panels")

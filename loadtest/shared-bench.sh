#!/usr/bin/env bash
# Shared camera sessions, side by side in one run: each workload against each system, a fresh
# camera process and a fresh system process per run.
#   workloads  a: 1 camera x 1,000 viewers x 2 Mbit/s      b: 100 cameras x 50 viewers x 0.5 Mbit/s
#   systems    shared          the relay, routes `mode = "shared"` (gop_cache on)
#              shared-nocache  the relay, routes `mode = "shared"`, `gop_cache = false`
#              passthrough     the relay, routes `mode = "passthrough"` (one camera session per viewer)
#              gst             loadtest/gst_relay.py (gst-rtsp-server, one shared media per mount)
# Relay viewers tunnel over HTTP (VIEWER_MODE=rtsp for plain RTSP); gst viewers speak plain RTSP.
# Per run: system CPU seconds (utime+stime) per GB the viewers received; RSS per viewer, the slope
# of the system's RSS against the viewers playing, sampled through the ramp; media latency
# p50/p99 (camera's due time to viewer receipt); time to first frame p50/p99 (PLAY sent to the
# first keyframe packet); RTP sequence gaps and packets lost; camera sessions per camera (from the
# camera's own count: sessions opened over cameras, and the most open at once on one camera).
#
# Environment (defaults are the full benchmark; trial runs: A=1x50 B=5x10 DURATION=10s):
#   A ("1x1000") B ("100x50")   CAMERAS x VIEWERS-PER-CAMERA; empty to skip the workload
#   A_BITRATE (2M) B_BITRATE (500k) DURATION (30s) RAMP_S (5: seconds the viewers' ramp takes)
#   GOP (50) FPS (25) SHARDS (2) SYSTEMS ("shared shared-nocache passthrough gst")
#   VIEWER_MODE (tunnel) OUT (target/shared-bench) SKIP_BUILD (unset)
# The relay refuses route keys it does not know: on a build without shared camera sessions the
# shared runs report the refusal and the others go on.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
workload_a=${A-1x1000}; workload_b=${B-100x50}
a_bitrate=${A_BITRATE:-2M}; b_bitrate=${B_BITRATE:-500k}
duration=${DURATION:-30s}; ramp_s=${RAMP_S:-5}; gop=${GOP:-50}; fps=${FPS:-25}; shards=${SHARDS:-2}
systems=${SYSTEMS:-"shared shared-nocache passthrough gst"}; viewer_mode=${VIEWER_MODE:-tunnel}
out=${OUT:-$root/target/shared-bench}
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
[ "$(getconf CLK_TCK)" = 100 ] || { echo "USER_HZ is not 100: the CPU arithmetic below assumes it" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# relay_config PORT METRICS_PORT CAM_PORT CAMERAS ROUTE_KEYS
relay_config() {
  printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n[runtime]\nshards = %s\n[limits]\nmax_connections_per_ip = 100000\nmax_sessions = 100000\n[log]\nlevel = "warn"\n' "$1" "$2" "$shards"
  for i in $(seq 0 $(($4 - 1))); do
    printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\n%b' "$i" "$3" "$i" "$5"
  done
}

# run WORKLOAD SYSTEM CAMERAS PER_CAMERA BITRATE: one run; appends a JSON row to rows.txt.
run() {
  local workload=$1 system=$2 cameras=$3 per=$4 bitrate=$5
  local name="$workload-$system" viewers=$(($3 * $4))
  local cam_port port mport pid mode keys="" start_flags=(--stream-start rtp-info)
  cam_port=$(free_port); port=$(free_port); mport=$(free_port)
  rm -f "$out/$name.camera.json"
  "$bin/loadtest" camera --listen "127.0.0.1:$cam_port" --streams "$cameras" --bitrate "$bitrate" \
    --gop "$gop" --fps "$fps" --json "$out/$name.camera.json" 2>"$out/$name.camera.log" &
  local cpid=$!; pids+=($cpid)
  wait_port "$cam_port" || { echo "$name: camera never listened" >&2; return 1; }
  case $system in
    shared) keys='mode = "shared"\ngop_cache = true\n' ;;
    shared-nocache) keys='mode = "shared"\ngop_cache = false\n' ;;
    passthrough) keys='mode = "passthrough"\n'; start_flags=(--stream-start zero) ;;
  esac
  case $system in
    gst)
      /usr/bin/python3 "$root/loadtest/gst_relay.py" --camera "127.0.0.1:$cam_port" --streams "$cameras" --port "$port" \
        >"$out/$name.gst.out" 2>"$out/$name.gst.log" & pid=$!; mode=rtsp ;;
    *)
      relay_config "$port" "$mport" "$cam_port" "$cameras" "$keys" >"$out/$name.toml"
      "$bin/rtsp-tunnel-relay" --config "$out/$name.toml" 2>"$out/$name.relay.log" & pid=$!; mode=$viewer_mode
      # A relay from before shared camera sessions knows no `mode` key, and is passthrough.
      if [ "$system" = passthrough ] && ! wait_port "$port" && grep -q 'unknown field `mode`' "$out/$name.relay.log"; then
        echo "$name: this relay has no route modes: passthrough is its only behaviour, run without the key" >&2
        relay_config "$port" "$mport" "$cam_port" "$cameras" "" >"$out/$name.toml"
        "$bin/rtsp-tunnel-relay" --config "$out/$name.toml" 2>"$out/$name.relay.log" & pid=$!
      fi ;;
  esac
  pids+=($pid)
  if ! wait_port "$port"; then
    echo "$name: the system did not start (a relay without shared camera sessions refuses their route keys):" >&2
    tail -n 3 "$out/$name".*log >&2 || true
    kill "$cpid" 2>/dev/null || true; wait "$cpid" 2>/dev/null || true
    printf '{"workload":"%s","system":"%s","skipped":true}\n' "$workload" "$system" >>"$out/rows.txt"
    return 0
  fi
  sleep 1
  local idle cpu0 cpu1 peak sampler ramp
  idle=$(status_kb "$pid" VmRSS); cpu0=$(cpu_ticks "$pid")
  # RSS against CLOCK_MONOTONIC (the viewers' report clock), 4 times a second.
  python3 - "$pid" >"$out/$name.rss" <<'PY' &
import sys, time
pid = sys.argv[1]
while True:
    try:
        rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        break
    print(time.monotonic_ns(), rss, flush=True)
    time.sleep(0.25)
PY
  sampler=$!; pids+=($sampler)
  ramp=$(awk -v n="$viewers" -v s="$ramp_s" 'BEGIN { r = n / s; printf "%.1f", r < 1 ? 1 : r }')
  local ok=1
  "$bin/loadtest" viewers --target "127.0.0.1:$port" --mode "$mode" --sessions "$viewers" --paths "$cameras" \
      --ramp "$ramp/s" --duration "$duration" --source-ips 127.0.0.2-127.0.0.120 "${start_flags[@]}" \
      --json "$out/$name.json" 2>"$out/$name.viewers.log" || ok=0
  cpu1=$(cpu_ticks "$pid"); peak=$(status_kb "$pid" VmHWM)
  kill "$sampler" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # SIGTERM: the camera writes its final sessions report.
  kill "$cpid"; wait "$cpid" 2>/dev/null || true
  if [ $ok = 0 ]; then
    echo "$name: viewers failed, see $out/$name.viewers.log" >&2
    printf '{"workload":"%s","system":"%s","skipped":true}\n' "$workload" "$system" >>"$out/rows.txt"
    return 0
  fi
  python3 - "$workload" "$system" "$out/$name" "$((cpu1 - cpu0))" "$idle" "$peak" "$cameras" "$viewers" >>"$out/rows.txt" <<'PY'
import json, sys
workload, system, base = sys.argv[1:4]
ticks, idle, peak, cameras, viewers = map(int, sys.argv[4:9])
r = json.load(open(base + ".json"))
cam = json.load(open(base + ".camera.json"))
gb = r["bytes_received"] / 1e9
# RSS slope: each second of the viewers' series (viewers playing at epoch + t s) against the
# system's RSS sampled nearest that time, fitted by least squares over the seconds with
# viewers playing (the ramp gives the spread).
samples = [tuple(map(int, l.split())) for l in open(base + ".rss") if l.strip()]
pts = []
for s in r["throughput"]:
    t = r["epoch_ns"] + s["t"] * 1_000_000_000
    near = min(samples, key=lambda x: abs(x[0] - t), default=None)
    if near and abs(near[0] - t) < 500_000_000:
        pts.append((s["playing"], near[1]))
slope = None
if len({p for p, _ in pts}) >= 2:
    n = len(pts); mx = sum(p for p, _ in pts) / n; my = sum(v for _, v in pts) / n
    sxx = sum((p - mx) ** 2 for p, _ in pts)
    slope = sum((p - mx) * (v - my) for p, v in pts) / sxx if sxx else None
lat = r["media_latency_ms"] or {}
ttff = r.get("time_to_first_frame_ms") or {}
print(json.dumps(dict(
    workload=workload, system=system, cameras=cameras, viewers=viewers,
    established=r["sessions_established"], survived=r["sessions_survived"], gb=gb,
    cpu_s=ticks / 100, cpu_s_per_gb=ticks / 100 / gb if gb else None,
    rss_kb_per_viewer=slope, rss_peak_minus_idle_kb=peak - idle, idle_kb=idle,
    p50_ms=lat.get("p50"), p99_ms=lat.get("p99"), ttff_p50_ms=ttff.get("p50"), ttff_p99_ms=ttff.get("p99"),
    without_keyframe=r.get("sessions_without_keyframe"), seq_gaps=r["rtp_seq_gaps"], lost=r["packets_lost"],
    expected=r["packets_expected"], faults=sum(r["integrity"].values()),
    from_before_play=r.get("packets_from_before_play"),
    camera_sessions=cam["sessions_opened"], camera_sessions_per_camera=cam["sessions_opened"] / cameras,
    camera_max_concurrent=cam["max_concurrent_per_stream"], delivered_mbps=r["delivered_mbps"])))
PY
}

rm -f "$out/rows.txt"
for spec in "a:$workload_a:$a_bitrate" "b:$workload_b:$b_bitrate"; do
  IFS=: read -r w shape bitrate <<<"$spec"
  [ -n "$shape" ] || continue
  cameras=${shape%x*}; per=${shape#*x}
  for system in $systems; do
    if [ "$system" = gst ] && ! /usr/bin/python3 -c 'import gi' 2>/dev/null; then
      echo "gst: python3-gi missing (scripts/install-test-deps.sh): skipped" >&2; continue
    fi
    echo "== $w ($cameras camera(s) x $per viewers x $bitrate) on $system" >&2
    run "$w" "$system" "$cameras" "$per" "$bitrate"
  done
done

python3 - "$out/rows.txt" "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
json.dump(rows, open(sys.argv[2] + "/shared-bench.json", "w"), indent=2)
f = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"
head = (f"{'workload':<26} {'system':<15} {'survived':>11} {'CPU s/GB':>9} {'RSS KB/viewer':>13} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'TTFF p50':>9} {'TTFF p99':>9} {'gaps':>6} {'lost':>6} {'cam sess/cam':>12} {'max open':>8}")
print(head); print("-" * len(head))
for r in rows:
    if r.get("skipped"):
        print(f"{r['workload']:<26} {r['system']:<15} skipped (see its logs)")
        continue
    shape = f"{r['workload']} {r['cameras']}x{r['viewers'] // r['cameras']}"
    print(f"{shape:<26} {r['system']:<15} {r['survived']:>5}/{r['viewers']:<5} {f(r['cpu_s_per_gb']):>9} "
          f"{f(r['rss_kb_per_viewer'], 1):>13} {f(r['p50_ms']):>7} {f(r['p99_ms']):>7} {f(r['ttff_p50_ms'], 0):>9} "
          f"{f(r['ttff_p99_ms'], 0):>9} {r['seq_gaps']:>6} {r['lost']:>6} {f(r['camera_sessions_per_camera']):>12} "
          f"{r['camera_max_concurrent']:>8}")
on = {r["workload"]: r for r in rows if r["system"] == "shared" and not r.get("skipped")}
off = {r["workload"]: r for r in rows if r["system"] == "shared-nocache" and not r.get("skipped")}
for w in sorted(on.keys() & off.keys()):
    print(f"time to first frame p50, workload {w}: {f(on[w]['ttff_p50_ms'], 0)} ms with the GOP cache, "
          f"{f(off[w]['ttff_p50_ms'], 0)} ms without")
PY
echo "reports, logs and rows in $out" >&2

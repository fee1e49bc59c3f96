#!/usr/bin/env bash
# Runs one workload through three systems, each REPEATS times (a fresh process every run), and
# prints what each costs, with the spread between runs:
#   relay    rtsp-tunnel-relay, viewers tunnelling over HTTP
#   haproxy  HAProxy `mode tcp` (the L4 floor: no tunnelling, viewers speak plain RTSP)
#   gst      a gst-rtsp-server relay (python3-gi), one shared mount per camera, viewers plain RTSP
# For each run: CPU seconds per GB delivered, both the system process's own (utime+stime from
# /proc/PID/stat) and the whole machine's (busy jiffies from /proc/stat: on loopback the kernel's
# network work lands on whichever process it likes, so only the machine total compares fairly);
# RSS peak (VmHWM) minus idle (VmRSS before the viewers start); media latency p50/p99; loss.
# RSS is also measured at a second session count (RSS_SESSIONS) and reported as a fixed cost
# plus a per-session slope through the two.
#
# Environment: STREAMS (200) SESSIONS (200) BITRATE (1M) DURATION (20s) SHARDS (2) REPEATS (3)
#              RSS_SESSIONS (SESSIONS/4) RSS_DURATION (10s) SYSTEMS ("relay haproxy gst")
#              OUT (target/compare) SKIP_BUILD (unset)
#              RELAY_MODE (shared: one camera session per stream fans out to its viewers;
#                          passthrough: a camera session per viewer)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
streams=${STREAMS:-200}; sessions=${SESSIONS:-200}; bitrate=${BITRATE:-1M}
duration=${DURATION:-20s}; shards=${SHARDS:-2}; systems=${SYSTEMS:-"relay haproxy gst"}
relay_mode=${RELAY_MODE:-shared}; repeats=${REPEATS:-3}; rss_sessions=${RSS_SESSIONS:-$((sessions / 4))}; rss_duration=${RSS_DURATION:-10s}
out=${OUT:-$root/target/compare}
mkdir -p "$out"
if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
fi
bin=$root/target/release
[ "$(getconf CLK_TCK)" = 100 ] || { echo "USER_HZ is not 100: the CPU arithmetic below assumes it" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Busy jiffies of the whole machine: every /proc/stat cpu field but idle and iowait.
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# The machine's busy share over 2 s before a run (nothing of ours busy yet): other work on the
# box would land in the machine CPU figure, so it is printed beside it.
background_busy() {
  local a b; a=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat); sleep 2
  b=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
  echo "$a $b" | awk '{d = ($3 - $1) + ($4 - $2); printf "%.0f", d ? ($3 - $1) * 100 / d : 0}'
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

cam_port=$(free_port)
"$bin/loadtest" camera --listen "127.0.0.1:$cam_port" --streams "$streams" --bitrate "$bitrate" 2>"$out/camera.log" &
pids+=($!)
wait_port "$cam_port"

# start SYSTEM: starts a fresh system process; sets pid, port, mode, start_flags.
start() {
  port=$(free_port); start_flags=()
  case $1 in
    relay)
      local mport; mport=$(free_port)
      { printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n[runtime]\nshards = %s\n[limits]\nmax_connections_per_ip = 100000\nmax_sessions = 100000\n[log]\nlevel = "warn"\n' "$port" "$mport" "$shards"
        for i in $(seq 0 $((streams - 1))); do printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\nmode = "%s"\n' "$i" "$cam_port" "$i" "$relay_mode"; done
      } >"$out/relay.toml"
      "$bin/rtsp-tunnel-relay" --config "$out/relay.toml" 2>>"$out/relay.log" & pid=$!; mode=tunnel
      # Shared: viewers join a stream under way, as with gst.
      [ "$relay_mode" = shared ] && start_flags=(--stream-start rtp-info) ;;
    haproxy)
      printf 'global\n  maxconn 9000\n  nbthread %s\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\nfrontend rtsp\n  bind 127.0.0.1:%s\n  default_backend cams\nbackend cams\n  server cam 127.0.0.1:%s\n' "$shards" "$port" "$cam_port" >"$out/haproxy.cfg"
      haproxy -db -f "$out/haproxy.cfg" 2>>"$out/haproxy.log" & pid=$!; mode=rtsp ;;
    gst)
      /usr/bin/python3 "$root/loadtest/gst_relay.py" --camera "127.0.0.1:$cam_port" --streams "$streams" --port "$port" >>"$out/gst.out" 2>>"$out/gst.log" & pid=$!; mode=rtsp
      # One camera connection per mount, shared by its viewers: they join streams under way.
      start_flags=(--stream-start rtp-info) ;;
  esac
  pids+=($pid)
  wait_port "$port"
}

# measure SYSTEM RUN SESSIONS DURATION: one run against a fresh process; appends a JSON row.
measure() {
  local system=$1 run=$2 n=$3 dur=$4
  start "$system"
  sleep 1
  local idle cpu0 m0 cpu1 m1 peak bg
  bg=$(background_busy)
  idle=$(status_kb "$pid" VmRSS); cpu0=$(cpu_ticks "$pid"); m0=$(machine_ticks)
  "$bin/loadtest" viewers --target "127.0.0.1:$port" --mode "$mode" --sessions "$n" --paths "$streams" \
      --ramp 1000/s --duration "$dur" --source-ips 127.0.0.2-127.0.0.60 "${start_flags[@]}" \
      --json "$out/$run.json" 2>"$out/$run.viewers.log" \
    || { echo "$run: viewers failed, see $out/$run.viewers.log" >&2; kill "$pid"; return 1; }
  cpu1=$(cpu_ticks "$pid"); m1=$(machine_ticks); peak=$(status_kb "$pid" VmHWM)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$system" "$run" "$out/$run.json" "$((cpu1 - cpu0))" "$((m1 - m0))" "$idle" "$peak" "$n" "$bg" >>"$out/rows.txt" <<'PY'
import json, sys
system, run, path = sys.argv[1:4]
ticks, mticks, idle, peak, n, bg = map(int, sys.argv[4:10])
r = json.load(open(path))
gb = r["bytes_received"] / 1e9
lat = r["media_latency_ms"] or {}
print(json.dumps(dict(
    system=system, run=run, sessions=n, established=r["sessions_established"], survived=r["sessions_survived"],
    gb=gb, cpu_s=ticks / 100, machine_cpu_s=mticks / 100,
    cpu_s_per_gb=ticks / 100 / gb if gb else None, machine_cpu_s_per_gb=mticks / 100 / gb if gb else None,
    rss_kb=peak - idle, idle_kb=idle, peak_kb=peak,
    p50_ms=lat.get("p50"), p99_ms=lat.get("p99"), timed=r["media_latency_samples"],
    expected=r["packets_expected"], lost=r["packets_lost"], stalls=r["stalls"],
    faults=sum(r["integrity"].values()), delivered_mbps=r["delivered_mbps"], background_busy_pct=bg)))
PY
}

rm -f "$out/rows.txt"
for system in $systems; do
  case $system in
    haproxy) command -v haproxy >/dev/null || { echo "haproxy not installed: skipped" >&2; continue; } ;;
    gst) [ -x /usr/bin/python3 ] || { echo "python3-gi missing: skipped" >&2; continue; } ;;
  esac
  for i in $(seq 1 "$repeats"); do
    measure "$system" "$system-$i" "$sessions" "$duration"
  done
  if [ "$rss_sessions" -gt 0 ] && [ "$rss_sessions" -ne "$sessions" ]; then
    measure "$system" "$system-rss$rss_sessions" "$rss_sessions" "$rss_duration"
  fi
done

python3 - "$out/rows.txt" "$out" "$sessions" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
full = int(sys.argv[3])
json.dump(rows, open(sys.argv[2] + "/compare.json", "w"), indent=2)

def spread(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "null"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return (fmt + " ({}-{})").format(statistics.median(vals), fmt.format(min(vals)), fmt.format(max(vals)))

print(f"each system {len([r for r in rows if r['system'] == rows[0]['system'] and r['sessions'] == full])} runs of {full} sessions: median (min-max)")
print("machine busy before each run (other work on the box, in the machine figure):",
      ", ".join(f"{r['run']} {r['background_busy_pct']}%" for r in rows))
head = f"{'system':<8} {'survived':>9} {'CPU s/GB (process)':>22} {'CPU s/GB (machine)':>22} {'RSS fixed + per session':>26} {'p50 ms':>18} {'p99 ms':>20} {'lost/expected':>16} {'stalls':>6} {'faults':>6}"
print(head); print("-" * len(head))
for system in dict.fromkeys(r["system"] for r in rows):
    runs = [r for r in rows if r["system"] == system and r["sessions"] == full]
    small = [r for r in rows if r["system"] == system and r["sessions"] != full]
    rss = "n/a"
    if runs and small:
        # Peak minus idle at two session counts: a line through them.
        y1, n1 = statistics.median(r["rss_kb"] for r in runs), full
        y0, n0 = small[0]["rss_kb"], small[0]["sessions"]
        slope = (y1 - y0) / (n1 - n0)
        rss = f"{(y1 - slope * n1) / 1024:.1f} MB + {slope:.1f} KB"
    surv = f"{sum(r['survived'] for r in runs)}/{sum(r['sessions'] for r in runs)}"
    lost = f"{sum(r['lost'] for r in runs)}/{sum(r['expected'] for r in runs)}"
    print(f"{system:<8} {surv:>9} {spread([r['cpu_s_per_gb'] for r in runs], '{:.2f}'):>22} "
          f"{spread([r['machine_cpu_s_per_gb'] for r in runs], '{:.2f}'):>22} {rss:>26} "
          f"{spread([r['p50_ms'] for r in runs], '{:.2f}'):>18} {spread([r['p99_ms'] for r in runs], '{:.1f}'):>20} "
          f"{lost:>16} {sum(r['stalls'] for r in runs):>6} {sum(r['faults'] for r in runs):>6}")
PY
"$bin/loadtest" plot --out "$out" "$out"/*-1.json 2>/dev/null || true
echo "reports, logs and plots in $out"

#!/usr/bin/env bash
# Runs one workload, in one run, through three systems and prints what each costs:
#   relay    rtsp-tunnel-relay, viewers tunnelling over HTTP
#   haproxy  HAProxy `mode tcp` (the L4 floor: no tunnelling, viewers speak plain RTSP)
#   gst      a gst-rtsp-server relay (python3-gi), one mount per camera, viewers plain RTSP
# For each: CPU seconds per GB delivered (the relay process's utime+stime from /proc), RSS per
# session, media latency p50/p99 and loss (from the load generator's report).
#
# Environment: STREAMS (200) SESSIONS (200) BITRATE (1M) DURATION (20s) SHARDS (2)
#              SYSTEMS ("relay haproxy gst") OUT (target/compare) SKIP_BUILD (unset)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
streams=${STREAMS:-200}; sessions=${SESSIONS:-200}; bitrate=${BITRATE:-1M}
duration=${DURATION:-20s}; shards=${SHARDS:-2}; systems=${SYSTEMS:-"relay haproxy gst"}
out=${OUT:-$root/target/compare}
mkdir -p "$out"
if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
fi
bin=$root/target/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # USER_HZ = 100
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

cam_port=$(free_port)
"$bin/loadtest" camera --listen "127.0.0.1:$cam_port" --streams "$streams" --bitrate "$bitrate" 2>"$out/camera.log" &
pids+=($!)
wait_port "$cam_port"

# measure NAME PID MODE PORT: runs the viewers against 127.0.0.1:PORT, samples the process.
measure() {
  local name=$1 pid=$2 mode=$3 port=$4
  local idle_rss cpu0 peak=0
  sleep 1
  idle_rss=$(rss_kb "$pid"); cpu0=$(cpu_ticks "$pid")
  "$bin/loadtest" viewers --target "127.0.0.1:$port" --mode "$mode" --sessions "$sessions" --paths "$streams" \
      --ramp 1000/s --duration "$duration" --source-ips 127.0.0.2-127.0.0.60 --json "$out/$name.json" 2>"$out/$name.viewers.log" &
  local v=$!
  while kill -0 "$v" 2>/dev/null; do
    local r; r=$(rss_kb "$pid"); [ "$r" -gt "$peak" ] && peak=$r; sleep 1
  done
  wait "$v" || { echo "$name: viewers failed, see $out/$name.viewers.log" >&2; return 1; }
  local cpu1; cpu1=$(cpu_ticks "$pid")
  python3 - "$name" "$out/$name.json" "$((cpu1 - cpu0))" "$idle_rss" "$peak" "$sessions" >>"$out/rows.txt" <<'PY'
import json, sys
name, path, ticks, idle, peak, sessions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
r = json.load(open(path))
gb = r["bytes_received"] / 1e9
cpu = ticks / 100.0
row = dict(system=name, established=r["sessions_established"], failed=r["sessions_failed"], gb=round(gb, 3),
           cpu_s=cpu, cpu_s_per_gb=round(cpu / gb, 2) if gb else None,
           rss_per_session_kb=round((peak - idle) / max(sessions, 1), 1), rss_peak_mb=round(peak / 1024, 1),
           latency_p50_ms=r["media_latency_ms"]["p50"], latency_p99_ms=r["media_latency_ms"]["p99"],
           lost=r["packets_lost"], received=r["packets_received"])
print(json.dumps(row))
PY
}

rm -f "$out/rows.txt"
for system in $systems; do
  case $system in
    relay)
      port=$(free_port); mport=$(free_port)
      { printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n[runtime]\nshards = %s\n[limits]\nmax_connections_per_ip = 100000\nmax_sessions = 100000\n[log]\nlevel = "warn"\n' "$port" "$mport" "$shards"
        for i in $(seq 0 $((streams - 1))); do printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\n' "$i" "$cam_port" "$i"; done
      } >"$out/relay.toml"
      "$bin/rtsp-tunnel-relay" --config "$out/relay.toml" 2>"$out/relay.log" & pid=$!; pids+=($pid)
      wait_port "$port"; measure relay "$pid" tunnel "$port"; kill "$pid" ;;
    haproxy)
      command -v haproxy >/dev/null || { echo "haproxy not installed: skipped" >&2; continue; }
      port=$(free_port)
      printf 'global\n  maxconn 9000\n  nbthread %s\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\nfrontend rtsp\n  bind 127.0.0.1:%s\n  default_backend cams\nbackend cams\n  server cam 127.0.0.1:%s\n' "$shards" "$port" "$cam_port" >"$out/haproxy.cfg"
      haproxy -db -f "$out/haproxy.cfg" 2>"$out/haproxy.log" & pid=$!; pids+=($pid)
      wait_port "$port"; measure haproxy "$pid" rtsp "$port"; kill "$pid" ;;
    gst)
      [ -x /usr/bin/python3 ] || { echo "python3-gi missing: skipped" >&2; continue; }
      port=$(free_port)
      /usr/bin/python3 "$root/loadtest/gst_relay.py" --camera "127.0.0.1:$cam_port" --streams "$streams" --port "$port" >"$out/gst.out" 2>"$out/gst.log" & pid=$!; pids+=($pid)
      wait_port "$port"; measure gst "$pid" rtsp "$port"; kill "$pid" ;;
  esac
done

python3 - "$out/rows.txt" "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
json.dump(rows, open(sys.argv[2] + "/compare.json", "w"), indent=2)
head = f"{'system':<8} {'ok':>6} {'fail':>5} {'GB':>7} {'CPU s':>7} {'CPU s/GB':>9} {'RSS/sess KB':>12} {'p50 ms':>7} {'p99 ms':>7} {'lost':>6}"
print(head); print("-" * len(head))
for r in rows:
    print(f"{r['system']:<8} {r['established']:>6} {r['failed']:>5} {r['gb']:>7} {r['cpu_s']:>7.2f} {str(r['cpu_s_per_gb']):>9} {r['rss_per_session_kb']:>12} {r['latency_p50_ms']:>7.3f} {r['latency_p99_ms']:>7.3f} {r['lost']:>6}")
PY
"$bin/loadtest" plot --out "$out" "$out"/*.json 2>/dev/null || true
echo "reports, logs and plots in $out"

#!/usr/bin/env bash
# One hot camera on every core: 1 camera x VIEWERS tunnel viewers x BITRATE against the relay
# with SHARDS shards, once per value of `[runtime] hot_route_viewers` in HOT (0: every viewer on
# the camera's shard, as before replicas; 100: the default). Prints, per run, the CPU seconds
# of each shard thread (utime+stime from /proc/PID/task/*/stat, threads named shard-N), the
# relay's total, the replicas, and the viewers' own count of survivors, RTP gaps and loss.
#
# Environment: VIEWERS (2000) BITRATE (2M) SHARDS (2) HOT ("0 250") DURATION (20s) RAMP (500/s)
#   OUT (target/hot-camera) SKIP_BUILD (unset). The viewer generator splits itself over worker
#   processes to stay under the descriptor limit (`loadtest viewers --procs auto`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
viewers=${VIEWERS:-2000}; bitrate=${BITRATE:-2M}; shards=${SHARDS:-2}; hots=${HOT:-"0 250"}
duration=${DURATION:-20s}; ramp=${RAMP:-500/s}; out=${OUT:-$root/target/hot-camera}
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
[ "$(getconf CLK_TCK)" = 100 ] || { echo "USER_HZ is not 100: the CPU arithmetic below assumes it" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
. "$root/loadtest/lib.sh"
# "name ticks" for every thread of PID.
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(cat "$t/comm")" "$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "$t/stat")"
  done
}

for hot in $hots; do
  name="hot$hot"
  cam_port=$(free_port); port=$(free_port); mport=$(free_port)
  "$bin/loadtest" camera --listen "127.0.0.1:$cam_port" --streams 1 --bitrate "$bitrate" \
    --json "$out/$name.camera.json" 2>"$out/$name.camera.log" &
  cpid=$!; pids+=($cpid)
  wait_port "$cam_port"
  printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n[runtime]\nshards = %s\nhot_route_viewers = %s\n[limits]\nmax_connections_per_ip = 100000\nmax_sessions = 100000\n[log]\nlevel = "warn"\n[[route]]\npath = "/cam0"\nupstream = "rtsp://127.0.0.1:%s/cam0"\n' \
    "$port" "$mport" "$shards" "$hot" "$cam_port" >"$out/$name.toml"
  "$bin/rtsp-tunnel-relay" --config "$out/$name.toml" 2>"$out/$name.relay.log" &
  pid=$!; pids+=($pid)
  wait_port "$port"
  sleep 1
  thread_ticks "$pid" >"$out/$name.ticks0"
  "$bin/loadtest" viewers --target "127.0.0.1:$port" --mode tunnel --sessions "$viewers" --paths 1 \
    --ramp "$ramp" --duration "$duration" --source-ips 127.0.0.2-127.0.0.120 \
    --json "$out/$name.json" 2>"$out/$name.viewers.log" || echo "$name: viewers failed, see $out/$name.viewers.log" >&2
  thread_ticks "$pid" >"$out/$name.ticks1"
  replicas=$(curl -s "http://127.0.0.1:$mport/metrics" | awk '$1 == "relay_replicas_active" {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  kill "$cpid"; wait "$cpid" 2>/dev/null || true
  python3 - "$name" "$out" "${replicas:-?}" <<'PY'
import json, sys
name, out, replicas = sys.argv[1:4]
def ticks(path):
    d = {}
    for line in open(path):
        comm, t = line.rsplit(" ", 1)
        d[comm] = d.get(comm, 0) + int(t)
    return d
t0, t1 = ticks(f"{out}/{name}.ticks0"), ticks(f"{out}/{name}.ticks1")
cpu = {k: (v - t0.get(k, 0)) / 100 for k, v in t1.items()}
shards = " ".join(f"{k} {v:.1f}s" for k, v in sorted(cpu.items()) if k.startswith("shard-"))
try:
    r = json.load(open(f"{out}/{name}.json"))
    viewers = (f"survived {r['sessions_survived']}/{r['sessions_established']}, "
               f"gaps {r['rtp_seq_gaps']}, lost {r['packets_lost']}/{r['packets_expected']}, "
               f"{r['bytes_received'] / 1e9:.2f} GB")
except (OSError, KeyError, ValueError) as e:
    viewers = f"no viewer report ({e})"
print(f"{name}: {shards}; relay {sum(cpu.values()):.1f}s; replicas {replicas}; {viewers}")
PY
done

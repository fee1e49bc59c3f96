#!/usr/bin/env bash
# The README's full load runs (opt-in: RELAY_LOADTEST_FULL=1 scripts/test.sh, or run directly).
# Each run: simulated cameras, a fresh relay (release build, 2 shards), and tunnel viewers spread
# over source addresses and worker processes; prints the viewers' summary and one line of relay
# figures, and leaves JSON reports in target/full-run/. Takes about six minutes.
#   RUNS="1000x2M"      only the runs whose names contain this (default: all)
#   SESSIONS=N BITRATE=B [RAMP=R]  one custom run instead (e.g. setup rate at a trickle of media)
#   RELAY_SCHED=fifo    run the relay's threads SCHED_FIFO (chrt -f 10), as on an appliance
#                       where the relay has first call on the CPU and the load is elsewhere
#   RELAY_SCHED=nice    run the relay at nice -10 (a larger CPU share, no realtime)
# Per run: relay CPU s/GB (its utime+stime) and the machine's (busy jiffies in /proc/stat, which
# includes the load generator and cameras); relay RSS as peak (VmHWM) minus idle (VmRSS before the
# viewers); the relay's forward latency quantiles from /metrics. After the two 0.25 Mbit/s runs,
# RSS as a fixed cost plus a per-session slope through their session counts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/target/full-run
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
duration=${DURATION:-60s}
[ "$(getconf CLK_TCK)" = 100 ] || { echo "USER_HZ is not 100: the CPU arithmetic below assumes it" >&2; exit 1; }
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# The machine's busy share over 2 s before a run (nothing of ours busy yet): other work on the
# box would land in the machine CPU figure, so it is printed beside it.
background_busy() {
  local a b; a=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat); sleep 2
  b=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
  echo "$a $b" | awk '{d = ($3 - $1) + ($4 - $2); printf "%.0f", d ? ($3 - $1) * 100 / d : 0}'
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# The cameras' keyframe alone is about 50 kbit/s at 2 s groups of pictures: below 100 kbit/s a
# keyframe every 20 s, so that a trickle of media stays a trickle.
gop_for() { case $1 in *k | *K) [ "${1%?}" -lt 100 ] 2>/dev/null && { echo 500; return; } ;; esac; echo 50; }
children=()
trap 'for p in "${children[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

run() { # NAME SESSIONS BITRATE RAMP [DURATION]
  local name=$1 sessions=$2 bitrate=$3 ramp=$4 duration=${5:-$duration}
  local cam=18554 tun=18080 met=19100
  "$bin/loadtest" camera --listen 127.0.0.1:$cam --streams "$sessions" --bitrate "$bitrate" --gop "$(gop_for "$bitrate")" 2>"$out/$name.camera.log" &
  local cpid=$!; children+=($cpid)
  { printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n[runtime]\nshards = 2\n[limits]\nmax_connections_per_ip = 100000\nmax_sessions = 100000\n[log]\nlevel = "warn"\n' $tun $met
    for i in $(seq 0 $((sessions - 1))); do printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\n' "$i" $cam "$i"; done
  } >"$out/$name.toml"
  local wrap=()
  case "${RELAY_SCHED:-}" in
    fifo) wrap=(chrt -f 10) ;;
    nice) wrap=(nice -n -10) ;;
  esac
  "${wrap[@]}" "$bin/rtsp-tunnel-relay" --config "$out/$name.toml" 2>"$out/$name.relay.log" &
  local rpid=$!; children+=($rpid)
  sleep 2
  local cpu0 m0 idle
  echo "$name: machine busy before the run: $(background_busy)%"
  cpu0=$(awk '{print $14 + $15}' /proc/$rpid/stat); m0=$(machine_ticks); idle=$(status_kb $rpid VmRSS)
  "$bin/loadtest" viewers --target 127.0.0.1:$tun --mode tunnel --sessions "$sessions" --paths "$sessions" \
      --ramp "$ramp" --duration "$duration" --source-ips 127.0.0.2-127.0.0.120 --json "$out/$name.json" 2>"$out/$name.viewers.log" \
    || { echo "$name: viewers failed, see $out/$name.viewers.log" >&2; return 1; }
  sed -n '/ sessions (/,$p' "$out/$name.viewers.log"
  local cpu1 m1 peak
  cpu1=$(awk '{print $14 + $15}' /proc/$rpid/stat); m1=$(machine_ticks); peak=$(status_kb $rpid VmHWM)
  curl -s -m 10 127.0.0.1:$met/metrics >"$out/$name.metrics"
  awk -F'[ "]' '/^relay_forward_latency_quantiles_seconds\{quantile=/{printf "relay forward latency (per packet) p%s: %.2f ms\n", $2 * 100, $4 * 1000}' "$out/$name.metrics"
  awk '/^relay_forward_latency_seconds_count/{printf "relay forward latency samples: %d\n", $2}' "$out/$name.metrics"
  REPORT="$out/$name.json" CPU_TICKS=$((cpu1 - cpu0)) MACHINE_TICKS=$((m1 - m0)) IDLE=$idle PEAK=$peak NAME=$name \
    SESSIONS=$sessions ROWS="$out/rows.txt" python3 - <<'PY'
import json, os
r = json.load(open(os.environ["REPORT"]))
e = os.environ
gb = r["bytes_received"] / 1e9
cpu, mcpu = int(e["CPU_TICKS"]) / 100, int(e["MACHINE_TICKS"]) / 100
rss = int(e["PEAK"]) - int(e["IDLE"])
per = lambda c: f"{c / gb:.2f}" if gb else "n/a"
print(f"{e['NAME']}: relay CPU {cpu:.1f} s, machine CPU {mcpu:.1f} s for {gb:.2f} GB = {per(cpu)} / {per(mcpu)} CPU s/GB; "
      f"relay RSS peak {int(e['PEAK']) / 1024:.0f} MB - idle {int(e['IDLE']) / 1024:.0f} MB = {rss / 1024:.0f} MB")
with open(e["ROWS"], "a") as f:
    f.write(json.dumps(dict(name=e["NAME"], sessions=int(e["SESSIONS"]), rss_kb=rss)) + "\n")
PY
  kill $rpid $cpid 2>/dev/null || true
  wait $rpid $cpid 2>/dev/null || true
}

# RSS fixed + per-session: a line through the peak-minus-idle of the runs named.
rss_fit() {
  [ -f "$out/rows.txt" ] || return 0
  python3 - "$out/rows.txt" "$@" <<'PY'
import json, sys
rows = {r["name"]: r for r in map(json.loads, open(sys.argv[1]))}
pts = [rows[n] for n in sys.argv[2:] if n in rows]
if len(pts) >= 2:
    (a, b) = pts[0], pts[-1]
    slope = (b["rss_kb"] - a["rss_kb"]) / (b["sessions"] - a["sessions"])
    print(f"relay RSS (peak - idle) = {(a['rss_kb'] - slope * a['sessions']) / 1024:.0f} MB fixed + {slope:.1f} KB per session"
          f" (from {a['name']} and {b['name']})")
PY
}

rm -f "$out/rows.txt"
if [ -n "${SESSIONS:-}" ]; then
  run "tunnel-${SESSIONS}x${BITRATE:?BITRATE too}" "$SESSIONS" "$BITRATE" "${RAMP:-2000/s}"
  exit 0
fi
want() { [ -z "${RUNS:-}" ] || [[ $1 == *"$RUNS"* ]]; }
# Setup rate: 5,000 sessions started at 2,000/s with a trickle of media, so setting up is all
# the box does (the load generator and cameras share the two cores with the relay).
want setup-5000x16k && run setup-5000x16k 5000 16k 2000/s 5s
# Media starts as each session is set up: at 2,000/s the media of the first sessions starves
# the setup of the last on a 2-core box, so the held-load runs ramp at 1,000/s.
want tunnel-5000x250k && run tunnel-5000x250k 5000 250k 1000/s
# The same bitrate at a fifth of the sessions, for RSS's fixed cost and per-session slope.
want rss-1000x250k && run rss-1000x250k 1000 250k 1000/s 20s
rss_fit rss-1000x250k tunnel-5000x250k
want tunnel-1000x2M && run tunnel-1000x2M 1000 2M 2000/s
true

#!/usr/bin/env bash
# The README's full load runs (opt-in: RELAY_LOADTEST_FULL=1 scripts/test.sh, or run directly).
# Each run: simulated cameras, a fresh relay (release build, 2 shards), and tunnel viewers spread
# over source addresses and worker processes; prints the viewers' summary and one line of relay
# figures per run, then a table of every run name over its REPEATS runs (median and min-max), and
# leaves JSON reports in target/full-run/. Takes about six minutes per repeat.
#   RUNS="1000x2M"      only the runs whose names contain this (default: all)
#   REPEATS (3)         runs of each, a fresh relay and cameras every time
#   STEPS (4) HOLD (10s) the held-load runs start their sessions in STEPS equal steps, each held
#                       HOLD, for RSS fixed + per session by loadtest/rss.py
#   SESSIONS=N BITRATE=B [RAMP=R]  one custom run instead (e.g. setup rate at a trickle of media)
#   RELAY_SCHED=fifo    run the relay's threads SCHED_FIFO (chrt -f 10), as on an appliance
#                       where the relay has first call on the CPU and the load is elsewhere
#   RELAY_SCHED=nice    run the relay at nice -10 (a larger CPU share, no realtime)
# Per run: relay CPU s per GB received (its utime+stime) and the machine's (busy jiffies in
# /proc/stat, which includes the load generator and cameras); the relay's forward latency
# quantiles from /metrics; relay RSS fixed + per session from the stepped start (loadtest/rss.py:
# RSS at each count held for equal times, spread over the repeats).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/target/full-run
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
duration=${DURATION:-60s}; repeats=${REPEATS:-3}; steps=${STEPS:-4}; hold=${HOLD:-10s}
[ "$(getconf CLK_TCK)" = 100 ] || { echo "USER_HZ is not 100: the CPU arithmetic below assumes it" >&2; exit 1; }
. "$root/loadtest/lib.sh"
# The cameras' pictures alone are about 57 kbit/s at 2 s groups of pictures: below 100 kbit/s a
# keyframe every 20 s, so that a trickle of media stays a trickle.
gop_for() { case $1 in *k | *K) [ "${1%?}" -lt 100 ] 2>/dev/null && { echo 500; return; } ;; esac; echo 50; }
children=()
trap 'for p in "${children[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

run() { # NAME REPEAT SESSIONS BITRATE RAMP [DURATION] [STEPS]
  local base=$1 repeat=$2 sessions=$3 bitrate=$4 ramp=$5 duration=${6:-$duration} nsteps=${7:-$steps}
  local name=$1-$2 cam=18554 tun=18080 met=19100 i
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
  local cpu0 m0 sampler bg
  bg=$(background_busy)
  echo "$name: machine busy before the run: $bg%"
  cpu0=$(awk '{print $14 + $15}' /proc/$rpid/stat); m0=$(machine_ticks)
  python3 "$root/loadtest/rss.py" sample $rpid >"$out/$name.rss" & sampler=$!; children+=($sampler)
  "$bin/loadtest" viewers --target 127.0.0.1:$tun --mode tunnel --sessions "$sessions" --paths "$sessions" \
      --ramp "$ramp" --steps "$nsteps" --hold "$hold" --duration "$duration" --source-ips 127.0.0.2-127.0.0.120 \
      --json "$out/$name.json" 2>"$out/$name.viewers.log" \
    || { echo "$name: viewers failed, see $out/$name.viewers.log" >&2; return 1; }
  sed -n '/ sessions (/,$p' "$out/$name.viewers.log"
  local cpu1 m1
  cpu1=$(awk '{print $14 + $15}' /proc/$rpid/stat); m1=$(machine_ticks)
  curl -s -m 10 127.0.0.1:$met/metrics >"$out/$name.metrics"
  awk -F'[ "]' '/^relay_forward_latency_quantiles_seconds\{quantile=/{printf "relay forward latency (per packet) p%s: %.2f ms\n", $2 * 100, $4 * 1000}' "$out/$name.metrics"
  awk '/^relay_forward_latency_seconds_count/{printf "relay forward latency samples: %d\n", $2}' "$out/$name.metrics"
  kill $sampler 2>/dev/null || true
  REPORT="$out/$name.json" CPU_TICKS=$((cpu1 - cpu0)) MACHINE_TICKS=$((m1 - m0)) NAME=$name BASE=$base \
    BG=$bg ROWS="$out/rows.txt" python3 - <<'PY'
import json, os
r = json.load(open(os.environ["REPORT"]))
e = os.environ
gb = r["bytes_received"] / 1e9
cpu, mcpu = int(e["CPU_TICKS"]) / 100, int(e["MACHINE_TICKS"]) / 100
per = lambda c: c / gb if gb else None
print(f"{e['NAME']}: relay CPU {cpu:.1f} s, machine CPU {mcpu:.1f} s for {gb:.2f} GB received "
      f"(of which {r['replayed_bytes'] / 1e9:.2f} GB replayed) = {per(cpu) or 0:.2f} / {per(mcpu) or 0:.2f} CPU s/GB")
lat = r["media_latency_ms"] or {}
with open(e["ROWS"], "a") as f:
    f.write(json.dumps(dict(
        name=e["BASE"], run=e["NAME"], sessions=r["sessions_requested"], established=r["sessions_established"],
        survived=r["sessions_survived"], cpu_s_per_gb=per(cpu), machine_cpu_s_per_gb=per(mcpu), gb=gb,
        replayed_gb=r["replayed_bytes"] / 1e9, p50_ms=lat.get("p50"), p99_ms=lat.get("p99"),
        expected=r["packets_expected"], lost=r["packets_lost"], stalls=r["stalls"], longest_stall_ms=r["longest_stall_ms"],
        faults=sum(r["integrity"].values()), background_busy_pct=int(e["BG"]), stall_ms=r["stall_ms"],
        max_loss_pct=r["max_loss_pct"], max_stall_ms=r["max_stall_ms"])) + "\n")
PY
  kill $rpid $cpid 2>/dev/null || true
  wait $rpid $cpid $sampler 2>/dev/null || true
}

# NAME SESSIONS BITRATE RAMP [DURATION] [STEPS]: REPEATS runs, then RSS fitted over them.
runs() {
  local name=$1 i fit=(); shift
  for i in $(seq 1 "$repeats"); do
    run "$name" "$i" "$@"
    fit+=("$out/$name-$i.json" "$out/$name-$i.rss")
  done
  python3 "$root/loadtest/rss.py" fit --json "$out/$name.rss.json" "${fit[@]}" | sed "s/^/$name: relay RSS /"
}

rm -f "$out/rows.txt"
if [ -n "${SESSIONS:-}" ]; then
  runs "tunnel-${SESSIONS}x${BITRATE:?BITRATE too}" "$SESSIONS" "$BITRATE" "${RAMP:-2000/s}"
else
  want() { [ -z "${RUNS:-}" ] || [[ $1 == *"$RUNS"* ]]; }
  # Setup rate: 5,000 sessions started at 2,000/s with a trickle of media, so setting up is all
  # the box does (the load generator and cameras share the two cores with the relay). One ramp:
  # no steps, no RSS.
  if want setup-5000x16k; then runs setup-5000x16k 5000 16k 2000/s 5s 1; fi
  # Media starts as each session is set up: at 2,000/s the media of the first sessions starves
  # the setup of the last on a 2-core box, so the held-load runs ramp at 1,000/s.
  if want tunnel-5000x250k; then runs tunnel-5000x250k 5000 250k 1000/s; fi
  if want tunnel-1000x2M; then runs tunnel-1000x2M 1000 2M 2000/s; fi
fi

python3 - "$out/rows.txt" "$out" "$root/loadtest" <<'PY'
import json, os, statistics, sys
sys.dont_write_bytecode = True  # no __pycache__ left in the repository
sys.path.insert(0, sys.argv[3])
import rss as rss_fit
from table import num as f, spread
rows = [json.loads(l) for l in open(sys.argv[1])]
out = sys.argv[2]

if rows:
    r0 = rows[0]
    print(f"median (min-max) over runs; survived: played to the end intact, lost <= {r0['max_loss_pct']}% and longest "
          f"stall <= {r0['max_stall_ms']:.0f} ms; stalls: gaps > {r0['stall_ms']:.0f} ms; CPU s per GB received (replay included)")
    print("machine busy before each run:", ", ".join(f"{r['run']} {r['background_busy_pct']}%" for r in rows))
head = (f"{'run':<18} {'survived':>11} {'relay CPU s/GB':>20} {'machine CPU s/GB':>20} {'p50 ms':>20} {'p99 ms':>20} "
        f"{'lost/expected':>18} {'stalls':>6} {'faults':>6}  relay RSS fixed + per session")
print(head); print("-" * len(head))
for name in dict.fromkeys(r["name"] for r in rows):
    runs = [r for r in rows if r["name"] == name]
    fit_path = f"{out}/{name}.rss.json"
    rss = rss_fit.text(json.load(open(fit_path))) if os.path.exists(fit_path) else "n/a"
    print(f"{name:<18} {sum(r['survived'] for r in runs):>5}/{sum(r['sessions'] for r in runs):<5} "
          f"{spread([r['cpu_s_per_gb'] for r in runs]):>20} {spread([r['machine_cpu_s_per_gb'] for r in runs]):>20} "
          f"{spread([r['p50_ms'] for r in runs]):>20} {spread([r['p99_ms'] for r in runs]):>20} "
          f"{sum(r['lost'] for r in runs)}/{sum(r['expected'] for r in runs):<8} {sum(r['stalls'] for r in runs):>6} "
          f"{sum(r['faults'] for r in runs):>6}  {rss}")
PY

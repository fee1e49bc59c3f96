#!/usr/bin/env bash
# Runs one workload through several systems, each REPEATS times (a fresh process every run; run
# i of every system before run i+1 of any, so drift on the box lands on all alike), and prints
# what each costs, with the spread between runs:
#   relay-passthrough  rtsp-tunnel-relay, routes `mode = "passthrough"`, viewers tunnelling over HTTP
#   relay-shared       the same with routes `mode = "shared"` (the default mode)
#   relay              the same with routes RELAY_MODE
#   *-base             with BASELINE_BIN set: each relay system again, run by that binary (e.g.
#                      main's release build) in the same run, for a regression check
#   haproxy  HAProxy `mode tcp` (the L4 floor: no tunnelling, viewers speak plain RTSP)
#   gst      a gst-rtsp-server relay (python3-gi), one shared mount per camera, viewers plain RTSP
# For each run: CPU seconds per GB the viewers received (every byte sent, a GOP cache's replay
# included), both the system process's own (utime+stime from /proc/PID/stat) and the whole
# machine's (busy jiffies from /proc/stat: on loopback the kernel's network work lands on
# whichever process it likes, so only the machine total compares fairly); media latency p50/p99;
# loss; sessions survived (loadtest README). The viewers start in STEPS equal steps, each held
# HOLD: RSS is fitted by loadtest/rss.py (RSS at each count held for equal times, fixed cost +
# per-session slope, spread over the REPEATS runs). After the table, ratios over runs paired by
# repeat number, median (min-max): every system against HAProxy, and each relay system against
# its -base twin (CPU s/GB, process and machine, and RSS per session).
#
# Environment: STREAMS (200) SESSIONS (200) BITRATE (1M) DURATION (20s) SHARDS (2) REPEATS (3)
#              STEPS (4) HOLD (5s) SYSTEMS ("relay-passthrough relay-shared haproxy gst")
#              OUT (target/compare) SKIP_BUILD (unset)
#              RELAY_MODE (shared: one camera session per stream fans out to its viewers;
#                          passthrough: a camera session per viewer) for the system `relay`
#              BATCH_US (unset: the relay's default) this build's [runtime] completion_batch_us
#              BASELINE_BIN (unset: a relay binary to compare against, e.g. today's main)
#              BASE_SYSTEMS (every relay system in SYSTEMS: those BASELINE_BIN runs too)
#              GOP_PHASE (random: each camera session's stream starts at a random picture of its
#                         group, so the cameras are not in step, as real cameras are not. With
#                         every camera's keyframes in step (a step's viewers start together) the
#                         relay's GOP caches fill and empty together and its RSS follows the
#                         peak of their sum: memory per camera measured so is an artefact of the
#                         load generator, not the relay's average. play: every stream starts
#                         with a keyframe at its PLAY, the old behaviour)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
streams=${STREAMS:-200}; sessions=${SESSIONS:-200}; bitrate=${BITRATE:-1M}
duration=${DURATION:-20s}; shards=${SHARDS:-2}; systems=${SYSTEMS:-"relay-passthrough relay-shared haproxy gst"}
relay_mode=${RELAY_MODE:-shared}; repeats=${REPEATS:-3}; steps=${STEPS:-4}; hold=${HOLD:-5s}
batch_us=${BATCH_US:-}
gop_phase=${GOP_PHASE:-random}
out=${OUT:-$root/target/compare}
mkdir -p "$out"
if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
fi
bin=$root/target/release
baseline=${BASELINE_BIN:-}
if [ -n "$baseline" ]; then
  [ -x "$baseline" ] || { echo "BASELINE_BIN=$baseline is not an executable" >&2; exit 1; }
  base_systems=${BASE_SYSTEMS:-$(for s in $systems; do case $s in relay*) printf "%s " "$s" ;; esac; done)}
  with_base=""
  for s in $systems; do
    with_base+=" $s"
    case " $base_systems " in *" $s "*) with_base+=" $s-base" ;; esac
  done
  systems=$with_base
fi
[ "$(getconf CLK_TCK)" = 100 ] || { echo "USER_HZ is not 100: the CPU arithmetic below assumes it" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

. "$root/loadtest/lib.sh"

cam_port=$(free_port)
"$bin/loadtest" camera --listen "127.0.0.1:$cam_port" --streams "$streams" --bitrate "$bitrate" --gop-phase "$gop_phase" \
  2>"$out/camera.log" &
pids+=($!)
wait_port "$cam_port"

# start SYSTEM: starts a fresh system process; sets pid, port, mode. Viewers count each stream
# from the PLAY reply's RTP-Info (the default): right for every system here.
start() {
  local i; port=$(free_port)
  case $1 in
    relay | relay-* )
      local mport exe=$bin/rtsp-tunnel-relay route_mode=$relay_mode; mport=$(free_port)
      # BATCH_US: this build's completion batching (the -base twin may not know the key).
      local runtime_extra=""
      case $1 in
        *-base) exe=$baseline ;;
        *) [ -z "$batch_us" ] || runtime_extra="completion_batch_us = $batch_us\n" ;;
      esac
      case ${1%-base} in relay-passthrough) route_mode=passthrough ;; relay-shared) route_mode=shared ;; esac
      { printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n[runtime]\nshards = %s\n'"$runtime_extra"'[limits]\nmax_connections_per_ip = 100000\nmax_sessions = 100000\n[log]\nlevel = "warn"\n' "$port" "$mport" "$shards"
        for i in $(seq 0 $((streams - 1))); do printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\nmode = "%s"\n' "$i" "$cam_port" "$i" "$route_mode"; done
      } >"$out/$1.toml"
      "$exe" --config "$out/$1.toml" 2>>"$out/$1.log" & pid=$!; mode=tunnel ;;
    haproxy)
      printf 'global\n  maxconn 9000\n  nbthread %s\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\nfrontend rtsp\n  bind 127.0.0.1:%s\n  default_backend cams\nbackend cams\n  server cam 127.0.0.1:%s\n' "$shards" "$port" "$cam_port" >"$out/haproxy.cfg"
      haproxy -db -f "$out/haproxy.cfg" 2>>"$out/haproxy.log" & pid=$!; mode=rtsp ;;
    gst)
      /usr/bin/python3 "$root/loadtest/gst_relay.py" --camera "127.0.0.1:$cam_port" --streams "$streams" --port "$port" >>"$out/gst.out" 2>>"$out/gst.log" & pid=$!; mode=rtsp ;;
  esac
  pids+=($pid)
  wait_port "$port"
}

# measure SYSTEM REPEAT SESSIONS DURATION: one run against a fresh process; appends a JSON row.
measure() {
  local system=$1 repeat=$2 run=$1-$2 n=$3 dur=$4
  start "$system"
  sleep 1
  local idle cpu0 m0 cpu1 m1 peak bg sampler
  bg=$(background_busy)
  idle=$(status_kb "$pid" VmRSS); cpu0=$(cpu_ticks "$pid"); m0=$(machine_ticks)
  python3 "$root/loadtest/rss.py" sample "$pid" >"$out/$run.rss" & sampler=$!; pids+=($sampler)
  "$bin/loadtest" viewers --target "127.0.0.1:$port" --mode "$mode" --sessions "$n" --paths "$streams" \
      --ramp 1000/s --steps "$steps" --hold "$hold" --duration "$dur" --source-ips 127.0.0.2-127.0.0.60 \
      --json "$out/$run.json" 2>"$out/$run.viewers.log" \
    || { echo "$run: viewers failed, see $out/$run.viewers.log" >&2; kill "$pid" "$sampler"; return 1; }
  cpu1=$(cpu_ticks "$pid"); m1=$(machine_ticks); peak=$(status_kb "$pid" VmHWM)
  kill "$pid" "$sampler" 2>/dev/null || true; wait "$pid" "$sampler" 2>/dev/null || true
  python3 - "$system" "$run" "$out/$run.json" "$((cpu1 - cpu0))" "$((m1 - m0))" "$idle" "$peak" "$n" "$bg" "$repeat" \
      "$out/$run.rss" "$root/loadtest" >>"$out/rows.txt" <<'PY'
import json, sys
sys.dont_write_bytecode = True  # no __pycache__ left in the repository
sys.path.insert(0, sys.argv[12])
import rss as rss_fit
system, run, path = sys.argv[1:4]
ticks, mticks, idle, peak, n, bg, repeat = map(int, sys.argv[4:11])
r = json.load(open(path))
fit = rss_fit.line(rss_fit.points(path, sys.argv[11]))
gb = r["bytes_received"] / 1e9
lat = r["media_latency_ms"] or {}
print(json.dumps(dict(
    system=system, run=run, repeat=repeat, sessions=n, kb_per_session=fit[1] if fit else None, established=r["sessions_established"], survived=r["sessions_survived"],
    gb=gb, replayed_gb=r.get("replayed_bytes", 0) / 1e9, cpu_s=ticks / 100, machine_cpu_s=mticks / 100,
    cpu_s_per_gb=ticks / 100 / gb if gb else None, machine_cpu_s_per_gb=mticks / 100 / gb if gb else None,
    rss_kb=peak - idle, idle_kb=idle, peak_kb=peak,
    p50_ms=lat.get("p50"), p99_ms=lat.get("p99"), timed=r["media_latency_samples"],
    expected=r["packets_expected"], lost=r["packets_lost"], stalls=r["stalls"], stall_ms=r.get("stall_ms"),
    max_loss_pct=r.get("max_loss_pct"), max_stall_ms=r.get("max_stall_ms"), discontinuities=r.get("discontinuities"),
    faults=sum(r["integrity"].values()), delivered_mbps=r["delivered_mbps"], background_busy_pct=bg)))
PY
}

rm -f "$out/rows.txt"
runnable=""
for system in $systems; do
  case $system in
    haproxy) command -v haproxy >/dev/null || { echo "haproxy not installed: skipped" >&2; continue; } ;;
    gst) [ -x /usr/bin/python3 ] || { echo "python3-gi missing: skipped" >&2; continue; } ;;
  esac
  runnable+=" $system"
done
for i in $(seq 1 "$repeats"); do
  for system in $runnable; do
    measure "$system" "$i" "$sessions" "$duration"
  done
done
for system in $runnable; do
  fit_args=()
  for i in $(seq 1 "$repeats"); do fit_args+=("$out/$system-$i.json" "$out/$system-$i.rss"); done
  python3 "$root/loadtest/rss.py" fit --json "$out/$system.rss.json" "${fit_args[@]}" >/dev/null
done

python3 - "$out/rows.txt" "$out" "$sessions" "$root/loadtest" <<'PY'
import json, statistics, sys
sys.dont_write_bytecode = True  # no __pycache__ left in the repository
sys.path.insert(0, sys.argv[4])
import rss as rss_fit
from table import paired, spread
rows = [json.loads(l) for l in open(sys.argv[1])]
full = int(sys.argv[3])
out = sys.argv[2]
json.dump(rows, open(out + "/compare.json", "w"), indent=2)


print(f"each system {len([r for r in rows if r['system'] == rows[0]['system']])} runs of {full} sessions: median (min-max)")
print("machine busy before each run (other work on the box, in the machine figure):",
      ", ".join(f"{r['run']} {r['background_busy_pct']}%" for r in rows))
r0 = rows[0]
print(f"survived: played to the end intact, lost <= {r0['max_loss_pct']}% and longest stall <= {r0['max_stall_ms']:.0f} ms; "
      f"stalls: gaps > {r0['stall_ms']:.0f} ms; CPU per GB received, a GOP cache's replay included (replayed: its share)")
head = (f"{'system':<22} {'survived':>9} {'CPU s/GB (process)':>22} {'CPU s/GB (machine)':>22} {'replayed':>8} "
        f"{'p50 ms':>18} {'p99 ms':>20} {'lost/expected':>16} {'stalls':>6} {'faults':>6}  RSS fixed + per session")
print(head); print("-" * len(head))
for system in dict.fromkeys(r["system"] for r in rows):
    runs = [r for r in rows if r["system"] == system]
    rss = rss_fit.text(json.load(open(f"{out}/{system}.rss.json")))
    surv = f"{sum(r['survived'] for r in runs)}/{sum(r['sessions'] for r in runs)}"
    lost = f"{sum(r['lost'] for r in runs)}/{sum(r['expected'] for r in runs)}"
    gb = sum(r["gb"] for r in runs)
    replayed = f"{100 * sum(r['replayed_gb'] for r in runs) / gb:.1f}%" if gb else "n/a"
    print(f"{system:<22} {surv:>9} {spread([r['cpu_s_per_gb'] for r in runs], 2):>22} "
          f"{spread([r['machine_cpu_s_per_gb'] for r in runs], 2):>22} {replayed:>8} "
          f"{spread([r['p50_ms'] for r in runs], 2):>18} {spread([r['p99_ms'] for r in runs], 1):>20} "
          f"{lost:>16} {sum(r['stalls'] for r in runs):>6} {sum(r['faults'] for r in runs):>6}  {rss}")

# Ratios over runs paired by repeat number: every system against HAProxy (the L4 floor), and
# each relay system against its BASELINE_BIN twin (a regression shows as a ratio above 1).
by = {s: [r for r in rows if r["system"] == s] for s in dict.fromkeys(r["system"] for r in rows)}
pairs = [(s, "haproxy") for s in by if s != "haproxy" and "haproxy" in by]
pairs += [(s[: -len("-base")], s) for s in by if s.endswith("-base") and s[: -len("-base")] in by]
if pairs:
    print()
    print("ratios, median (min-max) over runs paired by repeat (run i against run i):")
    head = f"{'system':<22} {'against':<22} {'CPU s/GB (process)':>22} {'CPU s/GB (machine)':>22} {'RSS per session':>22}"
    print(head); print("-" * len(head))
    for a, b in pairs:
        cells = [spread(paired(by[a], by[b], lambda r, k=k: r[k]), 2)
                 for k in ("cpu_s_per_gb", "machine_cpu_s_per_gb", "kb_per_session")]
        print(f"{a:<22} {b:<22} {cells[0]:>22} {cells[1]:>22} {cells[2]:>22}")
PY
"$bin/loadtest" plot --out "$out" "$out"/*-1.json 2>/dev/null || true
echo "reports, logs and plots in $out"

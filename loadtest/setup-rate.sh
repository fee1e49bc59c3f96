#!/usr/bin/env bash
# Tunnel setups per second (issue 25 item 5), with the load generator on another core: the relay
# (one shard) runs pinned to CPU RELAY_CPU (1) with `taskset`, the cameras and the load
# generator's processes to CPU GEN_CPU (0), so what the relay does is measured on a core of its
# own. Each step offers one rate for STEP_S seconds to a fresh relay; every session is a whole
# tunnel setup (GET and POST paired, OPTIONS, DESCRIBE, SETUP, PLAY answered) and counts as
# *ready* when its first RTP packet arrives; it plays SESSION_TIME more and tears down, so about
# rate x SESSION_TIME tunnels are open at once (each holds 2 descriptors in the relay in shared
# mode, 3 in passthrough, and 2 in the generator; the generator splits itself into worker
# processes to stay under the 20,000-descriptor limit per process).
# Per step: offered rate, sessions, achieved setups/s (ready sessions over the time from the
# first scheduled start to the last one ready), setup failures by kind (before PLAY, and
# `no_media`: PLAY answered but no packet), ready latency p50/p90/p99/max (scheduled start to
# first packet, so the generator's own lag counts; its start lag p99 is printed beside it),
# the relay's CPU share of its core over the step (the generator's whole run) and its CPU time
# per ready setup (µs/setup: one core's worth of setups is 1e6 over it, the media and
# teardowns included), its rejections from /metrics, the kernel's listen-queue overflows and
# SYN retransmits over the step (machine wide: a refused SYN is retried a second later, so they
# explain latency while the relay idles), the machine's busy share before the step; and the
# other side, to tell which one was the limit: the load generator's CPU time per ready setup
# (all its worker processes, from their rusage), the cameras' (on the same core), and the busy
# share of the generator's core(s) over the step (near 100% with the relay's well below: the
# generator, not the relay, set the rate). The whole step's shares are diluted by its tail (the
# last sessions' play, the generator's report), so the same shares are printed for the offer
# window alone (the STEP_S seconds the starts are scheduled in: the relay process, the relay's
# core, the generator's core): a core near 100% there is where the latency queues.
#
# Environment (the defaults are the measurement; trial knobs in loadtest/README.md):
#   RATES ("1000 2000 3000 5000 7000")   offered setups/s, one step each
#   KNEE (unset)  find the knee instead: rates KNEE_FROM (1000), +KNEE_STEP (1000)... up to
#                 KNEE_MAX (20000), stopping after the first step that misses: achieved below
#                 95% of offered, over 1% setup failures or ready p99 over KNEE_P99_MS (1000)
#   STEP_S (5)  SESSION_TIME (500ms)  CAMERAS (100)  BITRATE (64k)  GOP (50)
#   RELAY_MODE (shared | passthrough)  MAX_SESSIONS (100000: the relay's [limits] max_sessions)
#   SOURCES (127.0.0.2-127.0.0.250: spreads the generator's ports and TIME_WAITs)
#   GEN_PROCS (auto)  RELAY_CPU (1)  GEN_CPU (0)
#   MEDIA_CHECK (first-packet: each session's media is checked up to its first RTP packet, then
#                 only drained, so a setup costs the generator its setup and not its packets;
#                 full: every packet checked; empty: the option left out, for an older build)
#   GEN_BIN (target/release/loadtest: the viewers' binary, e.g. another build of the generator)
#   FAULT (unset | stop): SIGSTOP the relay FAULT_MS (300) every FAULT_EVERY_MS (1000) during
#                 each step, to see the instrument catch a slow relay
#   PERF (unset | 1): `perf record -g --call-graph dwarf` (PERF_CALLGRAPH: the release build has
#                 no frame pointers) at PERF_FREQ (499) Hz on the relay during each step
#                 (OUT/perf-RATE.data), a folded profile and a
#                 flame graph (OUT/flame-RATE.svg, inferno) when inferno is installed
#   BATCH_US (unset: the relay's default) its [runtime] completion_batch_us
#   OUT (target/setup-rate) SKIP_BUILD (unset)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rates=${RATES:-"1000 2000 3000 5000 7000"}; step_s=${STEP_S:-5}; session_time=${SESSION_TIME:-500ms}
cameras=${CAMERAS:-100}; bitrate=${BITRATE:-64k}; gop=${GOP:-50}; relay_mode=${RELAY_MODE:-shared}
max_sessions=${MAX_SESSIONS:-100000}; sources=${SOURCES:-127.0.0.2-127.0.0.250}
gen_procs=${GEN_PROCS:-auto}; relay_cpu=${RELAY_CPU:-1}; gen_cpu=${GEN_CPU:-0}
fault=${FAULT:-}; fault_ms=${FAULT_MS:-300}; fault_every_ms=${FAULT_EVERY_MS:-1000}
batch_us=${BATCH_US:-}
out=${OUT:-$root/target/setup-rate}
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
gen_bin=${GEN_BIN:-$bin/loadtest}; media_check=${MEDIA_CHECK-first-packet}
[ "$(getconf CLK_TCK)" = 100 ] || { echo "USER_HZ is not 100: the CPU arithmetic below assumes it" >&2; exit 1; }
case $relay_cpu in
  *[!0-9]*) ;;  # a taskset list: taskset itself says if it names no CPU
  *) [ "$(nproc --all)" -gt "$relay_cpu" ] || { echo "no CPU $relay_cpu to pin the relay to" >&2; exit 1; } ;;
esac
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

. "$root/loadtest/lib.sh"
# Busy, total and softirq jiffies of the CPUs in a taskset list (0, 0,2, 0-3). Softirq time is
# not charged to the process it interrupted, and on loopback it is mostly the receiving
# socket's TCP work run on the sending core: the relay's core pays for delivering its bytes to
# the generator's sockets.
core_ticks() {
  python3 -c '
import sys
cpus = set()
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    cpus.update(range(int(a), int(b or a) + 1))
busy = total = softirq = 0
for line in open("/proc/stat"):
    f = line.split()
    if f[0].startswith("cpu") and f[0][3:].isdigit() and int(f[0][3:]) in cpus:
        v = list(map(int, f[1:9]))
        total += sum(v); busy += sum(v) - v[3] - v[4]; softirq += v[6]
print(busy, total, softirq)' "$1"
}
# Runs a command and writes the CPU seconds it and every process it waited for used (rusage of
# the children: the viewers' parent and its worker processes) to file $1: total, user, system.
timed_run() {
  python3 -c '
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{r.ru_utime + r.ru_stime:.3f} {r.ru_utime:.3f} {r.ru_stime:.3f}\n")
sys.exit(rc)' "$@"
}
now_ms() { date +%s%3N; }
# The kernel's count of connections its listen queues refused (a SYN dropped is retried 1 s, 3 s
# ... later: seconds of setup latency with the relay idle) and of SYNs retransmitted, machine
# wide: name=value pairs.
listen_counters() {
  awk '/^TcpExt:/ { if (!h) { split($0, k); h = 1 } else { split($0, v); for (i in k) if (k[i] ~ /^(ListenOverflows|ListenDrops|TCPSynRetrans)$/) printf "%s=%s ", k[i], v[i] } }' /proc/net/netstat
}

cam_port=$(free_port)
taskset -c "$gen_cpu" "$bin/loadtest" camera --listen "127.0.0.1:$cam_port" --streams "$cameras" --bitrate "$bitrate" \
  --gop "$gop" 2>"$out/camera.log" &
camera=$!; pids+=($camera)
wait_port "$cam_port" || { echo "camera never listened" >&2; exit 1; }

# step RATE: one step against a fresh relay; appends a JSON row to rows.txt.
step() {
  local rate=$1 name="step-$1" port mport relay sessions bg t0 t1 c0 c1 faulter="" perf=""
  sessions=$((rate * step_s))
  port=$(free_port); mport=$(free_port)
  { printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n[runtime]\nshards = 1\n' "$port" "$mport"
    [ -z "$batch_us" ] || printf 'completion_batch_us = %s\n' "$batch_us"
    printf '[limits]\nmax_connections_per_ip = 1000000\nmax_sessions = %s\n[log]\nlevel = "warn"\n' "$max_sessions"
    for i in $(seq 0 $((cameras - 1))); do
      printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\nmode = "%s"\n' "$i" "$cam_port" "$i" "$relay_mode"
    done
  } >"$out/relay.toml"
  taskset -c "$relay_cpu" "$bin/rtsp-tunnel-relay" --config "$out/relay.toml" 2>"$out/$name.relay.log" &
  relay=$!; pids+=($relay)
  wait_port "$port" || { echo "$name: relay never listened, see $out/$name.relay.log" >&2; return 1; }
  bg=$(background_busy)
  if [ "$fault" = stop ]; then
    ( while kill -0 "$relay" 2>/dev/null; do
        sleep "$(awk -v m="$fault_every_ms" 'BEGIN { print m / 1000 }')"
        kill -STOP "$relay" 2>/dev/null || break
        sleep "$(awk -v m="$fault_ms" 'BEGIN { print m / 1000 }')"
        kill -CONT "$relay" 2>/dev/null || break
      done ) & faulter=$!; pids+=($faulter)
  fi
  if [ -n "${PERF:-}" ]; then
    perf record -g --call-graph "${PERF_CALLGRAPH:-dwarf,16384}" -F "${PERF_FREQ:-499}" -p "$relay" -o "$out/perf-$rate.data" >"$out/perf-$rate.log" 2>&1 & perf=$!; pids+=($perf)
  fi
  local k0 k1 cam0 cam1 core0 core1
  k0=$(listen_counters); c0=$(cpu_ticks "$relay"); cam0=$(cpu_ticks "$camera"); core0=$(core_ticks "$gen_cpu"); t0=$(now_ms)
  # The offer window (the STEP_S seconds the starts are scheduled in): the busy shares over the
  # whole run are diluted by its tail (the last sessions playing, the generator's report), and
  # so hid that a core was saturated while the starts came.
  local rcore0 window=$out/$name.window
  rcore0=$(core_ticks "$relay_cpu"); rm -f "$window"
  ( sleep "$step_s"; echo "$(cpu_ticks "$relay") $(core_ticks "$gen_cpu") $(core_ticks "$relay_cpu") $(now_ms)" >"$window" ) &
  pids+=($!)
  timed_run "$out/$name.gen-cpu" taskset -c "$gen_cpu" "$gen_bin" viewers --target "127.0.0.1:$port" --mode tunnel --sessions "$sessions" \
      --paths "$cameras" --ramp "$rate/s" --duration "$session_time" --session-time "$session_time" \
      --source-ips "$sources" --procs "$gen_procs" ${media_check:+--media-check "$media_check"} --json "$out/$name.json" 2>"$out/$name.viewers.log" \
    || echo "$name: viewers failed, see $out/$name.viewers.log" >&2
  c1=$(cpu_ticks "$relay"); cam1=$(cpu_ticks "$camera"); core1=$(core_ticks "$gen_cpu"); t1=$(now_ms); k1=$(listen_counters)
  [ -z "$faulter" ] || { kill "$faulter" 2>/dev/null || true; wait "$faulter" 2>/dev/null || true; kill -CONT "$relay" 2>/dev/null || true; }
  curl -s -m 5 "127.0.0.1:$mport/metrics" >"$out/$name.metrics" || true
  if [ -n "$perf" ]; then
    kill -INT "$perf" 2>/dev/null || true; wait "$perf" 2>/dev/null || true
    if command -v inferno-collapse-perf >/dev/null; then
      perf script -i "$out/perf-$rate.data" 2>/dev/null | inferno-collapse-perf >"$out/perf-$rate.folded" \
        && inferno-flamegraph --title "relay, setup-rate.sh step $rate/s" <"$out/perf-$rate.folded" >"$out/flame-$rate.svg" || true
    fi
  fi
  kill "$relay" 2>/dev/null || true; wait "$relay" 2>/dev/null || true
  [ -f "$out/$name.json" ] || { printf '{"rate":%s,"skipped":true}\n' "$rate" >>"$out/rows.txt"; return 0; }
  python3 - "$rate" "$out/$name" "$((c1 - c0))" "$((t1 - t0))" "$bg" "$k0" "$k1" "$((cam1 - cam0))" "$core0" "$core1" \
      "$c0 $t0" "$rcore0" "$(cat "$window" 2>/dev/null)" >>"$out/rows.txt" <<'PY'
import json, re, sys
rate, base = int(sys.argv[1]), sys.argv[2]
ticks, wall_ms, bg = map(int, sys.argv[3:6])
k0, k1 = (dict(kv.split("=") for kv in a.split()) for a in sys.argv[6:8])
cam_ticks = int(sys.argv[8])
(b0, t0, _), (b1, t1, _) = (map(int, a.split()) for a in sys.argv[9:11])
gen_core_pct = (b1 - b0) * 100 / (t1 - t0) if t1 > t0 else None
# Over the offer window: the relay process's share of its core, and each core's busy share.
relay_window_pct = gen_core_window_pct = relay_core_window_pct = relay_core_softirq_pct = None
w = sys.argv[13].split()
if len(w) == 8:
    (c0, ms0), (rb0, rt0, rs0) = map(int, sys.argv[11].split()), map(int, sys.argv[12].split())
    cw, gb, gt, _, rb, rt, rs, msw = map(int, w)
    if msw > ms0:
        relay_window_pct = (cw - c0) * 100 / ((msw - ms0) / 10)
    gen_core_window_pct = (gb - b0) * 100 / (gt - t0) if gt > t0 else None
    if rt > rt0:
        relay_core_window_pct, relay_core_softirq_pct = (rb - rb0) * 100 / (rt - rt0), (rs - rs0) * 100 / (rt - rt0)
try:
    gen_cpu_s, gen_user_s, gen_sys_s = map(float, open(base + ".gen-cpu").read().split())
except (OSError, ValueError):
    gen_cpu_s = gen_user_s = gen_sys_s = None
kernel = {k: int(k1[k]) - int(k0[k]) for k in k1 if k in k0 and int(k1[k]) > int(k0[k])}
r = json.load(open(base + ".json"))
kinds = dict(r["failures_before_play"])
no_media = r["sessions_established"] - r.get("sessions_ready", 0)
if no_media:
    kinds["no_media"] = no_media
rejections = {}
try:
    for line in open(base + ".metrics"):
        m = re.match(r'relay_rejections_total\{reason="([^"]+)"\} (\S+)', line)
        if m and float(m.group(2)) > 0:
            rejections[m.group(1)] = int(float(m.group(2)))
        # Accepts that failed (out of descriptors: the relay pauses accepting for a tick).
        m = re.match(r'relay_accept_errors_total (\S+)', line)
        if m and float(m.group(1)) > 0:
            rejections["accept_errors"] = int(float(m.group(1)))
except OSError:
    pass
q = r.get("ready_latency_ms") or {}
print(json.dumps(dict(
    rate=rate, sessions=r["sessions_requested"], ready=r.get("sessions_ready", 0),
    achieved=r.get("ready_rate_per_s"), failed=sum(kinds.values()), kinds=kinds,
    p50=q.get("p50"), p90=q.get("p90"), p99=q.get("p99"), max=q.get("max"),
    play_p99=(r.get("setup_latency_ms") or {}).get("p99"), start_lag_p99=(r.get("start_lag_ms") or {}).get("p99"),
    relay_cpu_pct=ticks / (wall_ms / 10) * 100 if wall_ms else None, wall_s=wall_ms / 1000,
    relay_cpu_us_per_setup=ticks * 1e4 / r["sessions_ready"] if r.get("sessions_ready") else None,
    relay_window_pct=relay_window_pct, relay_core_window_pct=relay_core_window_pct,
    relay_core_softirq_pct=relay_core_softirq_pct, gen_core_window_pct=gen_core_window_pct,
    rejections=rejections, kernel=kernel, background_busy_pct=bg, processes=r.get("processes"),
    gen_cpu_s=gen_cpu_s, gen_user_s=gen_user_s, gen_sys_s=gen_sys_s, camera_cpu_s=cam_ticks / 100, gen_core_busy_pct=gen_core_pct,
    gen_cpu_us_per_setup=gen_cpu_s * 1e6 / r["sessions_ready"] if gen_cpu_s is not None and r.get("sessions_ready") else None,
    camera_cpu_us_per_setup=cam_ticks * 1e4 / r["sessions_ready"] if r.get("sessions_ready") else None)))
print(f"{rate}/s: {r.get('sessions_ready', 0)}/{r['sessions_requested']} ready, achieved "
      f"{r.get('ready_rate_per_s') or 0:.0f}/s, ready p99 {q.get('p99')} ms, relay CPU {ticks / (wall_ms / 10) * 100:.0f}%, "
      f"generator {gen_cpu_s} CPU s, its core {gen_core_pct or 0:.0f}% busy; while the starts came: relay "
      f"{relay_window_pct or 0:.0f}% (its core {relay_core_window_pct or 0:.0f}%, softirq {relay_core_softirq_pct or 0:.0f}%), "
      f"generator core {gen_core_window_pct or 0:.0f}%",
      file=sys.stderr)
PY
}

# Whether the last step met the knee's bar.
step_ok() {
  tail -n 1 "$out/rows.txt" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read()); p99_max = float(sys.argv[1])
ok = not r.get("skipped") and (r["achieved"] or 0) >= 0.95 * r["rate"] and r["failed"] <= 0.01 * r["sessions"] \
     and r["p99"] is not None and r["p99"] <= p99_max
sys.exit(0 if ok else 1)' "${KNEE_P99_MS:-1000}"
}

rm -f "$out/rows.txt"
echo "relay: 1 shard on CPU $relay_cpu; cameras and load generator on CPU $gen_cpu; routes $relay_mode," \
  "$cameras cameras at $bitrate; each session plays $session_time after PLAY${fault:+; FAULT=$fault (${fault_ms} ms every ${fault_every_ms} ms)}" >&2
if [ -n "${KNEE:-}" ]; then
  rate=${KNEE_FROM:-1000}
  while [ "$rate" -le "${KNEE_MAX:-20000}" ]; do
    step "$rate"
    step_ok || break
    rate=$((rate + ${KNEE_STEP:-1000}))
  done
else
  for rate in $rates; do step "$rate"; done
fi

python3 - "$out/rows.txt" "$out" "$root/loadtest" "${KNEE:-}" "${KNEE_P99_MS:-1000}" <<'PY'
import json, sys
sys.dont_write_bytecode = True  # no __pycache__ left in the repository
sys.path.insert(0, sys.argv[3])
from table import num
rows = [json.loads(l) for l in open(sys.argv[1])]
json.dump(rows, open(sys.argv[2] + "/setup-rate.json", "w"), indent=2)
print("ready: GET+POST paired, OPTIONS/DESCRIBE/SETUP/PLAY answered, first RTP packet received; latency from the "
      "scheduled start (generator lag included: its start lag p99 beside it); relay CPU: share of its one core; "
      "gen µs/setup: the load generator's CPU (all its processes) per ready setup, cams: the cameras'; gen core: "
      "busy share of the generator's core(s) over the step (near 100% with the relay's well below: the generator was the limit); "
      "in offer: the same shares over the STEP_S seconds the starts were scheduled in (relay process / its core (of which softirq: "
      "on loopback mostly the generator's sockets receiving what the relay sent) / the generator's core; the whole-step shares "
      "above are diluted by the step's tail): a core near 100% there is where the queue is")
print("machine busy before each step (other work on the box):", ", ".join(f"{r['rate']}/s {r.get('background_busy_pct')}%" for r in rows))
head = (f"{'offered/s':>9} {'sessions':>8} {'ready':>7} {'achieved/s':>10} {'failed':>7} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'PLAY p99':>8} {'gen lag p99':>11} {'relay CPU':>9} {'relay µs/setup':>14} "
        f"{'gen µs/setup':>12} {'cams':>5} {'gen core':>8} {'in offer: relay/core (softirq)/gen':>34}  failures by kind; relay rejections; kernel")
print(head); print("-" * len(head))
for r in rows:
    if r.get("skipped"):
        print(f"{r['rate']:>9} skipped (see its logs)"); continue
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["kinds"].items())) or "-"
    rej = ", ".join(f"{k} {v}" for k, v in sorted(r["rejections"].items()))
    kern = ", ".join(f"{k} {v}" for k, v in sorted(r.get("kernel", {}).items()))
    print(f"{r['rate']:>9} {r['sessions']:>8} {r['ready']:>7} {num(r['achieved'], 0):>10} {r['failed']:>7} "
          f"{num(r['p50'], 1):>8} {num(r['p90'], 1):>8} {num(r['p99'], 1):>8} {num(r['max'], 1):>8} "
          f"{num(r['play_p99'], 1):>8} {num(r['start_lag_p99'], 1):>11} {num(r['relay_cpu_pct'], 0):>8}% {num(r.get('relay_cpu_us_per_setup'), 0):>14} "
          f"{num(r.get('gen_cpu_us_per_setup'), 0):>12} {num(r.get('camera_cpu_us_per_setup'), 0):>5} {num(r.get('gen_core_busy_pct'), 0):>7}% "
          f"{num(r.get('relay_window_pct'), 0) + '/' + num(r.get('relay_core_window_pct'), 0) + ' (' + num(r.get('relay_core_softirq_pct'), 0) + ')/' + num(r.get('gen_core_window_pct'), 0) + '%':>34}  "
          f"{kinds}; {rej or '-'}; {kern or '-'}")
if sys.argv[4]:
    p99 = float(sys.argv[5])
    good = [r for r in rows if not r.get("skipped") and (r["achieved"] or 0) >= 0.95 * r["rate"]
            and r["failed"] <= 0.01 * r["sessions"] and r["p99"] is not None and r["p99"] <= p99]
    print(f"knee: {max(r['rate'] for r in good) if good else 'none'}/s offered is the highest step with achieved >= 95% "
          f"of offered, <= 1% failed and ready p99 <= {p99:.0f} ms")
PY
echo "reports, logs and rows in $out" >&2

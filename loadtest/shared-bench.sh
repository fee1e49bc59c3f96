#!/usr/bin/env bash
# Shared camera sessions, side by side in one run: each workload against each system, a fresh
# camera process and a fresh system process per run.
#   workloads  a: 1 camera x 1,000 viewers x 2 Mbit/s      b: 100 cameras x 50 viewers x 0.5 Mbit/s
#   systems    shared          the relay, routes `mode = "shared"` (gop_cache on)
#              shared-nocache  the relay, routes `mode = "shared"`, `gop_cache = false`
#              passthrough     the relay, routes `mode = "passthrough"` (one camera session per viewer)
#              gst             loadtest/gst_relay.py (gst-rtsp-server, one shared media per mount)
#              live555         live555's own RTSP proxy (ProxyServerMediaSession, one back-end session
#                              per camera shared by its viewers), built by loadtest/live555/build.sh
#                              on first use; in the default SYSTEMS when it is built or builds
#              *-base          with BASELINE_BIN set: each relay system again (shared-base ...), run
#                              by that binary (e.g. main's release build) in the same run
# Run i of every system comes before run i+1 of any, so drift on the box lands on all alike.
# Relay viewers tunnel over HTTP (VIEWER_MODE=rtsp for plain RTSP); gst viewers speak plain RTSP;
# live555 viewers do as the relay's (they tunnel through live555's HTTP tunnel port by default).
# Per run: system CPU seconds (utime+stime) per GB the viewers received (every byte sent, a GOP
# cache's replay included; the replayed share is printed beside it); RSS fixed + per viewer by
# loadtest/rss.py (the viewers start in STEPS equal steps, each held HOLD; RSS at each count held
# for equal times, a line through them, with its spread over REPEATS runs); media latency
# p50/p99 (camera's due time to viewer receipt); time to first frame p50/p99 (PLAY sent to the
# first keyframe packet); RTP sequence gaps and packets lost; camera sessions per camera (from the
# camera's own count: sessions opened over cameras, and the most open at once on one camera).
# After the table, ratios over runs paired by repeat number, median (min-max): each relay system
# against its -base twin, against gst and against live555 (CPU s/GB and RSS per viewer; above 1:
# costs more).
#
# Environment (defaults are the full benchmark; trial runs: A=1x50 B=5x10 DURATION=10s):
#   A ("1x1000") B ("100x50")   CAMERAS x VIEWERS-PER-CAMERA; empty to skip the workload
#   A_BITRATE (2M) B_BITRATE (500k) DURATION (30s: the full count's play time, at least HOLD)
#   RAMP_S (5: seconds all the starts take, spread over the steps) STEPS (4) HOLD (8s) REPEATS (3)
#   GOP (50) FPS (25) SHARDS (2) SYSTEMS ("shared shared-nocache passthrough gst live555")
#   VIEWER_MODE (tunnel) OUT (target/shared-bench) SKIP_BUILD (unset)
#   GOP_PHASE (random: each camera session's stream starts at a random picture of its group, so
#              cameras started together are not in step, as real cameras are not; a GOP cache's
#              memory measured with every camera's keyframes in step measures the load
#              generator's artefact, the peak of the caches' sum, not their average. It also
#              makes a viewer of a fresh camera session wait for the next keyframe, as with a
#              real camera. play: every stream starts with a keyframe at its PLAY, as before)
#   BASELINE_BIN (unset: a relay binary to compare against, e.g. today's main)
#   BASE_SYSTEMS (every relay system in SYSTEMS: those BASELINE_BIN runs too)
# The relay refuses route keys it does not know: on a build without shared camera sessions the
# shared runs report the refusal and the others go on.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
workload_a=${A-1x1000}; workload_b=${B-100x50}
a_bitrate=${A_BITRATE:-2M}; b_bitrate=${B_BITRATE:-500k}
duration=${DURATION:-30s}; ramp_s=${RAMP_S:-5}; gop=${GOP:-50}; fps=${FPS:-25}; shards=${SHARDS:-2}
gop_phase=${GOP_PHASE:-random}
steps=${STEPS:-4}; hold=${HOLD:-8s}; repeats=${REPEATS:-3}
systems=${SYSTEMS:-"shared shared-nocache passthrough gst live555"}; viewer_mode=${VIEWER_MODE:-tunnel}
out=${OUT:-$root/target/shared-bench}
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
baseline=${BASELINE_BIN:-}
if [ -n "$baseline" ]; then
  [ -x "$baseline" ] || { echo "BASELINE_BIN=$baseline is not an executable" >&2; exit 1; }
  base_systems=${BASE_SYSTEMS:-$(for s in $systems; do case $s in gst | live555) ;; *) printf "%s " "$s" ;; esac; done)}
  with_base=""
  for s in $systems; do
    with_base+=" $s"
    case " $base_systems " in *" $s "*) with_base+=" $s-base" ;; esac
  done
  systems=$with_base
fi
# live555 is built once (the build skips itself when done) and left out when it cannot be.
live555_bin=$root/target/live555/live555-proxy
case " $systems " in
  *" live555 "*)
    if ! "$root/loadtest/live555/build.sh" >"$out/live555-build.log" 2>&1; then
      echo "live555: loadtest/live555/build.sh failed (see $out/live555-build.log): skipped" >&2
      systems=$(for s in $systems; do [ "$s" = live555 ] || printf "%s " "$s"; done)
    fi ;;
esac
[ "$(getconf CLK_TCK)" = 100 ] || { echo "USER_HZ is not 100: the CPU arithmetic below assumes it" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

. "$root/loadtest/lib.sh"

# relay_config PORT METRICS_PORT CAM_PORT CAMERAS ROUTE_KEYS
relay_config() {
  printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n[runtime]\nshards = %s\n[limits]\nmax_connections_per_ip = 100000\nmax_sessions = 100000\n[log]\nlevel = "warn"\n' "$1" "$2" "$shards"
  local i
  for i in $(seq 0 $(($4 - 1))); do
    printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\n%b' "$i" "$3" "$i" "$5"
  done
}

# run WORKLOAD SYSTEM CAMERAS PER_CAMERA BITRATE REPEAT: one run; appends a JSON row to rows.txt.
run() {
  local workload=$1 system=$2 cameras=$3 per=$4 bitrate=$5 repeat=$6
  local name="$workload-$system-$repeat" viewers=$(($3 * $4))
  # Every system's viewers count each stream from the PLAY reply's RTP-Info (the default).
  local cam_port port mport pid mode keys="" exe=$bin/rtsp-tunnel-relay target
  case $system in *-base) exe=$baseline ;; esac
  cam_port=$(free_port); port=$(free_port); mport=$(free_port)
  rm -f "$out/$name.camera.json"
  "$bin/loadtest" camera --listen "127.0.0.1:$cam_port" --streams "$cameras" --bitrate "$bitrate" \
    --gop "$gop" --fps "$fps" --gop-phase "$gop_phase" --json "$out/$name.camera.json" 2>"$out/$name.camera.log" &
  local cpid=$!; pids+=($cpid)
  wait_port "$cam_port" || { echo "$name: camera never listened" >&2; return 1; }
  case ${system%-base} in
    shared) keys='mode = "shared"\ngop_cache = true\n' ;;
    shared-nocache) keys='mode = "shared"\ngop_cache = false\n' ;;
    passthrough) keys='mode = "passthrough"\n' ;;
  esac
  case $system in
    gst)
      /usr/bin/python3 "$root/loadtest/gst_relay.py" --camera "127.0.0.1:$cam_port" --streams "$cameras" --port "$port" \
        >"$out/$name.gst.out" 2>"$out/$name.gst.log" & pid=$!; mode=rtsp ;;
    live555)
      # RTSP on $port, RTSP-over-HTTP tunnels on $mport; stream i proxies camera i as /cam<i>.
      local urls=() i
      for i in $(seq 0 $((cameras - 1))); do urls+=("rtsp://127.0.0.1:$cam_port/cam$i"); done
      "$live555_bin" 127.0.0.1 "$port" "$mport" "${urls[@]}" >"$out/$name.live555.out" 2>"$out/$name.live555.log" & pid=$!
      mode=$viewer_mode
      if [ "$mode" = tunnel ]; then target=$mport; fi ;;
    *)
      relay_config "$port" "$mport" "$cam_port" "$cameras" "$keys" >"$out/$name.toml"
      "$exe" --config "$out/$name.toml" 2>"$out/$name.relay.log" & pid=$!; mode=$viewer_mode
      # A relay from before shared camera sessions knows no `mode` key, and is passthrough.
      if [ "${system%-base}" = passthrough ] && ! wait_port "$port" && grep -q 'unknown field `mode`' "$out/$name.relay.log"; then
        echo "$name: this relay has no route modes: passthrough is its only behaviour, run without the key" >&2
        relay_config "$port" "$mport" "$cam_port" "$cameras" "" >"$out/$name.toml"
        "$exe" --config "$out/$name.toml" 2>"$out/$name.relay.log" & pid=$!
      fi ;;
  esac
  pids+=($pid)
  if ! wait_port "$port" || ! wait_port "${target:-$port}"; then
    echo "$name: the system did not start (a relay without shared camera sessions refuses their route keys):" >&2
    tail -n 3 "$out/$name".*log >&2 || true
    kill "$cpid" 2>/dev/null || true; wait "$cpid" 2>/dev/null || true
    printf '{"workload":"%s","system":"%s","repeat":%s,"skipped":true}\n' "$workload" "$system" "$repeat" >>"$out/rows.txt"
    return 0
  fi
  sleep 1
  local idle cpu0 cpu1 peak sampler ramp
  idle=$(status_kb "$pid" VmRSS); cpu0=$(cpu_ticks "$pid")
  # RSS against CLOCK_MONOTONIC (the viewers' report clock), 4 times a second.
  python3 "$root/loadtest/rss.py" sample "$pid" >"$out/$name.rss" &
  sampler=$!; pids+=($sampler)
  ramp=$(awk -v n="$viewers" -v s="$ramp_s" 'BEGIN { r = n / s; printf "%.1f", r < 1 ? 1 : r }')
  local ok=1
  "$bin/loadtest" viewers --target "127.0.0.1:${target:-$port}" --mode "$mode" --sessions "$viewers" --paths "$cameras" \
      --ramp "$ramp/s" --steps "$steps" --hold "$hold" --duration "$duration" --source-ips 127.0.0.2-127.0.0.120 \
      --json "$out/$name.json" 2>"$out/$name.viewers.log" || ok=0
  cpu1=$(cpu_ticks "$pid"); peak=$(status_kb "$pid" VmHWM)
  kill "$sampler" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # SIGTERM: the camera writes its final sessions report.
  kill "$cpid"; wait "$cpid" 2>/dev/null || true
  if [ $ok = 0 ]; then
    echo "$name: viewers failed, see $out/$name.viewers.log" >&2
    printf '{"workload":"%s","system":"%s","repeat":%s,"skipped":true}\n' "$workload" "$system" "$repeat" >>"$out/rows.txt"
    return 0
  fi
  python3 - "$workload" "$system" "$out/$name" "$((cpu1 - cpu0))" "$idle" "$peak" "$cameras" "$viewers" "$repeat" \
      "$root/loadtest" >>"$out/rows.txt" <<'PY'
import json, sys
sys.dont_write_bytecode = True  # no __pycache__ left in the repository
sys.path.insert(0, sys.argv[10])
import rss as rss_fit
workload, system, base = sys.argv[1:4]
ticks, idle, peak, cameras, viewers, repeat = map(int, sys.argv[4:10])
r = json.load(open(base + ".json"))
fit = rss_fit.line(rss_fit.points(base + ".json", base + ".rss"))
cam = json.load(open(base + ".camera.json"))
gb = r["bytes_received"] / 1e9
lat = r["media_latency_ms"] or {}
ttff = r.get("time_to_first_frame_ms") or {}
print(json.dumps(dict(
    workload=workload, system=system, repeat=repeat, cameras=cameras, viewers=viewers, base=base,
    kb_per_viewer=fit[1] if fit else None,
    established=r["sessions_established"], survived=r["sessions_survived"], gb=gb,
    replayed_gb=r.get("replayed_bytes", 0) / 1e9, discontinuities=r.get("discontinuities"),
    max_loss_pct=r.get("max_loss_pct"), max_stall_ms=r.get("max_stall_ms"), stall_ms=r.get("stall_ms"),
    stalls=r["stalls"], longest_stall_ms=r["longest_stall_ms"],
    cpu_s=ticks / 100, cpu_s_per_gb=ticks / 100 / gb if gb else None,
    rss_peak_minus_idle_kb=peak - idle, idle_kb=idle,
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
  runnable=""
  for system in $systems; do
    if [ "$system" = gst ] && ! /usr/bin/python3 -c 'import gi' 2>/dev/null; then
      echo "gst: python3-gi missing (scripts/install-test-deps.sh): skipped" >&2; continue
    fi
    runnable+=" $system"
  done
  for i in $(seq 1 "$repeats"); do
    for system in $runnable; do
      echo "== $w ($cameras camera(s) x $per viewers x $bitrate) on $system, run $i of $repeats" >&2
      run "$w" "$system" "$cameras" "$per" "$bitrate" "$i"
    done
  done
  for system in $runnable; do
    fit_args=()
    for i in $(seq 1 "$repeats"); do
      if [ -f "$out/$w-$system-$i.rss" ] && [ -f "$out/$w-$system-$i.json" ]; then
        fit_args+=("$out/$w-$system-$i.json" "$out/$w-$system-$i.rss")
      fi
    done
    if [ ${#fit_args[@]} -gt 0 ]; then
      python3 "$root/loadtest/rss.py" fit --json "$out/$w-$system.rss.json" "${fit_args[@]}" >/dev/null
    fi
  done
done

python3 - "$out/rows.txt" "$out" "$root/loadtest" <<'PY'
import json, os, statistics, sys
sys.dont_write_bytecode = True  # no __pycache__ left in the repository
sys.path.insert(0, sys.argv[3])
import rss as rss_fit
from table import num as f, paired, spread
rows = [json.loads(l) for l in open(sys.argv[1])]
out = sys.argv[2]
json.dump(rows, open(out + "/shared-bench.json", "w"), indent=2)

done = [r for r in rows if not r.get("skipped")]
if done:
    r0 = done[0]
    print(f"median (min-max) over runs; survived: played to the end intact, lost <= {r0['max_loss_pct']}% and longest stall "
          f"<= {r0['max_stall_ms']:.0f} ms; stalls: gaps > {r0['stall_ms']:.0f} ms; CPU s per GB received (a GOP cache's "
          f"replay included; replayed: its share)")
head = (f"{'workload':<14} {'system':<20} {'survived':>11} {'CPU s/GB':>20} {'replayed':>8} {'p50 ms':>20} "
        f"{'p99 ms':>20} {'TTFF p50':>9} {'gaps':>6} {'lost':>8} {'stalls':>6} {'cam sess/cam':>12}  RSS fixed + per viewer")
print(head); print("-" * len(head))
for key in dict.fromkeys((r["workload"], r["system"]) for r in rows):
    runs = [r for r in done if (r["workload"], r["system"]) == key]
    if not runs:
        print(f"{key[0]:<14} {key[1]:<20} skipped (see its logs)")
        continue
    r = runs[0]
    shape = f"{r['workload']} {r['cameras']}x{r['viewers'] // r['cameras']}"
    fit_path = f"{out}/{r['workload']}-{r['system']}.rss.json"
    rss = rss_fit.text(json.load(open(fit_path))) if os.path.exists(fit_path) else "n/a"
    gb = sum(x["gb"] for x in runs)
    replayed = f"{100 * sum(x['replayed_gb'] for x in runs) / gb:.1f}%" if gb else "n/a"
    print(f"{shape:<14} {r['system']:<20} {sum(x['survived'] for x in runs):>5}/{sum(x['viewers'] for x in runs):<5} "
          f"{spread([x['cpu_s_per_gb'] for x in runs]):>20} {replayed:>8} {spread([x['p50_ms'] for x in runs]):>20} "
          f"{spread([x['p99_ms'] for x in runs]):>20} {spread([x['ttff_p50_ms'] for x in runs], 0):>9} "
          f"{sum(x['seq_gaps'] for x in runs):>6} {sum(x['lost'] for x in runs):>8} {sum(x['stalls'] for x in runs):>6} "
          f"{spread([x['camera_sessions_per_camera'] for x in runs]):>12}  {rss}")
by = lambda s: {r["workload"]: [x["ttff_p50_ms"] for x in done if x["system"] == s and x["workload"] == r["workload"]]
                for r in done if r["system"] == s}
on, off = by("shared"), by("shared-nocache")
for w in sorted(on.keys() & off.keys()):
    print(f"time to first frame p50, workload {w}: {spread(on[w], 0)} ms with the GOP cache, {spread(off[w], 0)} ms without")

# Ratios over runs paired by repeat number: each relay system against its BASELINE_BIN twin
# (a regression shows as a ratio above 1), against gst-rtsp-server and against live555.
ratio_rows = []
for w in dict.fromkeys(r["workload"] for r in done):
    by = {s: [r for r in done if r["workload"] == w and r["system"] == s]
          for s in dict.fromkeys(r["system"] for r in done if r["workload"] == w)}
    pairs = [(s[: -len("-base")], s) for s in by if s.endswith("-base") and s[: -len("-base")] in by]
    peers = [p for p in ("gst", "live555") if p in by]
    pairs += [(s, p) for p in peers for s in by if s not in ("gst", "live555")]
    for a, b in pairs:
        ratio_rows.append((w, a, b, spread(paired(by[a], by[b], lambda r: r["cpu_s_per_gb"])),
                           spread(paired(by[a], by[b], lambda r: r["kb_per_viewer"]))))
if ratio_rows:
    print()
    print("ratios, median (min-max) over runs paired by repeat (run i against run i):")
    head = f"{'workload':<9} {'system':<20} {'against':<20} {'CPU s/GB':>20} {'RSS per viewer':>20}"
    print(head); print("-" * len(head))
    for w, a, b, cpu, rss in ratio_rows:
        print(f"{w:<9} {a:<20} {b:<20} {cpu:>20} {rss:>20}")
PY
echo "reports, logs and rows in $out" >&2

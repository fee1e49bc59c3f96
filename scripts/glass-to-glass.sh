#!/usr/bin/env bash
# Glass-to-glass delay: the relay's player page (headless Chromium, RTSP over WebSocket) against
# FFmpeg (RTSP tunnelled over HTTP), both watching one camera through one shared route of the
# relay at the same time. The camera (tests/peers/stamp_camera.py) writes each frame's capture
# time into the picture; each viewer reads it back from the decoded picture when the frame is
# shown (page) or decoded (FFmpeg). tests/peers/glass_to_glass.py prints per viewer p50/p95 and
# the page minus FFmpeg.
# Environment: SECS (20) per run, RUNS (1), WARMUP (3), SHARDS (2), OUT (target/glass-to-glass),
# PAGE_QUERY (appended to the page URL, e.g. "?maxLatency=0.3"), ROUTE (more keys for the route,
# e.g. "gop_cache = false"),
# SKIP_BUILD. Needs gstreamer + python3-gi, python3-websockets, chromium, ffmpeg
# (scripts/install-test-deps.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${SECS:-20}; runs=${RUNS:-1}; warmup=${WARMUP:-3}
out=${OUT:-$root/target/glass-to-glass}
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay)
port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
tun=$(port); met=$(port)

# The camera quits when its standard input closes, so it never outlives this script.
coproc CAMERA { exec /usr/bin/python3 "$root/tests/peers/stamp_camera.py" 2>"$out/camera.log"; }
cpid=$CAMERA_PID
read -r ready <&"${CAMERA[0]}"
cam=${ready#READY port=}
{ printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n' "$tun" "$met"
  printf '[runtime]\nshards = %s\n[log]\nlevel = "warn"\n' "${SHARDS:-2}"
  printf '[[route]]\npath = "/cam1"\nupstream = "rtsp://127.0.0.1:%s/cam1"\nopen = true\n%s\n' "$cam" "${ROUTE:-}"
} >"$out/relay.toml"
"$root/target/release/rtsp-tunnel-relay" --config "$out/relay.toml" 2>"$out/relay.log" &
rpid=$!
trap 'kill $rpid $cpid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$met/readyz" >/dev/null && break; sleep 0.1; done

for run in $(seq "$runs"); do
  echo "run $run: ${secs} s (load average $(cut -d" " -f1-3 /proc/loadavg))" >&2
  timeout -k 5 $((secs + warmup + 90)) /usr/bin/python3 "$root/tests/peers/glass_to_glass.py" \
    "http://127.0.0.1:$tun/cam1${PAGE_QUERY:-}" "rtsp://127.0.0.1:$tun/cam1" --seconds "$secs" --warmup "$warmup" --samples "$out/run$run.samples.json" \
    >"$out/run$run.json"
done
echo "JSON per run in $out/run*.json" >&2

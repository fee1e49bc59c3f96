#!/usr/bin/env bash
# Relay CPU per GB delivered: tunnel viewers (the load generator) against RTSP-over-WebSocket
# viewers (tests/peers/ws_rtsp_client.py, Python websockets), one after the other, through one
# relay to the same load-generator cameras. Bytes are the relay's own relay_bytes_total{to_viewer}.
# Environment: SESSIONS (20) BITRATE (2M) SECS (20) OUT (target/websocket-cost) SKIP_BUILD
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sessions=${SESSIONS:-20}; bitrate=${BITRATE:-2M}; secs=${SECS:-20}
out=${OUT:-$root/target/websocket-cost}
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
cam=29654; tun=29680; met=29690
"$bin/loadtest" camera --listen 127.0.0.1:$cam --streams "$sessions" --bitrate "$bitrate" 2>"$out/camera.log" &
cpid=$!
{ printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n' $tun $met
  printf '[runtime]\nshards = 2\n[limits]\nmax_connections_per_ip = 100000\n[log]\nlevel = "warn"\n'
  for i in $(seq 0 $((sessions - 1))); do printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\n' "$i" $cam "$i"; done
} >"$out/relay.toml"
"$bin/rtsp-tunnel-relay" --config "$out/relay.toml" 2>"$out/relay.log" &
rpid=$!
trap 'kill $rpid $cpid 2>/dev/null || true' EXIT
sleep 2
bytes() { curl -s http://127.0.0.1:$met/metrics | awk '/^relay_bytes_total\{direction="to_viewer"\}/ {print $2}'; }
ticks() { awk '{print $14 + $15}' /proc/$rpid/stat; }
for mode in tunnel websocket; do
  c0=$(ticks); b0=$(bytes)
  if [ $mode = tunnel ]; then
    "$bin/loadtest" viewers --target 127.0.0.1:$tun --mode tunnel --sessions "$sessions" --paths "$sessions" \
      --ramp 1000/s --duration "${secs}s" --json "$out/tunnel.json" 2>"$out/tunnel.log"
  else
    pids=()
    for i in $(seq 0 $((sessions - 1))); do
      timeout $((secs + 20)) /usr/bin/python3 "$root/tests/peers/ws_rtsp_client.py" "ws://127.0.0.1:$tun/cam$i" \
        --seconds "$secs" >"$out/ws$i.json" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}" || true
  fi
  c1=$(ticks); b1=$(bytes)
  /usr/bin/python3 -c "import sys; m, t, b = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) - float(sys.argv[4]); gb = b / 1e9; cpu = t / 100; print(f'{m:>9}: {gb:.3f} GB, relay CPU {cpu:.2f} s = {cpu / gb if gb else 0:.2f} CPU s/GB')" \
    $mode $((c1 - c0)) "$b1" "$b0"
done

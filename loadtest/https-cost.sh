#!/usr/bin/env bash
# CPU cost of HTTPS tunnels against plain HTTP ones: one relay with both listeners, the same
# workload through each in turn, the relay's CPU seconds per GB for each.
# Environment: SESSIONS (200) BITRATE (1M) DURATION (20s) OUT (target/https-cost)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sessions=${SESSIONS:-200}; bitrate=${BITRATE:-1M}; duration=${DURATION:-20s}
out=${OUT:-$root/target/https-cost}
mkdir -p "$out"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
cam=28654; http=28680; https=28643
"$bin/loadtest" camera --listen 127.0.0.1:$cam --streams "$sessions" --bitrate "$bitrate" 2>"$out/camera.log" &
cpid=$!
{ printf '[listen]\ntunnel = ["127.0.0.1:%s"]\n[[listen.tls]]\naddr = "127.0.0.1:%s"\ncert = "%s"\nkey = "%s"\n' $http $https "$out/cert.pem" "$out/key.pem"
  printf '[runtime]\nshards = 2\n[limits]\nmax_connections_per_ip = 100000\n[log]\nlevel = "warn"\n'
  for i in $(seq 0 $((sessions - 1))); do printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\n' "$i" $cam "$i"; done
} >"$out/relay.toml"
"$bin/rtsp-tunnel-relay" --config "$out/relay.toml" 2>"$out/relay.log" &
rpid=$!
trap 'kill $rpid $cpid 2>/dev/null || true' EXIT
sleep 2
for mode in http https; do
  port=$http; flag=""
  [ $mode = https ] && { port=$https; flag="--tls"; }
  c0=$(awk '{print $14 + $15}' /proc/$rpid/stat)
  "$bin/loadtest" viewers --target 127.0.0.1:$port --mode tunnel $flag --sessions "$sessions" --paths "$sessions" \
      --ramp 1000/s --duration "$duration" --source-ips 127.0.0.2-127.0.0.60 --json "$out/$mode.json" 2>"$out/$mode.log"
  c1=$(awk '{print $14 + $15}' /proc/$rpid/stat)
  MODE=$mode TICKS=$((c1 - c0)) REPORT="$out/$mode.json" python3 - <<'PY'
import json, os
r = json.load(open(os.environ["REPORT"]))
gb = r["bytes_received"] / 1e9
cpu = int(os.environ["TICKS"]) / 100
p99 = (r["media_latency_ms"] or {}).get("p99")
print(f"{os.environ['MODE']:>5}: {r['sessions_survived']}/{r['sessions_requested']} sessions played to the end, "
      f"lost {r['packets_lost']} of {r['packets_expected']}, {gb:.2f} GB, relay CPU {cpu:.1f} s = "
      f"{f'{cpu / gb:.2f}' if gb else 'n/a'} CPU s/GB, media p99 {f'{p99:.2f} ms' if p99 is not None else 'null'}")
PY
done

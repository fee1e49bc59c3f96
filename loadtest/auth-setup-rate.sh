#!/usr/bin/env bash
# Session setup rate under each [auth] method, one fresh relay per method, plain RTSP viewers:
#   internal  open routes (nothing asked)
#   http      a callback to tests/peers/auth_service.py on 127.0.0.1 (Python, threaded), cache_secs = 0
#   jwt       an RS256 token checked against a key-set file
# Every viewer sends `Authorization: Basic loadtest:TOKEN` (`loadtest viewers --token`); the
# relay has basic_over_plain = true. Printed per method: the viewers' "starts" and setup-latency
# lines. Environment: SESSIONS (2000) RAMP (2000/s) CAMERAS (10) SHARDS (2) SKIP_BUILD (unset).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sessions=${SESSIONS:-2000}; ramp=${RAMP:-2000/s}; cameras=${CAMERAS:-10}; shards=${SHARDS:-2}
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
service=$root/tests/peers/auth_service.py
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. "$root/loadtest/lib.sh"

cam_port=$(free_port)
"$bin/loadtest" camera --listen "127.0.0.1:$cam_port" --streams "$cameras" --bitrate 16k --gop 250 >/dev/null 2>&1 &
pids+=($!)
wait_port "$cam_port"
/usr/bin/python3 "$service" keygen --keys "$work/keys" --kid k1 --alg RS256
/usr/bin/python3 "$service" jwks --keys "$work/keys" > "$work/jwks.json"
token=$(/usr/bin/python3 "$service" token --keys "$work/keys" --kid k1 --routes '/cam*' --exp-in 3600)
/usr/bin/python3 "$service" serve --keys "$work/keys" --users "loadtest:pw" --port-file "$work/auth-port" --lifetime 600 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/auth-port" ] && break; sleep 0.1; done
auth_port=$(cat "$work/auth-port")

for method in internal http jwt; do
  port=$(free_port)
  {
    printf '[listen]\ntunnel = ["127.0.0.1:%s"]\n[runtime]\nshards = %s\n' "$port" "$shards"
    printf '[limits]\nmax_connections_per_ip = 100000\nmax_sessions = 100000\n[log]\nlevel = "warn"\n'
    printf '[auth]\nmethod = "%s"\nbasic_over_plain = true\nmax_failures_per_ip = 1000000\n' "$method"
    printf '[auth.http]\nurl = "http://127.0.0.1:%s/auth"\nheaders = { "X-Relay-Secret" = "s3cret" }\n' "$auth_port"
    printf '[auth.jwt]\njwks_file = "%s"\n' "$work/jwks.json"
    for i in $(seq 0 $((cameras - 1))); do
      printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\n' "$i" "$cam_port" "$i"
      [ "$method" = internal ] && printf 'open = true\n'
    done
  } > "$work/$method.toml"
  # The http method's callback knows loadtest:pw; jwt takes the token as the password.
  secret=$token; [ "$method" = http ] && secret=pw
  "$bin/rtsp-tunnel-relay" --config "$work/$method.toml" >"$work/$method.log" 2>&1 &
  relay=$!
  wait_port "$port"
  echo "== $method: $sessions plain RTSP viewers started at $ramp over $cameras shared cameras, $shards shards"
  "$bin/loadtest" viewers --target "127.0.0.1:$port" --mode rtsp --sessions "$sessions" --ramp "$ramp" \
    --duration 2s --paths "$cameras" --procs 1 --token "$secret" 2>&1 | grep -E "^(starts|setup latency|sessions|  failed)" || true
  kill "$relay"; wait "$relay" 2>/dev/null || true
done

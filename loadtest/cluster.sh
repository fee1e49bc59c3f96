#!/usr/bin/env bash
# Three relays on 127.0.0.2/.3/.4 behind HAProxy on 127.0.0.1 running deploy/haproxy/haproxy.cfg
# (frontend and server lines pointed at this box, `option logasap` added so each connection's
# node is logged when it starts), cameras from `loadtest camera`, SESSIONS reconnecting tunnel
# viewers (loadtest/cluster_viewers.py) over PATHS camera paths from several source addresses.
# Prints sessions established, pairing failures, sessions per node, camera sessions per node and
# how many nodes pull each camera; then SIGKILLs relay 2 and prints what ended, what reconnected
# and how long reconnection took. Files land in target/cluster/.
#
#   loadtest/cluster.sh                                  # 2,000 viewers over 100 paths
#   SESSIONS=200 PATHS=20 loadtest/cluster.sh            # a small run
# Other knobs: BITRATE (per camera, 32k), FPS (5), GOP (50: a keyframe every 10 s), RAMP (viewers started per second, 200), SOURCES
# (127.0.1.1-127.0.1.20), RECOVER (seconds watched after the kill, 15), SHARDS (per relay, 1),
# PORT (HAProxy's port; relays use it too, metrics PORT+1000, cameras PORT+2000; 23080),
# NO_BUILD=1 (use the release binaries as they are).
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-2000}
PATHS=${PATHS:-100}
BITRATE=${BITRATE:-32k}
RAMP=${RAMP:-200}
SOURCES=${SOURCES:-127.0.1.1-127.0.1.20}
RECOVER=${RECOVER:-15}
SHARDS=${SHARDS:-1}
PORT=${PORT:-23080}
MPORT=$((PORT + 1000))
CPORT=$((PORT + 2000))
out=target/cluster
mkdir -p "$out"
rm -f "$out"/*.log "$out"/viewers.json "$out"/kill_at

for p in "$PORT" "$MPORT" "$CPORT" $((PORT + 363)); do
  if ss -Htln "sport = :$p" | grep -q .; then
    echo "cluster: port $p is in use (another run?); choose another PORT" >&2
    exit 1
  fi
done
command -v haproxy >/dev/null || { echo "cluster: haproxy missing (scripts/install-test-deps.sh)" >&2; exit 1; }
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -q -p loadtest -p rtsp-tunnel-relay
bin=target/release

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# 5 pictures a second: 2,000 viewers in one Python process parse every packet they get.
"$bin/loadtest" camera --listen "127.0.0.1:$CPORT" --streams "$PATHS" --bitrate "$BITRATE" --fps "${FPS:-5}" --gop "${GOP:-50}" >"$out/camera.log" 2>&1 &
pids+=($!)

declare -A relay_pid
for n in 1 2 3; do
  ip=127.0.0.$((n + 1))
  {
    # HAProxy sends PROXY v2 headers: the relays see each viewer's own address.
    printf '[listen]\ntunnel = ["%s:%d"]\nmetrics = "%s:%d"\nproxy_protocol = true\nproxy_from = ["127.0.0.1"]\n' \
      "$ip" "$PORT" "$ip" "$MPORT"
    printf '[runtime]\nshards = %d\npin_cores = false\nrecv_buffers = 1024\nshutdown_grace_secs = 2\n' "$SHARDS"
    printf '[limits]\nmax_connections_per_ip = %d\nmax_sessions = %d\n' $((SESSIONS * 3 + 1000)) $((SESSIONS + 1000))
    for k in $(seq 0 $((PATHS - 1))); do
      printf '[[route]]\npath = "/cam%d"\nupstream = "rtsp://127.0.0.1:%d/cam%d"\n' "$k" "$CPORT" "$k"
    done
  } >"$out/relay$n.toml"
  RUST_LOG=warn "$bin/rtsp-tunnel-relay" --config "$out/relay$n.toml" 2>"$out/relay$n.log" &
  relay_pid[$n]=$!
  pids+=($!)
done

awk -v front="127.0.0.1:$PORT" -v tls="127.0.0.1:$((PORT + 363))" -v port="$PORT" -v mport="$MPORT" \
    -v maxconn=$((SESSIONS * 2 + 1000)) '
  /^ *server relay/ { next }
  /^ *bind :80$/ { print "    bind " front; next }
  /^ *bind :443$/ { print "    bind " tls; next }
  /^ *maxconn / { print "    maxconn " maxconn; next }
  { print }
  /^ *log-format / { print "    option logasap" }
  /^ *retries 0$/ { for (n = 1; n <= 3; n++) printf "    server relay%d 127.0.0.%d:%d check port %d send-proxy-v2\n", n, n + 1, port, mport }
' deploy/haproxy/haproxy.cfg >"$out/haproxy.cfg"
haproxy -c -q -f "$out/haproxy.cfg"
haproxy -db -f "$out/haproxy.cfg" >"$out/haproxy.log" 2>&1 &
pids+=($!)

metric() { # node series
  curl -s --max-time 2 "http://127.0.0.$(($1 + 1)):$MPORT/metrics" | awk -v s="$2" '$1 == s { print $2 }'
}
sum_metric() { # series [nodes...]
  local series=$1 total=0 v
  shift
  for n in "$@"; do v=$(metric "$n" "$series"); total=$(awk -v a="$total" -v b="${v:-0}" 'BEGIN { print a + b }'); done
  echo "$total"
}
pairing_failures() { # nodes...
  local t=0
  for r in post_without_get get_without_post duplicate_cookie bad_cookie; do
    t=$(awk -v a="$t" -v b="$(sum_metric "relay_rejections_total{reason=\"$r\"}" "$@")" 'BEGIN { print a + b }')
  done
  echo "$t"
}
ended_sessions() { # nodes...: sessions ended, every outcome
  local t=0 n
  for n in "$@"; do
    t=$((t + $(curl -s --max-time 2 "http://127.0.0.$((n + 1)):$MPORT/metrics" |
      awk '/^relay_sessions_total\{/ { s += $2 } END { print s + 0 }')))
  done
  echo "$t"
}
for n in 1 2 3; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.$((n + 1)):$MPORT/readyz" >/dev/null && break; sleep 0.1; done
done
sleep 2.5 # HAProxy's first health checks

echo "cluster: 3 relays (127.0.0.2-4:$PORT, $SHARDS shard each) behind HAProxy 127.0.0.1:$PORT;" \
  "$PATHS cameras at $BITRATE; $SESSIONS tunnel viewers from $SOURCES, ramp $RAMP/s"
python3 loadtest/cluster_viewers.py run --target "127.0.0.1:$PORT" --sessions "$SESSIONS" --paths "$PATHS" \
  --sources "$SOURCES" --ramp "$RAMP" --out "$out/viewers.json" 2>"$out/viewers.log" &
viewers=$!
pids+=($viewers)

started=$(date +%s)
limit=$((SESSIONS / ${RAMP%.*} + 60))
while :; do
  active=$(sum_metric relay_sessions_active 1 2 3)
  [ "${active%.*}" -ge "$SESSIONS" ] && break
  [ $(($(date +%s) - started)) -ge "$limit" ] && { echo "cluster: only $active of $SESSIONS sessions after ${limit}s"; break; }
  sleep 1
done
sleep 2

echo
echo "== all viewers started ($(($(date +%s) - started)) s)"
echo "sessions established: $(sum_metric relay_sessions_active 1 2 3) of $SESSIONS"
echo "pairing failures (post_without_get + get_without_post + duplicate_cookie + bad_cookie): $(pairing_failures 1 2 3)"
for n in 1 2 3; do
  echo "relay$n: sessions $(metric "$n" relay_sessions_active)," \
    "tunnel GETs $(metric "$n" 'relay_connections_total{kind="tunnel_get"}')" \
    "POSTs $(metric "$n" 'relay_connections_total{kind="tunnel_post"}')," \
    "camera sessions opened $(metric "$n" 'relay_connections_total{kind="upstream"}')"
done
awk '/ relays\/relay[0-9]+ route=/ {
       match($0, / relays\/relay[0-9]+ /); node = substr($0, RSTART + 8, RLENGTH - 9)
       match($0, /route=[^ ]+/); route = substr($0, RSTART + 6, RLENGTH - 6)
       if (!((route, node) in seen)) { seen[route, node] = 1; nodes[route]++ }
     }
     END { for (r in nodes) count[nodes[r]]++
           printf "cameras by how many nodes pull them:"
           for (k in count) printf " %d node(s): %d cameras;", k, count[k]
           printf " (%d cameras)\n", length(nodes) }' "$out/haproxy.log"
upstream=$(sum_metric 'relay_connections_total{kind="upstream"}' 1 2 3)
echo "camera sessions opened per camera across the cluster: $(awk -v u="$upstream" -v p="$PATHS" 'BEGIN { printf "%.2f", u / p }')" \
  "(shared routes: one per node serving the path); cameras playing: $(sum_metric relay_cameras_active 1 2 3) of $PATHS"

echo
echo "== SIGKILL relay2 (pid ${relay_pid[2]}, $(metric 2 relay_sessions_active) sessions)"
before1=$(metric 1 relay_sessions_active)
before3=$(metric 3 relay_sessions_active)
date +%s.%N >"$out/kill_at"
{ kill -KILL "${relay_pid[2]}" && wait "${relay_pid[2]}"; } 2>/dev/null || true
sleep "$RECOVER"
echo "after ${RECOVER}s: relay1 sessions $before1 -> $(metric 1 relay_sessions_active)," \
  "relay3 $before3 -> $(metric 3 relay_sessions_active)," \
  "sessions ended on relay1/relay3 since the start: $(ended_sessions 1 3)," \
  "pairing failures on relay1/relay3: $(pairing_failures 1 3)"
kill -TERM "$viewers"
wait "$viewers" || true
python3 loadtest/cluster_viewers.py report --viewers "$out/viewers.json" --kill-at "$out/kill_at" \
  --haproxy-log "$out/haproxy.log" --killed relay2

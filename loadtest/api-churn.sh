#!/usr/bin/env bash
# Route churn over the control API while viewers play other routes: creates CHANGES routes one
# by one over the API (PUT /v1/routes/churn/N), then deletes them one by one, while VIEWERS
# tunnel viewers play the file's routes; reports the time per change (median, p99, mean, over a
# keep-alive connection) and what the viewers lost (the load generator's packets_lost,
# rtp_seq_gaps, failed sessions): a change must touch its route alone.
#
# Environment: CHANGES (1000) VIEWERS (200) CAMERAS (20: file routes the viewers spread over)
#   BITRATE (500k) SHARDS (2) OUT (target/api-churn) SKIP_BUILD (unset)
# Opt-in: not part of the test run (it takes a minute or two and loads the machine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
changes=${CHANGES:-1000}; viewers=${VIEWERS:-200}; cameras=${CAMERAS:-20}
bitrate=${BITRATE:-500k}; shards=${SHARDS:-2}; out=${OUT:-$root/target/api-churn}
mkdir -p "$out"; rm -rf "$out/state"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release -q -p rtsp-tunnel-relay -p loadtest)
bin=$root/target/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
. "$root/loadtest/lib.sh"

cam_port=$(free_port); port=$(free_port); mport=$(free_port); api_port=$(free_port)
secret=churn-$(date +%s%N)
digest=$(printf %s "$secret" | sha256sum | cut -d' ' -f1)
"$bin/loadtest" camera --listen "127.0.0.1:$cam_port" --streams "$cameras" --bitrate "$bitrate" \
  2>"$out/camera.log" &
pids+=($!)
{
  printf '[listen]\ntunnel = ["127.0.0.1:%s"]\nmetrics = "127.0.0.1:%s"\n' "$port" "$mport"
  printf '[runtime]\nshards = %s\n[limits]\nmax_connections_per_ip = 100000\n[log]\nlevel = "warn"\n' "$shards"
  printf '[api]\nlisten = "127.0.0.1:%s"\nstate_dir = "%s/state"\n' "$api_port" "$out"
  printf '[[api.token]]\nname = "churn"\nsha256 = "%s"\nscope = "admin"\n' "$digest"
  for i in $(seq 0 $((cameras - 1))); do
    printf '[[route]]\npath = "/cam%s"\nupstream = "rtsp://127.0.0.1:%s/cam%s"\n' "$i" "$cam_port" "$i"
  done
} >"$out/relay.toml"
wait_port "$cam_port"
"$bin/rtsp-tunnel-relay" --config "$out/relay.toml" 2>"$out/relay.log" &
pids+=($!)
wait_port "$port"; wait_port "$api_port"

# Long enough for the ramp, both churn phases and a margin; the viewers stop on their own.
play_s=$((20 + changes * 2 / 50))
"$bin/loadtest" viewers --target "127.0.0.1:$port" --mode tunnel --sessions "$viewers" --ramp 100/s \
  --duration "${play_s}s" --paths "$cameras" --stream-start rtp-info --json "$out/viewers.json" \
  2>"$out/viewers.log" &
vpid=$!; pids+=($vpid)
sleep 4

python3 - "$api_port" "$secret" "$changes" "$cam_port" "$cameras" >"$out/churn.json" <<'PY'
import http.client, json, statistics, sys, time
port, secret, n, cam_port, cams = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
hdr = {"Authorization": "Bearer " + secret, "Content-Type": "application/json"}
def timed(method, path, body=None, want=(200, 201, 204)):
    t = time.perf_counter()
    c.request(method, path, body=body, headers=hdr)
    r = c.getresponse(); text = r.read()
    if r.status not in want:
        sys.exit(f"{method} {path}: {r.status} {text[:200]!r}")
    return (time.perf_counter() - t) * 1000
def summary(ms):
    ms = sorted(ms)
    return {"n": len(ms), "mean_ms": round(statistics.mean(ms), 2), "p50_ms": round(ms[len(ms) // 2], 2),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2), "max_ms": round(ms[-1], 2)}
creates = [timed("PUT", f"/v1/routes/churn/{i}",
                 json.dumps({"upstream": f"rtsp://127.0.0.1:{cam_port}/cam{i % cams}"}), (201,)) for i in range(n)]
deletes = [timed("DELETE", f"/v1/routes/churn/{i}", None, (204,)) for i in range(n)]
print(json.dumps({"create": summary(creates), "delete": summary(deletes)}))
PY
wait "$vpid" || true
python3 - "$out/churn.json" "$out/viewers.json" <<'PY'
import json, sys
churn, v = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print("changes:", json.dumps(churn))
keys = ["sessions_requested", "sessions_established", "sessions_survived", "sessions_failed",
        "packets_expected", "packets_lost", "rtp_seq_gaps", "stalls", "failures_after_play"]
print("viewers:", json.dumps({k: v.get(k) for k in keys}))
ok = v["sessions_survived"] == v["sessions_requested"] and v["packets_lost"] == 0 and v["rtp_seq_gaps"] == 0
print("PASS: no viewer lost a packet" if ok else "FAIL: viewers lost packets or sessions")
sys.exit(0 if ok else 1)
PY

#!/usr/bin/env bash
# Builds the Debian package, installs it with apt-get, starts the relay from the packaged
# configuration as the unit would (systemd need not run: ExecStartPre's --check-config, then
# ExecStart as the rtsp-relay user with CAP_NET_BIND_SERVICE only), checks /readyz, then removes
# the package (the edited conffile stays) and purges it (it goes). Needs root; installs
# cargo-deb from crates.io if missing. Opt-in: RELAY_TEST_DEB=1 scripts/test.sh, or run it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "test-deb: needs root (apt-get, setpriv)" >&2; exit 1; }
pkg=rtsp-tunnel-relay
conf=/etc/rtsp-tunnel-relay/relay.toml
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }

if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
  fail "$pkg is already installed on this box; remove it first"
fi
# The packaged configuration binds :80 and 127.0.0.1:8079.
for port in 80 8079; do
  if ss -Htln "sport = :$port" | grep -q .; then
    echo "test-deb: skipped: port $port is in use (the packaged configuration needs it)"
    exit 0
  fi
done
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
started=$(date +%s)
scripts/build-deb.sh
deb=$(ls -t target/debian/${pkg}_*.deb | head -1)
echo "test-deb: built $deb in $(( $(date +%s) - started )) s"
dpkg-deb --info "$deb" | grep -E "Package|Version|Depends|conffiles" || true
dpkg-deb --contents "$deb" | awk '{print $6}'

relay=
cleanup() {
  [ -n "$relay" ] && kill "$relay" 2>/dev/null || true
  dpkg -l "$pkg" >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "$pkg" >/dev/null 2>&1 || true
}
trap cleanup EXIT

DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null
[ -x /usr/bin/rtsp-tunnel-relay ] || fail "binary not installed"
unit=/lib/systemd/system/$pkg.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/$pkg.service
[ -f "$unit" ] || fail "unit not installed"
grep -q "^ExecStart=/usr/bin/rtsp-tunnel-relay --config $conf$" "$unit" || fail "unit ExecStart: $(grep ExecStart= "$unit")"
if command -v systemd-analyze >/dev/null; then
  verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
  [ -z "$verify" ] || fail "systemd-analyze verify: $verify"
fi
getent passwd rtsp-relay >/dev/null || fail "no rtsp-relay user"
[ "$(stat -c '%U:%G %a' "$conf")" = "root:rtsp-relay 640" ] || fail "$conf is $(stat -c '%U:%G %a' "$conf")"
grep -qx "$conf" "/var/lib/dpkg/info/$pkg.conffiles" || fail "$conf is not a conffile"

# ExecStartPre, then ExecStart as the unit runs it: the service user, only the bind capability.
/usr/bin/rtsp-tunnel-relay --config "$conf" --check-config
log=$(mktemp)
setpriv --reuid rtsp-relay --regid rtsp-relay --init-groups \
  --inh-caps +net_bind_service --ambient-caps +net_bind_service --bounding-set -all,+net_bind_service \
  /usr/bin/rtsp-tunnel-relay --config "$conf" 2>"$log" &
relay=$!
ready=
for _ in $(seq 100); do
  if curl -fsS http://127.0.0.1:8079/readyz >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { cat "$log"; fail "/readyz never answered 200"; }
echo "test-deb: packaged relay ready: $(curl -sS http://127.0.0.1:8079/readyz)"
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-sessioncookie: abc' -H 'Accept: application/x-rtsp-tunnelled' --max-time 2 http://127.0.0.1/cam1 || true)
echo "test-deb: GET /cam1 on :80 -> $status (no routes yet)"
[ "$status" = "404" ] || fail "expected 404 from the route-less packaged configuration, got $status"
kill -TERM "$relay"; wait "$relay" || true; relay=

# remove keeps an edited conffile; purge deletes it.
echo "# edited" >> "$conf"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "$pkg" >/dev/null
[ ! -e /usr/bin/rtsp-tunnel-relay ] || fail "binary left after remove"
grep -q "# edited" "$conf" || fail "remove lost the edited conffile"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "$pkg" >/dev/null
[ ! -e "$conf" ] || fail "purge left $conf"
echo "test-deb: ok (build, install, start from the packaged configuration, remove, purge)"

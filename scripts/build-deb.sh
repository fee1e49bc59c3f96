#!/usr/bin/env bash
# Builds the Debian package target/debian/rtsp-tunnel-relay_<version>-1_<arch>.deb with cargo deb
# (cargo install cargo-deb): the release binary in /usr/bin, the systemd unit, a default
# /etc/rtsp-tunnel-relay/relay.toml (a conffile), the rtsp-relay system user. Extra arguments go
# to cargo deb (e.g. --no-build).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-deb: cargo-deb missing: cargo install cargo-deb --locked" >&2
  exit 1
fi
# The one unit in systemd/, with the packaged binary's path.
mkdir -p target/deb-unit
sed -e 's#/usr/local/bin/rtsp-tunnel-relay#/usr/bin/rtsp-tunnel-relay#g' \
    -e 's#^\# Install: binary in /usr/local/bin, #\# Installed by the Debian package: binary in /usr/bin, #' \
    systemd/rtsp-tunnel-relay.service > target/deb-unit/rtsp-tunnel-relay.service
if grep -q /usr/local target/deb-unit/rtsp-tunnel-relay.service; then
  echo "build-deb: the unit still names /usr/local" >&2
  exit 1
fi
cargo deb -p rtsp-tunnel-relay "$@"

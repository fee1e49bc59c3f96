#!/usr/bin/env bash
# Installs the real peers the tests use, from Debian's packages: FFmpeg and GStreamer viewers,
# a gst-rtsp-server camera (python3-gi), promtool (prometheus), HAProxy (load-test baseline),
# systemd-analyze, and for the browser player: headless Chromium, Python websockets (the
# RTSP-over-WebSocket client and DevTools driver) and Node (the player modules' tests).
# PyJWT with cryptography signs the tokens the external-authorization tests present (RS256,
# ES256, EdDSA). Idempotent: does nothing when everything is present. Needs root for apt-get.
set -euo pipefail

packages=(
  ffmpeg
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp
  python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0
  prometheus haproxy systemd procps fonts-dejavu-core
  chromium python3-websockets nodejs
  python3-jwt python3-cryptography
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-test-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-test-deps: done"

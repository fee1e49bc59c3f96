#!/usr/bin/env bash
# The test command: installs the real peers, checks formatting and lints, runs every test of the
# workspace (unit, property, in-process end to end, real FFmpeg/GStreamer/gst-rtsp-server
# interop, metrics/promtool, systemd unit, a small load run). Exits non-zero on any failure.
#
# scripts/test.sh --quick: the loop for whoever changes the code. `cargo fmt --check` and every
# test except those that start real peers (FFmpeg, GStreamer, gst-rtsp-server, HAProxy,
# Chromium, Node) or run the load generator: with RELAY_QUICK=1 those return at once (they begin
# with `require_peers!`/`skip_when_quick!`). No dependency install, clippy or release build.
# Equivalent: RELAY_QUICK=1 cargo test --workspace
#
# Opt-in extras (not part of the default run):
#   RELAY_LOADTEST_FULL=1  the README's full load runs (minutes; see loadtest/README.md)
#   RELAY_TEST_DEB=1       build the Debian package and install, start, remove and purge it
#                          (scripts/test-deb.sh: a release build plus cargo-deb, several minutes)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ "${1:-}" = "--quick" ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo test, real-peer and load tests skipped (RELAY_QUICK=1)"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  RELAY_QUICK=1 cargo test --workspace -- --test-threads="${RELAY_TEST_THREADS:-4}" 2>&1 | tee "$log"
  totals=$(awk '/^test result:/ {p += $4; f += $6} END {printf "%d passed, %d failed", p, f}' "$log")
  step "quick tests passed (the real-peer ones counted as passed were skipped; run scripts/test.sh before pushing)"
  echo "summary: $totals"
  exit 0
fi

step "installing test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "building (release binaries for the interop and load tests)"
cargo build --workspace --release --bins

step "cargo test"
# Every test runs, whatever the caller's environment says.
unset RELAY_QUICK
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace -- --test-threads="${RELAY_TEST_THREADS:-4}" 2>&1 | tee "$log"
# Every runner's closing line, totalled (the last runner cargo prints is the doc tests').
totals=$(awk '/^test result:/ {p += $4; f += $6} END {printf "%d passed, %d failed", p, f}' "$log")

if [ "${RELAY_LOADTEST_FULL:-0}" = "1" ]; then
  step "full load runs (RELAY_LOADTEST_FULL=1)"
  loadtest/full-run.sh
fi

if [ "${RELAY_TEST_DEB:-0}" = "1" ]; then
  step "Debian package (RELAY_TEST_DEB=1)"
  scripts/test-deb.sh
fi

step "all tests passed"
echo "summary: $totals"

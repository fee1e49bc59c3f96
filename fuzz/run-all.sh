#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, one after another, and prints a
# summary line per target (executions, corpus, crashes). Usage: fuzz/run-all.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
./seed.sh >/dev/null
export RUSTC_BOOTSTRAP=1   # cargo-fuzz needs nightly flags; the stable compiler accepts them so
RUSTC_BOOTSTRAP=1 cargo fuzz build -O --sanitizer none >/dev/null 2>&1
for t in $(cargo fuzz list); do
  log="artifacts/$t.log"
  mkdir -p artifacts
  cargo fuzz run -O --sanitizer none "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || true
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  crashes=$(ls "artifacts/$t" 2>/dev/null | grep -c -E '^(crash|oom|timeout)-' || true)
  echo "$t: ${execs} execs in ${secs}s, corpus $(ls "corpus/$t" | wc -l), findings ${crashes}"
done

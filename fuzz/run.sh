#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 120) and stops at the
# first crash. Needs the nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
#   fuzz/run.sh            # every target, 120 s each
#   SECONDS_EACH=600 fuzz/run.sh json_scan
# Not part of CI: it is long, and needs nightly.
set -euo pipefail
cd "$(dirname "$0")"
each=${SECONDS_EACH:-120}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(path_normaliser query_parser body_reading json_scan jsonrpc_reader)
fi
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  echo "== $t: ${each}s"
  mkdir -p "corpus/$t"
  # -max_len keeps inputs to request-sized bodies; rss_limit bounds memory.
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$each" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|SUMMARY|panicked|ERROR" || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
    echo "== $t crashed: see fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "== every target ran ${each}s without a crash"

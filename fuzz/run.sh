#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, starting from the
# seed corpus in corpus/seed/<target>; findings land in artifacts/<target>.
# Usage: fuzz/run.sh SECONDS [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(syslog framing gelf_json decompress reassembler mailcow_encoder fluent_forward queue_segment docker_logs)
if rustup toolchain list | grep -q nightly; then fuzz=(cargo +nightly fuzz); else fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz); fi
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== $target: ${seconds}s"
  "${fuzz[@]}" run -O "$target" "corpus/$target" "corpus/seed/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=1024 -print_final_stats=1 2>&1 |
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|.*panicked)' || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "FINDING in $target: see fuzz/artifacts/$target" >&2
    exit 1
  fi
done

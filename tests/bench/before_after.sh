#!/usr/bin/env bash
# Two builds of cowlogd under the same load, alternating, each run on a
# fresh daemon and a flushed Redis: what a change costs end to end.
#
#   tests/bench/before_after.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]
#
# Each round runs both builds (before first in odd rounds, after first in
# even ones) on: syslog TCP, 200,000 lines as fast as possible; and GELF
# UDP, 200,000 lines at 50,000/s. Memory queue, list_cap 1,000,000, the
# mailcow profile. Prints one line per run: delivered, msg/s, the daemon's
# CPU µs per message. CALLGRIND=1 first counts each build's instructions
# per message under valgrind (syslog TCP and GELF TCP, 50,000 lines each at
# 20,000/s, the start-up cost subtracted): repeatable where CPU time on a
# shared machine is not. Needs redis-server (and valgrind) and
# target/release/cowlogd-bench (cargo build --release); builds nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
before=${1:?before binary}
after=${2:?after binary}
rounds=${3:-3}
bench=${COWLOGD_BENCH:-target/release/cowlogd-bench}
for tool in redis-server redis-cli "$bench" "$before" "$after"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || { echo "missing $tool (apt-get install redis-server; cargo build --release)" >&2; exit 1; }
done

work=$(mktemp -d)
redis_port=16393
source tests/bench/common.sh
trap 'kill $(jobs -p) 2>/dev/null || true; stop_redis; rm -rf "$work"' EXIT
syslog_port=25393
gelf_port=25394
gelf_tcp_port=25395
start_redis
cat > "$work/cowlogd.toml" <<TOML
[redis]
url = "$redis"
list_cap = 1000000
[inputs]
gelf_udp = "127.0.0.1:$gelf_port"
gelf_tcp = "127.0.0.1:$gelf_tcp_port"
syslog_udp = ""
syslog_tcp = "127.0.0.1:$syslog_port"
[metrics]
listen = ""
TOML

run() {  # label binary traffic...
  local label=$1 binary=$2; shift 2
  redis-cli -p "$redis_port" FLUSHALL >/dev/null
  "$binary" --config "$work/cowlogd.toml" >"$work/daemon.log" 2>&1 &
  local pid=$!
  wait_until_running "$work/daemon.log"
  local result
  result=$("$bench" "$@" --redis "$redis" --pid "$pid" --wait-s 30 --json)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$label" "$result" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
print(f"  {label:<6} {r['target']:<10} {r['delivered']:>7,} / {r['sent']:,} delivered, "
      f"{r['throughput']:>9,.0f} msg/s, {r['collector_cpu_us_per_message']:.2f} µs/msg")
PY
}

if [ -n "${CALLGRIND:-}" ]; then
  echo "instructions per message (callgrind, 50,000 lines at 20,000/s):"
  for traffic in "syslog-tcp $syslog_port" "gelf-tcp $gelf_tcp_port"; do
    read -r target port <<<"$traffic"
    for label in before after; do
      binary=$before; [ "$label" = after ] && binary=$after
      idle=$(callgrind_instructions "$binary" "$work/cowlogd.toml" "$target" "127.0.0.1:$port" 0)
      busy=$(callgrind_instructions "$binary" "$work/cowlogd.toml" "$target" "127.0.0.1:$port" 50000)
      echo "  $target $label: $(( (busy - idle) / 50000 ))"
    done
  done
fi

for round in $(seq "$rounds"); do
  echo "round $round:"
  if [ $((round % 2)) -eq 1 ]; then order="before after"; else order="after before"; fi
  for traffic in syslog gelf; do
    for label in $order; do
      binary=$before; [ "$label" = after ] && binary=$after
      if [ "$traffic" = syslog ]; then
        run "$label" "$binary" --target syslog-tcp --addr "127.0.0.1:$syslog_port" -n 200000
      else
        run "$label" "$binary" --target gelf-udp --addr "127.0.0.1:$gelf_port" -n 200000 --rate 50000
      fi
    done
  done
done

#!/usr/bin/env bash
# What ban insight costs: the same build and syslog TCP traffic with
# `[f2b]` off and on (netfilter's nine default rules).
#
#   tests/bench/f2b_cost.sh [RUNS] [ATTACKERS]
#
# 1. Instructions per message, counted by callgrind (repeatable where CPU
#    time on a shared machine is not): the release daemon under valgrind,
#    50,000 lines at 20,000/s, stopped with SIGINT; the same with nothing
#    sent is the start-up cost, subtracted.
# 2. Throughput and CPU per message by the generator, RUNS alternating
#    runs of 200,000 lines as fast as possible (default 3), the daemon
#    restarted for each.
# ATTACKERS (default 1000) public addresses send the mix's SASL failures
# (one line in eight), so that they count toward bans as in an attack.
# CPU_QUOTA=40 caps the daemon at 40 % of one core in step 2 (a cgroup v1
# cpu controller at /sys/fs/cgroup/cpu, as root), so that it, not the
# generator or Redis, sets the pace and msg/s shows what it costs.
# Needs redis-server and valgrind; builds nothing (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
attackers=${2:-1000}
bench=${COWLOGD_BENCH:-target/release/cowlogd-bench}
cowlogd=${COWLOGD:-target/release/cowlogd}
for tool in redis-server redis-cli valgrind "$bench" "$cowlogd"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || { echo "missing $tool (apt-get install redis-server valgrind; cargo build --release)" >&2; exit 1; }
done

work=$(mktemp -d)
cgroup=""
source tests/bench/common.sh
trap 'kill $(jobs -p) 2>/dev/null || true; stop_redis; rm -rf "$work"; [ -z "$cgroup" ] || rmdir "$cgroup" 2>/dev/null || true' EXIT
redis_port=16392
port=25392
start_redis

for setting in off on; do
  cat > "$work/$setting.toml" <<TOML
[redis]
url = "$redis"
[inputs]
gelf_udp = ""
gelf_tcp = ""
syslog_udp = ""
syslog_tcp = "127.0.0.1:$port"
[metrics]
listen = ""
TOML
done
printf '[f2b]\nenabled = true\n' >> "$work/on.toml"

instructions() {  # setting, messages → instructions collected
  callgrind_instructions "$cowlogd" "$work/$1.toml" syslog-tcp "127.0.0.1:$port" "$2" --attackers "$attackers"
}

# SKIP_CALLGRIND=1 leaves step 1 out.
[ "${SKIP_CALLGRIND:-}" ] || {
echo "instructions per message (callgrind, 50,000 lines at 20,000/s, $attackers attackers):"
for setting in off on; do
  idle=$(instructions "$setting" 0)
  busy=$(instructions "$setting" 50000)
  echo "  [f2b] $setting: $(( (busy - idle) / 50000 ))"
done
}

cgroup=""
if [ -n "${CPU_QUOTA:-}" ]; then
  cgroup=/sys/fs/cgroup/cpu/cowlogd-bench-$$
  mkdir "$cgroup"
  echo 100000 > "$cgroup/cpu.cfs_period_us"
  echo $(( CPU_QUOTA * 1000 )) > "$cgroup/cpu.cfs_quota_us"
fi
echo "throughput (200,000 lines as fast as possible, $runs runs each${cgroup:+, the daemon capped at $CPU_QUOTA % of a core}):"
for run in $(seq "$runs"); do
  for setting in off on; do
    redis-cli -p "$redis_port" FLUSHALL >/dev/null
    "$cowlogd" --config "$work/$setting.toml" >"$work/daemon.log" 2>&1 &
    pid=$!
    [ -z "$cgroup" ] || echo "$pid" > "$cgroup/cgroup.procs"
    wait_until_running "$work/daemon.log"
    result=$("$bench" --target syslog-tcp --addr "127.0.0.1:$port" -n 200000 \
      --attackers "$attackers" --redis "$redis" --pid "$pid" --wait-s 30 --json)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$setting" "$result" "$run" <<'PY'
import json, sys
setting, r, run = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
print(f"  run {run} [f2b] {setting}: {r['delivered']:,} / {r['sent']:,} delivered, "
      f"{r['throughput']:,.0f} msg/s, {r['collector_cpu_us_per_message']:.2f} µs/msg")
PY
  done
done

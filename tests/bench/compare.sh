#!/usr/bin/env bash
# Side by side: the same syslog TCP traffic (cowlogd-bench, Docker's syslog
# framing, mailcow-like lines) through cowlogd and rsyslog + omhiredis, one
# Redis, one machine, one run. Each writes the mailcow JSON entry with
# LPUSH and publishes the message (omhiredis has no LTRIM; cowlogd trims).
#
#   apt-get install redis-server rsyslog rsyslog-hiredis
#   cargo build --release
#   tests/bench/compare.sh [MESSAGES]
#
# Prints one row per system and run, then cowlogd's ratio to rsyslog.
set -euo pipefail
cd "$(dirname "$0")/../.."
messages=${1:-200000}
bench=target/release/cowlogd-bench
cowlogd=target/release/cowlogd
for tool in redis-server rsyslogd "$bench" "$cowlogd"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || { echo "missing $tool" >&2; exit 1; }
done
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/omhiredis.so ] || { echo "missing omhiredis: apt-get install rsyslog-hiredis" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
redis_port=16391
port=25391
redis-server --port "$redis_port" --save "" --appendonly no --daemonize yes --logfile "$work/redis.log" --dir "$work"
redis="redis://127.0.0.1:$redis_port"
sleep 0.3

cat > "$work/cowlogd.toml" <<TOML
[redis]
url = "$redis"
list_cap = 10000000
[inputs]
gelf_udp = ""
gelf_tcp = ""
syslog_udp = ""
syslog_tcp = "127.0.0.1:$port"
[metrics]
listen = ""
TOML

mkdir -p "$work/rsyslog"
cat > "$work/rsyslog.conf" <<CONF
global(workDirectory="$work/rsyslog")
module(load="imtcp" MaxSessions="100")
module(load="omhiredis")
input(type="imtcp" port="$port" address="127.0.0.1" ruleset="mailcow")
template(name="mailcow_entry" type="list" option.jsonf="on") {
  property(outname="time" name="timereported" dateFormat="unixtimestamp" format="jsonf")
  property(outname="priority" name="syslogseverity-text" format="jsonf")
  property(outname="program" name="programname" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
}
template(name="channel_payload" type="string" string="%msg%")
ruleset(name="mailcow" queue.type="LinkedList" queue.size="1000000") {
  action(type="omhiredis" server="127.0.0.1" serverport="$redis_port" mode="queue" key="POSTFIX_MAILLOG" template="mailcow_entry")
  action(type="omhiredis" server="127.0.0.1" serverport="$redis_port" mode="publish" key="F2B_CHANNEL" template="channel_payload")
}
CONF

run() {  # name, then the command that starts the collector in the foreground
  local name=$1; shift
  redis-cli -p "$redis_port" FLUSHALL >/dev/null
  "$@" >"$work/$name.out" 2>&1 &
  local pid=$!
  sleep 1
  for shape in burst paced; do
    local args=(--target syslog-tcp --addr "127.0.0.1:$port" --redis "$redis" --pid "$pid" --json --wait-s 30)
    if [ "$shape" = burst ]; then args+=(-n "$messages"); else args+=(-n 50000 --rate 10000); fi
    printf '%s %s ' "$name" "$shape"
    "$bench" "${args[@]}"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

{
  run cowlogd "$cowlogd" --config "$work/cowlogd.toml"
  run rsyslog rsyslogd -n -f "$work/rsyslog.conf" -i "$work/rsyslog.pid"
} | tee "$work/results"

python3 - "$work/results" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    name, shape, data = line.split(" ", 2)
    rows[(name, shape)] = json.loads(data)
print()
print("| system | traffic | delivered / sent | msg/s | CPU µs/msg | p50 / p99 / p99.9 ms | peak RSS MiB |")
print("|---|---|---|---|---|---|---|")
for (name, shape), r in rows.items():
    l = r["latency_ms"]
    print(f"| {name} | {shape} | {r['delivered']:,} / {r['sent']:,} | {r['throughput']:,.0f} | "
          f"{r['collector_cpu_us_per_message']:.2f} | {l['p50']:.2f} / {l['p99']:.2f} / {l['p999']:.2f} | "
          f"{r['collector_peak_rss_kib'] / 1024:.1f} |")
c, s = rows.get(("cowlogd", "burst")), rows.get(("rsyslog", "burst"))
if c and s:
    print(f"\nburst: cowlogd/rsyslog throughput {c['throughput'] / max(s['throughput'], 1):.2f}x, "
          f"CPU per message {c['collector_cpu_us_per_message'] / max(s['collector_cpu_us_per_message'], 1e-9):.2f}x")
c, s = rows.get(("cowlogd", "paced")), rows.get(("rsyslog", "paced"))
if c and s:
    print(f"paced 10k msg/s: cowlogd/rsyslog p99 latency {c['latency_ms']['p99'] / max(s['latency_ms']['p99'], 1e-9):.2f}x, "
          f"CPU per message {c['collector_cpu_us_per_message'] / max(s['collector_cpu_us_per_message'], 1e-9):.2f}x")
PY

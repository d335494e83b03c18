#!/usr/bin/env bash
# Side by side: the same syslog TCP traffic (cowlogd-bench, Docker's syslog
# framing, mailcow-like lines) through cowlogd, rsyslog + omhiredis, and
# syslog-ng with mailcow's stock destinations and a tuned variant
# (flow-control, batch-lines); one Redis, one machine, one run. Each writes
# the mailcow JSON entry with LPUSH and publishes the message (the peers do
# no LTRIM and do not parse the nested line; cowlogd does both).
#
#   apt-get install redis-server rsyslog rsyslog-hiredis
#   cargo build --release
#   tests/bench/compare.sh [MESSAGES]
#
# syslog-ng conflicts with rsyslog in apt: its Debian packages are
# downloaded (apt-get download) and unpacked (dpkg-deb -x) into
# ${COWLOGD_BENCH_CACHE:-~/.cache/cowlogd-bench} and run from there.
# Prints one row per system and run, then cowlogd's ratios.
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
redis_port=16391
source tests/bench/common.sh
trap 'kill $(jobs -p) 2>/dev/null || true; stop_redis; rm -rf "$work"' EXIT
port=25391
start_redis

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

# syslog-ng from Debian's packages, unpacked.
sng=${COWLOGD_BENCH_CACHE:-$HOME/.cache/cowlogd-bench}/syslog-ng
if [ ! -x "$sng/usr/sbin/syslog-ng" ]; then
  mkdir -p "$sng/debs"
  (cd "$sng/debs" && apt-get download -q syslog-ng-core syslog-ng-mod-redis libivykis0 libnet1 libpcre3)
  for deb in "$sng"/debs/*.deb; do dpkg-deb -x "$deb" "$sng"; done
fi
sng_libs="$sng/usr/lib/x86_64-linux-gnu:$sng/lib/x86_64-linux-gnu:$sng/usr/lib/syslog-ng"
syslog_ng_conf() {  # tuned: flow-control and batches; else mailcow's stock destinations
  local batch="" flow="" window=""
  if [ "$1" = tuned ]; then
    batch='batch-lines(1000) batch-timeout(10)'
    flow='flags(flow-control);'
    window='log-iw-size(200000) log-fetch-limit(1000)'
  fi
  cat <<SNG
@version: 3.38
options { chain_hostnames(off); flush_lines(0); use_dns(no); use_fqdn(no); stats_freq(0); log_fifo_size(200000); };
source s_net { network(ip("127.0.0.1") port($port) transport("framed") max-connections(100) $window); };
destination d_redis_ui_log { redis(host("127.0.0.1") port($redis_port) persist-name("redis1") $batch command("LPUSH" "POSTFIX_MAILLOG" "\$(format-json time=\"\$S_UNIXTIME\" priority=\"\$PRIORITY\" program=\"\$PROGRAM\" message=\"\$MESSAGE\")\n")); };
destination d_redis_f2b_channel { redis(host("127.0.0.1") port($redis_port) persist-name("redis2") $batch command("PUBLISH" "F2B_CHANNEL" "\$(sanitize \$MESSAGE)")); };
log { source(s_net); destination(d_redis_ui_log); destination(d_redis_f2b_channel); $flow };
SNG
}
for variant in stock tuned; do
  syslog_ng_conf "$variant" > "$work/syslog-ng-$variant.conf"
  mkdir -p "$work/sng-$variant"
done

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
  for variant in stock tuned; do
    run "syslog-ng-$variant" env LD_LIBRARY_PATH="$sng_libs" "$sng/usr/sbin/syslog-ng" -F \
      -f "$work/syslog-ng-$variant.conf" --module-path="$sng/usr/lib/syslog-ng/3.38" \
      -R "$work/sng-$variant/persist" -p "$work/sng-$variant/pid" -c "$work/sng-$variant/ctl"
  done
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
print()
for peer in ["rsyslog", "syslog-ng-stock", "syslog-ng-tuned"]:
    c, s = rows.get(("cowlogd", "burst")), rows.get((peer, "burst"))
    if c and s:
        print(f"burst: cowlogd/{peer} throughput {c['throughput'] / max(s['throughput'], 1):.2f}x, "
              f"CPU per message {c['collector_cpu_us_per_message'] / max(s['collector_cpu_us_per_message'], 1e-9):.2f}x")
    c, s = rows.get(("cowlogd", "paced")), rows.get((peer, "paced"))
    if c and s and s['latency_ms']['p99']:
        print(f"paced 10k msg/s: cowlogd/{peer} p99 latency {c['latency_ms']['p99'] / s['latency_ms']['p99']:.2f}x, "
              f"CPU per message {c['collector_cpu_us_per_message'] / max(s['collector_cpu_us_per_message'], 1e-9):.2f}x")
PY

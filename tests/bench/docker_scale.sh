#!/usr/bin/env bash
# Containers printing together, read by cowlogd over the Docker Engine API
# ([docker], json-file kept) or sent by Docker's gelf driver over UDP: lines
# per second from the start signal until cowlogd wrote them all to Redis,
# and CPU per line of cowlogd and of dockerd (which runs the gelf driver and
# writes the json-files).
#
# Usage: tests/bench/docker_scale.sh [TOTAL_LINES] [CONTAINERS...]
# (default 200000 lines, split over 1, 10 and 100 containers). Needs a
# running dockerd (tests/run.sh's recipe) and the test image
# cowlogd-test-busybox:1 (imported by the docker tests). MODES="api gelf-udp"
# picks the paths, GELF_COMPRESSION (gzip) the gelf driver's compression.
set -euo pipefail
cd "$(dirname "$0")/../.."
total=${1:-200000}
shift || true
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 10 100)
image=cowlogd-test-busybox:1
docker image inspect "$image" >/dev/null 2>&1 || { echo "no $image: run the docker tests once" >&2; exit 1; }

cargo build --release -q --bin cowlogd
work=$(mktemp -d)
redis_port=16394
source tests/bench/common.sh
start_redis
metrics_port=$((redis_port + 1))
gelf_port=$((redis_port + 2))
dockerd_pid=$(pgrep -xo dockerd)
cleanup() {
  docker ps -aq --filter name=scale- | xargs -r docker rm -f >/dev/null 2>&1 || true
  [ -n "${cowlogd_pid:-}" ] && kill "$cowlogd_pid" 2>/dev/null || true
  stop_redis
  rm -rf "$work"
}
trap cleanup EXIT

cpu_ticks() {  # pid: utime + stime in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

metric() {  # name
  curl -s "127.0.0.1:$metrics_port/metrics" | awk -v n="$1" '$1 == n {v = $2} END {print v}'
}

line='Dec  6 05:00:00 mail postfix/smtpd[7]: connect from unknown[203.0.113.5]'
hz=$(getconf CLK_TCK)
printf '| path | containers | lines | delivered | seconds | lines/s | cowlogd CPU µs/line | dockerd CPU µs/line |\n|---|---|---|---|---|---|---|---|\n'
for mode in ${MODES:-api gelf-udp}; do
  for n in "${counts[@]}"; do
    per=$((total / n))
    redis-cli -p "$redis_port" FLUSHALL >/dev/null
    rm -rf "$work/go" "$work/queue"
    mkdir -p "$work/go"
    cat >"$work/cowlogd.toml" <<EOF
[redis]
url = "redis://127.0.0.1:$redis_port"
[inputs]
gelf_udp = "$([ "$mode" = gelf-udp ] && echo "127.0.0.1:$gelf_port")"
gelf_tcp = ""
syslog_udp = ""
syslog_tcp = ""
[metrics]
listen = "127.0.0.1:$metrics_port"
[queue]
dir = "$work/queue"
[[route]]
name = "scale"
container = ["scale-*"]
key = "SCALE"
list_cap = 1000
EOF
    if [ "$mode" = api ]; then
      printf '[docker]\nsocket = "/var/run/docker.sock"\ninclude = ["scale-*"]\n' >>"$work/cowlogd.toml"
      driver=(--log-driver json-file)
    else
      driver=(--log-driver gelf --log-opt "gelf-address=udp://127.0.0.1:$gelf_port" --log-opt "gelf-compression-type=${GELF_COMPRESSION:-gzip}")
    fi
    target/release/cowlogd --config "$work/cowlogd.toml" >"$work/cowlogd.log" 2>&1 &
    cowlogd_pid=$!
    wait_until_running "$work/cowlogd.log"
    # Every container waits for the start signal, then prints its lines
    # as fast as busybox `yes` writes them.
    seq 0 $((n - 1)) | xargs -P 8 -I{} docker run -d --network none --name "scale-{}" \
      -v "$work/go:/go:ro" "${driver[@]}" "$image" \
      sh -c "while [ ! -e /go/now ]; do sleep 0.05; done; yes '$line' | head -n $per; sleep 600" >/dev/null
    sleep 2
    cowlogd_before=$(cpu_ticks "$cowlogd_pid")
    dockerd_before=$(cpu_ticks "$dockerd_pid")
    start=$(date +%s.%N)
    touch "$work/go/now"
    expected=$((per * n))
    last=0
    stable=0
    while :; do
      written=$(metric cowlogd_redis_entries_written_total)
      written=${written%.*}
      [ "${written:-0}" -ge "$expected" ] && break
      # gelf over UDP may lose lines: stop once nothing came for 3 s.
      if [ "${written:-0}" = "$last" ]; then stable=$((stable + 1)); else stable=0; last=${written:-0}; fi
      [ "$stable" -ge 30 ] && break
      sleep 0.1
    done
    end=$(date +%s.%N)
    [ "$stable" -ge 30 ] && end=$(python3 -c "print($end - 3)")
    cowlogd_after=$(cpu_ticks "$cowlogd_pid")
    dockerd_after=$(cpu_ticks "$dockerd_pid")
    python3 - "$mode" "$n" "$expected" "${written:-0}" "$start" "$end" \
      "$((cowlogd_after - cowlogd_before))" "$((dockerd_after - dockerd_before))" "$hz" <<'PY'
import sys
mode, n, expected, written, start, end, cowlogd, dockerd, hz = sys.argv[1:]
seconds = float(end) - float(start)
written = int(written)
per_line = lambda ticks: int(ticks) / int(hz) / max(written, 1) * 1e6
print(f"| {mode} | {n} | {expected} | {written} | {seconds:.2f} | {written / seconds:,.0f} | {per_line(cowlogd):.2f} | {per_line(dockerd):.2f} |")
PY
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$cowlogd_pid/status")
    echo "<!-- $mode $n containers: cowlogd peak RSS ${rss} kB -->"
    kill "$cowlogd_pid"; wait "$cowlogd_pid" 2>/dev/null || true
    cowlogd_pid=
    docker ps -aq --filter name=scale- | xargs -r docker rm -f >/dev/null
  done
done

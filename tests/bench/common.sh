# Shared by the bench scripts (sourced). Expects $work (a scratch folder),
# $redis_port and $redis (the Redis they write to, see start_redis) and
# $bench (the load generator).

# A throwaway redis-server on $redis_port, keeping nothing, its files in
# $work; sets $redis. stop_redis (in the caller's EXIT trap) ends it.
start_redis() {
  redis-server --port "$redis_port" --save "" --appendonly no --daemonize yes \
    --logfile "$work/redis.log" --dir "$work"
  redis="redis://127.0.0.1:$redis_port"
  sleep 0.3
}

stop_redis() {
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
}

# Waits until the daemon logging to $1 says it runs.
wait_until_running() {  # log file
  for _ in $(seq 600); do
    grep -q "cowlogd running" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cowlogd did not start: $(cat "$1")" >&2; exit 1
}

# Stops the daemon $1 with SIGINT, as often as it takes: its handler is
# installed just after the "running" line, so a first one can come too
# early (and a slow start under valgrind makes that likely).
stop_daemon() {  # pid
  while kill -0 "$1" 2>/dev/null; do
    kill -INT "$1" 2>/dev/null || true
    sleep 2
  done
  wait "$1" || true
}

# Instructions a daemon executes, counted by callgrind, while it takes
# MESSAGES lines of the generator's TARGET (syslog-tcp, gelf-tcp: no loss
# under valgrind's slowness) at 20,000/s (0: none, the start-up cost).
callgrind_instructions() {  # binary config target address messages [bench args...]
  local binary=$1 config=$2 target=$3 address=$4 messages=$5
  shift 5
  redis-cli -p "$redis_port" FLUSHALL >/dev/null
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$binary" --config "$config" \
    >"$work/cg.log" 2>&1 &
  local pid=$!
  wait_until_running "$work/cg.log"
  if [ "$messages" -gt 0 ]; then
    "$bench" --target "$target" --addr "$address" -n "$messages" --rate 20000 \
      --redis "$redis" --wait-s 60 --json "$@" >/dev/null
  fi
  stop_daemon "$pid"
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/cg.log"
}

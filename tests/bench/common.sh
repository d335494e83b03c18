# Shared by the bench scripts (sourced). Expects $work (a scratch folder),
# $redis_port and $redis (the Redis they write to) and $bench (the load
# generator).

# Waits until the daemon logging to $1 says it runs (its signal handlers
# are in place: a background job starts with SIGINT ignored, and an early
# one is lost).
wait_until_running() {  # log file
  for _ in $(seq 600); do
    grep -q "cowlogd running" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cowlogd did not start: $(cat "$1")" >&2; exit 1
}

# Instructions a daemon executes, counted by callgrind, while it takes
# MESSAGES syslog TCP lines at 20,000/s (0: none, the start-up cost).
callgrind_instructions() {  # binary config address messages [bench args...]
  local binary=$1 config=$2 address=$3 messages=$4
  shift 4
  redis-cli -p "$redis_port" FLUSHALL >/dev/null
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$binary" --config "$config" \
    >"$work/cg.log" 2>&1 &
  local pid=$!
  wait_until_running "$work/cg.log"
  if [ "$messages" -gt 0 ]; then
    "$bench" --target syslog-tcp --addr "$address" -n "$messages" --rate 20000 \
      --redis "$redis" --wait-s 60 --json "$@" >/dev/null
  fi
  kill -INT "$pid"; wait "$pid" || true
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/cg.log"
}

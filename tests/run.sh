#!/usr/bin/env bash
# The test command (README "Test", and what .ci/run runs): installs what the
# tests talk to where it is missing, starts a private Docker daemon when
# none answers, then runs the whole suite. Arguments go to `cargo test`
# (`tests/run.sh -- docker::` runs the Docker tests only).
#
# What the tests need, and why:
#   redis-server      every integration test starts its own on a free port
#   prometheus        promtool checks the alert rules and /metrics
#   bsdutils          util-linux `logger`, a real syslog client
#   tzdata            zone names for the time-zone tests
#   golang-go, golang-github-fluent-fluent-logger-golang-dev
#                     a Forward sender on the library Docker's driver links
#   python3 fluent-logger (pip)
#                     Python's Forward sender
#   docker.io, busybox-static
#                     the real Docker daemon's log drivers as senders, from
#                     a busybox image the tests import
# Installing needs root (Debian's apt-get, pip); without it, what is missing
# is named with the command that installs it, and the run stops.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v logger >/dev/null 2>&1 || need_apt+=(bsdutils)
[ -e /usr/share/zoneinfo/Europe/Berlin ] || need_apt+=(tzdata)
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
[ -d /usr/share/gocode/src/github.com/fluent/fluent-logger-golang ] || need_apt+=(golang-github-fluent-fluent-logger-golang-dev)
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
[ -x /bin/busybox ] || command -v busybox >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
need_pip=()
python3 -c "import fluent.sender" 2>/dev/null || need_pip+=(fluent-logger)

if [ "$(id -u)" -ne 0 ] && { [ ${#need_apt[@]} -gt 0 ] || [ ${#need_pip[@]} -gt 0 ]; }; then
  echo "tests/run.sh: missing, and installing needs root:" >&2
  [ ${#need_apt[@]} -gt 0 ] && echo "  apt-get install ${need_apt[*]}" >&2
  [ ${#need_pip[@]} -gt 0 ] && echo "  python3 -m pip install ${need_pip[*]}" >&2
  exit 1
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "installing (pip): ${need_pip[*]}"
  python3 -m pip install -q "${need_pip[@]}"
fi

# A Docker daemon of our own when none answers (no bridge, no iptables:
# the containers use --network none, the log drivers run in dockerd),
# stopped when the run ends. COWLOGD_TEST_DOCKER_HOST names another.
if [ -z "${COWLOGD_TEST_DOCKER_HOST:-}" ] && ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: no Docker daemon answers; start one as root:" >&2
    echo "  dockerd --iptables=false --bridge=none &" >&2
    exit 1
  fi
  docker_dir=$(mktemp -d)
  dockerd --iptables=false --bridge=none --data-root "$docker_dir/data" --exec-root "$docker_dir/exec" \
    --pidfile "$docker_dir/dockerd.pid" >"$docker_dir/dockerd.log" 2>&1 &
  dockerd_pid=$!
  trap 'kill "$dockerd_pid" 2>/dev/null || true; wait "$dockerd_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; cat "$docker_dir/dockerd.log"; exit 1; }
fi

cargo test --workspace "$@"

#!/usr/bin/env bash
# Compares the syslog-ng configs in the running mailcow images with the
# ones cowlogd's replacements were made from (syslog-ng/upstream/). Run it
# from mailcow's directory after update.sh; no output and exit 0 means the
# replacements still match, a diff means they need re-making (take the
# image's file, remove its Redis destinations and their log paths, as in
# syslog-ng/*.conf).
#
#   /path/to/cowlogd/deploy/mailcow/check-syslog-ng.sh
set -euo pipefail
upstream="$(cd "$(dirname "$0")" && pwd)/syslog-ng/upstream"
status=0
for container in postfix postfix-tlspol dovecot sogo; do
  id=$(docker compose ps -q "$container-mailcow")
  [ -n "$id" ] || { echo "$container-mailcow is not running" >&2; status=2; continue; }
  image=$(docker inspect --format '{{.Config.Image}}' "$id")
  for file in syslog-ng.conf syslog-ng-redis_slave.conf; do
    # The image's own file: the override mounts ours over it in the
    # running container.
    if ! docker run --rm --network none --entrypoint cat "$image" "/etc/syslog-ng/$file" \
        | diff -u --label "cowlogd's upstream/$container.$file" --label "$image:/etc/syslog-ng/$file" \
          "$upstream/$container.$file" -; then
      status=1
    fi
  done
done
exit $status

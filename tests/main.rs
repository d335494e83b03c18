//! Integration tests: the real `cowlogd` binary against a private
//! `redis-server` per test, over real sockets on 127.0.0.1.

mod support;

/// Admission under attack: eviction, fair slots, linear parsing, /f2b.
mod admission;
/// `cowlogd-bench`, the load generator.
mod bench_cli;
/// Connection caps, idle connections, buffers, Graylog restarts.
mod connections;
/// Daily operation: local time, metrics from the start, rate limits.
mod daily;
/// deploy/: configs, syslog-ng replacements, image, unit, alerts, dashboard.
mod deploy;
/// The disk queue: SIGKILL, SIGTERM, replay, kill -9 loop, full disk.
mod disk_queue;
/// The real Docker daemon's fluentd and gelf drivers as senders.
mod docker;
/// Containers read over the Docker Engine API (`[docker]`), json-file kept.
mod docker_api;
/// Exactly once into Redis: stalls, splits, temporary refusals, shutdown.
mod exactly_once;
/// Ban insight: netfilter's rules, `publish = "matches"`, `/f2b`.
mod f2b;
/// Redis going away, SIGTERM, drops accounted.
mod faults;
/// Docker's fluentd driver: the Forward protocol, acks, split lines.
mod fluent;
/// GELF over TCP: NUL frames.
mod gelf_tcp;
/// GELF over UDP: go-gelf's bytes, compressed, chunked.
mod gelf_udp;
/// Forwarding to Graylog over UDP and TCP.
mod graylog;
/// GELF over HTTP.
mod http_gelf;
/// The daemon in this process: `cowlogd::Daemon`, listeners on port 0.
mod in_process;
/// Every limit, flooded past.
mod limits;
/// `cowlogd check`, `/metrics` (promtool), `/ready`.
mod operations;
/// The mailcow contract: entries, order, cap, channel.
mod redis_contract;
/// Redis stopped, frozen, refusing; TLS; secrets.
mod resilience;
/// The mailcow profile's filters and routing.
mod routing;
/// The 10-minute soak test (ignored by default).
mod soak;
/// Syslog over UDP and TCP: Docker's formats, util-linux logger.
mod syslog_inputs;
/// `cowlogd tail`: the lists and the channel in a terminal.
mod tail;

//! Every metric cowlogd exports, by name, and the one place each drop
//! reason is counted. Labels are bounded: inputs, stages, reasons, route
//! names and error kinds — never a peer address or a templated key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{
    Counter, Gauge, Histogram, Label, SharedString, counter, describe_counter, describe_gauge,
    describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Where a message came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// GELF over UDP.
    GelfUdp,
    /// GELF over TCP.
    GelfTcp,
    /// Syslog over UDP.
    SyslogUdp,
    /// Syslog over TCP.
    SyslogTcp,
    /// GELF over HTTP (`POST /gelf`).
    GelfHttp,
    /// Fluent Forward over TCP.
    FluentTcp,
    /// Fluent Forward on a unix socket.
    FluentUnix,
    /// Containers' logs read from the Docker Engine API (`[docker]`).
    Docker,
}

impl Input {
    /// The `input` label value.
    pub fn label(self) -> &'static str {
        match self {
            Input::GelfUdp => "gelf_udp",
            Input::GelfTcp => "gelf_tcp",
            Input::SyslogUdp => "syslog_udp",
            Input::SyslogTcp => "syslog_tcp",
            Input::GelfHttp => "gelf_http",
            Input::FluentTcp => "fluent_tcp",
            Input::FluentUnix => "fluent_unix",
            Input::Docker => "docker",
        }
    }

    /// Whether the input carries GELF.
    pub fn is_gelf(self) -> bool {
        matches!(self, Input::GelfUdp | Input::GelfTcp | Input::GelfHttp)
    }

    /// Whether the input accepts connections (and so has a
    /// `cowlogd_tcp_connections` gauge).
    pub fn is_stream(self) -> bool {
        !matches!(self, Input::GelfUdp | Input::SyslogUdp | Input::Docker)
    }

    /// Every `reason` of `cowlogd_parse_errors_total` this input counts.
    pub fn parse_error_reasons(self) -> &'static [&'static str] {
        match self {
            Input::GelfUdp | Input::GelfTcp | Input::GelfHttp => {
                &cowlogd_parsers::gelf::GelfError::REASONS
            }
            Input::SyslogUdp | Input::SyslogTcp => &[NO_SYSLOG_HEADER],
            Input::FluentTcp | Input::FluentUnix => &[INVALID_FORWARD],
            Input::Docker => &[INVALID_DOCKER_LOG],
        }
    }
}

/// `cowlogd_parse_errors_total` reason: a syslog line without a header
/// (kept whole).
pub const NO_SYSLOG_HEADER: &str = "no_syslog_header";
/// `cowlogd_parse_errors_total` reason: not a Forward event.
pub const INVALID_FORWARD: &str = "invalid_forward";
/// `cowlogd_parse_errors_total` reason: a Docker logs stream that does not
/// read as Docker writes it.
pub const INVALID_DOCKER_LOG: &str = "invalid_docker_log";

/// Why a message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Sender outside `inputs.allow`.
    NotAllowed,
    /// TCP connection refused at the connection caps (counted per connection).
    ConnectionLimit,
    /// Frame longer than `limits.max_frame_bytes`.
    Oversize,
    /// Octet-counted frame cut short by the end of the connection.
    Truncated,
    /// Dropped by the kernel: the UDP receive buffer was full.
    UdpReceiveBuffer,
    /// Invalid GELF chunk header or inconsistent chunk.
    BadChunk,
    /// Chunked message over `limits.gelf_max_message_bytes`.
    ChunkTooLarge,
    /// Sender over `limits.gelf_pending_per_sender`.
    ChunkSenderLimit,
    /// Chunked message incomplete at its deadline.
    ChunkTimeout,
    /// Chunked message evicted to stay under the pending caps.
    ChunkEvicted,
    /// Decompressed size over `limits.max_decompressed_bytes`.
    DecompressCap,
    /// Corrupt compressed data.
    DecompressError,
    /// Not GELF JSON, or no `short_message`.
    InvalidGelf,
    /// Dropped by a `drop` route.
    Filtered,
    /// Queue full: the oldest queued messages made room.
    QueueFull,
    /// Still queued when the shutdown flush deadline passed.
    Shutdown,
    /// The disk queue at `queue.max_disk_bytes`: the newest batch.
    QueueDiskFull,
    /// The disk queue could not write (the file system failed, or it was
    /// closed at shutdown).
    QueueDiskUnavailable,
    /// Redis answered the command with an error (wrong type, read-only).
    RedisRejected,
    /// Forwarding queue full: the oldest waiting messages made room.
    ForwardQueueFull,
    /// A forwarded message could not be made to fit in 128 chunks.
    ForwardTooLarge,
    /// Sending to Graylog failed (UDP send error, or shutdown with Graylog
    /// unreachable).
    ForwardSendFailed,
    /// HTTP body over `limits.http_max_body_bytes`.
    HttpBodyTooLarge,
    /// A frame not completed within `inputs.tcp_frame_timeout_s`.
    SlowSender,
    /// A frame that would take the TCP read buffers past
    /// `limits.tcp_buffers_total_bytes` (the connection is closed).
    BufferBudget,
    /// Not a Forward event (wrong types, cut short, unknown compression):
    /// the event (or, when the stream cannot be followed, the connection).
    InvalidForward,
    /// A part of a split line came out of order, or its beginning is
    /// missing: the line is dropped.
    PartialGap,
    /// More split lines at once than `limits.fluent_partial_pending`: the
    /// oldest is dropped.
    PartialEvicted,
    /// A split line whose last part did not come within
    /// `limits.fluent_partial_timeout_ms`.
    PartialTimeout,
    /// A container over `limits.container_rate`.
    RateLimited,
    /// A Docker logs stream that does not read as Docker writes it (an
    /// entry without its timestamp, a broken multiplexed header).
    InvalidDockerLog,
}

impl DropReason {
    /// `(stage, reason)` label values.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            DropReason::NotAllowed => ("input", "not_allowed"),
            DropReason::ConnectionLimit => ("input", "connection_limit"),
            DropReason::Oversize => ("input", "oversize"),
            DropReason::Truncated => ("input", "truncated"),
            DropReason::UdpReceiveBuffer => ("input", "udp_receive_buffer"),
            DropReason::BadChunk => ("gelf", "bad_chunk"),
            DropReason::ChunkTooLarge => ("gelf", "chunk_too_large"),
            DropReason::ChunkSenderLimit => ("gelf", "chunk_sender_limit"),
            DropReason::ChunkTimeout => ("gelf", "chunk_timeout"),
            DropReason::ChunkEvicted => ("gelf", "chunk_evicted"),
            DropReason::DecompressCap => ("gelf", "decompress_cap"),
            DropReason::DecompressError => ("gelf", "decompress_error"),
            DropReason::InvalidGelf => ("parse", "invalid_gelf"),
            DropReason::Filtered => ("route", "filtered"),
            DropReason::QueueFull => ("queue", "queue_full"),
            DropReason::Shutdown => ("queue", "shutdown"),
            DropReason::QueueDiskFull => ("queue", "disk_full"),
            DropReason::QueueDiskUnavailable => ("queue", "disk_unavailable"),
            DropReason::RedisRejected => ("redis", "rejected"),
            DropReason::ForwardQueueFull => ("graylog", "queue_full"),
            DropReason::ForwardTooLarge => ("graylog", "too_large"),
            DropReason::ForwardSendFailed => ("graylog", "send_failed"),
            DropReason::HttpBodyTooLarge => ("input", "http_body_too_large"),
            DropReason::SlowSender => ("input", "slow_sender"),
            DropReason::BufferBudget => ("input", "buffer_budget"),
            DropReason::InvalidForward => ("parse", "invalid_forward"),
            DropReason::PartialGap => ("fluent", "partial_gap"),
            DropReason::PartialEvicted => ("fluent", "partial_evicted"),
            DropReason::PartialTimeout => ("fluent", "partial_timeout"),
            DropReason::RateLimited => ("input", "rate_limited"),
            DropReason::InvalidDockerLog => ("parse", "invalid_docker_log"),
        }
    }
}

impl DropReason {
    /// Every reason, in the order the README lists them.
    pub const ALL: [DropReason; 31] = [
        DropReason::NotAllowed,
        DropReason::ConnectionLimit,
        DropReason::Oversize,
        DropReason::Truncated,
        DropReason::UdpReceiveBuffer,
        DropReason::HttpBodyTooLarge,
        DropReason::SlowSender,
        DropReason::BufferBudget,
        DropReason::RateLimited,
        DropReason::BadChunk,
        DropReason::ChunkTooLarge,
        DropReason::ChunkSenderLimit,
        DropReason::ChunkTimeout,
        DropReason::ChunkEvicted,
        DropReason::DecompressCap,
        DropReason::DecompressError,
        DropReason::InvalidGelf,
        DropReason::InvalidForward,
        DropReason::InvalidDockerLog,
        DropReason::PartialGap,
        DropReason::PartialEvicted,
        DropReason::PartialTimeout,
        DropReason::Filtered,
        DropReason::QueueFull,
        DropReason::Shutdown,
        DropReason::QueueDiskFull,
        DropReason::QueueDiskUnavailable,
        DropReason::RedisRejected,
        DropReason::ForwardQueueFull,
        DropReason::ForwardTooLarge,
        DropReason::ForwardSendFailed,
    ];
}

/// What a metric is, for Prometheus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// One exported metric: its name, kind, label keys and meaning. Every
/// metric cowlogd exports is one of the constants below and listed in
/// [`ALL`]; handles are made from them, never from a name typed elsewhere
/// (`clippy.toml` refuses the `metrics` macros outside this module).
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Label keys, in the order handles give their values.
    pub labels: &'static [&'static str],
    /// What it measures (the `# HELP` text and the README's table).
    pub help: &'static str,
}

macro_rules! declare_metrics {
    ($($(#[$doc:meta])* $ident:ident: $kind:ident $name:literal [$($label:literal),*] $help:literal;)*) => {
        $($(#[$doc])* pub const $ident: Metric = Metric {
            name: $name,
            kind: Kind::$kind,
            labels: &[$($label),*],
            help: $help,
        };)*
        /// Every metric, in the README's order.
        pub const ALL: &[Metric] = &[$($ident),*];
    };
}

declare_metrics! {
    /// Messages in, per input.
    RECEIVED_MESSAGES: Counter "cowlogd_received_messages_total" ["input"]
        "Messages received, by input.";
    /// Bytes in, per input.
    RECEIVED_BYTES: Counter "cowlogd_received_bytes_total" ["input"]
        "Bytes received, by input.";
    /// Lines that did not parse as their format (some are still kept).
    PARSE_ERRORS: Counter "cowlogd_parse_errors_total" ["input", "reason"]
        "Messages that did not parse as their input's format, by reason.";
    /// Every drop, by [`DropReason`].
    DROPPED_MESSAGES: Counter "cowlogd_dropped_messages_total" ["stage", "reason"]
        "Messages dropped, by stage and reason.";
    /// Records per route.
    ROUTED_MESSAGES: Counter "cowlogd_routed_messages_total" ["route"]
        "Records matched by each route (none: no route).";
    /// Messages cut to `limits.max_message_bytes`.
    TRUNCATED_MESSAGES: Counter "cowlogd_truncated_messages_total" []
        "Messages cut to limits.max_message_bytes.";
    /// Channel payloads cut to `redis.channel_max_bytes`.
    CHANNEL_PAYLOADS_CUT: Counter "cowlogd_channel_payloads_cut_total" []
        "Channel payloads cut to redis.channel_max_bytes (list entries are whole).";
    /// Entries Redis applied.
    REDIS_ENTRIES_WRITTEN: Counter "cowlogd_redis_entries_written_total" []
        "List entries pushed to Redis.";
    /// Payloads Redis published.
    REDIS_PUBLISHED: Counter "cowlogd_redis_published_total" []
        "Messages published on the channel.";
    /// Redis errors by kind.
    REDIS_ERRORS: Counter "cowlogd_redis_errors_total" ["kind"]
        "Redis errors, by kind.";
    /// Windows split because they kept timing out.
    REDIS_WINDOW_SPLITS: Counter "cowlogd_redis_window_splits_total" []
        "Writes split in half because they kept timing out.";
    /// Reconnections to Redis.
    REDIS_RECONNECTS: Counter "cowlogd_redis_reconnects_total" []
        "Redis connections opened after the first.";
    /// Transaction sizes.
    REDIS_BATCH_MESSAGES: Histogram "cowlogd_redis_batch_messages" []
        "Messages per Redis transaction.";
    /// Transaction latency.
    REDIS_WRITE_DURATION: Histogram "cowlogd_redis_write_duration_seconds" []
        "Time to write one transaction, retries included.";
    /// Retries made without a fence.
    REDIS_UNFENCED_RETRIES: Counter "cowlogd_redis_unfenced_retries_total" []
        "Retries after a lost reply made without fencing the old connection (no CLIENT INFO or CLIENT KILL): each may write a window twice.";
    /// Messages whose transaction's outcome was unknown at the flush deadline.
    REDIS_OUTCOME_UNKNOWN: Counter "cowlogd_redis_outcome_unknown_total" []
        "Messages in a transaction sent but unanswered when the shutdown flush deadline passed: Redis may have applied them.";
    /// Whether Redis may evict the writer's marker.
    REDIS_MARKER_EVICTABLE: Gauge "cowlogd_redis_marker_evictable" []
        "1 when Redis' maxmemory-policy may evict the writer's marker (then a retry may write twice).";
    /// Markers found missing after this process wrote them.
    REDIS_MARKER_LOST: Counter "cowlogd_redis_marker_lost_total" []
        "Times the writer's marker was gone (evicted, deleted) although this process had written it.";
    /// Whether Redis answers.
    REDIS_UP: Gauge "cowlogd_redis_up" []
        "1 when the last Redis operation succeeded.";
    /// Redis queue depth in messages.
    QUEUE_MESSAGES: Gauge "cowlogd_queue_messages" []
        "Messages waiting for Redis.";
    /// Redis queue depth in bytes.
    QUEUE_BYTES: Gauge "cowlogd_queue_bytes" []
        "Bytes waiting for Redis.";
    /// Redis queue capacity in messages.
    QUEUE_MAX_MESSAGES: Gauge "cowlogd_queue_max_messages" []
        "redis.queue_messages: the Redis queue's capacity in messages.";
    /// Redis queue capacity in bytes.
    QUEUE_MAX_BYTES: Gauge "cowlogd_queue_max_bytes" []
        "redis.queue_bytes: the Redis queue's capacity in bytes.";
    /// Disk queue size.
    QUEUE_DISK_BYTES: Gauge "cowlogd_queue_disk_bytes" []
        "Bytes of the disk queue's segment files (queue.dir).";
    /// Messages on disk not yet applied.
    QUEUE_DISK_RECORDS: Gauge "cowlogd_queue_disk_records" []
        "Messages in the disk queue not yet applied in Redis.";
    /// Segment files.
    QUEUE_DISK_SEGMENTS: Gauge "cowlogd_queue_disk_segments" []
        "Segment files in the disk queue.";
    /// Messages found on disk at start.
    QUEUE_REPLAYED_RECORDS: Counter "cowlogd_queue_replayed_records_total" []
        "Messages found in the disk queue at start and replayed (those Redis had applied are then skipped by the marker).";
    /// Syncs.
    QUEUE_FSYNC_DURATION: Histogram "cowlogd_queue_fsync_duration_seconds" []
        "Time of one sync of the disk queue.";
    /// Checksum or layout failures.
    QUEUE_CORRUPT_RECORDS: Counter "cowlogd_queue_corrupt_records_total" []
        "Disk queue records skipped because their checksum or layout was wrong (and unreadable segments set aside).";
    /// Records cut at start.
    QUEUE_TORN_RECORDS: Counter "cowlogd_queue_torn_records_total" []
        "Disk queue segments that ended inside a record at start (a crash mid-write): the partial record was cut.";
    /// Age of the oldest message waiting.
    QUEUE_OLDEST_AGE: Gauge "cowlogd_queue_oldest_record_age_seconds" []
        "Age of the oldest disk queue record the Redis writer holds and Redis has not applied yet (0 when none).";
    /// Chunked GELF messages being put together.
    GELF_PENDING_MESSAGES: Gauge "cowlogd_gelf_pending_messages" []
        "Incomplete chunked GELF messages.";
    /// Their bytes.
    GELF_PENDING_BYTES: Gauge "cowlogd_gelf_pending_bytes" []
        "Bytes held by incomplete chunked GELF messages.";
    /// Open stream connections per input.
    TCP_CONNECTIONS: Gauge "cowlogd_tcp_connections" ["input"]
        "Open TCP connections, by input.";
    /// Connections cowlogd closed, by pool and reason.
    CONNECTIONS_CLOSED: Counter "cowlogd_connections_closed_total" ["pool", "reason"]
        "Connections closed by cowlogd (evicted, timed out, refused), by pool and reason.";
    /// Forward events acked again instead of stored twice.
    FLUENT_RESENT: Counter "cowlogd_fluent_resent_total" []
        "Forward events sent again after cowlogd had applied them in Redis (their ack was lost): acked again, not stored twice.";
    /// Console lines the printer could not keep up with.
    CONSOLE_DROPPED: Counter "cowlogd_console_dropped_total" []
        "Console lines dropped because stdout did not keep up (never records).";
    /// Messages sent on to Graylog.
    GRAYLOG_FORWARDED: Counter "cowlogd_graylog_forwarded_total" []
        "Messages sent on to Graylog.";
    /// Forwarded messages cut to fit.
    GRAYLOG_TRUNCATED: Counter "cowlogd_graylog_truncated_total" []
        "Forwarded messages cut to fit in 128 UDP chunks.";
    /// Reconnections to Graylog.
    GRAYLOG_RECONNECTS: Counter "cowlogd_graylog_reconnects_total" []
        "Graylog TCP connections opened after the first.";
    /// Forwarding queue depth in messages.
    GRAYLOG_QUEUE_MESSAGES: Gauge "cowlogd_graylog_queue_messages" []
        "Messages waiting to be forwarded.";
    /// Forwarding queue depth in bytes.
    GRAYLOG_QUEUE_BYTES: Gauge "cowlogd_graylog_queue_bytes" []
        "Bytes waiting to be forwarded.";
    /// Ban rule matches, per rule.
    F2B_MATCHES: Counter "cowlogd_f2b_matches_total" ["rule"]
        "Lines on which an F2B_REGEX rule matched, by rule (at most 64 rule labels, then other).";
    /// Matches not counted as attempts, by reason.
    F2B_IGNORED: Counter "cowlogd_f2b_ignored_total" ["reason"]
        "Rule matches netfilter would not count: private, not_an_address, allowlisted, search_limit.";
    /// Rules that compiled.
    F2B_RULES: Gauge "cowlogd_f2b_rules" []
        "F2B_REGEX rules loaded and compiling.";
    /// 1 for a rule that does not compile.
    F2B_RULE_ERRORS: Gauge "cowlogd_f2b_rule_errors" ["rule"]
        "1 for an F2B_REGEX rule that does not compile.";
    /// netfilter's active bans.
    F2B_ACTIVE_BANS: Gauge "cowlogd_f2b_active_bans" []
        "Entries in F2B_ACTIVE_BANS at the last poll.";
    /// netfilter's permanent bans.
    F2B_PERM_BANS: Gauge "cowlogd_f2b_perm_bans" []
        "Entries in F2B_PERM_BANS at the last poll.";
    /// Failed polls of netfilter's keys.
    F2B_POLL_ERRORS: Counter "cowlogd_f2b_poll_errors_total" ["reason"]
        "Polls of netfilter's keys that failed: redis, regex_unreadable, too_long.";
    /// Whether the Docker Engine API answers.
    DOCKER_CONNECTED: Gauge "cowlogd_docker_connected" []
        "1 while the Docker Engine API ([docker] socket) answers and its events are followed, else 0.";
    /// Reconnections to the Docker Engine API.
    DOCKER_RECONNECTS: Counter "cowlogd_docker_reconnects_total" []
        "Times the Docker Engine API was connected to again after it went away (a dockerd restart).";
    /// Containers being read.
    DOCKER_CONTAINERS: Gauge "cowlogd_docker_containers" []
        "Containers whose logs stream is open.";
    /// Checkpoint writes that failed.
    DOCKER_CHECKPOINT_ERRORS: Counter "cowlogd_docker_checkpoint_errors_total" []
        "Writes of the Docker checkpoint file that failed (the next one retries; a restart may read lines again).";
    /// SIGHUP reloads, by outcome.
    CONFIG_RELOADS: Counter "cowlogd_config_reloads_total" ["result"]
        "Config reloads (SIGHUP): applied, or refused (invalid, the running config stays).";
}

#[allow(clippy::disallowed_macros)] // The one place handles are made.
impl Metric {
    fn check(&self, kind: Kind, labels: usize) {
        debug_assert_eq!(self.kind, kind, "{} is a {:?}", self.name, self.kind);
        debug_assert_eq!(
            self.labels.len(),
            labels,
            "{} takes {:?}",
            self.name,
            self.labels
        );
    }

    /// The handle of a counter without labels.
    pub fn counter(&self) -> Counter {
        self.counter_with([])
    }

    /// The handle of a counter with these label values (in
    /// [`Metric::labels`] order).
    pub fn counter_with<const N: usize>(&self, values: [SharedString; N]) -> Counter {
        self.check(Kind::Counter, N);
        counter!(self.name, self.label_set(values))
    }

    /// The handle of a gauge without labels.
    pub fn gauge(&self) -> Gauge {
        self.gauge_with([])
    }

    /// The handle of a gauge with these label values.
    pub fn gauge_with<const N: usize>(&self, values: [SharedString; N]) -> Gauge {
        self.check(Kind::Gauge, N);
        gauge!(self.name, self.label_set(values))
    }

    /// The handle of a histogram (none has labels).
    pub fn histogram(&self) -> Histogram {
        self.check(Kind::Histogram, 0);
        histogram!(self.name)
    }

    fn label_set<const N: usize>(&self, values: [SharedString; N]) -> Vec<Label> {
        self.labels
            .iter()
            .zip(values)
            .map(|(key, value)| Label::new(*key, value))
            .collect()
    }

    fn describe(&self) {
        match self.kind {
            Kind::Counter => describe_counter!(self.name, self.help),
            Kind::Gauge => describe_gauge!(self.name, self.help),
            Kind::Histogram => describe_histogram!(self.name, self.help),
        }
    }
}

/// The README's metrics table, made from [`ALL`] (a test keeps the README
/// equal to it).
#[cfg(test)]
pub fn readme_table() -> String {
    let mut table = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for metric in ALL {
        let labels = if metric.name == DROPPED_MESSAGES.name {
            DropReason::ALL
                .iter()
                .map(|r| {
                    let (stage, reason) = r.labels();
                    format!("`{stage}/{reason}`")
                })
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            metric
                .labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let kind = match metric.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        table.push_str(&format!(
            "| `{}` | {kind} | {labels} | {} |\n",
            metric.name, metric.help
        ));
    }
    table
}

/// The counter of messages dropped for `reason` (register once where a
/// reason is frequent; [`dropped`] otherwise).
pub fn drop_counter(reason: DropReason) -> Counter {
    let (stage, reason) = reason.labels();
    DROPPED_MESSAGES.counter_with([stage.into(), reason.into()])
}

/// Counts `n` messages dropped for `reason`.
pub fn dropped(reason: DropReason, n: u64) {
    drop_counter(reason).increment(n);
}

/// Counts a parse problem; the message may still be kept (a syslog line
/// without header is kept whole).
pub fn parse_error(input: Input, reason: &'static str) {
    PARSE_ERRORS
        .counter_with([input.label().into(), reason.into()])
        .increment(1);
}

/// Per-input handles, registered once per listener task.
#[derive(Clone)]
pub struct InputMetrics {
    /// Messages received (datagrams, frames, completed chunked messages).
    pub received: Counter,
    /// Bytes received.
    pub bytes: Counter,
}

impl InputMetrics {
    /// Handles for `input`.
    pub fn new(input: Input) -> InputMetrics {
        InputMetrics {
            received: RECEIVED_MESSAGES.counter_with([input.label().into()]),
            bytes: RECEIVED_BYTES.counter_with([input.label().into()]),
        }
    }
}

/// Counter of records matched by a route (`"none"`: no route matched).
pub fn routed(route: &str) -> Counter {
    ROUTED_MESSAGES.counter_with([route.to_owned().into()])
}

/// Open TCP connections of `input`.
pub fn tcp_connections(input: Input) -> Gauge {
    TCP_CONNECTIONS.gauge_with([input.label().into()])
}

/// Why cowlogd closed (or, for the metrics endpoint, refused) a
/// connection: the `reason` of `cowlogd_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Nothing sent within `inputs.tcp_first_byte_timeout_s`.
    FirstByteTimeout,
    /// Silent for `inputs.tcp_idle_timeout_s`.
    IdleTimeout,
    /// Closed to make room in a full pool.
    Evicted,
    /// Refused: the peer is not allowed (the metrics endpoint).
    NotAllowed,
    /// Refused: no slot (the metrics endpoint).
    ConnectionLimit,
}

impl CloseReason {
    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::FirstByteTimeout => "first_byte_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::NotAllowed => "not_allowed",
            CloseReason::ConnectionLimit => "connection_limit",
        }
    }
}

/// Counts a connection closed for `reason` in `pool`.
pub fn connection_closed(pool: &'static str, reason: CloseReason) {
    CONNECTIONS_CLOSED
        .counter_with([pool.into(), reason.label().into()])
        .increment(1);
}

/// What the daemon runs with, for the series known at its start.
pub struct KnownSeries<'a> {
    /// The inputs that are on.
    pub inputs: &'a [Input],
    /// Each connection pool that is on, with the reasons it closes
    /// connections for.
    pub pools: &'a [(&'static str, &'static [CloseReason])],
    /// Every `kind` of `cowlogd_redis_errors_total`.
    pub redis_error_kinds: &'a [&'static str],
}

/// Registers at 0 every series whose labels are known at start, so that a
/// scrape right after start lists them: `rate()` then sees the first burst
/// of a new drop reason, and an alert on a series' absence can fire.
/// The route and ban-rule series are registered where the routes and rules
/// are made.
pub fn register_known_series(known: &KnownSeries<'_>) {
    for metric in ALL.iter().filter(|m| m.labels.is_empty()) {
        match metric.kind {
            Kind::Counter => metric.counter().increment(0),
            Kind::Gauge => metric.gauge().increment(0.0),
            Kind::Histogram => drop(metric.histogram()),
        }
    }
    for reason in DropReason::ALL {
        drop_counter(reason).increment(0);
    }
    for kind in known.redis_error_kinds {
        REDIS_ERRORS.counter_with([(*kind).into()]).increment(0);
    }
    for &input in known.inputs {
        let handles = InputMetrics::new(input);
        handles.received.increment(0);
        handles.bytes.increment(0);
        for reason in input.parse_error_reasons() {
            PARSE_ERRORS
                .counter_with([input.label().into(), (*reason).into()])
                .increment(0);
        }
        if input.is_stream() {
            tcp_connections(input).increment(0.0);
        }
    }
    for (pool, reasons) in known.pools {
        for reason in *reasons {
            CONNECTIONS_CLOSED
                .counter_with([(*pool).into(), reason.label().into()])
                .increment(0);
        }
    }
}

/// Installs the Prometheus recorder (once per process: a second call, as
/// from a second daemon in one test process, gets the same handle) and
/// describes every metric.
///
/// # Errors
/// When another recorder is already installed in this process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REDIS_WRITE_DURATION.name.into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(REDIS_BATCH_MESSAGES.name.into()),
            &[
                1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0,
            ],
        )?
        .install_recorder()?;
    for metric in ALL {
        metric.describe();
    }
    *installed = Some(handle.clone());
    Ok(handle)
}

/// Lets a log line through at most once per interval and says how many were
/// held back, so a flood of bad input cannot flood the log.
pub struct LogLimiter {
    interval_secs: u64,
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// A limiter passing one line per `interval_secs`.
    pub const fn new(interval_secs: u64) -> LogLimiter {
        LogLimiter {
            interval_secs,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last.load(Ordering::Relaxed);
        if now >= last + self.interval_secs
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Logs a warning through a per-call-site `LogLimiter` (one line per 10 s).
/// The crate's own: it names private items, so it is hidden.
#[doc(hidden)]
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)*) => {{
        static LIMITER: $crate::metrics::LogLimiter = $crate::metrics::LogLimiter::new(10);
        if let Some(suppressed) = LIMITER.allow() {
            tracing::warn!(suppressed, $($arg)*);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_passes_one_line_per_interval_and_counts_the_rest() {
        let limiter = LogLimiter::new(3600);
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 2);
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

    #[test]
    fn the_readme_lists_every_metric_as_declared() {
        let begin = "<!-- metrics table: made by metrics::readme_table() -->\n";
        let start = README
            .find(begin)
            .expect("README has the metrics table marker")
            + begin.len();
        let end = start
            + README[start..]
                .find("<!-- end of metrics table -->")
                .expect("README has the end marker");
        let expected = readme_table();
        assert!(
            README[start..end] == expected,
            "README's metrics table is out of date; put this between the markers:\n{expected}"
        );
    }

    #[test]
    fn names_are_unique_and_label_free_handles_match_their_declaration() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|m| m.name.starts_with("cowlogd_")));
        // Each reason once in the list the README shows and start-up uses.
        let mut reasons: Vec<(&str, &str)> = DropReason::ALL.iter().map(|r| r.labels()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), DropReason::ALL.len());
    }
}

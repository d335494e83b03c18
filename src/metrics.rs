//! Every metric cowlogd exports, by name, and the one place each drop
//! reason is counted. Labels are bounded: inputs, stages, reasons, route
//! names and error kinds — never a peer address or a templated key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{
    Counter, Gauge, counter, describe_counter, describe_gauge, describe_histogram, gauge,
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
        }
    }

    /// Whether the input carries GELF.
    pub fn is_gelf(self) -> bool {
        matches!(self, Input::GelfUdp | Input::GelfTcp | Input::GelfHttp)
    }
}

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
        }
    }
}

/// The counter of messages dropped for `reason` (register once where a
/// reason is frequent; [`dropped`] otherwise).
pub fn drop_counter(reason: DropReason) -> Counter {
    let (stage, reason) = reason.labels();
    counter!("cowlogd_dropped_messages_total", "stage" => stage, "reason" => reason)
}

/// Counts `n` messages dropped for `reason`.
pub fn dropped(reason: DropReason, n: u64) {
    drop_counter(reason).increment(n);
}

/// Counts a parse problem; the message may still be kept (a syslog line
/// without header is kept whole).
pub fn parse_error(input: Input, reason: &'static str) {
    counter!("cowlogd_parse_errors_total", "input" => input.label(), "reason" => reason)
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
            received: counter!("cowlogd_received_messages_total", "input" => input.label()),
            bytes: counter!("cowlogd_received_bytes_total", "input" => input.label()),
        }
    }
}

/// Counter of records matched by a route (`"none"`: no route matched).
pub fn routed(route: &str) -> Counter {
    counter!("cowlogd_routed_messages_total", "route" => route.to_owned())
}

/// Open TCP connections of `input`.
pub fn tcp_connections(input: Input) -> Gauge {
    gauge!("cowlogd_tcp_connections", "input" => input.label())
}

/// Installs the Prometheus recorder and describes every metric.
///
/// # Errors
/// When a recorder is already installed in this process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("cowlogd_redis_write_duration_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full("cowlogd_redis_batch_messages".into()),
            &[
                1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0,
            ],
        )?
        .install_recorder()?;
    describe_counter!(
        "cowlogd_received_messages_total",
        "Messages received, by input."
    );
    describe_counter!("cowlogd_received_bytes_total", "Bytes received, by input.");
    describe_counter!(
        "cowlogd_parse_errors_total",
        "Messages that did not parse as their input's format, by reason."
    );
    describe_counter!(
        "cowlogd_dropped_messages_total",
        "Messages dropped, by stage and reason."
    );
    describe_counter!(
        "cowlogd_routed_messages_total",
        "Records matched by each route (none: no route)."
    );
    describe_counter!(
        "cowlogd_redis_entries_written_total",
        "List entries pushed to Redis."
    );
    describe_counter!(
        "cowlogd_redis_published_total",
        "Messages published on the channel."
    );
    describe_counter!("cowlogd_redis_errors_total", "Redis errors, by kind.");
    describe_counter!(
        "cowlogd_channel_payloads_cut_total",
        "Channel payloads cut to redis.channel_max_bytes (list entries are whole)."
    );
    describe_counter!(
        "cowlogd_redis_window_splits_total",
        "Writes split in half because they kept timing out."
    );
    describe_counter!(
        "cowlogd_redis_reconnects_total",
        "Redis connections opened after the first."
    );
    describe_histogram!(
        "cowlogd_redis_batch_messages",
        "Messages per Redis transaction."
    );
    describe_histogram!(
        "cowlogd_redis_write_duration_seconds",
        "Time to write one transaction, retries included."
    );
    describe_gauge!("cowlogd_queue_messages", "Messages waiting for Redis.");
    describe_gauge!("cowlogd_queue_bytes", "Bytes waiting for Redis.");
    describe_gauge!(
        "cowlogd_queue_max_messages",
        "redis.queue_messages: the Redis queue's capacity in messages."
    );
    describe_gauge!(
        "cowlogd_queue_max_bytes",
        "redis.queue_bytes: the Redis queue's capacity in bytes."
    );
    describe_gauge!(
        "cowlogd_gelf_pending_messages",
        "Incomplete chunked GELF messages."
    );
    describe_gauge!(
        "cowlogd_gelf_pending_bytes",
        "Bytes held by incomplete chunked GELF messages."
    );
    describe_gauge!("cowlogd_tcp_connections", "Open TCP connections, by input.");
    describe_gauge!(
        "cowlogd_redis_up",
        "1 when the last Redis operation succeeded."
    );
    describe_counter!(
        "cowlogd_graylog_forwarded_total",
        "Messages sent on to Graylog."
    );
    describe_counter!(
        "cowlogd_truncated_messages_total",
        "Messages cut to limits.max_message_bytes."
    );
    describe_counter!(
        "cowlogd_fluent_resent_total",
        "Forward events sent again after cowlogd had queued them (their ack was lost): acked again, not queued twice."
    );
    describe_counter!(
        "cowlogd_graylog_truncated_total",
        "Forwarded messages cut to fit in 128 UDP chunks."
    );
    describe_counter!(
        "cowlogd_graylog_reconnects_total",
        "Graylog TCP connections opened after the first."
    );
    describe_gauge!(
        "cowlogd_graylog_queue_messages",
        "Messages waiting to be forwarded."
    );
    describe_gauge!(
        "cowlogd_graylog_queue_bytes",
        "Bytes waiting to be forwarded."
    );
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

/// Logs a warning through a per-call-site [`LogLimiter`] (one line per 10 s).
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

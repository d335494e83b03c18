//! Configuration: the TOML file (every key optional), its defaults (the
//! mailcow profile), and validation into the runtime [`Settings`].
//!
//! [`Config`] is what the file says, with defaults filled in; `cowlogd
//! check` prints it back. [`Config::validate`] turns it into [`Settings`],
//! the checked objects the daemon runs with, or an error naming the key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use cowlogd_parsers::ReassemblyLimits;
use cowlogd_parsers::encode::mailcow::ChannelSanitize;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::router::{RouteConfig, Router};

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where and how to write mailcow's lists and channel.
    pub redis: RedisConfig,
    /// Listeners and who may send.
    pub inputs: InputsConfig,
    /// Bounds on sizes and pending state.
    pub limits: LimitsConfig,
    /// The HTTP endpoint for Prometheus and health checks.
    pub metrics: MetricsConfig,
    /// Forwarding everything on to Graylog (or any GELF receiver).
    pub graylog: GraylogConfig,
    /// Every record printed as it is routed.
    pub console: ConsoleConfig,
    /// netfilter's ban rules evaluated in cowlogd.
    pub f2b: F2bConfig,
    /// Routing rules, first match wins. Absent: the mailcow profile.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis: RedisConfig::default(),
            inputs: InputsConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            graylog: GraylogConfig::default(),
            console: ConsoleConfig::default(),
            f2b: F2bConfig::default(),
            routes: crate::router::mailcow_profile(),
        }
    }
}

/// `[redis]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS;
    /// `""` turns Redis off (console or Graylog only). `COWLOGD_REDIS_URL`
    /// overrides it.
    pub url: String,
    /// Entries kept per list (mailcow: 10000).
    pub list_cap: usize,
    /// The channel netfilter-mailcow subscribes to.
    pub channel: String,
    /// `"syslog-ng"` (replace bytes < 0x20 and `/` with `_`, what netfilter
    /// expects today) or `"control-only"` (keep `/`, reviving the SOGo rule).
    pub channel_sanitize: String,
    /// `"all"` (what syslog-ng publishes) or `"matches"`: only payloads on
    /// which an `F2B_REGEX` rule matches with a public address (needs
    /// `[f2b] enabled`).
    pub publish: String,
    /// Messages held while Redis is slow or away; then the oldest are dropped.
    pub queue_messages: usize,
    /// Bytes held while Redis is slow or away.
    pub queue_bytes: usize,
    /// Most messages written in one transaction.
    pub batch_max: usize,
    /// Most bytes (keys, entries, payloads) written in one transaction.
    pub batch_max_bytes: usize,
    /// Longest channel payload, in bytes; longer ones are cut at a
    /// character boundary (list entries never are). netfilter's regexes
    /// take time that grows with the square of a line's length.
    pub channel_max_bytes: usize,
    /// Extra wait for a batch to fill, in ms. 0: an idle writer writes at
    /// once and a batch is whatever arrived during the previous write.
    pub linger_ms: u64,
    /// Timeout for connecting, in ms.
    pub connect_timeout_ms: u64,
    /// Timeout for a pipeline's replies, in ms (a frozen Redis).
    pub response_timeout_ms: u64,
    /// Longest back-off between attempts while messages wait, in ms; at
    /// most 1000, so writing resumes within a second of Redis answering.
    pub reconnect_max_ms: u64,
    /// How long shutdown waits to flush queued messages, in ms.
    pub shutdown_flush_ms: u64,
    /// PEM file of a CA to trust for `rediss://` (else the system's roots).
    pub tls_ca_file: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            list_cap: 10_000,
            channel: "F2B_CHANNEL".into(),
            channel_sanitize: "syslog-ng".into(),
            publish: "all".into(),
            queue_messages: 200_000,
            queue_bytes: 128 * 1024 * 1024,
            batch_max: 10_000,
            batch_max_bytes: 4 * 1024 * 1024,
            channel_max_bytes: 2048,
            linger_ms: 0,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 5_000,
            reconnect_max_ms: 1_000,
            shutdown_flush_ms: 5_000,
            tls_ca_file: String::new(),
        }
    }
}

/// `[inputs]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InputsConfig {
    /// GELF over UDP (Docker's `gelf-address = udp://...`); "" turns it off.
    pub gelf_udp: String,
    /// GELF over TCP, NUL-framed; "" turns it off.
    pub gelf_tcp: String,
    /// Syslog over UDP; "" turns it off.
    pub syslog_udp: String,
    /// Syslog over TCP, octet counting or newline; "" turns it off.
    pub syslog_tcp: String,
    /// GELF over HTTP (`POST /gelf`); "" (the default) turns it off.
    pub gelf_http: String,
    /// Accept several newline-separated GELF messages per HTTP body.
    pub gelf_http_bulk: bool,
    /// Fluent Forward protocol over TCP (Docker's `fluentd` driver,
    /// `fluentd-address = tcp://...`, usually port 24224); "" (the default)
    /// turns it off.
    pub fluent_tcp: String,
    /// Fluent Forward protocol on a unix socket (`fluentd-address =
    /// unix:///path`); "" (the default) turns it off. A stale socket file
    /// is replaced.
    pub fluent_unix: String,
    /// Permissions of the unix socket, octal (`"0660"`): who may connect.
    pub fluent_unix_mode: String,
    /// Networks that may send; everything else is dropped before parsing.
    pub allow: Vec<String>,
    /// Zone of BSD syslog timestamps (`UTC`, `Europe/Berlin`, `+01:00`).
    pub timezone: String,
    /// UDP sockets per UDP listener (SO_REUSEPORT), each read by its own task.
    pub udp_sockets: usize,
    /// SO_RCVBUF asked for each UDP socket, in bytes.
    pub udp_receive_buffer: usize,
    /// TCP connections open at once, all listeners together.
    pub tcp_max_connections: usize,
    /// TCP connections open at once from one address.
    pub tcp_max_connections_per_source: usize,
    /// Seconds a TCP connection may stay silent before it is closed.
    pub tcp_idle_timeout_s: u64,
    /// Seconds a new TCP connection may take to send its first byte (HTTP:
    /// a request's headers); one that sends nothing does not hold a slot
    /// for the idle timeout.
    pub tcp_first_byte_timeout_s: u64,
    /// GELF HTTP connections open at once; a pool of their own, so HTTP
    /// clients and TCP senders cannot take each other's slots.
    pub http_max_connections: usize,
    /// Seconds a TCP frame (or HTTP body) may take from its first byte to its
    /// last; a slower sender is disconnected (slowloris).
    pub tcp_frame_timeout_s: u64,
    /// How long a TCP reader waits for queue space before dropping the oldest
    /// queued messages and reading on, in ms (Docker blocks a container's
    /// stdout while its collector does not read).
    pub tcp_queue_wait_ms: u64,
}

impl Default for InputsConfig {
    fn default() -> Self {
        InputsConfig {
            gelf_udp: "0.0.0.0:12201".into(),
            gelf_tcp: "0.0.0.0:12201".into(),
            syslog_udp: "0.0.0.0:5140".into(),
            syslog_tcp: "0.0.0.0:5140".into(),
            gelf_http: String::new(),
            gelf_http_bulk: false,
            fluent_tcp: String::new(),
            fluent_unix: String::new(),
            fluent_unix_mode: "0660".into(),
            allow: [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7",
            ]
            .map(String::from)
            .to_vec(),
            timezone: "UTC".into(),
            udp_sockets: 2,
            udp_receive_buffer: 8 * 1024 * 1024,
            tcp_max_connections: 1024,
            tcp_max_connections_per_source: 256,
            tcp_idle_timeout_s: 600,
            tcp_first_byte_timeout_s: 10,
            http_max_connections: 256,
            tcp_frame_timeout_s: 60,
            tcp_queue_wait_ms: 1_000,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest TCP frame; longer frames are skipped and counted.
    pub max_frame_bytes: usize,
    /// Largest decompressed GELF payload; larger ones are dropped and counted.
    pub max_decompressed_bytes: usize,
    /// Deadline for a chunked GELF message, from its first chunk, in ms.
    pub gelf_chunk_timeout_ms: u64,
    /// Incomplete chunked messages held at once.
    pub gelf_pending_messages: usize,
    /// Incomplete chunked messages one sender may hold.
    pub gelf_pending_per_sender: usize,
    /// Bytes held by incomplete chunked messages.
    pub gelf_pending_bytes: usize,
    /// Bytes one chunked message may reach before reassembly.
    pub gelf_max_message_bytes: usize,
    /// Largest GELF HTTP body, compressed; larger ones get 413.
    pub http_max_body_bytes: usize,
    /// Longest message text stored or published; longer text is cut and
    /// ends in `...[truncated by cowlogd]` (counted).
    pub max_message_bytes: usize,
    /// TCP read buffer bytes, all connections together, beyond 128 KiB each;
    /// a frame that needs more closes its connection (counted).
    pub tcp_buffers_total_bytes: usize,
    /// Deadline for the last part of a line Docker's fluentd driver split
    /// (lines over 16 KiB), from its first part, in ms.
    pub fluent_partial_timeout_ms: u64,
    /// Split lines being reassembled at once on one fluent connection (each
    /// up to `max_message_bytes`); one more drops the oldest (counted).
    pub fluent_partial_pending: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let chunks = ReassemblyLimits::default();
        LimitsConfig {
            max_frame_bytes: cowlogd_parsers::limits::DEFAULT_MAX_FRAME,
            max_decompressed_bytes: cowlogd_parsers::limits::DEFAULT_MAX_DECOMPRESSED,
            gelf_chunk_timeout_ms: chunks.timeout_ms,
            gelf_pending_messages: chunks.max_pending_messages,
            gelf_pending_per_sender: chunks.max_pending_per_sender,
            gelf_pending_bytes: chunks.max_pending_bytes,
            gelf_max_message_bytes: chunks.max_message_bytes,
            http_max_body_bytes: 8 * 1024 * 1024,
            max_message_bytes: 64 * 1024,
            tcp_buffers_total_bytes: 256 * 1024 * 1024,
            fluent_partial_timeout_ms: 10_000,
            fluent_partial_pending: 8,
        }
    }
}

/// `[f2b]`: netfilter-mailcow's rules (`F2B_REGEX`, `F2B_OPTIONS`) read
/// from the Redis cowlogd writes to and evaluated on every published
/// payload: metrics, `GET /f2b`, `cowlogd bans`. Never writes those keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct F2bConfig {
    /// Evaluate the rules.
    pub enabled: bool,
    /// Seconds between reads of `F2B_REGEX`, `F2B_OPTIONS` and
    /// `F2B_ACTIVE_BANS`.
    pub poll_interval_s: u64,
    /// Ban networks tracked (least recently seen evicted); ~100 bytes each
    /// (an 80-byte entry and its hash slot).
    pub max_offenders: usize,
}

impl Default for F2bConfig {
    fn default() -> Self {
        F2bConfig {
            enabled: false,
            poll_interval_s: 5,
            max_offenders: 10_000,
        }
    }
}

/// `[console]`: what `--console` turns on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Print every record on stdout as it is routed: time, input, container,
    /// `program[pid]`, severity, route, what happened, message.
    pub enabled: bool,
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `GET /metrics`, `/health`, `/ready`; "" turns it off.
    pub listen: String,
    /// Networks allowed to scrape; empty: the same as `inputs.allow`.
    pub allow: Vec<String>,
    /// Connections open at once (the longest idle makes room).
    pub max_connections: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "0.0.0.0:9127".into(),
            allow: Vec::new(),
            max_connections: 16,
        }
    }
}

/// `[graylog]`: forward every record, unfiltered, as GELF 1.1.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GraylogConfig {
    /// `udp://host:port` or `tcp://host:port`; "" (the default) turns
    /// forwarding off. The name is resolved again at every TCP reconnect
    /// and every 30 s for UDP.
    pub address: String,
    /// UDP only: `"gzip"`, `"zlib"` or `"none"`.
    pub compression: String,
    /// UDP only: datagram size, chunk header included (go-gelf: 1420; at most 8192).
    pub chunk_size: usize,
    /// Messages waiting to be forwarded; then the oldest are dropped.
    pub queue_messages: usize,
    /// Bytes waiting to be forwarded.
    pub queue_bytes: usize,
    /// Forward only records matched by these routes (`"none"`: records no
    /// route matched); empty: everything.
    pub routes: Vec<String>,
    /// Longest back-off between TCP reconnects, in ms.
    pub reconnect_max_ms: u64,
    /// TCP: a write that takes longer than this counts as a failure, in ms.
    pub write_timeout_ms: u64,
}

impl Default for GraylogConfig {
    fn default() -> Self {
        GraylogConfig {
            address: String::new(),
            compression: "gzip".into(),
            chunk_size: 1420,
            queue_messages: 100_000,
            queue_bytes: 64 * 1024 * 1024,
            routes: Vec::new(),
            reconnect_max_ms: 5_000,
            write_timeout_ms: 10_000,
        }
    }
}

impl Config {
    /// Reads a config file; keys it does not set keep their defaults.
    ///
    /// # Errors
    /// When the file cannot be read or is not valid TOML for this schema;
    /// the message names the file and the offending key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses config text.
    ///
    /// # Errors
    /// When the text is not valid TOML for this schema.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// Applies `COWLOGD_REDIS_URL`, if set.
    pub fn apply_env(&mut self) {
        if let Ok(url) = std::env::var("COWLOGD_REDIS_URL")
            && !url.is_empty()
        {
            self.redis.url = url;
        }
    }

    /// The config as TOML, with any password in the Redis URL masked.
    ///
    /// # Errors
    /// Never in practice; serialization of these types cannot fail.
    pub fn to_toml_masked(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        shown.redis.url = mask_password(&shown.redis.url);
        Ok(toml::to_string(&shown)?)
    }

    /// Checks every value and builds the runtime settings.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> anyhow::Result<Settings> {
        let redis = &self.redis;
        let url = if redis.url.is_empty() {
            // Redis off: console-only or Graylog-only use.
            url::Url::parse("redis://off").context("redis.url")?
        } else {
            url::Url::parse(&redis.url).context("redis.url: not a URL")?
        };
        if !matches!(url.scheme(), "redis" | "rediss") {
            bail!(
                "redis.url: scheme must be redis:// or rediss://, not {}://",
                url.scheme()
            );
        }
        positive("redis.list_cap", redis.list_cap)?;
        positive("redis.queue_messages", redis.queue_messages)?;
        positive("redis.queue_bytes", redis.queue_bytes)?;
        positive("redis.batch_max", redis.batch_max)?;
        positive("redis.batch_max_bytes", redis.batch_max_bytes)?;
        if redis.channel_max_bytes < 64 {
            bail!("redis.channel_max_bytes: must be at least 64");
        }
        if redis.channel.is_empty() {
            bail!("redis.channel: must not be empty");
        }
        let channel_sanitize = match redis.channel_sanitize.as_str() {
            "syslog-ng" => ChannelSanitize::SyslogNg,
            "control-only" => ChannelSanitize::ControlOnly,
            other => {
                bail!("redis.channel_sanitize: {other:?} is not \"syslog-ng\" or \"control-only\"")
            }
        };
        let publish_matches_only = match redis.publish.as_str() {
            "all" => false,
            "matches" if self.f2b.enabled => true,
            "matches" => bail!("redis.publish = \"matches\" needs [f2b] enabled = true"),
            other => bail!("redis.publish: {other:?} is not \"all\" or \"matches\""),
        };
        if self.f2b.enabled {
            positive("f2b.poll_interval_s", self.f2b.poll_interval_s as usize)?;
            positive("f2b.max_offenders", self.f2b.max_offenders)?;
        }
        if !redis.tls_ca_file.is_empty() && !Path::new(&redis.tls_ca_file).is_file() {
            bail!(
                "redis.tls_ca_file: {} is not a readable file",
                redis.tls_ca_file
            );
        }
        let inputs = &self.inputs;
        let listen = |key: &str, value: &str| -> anyhow::Result<Option<SocketAddr>> {
            if value.is_empty() {
                return Ok(None);
            }
            value.parse().map(Some).with_context(|| {
                format!("inputs.{key}: {value:?} is not an address like 0.0.0.0:12201")
            })
        };
        let allow = parse_networks("inputs.allow", &inputs.allow)?;
        let metrics_allow = if self.metrics.allow.is_empty() {
            allow.clone()
        } else {
            parse_networks("metrics.allow", &self.metrics.allow)?
        };
        positive("metrics.max_connections", self.metrics.max_connections)?;
        positive("inputs.http_max_connections", inputs.http_max_connections)?;
        positive(
            "inputs.tcp_first_byte_timeout_s",
            inputs.tcp_first_byte_timeout_s as usize,
        )?;
        positive(
            "redis.connect_timeout_ms",
            redis.connect_timeout_ms as usize,
        )?;
        positive(
            "redis.response_timeout_ms",
            redis.response_timeout_ms as usize,
        )?;
        positive("inputs.udp_receive_buffer", inputs.udp_receive_buffer)?;
        let timezone = parse_timezone(&inputs.timezone).context("inputs.timezone")?;
        positive("inputs.udp_sockets", inputs.udp_sockets)?;
        positive("inputs.tcp_max_connections", inputs.tcp_max_connections)?;
        positive(
            "inputs.tcp_max_connections_per_source",
            inputs.tcp_max_connections_per_source,
        )?;
        positive(
            "inputs.tcp_idle_timeout_s",
            inputs.tcp_idle_timeout_s as usize,
        )?;
        positive(
            "inputs.tcp_frame_timeout_s",
            inputs.tcp_frame_timeout_s as usize,
        )?;

        let limits = &self.limits;
        positive("limits.max_frame_bytes", limits.max_frame_bytes)?;
        positive(
            "limits.max_decompressed_bytes",
            limits.max_decompressed_bytes,
        )?;
        positive("limits.gelf_pending_messages", limits.gelf_pending_messages)?;
        positive(
            "limits.gelf_pending_per_sender",
            limits.gelf_pending_per_sender,
        )?;
        positive(
            "limits.gelf_chunk_timeout_ms",
            limits.gelf_chunk_timeout_ms as usize,
        )?;
        positive("limits.gelf_pending_bytes", limits.gelf_pending_bytes)?;
        positive(
            "limits.gelf_max_message_bytes",
            limits.gelf_max_message_bytes,
        )?;
        positive("limits.http_max_body_bytes", limits.http_max_body_bytes)?;
        if limits.tcp_buffers_total_bytes < limits.max_frame_bytes {
            bail!(
                "limits.tcp_buffers_total_bytes: must be at least limits.max_frame_bytes ({})",
                limits.max_frame_bytes
            );
        }
        if limits.max_message_bytes < 64 {
            bail!("limits.max_message_bytes: must be at least 64");
        }
        let metrics_listen = if self.metrics.listen.is_empty() {
            None
        } else {
            Some(self.metrics.listen.parse().with_context(|| {
                format!(
                    "metrics.listen: {:?} is not an address",
                    self.metrics.listen
                )
            })?)
        };
        let router = Router::build(&self.routes, redis.list_cap)?;
        let graylog = self.graylog.validate(&router)?;
        Ok(Settings {
            redis_url: redis.url.clone(),
            tls_ca_file: (!redis.tls_ca_file.is_empty()).then(|| redis.tls_ca_file.clone().into()),
            channel: redis.channel.clone(),
            channel_sanitize,
            queue_messages: redis.queue_messages,
            queue_bytes: redis.queue_bytes,
            batch_max: redis.batch_max,
            batch_max_bytes: redis.batch_max_bytes,
            channel_max_bytes: redis.channel_max_bytes,
            linger: Duration::from_millis(redis.linger_ms),
            connect_timeout: Duration::from_millis(redis.connect_timeout_ms),
            response_timeout: Duration::from_millis(redis.response_timeout_ms),
            reconnect_max: Duration::from_millis(redis.reconnect_max_ms.max(10)),
            shutdown_flush: Duration::from_millis(redis.shutdown_flush_ms),
            gelf_udp: listen("gelf_udp", &inputs.gelf_udp)?,
            gelf_tcp: listen("gelf_tcp", &inputs.gelf_tcp)?,
            syslog_udp: listen("syslog_udp", &inputs.syslog_udp)?,
            syslog_tcp: listen("syslog_tcp", &inputs.syslog_tcp)?,
            gelf_http: listen("gelf_http", &inputs.gelf_http)?,
            gelf_http_bulk: inputs.gelf_http_bulk,
            fluent_tcp: listen("fluent_tcp", &inputs.fluent_tcp)?,
            fluent_unix: (!inputs.fluent_unix.is_empty())
                .then(|| inputs.fluent_unix.clone().into()),
            fluent_unix_mode: u32::from_str_radix(
                inputs.fluent_unix_mode.trim_start_matches("0o"),
                8,
            )
            .ok()
            .filter(|mode| *mode <= 0o777)
            .with_context(|| {
                format!(
                    "inputs.fluent_unix_mode: {:?} is not an octal mode like \"0660\"",
                    inputs.fluent_unix_mode
                )
            })?,
            partial_timeout: Duration::from_millis(limits.fluent_partial_timeout_ms),
            partial_pending: limits.fluent_partial_pending.max(1),
            http_max_body: limits.http_max_body_bytes,
            graylog,
            allow,
            timezone,
            udp_sockets: inputs.udp_sockets,
            udp_receive_buffer: inputs.udp_receive_buffer,
            tcp_max_connections: inputs.tcp_max_connections,
            tcp_max_connections_per_source: inputs.tcp_max_connections_per_source,
            tcp_idle_timeout: Duration::from_secs(inputs.tcp_idle_timeout_s),
            tcp_first_byte_timeout: Duration::from_secs(inputs.tcp_first_byte_timeout_s),
            http_max_connections: inputs.http_max_connections,
            tcp_buffers_total: limits.tcp_buffers_total_bytes,
            metrics_allow,
            metrics_max_connections: self.metrics.max_connections,
            tcp_frame_timeout: Duration::from_secs(inputs.tcp_frame_timeout_s),
            max_message: limits.max_message_bytes,
            tcp_queue_wait: Duration::from_millis(inputs.tcp_queue_wait_ms),
            max_frame: limits.max_frame_bytes,
            max_decompressed: limits.max_decompressed_bytes,
            reassembly: ReassemblyLimits {
                max_pending_messages: limits.gelf_pending_messages,
                max_pending_per_sender: limits.gelf_pending_per_sender,
                max_pending_bytes: limits.gelf_pending_bytes,
                max_message_bytes: limits.gelf_max_message_bytes,
                timeout_ms: limits.gelf_chunk_timeout_ms,
            },
            metrics_listen,
            console: self.console.enabled,
            publish_matches_only,
            f2b: self.f2b.enabled.then(|| self.f2b.clone()),
            router,
        })
    }
}

/// How to reach Graylog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraylogTransport {
    /// Chunked, compressed datagrams.
    Udp,
    /// NUL-framed JSON.
    Tcp,
}

/// Validated `[graylog]`.
#[derive(Debug, Clone)]
pub struct GraylogSettings {
    /// UDP or TCP.
    pub transport: GraylogTransport,
    /// `host:port`, resolved when connecting.
    pub target: String,
    /// UDP compression.
    pub codec: cowlogd_parsers::encode::compress::Codec,
    /// UDP datagram size.
    pub chunk_size: usize,
    /// Queue capacity in messages.
    pub queue_messages: usize,
    /// Queue capacity in bytes.
    pub queue_bytes: usize,
    /// Which records to forward.
    pub filter: ForwardFilter,
    /// Back-off ceiling.
    pub reconnect_max: Duration,
    /// TCP write timeout.
    pub write_timeout: Duration,
}

/// Which records are forwarded, by the route that matched them.
#[derive(Debug, Clone)]
pub struct ForwardFilter {
    /// Per route index: forward?
    pub routes: Vec<bool>,
    /// Forward records no route matched?
    pub unrouted: bool,
}

impl ForwardFilter {
    /// Whether a record matched by route `index` (None: no route) is forwarded.
    pub fn forwards(&self, index: Option<usize>) -> bool {
        match index {
            Some(i) => self.routes.get(i).copied().unwrap_or(false),
            None => self.unrouted,
        }
    }
}

impl GraylogConfig {
    fn validate(&self, router: &Router) -> anyhow::Result<Option<GraylogSettings>> {
        use cowlogd_parsers::encode::compress::Codec;
        if self.address.is_empty() {
            return Ok(None);
        }
        let (transport, target) = if let Some(rest) = self.address.strip_prefix("udp://") {
            (GraylogTransport::Udp, rest)
        } else if let Some(rest) = self.address.strip_prefix("tcp://") {
            (GraylogTransport::Tcp, rest)
        } else {
            bail!(
                "graylog.address: {:?} must start with udp:// or tcp://",
                self.address
            );
        };
        let valid_target = target.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid_target {
            bail!(
                "graylog.address: {:?} needs a host and a port, like udp://graylog:12201",
                self.address
            );
        }
        let codec = match self.compression.as_str() {
            "gzip" => Codec::Gzip,
            "zlib" => Codec::Zlib,
            "none" => Codec::None,
            other => bail!("graylog.compression: {other:?} is not gzip, zlib or none"),
        };
        if !(64..=8192).contains(&self.chunk_size) {
            bail!(
                "graylog.chunk_size: {} is not between 64 and 8192",
                self.chunk_size
            );
        }
        positive("graylog.queue_messages", self.queue_messages)?;
        positive("graylog.queue_bytes", self.queue_bytes)?;
        let filter = if self.routes.is_empty() {
            ForwardFilter {
                routes: vec![true; router.routes().len()],
                unrouted: true,
            }
        } else {
            let mut filter = ForwardFilter {
                routes: vec![false; router.routes().len()],
                unrouted: false,
            };
            for name in &self.routes {
                if name == "none" {
                    filter.unrouted = true;
                    continue;
                }
                let index = router
                    .routes()
                    .iter()
                    .position(|r| &r.name == name)
                    .with_context(|| format!("graylog.routes: no route named {name:?}"))?;
                filter.routes[index] = true;
            }
            filter
        };
        Ok(Some(GraylogSettings {
            transport,
            target: target.to_owned(),
            codec,
            chunk_size: self.chunk_size,
            queue_messages: self.queue_messages,
            queue_bytes: self.queue_bytes,
            filter,
            reconnect_max: Duration::from_millis(self.reconnect_max_ms.max(10)),
            write_timeout: Duration::from_millis(self.write_timeout_ms.max(1)),
        }))
    }
}

fn parse_networks(key: &str, networks: &[String]) -> anyhow::Result<Vec<IpNet>> {
    networks
        .iter()
        .map(|net| {
            net.parse::<IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
                .with_context(|| format!("{key}: {net:?} is not a network like 10.0.0.0/8"))
        })
        .collect()
}

fn positive(key: &str, value: usize) -> anyhow::Result<()> {
    if value == 0 {
        bail!("{key}: must be greater than 0");
    }
    Ok(())
}

/// `UTC`, an IANA name (`Europe/Berlin`, from the bundled database), or a
/// fixed offset (`+01:00`).
fn parse_timezone(name: &str) -> anyhow::Result<jiff::tz::TimeZone> {
    if name.eq_ignore_ascii_case("utc") || name.is_empty() {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    if let Some(sign) = name.chars().next().filter(|c| *c == '+' || *c == '-') {
        let digits: String = name[1..].chars().filter(char::is_ascii_digit).collect();
        if digits.len() == 4 {
            let hours: i32 = digits[..2].parse()?;
            let minutes: i32 = digits[2..].parse()?;
            let seconds = (hours * 3600 + minutes * 60) * if sign == '-' { -1 } else { 1 };
            let offset = jiff::tz::Offset::from_seconds(seconds)
                .map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
            return Ok(jiff::tz::TimeZone::fixed(offset));
        }
        bail!("{name:?} is not an offset like +01:00");
    }
    jiff::tz::TimeZone::get(name)
        .map_err(|e| anyhow::anyhow!("{name:?} is not a known time zone: {e}"))
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn mask_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Validated settings the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Redis URL (may hold a password: never log it, use [`mask_password`]);
    /// empty when Redis is off.
    pub redis_url: String,
    /// Extra CA for `rediss://`.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Channel name.
    pub channel: String,
    /// How channel payloads are cleaned.
    pub channel_sanitize: ChannelSanitize,
    /// Queue capacity in messages.
    pub queue_messages: usize,
    /// Queue capacity in bytes.
    pub queue_bytes: usize,
    /// Most messages per pipeline.
    pub batch_max: usize,
    /// Most bytes in one transaction.
    pub batch_max_bytes: usize,
    /// Longest channel payload.
    pub channel_max_bytes: usize,
    /// Extra wait to fill a batch.
    pub linger: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Reply timeout.
    pub response_timeout: Duration,
    /// Back-off ceiling.
    pub reconnect_max: Duration,
    /// Flush deadline at shutdown.
    pub shutdown_flush: Duration,
    /// GELF UDP address.
    pub gelf_udp: Option<SocketAddr>,
    /// GELF TCP address.
    pub gelf_tcp: Option<SocketAddr>,
    /// Syslog UDP address.
    pub syslog_udp: Option<SocketAddr>,
    /// Syslog TCP address.
    pub syslog_tcp: Option<SocketAddr>,
    /// GELF HTTP address.
    pub gelf_http: Option<SocketAddr>,
    /// Newline-separated messages per HTTP body.
    pub gelf_http_bulk: bool,
    /// Fluent Forward over TCP.
    pub fluent_tcp: Option<SocketAddr>,
    /// Fluent Forward on a unix socket.
    pub fluent_unix: Option<std::path::PathBuf>,
    /// The unix socket's permissions.
    pub fluent_unix_mode: u32,
    /// Deadline for the last part of a line Docker split.
    pub partial_timeout: Duration,
    /// Split lines reassembled at once per fluent connection.
    pub partial_pending: usize,
    /// Largest HTTP body.
    pub http_max_body: usize,
    /// Forwarding, when configured.
    pub graylog: Option<GraylogSettings>,
    /// Allowed sender networks.
    pub allow: Vec<IpNet>,
    /// Zone for BSD timestamps.
    pub timezone: jiff::tz::TimeZone,
    /// UDP sockets per listener.
    pub udp_sockets: usize,
    /// SO_RCVBUF request.
    pub udp_receive_buffer: usize,
    /// Global TCP connection cap.
    pub tcp_max_connections: usize,
    /// Per-address TCP connection cap.
    pub tcp_max_connections_per_source: usize,
    /// TCP idle timeout.
    pub tcp_idle_timeout: Duration,
    /// Deadline for one TCP frame or HTTP body.
    pub tcp_frame_timeout: Duration,
    /// Longest stored message text.
    pub max_message: usize,
    /// TCP wait for queue space.
    pub tcp_queue_wait: Duration,
    /// Longest TCP frame.
    pub max_frame: usize,
    /// Decompression cap.
    pub max_decompressed: usize,
    /// Chunk reassembly bounds.
    pub reassembly: ReassemblyLimits,
    /// HTTP endpoint address.
    pub metrics_listen: Option<SocketAddr>,
    /// Print every routed record on stdout.
    pub console: bool,
    /// `redis.publish = "matches"`.
    pub publish_matches_only: bool,
    /// `[f2b]`, when enabled.
    pub f2b: Option<F2bConfig>,
    /// Who may scrape.
    pub metrics_allow: Vec<IpNet>,
    /// Metrics connections at once.
    pub metrics_max_connections: usize,
    /// First-byte (HTTP: header) timeout.
    pub tcp_first_byte_timeout: Duration,
    /// GELF HTTP connections at once.
    pub http_max_connections: usize,
    /// TCP read buffer bytes beyond the free share, all connections.
    pub tcp_buffers_total: usize,
    /// The routing rules.
    pub router: Router,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config, Config::default());
        let settings = config.validate().unwrap();
        assert_eq!(settings.channel, "F2B_CHANNEL");
        assert_eq!(settings.gelf_udp, Some("0.0.0.0:12201".parse().unwrap()));
        assert!(!settings.router.routes().is_empty());
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::parse("[redis]\nlist_capp = 5\n").unwrap_err();
        assert!(format!("{err:#}").contains("list_capp"), "{err:#}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[redis]\nurl = \"http://x\"", "redis.url"),
            ("[redis]\nlist_cap = 0", "redis.list_cap"),
            ("[inputs]\ngelf_udp = \"nonsense\"", "inputs.gelf_udp"),
            ("[inputs]\nallow = [\"10.0.0.0/33\"]", "inputs.allow"),
            ("[inputs]\ntimezone = \"Mars/Olympus\"", "inputs.timezone"),
            (
                "[redis]\nchannel_sanitize = \"all\"",
                "redis.channel_sanitize",
            ),
            ("[graylog]\naddress = \"http://g:1\"", "graylog.address"),
            ("[graylog]\naddress = \"udp://g\"", "graylog.address"),
            (
                "[graylog]\naddress = \"udp://g:1\"\nchunk_size = 9000",
                "graylog.chunk_size",
            ),
            (
                "[graylog]\naddress = \"tcp://g:1\"\nroutes = [\"nope\"]",
                "graylog.routes",
            ),
            // Limits that cannot work are refused, not silently applied.
            (
                "[limits]\ngelf_pending_bytes = 0",
                "limits.gelf_pending_bytes",
            ),
            (
                "[limits]\ngelf_max_message_bytes = 0",
                "limits.gelf_max_message_bytes",
            ),
            (
                "[limits]\nhttp_max_body_bytes = 0",
                "limits.http_max_body_bytes",
            ),
            (
                "[limits]\ntcp_buffers_total_bytes = 1000",
                "limits.tcp_buffers_total_bytes",
            ),
            ("[redis]\nbatch_max_bytes = 0", "redis.batch_max_bytes"),
            (
                "[redis]\nresponse_timeout_ms = 0",
                "redis.response_timeout_ms",
            ),
            (
                "[redis]\nconnect_timeout_ms = 0",
                "redis.connect_timeout_ms",
            ),
            ("[redis]\nchannel_max_bytes = 10", "redis.channel_max_bytes"),
            (
                "[inputs]\nudp_receive_buffer = 0",
                "inputs.udp_receive_buffer",
            ),
            (
                "[inputs]\ntcp_first_byte_timeout_s = 0",
                "inputs.tcp_first_byte_timeout_s",
            ),
            ("[metrics]\nmax_connections = 0", "metrics.max_connections"),
            ("[metrics]\nallow = [\"nope\"]", "metrics.allow"),
        ] {
            let err = Config::parse(text).unwrap().validate().unwrap_err();
            assert!(format!("{err:#}").contains(key), "{text}: {err:#}");
        }
    }

    #[test]
    fn two_routes_writing_one_key_with_different_caps_are_refused_naming_the_key() {
        let text = r#"
[[route]]
name = "a"
container = ["postfix-mailcow"]
key = "POSTFIX_MAILLOG"
list_cap = 50
[[route]]
name = "b"
key = "POSTFIX_MAILLOG"
list_cap = 5
"#;
        let err = Config::parse(text).unwrap().validate().unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("\"POSTFIX_MAILLOG\"") && err.contains("list_cap"),
            "{err}"
        );
        let same = text.replace("list_cap = 5\n", "list_cap = 50\n");
        assert!(Config::parse(&same).unwrap().validate().is_ok());
    }

    #[test]
    fn empty_address_turns_an_input_off() {
        let settings = Config::parse("[inputs]\ngelf_tcp = \"\"")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(settings.gelf_tcp, None);
    }

    #[test]
    fn password_is_masked_in_printed_config() {
        let config = Config::parse("[redis]\nurl = \"redis://:hunter2@redis:6379/0\"").unwrap();
        let shown = config.to_toml_masked().unwrap();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("***"));
        // What `check` prints is itself a valid config.
        Config::parse(&shown).unwrap().validate().unwrap();
    }

    #[test]
    fn timezones() {
        assert_eq!(parse_timezone("UTC").unwrap(), jiff::tz::TimeZone::UTC);
        assert!(parse_timezone("Europe/Berlin").is_ok());
        assert_eq!(
            parse_timezone("+01:30")
                .unwrap()
                .to_fixed_offset()
                .unwrap()
                .seconds(),
            5400
        );
        assert!(parse_timezone("+1").is_err());
    }
}

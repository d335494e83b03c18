//! Configuration: the TOML file (every key optional), its defaults (the
//! mailcow profile), and validation into the runtime [`Settings`].
//!
//! [`Config`] is what the file says, with defaults filled in; `cowlogd
//! check` prints it back. Serde does the checking a value can do alone
//! (`NonZero*` numbers, enums, the types of [`values`]), so toml's error
//! names the key; each section then validates what depends on other keys
//! into the settings its owner takes ([`RedisSettings`] for the writer,
//! [`InputSettings`] for the listeners, [`GraylogSettings`], …).

pub mod values;

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use cowlogd_parsers::ReassemblyLimits;
use cowlogd_parsers::normalize::SyslogSender;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::inputs::fluent::PartialSettings;
use crate::inputs::tcp::TcpLimits;
use crate::pipeline::RateSettings;
use crate::pipeline::emit::EmitSettings;
use crate::router::{RouteConfig, Router};
pub use values::{
    Compression, FileMode, Fsync, GraylogAddress, GraylogTransport, Listen, Network, Publish,
    Sanitize, Zone,
};

/// `NonZeroUsize` for a constant known to be positive.
const fn nz(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

/// `NonZeroU64` for a constant known to be positive.
const fn nz64(n: u64) -> NonZeroU64 {
    match NonZeroU64::new(n) {
        Some(n) => n,
        None => NonZeroU64::MIN,
    }
}

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
    /// The disk queue in front of Redis.
    pub queue: QueueConfig,
    /// Containers' logs read from the Docker Engine API.
    pub docker: DockerConfig,
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
            queue: QueueConfig::default(),
            docker: DockerConfig::default(),
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
    pub list_cap: NonZeroUsize,
    /// The channel netfilter-mailcow subscribes to.
    pub channel: String,
    /// `"syslog-ng"` (replace bytes < 0x20 and `/` with `_`, what netfilter
    /// expects today) or `"control-only"` (keep `/`, reviving the SOGo rule).
    pub channel_sanitize: Sanitize,
    /// `"all"` (what syslog-ng publishes) or `"matches"`: only payloads on
    /// which an `F2B_REGEX` rule matches with a public address (needs
    /// `[f2b] enabled`).
    pub publish: Publish,
    /// Messages held while Redis is slow or away; then the oldest are dropped.
    pub queue_messages: NonZeroUsize,
    /// Bytes held while Redis is slow or away.
    pub queue_bytes: NonZeroUsize,
    /// Most messages written in one transaction.
    pub batch_max: NonZeroUsize,
    /// Most bytes (keys, entries, payloads) written in one transaction.
    pub batch_max_bytes: NonZeroUsize,
    /// Longest channel payload, in bytes; longer ones are cut at a
    /// character boundary (list entries never are). netfilter's regexes
    /// take time that grows with the square of a line's length.
    pub channel_max_bytes: usize,
    /// Extra wait for a batch to fill, in ms. 0: an idle writer writes at
    /// once and a batch is whatever arrived during the previous write.
    pub linger_ms: u64,
    /// Timeout for connecting, in ms.
    pub connect_timeout_ms: NonZeroU64,
    /// Timeout for a pipeline's replies, in ms (a frozen Redis).
    pub response_timeout_ms: NonZeroU64,
    /// Longest back-off between attempts while messages wait, in ms (at
    /// least 10); at most 1000, so writing resumes within a second of Redis
    /// answering.
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
            list_cap: nz(10_000),
            channel: "F2B_CHANNEL".into(),
            channel_sanitize: Sanitize::SyslogNg,
            publish: Publish::All,
            queue_messages: nz(200_000),
            queue_bytes: nz(128 * 1024 * 1024),
            batch_max: nz(10_000),
            batch_max_bytes: nz(4 * 1024 * 1024),
            channel_max_bytes: 2048,
            linger_ms: 0,
            connect_timeout_ms: nz64(2_000),
            response_timeout_ms: nz64(5_000),
            reconnect_max_ms: 1_000,
            shutdown_flush_ms: 5_000,
            tls_ca_file: String::new(),
        }
    }
}

/// `[queue]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Directory of the disk queue; `""` (the default): memory only.
    pub dir: String,
    /// Most bytes the queue's segments may take; when full, acked inputs
    /// (Fluent) wait and the others drop their newest batches.
    pub max_disk_bytes: NonZeroU64,
    /// Bytes after which a new segment file is started.
    pub segment_bytes: NonZeroU64,
    /// `"interval"`, `"always"` or `"never"`.
    pub fsync: Fsync,
    /// Between syncs with `fsync = "interval"`, in ms.
    pub fsync_interval_ms: NonZeroU64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            dir: String::new(),
            max_disk_bytes: nz64(1024 * 1024 * 1024),
            segment_bytes: nz64(16 * 1024 * 1024),
            fsync: Fsync::Interval,
            fsync_interval_ms: nz64(100),
        }
    }
}

impl QueueConfig {
    fn validate(&self) -> anyhow::Result<Option<QueueSettings>> {
        if self.dir.is_empty() {
            return Ok(None);
        }
        let max = self.max_disk_bytes.get();
        let segment = self.segment_bytes.get();
        if segment.saturating_mul(2) > max {
            bail!("queue.segment_bytes: must be at most half of queue.max_disk_bytes ({max})");
        }
        Ok(Some(QueueSettings {
            dir: PathBuf::from(&self.dir),
            max_disk_bytes: max,
            segment_bytes: segment,
            fsync: self.fsync,
            fsync_interval: Duration::from_millis(self.fsync_interval_ms.get()),
        }))
    }
}

/// `[docker]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The Docker Engine API: a unix socket path (`/var/run/docker.sock`,
    /// `unix:///…`) or `tcp://host:port` (a socket proxy); `""` (the
    /// default): off.
    pub socket: String,
    /// Containers read: globs on the container name, its compose service or
    /// its compose project; empty: every container.
    pub include: Vec<String>,
    /// Containers not read (the same globs); wins over `include`.
    pub exclude: Vec<String>,
    /// Where the per-container checkpoints are kept; `""`: `queue.dir`,
    /// and without one, no checkpoints (reading starts from now).
    pub state_dir: String,
    /// Leave out the container cowlogd itself runs in.
    pub exclude_self: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            socket: String::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            state_dir: String::new(),
            exclude_self: true,
        }
    }
}

impl DockerConfig {
    fn validate(&self, queue: Option<&QueueSettings>) -> anyhow::Result<Option<DockerSettings>> {
        if self.socket.is_empty() {
            return Ok(None);
        }
        let endpoint = if let Some(rest) = self
            .socket
            .strip_prefix("tcp://")
            .or_else(|| self.socket.strip_prefix("http://"))
        {
            let address = rest.trim_end_matches('/');
            if address.is_empty() || !address.contains(':') {
                bail!("docker.socket: {} needs host:port", self.socket);
            }
            DockerEndpoint::Tcp(address.to_owned())
        } else {
            let path = self.socket.strip_prefix("unix://").unwrap_or(&self.socket);
            if !path.starts_with('/') {
                bail!(
                    "docker.socket: {} is neither an absolute socket path nor tcp://host:port",
                    self.socket
                );
            }
            DockerEndpoint::Unix(PathBuf::from(path))
        };
        let state_dir = if self.state_dir.is_empty() {
            queue.map(|q| q.dir.clone())
        } else {
            Some(PathBuf::from(&self.state_dir))
        };
        let globs = |patterns: &[String]| {
            patterns
                .iter()
                .map(|p| crate::router::ContainerGlob::new(p))
                .collect::<Vec<_>>()
        };
        Ok(Some(DockerSettings {
            endpoint,
            include: globs(&self.include),
            exclude: globs(&self.exclude),
            state_dir,
            durable_queue: queue.is_some(),
            exclude_self: self.exclude_self,
        }))
    }
}

/// `[inputs]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InputsConfig {
    /// GELF over UDP (Docker's `gelf-address = udp://...`); "" turns it off.
    pub gelf_udp: Listen,
    /// GELF over TCP, NUL-framed; "" turns it off.
    pub gelf_tcp: Listen,
    /// Syslog over UDP; "" turns it off.
    pub syslog_udp: Listen,
    /// Syslog over TCP, octet counting or newline; "" turns it off.
    pub syslog_tcp: Listen,
    /// GELF over HTTP (`POST /gelf`); "" (the default) turns it off.
    pub gelf_http: Listen,
    /// Accept several newline-separated GELF messages per HTTP body.
    pub gelf_http_bulk: bool,
    /// Fluent Forward protocol over TCP (Docker's `fluentd` driver,
    /// `fluentd-address = tcp://...`, usually port 24224); "" (the default)
    /// turns it off.
    pub fluent_tcp: Listen,
    /// Fluent Forward protocol on a unix socket (`fluentd-address =
    /// unix:///path`); "" (the default) turns it off. A stale socket file
    /// is replaced.
    pub fluent_unix: String,
    /// Permissions of the unix socket, octal (`"0660"`): who may connect.
    pub fluent_unix_mode: FileMode,
    /// Networks that may send; everything else is dropped before parsing.
    pub allow: Vec<Network>,
    /// Zone of timestamps that name none (BSD syslog headers, the syslog
    /// line in a container's output): `local` (the default: `TZ`, else the
    /// system's zone, as syslog-ng reads them), `UTC`, `Europe/Berlin`,
    /// `+01:00`.
    pub timezone: Zone,
    /// Who sends on the syslog inputs: `"any"` (the tag is the program,
    /// unless the line shows it is Docker's driver) or `"docker"` (only
    /// Docker's syslog driver: the tag names the container, in every
    /// `syslog-format`).
    pub syslog_sender: SyslogSender,
    /// UDP sockets per UDP listener (SO_REUSEPORT), each read by its own task.
    pub udp_sockets: NonZeroUsize,
    /// SO_RCVBUF asked for each UDP socket, in bytes.
    pub udp_receive_buffer: NonZeroUsize,
    /// TCP connections open at once, all listeners together.
    pub tcp_max_connections: NonZeroUsize,
    /// TCP connections open at once from one address.
    pub tcp_max_connections_per_source: NonZeroUsize,
    /// Seconds a TCP connection may stay silent before it is closed.
    pub tcp_idle_timeout_s: NonZeroU64,
    /// Seconds a new TCP connection may take to send its first byte (HTTP:
    /// a request's headers); one that sends nothing does not hold a slot
    /// for the idle timeout.
    pub tcp_first_byte_timeout_s: NonZeroU64,
    /// GELF HTTP connections open at once; a pool of their own, so HTTP
    /// clients and TCP senders cannot take each other's slots.
    pub http_max_connections: NonZeroUsize,
    /// Seconds a TCP frame (or HTTP body) may take from its first byte to its
    /// last; a slower sender is disconnected (slowloris).
    pub tcp_frame_timeout_s: NonZeroU64,
    /// How long a TCP reader waits for queue space before dropping the oldest
    /// queued messages and reading on, in ms (Docker blocks a container's
    /// stdout while its collector does not read).
    pub tcp_queue_wait_ms: u64,
}

impl Default for InputsConfig {
    fn default() -> Self {
        InputsConfig {
            gelf_udp: Listen::on("0.0.0.0:12201"),
            gelf_tcp: Listen::on("0.0.0.0:12201"),
            syslog_udp: Listen::on("0.0.0.0:5140"),
            syslog_tcp: Listen::on("0.0.0.0:5140"),
            gelf_http: Listen::OFF,
            gelf_http_bulk: false,
            fluent_tcp: Listen::OFF,
            fluent_unix: String::new(),
            fluent_unix_mode: FileMode(0o660),
            allow: [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7",
            ]
            .into_iter()
            .filter_map(Network::parse)
            .collect(),
            timezone: Zone::local(),
            syslog_sender: SyslogSender::Any,
            udp_sockets: nz(2),
            udp_receive_buffer: nz(8 * 1024 * 1024),
            tcp_max_connections: nz(1024),
            tcp_max_connections_per_source: nz(256),
            tcp_idle_timeout_s: nz64(600),
            tcp_first_byte_timeout_s: nz64(10),
            http_max_connections: nz(256),
            tcp_frame_timeout_s: nz64(60),
            tcp_queue_wait_ms: 1_000,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest TCP frame; longer frames are skipped and counted.
    pub max_frame_bytes: NonZeroUsize,
    /// Largest decompressed GELF payload; larger ones are dropped and counted.
    pub max_decompressed_bytes: NonZeroUsize,
    /// Deadline for a chunked GELF message, from its first chunk, in ms.
    pub gelf_chunk_timeout_ms: NonZeroU64,
    /// Incomplete chunked messages held at once.
    pub gelf_pending_messages: NonZeroUsize,
    /// Incomplete chunked messages one sender may hold.
    pub gelf_pending_per_sender: NonZeroUsize,
    /// Bytes held by incomplete chunked messages.
    pub gelf_pending_bytes: NonZeroUsize,
    /// Bytes one chunked message may reach before reassembly.
    pub gelf_max_message_bytes: NonZeroUsize,
    /// Largest GELF HTTP body, compressed; larger ones get 413.
    pub http_max_body_bytes: NonZeroUsize,
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
    pub fluent_partial_pending: NonZeroUsize,
    /// Messages per second one container may send on average; more are
    /// dropped (`dropped{reason="rate_limited"}`). 0 (the default): no limit.
    pub container_rate: u32,
    /// Messages a container may send at once beyond its rate (a restart's
    /// spew); with `container_rate` on, at least 1.
    pub container_burst: u32,
    /// Containers never limited, as a route's `container` patterns (the
    /// full name or the compose service). Default: mailcow's mail
    /// containers, whose lines the mailcow UI and netfilter need.
    pub container_rate_exempt: Vec<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let chunks = ReassemblyLimits::default();
        LimitsConfig {
            max_frame_bytes: nz(cowlogd_parsers::limits::DEFAULT_MAX_FRAME),
            max_decompressed_bytes: nz(cowlogd_parsers::limits::DEFAULT_MAX_DECOMPRESSED),
            gelf_chunk_timeout_ms: nz64(chunks.timeout_ms),
            gelf_pending_messages: nz(chunks.max_pending_messages),
            gelf_pending_per_sender: nz(chunks.max_pending_per_sender),
            gelf_pending_bytes: nz(chunks.max_pending_bytes),
            gelf_max_message_bytes: nz(chunks.max_message_bytes),
            http_max_body_bytes: nz(8 * 1024 * 1024),
            max_message_bytes: 64 * 1024,
            tcp_buffers_total_bytes: 256 * 1024 * 1024,
            fluent_partial_timeout_ms: 10_000,
            fluent_partial_pending: nz(8),
            container_rate: 0,
            container_burst: 1000,
            container_rate_exempt: crate::router::MAILCOW_MAIL_CONTAINERS
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
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
    pub poll_interval_s: NonZeroU64,
    /// Ban networks tracked (least recently seen evicted); ~100 bytes each
    /// (an 80-byte entry and its hash slot).
    pub max_offenders: NonZeroUsize,
}

impl Default for F2bConfig {
    fn default() -> Self {
        F2bConfig {
            enabled: false,
            poll_interval_s: nz64(5),
            max_offenders: nz(10_000),
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
    pub listen: Listen,
    /// Networks allowed to scrape; empty: the same as `inputs.allow`.
    pub allow: Vec<Network>,
    /// Networks allowed to read `/f2b` (who is attacking, how close each
    /// address is to a ban): loopback only by default, apart from the
    /// scrapers.
    pub f2b_allow: Vec<Network>,
    /// Connections open at once (the longest idle makes room).
    pub max_connections: NonZeroUsize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Listen::on("0.0.0.0:9127"),
            allow: Vec::new(),
            f2b_allow: vec![
                Network(IpNet::V4(ipnet::Ipv4Net::new_assert(
                    std::net::Ipv4Addr::new(127, 0, 0, 0),
                    8,
                ))),
                Network(IpNet::from(std::net::IpAddr::from(
                    std::net::Ipv6Addr::LOCALHOST,
                ))),
            ],
            max_connections: nz(16),
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
    pub address: GraylogAddress,
    /// UDP only: `"gzip"`, `"zlib"` or `"none"`.
    pub compression: Compression,
    /// UDP only: datagram size, chunk header included (go-gelf: 1420; at most 8192).
    pub chunk_size: usize,
    /// Messages waiting to be forwarded; then the oldest are dropped.
    pub queue_messages: NonZeroUsize,
    /// Bytes waiting to be forwarded.
    pub queue_bytes: NonZeroUsize,
    /// Forward only records matched by these routes (`"none"`: records no
    /// route matched); empty: everything.
    pub routes: Vec<String>,
    /// Longest back-off between TCP reconnects, in ms (at least 10).
    pub reconnect_max_ms: u64,
    /// TCP: a write that takes longer than this counts as a failure, in ms.
    pub write_timeout_ms: NonZeroU64,
}

impl Default for GraylogConfig {
    fn default() -> Self {
        GraylogConfig {
            address: GraylogAddress::default(),
            compression: Compression::Gzip,
            chunk_size: 1420,
            queue_messages: nz(100_000),
            queue_bytes: nz(64 * 1024 * 1024),
            routes: Vec::new(),
            reconnect_max_ms: 5_000,
            write_timeout_ms: nz64(10_000),
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
    /// When the text is not valid TOML for this schema; the message starts
    /// with the key's full name (`redis.list_cap: …`).
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let document = toml::Deserializer::parse(text)?;
        serde_path_to_error::deserialize(document).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if path == "." {
                anyhow::anyhow!("{inner}")
            } else {
                anyhow::anyhow!("{path}: {inner}")
            }
        })
    }

    /// Applies `COWLOGD_REDIS_URL` and `COWLOGD_DOCKER_SOCKET`, if set.
    pub fn apply_env(&mut self) {
        if let Ok(url) = std::env::var("COWLOGD_REDIS_URL")
            && !url.is_empty()
        {
            self.redis.url = url;
        }
        if let Ok(socket) = std::env::var("COWLOGD_DOCKER_SOCKET")
            && !socket.is_empty()
        {
            self.docker.socket = socket;
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

    /// The keys that differ between `running` (the config the daemon
    /// started with) and `self` but that a reload cannot apply: listen
    /// addresses, the Redis connection and queue, limits read at start,
    /// Graylog, the console, `[f2b]`. Dotted, e.g. `inputs.gelf_udp`.
    /// What a reload applies (see [`RELOADABLE`]) is left out.
    pub fn changes_needing_restart(&self, running: &Config) -> Vec<String> {
        let (Ok(old), Ok(new)) = (toml::Value::try_from(running), toml::Value::try_from(self))
        else {
            return vec!["(the config could not be compared)".into()];
        };
        let mut changed = Vec::new();
        changed_keys("", &old, &new, &mut changed);
        changed.retain(|key| {
            !RELOADABLE
                .iter()
                .any(|reloadable| key == reloadable || key.starts_with(&format!("{reloadable}.")))
        });
        changed
    }

    /// Which Graylog records this config forwards, named against `router`
    /// (a reload's routes, with the Graylog section the daemon started
    /// with); `None` when forwarding is off.
    ///
    /// # Errors
    /// When `graylog.routes` names a route `router` does not have.
    pub fn forward_filter(&self, router: &Router) -> anyhow::Result<Option<ForwardFilter>> {
        Ok(self.graylog.validate(router)?.map(|graylog| graylog.filter))
    }

    /// Checks what depends on more than one value and builds the runtime
    /// settings, section by section.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> anyhow::Result<Settings> {
        let redis = self.redis.validate()?;
        let publish_matches_only = match self.redis.publish {
            Publish::All => false,
            Publish::Matches if self.f2b.enabled => true,
            Publish::Matches => bail!("redis.publish = \"matches\" needs [f2b] enabled = true"),
        };
        let limits = self.limits.validate()?;
        let inputs = self.inputs.validate(&self.limits)?;
        let router = Router::build(&self.routes, self.redis.list_cap.get())?;
        let graylog = self.graylog.validate(&router)?;
        let metrics = self.metrics.validate(&inputs.allow);
        let queue = self.queue.validate()?;
        if queue.is_some() && redis.url.is_none() {
            bail!(
                "queue.dir is set but redis.url is empty: the disk queue holds what waits for Redis"
            );
        }
        let docker = self.docker.validate(queue.as_ref())?;
        Ok(Settings {
            docker,
            queue,
            emit: EmitSettings {
                max_message: limits.max_message,
                channel_sanitize: self.redis.channel_sanitize.into(),
                channel_max: self.redis.channel_max_bytes,
                redis_off: redis.url.is_none(),
                publish_matches_only,
            },
            redis,
            inputs,
            limits,
            metrics,
            graylog,
            console: self.console.enabled,
            f2b: self.f2b.enabled.then(|| F2bSettings {
                poll_interval: Duration::from_secs(self.f2b.poll_interval_s.get()),
                max_offenders: self.f2b.max_offenders,
            }),
            router,
        })
    }
}

/// A back-off ceiling of at least 10 ms.
fn backoff_ceiling(key: &str, ms: u64) -> anyhow::Result<Duration> {
    if ms < 10 {
        bail!("{key}: must be at least 10 (ms)");
    }
    Ok(Duration::from_millis(ms))
}

impl RedisConfig {
    fn validate(&self) -> anyhow::Result<RedisSettings> {
        let url = if self.url.is_empty() {
            // Redis off: console-only or Graylog-only use.
            None
        } else {
            let parsed = url::Url::parse(&self.url).context("redis.url: not a URL")?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                bail!(
                    "redis.url: scheme must be redis:// or rediss://, not {}://",
                    parsed.scheme()
                );
            }
            Some(self.url.clone())
        };
        if self.channel_max_bytes < 64 {
            bail!("redis.channel_max_bytes: must be at least 64");
        }
        if self.channel.is_empty() {
            bail!("redis.channel: must not be empty");
        }
        let tls_ca_file = (!self.tls_ca_file.is_empty()).then(|| PathBuf::from(&self.tls_ca_file));
        if let Some(path) = &tls_ca_file
            && !path.is_file()
        {
            bail!(
                "redis.tls_ca_file: {} is not a readable file",
                path.display()
            );
        }
        Ok(RedisSettings {
            url,
            tls_ca_file,
            channel: self.channel.clone(),
            queue_messages: self.queue_messages.get(),
            queue_bytes: self.queue_bytes.get(),
            batch_max: self.batch_max.get(),
            batch_max_bytes: self.batch_max_bytes.get(),
            linger: Duration::from_millis(self.linger_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.get()),
            response_timeout: Duration::from_millis(self.response_timeout_ms.get()),
            reconnect_max: backoff_ceiling("redis.reconnect_max_ms", self.reconnect_max_ms)?,
            shutdown_flush: Duration::from_millis(self.shutdown_flush_ms),
        })
    }
}

impl InputsConfig {
    fn validate(&self, limits: &LimitsConfig) -> anyhow::Result<InputSettings> {
        Ok(InputSettings {
            gelf_udp: self.gelf_udp.0,
            gelf_tcp: self.gelf_tcp.0,
            syslog_udp: self.syslog_udp.0,
            syslog_tcp: self.syslog_tcp.0,
            gelf_http: self.gelf_http.0,
            fluent_tcp: self.fluent_tcp.0,
            allow: values::networks(&self.allow),
            timezone: self.timezone.zone().clone(),
            syslog_sender: self.syslog_sender,
            udp: UdpSettings {
                sockets: self.udp_sockets.get(),
                receive_buffer: self.udp_receive_buffer.get(),
            },
            tcp: TcpSettings {
                max_connections: self.tcp_max_connections.get(),
                max_per_source: self.tcp_max_connections_per_source.get(),
                buffers_total: limits.tcp_buffers_total_bytes,
                limits: TcpLimits {
                    max_frame: limits.max_frame_bytes.get(),
                    idle_timeout: Duration::from_secs(self.tcp_idle_timeout_s.get()),
                    first_byte_timeout: Duration::from_secs(self.tcp_first_byte_timeout_s.get()),
                    queue_wait: Duration::from_millis(self.tcp_queue_wait_ms),
                    frame_timeout: Duration::from_secs(self.tcp_frame_timeout_s.get()),
                },
            },
            http: HttpSettings {
                max_connections: self.http_max_connections.get(),
                max_body: limits.http_max_body_bytes.get(),
                bulk: self.gelf_http_bulk,
            },
            fluent: FluentSettings {
                unix: (!self.fluent_unix.is_empty()).then(|| PathBuf::from(&self.fluent_unix)),
                unix_mode: self.fluent_unix_mode.0,
                partial: PartialSettings {
                    timeout: Duration::from_millis(limits.fluent_partial_timeout_ms),
                    pending: limits.fluent_partial_pending,
                    max_message: limits.max_message_bytes,
                },
            },
        })
    }
}

impl LimitsConfig {
    fn validate(&self) -> anyhow::Result<LimitSettings> {
        if self.tcp_buffers_total_bytes < self.max_frame_bytes.get() {
            bail!(
                "limits.tcp_buffers_total_bytes: must be at least limits.max_frame_bytes ({})",
                self.max_frame_bytes
            );
        }
        if self.max_message_bytes < 64 {
            bail!("limits.max_message_bytes: must be at least 64");
        }
        if self.container_rate > 0 && self.container_burst == 0 {
            bail!("limits.container_burst: must be at least 1 when limits.container_rate is on");
        }
        Ok(LimitSettings {
            container_rate: (self.container_rate > 0).then(|| RateSettings {
                per_second: f64::from(self.container_rate),
                burst: f64::from(self.container_burst),
                exempt: self.container_rate_exempt.clone(),
            }),
            max_decompressed: self.max_decompressed_bytes.get(),
            max_message: self.max_message_bytes,
            reassembly: ReassemblyLimits {
                timeout_ms: self.gelf_chunk_timeout_ms.get(),
                max_pending_messages: self.gelf_pending_messages.get(),
                max_pending_per_sender: self.gelf_pending_per_sender.get(),
                max_pending_bytes: self.gelf_pending_bytes.get(),
                max_message_bytes: self.gelf_max_message_bytes.get(),
            },
        })
    }
}

impl MetricsConfig {
    fn validate(&self, inputs_allow: &[IpNet]) -> MetricsSettings {
        MetricsSettings {
            listen: self.listen.0,
            allow: if self.allow.is_empty() {
                inputs_allow.to_vec()
            } else {
                values::networks(&self.allow)
            },
            f2b_allow: values::networks(&self.f2b_allow),
            max_connections: self.max_connections.get(),
        }
    }
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
        let Some((transport, target)) = &self.address.0 else {
            return Ok(None);
        };
        if !(64..=8192).contains(&self.chunk_size) {
            bail!(
                "graylog.chunk_size: {} is not between 64 and 8192",
                self.chunk_size
            );
        }
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
            transport: *transport,
            target: target.clone(),
            codec: self.compression.into(),
            chunk_size: self.chunk_size,
            queue_messages: self.queue_messages.get(),
            queue_bytes: self.queue_bytes.get(),
            filter,
            reconnect_max: backoff_ceiling("graylog.reconnect_max_ms", self.reconnect_max_ms)?,
            write_timeout: Duration::from_millis(self.write_timeout_ms.get()),
        }))
    }
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

/// Validated settings the daemon runs with, one part per owner.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Redis writer's (and `tail`'s, `bans`').
    pub redis: RedisSettings,
    /// The disk queue's, when `queue.dir` is set.
    pub queue: Option<QueueSettings>,
    /// The Docker Engine API source's, when `docker.socket` is set.
    pub docker: Option<DockerSettings>,
    /// How the pipeline encodes records.
    pub emit: EmitSettings,
    /// The listeners'.
    pub inputs: InputSettings,
    /// The parsers' bounds.
    pub limits: LimitSettings,
    /// The HTTP endpoint's.
    pub metrics: MetricsSettings,
    /// Forwarding, when configured.
    pub graylog: Option<GraylogSettings>,
    /// Print every routed record on stdout.
    pub console: bool,
    /// `[f2b]`, when enabled.
    pub f2b: Option<F2bSettings>,
    /// The routing rules.
    pub router: Router,
}

/// Where the Docker Engine API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port` over plain HTTP (a socket proxy).
    Tcp(String),
}

impl std::fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerEndpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            DockerEndpoint::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

/// Validated `[docker]`, when `socket` is set.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// The API.
    pub endpoint: DockerEndpoint,
    /// Containers read (empty: all).
    pub include: Vec<crate::router::ContainerGlob>,
    /// Containers not read.
    pub exclude: Vec<crate::router::ContainerGlob>,
    /// Where checkpoints are kept; `None`: none are (start from now).
    pub state_dir: Option<PathBuf>,
    /// Whether the lines go through the disk queue (checkpoints then ride
    /// in it: exactly once across a crash).
    pub durable_queue: bool,
    /// Leave out cowlogd's own container.
    pub exclude_self: bool,
}

/// Validated `[queue]`, when `dir` is set.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// The directory.
    pub dir: PathBuf,
    /// Most bytes on disk.
    pub max_disk_bytes: u64,
    /// Bytes per segment before the next is started.
    pub segment_bytes: u64,
    /// When to sync.
    pub fsync: Fsync,
    /// Between syncs with [`Fsync::Interval`].
    pub fsync_interval: Duration,
}

/// Validated `[redis]`.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The URL (may hold a password: never log it, use [`mask_password`]);
    /// `None` when Redis is off.
    pub url: Option<String>,
    /// Extra CA for `rediss://`.
    pub tls_ca_file: Option<PathBuf>,
    /// Channel name.
    pub channel: String,
    /// Queue capacity in messages.
    pub queue_messages: usize,
    /// Queue capacity in bytes.
    pub queue_bytes: usize,
    /// Most messages per transaction.
    pub batch_max: usize,
    /// Most bytes in one transaction.
    pub batch_max_bytes: usize,
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
}

impl RedisSettings {
    /// The URL with any password masked, or `off`.
    pub fn shown_url(&self) -> String {
        self.url
            .as_deref()
            .map_or_else(|| "off".to_owned(), mask_password)
    }
}

/// Validated `[inputs]`: the listeners and their limits.
#[derive(Debug, Clone)]
pub struct InputSettings {
    /// GELF UDP address.
    pub gelf_udp: Option<std::net::SocketAddr>,
    /// GELF TCP address.
    pub gelf_tcp: Option<std::net::SocketAddr>,
    /// Syslog UDP address.
    pub syslog_udp: Option<std::net::SocketAddr>,
    /// Syslog TCP address.
    pub syslog_tcp: Option<std::net::SocketAddr>,
    /// GELF HTTP address.
    pub gelf_http: Option<std::net::SocketAddr>,
    /// Fluent Forward over TCP.
    pub fluent_tcp: Option<std::net::SocketAddr>,
    /// Allowed sender networks.
    pub allow: Vec<IpNet>,
    /// Zone for timestamps without one.
    pub timezone: jiff::tz::TimeZone,
    /// Who sends on the syslog inputs.
    pub syslog_sender: SyslogSender,
    /// The UDP listeners'.
    pub udp: UdpSettings,
    /// The stream listeners' (TCP, fluent).
    pub tcp: TcpSettings,
    /// The GELF HTTP listener's.
    pub http: HttpSettings,
    /// The fluent listeners'.
    pub fluent: FluentSettings,
}

/// How UDP addresses are read.
#[derive(Debug, Clone, Copy)]
pub struct UdpSettings {
    /// Sockets per address.
    pub sockets: usize,
    /// SO_RCVBUF asked for.
    pub receive_buffer: usize,
}

/// Stream connections: slots, buffers, timeouts.
#[derive(Debug, Clone, Copy)]
pub struct TcpSettings {
    /// Connections open at once, all stream listeners together.
    pub max_connections: usize,
    /// From one address.
    pub max_per_source: usize,
    /// Read buffer bytes beyond each connection's free share.
    pub buffers_total: usize,
    /// Frames and timeouts.
    pub limits: TcpLimits,
}

/// GELF over HTTP.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Connections at once.
    pub max_connections: usize,
    /// Largest body.
    pub max_body: usize,
    /// One message per line.
    pub bulk: bool,
}

/// Fluent Forward.
#[derive(Debug, Clone)]
pub struct FluentSettings {
    /// The unix socket, when on.
    pub unix: Option<PathBuf>,
    /// Its permissions.
    pub unix_mode: u32,
    /// Bounds for lines Docker split.
    pub partial: PartialSettings,
}

/// Validated `[limits]` the parsers take.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Decompression cap.
    pub max_decompressed: usize,
    /// Longest stored message text.
    pub max_message: usize,
    /// Chunk reassembly bounds.
    pub reassembly: ReassemblyLimits,
    /// Per-container rate limits, when on.
    pub container_rate: Option<RateSettings>,
}

/// Validated `[metrics]`.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// The endpoint's address, when on.
    pub listen: Option<std::net::SocketAddr>,
    /// Who may scrape.
    pub allow: Vec<IpNet>,
    /// Who may read `/f2b`.
    pub f2b_allow: Vec<IpNet>,
    /// Connections at once.
    pub max_connections: usize,
}

/// Validated `[f2b]`.
#[derive(Debug, Clone, Copy)]
pub struct F2bSettings {
    /// Between polls of netfilter's keys.
    pub poll_interval: Duration,
    /// Ban networks tracked.
    pub max_offenders: NonZeroUsize,
}

/// What a reload (SIGHUP) applies: the routes and how entries are encoded.
/// Every other key keeps its value from the start until a restart.
pub const RELOADABLE: &[&str] = &[
    "route",
    "redis.list_cap",
    "redis.channel_sanitize",
    "redis.channel_max_bytes",
    "limits.max_message_bytes",
];

/// Appends to `out` the dotted keys under `prefix` where `old` and `new`
/// differ (a whole array counts as one key).
fn changed_keys(prefix: &str, old: &toml::Value, new: &toml::Value, out: &mut Vec<String>) {
    let join = |key: &str| match prefix {
        "" => key.to_owned(),
        _ => format!("{prefix}.{key}"),
    };
    match (old, new) {
        (toml::Value::Table(old), toml::Value::Table(new)) => {
            for (key, value) in old {
                match new.get(key) {
                    Some(other) => changed_keys(&join(key), value, other, out),
                    None => out.push(join(key)),
                }
            }
            for key in new.keys().filter(|key| !old.contains_key(*key)) {
                out.push(join(key));
            }
        }
        _ if old == new => {}
        _ => out.push(prefix.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_the_keys_it_cannot_apply_and_not_the_ones_it_can() {
        let running = Config::parse("[inputs]\ngelf_udp = \"0.0.0.0:12201\"\n").unwrap();
        let new = Config::parse(
            "[inputs]\ngelf_udp = \"0.0.0.0:12202\"\n[redis]\nqueue_messages = 7\n\
             list_cap = 5\nchannel_max_bytes = 100\n\
             [[route]]\nname = \"all\"\ncontainer = []\nkey = \"ALL\"\n",
        )
        .unwrap();
        assert_eq!(
            new.changes_needing_restart(&running),
            ["inputs.gelf_udp", "redis.queue_messages"]
        );
        assert!(running.changes_needing_restart(&running).is_empty());
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config, Config::default());
        let settings = config.validate().unwrap();
        assert_eq!(settings.redis.channel, "F2B_CHANNEL");
        assert_eq!(
            settings.inputs.gelf_udp,
            Some("0.0.0.0:12201".parse().unwrap())
        );
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
                "[inputs]\nsyslog_sender = \"rsyslog\"",
                "inputs.syslog_sender",
            ),
            (
                "[limits]\ncontainer_rate = 10\ncontainer_burst = 0",
                "limits.container_burst",
            ),
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
            ("[redis]\npublish = \"some\"", "redis.publish"),
            ("[redis]\nreconnect_max_ms = 5", "redis.reconnect_max_ms"),
            ("[graylog]\ncompression = \"lz4\"", "graylog.compression"),
            (
                "[inputs]\nfluent_unix_mode = \"rw\"",
                "inputs.fluent_unix_mode",
            ),
            (
                "[limits]\nfluent_partial_pending = 0",
                "limits.fluent_partial_pending",
            ),
        ] {
            // Serde refuses what one value shows; validation what needs more.
            let err = Config::parse(text)
                .and_then(|config| config.validate().map(drop))
                .unwrap_err();
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
    fn a_queue_dir_needs_redis_and_segments_of_at_most_half_the_disk_cap() {
        let error = |text: &str| {
            Config::parse(text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert!(
            error("[queue]\ndir = \"/q\"\nmax_disk_bytes = 1000\nsegment_bytes = 501\n")
                .starts_with("queue.segment_bytes:")
        );
        assert!(
            error("[redis]\nurl = \"\"\n[queue]\ndir = \"/q\"\n").contains("redis.url is empty")
        );
        let settings = Config::parse("[queue]\ndir = \"/q\"\nfsync = \"always\"\n")
            .unwrap()
            .validate()
            .unwrap();
        let queue = settings.queue.unwrap();
        assert_eq!(
            (queue.fsync, queue.max_disk_bytes),
            (Fsync::Always, 1 << 30)
        );
        assert!(Config::default().validate().unwrap().queue.is_none());
        assert!(Config::parse("[queue]\nfsync = \"sometimes\"\n").is_err());
    }

    #[test]
    fn empty_address_turns_an_input_off() {
        let settings = Config::parse("[inputs]\ngelf_tcp = \"\"")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(settings.inputs.gelf_tcp, None);
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
}

//! cowlogd: a log collector appliance for Docker hosts and mailcow.
//!
//! Data flows one way, one module per stage:
//! - [`inputs`]: UDP and TCP listeners; the sender allowlist.
//! - [`pipeline`]: frame → parse → record → route → encoded batch.
//! - [`router`]: which records go to which list and the channel.
//! - [`queue`]: the bounded queue in front of a sink.
//! - [`sinks`]: the Redis writer.
//! - [`metrics`]: every metric and drop reason; [`http`]: `/metrics`.
//! - [`config`]: the TOML file and its validation.
//!
//! Parsing itself lives in the `cowlogd-parsers` crate.

#![forbid(unsafe_code)]

pub mod bans;
pub mod config;
pub mod console;
pub mod f2b;
pub mod http;
pub mod inputs;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod router;
pub mod sinks;
pub mod tail;

pub use cowlogd_parsers as parsers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::gauge;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::metrics::{DropReason, dropped};
use crate::pipeline::{Forwarding, Shared};
use crate::queue::BatchQueue;
use crate::sinks::graylog::GraylogWriter;
use crate::sinks::redis::{RedisHealth, RedisWriter};

/// How long inputs get to hand over what they have read at shutdown.
const INPUT_STOP_GRACE: Duration = Duration::from_secs(2);

/// Runs the daemon until `shutdown` completes, then stops the inputs,
/// flushes the queue to Redis (bounded by `redis.shutdown_flush_ms`) and
/// returns.
///
/// # Errors
/// When a listener cannot be bound or the metrics recorder cannot be
/// installed; runtime problems are counted and logged instead.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let prometheus = metrics::install()?;
    // Capacities next to the depths, so alerts can say "near full".
    gauge!("cowlogd_queue_max_messages").set(settings.queue_messages as f64);
    gauge!("cowlogd_queue_max_bytes").set(settings.queue_bytes as f64);
    let queue = Arc::new(BatchQueue::new(
        settings.queue_messages,
        settings.queue_bytes,
        (
            gauge!("cowlogd_queue_messages"),
            gauge!("cowlogd_queue_bytes"),
        ),
        DropReason::QueueFull,
    ));
    let forward_queue = settings.graylog.as_ref().map(|graylog| {
        Arc::new(BatchQueue::new(
            graylog.queue_messages,
            graylog.queue_bytes,
            (
                gauge!("cowlogd_graylog_queue_messages"),
                gauge!("cowlogd_graylog_queue_bytes"),
            ),
            DropReason::ForwardQueueFull,
        ))
    });
    let forwarding = settings
        .graylog
        .as_ref()
        .zip(forward_queue.clone())
        .map(|(graylog, queue)| Forwarding::new(queue, graylog.filter.clone()));
    let console = if settings.console {
        Some(anyhow::Context::context(
            console::Console::start(console::Console::wants_color()),
            "starting the console printer",
        )?)
    } else {
        None
    };
    let shared = Arc::new(Shared::new(&settings, queue.clone(), forwarding, console));
    let health = Arc::new(RedisHealth::default());
    let stop_inputs = CancellationToken::new();
    let drain = CancellationToken::new();
    let inputs = TaskTracker::new();
    // Bind everything first: a bad address fails the start, not later.
    let udp_inodes = inputs::start(&settings, &shared, &stop_inputs, &inputs).await?;
    let stop_http = CancellationToken::new();
    if let Some(addr) = settings.metrics_listen {
        let listener = http::bind(addr).await?;
        tokio::spawn(http::serve(
            listener,
            prometheus.clone(),
            health.clone(),
            http::Admission {
                allow: inputs::Allowlist::new(settings.metrics_allow.clone()),
                max_connections: settings.metrics_max_connections,
            },
            shared.f2b.clone(),
            stop_http.clone(),
        ));
    }
    if let (Some(f2b), Some(config)) = (shared.f2b.clone(), &settings.f2b)
        && !settings.redis_url.is_empty()
    {
        let client = sinks::redis::client(&settings)?;
        let interval = std::time::Duration::from_secs(config.poll_interval_s);
        tokio::spawn(f2b.poll(client, interval, stop_http.clone()));
    }

    let writer = if settings.redis_url.is_empty() {
        health.set_off();
        None
    } else {
        let writer = RedisWriter::new(&settings, queue.clone(), health.clone())?;
        Some(tokio::spawn(writer.run(drain.clone())))
    };
    let forwarder = settings
        .graylog
        .clone()
        .zip(forward_queue)
        .map(|(graylog, queue)| {
            tokio::spawn(
                GraylogWriter::new(graylog, queue, settings.shutdown_flush).run(drain.clone()),
            )
        });
    let housekeeping = tokio::spawn(housekeeping(
        shared.clone(),
        prometheus,
        udp_inodes,
        stop_http.clone(),
    ));
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        inputs = %bound_inputs(&settings),
        redis = %if settings.redis_url.is_empty() {
            "off".to_owned()
        } else {
            config::mask_password(&settings.redis_url)
        },
        routes = settings.router.routes().len(),
        forwarding = %settings.graylog.as_ref().map_or_else(
            || "off".to_owned(),
            |g| format!("{:?} {}", g.transport, g.target).to_lowercase()
        ),
        metrics = %settings.metrics_listen.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        "cowlogd running"
    );

    shutdown.await;
    tracing::info!("shutting down: closing inputs, flushing the queue to Redis");
    stop_inputs.cancel();
    inputs.close();
    if tokio::time::timeout(INPUT_STOP_GRACE, inputs.wait())
        .await
        .is_err()
    {
        tracing::warn!("some inputs did not stop in time");
    }
    drain.cancel();
    if let Some(writer) = writer
        && let Err(error) = writer.await
    {
        tracing::error!(%error, "Redis writer ended abnormally");
    }
    if let Some(forwarder) = forwarder
        && let Err(error) = forwarder.await
    {
        tracing::error!(%error, "Graylog forwarder ended abnormally");
    }
    stop_http.cancel();
    housekeeping.abort();
    Ok(())
}

/// `gelf_udp=0.0.0.0:12201 syslog_tcp=…`: the inputs that are on.
fn bound_inputs(settings: &Settings) -> String {
    [
        ("gelf_udp", settings.gelf_udp),
        ("gelf_tcp", settings.gelf_tcp),
        ("syslog_udp", settings.syslog_udp),
        ("syslog_tcp", settings.syslog_tcp),
        ("gelf_http", settings.gelf_http),
    ]
    .iter()
    .filter_map(|(name, addr)| addr.map(|a| format!("{name}={a}")))
    .collect::<Vec<_>>()
    .join(" ")
}

/// Once a second: expire chunked GELF messages, count kernel UDP drops,
/// let the exporter do its upkeep.
async fn housekeeping(
    shared: Arc<Shared>,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    udp_inodes: Vec<u64>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut kernel_drops_seen = inputs::udp::kernel_drops(&udp_inodes);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        ticks += 1;
        shared.expire_chunks();
        let kernel_drops = inputs::udp::kernel_drops(&udp_inodes);
        if kernel_drops > kernel_drops_seen {
            let new = kernel_drops - kernel_drops_seen;
            dropped(DropReason::UdpReceiveBuffer, new);
            warn_limited!(
                datagrams = new,
                "the kernel dropped UDP datagrams: receive buffer full"
            );
        }
        kernel_drops_seen = kernel_drops_seen.max(kernel_drops);
        if ticks.is_multiple_of(20) {
            prometheus.run_upkeep();
        }
    }
}

/// Loads settings the way the binary does: the file (or defaults), then
/// `COWLOGD_REDIS_URL`, then validation.
///
/// # Errors
/// As [`config::Config::load`] and [`config::Config::validate`].
pub fn load_settings(path: Option<&std::path::Path>) -> anyhow::Result<(config::Config, Settings)> {
    let mut config = match path {
        Some(path) => config::Config::load(path)?,
        None => config::Config::default(),
    };
    config.apply_env();
    let settings = config.validate()?;
    Ok((config, settings))
}

//! cowlogd: a log collector appliance for Docker hosts and mailcow.
//!
//! Data flows one way, one module per stage (ARCHITECTURE.md has the map):
//! - `inputs`: listeners (UDP, TCP, HTTP, Fluent Forward), their slots
//!   and buffers, and the protocols' own state (GELF chunks, Fluent acks).
//! - `pipeline`: record → route → encoded batches, one read cycle at a
//!   time; `router` decides, `pipeline::emit` encodes.
//! - `batch`: what the pipeline hands the sinks; `queue`: the bounded
//!   queue in front of each sink.
//! - `sinks`: the Redis writer (exactly once) and the Graylog forwarder.
//! - [`f2b`]: netfilter's ban rules, tapped on every published payload.
//! - `metrics`: every metric, declared once; [`http`]: `/metrics`,
//!   `/health`, `/ready`, `/f2b`.
//! - [`config`]: the TOML file and its validation into [`config::Settings`].
//! - [`console`], [`tail`], [`bans`]: what an admin watches.
//!
//! The stages are private to the crate: what is public is what the
//! binary, the tests and an embedding program use. Parsing itself lives in
//! the `cowlogd-parsers` crate. [`Daemon`] runs the whole thing in-process
//! (the binary and the tests both use it).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admission;
pub mod bans;
mod batch;
pub mod config;
pub mod console;
pub mod f2b;
mod health;
pub mod http;
mod http1;
mod inputs;
mod metrics;
mod pipeline;
mod queue;
mod router;
mod sinks;
pub mod tail;

pub use inputs::Bound;

pub use cowlogd_parsers as parsers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::metrics::DropReason;
use crate::pipeline::{Forwarding, Pipeline};
use crate::queue::BatchQueue;
use crate::queue::disk::DiskQueue;
use crate::queue::redis::RedisQueue;
use crate::sinks::graylog::GraylogWriter;
use crate::sinks::redis::{RedisHealth, RedisWriter};
use anyhow::Context as _;

/// How long inputs get to hand over what they have read at shutdown.
const INPUT_STOP_GRACE: Duration = Duration::from_secs(2);
/// How often the exporter does its upkeep.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// A running daemon: listeners bound, writer and forwarder started.
pub struct Daemon {
    bound: inputs::Bound,
    pipeline: Arc<Pipeline>,
    metrics_addr: Option<SocketAddr>,
    stop_inputs: CancellationToken,
    inputs: TaskTracker,
    drain: CancellationToken,
    stop_http: CancellationToken,
    writer: Option<JoinHandle<()>>,
    forwarder: Option<JoinHandle<()>>,
    /// The disk queue's syncs and deletions; it syncs a last time when the
    /// HTTP side stops, after the writer.
    disk_upkeep: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Binds every listener (a bad address fails the start, not later) and
    /// starts every task. The metrics recorder is installed once per
    /// process; a second daemon in the same process shares it.
    ///
    /// # Errors
    /// When a listener cannot be bound or the recorder cannot be installed;
    /// runtime problems are counted and logged instead.
    pub async fn start(settings: Settings) -> anyhow::Result<Daemon> {
        let prometheus = metrics::install()?;
        let redis = &settings.redis;
        // Capacities next to the depths, so alerts can say "near full".
        metrics::QUEUE_MAX_MESSAGES
            .gauge()
            .set(redis.queue_messages as f64);
        metrics::QUEUE_MAX_BYTES
            .gauge()
            .set(redis.queue_bytes as f64);
        let queue = match &settings.queue {
            Some(queue) => RedisQueue::Disk(Arc::new(
                DiskQueue::open(queue).context("opening the disk queue")?,
            )),
            None => RedisQueue::Memory(Arc::new(BatchQueue::new(
                redis.queue_messages,
                redis.queue_bytes,
                (
                    metrics::QUEUE_MESSAGES.gauge(),
                    metrics::QUEUE_BYTES.gauge(),
                ),
                DropReason::QueueFull,
            ))),
        };
        let forward_queue = settings.graylog.as_ref().map(|graylog| {
            Arc::new(BatchQueue::new(
                graylog.queue_messages,
                graylog.queue_bytes,
                (
                    metrics::GRAYLOG_QUEUE_MESSAGES.gauge(),
                    metrics::GRAYLOG_QUEUE_BYTES.gauge(),
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
        let f2b = settings
            .f2b
            .as_ref()
            .map(|f2b| Arc::new(f2b::F2b::new(f2b.max_offenders)));
        let pipeline = Arc::new(
            Pipeline::new(
                settings.router.clone(),
                settings.emit.clone(),
                pipeline::Reading {
                    timezone: settings.inputs.timezone.clone(),
                    syslog_sender: settings.inputs.syslog_sender,
                },
                queue.clone(),
                forwarding,
            )
            .with_console(console)
            .with_f2b(f2b.clone())
            .with_rates(settings.limits.container_rate.as_ref()),
        );
        let health = Arc::new(RedisHealth::default());
        let stop_inputs = CancellationToken::new();
        let inputs = TaskTracker::new();
        let bound = inputs::start(&settings, &pipeline, &stop_inputs, &inputs).await?;
        let docker = match &settings.docker {
            Some(docker) => {
                let source = inputs::docker::DockerSource::new(
                    docker.clone(),
                    pipeline.clone(),
                    settings.limits.max_message,
                )?;
                let health = source.health();
                inputs.spawn(inputs::docker::run(source, stop_inputs.clone()));
                Some(health)
            }
            None => None,
        };
        register_known_series(&settings, &bound);
        let stop_http = CancellationToken::new();
        let mut metrics_addr = None;
        if let Some(addr) = settings.metrics.listen {
            let listener = http::bind(addr).await?;
            metrics_addr = Some(listener.local_addr()?);
            tokio::spawn(http::serve(
                listener,
                prometheus.clone(),
                http::Readiness {
                    redis: health.clone(),
                    docker: docker.clone(),
                },
                http::Admission {
                    allow: admission::Allowlist::new(settings.metrics.allow.clone()),
                    f2b_allow: admission::Allowlist::new(settings.metrics.f2b_allow.clone()),
                    max_connections: settings.metrics.max_connections,
                },
                f2b.clone(),
                stop_http.clone(),
            ));
        }
        if let (Some(f2b), Some(f2b_settings)) = (f2b, &settings.f2b)
            && redis.url.is_some()
        {
            let client = sinks::redis::client(redis)?;
            tokio::spawn(f2b.poll(client, f2b_settings.poll_interval, stop_http.clone()));
        }
        let drain = CancellationToken::new();
        let disk_upkeep = queue
            .disk()
            .map(|disk| tokio::spawn(disk.clone().upkeep(stop_http.clone())));
        let writer = if redis.url.is_some() {
            let writer = RedisWriter::new(redis, queue.clone(), health.clone())?;
            Some(tokio::spawn(writer.run(drain.clone())))
        } else {
            health.set_off();
            None
        };
        let forwarder = settings
            .graylog
            .clone()
            .zip(forward_queue)
            .map(|(graylog, queue)| {
                tokio::spawn(
                    GraylogWriter::new(graylog, queue, redis.shutdown_flush).run(drain.clone()),
                )
            });
        tokio::spawn(metrics_upkeep(prometheus, stop_http.clone()));
        tracing::info!(
            version = %env!("CARGO_PKG_VERSION"),
            inputs = %bound.summary(settings.inputs.fluent.unix.as_deref()),
            docker = %settings.docker.as_ref().map_or_else(
                || "off".to_owned(),
                |d| d.endpoint.to_string()
            ),
            redis = %redis.shown_url(),
            queue = %settings.queue.as_ref().map_or_else(
                || "memory".to_owned(),
                |q| format!("{} (fsync {:?})", q.dir.display(), q.fsync)
            ),
            routes = settings.router.routes().len(),
            timezone = settings.inputs.timezone.iana_name().unwrap_or("UTC"),
            forwarding = %settings.graylog.as_ref().map_or_else(
                || "off".to_owned(),
                |g| format!("{} {}", g.transport, g.target)
            ),
            metrics = %metrics_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            "cowlogd running"
        );
        for result in ["applied", "refused"] {
            metrics::CONFIG_RELOADS
                .counter_with([result.into()])
                .increment(0);
        }
        Ok(Daemon {
            bound,
            pipeline,
            metrics_addr,
            stop_inputs,
            inputs,
            drain,
            stop_http,
            writer,
            forwarder,
            disk_upkeep,
        })
    }

    /// Applies a re-read config (SIGHUP) while every input keeps running:
    /// the routes, list caps, channel encoding and message limit of
    /// `settings` (see [`config::RELOADABLE`]) from each listener's next
    /// read cycle on. `started` is the config the daemon started with:
    /// Graylog's route filter is read from it against the new routes, and
    /// the keys `new` changes that need a restart are returned (they keep
    /// their running values). Nothing queued is touched.
    ///
    /// # Errors
    /// When the Graylog section the daemon runs with names a route the new
    /// config no longer has; nothing is applied then.
    pub fn reload(
        &self,
        started: &config::Config,
        new: &config::Config,
        settings: &Settings,
    ) -> anyhow::Result<Vec<String>> {
        let outcome = started.forward_filter(&settings.router).map(|filter| {
            self.pipeline
                .reload(settings.router.clone(), settings.emit.clone(), filter);
            new.changes_needing_restart(started)
        });
        let result = if outcome.is_ok() {
            "applied"
        } else {
            "refused"
        };
        metrics::CONFIG_RELOADS
            .counter_with([result.into()])
            .increment(1);
        outcome
    }

    /// Counts a reload refused before it reached [`Daemon::reload`] (the
    /// file did not read or validate).
    pub fn count_refused_reload(&self) {
        metrics::CONFIG_RELOADS
            .counter_with(["refused".into()])
            .increment(1);
    }

    /// Where the inputs listen.
    pub fn inputs(&self) -> &inputs::Bound {
        &self.bound
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops the inputs, flushes the queues (bounded by
    /// `redis.shutdown_flush_ms`) and returns.
    pub async fn stop(self) {
        tracing::info!("shutting down: closing inputs, flushing the queue to Redis");
        self.stop_inputs.cancel();
        self.inputs.close();
        if tokio::time::timeout(INPUT_STOP_GRACE, self.inputs.wait())
            .await
            .is_err()
        {
            tracing::warn!("some inputs did not stop in time");
        }
        self.drain.cancel();
        if let Some(writer) = self.writer
            && let Err(error) = writer.await
        {
            tracing::error!(%error, "Redis writer ended abnormally");
        }
        if let Some(forwarder) = self.forwarder
            && let Err(error) = forwarder.await
        {
            tracing::error!(%error, "Graylog forwarder ended abnormally");
        }
        self.stop_http.cancel();
        if let Some(upkeep) = self.disk_upkeep {
            let _ = upkeep.await;
        }
    }
}

/// Runs the daemon until `shutdown` completes, then stops it (see
/// [`Daemon::stop`]).
///
/// # Errors
/// As [`Daemon::start`].
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let daemon = Daemon::start(settings).await?;
    shutdown.await;
    daemon.stop().await;
    Ok(())
}

/// The name of every metric cowlogd exports, as `src/metrics.rs` declares
/// it. A scrape right after start lists each one (the ban rules' series
/// with `[f2b]` on).
pub fn exported_metrics() -> impl Iterator<Item = &'static str> {
    metrics::ALL.iter().map(|metric| metric.name)
}

/// Registers at 0 every series whose labels are known now (see
/// [`metrics::register_known_series`]).
fn register_known_series(settings: &Settings, bound: &inputs::Bound) {
    use crate::admission::slots::Pool;
    use crate::metrics::Input;
    let fluent_unix = settings.inputs.fluent.unix.is_some();
    let mut on: Vec<Input> = bound
        .listening()
        .into_iter()
        .filter_map(|(input, addr)| addr.map(|_| input))
        .collect();
    if fluent_unix {
        on.push(Input::FluentUnix);
    }
    if settings.docker.is_some() {
        on.push(Input::Docker);
    }
    let pools: Vec<(&'static str, &'static [metrics::CloseReason])> = [
        (
            Pool::Tcp,
            bound.gelf_tcp.is_some() || bound.syslog_tcp.is_some() || bound.fluent_tcp.is_some(),
        ),
        (Pool::FluentUnix, fluent_unix),
        (Pool::GelfHttp, bound.gelf_http.is_some()),
        (Pool::Metrics, settings.metrics.listen.is_some()),
    ]
    .into_iter()
    .filter_map(|(pool, is_on)| is_on.then_some((pool.label(), pool.close_reasons())))
    .collect();
    metrics::register_known_series(&metrics::KnownSeries {
        inputs: &on,
        pools: &pools,
        redis_error_kinds: sinks::redis::outcome::ERROR_KINDS,
    });
}

/// Lets the exporter do its upkeep (histogram buckets) until `stop`.
async fn metrics_upkeep(
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => prometheus.run_upkeep(),
            () = stop.cancelled() => return,
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

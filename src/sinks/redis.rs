//! The Redis writer: one task draining the queue into pipelines.
//!
//! An idle writer writes at once; while a write is in flight the queue
//! fills, and the next pipeline takes all of it (up to `batch_max`). Each
//! pipeline holds, per key, one variadic `LPUSH` of that key's entries in
//! arrival order (the newest ends at index 0) and `LTRIM key 0 cap-1`, then
//! one `PUBLISH` per published message. LPUSH and LTRIM are two commands,
//! not a MULTI/EXEC: a reader between them can see the list over its cap
//! for an instant, never after the pipeline.
//!
//! Connection errors and timeouts (a stopped or frozen Redis) keep the batch
//! and retry with back-off; the queue meanwhile drops its oldest messages
//! when full, counted. Errors Redis answers for one command (a key of the
//! wrong type, a read-only replica) are counted for that command and do not
//! hold back the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult, Value};
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, mask_password};
use crate::metrics::{DropReason, dropped};
use crate::pipeline::RedisBatch;
use crate::queue::BatchQueue;

/// First back-off after a failure; doubles up to `reconnect_max`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How often an idle writer checks that Redis answers (for `/ready`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

struct WriterMetrics {
    written: Counter,
    published: Counter,
    reconnects: Counter,
    batch_messages: Histogram,
    write_seconds: Histogram,
    up: Gauge,
}

/// Whether Redis answers and, if not, the last error: what `/ready` says.
#[derive(Debug, Default)]
pub struct RedisHealth {
    up: AtomicBool,
    last_error: Mutex<String>,
}

impl RedisHealth {
    /// Whether the last Redis operation succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// `ready`, or why not (Redis' own error text, which never holds the
    /// password).
    pub fn report(&self) -> String {
        if self.is_up() {
            return "ready\n".into();
        }
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if error.is_empty() {
            "redis not connected yet\n".into()
        } else {
            format!("redis unreachable: {error}\n")
        }
    }

    fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
    }

    fn set_down(&self, error: &RedisError) {
        self.up.store(false, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error.to_string();
    }
}

/// The writer task's state.
pub struct RedisWriter {
    client: Client,
    shown_url: String,
    connection_config: AsyncConnectionConfig,
    connection: Option<MultiplexedConnection>,
    connected_before: bool,
    queue: Arc<BatchQueue<RedisBatch>>,
    channel: String,
    batch_max: usize,
    linger: Duration,
    reconnect_max: Duration,
    shutdown_flush: Duration,
    /// Set when draining starts: the end of the shutdown flush.
    flush_deadline: Option<Instant>,
    health: Arc<RedisHealth>,
    metrics: WriterMetrics,
}

impl RedisWriter {
    /// A writer for `settings`; `health` tells whether Redis answers.
    ///
    /// # Errors
    /// When the URL or the CA file cannot be used.
    pub fn new(
        settings: &Settings,
        queue: Arc<BatchQueue<RedisBatch>>,
        health: Arc<RedisHealth>,
    ) -> anyhow::Result<Self> {
        let shown_url = mask_password(&settings.redis_url);
        let client = match &settings.tls_ca_file {
            Some(path) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                Client::build_with_tls(
                    settings.redis_url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => Client::open(settings.redis_url.as_str()),
        }
        .with_context(|| format!("redis.url {shown_url}"))?;
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout));
        let up = gauge!("cowlogd_redis_up");
        up.set(0.0);
        Ok(RedisWriter {
            client,
            shown_url,
            connection_config,
            connection: None,
            connected_before: false,
            queue,
            channel: settings.channel.clone(),
            batch_max: settings.batch_max,
            linger: settings.linger,
            reconnect_max: settings.reconnect_max,
            shutdown_flush: settings.shutdown_flush,
            flush_deadline: None,
            health,
            metrics: WriterMetrics {
                written: counter!("cowlogd_redis_entries_written_total"),
                published: counter!("cowlogd_redis_published_total"),
                reconnects: counter!("cowlogd_redis_reconnects_total"),
                batch_messages: histogram!("cowlogd_redis_batch_messages"),
                write_seconds: histogram!("cowlogd_redis_write_duration_seconds"),
                up,
            },
        })
    }

    /// Writes until `drain` fires, then flushes what is queued within the
    /// shutdown deadline and returns.
    pub async fn run(mut self, drain: CancellationToken) {
        // Connect early so /ready and the log tell about Redis at start.
        if let Err(error) = self.ensure_connected().await {
            tracing::error!(url = %self.shown_url, error = %error, "Redis not reachable at start; retrying with back-off");
        }
        loop {
            tokio::select! {
                () = self.queue.wait_not_empty() => {}
                () = tokio::time::sleep(HEALTH_INTERVAL) => {
                    self.health_check().await;
                    continue;
                }
                () = drain.cancelled() => break,
            }
            if !self.linger.is_zero() && self.queue.len_messages() < self.batch_max {
                tokio::select! {
                    () = tokio::time::sleep(self.linger) => {}
                    () = drain.cancelled() => {}
                }
            }
            let batches = self.queue.take(self.batch_max);
            if !batches.is_empty() && !self.write(&batches, &drain).await {
                self.drop_at_shutdown(&batches);
                self.queue.close();
                return;
            }
        }
        loop {
            let batches = self.queue.take(self.batch_max);
            if batches.is_empty() {
                break;
            }
            if !self.write(&batches, &drain).await {
                self.drop_at_shutdown(&batches);
                break;
            }
        }
        self.queue.close();
    }

    async fn ensure_connected(&mut self) -> Result<&mut MultiplexedConnection, RedisError> {
        if self.connection.is_none() {
            let connection = self
                .client
                .get_multiplexed_async_connection_with_config(&self.connection_config)
                .await?;
            if self.connected_before {
                self.metrics.reconnects.increment(1);
            }
            self.connected_before = true;
            tracing::info!(url = %self.shown_url, "connected to Redis");
            self.connection = Some(connection);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| RedisError::from(std::io::Error::other("no connection")))
    }

    /// PINGs Redis (connecting if needed) so `/ready` tells the truth while
    /// no messages flow.
    async fn health_check(&mut self) {
        let result = match self.ensure_connected().await {
            Ok(connection) => redis::cmd("PING").query_async::<()>(connection).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => self.set_up(),
            Err(error) => {
                self.connection = None;
                self.set_down(&error);
                count_error(&error);
                crate::warn_limited!(url = %self.shown_url, %error, "Redis does not answer");
            }
        }
    }

    fn set_up(&self) {
        self.health.set_up();
        self.metrics.up.set(1.0);
    }

    fn set_down(&self, error: &RedisError) {
        self.health.set_down(error);
        self.metrics.up.set(0.0);
    }

    /// Counts and logs what Redis did not take before the flush deadline:
    /// `batches` and everything still queued.
    fn drop_at_shutdown(&self, batches: &[RedisBatch]) {
        let left = batches.iter().map(|b| b.ops.len()).sum::<usize>() + self.queue.len_messages();
        self.queue.take(usize::MAX);
        dropped(DropReason::Shutdown, left as u64);
        tracing::warn!(
            messages = left,
            "shutdown: Redis did not take the queued messages in time; dropped"
        );
    }

    /// Writes `batches`, retrying connection failures; `false` if draining
    /// and the flush deadline passed first.
    async fn write(&mut self, batches: &[RedisBatch], drain: &CancellationToken) -> bool {
        let plan = Plan::new(batches, &self.channel);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let result = match self.ensure_connected().await {
                Ok(connection) => {
                    plan.pipeline
                        .query_async::<Vec<RedisResult<Value>>>(connection)
                        .await
                }
                Err(error) => Err(error),
            };
            match result {
                Ok(replies) => {
                    self.metrics
                        .write_seconds
                        .record(started.elapsed().as_secs_f64());
                    self.metrics.batch_messages.record(plan.messages as f64);
                    self.account(&plan, &replies);
                    self.set_up();
                    return true;
                }
                Err(error) => {
                    self.connection = None;
                    self.set_down(&error);
                    count_error(&error);
                    crate::warn_limited!(url = %self.shown_url, %error, "Redis write failed; will reconnect and retry the batch");
                }
            }
            // Once draining, every retry runs against the one flush deadline.
            let deadline = drain.is_cancelled().then(|| {
                *self
                    .flush_deadline
                    .get_or_insert_with(|| Instant::now() + self.shutdown_flush)
            });
            let wake = Instant::now() + backoff;
            if deadline.is_some_and(|d| wake > d) {
                return false;
            }
            // While draining, wait out the back-off even though `drain` fired.
            if deadline.is_some() {
                tokio::time::sleep(backoff).await;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = drain.cancelled() => {}
                }
            }
            backoff = (backoff * 2).min(self.reconnect_max);
        }
    }

    /// Counts what the replies say was written, published or refused.
    fn account(&self, plan: &Plan, replies: &[RedisResult<Value>]) {
        for (reply, step) in replies.iter().zip(&plan.steps) {
            match (reply, step) {
                (Ok(_), Step::Push(n)) => self.metrics.written.increment(*n as u64),
                (Ok(_), Step::Publish) => self.metrics.published.increment(1),
                (Ok(_), Step::Trim) => {}
                (Err(error), step) => {
                    count_error(error);
                    let lost = match step {
                        Step::Push(n) => *n,
                        Step::Publish => 1,
                        Step::Trim => 0,
                    };
                    if lost > 0 {
                        dropped(DropReason::RedisRejected, lost as u64);
                    }
                    crate::warn_limited!(%error, "Redis refused a command; other keys are unaffected");
                }
            }
        }
    }
}

fn count_error(error: &RedisError) {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connection_refusal() {
        "connection_refused"
    } else if error.is_io_error() || error.is_connection_dropped() {
        "io"
    } else {
        match error.code() {
            Some("WRONGTYPE") => "wrongtype",
            Some("READONLY") => "readonly",
            Some("NOAUTH" | "WRONGPASS") => "auth",
            Some("OOM") => "oom",
            Some(_) => "other_reply",
            None => match error.kind() {
                redis::ErrorKind::AuthenticationFailed => "auth",
                _ => "other",
            },
        }
    };
    counter!("cowlogd_redis_errors_total", "kind" => kind).increment(1);
}

/// What each command of the pipeline stands for, for accounting.
enum Step {
    Push(usize),
    Trim,
    Publish,
}

/// A list key, its cap, and its entries in arrival order.
type KeyEntries<'a> = (&'a [u8], usize, Vec<&'a [u8]>);

struct Plan {
    pipeline: redis::Pipeline,
    steps: Vec<Step>,
    messages: usize,
}

impl Plan {
    fn new(batches: &[RedisBatch], channel: &str) -> Plan {
        // Keys in order of first appearance, each with its entries in order.
        let mut keys: Vec<KeyEntries<'_>> = Vec::new();
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut messages = 0;
        for batch in batches {
            for op in &batch.ops {
                messages += 1;
                let key = batch.slice(&op.key);
                let slot = *index.entry(key).or_insert_with(|| {
                    keys.push((key, op.list_cap, Vec::new()));
                    keys.len() - 1
                });
                keys[slot].2.push(batch.slice(&op.entry));
            }
        }
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        let mut steps = Vec::with_capacity(keys.len() * 2 + messages);
        for (key, cap, entries) in &keys {
            pipeline.cmd("LPUSH").arg(*key).arg(entries.as_slice());
            steps.push(Step::Push(entries.len()));
            pipeline
                .cmd("LTRIM")
                .arg(*key)
                .arg(0)
                .arg(cap.saturating_sub(1));
            steps.push(Step::Trim);
        }
        for batch in batches {
            for range in batch.ops.iter().filter_map(|op| op.publish.as_ref()) {
                pipeline.cmd("PUBLISH").arg(channel).arg(batch.slice(range));
                steps.push(Step::Publish);
            }
        }
        Plan {
            pipeline,
            steps,
            messages,
        }
    }
}

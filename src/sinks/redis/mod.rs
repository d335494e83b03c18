//! The Redis writer: one task draining the queue into transactions,
//! exactly once.
//!
//! An idle writer writes at once; while a write is in flight the queue
//! fills, and the next write takes all of it (up to `redis.batch_max`
//! messages and `redis.batch_max_bytes`). Each write is one `MULTI … EXEC`
//! ([`plan`]): `SET` of this writer's marker to the last sequence number in
//! it, per key one variadic `LPUSH` and its `LTRIM`, then one `PUBLISH` per
//! published message.
//!
//! Exactly once. A reply that never came (timeout, broken connection) does
//! not mean the transaction did not run: it may still be in Redis' socket
//! buffer. Before a retry the writer fences the old connections and reads
//! the marker ([`session`]): `EXEC` is all or nothing, so the marker then
//! says for certain whether the window was applied. Chosen over a Lua
//! script by measurement (BENCHMARKS.md): at 2,000-message batches the
//! script costs Redis ~0.9 µs more per message than plain commands, the
//! transaction ~0.1 µs; the fence costs one extra round trip, on retries
//! only.
//!
//! The steps of one write are separate pieces: plan a window ([`plan`]),
//! execute it (`RedisWriter::attempt`), classify and account the replies
//! ([`outcome::judge`]), decide the retry (back-off, split, give up). Every
//! wait and every attempt is bounded by the shutdown deadline once draining
//! starts.

pub mod outcome;
pub mod plan;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram};
use anyhow::Context;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult, Value};
use tokio::time::Instant;

use crate::batch::Applied;
use tokio_util::sync::CancellationToken;

use self::outcome::{Attempt, Decision, Tally, error_label, judge};
use self::plan::{Exclusions, Marker, Pending, Plan};
use self::session::{Connector, Fence, FenceError, Session};
use crate::config::{RedisSettings, mask_password};
use crate::health::Health;
use crate::metrics::{self, DropReason, dropped};
use crate::queue::redis::{RedisQueue, Taken};

/// First back-off after a failure; it doubles up to the ceiling.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// While messages wait, attempts are never further apart than this, so
/// writing resumes within a second of Redis answering again.
const MAX_BACKOFF_WITH_WORK: Duration = Duration::from_secs(1);
/// How often an idle writer checks that Redis takes writes (for `/ready`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a window refused with `OOM` is retried before it is dropped.
const OOM_PATIENCE: Duration = Duration::from_secs(30);
/// Consecutive timeouts of one window before it is split in half.
const TIMEOUTS_BEFORE_SPLIT: u32 = 2;
/// How long the marker outlives the writer's last write.
const MARKER_TTL_S: u64 = 24 * 3600;
/// The same with a disk queue, whose writer identity outlives the
/// process: long enough for a host that was down for weeks to replay
/// without writing twice.
const DURABLE_MARKER_TTL_S: u64 = 30 * 24 * 3600;

struct WriterMetrics {
    written: Counter,
    published: Counter,
    reconnects: Counter,
    splits: Counter,
    batch_messages: Histogram,
    write_seconds: Histogram,
    up: Gauge,
}

/// Whether the last write was applied and, if not, why: what `/ready` says.
#[derive(Debug, Default)]
pub struct RedisHealth {
    health: Health,
    off: AtomicBool,
}

impl RedisHealth {
    /// Whether the last write (or, when idle, the write probe) was applied.
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    /// Redis is turned off (`redis.url = ""`): always ready.
    pub fn set_off(&self) {
        self.off.store(true, Ordering::Relaxed);
        self.health.set_up();
    }

    /// `ready`, or why not (Redis' own error text, which never holds the
    /// password).
    pub fn report(&self) -> String {
        if self.off.load(Ordering::Relaxed) {
            return "ready (redis off)\n".into();
        }
        if self.is_up() {
            return "ready\n".into();
        }
        let error = self.health.last_error();
        if error.is_empty() {
            "redis not connected yet\n".into()
        } else {
            format!("redis not writable: {error}\n")
        }
    }

    fn set_up(&self) {
        self.health.set_up();
    }

    fn set_down(&self, error: String) {
        self.health.set_down(error);
    }
}

/// Doubling back-off with a ceiling.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    ceiling: Duration,
}

impl Backoff {
    fn new(ceiling: Duration) -> Backoff {
        Backoff {
            next: FIRST_BACKOFF,
            ceiling: ceiling.clamp(FIRST_BACKOFF, MAX_BACKOFF_WITH_WORK),
        }
    }

    /// The wait before the next attempt.
    fn step(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.ceiling);
        wait
    }
}

/// When the shutdown flush must end: unset until draining starts.
struct FlushDeadline {
    drain: CancellationToken,
    flush: Duration,
    at: Option<Instant>,
}

impl FlushDeadline {
    /// The deadline, fixed the first time it is asked for after draining
    /// started.
    fn get(&mut self) -> Option<Instant> {
        if self.at.is_none() && self.drain.is_cancelled() {
            self.at = Some(Instant::now() + self.flush);
        }
        self.at
    }

    /// Runs `work` to its end, or until the deadline: also one that is set
    /// while `work` runs. `None` when the deadline came first.
    async fn bound<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        if self.get().is_none() {
            tokio::select! {
                output = &mut work => return Some(output),
                () = self.drain.cancelled() => {}
            }
        }
        let deadline = self.get()?;
        tokio::time::timeout_at(deadline, work).await.ok()
    }

    /// Sleeps `wait`, or until draining starts (when not draining yet);
    /// `false` if the deadline comes first.
    async fn sleep(&mut self, wait: Duration) -> bool {
        let wake = Instant::now() + wait;
        if self.get().is_none() {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => return true,
                () = self.drain.cancelled() => {}
            }
        }
        match self.get() {
            Some(deadline) if wake > deadline => false,
            _ => {
                tokio::time::sleep_until(wake).await;
                true
            }
        }
    }
}

/// A client for `redis.url`, trusting `redis.tls_ca_file` when set (else
/// the system's certificate store).
///
/// # Errors
/// When the URL or the CA file cannot be used.
pub fn client(settings: &RedisSettings) -> anyhow::Result<Client> {
    let Some(url) = settings.url.as_deref() else {
        anyhow::bail!("redis.url is empty: Redis is off");
    };
    let shown_url = mask_password(url);
    match &settings.tls_ca_file {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
        None => Client::open(url),
    }
    .with_context(|| format!("redis.url {shown_url}"))
}

/// The writer task's state.
pub struct RedisWriter {
    connector: Connector,
    shown_url: String,
    session: Option<Session>,
    connected_before: bool,
    fence: Fence,
    marker: Marker,
    next_seq: u64,
    /// The highest sequence number Redis is known to have applied, from
    /// the marker: a lost transaction may have covered more than the
    /// window being retried when it is found.
    applied_through: u64,
    /// With a disk queue: the last sequence number applied before this
    /// process started (the marker's value at start, or the directory's
    /// floor). Replayed messages up to it are passed over, not counted.
    replayed_through: u64,
    queue: RedisQueue,
    channel: String,
    batch_max: usize,
    batch_max_bytes: usize,
    /// Most messages in the next window: `batch_max`, less after splits.
    window_budget: usize,
    response_timeout: Duration,
    linger: Duration,
    reconnect_max: Duration,
    shutdown_flush: Duration,
    /// Messages of the transaction sent and not answered (0 once its
    /// outcome is known): at the flush deadline, these may be applied.
    in_doubt: usize,
    /// This process wrote the marker: finding it gone means it was
    /// evicted or deleted.
    marker_written: bool,
    health: Arc<RedisHealth>,
    metrics: WriterMetrics,
}

impl RedisWriter {
    /// A writer for `settings`; `health` tells whether Redis takes writes.
    ///
    /// # Errors
    /// When the URL or the CA file cannot be used.
    pub fn new(
        settings: &RedisSettings,
        queue: RedisQueue,
        health: Arc<RedisHealth>,
    ) -> anyhow::Result<Self> {
        let shown_url = settings.shown_url();
        let client = client(settings)?;
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout));
        let up = metrics::REDIS_UP.gauge();
        up.set(0.0);
        Ok(RedisWriter {
            connector: Connector::new(client, connection_config),
            shown_url,
            session: None,
            connected_before: false,
            fence: Fence::default(),
            in_doubt: 0,
            marker_written: false,
            marker: match queue.disk() {
                Some(disk) => Marker {
                    key: format!("cowlogd:applied:{}", disk.writer_id()),
                    ttl_s: DURABLE_MARKER_TTL_S,
                },
                None => Marker {
                    key: format!("cowlogd:applied:{:016x}", super::random_id()),
                    ttl_s: MARKER_TTL_S,
                },
            },
            next_seq: 1,
            applied_through: 0,
            replayed_through: queue.disk().map_or(0, |disk| disk.applied_floor()),
            queue,
            channel: settings.channel.clone(),
            batch_max: settings.batch_max,
            window_budget: settings.batch_max,
            response_timeout: settings.response_timeout,
            batch_max_bytes: settings.batch_max_bytes,
            linger: settings.linger,
            reconnect_max: settings.reconnect_max,
            shutdown_flush: settings.shutdown_flush,
            health,
            metrics: WriterMetrics {
                written: metrics::REDIS_ENTRIES_WRITTEN.counter(),
                published: metrics::REDIS_PUBLISHED.counter(),
                reconnects: metrics::REDIS_RECONNECTS.counter(),
                splits: metrics::REDIS_WINDOW_SPLITS.counter(),
                batch_messages: metrics::REDIS_BATCH_MESSAGES.histogram(),
                write_seconds: metrics::REDIS_WRITE_DURATION.histogram(),
                up,
            },
        })
    }

    /// Writes until `drain` fires, then flushes what is queued within the
    /// shutdown deadline and returns.
    pub async fn run(mut self, drain: CancellationToken) {
        let mut deadline = FlushDeadline {
            drain: drain.clone(),
            flush: self.shutdown_flush,
            at: None,
        };
        // Connect early so /ready and the log tell about Redis at start.
        // Shut down before Redis ever answered: what is queued is reported
        // (kept on disk, or counted dropped) as after any other write.
        if deadline.bound(self.probe()).await.is_none()
            || !self.read_marker_at_start(&mut deadline).await
        {
            self.drop_at_shutdown(0);
            self.queue.close();
            return;
        }
        loop {
            let draining = drain.is_cancelled();
            if !draining {
                tokio::select! {
                    () = self.queue.wait_not_empty() => {}
                    () = tokio::time::sleep(HEALTH_INTERVAL) => {
                        deadline.bound(self.probe()).await;
                        continue;
                    }
                    () = drain.cancelled() => continue,
                }
                if !self.linger.is_zero() && self.queue.len_messages() < self.batch_max {
                    tokio::select! {
                        () = tokio::time::sleep(self.linger) => {}
                        () = drain.cancelled() => {}
                    }
                }
            }
            let Some(Taken { batches, first_seq }) =
                self.queue.take(self.batch_max, self.batch_max_bytes)
            else {
                if draining {
                    break;
                }
                continue;
            };
            let mut pending = Pending::new(batches, first_seq.unwrap_or(self.next_seq));
            self.next_seq = pending.next_seq();
            if !self.write(&mut pending, &mut deadline).await {
                self.drop_at_shutdown(pending.remaining());
                break;
            }
            self.queue.applied(pending.next_seq() - 1);
            pending.take_applied().for_each(Applied::tell);
        }
        self.queue.close();
    }

    /// Writes every pending message, window by window; `false` if the
    /// flush deadline passed first.
    async fn write(&mut self, pending: &mut Pending, deadline: &mut FlushDeadline) -> bool {
        let mut exclusions = Exclusions::default();
        let mut backoff = Backoff::new(self.reconnect_max);
        let mut timeouts = 0;
        let mut oom_since: Option<Instant> = None;
        while let Some(window) = pending.window(self.window_budget, self.batch_max_bytes) {
            // Replayed from disk and applied before this process started:
            // passed over (the process that wrote it counted it).
            if let Some(before) =
                pending.window_through(usize::MAX, usize::MAX, self.replayed_through)
            {
                pending.advance(&before);
                continue;
            }
            // What a lost transaction turned out to have applied (it may
            // reach past the window it was found in) is counted, not sent.
            if let Some(applied) =
                pending.window_through(usize::MAX, usize::MAX, self.applied_through)
            {
                let plan = Plan::new(pending, &applied, &exclusions, &self.channel, &self.marker);
                let (_, tally) = judge(&plan, &Attempt::AppliedBefore, &mut exclusions);
                self.record(&tally);
                pending.advance(&applied);
                continue;
            }
            let plan = Plan::new(pending, &window, &exclusions, &self.channel, &self.marker);
            let started = Instant::now();
            let Some(attempt) = deadline.bound(self.attempt(&plan)).await else {
                return false;
            };
            let (mut decision, tally) = judge(&plan, &attempt, &mut exclusions);
            self.record(&tally);
            if let Decision::RetryLater {
                timed_out,
                out_of_memory,
            } = decision
            {
                let oom_for = if out_of_memory {
                    oom_since.get_or_insert(started).elapsed()
                } else {
                    oom_since = None;
                    Duration::ZERO
                };
                if oom_for >= OOM_PATIENCE {
                    let lost = (plan.messages - plan.excluded) as u64;
                    dropped(DropReason::RedisRejected, lost);
                    tracing::error!(
                        messages = lost,
                        "Redis out of memory for {OOM_PATIENCE:?}: dropped the messages it refused"
                    );
                    decision = Decision::Done;
                } else if timed_out {
                    timeouts += 1;
                    if timeouts >= TIMEOUTS_BEFORE_SPLIT && window.messages > 1 {
                        self.window_budget = window.messages.div_ceil(2);
                        timeouts = 0;
                        self.metrics.splits.increment(1);
                        crate::warn_limited!(
                            messages = self.window_budget,
                            "Redis keeps timing out on a write: splitting it"
                        );
                    }
                }
            }
            match decision {
                Decision::Done => {
                    if plan.excluded > 0 {
                        dropped(DropReason::RedisRejected, plan.excluded as u64);
                    }
                    self.metrics
                        .write_seconds
                        .record(started.elapsed().as_secs_f64());
                    self.metrics.batch_messages.record(window.messages as f64);
                    pending.advance(&window);
                    // Grow back after a split only with clear headroom: a
                    // write near the timeout would only time out again.
                    if started.elapsed() < self.response_timeout / 4 {
                        self.window_budget = (self.window_budget * 2).min(self.batch_max);
                    }
                    timeouts = 0;
                    oom_since = None;
                    backoff = Backoff::new(self.reconnect_max);
                }
                Decision::RetryNow => {}
                Decision::RetryLater { .. } => {
                    if !deadline.sleep(backoff.step()).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// One attempt at `plan`: connect if needed, fence and read the marker
    /// if an earlier attempt's outcome is unknown, then run the transaction.
    async fn attempt(&mut self, plan: &Plan<'_>) -> Attempt {
        let mut session = match self.session.take() {
            Some(session) => session,
            None => match self.connect().await {
                Ok(session) => session,
                Err(error) => return Attempt::Lost(error),
            },
        };
        let attempt = self.attempt_on(&mut session, plan).await;
        // A connection that lost a reply is not used again: it is fenced.
        if !matches!(attempt, Attempt::Lost(_)) {
            self.session = Some(session);
        }
        attempt
    }

    async fn attempt_on(&mut self, session: &mut Session, plan: &Plan<'_>) -> Attempt {
        if self.fence.is_unresolved() {
            match self.fence.resolve(session, &self.marker.key).await {
                Ok(applied) => {
                    self.in_doubt = 0;
                    if applied == 0 && self.marker_written {
                        self.count_lost_marker();
                    }
                    self.applied_through = self.applied_through.max(applied);
                    if applied >= plan.last_seq {
                        return Attempt::AppliedBefore;
                    }
                    if applied >= plan.first_seq {
                        return Attempt::Replan;
                    }
                }
                Err(FenceError::Refused(error)) => return Attempt::Unavailable(error),
                Err(FenceError::Lost(error)) => return Attempt::Lost(error),
                Err(FenceError::Unreadable(what)) => {
                    // Retried after the back-off: writing again could
                    // apply it twice.
                    self.count_unreadable_marker(&what);
                    return Attempt::Lost(redis::RedisError::from(std::io::Error::other(
                        "marker unreadable",
                    )));
                }
            }
        }
        self.fence.sending(session);
        self.in_doubt = plan.messages;
        let result = plan
            .pipeline
            .query_async::<Vec<RedisResult<Value>>>(&mut session.connection)
            .await;
        match result {
            Ok(replies) => {
                self.fence.answered(session);
                self.in_doubt = 0;
                self.marker_written = true;
                Attempt::Applied(replies)
            }
            Err(error) if error.code().is_some() => {
                // Redis answered: EXECABORT lists the refused commands;
                // any other error refused the transaction whole.
                self.fence.answered(session);
                self.in_doubt = 0;
                let aborted =
                    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort);
                match error.into_server_errors() {
                    Some(errors) if aborted => Attempt::Refused(errors.to_vec()),
                    Some(errors) => match errors.first() {
                        Some((_, error)) => Attempt::Unavailable(error.clone()),
                        None => Attempt::Refused(Vec::new()),
                    },
                    None => Attempt::Refused(Vec::new()),
                }
            }
            Err(error) => Attempt::Lost(error),
        }
    }

    /// With a disk queue (else at once `true`), before anything is
    /// written: how far Redis got
    /// with this queue's messages (the marker under the directory's writer
    /// identity), retried until Redis answers; `false` if the flush
    /// deadline passed first. A marker ahead of everything on disk means
    /// the directory lost segments: it is not trusted then (nothing new
    /// may be passed over for it).
    async fn read_marker_at_start(&mut self, deadline: &mut FlushDeadline) -> bool {
        let mut backoff = Backoff::new(self.reconnect_max);
        let Some(disk) = self.queue.disk().cloned() else {
            return true;
        };
        let appended_at_start = disk.next_seq_at_open();
        loop {
            let read = deadline
                .bound(async {
                    let mut session = match self.session.take() {
                        Some(session) => session,
                        None => self.connect().await.map_err(FenceError::Lost)?,
                    };
                    let applied = self.fence.resolve(&mut session, &self.marker.key).await;
                    if applied.is_ok() {
                        self.session = Some(session);
                    }
                    applied
                })
                .await;
            let error = match read {
                None => return false,
                Some(Ok(applied)) if applied >= appended_at_start => {
                    tracing::warn!(key = %self.marker.key, applied, appended_at_start, "the writer's marker is ahead of the queue directory (segments removed?); replaying without it");
                    return true;
                }
                Some(Ok(applied)) => {
                    self.replayed_through = self.replayed_through.max(applied);
                    if disk.replayed() > 0 {
                        tracing::info!(
                            applied_through = applied,
                            "replay: Redis applied the queue's messages through this sequence number before the restart"
                        );
                    }
                    return true;
                }
                Some(Err(FenceError::Lost(error))) => error.to_string(),
                Some(Err(FenceError::Refused(error))) => error.to_string(),
                Some(Err(FenceError::Unreadable(what))) => {
                    self.count_unreadable_marker(&what);
                    what
                }
            };
            self.set_down(error.clone());
            crate::warn_limited!(url = %self.shown_url, %error, "cannot read the writer's marker yet; the disk queue waits");
            if !deadline.sleep(backoff.step()).await {
                return false;
            }
        }
    }

    /// The marker holds something that is not a sequence number: counted
    /// (kind `marker_unreadable`) and logged; nothing is written until it
    /// reads again.
    fn count_unreadable_marker(&self, what: &str) {
        metrics::REDIS_ERRORS
            .counter_with(["marker_unreadable".into()])
            .increment(1);
        crate::warn_limited!(key = %self.marker.key, %what, "the writer's marker is not a sequence number; not writing until it is");
    }

    async fn connect(&mut self) -> Result<Session, RedisError> {
        let mut session = self.connector.connect().await?;
        if self.connected_before {
            self.metrics.reconnects.increment(1);
        }
        self.connected_before = true;
        tracing::info!(url = %self.shown_url, "connected to Redis");
        self.check_eviction_policy(&mut session).await;
        Ok(session)
    }

    /// Whether Redis may evict the marker: under `allkeys-*` any key, under
    /// `volatile-*` keys with a TTL, which the marker has. cowlogd keeps
    /// the TTL (abandoned writers' markers must expire) and says so: the
    /// gauge, a warning, and `cowlogd_redis_marker_lost_total` when it is
    /// found gone. A server that refuses `CONFIG GET` is not judged.
    async fn check_eviction_policy(&mut self, session: &mut Session) {
        let policy: RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut session.connection)
            .await;
        let Ok(reply) = policy else {
            tracing::debug!(
                "CONFIG GET maxmemory-policy refused; eviction of the marker not judged"
            );
            return;
        };
        let Some(policy) = reply.get(1) else { return };
        let evictable = policy.starts_with("allkeys-") || policy.starts_with("volatile-");
        metrics::REDIS_MARKER_EVICTABLE
            .gauge()
            .set(if evictable { 1.0 } else { 0.0 });
        if evictable {
            crate::warn_limited!(policy = %policy, key = %self.marker.key, "Redis may evict the writer's marker under this maxmemory-policy: a retry after a lost reply could then write a window twice (use noeviction, or give Redis room)");
        }
    }

    /// The marker this process wrote is gone: a retry may write twice.
    fn count_lost_marker(&self) {
        metrics::REDIS_MARKER_LOST.counter().increment(1);
        crate::warn_limited!(key = %self.marker.key, "the writer's marker is gone although this process wrote it (evicted or deleted): the window is written again and may be twice in Redis");
    }

    /// While idle: a write Redis must accept (`EXPIRE` on the marker, which
    /// also keeps it alive), so `/ready` says whether writes are applied —
    /// a read-only replica answers PING but refuses this.
    async fn probe(&mut self) {
        let marker = self.marker.key.clone();
        let ttl = self.marker.ttl_s;
        let session = match self.session.take() {
            Some(session) => Ok(session),
            None => self.connect().await,
        };
        let result = match session {
            Ok(mut session) => {
                let result = redis::cmd("EXPIRE")
                    .arg(&marker)
                    .arg(ttl)
                    .query_async::<i64>(&mut session.connection)
                    .await;
                if result.as_ref().err().is_none_or(|e| e.code().is_some()) {
                    self.session = Some(session);
                }
                result
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(_) => self.set_up(),
            Err(error) => {
                let mut tally = Tally::default();
                tally.errors.push(error_label(&error));
                tally.first_error = Some(error.to_string());
                self.record(&tally);
            }
        }
    }

    /// Applies an attempt's counts to the metrics, health and log.
    fn record(&self, tally: &Tally) {
        self.metrics.written.increment(tally.written);
        self.metrics.published.increment(tally.published);
        for kind in &tally.errors {
            metrics::REDIS_ERRORS
                .counter_with([(*kind).into()])
                .increment(1);
        }
        if tally.rejected > 0 {
            dropped(DropReason::RedisRejected, tally.rejected);
        }
        match &tally.first_error {
            None => self.set_up(),
            Some(error) if tally.applied => {
                // Applied, with some commands refused: still writable.
                self.set_up();
                crate::warn_limited!(%error, "Redis refused a command; other keys are unaffected");
            }
            Some(error) => {
                self.set_down(error.clone());
                crate::warn_limited!(url = %self.shown_url, %error, "Redis did not apply the write; will retry");
            }
        }
    }

    fn set_up(&self) {
        self.health.set_up();
        self.metrics.up.set(1.0);
    }

    fn set_down(&self, error: String) {
        self.health.set_down(error);
        self.metrics.up.set(0.0);
    }

    /// Counts and logs what Redis did not take before the flush deadline:
    /// `unwritten` taken messages and everything still queued. On disk
    /// nothing is lost: it is written at the next start.
    fn drop_at_shutdown(&self, unwritten: usize) {
        if let Some(disk) = self.queue.disk() {
            let kept = unwritten + disk.len_messages();
            if kept == 0 {
                return;
            }
            tracing::warn!(
                messages = kept,
                "shutdown: Redis did not take the queued messages in time; they stay in the disk queue for the next start"
            );
            return;
        }
        // A transaction sent and not answered may still be applied: its
        // messages are not counted lost.
        let unknown = if self.fence.is_unresolved() {
            self.in_doubt.min(unwritten)
        } else {
            0
        };
        if unknown > 0 {
            metrics::REDIS_OUTCOME_UNKNOWN
                .counter()
                .increment(unknown as u64);
            tracing::warn!(
                messages = unknown,
                "shutdown: a transaction was sent and not answered by the deadline; Redis may have applied it (counted as outcome unknown, not dropped)"
            );
        }
        let left = unwritten - unknown + self.queue.discard();
        if unwritten == 0 && left == 0 {
            // Nothing was waiting (a shutdown before any write).
            return;
        }
        dropped(DropReason::Shutdown, left as u64);
        tracing::warn!(
            messages = left,
            "shutdown: Redis did not take the queued messages in time; dropped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_never_waits_more_than_a_second_while_work_waits() {
        let mut backoff = Backoff::new(Duration::from_secs(30));
        let waits: Vec<u128> = (0..8).map(|_| backoff.step().as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        let mut low = Backoff::new(Duration::from_millis(120));
        let waits: Vec<u128> = (0..3).map(|_| low.step().as_millis()).collect();
        assert_eq!(waits, [50, 100, 120]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_flush_deadline_bounds_work_that_started_before_draining() {
        let drain = CancellationToken::new();
        let mut deadline = FlushDeadline {
            drain: drain.clone(),
            flush: Duration::from_secs(5),
            at: None,
        };
        let started = Instant::now();
        let cancel = drain.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        });
        // Work that would take an hour ends 5 s after draining began.
        let out = deadline
            .bound(tokio::time::sleep(Duration::from_secs(3600)))
            .await;
        assert!(out.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(6));
        // A back-off past the deadline is refused at once.
        assert!(!deadline.sleep(Duration::from_secs(1)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn before_draining_work_runs_to_its_end() {
        let mut deadline = FlushDeadline {
            drain: CancellationToken::new(),
            flush: Duration::from_secs(5),
            at: None,
        };
        let out = deadline
            .bound(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                7
            })
            .await;
        assert_eq!(out, Some(7));
        assert!(deadline.sleep(Duration::from_millis(10)).await);
    }
}

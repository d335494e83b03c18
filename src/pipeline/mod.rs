//! The middle of the flow: record → route → encoded batches → queues.
//!
//! [`Pipeline`] is what every listener task shares: the router, how records
//! are encoded ([`emit`]), the queues, the console and the ban engine.
//! Each listener task owns a [`Processor`]: its own clock, batches and ban
//! tap, so handling a record takes no lock and no allocation beyond what
//! encoding needs. Protocol state (GELF chunks and decompression, Fluent
//! acks and split lines) belongs to the inputs, which hand this module
//! whole [`Record`]s.
//!
//! A read cycle is a value: [`Processor::begin`] returns a [`ReadCycle`],
//! records go into it, and it ends once, by [`ReadCycle::finish`] with
//! one [`Flush`] policy (or [`ReadCycle::seal`] when the batches must
//! leave a lock first). A cycle dropped unfinished queues what it holds
//! without waiting, so no record is lost to a forgotten step.

pub mod emit;
mod rate;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cowlogd_parsers::docker_logs::Checkpoint;
use cowlogd_parsers::normalize::SyslogSender;
use cowlogd_parsers::syslog::TimeContext;
use cowlogd_parsers::{Record, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::admission::Activity;
use crate::batch::{GelfBatch, RedisBatch};
use crate::config::ForwardFilter;
use crate::console::{Console, Fate};
use crate::f2b::F2b;
use crate::metrics::{Input, InputMetrics};
use crate::queue::BatchQueue;
use crate::queue::redis::{Kept, RedisQueue};
use crate::router::Router;
use emit::{EmitMetrics, EmitSettings, Emitter};
use rate::ContainerRates;
pub use rate::RateSettings;

/// Forwarding to Graylog: the queue and which records go into it.
pub struct Forwarding {
    /// The forwarding queue.
    pub queue: Arc<BatchQueue<GelfBatch>>,
    filter: ForwardFilter,
}

impl Forwarding {
    /// Forwarding through `queue` of the records `filter` selects.
    pub fn new(queue: Arc<BatchQueue<GelfBatch>>, filter: ForwardFilter) -> Forwarding {
        Forwarding { queue, filter }
    }
}

/// What decides a record's fate and how it is encoded: the part of the
/// pipeline a reload (SIGHUP) replaces as a whole. The forwarding filter
/// lives here because it names routes by index.
pub struct Routing {
    router: Router,
    emit: EmitSettings,
    metrics: EmitMetrics,
    forward_filter: Option<ForwardFilter>,
}

impl Routing {
    /// Routing with `router`, encoding by `emit`, forwarding what
    /// `forward_filter` selects (`None`: forwarding is off).
    pub fn new(
        router: Router,
        emit: EmitSettings,
        forward_filter: Option<ForwardFilter>,
    ) -> Routing {
        Routing {
            metrics: EmitMetrics::new(&router),
            router,
            emit,
            forward_filter,
        }
    }
}

/// How inputs read what senders leave unsaid.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Zone of timestamps that name none.
    pub timezone: jiff::tz::TimeZone,
    /// Who sends on the syslog inputs.
    pub syslog_sender: SyslogSender,
}

impl Default for Reading {
    /// UTC, any syslog sender.
    fn default() -> Reading {
        Reading {
            timezone: jiff::tz::TimeZone::UTC,
            syslog_sender: SyslogSender::Any,
        }
    }
}

/// What every listener task shares; see the module docs.
pub struct Pipeline {
    /// Swapped whole by [`Pipeline::reload`]; each listener task picks the
    /// new one up at its next read cycle.
    routing: ArcSwap<Routing>,
    reading: Reading,
    /// The Redis queue.
    redis: RedisQueue,
    forwarding: Option<Arc<BatchQueue<GelfBatch>>>,
    console: Option<Console>,
    f2b: Option<Arc<F2b>>,
    rates: Option<ContainerRates>,
}

impl Pipeline {
    /// A pipeline routing with `router` into `redis` (and `forwarding`).
    pub fn new(
        router: Router,
        emit: EmitSettings,
        reading: Reading,
        redis: RedisQueue,
        forwarding: Option<Forwarding>,
    ) -> Pipeline {
        let (forwarding, filter) = match forwarding {
            Some(Forwarding { queue, filter }) => (Some(queue), Some(filter)),
            None => (None, None),
        };
        Pipeline {
            routing: ArcSwap::from_pointee(Routing::new(router, emit, filter)),
            reading,
            redis,
            forwarding,
            console: None,
            f2b: None,
            rates: None,
        }
    }

    /// Records of a container over `limits.container_rate` are dropped
    /// before they are routed.
    pub fn with_rates(mut self, rates: Option<&RateSettings>) -> Pipeline {
        self.rates = rates.map(ContainerRates::new);
        self
    }

    /// Every record also printed on `console`.
    pub fn with_console(mut self, console: Option<Console>) -> Pipeline {
        self.console = console;
        self
    }

    /// Every published payload also inspected by the ban engine.
    pub fn with_f2b(mut self, f2b: Option<Arc<F2b>>) -> Pipeline {
        self.f2b = f2b;
        self
    }

    /// Routes by `router`, encodes by `emit` and forwards what
    /// `forward_filter` selects from the next read cycle of each listener
    /// task on; what a cycle already holds stays as it was encoded. What
    /// exists only from the start keeps its running value: whether Redis
    /// is on, `redis.publish` (each task's ban tap is made with it), and
    /// whether forwarding is on (its queue and writer).
    pub fn reload(
        &self,
        router: Router,
        emit: EmitSettings,
        forward_filter: Option<ForwardFilter>,
    ) {
        let running = self.routing.load();
        let emit = EmitSettings {
            redis_off: running.emit.redis_off,
            publish_matches_only: running.emit.publish_matches_only,
            ..emit
        };
        let forward_filter = forward_filter.filter(|_| self.forwarding.is_some());
        self.routing
            .store(Arc::new(Routing::new(router, emit, forward_filter)));
    }

    /// The Fluent chunk ids the disk queue held at start (none in memory).
    pub fn chunks_on_disk(&self) -> impl Iterator<Item = &[u8]> {
        self.ids_on_disk().filter(|id| !Checkpoint::is_token(id))
    }

    /// The Docker source's checkpoints the disk queue held at start, by
    /// container id. They ride in the same per-record ids as Fluent's
    /// chunk ids; a Fluent chunk id is never stored when it looks like one.
    pub fn checkpoints_on_disk(&self) -> impl Iterator<Item = (&str, Checkpoint)> {
        self.ids_on_disk().filter_map(Checkpoint::from_token)
    }

    fn ids_on_disk(&self) -> impl Iterator<Item = &[u8]> {
        self.redis
            .disk()
            .map_or(&[][..], |disk| disk.chunks_at_start())
            .iter()
            .map(Vec::as_slice)
    }

    /// The routing in force.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }
}

/// How a read cycle's batches enter the queues: the one decision each
/// input makes about backpressure.
#[derive(Clone, Copy)]
pub enum Flush<'a> {
    /// Never wait (UDP): a full queue drops its oldest messages.
    DropOldest,
    /// Wait up to this long for room in the Redis queue, then drop its
    /// oldest (TCP, HTTP: Docker blocks a container's output while its
    /// collector does not read). Forwarding goes first and never waits.
    WaitUpTo(Duration),
    /// Wait for room however long it takes (giving up, queuing nothing,
    /// when the token fires), forward only once queued (so a resend never
    /// reaches Graylog twice), then wait until the batch is kept (Fluent:
    /// an ack means kept): on disk with `[queue] dir`, else applied by the
    /// Redis writer. The chunk ids are the events the batch answers (kept
    /// with it on disk). `false` when it was not queued, or dropped instead
    /// of applied (memory only: another input's traffic filled the queue,
    /// the flush deadline at shutdown): the sender then resends. Once the
    /// token fires it waits [`APPLIED_AFTER_STOP`] more.
    UntilKept(&'a CancellationToken, &'a [Vec<u8>]),
}

/// How long an input that stops still waits for the writer to apply what
/// it is about to ack (the writer keeps writing while the inputs stop).
pub const APPLIED_AFTER_STOP: Duration = Duration::from_secs(2);

/// A listener task's processing state; see the module docs.
pub struct Processor {
    input: Input,
    metrics: InputMetrics,
    emitter: Emitter,
    clock: Clock,
    /// The connection's slot, marked active by a cycle that took in a
    /// record (bytes that parse into nothing do not count).
    activity: Option<Activity>,
}

/// The receive time of the current read cycle.
struct Clock {
    now: Timestamp,
    time: TimeContext,
}

impl Processor {
    /// A processor for `input`.
    pub fn new(input: Input, pipeline: Arc<Pipeline>) -> Processor {
        let now = wall_clock();
        let time = TimeContext::new(now, pipeline.reading.timezone.clone());
        Processor {
            input,
            metrics: InputMetrics::new(input),
            emitter: Emitter::new(input, pipeline),
            clock: Clock { now, time },
            activity: None,
        }
    }

    /// Marks `activity` (a connection's slot) active at the end of every
    /// cycle that took in a record.
    pub fn set_activity(&mut self, activity: Activity) {
        self.activity = Some(activity);
    }

    /// Sets the sender of what follows.
    pub fn set_peer(&mut self, peer: IpAddr) {
        self.emitter.set_peer(peer);
    }

    /// Sets the `host` forwarded for records that name none, when the
    /// sender has no address (a unix socket).
    pub fn set_peer_host(&mut self, host: &str) {
        self.emitter.set_peer_host(host);
    }

    /// Starts a read cycle: takes the receive time, the routing and the
    /// ban rules in force for what follows.
    pub fn begin(&mut self) -> ReadCycle<'_> {
        let now = wall_clock();
        if now.secs != self.clock.now.secs {
            self.clock.time =
                TimeContext::new(now, self.emitter.pipeline().reading.timezone.clone());
        }
        self.clock.now = now;
        self.emitter.refresh();
        ReadCycle {
            processor: self,
            done: false,
            records: 0,
        }
    }
}

/// One read cycle; see the module docs.
#[must_use = "a read cycle ends with finish() or seal()"]
pub struct ReadCycle<'p> {
    processor: &'p mut Processor,
    done: bool,
    records: usize,
}

impl ReadCycle<'_> {
    /// Which input is reading.
    pub fn input(&self) -> Input {
        self.processor.input
    }

    /// The time context for timestamps without a year or zone.
    pub fn time(&self) -> &TimeContext {
        &self.processor.clock.time
    }

    /// Who sends on the syslog inputs.
    pub fn syslog_sender(&self) -> SyslogSender {
        self.processor.emitter.pipeline().reading.syslog_sender
    }

    /// When this cycle's bytes were received.
    pub fn now(&self) -> Timestamp {
        self.processor.clock.now
    }

    /// Counts bytes read from the network.
    pub fn count_bytes(&self, n: usize) {
        self.processor.metrics.bytes.increment(n as u64);
    }

    /// Counts one message received (a datagram, a frame, an entry), kept
    /// or not.
    pub fn count_received(&self) {
        self.processor.metrics.received.increment(1);
    }

    /// Routes `record` and encodes it into this cycle's batches.
    pub fn record(&mut self, record: &Record<'_>) {
        self.records += 1;
        let pipeline = self.processor.emitter.pipeline();
        if let Some(rates) = &pipeline.rates
            && !rates.admit(record, self.processor.clock.now)
        {
            // The console answers "why is my line not stored?" for these too.
            if let Some(console) = &pipeline.console {
                console.show(
                    self.processor.input.label(),
                    record,
                    None,
                    &Fate::RateLimited,
                );
            }
            return;
        }
        self.processor.emitter.record(record);
    }

    /// Sets the sender of what follows (UDP: per datagram).
    pub fn set_peer(&mut self, peer: IpAddr) {
        self.processor.emitter.set_peer(peer);
    }

    /// Ends the cycle and hands its batches to the queues by `policy`;
    /// `false` only for [`Flush::UntilKept`] not kept.
    pub async fn finish(self, policy: Flush<'_>) -> bool {
        self.seal().flush(policy).await
    }

    /// Ends the cycle and takes its batches out, to be flushed after a lock
    /// held during the cycle is released.
    pub fn seal(mut self) -> Sealed {
        self.done = true;
        self.mark_active();
        self.processor.emitter.take()
    }

    fn mark_active(&self) {
        if let (Some(activity), true) = (&self.processor.activity, self.records > 0) {
            activity.touch();
        }
    }
}

impl Drop for ReadCycle<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.mark_active();
            self.processor.emitter.take().push_now();
        }
    }
}

/// A finished cycle's batches, on their way to the queues.
#[must_use = "sealed batches are lost unless flushed"]
pub struct Sealed {
    pipeline: Arc<Pipeline>,
    redis: Option<RedisBatch>,
    forward: Option<GelfBatch>,
}

impl Sealed {
    /// Queues the batches by `policy` (see [`Flush`]).
    pub async fn flush(mut self, policy: Flush<'_>) -> bool {
        match policy {
            Flush::DropOldest => {
                self.push_now();
                true
            }
            Flush::WaitUpTo(wait) => {
                self.push_forward();
                if let Some(batch) = self.redis.take() {
                    self.pipeline.redis.push_waiting(batch, wait).await;
                }
                true
            }
            Flush::UntilKept(cancel, chunks) => {
                let Some(batch) = self.redis.take() else {
                    // Nothing for Redis (dropped or unrouted lines, Redis
                    // off): handled is kept.
                    self.push_forward();
                    return true;
                };
                let Some(kept) = self.pipeline.redis.push_kept(batch, chunks, cancel).await else {
                    return false;
                };
                self.push_forward();
                match kept {
                    Kept::Durable => true,
                    Kept::WhenApplied(mut told) => tokio::select! {
                        outcome = &mut told => outcome.is_ok(),
                        () = cancel.cancelled() => {
                            matches!(tokio::time::timeout(APPLIED_AFTER_STOP, told).await, Ok(Ok(())))
                        }
                    },
                }
            }
        }
    }

    fn push_now(&mut self) {
        if let Some(batch) = self.redis.take() {
            self.pipeline.redis.push_now(batch);
        }
        self.push_forward();
    }

    fn push_forward(&mut self) {
        if let (Some(forwarding), Some(batch)) = (&self.pipeline.forwarding, self.forward.take()) {
            forwarding.push(batch);
        }
    }
}

/// Now, by the system clock.
pub(crate) fn wall_clock() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(since.as_secs() as i64, since.subsec_nanos())
}

#[cfg(test)]
pub(crate) mod tests;

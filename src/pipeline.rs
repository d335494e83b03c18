//! The middle of the flow: frame → parse → record → route → encoded batch.
//!
//! Each listener task owns a [`Processor`]: its own decompressor, scratch
//! buffers and batch, so processing a message takes no lock and no
//! allocation beyond what the parsers need. After each read cycle the task
//! hands its batch to the Redis queue in one push.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cowlogd_parsers::decompress::{DecompressError, Decompressor};
use cowlogd_parsers::encode::mailcow::{
    ChannelSanitize, encode_channel_payload, encode_list_entry,
};
use cowlogd_parsers::gelf::{ChunkError, ChunkOutcome, Reassembler, is_chunk, parse_gelf_lossy};
use cowlogd_parsers::normalize::{normalize_gelf, normalize_syslog};
use cowlogd_parsers::syslog::{SyslogFormat, TimeContext, parse_syslog, trim_trailer};
use cowlogd_parsers::{Record, Timestamp};
use metrics::{Counter, gauge};

use crate::config::Settings;
use crate::metrics::{DropReason, Input, InputMetrics, dropped, parse_error, routed};
use crate::queue::{BatchQueue, Weighed};
use crate::router::{RouteAction, Router};

/// One list push (and maybe publish), as ranges into [`RedisBatch::data`].
#[derive(Debug, Clone)]
pub struct RedisOp {
    /// The list key.
    pub key: Range<usize>,
    /// The JSON entry (with its trailing newline).
    pub entry: Range<usize>,
    /// The channel payload, when the route publishes.
    pub publish: Option<Range<usize>>,
    /// Entries the list keeps.
    pub list_cap: usize,
}

/// Encoded Redis work from one read cycle: all bytes in one buffer.
#[derive(Debug, Default)]
pub struct RedisBatch {
    /// Keys, entries and payloads, back to back.
    pub data: Vec<u8>,
    /// What to do with them, in arrival order.
    pub ops: Vec<RedisOp>,
}

impl RedisBatch {
    /// The bytes of `range`.
    pub fn slice(&self, range: &Range<usize>) -> &[u8] {
        &self.data[range.clone()]
    }
}

impl Weighed for RedisBatch {
    fn messages(&self) -> usize {
        self.ops.len()
    }
    fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// What every listener task shares.
pub struct Shared {
    router: Router,
    route_counters: Vec<Counter>,
    unrouted: Counter,
    timezone: jiff::tz::TimeZone,
    channel_sanitize: ChannelSanitize,
    max_decompressed: usize,
    /// The Redis queue.
    pub queue: Arc<BatchQueue<RedisBatch>>,
    /// Chunked GELF reassembly, one for all GELF UDP sockets (chunks of one
    /// message may land on different sockets).
    pub reassembler: Mutex<Reassembler<SocketAddr>>,
    clock_origin: Instant,
}

impl Shared {
    /// State built from the settings.
    pub fn new(settings: &Settings, queue: Arc<BatchQueue<RedisBatch>>) -> Shared {
        let router = settings.router.clone();
        let route_counters = router.routes().iter().map(|r| routed(&r.name)).collect();
        Shared {
            router,
            route_counters,
            unrouted: routed("none"),
            timezone: settings.timezone.clone(),
            channel_sanitize: settings.channel_sanitize,
            max_decompressed: settings.max_decompressed,
            queue,
            reassembler: Mutex::new(Reassembler::new(settings.reassembly)),
            clock_origin: Instant::now(),
        }
    }

    /// Milliseconds since start: the reassembler's clock.
    pub fn clock_ms(&self) -> u64 {
        self.clock_origin.elapsed().as_millis() as u64
    }

    /// Expires overdue chunked messages, counts them, updates the gauges.
    pub fn expire_chunks(&self) {
        let now = self.clock_ms();
        let mut reassembler = self
            .reassembler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reassembler.expire(now);
        count_chunk_drops(&mut reassembler);
        gauge!("cowlogd_gelf_pending_messages").set(reassembler.pending_messages() as f64);
        gauge!("cowlogd_gelf_pending_bytes").set(reassembler.pending_bytes() as f64);
    }
}

fn count_chunk_drops(reassembler: &mut Reassembler<SocketAddr>) {
    let gone = reassembler.take_dropped();
    if gone.expired > 0 {
        dropped(DropReason::ChunkTimeout, gone.expired);
        crate::warn_limited!(
            count = gone.expired,
            "chunked GELF messages incomplete after the deadline"
        );
    }
    if gone.evicted > 0 {
        dropped(DropReason::ChunkEvicted, gone.evicted);
        crate::warn_limited!(
            count = gone.evicted,
            "chunked GELF messages evicted: pending limits reached"
        );
    }
}

/// Decompression and JSON scratch space.
struct GelfDecoder {
    decompressor: Decompressor,
    scratch: String,
}

/// Routing and encoding into the current batch.
struct RecordSink {
    shared: Arc<Shared>,
    batch: RedisBatch,
}

impl RecordSink {
    fn record(&mut self, record: &Record<'_>) {
        let Some((index, route)) = self.shared.router.route(record) else {
            self.shared.unrouted.increment(1);
            return;
        };
        self.shared.route_counters[index].increment(1);
        let store = match &route.action {
            RouteAction::Drop => {
                dropped(DropReason::Filtered, 1);
                return;
            }
            RouteAction::Store(store) => store,
        };
        let data = &mut self.batch.data;
        let key_start = data.len();
        store.key.render(record, data);
        let entry_start = data.len();
        match store.set_severity {
            Some(severity) => encode_list_entry(
                data,
                &Record {
                    severity,
                    ..*record
                },
            ),
            None => encode_list_entry(data, record),
        }
        let entry_end = data.len();
        let publish = store.publish.then(|| {
            encode_channel_payload(data, record.message, self.shared.channel_sanitize);
            entry_end..data.len()
        });
        self.batch.ops.push(RedisOp {
            key: key_start..entry_start,
            entry: entry_start..entry_end,
            publish,
            list_cap: store.list_cap,
        });
    }
}

/// A listener task's processing state; see the module docs.
pub struct Processor {
    input: Input,
    metrics: InputMetrics,
    decoder: GelfDecoder,
    sink: RecordSink,
    now: Timestamp,
    time: TimeContext,
}

impl Processor {
    /// A processor for `input`.
    pub fn new(input: Input, shared: Arc<Shared>) -> Processor {
        let now = wall_clock();
        let time = TimeContext::new(now, shared.timezone.clone());
        Processor {
            input,
            metrics: InputMetrics::new(input),
            decoder: GelfDecoder {
                decompressor: Decompressor::new(shared.max_decompressed),
                scratch: String::new(),
            },
            sink: RecordSink {
                shared,
                batch: RedisBatch::default(),
            },
            now,
            time,
        }
    }

    /// Starts a read cycle: takes the receive time for what follows.
    pub fn begin(&mut self) {
        let now = wall_clock();
        if now.secs != self.now.secs {
            self.time = TimeContext::new(now, self.sink.shared.timezone.clone());
        }
        self.now = now;
    }

    /// Counts bytes read from the network.
    pub fn count_bytes(&self, n: usize) {
        self.metrics.bytes.increment(n as u64);
    }

    /// One syslog line (UDP datagram or TCP frame).
    pub fn syslog_line(&mut self, line: &[u8]) {
        if trim_trailer(line).is_empty() {
            return;
        }
        self.metrics.received.increment(1);
        let message = parse_syslog(line, &self.time);
        if message.format == SyslogFormat::Plain {
            parse_error(self.input, "no_syslog_header");
        }
        let record = normalize_syslog(&message, &self.time, self.now);
        self.sink.record(&record);
    }

    /// One GELF UDP datagram from `peer`: a chunk or a whole payload.
    pub fn gelf_datagram(&mut self, datagram: &[u8], peer: SocketAddr) {
        if !is_chunk(datagram) {
            self.gelf_payload(datagram);
            return;
        }
        let outcome = {
            let shared = &self.sink.shared;
            let mut reassembler = shared
                .reassembler
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let outcome = reassembler.add(peer, datagram, shared.clock_ms());
            count_chunk_drops(&mut reassembler);
            outcome
        };
        match outcome {
            Ok(ChunkOutcome::Complete(payload)) => self.gelf_payload(&payload),
            Ok(ChunkOutcome::Pending | ChunkOutcome::Duplicate) => {}
            Err(error) => {
                let reason = match error {
                    ChunkError::MessageTooLarge { .. } => DropReason::ChunkTooLarge,
                    ChunkError::SenderLimit { .. } => DropReason::ChunkSenderLimit,
                    _ => DropReason::BadChunk,
                };
                dropped(reason, 1);
                crate::warn_limited!(%peer, %error, "GELF chunk refused");
            }
        }
    }

    /// One whole GELF payload (compressed or not).
    pub fn gelf_payload(&mut self, payload: &[u8]) {
        self.metrics.received.increment(1);
        let plain = match self.decoder.decompressor.decompress(payload) {
            Ok(plain) => plain,
            Err(error) => {
                let reason = match error {
                    DecompressError::TooLarge { .. } => DropReason::DecompressCap,
                    _ => DropReason::DecompressError,
                };
                dropped(reason, 1);
                crate::warn_limited!(input = self.input.label(), %error, "GELF payload not decompressed");
                return;
            }
        };
        match parse_gelf_lossy(plain, &mut self.decoder.scratch) {
            Ok(message) => {
                let record = normalize_gelf(&message, &self.time, self.now);
                self.sink.record(&record);
            }
            Err(error) => {
                parse_error(self.input, error.reason());
                dropped(DropReason::InvalidGelf, 1);
                crate::warn_limited!(input = self.input.label(), %error, "GELF message rejected");
            }
        }
    }

    fn take_batch(&mut self) -> Option<RedisBatch> {
        if self.sink.batch.ops.is_empty() {
            self.sink.batch.data.clear();
            return None;
        }
        let capacity = self.sink.batch.data.len();
        Some(std::mem::replace(
            &mut self.sink.batch,
            RedisBatch {
                data: Vec::with_capacity(capacity),
                ops: Vec::new(),
            },
        ))
    }

    /// Ends a read cycle: queues the batch, dropping the oldest queued
    /// messages if the queue is full (UDP: never wait).
    pub fn flush(&mut self) {
        if let Some(batch) = self.take_batch() {
            self.sink.shared.queue.push(batch);
        }
    }

    /// Ends a read cycle, waiting up to `wait` for queue space (TCP).
    pub async fn flush_waiting(&mut self, wait: std::time::Duration) {
        if let Some(batch) = self.take_batch() {
            self.sink.shared.queue.push_waiting(batch, wait).await;
        }
    }
}

fn wall_clock() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(since.as_secs() as i64, since.subsec_nanos())
}

//! The middle of the flow: frame → parse → record → route → encoded batches.
//!
//! Each listener task owns a [`Processor`]: its own decompressor, scratch
//! buffers and batches, so processing a message takes no lock and no
//! allocation beyond what the parsers need. After each read cycle the task
//! hands its batches to the queues, one push each: the Redis batch (what the
//! routes store) and, when forwarding is on, the GELF batch (every record,
//! before the Redis filters).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cowlogd_parsers::decompress::{Compression, DecompressError, Decompressor};
use cowlogd_parsers::encode::gelf::{ForwardContext, encode_gelf};
use cowlogd_parsers::encode::mailcow::{
    ChannelSanitize, encode_channel_payload, encode_list_entry,
};
use cowlogd_parsers::fluent::docker::{
    PartialAssembler, PartialDrop, PartialLimits, PartialOutcome, to_gelf,
};
use cowlogd_parsers::fluent::forward::{Entries, entries, parse_event};
use cowlogd_parsers::gelf::{ChunkError, ChunkOutcome, Reassembler, is_chunk, parse_gelf_lossy};
use cowlogd_parsers::normalize::{normalize_gelf, normalize_syslog};
use cowlogd_parsers::syslog::{SyslogFormat, TimeContext, parse_syslog, trim_trailer};
use cowlogd_parsers::{Record, Timestamp};
use metrics::{Counter, gauge};

use crate::config::{ForwardFilter, Settings};
use crate::console::{Console, Fate};
use crate::f2b::rules::{RuleHit, Scratch};
use crate::f2b::{F2b, Loaded};
use crate::metrics::{DropReason, Input, InputMetrics, drop_counter, dropped, parse_error, routed};
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
    fn drop_oldest(&mut self, n: usize) {
        self.ops.drain(..n.min(self.ops.len()));
    }
}

/// GELF 1.1 JSON messages to forward, back to back in one buffer.
#[derive(Debug, Default)]
pub struct GelfBatch {
    /// The encoded messages.
    pub data: Vec<u8>,
    /// Each message's range.
    pub messages: Vec<Range<usize>>,
}

impl GelfBatch {
    /// The messages, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.messages.iter().map(|r| &self.data[r.clone()])
    }
}

impl Weighed for GelfBatch {
    fn messages(&self) -> usize {
        self.messages.len()
    }
    fn bytes(&self) -> usize {
        self.data.len()
    }
    fn drop_oldest(&mut self, n: usize) {
        self.messages.drain(..n.min(self.messages.len()));
    }
}

/// Forwarding state shared by every listener task.
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

/// What every listener task shares.
pub struct Shared {
    router: Router,
    max_message: usize,
    truncated: Counter,
    /// Dropped by a `drop` route: frequent (system lines, chatter), so
    /// registered once.
    filtered: Counter,
    route_counters: Vec<Counter>,
    unrouted: Counter,
    timezone: jiff::tz::TimeZone,
    channel_sanitize: ChannelSanitize,
    channel_max: usize,
    channel_cut: Counter,
    max_decompressed: usize,
    /// The Redis queue.
    pub queue: Arc<BatchQueue<RedisBatch>>,
    /// Forwarding to Graylog, when configured.
    pub forwarding: Option<Forwarding>,
    /// `--console`: every routed record printed.
    console: Option<Console>,
    /// `redis.url = ""`: routes still decide, nothing is written.
    redis_off: bool,
    /// Ban insight: rules evaluated on every published payload.
    pub f2b: Option<Arc<F2b>>,
    /// `redis.publish = "matches"`.
    publish_matches_only: bool,
    /// Chunked GELF reassembly, one for all GELF UDP sockets (chunks of one
    /// message may land on different sockets).
    pub reassembler: Mutex<Reassembler<SocketAddr>>,
    /// Bounds for lines Docker's fluentd driver split (per connection).
    partial_limits: PartialLimits,
    /// Fluent chunk ids recently queued and acked.
    pub acked_chunks: AckedChunks,
    clock_origin: Instant,
}

impl Shared {
    /// State built from the settings.
    pub fn new(
        settings: &Settings,
        queue: Arc<BatchQueue<RedisBatch>>,
        forwarding: Option<Forwarding>,
        console: Option<Console>,
    ) -> Shared {
        let router = settings.router.clone();
        let route_counters = router.routes().iter().map(|r| routed(&r.name)).collect();
        Shared {
            router,
            max_message: settings.max_message,
            truncated: metrics::counter!("cowlogd_truncated_messages_total"),
            filtered: drop_counter(DropReason::Filtered),
            route_counters,
            unrouted: routed("none"),
            timezone: settings.timezone.clone(),
            channel_sanitize: settings.channel_sanitize,
            channel_max: settings.channel_max_bytes,
            channel_cut: metrics::counter!("cowlogd_channel_payloads_cut_total"),
            max_decompressed: settings.max_decompressed,
            queue,
            forwarding,
            console,
            redis_off: settings.redis_url.is_empty(),
            f2b: settings
                .f2b
                .as_ref()
                .map(|c| Arc::new(F2b::new(c.max_offenders))),
            publish_matches_only: settings.publish_matches_only,
            reassembler: Mutex::new(Reassembler::new(settings.reassembly)),
            partial_limits: PartialLimits {
                max_pending: settings.partial_pending,
                // Room for the nested syslog header: the message after it
                // must still come out over the limit, to be cut and marked.
                max_line_bytes: settings.max_message.saturating_add(PARTIAL_HEADER_ROOM),
                timeout_ms: settings.partial_timeout.as_millis() as u64,
            },
            acked_chunks: AckedChunks::new(ACKED_CHUNKS_KEPT),
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

/// Routing and encoding into the current batches.
struct RecordSink {
    shared: Arc<Shared>,
    redis: RedisBatch,
    forward: GelfBatch,
    /// The sender's address as text: GELF `host` for syslog lines without
    /// a HOSTNAME.
    peer_host: String,
    peer: Option<IpAddr>,
    input: Input,
    /// Sizes of the last Redis batch taken, to size the next one.
    redis_hint: BatchHint,
    /// The ban rules of this read cycle, and their generation.
    f2b_rules: Option<(u64, Arc<Loaded>)>,
    f2b_hits: Vec<RuleHit>,
    /// Search state for those rules (remade when they change).
    f2b_scratch: Scratch,
}

/// How much room a new batch starts with.
#[derive(Debug, Default, Clone, Copy)]
struct BatchHint {
    bytes: usize,
    ops: usize,
}

/// The largest head start a batch gets: an idle connection that once saw a
/// burst keeps nothing, a busy one regrows at most from here.
const BATCH_HINT_MAX_BYTES: usize = 1024 * 1024;

impl RecordSink {
    fn set_peer(&mut self, peer: IpAddr) {
        if self.shared.forwarding.is_some() && self.peer != Some(peer) {
            self.peer = Some(peer);
            self.peer_host.clear();
            let _ = write!(self.peer_host, "{}", peer.to_canonical());
        }
    }

    fn record(&mut self, record: &Record<'_>) {
        if record.message.len() > self.shared.max_message {
            let cut = truncate_message(record.message, self.shared.max_message);
            self.shared.truncated.increment(1);
            crate::warn_limited!(
                bytes = record.message.len(),
                "message over limits.max_message_bytes; cut"
            );
            self.route_and_encode(&Record {
                message: &cut,
                ..*record
            });
        } else {
            self.route_and_encode(record);
        }
    }

    fn route_and_encode(&mut self, record: &Record<'_>) {
        let matched = self.shared.router.route(record);
        if let Some(forwarding) = &self.shared.forwarding
            && forwarding.filter.forwards(matched.map(|(index, _)| index))
        {
            let start = self.forward.data.len();
            let context = ForwardContext {
                fallback_host: &self.peer_host,
                route: matched.map(|(_, route)| route.name.as_str()),
            };
            encode_gelf(&mut self.forward.data, record, &context);
            self.forward.messages.push(start..self.forward.data.len());
        }
        let Some((index, route)) = matched else {
            self.shared.unrouted.increment(1);
            if let Some(console) = &self.shared.console {
                console.show(self.input.label(), record, None, &Fate::Unrouted);
            }
            return;
        };
        self.shared.route_counters[index].increment(1);
        let store = match &route.action {
            RouteAction::Drop => {
                self.shared.filtered.increment(1);
                if let Some(console) = &self.shared.console {
                    console.show(
                        self.input.label(),
                        record,
                        Some(&route.name),
                        &Fate::Dropped,
                    );
                }
                return;
            }
            RouteAction::Store(store) => store,
        };
        if self.shared.redis_off {
            if let Some(console) = &self.shared.console {
                let mut key = Vec::new();
                store.key.render(record, &mut key);
                let fate = Fate::RedisOff { key: &key };
                console.show(self.input.label(), record, Some(&route.name), &fate);
            }
            return;
        }
        if self.redis.data.capacity() == 0 {
            // A fresh batch: start at the size of the last one (bounded), so
            // that a burst does not regrow the buffer through every doubling.
            self.redis.data.reserve(self.redis_hint.bytes);
            self.redis.ops.reserve(self.redis_hint.ops);
        }
        let data = &mut self.redis.data;
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
            if data.len() - entry_end > self.shared.channel_max {
                // The payload is valid UTF-8: back off to a character start.
                let mut end = entry_end + self.shared.channel_max;
                while end > entry_end && data[end] & 0xc0 == 0x80 {
                    end -= 1;
                }
                data.truncate(end);
                self.shared.channel_cut.increment(1);
            }
            entry_end..data.len()
        });
        let publish = match (publish, &self.shared.f2b, &self.f2b_rules) {
            (Some(range), Some(f2b), Some((_, loaded))) => {
                self.f2b_hits.clear();
                loaded.rules.evaluate(
                    &data[range.clone()],
                    &mut self.f2b_hits,
                    &mut self.f2b_scratch,
                );
                let acted = !self.f2b_hits.is_empty() && f2b.record(loaded, &self.f2b_hits);
                if self.shared.publish_matches_only && !acted {
                    data.truncate(range.start);
                    None
                } else {
                    Some(range)
                }
            }
            (publish, ..) => publish,
        };
        if let Some(console) = &self.shared.console {
            let fate = Fate::Stored {
                key: &data[key_start..entry_start],
                published: publish.is_some(),
            };
            console.show(self.input.label(), record, Some(&route.name), &fate);
        }
        self.redis.ops.push(RedisOp {
            key: key_start..entry_start,
            entry: entry_start..entry_end,
            publish,
            list_cap: store.list_cap,
        });
    }
}

/// Scratch capacity (invalid UTF-8 repair) kept between read cycles.
const SCRATCH_KEEP: usize = 64 * 1024;
/// Bytes a split line is kept past `limits.max_message_bytes`: more than
/// any syslog header before the message.
const PARTIAL_HEADER_ROOM: usize = 1024;

/// What ends a message cut to `limits.max_message_bytes`.
pub const TRUNCATION_MARKER: &[u8] = b"...[truncated by cowlogd]";

/// The first `max` bytes of `message` (backing off to a UTF-8 character
/// boundary) and the marker. Rare path: it allocates.
fn truncate_message(message: &[u8], max: usize) -> Vec<u8> {
    let mut cut = max
        .saturating_sub(TRUNCATION_MARKER.len())
        .min(message.len());
    let mut backed = 0;
    while cut > 0 && backed < 3 && message.get(cut).is_some_and(|b| b & 0xc0 == 0x80) {
        cut -= 1;
        backed += 1;
    }
    let mut out = Vec::with_capacity(cut + TRUNCATION_MARKER.len());
    out.extend_from_slice(&message[..cut]);
    out.extend_from_slice(TRUNCATION_MARKER);
    out
}

/// Parses one GELF JSON document into the sink; `false` if it was rejected.
fn gelf_json(
    scratch: &mut String,
    sink: &mut RecordSink,
    clock: &Clock,
    input: Input,
    json: &[u8],
) -> bool {
    match parse_gelf_lossy(json, scratch) {
        Ok(message) => {
            let record = normalize_gelf(&message, &clock.time, clock.now);
            sink.record(&record);
            true
        }
        Err(error) => {
            parse_error(input, error.reason());
            dropped(DropReason::InvalidGelf, 1);
            crate::warn_limited!(input = input.label(), %error, "GELF message rejected");
            false
        }
    }
}

/// Fluent chunk ids remembered, all connections together (about 64 bytes
/// each).
const ACKED_CHUNKS_KEPT: usize = 16_384;

/// The chunk ids of the last Forward events queued and acked. A sender
/// that never got its ack (the connection broke after cowlogd queued the
/// event, or its own ack timeout passed) sends the event again, usually
/// on a new connection: it is acked again, not queued twice.
pub struct AckedChunks {
    kept: Mutex<lru::LruCache<Vec<u8>, ()>>,
    /// Events not queued again for it.
    pub resent: Counter,
}

impl AckedChunks {
    fn new(capacity: usize) -> AckedChunks {
        let capacity = std::num::NonZeroUsize::new(capacity).unwrap_or(std::num::NonZeroUsize::MIN);
        AckedChunks {
            kept: Mutex::new(lru::LruCache::new(capacity)),
            resent: metrics::counter!("cowlogd_fluent_resent_total"),
        }
    }

    fn contains(&self, chunk: &[u8]) -> bool {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !kept.is_empty() && kept.contains(chunk)
    }

    /// Remembers `chunks` (queued and about to be acked), forgetting the
    /// oldest beyond the capacity.
    pub fn remember(&self, chunks: impl IntoIterator<Item = Vec<u8>>) {
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for chunk in chunks {
            kept.put(chunk, ());
        }
    }
}

/// The receive time of the current read cycle.
struct Clock {
    now: Timestamp,
    time: TimeContext,
}

/// A listener task's processing state; see the module docs.
pub struct Processor {
    input: Input,
    metrics: InputMetrics,
    decompressor: Decompressor,
    scratch: String,
    sink: RecordSink,
    clock: Clock,
    /// Fluent inputs: lines Docker split, being put together again.
    partials: Option<PartialAssembler>,
    /// Fluent inputs: a CompressedPackedForward event's entries.
    inflated: Vec<u8>,
}

/// How many messages of a GELF body were taken and rejected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BodyOutcome {
    /// Parsed and routed.
    pub accepted: usize,
    /// Rejected, each counted by reason.
    pub rejected: usize,
}

/// The batches of one read cycle, ready for the queues.
pub struct Batches {
    redis: Option<RedisBatch>,
    forward: Option<GelfBatch>,
}

impl Processor {
    /// A processor for `input`.
    pub fn new(input: Input, shared: Arc<Shared>) -> Processor {
        let now = wall_clock();
        let time = TimeContext::new(now, shared.timezone.clone());
        Processor {
            input,
            metrics: InputMetrics::new(input),
            decompressor: Decompressor::new(shared.max_decompressed),
            scratch: String::new(),
            sink: RecordSink {
                shared,
                redis: RedisBatch::default(),
                forward: GelfBatch::default(),
                peer_host: String::new(),
                peer: None,
                input,
                redis_hint: BatchHint::default(),
                f2b_rules: None,
                f2b_hits: Vec::new(),
                f2b_scratch: Scratch::default(),
            },
            clock: Clock { now, time },
            partials: None,
            inflated: Vec::new(),
        }
    }

    /// Starts a read cycle: takes the receive time for what follows.
    pub fn begin(&mut self) {
        let now = wall_clock();
        if now.secs != self.clock.now.secs {
            self.clock.time = TimeContext::new(now, self.sink.shared.timezone.clone());
        }
        self.clock.now = now;
        if let Some(f2b) = &self.sink.shared.f2b {
            let generation = f2b.generation();
            if self
                .sink
                .f2b_rules
                .as_ref()
                .is_none_or(|(g, _)| *g != generation)
            {
                self.sink.f2b_rules = Some((generation, f2b.current()));
            }
        }
    }

    /// Sets the sender of what follows.
    pub fn set_peer(&mut self, peer: IpAddr) {
        self.sink.set_peer(peer);
    }

    /// Sets the `host` forwarded for records that name none, when the
    /// sender has no address (a unix socket).
    pub fn set_peer_host(&mut self, host: &str) {
        self.sink.peer = None;
        self.sink.peer_host.clear();
        self.sink.peer_host.push_str(host);
    }

    /// One complete Fluent Forward event (one MessagePack object): every
    /// entry normalized as Docker's GELF message for the same line would
    /// be, split lines put together first. Returns the `chunk` the sender
    /// wants acknowledged once this read cycle's batches are queued; `None`
    /// for an event that is not one (counted).
    pub fn fluent_event<'f>(&mut self, frame: &'f [u8]) -> Option<&'f [u8]> {
        let event = match parse_event(frame) {
            Ok(event) => event,
            Err(error) => {
                self.metrics.received.increment(1);
                self.invalid_forward(&error);
                return None;
            }
        };
        if let Some(chunk) = event.chunk
            && self.sink.shared.acked_chunks.contains(chunk)
        {
            // Queued and acked before; the ack was lost on the way.
            self.sink.shared.acked_chunks.resent.increment(1);
            return Some(chunk);
        }
        match event.entries {
            Entries::Message { time, record } => self.fluent_entry(event.tag, time, record),
            Entries::Forward { raw, .. }
            | Entries::Packed {
                raw,
                compressed: false,
            } => self.fluent_entries(event.tag, raw),
            Entries::Packed {
                raw,
                compressed: true,
            } => {
                let mut inflated = std::mem::take(&mut self.inflated);
                inflated.clear();
                match self.decompressor.decompress_as(raw, Compression::Gzip) {
                    Ok(plain) => {
                        inflated.extend_from_slice(plain);
                        self.fluent_entries(event.tag, &inflated);
                    }
                    Err(error) => {
                        let what = "CompressedPackedForward entries";
                        count_not_decompressed(self.input, &self.metrics, &error, what);
                    }
                }
                if inflated.capacity() > SCRATCH_KEEP {
                    inflated = Vec::new();
                }
                self.inflated = inflated;
            }
        }
        event.chunk
    }

    fn fluent_entries(&mut self, tag: &[u8], raw: &[u8]) {
        for entry in entries(raw) {
            match entry {
                Ok((time, record)) => self.fluent_entry(tag, time, record),
                Err(error) => {
                    // The rest of the entries cannot be found.
                    self.metrics.received.increment(1);
                    self.invalid_forward(&error);
                }
            }
        }
    }

    fn fluent_entry(&mut self, tag: &[u8], time: Timestamp, record: &[u8]) {
        self.metrics.received.increment(1);
        let entry = match to_gelf(tag, time, record, None) {
            Ok(entry) => entry,
            Err(error) => return self.invalid_forward(&error),
        };
        let mut message = entry.gelf;
        if let Some(part) = entry.partial {
            let limits = self.sink.shared.partial_limits;
            let now_ms = self.sink.shared.clock_ms();
            let partials = self
                .partials
                .get_or_insert_with(|| PartialAssembler::new(limits));
            let (outcome, lost) = partials.add(part.id, part.ordinal, part.last, part.text, now_ms);
            if let Some(lost) = lost {
                let reason = match lost {
                    PartialDrop::Gap => DropReason::PartialGap,
                    PartialDrop::TooManyPending => DropReason::PartialEvicted,
                    PartialDrop::Expired => DropReason::PartialTimeout,
                };
                dropped(reason, 1);
                crate::warn_limited!(
                    input = self.input.label(),
                    reason = reason.labels().1,
                    "a line Docker split was lost"
                );
            }
            let PartialOutcome::Complete { text } = outcome else {
                return;
            };
            // Parts are joined as bytes: Docker splits inside characters.
            message.short_message = match String::from_utf8(text) {
                Ok(text) => text.into(),
                Err(error) => String::from_utf8_lossy(error.as_bytes())
                    .into_owned()
                    .into(),
            };
        }
        let record = normalize_gelf(&message, &self.clock.time, self.clock.now);
        self.sink.record(&record);
    }

    fn invalid_forward(&self, error: &dyn std::fmt::Display) {
        parse_error(self.input, "invalid_forward");
        dropped(DropReason::InvalidForward, 1);
        crate::warn_limited!(input = self.input.label(), %error, "Forward event rejected");
    }

    /// Drops split lines whose last part is overdue (counted).
    pub fn expire_partials(&mut self) {
        let now_ms = self.sink.shared.clock_ms();
        if let Some(partials) = self.partials.as_mut()
            && partials.pending() > 0
        {
            let expired = partials.expire(now_ms);
            if expired > 0 {
                dropped(DropReason::PartialTimeout, expired as u64);
                crate::warn_limited!(
                    input = self.input.label(),
                    expired,
                    "split lines incomplete at their deadline"
                );
            }
        }
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
        let message = parse_syslog(line, &self.clock.time);
        if message.format == SyslogFormat::Plain {
            parse_error(self.input, "no_syslog_header");
        }
        let record = normalize_syslog(&message, &self.clock.time, self.clock.now);
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
            Ok(ChunkOutcome::Complete(payload)) => {
                self.gelf_payload(&payload);
            }
            Ok(ChunkOutcome::Pending | ChunkOutcome::Duplicate | ChunkOutcome::Ignored) => {}
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

    /// One whole GELF payload (compressed or not); `false` if rejected.
    pub fn gelf_payload(&mut self, payload: &[u8]) -> bool {
        self.gelf_body(payload, Compression::None, false).rejected == 0
    }

    /// A GELF body whose compression a sender may have declared (HTTP
    /// `Content-Encoding`); with `bulk`, one message per line. Each line is
    /// taken or rejected (counted) on its own.
    pub fn gelf_body(&mut self, body: &[u8], declared: Compression, bulk: bool) -> BodyOutcome {
        let mut outcome = BodyOutcome::default();
        let plain = match self.decompressor.decompress_as(body, declared) {
            Ok(plain) => plain,
            Err(error) => {
                count_not_decompressed(self.input, &self.metrics, &error, "GELF payload");
                outcome.rejected = 1;
                return outcome;
            }
        };
        let mut take = |line: &[u8]| {
            self.metrics.received.increment(1);
            if gelf_json(
                &mut self.scratch,
                &mut self.sink,
                &self.clock,
                self.input,
                line,
            ) {
                outcome.accepted += 1;
            } else {
                outcome.rejected += 1;
            }
        };
        if !bulk {
            take(plain);
            return outcome;
        }
        for line in plain.split(|&b| b == b'\n') {
            if !line.iter().all(u8::is_ascii_whitespace) {
                take(line);
            }
        }
        outcome
    }

    /// Takes the batches of this read cycle, and gives back scratch space a
    /// large message grew (an idle connection keeps only small buffers).
    pub fn take_batches(&mut self) -> Batches {
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = String::new();
        }
        self.decompressor.release_oversized();
        let redis = take_if_any(&mut self.sink.redis);
        if let Some(batch) = &redis {
            let bytes = batch.data.len().min(BATCH_HINT_MAX_BYTES);
            self.sink.redis_hint = BatchHint {
                bytes,
                ops: batch.ops.len().min(bytes / 64),
            };
        }
        Batches {
            redis,
            forward: take_if_any(&mut self.sink.forward),
        }
    }

    /// Ends a read cycle: queues the batches, dropping the oldest queued
    /// messages if a queue is full (UDP: never wait).
    pub fn flush(&mut self) {
        let batches = self.take_batches();
        let shared = &self.sink.shared;
        if let Some(batch) = batches.redis {
            shared.queue.push(batch);
        }
        push_forward(shared, batches.forward);
    }

    /// Ends a read cycle whose senders wait for an ack: waits for room for
    /// all of it in the Redis queue, however long that takes, so that an
    /// ack always means queued, then forwards it. `false`, with nothing of
    /// it queued or forwarded, when `cancel` fires or the queue closes
    /// first (the sender sends again).
    pub async fn flush_for_ack(&mut self, cancel: &tokio_util::sync::CancellationToken) -> bool {
        let batches = self.take_batches();
        let shared = self.sink.shared.clone();
        let queued = match batches.redis {
            Some(batch) => shared.queue.push_when_room(batch, cancel).await,
            None => true,
        };
        // Forwarded once queued: a sender that resends it must not reach
        // Graylog twice. (It waits for its ack meanwhile, so Graylog would
        // get nothing more from it anyway.)
        if queued {
            push_forward(&shared, batches.forward);
        }
        queued
    }

    /// Ends a read cycle, waiting up to `wait` for Redis queue space (TCP,
    /// HTTP). Forwarding never waits: it must not slow the Redis path.
    pub async fn flush_waiting(&mut self, wait: std::time::Duration) {
        let batches = self.take_batches();
        let shared = self.sink.shared.clone();
        batches.queue(&shared, wait).await;
    }
}

impl Batches {
    /// Queues the batches; the Redis batch may wait up to `wait` for room.
    pub async fn queue(self, shared: &Shared, wait: std::time::Duration) {
        push_forward(shared, self.forward);
        if let Some(batch) = self.redis {
            shared.queue.push_waiting(batch, wait).await;
        }
    }
}

fn push_forward(shared: &Shared, batch: Option<GelfBatch>) {
    if let (Some(forwarding), Some(batch)) = (&shared.forwarding, batch) {
        forwarding.queue.push(batch);
    }
}

/// Counts a message that could not be decompressed, by reason.
fn count_not_decompressed(
    input: Input,
    metrics: &InputMetrics,
    error: &DecompressError,
    what: &str,
) {
    metrics.received.increment(1);
    let reason = match error {
        DecompressError::TooLarge { .. } => DropReason::DecompressCap,
        _ => DropReason::DecompressError,
    };
    dropped(reason, 1);
    crate::warn_limited!(input = input.label(), %error, "{what} not decompressed");
}

/// Takes a batch that holds messages (an empty one holds no bytes either).
fn take_if_any<T: Weighed + Default>(batch: &mut T) -> Option<T> {
    (batch.messages() > 0).then(|| std::mem::take(batch))
}

fn wall_clock() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(since.as_secs() as i64, since.subsec_nanos())
}

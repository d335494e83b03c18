//! The emit step: one record, routed, becomes at most one forwarded GELF
//! message (`forward`), at most one Redis op (`store`) and one console line
//! (`observe`), in that order. The ban
//! engine sees each channel payload at one point, inside `store`, and says
//! whether it is published.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use ::metrics::Counter;
use cowlogd_parsers::Record;
use cowlogd_parsers::encode::gelf::{ForwardContext, encode_gelf};
use cowlogd_parsers::encode::mailcow::{
    ChannelSanitize, encode_channel_payload_capped, encode_list_entry,
};
use cowlogd_parsers::limits::truncate_message;

use super::{Pipeline, Routing, Sealed};
use crate::batch::{GelfBatch, RedisBatch, RedisOp, take_if_any};
use crate::console::Fate;
use crate::f2b::tap::{Tap, Verdict};
use crate::metrics::{self, DropReason, Input, drop_counter, routed};
use crate::router::{Route, RouteAction, StoreAction};

/// How records are encoded, from `[redis]` and `[limits]`.
#[derive(Debug, Clone)]
pub struct EmitSettings {
    /// `limits.max_message_bytes`: longer text is cut and marked.
    pub max_message: usize,
    /// `redis.channel_sanitize`.
    pub channel_sanitize: ChannelSanitize,
    /// `redis.channel_max_bytes`.
    pub channel_max: usize,
    /// `redis.url = ""`: routes still decide, nothing is written.
    pub redis_off: bool,
    /// `redis.publish = "matches"`.
    pub publish_matches_only: bool,
}

/// Counters the emit step moves on every record, registered once per
/// pipeline (not per connection: route labels are owned strings).
pub(super) struct EmitMetrics {
    truncated: Counter,
    /// Dropped by a `drop` route: frequent (system lines, chatter).
    filtered: Counter,
    routes: Vec<Counter>,
    unrouted: Counter,
    channel_cut: Counter,
}

impl EmitMetrics {
    pub(super) fn new(router: &crate::router::Router) -> EmitMetrics {
        EmitMetrics {
            truncated: metrics::TRUNCATED_MESSAGES.counter(),
            filtered: drop_counter(DropReason::Filtered),
            routes: router.routes().iter().map(|r| routed(&r.name)).collect(),
            unrouted: routed("none"),
            channel_cut: metrics::CHANNEL_PAYLOADS_CUT.counter(),
        }
    }
}

/// What `store` did with a record, for the console.
enum Stored<'r> {
    /// No route matched.
    Unrouted,
    /// A `drop` route matched.
    Dropped,
    /// Redis is off: nothing written for this store route.
    RedisOff(&'r StoreAction),
    /// Queued under the key at this range of the batch.
    Queued { key: Range<usize>, published: bool },
}

/// One listener task's batches and the state to fill them.
pub(super) struct Emitter {
    pipeline: Arc<Pipeline>,
    /// The pipeline's routing as of this task's last read cycle.
    routing: Arc<Routing>,
    out: Output,
}

/// What the emit step writes to, apart from the shared pipeline.
struct Output {
    redis: RedisBatch,
    forward: GelfBatch,
    /// The sender's address as text: GELF `host` for syslog lines without
    /// a HOSTNAME.
    peer_host: String,
    peer: Option<IpAddr>,
    input: Input,
    /// Sizes of the last Redis batch taken, to size the next one.
    redis_hint: BatchHint,
    tap: Option<Tap>,
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

impl Emitter {
    pub(super) fn new(input: Input, pipeline: Arc<Pipeline>) -> Emitter {
        let routing = pipeline.routing();
        let tap = pipeline
            .f2b
            .as_ref()
            .map(|f2b| Tap::new(f2b.clone(), routing.emit.publish_matches_only));
        Emitter {
            pipeline,
            routing,
            out: Output {
                redis: RedisBatch::default(),
                forward: GelfBatch::default(),
                peer_host: String::new(),
                peer: None,
                input,
                redis_hint: BatchHint::default(),
                tap,
            },
        }
    }

    pub(super) fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Picks up a reloaded routing and new ban rules (a pointer compare
    /// each when nothing changed).
    pub(super) fn refresh(&mut self) {
        let current = self.pipeline.routing.load();
        if !Arc::ptr_eq(&current, &self.routing) {
            self.routing = arc_swap::Guard::into_inner(current);
        }
        if let Some(tap) = &mut self.out.tap {
            tap.refresh();
        }
    }

    pub(super) fn set_peer(&mut self, peer: IpAddr) {
        let out = &mut self.out;
        if self.pipeline.forwarding.is_some() && out.peer != Some(peer) {
            out.peer = Some(peer);
            out.peer_host.clear();
            let _ = write!(out.peer_host, "{}", peer.to_canonical());
        }
    }

    pub(super) fn set_peer_host(&mut self, host: &str) {
        self.out.peer = None;
        self.out.peer_host.clear();
        self.out.peer_host.push_str(host);
    }

    /// Cuts an over-long message, then routes and emits it.
    pub(super) fn record(&mut self, record: &Record<'_>) {
        let max = self.routing.emit.max_message;
        if record.message.len() > max {
            let cut = truncate_message(record.message, max);
            self.routing.metrics.truncated.increment(1);
            crate::warn_limited!(
                bytes = record.message.len(),
                "message over limits.max_message_bytes; cut"
            );
            self.emit(&Record {
                message: &cut,
                ..*record
            });
        } else {
            self.emit(record);
        }
    }

    fn emit(&mut self, record: &Record<'_>) {
        let routing = &*self.routing;
        let matched = routing.router.route(record);
        self.out.forward(routing, record, matched);
        let stored = self.out.store(routing, record, matched);
        self.out.observe(&self.pipeline, record, matched, &stored);
    }

    /// Takes this cycle's batches, remembering the Redis batch's size for
    /// the next.
    pub(super) fn take(&mut self) -> Sealed {
        let out = &mut self.out;
        let redis = take_if_any(&mut out.redis);
        if let Some(batch) = &redis {
            let bytes = batch.data.len().min(BATCH_HINT_MAX_BYTES);
            out.redis_hint = BatchHint {
                bytes,
                ops: batch.ops.len().min(bytes / 64),
            };
        }
        Sealed {
            pipeline: self.pipeline.clone(),
            redis,
            forward: take_if_any(&mut out.forward),
        }
    }
}

impl Output {
    /// Forwards every record the forwarding filter selects (before any
    /// Redis decision: Graylog gets what routes drop too).
    fn forward(
        &mut self,
        routing: &Routing,
        record: &Record<'_>,
        matched: Option<(usize, &Route)>,
    ) {
        let Some(filter) = &routing.forward_filter else {
            return;
        };
        if !filter.forwards(matched.map(|(index, _)| index)) {
            return;
        }
        let start = self.forward.data.len();
        let context = ForwardContext {
            fallback_host: &self.peer_host,
            route: matched.map(|(_, route)| route.name.as_str()),
        };
        encode_gelf(&mut self.forward.data, record, &context);
        self.forward.messages.push(start..self.forward.data.len());
    }

    /// Counts the route's decision and, for a store route, encodes the list
    /// entry and the channel payload into the Redis batch.
    fn store<'r>(
        &mut self,
        routing: &Routing,
        record: &Record<'_>,
        matched: Option<(usize, &'r Route)>,
    ) -> Stored<'r> {
        let metrics = &routing.metrics;
        let Some((index, route)) = matched else {
            metrics.unrouted.increment(1);
            return Stored::Unrouted;
        };
        metrics.routes[index].increment(1);
        let store = match &route.action {
            RouteAction::Drop => {
                metrics.filtered.increment(1);
                return Stored::Dropped;
            }
            RouteAction::Store(store) => store,
        };
        if routing.emit.redis_off {
            return Stored::RedisOff(store);
        }
        if self.redis.data.capacity() == 0 {
            // A fresh batch: start at the size of the last one (bounded), so
            // that a burst does not regrow the buffer through every doubling.
            self.redis.data.reserve(self.redis_hint.bytes);
            self.redis.ops.reserve(self.redis_hint.ops);
        }
        let (key, entry) = encode_entry(&mut self.redis.data, record, store);
        let publish = if store.publish {
            self.publish(routing, record.message)
        } else {
            None
        };
        let published = publish.is_some();
        self.redis.ops.push(RedisOp {
            key: key.clone(),
            entry,
            publish,
            list_cap: store.list_cap,
        });
        Stored::Queued { key, published }
    }

    /// Encodes the channel payload after the entry; the ban tap may keep it
    /// off the channel.
    fn publish(&mut self, routing: &Routing, message: &[u8]) -> Option<Range<usize>> {
        let settings = &routing.emit;
        let data = &mut self.redis.data;
        let start = data.len();
        if encode_channel_payload_capped(
            data,
            message,
            settings.channel_sanitize,
            settings.channel_max,
        ) {
            routing.metrics.channel_cut.increment(1);
        }
        let range = start..data.len();
        let verdict = match &mut self.tap {
            Some(tap) => tap.inspect(&data[range.clone()]),
            None => Verdict::Publish,
        };
        match verdict {
            Verdict::Publish => Some(range),
            Verdict::Suppress => {
                data.truncate(start);
                None
            }
        }
    }

    /// Shows the record and its fate on the console, when it is on.
    fn observe(
        &self,
        pipeline: &Pipeline,
        record: &Record<'_>,
        matched: Option<(usize, &Route)>,
        stored: &Stored<'_>,
    ) {
        let Some(console) = &pipeline.console else {
            return;
        };
        let route = matched.map(|(_, route)| route.name.as_str());
        let input = self.input.label();
        match stored {
            Stored::Unrouted => console.show(input, record, None, &Fate::Unrouted),
            Stored::Dropped => console.show(input, record, route, &Fate::Dropped),
            Stored::RedisOff(store) => {
                let mut key = Vec::new();
                store.key.render(record, &mut key);
                console.show(input, record, route, &Fate::RedisOff { key: &key });
            }
            Stored::Queued { key, published } => {
                let fate = Fate::Stored {
                    key: &self.redis.data[key.clone()],
                    published: *published,
                };
                console.show(input, record, route, &fate);
            }
        }
    }
}

/// Appends the key and the list entry; their ranges.
fn encode_entry(
    data: &mut Vec<u8>,
    record: &Record<'_>,
    store: &StoreAction,
) -> (Range<usize>, Range<usize>) {
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
    (key_start..entry_start, entry_start..data.len())
}

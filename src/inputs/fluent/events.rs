//! Fluent Forward events into records: each entry normalized as Docker's
//! GELF message for the same line would be, lines Docker split put back
//! together ([`FluentDecoder`], one per connection), and the chunk ids of
//! events already queued and acked ([`AckedChunks`], all connections
//! together), so that a resend is acked again instead of stored twice.

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

// The runtime's clock, so that deadlines and the timers that wake for
// them agree (and a paused test clock governs both).
use tokio::time::Instant;

use ::metrics::Counter;
use cowlogd_parsers::Timestamp;
use cowlogd_parsers::decompress::{Compression, Decompressor};
use cowlogd_parsers::fluent::docker::{
    PartialAssembler, PartialDrop, PartialLimits, PartialOutcome, to_gelf,
};
use cowlogd_parsers::fluent::forward::{Entries, entries, parse_event};
use cowlogd_parsers::normalize::normalize_gelf;

use crate::inputs::gelf::count_not_decompressed;
use crate::metrics::{self, DropReason, dropped, parse_error};
use crate::pipeline::ReadCycle;

/// Fluent chunk ids remembered, all connections together (about 64 bytes
/// each).
const ACKED_CHUNKS_KEPT: usize = 16_384;
/// A CompressedPackedForward event's entries kept between events.
const INFLATED_KEEP: usize = 64 * 1024;
/// Bytes a split line is kept past `limits.max_message_bytes`: more than
/// any syslog header before the message.
const PARTIAL_HEADER_ROOM: usize = 1024;

/// The chunk ids of the last Forward events queued and acked. A sender
/// that never got its ack (the connection broke after cowlogd queued the
/// event, or its own ack timeout passed) sends the event again, usually
/// on a new connection: it is acked again, not queued twice.
pub struct AckedChunks {
    kept: Mutex<lru::LruCache<Vec<u8>, ()>>,
    /// Events not queued again for it.
    resent: Counter,
}

impl Default for AckedChunks {
    fn default() -> AckedChunks {
        AckedChunks::new(ACKED_CHUNKS_KEPT)
    }
}

impl AckedChunks {
    /// Remembers up to `capacity` chunk ids.
    pub fn new(capacity: usize) -> AckedChunks {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        AckedChunks {
            kept: Mutex::new(lru::LruCache::new(capacity)),
            resent: metrics::FLUENT_RESENT.counter(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Vec<u8>, ()>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `chunk` was queued and acked before.
    pub fn contains(&self, chunk: &[u8]) -> bool {
        let kept = self.lock();
        !kept.is_empty() && kept.contains(chunk)
    }

    /// Remembers `chunks` (queued and about to be acked), forgetting the
    /// oldest beyond the capacity.
    pub fn remember(&self, chunks: impl IntoIterator<Item = Vec<u8>>) {
        let mut kept = self.lock();
        for chunk in chunks {
            kept.put(chunk, ());
        }
    }
}

/// Bounds for lines Docker's fluentd driver split, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct PartialSettings {
    /// Deadline for a split line's last part, from its first.
    pub timeout: Duration,
    /// Split lines being put together at once per connection.
    pub pending: NonZeroUsize,
    /// `limits.max_message_bytes`.
    pub max_message: usize,
}

impl PartialSettings {
    fn limits(self) -> PartialLimits {
        PartialLimits {
            max_pending: self.pending.get(),
            // Room for the nested syslog header: the message after it must
            // still come out over the limit, to be cut and marked.
            max_line_bytes: self.max_message.saturating_add(PARTIAL_HEADER_ROOM),
            timeout_ms: self.timeout.as_millis() as u64,
        }
    }
}

/// One connection's Forward decoding state.
pub struct FluentDecoder {
    partial: PartialSettings,
    /// Lines Docker split, being put together again (made on first use).
    partials: Option<PartialAssembler>,
    decompressor: Decompressor,
    /// A CompressedPackedForward event's entries.
    inflated: Vec<u8>,
    origin: Instant,
}

impl FluentDecoder {
    /// A decoder with these bounds.
    pub fn new(partial: PartialSettings, max_decompressed: usize) -> FluentDecoder {
        FluentDecoder {
            partial,
            partials: None,
            decompressor: Decompressor::new(max_decompressed),
            inflated: Vec::new(),
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// One complete Forward event (one MessagePack object) into the cycle.
    /// Returns the `chunk` the sender wants acknowledged once the cycle is
    /// queued; `None` for an event that is not one (counted). An event
    /// acked before is not stored again.
    pub fn event<'f>(
        &mut self,
        cycle: &mut ReadCycle<'_>,
        frame: &'f [u8],
        acked: &AckedChunks,
    ) -> Option<&'f [u8]> {
        let event = match parse_event(frame) {
            Ok(event) => event,
            Err(error) => {
                cycle.count_received();
                invalid(cycle, &error);
                return None;
            }
        };
        if let Some(chunk) = event.chunk
            && acked.contains(chunk)
        {
            // Queued and acked before; the ack was lost on the way.
            acked.resent.increment(1);
            return Some(chunk);
        }
        match event.entries {
            Entries::Message { time, record } => self.entry(cycle, event.tag, time, record),
            Entries::Forward { raw, .. }
            | Entries::Packed {
                raw,
                compressed: false,
            } => self.entries(cycle, event.tag, raw),
            Entries::Packed {
                raw,
                compressed: true,
            } => {
                let mut inflated = std::mem::take(&mut self.inflated);
                inflated.clear();
                match self.decompressor.decompress_as(raw, Compression::Gzip) {
                    Ok(plain) => {
                        inflated.extend_from_slice(plain);
                        self.entries(cycle, event.tag, &inflated);
                    }
                    Err(error) => {
                        cycle.count_received();
                        let what = "CompressedPackedForward entries";
                        count_not_decompressed(cycle.input(), &error, what);
                    }
                }
                if inflated.capacity() > INFLATED_KEEP {
                    inflated = Vec::new();
                }
                self.decompressor.release_oversized();
                self.inflated = inflated;
            }
        }
        event.chunk
    }

    fn entries(&mut self, cycle: &mut ReadCycle<'_>, tag: &[u8], raw: &[u8]) {
        for entry in entries(raw) {
            match entry {
                Ok((time, record)) => self.entry(cycle, tag, time, record),
                Err(error) => {
                    // The rest of the entries cannot be found.
                    cycle.count_received();
                    invalid(cycle, &error);
                }
            }
        }
    }

    fn entry(&mut self, cycle: &mut ReadCycle<'_>, tag: &[u8], time: Timestamp, record: &[u8]) {
        cycle.count_received();
        let entry = match to_gelf(tag, time, record, None) {
            Ok(entry) => entry,
            Err(error) => return invalid(cycle, &error),
        };
        let mut message = entry.gelf;
        if let Some(part) = entry.partial {
            let now_ms = self.now_ms();
            let limits = self.partial.limits();
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
                    input = cycle.input().label(),
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
        let record = normalize_gelf(&message, cycle.time(), cycle.now());
        cycle.record(&record);
    }

    /// Drops split lines whose last part is overdue (counted).
    pub fn expire_partials(&mut self, cycle: &ReadCycle<'_>) {
        let now_ms = self.now_ms();
        if let Some(partials) = self.partials.as_mut()
            && partials.pending() > 0
        {
            let expired = partials.expire(now_ms);
            if expired > 0 {
                dropped(DropReason::PartialTimeout, expired as u64);
                crate::warn_limited!(
                    input = cycle.input().label(),
                    expired,
                    "split lines incomplete at their deadline"
                );
            }
        }
    }
}

fn invalid(cycle: &ReadCycle<'_>, error: &dyn std::fmt::Display) {
    parse_error(cycle.input(), "invalid_forward");
    dropped(DropReason::InvalidForward, 1);
    crate::warn_limited!(input = cycle.input().label(), %error, "Forward event rejected");
}

//! Fluent Forward events into records: each entry normalized as Docker's
//! GELF message for the same line would be, lines Docker split put back
//! together ([`FluentDecoder`], one per connection), and the chunk ids of
//! events applied or on their way ([`AckedChunks`], all connections
//! together), so that a resend is acked instead of stored twice.

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
use crate::metrics::{self, DropReason, INVALID_FORWARD, dropped, parse_error};
use crate::pipeline::ReadCycle;

/// Fluent chunk ids remembered, all connections together (about 64 bytes
/// each).
const ACKED_CHUNKS_KEPT: usize = 16_384;
/// A CompressedPackedForward event's entries kept between events.
const INFLATED_KEEP: usize = 64 * 1024;
/// Bytes a split line is kept past `limits.max_message_bytes`: more than
/// any syslog header before the message.
const PARTIAL_HEADER_ROOM: usize = 1024;

/// The chunk ids of the last Forward events taken in, all connections
/// together: applied in Redis (acked), or still on their way there. A
/// sender that never got its ack (the connection broke, or its own ack
/// timeout passed while Redis was slow) sends the event again, usually on
/// a new connection: a resend of an applied event is acked again, a
/// resend of one still on its way waits for that one's outcome; neither is
/// stored twice.
pub struct AckedChunks {
    kept: Mutex<lru::LruCache<Vec<u8>, ChunkState>>,
    /// Events not stored again for it.
    resent: Counter,
}

/// Where an event with a chunk id is.
#[derive(Clone)]
enum ChunkState {
    /// Applied in Redis.
    Kept,
    /// In a read cycle that has not been applied yet: its outcome, told by
    /// the connection that took it in.
    OnItsWay(CycleOutcome),
}

/// A read cycle's outcome as its connection tells it: `None` until known,
/// then whether it was applied. The connection drops its sender if it ends
/// without telling; the event then counts as never taken in.
pub type CycleOutcome = tokio::sync::watch::Receiver<Option<bool>>;

/// What a Forward event's chunk means for its ack.
pub enum Ack<'f> {
    /// Ack once this cycle is applied (stored now, or applied before).
    WithCycle(&'f [u8]),
    /// A resend of an event another cycle holds: ack once that one is.
    After(&'f [u8], CycleOutcome),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Vec<u8>, ChunkState>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where `chunk` is: `None` if new (or its cycle ended untold), else
    /// applied or on its way.
    fn find(&self, chunk: &[u8]) -> Option<ChunkState> {
        let mut kept = self.lock();
        match kept.get(chunk)? {
            ChunkState::OnItsWay(outcome)
                if outcome.has_changed().is_err() && outcome.borrow().is_none() =>
            {
                kept.pop(chunk);
                None
            }
            state => Some(state.clone()),
        }
    }

    /// `chunk` is in a cycle whose outcome `outcome` will tell.
    fn hold(&self, chunk: &[u8], outcome: &CycleOutcome) {
        self.lock()
            .put(chunk.to_vec(), ChunkState::OnItsWay(outcome.clone()));
    }

    /// The cycle holding `chunks` was applied (`kept`) or not; not applied,
    /// they are forgotten, so that their resends are taken in.
    pub fn settle<'c>(&self, chunks: impl IntoIterator<Item = &'c [u8]>, kept: bool) {
        let mut known = self.lock();
        for chunk in chunks {
            if kept {
                known.put(chunk.to_vec(), ChunkState::Kept);
            } else if matches!(known.peek(chunk), Some(ChunkState::OnItsWay(_))) {
                known.pop(chunk);
            }
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

    /// One complete Forward event (one MessagePack object) into the cycle,
    /// which `outcome` will say was applied or not. Returns the `chunk`
    /// the sender wants acknowledged and when; `None` for an event without
    /// one, or not one at all (counted). An event applied before, or on its
    /// way in another cycle, is not stored again.
    pub fn event<'f>(
        &mut self,
        cycle: &mut ReadCycle<'_>,
        frame: &'f [u8],
        chunks: &AckedChunks,
        outcome: &CycleOutcome,
    ) -> Option<Ack<'f>> {
        match frame.first() {
            // A heartbeat (fluentd sends nil, and ignores it too).
            Some(0xc0) => return None,
            // Every Forward event is an array ([tag, …]): anything else is
            // not a message, so it is a parse error but no dropped
            // message (a stream of garbage bytes would otherwise count a
            // "message" per byte: each is a complete MessagePack object).
            Some(0x90..=0x9f | 0xdc | 0xdd) => {}
            _ => {
                parse_error(cycle.input(), INVALID_FORWARD);
                crate::warn_limited!(
                    input = cycle.input().label(),
                    "MessagePack object that is not a Forward event ignored"
                );
                return None;
            }
        }
        let event = match parse_event(frame) {
            Ok(event) => event,
            Err(error) => {
                cycle.count_received();
                invalid(cycle, &error);
                return None;
            }
        };
        if let Some(chunk) = event.chunk {
            match chunks.find(chunk) {
                Some(ChunkState::Kept) => {
                    // Applied before; the ack was lost on the way.
                    chunks.resent.increment(1);
                    return Some(Ack::WithCycle(chunk));
                }
                Some(ChunkState::OnItsWay(held)) => {
                    chunks.resent.increment(1);
                    return Some(Ack::After(chunk, held));
                }
                None => chunks.hold(chunk, outcome),
            }
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
        event.chunk.map(Ack::WithCycle)
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
    parse_error(cycle.input(), INVALID_FORWARD);
    dropped(DropReason::InvalidForward, 1);
    crate::warn_limited!(input = cycle.input().label(), %error, "Forward event rejected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_new_on_its_way_then_kept_and_forgotten_if_its_cycle_fails_or_vanishes() {
        let chunks = AckedChunks::new(16);
        let (tell, outcome) = tokio::sync::watch::channel(None);
        assert!(chunks.find(b"a").is_none());
        chunks.hold(b"a", &outcome);
        chunks.hold(b"b", &outcome);
        assert!(matches!(chunks.find(b"a"), Some(ChunkState::OnItsWay(_))));
        let _ = tell.send(Some(true));
        chunks.settle([&b"a"[..]], true);
        assert!(matches!(chunks.find(b"a"), Some(ChunkState::Kept)));
        // Not applied: forgotten, so that the resend is taken in; a kept
        // chunk stays kept.
        chunks.settle([&b"b"[..], &b"a"[..]], false);
        assert!(chunks.find(b"b").is_none());
        assert!(matches!(chunks.find(b"a"), Some(ChunkState::Kept)));
        // A cycle whose connection ended without telling held nothing.
        let (tell, outcome) = tokio::sync::watch::channel(None);
        chunks.hold(b"c", &outcome);
        drop(tell);
        assert!(chunks.find(b"c").is_none());
    }
}

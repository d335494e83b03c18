//! GELF's own state, for every input that carries it (UDP, TCP, HTTP):
//! decompression and invalid-UTF-8 repair per task ([`GelfDecoder`]), and
//! the chunk reassembler that all GELF UDP sockets share ([`ChunkedGelf`]:
//! chunks of one message may land on different sockets).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

// The runtime's clock, so that deadlines and the timers that wake for
// them agree (and a paused test clock governs both).
use tokio::time::Instant;

use cowlogd_parsers::ReassemblyLimits;
use cowlogd_parsers::decompress::{Compression, DecompressError, Decompressor};
use cowlogd_parsers::gelf::{ChunkError, ChunkOutcome, Reassembler, is_chunk, parse_gelf_lossy};
use cowlogd_parsers::normalize::normalize_gelf;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, DropReason, Input, dropped, parse_error};
use crate::pipeline::ReadCycle;

/// Scratch capacity (invalid UTF-8 repair) kept between messages.
const SCRATCH_KEEP: usize = 64 * 1024;
/// How often overdue chunked messages are expired.
const EXPIRE_EVERY: Duration = Duration::from_millis(250);

/// How many messages of a GELF body were taken and rejected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BodyOutcome {
    /// Parsed and routed.
    pub accepted: usize,
    /// Rejected, each counted by reason.
    pub rejected: usize,
}

/// One task's GELF decoding state.
pub struct GelfDecoder {
    decompressor: Decompressor,
    scratch: String,
}

impl GelfDecoder {
    /// A decoder whose payloads inflate to at most `max_decompressed` bytes.
    pub fn new(max_decompressed: usize) -> GelfDecoder {
        GelfDecoder {
            decompressor: Decompressor::new(max_decompressed),
            scratch: String::new(),
        }
    }

    /// One GELF UDP datagram from `peer`: a chunk or a whole payload.
    pub fn datagram(
        &mut self,
        cycle: &mut ReadCycle<'_>,
        datagram: &[u8],
        peer: SocketAddr,
        chunks: &ChunkedGelf,
    ) {
        if !is_chunk(datagram) {
            self.payload(cycle, datagram);
            return;
        }
        match chunks.add(peer, datagram) {
            Ok(ChunkOutcome::Complete(payload)) => {
                self.payload(cycle, &payload);
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
    pub fn payload(&mut self, cycle: &mut ReadCycle<'_>, payload: &[u8]) -> bool {
        self.body(cycle, payload, Compression::None, false).rejected == 0
    }

    /// A GELF body whose compression a sender may have declared (HTTP
    /// `Content-Encoding`); with `bulk`, one message per line. Each line is
    /// taken or rejected (counted) on its own.
    pub fn body(
        &mut self,
        cycle: &mut ReadCycle<'_>,
        body: &[u8],
        declared: Compression,
        bulk: bool,
    ) -> BodyOutcome {
        let mut outcome = BodyOutcome::default();
        let input = cycle.input();
        let plain = match self.decompressor.decompress_as(body, declared) {
            Ok(plain) => plain,
            Err(error) => {
                cycle.count_received();
                count_not_decompressed(input, &error, "GELF payload");
                outcome.rejected = 1;
                return outcome;
            }
        };
        let scratch = &mut self.scratch;
        let mut take = |line: &[u8]| {
            cycle.count_received();
            if json(scratch, cycle, line) {
                outcome.accepted += 1;
            } else {
                outcome.rejected += 1;
            }
        };
        if bulk {
            for line in plain.split(|&b| b == b'\n') {
                if !line.iter().all(u8::is_ascii_whitespace) {
                    take(line);
                }
            }
        } else {
            take(plain);
        }
        // A large message's buffers go: an idle connection keeps small ones.
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = String::new();
        }
        self.decompressor.release_oversized();
        outcome
    }
}

/// Parses one GELF JSON document into the cycle; `false` if rejected.
fn json(scratch: &mut String, cycle: &mut ReadCycle<'_>, json: &[u8]) -> bool {
    match parse_gelf_lossy(json, scratch) {
        Ok(message) => {
            let record = normalize_gelf(&message, cycle.time(), cycle.now());
            cycle.record(&record);
            true
        }
        Err(error) => {
            let input = cycle.input();
            parse_error(input, error.reason());
            dropped(DropReason::InvalidGelf, 1);
            crate::warn_limited!(input = input.label(), %error, "GELF message rejected");
            false
        }
    }
}

/// Counts a message that could not be decompressed, by reason.
pub fn count_not_decompressed(input: Input, error: &DecompressError, what: &str) {
    let reason = match error {
        DecompressError::TooLarge { .. } => DropReason::DecompressCap,
        _ => DropReason::DecompressError,
    };
    dropped(reason, 1);
    crate::warn_limited!(input = input.label(), %error, "{what} not decompressed");
}

/// The chunk reassembler of all GELF UDP sockets, with its clock.
pub struct ChunkedGelf {
    reassembler: Mutex<Reassembler<SocketAddr>>,
    origin: Instant,
}

impl ChunkedGelf {
    /// A reassembler bounded by `limits`.
    pub fn new(limits: ReassemblyLimits) -> Arc<ChunkedGelf> {
        Arc::new(ChunkedGelf {
            reassembler: Mutex::new(Reassembler::new(limits)),
            origin: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn add(&self, peer: SocketAddr, datagram: &[u8]) -> Result<ChunkOutcome, ChunkError> {
        let now = self.now_ms();
        let mut reassembler = self.lock();
        let outcome = reassembler.add(peer, datagram, now);
        count_chunk_drops(&mut reassembler);
        outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reassembler<SocketAddr>> {
        self.reassembler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Expires overdue chunked messages, counts them, updates the gauges.
    pub fn expire(&self) {
        let now = self.now_ms();
        let mut reassembler = self.lock();
        reassembler.expire(now);
        count_chunk_drops(&mut reassembler);
        metrics::GELF_PENDING_MESSAGES
            .gauge()
            .set(reassembler.pending_messages() as f64);
        metrics::GELF_PENDING_BYTES
            .gauge()
            .set(reassembler.pending_bytes() as f64);
    }

    /// Expires overdue messages every 250 ms until `stop`.
    pub async fn expire_until(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EXPIRE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => self.expire(),
                () = stop.cancelled() => return,
            }
        }
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

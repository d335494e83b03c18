//! TCP listeners (GELF NUL-framed, syslog octet-counted or newline):
//! admitted by [`crate::admission`], a short timeout for the first byte and
//! a long one for silence, and a read buffer bounded by the framer's
//! maximum frame and released after a large frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

// The runtime's clock, so that deadlines and the timers that wake for
// them agree (and a paused test clock governs both).
use tokio::time::Instant;

use anyhow::Context;
use cowlogd_parsers::framing::{Decoded, FrameError, Framer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::gelf::GelfDecoder;
use crate::admission::{Gate, Peer, Slot, accept};
use crate::metrics::{CloseReason, DropReason, Input, connection_closed, dropped};
use crate::pipeline::{Flush, Pipeline, Processor, ReadCycle};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 * 1024;
/// Read buffer capacity every connection may keep without charging the
/// shared budget; a buffer grown past it by a large frame is given back
/// once the frame is done.
const FREE_CAPACITY: usize = 2 * READ_SIZE;

/// Read buffer bytes above the 128 KiB each connection keeps free, across
/// all connections.
#[derive(Debug)]
pub struct BufferBudget {
    used: AtomicUsize,
    max: usize,
}

impl BufferBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<BufferBudget> {
        Arc::new(BufferBudget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + bytes <= self.max).then_some(used + bytes)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One connection's share of the [`BufferBudget`]; given back on drop.
struct Charge {
    budget: Arc<BufferBudget>,
    held: usize,
}

impl Charge {
    /// Nothing charged yet.
    fn new(budget: Arc<BufferBudget>) -> Charge {
        Charge { budget, held: 0 }
    }

    /// Charges for `buf`'s capacity above [`FREE_CAPACITY`]; `false` if the
    /// budget has no room for it.
    fn fit(&mut self, capacity: usize) -> bool {
        let wanted = capacity.saturating_sub(FREE_CAPACITY);
        if wanted > self.held {
            if !self.budget.take(wanted - self.held) {
                return false;
            }
        } else {
            self.budget.give(self.held - wanted);
        }
        self.held = wanted;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

/// Limits for TCP connections.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Longest frame.
    pub max_frame: usize,
    /// Silence after which a connection is closed.
    pub idle_timeout: Duration,
    /// How long a new connection may take to send its first byte.
    pub first_byte_timeout: Duration,
    /// Wait for queue space before dropping the oldest.
    pub queue_wait: Duration,
    /// Deadline for one frame, from its first byte.
    pub frame_timeout: Duration,
}

/// Binds a TCP listener.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: std::net::SocketAddr, input: Input) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {} on {addr}", input.label()))?;
    tracing::info!(input = input.label(), addr = %listener.local_addr()?, "listening");
    Ok(listener)
}

/// Everything a connection task needs.
#[derive(Clone)]
pub struct TcpContext {
    /// Which input.
    pub input: Input,
    /// Where records go.
    pub pipeline: Arc<Pipeline>,
    /// Who may connect, and the slots.
    pub gate: Gate,
    /// Read buffer bytes shared by all connections.
    pub buffers: Arc<BufferBudget>,
    /// Limits.
    pub limits: TcpLimits,
    /// `limits.max_decompressed_bytes` (GELF payloads).
    pub max_decompressed: usize,
}

/// Accepts connections until shutdown; each runs on `tasks`.
pub async fn serve(listener: TcpListener, context: TcpContext, tasks: TaskTracker) {
    accept::serve(listener, context.gate.clone(), tasks, context, connection).await;
}

/// A connection's read side, for every stream input: the read buffer
/// (charged to the shared budget beyond what each connection keeps free),
/// the first-byte, idle and frame timeouts, and what ends a connection,
/// counted. The caller decodes what [`StreamReader::buf`] holds and says
/// how much it used.
pub(super) struct StreamReader {
    buf: Vec<u8>,
    charge: Charge,
    /// When the frame now in `buf` began; it must end within the frame
    /// timeout, or the sender is too slow (or trickling on purpose).
    partial_since: Option<Instant>,
    silent: bool,
    input: Input,
    limits: TcpLimits,
}

impl StreamReader {
    pub(super) fn new(input: Input, limits: TcpLimits, budget: Arc<BufferBudget>) -> StreamReader {
        StreamReader {
            buf: Vec::with_capacity(READ_SIZE),
            charge: Charge::new(budget),
            partial_since: None,
            silent: true,
            input,
            limits,
        }
    }

    /// What has been read and not used yet.
    pub(super) fn buf(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more: the bytes read, or `None` when the connection is done
    /// (end of stream, shutdown, eviction, a timeout or the buffer budget;
    /// the last three counted). After a counted cut, `buf` is empty.
    pub(super) async fn read<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        slot: &Slot,
        peer: &(dyn std::fmt::Display + Sync),
    ) -> Option<usize> {
        let input = self.input.label();
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
            if !self.charge.fit(self.buf.len() + READ_SIZE) {
                dropped(DropReason::BufferBudget, 1);
                crate::warn_limited!(input, %peer, "read buffers of all connections at limits.tcp_buffers_total_bytes; closing");
                self.buf.clear();
                return None;
            }
            // Exact: a doubling buffer would hold twice what is charged.
            self.buf.reserve_exact(READ_SIZE);
        }
        let limits = self.limits;
        let wait = match self.partial_since {
            Some(since) => limits
                .idle_timeout
                .min(limits.frame_timeout.saturating_sub(since.elapsed())),
            None if self.silent => limits.first_byte_timeout,
            None => limits.idle_timeout,
        };
        let read = tokio::select! {
            read = tokio::time::timeout(wait, stream.read_buf(&mut self.buf)) => read,
            () = slot.ending().cancelled() => return None,
        };
        match read {
            Err(_)
                if self
                    .partial_since
                    .is_some_and(|since| since.elapsed() >= limits.frame_timeout) =>
            {
                dropped(DropReason::SlowSender, 1);
                crate::warn_limited!(input, %peer, "frame not completed within inputs.tcp_frame_timeout_s; closing");
                self.buf.clear();
                None
            }
            Err(_) => {
                let reason = if self.silent {
                    CloseReason::FirstByteTimeout
                } else {
                    CloseReason::IdleTimeout
                };
                connection_closed(slot.pool().label(), reason);
                tracing::debug!(%peer, reason = reason.label(), "timeout; closing");
                None
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "read failed; closing");
                None
            }
            Ok(Ok(0)) => None,
            Ok(Ok(len)) => {
                // Not activity yet: that is a frame that parses (the
                // caller touches the slot), not any byte.
                self.silent = false;
                Some(len)
            }
        }
    }

    /// The caller used `used` bytes of [`StreamReader::buf`]: they go, a
    /// buffer a large frame grew is given back, and the frame timer runs
    /// from now if a new frame began.
    pub(super) fn consume(&mut self, used: usize) {
        self.buf.drain(..used);
        if self.buf.capacity() > FREE_CAPACITY && self.buf.len() < READ_SIZE {
            // A large frame is done: keep a small buffer while idle.
            self.buf.shrink_to(READ_SIZE.max(self.buf.len()));
            self.charge.fit(self.buf.capacity());
        }
        if self.buf.is_empty() {
            self.partial_since = None;
        } else if used > 0 || self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
    }
}

/// What a stream input decodes its frames as.
enum FrameDecoder {
    Gelf(Box<GelfDecoder>),
    Syslog,
}

impl FrameDecoder {
    fn frame(&mut self, cycle: &mut ReadCycle<'_>, frame: &[u8]) {
        match self {
            FrameDecoder::Gelf(gelf) => {
                if !frame.iter().all(u8::is_ascii_whitespace) {
                    gelf.payload(cycle, frame);
                }
            }
            FrameDecoder::Syslog => super::syslog::line(cycle, frame),
        }
    }
}

async fn connection(mut stream: TcpStream, peer: Peer, slot: Slot, context: TcpContext) {
    let input = context.input;
    let (mut framer, mut decoder) = if input.is_gelf() {
        (
            Framer::nul(context.limits.max_frame),
            FrameDecoder::Gelf(Box::new(GelfDecoder::new(context.max_decompressed))),
        )
    } else {
        (
            Framer::syslog(context.limits.max_frame),
            FrameDecoder::Syslog,
        )
    };
    let mut processor = Processor::new(input, context.pipeline.clone());
    if let Some(ip) = peer.ip() {
        processor.set_peer(ip);
    }
    processor.set_activity(slot.activity());
    let mut reader = StreamReader::new(input, context.limits, context.buffers.clone());
    let flush = Flush::WaitUpTo(context.limits.queue_wait);
    while let Some(len) = reader.read(&mut stream, &slot, &peer).await {
        let mut cycle = processor.begin();
        cycle.count_bytes(len);
        let used = decode_frames(&mut framer, reader.buf(), &mut cycle, &mut decoder);
        reader.consume(used);
        cycle.finish(flush).await;
    }
    // What is left is a last frame without its delimiter, or a cut one.
    let mut cycle = processor.begin();
    match framer.finish(reader.buf()) {
        Some(Ok(frame)) => decoder.frame(&mut cycle, frame),
        Some(Err(error)) => frame_error(input, peer, error),
        None => {}
    }
    cycle.finish(flush).await;
}

/// Decodes every complete frame in `buf`; returns the bytes used (frames
/// ended or skipped).
fn decode_frames(
    framer: &mut Framer,
    buf: &[u8],
    cycle: &mut ReadCycle<'_>,
    decoder: &mut FrameDecoder,
) -> usize {
    let mut used = 0;
    loop {
        match framer.decode(&buf[used..]) {
            Decoded::Frame { frame, consumed } => {
                used += consumed;
                decoder.frame(cycle, frame);
            }
            Decoded::Skipped { consumed, error } => {
                used += consumed;
                if let Some(error) = error {
                    dropped(DropReason::Oversize, 1);
                    crate::warn_limited!(input = cycle.input().label(), %error, "frame too long; skipped");
                }
            }
            Decoded::NeedMore => return used,
        }
    }
}

fn frame_error(input: Input, peer: Peer, error: FrameError) {
    let reason = match error {
        FrameError::TooLong { .. } => DropReason::Oversize,
        _ => DropReason::Truncated,
    };
    dropped(reason, 1);
    crate::warn_limited!(input = input.label(), %peer, %error, "frame lost at end of connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_takes_only_what_passes_the_free_share_and_gives_it_back() {
        let budget = BufferBudget::new(3 * READ_SIZE);
        let mut charge = Charge::new(budget.clone());
        assert!(charge.fit(FREE_CAPACITY), "the free share costs nothing");
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
        assert!(charge.fit(FREE_CAPACITY + 2 * READ_SIZE));
        assert_eq!(budget.used.load(Ordering::Relaxed), 2 * READ_SIZE);
        let mut other = Charge::new(budget.clone());
        assert!(!other.fit(FREE_CAPACITY + 2 * READ_SIZE), "past the budget");
        assert!(other.fit(FREE_CAPACITY + READ_SIZE));
        // Shrinking gives back; dropping gives back the rest.
        assert!(charge.fit(FREE_CAPACITY));
        assert_eq!(budget.used.load(Ordering::Relaxed), READ_SIZE);
        drop(other);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn frames_split_across_reads_are_decoded_once_whole_and_an_oversized_one_is_skipped() {
        let h = crate::pipeline::tests::harness("");
        let line = |n: usize| {
            format!(
                "<22>1 2026-11-24T13:49:59Z mail postfix-mailcow 1 - - Nov 24 13:49:59 mail postfix/smtpd[7]: msg {n}"
            )
        };
        let frame = |n: usize| format!("{} {}", line(n).len(), line(n)).into_bytes();
        let mut stream = frame(1);
        stream.extend_from_slice(b"999999 ");
        stream.extend_from_slice(&[b'x'; 300]);
        let mut framer = Framer::syslog(256);
        let mut decoder = FrameDecoder::Syslog;
        let mut processor = Processor::new(Input::SyslogTcp, h.pipeline.clone());
        let mut buf = Vec::new();
        let mut cycle = processor.begin();
        // Frame 1 arrives in two reads: nothing until it is whole.
        let (head, tail) = stream.split_at(10);
        buf.extend_from_slice(head);
        let used = decode_frames(&mut framer, &buf, &mut cycle, &mut decoder);
        assert_eq!(used, 0);
        buf.extend_from_slice(tail);
        let used = decode_frames(&mut framer, &buf, &mut cycle, &mut decoder);
        buf.drain(..used);
        cycle.finish(Flush::DropOldest).await;
        let ops = crate::pipeline::tests::queued(&h.redis);
        assert_eq!(ops.len(), 1);
        assert!(ops[0].1.contains("msg 1"), "{}", ops[0].1);
        // The oversized frame is being skipped, not buffered.
        assert!(buf.len() < 256, "{} bytes kept", buf.len());
    }
}

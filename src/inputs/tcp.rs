//! TCP listeners (GELF NUL-framed, syslog octet-counted or newline): caps on
//! connections taken at accept ([`super::slots`]), a short timeout for the
//! first byte and a long one for silence, and a read buffer bounded by the
//! framer's maximum frame and released after a large frame.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cowlogd_parsers::framing::{Decoded, FrameError, Framer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Allowlist;
use super::slots::{ConnectionSlots, Slot, closed};
use crate::metrics::{DropReason, Input, dropped, tcp_connections};
use crate::pipeline::{Processor, Shared};

/// Bytes asked of the socket per read.
pub(super) const READ_SIZE: usize = 64 * 1024;
/// Read buffer capacity every connection may keep without charging the
/// shared budget; a buffer grown past it by a large frame is given back
/// once the frame is done.
pub(super) const FREE_CAPACITY: usize = 2 * READ_SIZE;

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
pub(super) struct Charge {
    budget: Arc<BufferBudget>,
    held: usize,
}

impl Charge {
    /// Nothing charged yet.
    pub(super) fn new(budget: Arc<BufferBudget>) -> Charge {
        Charge { budget, held: 0 }
    }

    /// Charges for `buf`'s capacity above [`FREE_CAPACITY`]; `false` if the
    /// budget has no room for it.
    pub(super) fn fit(&mut self, capacity: usize) -> bool {
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
pub async fn bind(addr: SocketAddr, input: Input) -> anyhow::Result<TcpListener> {
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
    /// Processing state shared by all tasks.
    pub shared: Arc<Shared>,
    /// Who may send.
    pub allow: Arc<Allowlist>,
    /// Connection slots.
    pub slots: Arc<ConnectionSlots>,
    /// Read buffer bytes shared by all connections.
    pub buffers: Arc<BufferBudget>,
    /// Limits.
    pub limits: TcpLimits,
    /// Stops accepting and reading.
    pub shutdown: CancellationToken,
}

/// Accepts connections until shutdown; each runs on `tasks`.
pub async fn serve(listener: TcpListener, context: TcpContext, tasks: TaskTracker) {
    let input = context.input;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = context.shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: pause, do not spin.
                crate::warn_limited!(input = input.label(), %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = context.slots.admit(&context.allow, peer, input.label()) else {
            continue;
        };
        tasks.spawn(connection(stream, peer, slot, context.clone()));
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, slot: Slot, context: TcpContext) {
    let input = context.input;
    let open = tcp_connections(input);
    open.increment(1.0);
    let mut framer = if input.is_gelf() {
        Framer::nul(context.limits.max_frame)
    } else {
        Framer::syslog(context.limits.max_frame)
    };
    let mut processor = Processor::new(input, context.shared.clone());
    processor.set_peer(peer.ip());
    let mut buf: Vec<u8> = Vec::with_capacity(READ_SIZE);
    // When the frame now in `buf` began; a frame must end within the frame
    // timeout, or the sender is too slow (or trickling on purpose).
    let mut partial_since: Option<Instant> = None;
    let mut silent = true;
    let activity = slot.activity();
    let mut charge = Charge {
        budget: context.buffers.clone(),
        held: 0,
    };
    loop {
        if buf.capacity() - buf.len() < READ_SIZE / 2 {
            if !charge.fit(buf.len() + READ_SIZE) {
                dropped(DropReason::BufferBudget, 1);
                crate::warn_limited!(input = input.label(), %peer, "read buffers of all connections at limits.tcp_buffers_total_bytes; closing");
                buf.clear();
                break;
            }
            // Exact: a doubling buffer would hold twice what is charged.
            buf.reserve_exact(READ_SIZE);
        }
        let wait = match partial_since {
            Some(since) => context
                .limits
                .idle_timeout
                .min(context.limits.frame_timeout.saturating_sub(since.elapsed())),
            None if silent => context.limits.first_byte_timeout,
            None => context.limits.idle_timeout,
        };
        let read = tokio::select! {
            read = tokio::time::timeout(wait, stream.read_buf(&mut buf)) => read,
            () = context.shutdown.cancelled() => break,
            () = slot.evicted() => break,
        };
        let len = match read {
            Err(_)
                if partial_since
                    .is_some_and(|since| since.elapsed() >= context.limits.frame_timeout) =>
            {
                dropped(DropReason::SlowSender, 1);
                crate::warn_limited!(input = input.label(), %peer, "frame not completed within inputs.tcp_frame_timeout_s; closing");
                buf.clear();
                break;
            }
            Err(_) => {
                let reason = if silent {
                    "first_byte_timeout"
                } else {
                    "idle_timeout"
                };
                closed("tcp", reason);
                tracing::debug!(%peer, reason, "timeout; closing");
                break;
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "read failed; closing");
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Ok(len)) => len,
        };
        silent = false;
        activity.touch();
        processor.begin();
        processor.count_bytes(len);
        let (used, progressed) = decode_frames(&mut framer, &buf, &mut processor, input);
        buf.drain(..used);
        if buf.capacity() > FREE_CAPACITY && buf.len() < READ_SIZE {
            // A large frame is done: keep a small buffer while idle.
            buf.shrink_to(READ_SIZE.max(buf.len()));
            charge.fit(buf.capacity());
        }
        if buf.is_empty() {
            partial_since = None;
        } else if progressed || partial_since.is_none() {
            partial_since = Some(Instant::now());
        }
        processor.flush_waiting(context.limits.queue_wait).await;
    }
    // What is left is a last frame without its delimiter, or a cut one.
    match framer.finish(&buf) {
        Some(Ok(frame)) => {
            processor.begin();
            frame_to(&mut processor, input, frame);
        }
        Some(Err(error)) => frame_error(input, peer, error),
        None => {}
    }
    processor.flush_waiting(context.limits.queue_wait).await;
    open.decrement(1.0);
}

/// Decodes every complete frame in `buf`; returns the bytes used and
/// whether any frame ended (or was skipped) — progress for the frame timer.
fn decode_frames(
    framer: &mut Framer,
    buf: &[u8],
    processor: &mut Processor,
    input: Input,
) -> (usize, bool) {
    let mut used = 0;
    loop {
        match framer.decode(&buf[used..]) {
            Decoded::Frame { frame, consumed } => {
                used += consumed;
                frame_to(processor, input, frame);
            }
            Decoded::Skipped { consumed, error } => {
                used += consumed;
                if let Some(error) = error {
                    dropped(DropReason::Oversize, 1);
                    crate::warn_limited!(input = input.label(), %error, "frame too long; skipped");
                }
            }
            Decoded::NeedMore => return (used, used > 0),
        }
    }
}

fn frame_to(processor: &mut Processor, input: Input, frame: &[u8]) {
    if input.is_gelf() {
        if !frame.iter().all(u8::is_ascii_whitespace) {
            processor.gelf_payload(frame);
        }
    } else {
        processor.syslog_line(frame);
    }
}

fn frame_error(input: Input, peer: SocketAddr, error: FrameError) {
    let reason = match error {
        FrameError::TooLong { .. } => DropReason::Oversize,
        _ => DropReason::Truncated,
    };
    dropped(reason, 1);
    crate::warn_limited!(input = input.label(), %peer, %error, "frame lost at end of connection");
}

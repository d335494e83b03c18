//! TCP listeners (GELF NUL-framed, syslog octet-counted or newline): caps on
//! connections (global and per address) taken at accept, an idle timeout,
//! and a read buffer bounded by the framer's maximum frame.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cowlogd_parsers::framing::{Decoded, FrameError, Framer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Allowlist;
use crate::metrics::{DropReason, Input, dropped, tcp_connections};
use crate::pipeline::{Processor, Shared};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 * 1024;

/// Limits for TCP connections.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Longest frame.
    pub max_frame: usize,
    /// Silence after which a connection is closed.
    pub idle_timeout: Duration,
    /// Wait for queue space before dropping the oldest.
    pub queue_wait: Duration,
    /// Deadline for one frame, from its first byte.
    pub frame_timeout: Duration,
}

/// Connection slots: a global semaphore and a count per address.
pub struct ConnectionSlots {
    global: Arc<Semaphore>,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    max_per_source: usize,
}

/// A held slot; frees itself when dropped.
pub struct Slot {
    _global: OwnedSemaphorePermit,
    slots: Arc<ConnectionSlots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .per_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl ConnectionSlots {
    /// Slots for `max` connections, `max_per_source` per address.
    pub fn new(max: usize, max_per_source: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            global: Arc::new(Semaphore::new(max)),
            per_source: Mutex::new(HashMap::new()),
            max_per_source,
        })
    }

    /// Admits a new connection from `peer`: the sender must be allowed and
    /// both caps must have room; a refusal is counted and logged, and the
    /// caller closes the connection.
    pub fn admit(
        self: &Arc<Self>,
        allow: &Allowlist,
        peer: SocketAddr,
        input: Input,
    ) -> Option<Slot> {
        if !allow.allows(peer.ip()) {
            dropped(DropReason::NotAllowed, 1);
            crate::warn_limited!(input = input.label(), %peer, "sender not in inputs.allow; connection closed");
            return None;
        }
        let slot = self.try_take(peer.ip());
        if slot.is_none() {
            dropped(DropReason::ConnectionLimit, 1);
            crate::warn_limited!(input = input.label(), %peer, "connection limit reached; connection closed");
        }
        slot
    }

    fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let global = self.global.clone().try_acquire_owned().ok()?;
        let mut counts = self
            .per_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max_per_source {
            return None;
        }
        *count += 1;
        Some(Slot {
            _global: global,
            slots: self.clone(),
            ip,
        })
    }
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
        let Some(slot) = context.slots.admit(&context.allow, peer, input) else {
            continue;
        };
        tasks.spawn(connection(stream, peer, slot, context.clone()));
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, _slot: Slot, context: TcpContext) {
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
    loop {
        if buf.capacity() - buf.len() < READ_SIZE / 2 {
            buf.reserve(READ_SIZE);
        }
        let wait = match partial_since {
            Some(since) => context
                .limits
                .idle_timeout
                .min(context.limits.frame_timeout.saturating_sub(since.elapsed())),
            None => context.limits.idle_timeout,
        };
        let read = tokio::select! {
            read = tokio::time::timeout(wait, stream.read_buf(&mut buf)) => read,
            () = context.shutdown.cancelled() => break,
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
                tracing::debug!(%peer, "idle timeout; closing");
                break;
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "read failed; closing");
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Ok(len)) => len,
        };
        processor.begin();
        processor.count_bytes(len);
        let (used, progressed) = decode_frames(&mut framer, &buf, &mut processor, input);
        buf.drain(..used);
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

//! Fluent Forward listeners (Docker's `fluentd` driver), on TCP and on a
//! unix socket: MessagePack events cut from the stream by an
//! [`ObjectScanner`] (each byte scanned once however the object is
//! trickled), bounded by `limits.max_frame_bytes`; an event that asks
//! for it (`fluentd-request-ack`) is acknowledged only once the read
//! cycle's records are kept: on disk with `[queue] dir`, else applied in
//! Redis ([`Flush::UntilKept`]). A full queue delays the ack —
//! the backpressure Docker's driver understands (it buffers, up to
//! `fluentd-buffer-limit`) — instead of acking and dropping.
//!
//! The same caps, allowlist and timeouts apply as to the other TCP inputs;
//! a unix socket's peers are trusted by the socket file's permissions.
//! A connection whose slot is evicted stops waiting (for queue room, for
//! Redis, for a resend's first copy) and closes unacked: the sender
//! resends. `events` turns the events into records.

mod events;

pub use events::{Ack, AckedChunks, CycleOutcome, FluentDecoder, PartialSettings};

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cowlogd_parsers::docker_logs::Checkpoint;
use cowlogd_parsers::fluent::msgpack::{MsgpackError, ObjectScanner};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::task::TaskTracker;

use super::tcp::{StreamReader, TcpContext};
use crate::admission::{Listen, Peer, Slot, accept};
use crate::metrics::{DropReason, dropped};
use crate::pipeline::{Flush, Processor};

/// What a fluent connection needs beyond any stream input's context.
#[derive(Clone)]
pub struct FluentContext {
    /// Slots, buffers, timeouts, the pipeline.
    pub stream: TcpContext,
    /// Bounds for lines Docker split.
    pub partial: PartialSettings,
    /// Events queued and acked, all fluent connections together.
    pub acked: Arc<AckedChunks>,
}

/// Binds the unix socket at `path` with `mode`, replacing a stale socket
/// file (not any other kind of file).
///
/// # Errors
/// When the path is taken by something else or cannot be bound.
pub fn bind_unix(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "inputs.fluent_unix: {} exists and is not a socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding fluent_unix on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    tracing::info!(input = "fluent_unix", path = %path.display(), mode = format!("{mode:o}"), "listening");
    Ok(listener)
}

/// Accepts connections (TCP or unix socket) until shutdown; each runs on
/// `tasks`.
pub async fn serve<L>(listener: L, context: FluentContext, tasks: TaskTracker)
where
    L: Listen,
    L::Stream: AsyncRead + AsyncWrite + Unpin,
{
    let gate = context.stream.gate.clone();
    accept::serve(listener, gate, tasks, context, connection).await;
}

/// [`serve`] on a unix socket, then removes the socket file.
pub async fn serve_unix(
    listener: UnixListener,
    path: std::path::PathBuf,
    context: FluentContext,
    tasks: TaskTracker,
) {
    serve(listener, context, tasks).await;
    let _ = std::fs::remove_file(&path);
}

/// How long writing a cycle's acks may take.
const ACK_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `{"ack": chunk}`, as fluentd answers.
fn write_ack(out: &mut Vec<u8>, chunk: &[u8]) {
    out.extend_from_slice(b"\x81\xa3ack");
    cowlogd_parsers::fluent::msgpack::write_str(out, chunk);
}

async fn connection<S>(mut stream: S, peer: Peer, slot: Slot, context: FluentContext)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let FluentContext {
        stream: context,
        partial,
        acked: chunks,
    } = context;
    let input = context.input;
    let limits = context.limits;
    let mut processor = Processor::new(input, context.pipeline.clone());
    let mut decoder = FluentDecoder::new(partial, context.max_decompressed);
    match peer.ip() {
        Some(ip) => processor.set_peer(ip),
        None => processor.set_peer_host("localhost"),
    }
    processor.set_activity(slot.activity());
    let mut scanner = ObjectScanner::default();
    let mut reader = StreamReader::new(input, limits, context.buffers.clone());
    // This read cycle's acks, the chunk ids it took in, and the resends
    // whose ack waits for another cycle.
    let mut acks: Vec<u8> = Vec::new();
    let mut taken: Vec<Vec<u8>> = Vec::new();
    let mut waiting: Vec<(Vec<u8>, CycleOutcome)> = Vec::new();
    'read: while let Some(len) = reader.read(&mut stream, &slot, &peer).await {
        let (tell, outcome) = tokio::sync::watch::channel(None);
        let mut cycle = processor.begin();
        cycle.count_bytes(len);
        decoder.expire_partials(&cycle);
        let mut used = 0;
        let mut broken = None;
        loop {
            match scanner.scan(&reader.buf()[used..], limits.max_frame) {
                Ok(Some(len)) => {
                    let frame = &reader.buf()[used..used + len];
                    match decoder.event(&mut cycle, frame, &chunks, &outcome) {
                        Some(Ack::WithCycle(chunk)) => {
                            write_ack(&mut acks, chunk);
                            // A sender's chunk id is never stored as one of
                            // the Docker source's checkpoints.
                            if !Checkpoint::is_token(chunk) {
                                taken.push(chunk.to_vec());
                            }
                        }
                        Some(Ack::After(chunk, held)) => waiting.push((chunk.to_vec(), held)),
                        None => {}
                    }
                    used += len;
                }
                Ok(None) => break,
                Err(error) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        reader.consume(used);
        if acks.is_empty() && waiting.is_empty() {
            cycle.finish(Flush::WaitUpTo(limits.queue_wait)).await;
        } else {
            // Eviction ends the wait at once (the slot's `ending` makes
            // the queue give up too); shutdown lets the writer finish
            // what it is applying.
            let kept = tokio::select! {
                kept = cycle.finish(Flush::UntilKept(slot.ending(), &taken)) => kept,
                () = slot.evicted() => false,
            };
            let _ = tell.send(Some(kept));
            chunks.settle(taken.iter().map(Vec::as_slice), kept);
            taken.clear();
            if !kept {
                // Not kept, not acked: closing makes the sender resend.
                tracing::info!(peer = %peer, "events not kept in Redis (queue full, stopping or evicted); closing unacked, the sender resends them");
                break;
            }
            for (chunk, mut held) in waiting.drain(..) {
                if !other_cycle_kept(&mut held, slot.ending()).await {
                    tracing::info!(peer = %peer, "a resent event's first copy was not kept; closing unacked, the sender resends it");
                    break 'read;
                }
                write_ack(&mut acks, &chunk);
            }
            // Sent even when stopping (what it acks is kept; an ack lost
            // here is a resend stored twice), but not to a peer that stops
            // reading, and not once evicted.
            let written = tokio::select! {
                written = tokio::time::timeout(ACK_WRITE_TIMEOUT, stream.write_all(&acks)) => {
                    written.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                }
                () = slot.evicted() => Err(std::io::ErrorKind::ConnectionAborted.into()),
            };
            if let Err(error) = written {
                tracing::debug!(peer = %peer, %error, "ack not sent; closing");
                break;
            }
            acks.clear();
        }
        if let Some(error) = broken {
            // The stream cannot be followed past a broken object.
            let reason = match error {
                MsgpackError::TooLarge { .. } => DropReason::Oversize,
                _ => DropReason::InvalidForward,
            };
            dropped(reason, 1);
            crate::warn_limited!(input = input.label(), peer = %peer, %error, "not a Forward stream; closing");
            return close(stream).await;
        }
    }
    if !reader.buf().is_empty() {
        dropped(DropReason::Truncated, 1);
        crate::warn_limited!(input = input.label(), peer = %peer, "connection closed inside an event; it is lost");
    }
    close(stream).await;
}

/// Waits for the cycle holding a resent event's first copy: whether it was
/// applied. A cycle that ended untold (its connection gone) was not;
/// `ending` (this connection evicted, the daemon stopping) gives up.
async fn other_cycle_kept(
    held: &mut CycleOutcome,
    ending: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        told = held.wait_for(Option::is_some) => told.is_ok_and(|told| *told == Some(true)),
        () = ending.cancelled() => false,
    }
}

async fn close<S: AsyncWrite + Unpin>(mut stream: S) {
    // Bounded: a peer that stopped reading cannot hold the task.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.shutdown()).await;
}

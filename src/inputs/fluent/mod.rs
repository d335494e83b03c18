//! Fluent Forward listeners (Docker's `fluentd` driver), on TCP and on a
//! unix socket: MessagePack events cut from the stream by
//! [`object_len`], bounded by `limits.max_frame_bytes`; an event that asks
//! for it (`fluentd-request-ack`) is acknowledged only once the read
//! cycle's records are kept: on disk with `[queue] dir`, else applied in
//! Redis ([`Flush::UntilKept`]). A full queue delays the ack —
//! the backpressure Docker's driver understands (it buffers, up to
//! `fluentd-buffer-limit`) — instead of acking and dropping.
//!
//! The same caps, allowlist and timeouts apply as to the other TCP inputs;
//! a unix socket's peers are trusted by the socket file's permissions.
//! `events` turns the events into records.

mod events;

pub use events::{Ack, AckedChunks, CycleOutcome, FluentDecoder, PartialSettings};

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cowlogd_parsers::fluent::msgpack::{MsgpackError, object_len};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::task::TaskTracker;

use super::slots::Slot;
use super::tcp::{StreamReader, TcpContext};
use crate::metrics::{DropReason, dropped, tcp_connections};
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

/// Accepts TCP connections until shutdown; each runs on `tasks`.
pub async fn serve_tcp(listener: TcpListener, context: FluentContext, tasks: TaskTracker) {
    let stream_context = context.stream.clone();
    super::tcp::accept(
        listener,
        stream_context,
        tasks,
        move |stream, peer, slot, _| connection(stream, Some(peer), slot, context.clone()),
    )
    .await;
}

/// Accepts unix socket connections until shutdown, then removes the socket
/// file.
pub async fn serve_unix(
    listener: UnixListener,
    path: std::path::PathBuf,
    context: FluentContext,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = context.stream.shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                crate::warn_limited!(input = context.stream.input.label(), %error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = context
            .stream
            .slots
            .admit_local(context.stream.input.label())
        else {
            continue;
        };
        tasks.spawn(connection(stream, None, slot, context.clone()));
    }
    let _ = std::fs::remove_file(&path);
}

/// `{"ack": chunk}`, as fluentd answers.
fn write_ack(out: &mut Vec<u8>, chunk: &[u8]) {
    out.extend_from_slice(b"\x81\xa3ack");
    cowlogd_parsers::fluent::msgpack::write_str(out, chunk);
}

async fn connection<S>(mut stream: S, peer: Option<SocketAddr>, slot: Slot, context: FluentContext)
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
    let open = tcp_connections(input);
    open.increment(1.0);
    let mut processor = Processor::new(input, context.pipeline.clone());
    let mut decoder = FluentDecoder::new(partial, context.max_decompressed);
    match peer {
        Some(peer) => processor.set_peer(peer.ip()),
        None => processor.set_peer_host("localhost"),
    }
    let shown = peer.map_or_else(|| "unix socket".to_owned(), |p| p.to_string());
    let mut reader = StreamReader::new(input, limits, context.buffers.clone());
    // This read cycle's acks, the chunk ids it took in, and the resends
    // whose ack waits for another cycle.
    let mut acks: Vec<u8> = Vec::new();
    let mut taken: Vec<Vec<u8>> = Vec::new();
    let mut waiting: Vec<(Vec<u8>, CycleOutcome)> = Vec::new();
    'read: while let Some(len) = reader
        .read(&mut stream, &slot, &context.shutdown, &shown)
        .await
    {
        let (tell, outcome) = tokio::sync::watch::channel(None);
        let mut cycle = processor.begin();
        cycle.count_bytes(len);
        decoder.expire_partials(&cycle);
        let mut used = 0;
        let mut broken = None;
        loop {
            match object_len(&reader.buf()[used..], limits.max_frame) {
                Ok(Some(len)) => {
                    let frame = &reader.buf()[used..used + len];
                    match decoder.event(&mut cycle, frame, &chunks, &outcome) {
                        Some(Ack::WithCycle(chunk)) => {
                            write_ack(&mut acks, chunk);
                            taken.push(chunk.to_vec());
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
            let kept = cycle
                .finish(Flush::UntilKept(&context.shutdown, &taken))
                .await;
            let _ = tell.send(Some(kept));
            chunks.settle(taken.iter().map(Vec::as_slice), kept);
            taken.clear();
            if !kept {
                // Not kept, not acked: closing makes the sender resend.
                tracing::info!(peer = %shown, "events not kept in Redis (queue full or stopping); closing unacked, the sender resends them");
                break;
            }
            for (chunk, mut held) in waiting.drain(..) {
                if !other_cycle_kept(&mut held, &context.shutdown).await {
                    tracing::info!(peer = %shown, "a resent event's first copy was not kept; closing unacked, the sender resends it");
                    break 'read;
                }
                write_ack(&mut acks, &chunk);
            }
            if let Err(error) = stream.write_all(&acks).await {
                tracing::debug!(peer = %shown, %error, "ack not sent; closing");
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
            crate::warn_limited!(input = input.label(), peer = %shown, %error, "not a Forward stream; closing");
            return close(stream, open).await;
        }
    }
    if !reader.buf().is_empty() {
        dropped(DropReason::Truncated, 1);
        crate::warn_limited!(input = input.label(), peer = %shown, "connection closed inside an event; it is lost");
    }
    close(stream, open).await;
}

/// Waits for the cycle holding a resent event's first copy: whether it was
/// applied. A cycle that ended untold (its connection gone) was not.
async fn other_cycle_kept(
    held: &mut CycleOutcome,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        told = held.wait_for(Option::is_some) => told.is_ok_and(|told| *told == Some(true)),
        () = shutdown.cancelled() => false,
    }
}

async fn close<S: AsyncWrite + Unpin>(mut stream: S, open: metrics::Gauge) {
    let _ = stream.shutdown().await;
    open.decrement(1.0);
}

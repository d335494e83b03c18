//! Forwarding to Graylog (or any GELF receiver): one task draining the
//! forwarding queue.
//!
//! UDP: each message compressed and, when it does not fit one datagram,
//! chunked as go-gelf does; a message that would need more than 128 chunks
//! has its `short_message`/`full_message` cut until it fits (counted in
//! `cowlogd_graylog_truncated_total`), or is dropped and counted if even
//! that fails. The name is resolved again every 30 s.
//!
//! TCP: NUL-framed JSON, reconnect with back-off, the name resolved again at
//! every connect (Docker's own GELF writer resolves once, ever). A batch
//! being written when the connection fails is written again on the next one
//! (Graylog may see a message twice, never lose one to a reconnect).
//!
//! The queue in front drops its oldest messages when Graylog is slower than
//! the input, so forwarding never holds back the Redis path.

use std::sync::Arc;
use std::time::Duration;

// The runtime's clock, so that deadlines and the timers that wake for
// them agree (and a paused test clock governs both).
use tokio::time::Instant;

use ::metrics::Counter;
use cowlogd_parsers::encode::compress::Compressor;
use cowlogd_parsers::encode::gelf::{ChunkingError, for_each_chunk, max_chunked_payload};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::batch::GelfBatch;
use crate::config::{GraylogSettings, GraylogTransport};
use crate::metrics::{self, DropReason, dropped};
use crate::queue::BatchQueue;

/// Most messages taken from the queue at once (and at most the queue's own
/// capacity, so what is held while Graylog is away stays within twice the
/// configured queue).
const BATCH_MAX: usize = 4096;
/// How often a UDP target's name is resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// First back-off after a TCP failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Halvings of the text tried before a too-large message is dropped.
const MAX_TRUNCATIONS: usize = 12;

/// The forwarding task's state.
pub struct GraylogWriter {
    settings: GraylogSettings,
    queue: Arc<BatchQueue<GelfBatch>>,
    shutdown_flush: Duration,
    forwarded: Counter,
    truncated: Counter,
    reconnects: Counter,
}

impl GraylogWriter {
    /// A writer for `settings` draining `queue`.
    pub fn new(
        settings: GraylogSettings,
        queue: Arc<BatchQueue<GelfBatch>>,
        shutdown_flush: Duration,
    ) -> Self {
        GraylogWriter {
            settings,
            queue,
            shutdown_flush,
            forwarded: metrics::GRAYLOG_FORWARDED.counter(),
            truncated: metrics::GRAYLOG_TRUNCATED.counter(),
            reconnects: metrics::GRAYLOG_RECONNECTS.counter(),
        }
    }

    /// Forwards until `drain` fires, then what is queued, within the
    /// shutdown deadline.
    pub async fn run(self, drain: CancellationToken) {
        match self.settings.transport {
            GraylogTransport::Udp => self.run_udp(drain).await,
            GraylogTransport::Tcp => self.run_tcp(drain).await,
        }
    }

    /// Waits for work; `None` when draining is over.
    async fn next(
        &self,
        drain: &CancellationToken,
        deadline: &mut Option<Instant>,
    ) -> Option<Vec<GelfBatch>> {
        if deadline.is_none() {
            tokio::select! {
                () = self.queue.wait_not_empty() => {}
                () = drain.cancelled() => {}
            }
            if drain.is_cancelled() {
                *deadline = Some(Instant::now() + self.shutdown_flush);
            }
        }
        let batches = self
            .queue
            .take(BATCH_MAX.min(self.settings.queue_messages), usize::MAX);
        if batches.is_empty() && deadline.is_some() {
            return None;
        }
        Some(batches)
    }

    async fn run_udp(self, drain: CancellationToken) {
        let target = self.settings.target.clone();
        let mut compressor = Compressor::new(self.settings.codec);
        let chunk_size = self.settings.chunk_size;
        let mut compressed = Vec::new();
        let mut scratch = Vec::new();
        let mut resolved: Option<(std::net::SocketAddr, Instant)> = None;
        let mut socket: Option<UdpSocket> = None;
        let mut deadline = None;
        while let Some(batches) = self.next(&drain, &mut deadline).await {
            let stale = resolved.is_none_or(|(_, at)| at.elapsed() > RESOLVE_EVERY);
            if stale {
                match tokio::net::lookup_host(&target).await.map(|mut a| a.next()) {
                    Ok(Some(addr)) => {
                        if resolved.is_none_or(|(old, _)| old.is_ipv4() != addr.is_ipv4()) {
                            let local = if addr.is_ipv4() {
                                "0.0.0.0:0"
                            } else {
                                "[::]:0"
                            };
                            socket = UdpSocket::bind(local).await.ok();
                        }
                        resolved = Some((addr, Instant::now()));
                    }
                    Ok(None) | Err(_) => {
                        crate::warn_limited!(%target, "cannot resolve the Graylog address");
                    }
                }
            }
            let (Some((addr, _)), Some(udp)) = (resolved, socket.as_ref()) else {
                let lost: usize = batches.iter().map(|b| b.messages.len()).sum();
                dropped(DropReason::ForwardSendFailed, lost as u64);
                continue;
            };
            for message in batches.iter().flat_map(GelfBatch::iter) {
                compressor.compress(message, &mut compressed);
                if compressed.len() > max_chunked_payload(chunk_size) {
                    if !shrink_to_fit(message, &mut compressor, &mut compressed, chunk_size) {
                        dropped(DropReason::ForwardTooLarge, 1);
                        crate::warn_limited!(
                            bytes = message.len(),
                            "message too large to forward even cut short; dropped"
                        );
                        continue;
                    }
                    self.truncated.increment(1);
                }
                if compressed.len() <= chunk_size {
                    // The common case: one datagram, nothing to copy.
                    match udp.send_to(&compressed, addr).await {
                        Ok(_) => self.forwarded.increment(1),
                        Err(error) => {
                            dropped(DropReason::ForwardSendFailed, 1);
                            crate::warn_limited!(%addr, %error, "sending to Graylog failed");
                        }
                    }
                    continue;
                }
                let id = super::random_id().to_be_bytes();
                let mut datagrams: Vec<Vec<u8>> = Vec::new();
                let chunked = for_each_chunk(&compressed, chunk_size, id, &mut scratch, |d| {
                    datagrams.push(d.to_vec())
                });
                if let Err(
                    ChunkingError::TooManyChunks { .. } | ChunkingError::ChunkSizeTooSmall(_),
                ) = chunked
                {
                    dropped(DropReason::ForwardTooLarge, 1);
                    continue;
                }
                let mut sent = true;
                for datagram in &datagrams {
                    if let Err(error) = udp.send_to(datagram, addr).await {
                        crate::warn_limited!(%addr, %error, "sending to Graylog failed");
                        sent = false;
                        break;
                    }
                }
                if sent {
                    self.forwarded.increment(1);
                } else {
                    dropped(DropReason::ForwardSendFailed, 1);
                }
            }
        }
        self.queue.close();
    }

    async fn run_tcp(self, drain: CancellationToken) {
        let target = self.settings.target.clone();
        let mut stream: Option<TcpStream> = None;
        let mut connected_before = false;
        let mut frames = Vec::new();
        let mut deadline = None;
        'batches: while let Some(batches) = self.next(&drain, &mut deadline).await {
            frames.clear();
            let mut count = 0;
            for message in batches.iter().flat_map(GelfBatch::iter) {
                frames.extend_from_slice(message);
                frames.push(0);
                count += 1;
            }
            let mut backoff = FIRST_BACKOFF;
            loop {
                if stream.as_ref().is_some_and(peer_closed) {
                    // Graylog restarted: a write now would land in the
                    // kernel, be answered with a reset, and be lost.
                    tracing::info!(%target, "Graylog closed the connection; reconnecting");
                    stream = None;
                }
                if stream.is_none() {
                    match tokio::time::timeout(
                        self.settings.write_timeout,
                        TcpStream::connect(&target),
                    )
                    .await
                    {
                        Ok(Ok(connected)) => {
                            connected.set_nodelay(true).ok();
                            if connected_before {
                                self.reconnects.increment(1);
                            }
                            connected_before = true;
                            tracing::info!(%target, "connected to Graylog");
                            stream = Some(connected);
                        }
                        Ok(Err(error)) => {
                            crate::warn_limited!(%target, %error, "cannot connect to Graylog")
                        }
                        Err(_) => crate::warn_limited!(%target, "connecting to Graylog timed out"),
                    }
                }
                if let Some(connected) = stream.as_mut() {
                    match tokio::time::timeout(
                        self.settings.write_timeout,
                        connected.write_all(&frames),
                    )
                    .await
                    {
                        Ok(Ok(())) => {
                            self.forwarded.increment(count as u64);
                            continue 'batches;
                        }
                        Ok(Err(error)) => {
                            crate::warn_limited!(%target, %error, "writing to Graylog failed; reconnecting")
                        }
                        Err(_) => {
                            crate::warn_limited!(%target, "writing to Graylog timed out; reconnecting")
                        }
                    }
                    stream = None;
                }
                if deadline.is_some_and(|d| Instant::now() + backoff > d) {
                    let left = count + self.queue.len_messages();
                    self.queue.take(usize::MAX, usize::MAX);
                    dropped(DropReason::ForwardSendFailed, left as u64);
                    tracing::warn!(
                        messages = left,
                        "shutdown: Graylog unreachable; forwarding queue dropped"
                    );
                    break 'batches;
                }
                if deadline.is_some() {
                    tokio::time::sleep(backoff).await;
                } else {
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = drain.cancelled() => deadline = Some(Instant::now() + self.shutdown_flush),
                    }
                }
                backoff = (backoff * 2).min(self.settings.reconnect_max);
            }
        }
        self.queue.close();
    }
}

/// Whether Graylog has closed its end: it never sends anything, so a
/// readable end-of-stream (or a reset) is all a read can find.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Cuts `short_message` and `full_message` of an encoded message until its
/// compressed form fits in 128 chunks; marks it `_truncated`. Rare path:
/// only for messages of hundreds of kilobytes.
fn shrink_to_fit(
    message: &[u8],
    compressor: &mut Compressor,
    out: &mut Vec<u8>,
    chunk_size: usize,
) -> bool {
    let Ok(serde_json::Value::Object(mut object)) =
        serde_json::from_slice::<serde_json::Value>(message)
    else {
        return false;
    };
    object.insert("_truncated".into(), serde_json::Value::Bool(true));
    for _ in 0..MAX_TRUNCATIONS {
        for field in ["short_message", "full_message"] {
            if let Some(serde_json::Value::String(text)) = object.get_mut(field) {
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
        }
        let Ok(encoded) = serde_json::to_vec(&object) else {
            return false;
        };
        compressor.compress(&encoded, out);
        if out.len() <= max_chunked_payload(chunk_size) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use cowlogd_parsers::encode::compress::Codec;

    use super::*;

    #[test]
    fn a_message_too_large_for_128_chunks_is_halved_until_it_fits_and_marked() {
        // Incompressible text: about 400 KB after gzip, past 128 × 1420.
        let mut seed = 7u64;
        let text: String = (0..400_000)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                char::from(b'!' + (seed >> 58) as u8)
            })
            .collect();
        let message = serde_json::json!({"version": "1.1", "host": "h", "short_message": text});
        let message = serde_json::to_vec(&message).unwrap();
        let mut compressor = Compressor::new(Codec::Gzip);
        let mut out = Vec::new();
        compressor.compress(&message, &mut out);
        assert!(
            out.len() > max_chunked_payload(1420),
            "the test message must not fit"
        );
        assert!(shrink_to_fit(&message, &mut compressor, &mut out, 1420));
        assert!(out.len() <= max_chunked_payload(1420));
        let mut plain = cowlogd_parsers::decompress::Decompressor::new(1 << 24);
        let json: serde_json::Value =
            serde_json::from_slice(plain.decompress(&out).unwrap()).unwrap();
        assert_eq!(json["_truncated"], true);
        let kept = json["short_message"].as_str().unwrap();
        assert!(text.starts_with(kept) && kept.len() < text.len());
    }

    #[test]
    fn what_is_not_json_is_not_shrunk() {
        let mut compressor = Compressor::new(Codec::None);
        assert!(!shrink_to_fit(
            b"not json",
            &mut compressor,
            &mut Vec::new(),
            1420
        ));
    }
}

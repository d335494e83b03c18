//! UDP listeners (GELF and syslog): several SO_REUSEPORT sockets per
//! address, each read by its own task; `recvmmsg` takes up to 16 datagrams
//! per system call, up to 512 per wake-up, and one queue push per cycle.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use anyhow::Context;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::Allowlist;
use super::gelf::{ChunkedGelf, GelfDecoder};
use crate::config::UdpSettings;
use crate::metrics::{DropReason, Input, dropped};
use crate::pipeline::{Flush, Pipeline, Processor, ReadCycle};

/// Datagrams handled before the batch is queued.
const MAX_DATAGRAMS_PER_CYCLE: usize = 512;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams one `recvmmsg` call can return. Each has a slot of
/// `MAX_DATAGRAM` bytes, so no datagram is ever cut; only the pages that
/// datagrams touch become resident (one page per slot for usual traffic).
const DATAGRAMS_PER_CALL: usize = 16;

/// How often the kernel's drop counters are read.
const KERNEL_DROPS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Binds `settings.sockets` sockets on `addr` sharing the port; returns the
/// address they got and the sockets with their inode numbers (to find
/// their kernel drop counters).
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(
    addr: SocketAddr,
    settings: UdpSettings,
    input: Input,
) -> anyhow::Result<(SocketAddr, Vec<(UdpSocket, u64)>)> {
    let UdpSettings {
        sockets: count,
        receive_buffer,
    } = settings;
    let mut sockets = Vec::with_capacity(count);
    let mut bound = claim(addr, input)?;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(false).ok();
        }
        socket.set_reuse_port(true)?;
        if let Err(error) = socket.set_recv_buffer_size(receive_buffer) {
            tracing::warn!(input = input.label(), %error, "could not set SO_RCVBUF");
        }
        socket
            .bind(&bound.into())
            .with_context(|| format!("binding {} on {bound}", input.label()))?;
        if let Some(local) = socket.local_addr()?.as_socket() {
            // Port 0: the other sockets join the port the first one got.
            bound = local;
        }
        socket.set_nonblocking(true)?;
        let granted = socket.recv_buffer_size().unwrap_or(0);
        // Linux reports twice what it grants to the payload; compare halves.
        if granted / 2 < receive_buffer && sockets.is_empty() {
            tracing::warn!(
                input = input.label(),
                requested = receive_buffer,
                granted = granted / 2,
                "kernel clamped the UDP receive buffer; raise net.core.rmem_max to absorb bursts"
            );
        }
        let socket = UdpSocket::from_std(socket.into())?;
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
            .map(|m| m.ino())
            .unwrap_or(0);
        sockets.push((socket, inode));
    }
    tracing::info!(input = input.label(), addr = %bound, sockets = count, "listening");
    Ok((bound, sockets))
}

/// Checks that no other socket holds `addr` (nor a `SO_REUSEPORT` group
/// another process would share with us: the kernel would split the
/// datagrams between the two, and the other's share would be lost to us),
/// by binding it once without `SO_REUSEPORT`; returns the address with the
/// port the kernel chose for port 0. The group is bound right after this
/// socket closes: a second cowlogd started in that instant is the one race
/// left, where one started later fails here with "address in use", as a
/// TCP input does.
fn claim(addr: SocketAddr, input: Input) -> anyhow::Result<SocketAddr> {
    let probe = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        probe.set_only_v6(false).ok();
    }
    probe.bind(&addr.into()).with_context(|| {
        format!(
            "binding {} on {addr}: another process (another cowlogd?) holds the address",
            input.label()
        )
    })?;
    Ok(probe.local_addr()?.as_socket().unwrap_or(addr))
}

/// What one socket's reader task needs.
pub struct Reader {
    /// Which input.
    pub input: Input,
    /// Where records go.
    pub pipeline: Arc<Pipeline>,
    /// Who may send.
    pub allow: Arc<Allowlist>,
    /// The GELF UDP sockets' shared reassembler.
    pub chunks: Arc<ChunkedGelf>,
    /// `limits.max_decompressed_bytes`.
    pub max_decompressed: usize,
}

impl Reader {
    /// Reads one socket until `shutdown`; one read cycle per wake-up, its
    /// batches queued without waiting (a full queue drops its oldest).
    pub async fn serve(self, socket: UdpSocket, shutdown: CancellationToken) {
        let input = self.input;
        let mut processor = Processor::new(input, self.pipeline.clone());
        let mut gelf = GelfDecoder::new(self.max_decompressed);
        let mut slots = vec![0u8; DATAGRAMS_PER_CALL * MAX_DATAGRAM];
        let mut received: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(DATAGRAMS_PER_CALL);
        loop {
            tokio::select! {
                ready = socket.readable() => {
                    if let Err(error) = ready {
                        crate::warn_limited!(input = input.label(), %error, "UDP socket not readable");
                        continue;
                    }
                }
                () = shutdown.cancelled() => break,
            }
            let mut cycle = processor.begin();
            let mut handled = 0;
            loop {
                received.clear();
                let result = socket.try_io(Interest::READABLE, || {
                    receive_batch(socket.as_raw_fd(), &mut slots, &mut received)
                });
                match result {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        crate::warn_limited!(input = input.label(), %error, "UDP receive failed");
                        break;
                    }
                }
                for (slot, &(len, peer)) in received.iter().enumerate() {
                    let start = slot * MAX_DATAGRAM;
                    let datagram = &slots[start..start + len.min(MAX_DATAGRAM)];
                    match peer {
                        Some(peer) => self.datagram(&mut cycle, &mut gelf, datagram, peer),
                        None => {
                            // No sender to check against inputs.allow: refused as not allowed.
                            dropped(DropReason::NotAllowed, 1);
                            crate::warn_limited!(
                                input = input.label(),
                                "UDP datagram without a sender address; dropped"
                            );
                        }
                    }
                }
                handled += received.len();
                // A short batch means the socket is (nearly) empty: hand the
                // cycle on now rather than spend a call to learn it.
                if received.len() < DATAGRAMS_PER_CALL || handled >= MAX_DATAGRAMS_PER_CYCLE {
                    break;
                }
            }
            cycle.finish(Flush::DropOldest).await;
        }
    }

    fn datagram(
        &self,
        cycle: &mut ReadCycle<'_>,
        gelf: &mut GelfDecoder,
        datagram: &[u8],
        peer: SocketAddr,
    ) {
        let input = self.input;
        if !self.allow.allows(peer.ip()) {
            dropped(DropReason::NotAllowed, 1);
            crate::warn_limited!(input = input.label(), %peer, "sender not in inputs.allow; dropped");
            return;
        }
        cycle.count_bytes(datagram.len());
        cycle.set_peer(peer.ip());
        if input.is_gelf() {
            gelf.datagram(cycle, datagram, peer, &self.chunks);
        } else {
            super::syslog::line(cycle, datagram);
        }
    }
}

/// Counts what the kernel dropped for want of receive buffer on these
/// sockets, every 250 ms until `stop`.
pub async fn count_kernel_drops(inodes: Vec<u64>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(KERNEL_DROPS_EVERY);
    let mut seen = kernel_drops(&inodes);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let drops = kernel_drops(&inodes);
        if drops > seen {
            let new = drops - seen;
            dropped(DropReason::UdpReceiveBuffer, new);
            crate::warn_limited!(
                datagrams = new,
                "the kernel dropped UDP datagrams: receive buffer full"
            );
        }
        seen = seen.max(drops);
    }
}

/// One `recvmmsg` call into `slots`: each datagram's length and sender,
/// in order. The headers are built per call (they hold raw pointers and
/// cannot live across an await); that is a few small allocations per up to
/// 16 datagrams.
fn receive_batch(
    fd: RawFd,
    slots: &mut [u8],
    received: &mut Vec<(usize, Option<SocketAddr>)>,
) -> std::io::Result<()> {
    let mut buffers: Vec<[IoSliceMut<'_>; 1]> = slots
        .chunks_mut(MAX_DATAGRAM)
        .map(|slot| [IoSliceMut::new(slot)])
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(buffers.len(), None);
    let messages = recvmmsg(
        fd,
        &mut headers,
        buffers.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(std::io::Error::from)?;
    for message in messages {
        let peer = message.address.and_then(|address| {
            if let Some(v4) = address.as_sockaddr_in() {
                Some(SocketAddr::V4((*v4).into()))
            } else {
                address
                    .as_sockaddr_in6()
                    .map(|v6| SocketAddr::V6((*v6).into()))
            }
        });
        received.push((message.bytes, peer));
    }
    Ok(())
}

/// Sums the kernel's per-socket drop counters (`/proc/net/udp{,6}`, last
/// column) for the sockets with these inodes.
fn kernel_drops(inodes: &[u64]) -> u64 {
    let mut total = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(inode), Some(drops)) = (fields.get(9), fields.last()) else {
                continue;
            };
            if inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i)) {
                total += drops.parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

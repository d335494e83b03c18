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
use crate::metrics::{DropReason, Input, dropped};
use crate::pipeline::{Processor, Shared};

/// Datagrams handled before the batch is queued.
const MAX_DATAGRAMS_PER_CYCLE: usize = 512;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams one `recvmmsg` call can return. Each has a slot of
/// `MAX_DATAGRAM` bytes, so no datagram is ever cut; only the pages that
/// datagrams touch become resident (one page per slot for usual traffic).
const DATAGRAMS_PER_CALL: usize = 16;

/// Binds `count` sockets on `addr` sharing the port; returns them with their
/// inode numbers (to find their kernel drop counters).
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(
    addr: SocketAddr,
    count: usize,
    receive_buffer: usize,
    input: Input,
) -> anyhow::Result<Vec<(UdpSocket, u64)>> {
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
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
    Ok(sockets)
}

/// Reads one socket until `shutdown`.
pub async fn serve(
    socket: UdpSocket,
    input: Input,
    shared: Arc<Shared>,
    allow: Arc<Allowlist>,
    shutdown: CancellationToken,
) {
    let mut processor = Processor::new(input, shared);
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
        processor.begin();
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
                    Some(peer) => handle(&mut processor, input, &allow, datagram, peer),
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
        processor.flush();
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

fn handle(
    processor: &mut Processor,
    input: Input,
    allow: &Allowlist,
    datagram: &[u8],
    peer: SocketAddr,
) {
    if !allow.allows(peer.ip()) {
        dropped(DropReason::NotAllowed, 1);
        crate::warn_limited!(input = input.label(), %peer, "sender not in inputs.allow; dropped");
        return;
    }
    processor.count_bytes(datagram.len());
    processor.set_peer(peer.ip());
    if input.is_gelf() {
        processor.gelf_datagram(datagram, peer);
    } else {
        processor.syslog_line(datagram);
    }
}

/// Sums the kernel's per-socket drop counters (`/proc/net/udp{,6}`, last
/// column) for the sockets with these inodes.
pub fn kernel_drops(inodes: &[u64]) -> u64 {
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

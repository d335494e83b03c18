//! The accept loop every connection listener runs: accept, check the
//! allowlist, take a slot, run the connection in its own span; back off,
//! doubling, when accepting fails (out of file descriptors: retrying at
//! once would spin on the same error).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::slots::{Refused, Slot, Slots};
use super::{Allowlist, Source};
use crate::metrics::{Input, tcp_connections};

/// The first pause after a failed accept; it doubles up to
/// [`MAX_ACCEPT_BACKOFF`] while accepting keeps failing.
pub const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
/// The longest pause between failed accepts.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Who connected.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// A TCP peer.
    Net(SocketAddr),
    /// A peer on a unix socket.
    Local,
}

impl Peer {
    /// Its source, for the fair share of slots.
    pub fn source(&self) -> Source {
        match self {
            Peer::Net(addr) => Source::of_peer(*addr),
            Peer::Local => Source::Local,
        }
    }

    /// Its IP address (none on a unix socket).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Net(addr) => Some(addr.ip()),
            Peer::Local => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Net(addr) => addr.fmt(f),
            Peer::Local => f.write_str("unix socket"),
        }
    }
}

/// A listening socket the accept loop can take connections from.
pub trait Listen: Send + 'static {
    /// A connection.
    type Stream: Send + 'static;

    /// The next connection and who made it.
    fn accept_peer(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;
}

impl Listen for TcpListener {
    type Stream = TcpStream;

    async fn accept_peer(&self) -> std::io::Result<(TcpStream, Peer)> {
        let (stream, addr) = self.accept().await?;
        Ok((stream, Peer::Net(addr)))
    }
}

impl Listen for UnixListener {
    type Stream = UnixStream;

    async fn accept_peer(&self) -> std::io::Result<(UnixStream, Peer)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, Peer::Local))
    }
}

/// One listener's admission: its name (for logs and spans), its pool, its
/// allowlist (none on a unix socket: the file's permissions decided), and
/// the input whose open-connection gauge a slot moves.
#[derive(Clone)]
pub struct Gate {
    /// `syslog_tcp`, `metrics`, …: the listener in logs and spans.
    pub name: &'static str,
    /// The pool its connections take slots in.
    pub slots: Arc<Slots>,
    /// Who may connect over the network.
    pub allow: Option<Arc<Allowlist>>,
    /// The input whose `cowlogd_tcp_connections` gauge counts them.
    pub input: Option<Input>,
}

impl Gate {
    /// Admits `peer`, or counts and logs why not (the caller drops the
    /// connection).
    pub fn admit(&self, peer: &Peer) -> Option<Slot> {
        if let (Some(allow), Some(ip)) = (&self.allow, peer.ip())
            && !allow.allows(ip)
        {
            self.slots.count_refused(Refused::NotAllowed);
            crate::warn_limited!(listener = self.name, %peer, "sender not allowed; connection closed");
            return None;
        }
        let gauge = self.input.map(tcp_connections);
        match self.slots.take(peer.source(), gauge) {
            Ok(slot) => Some(slot),
            Err(refused) => {
                self.slots.count_refused(refused);
                crate::warn_limited!(listener = self.name, %peer, "connection limit reached; connection closed");
                None
            }
        }
    }
}

/// Accepts connections until `shutdown`, admits each through `gate` and
/// runs `handle` on it on `tasks`, in a span naming the listener and the
/// peer.
pub async fn serve<L, F, Fut>(
    listener: L,
    gate: Gate,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    mut handle: F,
) where
    L: Listen,
    F: FnMut(L::Stream, Peer, Slot) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept_peer() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = FIRST_ACCEPT_BACKOFF;
                pair
            }
            Err(error) => {
                crate::warn_limited!(listener = gate.name, %error, backoff_ms = backoff.as_millis() as u64, "accept failed; pausing");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let Some(slot) = gate.admit(&peer) else {
            continue;
        };
        let span = tracing::info_span!("connection", input = gate.name, %peer);
        tasks.spawn(handle(stream, peer, slot).instrument(span));
    }
}

//! The accept loop every connection listener runs: accept, check the
//! allowlist, take a slot, run the connection in its own span; back off,
//! doubling, when accepting fails (out of file descriptors: retrying at
//! once would spin on the same error).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
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
            Peer::Net(addr) => Source::of(addr.ip()),
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

/// One listener's admission: its pool, its allowlist (a unix socket's
/// peers have no address to check: the file's permissions decided), and
/// the input whose open-connection gauge a slot moves (none for the
/// metrics endpoint).
#[derive(Clone)]
pub struct Gate {
    /// The pool its connections take slots in.
    pub slots: Arc<Slots>,
    /// Who may connect over the network.
    pub allow: Arc<Allowlist>,
    /// The input whose `cowlogd_tcp_connections` gauge counts them.
    pub input: Option<Input>,
}

impl Gate {
    /// `syslog_tcp`, `metrics`, …: the listener in logs and spans.
    pub fn name(&self) -> &'static str {
        self.input.map_or(self.slots.pool().label(), Input::label)
    }

    /// Admits `peer`, or counts and logs why not (the caller drops the
    /// connection).
    pub fn admit(&self, peer: &Peer) -> Option<Slot> {
        if let Some(ip) = peer.ip()
            && !self.allow.allows(ip)
        {
            self.slots.count_refused(Refused::NotAllowed);
            crate::warn_limited!(listener = self.name(), %peer, "sender not allowed; connection closed");
            return None;
        }
        let gauge = self.input.map(tcp_connections);
        match self.slots.take(peer.source(), gauge) {
            Ok(slot) => Some(slot),
            Err(refused) => {
                self.slots.count_refused(refused);
                crate::warn_limited!(listener = self.name(), %peer, "connection limit reached; connection closed");
                None
            }
        }
    }
}

/// The pause after failed accepts: [`FIRST_ACCEPT_BACKOFF`], doubling up
/// to [`MAX_ACCEPT_BACKOFF`] while they keep failing, back to the first
/// after a success.
#[derive(Debug)]
struct AcceptBackoff(Duration);

impl AcceptBackoff {
    fn new() -> AcceptBackoff {
        AcceptBackoff(FIRST_ACCEPT_BACKOFF)
    }

    /// An accept failed: how long to pause.
    fn failed(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(MAX_ACCEPT_BACKOFF);
        pause
    }

    fn succeeded(&mut self) {
        self.0 = FIRST_ACCEPT_BACKOFF;
    }
}

/// Accepts connections until the daemon stops (the pool's shutdown),
/// admits each through `gate` and runs `handle` on it, with its own clone
/// of `context`, on `tasks`, in a span naming the listener and the peer.
pub async fn serve<L, C, F, Fut>(listener: L, gate: Gate, tasks: TaskTracker, context: C, handle: F)
where
    L: Listen,
    C: Clone,
    F: Fn(L::Stream, Peer, Slot, C) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let shutdown = gate.slots.shutdown().clone();
    let name = gate.name();
    let mut backoff = AcceptBackoff::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept_peer() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff.succeeded();
                pair
            }
            Err(error) => {
                let pause = backoff.failed();
                crate::warn_limited!(listener = name, %error, pause_ms = pause.as_millis() as u64, "accept failed; pausing");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        let Some(slot) = gate.admit(&peer) else {
            continue;
        };
        let span = tracing::info_span!("connection", input = name, %peer);
        tasks.spawn(handle(stream, peer, slot, context.clone()).instrument(span));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_pause_longer_each_time_up_to_a_second_and_a_success_resets() {
        let mut backoff = AcceptBackoff::new();
        let pauses: Vec<u64> = (0..10)
            .map(|_| backoff.failed().as_millis() as u64)
            .collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), FIRST_ACCEPT_BACKOFF);
    }
}

//! Connection slots: a cap on open connections (global and per address)
//! taken at accept, with the longest-idle connection making room.
//!
//! When the global cap is full, a newcomer does not get refused while some
//! connection has sat silent for a while: that one is closed instead
//! (counted as `cowlogd_connections_closed_total{reason="evicted"}`), so
//! connections that never send cannot lock real senders out. The
//! per-address cap still refuses. Each listener kind has its own pool: the
//! HTTP input and the metrics endpoint cannot take the TCP inputs' slots.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

// The runtime's clock, so that deadlines and the timers that wake for
// them agree (and a paused test clock governs both).
use tokio::time::Instant;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::Allowlist;
use crate::metrics::{DropReason, connection_closed, dropped};

/// A connection silent for less than this is never evicted: a busy
/// sender is not closed for a newcomer.
pub const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    // An hour back, so "last active at 0" is a long idle from the start.
    *ORIGIN.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

fn now_ms() -> u64 {
    origin().elapsed().as_millis() as u64
}

struct Open {
    ip: IpAddr,
    last_active_ms: Arc<AtomicU64>,
    evict: CancellationToken,
}

#[derive(Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Open>,
    per_source: HashMap<IpAddr, usize>,
}

impl State {
    fn release(&mut self, id: u64) {
        if let Some(open) = self.open.remove(&id)
            && let Some(count) = self.per_source.get_mut(&open.ip)
        {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&open.ip);
            }
        }
    }
}

/// One listener kind's connection slots.
pub struct ConnectionSlots {
    state: Mutex<State>,
    max: usize,
    max_per_source: usize,
    /// `tcp`, `http` or `metrics`: the `pool` label of the counters.
    pool: &'static str,
}

/// A held slot; frees itself when dropped.
pub struct Slot {
    id: u64,
    slots: Arc<ConnectionSlots>,
    activity: Activity,
    evict: CancellationToken,
}

/// Marks a connection active; cheap to clone into request handlers.
#[derive(Clone)]
pub struct Activity(Arc<AtomicU64>);

impl Activity {
    /// The connection just read something.
    pub fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }
}

impl Slot {
    /// Marks this connection active.
    pub fn touch(&self) {
        self.activity.touch();
    }

    /// The handle that marks this connection active.
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// Completes when the connection was chosen to make room.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().release(self.id);
    }
}

impl ConnectionSlots {
    /// Slots for `max` connections, `max_per_source` per address.
    pub fn new(max: usize, max_per_source: usize, pool: &'static str) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            state: Mutex::new(State::default()),
            max,
            max_per_source,
            pool,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a new connection from `peer`: the sender must be allowed and
    /// have room under its address's cap; a full global cap evicts the
    /// longest-idle connection if one has been idle long enough. A refusal
    /// is counted and logged, and the caller closes the connection.
    pub fn admit(
        self: &Arc<Self>,
        allow: &Allowlist,
        peer: SocketAddr,
        what: &str,
    ) -> Option<Slot> {
        if !allow.allows(peer.ip()) {
            self.refused(DropReason::NotAllowed);
            crate::warn_limited!(listener = what, %peer, "sender not allowed; connection closed");
            return None;
        }
        let slot = self.try_take(peer.ip());
        if slot.is_none() {
            self.refused(DropReason::ConnectionLimit);
            crate::warn_limited!(listener = what, %peer, "connection limit reached; connection closed");
        }
        slot
    }

    /// Admits a connection on a unix socket: its file permissions decided
    /// who may connect, so only the cap applies (as for one address).
    pub fn admit_local(self: &Arc<Self>, what: &str) -> Option<Slot> {
        let slot = self.try_take(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if slot.is_none() {
            self.refused(DropReason::ConnectionLimit);
            crate::warn_limited!(
                listener = what,
                "connection limit reached; connection closed"
            );
        }
        slot
    }

    /// Inputs count a refused connection as a dropped message (its
    /// messages are lost); the metrics endpoint only as a closed connection.
    fn refused(&self, reason: DropReason) {
        if self.pool == "metrics" {
            connection_closed(self.pool, reason.labels().1);
        } else {
            dropped(reason, 1);
        }
    }

    fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut state = self.lock();
        if state.per_source.get(&ip).copied().unwrap_or(0) >= self.max_per_source {
            return None;
        }
        if state.open.len() >= self.max && !self.evict_longest_idle(&mut state) {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        let last_active_ms = Arc::new(AtomicU64::new(now_ms()));
        let evict = CancellationToken::new();
        state.open.insert(
            id,
            Open {
                ip,
                last_active_ms: last_active_ms.clone(),
                evict: evict.clone(),
            },
        );
        *state.per_source.entry(ip).or_insert(0) += 1;
        Some(Slot {
            id,
            slots: self.clone(),
            activity: Activity(last_active_ms),
            evict,
        })
    }

    fn evict_longest_idle(&self, state: &mut State) -> bool {
        let now = now_ms();
        let Some((&id, open)) = state
            .open
            .iter()
            .min_by_key(|(_, open)| open.last_active_ms.load(Ordering::Relaxed))
        else {
            return false;
        };
        let idle = now.saturating_sub(open.last_active_ms.load(Ordering::Relaxed));
        if idle < MIN_IDLE_TO_EVICT.as_millis() as u64 {
            return false;
        }
        open.evict.cancel();
        state.release(id);
        connection_closed(self.pool, "evicted");
        crate::warn_limited!(
            pool = self.pool,
            idle_ms = idle,
            "connection cap full: closed the connection idle the longest"
        );
        true
    }

    /// Connections open.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn everyone() -> Allowlist {
        Allowlist::new(vec!["0.0.0.0/0".parse().unwrap()])
    }

    fn peer(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 1000))
    }

    #[test]
    fn a_full_pool_closes_the_longest_idle_connection_for_a_newcomer() {
        let slots = ConnectionSlots::new(2, 2, "tcp");
        let allow = everyone();
        let quiet = slots.admit(&allow, peer(2), "t").unwrap();
        let busy = slots.admit(&allow, peer(3), "t").unwrap();
        // Both idle less than a second: the newcomer is refused.
        assert!(slots.admit(&allow, peer(4), "t").is_none());
        quiet.activity.0.store(0, Ordering::Relaxed);
        busy.activity().touch();
        let newcomer = slots.admit(&allow, peer(4), "t");
        assert!(newcomer.is_some());
        assert!(quiet.evict.is_cancelled());
        assert!(!busy.evict.is_cancelled());
        assert_eq!(slots.open(), 2);
        // The evicted slot's own drop later frees nothing twice.
        drop(quiet);
        assert_eq!(slots.open(), 2);
    }

    #[test]
    fn the_per_source_cap_refuses_without_evicting() {
        let slots = ConnectionSlots::new(10, 1, "tcp");
        let allow = everyone();
        let first = slots.admit(&allow, peer(2), "t").unwrap();
        first.activity.0.store(0, Ordering::Relaxed);
        assert!(slots.admit(&allow, peer(2), "t").is_none());
        assert!(!first.evict.is_cancelled());
        drop(first);
        assert!(slots.admit(&allow, peer(2), "t").is_some());
    }
}

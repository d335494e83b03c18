//! Connection slots: a cap on open connections per pool, shared fairly
//! between sources, with idle connections making room.
//!
//! A newcomer from a [`Source`] is admitted when
//!
//! 1. the pool has room and its source holds fewer than `max_per_source`;
//! 2. or the pool is full and its source holds fewer connections than the
//!    largest holder, by at least two (so that, admitted, it holds no more
//!    than the largest holder keeps): that holder's longest-idle
//!    connection closes (fair share: a few addresses cannot keep everyone
//!    else out, whatever they send; a pool of one connection per source
//!    does not churn);
//! 3. or the pool is full, no source holds two or more than the
//!    newcomer's, and a connection of the largest holders (the newcomer's
//!    own source among them, if it is one) has been idle at least
//!    [`MIN_IDLE_TO_EVICT`]: the longest idle of them closes (connections that never send cannot lock real
//!    senders out; a busy sender is not closed for a newcomer; a source
//!    holding fewer is never closed for one holding more).
//!
//! A source at its own cap is refused, except in the metrics pool
//! ([`Pool::replaces_own_idle`]): there its own longest-idle connection
//! makes room, so a health check always gets an answer from an address
//! that also holds idle connections (the container's own health check
//! shares `127.0.0.1` with anything else in it).
//!
//! An evicted connection is told through [`Slot::evicted`]; every task
//! that waits on its connection's behalf (reading, queue room, an ack)
//! watches it and gives up its socket and buffers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

// The runtime's clock, so that deadlines and the timers that wake for
// them agree (and a paused test clock governs both).
use tokio::time::Instant;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::Source;
use crate::metrics::{CloseReason, DropReason, connection_closed, dropped};

/// A connection idle for less than this is not evicted for a newcomer
/// from a source that holds as many connections as anyone (rule 3).
pub const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);

/// A pool of connection slots: each listener kind has its own, so the
/// HTTP input and the metrics endpoint cannot take the TCP inputs' slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// GELF TCP, syslog TCP and Fluent TCP together.
    Tcp,
    /// Fluent's unix socket.
    FluentUnix,
    /// GELF over HTTP.
    GelfHttp,
    /// `/metrics`, `/health`, `/ready`, `/f2b`.
    Metrics,
}

impl Pool {
    /// The `pool` label of `cowlogd_connections_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Pool::Tcp => "tcp",
            Pool::FluentUnix => "fluent_unix",
            Pool::GelfHttp => "http",
            Pool::Metrics => "metrics",
        }
    }

    /// Every `reason` of `cowlogd_connections_closed_total` this pool
    /// counts: stream inputs time out, every pool evicts, and the metrics
    /// endpoint counts its refusals here (inputs count theirs as drops).
    pub fn close_reasons(self) -> &'static [CloseReason] {
        use CloseReason::{ConnectionLimit, Evicted, FirstByteTimeout, IdleTimeout, NotAllowed};
        match self {
            Pool::Tcp | Pool::FluentUnix => &[FirstByteTimeout, IdleTimeout, Evicted],
            Pool::GelfHttp => &[Evicted],
            Pool::Metrics => &[Evicted, NotAllowed, ConnectionLimit],
        }
    }

    /// Inputs count a refused connection as a dropped message (its
    /// messages are lost); the metrics endpoint only as a closed
    /// connection.
    fn refusal_is_a_drop(self) -> bool {
        self != Pool::Metrics
    }

    /// Whether a source at its own cap replaces its own longest-idle
    /// connection instead of being refused: for the metrics endpoint,
    /// whose health check must always be answered.
    pub fn replaces_own_idle(self) -> bool {
        self == Pool::Metrics
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The sender's address is not in the allowlist.
    NotAllowed,
    /// No slot: its source is at its cap, or every connection is busy.
    ConnectionLimit,
}

impl Refused {
    fn reason(self) -> DropReason {
        match self {
            Refused::NotAllowed => DropReason::NotAllowed,
            Refused::ConnectionLimit => DropReason::ConnectionLimit,
        }
    }
}

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
    source: Source,
    last_active_ms: Arc<AtomicU64>,
    evict: CancellationToken,
    ending: CancellationToken,
}

impl Open {
    fn last_active(&self) -> u64 {
        self.last_active_ms.load(Ordering::Relaxed)
    }
}

/// The connection a newcomer's slot is taken from, and by which rule.
struct Victim {
    id: u64,
    idle_ms: u64,
    rule: &'static str,
}

#[derive(Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Open>,
    per_source: HashMap<Source, usize>,
}

impl State {
    fn held_by(&self, source: Source) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    fn release(&mut self, id: u64) {
        if let Some(open) = self.open.remove(&id)
            && let Some(count) = self.per_source.get_mut(&open.source)
        {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&open.source);
            }
        }
    }

    /// The source holding the most connections.
    fn largest_holder(&self) -> Option<(Source, usize)> {
        self.per_source
            .iter()
            .max_by_key(|(_, held)| **held)
            .map(|(source, held)| (*source, *held))
    }

    /// The longest-idle connection of `source`.
    fn longest_idle_of(&self, source: Source) -> Option<(u64, u64)> {
        self.longest_idle_where(|open| open.source == source)
    }

    /// The longest-idle connection of the sources holding `held` each.
    fn longest_idle_holding(&self, held: usize) -> Option<(u64, u64)> {
        self.longest_idle_where(|open| self.held_by(open.source) == held)
    }

    fn longest_idle_where(&self, mut pick: impl FnMut(&Open) -> bool) -> Option<(u64, u64)> {
        self.open
            .iter()
            .filter(|(_, open)| pick(open))
            .min_by_key(|(_, open)| open.last_active())
            .map(|(id, open)| (*id, open.last_active()))
    }
}

/// One pool's connection slots; see the module docs.
pub struct Slots {
    state: Mutex<State>,
    pool: Pool,
    max: usize,
    max_per_source: usize,
    /// Stops the daemon: a slot's [`Slot::ending`] fires with it too.
    shutdown: CancellationToken,
}

/// A held slot; frees itself (and moves its connection gauge back) when
/// dropped.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    activity: Activity,
    evict: CancellationToken,
    ending: CancellationToken,
    gauge: Option<metrics::Gauge>,
}

/// Marks a connection active; cheap to clone into request handlers.
#[derive(Clone)]
pub struct Activity(Arc<AtomicU64>);

impl Activity {
    /// The connection just delivered a frame that parsed.
    pub fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// A handle last active long ago, for tests of who touches it.
    #[cfg(test)]
    pub(crate) fn idle() -> Activity {
        Activity(Arc::new(AtomicU64::new(0)))
    }

    /// Whether it was touched since [`Activity::idle`].
    #[cfg(test)]
    pub(crate) fn touched(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }
}

impl Slot {
    /// The handle that marks this connection active.
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// Completes when the connection was chosen to make room.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }

    /// Fires when the connection was evicted or the daemon stops: what a
    /// task waiting on the connection's behalf gives up on.
    pub fn ending(&self) -> &CancellationToken {
        &self.ending
    }

    /// The pool this slot is in.
    pub fn pool(&self) -> Pool {
        self.slots.pool
    }

    /// Fires when the daemon stops (not on eviction).
    pub fn stopping(&self) -> &CancellationToken {
        &self.slots.shutdown
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().release(self.id);
        if let Some(gauge) = &self.gauge {
            gauge.decrement(1.0);
        }
    }
}

impl Slots {
    /// `pool`'s slots: `max` connections, `max_per_source` per source.
    pub fn new(
        pool: Pool,
        max: usize,
        max_per_source: usize,
        shutdown: CancellationToken,
    ) -> Arc<Slots> {
        Arc::new(Slots {
            state: Mutex::new(State::default()),
            pool,
            max,
            max_per_source,
            shutdown,
        })
    }

    /// Which pool.
    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// The daemon's stop, which every slot's [`Slot::ending`] follows.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a refusal the pool's way (see [`Pool`]).
    pub fn count_refused(&self, refused: Refused) {
        if self.pool.refusal_is_a_drop() {
            dropped(refused.reason(), 1);
        } else {
            let reason = match refused {
                Refused::NotAllowed => CloseReason::NotAllowed,
                Refused::ConnectionLimit => CloseReason::ConnectionLimit,
            };
            connection_closed(self.pool.label(), reason);
        }
    }

    /// Takes a slot for a connection from `source` by the rules in the
    /// module docs, evicting a connection if they say so; `gauge` (the
    /// input's open-connection gauge) goes up now and down when the slot
    /// is dropped.
    ///
    /// # Errors
    /// [`Refused::ConnectionLimit`] when no rule admits it (not counted:
    /// the caller counts with [`Slots::count_refused`] and logs).
    pub fn take(
        self: &Arc<Self>,
        source: Source,
        gauge: Option<metrics::Gauge>,
    ) -> Result<Slot, Refused> {
        let mut state = self.lock();
        let now = now_ms();
        if let Some(victim) = self.room_for(&state, source, now)? {
            self.evict(&mut state, victim);
        }
        let id = state.next_id;
        state.next_id += 1;
        let last_active_ms = Arc::new(AtomicU64::new(now));
        let evict = CancellationToken::new();
        let ending = self.shutdown.child_token();
        state.open.insert(
            id,
            Open {
                source,
                last_active_ms: last_active_ms.clone(),
                evict: evict.clone(),
                ending: ending.clone(),
            },
        );
        *state.per_source.entry(source).or_insert(0) += 1;
        drop(state);
        if let Some(gauge) = &gauge {
            gauge.increment(1.0);
        }
        Ok(Slot {
            id,
            slots: self.clone(),
            activity: Activity(last_active_ms),
            evict,
            ending,
            gauge,
        })
    }

    /// Whether a connection from `source` fits by the rules in the module
    /// docs, and whose connection must close for it (none: there is room).
    /// Decides only; [`Slots::take`] acts on it.
    fn room_for(&self, state: &State, source: Source, now: u64) -> Result<Option<Victim>, Refused> {
        let held = state.held_by(source);
        let (candidate, rule) = if held >= self.max_per_source {
            if !self.pool.replaces_own_idle() {
                return Err(Refused::ConnectionLimit);
            }
            (state.longest_idle_of(source), "own cap")
        } else if state.open.len() >= self.max {
            let (largest, most) = state.largest_holder().ok_or(Refused::ConnectionLimit)?;
            if held + 1 < most {
                (state.longest_idle_of(largest), "fair share")
            } else {
                (state.longest_idle_holding(most), "longest idle")
            }
        } else {
            return Ok(None);
        };
        let (id, last_active) = candidate.ok_or(Refused::ConnectionLimit)?;
        let idle_ms = now.saturating_sub(last_active);
        // Only the last rule spares a busy connection.
        if rule == "longest idle" && idle_ms < MIN_IDLE_TO_EVICT.as_millis() as u64 {
            return Err(Refused::ConnectionLimit);
        }
        Ok(Some(Victim { id, idle_ms, rule }))
    }

    fn evict(&self, state: &mut State, victim: Victim) {
        if let Some(open) = state.open.get(&victim.id) {
            open.evict.cancel();
            open.ending.cancel();
        }
        state.release(victim.id);
        connection_closed(self.pool.label(), CloseReason::Evicted);
        crate::warn_limited!(
            pool = self.pool.label(),
            idle_ms = victim.idle_ms,
            rule = victim.rule,
            "connection pool full: closed a connection to make room"
        );
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

    fn source(n: u8) -> Source {
        Source::of(std::net::IpAddr::from([127, 0, 0, n]))
    }

    fn slots(pool: Pool, max: usize, per_source: usize) -> Arc<Slots> {
        Slots::new(pool, max, per_source, CancellationToken::new())
    }

    fn idle_for_long(slot: &Slot) {
        slot.activity.0.store(0, Ordering::Relaxed);
    }

    #[test]
    fn a_full_pool_closes_the_longest_idle_connection_for_a_newcomer() {
        let slots = slots(Pool::Tcp, 2, 2);
        let quiet = slots.take(source(2), None).unwrap();
        let busy = slots.take(source(3), None).unwrap();
        // Sources hold one each, both busy: the newcomer is refused.
        assert!(slots.take(source(4), None).is_err());
        idle_for_long(&quiet);
        busy.activity().touch();
        let newcomer = slots.take(source(4), None);
        assert!(newcomer.is_ok());
        assert!(quiet.evict.is_cancelled());
        assert!(quiet.ending().is_cancelled());
        assert!(!busy.evict.is_cancelled());
        assert_eq!(slots.open(), 2);
        // The evicted slot's own drop later frees nothing twice.
        drop(quiet);
        assert_eq!(slots.open(), 2);
    }

    #[test]
    fn a_newcomer_holding_less_than_the_largest_holder_takes_a_slot_from_it_however_busy() {
        let slots = slots(Pool::Tcp, 4, 4);
        let mut attacker: Vec<Slot> = (0..3)
            .map(|_| slots.take(source(2), None).unwrap())
            .collect();
        let legit = slots.take(source(3), None).unwrap();
        for slot in &attacker {
            slot.activity().touch();
        }
        idle_for_long(&legit);
        // Full; the attacker's connections are busy, the legit one idle:
        // a newcomer still gets in, and the largest holder pays.
        let newcomer = slots.take(source(4), None).unwrap();
        assert!(
            !legit.evict.is_cancelled(),
            "the small holder keeps its slot"
        );
        assert_eq!(
            attacker.iter().filter(|s| s.evict.is_cancelled()).count(),
            1
        );
        // The attacker, now holding 2 busy connections, reconnecting: the
        // idle small holders are not closed for it.
        attacker.retain(|s| !s.evict.is_cancelled());
        assert_eq!(
            slots.take(source(2), None).err(),
            Some(Refused::ConnectionLimit)
        );
        assert!(!legit.evict.is_cancelled());
        assert!(!newcomer.evict.is_cancelled());
        // Once its own connections idle, it closes one of them.
        idle_for_long(&attacker[0]);
        assert!(slots.take(source(2), None).is_ok());
        assert!(attacker[0].evict.is_cancelled());
        assert!(!legit.evict.is_cancelled());
    }

    #[test]
    fn the_per_source_cap_refuses_without_evicting_in_an_input_pool() {
        let slots = slots(Pool::Tcp, 10, 1);
        let first = slots.take(source(2), None).unwrap();
        idle_for_long(&first);
        assert_eq!(
            slots.take(source(2), None).err(),
            Some(Refused::ConnectionLimit)
        );
        assert!(!first.evict.is_cancelled());
        drop(first);
        assert!(slots.take(source(2), None).is_ok());
    }

    #[test]
    fn the_metrics_pool_replaces_a_sources_own_idle_connection_at_its_cap() {
        let slots = slots(Pool::Metrics, 16, 2);
        let held: Vec<Slot> = (0..2)
            .map(|_| slots.take(source(1), None).unwrap())
            .collect();
        // Not idle long at all: the health check still gets in.
        let health = slots.take(source(1), None).unwrap();
        assert_eq!(held.iter().filter(|s| s.evict.is_cancelled()).count(), 1);
        assert!(!health.evict.is_cancelled());
    }

    #[test]
    fn a_slot_ends_with_the_daemon_and_moves_its_gauge_back() {
        let shutdown = CancellationToken::new();
        let slots = Slots::new(Pool::Tcp, 4, 4, shutdown.clone());
        let slot = slots.take(source(2), None).unwrap();
        assert!(!slot.ending().is_cancelled());
        shutdown.cancel();
        assert!(slot.ending().is_cancelled());
        assert!(!slot.evict.is_cancelled(), "shutdown is not eviction");
    }
}

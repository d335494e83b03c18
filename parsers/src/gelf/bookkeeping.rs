//! The [`Reassembler`](super::Reassembler)'s state, one invariant per type:
//!
//! - [`HostLoads`]: what each host holds (its messages by age and their
//!   allocated bytes) and the total, charged and released only through
//!   its methods, so the per-host and total figures cannot drift apart;
//!   it also picks the message to evict.
//! - [`Deadlines`]: one queue, in deadline order, for every message that
//!   can expire, whether still being put together or given up on. Entries
//!   name a `(key, generation)`; the owner says which are still live, and
//!   dead ones are skipped on the way out or compacted away.
//! - [`Tombstones`]: messages given up on, so their later chunks are
//!   ignored instead of counted again; never more than a fixed number.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;

/// What one host holds: how many messages and bytes, and which messages,
/// oldest first (by generation, which grows with every message started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HostLoad<K> {
    pub(super) bytes: usize,
    pub(super) by_age: BTreeMap<u64, K>,
}

impl<K> Default for HostLoad<K> {
    fn default() -> Self {
        HostLoad {
            bytes: 0,
            by_age: BTreeMap::new(),
        }
    }
}

/// Which load picks the host to evict from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Weight {
    Messages,
    Bytes,
}

impl<K> HostLoad<K> {
    pub(super) fn messages(&self) -> usize {
        self.by_age.len()
    }

    fn weighed(&self, weight: Weight) -> usize {
        match weight {
            Weight::Messages => self.messages(),
            Weight::Bytes => self.bytes,
        }
    }
}

/// Per-host loads and their byte total. A host with nothing left is
/// forgotten, so the map is as large as the set of hosts holding messages.
/// Each host lists its messages by age, so the oldest of the host holding
/// the most is found without walking every message.
#[derive(Debug)]
pub(super) struct HostLoads<H, K> {
    hosts: HashMap<H, HostLoad<K>>,
    bytes: usize,
}

impl<H: Hash + Eq + Clone, K: Clone + PartialEq> HostLoads<H, K> {
    pub(super) fn new() -> HostLoads<H, K> {
        HostLoads {
            hosts: HashMap::new(),
            bytes: 0,
        }
    }

    /// Allocated bytes over every host.
    pub(super) fn total_bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn messages(&self, host: &H) -> usize {
        self.hosts.get(host).map_or(0, HostLoad::messages)
    }

    /// One more message for `host`, holding no bytes yet.
    pub(super) fn start(&mut self, host: H, generation: u64, key: K) {
        self.hosts
            .entry(host)
            .or_default()
            .by_age
            .insert(generation, key);
    }

    /// A message of `host` grew its buffer by `bytes`.
    pub(super) fn grow(&mut self, host: &H, bytes: usize) {
        if let Some(load) = self.hosts.get_mut(host) {
            load.bytes += bytes;
            self.bytes += bytes;
        }
    }

    /// The message `generation` of `host`, holding `bytes`, left
    /// (complete, expired, evicted or given up on).
    pub(super) fn release(&mut self, host: &H, generation: u64, bytes: usize) {
        if let Entry::Occupied(mut entry) = self.hosts.entry(host.clone()) {
            let load = entry.get_mut();
            if load.by_age.remove(&generation).is_none() {
                return;
            }
            let bytes = bytes.min(load.bytes);
            load.bytes -= bytes;
            self.bytes -= bytes;
            if load.by_age.is_empty() {
                entry.remove();
            }
        }
    }

    /// The oldest message of the host holding the most by `weight`
    /// (the oldest over all such hosts on a tie), other than `spare`:
    /// evicting it keeps one host from evicting the others' messages.
    /// `None` when `spare` is all those hosts hold.
    pub(super) fn victim(&self, weight: Weight, spare: Option<u64>) -> Option<K> {
        let most = self.hosts.values().map(|load| load.weighed(weight)).max()?;
        self.hosts
            .values()
            .filter(|load| load.weighed(weight) == most)
            .filter_map(|load| {
                load.by_age
                    .iter()
                    .find(|(generation, _)| Some(**generation) != spare)
            })
            .min_by_key(|(generation, _)| **generation)
            .map(|(_, key)| key.clone())
    }

    /// Whether these are exactly the loads `expected` adds up to.
    pub(super) fn matches(&self, expected: &HashMap<H, HostLoad<K>>) -> Result<(), String> {
        if &self.hosts != expected {
            return Err("a host's load differs from its messages".into());
        }
        let bytes: usize = expected.values().map(|load| load.bytes).sum();
        if bytes != self.bytes {
            return Err(format!(
                "pending bytes {} but messages hold {bytes}",
                self.bytes
            ));
        }
        Ok(())
    }
}

/// When a message expires.
#[derive(Debug)]
pub(super) struct Deadline<K> {
    pub(super) at_ms: u64,
    pub(super) key: K,
    pub(super) generation: u64,
}

/// Deadlines in the order they fall. Every message gets the same timeout
/// from the time it is queued and time only moves forward, so pushing at
/// the back keeps the order.
#[derive(Debug)]
pub(super) struct Deadlines<K> {
    queue: VecDeque<Deadline<K>>,
}

/// Dead entries may make up this many more than twice the live ones
/// before the queue is compacted (completions leave theirs behind).
pub(super) const COMPACTION_SLACK: usize = 1024;

impl<K> Deadlines<K> {
    pub(super) fn new() -> Deadlines<K> {
        Deadlines {
            queue: VecDeque::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn push(&mut self, at_ms: u64, key: K, generation: u64) {
        self.queue.push_back(Deadline {
            at_ms,
            key,
            generation,
        });
    }

    /// The next entry due at or before `now_ms`, live or not.
    pub(super) fn pop_due(&mut self, now_ms: u64) -> Option<Deadline<K>> {
        if self.queue.front()?.at_ms > now_ms {
            return None;
        }
        self.queue.pop_front()
    }

    /// Oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Deadline<K>> {
        self.queue.iter()
    }

    /// Drops the dead entries once they outnumber `live` by enough that
    /// the queue would otherwise grow with every completed message.
    pub(super) fn compact(&mut self, live: usize, is_live: impl FnMut(&Deadline<K>) -> bool) {
        if self.queue.len() > 2 * live + COMPACTION_SLACK {
            self.queue.retain(is_live);
        }
    }

    /// The longest the queue can be with `live` entries at most live.
    pub(super) fn bound(live: usize) -> usize {
        2 * live + COMPACTION_SLACK + 1
    }

    #[cfg(test)]
    pub(super) fn clear(&mut self) {
        self.queue.clear();
    }
}

/// Keys given up on, each tagged with the generation whose deadline ends
/// it. At most `cap`: past that the oldest is forgotten, and a late chunk
/// of it starts a message that expires (counted) instead of being ignored.
#[derive(Debug)]
pub(super) struct Tombstones<K> {
    live: HashMap<K, u64>,
    /// Insertion order, for the bound; entries a deadline already ended
    /// wait here until the bound pops them.
    order: VecDeque<(K, u64)>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Tombstones<K> {
    pub(super) fn new(cap: usize) -> Tombstones<K> {
        Tombstones {
            live: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    pub(super) fn contains(&self, key: &K) -> bool {
        self.live.contains_key(key)
    }

    /// Whether `key` is held for exactly this `generation`.
    pub(super) fn holds(&self, key: &K, generation: u64) -> bool {
        self.live.get(key) == Some(&generation)
    }

    pub(super) fn insert(&mut self, key: K, generation: u64) {
        while self.order.len() >= self.cap {
            if let Some((oldest, its_generation)) = self.order.pop_front() {
                self.end(&oldest, its_generation);
            }
        }
        self.live.insert(key.clone(), generation);
        self.order.push_back((key, generation));
    }

    /// Ends `key`'s tombstone if it is still the one of `generation`.
    pub(super) fn end(&mut self, key: &K, generation: u64) {
        if self.holds(key, generation) {
            self.live.remove(key);
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = (&K, u64)> {
        self.live.iter().map(|(key, generation)| (key, *generation))
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.order.len() > self.cap || self.live.len() > self.order.len() {
            return Err(format!(
                "{} tombstones, {} in their queue, cap {}",
                self.live.len(),
                self.order.len(),
                self.cap
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_forgotten_when_its_last_message_leaves() {
        let mut loads = HostLoads::new();
        loads.start("a", 1, "first");
        loads.start("a", 2, "second");
        loads.grow(&"a", 100);
        loads.release(&"a", 1, 60);
        assert_eq!(loads.messages(&"a"), 1);
        assert_eq!(loads.total_bytes(), 40);
        loads.release(&"a", 2, 40);
        assert_eq!(loads.messages(&"a"), 0);
        assert_eq!(loads.total_bytes(), 0);
        assert_eq!(loads.victim(Weight::Messages, None), None);
    }

    #[test]
    fn releasing_a_message_twice_releases_it_once() {
        let mut loads = HostLoads::new();
        loads.start("a", 1, "first");
        loads.start("a", 2, "second");
        loads.grow(&"a", 10);
        loads.release(&"a", 1, 5);
        loads.release(&"a", 1, 5);
        assert_eq!((loads.messages(&"a"), loads.total_bytes()), (1, 5));
    }

    #[test]
    fn growing_a_host_that_holds_nothing_charges_nothing() {
        let mut loads: HostLoads<&str, &str> = HostLoads::new();
        loads.grow(&"ghost", 10);
        assert_eq!(loads.total_bytes(), 0);
        assert_eq!(loads.matches(&HashMap::new()), Ok(()));
    }

    #[test]
    fn the_victim_is_the_oldest_of_the_heaviest_host_but_not_the_spared() {
        let mut loads = HostLoads::new();
        loads.start("light", 1, "light-old");
        loads.start("heavy", 2, "heavy-old");
        loads.start("heavy", 3, "heavy-new");
        loads.grow(&"light", 5000);
        assert_eq!(loads.victim(Weight::Messages, None), Some("heavy-old"));
        assert_eq!(loads.victim(Weight::Messages, Some(2)), Some("heavy-new"));
        assert_eq!(loads.victim(Weight::Bytes, None), Some("light-old"));
        assert_eq!(loads.victim(Weight::Bytes, Some(1)), None);
    }

    #[test]
    fn deadlines_come_out_in_order_only_once_due() {
        let mut deadlines = Deadlines::new();
        deadlines.push(10, "a", 0);
        deadlines.push(20, "b", 1);
        assert!(deadlines.pop_due(9).is_none());
        assert_eq!(deadlines.pop_due(15).map(|d| d.key), Some("a"));
        assert!(deadlines.pop_due(15).is_none());
        assert_eq!(deadlines.pop_due(20).map(|d| d.generation), Some(1));
    }

    #[test]
    fn compaction_waits_for_enough_dead_entries_then_keeps_the_live() {
        let mut deadlines = Deadlines::new();
        for generation in 0..=COMPACTION_SLACK as u64 {
            deadlines.push(generation, "k", generation);
        }
        deadlines.compact(1, |d| d.generation == 0);
        assert_eq!(deadlines.len(), COMPACTION_SLACK + 1, "not yet");
        deadlines.push(9999, "k", 9999);
        deadlines.compact(0, |d| d.generation == 0);
        assert_eq!(deadlines.len(), 1);
    }

    #[test]
    fn tombstones_forget_the_oldest_past_their_cap() {
        let mut dead = Tombstones::new(2);
        dead.insert("a", 1);
        dead.insert("b", 2);
        dead.insert("c", 3);
        assert!(!dead.contains(&"a"));
        assert!(dead.contains(&"b") && dead.contains(&"c"));
        assert_eq!(dead.check(), Ok(()));
    }

    #[test]
    fn a_tombstone_is_ended_only_by_its_own_generation() {
        let mut dead = Tombstones::new(8);
        dead.insert("a", 1);
        dead.insert("a", 2);
        dead.end(&"a", 1);
        assert!(dead.holds(&"a", 2));
        dead.end(&"a", 2);
        assert!(!dead.contains(&"a"));
    }
}

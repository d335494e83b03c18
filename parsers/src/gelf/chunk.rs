//! Chunked GELF over UDP: the 12-byte chunk header and a [`Reassembler`]
//! that joins chunks into whole payloads (compression is undone after
//! joining: only chunk 0 starts with the magic bytes).
//!
//! The reassembler is a plain state machine: the caller passes the time in
//! (milliseconds from any fixed origin) and calls [`Reassembler::expire`]
//! now and then. Expiry keeps one queue ordered by deadline instead of a
//! timer per message; memory is bounded by [`ReassemblyLimits`].

use std::collections::HashMap;
use std::hash::Hash;

use thiserror::Error;

use super::bookkeeping::{Deadlines, HostLoad, HostLoads, Tombstones, Weight};

use crate::limits::{MAX_CHUNKS, ReassemblyLimits};

/// The two bytes that start every chunk.
pub const CHUNK_MAGIC: [u8; 2] = [0x1e, 0x0f];
/// Magic (2) + message id (8) + sequence number (1) + sequence count (1).
pub const CHUNK_HEADER_LEN: usize = 12;

/// A parsed chunk header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The sender's random message id, shared by all chunks of a message.
    pub message_id: [u8; 8],
    /// This chunk's 0-based position.
    pub sequence: u8,
    /// How many chunks the message has (1–128).
    pub count: u8,
}

/// Whether a datagram is a GELF chunk (starts with `1e 0f`).
///
/// ```
/// assert!(cowlogd_parsers::gelf::is_chunk(b"\x1e\x0f12345678\x00\x02payload"));
/// assert!(!cowlogd_parsers::gelf::is_chunk(b"\x1f\x8b"));
/// ```
pub fn is_chunk(datagram: &[u8]) -> bool {
    datagram.starts_with(&CHUNK_MAGIC)
}

/// Why a chunk was refused. Each one costs only its own message.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// Occurs when a datagram starting with the chunk magic is shorter than
    /// the 12-byte header.
    #[error("chunk shorter than its 12-byte header")]
    TooShort,
    /// Occurs when the sequence count is 0 or above 128.
    #[error("message {id:016x}: invalid chunk count {count}")]
    BadCount {
        /// The message id, as a number, for logs.
        id: u64,
        /// The count received.
        count: u8,
    },
    /// Occurs when the sequence number is not below the count.
    #[error("message {id:016x}: chunk {sequence} of {count}")]
    SequenceOutOfRange {
        /// The message id.
        id: u64,
        /// The sequence number received.
        sequence: u8,
        /// The count received.
        count: u8,
    },
    /// Occurs when a chunk's count differs from the message's first chunk.
    #[error("message {id:016x}: chunk says {got} chunks, first chunk said {expected}")]
    CountMismatch {
        /// The message id.
        id: u64,
        /// The first chunk's count.
        expected: u8,
        /// This chunk's count.
        got: u8,
    },
    /// Occurs when a message's chunks add up to more than
    /// `max_message_bytes`; the message is dropped.
    #[error("message {id:016x}: larger than {max} bytes, dropped")]
    MessageTooLarge {
        /// The message id.
        id: u64,
        /// The limit.
        max: usize,
    },
    /// Occurs when a sender starts a message while holding
    /// `max_pending_per_sender` incomplete ones; the new message is refused.
    #[error("message {id:016x}: sender has too many incomplete messages")]
    SenderLimit {
        /// The message id.
        id: u64,
    },
}

/// Parses a chunk's header and returns it with the payload that follows.
///
/// ```
/// use cowlogd_parsers::gelf::parse_chunk;
/// let (header, payload) = parse_chunk(b"\x1e\x0fABCDEFGH\x01\x03data").unwrap();
/// assert_eq!((header.sequence, header.count, payload), (1, 3, &b"data"[..]));
/// ```
///
/// # Errors
/// [`ChunkError::TooShort`], [`ChunkError::BadCount`] or
/// [`ChunkError::SequenceOutOfRange`].
pub fn parse_chunk(datagram: &[u8]) -> Result<(ChunkHeader, &[u8]), ChunkError> {
    if datagram.len() < CHUNK_HEADER_LEN || !is_chunk(datagram) {
        return Err(ChunkError::TooShort);
    }
    let mut message_id = [0u8; 8];
    message_id.copy_from_slice(&datagram[2..10]);
    let header = ChunkHeader {
        message_id,
        sequence: datagram[10],
        count: datagram[11],
    };
    let id = u64::from_be_bytes(message_id);
    if header.count == 0 || header.count > MAX_CHUNKS {
        return Err(ChunkError::BadCount {
            id,
            count: header.count,
        });
    }
    if header.sequence >= header.count {
        return Err(ChunkError::SequenceOutOfRange {
            id,
            sequence: header.sequence,
            count: header.count,
        });
    }
    Ok((header, &datagram[CHUNK_HEADER_LEN..]))
}

/// What adding a chunk did.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// The message is complete: its joined payload (still compressed).
    Complete(Vec<u8>),
    /// Stored; the message waits for more chunks.
    Pending,
    /// This chunk was already received; ignored.
    Duplicate,
    /// A chunk of a message already given up on (refused, too large,
    /// evicted): ignored, since that message was counted once already.
    Ignored,
}

/// Messages the reassembler gave up on, counted since the last
/// [`Reassembler::take_dropped`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DroppedMessages {
    /// Incomplete at their deadline.
    pub expired: u64,
    /// Evicted to make room under the global caps (from the host holding
    /// the most, oldest first).
    pub evicted: u64,
}

/// A chunk sender and the host its limits are counted for.
///
/// The reassembly key stays the full sender (address and port, so two
/// containers' message ids never collide); limits count per host, so one
/// machine opening many sockets is still one sender.
///
/// ```
/// use cowlogd_parsers::gelf::Sender;
/// let a: std::net::SocketAddr = "10.0.0.2:40000".parse().unwrap();
/// let b: std::net::SocketAddr = "10.0.0.2:40001".parse().unwrap();
/// assert_eq!(a.host(), b.host());
/// let v6: std::net::SocketAddr = "[2001:db8:1:2:aaaa::1]:5".parse().unwrap();
/// let same_64: std::net::SocketAddr = "[2001:db8:1:2:bbbb::9]:6".parse().unwrap();
/// assert_eq!(v6.host(), same_64.host());
/// ```
pub trait Sender: Hash + Eq + Clone {
    /// What limits are counted per.
    type Host: Hash + Eq + Clone;
    /// The host of this sender.
    fn host(&self) -> Self::Host;
}

impl Sender for std::net::SocketAddr {
    type Host = std::net::IpAddr;
    /// The IP address; for IPv6 its /64 (one host's privacy addresses
    /// share it).
    fn host(&self) -> std::net::IpAddr {
        match self.ip().to_canonical() {
            std::net::IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
            v4 => v4,
        }
    }
}

macro_rules! sender_is_its_own_host {
    ($($t:ty),*) => {$(
        impl Sender for $t {
            type Host = $t;
            fn host(&self) -> $t {
                *self
            }
        }
    )*};
}
sender_is_its_own_host!(u8, u16, u32, u64, std::net::IpAddr);

impl<'a> Sender for &'a str {
    type Host = &'a str;
    fn host(&self) -> &'a str {
        self
    }
}

/// A message being put together.
struct Pending {
    count: u8,
    /// Bit n set = chunk n received; a duplicate finds its bit set.
    received: u128,
    /// (offset, length) of each chunk's payload inside `data`.
    parts: Vec<(u32, u32)>,
    data: Vec<u8>,
    /// Ties the message to its entry in the deadline queue.
    generation: u64,
}

/// A message's identity: its sender and the sender's id for it.
type Key<S> = (S, [u8; 8]);

/// Joins GELF chunks per (sender, message id); see the module docs.
///
/// ```
/// use cowlogd_parsers::gelf::{Reassembler, ChunkOutcome};
/// use cowlogd_parsers::ReassemblyLimits;
/// let mut r = Reassembler::new(ReassemblyLimits::default());
/// let sender = "10.0.0.2:40000";
/// assert_eq!(r.add(sender, b"\x1e\x0fABCDEFGH\x01\x02world", 0), Ok(ChunkOutcome::Pending));
/// assert_eq!(r.add(sender, b"\x1e\x0fABCDEFGH\x00\x02hello ", 3), Ok(ChunkOutcome::Complete(b"hello world".to_vec())));
/// ```
pub struct Reassembler<S: Sender> {
    limits: ReassemblyLimits,
    pending: HashMap<Key<S>, Pending>,
    /// What the pending messages hold, per host and in all.
    loads: HostLoads<S::Host, Key<S>>,
    /// When each pending message, and each tombstone, ends.
    deadlines: Deadlines<Key<S>>,
    /// Messages given up on, until their deadline: their further chunks are
    /// ignored instead of counted again.
    given_up: Tombstones<Key<S>>,
    next_generation: u64,
    dropped: DroppedMessages,
}

impl<S: Sender> std::fmt::Debug for Reassembler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("pending_messages", &self.pending.len())
            .field("pending_bytes", &self.loads.total_bytes())
            .finish()
    }
}

impl<S: Sender> Reassembler<S> {
    /// An empty reassembler with the given bounds.
    pub fn new(limits: ReassemblyLimits) -> Reassembler<S> {
        Reassembler {
            limits,
            pending: HashMap::new(),
            loads: HostLoads::new(),
            deadlines: Deadlines::new(),
            given_up: Tombstones::new(limits.max_pending_messages),
            next_generation: 0,
            dropped: DroppedMessages::default(),
        }
    }

    /// Incomplete messages held.
    pub fn pending_messages(&self) -> usize {
        self.pending.len()
    }

    /// Bytes held by incomplete messages (their buffers' allocated size,
    /// what memory they really take). Never above `max_pending_bytes`.
    pub fn pending_bytes(&self) -> usize {
        self.loads.total_bytes()
    }

    /// Returns and resets the count of messages given up on.
    pub fn take_dropped(&mut self) -> DroppedMessages {
        std::mem::take(&mut self.dropped)
    }

    /// Adds one chunk datagram from `sender`, received at `now_ms`. Expires
    /// overdue messages first.
    ///
    /// # Errors
    /// A [`ChunkError`] when the chunk is invalid or refused; other messages
    /// are unaffected. A refused or oversized message's later chunks give
    /// [`ChunkOutcome::Ignored`], so each message counts once.
    pub fn add(
        &mut self,
        sender: S,
        datagram: &[u8],
        now_ms: u64,
    ) -> Result<ChunkOutcome, ChunkError> {
        self.expire(now_ms);
        let (header, payload) = parse_chunk(datagram)?;
        let id = u64::from_be_bytes(header.message_id);
        if header.count == 1 {
            // A one-chunk "chunked" message needs no state.
            return Ok(ChunkOutcome::Complete(payload.to_vec()));
        }
        let key = (sender, header.message_id);
        if self.given_up.contains(&key) {
            return Ok(ChunkOutcome::Ignored);
        }
        // Out of the map while this chunk is added, so that making room
        // cannot pick it; its host stays charged for it meanwhile.
        let mut message = match self.pending.remove(&key) {
            Some(message) => message,
            None => match self.start(&key, header.count, now_ms, id) {
                Ok(message) => message,
                Err(error) => {
                    self.give_up(key, now_ms);
                    return Err(error);
                }
            },
        };
        if message.count != header.count {
            let expected = message.count;
            self.pending.insert(key, message);
            return Err(ChunkError::CountMismatch {
                id,
                expected,
                got: header.count,
            });
        }
        let bit = 1u128 << header.sequence;
        if message.received & bit != 0 {
            self.pending.insert(key, message);
            return Ok(ChunkOutcome::Duplicate);
        }
        let host = key.0.host();
        let max_message = self.limits.max_message_bytes;
        if message.data.len() + payload.len() > max_message {
            self.loads
                .release(&host, message.generation, message.data.capacity());
            self.give_up(key, now_ms);
            return Err(ChunkError::MessageTooLarge {
                id,
                max: max_message,
            });
        }
        let growth = (message.data.len() + payload.len()).saturating_sub(message.data.capacity());
        if !self.make_room(growth, message.generation) {
            // Nothing else could go: this message is the one evicted.
            self.loads
                .release(&host, message.generation, message.data.capacity());
            self.dropped.evicted += 1;
            self.give_up(key, now_ms);
            return Ok(ChunkOutcome::Ignored);
        }
        let capacity = message.data.capacity();
        // Exact growth: a doubling buffer would hold up to twice what the
        // cap allows.
        message.data.reserve_exact(payload.len());
        self.loads.grow(&host, message.data.capacity() - capacity);
        message.received |= bit;
        message.parts[usize::from(header.sequence)] =
            (message.data.len() as u32, payload.len() as u32);
        message.data.extend_from_slice(payload);
        if message.received.count_ones() == u32::from(message.count) {
            self.loads
                .release(&host, message.generation, message.data.capacity());
            return Ok(ChunkOutcome::Complete(join(message)));
        }
        self.pending.insert(key, message);
        Ok(ChunkOutcome::Pending)
    }

    /// Gives up on every message whose deadline is at or before `now_ms`
    /// and ends the tombstones due; returns how many messages expired.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut expired = 0;
        while let Some(due) = self.deadlines.pop_due(now_ms) {
            match self.pending.get(&due.key) {
                Some(message) if message.generation == due.generation => {
                    self.remove(&due.key);
                    expired += 1;
                }
                _ => self.given_up.end(&due.key, due.generation),
            }
        }
        self.dropped.expired += expired as u64;
        expired
    }

    /// Checks the bookkeeping against the messages held: byte and message
    /// totals (overall and per host) equal what the pending messages hold,
    /// every limit holds, every pending message and tombstone has its
    /// deadline queued, and the tombstones and the deadline queue are
    /// bounded. For tests and fuzzing, after every step; `Err` says which
    /// invariant broke.
    ///
    /// ```
    /// use cowlogd_parsers::gelf::Reassembler;
    /// use cowlogd_parsers::ReassemblyLimits;
    /// let mut r = Reassembler::new(ReassemblyLimits::default());
    /// r.add("10.0.0.2:1", b"\x1e\x0fABCDEFGH\x00\x02hello ", 0).unwrap();
    /// assert_eq!(r.check_invariants(), Ok(()));
    /// ```
    ///
    /// # Errors
    /// The first invariant that does not hold, described.
    pub fn check_invariants(&self) -> Result<(), String> {
        let limits = &self.limits;
        let queued: std::collections::HashSet<(&Key<S>, u64)> = self
            .deadlines
            .iter()
            .map(|deadline| (&deadline.key, deadline.generation))
            .collect();
        let mut hosts: HashMap<S::Host, HostLoad<Key<S>>> = HashMap::new();
        for (key, message) in &self.pending {
            let load = hosts.entry(key.0.host()).or_default();
            load.by_age.insert(message.generation, key.clone());
            load.bytes += message.data.capacity();
            if message.data.len() > limits.max_message_bytes {
                return Err(format!("a message holds {} bytes", message.data.len()));
            }
            if message.received.count_ones() >= u32::from(message.count) {
                return Err("a complete message is still pending".into());
            }
            if !queued.contains(&(key, message.generation)) {
                return Err("a pending message has no deadline queued".into());
            }
        }
        self.loads.matches(&hosts)?;
        if let Some(load) = hosts
            .values()
            .find(|load| load.messages() > limits.max_pending_per_sender)
        {
            return Err(format!("a host holds {} messages", load.messages()));
        }
        if self.pending.len() > limits.max_pending_messages {
            return Err(format!("{} messages pending", self.pending.len()));
        }
        if self.loads.total_bytes() > limits.max_pending_bytes {
            return Err(format!("{} bytes pending", self.loads.total_bytes()));
        }
        self.given_up.check()?;
        if self.given_up.keys().any(|entry| !queued.contains(&entry)) {
            return Err("a tombstone has no deadline queued".into());
        }
        let bound = Deadlines::<Key<S>>::bound(2 * limits.max_pending_messages);
        if self.deadlines.len() > bound {
            return Err(format!("{} deadlines queued", self.deadlines.len()));
        }
        Ok(())
    }

    fn next_generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    /// Whether a deadline entry still ends something.
    fn compact_deadlines(&mut self) {
        let (pending, given_up) = (&self.pending, &self.given_up);
        self.deadlines
            .compact(pending.len() + given_up.len(), |deadline| {
                pending
                    .get(&deadline.key)
                    .is_some_and(|message| message.generation == deadline.generation)
                    || given_up.holds(&deadline.key, deadline.generation)
            });
    }

    /// Remembers `key` as given up on until a full timeout from now.
    fn give_up(&mut self, key: Key<S>, now_ms: u64) {
        self.compact_deadlines();
        let generation = self.next_generation();
        self.deadlines.push(
            now_ms.saturating_add(self.limits.timeout_ms),
            key.clone(),
            generation,
        );
        self.given_up.insert(key, generation);
    }

    /// A new message, its host charged and its deadline queued, after
    /// making room under the message cap. Not yet in `pending`.
    fn start(
        &mut self,
        key: &Key<S>,
        count: u8,
        now_ms: u64,
        id: u64,
    ) -> Result<Pending, ChunkError> {
        let host = key.0.host();
        if self.loads.messages(&host) >= self.limits.max_pending_per_sender {
            return Err(ChunkError::SenderLimit { id });
        }
        while !self.pending.is_empty() && self.pending.len() >= self.limits.max_pending_messages {
            let evicted = self
                .loads
                .victim(Weight::Messages, None)
                .is_some_and(|victim| self.evict(victim));
            if !evicted {
                break;
            }
        }
        self.compact_deadlines();
        let generation = self.next_generation();
        self.loads.start(host, generation, key.clone());
        self.deadlines.push(
            now_ms.saturating_add(self.limits.timeout_ms),
            key.clone(),
            generation,
        );
        Ok(Pending {
            count,
            received: 0,
            parts: vec![(0, 0); usize::from(count)],
            data: Vec::new(),
            generation,
        })
    }

    /// Evicts others' messages until `growth` more bytes fit under
    /// `max_pending_bytes`; `false` when nothing else is left to evict, so
    /// the message being added (`spare`, out of the map meanwhile) must go.
    fn make_room(&mut self, growth: usize, spare: u64) -> bool {
        while self.loads.total_bytes() + growth > self.limits.max_pending_bytes {
            let evicted = self
                .loads
                .victim(Weight::Bytes, Some(spare))
                .is_some_and(|victim| self.evict(victim));
            if !evicted {
                return false;
            }
        }
        true
    }

    /// Evicts a pending message; its later chunks are ignored, not counted
    /// again, until the deadline it already has queued. `false` if `key`
    /// was not pending (then nothing changed, and the caller stops).
    fn evict(&mut self, key: Key<S>) -> bool {
        let Some(message) = self.remove(&key) else {
            return false;
        };
        self.dropped.evicted += 1;
        self.given_up.insert(key, message.generation);
        true
    }

    fn remove(&mut self, key: &Key<S>) -> Option<Pending> {
        let message = self.pending.remove(key)?;
        self.loads
            .release(&key.0.host(), message.generation, message.data.capacity());
        Some(message)
    }
}

/// The payload in chunk order; chunks that came in order already are.
fn join(message: Pending) -> Vec<u8> {
    let mut offset = 0u32;
    let in_order = message.parts.iter().all(|&(start, len)| {
        let next = start == offset;
        offset += len;
        next
    });
    if in_order {
        return message.data;
    }
    let mut joined = Vec::with_capacity(message.data.len());
    for &(start, len) in &message.parts {
        joined.extend_from_slice(&message.data[start as usize..(start + len) as usize]);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: u8, seq: u8, count: u8, payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0x1e, 0x0f, id, 0, 0, 0, 0, 0, 0, 0, seq, count];
        d.extend_from_slice(payload);
        d
    }

    fn reassembler() -> Reassembler<u32> {
        Reassembler::new(ReassemblyLimits::default())
    }

    #[test]
    fn the_invariant_check_finds_bookkeeping_out_of_step() {
        let mut r = reassembler();
        assert_eq!(
            r.add(1, &chunk(1, 0, 2, b"part"), 0),
            Ok(ChunkOutcome::Pending)
        );
        assert_eq!(r.check_invariants(), Ok(()));
        r.loads.grow(&1, 1);
        assert!(r.check_invariants().unwrap_err().contains("load"));
        let mut r = reassembler();
        r.add(1, &chunk(1, 0, 2, b"part"), 0).unwrap();
        r.deadlines.clear();
        assert!(r.check_invariants().unwrap_err().contains("deadline"));
    }

    #[test]
    fn decode_unordered_chunks() {
        let mut r = reassembler();
        assert_eq!(
            r.add(1, &chunk(1, 2, 3, b"c"), 0),
            Ok(ChunkOutcome::Pending)
        );
        assert_eq!(
            r.add(1, &chunk(1, 0, 3, b"a"), 0),
            Ok(ChunkOutcome::Pending)
        );
        assert_eq!(
            r.add(1, &chunk(1, 1, 3, b"b"), 0),
            Ok(ChunkOutcome::Complete(b"abc".to_vec()))
        );
        assert_eq!((r.pending_messages(), r.pending_bytes()), (0, 0));
    }

    #[test]
    fn decode_duplicated_chunk_is_ignored() {
        let mut r = reassembler();
        r.add(1, &chunk(1, 0, 2, b"a"), 0).unwrap();
        assert_eq!(
            r.add(1, &chunk(1, 0, 2, b"X"), 0),
            Ok(ChunkOutcome::Duplicate)
        );
        assert_eq!(
            r.add(1, &chunk(1, 1, 2, b"b"), 0),
            Ok(ChunkOutcome::Complete(b"ab".to_vec()))
        );
    }

    #[test]
    fn empty_final_chunk_completes_the_message() {
        let mut r = reassembler();
        r.add(1, &chunk(1, 0, 2, &[7; 1408]), 0).unwrap();
        let last = chunk(1, 1, 2, b"");
        assert_eq!(last.len(), 12);
        assert_eq!(
            r.add(1, &last, 0),
            Ok(ChunkOutcome::Complete(vec![7; 1408]))
        );
    }

    #[test]
    fn same_id_from_two_senders_are_two_messages() {
        let mut r = reassembler();
        r.add(1, &chunk(9, 0, 2, b"1a"), 0).unwrap();
        r.add(2, &chunk(9, 0, 2, b"2a"), 0).unwrap();
        assert_eq!(
            r.add(2, &chunk(9, 1, 2, b"2b"), 0),
            Ok(ChunkOutcome::Complete(b"2a2b".to_vec()))
        );
        assert_eq!(
            r.add(1, &chunk(9, 1, 2, b"1b"), 0),
            Ok(ChunkOutcome::Complete(b"1a1b".to_vec()))
        );
    }

    #[test]
    fn invalid_headers_are_rejected() {
        let mut r = reassembler();
        assert_eq!(r.add(1, b"\x1e\x0fshort", 0), Err(ChunkError::TooShort));
        assert!(matches!(
            r.add(1, &chunk(1, 0, 0, b"x"), 0),
            Err(ChunkError::BadCount { .. })
        ));
        assert!(matches!(
            r.add(1, &chunk(1, 0, 129, b"x"), 0),
            Err(ChunkError::BadCount { .. })
        ));
        assert!(matches!(
            r.add(1, &chunk(1, 3, 3, b"x"), 0),
            Err(ChunkError::SequenceOutOfRange { .. })
        ));
        r.add(1, &chunk(1, 0, 3, b"x"), 0).unwrap();
        assert!(matches!(
            r.add(1, &chunk(1, 1, 4, b"x"), 0),
            Err(ChunkError::CountMismatch { .. })
        ));
    }

    #[test]
    fn decode_timeout_expires_incomplete_messages() {
        let mut r = reassembler();
        r.add(1, &chunk(1, 0, 2, b"a"), 1_000).unwrap();
        assert_eq!(r.expire(5_999), 0);
        assert_eq!(r.expire(6_000), 1);
        assert_eq!(r.take_dropped().expired, 1);
        // The late chunk starts a new message rather than completing the old one.
        assert_eq!(
            r.add(1, &chunk(1, 1, 2, b"b"), 6_001),
            Ok(ChunkOutcome::Pending)
        );
    }

    #[test]
    fn pending_message_cap_evicts_the_oldest() {
        let mut r: Reassembler<u32> = Reassembler::new(ReassemblyLimits {
            max_pending_messages: 2,
            ..ReassemblyLimits::default()
        });
        r.add(1, &chunk(1, 0, 2, b"a"), 0).unwrap();
        r.add(2, &chunk(2, 0, 2, b"a"), 0).unwrap();
        r.add(3, &chunk(3, 0, 2, b"a"), 0).unwrap();
        assert_eq!(r.pending_messages(), 2);
        assert_eq!(r.take_dropped().evicted, 1);
        // The evicted message's later chunks are ignored: it counted once.
        assert_eq!(
            r.add(1, &chunk(1, 1, 2, b"b"), 0),
            Ok(ChunkOutcome::Ignored)
        );
        assert_eq!(
            r.add(3, &chunk(3, 1, 2, b"b"), 0),
            Ok(ChunkOutcome::Complete(b"ab".to_vec()))
        );
    }

    #[test]
    fn per_sender_cap_refuses_only_that_sender() {
        let mut r: Reassembler<u32> = Reassembler::new(ReassemblyLimits {
            max_pending_per_sender: 2,
            ..ReassemblyLimits::default()
        });
        r.add(1, &chunk(1, 0, 2, b"a"), 0).unwrap();
        r.add(1, &chunk(2, 0, 2, b"a"), 0).unwrap();
        assert!(matches!(
            r.add(1, &chunk(3, 0, 2, b"a"), 0),
            Err(ChunkError::SenderLimit { .. })
        ));
        assert_eq!(
            r.add(2, &chunk(3, 0, 2, b"a"), 0),
            Ok(ChunkOutcome::Pending)
        );
    }

    #[test]
    fn message_over_max_bytes_is_dropped() {
        let mut r: Reassembler<u32> = Reassembler::new(ReassemblyLimits {
            max_message_bytes: 10,
            ..ReassemblyLimits::default()
        });
        r.add(1, &chunk(1, 0, 3, b"123456"), 0).unwrap();
        assert!(matches!(
            r.add(1, &chunk(1, 1, 3, b"789012"), 0),
            Err(ChunkError::MessageTooLarge { .. })
        ));
        assert_eq!((r.pending_messages(), r.pending_bytes()), (0, 0));
    }

    #[test]
    fn pending_bytes_cap_evicts_before_a_new_message() {
        let mut r: Reassembler<u32> = Reassembler::new(ReassemblyLimits {
            max_pending_bytes: 10,
            ..ReassemblyLimits::default()
        });
        r.add(1, &chunk(1, 0, 2, &[0; 10]), 0).unwrap();
        r.add(2, &chunk(2, 0, 2, b"x"), 0).unwrap();
        assert_eq!((r.pending_messages(), r.pending_bytes()), (1, 1));
        assert_eq!(r.take_dropped().evicted, 1);
    }

    #[test]
    fn started_queue_stays_bounded_when_messages_complete() {
        let mut r = reassembler();
        for i in 0..10_000u32 {
            let mut d = chunk(0, 0, 2, b"a");
            d[2..6].copy_from_slice(&i.to_be_bytes());
            r.add(1, &d, 0).unwrap();
            d[10] = 1;
            assert!(matches!(r.add(1, &d, 0), Ok(ChunkOutcome::Complete(_))));
        }
        assert!(r.deadlines.len() <= 1025);
    }

    fn limited(limits: ReassemblyLimits) -> Reassembler<std::net::SocketAddr> {
        Reassembler::new(limits)
    }

    fn addr(text: &str) -> std::net::SocketAddr {
        text.parse().unwrap()
    }

    fn chunk_id(id: u32, seq: u8, count: u8, payload: &[u8]) -> Vec<u8> {
        let mut d = chunk(0, seq, count, payload);
        d[2..6].copy_from_slice(&id.to_be_bytes());
        d
    }

    #[test]
    fn the_byte_cap_holds_on_every_chunk_not_only_when_a_message_starts() {
        // One sender opens many messages with a tiny first chunk, then fills
        // each: pending bytes never pass the cap, and what went is counted.
        let cap = 64 * 1024;
        let mut r = limited(ReassemblyLimits {
            max_pending_bytes: cap,
            ..ReassemblyLimits::default()
        });
        let sender = addr("10.0.0.9:4000");
        for id in 0..100 {
            r.add(sender, &chunk_id(id, 0, 128, b"x"), 0).unwrap();
        }
        let fill = vec![b'y'; 1400];
        for seq in 1..128 {
            for id in 0..100 {
                let _ = r.add(sender, &chunk_id(id, seq, 128, &fill), 0);
                assert!(r.pending_bytes() <= cap, "{} > {cap}", r.pending_bytes());
            }
        }
        let gone = r.take_dropped().evicted;
        assert!(gone >= 50, "evicted {gone}");
        assert!(r.pending_messages() as u64 + gone == 100);
    }

    #[test]
    fn the_sender_limit_counts_a_host_not_a_port_and_an_ipv6_slash_64() {
        let mut r = limited(ReassemblyLimits {
            max_pending_per_sender: 4,
            ..ReassemblyLimits::default()
        });
        for port in 0..4 {
            let sender = addr(&format!("10.0.0.9:{}", 4000 + port));
            r.add(sender, &chunk_id(1, 0, 2, b"a"), 0).unwrap();
        }
        assert!(matches!(
            r.add(addr("10.0.0.9:5000"), &chunk_id(1, 0, 2, b"a"), 0),
            Err(ChunkError::SenderLimit { .. })
        ));
        for n in 0..4 {
            let sender = addr(&format!("[2001:db8::{n}]:4000"));
            r.add(sender, &chunk_id(1, 0, 2, b"a"), 0).unwrap();
        }
        assert!(matches!(
            r.add(addr("[2001:db8::ffff]:1"), &chunk_id(1, 0, 2, b"a"), 0),
            Err(ChunkError::SenderLimit { .. })
        ));
        // Another host is not affected, and the same ids stay apart per port.
        assert_eq!(
            r.add(addr("10.0.0.10:4000"), &chunk_id(1, 0, 2, b"a"), 0),
            Ok(ChunkOutcome::Pending)
        );
        assert_eq!(
            r.add(addr("10.0.0.9:4001"), &chunk_id(1, 1, 2, b"b"), 0),
            Ok(ChunkOutcome::Complete(b"ab".to_vec()))
        );
    }

    #[test]
    fn a_full_reassembler_evicts_from_the_largest_holder_not_from_others() {
        let mut r = limited(ReassemblyLimits {
            max_pending_messages: 8,
            max_pending_per_sender: 6,
            ..ReassemblyLimits::default()
        });
        let docker = addr("10.0.0.2:40000");
        r.add(docker, &chunk_id(77, 0, 2, b"hello "), 0).unwrap();
        // Another host, over several ports, fills the rest and goes on.
        for id in 0..20 {
            let flood = addr(&format!("10.0.0.66:{}", 1000 + id % 9));
            let _ = r.add(flood, &chunk_id(id, 0, 2, b"x"), 0);
        }
        assert_eq!(
            r.add(docker, &chunk_id(77, 1, 2, b"world"), 1),
            Ok(ChunkOutcome::Complete(b"hello world".to_vec()))
        );
    }

    #[test]
    fn each_refused_or_oversized_message_counts_once() {
        let mut r = limited(ReassemblyLimits {
            max_pending_per_sender: 1,
            max_message_bytes: 10,
            ..ReassemblyLimits::default()
        });
        let sender = addr("10.0.0.9:4000");
        r.add(sender, &chunk_id(1, 0, 4, b"a"), 0).unwrap();
        // A second message refused by the sender limit: one error, then its
        // other three chunks are ignored.
        let outcomes: Vec<_> = (0..4)
            .map(|seq| r.add(sender, &chunk_id(2, seq, 4, b"b"), 0))
            .collect();
        assert!(matches!(outcomes[0], Err(ChunkError::SenderLimit { .. })));
        assert!(
            outcomes[1..]
                .iter()
                .all(|o| *o == Ok(ChunkOutcome::Ignored))
        );
        // An oversized message: one error, and its later chunks neither
        // count again nor start a message that times out.
        let other = addr("10.0.0.10:4000");
        let outcomes: Vec<_> = (0..10)
            .map(|seq| r.add(other, &chunk_id(3, seq, 10, b"123456"), 0))
            .collect();
        assert_eq!(outcomes[0], Ok(ChunkOutcome::Pending));
        assert!(matches!(
            outcomes[1],
            Err(ChunkError::MessageTooLarge { .. })
        ));
        assert!(
            outcomes[2..]
                .iter()
                .all(|o| *o == Ok(ChunkOutcome::Ignored))
        );
        r.expire(60_000);
        assert_eq!(r.take_dropped().expired, 1, "only message 1 timed out");
        // After the deadline the id may be used again.
        assert_eq!(
            r.add(other, &chunk_id(3, 0, 2, b"1"), 60_001),
            Ok(ChunkOutcome::Pending)
        );
    }
}

//! Default bounds for every buffer the parsers keep. All are on by default;
//! the daemon's config overrides them.

/// Longest syslog or GELF TCP frame, in bytes (Graylog's GELF TCP limit is
/// 2 MiB; a Docker frame can pass 100 KB).
pub const DEFAULT_MAX_FRAME: usize = 2 * 1024 * 1024;

/// Largest decompressed GELF payload, in bytes (Graylog: 8 MiB).
pub const DEFAULT_MAX_DECOMPRESSED: usize = 8 * 1024 * 1024;

/// Most chunks one GELF message may have (GELF 1.1 spec).
pub const MAX_CHUNKS: u8 = 128;

/// How long a chunked GELF message may take to complete, from its first
/// chunk, in milliseconds (Graylog: 5 s).
pub const DEFAULT_CHUNK_TIMEOUT_MS: u64 = 5_000;

/// Bounds on the GELF chunk reassembler's memory.
///
/// ```
/// use cowlogd_parsers::ReassemblyLimits;
/// let limits = ReassemblyLimits { max_pending_messages: 10, ..ReassemblyLimits::default() };
/// assert_eq!(limits.timeout_ms, 5_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Incomplete messages held at once; starting one more evicts the oldest
    /// message of the host holding the most.
    pub max_pending_messages: usize,
    /// Incomplete messages one host (an IP address; IPv6: a /64) may hold,
    /// whatever its ports; its next new message is refused, so one noisy
    /// host cannot evict everybody else's.
    pub max_pending_per_sender: usize,
    /// Bytes held across all incomplete messages, checked on every chunk; a
    /// chunk that would pass it evicts the oldest message of the host
    /// holding the most bytes (which may be the chunk's own).
    pub max_pending_bytes: usize,
    /// Payload bytes one message may reach; a message growing past it is
    /// dropped.
    pub max_message_bytes: usize,
    /// Deadline from a message's first chunk, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_pending_messages: 8192,
            max_pending_per_sender: 1024,
            max_pending_bytes: 64 * 1024 * 1024,
            max_message_bytes: 2 * 1024 * 1024,
            timeout_ms: DEFAULT_CHUNK_TIMEOUT_MS,
        }
    }
}

/// What ends a message cut to the daemon's `limits.max_message_bytes`.
pub const TRUNCATION_MARKER: &[u8] = b"...[truncated by cowlogd]";

/// The largest cut of `text` at most `max` bytes long that does not split
/// a UTF-8 character: `max` backed off over at most three continuation
/// bytes (text that is not UTF-8 is cut where it is, after three).
///
/// ```
/// use cowlogd_parsers::limits::char_floor;
/// assert_eq!(char_floor("a\u{e9}".as_bytes(), 2), 1);
/// assert_eq!(char_floor(b"abc", 9), 3);
/// ```
pub fn char_floor(text: &[u8], max: usize) -> usize {
    let mut cut = max.min(text.len());
    let mut backed = 0;
    while cut > 0 && backed < 3 && text.get(cut).is_some_and(|b| b & 0xc0 == 0x80) {
        cut -= 1;
        backed += 1;
    }
    cut
}

/// `message` cut so that it and [`TRUNCATION_MARKER`] fit in `max` bytes,
/// at a character boundary, with the marker after it. Rare path: it
/// allocates.
///
/// ```
/// use cowlogd_parsers::limits::truncate_message;
/// let cut = truncate_message(&[b'x'; 100], 30);
/// assert_eq!(cut, b"xxxxx...[truncated by cowlogd]");
/// ```
pub fn truncate_message(message: &[u8], max: usize) -> Vec<u8> {
    let cut = char_floor(message, max.saturating_sub(TRUNCATION_MARKER.len()));
    let mut out = Vec::with_capacity(cut + TRUNCATION_MARKER.len());
    out.extend_from_slice(&message[..cut]);
    out.extend_from_slice(TRUNCATION_MARKER);
    out
}

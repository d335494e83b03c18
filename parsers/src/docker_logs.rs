//! The Docker Engine API's container logs
//! (`GET /containers/{id}/logs?follow=1&stdout=1&stderr=1&timestamps=1`):
//! the stream cut into Docker's log entries ([`LogDemux`]), entries put
//! back into lines and positions kept per stream ([`LineCursor`]), and a
//! container's position as a checkpoint ([`Checkpoint`]).
//!
//! What Docker writes, per entry its `json-file` driver stored:
//! `2026-12-06T05:21:49.123456789Z ` (RFC 3339, nine digits), then the
//! text, with its `\n` when the line ended. A line over 16 KiB was stored
//! as several entries of exactly 16384 bytes without `\n`, the last one
//! with it, **all with the first part's timestamp**; lines printed in the
//! same nanosecond share one too. So a position is a timestamp and how
//! many entries with it were read, per stream: stdout and stderr are
//! stamped by two copiers, so the file can hold an stderr entry stamped a
//! little after an stdout entry that follows it.
//!
//! A container without a TTY answers a multiplexed stream: per entry an
//! 8-byte header (stream 1 stdout, 2 stderr; 3 bytes 0; u32 big-endian
//! length) and the entry. A TTY container answers the raw entries one
//! after the other; a part of a split line is then told by the timestamp
//! that starts 16384 bytes after its own.

use crate::record::Timestamp;

/// Bytes of each part but the last of a line Docker split.
pub const DOCKER_PART_BYTES: usize = 16 * 1024;
/// Longest timestamp prefix read (with its space).
const MAX_TIME_PREFIX: usize = 40;

/// The stream an entry came from (a TTY container's output is stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

/// One log entry as Docker stored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// Its stream.
    pub stream: LogStream,
    /// Docker's timestamp (for a part of a split line, the first part's).
    pub time: Timestamp,
    /// The text, without the `\n`.
    pub text: &'a [u8],
    /// Whether the line ends here (`false`: a part of a split line, or the
    /// last bytes a container printed without a newline).
    pub ends_line: bool,
}

/// Why the stream cannot be read at this point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    /// A multiplexed header with a stream byte other than 0, 1, 2.
    #[error("multiplexed header names stream {0}")]
    UnknownStream(u8),
    /// A multiplexed entry longer than the bound.
    #[error("log entry of {len} bytes exceeds {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An entry without the timestamp prefix `timestamps=1` asks for.
    #[error("log entry without a timestamp")]
    NoTimestamp,
}

impl DemuxError {
    /// Whether the stream cannot be followed past it (a multiplexed
    /// header that is not one: where the next entry starts is unknown).
    ///
    /// ```
    /// use cowlogd_parsers::docker_logs::DemuxError;
    /// assert!(DemuxError::UnknownStream(7).ends_stream());
    /// assert!(!DemuxError::NoTimestamp.ends_stream());
    /// ```
    pub fn ends_stream(&self) -> bool {
        !matches!(self, DemuxError::NoTimestamp)
    }
}

/// Parses Docker's timestamp prefix (`2026-12-06T05:21:49.123456789Z `);
/// the time and the bytes it takes with its space.
///
/// ```
/// use cowlogd_parsers::Timestamp;
/// use cowlogd_parsers::docker_logs::parse_log_time;
/// let (time, len) = parse_log_time(b"2026-12-06T05:21:49.123456789Z hello").unwrap();
/// assert_eq!(time, Timestamp::new(1796534509, 123456789));
/// assert_eq!(len, 31);
/// assert_eq!(parse_log_time(b"hello"), None);
/// ```
pub fn parse_log_time(bytes: &[u8]) -> Option<(Timestamp, usize)> {
    let end = memchr::memchr(b' ', &bytes[..bytes.len().min(MAX_TIME_PREFIX)])?;
    let token = &bytes[..end];
    let time = fixed_utc(token).or_else(|| {
        // Any other RFC 3339 form a daemon may write.
        let parsed: jiff::Timestamp = std::str::from_utf8(token).ok()?.parse().ok()?;
        Some(Timestamp::new(
            parsed.as_second(),
            u32::try_from(parsed.subsec_nanosecond()).ok()?,
        ))
    })?;
    Some((time, end + 1))
}

/// `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ`, the form Docker writes, without a
/// general parser.
fn fixed_utc(token: &[u8]) -> Option<Timestamp> {
    if token.len() != 30
        || token[4] != b'-'
        || token[7] != b'-'
        || token[10] != b'T'
        || token[13] != b':'
        || token[16] != b':'
        || token[19] != b'.'
        || token[29] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        token[range].iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let nanos = number(20..29)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(Timestamp::new(
        days * 86_400 + hour * 3600 + minute * 60 + second,
        nanos as u32,
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Cuts a logs response into [`LogEntry`]s, holding at most one entry and
/// the bytes pushed with it.
///
/// ```
/// use cowlogd_parsers::docker_logs::{LogDemux, LogStream};
/// let mut demux = LogDemux::new(true, 64 * 1024);
/// demux.push(b"\x02\0\0\0\0\0\0\x24");
/// demux.push(b"2026-12-06T05:21:49.000000001Z oops\n");
/// let entry = demux.next_entry().unwrap().unwrap();
/// assert_eq!((entry.stream, entry.text, entry.ends_line), (LogStream::Stderr, &b"oops"[..], true));
/// assert!(demux.next_entry().is_none());
/// ```
#[derive(Debug)]
pub struct LogDemux {
    multiplexed: bool,
    max_entry: usize,
    buf: Vec<u8>,
    start: usize,
}

impl LogDemux {
    /// A demuxer for a multiplexed (no TTY) or raw (TTY) stream; a
    /// multiplexed entry over `max_entry` bytes is an error.
    pub fn new(multiplexed: bool, max_entry: usize) -> LogDemux {
        LogDemux {
            multiplexed,
            max_entry,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Bytes held, not yet returned as entries.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Adds bytes read from the response.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole entry; `None` until more bytes are pushed. After an
    /// error the bad bytes are skipped and the next call goes on.
    pub fn next_entry(&mut self) -> Option<Result<LogEntry<'_>, DemuxError>> {
        if self.multiplexed {
            self.next_multiplexed()
        } else {
            self.next_raw(false)
        }
    }

    /// At the end of the response: what is left of a raw stream (a TTY
    /// container's last bytes without a newline) as one last entry.
    pub fn finish(&mut self) -> Option<Result<LogEntry<'_>, DemuxError>> {
        if self.multiplexed || self.buffered() == 0 {
            return None;
        }
        self.next_raw(true)
    }

    fn next_multiplexed(&mut self) -> Option<Result<LogEntry<'_>, DemuxError>> {
        loop {
            let held = &self.buf[self.start..];
            if held.len() < 8 {
                return None;
            }
            let len = u32::from_be_bytes([held[4], held[5], held[6], held[7]]) as usize;
            let stream = match held[0] {
                0 => None,
                1 => Some(LogStream::Stdout),
                2 => Some(LogStream::Stderr),
                other => {
                    // The framing is lost: nothing after it can be trusted.
                    self.start = self.buf.len();
                    return Some(Err(DemuxError::UnknownStream(other)));
                }
            };
            if len > self.max_entry {
                self.start = self.buf.len();
                return Some(Err(DemuxError::TooLarge {
                    len,
                    max: self.max_entry,
                }));
            }
            if held.len() < 8 + len {
                return None;
            }
            let begin = self.start + 8;
            self.start = begin + len;
            let Some(stream) = stream else {
                continue;
            };
            return Some(entry(stream, &self.buf[begin..begin + len]));
        }
    }

    fn next_raw(&mut self, at_end: bool) -> Option<Result<LogEntry<'_>, DemuxError>> {
        let held = &self.buf[self.start..];
        if held.is_empty() {
            return None;
        }
        let Some((time, prefix)) = parse_log_time(held) else {
            if held.len() < MAX_TIME_PREFIX && !at_end && !held.contains(&b'\n') {
                return None;
            }
            // Not an entry's start: skip to the next line.
            let skip = memchr::memchr(b'\n', held).map_or(held.len(), |at| at + 1);
            self.start += skip;
            return Some(Err(DemuxError::NoTimestamp));
        };
        let body = &held[prefix..];
        let searched = &body[..body.len().min(DOCKER_PART_BYTES + 1)];
        let (len, used, ends_line) = match memchr::memchr(b'\n', searched) {
            Some(at) => (at, at + 1, true),
            // A part of a split line: the next entry's timestamp follows it.
            None if body.len() > DOCKER_PART_BYTES
                && parse_log_time(&body[DOCKER_PART_BYTES..]).is_some() =>
            {
                (DOCKER_PART_BYTES, DOCKER_PART_BYTES, false)
            }
            None if body.len() >= DOCKER_PART_BYTES + MAX_TIME_PREFIX => {
                // Not what Docker writes; keep the part and resynchronize.
                (DOCKER_PART_BYTES, DOCKER_PART_BYTES, false)
            }
            None if at_end => (body.len(), body.len(), false),
            None => return None,
        };
        let begin = self.start + prefix;
        self.start = begin + used;
        Some(Ok(LogEntry {
            stream: LogStream::Stdout,
            time,
            text: &self.buf[begin..begin + len],
            ends_line,
        }))
    }
}

fn entry(stream: LogStream, bytes: &[u8]) -> Result<LogEntry<'_>, DemuxError> {
    let (time, prefix) = parse_log_time(bytes).ok_or(DemuxError::NoTimestamp)?;
    let text = &bytes[prefix..];
    let (text, ends_line) = match text.strip_suffix(b"\n") {
        Some(text) => (text, true),
        None => (text, false),
    };
    Ok(LogEntry {
        stream,
        time,
        text,
        ends_line,
    })
}

/// How far a stream was read: every entry stamped before `time`, and the
/// first `count` entries stamped `time`.
///
/// ```
/// use cowlogd_parsers::Timestamp;
/// use cowlogd_parsers::docker_logs::Position;
/// let at = Position { time: Timestamp::new(10, 0), count: 2 };
/// assert!(at < Position { time: Timestamp::new(10, 0), count: 3 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Position {
    /// The timestamp of the last entry read.
    pub time: Timestamp,
    /// Entries with that timestamp read.
    pub count: u32,
}

impl Position {
    /// Nothing read before `time`, nothing of it either.
    ///
    /// ```
    /// use cowlogd_parsers::Timestamp;
    /// use cowlogd_parsers::docker_logs::Position;
    /// assert_eq!(Position::from_time(Timestamp::new(5, 0)).count, 0);
    /// ```
    pub fn from_time(time: Timestamp) -> Position {
        Position { time, count: 0 }
    }
}

/// What [`LineCursor::entry`] made of an entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken<'a> {
    /// Read before (at or before the position it resumed from).
    Skipped,
    /// A part of a line that is not complete yet.
    Pending,
    /// A whole line: its first entry's time and its text, cut after
    /// `max_line + 1` bytes when longer.
    Line {
        /// Docker's timestamp.
        time: Timestamp,
        /// The text.
        text: &'a [u8],
    },
}

/// One stream's lines: entries read before skipped, the parts of a split
/// line joined (bounded), and the position after the last whole line.
///
/// ```
/// use cowlogd_parsers::Timestamp;
/// use cowlogd_parsers::docker_logs::{LineCursor, Position, Taken};
/// let t = Timestamp::new(100, 0);
/// // Resuming after the first of two lines stamped `t`.
/// let mut cursor = LineCursor::new(Position { time: t, count: 1 }, 1024);
/// assert_eq!(cursor.entry(t, b"first", true), Taken::Skipped);
/// assert_eq!(cursor.entry(t, b"sec", false), Taken::Pending);
/// assert_eq!(cursor.entry(t, b"ond", true), Taken::Line { time: t, text: b"second" });
/// assert_eq!(cursor.position(), Position { time: t, count: 3 });
/// ```
#[derive(Debug)]
pub struct LineCursor {
    resume: Position,
    skipped_at_resume: u32,
    read: Position,
    committed: Position,
    line: Vec<u8>,
    line_time: Option<Timestamp>,
    max_line: usize,
}

impl LineCursor {
    /// A cursor resuming after `from`, keeping lines to `max_line + 1`
    /// bytes.
    pub fn new(from: Position, max_line: usize) -> LineCursor {
        LineCursor {
            resume: from,
            skipped_at_resume: 0,
            read: from,
            committed: from,
            line: Vec::new(),
            line_time: None,
            max_line,
        }
    }

    /// Takes the next entry of this stream.
    pub fn entry(&mut self, time: Timestamp, text: &[u8], ends_line: bool) -> Taken<'_> {
        if time < self.resume.time {
            return Taken::Skipped;
        }
        if time == self.resume.time && self.skipped_at_resume < self.resume.count {
            self.skipped_at_resume += 1;
            return Taken::Skipped;
        }
        // A clock that stepped back does not move the position back: what
        // it stamps is counted as read with the newer time.
        if time > self.read.time {
            self.read = Position { time, count: 1 };
        } else if time == self.read.time {
            self.read.count = self.read.count.saturating_add(1);
        }
        if self.line_time.is_none() {
            self.line.clear();
            self.line_time = Some(time);
        }
        let room = (self.max_line + 1).saturating_sub(self.line.len());
        self.line.extend_from_slice(&text[..text.len().min(room)]);
        if !ends_line {
            return Taken::Pending;
        }
        self.complete()
    }

    /// At the end of the stream: an unfinished line (a container that
    /// stopped mid-line) as a whole one, if any.
    pub fn finish(&mut self) -> Option<Taken<'_>> {
        self.line_time?;
        Some(self.complete())
    }

    fn complete(&mut self) -> Taken<'_> {
        self.committed = self.read;
        let time = self.line_time.take().unwrap_or(self.read.time);
        if self.line.capacity() > 4 * (self.max_line + 1).min(64 * 1024) {
            // Keep a long line's buffer only until the next line.
            let line = std::mem::take(&mut self.line);
            self.line = Vec::with_capacity(line.len().min(1024));
            self.line.extend_from_slice(&line);
        }
        Taken::Line {
            time,
            text: &self.line,
        }
    }

    /// The position after the last whole line.
    pub fn position(&self) -> Position {
        self.committed
    }

    /// Whether a split line is being joined.
    pub fn is_mid_line(&self) -> bool {
        self.line_time.is_some()
    }
}

/// A container's checkpoint: how far each of its streams was read.
///
/// ```
/// use cowlogd_parsers::Timestamp;
/// use cowlogd_parsers::docker_logs::{Checkpoint, Position};
/// let at = Checkpoint::from_time(Timestamp::new(50, 0));
/// assert_eq!(at.since(), Timestamp::new(50, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// stdout's position (a TTY container's only stream).
    pub stdout: Position,
    /// stderr's position.
    pub stderr: Position,
}

/// How far back, at most, an stderr entry can be stamped before an stdout
/// entry written ahead of it (and the other way round): Docker's two
/// copiers stamp a line when they read it and write it right after.
pub const COPIER_SKEW_SECS: i64 = 10;

/// The first bytes of a checkpoint as the disk queue holds it.
const TOKEN_PREFIX: &[u8] = b"\xffcowlogd-docker\x01";

impl Checkpoint {
    /// Nothing read before `time` on either stream.
    pub fn from_time(time: Timestamp) -> Checkpoint {
        Checkpoint {
            stdout: Position::from_time(time),
            stderr: Position::from_time(time),
        }
    }

    /// The earliest time either stream still needs (Docker's `since`).
    pub fn since(&self) -> Timestamp {
        self.stdout.time.min(self.stderr.time)
    }

    /// Each stream at the later of the two.
    ///
    /// ```
    /// use cowlogd_parsers::Timestamp;
    /// use cowlogd_parsers::docker_logs::{Checkpoint, Position};
    /// let a = Checkpoint::from_time(Timestamp::new(5, 0));
    /// let b = Checkpoint { stdout: Position { time: Timestamp::new(9, 0), count: 1 }, ..Checkpoint::default() };
    /// assert_eq!(a.later(&b).stdout.time, Timestamp::new(9, 0));
    /// assert_eq!(a.later(&b).stderr.time, Timestamp::new(5, 0));
    /// ```
    pub fn later(&self, other: &Checkpoint) -> Checkpoint {
        Checkpoint {
            stdout: self.stdout.max(other.stdout),
            stderr: self.stderr.max(other.stderr),
        }
    }

    /// Moves a stream that stayed quiet up to [`COPIER_SKEW_SECS`] before
    /// the other's position, so that `since` does not stay at a quiet
    /// stream's last line and every restart re-read the log from there. A
    /// stream in the middle of a split line (`stdout_mid_line`,
    /// `stderr_mid_line`) stays where it is.
    ///
    /// ```
    /// use cowlogd_parsers::Timestamp;
    /// use cowlogd_parsers::docker_logs::{Checkpoint, Position};
    /// let at = Checkpoint { stdout: Position { time: Timestamp::new(1000, 0), count: 4 }, stderr: Position::default() };
    /// assert_eq!(at.quiet_streams_caught_up(false, false).stderr, Position::from_time(Timestamp::new(990, 0)));
    /// ```
    pub fn quiet_streams_caught_up(
        &self,
        stdout_mid_line: bool,
        stderr_mid_line: bool,
    ) -> Checkpoint {
        let floor = |other: Position| {
            Position::from_time(Timestamp::new(
                other.time.secs.saturating_sub(COPIER_SKEW_SECS),
                other.time.nanos,
            ))
        };
        let mut caught_up = *self;
        if !stderr_mid_line {
            caught_up.stderr = caught_up.stderr.max(floor(self.stdout));
        }
        if !stdout_mid_line {
            caught_up.stdout = caught_up.stdout.max(floor(self.stderr));
        }
        caught_up
    }

    /// The checkpoint of container `id` as a token the disk queue stores
    /// with the lines it covers (at most 255 bytes; `None` for a longer
    /// id).
    ///
    /// ```
    /// use cowlogd_parsers::Timestamp;
    /// use cowlogd_parsers::docker_logs::Checkpoint;
    /// let at = Checkpoint::from_time(Timestamp::new(7, 8));
    /// let token = at.to_token("4f1c").unwrap();
    /// assert_eq!(Checkpoint::from_token(&token), Some(("4f1c", at)));
    /// assert_eq!(Checkpoint::from_token(b"fluent-chunk-id"), None);
    /// ```
    pub fn to_token(&self, id: &str) -> Option<Vec<u8>> {
        let mut token = Vec::with_capacity(TOKEN_PREFIX.len() + 1 + id.len() + 32);
        token.extend_from_slice(TOKEN_PREFIX);
        token.push(u8::try_from(id.len()).ok()?);
        token.extend_from_slice(id.as_bytes());
        for position in [self.stdout, self.stderr] {
            token.extend_from_slice(&position.time.secs.to_le_bytes());
            token.extend_from_slice(&position.time.nanos.to_le_bytes());
            token.extend_from_slice(&position.count.to_le_bytes());
        }
        (token.len() <= 255).then_some(token)
    }

    /// Whether `token` is a checkpoint token (not, say, a Fluent chunk id).
    pub fn is_token(token: &[u8]) -> bool {
        token.starts_with(TOKEN_PREFIX)
    }

    /// A container id and its checkpoint from [`Checkpoint::to_token`]'s
    /// bytes.
    pub fn from_token(token: &[u8]) -> Option<(&str, Checkpoint)> {
        let rest = token.strip_prefix(TOKEN_PREFIX)?;
        let (&id_len, rest) = rest.split_first()?;
        let id = std::str::from_utf8(rest.get(..usize::from(id_len))?).ok()?;
        let rest = &rest[usize::from(id_len)..];
        if rest.len() != 32 {
            return None;
        }
        let position = |bytes: &[u8]| -> Option<Position> {
            Some(Position {
                time: Timestamp::new(
                    i64::from_le_bytes(bytes[0..8].try_into().ok()?),
                    u32::from_le_bytes(bytes[8..12].try_into().ok()?),
                ),
                count: u32::from_le_bytes(bytes[12..16].try_into().ok()?),
            })
        };
        Some((
            id,
            Checkpoint {
                stdout: position(&rest[..16])?,
                stderr: position(&rest[16..])?,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(nanos: u32) -> String {
        format!("2026-12-06T05:21:49.{nanos:09}Z ")
    }

    fn frame(stream: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![stream, 0, 0, 0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn docker_timestamps_read_as_jiff_reads_them() {
        for text in [
            "1970-01-01T00:00:00.000000000Z",
            "2000-02-29T23:59:59.999999999Z",
            "2026-12-06T05:21:49.123456789Z",
            "2100-03-01T00:00:00.000000001Z",
        ] {
            let expected: jiff::Timestamp = text.parse().unwrap();
            let (time, len) = parse_log_time(format!("{text} x").as_bytes()).unwrap();
            assert_eq!(len, 31);
            assert_eq!(time.secs, expected.as_second(), "{text}");
            assert_eq!(time.nanos as i32, expected.subsec_nanosecond());
        }
        // An offset form goes through the general parser.
        let (time, _) = parse_log_time(b"2026-12-06T06:21:49.5+01:00 x").unwrap();
        assert_eq!(time, Timestamp::new(1796534509, 500_000_000));
        assert_eq!(parse_log_time(b"2026-13-06T05:21:49.123456789Z x"), None);
    }

    #[test]
    fn multiplexed_entries_come_out_whole_however_the_bytes_are_cut() {
        let mut stream = frame(1, format!("{}one\n", stamp(1)).as_bytes());
        stream.extend(frame(0, b"stdin is skipped"));
        stream.extend(frame(2, format!("{}two\n", stamp(2)).as_bytes()));
        stream.extend(frame(1, format!("{}part", stamp(3)).as_bytes()));
        for cut in 1..stream.len() {
            let mut demux = LogDemux::new(true, 1024);
            let mut got = Vec::new();
            for piece in [&stream[..cut], &stream[cut..]] {
                demux.push(piece);
                while let Some(entry) = demux.next_entry() {
                    let entry = entry.unwrap();
                    got.push((entry.stream, entry.text.to_vec(), entry.ends_line));
                }
            }
            assert_eq!(
                got,
                [
                    (LogStream::Stdout, b"one".to_vec(), true),
                    (LogStream::Stderr, b"two".to_vec(), true),
                    (LogStream::Stdout, b"part".to_vec(), false),
                ],
                "cut at {cut}"
            );
            assert_eq!(demux.buffered(), 0);
        }
    }

    #[test]
    fn a_multiplexed_entry_over_the_bound_or_of_an_unknown_stream_is_an_error_not_a_buffer() {
        let mut demux = LogDemux::new(true, 100);
        demux.push(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            demux.next_entry(),
            Some(Err(DemuxError::TooLarge { .. }))
        ));
        assert_eq!(demux.buffered(), 0);
        demux.push(&[9, 0, 0, 0, 0, 0, 0, 1, b'x']);
        assert_eq!(demux.next_entry(), Some(Err(DemuxError::UnknownStream(9))));
    }

    #[test]
    fn a_tty_stream_splits_at_newlines_and_at_the_timestamp_after_a_16_kib_part() {
        let long = vec![b'x'; DOCKER_PART_BYTES];
        let mut stream = format!("{}short\r\n", stamp(1)).into_bytes();
        stream.extend_from_slice(stamp(2).as_bytes());
        stream.extend_from_slice(&long);
        stream.extend_from_slice(stamp(2).as_bytes());
        stream.extend_from_slice(b"tail\r\n");
        stream.extend_from_slice(stamp(3).as_bytes());
        stream.extend_from_slice(b"no newline at exit");
        let mut demux = LogDemux::new(false, 0);
        let mut got = Vec::new();
        for piece in stream.chunks(1000) {
            demux.push(piece);
            while let Some(entry) = demux.next_entry() {
                let entry = entry.unwrap();
                got.push((entry.time.nanos, entry.text.len(), entry.ends_line));
            }
        }
        assert!(demux.buffered() < MAX_TIME_PREFIX + 20);
        let last = demux.finish().unwrap().unwrap();
        got.push((last.time.nanos, last.text.len(), last.ends_line));
        assert_eq!(
            got,
            [
                (1, 6, true),
                (2, DOCKER_PART_BYTES, false),
                (2, 5, true),
                (3, 18, false)
            ]
        );
    }

    #[test]
    fn a_tty_stream_without_timestamps_is_skipped_line_by_line() {
        let mut demux = LogDemux::new(false, 0);
        demux.push(format!("garbage\n{}ok\n", stamp(1)).as_bytes());
        assert_eq!(demux.next_entry(), Some(Err(DemuxError::NoTimestamp)));
        assert_eq!(demux.next_entry().unwrap().unwrap().text, b"ok");
    }

    #[test]
    fn resuming_skips_exactly_the_entries_read_before_including_split_lines_sharing_a_time() {
        let t = |n: i64| Timestamp::new(n, 0);
        // Entries: a(1) b(2, split in 3 parts) c(2) d(3)
        let entries: [(Timestamp, &[u8], bool); 6] = [
            (t(1), b"a", true),
            (t(2), b"b1", false),
            (t(2), b"b2", false),
            (t(2), b"b3", true),
            (t(2), b"c", true),
            (t(3), b"d", true),
        ];
        let read = |from: Position, upto: usize| {
            let mut cursor = LineCursor::new(from, 1024);
            let mut lines = Vec::new();
            for (time, text, ends) in &entries[..upto] {
                if let Taken::Line { text, .. } = cursor.entry(*time, text, *ends) {
                    lines.push(String::from_utf8(text.to_vec()).unwrap());
                }
            }
            (lines, cursor.position())
        };
        let (all, _) = read(Position::default(), entries.len());
        assert_eq!(all, ["a", "b1b2b3", "c", "d"]);
        // Stopped after every entry: the rest comes out once, in order.
        for stop in 0..=entries.len() {
            let (first, at) = read(Position::default(), stop);
            let (rest, _) = read(at, entries.len());
            let together: Vec<String> = first.into_iter().chain(rest).collect();
            assert_eq!(together, all, "stopped after {stop} entries at {at:?}");
        }
    }

    #[test]
    fn a_split_line_is_cut_at_the_bound_and_its_buffer_not_kept() {
        let mut cursor = LineCursor::new(Position::default(), 10);
        let t = Timestamp::new(1, 0);
        assert_eq!(cursor.entry(t, &[b'a'; 8], false), Taken::Pending);
        assert!(cursor.is_mid_line());
        let Taken::Line { text, .. } = cursor.entry(t, &[b'b'; 8], true) else {
            panic!("not a line");
        };
        assert_eq!(text.len(), 11);
        assert!(!cursor.is_mid_line());
        assert_eq!(cursor.finish(), None);
    }

    #[test]
    fn tokens_of_other_kinds_are_not_checkpoints() {
        let at = Checkpoint::from_time(Timestamp::new(1, 2));
        let token = at.to_token(&"f".repeat(64)).unwrap();
        assert!(Checkpoint::is_token(&token));
        assert!(Checkpoint::from_token(&token[..token.len() - 1]).is_none());
        assert!(at.to_token(&"f".repeat(250)).is_none());
    }
}

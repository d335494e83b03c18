//! Fluent Forward protocol v1 events: one complete MessagePack object (see
//! [`super::msgpack::object_len`] to find it in the stream) in one of four
//! modes.
//!
//! - Message: `[tag, time, record]` or `[tag, time, record, option]` —
//!   what Docker's driver (fluent-logger-golang) sends, one per line.
//! - Forward: `[tag, [[time, record], …], option?]`.
//! - PackedForward: `[tag, bin-or-str of concatenated [time, record], option?]`.
//! - CompressedPackedForward: the same, gzip-compressed, with
//!   `option.compressed = "gzip"`.
//!
//! `time` is an integer (seconds) or EventTime: extension type 0, eight
//! bytes, big-endian seconds and nanoseconds (`fluentd-sub-second-precision`).

use thiserror::Error;

use super::msgpack::{MsgpackError, Reader, Value, is_map_marker};
use crate::record::Timestamp;

/// Why a frame is not a Forward event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ForwardError {
    /// Not MessagePack, or the wrong shape.
    #[error(transparent)]
    Msgpack(#[from] MsgpackError),
    /// An array of the wrong length.
    #[error("a Forward event is an array of 2 to 4 elements, not {0}")]
    Shape(u32),
    /// `option.compressed` names something other than gzip.
    #[error("unknown compression {0:?}")]
    Compression(String),
}

/// Where a frame's entries are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Entries<'a> {
    /// Message mode: one entry.
    Message {
        /// Its time.
        time: Timestamp,
        /// Its record: a MessagePack map, as received.
        record: &'a [u8],
    },
    /// Forward mode: `count` entries, concatenated in `raw`.
    Forward {
        /// How many.
        count: u32,
        /// The entries' bytes.
        raw: &'a [u8],
    },
    /// PackedForward: entries concatenated in `raw` (gzip members when
    /// `compressed`).
    Packed {
        /// The entries' bytes, or the gzip stream of them.
        raw: &'a [u8],
        /// `option.compressed = "gzip"`.
        compressed: bool,
    },
}

/// One Forward event, borrowing from its frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardEvent<'a> {
    /// The tag (Docker: `tag`, by default the first 12 hex digits of the
    /// container id).
    pub tag: &'a [u8],
    /// The entries.
    pub entries: Entries<'a>,
    /// `option.chunk`: the sender wants `{"ack": chunk}` once the event
    /// is taken.
    pub chunk: Option<&'a [u8]>,
    /// `option.size`: the entries the sender says it sent.
    pub size: Option<u64>,
}

/// Parses one complete Forward event.
///
/// ```
/// use cowlogd_parsers::fluent::forward::{parse_event, Entries};
/// // Docker with fluentd-request-ack: ["abc", 1700000000, {"log":"hi"}, {"chunk":"id1"}]
/// let frame = b"\x94\xa3abc\xce\x65\x53\xf1\x00\x81\xa3log\xa2hi\x81\xa5chunk\xa3id1";
/// let event = parse_event(frame).unwrap();
/// assert_eq!(event.tag, b"abc");
/// assert_eq!(event.chunk, Some(&b"id1"[..]));
/// assert!(matches!(event.entries, Entries::Message { time, .. } if time.secs == 1700000000));
/// ```
///
/// # Errors
/// When the frame is not one of the four modes.
pub fn parse_event(frame: &[u8]) -> Result<ForwardEvent<'_>, ForwardError> {
    let mut reader = Reader::new(frame);
    let len = match reader.value()? {
        Value::Array(n) if (2..=4).contains(&n) => n,
        Value::Array(n) => return Err(ForwardError::Shape(n)),
        _ => {
            return Err(MsgpackError::WrongType {
                expected: "an array",
                at: 0,
            }
            .into());
        }
    };
    let tag = reader.str("a tag string")?;
    let second_at = reader.position();
    let (entries, used) = match reader.value()? {
        Value::Array(count) => {
            let start = reader.position();
            for _ in 0..count {
                reader.skip()?;
            }
            let raw = &frame[start..reader.position()];
            (Entries::Forward { count, raw }, 2)
        }
        Value::Str(raw) | Value::Bin(raw) => (
            Entries::Packed {
                raw,
                compressed: false,
            },
            2,
        ),
        _ => {
            reader.rewind(second_at);
            let time = read_time(&mut reader)?;
            if len < 3 {
                return Err(ForwardError::Shape(len));
            }
            let record = read_record(&mut reader)?;
            (Entries::Message { time, record }, 3)
        }
    };
    let mut event = ForwardEvent {
        tag,
        entries,
        chunk: None,
        size: None,
    };
    if len > used {
        if len > used + 1 {
            return Err(ForwardError::Shape(len));
        }
        read_options(&mut reader, &mut event)?;
    }
    Ok(event)
}

/// A record: a whole map, as its bytes.
fn read_record<'a>(reader: &mut Reader<'a>) -> Result<&'a [u8], MsgpackError> {
    let at = reader.position();
    let record = reader.skip()?;
    if record.first().is_some_and(|m| is_map_marker(*m)) {
        Ok(record)
    } else {
        Err(MsgpackError::WrongType {
            expected: "a record map",
            at,
        })
    }
}

/// The option map: `chunk`, `size`, `compressed`; other keys are skipped.
fn read_options<'a>(
    reader: &mut Reader<'a>,
    event: &mut ForwardEvent<'a>,
) -> Result<(), ForwardError> {
    let at = reader.position();
    let pairs = match reader.value()? {
        Value::Map(n) => n,
        Value::Nil => return Ok(()),
        _ => {
            return Err(MsgpackError::WrongType {
                expected: "an option map",
                at,
            }
            .into());
        }
    };
    for _ in 0..pairs {
        let key_at = reader.position();
        let key = match reader.value()? {
            Value::Str(k) | Value::Bin(k) => k,
            _ => {
                return Err(MsgpackError::WrongType {
                    expected: "an option name",
                    at: key_at,
                }
                .into());
            }
        };
        match key {
            b"chunk" => event.chunk = Some(reader.str("a chunk id string")?),
            b"size" => {
                event.size = match reader.value()? {
                    Value::Int(n) => u64::try_from(n).ok(),
                    Value::Uint(n) => Some(n),
                    _ => None,
                }
            }
            b"compressed" => {
                let kind = reader.str("a compression name")?;
                match (&mut event.entries, kind) {
                    (Entries::Packed { compressed, .. }, b"gzip") => *compressed = true,
                    (_, b"text" | b"") => {}
                    (_, other) => {
                        return Err(ForwardError::Compression(
                            String::from_utf8_lossy(other).into_owned(),
                        ));
                    }
                }
            }
            _ => {
                reader.skip()?;
            }
        }
    }
    Ok(())
}

/// An entry's time: integer seconds, EventTime, or (older clients) a float.
fn read_time(reader: &mut Reader<'_>) -> Result<Timestamp, MsgpackError> {
    let at = reader.position();
    match reader.value()? {
        Value::Int(secs) => Ok(Timestamp::new(secs, 0)),
        Value::Uint(secs) => Ok(Timestamp::new(i64::try_from(secs).unwrap_or(i64::MAX), 0)),
        Value::Ext(0, data) if data.len() == 8 => {
            let secs = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let nanos = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            Ok(Timestamp::new(i64::from(secs), nanos.min(999_999_999)))
        }
        Value::Float(f) if f.is_finite() && f >= 0.0 => {
            let secs = f.trunc();
            Ok(Timestamp::new(secs as i64, ((f - secs) * 1e9) as u32))
        }
        _ => Err(MsgpackError::WrongType {
            expected: "a time (integer or EventTime)",
            at,
        }),
    }
}

/// Iterates `[time, record]` entries concatenated in `raw` (Forward and
/// PackedForward modes, the latter after decompression).
///
/// ```
/// use cowlogd_parsers::fluent::forward::entries;
/// // [1, {"a":"b"}] [2, {}]
/// let raw = b"\x92\x01\x81\xa1a\xa1b\x92\x02\x80";
/// let times: Vec<i64> = entries(raw).map(|e| e.unwrap().0.secs).collect();
/// assert_eq!(times, [1, 2]);
/// ```
pub fn entries(raw: &[u8]) -> EntryIter<'_> {
    EntryIter {
        reader: Reader::new(raw),
        failed: false,
    }
}

/// See [`entries`].
#[derive(Debug, Clone)]
pub struct EntryIter<'a> {
    reader: Reader<'a>,
    failed: bool,
}

impl<'a> Iterator for EntryIter<'a> {
    /// An entry's time and record map; after an error, nothing more (the
    /// rest cannot be found).
    type Item = Result<(Timestamp, &'a [u8]), MsgpackError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.is_empty() {
            return None;
        }
        let entry = (|| {
            let at = self.reader.position();
            if self.reader.value()? != Value::Array(2) {
                return Err(MsgpackError::WrongType {
                    expected: "a [time, record] entry",
                    at,
                });
            }
            let time = read_time(&mut self.reader)?;
            Ok((time, read_record(&mut self.reader)?))
        })();
        self.failed = entry.is_err();
        Some(entry)
    }
}

/// A record map's string fields (`str` or `bin` values) as
/// `(key, value)`; other values are given as their MessagePack bytes.
///
/// ```
/// use cowlogd_parsers::fluent::forward::{record_fields, FieldRef};
/// let record = b"\x82\xa3log\xa2hi\xa1n\x2a";
/// let fields: Vec<_> = record_fields(record).collect::<Result<_, _>>().unwrap();
/// assert_eq!(fields, [(&b"log"[..], FieldRef::Str(b"hi")), (&b"n"[..], FieldRef::Other(b"\x2a"))]);
/// ```
pub fn record_fields(record: &[u8]) -> RecordFields<'_> {
    let mut reader = Reader::new(record);
    let remaining = match reader.value() {
        Ok(Value::Map(n)) => Ok(n),
        Ok(_) => Err(MsgpackError::WrongType {
            expected: "a record map",
            at: 0,
        }),
        Err(e) => Err(e),
    };
    RecordFields { reader, remaining }
}

/// A record field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRef<'a> {
    /// A string (`str` or `bin`).
    Str(&'a [u8]),
    /// Anything else, as MessagePack.
    Other(&'a [u8]),
}

/// See [`record_fields`].
#[derive(Debug, Clone)]
pub struct RecordFields<'a> {
    reader: Reader<'a>,
    remaining: Result<u32, MsgpackError>,
}

impl<'a> Iterator for RecordFields<'a> {
    type Item = Result<(&'a [u8], FieldRef<'a>), MsgpackError>;

    fn next(&mut self) -> Option<Self::Item> {
        let remaining = match &self.remaining {
            Ok(0) => return None,
            Ok(n) => *n,
            Err(e) => {
                let e = e.clone();
                self.remaining = Ok(0);
                return Some(Err(e));
            }
        };
        let field = (|| {
            let key = self.reader.str("a field name")?;
            let at = self.reader.position();
            let value = match self.reader.value()? {
                Value::Str(s) | Value::Bin(s) => FieldRef::Str(s),
                _ => {
                    self.reader.rewind(at);
                    FieldRef::Other(self.reader.skip()?)
                }
            };
            Ok((key, value))
        })();
        self.remaining = if field.is_ok() {
            Ok(remaining - 1)
        } else {
            Ok(0)
        };
        Some(field)
    }
}
